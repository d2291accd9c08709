"""Audio input and output: container detection, decoding to the canonical form, renditions.

The canonical form of every recording and every file the pipeline reads is
16 kHz, mono, 16-bit PCM (:data:`SAMPLE_RATE`).  What counts as audio input is
:data:`AudioInput`: a path to a file in one of the :data:`CONTAINERS` (WAV, WebM, Ogg,
MP4/AAC, MP3, FLAC; found from its first bytes), or a NumPy array already at 16 kHz.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generator, Iterable, Iterator, Optional, Union

import numpy as np

from workbench.engine.durable import as_new_file, atomic_write, replace_durably

SAMPLE_RATE = 16000
"""Sample rate of canonical audio (Hz)."""

AudioInput = Union[str, os.PathLike, np.ndarray]
"""Audio the workbench accepts: a file path (WAV, WebM, Ogg, MP4/AAC, MP3 or FLAC) or a
mono float32/int16 NumPy array sampled at :data:`SAMPLE_RATE`."""

CONTAINERS = ("wav", "pcm_s16le", "webm", "ogg", "mp4", "mp3", "flac")
"""Input containers a recording may declare in ``start`` (``input_format``)."""


class AudioDecodeError(ValueError):
    """Raised when bytes cannot be decoded as audio; the message is safe to show a client."""


@dataclass(frozen=True)
class InputFormat:
    """How the bytes of a recording are encoded.

    ``container`` is one of :data:`CONTAINERS` or ``None`` when it is still
    unknown (detected from the first bytes).  ``sample_rate`` and ``channels``
    matter only for raw PCM.
    """

    container: Optional[str] = None
    sample_rate: int = SAMPLE_RATE
    channels: int = 1

    @property
    def bytes_per_second(self) -> Optional[int]:
        """Byte rate when the duration follows from the byte count (raw PCM), else None."""
        if self.container == "pcm_s16le":
            return self.sample_rate * self.channels * 2
        return None


def is_adts(head: bytes) -> bool:
    """Do these bytes start as raw ADTS AAC (an "aac" input, kept as container "mp4")?"""
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0


def detect_container(head: bytes) -> Optional[str]:
    """Guess the container from the first bytes of a stream (None when unknown)."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"  # EBML: WebM or Matroska
    if head[:4] == b"OggS":
        return "ogg"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"fLaC":
        return "flac"
    if is_adts(head):
        return "mp4"  # raw AAC: the "aac" input format, decoded with FFmpeg's aac demuxer
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0
                              and (head[1] & 0x06) != 0):
        return "mp3"
    return None


# --------------------------------------------------------------------------- decoding


