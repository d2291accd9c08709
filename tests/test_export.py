"""Every export format parses back and agrees with transcript.json."""

from __future__ import annotations

import csv
import html
import json
import math
import re
from pathlib import Path

import pandas as pd
import pysubs2
import pytest
import webvtt
from pyannote.database.util import load_rttm as pyannote_load_rttm

from workbench.engine.formats import RESULT_FORMATS, load, read_rttm_turns, read_srt, read_vtt
from workbench.research.metrics import load_rttm
from workbench.engine.transcript import Transcript, Turn, Word, assign_speakers, build_segments


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
    expected = [(round(s.start, 3), _cue_end(s.start, s.end), str(s.speaker), s.text)
                for s in t.segments]
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


# --------------------------------------------------------------------------- independent readers


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_json_schema(doc: dict) -> None:
    """transcript.json against the documented shape (DESIGN.md, README): segments with
    words, diarization turns, config and timings, with the documented types."""
    assert isinstance(doc["segments"], list) and isinstance(doc["diarization"], list)
    assert isinstance(doc["config"], dict) and doc["config"]
    assert isinstance(doc["timings"], dict)
    assert all(isinstance(k, str) and _number(v) and v >= 0 for k, v in doc["timings"].items())
    for seg in doc["segments"]:
        assert _number(seg["start"]) and _number(seg["end"]) and seg["start"] <= seg["end"]
        assert seg["speaker"] is None or isinstance(seg["speaker"], str)
        assert isinstance(seg["text"], str) and isinstance(seg["words"], list) and seg["words"]
        for w in seg["words"]:
            assert _number(w["start"]) and _number(w["end"]) and w["start"] <= w["end"]
            assert seg["start"] <= w["start"] and w["end"] <= seg["end"]
            assert isinstance(w["word"], str) and _number(w["probability"])
            assert 0 <= w["probability"] <= 1 and w["speaker"] == seg["speaker"]
        assert seg["text"] == "".join(w["word"] for w in seg["words"]).strip()
    for turn in doc["diarization"]:
        assert _number(turn["start"]) and _number(turn["end"]) and turn["start"] <= turn["end"]
        assert isinstance(turn["speaker"], str)


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _cue_end_ms(start: float, end: float) -> int:
    """A cue's end as SRT and WebVTT write it: at least 1 ms after its start."""
    return max(_ms(end), _ms(start) + 1)


def _cue_end(start: float, end: float) -> float:
    """A cue's end in seconds, as `read_srt` and `read_vtt` give it back."""
    if _ms(end) > _ms(start):
        return round(end, 3)
    ms = _cue_end_ms(start, end)
    return ms // 1000 + ms % 1000 / 1000


