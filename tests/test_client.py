"""The protocol client against a real server: sources, pacing, framing, REST helpers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workbench.engine.audio import decode_file
from workbench.notebook.client import Client, ServerError
from workbench.notebook.local_server import LocalServer

from .conftest import cutting_proxy


@pytest.fixture(scope="module")
def client(server: LocalServer):  # type: ignore[no-untyped-def]
    with Client(server) as c:
        yield c


def test_record_file_array_and_generator(client: Client, server: LocalServer,
                                         speech_dir: Path, reference_audio: np.ndarray) -> None:
    events: list[dict] = []
    rec = client.record(speech_dir / "speech.ogg", on_event=events.append, binary=False)
    assert rec.result is not None and rec.result["type"] == "processing_complete"
    assert [e["type"] for e in events][:2] == ["recording_started", "recording_stopped"]
    assert rec.seconds_sent == pytest.approx(len(reference_audio) / 16000, abs=0.06)
    wav = client.download(rec.session_id, "audio", "wav")
    assert isinstance(wav, bytes) and wav[:4] == b"RIFF"

    rec2 = client.record(reference_audio, options={"num_speakers": 2}, wait=False)
    assert rec2.last("processing_started") is not None
    session = client.get_session(rec2.session_id)
    assert session["options"] == {"num_speakers": 2}
    audio = decode_file(server.data_dir / "sessions" / rec2.session_id / "audio.wav")
    np.testing.assert_allclose(audio, reference_audio, atol=1 / 16384)

    data = (speech_dir / "speech.webm").read_bytes()
    chunks = (data[i : i + 2000] for i in range(0, len(data), 2000))
    rec3 = client.record(chunks, input_format="webm")
    assert rec3.chunks_sent == -(-len(data) // 2000)
    raw = (server.data_dir / "sessions" / rec3.session_id / "part-000.raw").read_bytes()
    assert raw == data


def test_record_keeps_a_created_sessions_format(client: Client,
                                                reference_audio: np.ndarray) -> None:
    """`format` was always sent ("wav" by default): filling a created MP4 session, or
    resuming one the recorder page made, turned it into a WAV one."""
    sid = client.create_session(format="mp4")["id"]
    rec = client.record(reference_audio[:16000], session_id=sid, wait=False)
    assert rec.messages[0]["format"] == "mp4" and client.get_session(sid)["format"] == "mp4"
    assert client.record(reference_audio[:16000], wait=False).messages[0]["format"] == "wav"


def test_chunks_that_wait_for_their_data_leave_the_client_free(client: Client) -> None:
    """A caller's chunks were taken on the client's loop: one that waited for its data
    (a sound card) held every other call of the client, and the server's replies."""
    import threading

    def slow():  # type: ignore[no-untyped-def]
        for _ in range(3):
            time.sleep(1.0)
            yield bytes(32000)

    done = threading.Event()
    recording = threading.Thread(target=lambda: (client.record(
        slow(), input_format="pcm_s16le", wait=False), done.set()))
    recording.start()
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        assert client.health()
        assert time.monotonic() - t0 < 0.8 and not done.is_set()
    finally:
        recording.join(30)
    assert done.is_set()


def test_a_callback_that_calls_its_own_client_is_an_error_not_a_hang(
        client: Client, reference_audio: np.ndarray) -> None:
    def asks(event: dict) -> None:
        if event["type"] == "recording_started":
            client.get_session(event["session_id"])  # waited for itself for ever

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="cannot wait for it: use another Client"):
        client.record(reference_audio[:16000], on_event=asks, wait=False)
    assert time.monotonic() - t0 < 30


def test_realtime_pacing(client: Client) -> None:
    tone = (0.1 * np.sin(np.arange(16000 * 2) * 2 * np.pi * 440 / 16000)).astype(np.float32)
    t0 = time.monotonic()
    rec = client.record(tone, realtime=True, chunk_seconds=0.1, wait=False)
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.9  # two seconds of audio took (at least) two seconds to send
    assert rec.last("recording_stopped")["duration_seconds"] == pytest.approx(2.0, abs=0.001)


def test_realtime_speed(start_server) -> None:  # type: ignore[no-untyped-def]
    # The server's live check (2x real time after a 0.5 s burst) is the referee.
    srv = start_server("--live-max-speed", "2", "--live-burst", "0.5")
    tone = (0.1 * np.sin(np.arange(16000 * 3) * 2 * np.pi * 440 / 16000)).astype(np.float32)
    with Client(srv) as client:
        t0 = time.monotonic()
        rec = client.record(tone, realtime=True, speed=1.5, chunk_seconds=0.1, wait=False)
        assert time.monotonic() - t0 >= 1.9  # three seconds of audio at 1.5x took two
        assert rec.errors == []
        assert rec.last("recording_stopped")["duration_seconds"] == pytest.approx(3.0, abs=0.001)

        fast = client.record(tone, realtime=True, speed=4, chunk_seconds=0.1, wait=False)
        assert fast.errors and {e["code"] for e in fast.errors} == {4013}
        with pytest.raises(ValueError):
            client.record(tone, realtime=True, speed=0)


