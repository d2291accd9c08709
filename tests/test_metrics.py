"""Metrics and reference readers: hand-computed cases, pyannote.metrics as the oracle for DER."""

from __future__ import annotations

import math
from pathlib import Path

import pyannote.audio
import pytest
from pyannote.core import Annotation, Segment, Timeline
from pyannote.database.util import load_rttm as pyannote_load_rttm
from meeteval.wer.api import cpwer as meeteval_cpwer
from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

from workbench.research.metrics import (
    STMEntry,
    as_annotation,
    cp_wer,
    diarization_error,
    jaccard_error_rate,
    load_rttm,
    load_stm,
    load_uem,
    normalize_text,
    stm_by_speaker,
    stm_text,
    word_error_rate,
)
from workbench.engine.transcript import Turn

SAMPLE = Path(pyannote.audio.__file__).parent / "sample"


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  Oh,   hello.\n\tI didn't know. ", "oh hello i didn't know"),
        ("I\u2019m Sheila\u2019s friend", "i'm sheila's friend"),
        ("'quoted' dogs' toys", "quoted dogs toys"),
        ("well-known state-of-the-art", "well known state of the art"),
        ("yes\u2014no \u2013 maybe", "yes no maybe"),
        ("It costs $3.50, about 1,000 units (50%).", "it costs 3.50 about 1,000 units 50"),
        ("Twenty 20 twenty-one", "twenty 20 twenty one"),
        ("U.S.A. end.", "u s a end"),
        ("snake_case & more...", "snake case more"),
        ("", ""),
        ("?!", ""),
        ("ÉCOLE Straße", "école straße"),
        # combining marks stay in their word (Devanagari, Thai, Arabic)
        ("किताब पढ़ो", "किताब पढ़ो"),
        ("ที่นี่", "ที่ นี่"),  # (Thai is written without spaces: see below)
        ("كَتَبَ!", "كَتَبَ"),
        # an acute accent as apostrophe (NFKC makes it a space and a combining mark)
        ("Didn\u00b4t", "didn't"),
        # zero-width non-joiner inside a Persian word
        ("می\u200cخواهم بروم", "می\u200cخواهم بروم"),
        # ...but one that joins no two letters is no word
        ("hello \u200c world", "hello world"),
        ("hello\u200d.", "hello"),
        # after a virama (a mark, not \w) it is part of the word: half forms, chillus
        ("क्\u200dष", "क्\u200dष"),
        ("അവന്\u200d", "അവന്\u200d"),
        # scripts written without spaces: each character is a word (the error rate is
        # the character error rate), its combining marks with it; Korean keeps its words
        ("今天天气很好。", "今 天 天 气 很 好"),
        ("AIの研究だ", "ai の 研 究 だ"),
        ("hello世界world", "hello 世 界 world"),
        ("สวัสดีครับ", "ส วั ส ดี ค รั บ"),
        ("서울에 갑니다", "서울에 갑니다"),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_normalize_text_is_idempotent() -> None:
    text = "At least, you know, they all call me a Yankee down here -- so what can I say?"
    once = normalize_text(text)
    assert normalize_text(once) == once


# --------------------------------------------------------------------------- WER


def test_wer_substitution_and_insertion() -> None:
    result = word_error_rate("a b c d", "a x c d e")
    assert (result.substitutions, result.deletions, result.insertions, result.hits) == (1, 0, 1, 3)
    assert result.reference_words == 4 and result.hypothesis_words == 5
    assert result.wer == pytest.approx(2 / 4)
    assert result.errors == 2


def test_wer_deletions() -> None:
    result = word_error_rate("the quick brown fox", "the fox")
    assert (result.substitutions, result.deletions, result.insertions) == (0, 2, 0)
    assert result.wer == pytest.approx(0.5)


def test_wer_of_an_unspaced_script_is_a_character_error_rate() -> None:
    """Chinese has no spaces between words: a whole sentence was one "word", so one
    wrong character made the WER 100 %."""
    result = word_error_rate("今天天气很好。", "今天天气不好")
    assert (result.substitutions, result.reference_words) == (1, 6)
    assert result.wer == pytest.approx(1 / 6)
    assert cp_wer({"A": "今天很好"}, {"x": "今天很好"}).cpwer == 0.0