def check_exports_independently(directory: Path) -> dict:
    """Parse every transcript.* in `directory` with readers that are not the workbench's
    (pysubs2, webvtt-py, pyannote.database, pandas) and compare with transcript.json as the
    json module reads it; returns that document."""
    doc = json.loads((directory / "transcript.json").read_text(encoding="utf-8"))
    check_json_schema(doc)
    segments = doc["segments"]
    speaker = [s["speaker"] if s["speaker"] is not None else "UNKNOWN" for s in segments]

    srt = pysubs2.load(str(directory / "transcript.srt"), encoding="utf-8", format_="srt")
    assert len(srt) == len(segments)
    for event, seg, spk in zip(srt, segments, speaker):
        assert (event.start, event.end) == (_ms(seg["start"]),
                                            _cue_end_ms(seg["start"], seg["end"]))
        # SRT has no escaping: readers take anything in angle brackets for a tag.
        assert event.plaintext == re.sub(r"<[^>]*>", "", f"[{spk}] {seg['text']}")

    vtt = webvtt.read(str(directory / "transcript.vtt"))
    assert len(vtt.captions) == len(segments)
    for cue, seg, spk in zip(vtt.captions, segments, speaker):
        for stamp, ms in ((cue.start_time, _ms(seg["start"])),
                          (cue.end_time, _cue_end_ms(seg["start"], seg["end"]))):
            assert ((stamp.hours * 60 + stamp.minutes) * 60 + stamp.seconds) * 1000 \
                + stamp.milliseconds == ms
        assert cue.voice == spk
        assert html.unescape(cue.text) == seg["text"]

    rttm = pyannote_load_rttm(directory / "transcript.rttm")
    if doc["diarization"]:
        assert list(rttm) == [re.sub(r"\s+", "_", doc["uri"]) or "_"]
        annotation = rttm[list(rttm)[0]]
        got = sorted((round(seg.start, 3), round(seg.end, 3), label)
                     for seg, _, label in annotation.itertracks(yield_label=True))
        want = sorted((round(t["start"], 3), round(t["end"], 3), t["speaker"])
                      for t in doc["diarization"])
        assert len(got) == len(want)
        for (s1, e1, l1), (s2, e2, l2) in zip(got, want):
            assert (s1, l1) == (s2, l2) and e1 == pytest.approx(e2, abs=0.002)
    else:
        assert rttm == {}

    table = pd.read_csv(directory / "transcript.csv", dtype={"speaker": str, "word": str},
                        keep_default_na=False)
    assert list(table.columns) == ["segment", "speaker", "start", "end", "word", "probability"]
    words = [(i, spk, w) for i, (seg, spk) in enumerate(zip(segments, speaker))
             for w in seg["words"]]
    assert len(table) == len(words)
    for row, (i, spk, w) in zip(table.itertuples(index=False), words):
        assert (row.segment, row.speaker, row.word) == (i, spk, w["word"].strip())
        assert row.start == pytest.approx(w["start"], abs=0.0005)
        assert row.end == pytest.approx(w["end"], abs=0.0005)
        assert row.probability == pytest.approx(w["probability"], abs=0.00005)

    lines = (directory / "transcript.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(segments)
    for line, seg, spk in zip(lines, segments, speaker):
        m = re.fullmatch(r"\[(\d\d):(\d\d):(\d\d)\.(\d{3})\] (.*)", line)
        assert m, line
        h, mi, se, ms = map(int, m.groups()[:4])
        assert ((h * 60 + mi) * 60 + se) * 1000 + ms == _ms(seg["start"])
        assert m.group(5) == f"{spk}: {seg['text']}"
    return doc


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
    assert set(paths) == set(RESULT_FORMATS)
    back = check_exports_agree(tmp_path)
    assert back.serialize() == t.serialize()
    assert check_exports_independently(tmp_path) == t.serialize()
    assert [s.speaker for s in back.segments] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]
    assert "my_call" in (tmp_path / "transcript.rttm").read_text()


def test_unknown_speakers_unicode_and_long_times_survive_independent_readers(
        tmp_path: Path) -> None:
    """No diarization (speaker None -> UNKNOWN), non-ASCII text, times past one hour."""
    words = [Word(1.001, 1.5, " Oui.", 0.99),  # 1.001 * 1000 < 1001 in binary floating point
             Word(3725.004, 3725.5, " Café", 0.91), Word(3725.6, 3726.25, " naïve —", 0.5),
             Word(3727.0, 3727.999, " 日本語", 0.3333)]
    t = Transcript(build_segments(words), [], 3728.0, "fr", {"options": {"diarize": False}},
                   {"asr": 1.25}, uri="long")
    t.save(tmp_path)
    doc = check_exports_independently(tmp_path)
    assert doc["diarization"] == [] and {s["speaker"] for s in doc["segments"]} == {None}
    assert "00:00:01,001 --> " in (tmp_path / "transcript.srt").read_text(encoding="utf-8")
    assert "01:02:05,004 --> " in (tmp_path / "transcript.srt").read_text(encoding="utf-8")