def test_rest_helpers_and_errors(client: Client, server: LocalServer, tmp_path: Path) -> None:
    assert client.health()["status"] == "ok"
    created = client.create_session("mp4", {"language": "en"})
    assert created["id"] in [s["id"] for s in client.list_sessions()]
    with pytest.raises(ServerError) as info:
        client.download(created["id"], "audio", "wav")
    assert info.value.status == 404
    with pytest.raises(ServerError) as info:
        client.start_run(created["id"], {})
    assert info.value.status == 409
    client.delete_session(created["id"])
    with pytest.raises(ServerError):
        client.get_session(created["id"])


def test_start_run_and_wait(client: Client, speech_dir: Path) -> None:
    rec = client.record(speech_dir / "speech.wav")
    run = client.start_run(rec.session_id, {})
    seen: list[dict] = []
    done = client.wait_for_run(rec.session_id, run["id"], on_event=seen.append)
    assert done["status"] == "completed"
    assert [r["id"] for r in client.runs(rec.session_id)][-1] == run["id"]


def test_a_raising_callback_ends_record_with_its_error(client: Client, speech_dir: Path) -> None:
    def broken(event: dict) -> None:
        raise ValueError("bug in the callback")

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="bug in the callback"):
        client.record(speech_dir / "speech.wav", on_event=broken)
    assert time.monotonic() - t0 < 30  # at once, not after the client's 600 s timeout


def test_a_callback_raising_mid_recording_stops_the_sending(start_server,  # type: ignore[no-untyped-def]
                                                            speech_dir: Path) -> None:
    """Raised on the first `progress` (after a chunk) of a 5 s real-time recording: the
    error comes at once and no more audio goes (the rest was sent in real time, unheard)."""
    srv = start_server("--progress-every", "1")

    def broken(event: dict) -> None:
        if event["type"] == "progress":
            raise ValueError("bug in the callback")

    with Client(srv, timeout=60) as client:
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="bug in the callback"):
            client.record(speech_dir / "speech.wav", realtime=True, on_event=broken)
        assert time.monotonic() - t0 < 2.5  # the audio lasts ~5 s


