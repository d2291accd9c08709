"""Decoding through FFmpeg as the ffmpeg command does: the channels of a stereo stream
averaged (the level of the PCM path, no clipping), a packet that does not decode skipped
and what it left out told, and WAV encodings of a fixed byte rate (mu-law, A-law, ADPCM)
held to the duration limit while they arrive.  Real FFmpeg, PyAV and servers throughout.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from server.live_worker import StreamDecoder
from server.protocol import ErrorCode
from workbench.engine.audio import InputFormat, decode_file, decode_to_wav

from .conftest import have

pytestmark = pytest.mark.skipif(not have("ffmpeg"), reason="needs the ffmpeg command")

TIMEOUT = 60.0


def _encode(samples: np.ndarray, rate: int, dst: Path, *args: str) -> Path:
    """(frames, channels) float32 at `rate` encoded by the ffmpeg command."""
    src = dst.with_suffix(".f32")
    src.write_bytes(samples.astype("<f4").tobytes())
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(rate),
                    "-ac", str(samples.shape[1]), "-i", str(src), *args, str(dst)], check=True)
    return dst


def _ffmpeg_seconds(path: Path) -> float:
    """Seconds of 16 kHz audio the ffmpeg command decodes from `path`."""
    out = subprocess.run(["ffmpeg", "-loglevel", "quiet", "-i", str(path), "-f", "f32le",
                          "-ac", "1", "-ar", "16000", "-"], capture_output=True)
    return len(out.stdout) / 4 / 16000


def _stereo_sine(rate: int, seconds: float = 3.0, peak: float = 0.9) -> np.ndarray:
    """Both channels alike, as a stereo microphone gives: the mono mix is the same sine."""
    x = peak * np.sin(2 * np.pi * 300 * np.arange(int(rate * seconds)) / rate)
    return np.stack([x, x], 1).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    middle = x[len(x) // 6 : -len(x) // 6]  # away from codec start-up and end
    return float(np.sqrt(np.mean(middle.astype(np.float64) ** 2)))


# name -> (file, sample rate, ffmpeg options)
STEREO = {
    "webm": ("s.webm", 48000, ("-c:a", "libopus", "-b:a", "128k")),
    "ogg": ("s.ogg", 48000, ("-c:a", "libopus", "-b:a", "128k")),
    "m4a": ("s.m4a", 48000, ("-c:a", "aac", "-b:a", "192k")),
    "mp3": ("s.mp3", 48000, ("-c:a", "libmp3lame", "-b:a", "192k")),
    "flac": ("s.flac", 48000, ("-c:a", "flac",)),
    "alaw_wav": ("a.wav", 8000, ("-c:a", "pcm_alaw")),
    "mulaw_wav": ("u.wav", 8000, ("-c:a", "pcm_mulaw")),
}


@pytest.mark.parametrize("name", STEREO)
def test_stereo_through_ffmpeg_has_the_level_of_the_pcm_path(name: str, tmp_path: Path) -> None:
    """Stereo with alike channels at peak 0.9: FFmpeg's downmix kept 0.707 of each channel,
    so it came out 1.41x louder than the same sound in PCM WAV (averaged) and clipped in
    `audio.wav` (peaks 1.2-1.3, ~40% of the samples at full scale)."""
    fname, rate, options = STEREO[name]
    stereo = _stereo_sine(rate)
    pcm = decode_file(_encode(stereo, rate, tmp_path / "pcm.wav", "-c:a", "pcm_s16le"))
    coded = _encode(stereo, rate, tmp_path / fname, *options)
    decoded = decode_file(coded)
    assert _rms(decoded) == pytest.approx(_rms(pcm), rel=0.05)
    assert _rms(pcm) == pytest.approx(0.9 / np.sqrt(2), rel=0.02)
    wav = tmp_path / "audio.wav"
    decode_to_wav([(coded, InputFormat())], wav)
    saved = np.frombuffer(wav.read_bytes()[44:], "<i2")
    assert np.abs(saved).max() < 0.97 * 32768 and not np.any(np.abs(saved) >= 32767)


@pytest.mark.parametrize("name,container", [("webm", "webm"), ("ogg", "ogg"), ("mp3", "mp3"),
                                            ("flac", "flac")])
def test_live_decoding_of_stereo_has_the_engines_level(name: str, container: str,
                                                        tmp_path: Path) -> None:
    """The live worker's FFmpeg process (`-ac 1`) mixed stereo 3 dB louder than the saved
    audio: live results heard another level than the refined run."""
    fname, rate, options = STEREO[name]
    coded = _encode(_stereo_sine(rate), rate, tmp_path / fname, *options)
    out: list[np.ndarray] = []
    decoder = StreamDecoder(out.append, container, 16000, 1)
    data = coded.read_bytes()
    for i in range(0, len(data), 4000):
        decoder.feed(data[i : i + 4000])
    decoder.close()
    live = np.concatenate(out)
    assert abs(len(live) - len(decode_file(coded))) < 1600
    assert _rms(live) == pytest.approx(_rms(decode_file(coded)), rel=0.03)
    assert _rms(live) == pytest.approx(0.9 / np.sqrt(2), rel=0.05)


# ------------------------------------------------------------------ packets that do not decode


def _corrupt(data: bytes, chunk: int = 4000, index: int = 3) -> bytes:
    """`data` with its 4th chunk of 4000 bytes replaced by random bytes."""
    noise = np.random.default_rng(7).integers(0, 256, chunk, dtype=np.uint8).tobytes()
    return data[: index * chunk] + noise + data[(index + 1) * chunk :]


def _tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)
    return np.repeat(x[:, None], channels, 1).astype(np.float32)


def _damaged(name: str, d: Path) -> tuple[Path, bool]:
    """A stream FFmpeg decodes past a break, and whether audio is left out of it."""
    if name in ("mp3", "m4a"):  # one chunk of a 4.5 s upload replaced by noise
        args = {"mp3": ("-c:a", "libmp3lame", "-b:a", "96k"), "m4a": ("-c:a", "aac")}[name]
        whole = _encode(_tone(44100, 4.5, 2), 44100, d / f"whole.{name}", *args)
        path = d / f"damaged.{name}"
        path.write_bytes(_corrupt(whole.read_bytes()))
        return path, True
    if name == "mp3_rates":  # two MP3 streams of different sample rates, one after the other
        a = _encode(_tone(22050, 2.0), 22050, d / "a.mp3", "-c:a", "libmp3lame")
        b = _encode(_tone(48000, 2.0), 48000, d / "b.mp3", "-c:a", "libmp3lame")
        path = d / "rates.mp3"
    else:  # a chained Ogg: Opus mono, then Opus stereo
        a = _encode(_tone(48000, 2.0), 48000, d / "a.ogg", "-c:a", "libopus")
        b = _encode(_tone(48000, 2.0, 2), 48000, d / "b.ogg", "-c:a", "libopus")
        path = d / "chained.ogg"
    path.write_bytes(a.read_bytes() + b.read_bytes())
    return path, False


@pytest.mark.parametrize("name", ["mp3", "m4a", "mp3_rates", "ogg_chained"])
def test_decoding_goes_on_past_a_packet_it_cannot_decode(name: str, tmp_path: Path) -> None:
    """The first packet FFmpeg could not decode (or a stream change) ended the part: 4.5 s
    of MP3 with one damaged chunk kept 1.97 s where the ffmpeg command recovers 3.84 s,
    silently.  Now the rest decodes, and packets left out are told (a torn last packet of
    a dropped connection is not)."""
    path, left_out = _damaged(name, tmp_path)
    expected = _ffmpeg_seconds(path)
    assert expected > 3.5
    decoded = decode_to_wav([(path, InputFormat())], tmp_path / "audio.wav", skip_failed=True)
    assert decoded.duration_seconds == pytest.approx(expected, abs=0.1)
    if left_out:
        assert len(decoded.failed) == 1 and decoded.failed[0][0] == 0
        assert decoded.failed[0][1].startswith("Audio decoded in part: ")
        assert "could not decode were left out" in decoded.failed[0][1]
    torn = tmp_path / f"torn{path.suffix}"
    torn.write_bytes(path.read_bytes()[: -len(path.read_bytes()) // 7])
    if name != "m4a":  # (an MP4 cut short loses its index: nothing to decode)
        torn_decoded = decode_to_wav([(torn, InputFormat())], tmp_path / "torn.wav")
        assert torn_decoded.failed == decoded.failed
        assert torn_decoded.duration_seconds > 0.7 * expected


async def _messages_until(ws: aiohttp.ClientWebSocketResponse, *types: str) -> list[dict[str, Any]]:
    """Every message up to and including the first of `types`."""
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["type"] not in types:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        seen.append(json.loads(msg.data))
    return seen


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        return await r.json()


@pytest.mark.parametrize("name", ["mp3", "ogg_chained"])
async def test_a_damaged_upload_keeps_the_rest_and_says_what_was_left_out(  # type: ignore[no-untyped-def]
        start_server, name: str, tmp_path: Path) -> None:
    """Through the server: the part's audio goes on past the damaged chunk (or the new link
    of a chained Ogg), and a part that left packets out says so in `undecoded_parts` and
    in its `error` while the session is processed (before: 1.97 s kept, nothing said)."""
    srv = start_server()
    path, left_out = _damaged(name, tmp_path)
    data, expected = path.read_bytes(), _ffmpeg_seconds(path)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start"})
        sid = (await _messages_until(ws, "recording_started"))[-1]["session_id"]
        for i in range(0, len(data), 4000):
            await ws.send_bytes(data[i : i + 4000])
        await ws.send_json({"action": "stop"})
        stopped = (await _messages_until(ws, "recording_stopped"))[-1]
        assert stopped["duration_seconds"] == pytest.approx(expected, abs=0.1)
        assert (await _messages_until(ws, "processing_started", "error"))[-1]["type"] \
            == "processing_started"
    session = await _get_json(f"{srv.url}/api/sessions/{sid}")
    if left_out:
        assert [p["part"] for p in stopped["undecoded_parts"]] == [0]
        assert "could not decode were left out" in stopped["undecoded_parts"][0]["error"]
        assert session["parts"][0]["error"] == stopped["undecoded_parts"][0]["error"]
    else:
        assert "undecoded_parts" not in stopped and session["parts"][0]["error"] is None
    assert (srv.data_dir / "sessions" / sid / "part-000.raw").read_bytes() == data


# ------------------------------------------------------------- the duration limit while receiving


@pytest.mark.parametrize("codec", ["pcm_mulaw", "pcm_alaw", "adpcm_ima_wav"])
async def test_wav_of_a_fixed_byte_rate_is_limited_while_it_arrives(  # type: ignore[no-untyped-def]
        start_server, codec: str, tmp_path: Path) -> None:
    """20 s of 8 kHz mu-law WAV sent faster than real time with --max-duration 5: every
    chunk was accepted (wall-clock time stood in for the audio's), while PCM WAV gets 4005
    at the chunk that goes past 5 s.  The saved audio still decodes through FFmpeg."""
    srv = start_server("--max-duration", "5")
    x = 0.5 * np.sin(2 * np.pi * 300 * np.arange(8000 * 20) / 8000)
    wav = _encode(x[:, None].astype(np.float32), 8000, tmp_path / "in.wav", "-c:a", codec)
    data = wav.read_bytes()
    offset = data.index(b"data") + 8
    rate = struct.unpack("<I", data[data.index(b"fmt ") + 16 : data.index(b"fmt ") + 20])[0]
    within = next(k for k in range(1, 100) if k * 8000 - offset > 5 * rate) - 1
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start"})
        sid = (await _messages_until(ws, "recording_started"))[-1]["session_id"]
        for i in range(0, len(data), 8000):
            await ws.send_bytes(data[i : i + 8000])
        await ws.send_json({"action": "stop"})
        seen = await _messages_until(ws, "recording_stopped")
    errors = [m for m in seen if m["type"] == "error"]
    assert errors and errors[0]["code"] == ErrorCode.DURATION_EXCEEDED, seen
    assert seen[-1]["chunks_received"] == within + 1
    assert seen[-1]["duration_seconds"] == 5.0
    audio = decode_file(srv.data_dir / "sessions" / sid / "audio.wav")
    assert len(audio) == 5 * 16000 and 0.45 < np.abs(audio[8000:]).max() < 0.55
