"""Every export format parses back and agrees with transcript.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from workbench.export import FORMATS, load, read_rttm_turns, read_srt, read_vtt
from workbench.metrics import load_rttm
from workbench.transcript import Transcript, Turn, Word, assign_speakers, build_segments


def check_exports_agree(directory: Path) -> Transcript:
    """Parse every transcript.* in `directory` and compare it with transcript.json."""
    t = load(directory / "transcript.json")
    doc = json.loads((directory / "transcript.json").read_text())
    for key in ("segments", "diarization", "config", "timings"):
        assert key in doc
    for seg in doc["segments"]:
        assert {"start", "end", "speaker", "text", "words"} <= set(seg)
        for w in seg["words"]:
            assert {"start", "end", "word", "probability", "speaker"} <= set(w)
    expected = [(round(s.start, 3), round(s.end, 3), str(s.speaker), s.text) for s in t.segments]
    srt = read_srt((directory / "transcript.srt").read_text())
    assert [(a, b, c, d) for a, b, c, d in srt] == expected
    vtt = read_vtt((directory / "transcript.vtt").read_text())
    assert vtt == expected
    assert "<v " in (directory / "transcript.vtt").read_text() or not t.segments
    rttm = read_rttm_turns((directory / "transcript.rttm").read_text())
    assert [(x.start, x.speaker) for x in rttm] == [
        (round(x.start, 3), x.speaker) for x in sorted(t.turns, key=lambda x: (x.start, x.end))]
    for a, b in zip(rttm, sorted(t.turns, key=lambda x: (x.start, x.end))):
        assert a.end == pytest.approx(b.end, abs=0.002)
    ann = load_rttm(directory / "transcript.rttm")
    assert sum(seg.duration for a in ann.values() for seg, _ in a.itertracks()) == pytest.approx(
        sum(x.end - x.start for x in t.turns), abs=0.01)
    with open(directory / "transcript.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(t.words)
    for row, w in zip(rows, t.words):
        assert row["word"] == w.word.strip() and row["speaker"] == str(w.speaker)
        assert float(row["start"]) == pytest.approx(w.start, abs=0.001)
    txt = (directory / "transcript.txt").read_text().splitlines()
    assert len(txt) == len(t.segments)
    for line, s in zip(txt, t.segments):
        assert line.endswith(f"{s.speaker}: {s.text}")
    return t


def test_all_formats_round_trip(tmp_path: Path) -> None:
    turns = [Turn(0.0, 1.5, "SPEAKER_00"), Turn(1.6, 3.2, "SPEAKER_01"), Turn(3.0, 3.5, "SPEAKER_00")]
    words = [Word(0.1, 0.4, " Hello,", 0.9), Word(0.5, 1.2, " <world> & co.", 0.8),
             Word(1.7, 2.0, " Hi", 0.95), Word(2.1, 2.9, " there!", 0.7),
             Word(3.05, 3.3, " Bye", 0.6)]
    exclusive = [Turn(0.0, 1.5, "SPEAKER_00"), Turn(1.6, 3.0, "SPEAKER_01"),
                 Turn(3.0, 3.5, "SPEAKER_00")]
    t = Transcript(build_segments(assign_speakers(words, exclusive)), turns, 3.5, "en",
                   {"options": {"x": 1}}, {"asr": 0.5}, uri="my call")
    paths = t.save(tmp_path)
    assert set(paths) == set(FORMATS)
    back = check_exports_agree(tmp_path)
    assert back.serialize() == t.serialize()
    assert [s.speaker for s in back.segments] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]
    assert "my_call" in (tmp_path / "transcript.rttm").read_text()