def test_wer_normalises_both_sides_unless_told_not_to() -> None:
    assert word_error_rate("Hello, World!", "hello world").wer == 0.0
    raw = word_error_rate("Hello, World!", "hello world", normalize=False)
    assert raw.substitutions == 2 and raw.wer == 1.0 and raw.normalized is False


def test_wer_empty_sides() -> None:
    assert word_error_rate("", "").wer == 0.0
    empty_ref = word_error_rate("...", "uh oh")
    assert empty_ref.insertions == 2 and math.isinf(empty_ref.wer)
    empty_hyp = word_error_rate("one two three", "")
    assert empty_hyp.deletions == 3 and empty_hyp.wer == 1.0


def test_wer_result_serializes() -> None:
    data = word_error_rate("a b", "a c").serialize()
    assert data["wer"] == 0.5 and data["substitutions"] == 1 and data["reference_words"] == 2


# --------------------------------------------------------------------------- cpWER


def test_cp_wer_finds_the_speaker_permutation() -> None:
    reference = {"A": "hello world", "B": "good morning everyone"}
    hypothesis = {"spk1": "Good morning, everyone.", "spk0": "Hello world!"}
    result = cp_wer(reference, hypothesis)
    assert result.cpwer == 0.0
    assert set(result.assignment) == {("A", "spk0"), ("B", "spk1")}
    # Pairing the speakers in dictionary order instead would be all wrong.
    pairs = zip(reference.values(), hypothesis.values(), strict=True)
    naive = sum(word_error_rate(r, h).errors for r, h in pairs)
    assert naive > 0


def test_cp_wer_counts_a_word_given_to_the_wrong_speaker_twice() -> None:
    result = cp_wer(
        {"A": "hello world", "B": "good morning everyone"},
        {"x": "good morning", "y": "hello world everyone"},
    )
    # "everyone" is deleted from B's stream and inserted into A's.
    assert (result.deletions, result.insertions, result.substitutions) == (1, 1, 0)
    assert result.reference_words == 5
    assert result.cpwer == pytest.approx(2 / 5)


def test_cp_wer_extra_and_missing_speakers() -> None:
    extra = cp_wer({"A": "a b"}, {"x": "a b", "y": "c d"})
    assert extra.false_alarm_speakers == 1 and extra.insertions == 2 and extra.cpwer == 1.0
    missing = cp_wer({"A": "a b", "B": "c d"}, {"x": "a b"})
    assert missing.missed_speakers == 1 and missing.deletions == 2 and missing.cpwer == 0.5
    assert missing.serialize()["assignment"] == [["A", "x"], ["B", None]]


# --------------------------------------------------------------------------- DER / JER


def annotation(*turns: tuple[float, float, str], uri: str = "test") -> Annotation:
    result = Annotation(uri=uri)
    for track, (start, end, speaker) in enumerate(turns):
        result[Segment(start, end), track] = speaker
    return result


REFERENCE = annotation((0, 10, "A"), (10, 20, "B"))
HYPOTHESES = {
    "confusion": annotation((0, 12, "x"), (12, 20, "y")),
    "missed": annotation((0, 10, "x"), (10, 18, "y")),
    "false_alarm": annotation((0, 10, "x"), (10, 21, "y")),
    "overlap": annotation((0, 10, "x"), (8, 20, "y")),
    "mixed": annotation((0.5, 11, "x"), (11, 14, "y"), (15, 22, "x")),
}


@pytest.mark.parametrize(
    ("name", "missed", "false_alarm", "confusion"),
    [
        ("confusion", 0, 0, 2),
        ("missed", 2, 0, 0),
        ("false_alarm", 0, 1, 0),
        ("overlap", 0, 2, 0),
    ],
)
def test_der_components_by_hand(name: str, missed: float, false_alarm: float, confusion: float) -> None:
    result = diarization_error(REFERENCE, HYPOTHESES[name])
    assert result.total == pytest.approx(20)
    assert (result.missed, result.false_alarm, result.confusion) == pytest.approx(
        (missed, false_alarm, confusion)
    )
    assert result.der == pytest.approx((missed + false_alarm + confusion) / 20)


