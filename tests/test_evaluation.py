"""Scoring against references and comparison tables (no models: hand-made transcripts)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import pytest
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

from workbench.engine.audio import write_wav
from workbench.research.datasets import CorpusItem, sample_call
from workbench.research.evaluation import ALL, ComparisonTable, compare, score
from workbench.engine.transcript import Transcript, TranscriptSegment, Turn, Word, build_segments

# ----------------------------------------------------------------- helpers


def make_item(root: Path, uri: str, duration: float, turns: Sequence[Turn] = (),
              stm: Sequence[tuple[str, float, float, str]] = (),
              uem: Optional[tuple[float, float]] = None) -> CorpusItem:
    """A silent WAV of `duration` s with the given RTTM turns, STM lines and UEM."""
    root.mkdir(parents=True, exist_ok=True)
    audio = write_wav(root / f"{uri}.wav", np.zeros(int(duration * 16000), dtype=np.float32))
    rttm = stm_path = uem_path = None
    if turns:
        rttm = root / f"{uri}.rttm"
        rttm.write_text("".join(f"SPEAKER {uri} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> "
                                f"{t.speaker} <NA> <NA>\n" for t in turns))
    if stm:
        stm_path = root / f"{uri}.stm"
        stm_path.write_text("".join(f"{uri} 1 {spk} {s:.3f} {e:.3f} {text}\n"
                                    for spk, s, e, text in stm))
    if uem:
        uem_path = root / f"{uri}.uem"
        uem_path.write_text(f"{uri} 1 {uem[0]:.3f} {uem[1]:.3f}\n")
    return CorpusItem(uri, audio, rttm, stm_path, uem_path)


def spoken(*utterances: tuple[Optional[str], float, float, str]) -> list[TranscriptSegment]:
    """Segments whose words are spread evenly over (start, end)."""
    segments = []
    for speaker, start, end, text in utterances:
        tokens = text.split()
        step = (end - start) / len(tokens)
        words = tuple(Word(start + i * step, start + (i + 1) * step, " " + tok, 1.0, speaker)
                      for i, tok in enumerate(tokens))
        segments.append(TranscriptSegment(start, end, speaker, text, words))
    return segments


def transcript(turns: Sequence[Turn] = (), segments: Sequence[TranscriptSegment] = (),
               duration: float = 0.0, total: float = 1.0, **options: bool) -> Transcript:
    config = {"options": {"transcribe": True, "diarize": True, **options}}
    return Transcript(list(segments), list(turns), duration, "en", config, {"total": total})


def annotation(turns: Sequence[Turn], uri: str) -> Annotation:
    ann = Annotation(uri=uri)
    for i, t in enumerate(turns):
        ann[Segment(t.start, t.end), i] = t.speaker
    return ann


# ----------------------------------------------------------------- DER / JER


def test_der_and_jer_hand_computed(tmp_path: Path) -> None:
    # ref: A 0-10, B 10-20; scored 0-25.  hyp: X 0-12, Y 12-18, Z 21-22.
    # X->A, Y->B: confusion 10-12 (2 s), missed 18-20 (2 s), false alarm 21-22 (1 s).
    item = make_item(tmp_path, "hand", 25.0, [Turn(0, 10, "A"), Turn(10, 20, "B")],
                     uem=(0.0, 25.0))
    hyp = transcript([Turn(0, 12, "X"), Turn(12, 18, "Y"), Turn(21, 22, "Z")], duration=25)
    row = score(item, hyp)
    assert row["speech"] == pytest.approx(20.0)
    assert row["confusion"] == pytest.approx(2.0)
    assert row["missed"] == pytest.approx(2.0)
    assert row["false_alarm"] == pytest.approx(1.0)
    assert row["der"] == pytest.approx(5 / 20)
    # JER: A: (fa 2 + miss 0) / union 12; B: (0 + 4) / 10; mean over the 2 speakers.
    assert row["jer"] == pytest.approx((2 / 12 + 4 / 10) / 2)
    assert row["jer_speakers"] == 2
    assert (row["ref_speakers"], row["hyp_speakers"], row["speaker_count_error"]) == (2, 3, 1)
    assert row["rtf"] == pytest.approx(1.0 / 25)
    assert math.isnan(row["wer"]) and math.isnan(row["cpwer"])  # no STM


@pytest.mark.parametrize("collar,skip_overlap", [(0.0, False), (0.5, False), (0.25, True)])
def test_der_matches_pyannote_metrics_on_the_sample_call(collar: float,
                                                         skip_overlap: bool) -> None:
    item = sample_call()
    reference = item.reference_turns()
    # A plausible system output: boundaries moved, one turn split and mislabelled,
    # a spurious turn, speakers named differently.
    names = {"speaker90": "spk_a", "speaker91": "spk_b"}
    hyp_turns = [Turn(t.start + 0.4, t.end - 0.3, names[t.speaker]) for t in reference]
    hyp_turns[4] = Turn(10.97, 12.5, "spk_a")
    hyp_turns.append(Turn(12.5, 14.6, "spk_b"))
    hyp_turns.append(Turn(0.5, 1.4, "spk_c"))
    row = score(item, transcript(hyp_turns, duration=30.0), collar=collar,
                skip_overlap=skip_overlap)

    uem = Timeline([Segment(0, 30.0)], uri="sample")
    ref, hyp = item.reference(), annotation(hyp_turns, "sample")
    der = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)(
        ref, hyp, uem=uem, detailed=True)
    assert row["der"] == pytest.approx(der["diarization error rate"])
    assert row["missed"] == pytest.approx(der["missed detection"])
    assert row["false_alarm"] == pytest.approx(der["false alarm"])
    assert row["confusion"] == pytest.approx(der["confusion"])
    assert row["speech"] == pytest.approx(der["total"])
    assert row["confusion"] > 0 and row["false_alarm"] > 0 and row["missed"] > 0
    jer = JaccardErrorRate(collar=collar, skip_overlap=skip_overlap)(ref, hyp, uem=uem)
    assert row["jer"] == pytest.approx(jer)


def test_the_uem_limits_what_is_scored(tmp_path: Path) -> None:
    turns = [Turn(0, 10, "A"), Turn(10, 20, "B")]
    stm = [("A", 0, 10, "one two three"), ("B", 10, 20, "four five six")]
    item = make_item(tmp_path, "cut", 20.0, turns, stm, uem=(0.0, 10.0))
    hyp = transcript([Turn(0, 10, "X"), Turn(10, 20, "X")],
                     spoken(("X", 0, 10, "one two three"), ("X", 10, 20, "nothing like it")))
    row = score(item, hyp)
    assert row["scored"] == pytest.approx(10.0)
    assert row["der"] == 0.0 and row["speech"] == pytest.approx(10.0)
    assert row["wer"] == 0.0 and row["ref_words"] == 3  # words after 10 s are not scored


def test_speakers_are_counted_inside_the_uem(tmp_path: Path) -> None:
    """As pyannote's speaker-count metrics: a speaker who talks only outside the UEM is
    counted on neither side (before, one on either side made a count error of 1 with a
    DER of 0, and the same layout as STM alone made none)."""
    item = make_item(tmp_path, "counted", 30.0, [Turn(0, 10, "A"), Turn(20, 25, "B")],
                     uem=(0.0, 10.0))
    row = score(item, transcript([Turn(0, 10, "X")], duration=30))
    assert row["der"] == 0.0
    assert (row["ref_speakers"], row["hyp_speakers"], row["speaker_count_error"]) == (1, 1, 0)
    item = make_item(tmp_path / "b", "counted", 30.0, [Turn(0, 10, "A")], uem=(0.0, 10.0))
    row = score(item, transcript([Turn(0, 10, "X"), Turn(20, 25, "Y")], duration=30))
    assert (row["ref_speakers"], row["hyp_speakers"], row["speaker_count_error"]) == (1, 1, 0)


def test_words_in_unscored_regions_count_on_neither_side(tmp_path: Path) -> None:
    """STM ``ignore_time_segment_in_scoring`` lines mark regions scored on neither side
    (as NIST sclite): hypothesis words there are no insertions."""
    stm = [("A", 0, 4, "hello there"), ("excluded", 5, 10, "ignore_time_segment_in_scoring"),
           ("B", 11, 14, "good morning")]
    item = make_item(tmp_path, "skip", 15.0, stm=stm)
    assert item.unscored_regions() == [(5.0, 10.0)]
    hyp = transcript(segments=spoken(("s1", 0, 4, "hello there"), ("s1", 6, 7.5, "um yeah"),
                                     ("s2", 11, 14, "good morning")))
    row = score(item, hyp)
    assert row["wer"] == 0.0 and row["insertions"] == 0 and row["hyp_words"] == 4
    assert row["cpwer"] == 0.0


def test_a_utterance_left_out_by_the_uem_takes_its_words_on_both_sides(tmp_path: Path) -> None:
    """Reference utterances are kept or left out whole (by their midpoint); hypothesis
    words follow the utterance they fall in.  Before, the words were cut one by one at
    the UEM's edges: a perfect transcript of a 10 s utterance left out (its midpoint in a
    gap of the UEM) kept the 4 words said inside the UEM as insertions, and a word past
    the UEM's edge in a kept utterance was a deletion."""
    stm = [("A", 0.0, 10.0, "one two three four five six seven eight nine ten"),
           ("B", 10.5, 11.5, "eleven"), ("A", 13.0, 18.0, "twelve thirteen")]
    item = make_item(tmp_path, "u", 20.0, stm=stm)
    (tmp_path / "u.uem").write_text("u 1 0.000 4.000\nu 1 10.000 16.000\n")
    item = CorpusItem(item.uri, item.audio, None, item.stm, tmp_path / "u.uem")
    perfect = transcript(segments=spoken(*stm), diarize=False)
    row = score(item, perfect)
    assert (row["wer"], row["insertions"], row["deletions"]) == (0.0, 0, 0)
    # "thirteen" (16.75 s) lies past the UEM in a kept utterance: scored
    assert (row["ref_words"], row["hyp_words"]) == (3, 3)
    assert row["cpwer"] == 0.0
    # a word said where no utterance is still counts inside the UEM only
    extra = transcript(segments=[*perfect.segments, *spoken(("A", 11.8, 12.2, "um"),
                                                             ("A", 18.5, 19.5, "uh"))],
                       diarize=False)
    assert score(item, extra)["insertions"] == 1


