"""Live event wire forms and the small pure helpers of workbench.live (no models)."""

from __future__ import annotations

import json

from workbench.live.agreement import agreement as _agreement, cut_loop as _cut_loop, norm as _norm
from workbench.live.agreement import cut_squeezed_repeat
from workbench.live.events import DiarizationUpdate, SpeakerLabels, TranscriptFinal, TranscriptPartial
from workbench.live.pipeline import _join
from workbench.engine.transcript import Turn, Word


def _words(text: str) -> list[Word]:
    return [Word(float(i), i + 0.5, " " + t, 0.9) for i, t in enumerate(text.split())]


def test_events_serialize_to_json_with_lag() -> None:
    words = tuple(_words("hello there"))
    final = TranscriptFinal(words, first_index=3, at=4.0)
    doc = json.loads(json.dumps(final.serialize()))
    assert doc["type"] == "transcript_final" and doc["text"] == "hello there"
    assert [w["index"] for w in doc["words"]] == [3, 4]
    assert doc["lag_seconds"] == 2.5  # 4.0 - end of "there" (1.5)
    partial = TranscriptPartial("and", 2.0, 2.4, at=3.0).serialize()
    assert partial["lag_seconds"] == 0.6
    assert TranscriptPartial("", 3.0, 3.0, at=3.5).lag_seconds == 0.0
    update = DiarizationUpdate((Turn(0.0, 1.0, "SPEAKER_00"),), final_until=1.0, at=3.0).serialize()
    assert update["lag_seconds"] == 2.0 and update["turns"][0]["speaker"] == "SPEAKER_00"
    labels = SpeakerLabels(((3, words[0].with_speaker("SPEAKER_01")),), at=2.0).serialize()
    assert labels["words"][0] == {**labels["words"][0], "index": 3, "speaker": "SPEAKER_01"}


def test_words_agree_only_with_the_same_vowel_signs() -> None:
    """Two passes that differ in a vowel sign or diacritic give two words (the same rule
    as the word error rates': `replace_non_word`)."""
    assert _norm(" किताब,") == "किताब" != _norm(" कीताब")
    assert _norm(" كَتَبَ") != _norm(" كتب") and _norm(" Didn't.") == "didn't"


def test_cut_loop_keeps_text_until_a_loop() -> None:
    looped = _cut_loop(_words("so I do I do I do I do I do"))
    assert [w.word.strip() for w in looped] == ["so", "I", "do"]
    plain = _words("no no way it is fine")
    assert _cut_loop(plain) == plain
    # a repetition that speech goes on after is kept (the sample call's opening)
    hello = _words("Hello. Hello. Hello. I didn't know you were there.")
    assert _cut_loop(hello) == hello
    # a loop ending in a partial n-gram is still a loop; a long run is one anywhere
    assert [w.word for w in _cut_loop(_words("yes the cat the cat the cat the"))] == \
        [w.word for w in _words("yes the cat")]
    # a runaway is kept once; the words after it are speech (laughter, "no, no, no, ...")
    assert [w.word for w in _cut_loop(_words("ok go go go go go go go then more"))] == \
        [" ok", " go", " then", " more"]


def test_agreement_strict_prefix_and_with_edits() -> None:
    before = _words("I thought you know I heard a beat this is")
    now = _words("Hey I thought you know I heard of deep this is")
    now = [Word(w.start - 1.0, w.end - 1.0, w.word, w.probability) for w in now]  # aligned
    assert _agreement(now, before) == 0  # strict LocalAgreement: "Hey" blocks it all
    assert _agreement(now, before, edits=1) == 7  # "Hey I thought you know I heard"
    assert _agreement(now, before, edits=2) == 7  # "of deep"/"a beat" would make 3 edits
    assert _agreement(now, before, edits=3) == 11  # ... followed by 2 agreeing words
    assert _agreement(_words("a b c d"), _words("a b c d e")) == 4
    # a difference must be followed by `run` agreeing words
    assert _agreement(_words("x a b y"), _words("a b y z"), edits=1, run=3) == 0
    assert _agreement(_words("x a b y"), _words("a b y z"), edits=1, run=2) == 0  # times off
    shifted = [Word(w.start - 1.0, w.end - 1.0, w.word, 0.9) for w in _words("x a b y")]
    assert _agreement(shifted, _words("a b y z"), edits=1, run=3) == 4
    # words that agree in text but not in time do not agree
    late = [Word(w.start + 2.0, w.end + 2.0, w.word, 0.9) for w in _words("x a b y")]
    assert _agreement(late, _words("a b y z"), edits=1) == 0


def test_join_merges_touching_turns_of_one_speaker_only() -> None:
    turns = [Turn(0.0, 0.996, "A"), Turn(1.0, 2.0, "A"), Turn(1.5, 2.5, "B"), Turn(3.0, 4.0, "A")]
    assert _join(turns) == [Turn(0.0, 2.0, "A"), Turn(1.5, 2.5, "B"), Turn(3.0, 4.0, "A")]


def test_a_repeat_squeezed_to_no_length_at_the_end_of_a_pass_goes() -> None:
    """Whisper says the last words again where the audio runs out, their times squeezed
    to one point ("Thank you very much. Thank you very much.", the copy at 8.16 s): the
    copy goes; words said again with lengths are speech and stay."""
    said = [Word(6.94, 7.3, " Thank"), Word(7.3, 7.54, " you"), Word(7.54, 7.8, " very"),
            Word(7.8, 8.16, " much.")]
    squeezed = [Word(8.16, 8.16, " Thank"), Word(8.16, 8.16, " you"),
                Word(8.16, 8.16, " very"), Word(8.16, 8.75, " much.")]
    assert cut_squeezed_repeat(said + squeezed) == said
    spoken = [Word(w.start + 1.3, w.end + 1.3, w.word) for w in said]
    assert cut_squeezed_repeat(said + spoken) == said + spoken
    go = [Word(1.0 + i * 0.3, 1.25 + i * 0.3, " go") for i in range(4)]
    assert cut_squeezed_repeat(go) == go
    # a copy of 7 words, one of them 0.06 s long (the live run said the sentence twice)
    times = [(28.03, 28.51), (28.51, 28.75), (28.75, 28.93), (28.93, 29.21), (29.21, 29.39),
             (29.39, 29.61), (29.61, 29.61), (29.61, 29.61), (29.61, 29.61), (29.61, 29.61),
             (29.61, 29.61), (29.61, 29.61), (29.61, 29.67), (29.67, 30.0)]
    sentence = [" I", " don't", " hear", " that", " New", " Jersey", " now."]
    pass_ = [Word(a, b, w) for (a, b), w in zip(times, sentence * 2)]
    assert cut_squeezed_repeat(pass_) == pass_[:7]
    # said again at a speaker's pace, a little faster: speech
    again = [Word(w.start + 1.6, w.start + 1.6 + 0.7 * (w.end - w.start), w.word)
             for w in pass_[:7]]
    assert cut_squeezed_repeat(pass_[:7] + again) == pass_[:7] + again
    # a short phrase said twice whose first word Whisper stretched over the pause before
    # it: the share of one word's length is no sign of a squeeze (it went)
    thanks = [Word(0.0, 1.2, " thank"), Word(1.2, 1.4, " you"), Word(1.4, 1.6, " thank"),
              Word(1.6, 1.8, " you")]
    assert cut_squeezed_repeat(thanks) == thanks