@pytest.mark.filterwarnings("ignore:'uem' was approximated:UserWarning")  # the oracle's own
@pytest.mark.parametrize("name", sorted(HYPOTHESES))
@pytest.mark.parametrize(("collar", "skip_overlap"), [(0.0, False), (1.0, False), (0.5, True)])
def test_der_and_jer_agree_with_pyannote_metrics(name: str, collar: float, skip_overlap: bool) -> None:
    hypothesis = HYPOTHESES[name]
    ours = diarization_error(REFERENCE, hypothesis, collar=collar, skip_overlap=skip_overlap)
    theirs = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)(REFERENCE, hypothesis)
    assert ours.der == pytest.approx(theirs)
    jer = jaccard_error_rate(REFERENCE, hypothesis, collar=collar, skip_overlap=skip_overlap)
    oracle = JaccardErrorRate(collar=collar, skip_overlap=skip_overlap)(REFERENCE, hypothesis)
    assert jer.jer == pytest.approx(oracle)
    assert jer.speaker_count == 2


def test_jer_pairs_speakers_as_dscore_does() -> None:
    """dscore pairs reference and hypothesis speakers to minimise the JER; pyannote.metrics
    pairs them by overlap time. Here X overlaps A for 2 s and B for 1 s: by overlap A-X,
    leaving B unpaired (JER (5/7 + 1) / 2); dscore pairs B-X (JER 1 - 1/3) and A-Y
    (nothing in common: 1), (2/3 + 1) / 2. Ours said pyannote's figure."""
    reference = annotation((0, 6, "A"), (6, 7, "B"))
    hypothesis = annotation((4, 7, "X"), (7, 8, "Y"))
    assert JaccardErrorRate()(reference, hypothesis) == pytest.approx((5 / 7 + 1) / 2)
    assert jaccard_error_rate(reference, hypothesis).jer == pytest.approx((2 / 3 + 1) / 2)


def test_der_collar_is_the_total_width_around_each_reference_boundary() -> None:
    # Boundaries at 0, 10 and 20 lose 0.5 s on each side: 18 s are scored, and the
    # confusion from 10 to 12 shrinks to 10.5-12.
    result = diarization_error(REFERENCE, HYPOTHESES["confusion"], collar=1.0)
    assert result.total == pytest.approx(18)
    assert result.confusion == pytest.approx(1.5)


def test_der_uem_restricts_the_scored_region() -> None:
    hypothesis = HYPOTHESES["confusion"]
    assert diarization_error(REFERENCE, hypothesis, uem=Segment(0, 10)).der == 0.0
    in_timeline = diarization_error(REFERENCE, hypothesis, uem=Timeline([Segment(10, 20)]))
    assert in_timeline.total == pytest.approx(10) and in_timeline.confusion == pytest.approx(2)


def test_der_accepts_turns() -> None:
    turns = [Turn(0, 12, "x"), Turn(12, 20, "y")]
    assert as_annotation(turns).labels() == ["x", "y"]
    from_turns = diarization_error([Turn(0, 10, "A"), Turn(10, 20, "B")], turns)
    assert from_turns == diarization_error(REFERENCE, HYPOTHESES["confusion"])
    assert from_turns.serialize()["confusion"] == pytest.approx(2)


def test_empty_reference_and_hypothesis() -> None:
    assert diarization_error(Annotation(uri="e"), Annotation(uri="e")).der == 0.0
    assert math.isinf(diarization_error(Annotation(uri="e"), annotation((0, 1, "x"), uri="e")).der)
    # JER of speech where nobody speaks: all error, as pyannote.metrics says
    speech = annotation((5, 10, "x"), uri="e")
    assert jaccard_error_rate(Annotation(uri="e"), speech).jer == 1.0 == \
        JaccardErrorRate()(Annotation(uri="e"), speech, uem=Timeline([Segment(0, 10)]))
    assert jaccard_error_rate(Annotation(uri="e"), Annotation(uri="e")).jer == 0.0


def test_wer_tells_words_apart_by_their_vowel_signs() -> None:
    assert word_error_rate("किताब पढ़ो", "कीताब पढ़ो").wer == 0.5
    assert word_error_rate("ที่นี่", "ทีนี").wer == 1.0


# --------------------------------------------------------------------------- readers