# ----------------------------------------------------------------- WER / cpWER


STM = [("A", 0.0, 3.0, "The cat sat on the mat."),
       ("B", 3.0, 5.0, "Hello, World!"),
       ("A", 5.0, 8.0, "Good morning everyone.")]


def test_wer_hand_computed_after_normalisation(tmp_path: Path) -> None:
    item = make_item(tmp_path, "words", 8.0, stm=STM)
    hyp = transcript(segments=spoken(("s1", 0, 3, "the cat sat on a mat"),       # 1 sub
                                     ("s2", 3, 5, "HELLO there world"),          # 1 ins
                                     ("s1", 5, 8, "good morning")))              # 1 del
    row = score(item, hyp)
    assert (row["ref_words"], row["hyp_words"]) == (11, 11)
    assert (row["substitutions"], row["insertions"], row["deletions"]) == (1, 1, 1)
    assert row["wer_errors"] == 3 and row["wer"] == pytest.approx(3 / 11)
    # Speakers right: cpWER counts the same three errors.
    assert row["cpwer"] == pytest.approx(3 / 11) and row["cpwer_errors"] == 3


def test_faster_whispers_word_pieces_are_scored_as_the_words_they_make(tmp_path: Path) -> None:
    """faster-whisper's words carry their spaces and break inside one written word (" 3"
    ".5", " o" "'clock"); they were joined with spaces for scoring, so a transcript that
    shows exactly the reference scored WER 50 %."""
    ref = [("A", 0.0, 3.0, "It costs 3.5 dollars."), ("B", 3.0, 6.0, "See you at five o'clock.")]
    item = make_item(tmp_path, "pieces", 6.0, stm=ref)
    pieces = [("A", 0.0, " It"), ("A", 0.5, " costs"), ("A", 1.0, " 3"), ("A", 1.2, ".5"),
              ("A", 1.5, " dollars."), ("B", 3.0, " See"), ("B", 3.5, " you"),
              ("B", 4.0, " at"), ("B", 4.5, " five"), ("B", 5.0, " o"), ("B", 5.2, "'clock.")]
    words = [Word(t, t + 0.2, w, 1.0, spk) for spk, t, w in pieces]
    hyp = transcript(segments=build_segments(words))
    assert [s.text for s in hyp.segments] == [r[3] for r in ref]  # what the transcript shows
    row = score(item, hyp)
    assert (row["wer"], row["cpwer"], row["hyp_words"]) == (0.0, 0.0, 9)
    # bare words (other recognisers) are still joined with spaces
    bare = [Word(w.start, w.end, w.word.strip(), 1.0, w.speaker) for w in words]
    assert score(item, transcript(segments=build_segments(bare)))["hyp_words"] == 11


