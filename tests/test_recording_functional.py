"""The recording protocol end to end: a real server process and a real WebSocket client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
from pathlib import Path
from typing import Any, Optional

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from server.protocol import ErrorCode, Messages
from workbench.engine.audio import decode_file
from workbench.notebook.local_server import LocalServer

from .conftest import session_in

TIMEOUT = 30


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = TIMEOUT) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type}"
    return json.loads(msg.data)


async def recv_until(ws: aiohttp.ClientWebSocketResponse, *types: str,
                     timeout: float = TIMEOUT) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read messages until one of `types` arrives; returns it and everything before it."""
    seen: list[dict[str, Any]] = []
    while True:
        m = await recv(ws, timeout)
        if m["type"] in types:
            return m, seen
        seen.append(m)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def stream(ws: aiohttp.ClientWebSocketResponse, data: bytes, chunk: int = 4000,
                 binary: bool = False) -> int:
    n = 0
    for i in range(0, len(data), chunk):
        piece = data[i : i + chunk]
        if binary:
            await ws.send_bytes(piece)
        else:
            await ws.send_json({"action": "audio_chunk", "data": b64(piece)})
        n += 1
    return n


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.json()


def correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 1600) -> float:
    """Best normalised cross-correlation of two signals within +-max_lag samples."""
    from scipy.signal import correlate

    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    xc = correlate(a, b, mode="full", method="fft")
    mid = n - 1
    window = xc[mid - max_lag : mid + max_lag + 1]
    return float(window.max() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


async def record(server: LocalServer, data: bytes, *, start: Optional[dict[str, Any]] = None,
                 path_id: str = "new", binary: bool = False, chunk: int = 4000,
                 wait_processing: bool = True) -> list[dict[str, Any]]:
    """Record `data` as one session; returns every message the server sent."""
    msgs: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.ws_url}/ws/{path_id}") as ws:
        await ws.send_json({"action": "start", "format": "wav", **(start or {})})
        msgs.append(await recv(ws))
        assert msgs[-1]["type"] == "recording_started", msgs[-1]
        await stream(ws, data, chunk, binary)
        await ws.send_json({"action": "stop"})
        last, before = await recv_until(ws, "processing_started", "error")
        msgs += before + [last]
        if wait_processing and last["type"] == "processing_started":
            done, before = await recv_until(ws, "processing_complete", "processing_failed")
            msgs += before + [done]
    return msgs


def by_type(msgs: list[dict[str, Any]], t: str) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == t]


# ---------------------------------------------------------------------- the seed's flows


async def test_seed_complete_flow(server: LocalServer, speech_dir: Path,
                                  reference_audio: np.ndarray) -> None:
    """start -> chunks -> stop -> invalid action, as in the seed's manual test, with real audio."""
    data = (speech_dir / "speech.webm").read_bytes()
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{server.ws_url}/ws/test-session-123") as ws:
            await ws.send_json({"action": "start", "format": "wav"})
            started = await recv(ws)
            assert started["type"] == "recording_started"
            assert started["format"] == "wav"
            sid = started["session_id"]
            assert sid != "test-session-123" and len(sid) == 36  # fresh UUID, as in the seed log
            await stream(ws, data, 4000)
            await ws.send_json({"action": "stop"})
            stopped = await recv(ws)
            assert stopped["type"] == "recording_stopped"
            assert stopped["duration_seconds"] == pytest.approx(len(reference_audio) / 16000, abs=0.05)
            processing = await recv(ws)
            assert processing["type"] == "processing_started"
            assert isinstance(processing["message"], str) and processing["message"]
            done, _ = await recv_until(ws, "processing_complete", "processing_failed")
            assert done["type"] == "processing_complete"
            await ws.send_json({"action": "invalid_action"})
            err = await recv(ws)
            assert err == {"type": "error", "code": ErrorCode.UNKNOWN_ACTION,
                           "message": "Unknown action"}
    status, session = await get_json(f"{server.url}/api/sessions/{sid}")
    assert status == 200 and session["status"] == "completed"


async def test_seed_zeros_chunk_gives_clear_decode_error(server: LocalServer) -> None:
    """The seed sends 1 KB of zeros: a clear error (not 'Erro interno'), raw bytes kept."""
    msgs = await record(server, bytes(1024))
    err = by_type(msgs, "error")
    assert len(err) == 1 and err[0]["code"] == ErrorCode.UNDECODABLE_AUDIO
    assert "could not be decoded" in err[0]["message"]
    assert "Erro interno" not in err[0]["message"] and "Traceback" not in err[0]["message"]
    sid = msgs[0]["session_id"]
    status, session = await get_json(f"{server.url}/api/sessions/{sid}")
    assert session["status"] == "failed" and session["bytes_received"] == 1024
    # recording_stopped names the part (it did only when other parts decoded)
    assert by_type(msgs, "recording_stopped")[0]["undecoded_parts"] == [
        {"part": 0, "error": session["parts"][0]["error"]}] and session["parts"][0]["error"]
    raw = server.data_dir / "sessions" / sid / "part-000.raw"
    assert raw.read_bytes() == bytes(1024)