def test_an_idle_close_before_stop_raises_the_servers_reason(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--idle-timeout", "1")

    def stalled():  # one chunk, then nothing for longer than the idle timeout
        yield b"\0" * 3200
        time.sleep(4)
        yield b"\0" * 3200

    with Client(srv, timeout=60) as client:
        t0 = time.monotonic()
        with pytest.raises(ServerError) as info:
            client.record(stalled(), input_format="pcm_s16le")
        assert time.monotonic() - t0 < 30
        assert info.value.code == 4014 and "can be resumed" in str(info.value)
        (session,) = client.list_sessions()
        assert session["status"] == "interrupted"


def test_decoded_audio_cut_at_the_limit_still_waits_for_processing(start_server,  # type: ignore[no-untyped-def]
                                                                   speech_dir: Path) -> None:
    # WebM Opus bytes: their count does not tell the length, so the limit shows at the
    # stop (recording_stopped truncated, then 4005, then processing_started)
    srv = start_server("--max-duration", "2")
    data = (speech_dir / "speech.webm").read_bytes()  # ~5 s
    with Client(srv, timeout=120) as client:
        rec = client.record((data[i:i + 4000] for i in range(0, len(data), 4000)),
                            input_format="webm")
        assert rec.last("recording_stopped")["truncated"] is True
        assert [e["code"] for e in rec.errors] == [4005]
        assert rec.result is not None and rec.result["type"] == "processing_complete"


async def _serve_runs(events: Any, runs: Any) -> tuple[Any, int]:
    """A stand-in for the server on a free loopback port: a session's event socket and
    its runs (`events` and `runs` are aiohttp handlers); (runner, port)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/ws/{sid}", events)
    app.router.add_get("/api/sessions/{sid}/runs", runs)
    return await _served(app)


async def _served(app: Any) -> tuple[Any, int]:
    """`app` (an aiohttp application) served on a free loopback port: (runner, port)."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def test_wait_for_run_polls_at_its_pace_once_the_socket_closed() -> None:
    """A stand-in for the server whose event socket closes at once (as on a restart)
    and whose run ends after 1.5 s: the REST polls keep to one per `poll`."""
    import asyncio

    from aiohttp import web

    from workbench.notebook.client import AsyncClient

    polls = 0

    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close(code=1001, message=b"Server shutdown")
        return ws

    async def runs(request: web.Request) -> web.Response:
        nonlocal polls
        polls += 1
        done = time.monotonic() - t0 > 1.5
        return web.json_response({"runs": [{"id": "R", "status": "completed" if done else "running"}]})

    async def main() -> dict:
        runner, port = await _serve_runs(events, runs)
        nonlocal t0
        t0 = time.monotonic()  # the run ends 1.5 s from here
        aio = AsyncClient(f"http://127.0.0.1:{port}", timeout=30)
        try:
            return await aio.wait_for_run("S", "R", poll=0.5)
        finally:
            await aio.close()
            await runner.cleanup()

    t0 = time.monotonic()
    assert asyncio.run(main())["status"] == "completed"
    assert 3 <= polls <= 8, polls


def test_wait_for_run_waits_through_503_but_not_for_a_server_never_reached() -> None:
    """Once the server has answered (its socket opened), 503s (a server going down, a
    proxy before it) are waited through, the first poll's too; a server that never
    answered (nothing listens there) is an error at once, not a wait of the client's
    whole timeout."""
    import asyncio

    import aiohttp
    from aiohttp import web

    from workbench.notebook.client import AsyncClient
    from workbench.notebook.local_server import free_port

    answers = [503, "running", 503, 503, "completed"]  # (the first after the socket opened)

    async def runs(request: web.Request) -> web.Response:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if answer == 503:
            return web.json_response({"error": "restarting"}, status=503)
        return web.json_response({"runs": [{"id": "R", "status": answer}]})

    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # (open until the client leaves)
        return ws

    async def main() -> tuple[dict, float]:
        runner, port = await _serve_runs(events, runs)
        aio = AsyncClient(f"http://127.0.0.1:{port}", timeout=30)
        nowhere = AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=30)
        try:
            run = await aio.wait_for_run("S", "R", poll=0.1)
            t0 = time.monotonic()
            with pytest.raises(aiohttp.ClientConnectionError):
                await nowhere.wait_for_run("S", "R", poll=0.1)
            return run, time.monotonic() - t0
        finally:
            await aio.close()
            await nowhere.close()
            await runner.cleanup()

    run, refused_after = asyncio.run(main())
    assert run["status"] == "completed" and answers == ["completed"]
    assert refused_after < 5, refused_after


def test_stereo_and_int32_arrays_are_recorded_as_load_audio_reads_them(
        client: Client, server: LocalServer, reference_audio: np.ndarray) -> None:
    """A (n, 2) array went out interleaved as twice the audio, an int32 one clipped to
    full scale (only int16 was scaled): both now as load_audio reads arrays."""
    stereo = np.stack([reference_audio, reference_audio], axis=1)
    rec = client.record(stereo, wait=False)
    assert rec.seconds_sent == pytest.approx(len(reference_audio) / 16000, abs=0.01)
    loud = (reference_audio * 0.5 * 2**31).astype(np.int32)
    rec = client.record(loud, wait=False)
    audio = decode_file(server.data_dir / "sessions" / rec.session_id / "audio.wav")
    np.testing.assert_allclose(audio, reference_audio * 0.5, atol=2 / 32768)


def test_a_local_server_on_a_taken_port_says_so(server: LocalServer, tmp_path: Path) -> None:
    """Another server on the port answered the health check: start() returned as if its
    own server ran, while that one had exited (address in use)."""
    with pytest.raises(RuntimeError, match=f"port {server.port} is taken"):
        LocalServer(tmp_path / "data", port=server.port).start()
    assert server.healthy()


def test_a_local_server_moves_off_a_port_it_chose_that_was_taken(tmp_path: Path) -> None:
    """A free port chosen for a server can be taken before the server binds it (by another
    process that asked for a free port too, e.g. the suite's other worker): the start
    failed, or took that other server's health answer for its own. A port it chose is
    now replaced; a port it was given is not (the test above)."""
    import socket

    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", srv.port))
        taken.listen()
        with srv:
            assert srv.port != taken.getsockname()[1] and srv.healthy()
            assert f":{srv.port} (data: " in srv.log_path.read_text()


def test_load_session_closes_the_client_it_made(client: Client, server: LocalServer,
                                                reference_audio: np.ndarray,
                                                tmp_path: Path) -> None:
    """Given a URL, load_session made a client (a thread and a socket) every call and left
    it open."""
    import threading

    from workbench.notebook.analysis import load_session

    sid = client.record(reference_audio[:16000], wait=True).session_id
    before = {t.ident for t in threading.enumerate()}
    for _ in range(3):
        data = load_session(sid, server=server.url, cache_dir=tmp_path)
        assert data.session["id"] == sid
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []


