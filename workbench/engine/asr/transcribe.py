"""Speech transcription with faster-whisper: `Transcriber` (a loaded model) and its
results (`ASRResult`, `ASRSegment`). Models come from `workbench.engine.asr.models`.

Usage::

    transcriber = Transcriber(ASRConfig(model="tiny.en"), data_dir=Path("data"))
    result = transcriber.transcribe(waveform_16k_mono_float32,
                                    hook=lambda stage, done, total: ...)
    result.words        # [Word(start, end, " Hello", probability), ...]
    result.serialize()  # words, segments, language, options, model identity, timings
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from workbench.engine.asr.models import ModelError, PathLike, resolve_model, runtime_versions
from workbench.engine.audio import SAMPLE_RATE
from workbench.engine.config import ASRConfig
from workbench.engine.progress import ProgressHook
from workbench.engine.transcript import Word

__all__ = ["ASRResult", "ASRSegment", "Transcriber", "WINDOW_SECONDS"]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ASRSegment:
    """One Whisper decoding segment: its text, time span and decoder statistics."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: Optional[float]
    words: tuple[Word, ...] = ()

    def serialize(self) -> dict[str, Any]:
        data = asdict(self)
        data["words"] = [w.serialize() for w in self.words]
        return data


@dataclass
class ASRResult:
    """Output of one transcription.

    `words` keep faster-whisper's text verbatim, including the leading space Whisper
    puts before most words, so ``"".join(w.word for w in words)`` rebuilds the
    transcript in any language (use ``.strip()`` per word for display). `options` are
    the decoding and VAD options faster-whisper reports it used (`TranscriptionInfo`);
    `compute` the device, compute type and thread count; `model` the weights' identity
    (`model_identity`); `timings` seconds per stage (``asr``, and ``load`` for the model
    load that preceded the first call).
    """

    words: list[Word]
    segments: list[ASRSegment]
    language: Optional[str]
    language_probability: float
    duration: float
    duration_after_vad: float
    options: dict[str, Any]
    compute: dict[str, Any]
    model: dict[str, Any]
    timings: dict[str, float]
    config: dict[str, Any]
    language_probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The whole transcript: segment texts joined with single spaces."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def real_time_factor(self) -> float:
        """Seconds of computation per second of audio (0 for empty audio)."""
        return self.timings.get("asr", 0.0) / self.duration if self.duration > 0 else 0.0

    def serialize(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "language_probability": self.language_probability,
            "language_probabilities": dict(self.language_probabilities),
            "duration": self.duration,
            "duration_after_vad": self.duration_after_vad,
            "words": [w.serialize() for w in self.words],
            "segments": [s.serialize() for s in self.segments],
            "options": self.options,
            "compute": dict(self.compute),
            "model": dict(self.model),
            "timings": dict(self.timings),
            "real_time_factor": self.real_time_factor,
            "config": dict(self.config),
        }


def _as_waveform(waveform: np.ndarray) -> np.ndarray:
    samples = np.asarray(waveform)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio (a 1-D array), got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"expected float samples in [-1, 1] at {SAMPLE_RATE} Hz, got {samples.dtype}")
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.size and not np.isfinite(samples).all():
        raise ValueError("audio contains NaN or infinite samples")
    return samples


WINDOW_SECONDS = 600.0
"""Length of the windows long audio is transcribed in (see `Transcriber.transcribe`)."""


@functools.cache
def _whisper_model_class() -> type:
    """faster-whisper's `WhisperModel`, able to run its encoder on less than 30 s.

    Whisper's encoder always sees a 30 s window (3000 feature frames; faster-whisper pads
    shorter input), and its cost grows faster than linearly with the frames. CTranslate2
    accepts fewer frames: with `encoder_frames` set, the padded features are cut to that
    many before encoding (decoding and word alignment then run on the shorter encoder
    output). Measured on tiny.en, one thread: a 10 s buffer decoded with word timestamps
    in 0.46 s instead of 1.12 s with 2 s of padding kept; with no padding kept, Whisper
    does not find the end and loops (8.9 s with temperature fallbacks).
    """
    from faster_whisper import WhisperModel

    class ShortContextWhisperModel(WhisperModel):
        encoder_frames: Optional[int] = None

        def encode(self, features: np.ndarray) -> Any:
            if self.encoder_frames is not None and features.shape[-1] > self.encoder_frames:
                features = np.ascontiguousarray(features[..., :self.encoder_frames])
            return super().encode(features)

    return ShortContextWhisperModel