def test_cpwer_charges_words_given_to_the_wrong_speaker(tmp_path: Path) -> None:
    item = make_item(tmp_path, "words", 8.0, stm=STM)
    hyp = transcript(segments=spoken(("s1", 0, 3, "the cat sat on a mat"),
                                     ("s2", 3, 5, "hello there world"),
                                     ("s2", 5, 8, "good morning")))  # wrong speaker
    row = score(item, hyp)
    assert row["wer"] == pytest.approx(3 / 11)  # WER ignores speakers
    # s1->A: "the cat sat on the mat good morning everyone" vs "the cat sat on a mat":
    # 1 sub + 3 del; s2->B: "hello world" vs "hello there world good morning": 3 ins.
    assert row["cpwer_errors"] == 7 and row["cpwer"] == pytest.approx(7 / 11)


def test_what_a_run_did_not_do_is_not_scored(tmp_path: Path) -> None:
    item = make_item(tmp_path, "both", 8.0, [Turn(0, 5, "A"), Turn(5, 8, "B")], STM)
    asr_only = score(item, transcript(segments=spoken((None, 0, 8, "the cat")), diarize=False))
    assert math.isnan(asr_only["der"]) and math.isnan(asr_only["jer"])
    assert math.isnan(asr_only["hyp_speakers"]) and asr_only["ref_speakers"] == 2
    assert asr_only["wer"] == pytest.approx(9 / 11)
    # ASR alone: every word under one unattributed speaker.
    assert asr_only["cpwer_errors"] == 9
    diarization_only = score(item, transcript([Turn(0, 8, "X")], transcribe=False))
    assert math.isnan(diarization_only["wer"]) and math.isnan(diarization_only["cpwer"])
    assert diarization_only["der"] == pytest.approx(3 / 8)
    bare = make_item(tmp_path / "bare", "bare", 4.0)
    row = score(bare, transcript([Turn(0, 2, "X")], spoken(("X", 0, 2, "hi"))))
    assert math.isnan(row["der"]) and math.isnan(row["wer"]) and row["hyp_speakers"] == 1


