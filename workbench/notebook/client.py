"""Protocol client: record sessions over the WebSocket protocol and use the REST API.

:class:`AsyncClient` is the asyncio client; :class:`Client` is the same API for
plain (and Jupyter) code, running the async client on a background event loop.

A recording source is a file path, a NumPy array (16 kHz mono), or an iterable
of byte chunks (sent as they come; declare their ``input_format``)::

    client = Client("http://127.0.0.1:8765")
    rec = client.record("call.wav", realtime=False, options={"num_speakers": 2})
    transcript = client.transcript(rec.session_id)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Coroutine, Optional, TypeVar, Union

import aiohttp
import numpy as np

from workbench.engine.transcript import Transcript
from workbench.notebook.errors import ServerError, refusal
from workbench.notebook.following import AWAY, follow_run
from workbench.notebook.report import TERMINAL, RecordingReport, run_outcome
from workbench.notebook.source import END, Source, next_chunk, prepare_source

EventCallback = Callable[[dict[str, Any]], None]

T = TypeVar("T")

# codes of server.protocol.ErrorCode the client acts on (it does not import the server)
DURATION_EXCEEDED = 4005
UNDECODABLE_AUDIO = 4008

LIVE_EVENTS = ("transcript_partial", "transcript_final", "speaker_labels", "diarization_update",
               "live_paused", "live_resumed", "live_replay", "live_run_saved")
"""Messages of a recording with ``live_results`` (README, "Live results over the protocol")."""


class AsyncClient:
    """Asyncio client for one server (``base_url`` like ``http://127.0.0.1:8765``);
    ``timeout``: how long a wait may hear nothing of what it waits for (a recording's
    messages, a run's progress) before it gives up with TimeoutError.  ``token``: the
    server's token; by default ``$WORKBENCH_TOKEN`` (as the server reads it), ``""`` for
    none."""

    def __init__(self, base_url: str, *, token: Optional[str] = None,
                 timeout: float = 600.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the server's URL must start with http:// or https:// (got "
                             f"{base_url!r}; e.g. http://127.0.0.1:8765)")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self.token = (os.environ.get("WORKBENCH_TOKEN") if token is None else token) or None
        self.timeout = timeout
        self._session: Optional[aiohttp.ClientSession] = None

    @property
    def ws_base(self) -> str:
        return "ws" + self.base_url[len("http"):]

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            # `timeout` for a connection, a REST answer and a WebSocket's opening (aiohttp's
            # own default waited 300 s for a server that took the connection and said
            # nothing); an open WebSocket's waits are `_next`'s
            bound = self.timeout if math.isfinite(self.timeout) else None  # (inf: no bound)
            limit = aiohttp.ClientTimeout(total=None, sock_connect=bound, sock_read=bound)
            self._session = aiohttp.ClientSession(headers=headers, timeout=limit)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ REST
    async def request(self, method: str, path: str, *, json_body: Any = None,
                      expect_json: bool = True) -> Any:
        http = await self._http()
        try:
            async with http.request(method, self.base_url + path, json=json_body) as r:
                if r.status >= 400:
                    try:
                        message = (await r.json()).get("error", r.reason)
                    except (aiohttp.ContentTypeError, ValueError):
                        message = r.reason or "error"
                    raise ServerError(f"{method} {path}: {message}", status=r.status)
                if r.status == 204 or not expect_json:
                    return await r.read()
                return await r.json()
        except asyncio.TimeoutError:
            raise TimeoutError(f"{method} {self.base_url}{path}: no answer within "
                               f"{self.timeout:g} s") from None

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/api/health")

    async def wait_live_warm(self, timeout: float = 180.0) -> Optional[float]:
        """Seconds waited until the server has a live worker loaded ahead (``--live-warm``),
        so that a recording's live words start with it; None when none came within
        `timeout` or live results are off on the server."""
        t0 = time.monotonic()
        while (left := timeout - (time.monotonic() - t0)) > 0:
            try:
                health = await asyncio.wait_for(self.health(), left)
            except asyncio.TimeoutError:
                return None
            if "live" not in health:  # (told only with the token: a wrong one is a 401 here)
                await self.list_sessions()
            live = health.get("live") or {}
            if live.get("warm"):
                return round(time.monotonic() - t0, 1)
            if not live.get("max"):
                return None
            await asyncio.sleep(0.5)
        return None

    async def list_sessions(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/sessions"))["sessions"]

    async def get_session(self, session_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/sessions/{session_id}")

    async def create_session(self, format: str = "wav",
                             options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        return await self.request("POST", "/api/sessions",
                                  json_body={"format": format, "options": options or {}})

    async def delete_session(self, session_id: str) -> None:
        await self.request("DELETE", f"/api/sessions/{session_id}")

    async def start_run(self, session_id: str, config: Optional[dict[str, Any]] = None
                        ) -> dict[str, Any]:
        return await self.request("POST", f"/api/sessions/{session_id}/runs",
                                  json_body=config or {})

    async def runs(self, session_id: str) -> list[dict[str, Any]]:
        return (await self.request("GET", f"/api/sessions/{session_id}/runs"))["runs"]

    async def download(self, session_id: str, what: str = "audio", format: str = "wav",
                       run: Optional[str] = None,
                       dest: Optional[Union[str, os.PathLike]] = None) -> Union[bytes, Path]:
        """Fetch ``audio`` (wav/mp4) or ``transcript`` (json/srt/vtt/txt/rttm/csv) bytes,
        or save them to ``dest`` and return its path."""
        if what not in ("audio", "transcript"):
            raise ValueError("what must be 'audio' or 'transcript'")
        path = f"/api/sessions/{session_id}/{what}?format={format}"
        if run:
            path += f"&run={run}"
        data = await self.request("GET", path, expect_json=False)
        if dest is None:
            return data
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return dest

    async def transcript(self, session_id: str, run: Optional[str] = None) -> Transcript:
        data = await self.download(session_id, "transcript", "json", run=run)
        assert isinstance(data, bytes)
        return Transcript.from_dict(json.loads(data))

    # ------------------------------------------------------------------ WebSocket
    async def _connect(self, session_id: str, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
        """The session's WebSocket (the token goes in the session's Authorization header,
        not in the URL, where error messages showed it); a refused upgrade is a
        `ServerError` with its HTTP status."""
        http = await self._http()
        try:
            return await http.ws_connect(f"{self.ws_base}/ws/{session_id}", **kwargs)
        except aiohttp.WSServerHandshakeError as exc:
            why = refusal(exc.status)
            raise ServerError(f"The server refused the WebSocket connection: HTTP {exc.status} "
                              f"{why}".rstrip(), status=exc.status) from None
        except asyncio.TimeoutError:
            raise TimeoutError(f"{self.ws_base}/ws/{session_id}: the WebSocket did not open "
                               f"within {self.timeout:g} s") from None

    @contextlib.asynccontextmanager
    async def _socket(self, session_id: str, **kwargs: Any
                      ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """`_connect`, closed on leaving."""
        async with await self._connect(session_id, **kwargs) as ws:
            yield ws

    async def record(self, source: Source, *, session_id: str = "new",
                     format: Optional[str] = None,
                     options: Optional[dict[str, Any]] = None, realtime: bool = False,
                     speed: float = 1.0, binary: bool = True, chunk_seconds: float = 0.25,
                     wait: bool = True, on_event: Optional[EventCallback] = None,
                     input_format: Optional[str] = None,
                     stop_event: Optional[threading.Event] = None,
                     live_results: bool = False,
                     on_live: Optional[EventCallback] = None) -> RecordingReport:
        """Stream ``source`` as one recording; with ``wait``, return once processing ended
        (a connection closed meanwhile, or an error instead of the run's start: the run
        followed over REST, or a ServerError). A recording of which nothing decodes is a
        ServerError (``code`` 4008): no run follows.

        ``session_id``: ``"new"``, or a session to go on with (resume, or fill a created
        one); one the server does not have is a ServerError (404), not a new session.
        ``format`` (``"wav"`` or ``"mp4"``): None keeps a session's own (WAV for a new one).

        ``live_results`` asks for words and speakers while recording: ``on_live`` sees each
        live event as it arrives, and the report keeps them (``live_events``,
        ``live_words``, ``live_run_id``; with ``wait``, up to the live run's last word).

        ``realtime`` paces chunks at the audio's own speed (when it is known), or
        ``speed`` times faster, and marks the recording ``live`` (the server refuses
        chunks that come faster than its ``--live-max-speed``); otherwise they go as
        fast as the server takes them.  ``on_event`` sees
        every server message.  Setting ``stop_event`` stops early (as a user would).
        """
        if not speed > 0:
            raise ValueError("speed must be positive")
        start: dict[str, Any] = {"action": "start", **(options or {})}
        start.update({} if format is None else {"format": format})
        if input_format:
            start["input_format"] = input_format
        if live_results:
            start["live_results"] = True
        chunks, seconds_per_byte = prepare_source(source, chunk_seconds, start)
        if realtime and seconds_per_byte:
            start.setdefault("live", True)
        before: set[str] = set()  # the session's runs: the one `stop` queues is not among them
        if session_id != "new":  # (the server takes an id it does not know for "new")
            try:
                before = {r["id"] for r in (await self.get_session(session_id))["runs"]}
            except ServerError as exc:
                if exc.status == 404:
                    raise ServerError(f"No session {session_id} on the server (deleted?): "
                                      "session_id='new' records a new one", status=404) from None
                raise
        async with self._socket(session_id, max_msg_size=0) as ws:
            rec = RecordingReport(session_id)
            inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            failed: list[BaseException] = []
            lost: Optional[str] = None  # why the run is followed over REST

            async def reader() -> None:
                try:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            event = json.loads(msg.data)
                            rec.messages.append(event)
                            if event.get("type") in LIVE_EVENTS:
                                rec.add_live(event)
                                if on_live is not None:
                                    on_live(event)
                            if on_event is not None:
                                on_event(event)
                            await inbox.put(event)
                except Exception as exc:  # e.g. a callback raised: the caller hears of it
                    failed.append(exc)
                    await inbox.put({"type": "failed", "exception": exc})
                await inbox.put({"type": "closed", "code": ws.close_code})

            def ended() -> bool:  # the server ended it (a limit) or went away, or a callback raised
                return (ws.closed or reading.done() or any(
                    m.get("type") == "recording_stopped" or m.get("code") == DURATION_EXCEEDED
                    for m in rec.messages))

            reading = asyncio.create_task(reader())
            try:
                await ws.send_json(start)
                first = await self._next(inbox, ("recording_started", "error", "closed"))
                if first["type"] != "recording_started":
                    raise ServerError(first.get("message", "connection closed"),
                                      code=first.get("code"))
                if session_id != "new" and first["session_id"] != session_id:
                    # deleted since the look-up above: the server took `start` for "new"
                    raise ServerError(f"Session {session_id} was deleted before the recording "
                                      f"started; the server opened {first['session_id']} "
                                      "instead (left empty)", status=404)
                rec.session_id = first["session_id"]
                t0 = time.monotonic()
                # a caller's chunks may wait for their data: read on a thread (`next_chunk`)
                pending, theirs = iter(chunks), not isinstance(source, (np.ndarray, str, os.PathLike))
                bound = self.timeout if math.isfinite(self.timeout) else None

                def stopping() -> bool:
                    return ended() or (stop_event is not None and stop_event.is_set())

                while True:
                    chunk: Any = await next_chunk(pending, stopping) if theirs else next(pending, END)
                    if chunk is END:
                        break
                    if stop_event is not None and stop_event.is_set():
                        break
                    if ended():
                        break  # the server ended the recording (a limit) or went away
                    try:  # (a server or network that takes nothing: a TimeoutError)
                        await asyncio.wait_for(ws.send_bytes(chunk) if binary else ws.send_json(
                            {"action": "audio_chunk", "data": base64.b64encode(chunk).decode()}),
                            bound)
                    except ConnectionError:
                        break  # closing under us: the reader tells why
                    except asyncio.TimeoutError:
                        raise TimeoutError(f"the server took no audio for {self.timeout:g} s; "
                                           f"session {rec.session_id} keeps what arrived") from None
                    rec.chunks_sent += 1
                    rec.bytes_sent += len(chunk)
                    if seconds_per_byte:
                        rec.seconds_sent = rec.bytes_sent * seconds_per_byte
                        if realtime:
                            delay = t0 + rec.seconds_sent / speed - time.monotonic()
                            if delay > 0:
                                await asyncio.sleep(delay)
                if not ended():
                    try:
                        await ws.send_json({"action": "stop"})
                    except ConnectionError:
                        pass
                if failed:  # a callback raised: that comes first
                    raise failed[0]
                stopped = await self._next(inbox, ("recording_stopped", "closed"))
                if stopped["type"] == "closed":
                    # idle timeout, shutdown, a dropped connection: the session is
                    # interrupted (its audio kept) and can be resumed
                    told = rec.errors[-1] if rec.errors else {}
                    raise ServerError(
                        f"The connection closed before the recording stopped "
                        f"(close code {stopped.get('code')}): "
                        + told.get("message", "no reason given")
                        + f". Session {rec.session_id} keeps its audio and can be resumed.",
                        code=told.get("code"))
                while True:
                    after = await self._next(inbox, ("processing_started", "error", "closed"))
                    # a 4005 here says the decoded audio was cut at the limit; processing follows
                    if after["type"] != "error" or after.get("code") != DURATION_EXCEEDED:
                        break
                if after["type"] == "error" and after.get("code") == UNDECODABLE_AUDIO:
                    # nothing of it decodes: the session failed, no run follows
                    raise ServerError(f"Session {rec.session_id} cannot be processed: "
                                      f"{after.get('message')}", code=UNDECODABLE_AUDIO)
                end = after  # (closed before the server named its run: found over REST)
                if wait and after["type"] == "processing_started":
                    end = await self._next(inbox, TERMINAL + ("closed",))
                if wait and end["type"] == "closed":
                    lost = f"The connection closed during processing (close code {end.get('code')})"
                elif wait and end["type"] == "error":  # (e.g. queueing the run failed: the
                    # server may queue it later, or give the session up) found over REST
                    lost = f"The server failed after the recording stopped ({end.get('message')})"
                if wait and lost is None and rec.live_run_id is not None:
                    await self._live_tail(rec, reading)
                    if failed:  # a callback raised meanwhile
                        raise failed[0]
            finally:
                reading.cancel()
        if lost is not None:  # e.g. closed mid-run (the connection dropped): the run goes on
            await self._follow(rec, lost, on_event, before)
            if rec.live_run_id is not None:
                await self._live_tail(rec, reading)
        return rec

    async def _live_tail(self, rec: RecordingReport, reading: "asyncio.Task[None]") -> None:
        """Wait for the live words said after `stop` (perhaps after the refined run ended):
        until the live run is saved (its ``live_run_saved``, sent after its words; at most
        the timeout). When the connection ended first, the run is followed over REST and
        the words the report lacks come from its transcript."""
        deadline = time.monotonic() + self.timeout
        run: dict[str, Any] = {"status": "running"}
        while time.monotonic() < deadline and not any(
                m.get("type") == "live_run_saved" and m.get("run_id") == rec.live_run_id
                for m in rec.messages):
            if reading.done():  # (no more messages; a REST request that fails ends it too)
                try:
                    run = next((r for r in await self.runs(rec.session_id)
                                if r["id"] == rec.live_run_id), {})
                    if run.get("status") == "completed":
                        doc = await self.request("GET", f"/api/sessions/{rec.session_id}/"
                                                 f"transcript?format=json&run={run['id']}")
                        rec.add_saved([w for seg in doc["segments"] for w in seg["words"]],
                                      int(run["summary"].get("first_index") or 0))
                except (ServerError, aiohttp.ClientError, OSError):
                    return
                if run.get("status") != "running":
                    return
            await asyncio.sleep(0.25 if reading.done() else 0.05)

    async def _follow(self, rec: RecordingReport, why: str,
                      on_event: Optional[EventCallback], before: set[str]) -> None:
        """The socket tells no more of the run (`why`): follow it over REST and add its
        outcome to ``rec`` (and give it to ``on_event``) as a ``processing_complete`` /
        ``processing_failed`` made from the run (speakers, duration, word count, supersedes;
        no download links; through a server restart too, see `wait_for_run`); a
        ServerError when that fails or no run comes."""
        def seen(event: dict[str, Any]) -> None:
            rec.messages.append(event)
            if on_event is not None:
                on_event(event)

        try:
            run_id = rec.run_id or await self._queued_run(rec.session_id, before)
        except ServerError as exc:
            raise ServerError(f"{why}; {exc}", status=exc.status) from None
        if run_id is None:
            raise ServerError(f"{why} and no run of it was queued within {self.timeout:g} s")
        try:
            run = await follow_run(self, rec.session_id, run_id, seen, 0.5,
                                   reached=True)  # (it answered)
        except (ServerError, aiohttp.ClientError, OSError) as exc:  # (TimeoutError too)
            raise ServerError(f"{why}; following run {run_id} failed: {exc}",
                              status=getattr(exc, "status", None)) from exc
        if rec.result is None:  # (its own message came on the new socket, or not)
            seen(run_outcome(rec.session_id, run))

    async def _queued_run(self, session_id: str, before: set[str]) -> Optional[str]:
        """The refined run `stop` queued, not yet named when the connection dropped: the
        session's newest one not among `before` (a restart's recovery queues it too);
        None when none came within the timeout, a ServerError when none will."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                session = await self.get_session(session_id)
            except ServerError as exc:
                if exc.status not in AWAY:
                    raise
            except (aiohttp.ClientError, OSError):  # (restarting)
                pass
            else:
                new = [r["id"] for r in session["runs"] if r["id"] not in before
                       and r.get("kind") != "live"]
                if new:
                    return new[-1]
                if session["status"] != "processing":  # (e.g. failed: nothing decoded)
                    raise ServerError(f"session {session_id} is {session['status']} with no "
                                      f"run to follow: {session.get('error') or 'no error'}")
            await asyncio.sleep(0.5)
        return None

    async def _next(self, inbox: "asyncio.Queue[dict[str, Any]]", kinds: tuple[str, ...]
                    ) -> dict[str, Any]:
        """The next message of one of ``kinds`` (messages are consumed in order; the end
        of the connection, ``closed``, stays for every later wait). Raises what the
        reader met (a callback's exception) and TimeoutError when the server has sent
        nothing for the client's timeout (progress keeps a long run's wait alive)."""
        while True:
            try:
                event = await asyncio.wait_for(inbox.get(), self.timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"no {' / '.join(kinds)} from the server: nothing heard "
                                   f"for {self.timeout:g} s") from None
            if event["type"] == "failed":
                raise event["exception"]
            if event["type"] == "closed":
                inbox.put_nowait(event)
            if event["type"] in kinds:
                return event

    async def events(self, session_id: str) -> AsyncIterator[dict[str, Any]]:
        """Server events of an existing session (subscribe by connecting to its id)."""
        async with self._socket(session_id) as ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    yield json.loads(msg.data)

    async def wait_for_run(self, session_id: str, run_id: str,
                           on_event: Optional[EventCallback] = None,
                           poll: float = 0.5) -> dict[str, Any]:
        """Wait until run ``run_id`` ends; ``on_event`` sees its progress events. A
        ServerError (status 404) says the session was deleted meanwhile.

        The wait outlasts a server restart: once the server has answered, while it cannot
        be reached (or answers 502-504) the REST polls go on, and the event socket is
        opened again when it answers (a restart queues an interrupted run again under its
        id); a server that never answered (nothing listens, or it refused the first
        connection) is an error at once. TimeoutError when the run has not moved for the
        client's timeout."""
        return await follow_run(self, session_id, run_id, on_event, poll, reached=False)

class Client:
    """Synchronous facade of :class:`AsyncClient` (safe inside Jupyter's running loop);
    its token, too, is ``$WORKBENCH_TOKEN`` unless one is given."""

    def __init__(self, base_url: Any, *, token: Optional[str] = None, timeout: float = 600.0):
        url = getattr(base_url, "url", base_url)  # accepts a LocalServer
        self.aio = AsyncClient(str(url), token=token, timeout=timeout)  # (checks them first)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="workbench-client")
        self._thread.start()
        self._closed = False
        self._closing = threading.Lock()

    @property
    def base_url(self) -> str:
        return self.aio.base_url

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:  # (it waited for itself for ever)
            coro.close()
            raise RuntimeError("a callback (on_event, on_live) runs on the Client's own "
                               "thread and cannot wait for it: use another Client")
        with self._closing:  # (scheduled on a loop about to stop, it would wait for ever)
            if self._closed:
                coro.close()
                raise RuntimeError("this client is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:  # Ctrl-C in a notebook: the work stops too (a recording went
            future.cancel()    # on streaming in the background; its socket now closes and
            raise              # the session keeps what arrived, as after a disconnect)

    def close(self) -> None:
        """Close the connections; work still under way on them (a recording, a wait for a
        run) is cancelled, so whoever waits for it is not left waiting for ever."""
        if threading.current_thread() is self._thread:  # (it waited 60 s for itself)
            raise RuntimeError("a callback (on_event, on_live) cannot close its own Client")
        with self._closing:  # what is scheduled from now on is refused; what was, cancelled
            if self._closed:
                return
            self._closed = True

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.aio.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        return self._run(self.aio.health())

    def wait_live_warm(self, timeout: float = 180.0) -> Optional[float]:
        return self._run(self.aio.wait_live_warm(timeout))

    def list_sessions(self) -> list[dict[str, Any]]:
        return self._run(self.aio.list_sessions())

    def get_session(self, session_id: str) -> dict[str, Any]:
        return self._run(self.aio.get_session(session_id))

    def create_session(self, format: str = "wav", options: Optional[dict[str, Any]] = None
                       ) -> dict[str, Any]:
        return self._run(self.aio.create_session(format, options))

    def delete_session(self, session_id: str) -> None:
        self._run(self.aio.delete_session(session_id))

    def start_run(self, session_id: str, config: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        return self._run(self.aio.start_run(session_id, config))

    def runs(self, session_id: str) -> list[dict[str, Any]]:
        return self._run(self.aio.runs(session_id))

    def download(self, session_id: str, what: str = "audio", format: str = "wav",
                 run: Optional[str] = None, dest: Optional[Union[str, os.PathLike]] = None
                 ) -> Union[bytes, Path]:
        return self._run(self.aio.download(session_id, what, format, run, dest))

    def transcript(self, session_id: str, run: Optional[str] = None) -> Transcript:
        return self._run(self.aio.transcript(session_id, run))

    def record(self, source: Source, **kwargs: Any) -> RecordingReport:
        """See :meth:`AsyncClient.record`."""
        return self._run(self.aio.record(source, **kwargs))

    def wait_for_run(self, session_id: str, run_id: str,
                     on_event: Optional[EventCallback] = None) -> dict[str, Any]:
        return self._run(self.aio.wait_for_run(session_id, run_id, on_event))

    def submit(self, coro: Coroutine[Any, Any, T]) -> "asyncio.Future[T]":
        """Run a coroutine of :attr:`aio` in the background; returns a concurrent future.
        A closed (or closing) client refuses it with RuntimeError."""
        with self._closing:  # (scheduled on a loop about to stop, it would never end)
            if self._closed:
                coro.close()
                raise RuntimeError("this client is closed")
            return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[return-value]
