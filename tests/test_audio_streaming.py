"""Bounded `stop`: recordings are decoded into ``audio.wav`` (and encoded as MP4) block by
block, in memory independent of their length, off the event loop, and the decoded audio
obeys the duration limit.

The block-streamed results are compared with the whole-file decode (``decode_file``,
``write_wav``) and a whole-array AAC encode, sample for sample and byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from server.recovery import recover
from server.protocol import ErrorCode
from server.sessions import SessionStore
from workbench.engine.audio import (
    SAMPLE_RATE,
    InputFormat,
    decode_file,
    decode_parts,
    decode_to_wav,
    iter_decode,
    to_int16,
    write_wav,
)
from workbench.engine.rendition import encode_mp4

from .conftest import have

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(not have("ffmpeg"), reason="needs the ffmpeg command")


def _ffmpeg(src: Path, dst: Path, rate: int, channels: int, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(rate),
                    "-ac", str(channels), "-i", str(src), *args, str(dst)], check=True)
    return dst


# name -> (file, declared input format, ffmpeg output options)
CASES: dict[str, tuple[str, InputFormat, tuple[str, ...]]] = {
    "pcm_16k": ("a.pcm", InputFormat("pcm_s16le", 16000, 1), ("-ar", "16000", "-ac", "1", "-f", "s16le")),
    "pcm_48k_stereo": ("b.pcm", InputFormat("pcm_s16le", 48000, 2), ("-f", "s16le")),
    "wav_44k_stereo": ("c.wav", InputFormat("wav"), ("-ar", "44100", "-c:a", "pcm_s16le")),
    "wav_8k_u8": ("d.wav", InputFormat(), ("-ar", "8000", "-ac", "1", "-c:a", "pcm_u8")),
    "wav_48k_s24": ("e.wav", InputFormat(), ("-c:a", "pcm_s24le")),
    "wav_22k_float": ("f.wav", InputFormat(), ("-ar", "22050", "-ac", "1", "-c:a", "pcm_f32le")),
    "webm_opus": ("g.webm", InputFormat("webm"), ("-c:a", "libopus", "-b:a", "48k")),
    "ogg_opus": ("h.ogg", InputFormat(), ("-c:a", "libopus", "-b:a", "32k")),
    "mp3": ("i.mp3", InputFormat("mp3"), ("-c:a", "libmp3lame", "-b:a", "96k")),
    "flac": ("j.flac", InputFormat("flac"), ("-ar", "44100", "-c:a", "flac")),
    "mp4_aac": ("k.m4a", InputFormat("mp4"), ("-c:a", "aac", "-b:a", "96k")),
    # raw ADTS AAC: the protocol's input_format "aac" (container "mp4"), and undeclared
    "adts_aac": ("l.aac", InputFormat("mp4"), ("-c:a", "aac", "-b:a", "96k", "-f", "adts")),
    "adts_detected": ("m.aac", InputFormat(), ("-c:a", "aac", "-b:a", "96k", "-f", "adts")),
}


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, InputFormat]]:
    """12 s of a modulated tone plus noise (48 kHz stereo) in every container."""
    d = tmp_path_factory.mktemp("containers")
    rate, n = 48000, 48000 * 12
    rng = np.random.default_rng(3)
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 0.4 * t) + 0.05 * rng.standard_normal(n)
    stereo = np.stack([x, 0.5 * x + 0.05 * rng.standard_normal(n)], 1).astype(np.float32)
    src = d / "src.f32"
    src.write_bytes(stereo.tobytes())
    out = {name: (_ffmpeg(src, d / fname, rate, 2, *args), fmt)
           for name, (fname, fmt, args) in CASES.items()}
    webm = out["webm_opus"][0].read_bytes()
    torn = d / "torn.webm"  # a recording cut mid-packet by a dropped connection
    torn.write_bytes(webm[: len(webm) // 2 + 17])
    out["webm_torn"] = (torn, InputFormat())
    return out


def _encode_whole(samples: np.ndarray, path: Path) -> bytes:
    """The MP4 rendition made from the whole array at once (what encode_mp4 did before it
    streamed): AAC-LC mono 16 kHz, 64 kb/s, frames of 16 x 1024 samples."""
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = 64000
        for i in range(0, len(samples), 1024 * 16):
            frame = av.AudioFrame.from_ndarray(samples[i : i + 1024 * 16].reshape(1, -1),
                                               format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path.read_bytes()


@pytest.mark.parametrize("name", [*CASES, "webm_torn"])
def test_block_streamed_decode_equals_whole_file_decode(name: str, containers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, fmt = containers[name]
    whole = decode_file(path, fmt)
    assert len(whole) > SAMPLE_RATE * 5
    for block_frames in (1021, 65536):  # odd blocks: every resampler/reader boundary moves
        blocks = list(iter_decode(path, fmt, block_frames))
        assert len(blocks) > 1
        np.testing.assert_array_equal(np.concatenate(blocks), whole)
    decoded = decode_to_wav([(path, fmt)], tmp_path / "audio.wav", block_frames=4099)
    assert decoded.frames == len(whole) and not decoded.truncated
    assert (tmp_path / "audio.wav").read_bytes() == write_wav(tmp_path / "ref.wav", whole).read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_multi_part_recording_and_mp4_equal_whole_decode(containers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    parts = [containers[n] for n in ("pcm_48k_stereo", "webm_opus", "wav_44k_stereo", "mp3")]
    decoded = decode_to_wav(parts, tmp_path / "audio.wav", block_frames=3001)
    whole = decode_parts(parts)
    assert decoded.frames == len(whole)
    assert (tmp_path / "audio.wav").read_bytes() == write_wav(tmp_path / "ref.wav", whole).read_bytes()
    mp4 = encode_mp4(tmp_path / "audio.wav", tmp_path / "audio.mp4").read_bytes()
    canonical = decode_file(tmp_path / "audio.wav")
    assert mp4 == _encode_whole(canonical, tmp_path / "whole.mp4")
    assert not list(tmp_path.glob(".*"))


def test_decode_to_wav_stops_at_the_limit(containers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pcm, webm = containers["pcm_16k"], containers["webm_opus"]
    whole = decode_parts([pcm, webm])
    n_pcm = len(decode_file(*pcm))
    wav = tmp_path / "audio.wav"
    for limit, truncated in ((3.0, True), (n_pcm / SAMPLE_RATE + 2.5, True),
                             (n_pcm / SAMPLE_RATE, True),  # exactly one part: the next holds more
                             (len(whole) / SAMPLE_RATE, False), (10_000.0, False)):
        decoded = decode_to_wav([pcm, webm], wav, max_seconds=limit, block_frames=5000)
        frames = min(len(whole), int(limit * SAMPLE_RATE))
        assert (decoded.frames, decoded.truncated) == (frames, truncated), limit
        assert wav.read_bytes() == write_wav(tmp_path / "ref.wav", whole[:frames]).read_bytes()
    # The last part alone, exactly at the limit: nothing is left out.
    decoded = decode_to_wav([pcm], wav, max_seconds=n_pcm / SAMPLE_RATE)
    assert not decoded.truncated and decoded.frames == n_pcm


def test_failed_decode_keeps_the_previous_audio(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "audio.wav", np.full(1600, 0.25, np.float32))
    before = wav.read_bytes()
    bad = tmp_path / "bad.webm"
    bad.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="could not be decoded|no decodable|no audio"):
        decode_to_wav([(bad, InputFormat("webm"))], wav)
    assert wav.read_bytes() == before and not list(tmp_path.glob(".*"))


# ---------------------------------------------------------------------------- memory

_MEMORY_PROBE = textwrap.dedent("""
    import resource, struct, sys
    import numpy as np
    from pathlib import Path
    from workbench.engine.audio import InputFormat, decode_to_wav, write_wav
    from workbench.engine.rendition import encode_mp4

    what, d = sys.argv[1], Path(sys.argv[2])
    rate, channels, seconds = (44100, 2, 600) if what == "decode" else (16000, 1, 600)
    n = rate * seconds
    src = d / "long.wav"
    with open(src, "wb") as f:  # written a second at a time: this process stays small
        f.write(struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + n * 2 * channels, b"WAVE",
                            b"fmt ", 16, 1, channels, rate, rate * channels * 2, channels * 2,
                            16, b"data", n * 2 * channels))
        rng = np.random.default_rng(0)
        for i in range(0, n, rate):
            f.write(rng.integers(-8000, 8000, size=(min(rate, n - i), channels),
                                 dtype=np.int16).tobytes())
    small = write_wav(d / "small.wav", np.zeros(32000, np.float32))
    decode_to_wav([(small, InputFormat())], d / "warm.wav")  # libraries loaded, buffers made
    encode_mp4(small, d / "warm.mp4")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if what == "decode":
        decode_to_wav([(src, InputFormat())], d / "audio.wav")
    else:
        encode_mp4(src, d / "audio.mp4")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024)