def _pcm_bytes_to_float(data: bytes, sample_width: int, channels: int, is_float: bool) -> np.ndarray:
    frame = sample_width * channels
    data = data[: len(data) - len(data) % frame]
    if is_float:
        dtype = "<f4" if sample_width == 4 else "<f8"
        x = np.frombuffer(data, dtype=dtype)
        if sample_width == 8:  # a float64 beyond float32's range would overflow to inf
            finite = np.finfo(np.float32).max
            x = np.clip(x, -finite, finite)
        x = x.astype(np.float32)
    elif sample_width == 1:
        x = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif sample_width == 2:
        x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    elif sample_width == 3:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v & 0x800000, v - 0x1000000, v)
        x = v.astype(np.float32) / 8388608.0
    elif sample_width == 4:
        x = np.frombuffer(data, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise AudioDecodeError(f"Unsupported WAV sample width: {sample_width * 8} bits")
    if is_float:  # a NaN would spread over the resampler's whole kernel
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return x.reshape(-1, channels)


@dataclass(frozen=True)
class WavHeader:
    """The parts of a RIFF/WAVE header needed to read its PCM payload."""

    sample_rate: int
    channels: int
    sample_width: int
    is_float: bool
    data_offset: int


# Sample sizes readable per WAV format tag: integer PCM (1) and IEEE float (3).
_WAV_BITS = {1: (8, 16, 24, 32), 3: (32, 64)}
# Encodings of a fixed byte rate: `block align` bytes per sample frame (PCM, float, A-law,
# mu-law), or the header's byte rate for blocks of fixed samples (MS/IMA ADPCM, GSM 6.10).
_WAV_FRAME_TAGS, _WAV_BLOCK_TAGS = (1, 3, 6, 7), (2, 0x11, 0x31)


def _wav_fmt(head: bytes, magics: tuple = (b"RIFF",)) -> Optional[tuple[tuple[int, ...], int]]:
    """The 'fmt ' fields (tag, channels, rate, byte rate, block align, bits) of a streamed
    WAV and where its data begins; None while `head` does not reach the data chunk."""
    if len(head) < 12 or head[:4] not in magics or head[8:12] != b"WAVE":
        raise AudioDecodeError("Not a RIFF/WAVE stream")
    pos = 12
    fmt: Optional[tuple[int, ...]] = None
    while pos + 8 <= len(head):
        cid = head[pos : pos + 4]
        (size,) = struct.unpack("<I", head[pos + 4 : pos + 8])
        body = pos + 8
        if cid == b"fmt ":
            if body + 16 > len(head):
                return None
            fmt = struct.unpack("<HHIIHH", head[body : body + 16])
            if fmt[0] == 0xFFFE and body + 26 <= len(head):  # WAVE_FORMAT_EXTENSIBLE
                fmt = struct.unpack("<H", head[body + 24 : body + 26]) + fmt[1:]
        elif cid == b"data":
            if fmt is None:
                raise AudioDecodeError("WAV stream has no 'fmt ' chunk before its data")
            return fmt, body
        pos = body + size + (size & 1)
    return None


def parse_wav_header(head: bytes) -> Optional[WavHeader]:
    """Parse a streamed WAV header, tolerating the bogus sizes live writers put there.

    Returns None while ``head`` does not yet reach the ``data`` chunk; raises
    :class:`AudioDecodeError` for a header that cannot be PCM.
    """
    found = _wav_fmt(head)
    if found is None:
        return None
    (tag, channels, rate, _, _, bits), offset = found
    if channels < 1 or rate < 1000 or bits not in _WAV_BITS.get(tag, ()):
        raise AudioDecodeError(f"Unsupported WAV encoding (format tag {tag}, {bits} bits)")
    return WavHeader(rate, channels, bits // 8, tag == 3, offset)


def wav_byte_rate(head: bytes) -> Optional[tuple[int, int]]:
    """Bytes per second and data offset of a streamed WAV (RIFF or RF64) of a fixed byte rate
    (PCM, float, A-law, mu-law, ADPCM, GSM): its duration follows from its size.  None while
    ``head`` does not reach the ``data`` chunk; :class:`AudioDecodeError` for the others."""
    found = _wav_fmt(head, (b"RIFF", b"RF64"))
    if found is None:
        return None
    (tag, channels, rate, byte_rate, align, bits), offset = found
    if bits in _WAV_BITS.get(tag, ()):  # read as PCM (`parse_wav_header`), align or not
        align = channels * bits // 8
    if tag in _WAV_FRAME_TAGS and rate * align > 0:
        return rate * align, offset
    if tag in _WAV_BLOCK_TAGS and byte_rate > 0:
        return byte_rate, offset
    raise AudioDecodeError(f"WAV encoding without a fixed byte rate (format tag {tag})")


def _wav_payload(f: BinaryIO) -> tuple[WavHeader, Optional[int]]:
    """The header of the WAV file `f` and its data chunk's size in bytes: the declared
    size when another chunk follows it (a LIST or id3 trailer is no audio) or only the
    pad byte of an odd size, else None: the data runs to the end (streamed writers leave
    0, 0xFFFFFFFF or a stale size)."""
    f.seek(0)
    header = parse_wav_header(f.read(1 << 16))
    if header is None:
        raise AudioDecodeError("WAV stream ended before its audio data began")
    f.seek(header.data_offset - 4)
    (size,) = struct.unpack("<I", f.read(4))
    end = header.data_offset + size + (size & 1)
    f.seek(end)
    tail = f.read(8)
    left = os.fstat(f.fileno()).st_size - end - 8
    follows = (len(tail) == 8 and all(32 <= c < 127 for c in tail[:4])
               and struct.unpack("<I", tail[4:])[0] <= left + 1)
    # the pad byte RIFF puts after data of an odd size, ending the file, is no audio
    # (an 8-bit WAV of an odd length gained a full-scale click)
    padded = size & 1 and left == -8
    f.seek(header.data_offset)
    return header, size if follows or padded else None


# FFmpeg demuxer per container: naming it stops FFmpeg from probing the bytes as
# something else (e.g. an `ffconcat` script that would open other files).
DEMUXERS = {"webm": "matroska", "ogg": "ogg", "mp4": "mov", "mp3": "mp3", "flac": "flac",
            "wav": "wav"}


def ffmpeg_demuxer(container: Optional[str], head: bytes) -> Optional[str]:
    """FFmpeg's demuxer for `container` whose stream starts with `head` (None: let FFmpeg
    probe); raw ADTS AAC, kept as container "mp4", has no MP4 box to find."""
    if container == "mp4" and is_adts(head):
        return "aac"
    return DEMUXERS.get(container or "")


def _ffmpeg_reason(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return str(reason).rstrip(".")


_UNRECOGNISED = ("Audio could not be decoded: unrecognised container (send WAV, WebM/Opus, "
                 "Ogg/Opus, MP4/AAC, or declare raw PCM with input_format 'pcm_s16le')")


def _file_container(path: Union[str, os.PathLike], fmt: Optional[InputFormat]
                    ) -> tuple[Path, InputFormat, Optional[str]]:
    """The file's path, its format (declared or empty) and its container: declared, else
    detected from the first bytes (None when unrecognised)."""
    path, fmt = Path(path), fmt or InputFormat()
    container = fmt.container
    if container is None:
        with open(path, "rb") as f:
            container = detect_container(f.read(64))
    return path, fmt, container


def decode_file(path: Union[str, os.PathLike], fmt: Optional[InputFormat] = None) -> np.ndarray:
    """Decode one file to mono float32 at :data:`SAMPLE_RATE`: :func:`iter_decode`'s blocks
    joined.

    ``fmt`` describes the bytes when known (raw PCM needs it); otherwise the
    container is detected from the first bytes.
    """
    blocks = list(iter_decode(path, fmt))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def decode_parts(parts: Iterable[tuple[Path, InputFormat]]) -> np.ndarray:
    """Decode the parts of a recording (one per start..stop span) and join them in order."""
    decoded = [decode_file(path, fmt) for path, fmt in parts]
    return np.concatenate(decoded) if decoded else np.zeros(0, dtype=np.float32)


BLOCK_FRAMES = 1 << 16
"""Input frames read per block when decoding a file block by block (:func:`iter_decode`)."""


def iter_decode(path: Union[str, os.PathLike], fmt: Optional[InputFormat] = None,
                block_frames: int = BLOCK_FRAMES, notes: Optional[list[str]] = None
                ) -> Generator[np.ndarray, None, None]:
    """Decode one file block by block: mono float32 blocks at :data:`SAMPLE_RATE`.

    Memory stays independent of the file's length (the blocks joined are :func:`decode_file`).
    What FFmpeg left out of a file that decodes in part is told in ``notes``.
    """
    path, fmt, container = _file_container(path, fmt)
    if path.stat().st_size == 0:
        return
    if container == "pcm_s16le":
        with open(path, "rb") as f:
            yield from _iter_pcm(f, 2, fmt.channels, False, fmt.sample_rate, block_frames)
    elif container == "wav":
        with open(path, "rb") as f:
            try:
                header, size = _wav_payload(f)
            except AudioDecodeError:  # RF64, mu-law, ADPCM...: FFmpeg reads them
                header = None
            if header is not None:
                yield from _iter_pcm(f, header.sample_width, header.channels, header.is_float,
                                     header.sample_rate, block_frames, size)
        if header is None:
            yield from _iter_ffmpeg(path, container, notes)
    elif container is None:
        raise AudioDecodeError(_UNRECOGNISED)
    else:
        yield from _iter_ffmpeg(path, container, notes)


def _iter_pcm(f: BinaryIO, sample_width: int, channels: int, is_float: bool, sample_rate: int,
              block_frames: int, size: Optional[int] = None) -> Iterator[np.ndarray]:
    """PCM from the current position of ``f`` to its end (or `size` bytes on), as mono
    float32 blocks at 16 kHz."""
    frame = sample_width * channels
    # A header may claim thousands of channels: bound the bytes read at once too.
    block_bytes = frame * max(1, min(block_frames, (1 << 22) // frame))
    resampler = None
    if sample_rate != SAMPLE_RATE:
        import soxr

        resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32",
                                        quality="HQ")
    left = size
    while True:
        data = f.read(block_bytes if left is None else min(block_bytes, left))
        if left is not None:
            left -= len(data)
        x = _pcm_bytes_to_float(data, sample_width, channels, is_float)
        mono = x.mean(axis=1).astype(np.float32, copy=False)
        if resampler is None:
            if mono.size:
                yield mono
        else:
            out = resampler.resample_chunk(mono, last=not data)
            if out.size:
                yield out
        if not data:
            return


def _iter_ffmpeg(path: Path, container: Optional[str] = None,
                 notes: Optional[list[str]] = None) -> Iterator[np.ndarray]:
    """Decode any container with PyAV (FFmpeg) to mono float32 blocks at 16 kHz: every
    channel resampled, then averaged as the PCM path does (FFmpeg's own downmix keeps 0.707
    of each of two channels: 3 dB louder, clipping).  What is left out beyond a torn last
    packet is told in `notes`."""
    import av

    report: dict[str, Any] = {"skipped": 0, "stopped": None, "failure": None}
    frames = _audio_frames(path, container, report)
    setup, resampler, done = None, None, 0
    try:
        for frame in itertools.chain(frames, [None]):
            key = frame and (frame.format.name, frame.layout.name, frame.sample_rate)
            outs: list[Any] = resampler.resample(None) if resampler and key != setup else []
            if key != setup:  # a resampler takes one format: flushed above, made anew
                setup, resampler = key, frame and av.AudioResampler(
                    format="fltp", layout=frame.layout, rate=SAMPLE_RATE)
            for out in outs + (resampler.resample(frame) if frame and resampler else []):
                done += out.samples
                yield out.to_ndarray().mean(axis=0)
    finally:
        frames.close()
        if done and notes is not None and report["skipped"]:
            notes.append(f"{report['skipped']} packet(s) FFmpeg could not decode were left out")
        if done and notes is not None and report["stopped"]:
            notes.append(f"decoding stopped at {done / SAMPLE_RATE:.2f} s "
                         f"({_ffmpeg_reason(report['stopped'])}); the rest was left out")
    if not done:
        failure = report["stopped"] or report["failure"]
        raise AudioDecodeError(f"Audio could not be decoded ({_ffmpeg_reason(failure)})"
                               if failure else "The stream contains no decodable audio")


def _audio_frames(path: Path, container: Optional[str], report: dict[str, Any]) -> Generator[Any, None, None]:
    """The frames of the file's first audio stream, packet by packet as the ffmpeg command
    decodes: a packet that does not decode is skipped (counted in ``report["skipped"]``
    unless it is the last: a recording cut mid-packet); a demuxer that cannot go on ends it
    (``report["stopped"]``) but at the next link of a chained Ogg, opened anew (FFmpeg's
    Ogg demuxer stops at a link of another layout)."""
    import av

    start: Optional[int] = 0
    while start is not None:
        try:
            with open(path, "rb") as f:
                demuxer = ffmpeg_demuxer(container, f.read(2))
            media = av.open(str(path), format=demuxer, options={"skip_initial_bytes": str(start)})
        except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:  # (a part gone too)
            if start:
                return
            raise AudioDecodeError(f"Audio could not be decoded ({_ffmpeg_reason(exc)})") from None
        with media:
            if not media.streams.audio:
                if start:
                    return
                raise AudioDecodeError("The stream contains no audio track")
            stream, stuck, last, failed = media.streams.audio[0], 0, start, False
            report["stopped"] = None
            while stuck < 2:
                try:
                    for packet in media.demux(stream):
                        if packet.size:
                            stuck, last = 0, max(last, packet.pos or 0)
                            report["skipped"] += failed  # a packet after it: a gap
                        try:
                            yield from packet.decode()
                            failed = False
                        except (av.error.FFmpegError, ValueError) as exc:
                            failed, report["failure"] = bool(packet.size), exc
                    break
                except (av.error.FFmpegError, ValueError) as exc:  # resyncs, or fails again
                    stuck += 1
                    report["stopped"] = exc if stuck > 1 else None
        start = _next_ogg_link(path, last) if report["stopped"] and demuxer == "ogg" else None


def _next_ogg_link(path: Path, after: int) -> Optional[int]:
    """Offset of the first Ogg page beginning a logical stream after byte `after`: the
    next link of a chained Ogg."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        i = m.find(b"OggS\x00", after + 1)
        while 0 <= i < len(m) - 5 and not m[i + 5] & 2:  # a page without the BOS flag
            i = m.find(b"OggS\x00", i + 1)
        return i if 0 <= i < len(m) - 5 else None


PARTLY_DECODED = "Audio decoded in part: "  # begins the error of a part kept in part


@dataclass(frozen=True)
class DecodedWav:
    """What :func:`decode_to_wav` wrote: ``frames`` samples at :data:`SAMPLE_RATE`, and
    whether the duration limit cut the decoded audio short (``truncated``)."""

    frames: int
    truncated: bool
    # (position in `parts`, message) of each part that did not decode (with ``skip_failed``)
    # or decoded in part (FFmpeg left packets out, or stopped before the part's end)
    failed: tuple[tuple[int, str], ...] = ()

    @property
    def duration_seconds(self) -> float:
        return self.frames / SAMPLE_RATE


def decode_to_wav(parts: Iterable[tuple[Path, InputFormat]], path: Union[str, os.PathLike],
                  max_seconds: Optional[float] = None,
                  block_frames: int = BLOCK_FRAMES, skip_failed: bool = False) -> DecodedWav:
    """Decode the parts of a recording in order into one canonical WAV, block by block.

    The bytes are those of ``write_wav(path, decode_parts(parts))`` (without
    `skip_failed`), in memory independent of the recording's length.  With ``max_seconds`` the WAV holds at
    most that much audio (the rest is not decoded) and ``truncated`` says whether
    anything was left out.  With `skip_failed` a part that raises `AudioDecodeError`
    keeps what it decoded before the error (mostly nothing) and the others go on
    (``failed`` lists it, and nothing is raised; when parts failed and nothing decoded,
    ``path`` is left as it was).  A part FFmpeg decoded in part is in ``failed`` too, saying
    what was left out.  Atomic: on an error the previous ``path`` is untouched.
    """
    limit = None if max_seconds is None else max(0, int(max_seconds * SAMPLE_RATE))
    frames = 0
    truncated = False
    failed: list[tuple[int, str]] = []
    with WavWriter(path) as out:
        for position, (part, fmt) in enumerate(parts):
            notes: list[str] = []
            blocks = iter_decode(part, fmt, block_frames, notes)
            try:
                for block in blocks:
                    if limit is not None and frames + len(block) > limit:
                        out.write(block[: limit - frames])
                        frames, truncated = limit, True
                        break
                    out.write(block)
                    frames += len(block)
            except AudioDecodeError as exc:
                if not skip_failed:
                    raise
                failed.append((position, str(exc)))
            finally:
                blocks.close()  # closes the FFmpeg demuxer of a part left early
            if notes and (not failed or failed[-1][0] != position):
                failed.append((position, PARTLY_DECODED + "; ".join(notes)))
            if truncated:
                break
        if failed and frames == 0:
            out.abort()  # nothing to show for it: the previous file stays
    return DecodedWav(frames, truncated, tuple(failed))


def load_audio(audio: AudioInput) -> np.ndarray:
    """Return :data:`AudioInput` as mono float32 samples at :data:`SAMPLE_RATE`."""
    if isinstance(audio, np.ndarray):
        x = audio
        if np.issubdtype(x.dtype, np.integer):  # int16, int32...: full scale is 1.0
            info = np.iinfo(x.dtype)
            x = (x.astype(np.float64) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
        if x.ndim == 2:  # channels last or first: mixed down
            x = x.mean(axis=0 if x.shape[0] < x.shape[1] else 1)
        elif x.ndim > 2:
            raise ValueError(f"audio arrays are (samples,) or (samples, channels), not {x.shape}")
        return np.ascontiguousarray(x, dtype=np.float32)
    return decode_file(audio)



def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to 16-bit PCM (clipped)."""
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2")


def _wav_header(data_bytes: int, sample_rate: int) -> bytes:
    """The canonical 44-byte header of mono 16-bit PCM holding ``data_bytes``."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1, sample_rate,
        sample_rate * 2, 2, 16, b"data", data_bytes,
    )


def write_wav(path: Union[str, os.PathLike], samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono 16-bit PCM WAV atomically (temp file, fsync, rename)."""
    path = Path(path)
    pcm = samples if samples.dtype == np.int16 else to_int16(samples)
    data = pcm.astype("<i2").tobytes()
    atomic_write(path, _wav_header(len(data), sample_rate) + data)
    return path


class WavWriter:
    """A mono 16-bit PCM WAV written block by block, atomically.

    Blocks go to a temporary file beside ``path`` behind a placeholder header;
    :meth:`commit` fixes the header's sizes, fsyncs and renames.  As a context
    manager it commits on success and removes the temporary file on an error.
    """

    def __init__(self, path: Union[str, os.PathLike], sample_rate: int = SAMPLE_RATE) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.data_bytes = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        as_new_file(fd)
        self._tmp = Path(tmp)
        self._file: Optional[BinaryIO] = os.fdopen(fd, "wb")
        self._file.write(_wav_header(0, sample_rate))

    def write(self, samples: np.ndarray) -> None:
        """Append float samples in [-1, 1] (or int16 PCM)."""
        assert self._file is not None, "WavWriter is closed"
        pcm = samples if samples.dtype == np.int16 else to_int16(samples)
        data = pcm.astype("<i2", copy=False).tobytes()
        self._file.write(data)
        self.data_bytes += len(data)

    def commit(self) -> Path:
        """Finish the header, fsync and move the file into place."""
        assert self._file is not None, "WavWriter is closed"
        f, self._file = self._file, None
        try:
            f.seek(0)
            f.write(_wav_header(self.data_bytes, self.sample_rate))
            f.flush()
            os.fsync(f.fileno())
            f.close()
            replace_durably(self._tmp, self.path)
        except BaseException:
            f.close()
            self._tmp.unlink(missing_ok=True)
            raise
        return self.path

    def abort(self) -> None:
        """Drop what was written; ``path`` keeps its previous content."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "WavWriter":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and self._file is not None:  # not committed or aborted yet
            self.commit()
        else:
            self.abort()


def wav_duration(path: Union[str, os.PathLike]) -> float:
    """Duration in seconds of a PCM WAV file, read from its header and size."""
    with open(path, "rb") as f:
        if parse_wav_header(f.read(1 << 16)) is None:
            return 0.0
        header, size = _wav_payload(f)
        payload = os.fstat(f.fileno()).st_size - header.data_offset if size is None else size
    return payload / (header.sample_rate * header.channels * header.sample_width)