def test_reference_and_subtitle_lines_stay_one_record(tmp_path: Path) -> None:
    """STM and UEM fields are split on white space: a uri or speaker with spaces (and an
    unknown speaker) is written as RTTM writes it, a line break in text becomes a space;
    a blank line inside a text no longer ends an SRT or VTT cue early; an RTTM turn's end
    reads back as written (start and duration were rounded apart)."""
    from workbench.engine.formats import format_rttm, format_stm, format_uem, read_stm, read_uem
    from workbench.engine.transcript import TranscriptSegment

    stm = tmp_path / "a.stm"
    stm.write_text(format_stm("my call", [TranscriptSegment(0, 1, "John Smith", "hi\nthere"),
                                          TranscriptSegment(1, 2, None, "bye")]))
    assert [(u, s.speaker, s.text) for u, s in read_stm(stm)] == [
        ("my_call", "John_Smith", "hi there"), ("my_call", "UNKNOWN", "bye")]
    uem = tmp_path / "a.uem"
    uem.write_text(format_uem("my call", [(0.0, 1.5)]))
    assert read_uem(uem) == [("my_call", (0.0, 1.5))]
    rttm = format_rttm("x", [Turn(0.0004, 0.0016, "A")])
    assert [(t.start, t.end) for t in read_rttm_turns(rttm)] == [(0.0, 0.002)]

    words = [Word(0.1, 0.4, " line one\n\nline two", 0.9)]
    t = Transcript(build_segments(assign_speakers(words, [Turn(0, 1, "A")])), [Turn(0, 1, "A")],
                   1.0, "en", {}, {}, uri="cue")
    t.save(tmp_path / "cue")
    for read, name in ((read_srt, "transcript.srt"), (read_vtt, "transcript.vtt")):
        cues = read((tmp_path / "cue" / name).read_text(encoding="utf-8"))
        assert [(speaker, text) for _, _, speaker, text in cues] == [("A", "line one line two")]


@pytest.mark.parametrize("name, text", [
    ("a.uem", "call 1 30 0\n"),  # (scored nothing: an empty hypothesis scored 0 % DER)
    ("a.uem", "call 1 0 nan\n"),
    ("a.rttm", "SPEAKER call 1 2.0 -1.0 <NA> <NA> A <NA> <NA>\n"),  # (left out silently)
    ("a.rttm", "SPEAKER call 1 2.0 nan <NA> <NA> A <NA> <NA>\n"),
    ("a.rttm", "SPEAKER call 1 x 1.0 <NA> <NA> A <NA> <NA>\n"),  # (no file or line named)
    ("a.stm", "call 1 A 5 4 hello\n"),
])
def test_a_reference_line_that_ends_before_it_starts_is_an_error_naming_it(
        tmp_path: Path, name: str, text: str) -> None:
    from workbench.engine.formats import read_rttm, read_stm, read_uem

    path = tmp_path / name
    path.write_text("# a comment\n" + text)
    read = {".uem": read_uem, ".rttm": read_rttm, ".stm": read_stm}[path.suffix]
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}:2: a {path.suffix[1:].upper()} line"):
        read(path)


def test_a_line_break_ending_a_speaker_or_text_stays_out_of_the_cue(tmp_path: Path) -> None:
    """A speaker or text ending with a line break kept it (``"x\\n".splitlines()`` is one
    line): ``<v Alice\\n>hi\\n</v>`` in WebVTT, ``[Alice\\n]`` in SRT, two lines in TXT."""
    from workbench.engine.transcript import TranscriptSegment

    segments = [TranscriptSegment(0.5, 1.0, "Alice\n", "hi\r\n"),
                TranscriptSegment(1.5, 2.0, "Bob\r\n", "bye\n")]
    Transcript(segments, [], 2.0, "en", {}, {}, uri="breaks").save(tmp_path)
    vtt = (tmp_path / "transcript.vtt").read_text(encoding="utf-8")
    assert "<v Alice>hi</v>\n" in vtt and "<v Bob>bye</v>\n" in vtt
    assert [(c.voice, c.text) for c in webvtt.read(str(tmp_path / "transcript.vtt")).captions
            ] == [("Alice", "hi"), ("Bob", "bye")]
    srt = (tmp_path / "transcript.srt").read_text(encoding="utf-8")
    assert [(spk, text) for _, _, spk, text in read_srt(srt)] == [("Alice", "hi"), ("Bob", "bye")]
    assert [e.plaintext for e in pysubs2.SSAFile.from_string(srt, format_="srt")] == [
        "[Alice] hi", "[Bob] bye"]
    assert (tmp_path / "transcript.txt").read_text(encoding="utf-8") == (
        "[00:00:00.500] Alice: hi\n[00:00:01.500] Bob: bye\n")


