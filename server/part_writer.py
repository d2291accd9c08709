"""The part writer: received audio bytes appended to disk as they arrive.

Each ``start``..``stop`` span of a session is one *part*: its bytes go, exactly
as received, to ``part-NNN.raw`` (append, flush per chunk, fsync on a cadence
and before every confirmation the client sees).  Turning the parts into
``audio.wav`` is :mod:`server.finalise`'s job.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Optional

from workbench.engine.audio import AudioDecodeError, InputFormat, detect_container, wav_byte_rate
from workbench.engine.durable import sync_folder

from .limits import chunk_seconds
from .sessions import Part

_HEAD_BYTES = 64  # enough to recognise every supported container


class PartWriter:
    """Writes one part of a recording: appends chunks and knows how much audio it holds."""

    def __init__(self, path: Path, part: Part, fsync_interval: float = 1.0) -> None:
        self.path = path
        self.part = part
        self.fsync_interval = fsync_interval
        self.started = time.monotonic()
        self._file: Optional[BinaryIO] = None
        self._head = b""
        self._wav_bytes_per_second: Optional[int] = None
        self._wav_offset = 0
        self._last_sync = time.monotonic()
        self._dirty = False
        self._inspecting = True
        self._size = 0

    @property
    def input_format(self) -> InputFormat:
        return self.part.input_format

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered: a write that fails leaves nothing behind in a buffer for later
        self._file = open(self.path, "ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size
        # the part's name and its session's folder are on disk before any chunk is
        # confirmed (the file's own fsyncs do not make its directory entry durable)
        sync_folder(self.path.parent)
        sync_folder(self.path.parent.parent)

    def append(self, data: bytes, sync: bool = False) -> None:
        """Append one chunk, on stable storage before returning when ``sync`` (blocking:
        call from a thread). A chunk that cannot be written whole (disk full) adds
        nothing: the file is cut back to the chunks accepted before it. So does one whose
        fsync fails (an I/O error, a quota met at fsync): refused, it is resent, and would
        be in the file twice had it stayed."""
        assert self._file is not None, "part writer is closed"
        view = memoryview(data)
        try:
            while view:
                written = self._file.write(view)
                if not written:
                    raise OSError("the chunk could not be written")
                view = view[written:]
            self._dirty = True
            if sync or time.monotonic() - self._last_sync >= self.fsync_interval:
                self.sync()
        except BaseException:
            try:
                os.ftruncate(self._file.fileno(), self._size)
            except OSError:  # the chunk is refused either way; recovery trusts the file
                pass
            raise
        self._size += len(data)
        self.part.bytes += len(data)
        if self._inspecting:
            self._inspect(data)

    def _inspect(self, data: bytes) -> None:
        """Detect the container and, for WAV, the byte rate from the first bytes (of every
        encoding with a fixed byte rate: PCM, but also A-law, mu-law, ADPCM, GSM)."""
        self._head += data[: (1 << 12) - len(self._head)]
        if self.part.container is None:
            if len(self._head) < _HEAD_BYTES:
                return
            self.part = replace(self.part, container=detect_container(self._head))
        if self.part.container == "wav":
            if len(self._head) < 12 and any(m[:len(self._head)] == self._head[:4]
                                            for m in (b"RIFF", b"RF64")):
                return  # the header comes in pieces: not yet a RIFF/WAVE head to read
            try:
                rate = wav_byte_rate(self._head)
            except AudioDecodeError:
                rate = None
                self._inspecting = False
            if rate is not None:
                self._wav_bytes_per_second, self._wav_offset = rate
                self._inspecting = False
            elif len(self._head) >= 1 << 12:
                self._inspecting = False
        else:
            self._inspecting = False

    def sync(self) -> None:
        """Flush to stable storage (blocking)."""
        if self._file is not None and self._dirty:
            os.fsync(self._file.fileno())
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> Part:
        if self._file is not None:
            try:
                self.sync()
            finally:  # (a failed fsync must not leave the file open)
                self._file.close()
                self._file = None
        return self.part

    def audio_seconds(self) -> Optional[float]:
        """Seconds of audio received, when the byte count tells (PCM, WAV of a fixed byte
        rate), else None."""
        rate = self.input_format.bytes_per_second
        if rate:
            return self.part.bytes / rate
        if self._wav_bytes_per_second:
            return max(0, self.part.bytes - self._wav_offset) / self._wav_bytes_per_second
        return None

    def seconds_for(self, n_bytes: int) -> float:
        """Audio seconds in a chunk of ``n_bytes``: exact for PCM and WAV, a ceiling otherwise."""
        rate = self.input_format.bytes_per_second or self._wav_bytes_per_second
        return chunk_seconds(n_bytes, rate, self.part.container)

    def elapsed(self) -> float:
        """Recording duration for limits: audio seconds when known, else wall-clock seconds."""
        audio = self.audio_seconds()
        return audio if audio is not None else time.monotonic() - self.started
