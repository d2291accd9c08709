"""Diarization on several cores: the windows' CAM++ passes and parts of the segmentation's
batches run on worker threads (ONNX Runtime and torch release the GIL while they compute),
each with the caller's torch thread count, so that results do not depend on the number of
workers (`DiarizationConfig.embedding_workers`, `segmentation_workers`; BENCHMARKS.md,
"Diarization on both cores")."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np
import torch

__all__ = ["BatchSplitter", "in_workers"]


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


def in_workers(work: Callable[[int], np.ndarray], count: int, workers: int
               ) -> Iterator[np.ndarray]:
    """``work(0) ... work(count - 1)`` in order, on `workers` threads at once.

    The windows' CAM++ passes are independent and ONNX Runtime and torch release the GIL
    while they compute, so two threads use two cores (`embedding_workers`). Each thread
    runs torch with the caller's intra-op thread count, so that ONNX Runtime picks the
    same session (`workbench.engine.diarization.runtime`) and results do not depend on
    the number of workers."""
    if workers <= 1 or count <= 1:
        yield from map(work, range(count))
        return
    run = _on_caller_threads(work)
    with ThreadPoolExecutor(min(workers, count), thread_name_prefix="embeddings") as pool:
        # at most two windows ahead per worker: the results are consumed in order
        pending: deque[Future[np.ndarray]] = deque()
        for c in range(count):
            pending.append(pool.submit(run, c))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _on_caller_threads(work: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`work` with the calling thread's torch thread count wherever it runs (a new thread
    may start with torch's default)."""
    threads = torch.get_num_threads()

    def run(item: Any) -> Any:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return work(item)

    return run
