"""The live worker: one process per recording with live results.

The server (:mod:`server.live`) spawns it niced, hands it the accepted bytes of the
recording as they are written, and forwards the events it sends back. The worker decodes
the bytes itself (PCM and WAV here, WebM/Ogg/MP3/FLAC/MP4 through an FFmpeg process fed
as they come) and runs a `workbench.live.LiveSession` (threaded) on the audio. At the end
it saves the live `Transcript` into the live run's folder. This is the only server module
that uses `workbench.live` (and so torch); the server's process imports it only to check
and echo the options (`live_config_error`, `live_run_options`: no model library), the
models run only inside this process.

Messages from the server (a pipe): ``("session", {session_id, offset, await_speakers})``
first (the worker loads its models before it reads it, so a worker can be started ahead
of a recording); ``("part", container, sample_rate, channels)`` a new part of the
recording begins; ``("bytes", data)``; ``("context", pcm)`` the recording's last seconds
before this live session (a resume; 16 kHz mono 16-bit), for the diarization's first
windows, and ``("said", text)`` the text said before it, for the ASR's prompt
(`LiveSession.prime`), both before ``speakers``; ``("speakers", known)`` the speakers of the
recording's last live session, to go on with (`SPEAKERS_FILE`), or None: the diarization
waits for this message when the session message says ``await_speakers``; ``("finish", run_dir,
until)`` the recording ended: flush, save (the transcript, cut at `until` s when not None,
and `SPEAKERS_FILE`), exit;
``("close",)`` exit without saving.

Messages to the server: ``("ready",)`` models loaded; ``("event", dict)`` a live event
(times from the recording's start, word indexes from 0: the server numbers them
over the recording); ``("pos", bytes_taken, decoded_seconds,
taken_seconds, work)`` twice a second (bytes read from the pipe, audio decoded, audio the
live engines have taken up, ASR passes + diarization steps done); ``("error", message)``
live results cannot go on; ``("done", summary)`` or ``("failed", message)`` after
``finish``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from workbench.engine.audio import (
    SAMPLE_RATE,
    AudioDecodeError,
    DEMUXERS,
    detect_container,
    ffmpeg_demuxer,
    parse_wav_header,
)
from workbench.engine.durable import atomic_write

from .finalise import signature_ok

log = logging.getLogger("server.live_worker")

# A saved live run's speakers (`LiveSession.known_speakers`), beside its transcript: the
# next live session of the same recording (a resume) goes on with them
SPEAKERS_FILE = "live-speakers.json"

Samples = Callable[[np.ndarray], None]

POS_INTERVAL = 0.5
# FFmpeg reading a pipe waits for more input on bytes it cannot make sense of: this much
# fed without a sample out means the stream is not audio it can decode.
UNDECODED_LIMIT = 1024 * 1024


# ---------------------------------------------------------------------- decoders


class PcmDecoder:
    """Interleaved PCM bytes to 16 kHz mono float32 as they come (any rate, 1-8 channels,
    16-bit integer, 32-bit float)."""

    def __init__(self, out: Samples, sample_rate: int, channels: int, sample_width: int = 2,
                 is_float: bool = False) -> None:
        if (sample_width, is_float) not in ((2, False), (4, True), (4, False), (1, False)):
            raise AudioDecodeError(f"Live results cannot decode {8 * sample_width}-bit PCM")
        self.out = out
        self.channels = channels
        self.width = sample_width
        self.is_float = is_float
        self.frame = sample_width * channels
        self._rest = b""
        self._resampler: Any = None
        if sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32",
                                                  quality="HQ")

    def _convert(self, data: bytes) -> np.ndarray:
        if self.is_float:
            x = np.frombuffer(data, "<f4").astype(np.float32)
        elif self.width == 2:
            x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        elif self.width == 4:
            x = (np.frombuffer(data, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
        else:
            x = (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
        return x.reshape(-1, self.channels).mean(axis=1).astype(np.float32)

    def feed(self, data: bytes) -> None:
        data = self._rest + data
        usable = len(data) - len(data) % self.frame
        self._rest = data[usable:]
        if usable:
            self._emit(self._convert(data[:usable]), last=False)

    def _emit(self, mono: np.ndarray, last: bool) -> None:
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        if mono.size:
            self.out(np.clip(mono, -1.0, 1.0))

    def close(self) -> None:
        if self._resampler is not None:
            self._emit(np.zeros(0, np.float32), last=True)


class WavDecoder:
    """A WAV stream: the header first, then its PCM."""

    def __init__(self, out: Samples) -> None:
        self.out = out
        self._head = b""
        self._pcm: Optional[PcmDecoder] = None

    def feed(self, data: bytes) -> None:
        if self._pcm is not None:
            self._pcm.feed(data)
            return
        self._head += data
        if len(self._head) < 12:
            return
        header = parse_wav_header(self._head)  # raises AudioDecodeError when malformed
        if header is None:
            if len(self._head) > 1 << 16:
                raise AudioDecodeError("WAV stream has no audio data within its first 64 KiB")
            return
        self._pcm = PcmDecoder(self.out, header.sample_rate, header.channels,
                               header.sample_width, header.is_float)
        rest, self._head = self._head[header.data_offset:], b""
        self._pcm.feed(rest)

    def close(self) -> None:
        if self._pcm is not None:
            self._pcm.close()


class FfmpegDecoder:
    """A compressed stream decoded by an FFmpeg process fed as the bytes come; a thread
    reads its output, 16 kHz float32 WAV of every channel, averaged here as the engine does
    (FFmpeg's own `-ac 1` keeps 0.707 of each of two channels: 3 dB louder, clipping)."""

    def __init__(self, out: Samples, container: str, head: bytes) -> None:
        demuxer = ffmpeg_demuxer(container, head)
        assert demuxer is not None, container  # decoder_for hands over DEMUXERS' containers
        self.out = out
        self._errors = tempfile.TemporaryFile()
        self._decoded = 0
        self._fed = 0
        self._wav = WavDecoder(self._emit)
        self.proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", demuxer,
             "-i", "pipe:0", "-vn", "-map_metadata", "-1", "-fflags", "+bitexact",
             "-c:a", "pcm_f32le", "-ar", str(SAMPLE_RATE), "-f", "wav", "pipe:1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors)
        self._reader = threading.Thread(target=self._read, name="live-ffmpeg", daemon=True)
        self._reader.start()
        self._failure: Optional[BaseException] = None

    def _emit(self, samples: np.ndarray) -> None:
        self._decoded += samples.size
        self.out(samples)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while data := os.read(self.proc.stdout.fileno(), 1 << 16):
                self._wav.feed(data)
        except BaseException as exc:  # noqa: BLE001 - reported by feed()/close()
            self._failure = exc
            self.proc.kill()  # no one reads its output now: a write to it would wait for ever

    def _check(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"live decoding failed: {self._failure!r}")
        if self.proc.poll() not in (None, 0) and self._decoded == 0:
            raise AudioDecodeError(f"Audio could not be decoded for live results "
                                   f"({self._reason()})")

    def _reason(self) -> str:
        self._errors.seek(0)
        text = self._errors.read(2000).decode(errors="replace").strip().splitlines()
        return text[-1][:200] if text else f"ffmpeg exit code {self.proc.returncode}"

    def feed(self, data: bytes) -> None:
        self._check()
        self._fed += len(data)
        if self._fed > UNDECODED_LIMIT and self._decoded == 0:
            raise AudioDecodeError(f"Audio could not be decoded for live results (no audio "
                                   f"in the first {self._fed // 1024} KiB)")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc.wait(5)
            self._check()

    def close(self) -> None:
        try:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            self._reader.join()
            self.proc.wait()
            self._check()
        finally:  # (now, not when a collection finds the decoder and its WavDecoder)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._errors.close()


class StreamDecoder:
    """One part's bytes in the declared container (``None``: detected from its first
    bytes) to 16 kHz mono float32."""

    def __init__(self, out: Samples, container: Optional[str], sample_rate: int,
                 channels: int) -> None:
        self.out = out
        self.container = container
        self.sample_rate = sample_rate
        self.channels = channels
        self._head = b""
        self._inner: Any = None

    def _open(self, head: bytes) -> Any:
        if self.container not in (None, "wav", "pcm_s16le") and not signature_ok(
                head, self.container):
            raise AudioDecodeError(f"Audio could not be decoded for live results: the bytes "
                                   f"are not {self.container} (the declared input_format)")
        container = self.container or detect_container(head)
        if container == "pcm_s16le":
            return PcmDecoder(self.out, self.sample_rate, self.channels)
        if container == "wav":
            return WavDecoder(self.out)
        if container in DEMUXERS:
            return FfmpegDecoder(self.out, container, head)
        raise AudioDecodeError("Audio could not be decoded for live results: unrecognised "
                               "container")

    def feed(self, data: bytes) -> None:
        if self._inner is None:
            self._head += data
            if len(self._head) < 64 and self.container not in ("pcm_s16le", "wav"):
                return  # detection and the signature check need the first bytes
            self._inner = self._open(self._head)
            data, self._head = self._head, b""
        self._inner.feed(data)

    def close(self) -> None:
        if self._inner is None and self._head:
            self._inner = self._open(self._head)
            self._inner.feed(self._head)
        if self._inner is not None:
            self._inner.close()


# ---------------------------------------------------------------------- times


def shift_event(event: dict[str, Any], offset: float, first_index: int) -> dict[str, Any]:
    """A serialized live event with its times moved by ``offset`` seconds and its word
    indexes by ``first_index`` (a live session that began after an earlier part)."""
    if not offset and not first_index:
        return event
    out = dict(event)
    for key in ("start", "end", "at", "final_until"):
        if key in out:
            out[key] = round(out[key] + offset, 3)
    for key in ("turns", "tentative", "words"):
        if key in out:
            items = []
            for item in out[key]:
                item = {**item, "start": round(item["start"] + offset, 3),
                        "end": round(item["end"] + offset, 3)}
                if "index" in item:
                    item["index"] += first_index
                items.append(item)
            out[key] = items
    return out


def shift_transcript(transcript: Any, offset: float) -> Any:
    """A `Transcript` with every time moved by ``offset`` seconds."""
    if not offset:
        return transcript

    def word(w: Any) -> Any:
        return replace(w, start=round(w.start + offset, 3), end=round(w.end + offset, 3))

    segments = [replace(s, start=round(s.start + offset, 3), end=round(s.end + offset, 3),
                        words=tuple(word(w) for w in s.words)) for s in transcript.segments]
    turns = [replace(t, start=round(t.start + offset, 3), end=round(t.end + offset, 3))
             for t in transcript.turns]
    return replace(transcript, segments=segments, turns=turns,
                   duration=transcript.duration + offset)


def clip_transcript(transcript: Any, until: Optional[float]) -> Any:
    """A `Transcript` of what lies before ``until`` s (the recording's duration limit: its
    audio.wav stops there, while the live worker heard the whole last chunk): words that
    start at or after it go, and times end there at the latest."""
    if until is None or transcript.duration <= until:
        return transcript

    def word(w: Any) -> Any:
        return replace(w, end=min(w.end, until))

    segments = []
    for s in transcript.segments:
        words = tuple(word(w) for w in s.words if w.start < until)
        if s.start >= until or (s.words and not words):
            continue
        text = "".join(w.word for w in words).strip() if len(words) < len(s.words) else s.text
        segments.append(replace(s, end=min(s.end, until), words=words, text=text))
    turns = [replace(t, end=min(t.end, until)) for t in transcript.turns if t.start < until]
    return replace(transcript, segments=segments, turns=turns, duration=until)


# ---------------------------------------------------------------------- the process


class _Outbox:
    """Messages to the server from any thread of the worker, one at a time."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.closed = False

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            if self.closed:
                return
            try:
                self.conn.send(message)
            except (BrokenPipeError, EOFError, OSError):
                self.closed = True  # the server is gone; the main loop sees EOF


def live_config_error(options: Any) -> Optional[str]:
    """Why `workbench.live.LiveConfig.from_dict` refuses `options`, or None (the server
    checks ``--live-config`` at start-up; the module imports no model library)."""
    from workbench.live.config import LiveConfig

    try:
        LiveConfig.from_dict(options)
    except ValueError as exc:  # (ConfigError too: it names the option)
        return str(exc)
    return None


def live_run_options(options: Any) -> dict[str, Any]:
    """Every option of the live pipeline that `options` (``--live-config``, checked by
    `live_config_error`) gives, defaults filled in: a live run's ``config``."""
    from workbench.live.config import LiveConfig

    return LiveConfig.from_dict(options).serialize()


def live_worker_main(inbox: Any, outbox_conn: Any, spec: dict[str, Any]) -> None:
    """Entry point of a live worker process (see the module docstring). ``spec``:
    ``data_dir``, ``log_level``, ``config`` (`workbench.live.LiveConfig` as a dict); the
    ``session`` message then gives ``session_id``, ``offset`` (seconds of the recording
    before this live session)."""
    logging.basicConfig(level=spec.get("log_level", "INFO"),
                        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        os.nice(10)  # the recording and the refined runs come first
    except OSError:
        pass
    outbox = _Outbox(outbox_conn)
    try:
        from workbench.live import LiveConfig, LiveSession, load_models, warm_up

        config = LiveConfig.from_dict(spec.get("config") or {})
        models = load_models(config, spec["data_dir"])
        warm_up(models, config)
    except Exception as exc:  # noqa: BLE001 - reported; the recording goes on
        log.exception("Live models could not be loaded")
        outbox.send(("error", f"The live models could not be loaded ({type(exc).__name__})"))
        return
    outbox.send(("ready",))
    try:
        kind, which = inbox.recv()
    except (EOFError, OSError, ValueError):
        return  # the server is gone (or stopped a worker it kept ahead)
    if kind != "session":
        return
    offset = float(which.get("offset", 0.0))
    try:
        session = LiveSession(
            config, threaded=True, models=models, data_dir=spec["data_dir"],
            uri=which["session_id"], await_speakers=bool(which.get("await_speakers")),
            hook=lambda e: outbox.send(("event", shift_event(e.serialize(), offset, 0))))
    except Exception as exc:  # noqa: BLE001
        log.exception("The live session could not start")
        outbox.send(("error", f"The live session could not start ({type(exc).__name__})"))
        return
    Worker(session, inbox, outbox, offset).run()


class Worker:
    """The main loop of a live worker: bytes in, decoded audio into the session."""

    def __init__(self, session: Any, inbox: Any, outbox: _Outbox, offset: float) -> None:
        self.session = session
        self.inbox = inbox
        self.outbox = outbox
        self.offset = offset
        self.taken_bytes = 0
        self.decoded = 0
        self.decoder: Optional[StreamDecoder] = None
        self._stop = threading.Event()

    def _feed(self, samples: np.ndarray) -> None:
        self.decoded += samples.size
        self.session.feed(samples)

    def _report(self) -> None:
        engines = [e for e in (self.session.asr, self.session.diarizer) if e is not None]
        while not self._stop.wait(POS_INTERVAL):
            taken = min(e.received for e in engines)
            # passes and steps done: a flush takes no audio up, they show it goes on
            work = sum(getattr(e, "passes", 0) + getattr(e, "steps", 0) for e in engines)
            self.outbox.send(("pos", self.taken_bytes, self.decoded / SAMPLE_RATE, taken,
                              work))

    def run(self) -> None:
        reporter = threading.Thread(target=self._report, name="live-pos", daemon=True)
        reporter.start()
        try:
            while True:
                try:
                    msg = self.inbox.recv()
                except (EOFError, OSError):
                    return  # the server is gone or closed the pipe
                kind = msg[0]
                if kind == "bytes":
                    self.taken_bytes += len(msg[1])
                    if self.decoder is not None:
                        self.decoder.feed(msg[1])
                elif kind == "part":
                    self._close_decoder()
                    self.decoder = StreamDecoder(self._feed, msg[1], msg[2], msg[3])
                elif kind in ("context", "said"):  # what came before it (a resume)
                    try:
                        if kind == "context":
                            self.session.prime(np.frombuffer(msg[1], dtype="<i2"))
                        else:
                            self.session.prime(said=msg[1])
                    except Exception as exc:  # noqa: BLE001 - an aid, not a need
                        log.warning("What came before the resume not taken: %r", exc)
                elif kind == "speakers":  # an earlier live session's, to go on with
                    try:
                        self.session.seed_speakers(msg[1])
                    except Exception as exc:  # noqa: BLE001 - labels start afresh then;
                        # a bad file must not end live results
                        log.warning("Speakers of the earlier live session not taken: %r", exc)
                elif kind == "finish":
                    self._finish(msg[1], msg[2] if len(msg) > 2 else None)
                    return
                else:  # "close"
                    return
        except Exception as exc:  # noqa: BLE001 - undecodable audio, a failed live engine
            log.warning("Live results stopped: %s", exc)
            reason = (str(exc) if isinstance(exc, AudioDecodeError)
                      else f"The live pipeline failed ({type(exc).__name__}: {str(exc)[:120]})")
            self.outbox.send(("error", reason))
        finally:
            self._stop.set()

    def _close_decoder(self) -> None:
        """The part ended. A part that decodes to nothing (e.g. only its container's header:
        a drop right after a start) is left out, as the refined run leaves it out: the
        parts before and after it keep their live results."""
        if self.decoder is not None:
            decoder, self.decoder = self.decoder, None
            try:
                decoder.close()
            except AudioDecodeError as exc:  # (not a failure of the live engines)
                log.warning("A part of the recording left out of live results: %s", exc)

    def _finish(self, run_dir: str, until: Optional[float] = None) -> None:
        started = time.monotonic()
        try:
            self._close_decoder()
            result = self.session.finish()
            transcript = clip_transcript(shift_transcript(result.transcript, self.offset), until)
            transcript.save(run_dir)
            if result.speakers is not None:
                try:  # (optional: the run is saved without it)
                    atomic_write(Path(run_dir) / SPEAKERS_FILE,
                                 json.dumps(result.speakers).encode())
                except OSError as exc:
                    log.warning("The live run's speakers were not saved: %s", exc)
            summary = transcript.summary()
            summary["offset_seconds"] = round(self.offset, 3)
            # the audio before a resume that the diarization's first windows saw
            summary["context_seconds"] = (result.stats.get("diarization") or {}).get(
                "context_seconds")
            summary["said_before_chars"] = (result.stats.get("asr") or {}).get(
                "said_before_chars")  # (and the text before it its prompt started with)
            summary["finish_seconds"] = round(time.monotonic() - started, 3)
            summary["cpu_seconds"] = result.stats.get("cpu_seconds")
            self.outbox.send(("done", summary))
        except Exception as exc:  # noqa: BLE001 - the live run fails, nothing else
            log.exception("Saving the live result failed")
            self.outbox.send(("failed", f"{type(exc).__name__}: {str(exc)[:200]}"))


__all__ = ["FfmpegDecoder", "PcmDecoder", "SPEAKERS_FILE", "StreamDecoder", "WavDecoder",
           "live_worker_main",
           "clip_transcript", "shift_event", "shift_transcript"]
