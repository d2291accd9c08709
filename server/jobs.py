"""Processing jobs: a persistent queue of runs and worker processes that execute them.

The queue *is* the ``runs`` table: a run is ``queued`` until a worker takes it,
``running`` while it works, then ``completed`` or ``failed``.  On start-up, runs
that were ``running`` when the server died are queued again, so no accepted
work is lost.  Workers are separate processes (CPU-bound models never touch the
event loop); a worker that dies is replaced and its run retried once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import multiprocessing as mp
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Union

from workbench.engine.config import ConfigError, RunConfig, check_language, names_local_folder

from .routes import audio_links, result_links
from .sessions import AUDIO_FORMATS, Run, SessionStore, TransitionError
from .worker import safe_details, worker_main

log = logging.getLogger("server.jobs")

Notify = Callable[[str, dict[str, Any]], Awaitable[None]]

MAX_ATTEMPTS = 2
MAX_QUEUED_RUNS = 16
"""Runs a session may have waiting at once (more: 429); sessions take turns in the queue."""

# A run's stored configuration is the pipeline's options (workbench.engine.config.RunConfig) plus
# one server switch, `pipeline`: the work a run does ("renditions": audio renditions only).
PIPELINE_SWITCH = "pipeline"
PIPELINES = ("full", "renditions")


def split_run_config(config: dict[str, Any]) -> tuple[Optional[str], dict[str, Any]]:
    """(the ``pipeline`` switch or None, the pipeline options) of a stored run configuration."""
    options = dict(config)
    return options.pop(PIPELINE_SWITCH, None), options


def _terminate_spawned(future: "asyncio.Future[_Worker]") -> None:
    """Stop a worker process whose start finished after the queue was closed."""
    if not future.cancelled() and future.exception() is None:
        worker = future.result()
        worker.reading = False
        worker.process.terminate()
        worker.process.join(5)


def check_run_config(config: Any, *, switch: bool = True, local_models: bool = True,
                     whole: bool = False) -> dict[str, Any]:
    """Check a run configuration where it enters the server (REST bodies, session options,
    ``start`` fields) without loading any model; returns a copy. ``switch``: the
    ``pipeline`` switch is allowed; ``local_models``: options may name model or pipeline
    folders on this machine (`local_model_fields`); ``whole``: `config` is all of a run's
    (merged with the server's defaults), so the language can meet its model
    (`check_language`). Raises `ConfigError` naming the bad field."""
    if not isinstance(config, dict):
        raise ConfigError(None, "a run configuration must be a JSON object")
    pipeline, options = split_run_config(config) if switch else (None, config)
    if pipeline is not None and pipeline not in PIPELINES:
        raise ConfigError(PIPELINE_SWITCH,
                          f"'{PIPELINE_SWITCH}' must be one of {', '.join(PIPELINES)}")
    parsed = RunConfig.from_dict(options)
    if whole:
        check_language(parsed)
    if not local_models:
        for name in local_model_fields(parsed):
            raise ConfigError(name, f"'{name}' names a folder on the server; clients may "
                                    "not load models from paths unless the server runs "
                                    "with --allow-local-models")
    return dict(config)


def local_model_fields(config: RunConfig) -> list[str]:
    """The options of `config` that name files on this machine: a pyannote pipeline
    folder, or an ASR model given by path (loading either runs code from that folder)."""
    fields = []
    if config.transcribe and names_local_folder(config.asr.model):
        fields.append("asr_model")
    if config.diarize and config.diarization.pipeline_path is not None:
        fields.append("pipeline_path")
    return fields


@dataclass
class _Worker:
    process: Any
    tasks: Any
    run_id: Optional[str] = None
    stopped: bool = False  # killed on purpose: its session was deleted
    # Its own events queue and reader thread: a process killed while it wrote to a queue
    # shared by all workers could leave that queue's lock taken, and every later event lost.
    events: Any = None
    reader: Optional[threading.Thread] = None
    reading: bool = True  # False: the reader ends once the queue is empty
    gone: bool = False  # reaped: what its reader hands on from now on is dropped


class TooManyRuns(Exception):
    """`MAX_QUEUED_RUNS` runs of the session wait already."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} runs of this session are waiting (at most "
                         f"{MAX_QUEUED_RUNS}); post more once some have ended")


