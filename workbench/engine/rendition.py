"""Renditions: the MP4 (AAC-LC) copy of a canonical WAV, encoded block by block."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

from workbench.engine.audio import SAMPLE_RATE, iter_decode
from workbench.engine.durable import as_new_file, replace_durably


def _blocks_of(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of 1-D blocks into blocks of exactly ``size`` (the last may be shorter)."""
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(block)
        if held < size:
            continue
        joined = np.concatenate(pending)
        cut = len(joined) - len(joined) % size
        for i in range(0, cut, size):
            yield joined[i : i + size]
        pending, held = [joined[cut:]], len(joined) - cut
    if held:
        yield np.concatenate(pending)


def rendition_current(wav: Path, rendition: Path) -> bool:
    """The rendition exists and was made after the WAV was last written."""
    try:
        return rendition.stat().st_mtime_ns >= wav.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def encode_mp4(wav_path: Union[str, os.PathLike], mp4_path: Union[str, os.PathLike],
               bitrate: int = 64000, keep: Optional[Callable[[], bool]] = None
               ) -> Optional[Path]:
    """Encode a canonical WAV as MP4 (AAC-LC, mono, 16 kHz), atomically, block by block
    (memory independent of the recording's length).  `keep` is asked just before the
    encoded file replaces `mp4_path`: False (its WAV was rewritten meanwhile) drops it,
    and None is returned."""
    import av

    mp4_path = Path(mp4_path)
    frame_size = 1024
    fd, name = tempfile.mkstemp(dir=mp4_path.parent, prefix=f".{mp4_path.stem}.", suffix=".tmp.mp4")
    as_new_file(fd)
    os.close(fd)
    tmp = Path(name)  # unique: concurrent requests for one rendition never share a file
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
            stream.bit_rate = bitrate
            pts = 0
            for block in _blocks_of(iter_decode(wav_path), frame_size * 16):
                frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
                frame.sample_rate = SAMPLE_RATE
                frame.pts = pts
                pts += len(block)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if keep is not None and not keep():
            tmp.unlink()
            return None
        replace_durably(tmp, mp4_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return mp4_path
