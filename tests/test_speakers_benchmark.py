"""Tests of benchmarks.speakers: solo pieces of the AMI references, the equal error rate,
and CAM++ telling the people of one meeting apart (train files only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyannote.core import Segment

from benchmarks.speakers import equal_error_rate, main, measure, solo_pieces, solo_runs
from workbench.research.datasets.ami import ami_items

pytestmark = pytest.mark.timeout(300)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def test_equal_error_rate() -> None:
    assert equal_error_rate([0.1, 0.2, 0.3], [0.6, 0.7]) == (0.0, 0.3)
    # one same-speaker pair beyond every different-speaker pair, one different pair
    # below every same one: at the best threshold one of four errs on each side
    rate, threshold = equal_error_rate([0.1, 0.2, 0.3, 0.9], [0.05, 0.6, 0.7, 0.8])
    assert rate == pytest.approx(0.25) and threshold == pytest.approx(0.3)
    assert equal_error_rate([0.5] * 3, [0.5] * 3)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        equal_error_rate([0.1], [])


def test_solo_pieces_lie_in_one_speakers_solo_speech(ami: Path) -> None:
    item = next(i for i in ami_items("train", DATA_DIR) if i.uri == "trn03")
    audio = item.load_audio()
    pieces = solo_pieces(item, 1.0, audio)
    reference = item.reference()
    assert {speaker for speaker, _, _ in pieces} == set(reference.labels())
    for speaker, start, samples in pieces:
        assert len(samples) == 16000
        inner = Segment(start + 0.011, start + 0.989)  # clear of rounding at the edges
        talking = reference.crop(inner).labels()
        assert talking == [speaker], (start, talking)
        assert reference.label_timeline(speaker).crop(inner).duration() == pytest.approx(
            inner.duration, abs=1e-6)
    starts = sorted(start for speaker, start, _ in pieces if speaker == pieces[0][0])
    assert np.all(np.diff(starts) >= 1.0 - 1e-9)  # back to back, never overlapping


def test_solo_runs_of_a_meeting(ami: Path) -> None:
    # trn03: MÉO069 talks for 28.9 s, MEE067 for 1.2 s, 1.1 s of it alone at a stretch
    item = next(i for i in ami_items("train", DATA_DIR) if i.uri == "trn03")
    runs = solo_runs(item)
    longest = {k: max(e - s for s, e in v) for k, v in runs.items()}
    assert sorted(longest) == ["MEE067", "MÉO069"]
    assert longest["MEE067"] == pytest.approx(1.1, abs=0.011)
    assert longest["MÉO069"] > 20
    for speaker, stretches in runs.items():
        other = [label for label in runs if label != speaker][0]
        for start, end in stretches:
            assert not item.reference().label_timeline(other).crop(
                Segment(start + 0.011, end - 0.011)).duration()


def test_campplus_tells_the_people_of_one_meeting_apart(ami: Path) -> None:
    files: list = []
    (row,) = measure(["cam++"], [1.0], ["train"], DATA_DIR, files=files)
    assert [f["uri"] for f in files] == [f"trn0{i}" for i in range(10)]
    assert row["files"] >= 5 and row["different_pairs"] >= 50
    assert row["median_same"] < row["median_different"]
    assert row["eer"] < 0.2


def test_the_test_subset_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--subsets", "train,test"])
    assert exc.value.code == 2
    assert "the AMI test subset is kept for final figures" in capsys.readouterr().err
    with pytest.raises(ValueError, match="kept for final figures"):
        measure(["cam++"], [1.0], ["test"], DATA_DIR)
