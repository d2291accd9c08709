"""``python -m workbench transcribe``: every flag reaches transcript.json's ``config`` and,
where it is cheap to see, changes what the run does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import espeak
from .test_export import check_exports_independently

pytestmark = [pytest.mark.models, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def two_voices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 8 s: one sentence by a low male voice, then one by a high female voice."""
    d = tmp_path_factory.mktemp("cli")
    a = espeak("The quick brown fox jumps over the lazy dog near the river bank.", d / "a.wav")
    b = d / "b.wav"
    subprocess.run(["espeak-ng", "-v", "en-gb+f3", "-p", "80", "-w", str(b),
                    "Please call Stella and ask her to bring these things with her from the "
                    "store."], check=True, capture_output=True)
    out = d / "two_voices.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(a), "-i", str(b),
                    "-filter_complex", "[0:a][1:a]concat=n=2:v=0:a=1", "-ar", "16000",
                    str(out)], check=True)
    return out


def transcribe(audio: Path, out: Path, *flags: str) -> dict[str, Any]:
    """Run the command line; returns transcript.json (every export checked independently)."""
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "transcribe", str(audio), "--out", str(out), *flags],
        cwd=REPO, capture_output=True, text=True, timeout=280,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(out) in proc.stdout
    return check_exports_independently(out)


def test_model_language_speaker_count_threshold_vad_config_and_directories(
        two_voices: Path, tmp_path: Path) -> None:
    data = tmp_path / "models-here"
    out = tmp_path / "out"
    doc = transcribe(two_voices, out, "--asr-model", "base", "--data-dir", str(data),
                     "--language", "en", "--num-speakers", "2", "--clustering-threshold", "0.55",
                     "--vad-filter",
                     "--config", json.dumps({"merge": {"max_pause": 0.7}, "num_speakers": 5,
                                             "asr": {"beam_size": 2}}))
    options = doc["config"]["options"]
    # --asr-model and --data-dir: the multilingual base model, assembled under --data-dir.
    assert options["asr"]["model"] == "base"
    model = doc["config"]["models"]["asr"]
    assert model["name"] == "base" and Path(model["path"]).is_relative_to(data.resolve())
    assert (Path(model["path"]) / "model.bin").is_file()
    # --language: the option and the transcript's language (no detection ran).
    assert options["asr"]["language"] == "en" and doc["language"] == "en"
    assert options["asr"]["vad_filter"] is True
    # --num-speakers wins over the same option in --config; two voices, two speakers.
    assert options["diarization"]["num_speakers"] == 2
    assert options["diarization"]["clustering_threshold"] == 0.55
    assert len(doc["speakers"]) == 2
    # --config's other options reach the run.
    assert options["merge"]["max_pause"] == 0.7 and options["asr"]["beam_size"] == 2
    # --out holds every format.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"transcript.{f}" for f in ("json", "srt", "vtt", "txt", "rttm", "csv"))
    words = " ".join(s["text"] for s in doc["segments"]).lower()
    assert "stella" in words and "river" in words


def test_min_and_max_speakers(two_voices: Path, tmp_path: Path) -> None:
    doc = transcribe(two_voices, tmp_path / "out", "--min-speakers", "1", "--max-speakers", "1",
                     "--data-dir", str(tmp_path / "data"))
    diarization = doc["config"]["options"]["diarization"]
    assert (diarization["min_speakers"], diarization["max_speakers"]) == (1, 1)
    assert diarization["num_speakers"] is None
    assert len(doc["speakers"]) == 1  # two voices, held to one speaker
    assert {t["speaker"] for t in doc["diarization"]} == set(doc["speakers"])
    assert doc["config"]["options"]["asr"]["model"] == "tiny.en"  # the default model


def test_no_diarization(two_voices: Path, tmp_path: Path) -> None:
    doc = transcribe(two_voices, tmp_path / "out", "--no-diarization",
                     "--data-dir", str(tmp_path / "data"))
    assert doc["config"]["options"]["diarize"] is False
    assert doc["config"]["options"]["transcribe"] is True
    assert doc["diarization"] == [] and doc["segments"]
    assert {s["speaker"] for s in doc["segments"]} == {None}
    assert "timings" in doc and "segmentation" not in doc["timings"]


