"""How far a recording's live work is behind its audio (`Backlog`): the bytes handed to
its live worker against what the worker has read, decoded and its engines taken up, in
seconds of audio.

A resume may change the input format, so the bytes still waiting count at the current
part's rate: exact for PCM; for a compressed part, measured on that part's own bytes once
the worker decodes them, else its codec's ceiling (`limits.chunk_seconds`). (One rate for
all parts read 3 s of 48 kHz stereo PCM waiting after 60 s of 16 kHz mono as 18 s, and
after WebM about 48 times too much: a false ``live_paused``, or live results turned off.)
"""

from __future__ import annotations

from typing import Optional

from .limits import chunk_seconds

MAX_PENDING_BYTES = 32 * 1024 * 1024  # queued for the worker beyond which live results end


class Backlog:
    """One live stream's position: bytes handed to its worker and what it did with them."""

    def __init__(self) -> None:
        self.forwarded = 0  # bytes handed to the worker's queue
        self.taken = 0  # bytes the worker read
        self.decoded = 0.0  # s of audio it decoded
        self.engines = 0.0  # s of audio its live engines took up
        self.overflow = False  # more than MAX_PENDING_BYTES would have waited
        self.bytes_per_second: Optional[float] = None  # of the current part, when known
        self.container: Optional[str] = None
        # where the current part's bytes begin, and (taken, decoded) once the worker is in it
        self._part: tuple[int, Optional[tuple[int, float]]] = (0, None)

    def begin_part(self, container: Optional[str], bytes_per_second: Optional[float]) -> None:
        """A part of the recording begins (at start and at each resume)."""
        # A worker that has read every byte of a PCM part has decoded them: the new part
        # starts there. A compressed part's last frames come out only once the worker
        # hears of the new part: measured from its first report in the new part then.
        known = self.taken == self.forwarded and (self.bytes_per_second or not self.forwarded)
        self.container, self.bytes_per_second = container, bytes_per_second
        self._part = (self.forwarded, (self.taken, self.decoded) if known else None)

    def add(self, size: int) -> bool:
        """`size` bytes go to the worker; False (and `overflow` from then on) when more
        than `MAX_PENDING_BYTES` would wait."""
        if self.forwarded - self.taken + size > MAX_PENDING_BYTES:
            self.overflow = True
            return False
        self.forwarded += size
        return True

    def report(self, taken: int, decoded: float, engines: float) -> None:
        """What the worker says: bytes read, seconds decoded and taken up so far."""
        self.taken, self.decoded, self.engines = taken, decoded, engines
        # (past the boundary: a report at it may come before the last part's tail is out)
        if self._part[1] is None and taken > self._part[0]:
            self._part = (self._part[0], (taken, decoded))

    def seconds(self) -> float:
        """Seconds of audio received but not yet taken up by the live engines."""
        pending, mark = self.forwarded - self.taken, self._part[1]
        if self.bytes_per_second:  # PCM: exact
            per_byte = 1.0 / self.bytes_per_second
        elif mark is not None and self.taken > mark[0] and self.decoded > mark[1]:
            per_byte = (self.decoded - mark[1]) / (self.taken - mark[0])
        else:  # compressed, nothing of this part decoded yet
            per_byte = chunk_seconds(1, None, self.container)
        return pending * per_byte + max(0.0, self.decoded - self.engines)

    def too_far(self, limit: float) -> bool:
        """Live results must end: the queue overflowed, or more than `limit` s wait."""
        return self.overflow or self.seconds() > limit

    def reason(self) -> str:
        """Why live results end when they fall too far behind."""
        if self.overflow:
            return (f"Live results fell too far behind the audio ({self.seconds():.0f} s, "
                    f"{(self.forwarded - self.taken) / 1048576:.0f} MiB waiting)")
        return f"Live results fell {self.seconds():.0f} s behind the audio"


__all__ = ["Backlog", "MAX_PENDING_BYTES"]