""")


@pytest.mark.parametrize("what, bound_mb", [
    # 10 min of 44.1 kHz stereo (106 MB): the whole-file decode grew the peak by ~500 MB.
    ("decode", 64),
    # 10 min of canonical audio (19 MB) to AAC: the whole-array encode needs ~100 MB.
    ("mp4", 32),
])
def test_memory_of_decoding_does_not_grow_with_length(what: str, bound_mb: float, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, what, str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    growth_mb = float(out.stdout.split()[-1])
    assert growth_mb < bound_mb, f"peak resident memory grew by {growth_mb:.1f} MB"


# ---------------------------------------------------------------------------- server


async def _recv(ws: aiohttp.ClientWebSocketResponse, *types: str) -> dict[str, Any]:
    """The next message of one of ``types`` (others skipped)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        m = json.loads(msg.data)
        if m["type"] in types:
            return m


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        return await r.json()


async def test_decoded_audio_obeys_the_duration_limit(start_server, speech_dir: Path,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A fast upload of compressed audio is not bounded by wall-clock time: its decoded
    audio is cut at the limit, the client and the session are told, nothing is lost."""
    srv = start_server("--max-duration", "3")
    webm = (speech_dir / "speech.webm").read_bytes()  # ~5 s, sent in well under 3 s
    assert len(decode_file(speech_dir / "speech.webm")) > 4 * SAMPLE_RATE
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/long") as ws:
            await ws.send_json({"action": "start", "input_format": "webm"})
            sid = (await _recv(ws, "recording_started"))["session_id"]
            for i in range(0, len(webm), 4000):
                await ws.send_json({"action": "audio_chunk",
                                    "data": base64.b64encode(webm[i : i + 4000]).decode()})
            await ws.send_json({"action": "stop"})
            stopped = await _recv(ws, "recording_stopped", "error")
            assert stopped["type"] == "recording_stopped", stopped
            assert stopped["truncated"] is True
            assert stopped["duration_seconds"] == 3.0
            err = await _recv(ws, "error", "processing_started")
            assert err["code"] == ErrorCode.DURATION_EXCEEDED
            assert err["message"].startswith("Recording duration exceeds limit (3 seconds)")
            assert "bytes are kept" in err["message"]
            assert (await _recv(ws, "processing_started"))["session_id"] == sid
        session = await _get_json(f"{srv.url}/api/sessions/{sid}")
        assert session["audio_truncated"] is True and session["duration_seconds"] == 3.0
        directory = srv.data_dir / "sessions" / sid
        assert (directory / "part-000.raw").read_bytes() == webm  # raw bytes untouched
        expected = decode_file(speech_dir / "speech.webm")[: 3 * SAMPLE_RATE]
        audio = (directory / "audio.wav").read_bytes()
        assert audio == write_wav(tmp_path / "expected.wav", expected).read_bytes()

        # Within the limit: nothing is cut, and nobody hears of the limit.
        pcm = (speech_dir / "speech.pcm").read_bytes()[: 2 * 32000]
        async with s.ws_connect(f"{srv.ws_url}/ws/short") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            sid2 = (await _recv(ws, "recording_started"))["session_id"]
            await ws.send_bytes(pcm)
            await ws.send_json({"action": "stop"})
            stopped = await _recv(ws, "recording_stopped", "error")
            assert stopped == {**stopped, "type": "recording_stopped", "truncated": False,
                               "duration_seconds": 2.0}
            assert (await _recv(ws, "processing_started", "error"))["type"] == "processing_started"
        assert (await _get_json(f"{srv.url}/api/sessions/{sid2}"))["audio_truncated"] is False


async def test_stop_of_a_long_recording_keeps_the_server_answering(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """While `stop` decodes 5 minutes of 48 kHz stereo FLAC (seconds of work), the server
    keeps answering other requests: the decoding does not run on the event loop."""
    srv = start_server()
    flac = tmp_path / "long.flac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=48000:duration=300", "-ac", "2",
                    "-c:a", "flac", str(flac)], check=True)
    data = flac.read_bytes()
    answered: list[float] = []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/loop", max_msg_size=0) as ws:
            await ws.send_json({"action": "start", "input_format": "flac"})
            await _recv(ws, "recording_started")
            for i in range(0, len(data), 512 * 1024):
                await ws.send_bytes(data[i : i + 512 * 1024])

            async def ping() -> None:
                while True:
                    async with s.get(f"{srv.url}/api/health") as r:
                        assert r.status == 200
                        answered.append(time.monotonic())
                    await asyncio.sleep(0.02)

            pinger = asyncio.create_task(ping())
            try:
                stop_sent = time.monotonic()
                await ws.send_json({"action": "stop"})
                stopped = await _recv(ws, "recording_stopped", "error")
                stopped_at = time.monotonic()
            finally:
                pinger.cancel()
            assert stopped["type"] == "recording_stopped", stopped
            assert stopped["duration_seconds"] == 300.0
    # Decoding on the loop would hold every request until it ends (the replies then come
    # while the session is saved, just before `recording_stopped`): count the first half.
    half = stop_sent + (stopped_at - stop_sent) / 2
    early = [t for t in answered if stop_sent < t < half]
    assert len(early) >= 3, (f"{len(early)} health answers in the first half of a stop of "
                             f"{stopped_at - stop_sent:.2f} s")


# ---------------------------------------------------------------------------- recovery, store


def test_crash_recovery_applies_the_decoded_limit(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    session = store.create_session()
    part = store.add_part(session.id, InputFormat("pcm_s16le", 16000, 1))
    store.set_status(session.id, "recording")
    pcm = to_int16(np.sin(np.arange(5 * SAMPLE_RATE) / 10).astype(np.float32) * 0.5).tobytes()
    (store.session_dir(session.id) / part.filename).write_bytes(pcm)
    assert recover(store, max_seconds=2.0) == [session.id]
    after = store.get_session(session.id)
    assert after is not None and after.status == "interrupted"
    assert after.duration_seconds == 2.0 and after.audio_truncated
    wav = (store.session_dir(session.id) / "audio.wav").read_bytes()
    assert wav[44:] == pcm[: 2 * 2 * SAMPLE_RATE] and len(wav) == 44 + 4 * SAMPLE_RATE
    assert (store.session_dir(session.id) / part.filename).read_bytes() == pcm
    store.close()


def test_crash_recovery_survives_a_session_it_cannot_rebuild(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """An error other than undecodable audio (a full disk; here audio.wav is a folder, so
    writing it fails with an OSError) stopped recovery, and with it the server's start-up."""
    store = SessionStore(tmp_path)
    pcm = to_int16(np.sin(np.arange(SAMPLE_RATE) / 10).astype(np.float32) * 0.5).tobytes()
    ids = []
    for _ in range(2):
        session = store.create_session()
        part = store.add_part(session.id, InputFormat("pcm_s16le", 16000, 1))
        store.set_status(session.id, "recording")
        (store.session_dir(session.id) / part.filename).write_bytes(pcm)
        ids.append(session.id)
    (store.session_dir(ids[0]) / "audio.wav").mkdir()
    with caplog.at_level("ERROR", logger="server"):
        assert sorted(recover(store, max_seconds=60.0)) == sorted(ids)
    # tried once (the loop over damaged audio of interrupted sessions tried it again)
    assert len([r for r in caplog.records if ids[0] in r.getMessage()]) == 1
    broken, fine = store.get_session(ids[0]), store.get_session(ids[1])
    assert broken is not None and broken.status == "interrupted"
    assert broken.error and "raw parts are kept" in broken.error
    assert fine is not None and fine.status == "interrupted" and fine.duration_seconds == 1.0
    assert (store.session_dir(ids[0]) / "part-000.raw").read_bytes() == pcm
    store.close()


def test_store_from_before_the_audio_truncated_column_opens(tmp_path: Path) -> None:
    SessionStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / "workbench.sqlite3")
    db.execute("ALTER TABLE sessions DROP COLUMN audio_truncated")
    db.execute("INSERT INTO sessions (id, status, created_at, updated_at) VALUES ('old', 'idle', 0, 0)")
    db.commit()
    db.close()
    store = SessionStore(tmp_path)
    old = store.get_session("old")
    assert old is not None and old.audio_truncated is False
    store.update_session("old", audio_truncated=True)
    assert store.get_session("old").serialize()["audio_truncated"] is True  # type: ignore[union-attr]
    store.close()


