"""What a processing worker process does with one run.

Runs in a worker process (never on the event loop).  Models stay loaded in the
process between runs (see :mod:`workbench.engine.pipeline`'s cache), so only the first
run of a configuration pays for loading them.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from workbench.engine.audio import AudioDecodeError, wav_duration
from workbench.engine.rendition import encode_mp4, rendition_current
from workbench.engine.config import ConfigError, RunConfig

Emit = Callable[[tuple[Any, ...]], None]

log = logging.getLogger("server.worker")


# Rough share of a run's work per stage, to turn per-stage progress into one overall
# figure for progress bars: the 5-minute pipeline benchmark with tiny.en (BENCHMARKS.md,
# 2026-12-01) spent ASR 0.050, segmentation 0.016 and embeddings 0.064 s per audio second,
# about 38 / 12 / 49 % of the stage seconds. The shares differ between CPUs.
STAGE_WEIGHTS = {"renditions": 0.02, "decode": 0.01, "asr": 0.36, "segmentation": 0.10,
                 "embeddings": 0.47, "clustering": 0.02, "merge": 0.02}


def run_stages(config: Optional[RunConfig]) -> tuple[str, ...]:
    """The stages a run goes through (``None``: renditions only)."""
    if config is None:
        return ("renditions",)
    return ("renditions", "decode", *(("asr",) if config.transcribe else ()),
            *(("segmentation", "embeddings", "clustering") if config.diarize else ()), "merge")


class OverallProgress:
    """One overall figure (0..1) from per-stage progress: the sum over the run's `stages`
    of ``weight x fraction done``, over their total weight (a run without ASR or
    diarization also ends at 1). Stages may run concurrently (ASR and diarization do);
    the figure never goes down."""

    def __init__(self, stages: tuple[str, ...] = tuple(STAGE_WEIGHTS)) -> None:
        self._weights = {name: STAGE_WEIGHTS[name] for name in stages}
        self._done: dict[str, float] = {}
        self.last = 0.0  # the figure last given

    def __call__(self, stage: str, fraction: float) -> float:
        if stage in self._weights:
            self._done[stage] = max(self._done.get(stage, 0.0), min(max(fraction, 0.0), 1.0))
        total = sum(self._weights[name] * done for name, done in self._done.items())
        self.last = round(min(1.0, total / sum(self._weights.values())), 4)
        return self.last

    def finish(self) -> float:
        """Every stage done (a stage with nothing to do, e.g. segmentation of silence,
        may never report)."""
        self._done = dict.fromkeys(self._weights, 1.0)
        self.last = 1.0
        return 1.0


class RunFailed(Exception):
    """A run failed for a reason that is safe and useful to show the client."""


_PATHLIKE = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s/'\"]+){2,}/?")


def safe_details(exc: BaseException, limit: int = 120) -> str:
    """A short description of an exception with file paths removed (for clients: a run's
    ``error``, ``processing_failed``, an internal error's message)."""
    text = _PATHLIKE.sub("<path>", str(exc).splitlines()[0] if str(exc) else "")
    text = text[:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_config(task: dict[str, Any]) -> RunConfig:
    """The pipeline configuration of a task (its ``config`` holds no server switch)."""
    try:
        return RunConfig.from_dict(task.get("config") or {})
    except ConfigError as exc:
        raise RunFailed(f"Invalid run configuration: {exc}") from None


def process_run(task: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Do the work of one run; returns its summary (speakers, duration, word count...)."""
    run_id = task["run_id"]
    session_dir = Path(task["session_dir"])
    wav = session_dir / "audio.wav"
    if not wav.exists():
        raise RunFailed("The session has no decoded audio to process")

    # A bad configuration (one stored before it was checked) fails before any work.
    config = run_config(task) if task.get("pipeline", "full") == "full" else None

    overall = OverallProgress(run_stages(config))

    def hook(stage: str, completed: float = 0, total: float = 1) -> None:
        fraction = min(max((completed / total) if total else 0.0, 0.0), 1.0)
        emit(("progress", run_id, stage, fraction, overall(stage, fraction)))

    try:  # (the session may be deleted at any point: its folder goes, the server kills us)
        hook("renditions", 0, 1)
        duration = wav_duration(wav)
        # (no MP4 of nothing: FFmpeg wrote a 0-byte file, which the audio endpoint refuses)
        mp4 = session_dir / "audio.mp4"
        if task.get("format") == "mp4" and duration > 0 and not rendition_current(wav, mp4):
            encode_mp4(wav, mp4)
        hook("renditions", 1, 1)
        summary: dict[str, Any] = {"duration_seconds": round(duration, 3)}

        if config is not None:
            from workbench.engine.pipeline import get_pipeline

            pipeline = get_pipeline(config, data_dir=Path(task["data_dir"]))
            # named by the session, as its live runs are (RTTM file ids)
            result = pipeline(wav, hook=hook, uri=session_dir.name)
            result.save(Path(task["run_dir"]))
            summary.update(result.summary())
    except FileNotFoundError:  # (av.error.FileNotFoundError too)
        if wav.exists():
            raise
        raise RunFailed("The session's audio is gone (the session was deleted)") from None
    if overall.last < 1.0:  # (a stage with nothing to do said nothing)
        stage = "merge" if config is not None else "renditions"
        emit(("progress", run_id, stage, 1.0, overall.finish()))
    return summary


def execute(task: dict[str, Any], emit: Emit) -> tuple[Any, ...]:
    """Run one task; returns its final event, ``("done", run_id, summary)`` or
    ``("failed", run_id, message)``.  Never raises for a failing run."""
    run_id = task["run_id"]
    started = time.monotonic()
    try:
        summary = process_run(task, emit)
        summary["processing_seconds"] = round(time.monotonic() - started, 3)
        summary["worker_pid"] = os.getpid()
        return ("done", run_id, summary)
    except (RunFailed, AudioDecodeError) as exc:
        return ("failed", run_id, str(exc))
    except Exception as exc:  # report; the worker stays alive for the next run
        from workbench.engine.asr.models import ModelNotFoundError  # (not in the server)

        if isinstance(exc, ModelNotFoundError):  # written for clients, installable models
            return ("failed", run_id, str(exc))  # listed after the first 200 characters
        log.error("Run %s failed:\n%s", run_id, traceback.format_exc())
        return ("failed", run_id, safe_details(exc, 200))


def worker_main(task_queue: Any, event_queue: Any, log_level: str = "INFO",
                parent: Optional[int] = None) -> None:
    """Entry point of a worker process: take runs from ``task_queue`` until ``None``, or
    until the server is gone (a killed server sends no ``None``: the process exits within
    a second, even mid-run, whose run the restarted server queues again)."""
    logging.basicConfig(level=log_level, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _exit_with_parent(parent or os.getppid())  # the server's pid, as it spawned us
    emit: Emit = event_queue.put
    while True:
        task = task_queue.get()
        if task is None:
            return
        emit(("started", task["run_id"], os.getpid()))
        emit(execute(task, emit))


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """End this process once its parent `parent` has died (a thread polls the parent id:
    an orphan is adopted by another process)."""
    def watch() -> None:  # a server killed while this process started is gone already
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_on_dask(task: dict[str, Any]) -> tuple[Any, ...]:
    """The task a Dask worker runs for one run (models stay warm in the worker process).

    Progress events are not streamed back from Dask workers; the final event is
    the task's result.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    event = execute(task, lambda _event: None)
    if event[0] == "done":
        event[2]["executor"] = "dask"
    return event
