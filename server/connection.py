"""The WebSocket endpoint ``/ws/{session_id}``: one connection's side of the recording protocol."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any, Awaitable, Callable, Optional

from aiohttp import WSCloseCode, WSMsgType, web

from workbench.engine.audio import AudioDecodeError
from workbench.engine.config import ConfigError

from .protocol import (ErrorCode, Messages, ProtocolError, StartRequest, decode_chunk, error,
                       given_options, holds_action, parse_start)
from .jobs import check_run_config
from .limits import Limits, LivePacer
from .live import LiveStream
from .live_said import next_word_index
from .part_writer import PartWriter
from .finalise import finalise_async
from .security import client_address
from .sessions import Session, TransitionError, valid_id
from .worker import safe_details
from .state import AppState, STATE

log = logging.getLogger("server.connection")

RESUMABLE = ("idle", "interrupted", "completed", "failed")
# Text frames from this size on are parsed (and their base64 decoded) in a thread.
LARGE_TEXT = 64 * 1024
# Reasons a recording ends without `stop`: the session is left `interrupted`.
INTERRUPTIONS = ("disconnect", "shutdown", "idle")


def printable(text: str, limit: int = 80) -> str:
    """A client-chosen string made safe for one log line (no control characters)."""
    text = text[:limit]
    return text if text.isprintable() else repr(text)


def _interrupt(store: Any, sid: str, why: str) -> None:
    """A recording whose finish failed is `interrupted` (only from 'recording': a session
    processing keeps its audio.wav), its audio.wav gone (it may lack the last part), its byte
    counts from the parts' files (a resume counted its limit from an older, unstored one)."""
    session = store.get_session(sid)
    if session is None or session.status != "recording":  # (moved on: nothing to write)
        raise TransitionError(f"{session.status if session else 'deleted'} -> interrupted")
    total = store.recount_parts(sid)
    store.set_status(sid, "interrupted", error=why, bytes_received=total)
    store.audio_path(sid).unlink(missing_ok=True)


def _until_it_works(state: AppState, sid: str, doing: str,
                    attempt: Callable[[], Awaitable[None]]) -> None:
    """`attempt` tried again in the background, every 1 s then up to every 30 s, until it
    works (the disk has room again), ends with TransitionError (nothing left to do) or
    the server stops (start-up recovery then does it)."""
    async def retry() -> None:
        delay = 1.0
        while not state.closing:
            await asyncio.sleep(delay)
            try:
                await attempt()
                log.warning("Session %s: did %s at last (the store can write again)", sid, doing)
                return
            except TransitionError:
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("Session %s: still cannot %s (%s)", sid, doing, exc)
                delay = min(2 * delay, 30.0)

    task = asyncio.ensure_future(retry())
    state.retrying.add(task)
    task.add_done_callback(state.retrying.discard)


def processing_started(state: AppState, sid: str, run_id: str) -> dict[str, Any]:
    """The message that says a session's refined run is queued."""
    return {"type": "processing_started", "session_id": sid, "run_id": run_id,
            "message": ("Transcription and diarization started" if state.config.pipeline == "full"
                        else "Audio processing started")}


async def _queue_run(state: AppState, sid: str, supersedes: Optional[str]) -> None:
    """Queue the refined run of a session `stop` left processing (its sockets hear it) unless
    it has one (a POST /runs meanwhile) or moved on (TransitionError: nothing to do)."""
    session = await asyncio.to_thread(state.store.get_session, sid)
    if session is None or session.status != "processing" or any(
            r.kind == "refined" and r.status in ("queued", "running") for r in session.runs):
        raise TransitionError("its run was queued or the session moved on meanwhile")
    run = await state.jobs.submit(sid, state.run_config(session), supersedes=supersedes)
    await state.notify(sid, processing_started(state, sid, run.id))