# ---------------------------------------------------------------------------- fuzz

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from workbench.engine.audio import AudioDecodeError  # noqa: E402


def _wav_header(tag: int, channels: int, rate: int, bits: int) -> bytes:
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 0xFFFFFFFF, b"WAVE", b"fmt ", 16, tag,
                       channels, rate, (rate * channels * bits // 8) & 0xFFFFFFFF,
                       (channels * bits // 8) & 0xFFFF, bits,
                       b"data", 0xFFFFFFFF)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tag=st.sampled_from([1, 3]), channels=st.sampled_from([1, 2, 3, 7, 255, 65535]),
       rate=st.sampled_from([1000, 8000, 16000, 22050, 44100, 48000, 96000, 192001]),
       bits=st.sampled_from([8, 16, 24, 32, 64]), payload=st.binary(max_size=9000),
       block_frames=st.sampled_from([1, 7, 1024, 65536]), raw_pcm=st.booleans())
def test_streamed_decode_of_odd_pcm_matches_whole_file(tmp_path: Path, tag: int, channels: int,
                                                        rate: int, bits: int, payload: bytes,
                                                        block_frames: int, raw_pcm: bool) -> None:
    """Headers and payloads of every shape (odd channel counts, partial frames, NaN floats):
    the block-streamed decode fails exactly when the whole-file decode does, with a clean
    AudioDecodeError, and otherwise writes the same WAV."""
    src = tmp_path / "in.raw"
    if raw_pcm:
        fmt = InputFormat("pcm_s16le", rate, min(channels, 8))
        src.write_bytes(payload)
    else:
        fmt = InputFormat()
        src.write_bytes(_wav_header(tag, channels, rate, bits) + payload)
    try:
        whole = decode_file(src, fmt)
    except AudioDecodeError:
        with pytest.raises(AudioDecodeError):
            decode_to_wav([(src, fmt)], tmp_path / "audio.wav", block_frames=block_frames)
        return
    decoded = decode_to_wav([(src, fmt)], tmp_path / "audio.wav", block_frames=block_frames)
    assert decoded.frames == len(whole)
    with np.errstate(invalid="ignore"):
        expected = write_wav(tmp_path / "ref.wav", whole).read_bytes()
    assert (tmp_path / "audio.wav").read_bytes() == expected


