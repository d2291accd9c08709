"""The models `get_pipeline` keeps loaded in a process (a server worker runs every run of
it there): runs whose options apply per call share one load, other loads are bounded, and
thread counts stay within the CPUs the process may use."""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np
import pytest

from workbench.engine.asr.transcribe import Transcriber
from workbench.engine.config import ASRConfig, DiarizationConfig
from workbench.engine.diarization.diarizer import Diarizer
from workbench.engine.pipeline import MAX_SHARED_LOADS, PipelineConfig, get_pipeline, usable_cpus
from workbench.research.datasets import sample_call

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def call() -> np.ndarray:
    """The pyannote sample call: 30 s, two speakers."""
    return sample_call().load_audio()


def _turns(transcript) -> list[tuple[float, float, str]]:
    return [(t.start, t.end, t.speaker) for t in transcript.turns]


def _words(words) -> list[tuple[float, float, str]]:
    return [(w.start, w.end, w.word) for w in words]


def test_runs_that_differ_in_clustering_options_share_the_diarization_models(
        call: np.ndarray, tmp_path: Path) -> None:
    def pipeline(**options):
        return get_pipeline(PipelineConfig.from_dict({"transcribe": False, "diarization": options}),
                            data_dir=tmp_path)

    runs = [pipeline(), pipeline(clustering_threshold=0.6), pipeline(min_duration_off=0.5),
            pipeline(speaker_count="threshold", clustering_method="centroid"),
            pipeline(num_speakers=3, num_threads=2)]
    assert len({id(p.diarizer.pipeline) for p in runs}) == 1  # one load of the models
    first, tuned = _turns(runs[0](call)), _turns(runs[1](call))
    assert tuned != first  # (so the comparisons below can tell the options apart)
    # each run has its own options on the shared load, as on a load of its own
    config = DiarizationConfig(clustering_threshold=0.6)
    assert tuned == [(t.start, t.end, t.speaker) for t in Diarizer(config)(call).turns]
    assert _turns(runs[0](call)) == first


def test_runs_that_differ_in_decoding_options_share_the_whisper_model(
        call: np.ndarray, tmp_path: Path) -> None:
    def pipeline(**options):
        return get_pipeline(PipelineConfig.from_dict({"diarize": False, **options}),
                            data_dir=tmp_path)

    runs = [pipeline(), pipeline(language="en"), pipeline(beam_size=1), pipeline(beam_size=2),
            pipeline(vad_filter=False)]
    assert len({id(p.transcriber._model) for p in runs}) == 1  # one load of the model
    audio = call[: 16000 * 10]
    default, greedy = runs[0](audio).words, runs[2](audio).words
    fresh = Transcriber(ASRConfig(beam_size=1), data_dir=tmp_path).transcribe(audio).words
    assert _words(greedy) == _words(fresh)
    assert _words(runs[0](audio).words) == _words(default)
    with pytest.raises(ValueError, match="English-only"):  # checked as when it loads
        pipeline(language="de")
    # the load's time is the first run's only (every warm run reported it)
    assert "load" not in runs[3].transcriber.transcribe(audio[: 16000 * 2]).timings


def test_at_most_max_shared_loads_stay_loaded(tmp_path: Path) -> None:
    # options that change the models' inputs or their loading need loads of their own
    diarization, whisper = [], []
    for step in (0.25, 0.3, 0.35, 0.4)[: MAX_SHARED_LOADS + 1]:
        p = get_pipeline(PipelineConfig.from_dict(
            {"transcribe": False, "diarization": {"segmentation_step": step}}), data_dir=tmp_path)
        diarization.append(weakref.ref(p.diarizer.pipeline))
    for compute_type in ("float32", "int8_float32", "int8", "auto")[: MAX_SHARED_LOADS + 1]:
        p = get_pipeline(PipelineConfig.from_dict({"diarize": False, "compute_type": compute_type}),
                         data_dir=tmp_path)
        whisper.append(weakref.ref(p.transcriber._model))
    del p
    assert [r() is None for r in diarization] == [True] + [False] * MAX_SHARED_LOADS
    assert [r() is None for r in whisper] == [True] + [False] * MAX_SHARED_LOADS


def test_thread_counts_beyond_the_usable_cpus_are_lowered(call: np.ndarray,
                                                          tmp_path: Path) -> None:
    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    before = threads()
    config = {"asr": {"cpu_threads": 1024}, "diarization": {"num_threads": 1024}}
    pipeline = get_pipeline(PipelineConfig.from_dict(config), data_dir=tmp_path)
    transcript = pipeline(call[: 16000 * 10])
    assert transcript.words and transcript.turns
    # CTranslate2, torch and ONNX Runtime each start up to one thread per CPU
    assert threads() - before <= 3 * usable_cpus() + 8
    usable = get_pipeline(PipelineConfig.from_dict({"asr": {"cpu_threads": usable_cpus()}}),
                          data_dir=tmp_path)
    assert usable.transcriber._model is pipeline.transcriber._model


def test_live_models_and_torch_take_no_threads_beyond_the_usable_cpus(tmp_path: Path) -> None:
    import torch

    from workbench.engine.provenance import torch_threads
    from workbench.live import LiveConfig, load_models
    from workbench.live.asr import StreamingASRConfig

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    before = threads()
    models = load_models(LiveConfig(asr=StreamingASRConfig(cpu_threads=1024), diarize=False),
                         data_dir=tmp_path)
    models.transcriber.transcribe(np.zeros(16000, dtype=np.float32))
    # CTranslate2 starts one thread per `cpu_threads` when the model loads
    assert threads() - before <= 2 * usable_cpus() + 8
    with torch_threads(1024):
        assert torch.get_num_threads() <= usable_cpus()