def _stand_in(progress_for: float, every: float):  # type: ignore[no-untyped-def]
    """A stand-in for the server's recording socket: it takes a recording, then sends
    `processing_progress` every `every` seconds for `progress_for` seconds before
    `processing_complete` (a long run on a busy server)."""
    import asyncio

    from aiohttp import web

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != web.WSMsgType.TEXT:
                continue
            action = msg.json().get("action")
            if action == "start":
                await ws.send_json({"type": "recording_started", "session_id": "S",
                                    "format": "wav", "part": 0, "resumed": False})
            elif action == "stop":
                await ws.send_json({"type": "recording_stopped", "session_id": "S",
                                    "duration_seconds": 1.0})
                await ws.send_json({"type": "processing_started", "session_id": "S"})
                t0 = time.monotonic()
                while time.monotonic() - t0 < progress_for:
                    await asyncio.sleep(every)
                    await ws.send_json({"type": "processing_progress", "session_id": "S",
                                        "stage": "asr", "progress": 0.5, "overall": 0.5})
                await ws.send_json({"type": "processing_complete", "session_id": "S",
                                    "run_id": "R", "speakers": 1, "word_count": 0,
                                    "duration_seconds": 1.0})
                await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws/{sid}", socket)
    return app


def test_progress_keeps_a_long_run_s_wait_alive() -> None:
    """The client's timeout was a deadline for the whole processing: a run sending
    progress every 0.5 s for 3 s failed a client with timeout=2 while the server worked."""
    import asyncio

    from workbench.notebook.client import AsyncClient

    async def main(progress_for: float) -> object:
        runner, port = await _served(_stand_in(progress_for, 0.5))
        aio = AsyncClient(f"http://127.0.0.1:{port}", timeout=2)
        try:
            return await aio.record(np.zeros(16000, np.float32))
        finally:
            await aio.close()
            await runner.cleanup()

    report = asyncio.run(main(3.0))
    assert report.result and report.result["type"] == "processing_complete"  # type: ignore[attr-defined]


def test_a_refused_socket_is_a_server_error_without_the_token(tmp_path: Path) -> None:
    """A WebSocket refused at the upgrade (a wrong token, too many connections) raised
    aiohttp's handshake error, whose message showed the token in the URL."""
    with LocalServer(tmp_path / "data", args=["--pipeline", "renditions"],
                     env={"WORKBENCH_TOKEN": "right-token"}) as srv, \
            Client(srv, token="wrong-token") as c:
        with pytest.raises(ServerError) as exc:
            c.record(np.zeros(1600, np.float32))
        assert exc.value.status == 401 and "token" in str(exc.value)
        assert "wrong-token" not in str(exc.value)
        with Client(srv, token="right-token") as ok:  # the header alone carries the token
            assert ok.record(np.zeros(1600, np.float32)).result["type"] == "processing_complete"