def take_turns(queued: list[Run]) -> list[Run]:
    """Queued runs in the order they start: each session's first before any session's
    second, and so on, in queue order within a turn (a session with a backlog of runs
    kept a fresh recording's run waiting behind all of them)."""
    turn: dict[str, int] = {}
    ranked = []
    for position, run in enumerate(queued):
        turn[run.session_id] = turn.get(run.session_id, -1) + 1
        ranked.append((turn[run.session_id], position, run))
    return [run for _, _, run in sorted(ranked, key=lambda r: r[:2])]


class JobQueue:
    """Runs queued runs on a bounded pool of worker processes and reports their events."""

    def __init__(self, store: SessionStore, notify: Notify, *, workers: int = 1,
                 pipeline: str = "full", log_level: str = "INFO",
                 dask_scheduler: Optional[str] = None) -> None:
        self.store = store
        self.notify = notify
        self.size = workers
        self.pipeline = pipeline
        self.log_level = log_level
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._last_progress: dict[str, float] = {}
        self._session_of: dict[str, str] = {}  # run id -> session id, while a worker has it
        self._end_delay: dict[str, float] = {}  # run id -> s before its end is tried again
        # worker events; a future: resolved once the events ahead of it are handled
        self._inbox: asyncio.Queue[Union[tuple[Any, ...], asyncio.Future[None], None]] = \
            asyncio.Queue()
        # what clients are still to be told, by session (see `_tell`)
        self._outbox: dict[str, collections.deque[dict[str, Any]]] = {}
        self._telling: dict[str, asyncio.Task[None]] = {}
        self._submitting = asyncio.Lock()
        self._closing = False
        self.dask_scheduler = dask_scheduler
        self._dask: Any = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for run in await asyncio.to_thread(self.store.runs_in, "running"):
            log.info("Requeueing run %s of session %s interrupted by a restart", run.id,
                     run.session_id)
            # (the restart is not the run's attempt: it kept its retry for a worker crash)
            await asyncio.to_thread(self.store.update_run, run.id, status="queued", stage=None,
                                    progress=0.0, attempts=max(0, run.attempts - 1))
        if self.dask_scheduler:
            # Runs go to a Dask cluster; `size` bounds how many are in flight.
            from distributed import Client

            self._dask = await Client(self.dask_scheduler, asynchronous=True)
            log.info("Processing runs on the Dask cluster at %s", self.dask_scheduler)
            self._workers = [_Worker(None, None) for _ in range(self.size)]
        else:
            self._workers = [await asyncio.to_thread(self._spawn) for _ in range(self.size)]
        self._tasks = [asyncio.create_task(self._dispatch(), name="job-dispatch"),
                       asyncio.create_task(self._consume(), name="job-events")]
        self._wake.set()

    def _spawn(self) -> _Worker:
        """Start a worker process (fork + exec + handing it its queues: from a thread)."""
        tasks, events = self._ctx.Queue(), self._ctx.Queue()
        proc = self._ctx.Process(target=worker_main,
                                 args=(tasks, events, self.log_level, os.getpid()),
                                 name="workbench-worker", daemon=True)
        proc.start()
        worker = _Worker(proc, tasks, events=events)
        worker.reader = threading.Thread(target=self._read_events, args=(worker,),
                                         name="job-events", daemon=True)
        worker.reader.start()
        return worker

    async def close(self) -> None:
        """Stop dispatching, let each worker end its run (5 s) and handle what they send
        until they have stopped: a run ending meanwhile is saved, not done again at the
        next start-up."""
        self._closing = True
        dispatch, consume = self._tasks or (None, None)
        if dispatch is not None:
            dispatch.cancel()
        if self._dask is not None:
            if consume is not None:
                consume.cancel()
            await self._dask.close()
            await self._told(5)
            return
        for w in self._workers:
            try:
                w.tasks.put(None)
            except Exception:  # pragma: no cover - queue already broken
                pass

        def _join() -> None:
            deadline = time.monotonic() + 5
            for w in self._workers:
                w.process.join(max(0.1, deadline - time.monotonic()))
                if w.process.is_alive():
                    w.process.terminate()
                    w.process.join(2)
            for w in self._workers:
                w.reading = False
            for w in self._workers:
                if w.reader is not None:
                    w.reader.join(2)

        await asyncio.to_thread(_join)
        if consume is not None:  # (the reader's last events are in the inbox by now)
            self._inbox.put_nowait(None)
            try:
                await asyncio.wait_for(consume, 10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        await self._told(5)

    async def _told(self, timeout: float) -> None:
        """Give what clients are still to be told `timeout` s, then drop it."""
        telling = list(self._telling.values())
        if telling:
            _, late = await asyncio.wait(telling, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # ------------------------------------------------------------------ submitting
    async def submit(self, session_id: str, config: dict[str, Any],
                     supersedes: Optional[str] = None, *, waiting_limit: bool = False) -> Run:
        """Queue a new run of ``session_id`` with ``config``; returns it (status ``queued``).
        ``supersedes``: the live run it will replace (its ``processing_complete`` says so);
        ``waiting_limit``: raise :class:`TooManyRuns` when `MAX_QUEUED_RUNS` of the
        session's runs wait already (counted and queued as one step)."""
        async with self._submitting:
            if waiting_limit:
                session = await asyncio.to_thread(self.store.get_session, session_id)
                waiting = sum(1 for r in (session.runs if session else ())
                              if r.kind == "refined" and r.status == "queued")
                if waiting >= MAX_QUEUED_RUNS:
                    raise TooManyRuns(waiting)
            run = await asyncio.to_thread(self.store.create_run, session_id, config,
                                          supersedes=supersedes)
        log.info("Queued run %s for session %s", run.id, session_id)
        self._wake.set()
        return run

    async def forget(self, session_id: str) -> None:
        """The session was deleted: a worker processing one of its runs is stopped now
        (it went on for the whole run, the queue waiting behind it) and replaced. The
        progress its clients were still to be told goes (the deletion is told next: no
        progress after it); a run's end stays (a run that ended gets no other)."""
        pending = self._outbox.get(session_id)
        if pending:  # (the first is being told)
            kept = [m for m in list(pending)[1:] if m["type"] != "processing_progress"]
            while len(pending) > 1:
                pending.pop()
            pending.extend(kept)
        for w in self._workers:
            if (w.process is None or w.run_id is None
                    or self._session_of.get(w.run_id) != session_id):
                continue
            log.info("Stopping the run of deleted session %s (worker %s)", session_id,
                     w.process.pid)
            w.stopped = True
            w.process.kill()  # (its run_id stays: not free until the reaper replaces it)
            await asyncio.to_thread(w.process.join, 5)
            self._session_of.pop(w.run_id, None)
            self._last_progress.pop(w.run_id, None)
            await asyncio.to_thread(self.store.remove_leftovers, session_id)
            self._wake.set()

    def busy(self) -> int:
        return sum(1 for w in self._workers if w.run_id is not None)

    # ------------------------------------------------------------------ dispatching
    async def _dispatch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._reap_dead_workers()
                free = [w for w in self._workers if w.run_id is None]
                if not free:
                    continue
                queued = take_turns(await asyncio.to_thread(self.store.runs_in, "queued"))
                for run in queued:
                    if not free:
                        break
                    try:
                        started = await self._assign(free[0], run)
                    except (asyncio.CancelledError, sqlite3.Error, OSError):
                        raise  # the store or the system, not the run: all retried below
                    except Exception as exc:  # noqa: BLE001 - that run fails, the rest go on
                        log.exception("Run %s could not start", run.id)
                        await self._finish(run.id, ok=False, message="The run could not "
                                           f"start: {safe_details(exc, 200)}")
                        continue
                    if started:
                        free.pop(0)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the store unreadable for a moment
                log.exception("Dispatching runs failed; trying again in 0.5 s")
                await asyncio.sleep(0.5)

    async def _assign(self, worker: _Worker, run: Run) -> bool:
        """Start `run` on `worker`; False when it must wait (its session is recording) or
        cannot run (its session was deleted meanwhile)."""
        session = await asyncio.to_thread(self.store.get_session, run.session_id)
        if session is None:
            return False  # deleted: its runs went with it
        switch, options = split_run_config(run.config)
        task = {
            "run_id": run.id,
            "session_id": run.session_id,
            "session_dir": str(self.store.session_dir(run.session_id)),
            "run_dir": str(self.store.run_dir(run.session_id, run.id)),
            "data_dir": str(self.store.data_dir),
            "format": session.format,
            "config": options,
            # A run may ask for less than the server does (renditions only), never more.
            "pipeline": ("renditions" if self.pipeline == "renditions"
                         else switch or self.pipeline),
        }
        try:
            if not await asyncio.to_thread(self.store.begin_processing, run.session_id):
                return False  # a connection resumed the recording: the run waits
        except KeyError:  # deleted since it was read
            return False
        except TransitionError:  # an idle session has no audio to process
            await self._finish(run.id, ok=False, message=f"Session is {session.status}: "
                               "it has no recorded audio to process")
            return False
        await asyncio.to_thread(self.store.update_run, run.id, status="running",
                                started_at=time.time(), attempts=run.attempts + 1,
                                stage="queued", progress=0.0)
        worker.run_id = run.id
        self._session_of[run.id] = run.session_id
        if self._dask is not None:
            from .worker import run_on_dask

            future = self._dask.submit(run_on_dask, task, pure=False,
                                       key=f"workbench-run-{run.id}-{run.attempts + 1}")
            asyncio.create_task(self._await_dask(run.id, future))
        else:
            worker.tasks.put(task)
        return True

    async def _await_dask(self, run_id: str, future: Any) -> None:
        try:
            event = await future
        except Exception as exc:  # the task or its worker failed
            event = ("failed", run_id, f"Dask task failed: {safe_details(exc, 200)}")
        await self._inbox.put(tuple(event))

    async def _reap_dead_workers(self) -> None:
        for i, w in enumerate(self._workers):
            if w.process is None or w.process.is_alive() or self._closing:
                continue
            log.log(logging.INFO if w.stopped else logging.ERROR, "Worker process %s %s (exit "
                    "code %s)", w.process.pid, "stopped" if w.stopped else "died",
                    w.process.exitcode)
            await self._drain(w)
            if w.run_id is not None:
                run = await asyncio.to_thread(self.store.get_run, w.run_id)
                if run is not None and run.status == "running":
                    if run.attempts < MAX_ATTEMPTS:
                        await asyncio.to_thread(self.store.update_run, run.id, status="queued")
                    else:  # (as a worker's `failed`: tried again if it cannot be stored)
                        await self._inbox.put(("failed", run.id,
                                               "The worker process died while processing"))
                elif run is None:  # its session was deleted: what it wrote goes too
                    self._last_progress.pop(w.run_id, None)
                    session_id = self._session_of.pop(w.run_id, None)
                    if session_id is not None:
                        await asyncio.to_thread(self.store.remove_leftovers, session_id)
            spawning = asyncio.ensure_future(asyncio.to_thread(self._spawn))
            try:
                self._workers[i] = await asyncio.shield(spawning)
            except asyncio.CancelledError:  # close() began: the new process must not linger
                spawning.add_done_callback(_terminate_spawned)
                raise
            self._wake.set()

    async def _drain(self, worker: _Worker) -> None:
        """Handle what the dead `worker` sent before its run is looked at: a `done` sent
        just before it was killed completes the run (else the run was queued again, given
        to another worker and then ended under it by the old `done`: that worker was
        booked twice, its progress told after processing_complete)."""
        worker.reading = False  # (its reader hands on what it sent, then ends)
        if worker.reader is not None:  # (one stuck on a message cut short is given up)
            await asyncio.to_thread(worker.reader.join, 2)
        worker.gone = True
        handled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(handled)
        await handled

    # ------------------------------------------------------------------ events
    def _read_events(self, worker: _Worker) -> None:
        """Hand `worker`'s events to the loop, in order, until it is replaced or closed."""
        while True:
            try:
                event = worker.events.get(timeout=0.2)
            except queue.Empty:
                if not worker.reading:
                    return
                continue
            except Exception:  # noqa: BLE001 - e.g. a worker killed while it wrote one
                log.exception("A worker event could not be read; reading on")
                if not worker.reading:
                    return
                continue
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._hand_on, worker, event)

    def _hand_on(self, worker: _Worker, event: tuple[Any, ...]) -> None:
        """Queue `worker`'s `event` for `_consume`, unless the worker was reaped already
        (its run was decided on without it)."""
        if worker.gone:
            log.warning("Event %r of run %s from a reaped worker dropped", event[0], event[1])
        else:
            self._inbox.put_nowait(event)

    async def _consume(self) -> None:
        """Handle worker events one at a time, in the order the workers sent them (until
        ``None``, at close); clients are told without waiting for them (`_tell`)."""
        while (event := await self._inbox.get()) is not None:
            if isinstance(event, asyncio.Future):
                if not event.done():
                    event.set_result(None)
            else:
                await self._on_event(event)

    async def _on_event(self, event: tuple[Any, ...]) -> None:
        kind, run_id = event[0], event[1]
        try:
            if kind == "progress":
                await self._progress(run_id, event[2], float(event[3]), float(event[4]))
            elif kind == "done":
                await self._finish(run_id, ok=True, summary=event[2])
            elif kind == "failed":
                await self._finish(run_id, ok=False, message=event[2])
            self._end_delay.pop(run_id, None)
            await asyncio.sleep(0)  # (the clients' telling may start; it is not waited for)
        except (OSError, sqlite3.OperationalError) as exc:  # (a full disk, a locked database)
            if kind not in ("done", "failed"):
                log.warning("Job event %r of run %s not stored: %s", kind, run_id, exc)
                return
            log.warning("The end of run %s could not be stored (%s): tried again", run_id, exc)
            self._again(event)
        except Exception:  # keep the dispatcher alive whatever a bad event does
            log.exception("Handling job event %r failed", kind)

    def _again(self, event: tuple[Any, ...]) -> None:
        """A run's end that could not be stored (a full disk, a locked database) is handled
        again after 1 s, then up to every 30 s, until it works or the queue closes (start-up
        then queues the run again): else its run stayed running, its session processing."""
        run_id = event[1]
        delay = self._end_delay[run_id] = min(2 * self._end_delay.get(run_id, 0.5), 30.0)

        def again() -> None:  # (not once another worker has the run: its end will come)
            if self._closing or any(w.run_id == run_id for w in self._workers):
                self._end_delay.pop(run_id, None)
            else:
                self._inbox.put_nowait(event)

        asyncio.get_running_loop().call_later(delay, again)

    async def _progress(self, run_id: str, stage: str, progress: float, overall: float) -> None:
        run = await asyncio.to_thread(self.store.get_run, run_id)
        if run is None or run.status != "running":  # (ended, or queued again: not its figure)
            return
        now = time.monotonic()
        if now - self._last_progress.get(run_id, 0.0) >= 1.0 or progress >= 1.0:
            self._last_progress[run_id] = now
            await asyncio.to_thread(self.store.update_run, run_id, stage=stage, progress=overall)
        self._tell(run.session_id, {
            "type": "processing_progress", "session_id": run.session_id, "run_id": run_id,
            "stage": stage, "progress": round(min(max(progress, 0.0), 1.0), 4),
            "overall": overall,
        })

    async def _finish(self, run_id: str, *, ok: bool, summary: Optional[dict[str, Any]] = None,
                      message: str = "") -> None:
        for w in self._workers:
            if w.run_id == run_id:
                w.run_id = None
        self._last_progress.pop(run_id, None)
        self._wake.set()
        session_id = self._session_of.pop(run_id, None)
        run = await asyncio.to_thread(self.store.get_run, run_id)
        if run is None:
            if session_id is not None:  # deleted meanwhile: what the worker wrote goes too
                await asyncio.to_thread(self.store.remove_leftovers, session_id)
            return
        sid = run.session_id
        if run.status == "completed" or (run.status == "failed" and not ok):
            # its end was handled already (a worker killed after `done`: its run was queued
            # again and ended twice, two processing_complete)
            log.warning("Run %s ended already; its second end is ignored", run_id)
            return
        if run.status == "failed":  # a worker's result after the reaper failed its run
            session = await asyncio.to_thread(self.store.get_session, sid)
            if session is not None and session.status == "failed":
                await asyncio.to_thread(self.store.set_status, sid, "processing")
        await asyncio.to_thread(self.store.finish_run, run_id, ok=ok, summary=summary,
                                error=None if ok else message, finished_at=time.time())
        if ok:
            summary = summary or {}
            log.info("Run %s of session %s completed", run_id, sid)
            session = await asyncio.to_thread(self.store.get_session, sid)
            # no MP4 of a recording without audio (its link answered 422)
            formats = AUDIO_FORMATS if session is None or session.duration_seconds > 0 else ("wav",)
            complete = {
                "type": "processing_complete", "session_id": sid, "run_id": run_id,
                "speakers": summary.get("speakers"),
                "duration_seconds": summary.get("duration_seconds"),
                "word_count": summary.get("word_count"),
                "results": result_links(sid, run_id) if "word_count" in summary else {},
                "audio": audio_links(sid, formats),
            }
            if run.supersedes is not None:
                complete["supersedes"] = run.supersedes
            self._tell(sid, complete)
        else:
            log.warning("Run %s of session %s failed: %s", run_id, sid, message)
            self._tell(sid, {"type": "processing_failed", "session_id": sid,
                             "run_id": run_id, "message": message})

    def _tell(self, session_id: str, message: dict[str, Any]) -> None:
        """Tell the session's clients `message` after what they were told before, without
        waiting for them: a slow client held every run's end and the dispatcher (events
        are handled one at a time). A client behind hears a run's latest progress in a
        stage, not every figure."""
        pending = self._outbox.setdefault(session_id, collections.deque())
        last = pending[-1] if len(pending) > 1 else None  # (the first is being told)
        if (last is not None and message["type"] == last["type"] == "processing_progress"
                and (message["run_id"], message["stage"]) == (last["run_id"], last["stage"])):
            pending[-1] = message
        else:
            pending.append(message)
        if session_id not in self._telling:
            self._telling[session_id] = asyncio.create_task(self._tell_all(session_id),
                                                            name="job-notify")

    async def _tell_all(self, session_id: str) -> None:
        pending = self._outbox[session_id]
        try:
            while pending:
                try:
                    await self.notify(session_id, pending[0])
                except Exception:  # noqa: BLE001 - the next message is still told
                    log.exception("Telling session %s's clients failed", session_id)
                pending.popleft()
        finally:
            del self._outbox[session_id], self._telling[session_id]
