"""A speech detector for rendered utterances: frame energies and the speech regions
they give (the reference turns of generated conversations are measured with it)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from workbench.engine.audio import SAMPLE_RATE


# =========================================================================== speech measurement

FRAME_LENGTH = 0.025
"""Analysis window (s) of the frame energy that decides speech from silence."""
FRAME_SHIFT = 0.010
"""Hop (s) between analysis frames."""
SPEECH_THRESHOLD_DB = 35.0
"""A frame is speech when its energy is within this many dB of the utterance's loudest
frame. Measured on espeak-ng: vowels lie 0-20 dB below the peak, stop closures 25-30 dB,
pauses at commas 40 dB and more, between sentences 60 dB and more."""
MAX_INTERNAL_PAUSE = 0.3
"""Silences up to this long (s) stay inside a turn; longer ones split it."""
SPEECH_LEVEL_DBFS = -26.0
"""RMS level (dBFS) of an utterance's speech frames before the per-speaker offset."""


def _frame_energy_db(samples: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    win, hop = int(round(FRAME_LENGTH * sr)), int(round(FRAME_SHIFT * sr))
    if len(samples) < win:
        samples = np.pad(samples, (0, win - len(samples)))
    n = 1 + (len(samples) - win) // hop
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), win)[::hop][:n]
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def _speech_regions(samples: np.ndarray, sr: int = SAMPLE_RATE,
                    noise_margin_db: Optional[float] = None) -> list[tuple[float, float]]:
    """Speech regions (s) of one clean utterance: frames within SPEECH_THRESHOLD_DB of the
    loudest, gaps up to MAX_INTERNAL_PAUSE bridged. Each speech frame stands for its
    central FRAME_SHIFT. With `noise_margin_db`, frames must also be that far above the
    noise floor (the 5th-percentile frame energy: a long recorded stretch, whose floor
    lies only 33-37 dB under its loudest frame in AMI's meeting rooms)."""
    energy = _frame_energy_db(samples, sr)
    threshold = energy.max() - SPEECH_THRESHOLD_DB
    if noise_margin_db is not None:
        threshold = max(threshold, float(np.percentile(energy, 5)) + noise_margin_db)
    active = energy > threshold
    if energy.max() < -100 or not active.any():
        return []
    idx = np.flatnonzero(active)
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    offset = (FRAME_LENGTH - FRAME_SHIFT) / 2
    regions: list[list[float]] = []
    for a, b in zip(starts, ends):
        start, end = a * FRAME_SHIFT + offset, (b + 1) * FRAME_SHIFT + offset
        if regions and start - regions[-1][1] <= MAX_INTERNAL_PAUSE:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    duration = len(samples) / sr
    return [(max(0.0, s), min(duration, e)) for s, e in regions]