def test_the_token_comes_from_the_environment_unless_given(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With WORKBENCH_TOKEN exported, the server (its environment passed on) wanted it but
    a Client built without a token (notebooks 01 and 02, a SessionPanel) never sent it:
    401 on every request."""
    monkeypatch.setenv("WORKBENCH_TOKEN", "exported-token")
    with LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]) as srv, \
            Client(srv) as c:
        assert c.list_sessions() == []
        assert c.record(np.zeros(1600, np.float32)).result["type"] == "processing_complete"
        for token in ("wrong-token", ""):  # a token given wins, "" for none
            with Client(srv, token=token) as other, pytest.raises(ServerError) as exc:
                other.list_sessions()
            assert exc.value.status == 401


def test_close_cancels_a_recording_under_way(server: LocalServer) -> None:
    """Work under way on a client when it closes (a panel or dashboard closed while it
    waited) was left pending for ever: its caller's thread hung, and the interpreter with
    it at exit."""
    import threading

    client = Client(server)
    outcome: list[BaseException] = []

    def record() -> None:
        try:
            client.record(np.zeros(10 * 16000, np.float32), realtime=True)
        except BaseException as exc:  # noqa: BLE001 - what ended it
            outcome.append(exc)

    worker = threading.Thread(target=record)
    worker.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    client.close()
    worker.join(timeout=10)
    assert not worker.is_alive() and time.monotonic() - t0 < 10
    assert outcome and type(outcome[0]).__name__ == "CancelledError", outcome


def test_ctrl_c_stops_a_recording(server: LocalServer) -> None:
    """Ctrl-C in a notebook stopped only the wait: the recording went on streaming in the
    background to its end and was processed."""
    import os
    import signal
    import threading

    armed = threading.Event()

    def interrupt(signum: int, frame: object) -> None:  # only while record() runs: a stray
        if armed.is_set():                              # SIGINT must not end the test run
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    with Client(server) as client:
        before = {s["id"] for s in client.list_sessions()}
        try:
            armed.set()
            timer.start()
            t0 = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                client.record(np.zeros(8 * 16000, np.float32), realtime=True)
        finally:
            armed.clear()
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        assert time.monotonic() - t0 < 6
        (sid,) = {s["id"] for s in client.list_sessions()} - before
        deadline = time.monotonic() + 20
        while (session := client.get_session(sid))["status"] == "recording":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert session["status"] == "interrupted" and session["duration_seconds"] < 4


def test_a_local_server_goes_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A kernel that exited (restarted, a Voilà tab closed) without stop() left its server
    running in its own session; the next start put a second server on the same data."""
    import subprocess
    import sys

    import psutil

    from workbench.notebook.local_server import REPO_ROOT

    script = ("import sys; from workbench.notebook.local_server import LocalServer\n"
              f"s = LocalServer({str(tmp_path / 'data')!r}, args=['--pipeline', 'renditions']).start()\n"
              "print(s.process.pid, flush=True)\n")  # and exits without stop()
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, env={**__import__("os").environ,
                                                      "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 20
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the server outlived the process that started it"
        time.sleep(0.2)


def test_wait_for_run_says_that_the_session_was_deleted(client: Client) -> None:
    """A session deleted while its run was waited for: wait_for_run raised the REST 404 of
    its runs ("Session not found"), as if the caller had asked for a wrong session."""
    tone = (0.1 * np.sin(np.arange(600 * 16000) * 2 * np.pi * 440 / 16000)).astype(np.float32)
    rec = client.record(tone, format="mp4", wait=False)  # 10 minutes: its MP4 takes a while
    waiting = client.submit(client.aio.wait_for_run(rec.session_id, rec.run_id))
    time.sleep(0.5)  # its socket and first poll; the run takes seconds
    assert not waiting.done()
    client.delete_session(rec.session_id)
    with pytest.raises(ServerError) as info:
        waiting.result(timeout=30)
    assert info.value.status == 404 and f"Session {rec.session_id} was deleted" in str(info.value)


def _dropping_stand_in(runs_status: int):  # type: ignore[no-untyped-def]
    """A stand-in for the server that takes a recording, starts run R, sends progress and
    then drops the connection (no close frame); over REST run R completes a second later
    (`runs_status` 200) or the session is gone (404)."""
    from aiohttp import web

    dropped: list[float] = []

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            action = msg.json().get("action") if msg.type == web.WSMsgType.TEXT else None
            if action == "start":
                await ws.send_json({"type": "recording_started", "session_id": "S",
                                    "format": "wav", "part": 0, "resumed": False})
            elif action == "stop":
                for event in ({"type": "recording_stopped", "session_id": "S",
                               "duration_seconds": 1.0},
                              {"type": "processing_started", "session_id": "S", "run_id": "R"},
                              {"type": "processing_progress", "session_id": "S", "run_id": "R",
                               "stage": "asr", "progress": 0.5, "overall": 0.5}):
                    await ws.send_json(event)
                dropped.append(time.monotonic())
                assert request.transport is not None
                request.transport.abort()
        return ws

    async def runs(request: web.Request) -> web.Response:
        if runs_status == 404:
            return web.json_response({"error": "Session not found"}, status=404)
        done = bool(dropped) and time.monotonic() - dropped[0] > 1.0
        summary = {"speakers": 2, "duration_seconds": 1.0, "word_count": 7}
        return web.json_response({"runs": [{"id": "R", "status": "completed" if done else "running",
                                            "summary": summary if done else None,
                                            "supersedes": "L"}]})

    app = web.Application()
    app.router.add_get("/ws/{sid}", socket)
    app.router.add_get("/api/sessions/{sid}/runs", runs)
    return app


@pytest.mark.parametrize("runs_status", [200, 404])
def test_a_connection_dropped_during_processing_is_followed_over_rest(runs_status: int) -> None:
    """The socket dropped (no close frame) after processing_started and progress: record()
    returned quietly with no result, and a panel or dashboard showed the session as done."""
    import asyncio

    from workbench.notebook.client import AsyncClient

    events: list[dict] = []

    async def main() -> object:
        runner, port = await _served(_dropping_stand_in(runs_status))
        aio = AsyncClient(f"http://127.0.0.1:{port}", timeout=30)
        try:
            return await aio.record(np.zeros(16000, np.float32), on_event=events.append)
        finally:
            await aio.close()
            await runner.cleanup()

    if runs_status == 404:
        with pytest.raises(ServerError, match="following run R failed: Session S was deleted"):
            asyncio.run(main())
        return
    report = asyncio.run(main())
    assert report.result == {"type": "processing_complete", "session_id": "S", "run_id": "R",  # type: ignore[attr-defined]
                             "speakers": 2, "duration_seconds": 1.0, "word_count": 7,
                             "supersedes": "L"}  # (the live run it replaces)
    assert events[-1] == report.result  # type: ignore[attr-defined]


def test_a_local_server_that_exits_at_start_says_why(server: LocalServer) -> None:
    """A second server on the same data exits at once: the error said only "exited with
    code 1; see server.log", a log the running server shares."""
    assert server.process is not None
    with pytest.raises(RuntimeError, match=rf"code 1: error: Another server \(pid "
                                           rf"{server.process.pid}\) is using the data"):
        LocalServer(server.data_dir, args=["--pipeline", "renditions"]).start()
    assert server.healthy()


def test_a_client_refuses_what_it_cannot_use(client: Client) -> None:
    """A URL without a scheme was sent as "ws0.0.1:8765/ws/new"; a resume of a session the
    server does not have made a new session without a word; a PCM sample rate of 0 was a
    ZeroDivisionError before the server could say what is wrong."""
    import threading

    def loops() -> int:
        return sum(t.name == "workbench-client" for t in threading.enumerate())

    running = loops()
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        Client("127.0.0.1:8765")
    assert loops() == running  # (a refused client left its loop's thread running)
    with Client(client.base_url, timeout=float("inf")) as patient:  # no bound: as before
        assert patient.health()["status"] == "ok"
    before = len(client.list_sessions())
    with pytest.raises(ServerError, match="No session no-such-session on the server") as info:
        client.record(np.zeros(1600, np.float32), session_id="no-such-session")
    assert info.value.status == 404 and len(client.list_sessions()) == before
    with pytest.raises(ServerError, match="sample_rate"):
        client.record([bytes(1000)], input_format="pcm_s16le", realtime=True,
                      options={"sample_rate": 0})


def test_a_server_that_never_answers_is_a_timeout_naming_it() -> None:
    """A server that takes the connection and says nothing: the client gave up after
    aiohttp's 300 s, whatever its own timeout, with a bare TimeoutError."""
    import asyncio
    import threading

    from workbench.notebook.local_server import free_port

    port = free_port()
    ready, done = threading.Event(), threading.Event()

    def mute_server() -> None:
        async def main() -> None:
            async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await reader.read(1 << 16)  # (and never answers)
                await asyncio.get_running_loop().run_in_executor(None, done.wait)
                writer.close()
            server = await asyncio.start_server(silent, "127.0.0.1", port)
            ready.set()
            async with server:
                await asyncio.get_running_loop().run_in_executor(None, done.wait)
        asyncio.run(main())

    thread = threading.Thread(target=mute_server, daemon=True)
    thread.start()
    assert ready.wait(10)
    mute = Client(f"http://127.0.0.1:{port}", timeout=1)
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}/api/health: no answer within 1 s"):
            mute.health()
        with pytest.raises(TimeoutError, match=f"ws://127.0.0.1:{port}/ws/new: the WebSocket did not open"):
            mute.record(np.zeros(1600, np.float32))
        assert time.monotonic() - t0 < 10
    finally:
        mute.close()
        done.set()
        thread.join(10)


# ----------------------------------------------------------------- found in a review (real server)

@pytest.mark.parametrize("session_id,away", [("new", 0.0), ("created", 0.0), ("new", 2.0)])
def test_a_connection_dropped_before_processing_started_is_followed(
        server: LocalServer, session_id: str, away: float) -> None:
    """The connection dropped right after recording_stopped: record(wait=True) returned a
    report without a result and without a word. It now finds the run `stop` queued (the
    session's new one) and follows it over REST, also through 503s meanwhile."""
    import asyncio

    from workbench.notebook.client import AsyncClient

    async def main() -> Any:
        runner, port = await cutting_proxy(server.url, "recording_stopped", away)
        aio = AsyncClient(f"http://127.0.0.1:{port}", timeout=60)
        try:
            sid = session_id
            if sid == "created":  # one run of it before: not the one to follow
                sid = (await aio.create_session())["id"]
                first = await AsyncClient(server.url).record(np.zeros(16000, np.float32),
                                                             session_id=sid)
                assert first.result["type"] == "processing_complete"
            return await aio.record(np.zeros(16000, np.float32), session_id=sid), sid
        finally:
            await aio.close()
            await runner.cleanup()

    report, sid = asyncio.run(main())
    runs = Client(server).runs(report.session_id)
    assert report.result is not None and report.result["type"] == "processing_complete"
    assert report.run_id == runs[-1]["id"] and runs[-1]["status"] == "completed"
    assert "processing_started" not in [m["type"] for m in report.messages]


def test_a_drop_after_stop_of_a_recording_that_did_not_decode_says_why(
        server: LocalServer) -> None:
    """Dropped after recording_stopped, nothing decoded: no run will come; the error says
    the session failed, and why."""
    import asyncio

    from workbench.notebook.client import AsyncClient

    async def main() -> Any:
        runner, port = await cutting_proxy(server.url, "recording_stopped")
        try:
            async with AsyncClient(f"http://127.0.0.1:{port}", timeout=30) as aio:
                return await aio.record(iter([b"not webm at all" * 100]), input_format="webm")
        finally:
            await runner.cleanup()

    with pytest.raises(ServerError, match=r"The connection closed during processing .*; "
                                          r"session \S+ is failed with no run to follow: .*webm"):
        asyncio.run(main())


def test_stop_event_ends_a_recording_whose_source_waits(client: Client) -> None:
    """A source waiting for its data held the recording: Stop (stop_event) was seen only
    when the next chunk came, and the server's idle timeout interrupted the session."""
    import threading

    stop, release = threading.Event(), threading.Event()

    def source():  # type: ignore[no-untyped-def]
        for _ in range(4):
            yield bytes(8000)
        release.wait(60)  # (a sound card that stopped delivering)
        yield bytes(8000)

    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    try:
        rec = client.record(source(), input_format="pcm_s16le", stop_event=stop)
    finally:
        release.set()
    assert time.monotonic() - t0 < 15
    assert rec.chunks_sent == 4 and rec.result is not None
    assert rec.result["type"] == "processing_complete"


def test_the_duration_limit_ends_the_sending(start_server) -> None:  # type: ignore[no-untyped-def]
    """After the server's 4005 the client went on sending the whole source: hundreds of
    'Recording not started' errors, and chunks_sent counted what the server never took."""
    srv = start_server("--max-duration", "2", "--live-max-speed", "0")
    with Client(srv, timeout=60) as c:
        # 480 chunks of 8000 bytes, at 20 times real time (6 s): sent as fast as the
        # socket took them, all 480 fitted in its buffers before a server short of CPU
        # (the suite on two workers) read the first 2 s
        rec = c.record(np.zeros(120 * 16000, np.float32), realtime=True, speed=20)
    assert [e["code"] for e in rec.errors][:1] == [4005]
    # the 4005 comes after 2 s of audio (0.1 s); 400 chunks would take 5 s
    assert rec.chunks_sent < 400, rec.chunks_sent
    assert rec.result is not None and rec.result["type"] == "processing_complete"


def test_closing_the_client_from_its_own_callback_is_an_error_at_once(
        server: LocalServer) -> None:
    """Client.close() from a callback waited 60 s for itself, then raised a bare
    TimeoutError."""
    c = Client(server)
    raised: list[BaseException] = []

    def closes(event: dict) -> None:
        if event["type"] == "recording_started":
            try:
                c.close()
            except RuntimeError as exc:
                raised.append(exc)

    t0 = time.monotonic()
    try:
        c.record(np.zeros(16000, np.float32), on_event=closes, wait=False)
    finally:
        c.close()
    assert time.monotonic() - t0 < 20
    assert raised and "cannot close its own Client" in str(raised[0])


def test_wait_live_warm_with_a_wrong_token_is_a_401(start_server) -> None:  # type: ignore[no-untyped-def]
    """With a wrong token /api/health says only 'ok', and wait_live_warm answered None
    ('live results are off') at once."""
    srv = start_server("--token", "right-token")
    with Client(srv, token="wrong", timeout=30) as c:
        with pytest.raises(ServerError) as info:
            c.wait_live_warm(5)
    assert info.value.status == 401


def test_a_server_that_takes_no_audio_is_a_timeout(start_server) -> None:  # type: ignore[no-untyped-def]
    """A server that stopped taking data (SIGSTOP here; a stalled network the same) held
    record() for ever: its sends waited for the socket's buffer with no bound."""
    import signal
    import threading

    srv = start_server()
    go_on = threading.Event()

    def endless():  # type: ignore[no-untyped-def]
        sent = 0
        while True:
            yield bytes(32000)
            sent += 1
            if sent == 20:
                srv.process.send_signal(signal.SIGSTOP)
                go_on.set()

    t0 = time.monotonic()
    try:
        with Client(srv, timeout=5) as c:
            with pytest.raises(TimeoutError, match="the server took no audio for 5 s"):
                c.record(endless(), input_format="pcm_s16le")
    finally:
        srv.process.send_signal(signal.SIGCONT)
    assert go_on.is_set() and time.monotonic() - t0 < 40


def test_a_recording_that_does_not_decode_is_a_server_error(client: Client) -> None:
    """The server answers the stop of bytes that do not decode with recording_stopped, then
    error 4008, and queues no run: record(wait=True) returned as if processing had
    ended, with no result."""
    messages: list[dict[str, Any]] = []
    with pytest.raises(ServerError, match="cannot be processed: .*The received bytes are kept") \
            as info:
        client.record([b"not a webm file at all " * 40], input_format="webm",
                      on_event=messages.append)
    assert info.value.code == 4008
    assert [m["type"] for m in messages][-2:] == ["recording_stopped", "error"]
    assert client.get_session(messages[0]["session_id"])["status"] == "failed"


def _failing_stand_in(gives_up: bool):  # type: ignore[no-untyped-def]
    """A stand-in for the server whose `stop` ends with an internal error instead of
    processing_started (queueing the run failed): it queues run R half a second later,
    which completes (REST), or it gives the session up (`interrupted`, no run)."""
    from aiohttp import web

    stopped: list[float] = []

    def runs() -> list[dict[str, Any]]:
        if gives_up or not stopped or time.monotonic() - stopped[0] < 0.5:
            return []
        return [{"id": "R", "kind": "refined", "status": "completed",
                 "summary": {"speakers": 1, "duration_seconds": 1.0, "word_count": 3}}]

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:  # (the session's event socket, too: until the client closes it)
            action = msg.json().get("action") if msg.type == web.WSMsgType.TEXT else None
            if action == "start":
                await ws.send_json({"type": "recording_started", "session_id": "S",
                                    "format": "wav", "part": 0, "resumed": False})
            elif action == "stop":
                stopped.append(time.monotonic())
                await ws.send_json({"type": "recording_stopped", "session_id": "S",
                                    "duration_seconds": 1.0})
                await ws.send_json({"type": "error", "code": 5000,
                                    "message": "Internal server error: OSError"})
        return ws

    async def session(request: web.Request) -> web.Response:
        status = "interrupted" if gives_up else "completed" if runs() else "processing"
        error = "Finishing the recording failed (OSError)" if gives_up else None
        return web.json_response({"id": "S", "status": status, "error": error, "runs": runs()})

    async def session_runs(request: web.Request) -> web.Response:
        return web.json_response({"runs": runs()})

    app = web.Application()
    app.router.add_get("/ws/{sid}", socket)
    app.router.add_get("/api/sessions/{sid}", session)
    app.router.add_get("/api/sessions/{sid}/runs", session_runs)
    return app


@pytest.mark.parametrize("gives_up", [False, True], ids=["queued-later", "given-up"])
def test_an_error_instead_of_processing_started_is_followed_over_rest(gives_up: bool) -> None:
    """An internal error after recording_stopped (the run could not be queued then; the
    server tries again, or gives the session up): record(wait=True) returned with no
    result. It now follows the session over REST to the run's end, or says why none came."""
    import asyncio

    from workbench.notebook.client import AsyncClient

    events: list[dict[str, Any]] = []

    async def main() -> Any:
        runner, port = await _served(_failing_stand_in(gives_up))
        try:
            async with AsyncClient(f"http://127.0.0.1:{port}", timeout=30) as aio:
                return await aio.record(np.zeros(16000, np.float32), on_event=events.append)
        finally:
            await runner.cleanup()

    if gives_up:
        with pytest.raises(ServerError, match=r"failed after the recording stopped \(Internal "
                                              r"server error: OSError\); session S is "
                                              r"interrupted with no run to follow: Finishing"):
            asyncio.run(main())
        return
    report = asyncio.run(main())
    assert report.result == {"type": "processing_complete", "session_id": "S", "run_id": "R",
                             "speakers": 1, "duration_seconds": 1.0, "word_count": 3}
    assert events[-1] == report.result


def test_a_closed_client_refuses_background_work(server: LocalServer) -> None:
    """submit() lacked the closed-client check of the other calls: after close() it raised
    the loop's "Event loop is closed" and left the coroutine never awaited; during close()
    its work went to a loop about to stop, and its future never ended."""
    import inspect

    closed = Client(server)
    closed.close()
    work = closed.aio.health()
    with pytest.raises(RuntimeError, match="this client is closed"):
        closed.submit(work)
    assert inspect.getcoroutinestate(work) == inspect.CORO_CLOSED