async def test_seed_format_validation(server: LocalServer) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.ws_url}/ws/fmt") as ws:
        await ws.send_json({"action": "start", "format": "ogg"})
        assert await recv(ws) == {"type": "error", "code": ErrorCode.INVALID_FORMAT,
                                  "message": "Invalid format. Use 'wav' or 'mp4'"}
        await ws.send_json({"action": "start", "format": "mp4"})
        started = await recv(ws)
        assert started["type"] == "recording_started" and started["format"] == "mp4"


# ---------------------------------------------------------------------- error scenarios


async def test_chunk_before_start_and_bad_encoding(server: LocalServer) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.ws_url}/ws/e") as ws:
        await ws.send_json({"action": "audio_chunk", "data": b64(b"abc")})
        assert await recv(ws) == {"type": "error", "code": ErrorCode.NOT_STARTED,
                                  "message": "Recording not started. Send 'start' action first"}
        await ws.send_bytes(b"\x00" * 10)
        assert (await recv(ws))["code"] == ErrorCode.NOT_STARTED
        await ws.send_json({"action": "stop"})
        assert (await recv(ws))["code"] == ErrorCode.NOT_STARTED
        await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
        assert (await recv(ws))["type"] == "recording_started"
        for bad in ("not base64 !!", 12345, None, "QUJ", "QU=D", ""):
            await ws.send_json({"action": "audio_chunk", "data": bad})
            assert await recv(ws) == {"type": "error", "code": ErrorCode.INVALID_ENCODING,
                                      "message": "Invalid audio data encoding"}
        await ws.send_str("{not json")
        assert (await recv(ws))["code"] == ErrorCode.INVALID_MESSAGE
        await ws.send_str("[1, 2]")
        assert (await recv(ws))["code"] == ErrorCode.INVALID_MESSAGE
        await ws.send_json({"action": "start"})
        assert (await recv(ws))["code"] == ErrorCode.ALREADY_RECORDING
        # A control message sent as a binary frame: refused, not recorded as audio (its
        # odd length shifted every later sample) and not obeyed
        await ws.send_bytes(b' {"action": "stop"}\n')
        assert await recv(ws) == {"type": "error", "code": ErrorCode.INVALID_MESSAGE,
                                  "message": Messages.ACTION_IN_BINARY}
        # The recording went on through all of that.
        await ws.send_json({"action": "audio_chunk", "data": b64(b"\x01\x00" * 1600)})
        await ws.send_bytes(b"{" + bytes(3199))  # (audio that starts with a brace is audio)
        await ws.send_json({"action": "stop"})
        stopped = await recv(ws)
        assert stopped["type"] == "recording_stopped"
        assert stopped["duration_seconds"] == pytest.approx(0.2, abs=0.001)
        # (0.2 s of near silence can be processed before the first look)
        session = await session_in(server, stopped["session_id"], ("processing", "completed"))
        assert session["bytes_received"] == 6400


async def test_internal_error_is_short_and_safe(server: LocalServer) -> None:
    """A failure inside the server -> 'Erro interno: ...' without paths; the server goes on."""
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.url}/api/sessions", json={}) as r:
            sid = (await r.json())["id"]
        # Sabotage the session's directory so opening the part file fails.
        directory = server.data_dir / "sessions" / sid
        for child in directory.iterdir():
            child.rmdir()
        directory.rmdir()
        directory.write_bytes(b"not a directory")
        async with s.ws_connect(f"{server.ws_url}/ws/{sid}") as ws:
            await ws.send_json({"action": "start", "format": "wav"})
            err = await recv(ws)
            assert err["type"] == "error" and err["code"] == ErrorCode.INTERNAL
            assert err["message"].startswith("Erro interno: ")
            assert str(server.data_dir) not in err["message"] and "Traceback" not in err["message"]
            assert "/" not in err["message"].split(":", 1)[1].replace("<path>", "")
        async with s.get(f"{server.url}/api/health") as r:
            assert r.status == 200