def test_a_zero_length_segment_gets_a_cue_one_millisecond_long(tmp_path: Path) -> None:
    """Whisper rounds word times to 0.01 s: a segment of one word can start and end at
    once, and its cue ended where it started (WebVTT requires end > start; players skip
    it). Times that round to the same millisecond count as zero length too."""
    words = [Word(0.5, 1.25, " Well,", 0.9, "A"), Word(2.0, 2.0, " yes.", 0.8, "A"),
             Word(4.0, 4.0004, " No.", 0.7, "B"), Word(5.9996, 6.0004, " Fine.", 0.6, "A")]
    t = Transcript(build_segments(words, max_pause=0.5), [], 7.0, "en", {"options": {}},
                   {"asr": 0.1}, uri="instant")
    assert [(s.start, s.end) for s in t.segments] == [(0.5, 1.25), (2.0, 2.0), (4.0, 4.0004),
                                                       (5.9996, 6.0004)]
    t.save(tmp_path)
    srt = (tmp_path / "transcript.srt").read_text(encoding="utf-8")
    assert re.findall(r"\S+ --> \S+", srt) == [
        "00:00:00,500 --> 00:00:01,250", "00:00:02,000 --> 00:00:02,001",
        "00:00:04,000 --> 00:00:04,001", "00:00:06,000 --> 00:00:06,001"]
    vtt = (tmp_path / "transcript.vtt").read_text(encoding="utf-8")
    assert re.findall(r"\S+ --> \S+", vtt) == [
        "00:00:00.500 --> 00:00:01.250", "00:00:02.000 --> 00:00:02.001",
        "00:00:04.000 --> 00:00:04.001", "00:00:06.000 --> 00:00:06.001"]
    check_exports_agree(tmp_path)
    assert check_exports_independently(tmp_path) == t.serialize()


def test_saved_results_follow_the_umask_and_a_failed_save_leaves_nothing(
        tmp_path: Path) -> None:
    """mkstemp made every result 0600 whatever the umask; a result that could not be
    written (here a folder of its name) left its temporary file behind."""
    import os
    import stat

    t = Transcript(build_segments([Word(0.0, 0.5, " Hello", 0.9, "A")]), [], 1.0, "en", {}, {})
    old = os.umask(0o022)
    try:
        paths = t.save(tmp_path / "ok")
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths.values()} == {0o644}
    (tmp_path / "bad" / "transcript.csv").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        t.save(tmp_path / "bad")
    assert sorted(p.name for p in (tmp_path / "bad").iterdir() if p.name.startswith(".")) == []