class Connection:
    """State of one WebSocket connection: the session it is bound to and the part it writes."""

    def __init__(self, state: AppState, ws: web.WebSocketResponse, path_id: str) -> None:
        self.state = state
        self.ws = ws
        self.path_id = path_id
        self.session_id: Optional[str] = None
        self.writer: Optional[PartWriter] = None
        self.chunks = 0
        self.bytes = 0
        self.prior_duration = 0.0
        self.pacer: Optional[LivePacer] = None
        self.duration_limit_told = False  # the wall-clock/byte-count 4005 was sent
        self.live_results = False  # the recording's `start` asked for live results
        self.live: Optional[LiveStream] = None  # its live stream, while it runs
        self.saved_live_run: Optional[str] = None  # a live run its non-live start saved
        self.saving = False  # its recording ended and is being saved (`finish`)

    @property
    def limits(self) -> Limits:
        return self.state.config.limits

    async def send(self, message: dict[str, Any]) -> None:
        await self.state.send(self.ws, message)

    async def bind_existing(self) -> None:
        """Subscribe to events of the path's session when it already exists (a live
        recording's words so far come first, in a `live_replay`)."""
        if valid_id(self.path_id):
            session = await asyncio.to_thread(self.state.store.get_session, self.path_id)
            if session is not None:
                self._bind(session.id)
                # a watcher joining a live recording: what was said so far, once, then
                # the events as they come (joining one waiting for its resume: with the
                # resume's, since this socket may be the one that resumes)
                hub = self.state.live
                stream = hub.streams.get(session.id)
                if stream is not None and stream.state == "running":
                    await self.state.catch_up(stream.catch_up(), [self.ws])
                elif stream is not None and stream.state == "lingering":
                    self.state.owe(session.id, self.ws, {sid for sid, s in hub.streams.items()
                                                          if s.state == "lingering"})

    def _bind(self, session_id: str) -> None:
        if self.session_id != session_id:
            if self.session_id:
                self.state.unsubscribe(self.session_id, self.ws)
            self.session_id = session_id
            self.state.subscribe(session_id, self.ws)

    # ------------------------------------------------------------------ dispatch
    async def handle(self, msg: Any) -> None:
        try:
            if msg.type == WSMsgType.BINARY:
                data = bytes(msg.data)
                if holds_action(data):
                    raise ProtocolError(ErrorCode.INVALID_MESSAGE, Messages.ACTION_IN_BINARY)
                await self.on_chunk(data)
            elif msg.type == WSMsgType.TEXT:
                await self.on_text(msg.data)
        except ProtocolError as exc:
            await self.send(error(exc.code, exc.message))
        except Exception as exc:
            log.exception("Internal error on session %s", self.session_id or self.path_id)
            await self.send(error(ErrorCode.INTERNAL, Messages.internal(safe_details(exc))))

    async def on_text(self, text: str) -> None:
        try:
            # A base64 chunk near the limit takes ~10 ms to parse and decode: in a thread.
            msg = (json.loads(text) if len(text) < LARGE_TEXT
                   else await asyncio.to_thread(json.loads, text))
        except (ValueError, RecursionError):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE,
                                "Invalid message: expected a JSON object with an 'action'") from None
        if not isinstance(msg, dict):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE,
                                "Invalid message: expected a JSON object with an 'action'")
        action = msg.get("action")
        if action == "start":
            await self.on_start(parse_start(msg))
        elif action == "audio_chunk":
            if self.writer is None:
                raise ProtocolError(ErrorCode.NOT_STARTED, Messages.NOT_STARTED)
            data = msg.get("data")
            await self.on_chunk(decode_chunk(data) if not isinstance(data, str)
                                or len(data) < LARGE_TEXT
                                else await asyncio.to_thread(decode_chunk, data))
        elif action == "stop":
            if self.writer is None:
                raise ProtocolError(ErrorCode.NOT_STARTED, Messages.NOT_STARTED)
            await self.finish("stop")
        else:
            raise ProtocolError(ErrorCode.UNKNOWN_ACTION, Messages.UNKNOWN_ACTION)

    # ------------------------------------------------------------------ start
    async def on_start(self, req: StartRequest) -> None:
        if self.writer is not None:
            raise ProtocolError(ErrorCode.ALREADY_RECORDING,
                                "Recording already started. Send 'stop' first")
        self._claim_slot()
        await self._start(req)

    def _claim_slot(self) -> None:
        """4012 unless a recording may start now. Checked again right before a slot is
        taken (no await in between): a start that ends in 4011, 4010 or 4004 holds none
        (eight concurrent starts of one session got five 4012s at --max-recordings 3)."""
        if not self.state.recording_slot_free():
            raise ProtocolError(ErrorCode.TOO_MANY_RECORDINGS,
                                Messages.too_many_recordings(self.limits))

    def _checked_options(self, options: dict[str, Any], context: str) -> dict[str, Any]:
        """`options` if they are a valid run configuration (each field was checked in
        parse_start; here they meet each other and the server's defaults)."""
        try:
            check_run_config({**self.state.config.default_run_config, **options}, whole=True)
            check_run_config(options, switch=False,
                             local_models=self.state.config.allow_local_models)
        except ConfigError as exc:
            raise ProtocolError(ErrorCode.INVALID_FIELD,
                                f"Invalid field in 'start': {exc}{context}") from None
        return options

    async def _start(self, req: StartRequest) -> None:
        store = self.state.store
        candidate = self.session_id or self.path_id
        session: Optional[Session] = None
        created = False
        if valid_id(candidate):
            session = await asyncio.to_thread(store.get_session, candidate)
        if session is None:
            # checked before the session exists: a refused start leaves no session behind
            options = self._checked_options(given_options(req.options), "")
            self._claim_slot()
            self.state.starting += 1  # holds the slot while the session is created
            try:
                session = await asyncio.to_thread(store.create_session, None, req.format or "wav",
                                                  options)
            finally:
                self.state.starting -= 1  # (taken below, with no await in between)
            created = True
            log.info("✅ Created session: %s", session.id)
        else:
            other = self.state.recording.get(session.id)
            if other is not None and other.saving:  # (its connection dropped, or `stop`)
                raise ProtocolError(ErrorCode.SESSION_BUSY,
                                    "Session is being saved after stop; try again in a moment")
            if other is not None:
                raise ProtocolError(ErrorCode.SESSION_BUSY,
                                    "Session is already recording on another connection")
            if session.status not in RESUMABLE:
                raise ProtocolError(ErrorCode.SESSION_BUSY,
                                    f"Session is {session.status}; wait until it has finished")
            options = self._checked_options(given_options({**session.options, **req.options}),
                                            " (with the session's options)")
        if self.state.limits_reached(session):
            raise ProtocolError(ErrorCode.TOTAL_SIZE_EXCEEDED,
                                Messages.total_size_exceeded(self.limits))
        max_seconds = self.limits.max_duration_seconds
        if session.parts and max_seconds > 0 and session.duration_seconds >= max_seconds - 1e-6:
            # a resume could add nothing: its audio would be cut at the limit, unheard
            raise ProtocolError(ErrorCode.DURATION_EXCEEDED, Messages.duration_exceeded(self.limits))
        if not created:
            self._claim_slot()
        self._bind(session.id)
        self.state.recording[session.id] = self
        self.saving = False
        try:
            # the status first: a run that started since the check above wins (one
            # transaction each), and no part is added to a session that will not record
            await asyncio.to_thread(store.set_status, session.id, "recording",
                                    format=req.format or session.format, options=options)
        except TransitionError:
            self.state.recording.pop(session.id, None)
            now = await asyncio.to_thread(store.get_session, session.id)
            raise ProtocolError(ErrorCode.SESSION_BUSY,
                                f"Session is {now.status if now else 'gone'}; wait until it "
                                "has finished") from None
        except KeyError:  # deleted since it was read
            self.state.recording.pop(session.id, None)
            raise ProtocolError(ErrorCode.SESSION_BUSY,
                                "Session was deleted meanwhile; start a new recording") from None
        except BaseException:
            self.state.recording.pop(session.id, None)
            raise
        try:
            part = await asyncio.to_thread(store.add_part, session.id, req.input)
            writer = PartWriter(store.session_dir(session.id) / part.filename, part,
                                self.state.config.fsync_interval)
            await asyncio.to_thread(writer.open)
        except BaseException:
            self.state.recording.pop(session.id, None)
            try:  # recording it never was: as after a dropped connection
                await asyncio.to_thread(store.set_status, session.id, "interrupted",
                                        error="The recording could not start")
            except Exception:  # noqa: BLE001 - the first error is the one to report
                log.exception("Session %s could not be marked interrupted", session.id)
            raise
        self.writer = writer
        self.duration_limit_told = False
        self.chunks = session.chunks_received
        self.bytes = session.bytes_received
        self.prior_duration = session.duration_seconds if session.parts else 0.0
        limits = self.limits
        self.pacer = (LivePacer(limits.live_max_speed, limits.live_burst_seconds)
                      if req.live and limits.live_max_speed > 0 else None)
        log.info("▶️ Starting recording for session %s (part %d, input %s%s)", session.id,
                 part.index, part.container or "auto", ", live" if req.live else "")
        started: dict[str, Any] = {"type": "recording_started", "session_id": session.id,
                                   "format": req.format or session.format, "part": part.index,
                                   "resumed": bool(session.parts)}
        if req.ignored:
            started["ignored_fields"] = list(req.ignored)
        refusal = await self._start_live(req, session, part)
        if req.live_results:
            started["live_results"] = self.live is not None
        await self.send(started)
        owed = self.state.live_owed.pop(session.id, ())
        if self.live is not None and session.parts:  # a resume: what its live stream said
            # so far, to this socket and those owed it only
            await self.state.catch_up(self.live.catch_up(),
                                      [self.ws, *(ws for ws in list(owed) if ws is not self.ws)])
        if refusal is not None:
            await self.send({"type": "live_paused", "session_id": session.id,
                             "reason": refusal})

    async def _start_live(self, req: StartRequest, session: Session, part: Any
                          ) -> Optional[str]:
        """Live results for this part when `start` asked for them: the session's live
        stream continues (a resume) or a new one starts; returns why not, or None."""
        self.live_results, self.live, self.saved_live_run = req.live_results, None, None
        hub = self.state.live
        if not req.live_results:  # (no stream of the session can start while it records)
            self.state.mute(self.ws, hub.of(session.id))
            try:  # a live stream waiting for this session's resume: save it now (the
                # refined run of this recording supersedes it)
                self.saved_live_run = await hub.end(session.id)
            except Exception:
                log.exception("Saving the live results of session %s failed", session.id)
            return None
        self.state.live_muted.pop(self.ws, None)  # (its words follow a muted stream's)
        try:
            self.live, refusal = await hub.attach(session.id, part.input_format,
                                                  self.prior_duration, next_word_index(session))
        except Exception as exc:  # the recording goes on without live results
            log.exception("Live results for session %s could not start", session.id)
            refusal = (f"Live results could not start ({safe_details(exc)}); recording "
                       "normally")
        return refusal

    async def _end_live(self, sid: str, interrupted: bool) -> Optional[str]:
        """The part ended: an interrupted recording's live worker waits a while for a
        resume; otherwise it flushes and saves the live run (its id is returned) while
        the audio is finalised. Never raises: the recording does not depend on it."""
        if self.live is None:
            return None
        self.live = None
        try:
            if interrupted:
                self.state.live.detach(sid)
                return None
            # cut at the duration limit: audio.wav stops there, the worker heard all of the
            # last chunk
            limit = self.limits.max_duration_seconds
            return await self.state.live.end(sid, limit if limit > 0 else None)
        except Exception:
            log.exception("Ending the live results of session %s failed", sid)
            return None

    # ------------------------------------------------------------------ chunks
    async def on_chunk(self, data: bytes) -> None:
        writer = self.writer
        if writer is None or self.session_id is None:  # (a recording has both)
            raise ProtocolError(ErrorCode.NOT_STARTED, Messages.NOT_STARTED)
        limits = self.limits
        if len(data) > limits.max_chunk_bytes:
            raise ProtocolError(ErrorCode.CHUNK_TOO_LARGE, Messages.chunk_too_large(limits))
        if self.bytes + len(data) > limits.max_total_bytes:
            await self.send(error(ErrorCode.TOTAL_SIZE_EXCEEDED,
                                  Messages.total_size_exceeded(limits)))
            await self.finish("limit")
            return
        if not data:
            return
        if self.pacer is not None and not self.pacer.admit(writer.seconds_for(len(data))):
            raise ProtocolError(ErrorCode.TOO_FAST, Messages.too_fast(limits))
        # Confirmed chunks must survive a crash: the chunk a `progress` counts is synced.
        confirm = (self.chunks + 1) % self.state.config.progress_every == 0
        await asyncio.to_thread(writer.append, data, confirm)
        self.chunks += 1
        self.bytes += len(data)
        if self.live is not None:  # written: now the live worker may have it (never waits)
            self.live.feed(data)
        if confirm:
            await self.send({"type": "progress", "chunks_received": self.chunks,
                             "total_size_mb": round(self.bytes / (1024 * 1024), 2)})
            # Bookkeeping only (start-up recovery takes sizes from the files), so after
            # the reply: the client does not wait for a SQLite commit. Failing (a full
            # disk), it is no error of the chunk, which is kept: a 5000 invited a resend.
            try:
                await asyncio.to_thread(self.state.store.update_part, self.session_id,
                                        writer.part, chunks_received=self.chunks,
                                        bytes_received=self.bytes)
            except Exception as exc:  # noqa: BLE001 - counted again at the stop
                log.warning("Session %s: its byte count could not be stored (%s: %s)",
                            self.session_id, type(exc).__name__, exc)
        if self.prior_duration + writer.elapsed() > limits.max_duration_seconds + 1e-9:
            self.duration_limit_told = True
            await self.send(error(ErrorCode.DURATION_EXCEEDED, Messages.duration_exceeded(limits)))
            await self.finish("limit")

    # ------------------------------------------------------------------ stop / interrupt
    async def finish(self, reason: str) -> None:
        """End the recording: ``stop``/``limit`` finalise and queue processing;
        ``disconnect``/``shutdown``/``idle`` finalise and leave the session ``interrupted``.

        The work runs in its own task that the caller's cancellation does not stop
        (shutdown waits for it), so an accepted recording is always finalised.
        """
        writer = self.writer
        if writer is None or self.session_id is None:
            return
        self.writer = None
        self.saving = True
        self.pacer = None
        task = asyncio.ensure_future(self._finish(writer, self.session_id, reason))
        self.state.finishing.add(task)
        task.add_done_callback(self.state.finishing.discard)
        await asyncio.shield(task)

    async def _finish(self, writer: PartWriter, sid: str, reason: str) -> None:
        self.state.live_held.setdefault(self.ws, [])  # (until recording_stopped)
        store = self.state.store
        interrupted = reason in INTERRUPTIONS
        live_run_id: Optional[str] = None
        owed: Optional[Callable[[], Awaitable[None]]] = None  # a run `processing` waits for
        try:
            part = await asyncio.to_thread(writer.close)
            await asyncio.to_thread(store.update_part, sid, part, chunks_received=self.chunks,
                                    bytes_received=self.bytes)
            live_run_id = await self._end_live(sid, interrupted)
            session = await asyncio.to_thread(store.get_session, sid)
            assert session is not None
            decode_error: Optional[str] = None
            max_seconds = self.limits.max_duration_seconds
            truncated = False
            try:
                decoded = await finalise_async(store, session, max_seconds)
                duration, truncated = decoded.duration_seconds, decoded.truncated
            except AudioDecodeError as exc:
                decode_error, duration = str(exc), 0.0
            log.info("⏹️ Stopping recording for session %s (%s): %.2f s, %d chunks, %d bytes",
                     sid, reason, duration, self.chunks, self.bytes)
            if interrupted:
                await asyncio.to_thread(store.set_status, sid, "interrupted",
                                        duration_seconds=duration, error=decode_error)
                return
            # The outcome is durable before the client hears of it: a crash after
            # `recording_stopped` finds the session processing (its run is queued at
            # start-up if the crash came first, see recovery.requeue_orphans) or failed.
            await asyncio.to_thread(store.set_status, sid,
                                    "failed" if decode_error is not None else "processing",
                                    duration_seconds=duration, error=decode_error)
            supersedes = live_run_id or self.saved_live_run
            if decode_error is None:  # from here on a failure queues the run later
                owed = functools.partial(_queue_run, self.state, sid, supersedes)
            stopped = {"type": "recording_stopped", "duration_seconds": round(duration, 3),
                       "session_id": sid, "chunks_received": self.chunks,
                       "total_size_mb": round(self.bytes / (1024 * 1024), 2),
                       "truncated": truncated}
            if self.live_results:
                stopped["live_run_id"] = live_run_id
            # parts skipped (while others decoded, or none did): say which, why
            try:
                after = await asyncio.to_thread(store.get_session, sid)
            except Exception:  # noqa: BLE001 - (the store failing now) the stop is saved:
                log.exception("Session %s: its parts could not be read", sid)  # said anyway
                after = None
            skipped = [{"part": p.index, "error": p.error}
                       for p in (after.parts if after else []) if p.error]
            if skipped:
                stopped["undecoded_parts"] = skipped
            await self.send(stopped)
            await self.state.release(self.ws)
            # Audio whose byte count does not tell its length (compressed containers) can
            # decode to more than the limit; a wall-clock 4005 already told the client.
            if truncated and not self.duration_limit_told:
                await self.send(error(ErrorCode.DURATION_EXCEEDED,
                                      Messages.duration_exceeded(self.limits)
                                      + ": the decoded audio stops there; the received bytes "
                                      "are kept"))
            if decode_error is not None:
                await self.send(error(ErrorCode.UNDECODABLE_AUDIO,
                                      f"{decode_error}. The received bytes are kept."))
                return
            run = await self.state.jobs.submit(sid, self.state.run_config(session),
                                               supersedes=supersedes)
            owed = None
            await self.send(processing_started(self.state, sid, run.id))
        except TransitionError:
            log.exception("Unexpected state change on session %s", sid)
        except Exception as exc:
            if owed is not None:  # saved and `processing`: its run, once the store writes
                _until_it_works(self.state, sid, "queue its refined run", owed)
                raise
            # e.g. a full disk while writing audio.wav: the session must not stay
            # 'recording' with no connection (no resume, its runs waiting): as if dropped.
            # Its audio.wav may lack this part: it goes, and is rebuilt from the parts at
            # the next stop or start-up (a run cannot take it meanwhile). (A cancelled
            # finish leaves the session 'recording' for start-up recovery.)
            why = (f"Finishing the recording failed ({type(exc).__name__}); its audio is "
                   "rebuilt from the received bytes at the next stop")
            try:
                await asyncio.to_thread(_interrupt, store, sid, why)
            except TransitionError:  # it had moved on already
                pass
            except Exception:  # noqa: BLE001 - (the disk still full) tried again until it works:
                # 'recording' with no connection refused every resume, delete and run
                _until_it_works(self.state, sid, "mark it interrupted",
                                lambda: asyncio.to_thread(_interrupt, store, sid, why))
            raise
        finally:
            await self._end_live(sid, True)  # (a stop that failed before: as a drop)
            # the resume window opens now (refused until; a finalise that hangs keeps the
            # live slot with its session, which cannot be resumed or processed either)
            self.state.live.resumable(sid)
            self.state.recording.pop(sid, None)
            await self.state.release(self.ws)

    async def on_idle(self) -> None:
        """No message for the idle timeout while recording: tell the client, finalise, close."""
        log.warning("Session %s idle for %.0f s: interrupting its recording", self.session_id,
                    self.limits.idle_timeout_seconds)
        await self.send(error(ErrorCode.IDLE_TIMEOUT, Messages.idle_timeout(self.limits)))
        try:
            await self.finish("idle")
        except Exception:  # noqa: BLE001 - (a full disk) logged; retried in the background
            log.exception("Session %s: finishing its recording failed", self.session_id)
        await self.state.close(self.ws, WSCloseCode.POLICY_VIOLATION, b"Idle timeout")


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    cfg = state.config
    if state.closing:
        return web.json_response({"error": "Server is shutting down"}, status=503)
    address = client_address(request, cfg.trust_proxy)
    if not state.connections.acquire(address):
        log.warning("Refused a WebSocket from %s: %d connections open", printable(address),
                    cfg.limits.max_connections_per_client)
        return web.json_response(
            {"error": "Too many connections from your address (limit "
                      f"{cfg.limits.max_connections_per_client})"}, status=429)
    try:
        return await _serve(request, state)
    finally:
        state.connections.release(address)


