"""Recording: received audio bytes appended to disk as they arrive, and finalisation.

Each ``start``..``stop`` span of a session is one *part*: its bytes go, exactly
as received, to ``part-NNN.raw`` (append, flush per chunk, fsync on a cadence
and before every confirmation the client sees).  Finalising decodes all parts
in order into the canonical 16 kHz mono ``audio.wav``, block by block (memory
independent of the recording's length), holding at most the duration limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Optional

from workbench.engine.audio import (
    AudioDecodeError,
    DecodedWav,
    InputFormat,
    decode_to_wav,
    detect_container,
    parse_wav_header,
)

from .limits import chunk_seconds
from .sessions import Part, Session, SessionStore, iter_part_paths

log = logging.getLogger("server.recorder")

_HEAD_BYTES = 64  # enough to recognise every supported container


class Recording:
    """One part being recorded: appends chunks and knows how much audio it holds."""

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

    @property
    def input_format(self) -> InputFormat:
        return self.part.input_format

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")

    def append(self, data: bytes, sync: bool = False) -> None:
        """Append one chunk, on stable storage before returning when ``sync`` (blocking:
        call from a thread)."""
        assert self._file is not None, "recording is closed"
        self._file.write(data)
        self._file.flush()
        self.part.bytes += len(data)
        self._dirty = True
        if self._inspecting:
            self._inspect(data)
        if sync or time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def _inspect(self, data: bytes) -> None:
        """Detect the container and, for WAV, the byte rate from the first bytes."""
        self._head += data[: (1 << 12) - len(self._head)]
        if self.part.container is None:
            if len(self._head) < _HEAD_BYTES:
                return
            self.part = replace(self.part, container=detect_container(self._head))
        if self.part.container == "wav":
            try:
                header = parse_wav_header(self._head)
            except AudioDecodeError:
                header = None
                self._inspecting = False
            if header is not None:
                self._wav_bytes_per_second = header.sample_rate * header.channels * header.sample_width
                self._wav_offset = header.data_offset
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
            self.sync()
            self._file.close()
            self._file = None
        return self.part

    def audio_seconds(self) -> Optional[float]:
        """Seconds of audio received, when the byte count tells (PCM and WAV), else None."""
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


# First bytes a declared container must start with.  Bytes that do not are never
# handed to FFmpeg's format probing, which would otherwise pick whatever demuxer
# matches them (a text playlist such as ffconcat reads other files).
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "webm": (b"\x1a\x45\xdf\xa3",),
    "ogg": (b"OggS",),
    "flac": (b"fLaC",),
}


def _signature_ok(head: bytes, container: str) -> bool:
    detected = detect_container(head)
    if container == "mp4":
        # MP4/M4A ('ftyp' box), or raw ADTS AAC (declared as "aac").
        return detected == "mp4" or (len(head) >= 2 and head[0] == 0xFF
                                     and (head[1] & 0xF6) == 0xF0)
    if container == "mp3":
        return detected == "mp3"
    prefixes = _SIGNATURES.get(container)
    return prefixes is None or head.startswith(prefixes)


def check_signatures(parts: list[tuple[Path, InputFormat]]) -> None:
    """Raise :class:`AudioDecodeError` when a part's bytes are not the container it declared."""
    for path, fmt in parts:
        if fmt.container in (None, "wav", "pcm_s16le"):
            continue  # detected from the bytes, or decoded without FFmpeg
        with open(path, "rb") as f:
            head = f.read(64)
        if head and not _signature_ok(head, fmt.container):
            raise AudioDecodeError(f"Audio could not be decoded: the bytes are not "
                                   f"{fmt.container} (the declared input_format)")


def wav_intact(path: Path) -> bool:
    """True when ``path`` is a complete canonical WAV: its header sizes match the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 12)
        size = path.stat().st_size
        header = parse_wav_header(head)
    except (OSError, AudioDecodeError):
        return False
    if header is None:
        return False
    (data_size,) = struct.unpack("<I", head[header.data_offset - 4 : header.data_offset])
    (riff_size,) = struct.unpack("<I", head[4:8])
    frame = header.channels * header.sample_width
    return (size == header.data_offset + data_size and riff_size == size - 8
            and data_size % frame == 0)


def finalise_audio(store: SessionStore, session: Session,
                   max_seconds: Optional[float] = None) -> DecodedWav:
    """Decode every part of ``session`` into ``audio.wav``, block by block.

    ``audio.wav`` holds at most ``max_seconds`` of audio (``truncated``, also stored
    as the session's ``audio_truncated``, tells when the parts hold more; they stay
    on disk untouched).  Blocking (decoding): run it
    in a thread or a worker.  Raises :class:`AudioDecodeError` with a client-safe
    message when nothing decodes; the raw parts stay on disk either way.
    """
    directory = store.session_dir(session.id)
    parts = [(p, f) for p, f in iter_part_paths(store, session) if p.exists()]
    check_signatures(parts)
    decoded = decode_to_wav(parts, directory / "audio.wav", max_seconds)
    (directory / "audio.mp4").unlink(missing_ok=True)  # stale rendition of older audio
    if decoded.truncated or session.audio_truncated:
        store.update_session(session.id, audio_truncated=decoded.truncated)
    log.info("Finalised audio for session %s: %.2f s from %d part(s)%s", session.id,
             decoded.duration_seconds, len(parts),
             f", cut at the {max_seconds:g} s limit" if decoded.truncated else "")
    return decoded


def finalise(store: SessionStore, session: Session, max_seconds: Optional[float] = None) -> float:
    """:func:`finalise_audio`, returning only the duration of ``audio.wav`` in seconds."""
    return finalise_audio(store, session, max_seconds).duration_seconds


async def finalise_async(store: SessionStore, session: Session,
                         max_seconds: Optional[float] = None) -> DecodedWav:
    """:func:`finalise_audio` in a thread: the event loop keeps serving while it decodes."""
    return await asyncio.to_thread(finalise_audio, store, session, max_seconds)