# ----------------------------------------------------------------- WAV files as they come

def _wav_with(path: Path, samples: np.ndarray, *, trailer: bytes = b"", size: Any = None) -> Path:
    """16 kHz mono 16-bit WAV of `samples`, its data chunk declaring `size` bytes (default:
    the truth) and followed by `trailer` (e.g. a LIST chunk)."""
    data = to_int16(samples).tobytes()
    declared = len(data) if size is None else size
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + fmt + struct.pack("<4sI", b"data", declared) + data + trailer
    path.write_bytes(struct.pack("<4sI", b"RIFF", len(body)) + body)
    return path


def test_wav_metadata_after_the_data_is_not_audio(tmp_path: Path) -> None:
    """A LIST chunk after the data (what editors and recorders write) is not decoded as
    audio: before, its bytes came out as 54 samples of a full-scale click at the end. A
    data size that streamed writers leave wrong (0xFFFFFFFF, or stale with audio after
    it) still reads to the end."""
    from workbench.engine.audio import wav_duration

    tone = (0.3 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    text = b"ISFT\x0e\x00\x00\x00Lavf60.16.100\x00" * 4
    listed = _wav_with(tmp_path / "list.wav", tone,
                       trailer=struct.pack("<4sI4s", b"LIST", len(text) + 4, b"INFO") + text)
    for path in (listed, _wav_with(tmp_path / "plain.wav", tone)):
        decoded = decode_file(path)
        assert len(decoded) == 1600 and np.abs(decoded - tone).max() < 1e-4, path.name
        assert np.array_equal(np.concatenate(list(iter_decode(path, block_frames=97))), decoded)
        assert wav_duration(path) == pytest.approx(0.1)
    for size in (0xFFFFFFFF, 0, 640):  # the declared size is not where the bytes end
        path = _wav_with(tmp_path / f"streamed-{size}.wav", tone, size=size)
        assert len(decode_file(path)) == 1600 and wav_duration(path) == pytest.approx(0.1)
        assert len(np.concatenate(list(iter_decode(path)))) == 1600


def test_the_pad_byte_of_an_odd_sized_wav_is_not_audio(tmp_path: Path) -> None:
    """RIFF pads data of an odd size with a byte (libsndfile and sox write it): an 8-bit
    WAV of 3 samples decoded to 4, the pad a full-scale click (-1.0)."""
    import soundfile as sf

    from workbench.engine.audio import wav_duration

    for frames in (3, 4):
        path = tmp_path / f"u8-{frames}.wav"
        sf.write(path, np.full(frames, 0.5), 16000, subtype="PCM_U8")
        decoded = decode_file(path)
        assert len(decoded) == frames and np.allclose(decoded, 0.5, atol=0.01), decoded
        assert wav_duration(path) * 16000 == pytest.approx(frames)
        assert len(np.concatenate(list(iter_decode(path)))) == frames


@pytest.mark.parametrize("codec,options", [("pcm_mulaw", {}), ("adpcm_ima_wav", {}),
                                           ("pcm_s16le", {"rf64": "always"})])
def test_wav_encodings_beyond_pcm_decode_with_ffmpeg(codec: str, options: dict[str, str],
                                                     tmp_path: Path) -> None:
    """mu-law (telephony), IMA ADPCM and RF64 WAV files, refused before ("Unsupported WAV
    encoding", "Not a RIFF/WAVE stream"), decode through FFmpeg's WAV demuxer."""
    import av

    path = tmp_path / f"{codec}.wav"
    tone = (0.3 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    with av.open(str(path), "w", format="wav", options=options) as out:
        stream = out.add_stream(codec, rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(to_int16(tone).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    decoded = decode_file(path)
    assert abs(len(decoded) - 16000) <= 512 and 0.1 < np.abs(decoded).max() < 0.5
    assert np.array_equal(np.concatenate(list(iter_decode(path))), decoded)


def test_a_nan_sample_does_not_spread_through_resampling(tmp_path: Path) -> None:
    """A float WAV at 44.1 kHz with one NaN sample: before, 544 samples (34 ms) of NaN at
    16 kHz went to the models."""
    import soundfile as sf

    x = (0.3 * np.sin(np.arange(44100) / 7)).astype(np.float32)
    x[20000] = np.nan
    x[30000] = np.inf
    sf.write(tmp_path / "nan.wav", x, 44100, subtype="FLOAT")
    decoded = decode_file(tmp_path / "nan.wav")
    assert np.isfinite(decoded).all() and len(decoded) == 16000


def test_the_mp4_of_a_wav_rewritten_during_its_encode_is_never_put_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download's MP4 encode reads audio.wav while a resumed recording's stop rewrites
    it: that encode is dropped and the new WAV encoded.  It was put in place first, made
    after the new WAV, so it passed for current (served to others meanwhile, and kept for
    good when the second encode failed: the run's worker skipped an existing MP4)."""
    import workbench.engine.rendition as rendition
    from server.app import _encode_current

    wav, mp4 = tmp_path / "audio.wav", tmp_path / "audio.mp4"
    write_wav(wav, np.zeros(2 * SAMPLE_RATE, np.float32))
    real, seen = rendition.iter_decode, []

    def reading(path: Any, *args: Any) -> Any:
        if seen:  # the encode of the new WAV: what was there when it began
            seen.append((mp4.exists(), rendition.rendition_current(wav, mp4)))
        yield from real(path, *args)
        if not seen:  # the first encode has read the WAV: now a stop rewrites it
            seen.append("rewritten")
            write_wav(wav, np.zeros(3 * SAMPLE_RATE, np.float32))

    monkeypatch.setattr(rendition, "iter_decode", reading)
    _encode_current(wav, mp4)
    assert seen == ["rewritten", (False, False)]
    assert rendition.rendition_current(wav, mp4)
    assert decode_file(mp4).size == pytest.approx(3 * SAMPLE_RATE, abs=2048)
    assert encode_mp4(wav, tmp_path / "other.mp4", keep=lambda: False) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.mp4", "audio.wav"]
