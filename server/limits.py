"""Limits: what one recording and one client may use (:class:`Limits`, part of the
server's configuration), and the small counters that enforce the limits that change
over time (connections per client address, the pace of live audio).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Limits of the recording protocol (seed defaults first) and of what one client may use.

    A limit of 0 switches that limit off (where noted).
    """

    max_duration_seconds: float = 3600.0
    max_chunk_bytes: int = 1 * MiB
    max_total_bytes: int = 500 * MiB
    # Largest WebSocket message accepted at all; bigger frames close the
    # connection with 1009.  Room for a base64 chunk a little over the limit so
    # that one gets the seed's "Chunk size exceeds limit" error instead: at least
    # `message_room(max_chunk_bytes)`.  None (given so): 4 MiB, or that room if more.
    max_message_bytes: int = None  # type: ignore[assignment]  # (an int once made)
    # Recordings open at once on the whole server (0: no limit).
    max_recordings: int = 100
    # Open WebSocket connections per client address (0: no limit).
    max_connections_per_client: int = 20
    # Seconds without a message from a recording client before its recording is
    # finalised as `interrupted` and the connection closed (0: never).
    idle_timeout_seconds: float = 60.0
    # Largest HTTP request body (REST JSON).
    max_body_bytes: int = 1 * MiB
    # A client that declares `"live": true` may send audio at most this many
    # times faster than real time once its burst allowance is used up (0: off).
    live_max_speed: float = 2.0
    # Seconds of audio a live client may send ahead of that pace (its burst).
    live_burst_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.max_message_bytes is None:
            room = message_room(self.max_chunk_bytes) if self.max_chunk_bytes > 0 else 0
            object.__setattr__(self, "max_message_bytes", max(4 * MiB, room))


def message_room(max_chunk_bytes: int) -> int:
    """The smallest `Limits.max_message_bytes` that carries a chunk of `max_chunk_bytes`
    as a base64 ``audio_chunk`` JSON message (4/3 of it, and 1 KiB for the rest)."""
    return 4 * -(-int(max_chunk_bytes) // 3) + 1024


# Bytes per second of audio assumed for a compressed stream whose duration the
# server cannot read from its byte count: the highest bit rate its codec allows
# in practice, so an honest live client is never refused (Opus <= 510 kbit/s,
# AAC-LC <= 576 kbit/s stereo 48 kHz, MP3 <= 320 kbit/s).  FLAC and an unknown
# container are assumed as big as 48 kHz stereo 16-bit PCM.  A ceiling, not a
# measurement: a low-bit-rate stream can go that many times faster unnoticed.
COMPRESSED_BYTES_PER_SECOND = {"webm": 72_000, "ogg": 72_000, "mp4": 72_000, "mp3": 40_000}
UNKNOWN_BYTES_PER_SECOND = 192_000


class ConnectionCounter:
    """Open connections per client address, refused beyond ``limit`` (0: unlimited)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def acquire(self, address: str) -> bool:
        """Count a new connection from ``address``; False (nothing counted) when over the limit."""
        if self.limit and self._open[address] >= self.limit:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def __len__(self) -> int:
        return sum(self._open.values())


class LivePacer:
    """Token bucket on audio seconds: at most ``speed`` x real time after a ``burst``.

    The bucket holds up to ``burst`` seconds of audio and refills at ``speed``
    audio seconds per wall-clock second.  A chunk is admitted unless the bucket is
    in debt (so a chunk longer than the burst still gets through once); audio sent
    at ``rate`` > ``speed`` x real time empties it after ``burst / (rate - speed)``
    seconds.
    """

    def __init__(self, speed: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.speed = speed
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self._last = clock()

    def admit(self, seconds: float) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.speed)
        self._last = now
        if self.tokens < 0:
            return False
        self.tokens -= seconds
        return True


def chunk_seconds(n_bytes: int, bytes_per_second: Optional[float], container: Optional[str]) -> float:
    """Audio seconds in ``n_bytes``: exact for PCM/WAV (``bytes_per_second``), else a ceiling."""
    if bytes_per_second:
        return n_bytes / bytes_per_second
    rate = COMPRESSED_BYTES_PER_SECOND.get(container or "", UNKNOWN_BYTES_PER_SECOND)
    return n_bytes / rate


__all__ = ["ConnectionCounter", "Limits", "LivePacer", "MiB", "chunk_seconds"]