# ----------------------------------------------------------------- aggregates


@pytest.fixture
def unequal_rows(tmp_path: Path) -> tuple[list[dict], list[CorpusItem], dict]:
    """Two systems on a 4 s and a 100 s recording, where the mean of per-file ratios and
    the pooled ratio disagree."""
    short = make_item(tmp_path, "short", 4.0, [Turn(0, 2, "A")],
                      [("A", 0, 2, "alpha beta")])
    long = make_item(tmp_path, "long", 100.0, [Turn(0, 49, "A"), Turn(49, 98, "B")],
                     [("A", 0, 49, " ".join(f"w{i}" for i in range(10))),
                      ("B", 49, 98, " ".join(f"v{i}" for i in range(10)))])
    hyps = {
        "rough": {  # short: missed 1 of 2 s, 1 of 2 words wrong; long: missed 1 of 98 s
            "short": transcript([Turn(0, 1, "X")], spoken(("X", 0, 1, "alpha")), total=2.0),
            "long": transcript([Turn(0, 49, "X"), Turn(49, 97, "Y")],
                               spoken(("X", 0, 49, " ".join(f"w{i}" for i in range(10))),
                                      ("Y", 49, 98, " ".join(f"v{i}" for i in range(10)))),
                               total=10.0),
        },
        "neat": {
            "short": transcript([Turn(0, 2, "X")], spoken(("X", 0, 2, "alpha beta")), total=1.0),
            "long": transcript([Turn(0, 49, "X"), Turn(49, 90, "Y")],
                               spoken(("X", 0, 49, " ".join(f"w{i}" for i in range(10))),
                                      ("Y", 49, 98, " ".join(f"v{i}" for i in range(9)))),
                               total=30.0),
        },
    }
    items = [short, long]
    rows = [{"system": system, **score(item, hyps[system][item.uri])}
            for item in items for system in hyps]
    return rows, items, hyps


