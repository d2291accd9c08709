"""Voice activity of a growing stream: faster-whisper's Silero VAD, frame by frame.

faster-whisper runs Silero on whole files; its model scores 512-sample (32 ms) frames,
each with the 64 samples before it as context, carrying its recurrent state (h, c)
from frame to frame. Scoring the frames that arrived since the last call, starting from
the state the previous call left, gives the probabilities of scoring the whole stream at
once (checked in tests/test_live_vad.py). Speech regions
follow faster-whisper's hysteresis: a region starts at a frame >= `threshold`, and ends
after `min_silence` seconds of frames below ``threshold - 0.15``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from workbench.engine.audio import SAMPLE_RATE

__all__ = ["FRAME", "StreamingVAD"]

FRAME = 512
"""Samples per VAD frame (32 ms at 16 kHz)."""
_CONTEXT = 64


class StreamingVAD:
    """Speech probabilities and regions of audio appended in pieces of any size."""

    def __init__(self, threshold: float = 0.5, min_silence: float = 0.3,
                 min_speech: float = 0.1) -> None:
        from faster_whisper.vad import get_vad_model

        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self.min_silence = min_silence
        self.min_speech = min_speech
        self._model = get_vad_model()
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._probs: list[np.ndarray] = []
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._num_frames = 0
        self.seconds = 0.0  # time spent in the model

    @property
    def frames(self) -> int:
        """Frames scored so far."""
        return self._num_frames

    @property
    def scored_until(self) -> float:
        """Audio time (s) up to which frames have been scored."""
        return self._num_frames * FRAME / SAMPLE_RATE

    def append(self, samples: np.ndarray) -> None:
        """Score the complete frames of `samples` (the remainder waits for more audio)."""
        import time

        data = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        whole = (data.size // FRAME) * FRAME
        self._pending = data[whole:]
        if whole == 0:
            return
        frames = data[:whole].reshape(-1, FRAME)
        contexts = np.concatenate([self._context[None], frames[:-1, -_CONTEXT:]])
        batch = np.concatenate([contexts, frames], axis=1)
        started = time.perf_counter()
        out, self._h, self._c = self._model.session.run(
            None, {"input": batch, "h": self._h, "c": self._c})
        self.seconds += time.perf_counter() - started
        self._context = frames[-1, -_CONTEXT:].copy()
        probs = np.asarray(out, dtype=np.float32).reshape(-1)
        self._probs.append(probs)
        self._num_frames += probs.size

    def probabilities(self) -> np.ndarray:
        """Speech probability of every frame scored so far."""
        if len(self._probs) > 1:
            self._probs = [np.concatenate(self._probs)]
        return self._probs[0] if self._probs else np.zeros(0, dtype=np.float32)

    def regions(self, start: float = 0.0, end: Optional[float] = None) -> list[tuple[float, float]]:
        """Speech regions (s) among frames in ``[start, end)``; a region still open at
        `end` ends there. Regions shorter than `min_speech` are dropped."""
        probs = self.probabilities()
        first = max(0, int(start * SAMPLE_RATE) // FRAME)
        last = probs.size if end is None else min(probs.size, int(np.ceil(end * SAMPLE_RATE / FRAME)))
        regions: list[tuple[float, float]] = []
        silence_frames = max(1, int(round(self.min_silence * SAMPLE_RATE / FRAME)))
        in_speech, begin, below = False, 0, 0
        for i in range(first, last):
            p = probs[i]
            if not in_speech:
                if p >= self.threshold:
                    in_speech, begin, below = True, i, 0
            elif p < self.neg_threshold:
                below += 1
                if below >= silence_frames:
                    regions.append((begin, i - below + 1))
                    in_speech = False
            else:
                below = 0
        if in_speech:
            regions.append((begin, last - below))
        to_s = FRAME / SAMPLE_RATE
        return [(a * to_s, b * to_s) for a, b in regions if (b - a) * to_s >= self.min_speech]

    def uncovered(self, spans: list[tuple[float, float]], start: float, end: float) -> float:
        """Seconds of speech (`regions`) in ``[start, end]`` outside every (start, end) of
        `spans` (they may overlap)."""
        merged: list[tuple[float, float]] = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        missed = 0.0
        for a, b in self.regions(start, end):
            a, b = max(a, start), min(b, end)
            covered = sum(max(0.0, min(b, y) - max(a, x)) for x, y in merged)
            missed += max(0.0, b - a - covered)
        return missed

    def speech_end(self, start: float = 0.0) -> Optional[float]:
        """End (s) of the last speech region after `start`, None without speech."""
        regions = self.regions(start)
        return regions[-1][1] if regions else None
