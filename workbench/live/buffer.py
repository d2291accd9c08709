"""The recent audio of a growing stream, addressed by absolute sample index."""

from __future__ import annotations

import numpy as np

from workbench.engine.audio import SAMPLE_RATE

__all__ = ["AudioBuffer"]


class AudioBuffer:
    """16 kHz mono float32 samples appended as they arrive; what lies before `start`
    has been forgotten, so memory stays bounded by what the reader still needs."""

    def __init__(self) -> None:
        self._audio = np.zeros(0, dtype=np.float32)
        self.start = 0  # absolute sample index of the first sample kept (< 0: `prepend`)
        self.received = 0  # samples appended in all
        self._forgotten = False

    @property
    def seconds(self) -> float:
        """Audio appended so far (s)."""
        return self.received / SAMPLE_RATE

    def append(self, samples: np.ndarray) -> np.ndarray:
        """Add samples at the end; returns them as a flat float32 array."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, samples])
        self.received += samples.size
        return samples

    def prepend(self, samples: np.ndarray) -> None:
        """Put audio that preceded the stream before its first sample (negative indexes:
        the context of a stream that continues an earlier one); not once any was forgotten."""
        if self._forgotten:
            raise ValueError("the buffer has forgotten samples: too late to prepend")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._audio = np.concatenate([samples, self._audio])
        self.start -= samples.size

    def slice(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``lo`` (at least `start`) up to ``hi`` (absolute indices)."""
        if lo < self.start:
            raise ValueError(f"sample {lo} was forgotten (the buffer starts at {self.start})")
        return self._audio[lo - self.start:hi - self.start]

    def forget(self, before: int) -> None:
        """Drop the samples before absolute index `before`."""
        drop = before - self.start
        if drop > 0:
            self._audio = self._audio[drop:]
            self.start = before
            self._forgotten = True
