"""Application state shared by the handlers (one typed ``web.AppKey``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Iterable, Protocol

from aiohttp import web

from .config import ServerConfig
from .limits import ConnectionCounter
from .lock import DataDirLock
from .sessions import Session, SessionStore

if TYPE_CHECKING:
    from .jobs import JobQueue
    from .live import LiveHub

log = logging.getLogger("server")

SEND_TIMEOUT = 10.0
"""Seconds a connection may take nothing of a message before it is dropped. A client
that stops reading fills its socket buffers, and a send to it then waits for ever (the
heartbeat does not end that wait): every event of its session, and the job queue that
hands events on one at a time, would wait with it."""
STALL_CHECK = 0.5  # s between looks at what a slow connection has taken


class OpenRecording(Protocol):
    """A connection that is recording (a :class:`server.connection.Connection`), as the
    state sees it: something to finish at shutdown."""

    @property
    def saving(self) -> bool:
        """Ended (``stop``, a limit, a disconnect): its audio is being saved."""
        ...

    async def finish(self, reason: str) -> None: ...


@dataclass
class AppState:
    """The store, the job queue and the open connections of a running server."""

    config: ServerConfig
    store: SessionStore
    jobs: "JobQueue" = field(init=False)
    live: "LiveHub" = field(init=False)
    # Open sockets and their transports (to drop a client that stops reading).
    sockets: "weakref.WeakKeyDictionary[web.WebSocketResponse, asyncio.Transport | None]" = \
        field(default_factory=weakref.WeakKeyDictionary)
    subscribers: dict[str, "weakref.WeakSet[web.WebSocketResponse]"] = field(default_factory=dict)
    # Sockets whose recording did not ask for live results, and the live streams of their
    # session at its start (one that start ended still says its last words, to everyone
    # bound): they get no live event from those; a later stream's reach them as watchers
    live_muted: "weakref.WeakKeyDictionary[web.WebSocketResponse, weakref.WeakSet[Any]]" = \
        field(default_factory=weakref.WeakKeyDictionary)
    # Sockets that subscribed while the session's live stream waited for a resume: its
    # catch-up reaches them with the resume's (a resuming socket, bound first, got it twice)
    live_owed: "dict[str, weakref.WeakSet[web.WebSocketResponse]]" = field(default_factory=dict)
    # Sockets whose recording is stopping: `live_run_saved` waits for their
    # `recording_stopped` (which gives them the run id first)
    live_held: "weakref.WeakKeyDictionary[web.WebSocketResponse, list[dict[str, Any]]]" = \
        field(default_factory=weakref.WeakKeyDictionary)
    recording: dict[str, OpenRecording] = field(default_factory=dict)
    # Recordings being started (counted against the limit before their session is known).
    starting: int = 0
    # Finalisations in flight; shutdown waits for them before closing the store.
    finishing: "set[asyncio.Task[None]]" = field(default_factory=set)
    # Sessions whose finish failed, moved to `interrupted` again until it works (cancelled
    # at shutdown: start-up recovery does it then)
    retrying: "set[asyncio.Task[None]]" = field(default_factory=set)
    # MP4 renditions being encoded, by session: concurrent requests share one encode
    encoding: "dict[str, asyncio.Future[None]]" = field(default_factory=dict)
    # Their threads (ENCODE_THREADS; made at start-up): an encode of a long recording
    # takes seconds, and downloads of many sessions at once must not take the I/O
    # threads that chunk writes and the store need (the rest wait their turn here)
    encoder: "concurrent.futures.ThreadPoolExecutor | None" = None
    connections: ConnectionCounter = field(init=False)
    lock: DataDirLock = field(init=False)  # one server per data directory
    closing: bool = False

    def __post_init__(self) -> None:
        self.connections = ConnectionCounter(self.config.limits.max_connections_per_client)
        self.lock = DataDirLock(self.config.data_dir)

    def recording_slot_free(self) -> bool:
        limit = self.config.limits.max_recordings
        return not limit or len(self.recording) + self.starting < limit

    def subscribe(self, session_id: str, ws: web.WebSocketResponse) -> None:
        self.subscribers.setdefault(session_id, weakref.WeakSet()).add(ws)

    def unsubscribe(self, session_id: str, ws: web.WebSocketResponse) -> None:
        subs = self.subscribers.get(session_id)
        if subs is not None:
            subs.discard(ws)
            if not subs:
                self.subscribers.pop(session_id, None)

    def mute(self, ws: web.WebSocketResponse, streams: Iterable[Any]) -> None:
        """`ws` records without live results: no live event of `streams` reaches it."""
        self.live_muted.setdefault(ws, weakref.WeakSet()).update(streams)

    async def notify(self, session_id: str, message: dict[str, Any],
                     source: Any = None) -> None:
        """Push an event to every connection bound to ``session_id`` (a live event of the
        live stream `source` not to one muted for it; ``live_run_saved`` to one whose
        recording is stopping once it has been told ``recording_stopped``)."""
        live = source is not None and message.get("type") in LIVE_EVENTS
        to = [ws for ws in list(self.subscribers.get(session_id, ()))
              if not (live and source in self.live_muted.get(ws, ()))]
        if message.get("type") == "live_run_saved":
            for ws in [ws for ws in to if ws in self.live_held]:
                self.live_held[ws].append(message)
                to.remove(ws)
        await asyncio.gather(*(self.send(ws, message) for ws in to))

    def owe(self, session_id: str, ws: web.WebSocketResponse, waiting: set[str]) -> None:
        """`ws` bound to `session_id` while its live stream waits for a resume: its
        catch-up comes with the resume's (sessions no longer `waiting` are forgotten)."""
        for sid in [sid for sid in self.live_owed if sid not in waiting]:
            del self.live_owed[sid]
        self.live_owed.setdefault(session_id, weakref.WeakSet()).add(ws)

    async def catch_up(self, messages: list[dict[str, Any]],
                       sockets: list[web.WebSocketResponse]) -> None:
        """A live stream's `catch_up` to `sockets`, its sends all queued at once: ahead of
        any event said after it was made (sent one by one, such an event could come first:
        its turns were then dropped with the replay's, a `live_resumed` came before the
        replay's `live_paused`)."""
        await asyncio.gather(*(self.send(ws, m) for ws in sockets for m in messages))

    async def release(self, ws: web.WebSocketResponse) -> None:
        """What `notify` held for `ws` while its recording was stopping, in order."""
        for message in self.live_held.pop(ws, []):
            await self.send(ws, message)

    async def send(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        """Send one message; a client gone is ignored (nothing accepted depends on a
        message), one that takes nothing for `SEND_TIMEOUT` is dropped."""
        if not ws.closed:
            await self._bounded(ws, ws.send_json(message))

    async def close(self, ws: web.WebSocketResponse, code: int, message: bytes) -> None:
        """Close a socket, or drop it if its client takes nothing for `SEND_TIMEOUT`."""
        await self._bounded(ws, ws.close(code=code, message=message))

    async def _bounded(self, ws: web.WebSocketResponse, action: Awaitable[Any]) -> None:
        """Await `action` (a send or a close). A client whose connection has taken nothing
        for `SEND_TIMEOUT` (its transport's buffer did not shrink) is dropped; one that
        reads slowly keeps its connection, however long a large message takes."""
        task = asyncio.ensure_future(action)
        transport = self.sockets.get(ws)
        still, buffered = 0.0, None
        try:
            while not (await asyncio.wait({task}, timeout=STALL_CHECK))[0]:
                size = transport.get_write_buffer_size() if transport is not None else None
                moved = size is None or buffered is None or size < buffered
                still, buffered = (0.0 if moved else still + STALL_CHECK), size
                if still >= SEND_TIMEOUT:
                    task.cancel()
                    if not transport.is_closing():  # type: ignore[union-attr]
                        log.warning("A client took nothing for %g s: its connection is "
                                    "dropped", SEND_TIMEOUT)
                        transport.abort()  # type: ignore[union-attr] # its handler then
                    return  # ends as on any disconnect
            task.result()
        except (ConnectionError, RuntimeError):
            pass
        except asyncio.CancelledError:
            task.cancel()
            raise

    def limits_reached(self, session: Session) -> bool:
        return session.bytes_received >= self.config.limits.max_total_bytes

    def run_config(self, session: Session) -> dict[str, Any]:
        """Configuration of the run queued at ``stop``: server defaults + the session's options."""
        return {**self.config.default_run_config, **session.options}


LIVE_EVENTS = frozenset({"transcript_partial", "transcript_final", "diarization_update",
                         "speaker_labels", "live_paused", "live_resumed", "live_replay",
                         "live_run_saved"})
"""The events of live results (README, "Live results over the protocol")."""

STATE = web.AppKey("state", AppState)

__all__ = ["AppState", "OpenRecording", "STATE"]
