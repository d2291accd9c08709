"""Diarization on several cores: the windows' CAM++ passes and parts of the segmentation's
batches run on worker threads (ONNX Runtime and torch release the GIL while they compute),
each with the caller's torch thread count, so that results do not depend on the number of
workers (`DiarizationConfig.embedding_workers`, `segmentation_workers`; BENCHMARKS.md,
"Diarization on both cores")."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np
import torch

__all__ = ["BatchSplitter", "in_workers"]

T = TypeVar("T")


class BatchSplitter:
    """`Inference.infer` on parts of each batch in worker threads, with the caller's torch
    thread count; outputs concatenated in order."""

    def __init__(self, infer: Callable[[torch.Tensor], Any], workers: int) -> None:
        self.infer = infer
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="segmentation")

    def __call__(self, chunks: torch.Tensor) -> Any:
        parts = [part for part in torch.tensor_split(chunks, self.workers) if len(part)]
        if len(parts) <= 1:
            return self.infer(chunks)
        outputs = list(self.pool.map(_on_caller_threads(self.infer), parts))
        if isinstance(outputs[0], tuple):
            return tuple(np.concatenate(group) for group in zip(*outputs))
        return np.concatenate(outputs)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def in_workers(work: Callable[[int], T], count: int, workers: int,
               stop: Optional[threading.Event] = None) -> Iterator[T]:
    """``work(0) ... work(count - 1)`` in order, on `workers` threads at once.

    The windows' CAM++ passes are independent and ONNX Runtime and torch release the GIL
    while they compute, so two threads use two cores (`embedding_workers`). Each thread
    runs torch with the caller's intra-op thread count, so that ONNX Runtime picks the
    same session (`workbench.engine.diarization.runtime`) and results do not depend on
    the number of workers.

    A failed call fails the whole at once, not when its turn comes; then (and when the
    caller stops early: its own error, Ctrl-C) the calls not started are cancelled and
    `stop` is set, for a `work` that runs long to check (the ranges of windows of
    ``embedding_passes="shared"`` stop at their next window); the calls running are
    waited for, so that no thread outlives the call."""
    if workers <= 1 or count <= 1:
        yield from map(work, range(count))
        return
    run = _on_caller_threads(work)
    pool = ThreadPoolExecutor(min(workers, count), thread_name_prefix="embeddings")
    # at most two windows ahead per worker: the results are consumed in order
    pending: deque[Future[T]] = deque()
    try:
        for c in range(count):
            pending.append(pool.submit(run, c))
            if len(pending) >= 2 * workers:
                yield _next_result(pending)
        while pending:
            yield _next_result(pending)
    finally:
        if pending and stop is not None:
            stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _next_result(pending: deque[Future[T]]) -> T:
    """The result of the first of `pending` (taken off), or the error of any that failed
    before it is done."""
    while True:
        for future in pending:
            if future.done() and future.exception() is not None:
                future.result()  # raises
        if pending[0].done():
            return pending.popleft().result()
        wait([f for f in pending if not f.done()], return_when=FIRST_COMPLETED)


def _on_caller_threads(work: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`work` with the calling thread's torch thread count wherever it runs (a new thread
    may start with torch's default)."""
    threads = torch.get_num_threads()

    def run(item: Any) -> Any:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return work(item)

    return run