def test_aggregates_pool_errors_instead_of_averaging_ratios(unequal_rows) -> None:
    rows, items, hyps = unequal_rows
    table = compare(rows)
    rough = table.summary.loc["rough"]
    # DER: (1 + 1) s missed over (2 + 98) s of speech, not mean(0.5, 1/98).
    assert rough["der"] == pytest.approx(2 / 100)
    assert rough["der"] != pytest.approx((0.5 + 1 / 98) / 2)
    assert (rough["missed"], rough["speech"]) == (pytest.approx(2.0), pytest.approx(100.0))
    # WER: 1 error over 2 + 20 reference words.
    assert rough["wer"] == pytest.approx(1 / 22)
    assert rough["rtf"] == pytest.approx(12.0 / 104)
    assert rough["files"] == 2
    neat = table.summary.loc["neat"]
    assert neat["der"] == pytest.approx(8 / 100) and neat["cpwer"] == pytest.approx(1 / 22)

    # DER and JER pooled exactly as pyannote.metrics accumulates them over files.
    for system in hyps:
        der, jer = DiarizationErrorRate(), JaccardErrorRate()
        for item in items:
            ref = item.reference()
            hyp = annotation(hyps[system][item.uri].turns, item.uri)
            uem = Timeline([Segment(0, item.duration)], uri=item.uri)
            der(ref, hyp, uem=uem)
            jer(ref, hyp, uem=uem)
        assert table.summary.loc[system, "der"] == pytest.approx(abs(der))
        assert table.summary.loc[system, "jer"] == pytest.approx(abs(jer))
        per_file = table.recordings.xs(system, level="system")["jer"]
        assert abs(jer) != pytest.approx(per_file.mean())  # speaker-weighted, not per file


def test_table_layout_display_and_highlighting(unequal_rows) -> None:
    rows, _, _ = unequal_rows
    table = compare(pd.DataFrame(rows))
    assert isinstance(table, ComparisonTable)
    assert list(table.frame.index) == [("short", "rough"), ("short", "neat"),
                                       ("long", "rough"), ("long", "neat"),
                                       (ALL, "rough"), (ALL, "neat")]
    assert list(table.summary.index) == ["rough", "neat"]
    assert len(table.recordings) == 4
    best = table.best()
    assert best.loc[("short", "neat"), "der"] and not best.loc[("short", "rough"), "der"]
    assert best.loc[(ALL, "rough"), "der"] and not best.loc[(ALL, "neat"), "der"]
    assert best.loc[(ALL, "rough"), "rtf"]
    html = table._repr_html_()
    assert "<table" in html and "font-weight: bold" in html and "2.0%" in html
    md = table.to_markdown(["der", "wer"])
    assert md.splitlines()[0] == "| uri | system | der | wer |"
    assert "| ALL | rough | **2.0%** | **4.5%** |" in md
    # how DER was scored is in every row and said under the table (it was in neither)
    assert {r["collar"] for r in rows} == {0.0} and not any(r["skip_overlap"] for r in rows)
    assert "- DER and JER with a collar of 0 s, overlapped speech scored" in md
    assert "collar of 0 s, overlapped speech scored" in html
    assert table.records()[0]["uri"] == "short"
    with pytest.raises(ValueError, match="more than one row"):
        compare(rows + rows[:1])
    with pytest.raises(ValueError, match="'system' column"):
        compare([{k: v for k, v in r.items() if k != "system"} for r in rows])


