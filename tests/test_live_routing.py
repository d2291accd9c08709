"""Who gets which live event, and when, in the server's own objects (AppState, LiveHub,
LiveStream, Connection) with a real session store and real audio on disk; the live worker
itself is not started here (tests/test_live_server.py runs it through the server)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from server.config import ServerConfig
from server.connection import Connection
from server.live import LINGER_SECONDS, LiveHub, LiveStream
from server.sessions import SessionStore
from server.state import AppState


class Socket:
    """What AppState sends to: the messages a socket got."""

    closed = False

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    @property
    def got(self) -> list[str]:
        return [m["type"] for m in self.messages]

    async def send_json(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[AppState]:
    state = AppState(ServerConfig(data_dir=tmp_path), SessionStore(tmp_path))
    state.live = LiveHub(state.store, state.notify, max_streams=2, data_dir=str(tmp_path))
    yield state
    state.store.close()


def running(hub: LiveHub, session_id: str) -> LiveStream:
    """A live stream of the session as `LiveHub.attach` leaves it (its worker not started)."""
    hub.loop = asyncio.get_running_loop()
    stream = LiveStream(hub, session_id)
    stream.state = "running"
    hub.alive.add(stream)
    hub.streams[session_id] = hub.last[session_id] = stream
    return stream


async def test_a_recording_without_live_results_is_muted_for_its_start_s_streams_only(
        state: AppState) -> None:
    """A socket whose recording did not ask for live results gets no live event of the
    session's live streams at its start (one that start ended still says its last words),
    but every other message, and, once it only watches, the live events of a stream that
    another connection's live recording starts later.  Before, it was muted for every
    stream while any stream of the session was alive, so it missed that one's."""
    hub = state.live
    recorder, watcher = Socket(), Socket()
    for ws in (recorder, watcher):
        state.subscribe("s", ws)  # type: ignore[arg-type]
    ended = running(hub, "s")
    elsewhere = running(hub, "t")  # (another session's)
    state.mute(recorder, hub.of("s"))  # type: ignore[arg-type]
    await state.notify("s", {"type": "transcript_final"}, source=ended)
    await ended.pause("behind")
    await state.notify("s", {"type": "processing_started"})
    assert recorder.got == ["processing_started"]
    assert watcher.got == ["transcript_final", "live_paused", "processing_started"]
    assert elsewhere not in state.live_muted[recorder]  # type: ignore[index]
    later = running(hub, "s")  # after its recording stopped, a live resume elsewhere
    await state.notify("s", {"type": "transcript_final"}, source=later)
    await later.pause("behind")
    assert recorder.got == ["processing_started", "transcript_final", "live_paused"]
    await state.notify("s", {"type": "live_run_saved"}, source=ended)  # (the old one's)
    assert recorder.got[-1] == "live_paused" and watcher.got[-1] == "live_run_saved"


async def test_live_run_saved_waits_for_the_stopping_socket_s_recording_stopped(
        state: AppState) -> None:
    """AppState.notify holds `live_run_saved` for a socket whose recording is stopping
    (`live_held`, set by Connection._finish) until `release`, which it calls once it has
    sent `recording_stopped` (the run id's first mention); other messages and watchers
    are not held.  Before, a short recording's live run could be saved, and said so,
    before its `recording_stopped`."""
    recorder, watcher = Socket(), Socket()
    for ws in (recorder, watcher):
        state.subscribe("s", ws)  # type: ignore[arg-type]
    state.live_held.setdefault(recorder, [])  # type: ignore[arg-type]
    for kind in ("transcript_final", "live_run_saved"):
        await state.notify("s", {"type": kind})
    assert recorder.got == ["transcript_final"]
    assert watcher.got == ["transcript_final", "live_run_saved"]
    await state.send(recorder, {"type": "recording_stopped"})  # type: ignore[arg-type]
    await state.release(recorder)  # type: ignore[arg-type]
    assert recorder.got == ["transcript_final", "recording_stopped", "live_run_saved"]
    await state.notify("s", {"type": "live_run_saved"})  # (nothing held any more)
    assert recorder.got[-1] == "live_run_saved" and not state.live_held