async def test_limits(start_server, speech_dir: Path) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--max-chunk-bytes", "8192", "--max-total-bytes", "65536")
    srv_short = start_server("--max-duration", "1.5", data_dir=srv.data_dir.parent / "short")
    pcm = (speech_dir / "speech.pcm").read_bytes()  # 16 kHz s16le: 32000 bytes per second
    async with aiohttp.ClientSession() as s:
        # Over-size chunk: refused on its own; the recording goes on.
        async with s.ws_connect(f"{srv.ws_url}/ws/a") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            await recv(ws)
            await ws.send_json({"action": "audio_chunk", "data": b64(pcm[:8000])})
            await ws.send_bytes(pcm[8000:8000 + 8194])
            assert await recv(ws) == {"type": "error", "code": ErrorCode.CHUNK_TOO_LARGE,
                                      "message": "Chunk size exceeds limit (8KB)"}
            await ws.send_json({"action": "audio_chunk", "data": b64(pcm[8000:16000])})
            await ws.send_json({"action": "stop"})
            stopped = await recv(ws)
            assert stopped["type"] == "recording_stopped"
            assert stopped["duration_seconds"] == pytest.approx(0.5, abs=0.001)

        # Total size: the chunk that would cross is refused, the recording ends with all
        # earlier chunks kept, and processing starts.
        async with s.ws_connect(f"{srv.ws_url}/ws/b") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            sid = (await recv(ws))["session_id"]
            for i in range(0, 64000, 8000):  # 8 chunks = 64000 bytes accepted
                await ws.send_bytes(pcm[i : i + 8000])
            await ws.send_bytes(pcm[64000:72000])  # would make 72000 > 65536
            err = await recv(ws)
            assert err == {"type": "error", "code": ErrorCode.TOTAL_SIZE_EXCEEDED,
                           "message": "Total data size exceeds limit (64KB)"}
            stopped = await recv(ws)
            assert stopped["type"] == "recording_stopped"
            assert stopped["duration_seconds"] == pytest.approx(2.0, abs=0.001)
            assert (await recv(ws))["type"] == "processing_started"
        wav = decode_file(srv.data_dir / "sessions" / sid / "audio.wav")
        expected = np.frombuffer(pcm[:64000], "<i2").astype(np.float32) / 32768
        np.testing.assert_allclose(wav, expected, atol=1e-4)

        # Duration: ends the recording gracefully at the limit, keeping what was accepted.
        async with s.ws_connect(f"{srv_short.ws_url}/ws/c") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            short_sid = (await recv(ws))["session_id"]
            sent = 0
            for i in range(0, 8000 * 8, 8000):  # 0.25 s per chunk
                await ws.send_bytes(pcm[i : i + 8000])
                sent += 1
            err, _ = await recv_until(ws, "error")
            assert err["code"] == ErrorCode.DURATION_EXCEEDED
            assert err["message"] == "Recording duration exceeds limit (1.5 seconds)"
            stopped, _ = await recv_until(ws, "recording_stopped")
            assert stopped["duration_seconds"] == pytest.approx(1.5, abs=0.001)
            # The two chunks sent after the limit: not recording any more.
            assert (await recv_until(ws, "error"))[0]["code"] == ErrorCode.NOT_STARTED

        # A session at the duration limit takes no resume: its audio would be cut away
        # unheard, and every stop would process the same audio again.
        await session_in(srv_short, short_sid, "completed")
        async with s.ws_connect(f"{srv_short.ws_url}/ws/{short_sid}") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            assert await recv(ws) == {"type": "error", "code": ErrorCode.DURATION_EXCEEDED,
                                      "message": "Recording duration exceeds limit (1.5 seconds)"}
        async with s.get(f"{srv_short.url}/api/sessions/{short_sid}") as r:
            session = await r.json()
        assert session["status"] == "completed" and len(session["parts"]) == 1
        assert len(session["runs"]) == 1