async def _serve(request: web.Request, state: AppState) -> web.WebSocketResponse:
    cfg = state.config
    ws = web.WebSocketResponse(heartbeat=cfg.heartbeat or None, compress=False,
                               max_msg_size=cfg.limits.max_message_bytes)
    await ws.prepare(request)
    path_id = request.match_info.get("session_id", "")
    state.sockets[ws] = request.transport
    conn = Connection(state, ws, path_id)
    log.info("WebSocket connected: %s", printable(path_id))
    idle = cfg.limits.idle_timeout_seconds
    try:
        await conn.bind_existing()
        last = asyncio.get_running_loop().time()
        while True:
            # While recording, the client must send something at least every `idle` seconds
            # (pings do not count: they keep a dead recording's slot forever).
            if conn.writer is not None and idle:
                remaining = last + idle - asyncio.get_running_loop().time()
                try:
                    async with asyncio.timeout(max(remaining, 0.0)):
                        msg = await ws.receive()
                except TimeoutError:
                    await conn.on_idle()
                    break
            else:
                msg = await ws.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await conn.handle(msg)
                last = asyncio.get_running_loop().time()
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                              WSMsgType.ERROR):
                break
    finally:
        # Whatever ended the connection, everything accepted is finalised and kept.
        try:
            await conn.finish("shutdown" if state.closing else "disconnect")
        except Exception:  # noqa: BLE001 - (a full disk) logged; retried in the background
            log.exception("Session %s: finishing its recording failed", conn.session_id)
        if conn.session_id:
            state.unsubscribe(conn.session_id, ws)
        state.sockets.pop(ws, None)  # (weak keys let closed sockets count until collected)
        log.info("WebSocket disconnected: %s (close code %s)",
                 conn.session_id or printable(path_id), ws.close_code)
    return ws