async def test_a_resumed_client_s_catch_up_goes_to_it_alone(state: AppState) -> None:
    """A live stream paused (behind the audio) while its client was away: the resumed
    client gets the replay and the `live_paused` again, and no other socket does (they
    heard it all as it was said).  Before, both went to every socket of the session."""
    hub = state.live
    watcher = Socket()
    state.subscribe("s1", watcher)  # type: ignore[arg-type]
    stream = running(hub, "s1")
    stream.said.add({"type": "transcript_final", "words": [
        {"index": 0, "word": " hello", "start": 0.1, "end": 0.5, "speaker": None}]})
    await stream.pause("Live results are 12 s behind the audio")
    assert watcher.got == ["live_paused"]
    said = stream.catch_up()
    assert [(m["type"], m["session_id"]) for m in said] == [("live_replay", "s1"),
                                                           ("live_paused", "s1")]
    assert said[0]["words"][0]["word"] == " hello"
    assert said[1]["reason"] == "Live results are 12 s behind the audio"
    stream.paused = False
    assert [m["type"] for m in stream.catch_up()] == ["live_replay"]
    assert watcher.got == ["live_paused"]
    # the session deleted: its next word index goes, and its stream's task ending
    # afterwards (it calls stream_ended again) does not bring it back
    hub.stream_ended(stream)
    assert hub.said_until == {"s1": 1}
    hub.alive.add(stream)
    hub.streams["s1"] = stream
    hub.discard("s1")
    hub.stream_ended(stream)
    assert hub.said_until == {}


async def pcm_recording(state: AppState, path_id: str = "new", *, seconds: float = 2.0,
                        live: bool = False) -> Connection:
    """A connection that recorded `seconds` of PCM (silence) and is still recording."""
    conn = Connection(state, Socket(), path_id)  # type: ignore[arg-type]
    await conn.bind_existing()
    await conn.on_text(json.dumps({"action": "start", "input_format": "pcm_s16le",
                                   "live_results": live}))
    assert conn.session_id is not None and conn.writer is not None, conn.ws.messages  # type: ignore[attr-defined]
    await conn.on_chunk(bytes(int(seconds * 32000)))
    return conn


async def test_a_dropped_live_recording_waits_its_whole_window_after_its_part_is_saved(
        state: AppState, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live recording's connection drops: a resume is refused ("being saved") while its
    part is finalised, so the live worker's 30 s wait for a resume starts only then; it
    started at the drop, so after a long compressed part the window was shorter by the
    whole decode (17 s of 30 after an hour of WebM).  Here the real finalisation takes
    1.5 s more, as such a part's decode does.  While it runs the stream already waits
    (no backlog or worker checks: their messages would speak of a recording going on)."""
    import server.connection as connection

    real, seen = connection.finalise_async, []

    async def long_part(*args: Any, **kwargs: Any) -> Any:
        decoded = await real(*args, **kwargs)
        seen.append((stream.state, stream._linger))
        await asyncio.sleep(1.5)
        return decoded

    monkeypatch.setattr(connection, "finalise_async", long_part)
    conn = await pcm_recording(state)
    conn.live = stream = running(state.live, conn.session_id)  # type: ignore[arg-type]
    t0 = time.monotonic()
    await conn.finish("disconnect")
    assert time.monotonic() - t0 >= 1.5 and seen == [("lingering", None)]
    assert stream.state == "lingering" and stream._linger is not None
    left = stream._linger.when() - state.live.loop.time()
    stream.close()
    assert left > LINGER_SECONDS - 0.5, left
    assert state.store.get_session(conn.session_id).status == "interrupted"  # type: ignore[arg-type, union-attr]


async def test_a_stop_that_fails_leaves_its_live_stream_waiting_for_a_resume(
        state: AppState, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `stop` whose part could not be stored (a full disk) leaves the session
    interrupted, as if dropped: its live stream now waits for a resume as after a drop.
    Before, it stayed running with its worker and its live slot until shutdown."""
    conn = await pcm_recording(state)
    conn.live = stream = running(state.live, conn.session_id)  # type: ignore[arg-type]

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.store, "update_part", full_disk)
    with pytest.raises(OSError):
        await conn.finish("stop")
    assert stream.state == "lingering" and stream._linger is not None
    stream.close()


