"""The processing queue (`server.jobs.JobQueue`) with real worker processes on a real
store: a worker killed after its last event, a client slow to take its messages, and
what a failed run tells clients."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from server.jobs import JobQueue
from server.sessions import SessionStore
from workbench.engine.audio import write_wav

Said = list[tuple[str, dict[str, Any]]]  # what a queue told clients, in order


def recorded_session(store: SessionStore, seconds: float = 1.0) -> str:
    """A session whose recording stopped (``processing``, its ``audio.wav`` written)."""
    sid = store.create_session().id
    store.set_status(sid, "recording")
    write_wav(store.audio_path(sid), np.zeros(int(seconds * 16000), dtype=np.float32))
    store.set_status(sid, "processing")
    return sid


def job_queue(store: SessionStore, said: Said,
              hold: Callable[[str], Any] = lambda _sid: None) -> JobQueue:
    """A queue of one worker doing renditions only; what it tells clients goes to `said`
    (after `hold(session_id)`, when that gives something to await: a slow client)."""
    async def notify(session_id: str, message: dict[str, Any]) -> None:
        wait = hold(session_id)
        if wait is not None:
            await wait
        said.append((session_id, message))

    return JobQueue(store, notify, workers=1, pipeline="renditions")


async def until(condition: Callable[[], Any], timeout: float = 30.0) -> bool:
    """Whether `condition` came true within `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def status(store: SessionStore, run_id: str) -> str:
    run = store.get_run(run_id)
    return run.status if run is not None else "gone"


async def test_a_worker_killed_after_its_done_keeps_its_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker sent `done` and was killed before the queue handled it: the reaper saw its
    run running, queued it again and gave it to the new worker; the old `done` then ended
    the run under that worker (which got a second run while it worked on this one) and its
    progress reached clients after processing_complete. The dead worker's events are
    handled first: its run completes with its result, once, and is not done again."""
    store, said = SessionStore(tmp_path / "data"), []
    # a slow disk: the run's first progress is stored only when the test says so; the
    # worker's later events (its `done`) wait in the queue meanwhile
    update_run, slow, go = store.update_run, threading.Event(), threading.Event()

    def slow_progress(run_id: str, **fields: Any) -> None:
        if "stage" in fields and "status" not in fields and not slow.is_set():
            slow.set()
            go.wait(60)
        update_run(run_id, **fields)

    monkeypatch.setattr(store, "update_run", slow_progress)
    sid = recorded_session(store)
    jobs = job_queue(store, said)
    await jobs.start()
    try:
        worker = jobs._workers[0]
        run = await jobs.submit(sid, {})
        # its second progress and its `done` wait behind the first
        assert await until(lambda: slow.is_set() and jobs._inbox.qsize() >= 2)
        os.kill(worker.process.pid, signal.SIGKILL)
        given_again = await until(lambda: store.get_run(run.id).attempts > 1,  # type: ignore[union-attr]
                                  timeout=10)
        go.set()
        assert not given_again, "the run went to another worker before its `done` was handled"
        assert await until(lambda: status(store, run.id) == "completed")
        ended = store.get_run(run.id)
        assert ended is not None and ended.attempts == 1
        assert ended.summary["worker_pid"] == worker.process.pid  # the dead worker's result
        assert await until(lambda: jobs._workers[0] is not worker and jobs.busy() == 0)
        # the new worker is free: it takes the next run, and only that one
        second = await jobs.submit(sid, {})
        assert await until(lambda: status(store, second.id) == "completed")
        assert store.get_run(second.id).summary["worker_pid"] == \
            jobs._workers[0].process.pid  # type: ignore[union-attr]
        assert await until(lambda: len([m for _, m in said
                                         if m["type"] == "processing_complete"]) == 2)
        first = [m["type"] for _, m in said if m["run_id"] == run.id]
        assert first.count("processing_complete") == 1 and first[-1] == "processing_complete"
    finally:
        go.set()
        await jobs.close()
        store.close()


async def test_a_slow_client_holds_up_no_other_run(tmp_path: Path) -> None:
    """The queue told clients each event before it handled the next: one client that took
    nothing held every run's end, and the worker stayed booked, so no other session's run
    started. Now the other session's run starts and completes meanwhile, and the slow
    client hears its session's events in order once it takes them."""
    store, said = SessionStore(tmp_path / "data"), []
    slow_sid, other_sid = recorded_session(store), recorded_session(store)
    awake = asyncio.Event()
    jobs = job_queue(store, said, lambda sid: awake.wait() if sid == slow_sid else None)
    await jobs.start()
    try:
        slow_run = await jobs.submit(slow_sid, {})
        other_run = await jobs.submit(other_sid, {})
        assert await until(lambda: [m["type"] for s, m in said if s == other_sid][-1:]
                           == ["processing_complete"]), "the slow client held the other run"
        assert status(store, slow_run.id) == status(store, other_run.id) == "completed"
        assert not [m for s, m in said if s == slow_sid]
        awake.set()
        assert await until(lambda: [m["type"] for s, m in said if s == slow_sid][-1:]
                           == ["processing_complete"])
        told = [m for s, m in said if s == slow_sid]
        assert {m["type"] for m in told[:-1]} == {"processing_progress"}
        assert [m["overall"] for m in told[:-1]] == sorted(m["overall"] for m in told[:-1])
        assert {m["run_id"] for m in told} == {slow_run.id}
    finally:
        awake.set()
        await jobs.close()
        store.close()


async def test_a_deleted_session_s_clients_hear_nothing_more_of_its_runs(
        tmp_path: Path) -> None:
    """A DELETE tells the session's clients `processing_failed` itself (for runs queued or
    running); the progress the queue still had to tell a slow one came after that. A run
    that had ended keeps its end: it gets no other."""
    store, said = SessionStore(tmp_path / "data"), []
    sid = recorded_session(store)
    awake = asyncio.Event()
    jobs = job_queue(store, said, lambda s: awake.wait() if s == sid else None)
    await jobs.start()
    try:
        run = await jobs.submit(sid, {})
        assert await until(lambda: status(store, run.id) == "completed")
        assert await until(lambda: [m["type"] for m in jobs._outbox.get(sid, ())][-1:]
                           == ["processing_complete"])  # (behind the progress held)
        assert store.delete_session(sid)
        await jobs.forget(sid)
        awake.set()
        assert await until(lambda: sid not in jobs._telling)
        # the one being told when the session went, then only the run's end
        assert [m["type"] for _, m in said][1:] == ["processing_complete"], said
    finally:
        awake.set()
        await jobs.close()
        store.close()


async def test_a_failed_run_names_no_server_path(tmp_path: Path) -> None:
    """A run that failed on an unexpected error told clients (and stored) the error's text,
    which named files on the server: here its ``audio.wav`` cannot be read (a folder)."""
    store, said = SessionStore(tmp_path / "data"), []
    sid = recorded_session(store)
    wav = store.audio_path(sid)
    wav.unlink()
    wav.mkdir()
    jobs = job_queue(store, said)
    await jobs.start()
    try:
        run = await jobs.submit(sid, {})
        assert await until(lambda: any(m["type"] == "processing_failed" for _, m in said))
        message = next(m["message"] for _, m in said if m["type"] == "processing_failed")
        assert message.startswith("IsADirectoryError") and "<path>" in message
        assert str(tmp_path) not in message and "audio.wav" not in message, message
        assert store.get_run(run.id).error == message  # type: ignore[union-attr]
    finally:
        await jobs.close()
        store.close()


async def test_a_run_that_cannot_start_names_no_server_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that could not start, and one whose Dask task failed, told clients the
    error's text with the server's paths in it."""
    store, said = SessionStore(tmp_path / "data"), []
    sid = recorded_session(store)
    get_session = store.get_session

    def unreadable(session_id: str) -> Any:
        if session_id == sid and status(store, unstartable.id) == "queued":
            raise RuntimeError("cannot read /srv/speech/data/sessions/x/options.json")
        return get_session(session_id)

    monkeypatch.setattr(store, "get_session", unreadable)
    jobs = job_queue(store, said)
    unstartable = store.create_run(sid, {})
    await jobs.start()
    try:
        assert await until(lambda: status(store, unstartable.id) == "failed")
        error = store.get_run(unstartable.id).error  # type: ignore[union-attr]
        assert error == "The run could not start: RuntimeError: cannot read <path>"

        async def lost_dask_task() -> Any:
            raise FileNotFoundError(2, "No such file or directory",
                                    "/srv/speech/data/sessions/x/audio.wav")

        on_dask = store.create_run(sid, {})
        store.update_run(on_dask.id, status="running")
        await jobs._await_dask(on_dask.id, lost_dask_task())
        assert await until(lambda: status(store, on_dask.id) == "failed")
        error = store.get_run(on_dask.id).error  # type: ignore[union-attr]
        assert error is not None and "/srv" not in error and "<path>" in error, error
        assert await until(lambda: [m["message"] for _, m in said
                                    if m["type"] == "processing_failed"][-1:] == [error])
    finally:
        await jobs.close()
        store.close()