def test_load_rttm_matches_pyannote_database_on_the_sample() -> None:
    ours = load_rttm(SAMPLE / "sample.rttm")
    theirs = pyannote_load_rttm(SAMPLE / "sample.rttm")
    assert list(ours) == ["sample"]
    ref = ours["sample"]
    assert ref.uri == "sample"
    assert sorted(ref.labels()) == ["speaker90", "speaker91"]
    assert len(list(ref.itertracks())) == 10
    assert list(ref.itertracks(yield_label=True))[0][0] == Segment(6.69, 7.12)
    assert diarization_error(theirs["sample"], ref).der == 0.0
    assert ref.get_timeline().extent() == theirs["sample"].get_timeline().extent()


def test_load_rttm_keeps_speaker_names_and_skips_other_lines(tmp_path: Path) -> None:
    rttm = tmp_path / "x.rttm"
    rttm.write_text(
        ";; a comment\n"
        "\n"
        "SPKR-INFO f1 1 <NA> <NA> <NA> unknown NA <NA> <NA>\n"
        "SPEAKER f1 1 0.00 1.50 <NA> <NA> NA <NA> <NA>\n"
        "SPEAKER f1 1 1.50 0.50 <NA> <NA> null <NA> <NA>\n"
        "SPEAKER f2 1 3.00 1.00 <NA> <NA> spk <NA> <NA>\n"
    )
    loaded = load_rttm(rttm)
    assert sorted(loaded) == ["f1", "f2"]
    assert sorted(loaded["f1"].labels()) == ["NA", "null"]
    assert loaded["f1"].label_duration("NA") == pytest.approx(1.5)
    assert loaded["f2"].get_timeline()[0] == Segment(3.0, 4.0)


def test_load_rttm_rejects_a_short_line(tmp_path: Path) -> None:
    rttm = tmp_path / "bad.rttm"
    rttm.write_text("SPEAKER f1 1 0.0 1.0\n")
    with pytest.raises(ValueError, match="bad.rttm:1"):
        load_rttm(rttm)


def test_load_stm_on_the_sample() -> None:
    entries = load_stm(SAMPLE / "sample.stm")
    assert len(entries) == 13
    assert entries[0] == STMEntry("Diane", 6.68, 7.16, "Hello?")
    assert entries[-1].text == "Oh, I don't hear that in New Jersey now."
    assert [e.start for e in entries] == sorted(e.start for e in entries)
    assert {e.speaker for e in entries} == {"Diane", "Sheila"}

    text = stm_text(SAMPLE / "sample.stm")
    assert text.startswith("Hello? Hello? Oh, hello. I didn't know you were there.")
    assert len(normalize_text(text).split()) == 81

    by_speaker = stm_by_speaker(SAMPLE / "sample.stm")
    assert sorted(by_speaker) == ["Diane", "Sheila"]
    assert by_speaker["Sheila"].startswith("Hello? Neither did I. And I'm Sheila in Texas")
    assert len(normalize_text(by_speaker["Diane"]).split()) == 46
    assert len(normalize_text(by_speaker["Sheila"]).split()) == 35


def sample_hypothesis() -> dict[str, str]:
    """The sample call's speakers under other labels with three known word errors:
    Sheila's "yankee" substituted, Diane's first "hello" deleted and an "um" inserted."""
    by_speaker = {k: normalize_text(v) for k, v in stm_by_speaker(SAMPLE / "sample.stm").items()}
    sheila = by_speaker["Sheila"].replace("yankee", "banana")
    assert sheila != by_speaker["Sheila"]
    diane = by_speaker["Diane"].split()
    assert diane[0] == "hello"
    return {"x": sheila, "y": " ".join(diane[1:] + ["um"])}


def test_cp_wer_on_the_sample_with_errors_counted_by_hand() -> None:
    by_speaker = stm_by_speaker(SAMPLE / "sample.stm")
    result = cp_wer(by_speaker, sample_hypothesis())
    assert (result.substitutions, result.deletions, result.insertions) == (1, 1, 1)
    assert result.reference_words == 81 and result.errors == 3
    assert result.cpwer == pytest.approx(3 / 81)
    assert set(result.assignment) == {("Diane", "y"), ("Sheila", "x")}
    # One hypothesis speaker holding only Diane's words: all 35 of Sheila's are deleted.
    one = cp_wer(by_speaker, {"x": by_speaker["Diane"]})
    assert (one.deletions, one.insertions, one.substitutions) == (35, 0, 0)
    assert one.missed_speakers == 1 and one.cpwer == pytest.approx(35 / 81)
    # Both speakers' words given to one: Diane's 46 match, Sheila's 35 are deleted from
    # her stream and inserted into Diane's.
    merged = cp_wer(by_speaker, {"x": by_speaker["Diane"] + " " + by_speaker["Sheila"]})
    assert (merged.deletions, merged.insertions, merged.substitutions) == (35, 35, 0)
    assert merged.cpwer == pytest.approx(70 / 81)