async def test_a_socket_is_muted_for_the_streams_of_its_start_until_it_records_live(
        state: AppState) -> None:
    """Through `start`: a recording without live results is muted for the session's live
    stream of that moment (here one waiting for a resume, which that start ends); once the
    same socket starts a live recording, its words follow that stream's, so the mute goes
    (it kept the old stream's last words and `live_run_saved` from it)."""
    state.live.max_streams = 0  # (live results refused at once: no worker is started)
    first = await pcm_recording(state)
    sid = first.session_id
    assert sid is not None
    waiting = running(state.live, sid)
    first.live = waiting
    await first.finish("disconnect")
    assert waiting.state == "lingering"
    conn = await pcm_recording(state, sid)  # a resume without live results
    assert waiting in state.live_muted[conn.ws]  # type: ignore[index]
    await state.notify(sid, {"type": "transcript_final"}, source=waiting)
    await conn.finish("disconnect")
    await conn.on_text(json.dumps({"action": "start", "input_format": "pcm_s16le",
                                   "live_results": True}))
    assert conn.ws not in state.live_muted
    await state.notify(sid, {"type": "live_run_saved"}, source=waiting)
    got = conn.ws.got  # type: ignore[attr-defined]
    assert "transcript_final" not in got and got[-1] == "live_run_saved", got
    assert "Live results are off on this server" in conn.ws.messages[-2]["reason"]  # type: ignore[attr-defined]
    await conn.finish("disconnect")


async def test_sockets_bound_while_a_stream_waits_for_its_resume_get_its_catch_up_with_it(
        state: AppState) -> None:
    """A dropped live recording's stream waits for a resume; a watcher and then the
    resuming client bind to the session meanwhile (a client resumes on /ws/{id}): each
    gets the words so far once, the resumer after its `recording_started`.  A catch-up at
    binding gave the resumer two (one before `recording_started`, even when its `start`
    then asked for no live results), and a broadcast one at the resume gave every socket
    of the session a second copy."""
    rec = await pcm_recording(state)
    sid = rec.session_id
    assert sid is not None
    rec.live = stream = running(state.live, sid)
    # a stand-in for the worker's process: attach asks whether it is alive (the worker
    # itself runs through the server in test_live_server.py)
    stream.process = mp.get_context("spawn").Process(target=time.sleep, args=(60,), daemon=True)
    stream.process.start()
    try:
        stream.said.add({"type": "transcript_final", "words": [
            {"index": 0, "word": " hello", "start": 0.1, "end": 0.5, "speaker": None}]})
        await rec.finish("disconnect")
        assert stream.state == "lingering"
        watcher = Connection(state, Socket(), sid)  # type: ignore[arg-type]
        await watcher.bind_existing()
        resumer = await pcm_recording(state, sid, live=True)
        assert resumer.live is stream and stream.state == "running"
        assert resumer.ws.got == ["recording_started", "live_replay"]  # type: ignore[attr-defined]
        assert watcher.ws.got == ["live_replay"]  # type: ignore[attr-defined]
        assert resumer.ws.messages[1]["words"][0]["word"] == " hello"  # type: ignore[attr-defined]
        late = Connection(state, Socket(), sid)  # type: ignore[arg-type]
        await late.bind_existing()  # (now it records: at once)
        assert late.ws.got == ["live_replay"] and not state.live_owed  # type: ignore[attr-defined]
        await resumer.finish("disconnect")
    finally:
        stream.process.kill()
        stream.process.join(10)
        stream.close()


async def test_a_catch_up_reaches_each_socket_ahead_of_what_is_said_after_it(
        state: AppState) -> None:
    """The catch-up of a resume goes to the resuming socket and to those owed it; the
    stream goes on speaking meanwhile.  Sent one socket and one message at a time, a
    `diarization_update` said after it was made reached the second socket before its
    replay (whose turns then replaced that update's), and a `live_resumed` before the
    replay's `live_paused` (the client stayed paused)."""
    hub = state.live
    a, b = Socket(), Socket()
    for ws in (a, b):
        state.subscribe("s", ws)  # type: ignore[arg-type]
    stream = running(hub, "s")
    stream.said.add({"type": "diarization_update", "final_until": 2.0,
                     "turns": [{"start": 0.0, "end": 2.0, "speaker": "SPEAKER_00"}]})
    stream.paused, stream.pause_reason = True, "behind"
    sending = asyncio.ensure_future(state.catch_up(stream.catch_up(), [a, b]))  # type: ignore[list-item]
    await asyncio.sleep(0)  # (it began; the stream says more)
    stream.paused = False
    await stream._say({"type": "live_resumed"})
    await sending
    assert a.got == b.got == ["live_replay", "live_paused", "live_resumed"]
    # sessions whose stream no longer waits for a resume are forgotten as sockets are owed
    state.owe("gone", a, {"gone"})  # type: ignore[arg-type]
    state.owe("s", b, {"s"})  # type: ignore[arg-type]
    assert list(state.live_owed) == ["s"]
