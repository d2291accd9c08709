"""Edges of the batch diarization: failing workers, worker counts, empty outputs, the
speaker count asked for, progress without samples and embeddings of cropped speakers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from workbench.engine.config import DiarizationConfig
from workbench.engine.diarization.diarizer import Diarizer, _relabel_by_first_appearance
from workbench.engine.diarization.workers import in_workers
from workbench.engine.pipeline import Pipeline, PipelineConfig
from workbench.engine.provenance import usable_cpus
from workbench.research.datasets import sample_call

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def call() -> np.ndarray:
    return sample_call().load_audio()


# --------------------------------------------------------------------------- workers


def test_a_failed_worker_fails_the_whole_at_once() -> None:
    # call 1 fails at once while call 0 runs long: the error surfaced only when call 0
    # was done (each range of windows of embedding_passes "shared" is one call)
    stop = threading.Event()
    saw_stop = []

    def work(i: int) -> np.ndarray:
        if i == 1:
            raise RuntimeError("range 1 failed")
        for _ in range(500):  # 5 s unless told to stop
            if stop.is_set():
                saw_stop.append(i)
                break
            time.sleep(0.01)
        return np.zeros(1)

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="range 1 failed"):
        list(in_workers(work, 2, 2, stop))
    assert time.perf_counter() - started < 1.0
    assert saw_stop == [0]  # and no thread outlives the call


@pytest.mark.models
@pytest.mark.skipif(usable_cpus() < 2, reason="two embedding workers need two CPUs")
def test_an_error_in_one_range_of_windows_stops_the_other(call: np.ndarray) -> None:
    # two ranges of windows embed at once and report progress; when the hook raises in
    # one, the other stops at its next window instead of embedding the rest of its half
    diarizer = Diarizer(DiarizationConfig(embedding_workers=2))
    audio = np.tile(call, 2)  # 60 s: 28 windows, 14 a range
    calls: list[int] = []

    def hook(stage: str, completed: int, total: int) -> None:
        if stage != "embeddings" or completed == 0:
            return
        calls.append(completed)
        if len(calls) == 3:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        diarizer(audio, hook=hook)
    assert len(calls) <= 5, calls  # at most the window the other range was on


@pytest.mark.models
def test_workers_beyond_the_cpus_do_not_start(call: np.ndarray) -> None:
    # 64 workers of each kind on 2 CPUs doubled the CPU time; at most usable_cpus run,
    # and the run's provenance says how many
    diarizer = Diarizer(DiarizationConfig(embedding_workers=64, segmentation_workers=64))
    most: dict[str, int] = {}

    def hook(stage: str, completed: int, total: int) -> None:
        for kind in ("segmentation", "embeddings"):
            running = sum(t.name.startswith(kind + "_") for t in threading.enumerate())
            most[kind] = max(most.get(kind, 0), running)

    diarizer(call[: 16000 * 20], hook=hook)
    assert 0 < most["embeddings"] <= usable_cpus() and most["segmentation"] <= usable_cpus()
    config = PipelineConfig.from_dict({"diarization": {"embedding_workers": 64,
                                                       "segmentation_workers": 64}})
    effective = Pipeline(config).provenance()["effective"]
    assert effective["usable_cpus"] == usable_cpus()
    assert effective["diarization"] == {"num_threads": 1,
                                        "embedding_workers": min(64, usable_cpus()),
                                        "segmentation_workers": min(64, usable_cpus())}
    assert effective["asr"] == {"cpu_threads": 1}


# --------------------------------------------------------------------------- outputs


@pytest.mark.models
@pytest.mark.filterwarnings(r"ignore:\s*The detected number of speakers")
def test_the_count_asked_for_is_in_the_evidence(call: np.ndarray) -> None:
    # 10 s hold two embeddings: five speakers asked for give two, and the evidence said
    # {"rule": "given", "speakers": 2} without the five
    result = Diarizer(DiarizationConfig())(call[: 16000 * 10], num_speakers=5)
    assert result.speaker_count["requested"] == 5
    assert result.speaker_count["rule"] == "given"
    assert result.speaker_count["speakers"] == result.num_speakers < 5
    assert result.serialize()["speaker_count"]["requested"] == 5


@pytest.mark.models
def test_no_speaker_in_the_output_is_no_speaker_in_the_evidence(ami: Path) -> None:
    # AMI trn02 at 15-18 s: the frames count a speaker, no local speaker is active; the
    # output is empty and the evidence said "speakers": 1
    from workbench.research.datasets.ami import ami_items

    item = next(i for i in ami_items("train", DATA_DIR) if i.uri == "trn02")
    result = Diarizer(DiarizationConfig())(item.load_audio()[15 * 16000:18 * 16000])
    assert result.speakers == [] and result.speaker_count["speakers"] == 0


@pytest.mark.models
def test_no_samples_still_report_every_stage() -> None:
    # without samples nothing runs: segmentation was never reported, the other stages were
    calls: list[tuple[str, int, int]] = []
    result = Diarizer(DiarizationConfig())(np.zeros(0, np.float32),
                                            hook=lambda *c: calls.append(c))
    assert result.turns == []
    assert calls == [("segmentation", 1, 1), ("embeddings", 1, 1), ("clustering", 1, 1)]


def test_embeddings_follow_the_labels_of_the_uncropped_output() -> None:
    # pyannote orders the embedding rows like its output's labels, before the output is
    # cropped to the audio; a speaker only after the audio's end (frames are 17 ms) is
    # cropped away, and the rows were mapped through the cropped labels: one off
    uncropped = Annotation(uri="x")
    uncropped[Segment(0.0, 2.0)] = "SPEAKER_00"
    uncropped[Segment(10.005, 10.02)] = "SPEAKER_01"  # after the end of 10 s of audio
    uncropped[Segment(3.0, 5.0)] = "SPEAKER_02"
    embeddings = np.array([[0.0], [1.0], [2.0]])  # row i: speaker i
    cropped = uncropped.crop(Segment(0.0, 10.0))
    assert cropped.labels() == ["SPEAKER_00", "SPEAKER_02"]
    _, _, rows, speakers = _relabel_by_first_appearance(cropped, cropped.copy(), embeddings,
                                                        uncropped.labels())
    assert speakers == ["SPEAKER_00", "SPEAKER_01"]
    np.testing.assert_array_equal(rows, [[0.0], [2.0]])
