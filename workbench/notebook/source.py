"""What a recording streams (`workbench.notebook.client.AsyncClient.record`): a file, an
array or byte chunks, as the chunks to send and how fast they play."""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Union

import numpy as np

from workbench.engine.audio import SAMPLE_RATE, decode_file, load_audio, to_int16

__all__ = ["Source", "prepare_source"]

Source = Union[str, os.PathLike, np.ndarray, Iterable[bytes]]
"""What :meth:`AsyncClient.record` streams: a file, a 16 kHz array (float in [-1, 1] or any
integer type at its full range; a (n, channels) or (channels, n) array is mixed down, as
`workbench.engine.audio.load_audio` reads it), or byte chunks."""


def _pcm_chunks(samples: np.ndarray, chunk_seconds: float) -> Iterable[bytes]:
    pcm = to_int16(samples).tobytes()
    step = max(2, int(SAMPLE_RATE * chunk_seconds) * 2)
    return (pcm[i : i + step] for i in range(0, len(pcm), step))


def prepare_source(source: Source, chunk_seconds: float, start: dict[str, Any]
                   ) -> tuple[Iterable[bytes], Optional[float]]:
    """Chunks to send and the seconds of audio per byte (for real-time pacing) if known;
    `start` (the ``start`` message) gets the input format of a file or an array."""
    if isinstance(source, np.ndarray):
        # as load_audio reads arrays: any integer type scaled to its full range, a
        # (n, 2) or (2, n) array mixed down (reshape(-1) sent stereo as twice the audio)
        samples = load_audio(source)
        start.update(input_format="pcm_s16le", sample_rate=SAMPLE_RATE, channels=1)
        return _pcm_chunks(samples, chunk_seconds), 1 / (2 * SAMPLE_RATE)
    if isinstance(source, (str, os.PathLike)):
        samples = decode_file(source)
        start.update(input_format="pcm_s16le", sample_rate=SAMPLE_RATE, channels=1)
        return _pcm_chunks(samples, chunk_seconds), 1 / (2 * SAMPLE_RATE)
    pace = None
    rate, channels = start.get("sample_rate", SAMPLE_RATE), start.get("channels", 1)
    if (start.get("input_format") == "pcm_s16le" and isinstance(rate, int)
            and isinstance(channels, int) and rate > 0 and channels > 0):
        pace = 1 / (2 * rate * channels)  # (other values: the server's `start` refuses them)
    return source, pace
