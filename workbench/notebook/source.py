"""What a recording streams (`workbench.notebook.client.AsyncClient.record`): a file, an
array or byte chunks, as the chunks to send and how fast they play."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from workbench.engine.audio import SAMPLE_RATE, decode_file, load_audio, to_int16

__all__ = ["END", "Source", "next_chunk", "prepare_source"]

END = object()
"""What `next_chunk` gives once the chunks are all sent."""

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


async def next_chunk(chunks: Iterator[bytes], stopped: Callable[[], bool] = lambda: False) -> Any:
    """The next of a caller's chunks (`END` after the last, or once `stopped()` while it
    waits), read on a thread of its own, a daemon: a source that waits for its data (a
    sound card) holds neither the client's event loop nor, never answering, the
    interpreter's exit (a pool's threads are joined there). What the source raises is
    raised here. A read `stopped` gives up on stays with its thread: the chunk it gets is
    dropped, and the iterator is not for another recording."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, failed: bool) -> None:
        if not future.done():
            (future.set_exception if failed else future.set_result)(value)

    def read() -> None:
        try:
            value, failed = next(chunks, END), False
        except BaseException as exc:  # (raised where the recording awaits it)
            value, failed = exc, True
        try:
            loop.call_soon_threadsafe(settle, value, failed)
        except RuntimeError:  # the loop closed meanwhile
            pass

    threading.Thread(target=read, name="chunk source", daemon=True).start()
    while not (await asyncio.wait({future}, timeout=0.1))[0]:
        if stopped():  # (a source waiting for its data: a Stop or a limit ends it at once)
            return END
    return future.result()