def test_bad_flag_values_are_refused_before_any_model_loads(two_voices: Path,
                                                            tmp_path: Path) -> None:
    for flags, message in ((["--num-speakers", "0"], "invalid configuration"),
                           (["--config", '{"bogus": 1}'], "bogus"),
                           (["--min-speakers", "3", "--max-speakers", "2"], "invalid configuration")):
        proc = subprocess.run(
            [sys.executable, "-m", "workbench", "transcribe", str(two_voices), "--out",
             str(tmp_path / "out"), *flags], cwd=REPO, capture_output=True, text=True,
            timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
        assert proc.returncode == 2, (flags, proc.stderr[-2000:])
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists()


def test_bad_inputs_and_outputs_are_refused_before_any_work(two_voices: Path,
                                                          tmp_path: Path) -> None:
    """A file that is no audio, a folder as the audio, and an --out that cannot be a folder
    give "error: ..." and exit status 2 (before: tracebacks, the last one only after the
    whole run)."""
    (tmp_path / "notaudio.wav").write_text("hello")
    (tmp_path / "a-file").write_text("")
    cases = [(tmp_path / "notaudio.wav", tmp_path / "o1", "cannot decode"),
             (tmp_path, tmp_path / "o2", "not a file"),
             (two_voices, tmp_path / "a-file", "cannot write the results")]
    for audio, out, message in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "workbench", "transcribe", str(audio), "--out", str(out),
             "--no-diarization"], cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
        assert proc.returncode == 2, (audio, proc.stderr[-2000:])
        assert f"error: {message}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert "input_format" not in proc.stderr  # a server's words, not the command line's


def test_models_that_cannot_be_had_are_refused_before_any_work(
        two_voices: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A language the model cannot do, a model that is not there, a diarization pipeline
    folder that is not there, and an empty file: "error: ..." and status 2 (before: a
    traceback and status 1, the first three only after diarization had run to its end).
    The first through `python -m workbench`, the others through its `main` here (each
    process spent 7-8 s importing the model libraries)."""
    from workbench.__main__ import main

    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a pipeline\n")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.yaml").write_text("pipeline:\n  name: nosuch.Pipeline\n")
    cases = [(two_voices, ["--language", "fr"], "English-only"),
             # (these were tracebacks: AttributeError, ModuleNotFoundError)
             (two_voices, ["--pipeline-path", str(tmp_path / "notes.txt")],
              "is not a pyannote pipeline folder"),
             (two_voices, ["--pipeline-path", str(tmp_path / "odd")],
              "is not a pyannote pipeline folder"),
             (two_voices, ["--asr-model", "nosuchmodel"], "neither bundled nor a local folder"),
             (two_voices, ["--pipeline-path", str(tmp_path / "none")], "does not exist"),
             (tmp_path / "empty.wav", [], "the file is empty")]
    for i, (audio, flags, message) in enumerate(cases):
        argv = ["transcribe", str(audio), "--out", str(tmp_path / "out"), *flags]
        if i == 0:
            proc = subprocess.run(
                [sys.executable, "-m", "workbench", *argv], cwd=REPO, capture_output=True,
                text=True, timeout=280,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
            status, stderr = proc.returncode, proc.stderr
        else:
            status, stderr = main(argv), capsys.readouterr().err
        assert status == 2, (flags, stderr[-2000:])
        assert message in stderr and "Traceback" not in stderr, stderr[-2000:]
        assert "segmentation" not in stderr  # no work done
        assert not list((tmp_path / "out").glob("transcript.*"))


class _FirstProgress(Exception):
    """Stops a run at its first progress call."""


def test_first_progress_comes_before_any_model_loads(two_voices: Path) -> None:
    """The command line's pipeline loads its models on first use: decoding reports
    progress while neither the ASR model nor the diarization models are loaded."""
    from workbench.__main__ import cli_pipeline, transcribe_config

    pipeline = cli_pipeline(transcribe_config([str(two_voices), "--out", "unused"]), "data")
    seen: list[tuple[str, bool, bool]] = []

    def hook(stage: str, completed: float, total: float) -> None:
        seen.append((stage, pipeline._transcriber is None, pipeline._diarizer is None))
        raise _FirstProgress

    with pytest.raises(_FirstProgress):
        pipeline(two_voices, hook=hook)
    assert seen == [("decode", True, True)]


def test_cli_reports_decoding_before_importing_torch(two_voices: Path, tmp_path: Path) -> None:
    """The command line decodes (and says so) before the model libraries are imported:
    with ``-X importtime`` the decode progress comes before torch's import line."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "workbench", "transcribe", str(two_voices),
         "--out", str(tmp_path / "out"), "--no-diarization"],
        cwd=REPO, capture_output=True, text=True, timeout=280,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    bars = re.findall(r"decode\s+(\d+)%", proc.stderr)
    assert bars == sorted(bars, key=int), bars  # one bar (the pipeline's decode went back to 0)
    decode = proc.stderr.find("decode")
    torch_import = re.search(r"^import time:.*\|\s+torch$", proc.stderr, re.MULTILINE)
    assert decode != -1 and torch_import is not None
    assert decode < torch_import.start()
    assert (tmp_path / "out" / "transcript.json").is_file()