def test_cpwer_charges_words_where_the_reference_says_nothing(tmp_path: Path) -> None:
    """A recording whose STM has no scored utterance (one unscored line) while the
    hypothesis says 5 words elsewhere: WER counts them as insertions, and so does cpWER
    now (before: cpWER undefined there, so the pooled cpWER, 2/8, was below the pooled
    WER, 5/8, on the same words)."""
    clean = make_item(tmp_path, "g1", 10.0, stm=[("A", 0, 4, "one two three four"),
                                                 ("B", 5, 9, "five six seven eight")])
    empty = make_item(tmp_path, "g2", 10.0,
                      stm=[("A", 0, 2, "ignore_time_segment_in_scoring")])
    rows = [{"system": "s", **score(clean, transcript(segments=spoken(
                ("X", 0, 4, "one two three four"), ("Y", 5, 9, "five six seven nine"))))},
            {"system": "s", **score(empty, transcript(segments=spoken(
                ("X", 3, 5, "la la la la la"))))}]
    assert rows[1]["wer_errors"] == 5 and rows[1]["cpwer_errors"] == 5
    assert math.isnan(rows[1]["ref_speakers"])  # no speaker said anything scored
    summary = compare(rows).summary.loc["s"]
    assert summary["wer"] == pytest.approx(6 / 8) and summary["cpwer"] == pytest.approx(6 / 8)


def test_a_system_that_ran_on_fewer_recordings_is_not_crowned(unequal_rows) -> None:
    """Its summary counts only the recordings it ran on, and no aggregate is marked best
    against it (before: files and duration counted the unavailable rows, and its DER over
    one recording was bolded against another's over all)."""
    rows, _, _ = unequal_rows
    rows = [dict(r, status="ok") for r in rows]
    for r in rows:
        if r["system"] == "neat" and r["uri"] == "long":
            r.update({k: math.nan for k in ("der", "missed", "false_alarm", "confusion",
                                             "speech", "jer", "wer", "cpwer")},
                     status="unavailable", reason="cannot run here")
    table = compare(rows)
    neat = table.summary.loc["neat"]
    assert neat["files"] == 1 and neat["duration"] == pytest.approx(4.0)
    assert table.summary.loc["rough", "files"] == 2
    marks = table.best(["der", "wer"])
    aggregates = marks.xs(ALL, level="uri")
    assert not aggregates.loc["neat"].to_numpy().any()
    assert marks.xs("short", level="uri").to_numpy().any()  # recordings still compared
    # a third system that could run nowhere takes no highlight from the others
    absent = [dict(r, system="absent", status="unavailable", reason="cannot run here",
                   **{k: math.nan for k in ("der", "wer", "speech", "missed", "false_alarm",
                                            "confusion", "jer", "cpwer")})
              for r in rows if r["system"] == "rough"]
    marks = compare(rows + absent).best(["der", "wer"])
    assert marks.xs("short", level="uri").loc["neat"].to_numpy().any()


def test_an_aggregate_over_fewer_recordings_is_not_crowned() -> None:
    """A system missing a recording (no row at all, no status column) had its ALL row
    bolded against one pooled over every recording: B's 10 % DER over u2 alone beat
    A's 25 % over u1 and u2.  Now only systems that ran on every recording compete
    among the aggregates, and a note names the one with fewer."""
    figures = ("der", "missed", "false_alarm", "confusion", "speech")
    rows = [dict(zip(("system", "uri", *figures), r)) for r in (
        ("A", "u1", 0.5, 5, 0, 0, 10), ("A", "u2", 0.0, 0, 0, 0, 10),
        ("B", "u2", 0.1, 1, 0, 0, 10), ("C", "u1", 0.4, 4, 0, 0, 10),
        ("C", "u2", 0.2, 2, 0, 0, 10))]
    table = compare(rows)
    aggregates = table.best(["der"]).xs(ALL, level="uri")["der"]
    assert aggregates.to_dict() == {"A": True, "B": False, "C": False}  # 5/20 < 6/20
    assert table.best(["der"]).loc[("u2", "A"), "der"]  # a recording still compares all
    md = table.to_markdown(["der"])
    assert "| ALL | B | 10.0% |" in md and "| ALL | A | **25.0%** |" in md
    assert "B ran on 1 of 2 recordings" in md and "B ran on" in repr(table)
    assert table.fewer_recordings == {"B": (1, 2)}
    # with B alone beside A, no aggregate is compared at all
    alone = compare(rows[:3])
    assert not alone.best(["der"]).xs(ALL, level="uri").to_numpy().any()
