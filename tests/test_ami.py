"""Tests of workbench.ami: the AMI excerpts of pyannote.audio's test data as a dataset.

Only the train and development subsets are used here: the test subset is kept for final
figures (see workbench.ami).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from workbench.research.datasets.ami import (AMI_PROTOCOL, ami_dir, ami_items, ami_protocol_items, fetch_ami,
                           register_ami_protocol)
from workbench.research.datasets import load_pyannote_protocol

pytestmark = pytest.mark.timeout(300)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TRAIN_SPEAKERS = {"trn00": 3, "trn01": 4, "trn02": 1, "trn03": 2, "trn04": 3, "trn05": 4,
                  "trn06": 3, "trn07": 4, "trn08": 4, "trn09": 3}
DEVELOPMENT_SPEAKERS = {"dev00": 2, "dev01": 2}


@pytest.fixture(scope="module")
def ami() -> Path:
    """The excerpts in the repository's data folder (``pip download`` on first use)."""
    try:
        return fetch_ami(DATA_DIR)
    except RuntimeError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"the pyannote.audio source distribution is out of reach: {exc}")
        raise


def test_fetch_writes_files_manifest_and_licences(ami: Path) -> None:
    assert ami == ami_dir(DATA_DIR)
    manifest = json.loads((ami / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["protocol"] == AMI_PROTOCOL
    assert manifest["source"]["package"] == "pyannote.audio"
    assert manifest["source"]["version"] == "4.0.7"
    assert "CC BY 4.0" in manifest["licences"]["audio"]
    assert "MIT" in manifest["licences"]["excerpts and references"]
    assert (ami / "LICENSE-pyannote.audio").read_text().startswith("MIT License")
    # the file shipped as trñ00.wav is trn00, as its references say
    assert "trn00.wav" in manifest["files"] and not list(ami.glob("trñ*"))
    assert manifest["subsets"]["train"] == sorted(TRAIN_SPEAKERS)
    assert manifest["subsets"]["development"] == sorted(DEVELOPMENT_SPEAKERS)
    # an earlier fetch is reused and still matches its checksums
    assert fetch_ami(DATA_DIR, verify=True) == ami


@pytest.mark.parametrize("subset, speakers", [("train", TRAIN_SPEAKERS),
                                              ("development", DEVELOPMENT_SPEAKERS)])
def test_items_have_audio_rttm_and_uem(ami: Path, subset: str, speakers: dict[str, int]
                                       ) -> None:
    items = ami_items(subset, DATA_DIR)
    assert [item.uri for item in items] == sorted(speakers)
    for item in items:
        info = sf.info(str(item.audio))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert item.duration == pytest.approx(30.0, abs=0.01)
        assert [(s.start, s.end) for s in item.annotated()] == [(0.0, 30.0)]
        assert len(item.reference().labels()) == speakers[item.uri]
        assert item.info["num_speakers"] == speakers[item.uri]
        assert item.info["subset"] == subset and item.info["protocol"] == AMI_PROTOCOL


def test_unknown_subset_is_refused(ami: Path) -> None:
    with pytest.raises(ValueError, match="subset"):
        ami_items("dev", DATA_DIR)


def test_protocol_registered_with_pyannote_database(ami: Path, tmp_path: Path) -> None:
    path = register_ami_protocol(DATA_DIR)
    assert path == ami / "database.yml"
    items = load_pyannote_protocol(AMI_PROTOCOL, "development", out_dir=tmp_path)
    assert [item.uri for item in items] == ["dev00", "dev01"]
    direct = {item.uri: item for item in ami_items("development", DATA_DIR)}
    for item in items:
        assert item.audio.resolve() == direct[item.uri].audio.resolve()
        assert item.reference().labels() == direct[item.uri].reference().labels()
        assert item.annotated().duration() == pytest.approx(30.0)
    train = ami_protocol_items("train", DATA_DIR, out_dir=tmp_path / "train")
    assert [item.uri for item in train] == sorted(TRAIN_SPEAKERS)
    assert {item.uri: len(item.reference().labels()) for item in train} == TRAIN_SPEAKERS


@pytest.fixture(scope="module")
def diarizer():  # type: ignore[no-untyped-def]
    from workbench.engine.config import DiarizationConfig
    from workbench.engine.diarization.diarizer import Diarizer

    return Diarizer(DiarizationConfig())


@pytest.mark.models
@pytest.mark.parametrize("uri", ["trn07", "trn04"])
def test_given_speaker_count_is_honoured(ami: Path, diarizer, uri: str) -> None:  # type: ignore[no-untyped-def]
    # 4 and 3 speakers talking over each other in 30 s. Before, trn07 with 4 given ended
    # with 2 ("The detected number of speakers (1) ... is outside the given bounds
    # [4, 4]": too few embeddings of 2 s of clean speech to train the clustering).
    item = next(i for i in ami_items("train", DATA_DIR) if i.uri == uri)
    count = item.info["num_speakers"]
    result = diarizer(item.load_audio(), num_speakers=count)
    assert result.num_speakers == count
    assert result.speaker_count["rule"] == "given"