class Transcriber:
    """A loaded Whisper model; `transcribe` can be called any number of times.

    The model is resolved with `resolve_model(config.model, data_dir)` and loaded once
    by faster-whisper/CTranslate2 when the object is made.
    """

    def __init__(self, config: Optional[ASRConfig] = None, data_dir: PathLike = "data") -> None:
        WhisperModel = _whisper_model_class()

        self.config = config or ASRConfig()
        started = time.perf_counter()
        self.source = resolve_model(self.config.model, data_dir)
        try:
            self._model = WhisperModel(
                str(self.source.path),
                device=self.config.device,
                compute_type=self.config.compute_type,
                cpu_threads=self.config.cpu_threads,
                num_workers=1,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(
                f"could not load Whisper model {self.config.model!r} "
                f"({self.config.device}, {self.config.compute_type}): {exc}"
            ) from exc
        self.load_seconds = time.perf_counter() - started
        self._loaded_reported = False
        self._decode_lock = threading.Lock()
        self.supported_languages: list[str] = list(self._model.supported_languages)
        self.multilingual = bool(self._model.model.is_multilingual)
        language = self.config.language
        if language is not None and language not in self.supported_languages:
            if self.multilingual:
                raise ValueError(f"language {language!r} is not one Whisper knows")
            raise ValueError(
                f"model {self.config.model!r} is English-only; use language 'en' or None, "
                "or a multilingual model such as 'base' or 'small'"
            )

    @property
    def model_identity(self) -> dict[str, Any]:
        """Name, path, origin, sha256 (and a local folder's `files`) and
        faster-whisper/ctranslate2 versions (`models.model_identity`)."""
        return {**self.source.serialize(), "versions": runtime_versions()}

    def decode(self, samples: np.ndarray, *, encoder_seconds: Optional[float] = None,
               **options: Any) -> list[Any]:
        """One faster-whisper call on up to 30 s of audio: its segments, decoded.

        `options` go to `WhisperModel.transcribe` as they are. `encoder_seconds`: the
        encoder sees only this much of the (padded) window instead of Whisper's 30 s;
        keep it at least ~2 s above the audio's length (see `_whisper_model_class`).
        Calls are serialised (the encoder window is a setting of the shared model).
        """
        frames = None
        if encoder_seconds is not None:
            if encoder_seconds <= 0:
                raise ValueError("encoder_seconds must be > 0")
            frames = min(3000, int(np.ceil(encoder_seconds * 100)))
        with self._decode_lock:
            self._model.encoder_frames = frames
            try:
                segments, _ = self._model.transcribe(samples, **options)
                return list(segments)
            finally:
                self._model.encoder_frames = None

    def transcribe(self, waveform: np.ndarray, *, hook: Optional[ProgressHook] = None,
                   window_seconds: float = WINDOW_SECONDS) -> ASRResult:
        """Transcribe 16 kHz mono float audio, reporting ``hook("asr", seconds_done, seconds)``.

        Audio longer than 1.5 x ``window_seconds`` is transcribed window by window,
        cut at the quietest 100 ms near each boundary: faster-whisper computes the
        features of its whole input at once, which for 30 min of audio alone takes
        ~1.7 GB.  Later windows keep the language detected in the first.
        """
        samples = _as_waveform(waveform)
        duration = samples.size / SAMPLE_RATE
        total = max(1, int(duration))  # whole seconds; audio under 1 s counts as one

        def report(done: float) -> None:
            if hook is not None:
                hook("asr", min(int(done), total), total)

        started = time.perf_counter()
        report(0)
        segments: list[ASRSegment] = []
        words: list[Word] = []
        info = None
        language = self.config.language
        after_vad = 0.0
        for begin, end in _windows(samples, window_seconds):
            offset = begin / SAMPLE_RATE
            generator, window_info = self._model.transcribe(
                samples[begin:end],
                language=language,
                beam_size=self.config.beam_size,
                vad_filter=self.config.vad_filter,
                word_timestamps=True,
            )
            if info is None:
                info = window_info
                language = language or window_info.language
            after_vad += float(window_info.duration_after_vad)
            for raw in generator:  # decoding happens while iterating
                seg_words = tuple(
                    Word(start=offset + float(w.start), end=offset + float(w.end), word=w.word,
                         probability=float(w.probability))
                    for w in (raw.words or ())
                )
                words.extend(seg_words)
                segments.append(ASRSegment(
                    start=offset + float(raw.start), end=offset + float(raw.end), text=raw.text,
                    avg_logprob=float(raw.avg_logprob), no_speech_prob=float(raw.no_speech_prob),
                    compression_ratio=float(raw.compression_ratio),
                    temperature=None if raw.temperature is None else float(raw.temperature),
                    words=seg_words,
                ))
                report(offset + raw.end)
        assert info is not None
        elapsed = time.perf_counter() - started
        if hook is not None:
            hook("asr", total, total)

        timings = {"asr": elapsed}
        if not self._loaded_reported:
            timings["load"] = self.load_seconds
            self._loaded_reported = True
        probabilities = sorted(info.all_language_probs or (), key=lambda p: -p[1])[:5]
        return ASRResult(
            words=words,
            segments=segments,
            language=info.language,
            language_probability=float(info.language_probability),
            language_probabilities={lang: float(p) for lang, p in probabilities},
            duration=duration,
            duration_after_vad=after_vad,
            options={
                "transcription": _jsonable(asdict(info.transcription_options)),
                "vad": _jsonable(asdict(info.vad_options)) if self.config.vad_filter else None,
            },
            compute={
                "device": self.config.device,
                "compute_type": self.config.compute_type,
                "cpu_threads": self.config.cpu_threads,
            },
            model=self.model_identity,
            timings=timings,
            config=self.config.serialize(),
        )


def _windows(samples: np.ndarray, window_seconds: float) -> list[tuple[int, int]]:
    """Sample ranges covering ``samples``: one range, or windows cut at quiet points."""
    n = samples.size
    window = int(window_seconds * SAMPLE_RATE)
    if window <= 0 or n <= 1.5 * window:
        return [(0, n)]
    frame = SAMPLE_RATE // 10
    search = min(10 * SAMPLE_RATE, window // 4)
    cuts = [0]
    while n - cuts[-1] > 1.5 * window:
        target = cuts[-1] + window
        lo, hi = max(cuts[-1] + frame, target - search), min(n - frame, target + search)
        region = samples[lo:hi]
        usable = (region.size // frame) * frame
        energy = (region[:usable].reshape(-1, frame) ** 2).mean(axis=1)
        cuts.append(lo + int(np.argmin(energy)) * frame + frame // 2)
    cuts.append(n)
    return list(zip(cuts[:-1], cuts[1:]))


def _jsonable(value: Any) -> Any:
    """Tuples to lists and other non-JSON values to strings, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
