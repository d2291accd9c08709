"""A timing client of the recording protocol, and what it left on disk.

The ingest and live-server benchmarks stream deterministic PCM to a real server
(:func:`pcm_signal`, :func:`payloads`), time each reply as it arrives
(:class:`TimingClient`) and compare the session's files with what was sent
(:func:`verify_on_disk`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any, Optional

import aiohttp
import numpy as np

from workbench.engine.audio import SAMPLE_RATE

BYTES_PER_SECOND = SAMPLE_RATE * 2  # mono s16le
WAV_HEADER = 44  # workbench.engine.audio.write_wav writes the canonical 44-byte header
START = {"action": "start", "format": "wav", "input_format": "pcm_s16le",
         "sample_rate": SAMPLE_RATE, "channels": 1}
NOP = json.dumps({"action": "nop"})
STOP = json.dumps({"action": "stop"})
UNKNOWN_ACTION = 4000


def pcm_signal(n_bytes: int, seed: int) -> bytes:
    """Deterministic mono s16le noise (seeded uniform int16 in ±8192), ``n_bytes`` long."""
    rng = np.random.default_rng(seed)
    return rng.integers(-8192, 8192, size=n_bytes // 2, dtype=np.int16).astype("<i2").tobytes()


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def payloads(data: bytes, size: int, encoding: str) -> list[Any]:
    """What goes on the wire per chunk: raw bytes, or a ready JSON ``audio_chunk`` text."""
    if encoding == "binary":
        return chunks(data, size)
    return [json.dumps({"action": "audio_chunk", "data": base64.b64encode(c).decode("ascii")})
            for c in chunks(data, size)]


async def send(ws: aiohttp.ClientWebSocketResponse, payload: Any) -> None:
    if isinstance(payload, bytes):
        await ws.send_bytes(payload)
    else:
        await ws.send_str(payload)


def common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    x = np.frombuffer(a[:n], dtype=np.uint8)
    y = np.frombuffer(b[:n], dtype=np.uint8)
    return int(np.argmax(x != y))


def verify_on_disk(session_dir: Path, sent: bytes) -> dict[str, Any]:
    """Compare a session's raw part and decoded WAV with what its client sent."""
    raw_path = session_dir / "part-000.raw"
    raw = raw_path.read_bytes() if raw_path.exists() else b""
    ok_raw = raw == sent
    kept = len(sent) if ok_raw else common_prefix(raw, sent)
    wav_path = session_dir / "audio.wav"
    wav = wav_path.read_bytes() if wav_path.exists() else b""
    ok_wav = wav[WAV_HEADER:] == sent and len(wav) == WAV_HEADER + len(sent)
    extra_parts = sorted(p.name for p in session_dir.glob("part-*.raw") if p.name != "part-000.raw")
    return {"sent_bytes": len(sent), "raw_bytes": len(raw), "raw_exact": ok_raw,
            "lost_bytes": len(sent) - kept, "wav_exact": ok_wav, "extra_parts": extra_parts}



class ProtocolFailure(RuntimeError):
    pass


class TimingClient:
    """One WebSocket client: a reader task that timestamps replies as they arrive.

    Hand-written rather than :mod:`workbench.client`: the figures need what that client
    does not expose -- the send time of the chunk each ``progress`` counts, ``nop``
    round trips that confirm every earlier chunk, and sends on absolute deadlines.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, index: int = 0) -> None:
        self.ws = ws
        self.index = index
        self.sent_at: dict[int, float] = {}  # chunk number (1-based) -> send time, for progress
        self.progress_latency: list[float] = []
        self.progress_counts: list[int] = []
        self.errors: list[dict[str, Any]] = []  # every error except the nop's
        self.control: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.session_id: Optional[str] = None
        self.closed: Optional[str] = None
        self._reader = asyncio.create_task(self._read(), name=f"reader-{index}")

    async def _read(self) -> None:
        try:
            async for msg in self.ws:  # answers the server's pings (autoping)
                now = time.perf_counter()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                m = json.loads(msg.data)
                if m.get("type") == "progress":
                    n = int(m.get("chunks_received", -1))
                    self.progress_counts.append(n)
                    sent = self.sent_at.get(n)
                    if sent is not None:
                        self.progress_latency.append(now - sent)
                    continue
                if m.get("type") == "error" and m.get("code") != UNKNOWN_ACTION:
                    self.errors.append(m)
                await self.control.put((now, m))
        finally:
            self.closed = f"closed (code {self.ws.close_code})"
            await self.control.put((time.perf_counter(), {"type": "_closed"}))

    async def expect(self, kind: str | tuple[str, ...], timeout: float,
                     code: Optional[int] = None) -> tuple[float, dict[str, Any]]:
        """The next control message of type ``kind`` (one of them, with ``code``); skips others."""
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = time.perf_counter() + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise ProtocolFailure(f"client {self.index}: no {kind!r} within {timeout:.0f} s")
            try:
                at, m = await asyncio.wait_for(self.control.get(), left)
            except asyncio.TimeoutError:
                continue
            if m["type"] == "_closed":
                raise ProtocolFailure(f"client {self.index}: connection {self.closed} while "
                                      f"waiting for {kind!r}; errors: {self.errors[-3:]}")
            if m["type"] in kinds and (code is None or m.get("code") == code):
                return at, m

    async def start(self, timeout: float = 30) -> dict[str, Any]:
        await self.ws.send_json(START)
        _, m = await self.expect("recording_started", timeout)
        self.session_id = m["session_id"]
        return m

    async def confirm(self, timeout: float) -> float:
        """Send a nop and wait for its error reply: every earlier chunk has been handled."""
        await self.ws.send_str(NOP)
        at, _ = await self.expect("error", timeout, code=UNKNOWN_ACTION)
        return at

    async def stop(self, timeout: float) -> dict[str, Any]:
        t = time.perf_counter()
        await self.ws.send_str(STOP)
        at, stopped = await self.expect("recording_stopped", timeout)
        at2, processing = await self.expect("processing_started", timeout)
        return {"stop_s": at - t, "processing_started_s": at2 - t, "stopped": stopped,
                "processing": processing}

    async def close(self) -> None:
        await self.ws.close()
        try:
            await asyncio.wait_for(self._reader, 10)
        except (asyncio.TimeoutError, Exception):
            self._reader.cancel()


__all__ = ["BYTES_PER_SECOND", "NOP", "START", "STOP", "UNKNOWN_ACTION", "WAV_HEADER",
           "ProtocolFailure", "TimingClient", "chunks", "common_prefix", "payloads",
           "pcm_signal", "send", "verify_on_disk"]
