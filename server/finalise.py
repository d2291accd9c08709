"""Finalisation: a session's raw parts decoded into its canonical ``audio.wav``.

Finalising decodes all parts in order into the canonical 16 kHz mono ``audio.wav``,
block by block (memory independent of the recording's length), holding at most the
duration limit.  :func:`wav_intact` tells whether an ``audio.wav`` survived a crash.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path
from typing import Optional

from workbench.engine.audio import (
    AudioDecodeError,
    DecodedWav,
    InputFormat,
    decode_to_wav,
    detect_container,
    parse_wav_header,
)
from workbench.engine.durable import sync_folder

from .sessions import Session, SessionStore

log = logging.getLogger("server.finalise")


# First bytes a declared container must start with.  Bytes that do not are never
# handed to FFmpeg's format probing, which would otherwise pick whatever demuxer
# matches them (a text playlist such as ffconcat reads other files).
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "webm": (b"\x1a\x45\xdf\xa3",),
    "ogg": (b"OggS",),
    "flac": (b"fLaC",),
}


def signature_ok(head: bytes, container: str) -> bool:
    """Do the first bytes of a stream declared as `container` start as that container does?"""
    detected = detect_container(head)
    if container in ("mp4", "mp3"):  # mp4: an 'ftyp' box, or raw ADTS AAC (input "aac")
        return detected == container
    prefixes = _SIGNATURES.get(container)
    return prefixes is None or head.startswith(prefixes)


def signature_error(path: Path, fmt: InputFormat) -> Optional[str]:
    """Why a part's bytes are not the container it declared (None: they may be)."""
    if fmt.container in (None, "wav", "pcm_s16le"):
        return None  # detected from the bytes, or decoded without FFmpeg
    with open(path, "rb") as f:
        head = f.read(64)
    if head and not signature_ok(head, fmt.container):
        return (f"Audio could not be decoded: the bytes are not {fmt.container} "
                "(the declared input_format)")
    return None


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
    on disk untouched).  A part that does not decode (bytes of another format, a resumed
    connection that dropped inside its container's header) adds nothing to ``audio.wav``
    beyond what decoded before its error, the other parts go on, and the part's ``error``
    says why (None for those that decoded); a later stop tries it again.  Blocking
    (decoding): run it in a thread or a worker.  Raises :class:`AudioDecodeError` with a
    client-safe message (the first part's reason) when parts failed and nothing decoded;
    the raw parts stay on disk either way, and ``audio.wav`` is then untouched.
    """
    present = [(part, store.session_dir(session.id) / part.filename) for part in session.parts]
    present = [(part, path) for part, path in present if path.exists()]
    errors: dict[int, Optional[str]] = {
        part.index: signature_error(path, part.input_format) for part, path in present}
    decodable = [(part, path) for part, path in present if errors[part.index] is None]
    if present and not decodable:
        store.set_part_errors(session.id, errors)
        raise AudioDecodeError(next(e for e in errors.values() if e))
    # the MP4 of older audio goes before a new audio.wav comes (a crash between the two
    # would leave it beside the new audio, and a run would take it for a rendition of it)
    # and again after (a download meanwhile may have encoded the older audio.wav again)
    mp4 = store.audio_path(session.id, "mp4")
    _remove_durably(mp4)
    # (when parts fail and nothing decodes, decode_to_wav leaves audio.wav as it was)
    decoded = decode_to_wav([(path, part.input_format) for part, path in decodable],
                            store.audio_path(session.id, "wav"), max_seconds, skip_failed=True)
    _remove_durably(mp4)
    for position, message in decoded.failed:
        errors[decodable[position][0].index] = message
    store.set_part_errors(session.id, errors)
    reasons = [e for e in errors.values() if e]
    if decoded.frames == 0 and reasons:
        raise AudioDecodeError(reasons[0])
    if decoded.truncated or session.audio_truncated:
        store.update_session(session.id, audio_truncated=decoded.truncated)
    skipped = sorted(i for i, e in errors.items() if e)
    log.log(logging.WARNING if skipped else logging.INFO,
            "Finalised audio for session %s: %.2f s from %d part(s)%s%s", session.id,
            decoded.duration_seconds, len(present),
            f", cut at the {max_seconds:g} s limit" if decoded.truncated else "",
            f"; part(s) {skipped} did not decode" if skipped else "")
    return decoded


def _remove_durably(path: Path) -> None:
    """Remove `path` if present, its folder fsynced after (a power loss could otherwise
    bring the file back)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    sync_folder(path.parent)


def finalise(store: SessionStore, session: Session, max_seconds: Optional[float] = None) -> float:
    """:func:`finalise_audio`, returning only the duration of ``audio.wav`` in seconds."""
    return finalise_audio(store, session, max_seconds).duration_seconds


async def finalise_async(store: SessionStore, session: Session,
                         max_seconds: Optional[float] = None) -> DecodedWav:
    """:func:`finalise_audio` in a thread: the event loop keeps serving while it decodes."""
    return await asyncio.to_thread(finalise_audio, store, session, max_seconds)