async def test_the_duration_limit_exactly_and_a_wav_header_in_pieces(
        start_server, speech_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The limit is "<= max": exactly 2 s of a 2 s limit records and stops as usual
    (before: 4005 and the client's own stop refused), a chunk beyond it ends the
    recording. A declared WAV whose header comes in pieces under 12 bytes is still
    measured while it arrives (before: the limit fell back to wall-clock time, so 5 s
    sent at once got no 4005 until after stop)."""
    import struct

    srv = start_server("--max-duration", "2")
    pcm = (speech_dir / "speech.pcm").read_bytes()[:32000 * 5]
    async with aiohttp.ClientSession() as s:
        for extra, name in ((0, "exact"), (1, "beyond")):
            async with s.ws_connect(f"{srv.ws_url}/ws/{name}") as ws:
                await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
                await recv(ws)
                for i in range(0, 8000 * (8 + extra), 8000):
                    await ws.send_bytes(pcm[i:i + 8000])
                await ws.send_json({"action": "stop"})
                first, _ = await recv_until(ws, "error", "recording_stopped")
                if extra:
                    assert first["code"] == ErrorCode.DURATION_EXCEEDED
                    first, _ = await recv_until(ws, "recording_stopped")
                else:
                    assert first["type"] == "recording_stopped", first
                    assert first["truncated"] is False
                assert first["duration_seconds"] == pytest.approx(2.0, abs=0.001)
        header = (b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
                  + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
                  + b"data" + struct.pack("<I", len(pcm)))
        async with s.ws_connect(f"{srv.ws_url}/ws/pieces") as ws:
            await ws.send_json({"action": "start", "input_format": "wav"})
            await recv(ws)
            await ws.send_bytes(header[:8])
            await ws.send_bytes(header[8:])
            for i in range(0, len(pcm), 8000):
                await ws.send_bytes(pcm[i:i + 8000])
            err, _ = await recv_until(ws, "error", "recording_stopped")
            assert err["type"] == "error" and err["code"] == ErrorCode.DURATION_EXCEEDED, err
            stopped, _ = await recv_until(ws, "recording_stopped")
            assert stopped["duration_seconds"] == pytest.approx(2.0, abs=0.001)


def test_a_recording_session_is_never_deleted(tmp_path: Path) -> None:
    """The store deletes a session only when it is not recording, in one statement: a
    resume that set the status between DELETE's check and the delete kept its session
    (before: deleted under it, the resume's part failed with a foreign-key 5000)."""
    from server.sessions import SessionStore

    store = SessionStore(tmp_path)
    session = store.create_session(None, "wav", {})
    store.set_status(session.id, "recording")
    assert store.delete_session(session.id) is False
    assert store.get_session(session.id) is not None
    store.set_status(session.id, "interrupted")
    assert store.delete_session(session.id) is True
    assert store.get_session(session.id) is None


def test_default_limit_messages_match_the_seed() -> None:
    from server.limits import Limits
    from server.protocol import Messages

    lim = Limits()
    assert Messages.chunk_too_large(lim) == "Chunk size exceeds limit (1MB)"
    assert Messages.total_size_exceeded(lim) == "Total data size exceeds limit (500MB)"
    assert Messages.duration_exceeded(lim) == "Recording duration exceeds limit (1 hour)"
    assert Messages.internal("x") == "Erro interno: x"


async def test_progress_every_100_chunks(server: LocalServer) -> None:
    chunk = b"\x00\x01" * 160  # 10 ms of PCM
    msgs = await record(server, chunk * 250, start={"input_format": "pcm_s16le"},
                        chunk=len(chunk), wait_processing=False)
    progress = by_type(msgs, "progress")
    assert [p["chunks_received"] for p in progress] == [100, 200]
    assert progress[1]["total_size_mb"] == round(200 * 320 / 1048576, 2)
    assert by_type(msgs, "recording_stopped")[0]["duration_seconds"] == pytest.approx(2.5)


# ---------------------------------------------------------------------- input containers


@pytest.mark.parametrize("name,start,binary", [
    ("speech.wav", {}, False),
    ("speech.pcm", {"input_format": "pcm_s16le", "sample_rate": 16000, "channels": 1}, True),
    ("speech.webm", {}, True),
    ("speech.ogg", {}, False),
    ("speech.m4a", {}, True),
    ("speech.webm", {"input_format": "webm"}, False),
    ("speech.mp3", {}, True),
    ("speech.mp3", {"input_format": "mp3"}, False),
    ("speech.flac", {}, False),
    ("speech.flac", {"input_format": "flac"}, True),
])
async def test_each_input_container(server: LocalServer, speech_dir: Path,
                                    reference_audio: np.ndarray, name: str,
                                    start: dict[str, Any], binary: bool) -> None:
    data = (speech_dir / name).read_bytes()
    msgs = await record(server, data, start=start, binary=binary, chunk=3000,
                        wait_processing=False)
    stopped = by_type(msgs, "recording_stopped")[0]
    sid = msgs[0]["session_id"]
    wav_path = server.data_dir / "sessions" / sid / "audio.wav"
    info = sf.info(wav_path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    audio = decode_file(wav_path)
    ref_seconds = len(reference_audio) / 16000
    assert abs(len(audio) / 16000 - ref_seconds) <= 0.05
    assert stopped["duration_seconds"] == pytest.approx(len(audio) / 16000, abs=0.002)
    lossless = name.endswith((".wav", ".pcm", ".flac"))
    assert correlation(audio, reference_audio) > (0.99 if lossless else 0.9)
    raw = b"".join(p.read_bytes() for p in sorted(wav_path.parent.glob("part-*.raw")))
    assert raw == data  # every byte received is on disk as sent


# ---------------------------------------------------------------------- sessions


async def test_disconnect_interrupts_and_start_resumes(server: LocalServer, speech_dir: Path) -> None:
    pcm = (speech_dir / "speech.pcm").read_bytes()
    half = 32000 * 2  # 2 s
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{server.ws_url}/ws/drop") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            sid = (await recv(ws))["session_id"]
            await stream(ws, pcm[:half], 3200, binary=True)
            await ws.send_json({"action": "nop"})  # round trip: all chunks are handled
            await recv(ws)
        # Connection dropped while recording.
        session = await session_in(server, sid, "interrupted")
        assert session["duration_seconds"] == pytest.approx(2.0, abs=0.001)
        assert session["files"]["wav"].endswith("format=wav")
        # A later start on the same id appends.
        async with s.ws_connect(f"{server.ws_url}/ws/{sid}") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            started = await recv(ws)
            assert started["session_id"] == sid and started["resumed"] is True
            await stream(ws, pcm[half:], 3200, binary=True)
            await ws.send_json({"action": "stop"})
            stopped, _ = await recv_until(ws, "recording_stopped")
            assert stopped["duration_seconds"] == pytest.approx(len(pcm) / 32000, abs=0.001)
            await recv_until(ws, "processing_complete")
        async with s.get(f"{server.url}/api/sessions/{sid}/audio?format=wav") as r:
            body = await r.read()
    audio, sr = sf.read(io.BytesIO(body), dtype="int16")
    assert sr == 16000
    np.testing.assert_array_equal(audio, np.frombuffer(pcm, "<i2"))


async def test_a_part_that_does_not_decode_is_left_out_and_named(server: LocalServer,
                                                                 speech_dir: Path) -> None:
    """A resumed connection that dropped after bytes that are no audio (here 100 zero
    bytes: no container) does not poison its session: the next stop decodes the other
    parts into audio.wav, the session completes, and the bad part's `error` says why
    (its bytes stay on disk). Before, every later stop failed with 4008, the duration
    went to 0 and the old audio.wav stayed."""
    pcm = (speech_dir / "speech.pcm").read_bytes()
    first, last = pcm[:32000 * 2], pcm[32000 * 2:32000 * 5]
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{server.ws_url}/ws/poison") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            sid = (await recv(ws))["session_id"]
            await stream(ws, first, 3200, binary=True)
            await ws.send_json({"action": "stop"})
            await recv_until(ws, "processing_complete")
        async with s.ws_connect(f"{server.ws_url}/ws/{sid}") as ws:
            await ws.send_json({"action": "start"})  # the container is found from the bytes
            assert (await recv(ws))["resumed"] is True
            await ws.send_bytes(bytes(100))
            await ws.send_json({"action": "nop"})
            await recv(ws)
        session = await session_in(server, sid, "interrupted")
        assert session["duration_seconds"] == pytest.approx(2.0, abs=0.001)
        async with s.ws_connect(f"{server.ws_url}/ws/{sid}") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            await recv(ws)
            await stream(ws, last, 3200, binary=True)
            await ws.send_json({"action": "stop"})
            stopped, _ = await recv_until(ws, "recording_stopped")
            assert stopped["duration_seconds"] == pytest.approx(5.0, abs=0.001)
            # the client hears of the part left out (before: only the REST API said so)
            assert [u["part"] for u in stopped["undecoded_parts"]] == [1]
            assert "unrecognised container" in stopped["undecoded_parts"][0]["error"]
            done, _ = await recv_until(ws, "processing_complete", "processing_failed", "error")
            assert done["type"] == "processing_complete", done
        status, session = await get_json(f"{server.url}/api/sessions/{sid}")
        assert session["status"] == "completed"
        assert [p["error"] is None for p in session["parts"]] == [True, False, True]
        assert "unrecognised container" in session["parts"][1]["error"]
        assert session["parts"][1]["bytes"] == 100
        async with s.get(f"{server.url}/api/sessions/{sid}/audio?format=wav") as r:
            body = await r.read()
    audio, _ = sf.read(io.BytesIO(body), dtype="int16")
    np.testing.assert_array_equal(audio, np.frombuffer(first + last, "<i2"))


async def test_second_connection_to_a_recording_session_is_busy(
        server: LocalServer, speech_dir: Path) -> None:
    """While one connection records a session, a `start` on it from another gets 4011;
    the first recording is unaffected, and once it is stopped the session is free again."""
    pcm = (speech_dir / "speech.pcm").read_bytes()
    start = {"action": "start", "input_format": "pcm_s16le"}
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{server.ws_url}/ws/busy") as first:
            await first.send_json(start)
            sid = (await recv(first))["session_id"]
            await stream(first, pcm[:32000], 3200, binary=True)
            async with s.ws_connect(f"{server.ws_url}/ws/{sid}") as second:
                await second.send_json(start)
                refused = await recv(second)
                assert refused["type"] == "error" and refused["code"] == ErrorCode.SESSION_BUSY
                assert refused["code"] == 4011 and "recording" in refused["message"]
                await second.send_bytes(pcm[32000:64000])  # not recording on this connection
                assert (await recv(second))["code"] == ErrorCode.NOT_STARTED
            await stream(first, pcm[32000:], 3200, binary=True)
            await first.send_json({"action": "stop"})
            stopped, _ = await recv_until(first, "recording_stopped")
            assert stopped["duration_seconds"] == pytest.approx(len(pcm) / 32000, abs=0.001)
            await recv_until(first, "processing_complete")
        session_dir = server.data_dir / "sessions" / sid
        assert [p.name for p in sorted(session_dir.glob("part-*.raw"))] == ["part-000.raw"]
        assert (session_dir / "part-000.raw").read_bytes() == pcm
        async with s.ws_connect(f"{server.ws_url}/ws/{sid}") as again:
            await again.send_json(start)
            resumed = await recv(again)
            assert resumed["type"] == "recording_started" and resumed["session_id"] == sid


async def test_delete_of_a_recording_session_is_refused(server: LocalServer,
                                                        speech_dir: Path) -> None:
    """DELETE while recording answers 409 and keeps everything; after `stop` it deletes."""
    pcm = (speech_dir / "speech.pcm").read_bytes()
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{server.ws_url}/ws/del") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            sid = (await recv(ws))["session_id"]
            await stream(ws, pcm[:32000], 3200, binary=True)
            async with s.delete(f"{server.url}/api/sessions/{sid}") as r:
                assert r.status == 409
                assert (await r.json()) == {"error": "Session is recording; stop it first"}
            await stream(ws, pcm[32000:], 3200, binary=True)
            await ws.send_json({"action": "stop"})
            await recv_until(ws, "processing_complete")
        session_dir = server.data_dir / "sessions" / sid
        assert (session_dir / "part-000.raw").read_bytes() == pcm
        status, session = await get_json(f"{server.url}/api/sessions/{sid}")
        assert session["status"] == "completed"
        assert session["duration_seconds"] == pytest.approx(len(pcm) / 32000, abs=0.001)
        async with s.delete(f"{server.url}/api/sessions/{sid}") as r:
            assert r.status == 204
    assert not session_dir.exists()


async def test_precreated_session_is_used(server: LocalServer, speech_dir: Path) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.url}/api/sessions", json={"format": "mp4"}) as r:
            assert r.status == 201
            created = await r.json()
    assert created["status"] == "idle"
    for key in ("id", "status", "created_at", "format", "duration_seconds", "files", "runs"):
        assert key in created
    msgs = await record(server, (speech_dir / "speech.ogg").read_bytes(), path_id=created["id"],
                        start={"format": "mp4"})
    assert msgs[0]["session_id"] == created["id"]
    assert msgs[-1]["type"] == "processing_complete"
    # a start that names no format keeps the session's (it reset an MP4 session to WAV)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.url}/api/sessions", json={"format": "mp4"}) as r:
            sid = (await r.json())["id"]
        async with s.ws_connect(f"{server.ws_url}/ws/{sid}") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            started = await recv(ws)
            assert started["format"] == "mp4", started
            await ws.send_json({"action": "stop"})
            await recv_until(ws, "recording_stopped")
        async with s.get(f"{server.url}/api/sessions/{sid}") as r:
            assert (await r.json())["format"] == "mp4"


async def test_rest_api_and_downloads(server: LocalServer, speech_dir: Path) -> None:
    msgs = await record(server, (speech_dir / "speech.webm").read_bytes(), start={"format": "mp4"})
    sid = msgs[0]["session_id"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{server.url}/api/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with s.get(f"{server.url}/api/sessions") as r:
            listed = (await r.json())["sessions"]
            assert sid in [x["id"] for x in listed]
        async with s.get(f"{server.url}/api/sessions/{sid}") as r:
            session = await r.json()
        assert session["status"] == "completed" and len(session["runs"]) == 1
        assert set(session["files"]) == {"wav", "mp4"}
        async with s.get(f"{server.url}/api/sessions/{sid}/audio?format=wav") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
            wav = await r.read()
        async with s.get(f"{server.url}/api/sessions/{sid}/audio?format=mp4") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "audio/mp4"
            mp4 = await r.read()
        data, sr = sf.read(io.BytesIO(wav))
        assert sr == 16000 and abs(len(data) / sr - msgs[1]["duration_seconds"]) < 0.01
        (tmp := speech_dir / f"dl-{sid}.mp4").write_bytes(mp4)
        import av

        with av.open(str(tmp)) as c:
            assert c.streams.audio[0].codec_context.name == "aac"
        assert abs(len(decode_file(tmp)) / 16000 - len(data) / sr) < 0.1
        # Errors are JSON with 4xx statuses.
        for url, code in [(f"/api/sessions/{'0' * 8}", 404),
                          (f"/api/sessions/{sid}/audio?format=flac", 400),
                          (f"/api/sessions/{sid}/transcript?format=doc", 400),
                          (f"/api/sessions/{sid}/runs/nope", 404)]:
            async with s.get(server.url + url) as r:
                assert r.status == code and "error" in await r.json()
        async with s.post(f"{server.url}/api/sessions", data=b"[1]") as r:
            assert r.status == 400 and "error" in await r.json()
        async with s.post(f"{server.url}/api/sessions/{sid}/runs", json={"pipeline": "x"}) as r:
            assert r.status == 400 and "pipeline" in (await r.json())["error"]
        # A renditions-only server never runs the full pipeline, whatever a run asks.
        async with s.post(f"{server.url}/api/sessions/{sid}/runs", json={"pipeline": "full"}) as r:
            assert r.status == 202
            asked = await r.json()
        for _ in range(100):
            async with s.get(f"{server.url}/api/sessions/{sid}/runs/{asked['id']}") as r:
                run = await r.json()
            if run["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.1)
        assert run["status"] == "completed" and "word_count" not in run["summary"]
        async with s.delete(f"{server.url}/api/sessions/{sid}") as r:
            assert r.status == 204
        async with s.get(f"{server.url}/api/sessions/{sid}") as r:
            assert r.status == 404
    assert not (server.data_dir / "sessions" / sid).exists()


def raw_http(port: int, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as written (no client-side normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize("target", [
    "/api/sessions/../workbench.sqlite3/audio",
    "/api/sessions/..%2Fworkbench.sqlite3/audio",
    "/api/sessions/%2e%2e%2f%2e%2e%2fetc%2fpasswd/audio?format=wav",
    "/api/sessions/..%252f..%252fetc%252fpasswd/audio",
    "/api/sessions/....//....//etc/passwd/audio",
    "/static/../server/app.py",
    "/static/..%2f..%2fworkbench.sqlite3",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/ws/..%2f..%2fetc",
])
def test_traversal_is_refused(server: LocalServer, target: str) -> None:
    status, body = raw_http(server.port, target)
    assert status in (400, 403, 404), (target, status)
    assert b"SQLite format" not in body and b"root:" not in body and b"import" not in body


async def test_sessions_and_files_survive_restart(start_server, speech_dir: Path) -> None:  # type: ignore[no-untyped-def]
    srv = start_server()
    msgs = await record(srv, (speech_dir / "speech.webm").read_bytes(), start={"format": "mp4"})
    sid = msgs[0]["session_id"]
    _, before = await get_json(f"{srv.url}/api/sessions/{sid}")
    assert srv.stop() == 0
    srv2 = start_server(data_dir=srv.data_dir)
    status, after = await get_json(f"{srv2.url}/api/sessions/{sid}")
    assert status == 200
    assert after["status"] == before["status"] == "completed"
    assert after["runs"] == before["runs"] and after["files"] == before["files"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{srv2.url}/api/sessions/{sid}/audio?format=mp4") as r:
            assert r.status == 200 and len(await r.read()) > 1000


async def test_crash_while_recording_keeps_audio(start_server, speech_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL mid-recording: after restart the session is interrupted with what was confirmed."""
    srv = start_server("--progress-every", "10")
    pcm = (speech_dir / "speech.pcm").read_bytes()
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/crash") as ws:
        await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
        sid = (await recv(ws))["session_id"]
        await stream(ws, pcm[: 3200 * 25], 3200, binary=True)
        confirmed, _ = await recv_until(ws, "progress")
        confirmed, _ = await recv_until(ws, "progress")
        assert confirmed["chunks_received"] == 20
        srv.kill()
    srv2 = start_server(data_dir=srv.data_dir)
    _, session = await get_json(f"{srv2.url}/api/sessions/{sid}")
    assert session["status"] == "interrupted"
    assert session["duration_seconds"] >= 20 * 0.1 - 1e-6
    audio = decode_file(srv2.data_dir / "sessions" / sid / "audio.wav")
    n = len(audio)
    np.testing.assert_allclose(audio, np.frombuffer(pcm[: n * 2], "<i2") / 32768, atol=1e-4)


async def test_queued_and_running_runs_resume_after_restart(start_server, speech_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from server.sessions import SessionStore

    srv = start_server()
    msgs = await record(srv, (speech_dir / "speech.ogg").read_bytes(), start={"format": "mp4"})
    sid = msgs[0]["session_id"]
    srv.stop()
    # As if the server died with one run mid-way and one still queued.
    store = SessionStore(srv.data_dir)
    (srv.data_dir / "sessions" / sid / "audio.mp4").unlink()
    running = store.create_run(sid, {})
    store.update_run(running.id, status="running", stage="renditions")
    queued = store.create_run(sid, {})
    store.set_status(sid, "processing")
    store.close()
    srv2 = start_server(data_dir=srv.data_dir)
    for _ in range(100):
        _, session = await get_json(f"{srv2.url}/api/sessions/{sid}")
        states = {r["id"]: r["status"] for r in session["runs"]}
        if states[running.id] == states[queued.id] == "completed":
            break
        await asyncio.sleep(0.2)
    assert states[running.id] == states[queued.id] == "completed"
    assert session["status"] == "completed"
    assert (srv2.data_dir / "sessions" / sid / "audio.mp4").exists()


async def test_a_dead_worker_process_is_replaced(start_server) -> None:  # type: ignore[no-untyped-def]
    """A worker killed between runs is spawned again (off the event loop) and serves the next."""
    import os
    import signal

    import psutil

    srv = start_server()
    pcm = b"\x01\x00" * 16000
    first = await record(srv, pcm, start={"input_format": "pcm_s16le"}, binary=True)
    assert first[-1]["type"] == "processing_complete", first[-1]
    server = psutil.Process(srv.process.pid)

    def workers() -> list[psutil.Process]:  # not multiprocessing's resource tracker
        found = []
        for p in server.children():
            try:
                if "spawn_main" in " ".join(p.cmdline()):
                    found.append(p)
            except psutil.Error:  # a zombie: killed, not yet reaped
                pass
        return found

    (worker,) = workers()
    os.kill(worker.pid, signal.SIGKILL)
    for _ in range(100):  # the dispatcher looks at its workers every 0.5 s
        spawned = [p for p in workers() if p.pid != worker.pid]
        if spawned:
            break
        await asyncio.sleep(0.1)
    assert spawned, "no new worker process"
    second = await record(srv, pcm, start={"input_format": "pcm_s16le"}, binary=True)
    assert second[-1]["type"] == "processing_complete", second[-1]
    assert second[-1]["duration_seconds"] == pytest.approx(1.0)


async def test_mp4_rendition_is_shared_and_follows_a_resumed_recording(
        server: LocalServer, tmp_path: Path) -> None:
    """Concurrent MP4 requests get the same file (one encode); after the session is
    resumed and stopped again, the MP4 has the longer audio, never the stale one."""
    tone = (np.sin(np.arange(32000) * 2 * np.pi * 440 / 16000) * 8000).astype("<i2").tobytes()
    start = {"input_format": "pcm_s16le"}
    msgs = await record(server, tone, start=start)
    sid = msgs[0]["session_id"]
    url = f"{server.url}/api/sessions/{sid}/audio?format=mp4"

    async def fetch() -> bytes:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "audio/mp4"
            return await r.read()

    def seconds(data: bytes) -> float:
        (tmp_path / "a.mp4").write_bytes(data)
        return len(decode_file(tmp_path / "a.mp4")) / 16000

    first = await asyncio.gather(*(fetch() for _ in range(3)))
    assert first[0] == first[1] == first[2]
    assert abs(seconds(first[0]) - 2.0) < 0.1
    await record(server, tone + tone, start=start, path_id=sid)
    assert abs(seconds(await fetch()) - 6.0) < 0.1


def test_parts_that_all_fail_keep_their_own_reasons_and_the_old_audio(tmp_path: Path) -> None:
    """Finalising a session whose parts all fail, each for its own reason, raises the first
    reason, stores each part's, and leaves the audio.wav of an earlier stop untouched."""
    from server.finalise import finalise_audio
    from server.sessions import SessionStore
    from workbench.engine.audio import AudioDecodeError, InputFormat

    store = SessionStore(tmp_path)
    try:
        session = store.create_session(None, "wav", {})
        for fmt, data in ((InputFormat("webm"), b"OggS" + bytes(60)),  # not what it declares
                          (InputFormat(), bytes(100))):  # no container at all
            part = store.add_part(session.id, fmt)
            (store.session_dir(session.id) / part.filename).write_bytes(data)
        wav = store.audio_path(session.id)
        wav.write_bytes(b"earlier audio")
        with pytest.raises(AudioDecodeError, match="the bytes are not webm"):
            finalise_audio(store, store.get_session(session.id))
        errors = [p.error for p in store.get_session(session.id).parts]
        assert "the bytes are not webm" in errors[0] and "unrecognised container" in errors[1]
        assert wav.read_bytes() == b"earlier audio"
        # a part that decodes clears the verdict on the others' audio, not their reasons
        good = store.add_part(session.id, InputFormat("pcm_s16le", 16000, 1))
        (store.session_dir(session.id) / good.filename).write_bytes(b"\x01\x00" * 16000)
        decoded = finalise_audio(store, store.get_session(session.id))
        assert decoded.frames == 16000 and wav.read_bytes()[44:] == b"\x01\x00" * 16000
        assert [p.error is None for p in store.get_session(session.id).parts] == [False, False, True]
    finally:
        store.close()


async def test_an_empty_recording_has_no_mp4(server: LocalServer) -> None:
    """`start` then `stop` at once: the WAV is an empty file of the right kind, the MP4
    a clear 422 (it was served as a 0-byte file, linked from processing_complete)."""
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{server.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            sid = (await recv(ws))["session_id"]
            await ws.send_json({"action": "stop"})
            stopped, _ = await recv_until(ws, "recording_stopped")
            assert stopped["duration_seconds"] == 0
        await session_in(server, sid, "completed")
        async with s.get(f"{server.url}/api/sessions/{sid}/audio?format=mp4") as r:
            assert r.status == 422 and "no audio" in await r.text()
        async with s.get(f"{server.url}/api/sessions/{sid}/audio?format=wav") as r:
            assert r.status == 200 and (await r.read())[:4] == b"RIFF"
        # an MP4 session's run makes no MP4 of nothing (it left a 0-byte audio.mp4)
        async with s.ws_connect(f"{server.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "format": "mp4", "input_format": "pcm_s16le"})
            sid = (await recv(ws))["session_id"]
            await ws.send_json({"action": "stop"})
            done, _ = await recv_until(ws, "processing_complete", "processing_failed")
            assert done["type"] == "processing_complete", done
            assert list(done["audio"]) == ["wav"]  # (it linked the MP4 that answers 422)
        assert not (server.data_dir / "sessions" / sid / "audio.mp4").exists()
        async with s.get(f"{server.url}/api/sessions/{sid}/audio?format=mp4") as r:
            assert r.status == 422