def test_cp_wer_agrees_with_meeteval_reading_stm_files(tmp_path: Path) -> None:
    """The same figures as meeteval's own STM pipeline (texts normalised beforehand, since
    meeteval does not strip punctuation or case)."""
    reference = tmp_path / "ref.stm"
    reference.write_text("".join(f"sample 1 {e.speaker} {e.start} {e.end} {normalize_text(e.text)}\n"
                                 for e in load_stm(SAMPLE / "sample.stm")))
    hypothesis = tmp_path / "hyp.stm"
    hypothesis.write_text("".join(f"sample 1 {spk} 0.0 30.0 {text}\n"
                                  for spk, text in sample_hypothesis().items()))
    theirs = meeteval_cpwer(reference=str(reference), hypothesis=str(hypothesis),
                            reference_sort="segment", hypothesis_sort="segment")["sample"]
    ours = cp_wer(stm_by_speaker(reference), stm_by_speaker(hypothesis))
    assert (ours.errors, ours.reference_words) == (theirs.errors, theirs.length) == (3, 81)
    assert (ours.substitutions, ours.deletions, ours.insertions) == (
        theirs.substitutions, theirs.deletions, theirs.insertions)
    assert ours.cpwer == pytest.approx(float(theirs.error_rate))


def test_load_stm_sorts_skips_labels_and_ignored_segments(tmp_path: Path) -> None:
    stm = tmp_path / "x.stm"
    stm.write_text(
        ";; comment\n"
        "rec 1 B 2.0 3.0 <O,F0,female> second words\n"
        "rec 1 A 0.0 1.0 first\n"
        "rec 1 A 1.0 2.0 ignore_time_segment_in_scoring\n"
        "other 1 C 0.0 1.0 elsewhere\n"
        "rec 1 A 3.0 4.0\n"
    )
    assert load_stm(stm, uri="rec") == [
        STMEntry("A", 0.0, 1.0, "first"),
        STMEntry("B", 2.0, 3.0, "second words"),
        STMEntry("A", 3.0, 4.0, ""),
    ]
    assert stm_text(stm, uri="rec") == "first second words"
    assert stm_text(stm) == "first elsewhere second words"
    assert stm_by_speaker(stm, uri="rec") == {"A": "first", "B": "second words"}


def test_load_uem(tmp_path: Path) -> None:
    uem = tmp_path / "x.uem"
    uem.write_text("rec 1 0.00 10.00\nrec 1 20.0 30.0\nother 1 1 2\n")
    loaded = load_uem(uem)
    assert sorted(loaded) == ["other", "rec"]
    assert list(loaded["rec"]) == [Segment(0, 10), Segment(20, 30)]
    assert loaded["rec"].uri == "rec"
    scored = diarization_error(annotation((0, 30, "A")), annotation((0, 30, "x")), uem=loaded["rec"])
    assert scored.total == pytest.approx(20)


def test_a_speakers_overlapping_turns_are_one_voice() -> None:
    """Turns of one speaker that overlap (repeated RTTM lines) are not speech counted
    twice: md-eval and dscore score A 0-5, A 3-6, B 6-8 against x 0-6, y 6-8 as 0 % DER
    over 8 s (pyannote counted 10 s, 2 of them missed)."""
    ref = [Turn(0, 5, "A"), Turn(3, 6, "A"), Turn(6, 8, "B")]
    hyp = [Turn(0, 6, "x"), Turn(6, 8, "y")]
    der = diarization_error(ref, hyp, uem=Segment(0, 8))
    assert (der.der, der.total, der.missed) == (0.0, 8.0, 0.0)
    assert jaccard_error_rate(ref, hyp, uem=Segment(0, 8)).jer == 0.0