def test_reference_files_with_a_byte_order_mark_keep_their_first_record(tmp_path: Path) -> None:
    """Windows tools start UTF-8 files with a BOM: the first RTTM line's type read
    "\\ufeffSPEAKER" (the turn dropped), the first STM/UEM uri "\\ufeffcall" (that
    utterance scored as missing) -- without a word."""
    from workbench.engine.formats import read_rttm, read_stm, read_uem

    bom = "\ufeff"
    (tmp_path / "r.rttm").write_text(bom + "SPEAKER call 1 0.000 1.000 <NA> <NA> A <NA> <NA>\n"
                                     "SPEAKER call 1 1.000 1.000 <NA> <NA> B <NA> <NA>\n")
    (tmp_path / "s.stm").write_text(bom + "call 1 A 0.0 1.0 hello\ncall 1 B 1.0 2.0 bye\n")
    (tmp_path / "u.uem").write_text(bom + "call 1 0.0 2.0\n")
    assert [(u, t.speaker) for u, t in read_rttm(tmp_path / "r.rttm")] == [("call", "A"),
                                                                          ("call", "B")]
    assert [(u, s.text) for u, s in read_stm(tmp_path / "s.stm")] == [("call", "hello"),
                                                                     ("call", "bye")]
    assert read_uem(tmp_path / "u.uem") == [("call", (0.0, 2.0))]
    assert [t.speaker for t in read_rttm_turns(bom + "SPEAKER c 1 0 1 <NA> <NA> A <NA> <NA>\n")] == ["A"]
    assert read_vtt(bom + "WEBVTT\n\n00:01.000 --> 00:02.500\n<v A>hi</v>\n") == [(1.0, 2.5, "A", "hi")]
    # (commas, as files converted from SRT have them)
    assert read_vtt("WEBVTT\n\n00:00:01,000 --> 00:00:02,500\nhi\n") == [(1.0, 2.5, "", "hi")]


def test_writers_and_their_readers_agree_on_odd_names_texts_and_times(tmp_path: Path) -> None:
    """A speaker `Dr. [X]` read back from SRT as `Dr. [X` with text `] hi`; STM text
    opening with `<unk>` lost it (read as the optional label); RTTM turns of no or
    negative length were written with durations its reader refuses; a NaN time broke
    SRT after transcript.json (with a bare NaN, no JSON) was written."""
    from workbench.engine.formats import format_rttm, format_stm, read_stm, to_srt
    from workbench.engine.transcript import TranscriptSegment

    t = Transcript(build_segments([Word(0.0, 0.5, " hi", 0.9, "Dr. [X]"),
                                   Word(1.0, 1.5, " [laughs] ok", 0.9, "B")]), [], 2.0, "en", {}, {})
    assert [(s, w) for _, _, s, w in read_srt(to_srt(t))] == [("Dr. [X]", "hi"),
                                                               ("B", "[laughs] ok")]
    stm = tmp_path / "s.stm"
    stm.write_text(format_stm("c", [TranscriptSegment(0.0, 1.0, "A", "<unk> yes"),
                                    TranscriptSegment(1.0, 2.0, "B", "no <unk>")]))
    assert [s.text for _, s in read_stm(stm)] == ["<unk> yes", "no <unk>"]
    rttm = format_rttm("c", [Turn(1, 1, "A"), Turn(2.0004, 2.0001, "B"), Turn(4, 3.5, "C"),
                             Turn(5, 5.5, "D")])
    assert read_rttm_turns(rttm) == [Turn(5, 5.5, "D")]
    t = Transcript(build_segments([Word(math.nan, 0.5, " hi", 0.9, "A")]), [], 2.0, "en", {}, {})
    with pytest.raises(ValueError, match="a word's times must be finite numbers"):
        t.save(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


def test_a_sessions_audio_follows_the_umask_as_its_transcripts(tmp_path: Path) -> None:
    """audio.wav (WavWriter, atomic_write) and audio.mp4 came out 0600 whatever the umask,
    while transcript.* beside them followed it (0644 under umask 022)."""
    import os
    import stat

    import numpy as np

    from workbench.engine.audio import write_wav
    from workbench.engine.durable import atomic_write
    from workbench.engine.rendition import encode_mp4

    old = os.umask(0o022)
    try:
        write_wav(tmp_path / "audio.wav", np.zeros(1600, np.float32))
        encode_mp4(tmp_path / "audio.wav", tmp_path / "audio.mp4")
        atomic_write(tmp_path / "note.json", b"{}")
    finally:
        os.umask(old)
    for name in ("audio.wav", "audio.mp4", "note.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
