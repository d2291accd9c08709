"""Live results over the recording protocol: a live worker process per recording that
asked for them (``"live_results": true`` in ``start``), its events forwarded to every
connection subscribed to the session, its result saved as a run of kind ``live``.

`LiveHub` (one per server) holds the budget (``--max-live-sessions``) and the live
streams by session; `LiveStream` is one recording's: it hands the worker
(:mod:`server.live_worker`) each accepted chunk after the chunk was written, without ever
waiting for it, and turns what the worker says into protocol messages:

* the worker's events (``transcript_partial``, ``transcript_final``, ``speaker_labels``,
  ``diarization_update``) with ``session_id``, in the order it made them, and
  ``live_run_saved`` after them once the live run is saved (or failed);
* ``live_paused {reason}`` when the audio not yet taken up by the live engines exceeds
  `PAUSE_BACKLOG` seconds, ``live_resumed`` once it is back under `RESUME_BACKLOG`, and
  one that ends live results for the rest of the recording when the worker dies, cannot
  decode the stream, or falls `OFF_BACKLOG` seconds behind.

The recording never waits for live work: its bytes go to a queue a thread drains into the worker's
pipe; with the worker gone they are dropped from the queue, never from the recording.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Awaitable, Callable, Optional

from workbench.engine.audio import InputFormat

from .live_backlog import Backlog
from .live_process import WorkerProcess
from .live_said import FinalSoFar, WordNumbers, audio_before, known_speakers, said_before
from .live_worker import live_run_options
from .sessions import SessionStore

log = logging.getLogger("server.live")

# AppState.notify(session_id, message, source=stream): an event to the session's sockets
# (one whose recording did not ask for live results is muted for the stream it names)
Notify = Callable[..., Awaitable[None]]

PAUSE_BACKLOG = 10.0  # s of audio behind: live_paused
RESUME_BACKLOG = 3.0  # s: live_resumed
OFF_BACKLOG = 120.0  # s: live results off for the rest of the recording
LINGER_SECONDS = 30.0  # a dropped recording's live worker waits this long for a resume
FINISH_TIMEOUT = 600.0  # s for a live worker to flush and save after stop
STALL_SECONDS = float(os.environ.get("WORKBENCH_LIVE_STALL_SECONDS") or 30.0)  # (env: tests)
FLUSH_WAIT = 20.0  # s a new stream's words wait for the last one's (their indexes follow)
CHECK_INTERVAL = 0.5


class LiveStream(WorkerProcess):
    """One recording's live worker and what the server knows of its progress."""

    def __init__(self, hub: "LiveHub", session_id: Optional[str] = None, offset: float = 0.0,
                 first_index: Optional[int] = 0) -> None:
        super().__init__()
        self.hub = hub
        self.session_id = session_id  # None: a worker started ahead (`--live-warm`)
        self.offset = offset
        self.numbers = WordNumbers(first_index)  # None: known once the last stream's are
        self.superseded = False  # a later stream took the next indexes: its words stay here
        self.state = "starting"  # spare, running, lingering, finishing, off, done
        self.paused, self.pause_reason = False, ""
        self.load_failed = False  # it said it could not load its models
        self.heard = time.monotonic()  # when it last said anything
        self.loaded = False  # the worker's models are loaded
        self.ready = False  # and it has reported its position since
        self.position = Backlog()  # bytes handed to the worker, what it did with them
        self._pos: tuple[Any, ...] = ()  # its last `pos` message
        self._task: Optional[asyncio.Task[None]] = None
        self._linger: Optional[asyncio.TimerHandle] = None
        self._spawning: Optional["asyncio.Future[None]"] = None  # a spare's process start
        self._result: "asyncio.Future[tuple[Any, ...]]" = asyncio.get_running_loop().create_future()
        self.said = FinalSoFar(first_index or 0, offset)  # for one that missed it (`catch_up`)

    def assign(self, session_id: str, offset: float, first_index: Optional[int]) -> None:
        """Tell the worker which recording it serves (its first message); its words take
        indexes from `first_index` on (None: from `number_after`)."""
        self.session_id, self.offset = session_id, offset
        self.numbers, self.said = WordNumbers(first_index), FinalSoFar(first_index or 0, offset)
        self._outbox.put(("session", {"session_id": session_id, "offset": offset,
                                      "await_speakers": True}))  # see take_speakers

    async def number_after(self, before: Optional["LiveStream"], first_index: int) -> None:
        """This stream's word indexes go on after those of the session's last live stream
        once it has said its last words (at most FLUSH_WAIT s: a stream still saving then
        says no more words to clients, they would take this one's indexes)."""
        if before is not None:
            try:
                await asyncio.wait_for(before.said_all(), FLUSH_WAIT)
            except asyncio.TimeoutError:
                log.warning("The live stream of session %s is still flushing after %g s",
                            self.session_id, FLUSH_WAIT)
            before.superseded = True
            first_index = max(first_index, before.said.next_index)
        first_index = max(first_index, self.hub.said_until.get(self.session_id or "", 0))
        self.said = FinalSoFar(first_index, self.offset)
        await self.numbers.settle(first_index, self._tell)
        self.hub.numbered(self)

    async def take_speakers(self, before: Optional["LiveStream"]) -> None:
        """A new live session of a recording goes on with the speakers of its last saved
        live run (once `before`, the session's last stream, has saved: at most FLUSH_WAIT
        s), so a voice keeps its label across a resume. The worker's diarization waits for
        this message (its words wait for `before`'s anyway: `number_after`), so no label is
        given before; None: none to go on with."""
        known, where = None, (self.hub.store, self.session_id or "", self.offset)
        try:
            self._give(await asyncio.to_thread(audio_before, *where))  # (the first windows)
            if before is not None:
                await asyncio.wait_for(before.said_all(), FLUSH_WAIT)
            self._give(await asyncio.to_thread(said_before, *where))  # (once it has saved)
            known = await asyncio.to_thread(known_speakers, *where[:2])
        except asyncio.TimeoutError:
            log.warning("Session %s: the last live stream is still saving; this one's "
                        "speakers are its own", self.session_id)
        except Exception:  # noqa: BLE001 - (the store) the labels start afresh then
            log.exception("Speakers of session %s not read", self.session_id)
        finally:  # (after a stop the worker's flush goes on without them)
            if self.state in ("running", "lingering") and self.alive():
                self._outbox.put(("speakers", known))

    def _give(self, before: Any) -> None:
        """Hand the worker what came before a resume: audio (diarization) or text (prompt)."""
        if before and self.state in ("running", "lingering") and self.alive():
            self._outbox.put(("context" if isinstance(before, bytes) else "said", before))

    async def said_all(self) -> None:
        await self.numbers.known.wait()
        await asyncio.shield(self._result)

    # ------------------------------------------------------------------ audio in
    def begin_part(self, fmt: InputFormat) -> None:
        """A part of the recording begins (at start and at each resume)."""
        self.position.begin_part(fmt.container, fmt.bytes_per_second)
        if self.state == "lingering":
            self.state = "running"
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
        self._outbox.put(("part", fmt.container, fmt.sample_rate, fmt.channels))

    def feed(self, data: bytes) -> None:
        """Hand an accepted (already written) chunk to the worker; never waits."""
        if self.state != "running" or not data or self.position.overflow:
            return
        if self.position.add(len(data)):  # (else `_check` ends live results)
            self._outbox.put(("bytes", data))

    # ------------------------------------------------------------------ events out
    def catch_up(self) -> list[dict[str, Any]]:
        """For one socket that missed what was said (a resumed recording's, a watcher
        joining late): everything final so far, as one ``live_replay``, and a
        ``live_paused`` while still behind. Sent to that socket only."""
        said = self.said.replay()
        messages = [said] if said is not None else []
        if self.paused:
            messages.append({"type": "live_paused", "reason": self.pause_reason})
        return [{**m, "session_id": self.session_id} for m in messages]

    async def _say(self, message: dict[str, Any]) -> None:
        if self.session_id is None:
            return
        await self.hub.notify(self.session_id, {**message, "session_id": self.session_id},
                              source=self)

    async def _tell(self, event: dict[str, Any]) -> None:
        self.said.add(event)
        await self._say(event)

    async def pause(self, reason: str) -> None:
        self.paused, self.pause_reason = True, reason
        await self._say({"type": "live_paused", "reason": reason})

    async def off(self, reason: str, ended: bool = False) -> None:
        """Live results end for the rest of this recording (the recording goes on), or
        at its end (`ended`: these live results are not saved as a run)."""
        if self.state in ("off", "done"):
            return
        was = self.state
        self.state = "off"
        self._kill()
        if not self._result.done():
            self._result.set_result(("failed", reason))
        log.warning("Live results off for session %s: %s", self.session_id, reason)
        if was in ("starting", "running"):
            await self.pause(reason + (". These live results are not saved as a run" if ended
                                       else ". Live results are off for the rest of this "
                                       "recording; the recording goes on"))

    async def run(self) -> None:
        """Forward the worker's messages, in order, and watch its backlog and health."""
        try:
            while self.state not in ("off", "done"):
                try:
                    msg = await asyncio.wait_for(self._inbox.get(), CHECK_INTERVAL)
                except asyncio.TimeoutError:
                    msg = None
                if msg is not None:
                    await self._handle(msg)
                await self._check()
        except Exception:  # the recording must never suffer from live work
            log.exception("Live stream of session %s failed", self.session_id)
            self._kill()
            self.state = "off"
        finally:
            if not self._result.done():
                self._result.set_result(("failed", "The live worker stopped"))
            self.hub.stream_ended(self)

    async def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind != "pos" or tuple(msg[1:]) != self._pos:
            # (a worker hung in its flush goes on sending the same `pos`; one that flushes
            # counts its passes and steps in them)
            self.heard = time.monotonic()
        if kind == "event":
            if self.state in ("running", "lingering", "finishing") and not self.superseded:
                event = self.numbers.take(msg[1])
                if event is not None:
                    await self._tell(event)
        elif kind == "pos":
            self._pos = tuple(msg[1:])
            self.position.report(int(msg[1]), float(msg[2]), float(msg[3]))
            self.ready = self.loaded
        elif kind == "ready":
            self.loaded = True
            log.info("Live worker of session %s ready (pid %s)", self.session_id, self.process.pid)
        elif kind == "error":
            self.load_failed = not self.loaded
            await self.off(str(msg[1]))
        elif kind in ("done", "failed"):
            if not self._result.done():
                self._result.set_result(msg)
            self.state = "done"
        elif kind == "eof":
            code = self.process.exitcode if self.process is not None else None
            if self.process is not None and code is None:
                await asyncio.to_thread(self.process.join, 5)
                code = self.process.exitcode
            await self.off(f"The live worker stopped (exit code {code})")

    async def _check(self) -> None:
        if self.state not in ("starting", "running"):
            return
        if self.process is not None and not self.process.is_alive():
            await self.off(f"The live worker stopped (exit code {self.process.exitcode})")
            return
        behind = self.position.seconds()  # (received, not yet taken up by the engines)
        if self.position.too_far(OFF_BACKLOG):
            await self.off(self.position.reason())
        elif not self.ready:
            return  # models loading: the audio waits for them
        elif not self.paused and behind > PAUSE_BACKLOG:
            await self.pause(f"Live results are {behind:.0f} s behind the audio (more than "
                             f"{PAUSE_BACKLOG:g} s); they catch up when they can, the "
                             "recording goes on")
        elif self.paused and behind < RESUME_BACKLOG:
            self.paused = False
            await self._say({"type": "live_resumed"})

    # ------------------------------------------------------------------ the end
    def linger(self) -> None:
        """The recording was interrupted: its worker waits for a resume (for
        `LINGER_SECONDS` from `LiveHub.resumable`, once the dropped part is saved)."""
        if self.state == "running":
            self.state = "lingering"

    async def finish(self, store: SessionStore, until: Optional[float] = None) -> Optional[str]:
        """The recording ended: the worker flushes and saves into a new live run, whose
        id is returned at once (None when live results were off); the run is completed
        or failed in the background."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.heard = max(self.heard, time.monotonic())  # the stall clock starts at stop
        if self.state in ("starting", "running", "lingering") and self.alive() and (
                self.position.too_far(OFF_BACKLOG)):  # as while recording: the
            # worker would hold its slot for as long as it takes to catch up
            await self.off(self.position.reason(), ended=True)
            return None
        session_id = self.session_id
        if (self.state not in ("starting", "running", "lingering") or not self.alive()
                or session_id is None):  # (a spare serves no recording yet)
            if self.state not in ("off", "done"):
                await self.off("The live worker stopped")
            return None
        self.state = "finishing"
        self.hub.unsaved.add(self)  # until it has said live_run_saved (or will not)
        try:
            options = live_run_options(self.hub.config)  # (every option: the run's config)
            run = await asyncio.to_thread(store.create_run, session_id, options, kind="live")
        except Exception:  # noqa: BLE001 - e.g. the session was deleted meanwhile
            log.exception("Live result of session %s not saved", self.session_id)
            self.hub.unsaved.discard(self)
            self.close()
            return None
        self._outbox.put(("finish", str(store.run_dir(session_id, run.id)), until))
        self._outbox.put(None)
        self.hub.keep(self._save(store, session_id, run.id)).add_done_callback(
            lambda _: self.hub.unsaved.discard(self))
        log.info("Live run %s of session %s: saving", run.id, self.session_id)
        return run.id

    async def _save(self, store: SessionStore, session_id: str, run_id: str) -> None:
        deadline = time.monotonic() + FINISH_TIMEOUT
        while True:  # a worker that says nothing for STALL_SECONDS is stuck (it held its
            try:     # live slot for the whole FINISH_TIMEOUT, 600 s)
                outcome = await asyncio.wait_for(asyncio.shield(self._result), 1.0)
                break
            except asyncio.TimeoutError:
                stalled = self.loaded and time.monotonic() - self.heard > STALL_SECONDS
                if stalled or time.monotonic() > deadline:  # (loading, it says nothing)
                    outcome = ("failed", "The live worker stopped answering while saving")
                    self._kill()
                    break
        ok = outcome[0] == "done"
        if ok:
            await self.numbers.known.wait()
        summary = {**outcome[1], "first_index": self.numbers.base} if ok else None
        error = None if ok else str(outcome[1])
        await asyncio.to_thread(store.finish_run, run_id, ok=ok, summary=summary,
                                error=error, finished_at=time.time())
        log.info("Live run %s of session %s: %s", run_id, self.session_id, error or "completed")
        await self.hub.notify(session_id, {"type": "live_run_saved", "session_id": session_id,
                                           "run_id": run_id, "status": "completed" if ok else
                                           "failed", "summary": summary, "error": error},
                              source=self)
        await asyncio.to_thread(store.remove_leftovers, session_id)  # if deleted since
        if self.process is not None:
            await asyncio.to_thread(self.process.join, 10)
            if self.process.is_alive():
                self._kill()  # (and reaped: a zombie until the next spawn)
        self.state = "done"

    def close(self) -> None:
        """Server shutdown: stop the worker now."""
        if self._linger is not None:
            self._linger.cancel()
        self.state = "done"
        self._kill()


class LiveHub:
    """The server's live streams, one per recording with live results, within a budget."""

    def __init__(self, store: SessionStore, notify: Notify, *, max_streams: int,
                 data_dir: str, log_level: str = "INFO", warm: bool = False,
                 config: Optional[dict[str, Any]] = None) -> None:
        self.store, self.notify = store, notify
        self.config = dict(config or {})  # LiveConfig options of every live worker
        self.max_streams = max_streams
        self.data_dir = data_dir
        self.log_level = log_level
        # the current stream of each session, and every stream whose worker may be alive
        self.streams: dict[str, LiveStream] = {}
        self.alive: set[LiveStream] = set()
        self.unsaved: set[LiveStream] = set()  # saving a live run, alive or not
        self.saving: "set[asyncio.Task[None]]" = set()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.warm = warm
        self.spare: Optional[LiveStream] = None
        self.closing = False
        # the next word index of each session whose live stream ended (saved or not)
        self.said_until: dict[str, int] = {}
        # the last live stream of each session until it ended with its words numbered
        self.last: dict[str, LiveStream] = {}
        self._budget = asyncio.Lock()  # (two starts passed the budget of 1 at once)
        self._spare_failures = 0  # spares that died since a recording last took one

    def keep(self, work: Awaitable[None]) -> "asyncio.Task[None]":
        """Run `work` as a task the hub holds until it ends (the loop itself keeps only a
        weak reference to a task) and that `close` waits for, then cancels."""
        task = asyncio.ensure_future(work)
        self.saving.add(task)
        task.add_done_callback(self.saving.discard)
        return task

    def active(self) -> int:
        """Live worker processes serving a recording (recording, lingering or saving)."""
        return sum(1 for s in self.alive if s.session_id is not None
                   and s.state not in ("off", "done"))

    def of(self, session_id: str) -> set[LiveStream]:
        """The session's live streams whose workers may still say something."""
        return {s for s in self.alive | self.unsaved if s.session_id == session_id}

    def status(self) -> dict[str, int]:
        spare = self.spare is not None and self.spare.loaded and self.spare.alive()
        return {"active": self.active(), "max": self.max_streams, "warm": int(spare)}

    def start(self) -> None:
        """At server start: keep a live worker loaded ahead when `--live-warm` asks."""
        self.loop = asyncio.get_running_loop()
        self._refill()

    def _refill(self) -> None:
        """Start a spare live worker (models loaded, no recording yet) when warm workers
        are on, none is there, and the budget has room for one more live recording."""
        if (not self.warm or self.spare is not None or self.loop is None
                or self.loop.is_closed() or self.active() >= self.max_streams):
            return
        self.spare = LiveStream(self)
        self.alive.add(self.spare)
        self.spare._spawning = self.keep(self._spawn_spare(self.spare))

    async def _spawn_spare(self, stream: LiveStream) -> None:
        try:
            await asyncio.to_thread(stream.spawn, self._spec(), self.loop)
        except Exception:
            log.exception("A live worker could not be started ahead")
            stream.state = "done"
            self.stream_ended(stream)
            return
        if stream.state == "done":  # closed while its process was being started
            stream._kill()
            return
        stream.state = "spare"
        stream._task = asyncio.create_task(stream.run(), name="live-spare")
        log.info("Live worker started ahead (pid %s)", stream.process.pid)

    def _spec(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "log_level": self.log_level, "config": self.config}

    def refusal(self) -> Optional[str]:
        """Why a new live stream cannot start now, or None."""
        if self.max_streams <= 0:
            return "Live results are off on this server (--max-live-sessions 0); recording normally"
        if self.active() >= self.max_streams:
            return (f"Live results are busy: {self.max_streams} live stream(s) at once on "
                    "this server (--max-live-sessions; a stream counts until its live run is "
                    f"saved: after stop, or {LINGER_SECONDS:g} s after a dropped part is saved); "
                    "recording normally, the refined transcript follows after stop")
        return None

    async def attach(self, session_id: str, fmt: InputFormat, offset: float,
                     first_index: int) -> tuple[Optional[LiveStream], Optional[str]]:
        """The live stream of a recording that begins a part: the one waiting for this
        session's resume, else a new one (time `offset`, word indexes from
        `first_index`, or after those of its last live stream, at once or once that one
        has said its last words); or (None, reason) when over budget."""
        self.loop = asyncio.get_running_loop()
        stream = self.streams.get(session_id)
        if stream is not None and stream.state == "lingering" and stream.alive():
            stream.begin_part(fmt)
            log.info("Live results of session %s continue", session_id)
            return stream, None
        if stream is not None and stream.state == "lingering":
            await stream.finish(self.store)  # its worker died meanwhile
        # the last live stream's words may not be in a saved live run yet (still saving,
        # or its worker died): next_word_index does not count them, nor those of an
        # earlier stream that ended without saving one (its worker died)
        before = self.last.get(session_id)
        if before is None:
            first_index = max(first_index, self.said_until.get(session_id, 0))
        elif (before.state == "finishing" and 0 < self.max_streams <= self.active()
              and self.active() - 1 < self.max_streams):
            # the budget is full with this session's own last stream, still saving: its
            # slot comes free once it has saved (at most FLUSH_WAIT s); a budget of one
            # refused every such resume at once
            try:
                await asyncio.wait_for(asyncio.shield(before._result), FLUSH_WAIT)
            except asyncio.TimeoutError:
                pass
        async with self._budget:  # one decision at a time: a spare still being spawned
            stream, reason = await self._start(  # counts nowhere
                session_id, fmt, offset, first_index if before is None else None)
        if stream is not None:
            self.keep(stream.take_speakers(before))
            if before is not None:
                self.keep(stream.number_after(before, first_index))
        return stream, reason

    async def _start(self, session_id: str, fmt: InputFormat, offset: float,
                     first_index: Optional[int]) -> tuple[Optional[LiveStream], Optional[str]]:
        reason = self.refusal()
        if reason is not None:
            return None, reason
        spare, self.spare = self.spare, None
        if spare is not None and spare._spawning is not None and not spare._spawning.done():
            # a worker started ahead is still being started: take it (starting one more
            # next to it would load the models twice on the same cores)
            await asyncio.shield(spare._spawning)
        if spare is not None and spare.state == "spare" and spare.alive():
            stream, self._spare_failures = spare, 0  # models loaded, or loading since before
            stream.assign(session_id, offset, first_index)
        else:
            if spare is not None:
                spare.close()
                self.stream_ended(spare)
            stream = LiveStream(self, session_id, offset, first_index)
            self.alive.add(stream)
            try:
                await asyncio.to_thread(stream.spawn, self._spec(), self.loop)
            except BaseException:
                stream.state = "done"
                self.stream_ended(stream)
                raise
            stream.assign(session_id, offset, first_index)
            stream._task = asyncio.create_task(stream.run(), name=f"live-{session_id}")
        self.streams[session_id] = self.last[session_id] = stream
        stream.state = "running"
        stream.begin_part(fmt)
        log.info("Live results for session %s (worker pid %s%s, offset %.1f s)", session_id,
                 stream.process.pid, ", started ahead" if stream is spare else "", offset)
        self._refill()
        return stream, None

    def stream_ended(self, stream: LiveStream) -> None:
        ended_now = stream in self.alive  # (a discarded stream's task ends it again later)
        self.alive.discard(stream)
        if self.spare is stream:
            self.spare = None
            self._spare_failures += 1  # (reset when a recording takes a spare)
            # it could not load its models; a kill (e.g. the OOM killer's) is tried again,
            # twice: every spare that dies costs a model load
            if self.warm and (stream.load_failed or self._spare_failures >= 3):
                log.warning("The live worker started ahead failed; no more are started ahead")
                self.warm = False
        if ended_now and stream.session_id is not None and stream.said.next_index:
            self.said_until[stream.session_id] = max(self.said_until.get(stream.session_id, 0),
                                                     stream.said.next_index)
        if stream.numbers.known.is_set():
            self.numbered(stream)
        if stream.session_id is not None and self.streams.get(stream.session_id) is stream:
            self.streams.pop(stream.session_id, None)
        if not self.closing:
            self._refill()

    def numbered(self, stream: LiveStream) -> None:
        """A stream's words are numbered: once it has ended too, the session's next one
        numbers on from said_until."""
        sid = stream.session_id
        if sid is not None and self.last.get(sid) is stream and stream not in self.alive:
            del self.last[sid]
            if stream.said.next_index:
                self.said_until[sid] = max(self.said_until.get(sid, 0), stream.said.next_index)

    def detach(self, session_id: str) -> None:
        """The recording was interrupted (disconnect, idle): keep its worker for a resume."""
        stream = self.streams.get(session_id)
        if stream is not None:
            stream.linger()

    def resumable(self, session_id: str) -> None:
        """The interrupted recording's part is saved (until then a resume is refused): its
        worker waits `LINGER_SECONDS` from now."""
        stream = self.streams.get(session_id)
        if stream is not None and stream.state == "lingering" and stream._linger is None:
            stream._linger = self.loop.call_later(LINGER_SECONDS,
                                                  lambda: self.keep(self._expire(stream)))

    async def _expire(self, stream: LiveStream) -> None:
        if stream.state == "lingering":
            log.info("Session %s not resumed within %g s: saving its live result",
                     stream.session_id, LINGER_SECONDS)
            await stream.finish(self.store)

    def discard(self, session_id: str) -> None:
        """The session was deleted: its live worker (if waiting for a resume) stops now."""
        stream = self.streams.get(session_id)
        if stream is not None:
            stream.close()
            self.stream_ended(stream)
        self.said_until.pop(session_id, None)
        self.last.pop(session_id, None)

    async def end(self, session_id: str, until: Optional[float] = None) -> Optional[str]:
        """The recording ended (stop, a limit) or will not continue live: save its live
        result (cut at `until` s: the duration limit); returns the live run's id or None."""
        stream = self.streams.get(session_id)
        if stream is None or stream.state in ("finishing", "off", "done"):
            return None
        return await stream.finish(self.store, until)

    async def close(self, grace: float = 10.0) -> None:
        """Server shutdown: the live results of recordings it interrupted are saved (as
        at `stop`) and live runs being saved get `grace` seconds, then every live worker
        stops (a live run left unsaved is marked failed at the next start)."""
        self.closing = True
        for stream in list(self.alive):
            if stream.state == "lingering":
                await stream.finish(self.store)
        if self.saving:
            await asyncio.wait(list(self.saving), timeout=grace)
        for stream in list(self.alive):
            stream.close()
        for task in list(self.saving):
            task.cancel()


__all__ = ["LINGER_SECONDS", "LiveHub", "LiveStream", "OFF_BACKLOG", "PAUSE_BACKLOG",
           "RESUME_BACKLOG"]
