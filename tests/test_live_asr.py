"""Streaming ASR (workbench.live.asr) with the real tiny.en model on espeak-ng speech."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from tests.conftest import SENTENCES, espeak
from workbench.engine.audio import SAMPLE_RATE, decode_file
from workbench.live.asr import StreamingASRConfig, StreamingTranscriber
from workbench.research.metrics import word_error_rate

pytestmark = [pytest.mark.models, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def transcriber():
    from workbench.engine.asr.transcribe import Transcriber

    return Transcriber(StreamingASRConfig().asr_config())


def _speech(tmp_path: Path) -> np.ndarray:
    """Two sentences with a 1.2 s pause between them (~9 s)."""
    a = decode_file(espeak(SENTENCES[0], tmp_path / "a.wav"))
    b = decode_file(espeak(SENTENCES[1], tmp_path / "b.wav"))
    pause = np.zeros(int(1.2 * SAMPLE_RATE), np.float32)
    return np.concatenate([pause[:SAMPLE_RATE // 2], a, pause, b, pause[:SAMPLE_RATE // 4]])


def test_committed_words_never_change_arrive_in_order_and_before_the_end(
        tmp_path: Path, transcriber) -> None:
    audio = _speech(tmp_path)
    config = StreamingASRConfig(max_buffer=6.0, trim_buffer=4.0, force_margin=2.0)
    asr = StreamingTranscriber(config, transcriber=transcriber)
    chunk = int(0.3 * SAMPLE_RATE)
    snapshots = []
    for i in range(0, audio.size, chunk):
        asr.append(audio[i:i + chunk])
        result = asr.step()
        if result is not None:  # no word ends after the audio the pass saw
            assert all(w.end <= result.upto + 1e-6 for w in result.committed + result.partial)
        snapshots.append(list(asr.committed))
        assert asr.buffer_seconds <= config.max_buffer + 0.3 + 1e-6
    before_flush = len(asr.committed)
    asr.flush()
    final = asr.committed
    for snap in snapshots:  # every earlier state is a prefix of the final one
        assert final[:len(snap)] == snap
    starts = [w.start for w in final]
    assert starts == sorted(starts)
    assert all(w.end >= w.start for w in final)
    assert before_flush > 0, "nothing was committed while audio was still arriving"
    assert asr.max_buffer_seen <= config.max_buffer + 1e-6
    text = "".join(w.word for w in final)
    assert word_error_rate(" ".join(SENTENCES), text).wer < 0.3, text


def test_silence_and_low_noise_give_no_pass_and_no_words(transcriber) -> None:
    asr = StreamingTranscriber(StreamingASRConfig(), transcriber=transcriber)
    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(3 * SAMPLE_RATE, np.float32),
                            (0.003 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32)])
    for i in range(0, audio.size, 4000):
        asr.append(audio[i:i + 4000])
        assert asr.step() is None
    assert asr.flush() is None
    assert asr.committed == [] and asr.passes == 0
    assert asr.buffer_seconds < 1.0  # silence does not pile up in the buffer


def test_silence_does_not_pile_up_while_no_pass_is_due(transcriber) -> None:
    """The drivers step only when a pass is due, and none is on silence: a minute of it
    still leaves at most `max_buffer` s in the buffer."""
    config = StreamingASRConfig()
    asr = StreamingTranscriber(config, transcriber=transcriber)
    silence = np.zeros(SAMPLE_RATE // 4, np.float32)
    for _ in range(4 * 60):
        asr.append(silence)
        assert not asr.due()
    assert asr.buffer_seconds <= config.max_buffer + 0.25


def test_a_short_encoder_window_sees_fewer_frames_and_keeps_the_words(
        tmp_path: Path, transcriber) -> None:
    """`Transcriber.decode(encoder_seconds=...)`: the encoder output covers that window
    only (CTranslate2 accepts fewer than 3000 frames), and the streaming pass's way of
    using it (the audio, then silence) still gives the words."""
    audio = decode_file(espeak(SENTENCES[0], tmp_path / "a.wav"))
    model = transcriber._model
    features = model.feature_extractor(audio)[:, :3000]
    padded = np.pad(features, ((0, 0), (0, 3000 - features.shape[1])))
    assert model.encode(padded).shape[1] == 1500  # Whisper's 30 s window
    model.encoder_frames = 800
    try:
        assert model.encode(padded).shape[1] == 400
    finally:
        model.encoder_frames = None
    seconds = audio.size / SAMPLE_RATE
    padded_audio = np.concatenate([audio, np.zeros(4 * SAMPLE_RATE, np.float32)])
    segments = transcriber.decode(padded_audio, encoder_seconds=seconds + 4.02, language="en",
                                  word_timestamps=True, beam_size=1)
    assert model.encoder_frames is None  # restored
    words = [w for s in segments for w in s.words]
    assert word_error_rate(SENTENCES[0], "".join(w.word for w in words)).wer < 0.3
    assert all(w.end <= seconds + 0.5 for w in words)
    with pytest.raises(ValueError, match="encoder_seconds"):
        transcriber.decode(audio, encoder_seconds=0)


def test_a_pass_never_starts_on_leading_silence(tmp_path: Path, transcriber) -> None:
    """5 s of silence, then a sentence: the first pass sees the speech (and ~0.3 s before
    it), not the silence, and the words come out right."""
    speech = decode_file(espeak(SENTENCES[0], tmp_path / "a.wav"))
    audio = np.concatenate([np.zeros(5 * SAMPLE_RATE, np.float32), speech,
                            np.zeros(SAMPLE_RATE, np.float32)])
    asr = StreamingTranscriber(StreamingASRConfig(), transcriber=transcriber)
    passes = []
    for i in range(0, audio.size, 4000):
        asr.append(audio[i:i + 4000])
        if asr.due():  # as `LiveSession` drives it: a step only when one is due
            result = asr.step()  # None: the pass waits for min_step s after the silence
            if result is not None:
                passes.append(result)
    asr.flush()
    assert passes, "no pass while the sentence was arriving"
    first = passes[0]
    assert first.upto - first.buffer_seconds >= 4.5  # the buffer began near the speech
    assert all(w.start >= 4.5 for w in asr.committed)
    assert word_error_rate(SENTENCES[0], "".join(w.word for w in asr.committed)).wer < 0.3


def _oldest_pending(asr: StreamingTranscriber, audio: np.ndarray) -> float:
    """How far behind the audio a pass ever left an uncommitted word (s)."""
    oldest = 0.0
    for i in range(0, audio.size, 4000):
        asr.append(audio[i:i + 4000])
        result = asr.step()
        if result is not None and result.partial:
            oldest = max(oldest, result.upto - result.partial[0].end)
    asr.flush()
    return oldest


def test_max_word_lag_commits_words_no_rule_confirmed(tmp_path: Path, transcriber) -> None:
    """With strict agreement and passes every 0.5 s, words wait behind the audio; with
    `max_word_lag` no pass leaves a word pending that ended that long before its audio."""
    audio = _speech(tmp_path)
    strict = dict(min_step=0.5, agreement_edits=0, pause_commit=5.0, end_silence=5.0)
    unbounded = _oldest_pending(StreamingTranscriber(StreamingASRConfig(**strict,
                                                                        max_word_lag=None),
                                                     transcriber=transcriber), audio)
    bounded = StreamingTranscriber(StreamingASRConfig(**strict, max_word_lag=1.0),
                                   transcriber=transcriber)
    assert unbounded > 1.0, "nothing to bound: every word was confirmed within 1 s"
    assert _oldest_pending(bounded, audio) <= 1.0
    text = "".join(w.word for w in bounded.committed)
    assert word_error_rate(" ".join(SENTENCES[:2]), text).wer < 0.3, text
    for bad in (0.0, -1.0, 20.0):
        with pytest.raises(ValueError, match="max_word_lag"):
            StreamingASRConfig(max_word_lag=bad)


def test_words_past_the_lag_bound_go_between_passes(tmp_path: Path, transcriber) -> None:
    """`overdue` commits, without a pass, the last pass's leading words that the audio
    received has left `max_word_lag` s behind (the next pass would have, a step and a pass
    later); they are the hypothesis's words, never taken back, and not committed twice."""
    audio = _speech(tmp_path)
    strict = dict(min_step=2.0, agreement_edits=0, pause_commit=5.0, end_silence=5.0,
                  max_word_lag=1.5)
    off = StreamingTranscriber(StreamingASRConfig(**strict, lag_between_passes=False),
                               transcriber=transcriber)
    asr = StreamingTranscriber(StreamingASRConfig(**strict), transcriber=transcriber)
    chunk, early, late, seen, snapshots = 2000, 0, 0.0, 0.0, []
    for i in range(0, audio.size, chunk):
        for engine in (asr, off):
            engine.append(audio[i:i + chunk])
        assert off.overdue() is None  # (off: only passes commit, so words wait longer)
        late = max([late] + [off.received - w.end for w in off.partial])
        pending, passes = list(asr.partial), asr.passes
        # past the bound, and not at the end of the audio the last pass saw (cut there?)
        bound = min(asr.received - 1.5, seen - asr.config.pause_margin)
        result = asr.overdue()
        if result is not None:
            early += len(result.committed)
            assert result.seconds == 0.0 and asr.passes == passes  # no pass ran
            assert list(result.committed) == pending[:len(result.committed)]
            assert result.committed[-1].end <= bound
            assert list(result.partial) == pending[len(result.committed):]
        assert all(w.end > bound for w in asr.partial)
        stepped = asr.step()
        if stepped is not None:
            seen = stepped.upto
            snapshots.append(list(asr.committed))
        if off.due():
            off.step()
    assert early > 0 and late > 1.5 + 0.5, (early, late)
    asr.flush()
    for snap in snapshots:
        assert asr.committed[:len(snap)] == snap
    starts = [w.start for w in asr.committed]
    assert starts == sorted(starts)
    assert len({(w.word, w.start) for w in asr.committed}) == len(asr.committed)  # none twice
    text = "".join(w.word for w in asr.committed)
    # (a 1.5 s bound over passes 2 s apart commits words heard with little audio after
    # them: "The quick brown-fark stump" once, 0.43; this says they are the speech's)
    assert word_error_rate(" ".join(SENTENCES[:2]), text).wer < 0.5, text


def test_words_after_speech_the_last_pass_wrote_nothing_for_wait_for_a_pass(
        tmp_path: Path, transcriber) -> None:
    """Passes that hear overlapped speech differently sometimes drop a stretch of it (the
    sample call streamed in real time on an AVX-512 CPU: "not going to need a design" gone
    from the pass before the lag bound, and the words after it committed between passes
    barred the next pass from it). `overdue` commits the leading words only up to the first
    one after 0.5 s of speech the hypothesis has no word for; the next pass fills the gap.
    Engines with one pass each over the same speech; in one the pass's hypothesis loses
    its words from the second on, as such a pass's did; in one the first of them was
    committed already (the gap counts from it); in one the gap is shorter than the rule's."""
    audio = _speech(tmp_path)
    # (no rule commits at the pass: max_word_lag 3 s over a 3.5 s pass, none confident)
    strict = dict(min_step=2.0, agreement_edits=0, pause_commit=5.0, end_silence=5.0,
                  confident_probability=None, pause_margin=0.3)
    whole, holed, after = (StreamingTranscriber(StreamingASRConfig(**strict),
                                                transcriber=transcriber) for _ in range(3))
    lenient = StreamingTranscriber(StreamingASRConfig(**strict, gap_speech=5.0),
                                   transcriber=transcriber)
    upto = int(3.5 * SAMPLE_RATE)
    engines = (whole, holed, after, lenient)
    for engine in engines:
        engine.append(audio[:upto])
        assert engine.step() is not None and not engine.committed
    pending = list(whole.partial)
    assert pending == list(holed.partial)
    # the first word after 1 s of words in speech
    j = next(i for i, w in enumerate(pending) if w.start - pending[0].end >= 1.0)
    assert holed.vad.uncovered([], pending[0].end, pending[j].start) >= 0.9  # (speech)
    for engine in (holed, lenient):
        engine._hypothesis = pending[:1] + pending[j:]  # what the pass that dropped them left
    after.committed, after._hypothesis = pending[:1], pending[j:]
    for engine in engines:
        engine.append(audio[upto:upto + 3 * SAMPLE_RATE])  # the bound is past pending[j]
    assert pending[j].end <= min(whole.received - 3.0, 3.5 - 0.3)
    full = whole.overdue()
    assert full is not None and list(full.committed)[:j + 1] == pending[:j + 1]
    cut = holed.overdue()
    assert cut is not None and list(cut.committed) == pending[:1]
    assert list(holed.partial) == pending[j:]  # for the next pass to agree on or replace
    assert after.overdue() is None and list(after.partial) == pending[j:]
    gapped = lenient.overdue()  # (5 s of speech without a word: none here)
    assert gapped is not None and list(gapped.committed)[:2] == pending[:1] + pending[j:j + 1]


def test_a_burst_after_a_short_pass_keeps_its_words(tmp_path: Path, transcriber) -> None:
    """A live worker that catches up after its models loaded sees 1.25 s, then everything
    at once (as in the server when a whole recording arrived while it loaded): the pass
    over the burst resumes mid-sentence after its prompt, where Whisper wrote no word (or
    one) for 16 s of speech and the flush let them go. Such a pass runs again. (Without
    `max_word_lag`, as when it happened: with it the second pass commits most words.)"""
    once = decode_file(espeak(" ".join(SENTENCES), tmp_path / "s.wav"))
    audio = np.concatenate([once, once])
    asr = StreamingTranscriber(StreamingASRConfig(max_word_lag=None), transcriber=transcriber)
    cut = int(1.25 * SAMPLE_RATE)
    asr.append(audio[:cut])
    asr.step()
    asr.append(audio[cut:12 * SAMPLE_RATE])
    asr.step()
    asr.append(audio[12 * SAMPLE_RATE:])
    asr.flush()
    text = "".join(w.word for w in asr.committed)
    assert word_error_rate(" ".join(SENTENCES * 2), text).wer < 0.4, text
    assert asr.stats()["retries"] >= 1


class ScriptedDecoder:
    """Stands in for Whisper where the commit policy is under test: the words of `script`
    ((start, end, word) in seconds of the stream) that begin inside the decoded audio, a
    word crossing its end cut ("~"); `passes` records each pass's (start, end)."""

    multilingual = False
    model_identity: dict = {}

    def __init__(self, script: list[tuple[float, float, str]]) -> None:
        self.script = script
        self.asr: Optional[StreamingTranscriber] = None
        self.passes: list[tuple[float, float]] = []

    def decode(self, chunk: np.ndarray, encoder_seconds=None, **options):  # type: ignore[no-untyped-def]
        import types

        asr = self.asr
        assert asr is not None
        start = asr._buffer_start / SAMPLE_RATE
        end = start + chunk.size / SAMPLE_RATE - (asr.config.encoder_pad or 0.0)
        self.passes.append((start, end))
        words = [types.SimpleNamespace(start=a - start, end=min(b, end) - start,
                                       word=w + ("~" if b > end else ""), probability=0.9)
                 for a, b, w in self.script if start <= a < end]
        return [types.SimpleNamespace(words=words)]


def _scripted(script: list[tuple[float, float, str]]) -> tuple[StreamingTranscriber,
                                                              ScriptedDecoder]:
    decoder = ScriptedDecoder(script)
    decoder.asr = StreamingTranscriber(StreamingASRConfig(), transcriber=decoder)
    return decoder.asr, decoder


def test_a_flush_longer_than_the_buffer_never_commits_a_word_cut_at_the_clip() -> None:
    """A backlog longer than `max_buffer` (a recording that arrived whole, then stop) is
    flushed in passes clipped at `max_buffer`; the word a clip cuts in two is not
    committed from that pass but from the next, whole. The decoder is scripted (the
    commit policy is under test, not Whisper): one word every 0.3 s of the sample call's
    speech, and a word crossing the end of the decoded audio comes back cut ("~")."""
    from workbench.research.datasets import sample_call

    audio = sample_call().load_audio()
    asr, _ = _scripted([(t, t + 0.25, f" w{k}") for k, t in enumerate(np.arange(6.5, 29.5, 0.3))])
    asr.append(audio)
    assert asr.flush() is not None and asr.passes >= 2  # 23 s of speech: two passes or more
    words = [w.word for w in asr.committed]
    assert words and not [w for w in words if w.endswith("~")], words
    assert len(words) == len(set(words))  # none twice
    assert [w.start for w in asr.committed] == sorted(w.start for w in asr.committed)


def test_a_flush_longer_than_the_buffer_keeps_the_words_held_back_at_the_clip() -> None:
    """A backlog flushed at stop (the ASR 20 s or more behind, or a fast upload): the
    first pass is clipped at `max_buffer` and holds back the words near the clip; the
    buffer then still spans more than `max_buffer` (speech follows after a long pause),
    and the speech of those words was dropped as heard without words: 8 words (22.4 to
    24.5 s) never reached the live run. Scripted decoder as above."""
    from workbench.research.datasets import sample_call

    call = sample_call().load_audio()
    audio = np.concatenate([call[:25 * SAMPLE_RATE], np.zeros(22 * SAMPLE_RATE, np.float32),
                            call[7 * SAMPLE_RATE:10 * SAMPLE_RATE]])
    script = [(t, t + 0.25, f" w{k}") for k, t in enumerate(np.arange(6.5, 24.7, 0.3))]
    asr, decoder = _scripted(script)
    asr.append(audio)
    asr.flush()
    first = decoder.passes[0]
    assert first[1] - first[0] == pytest.approx(asr.config.max_buffer)  # clipped
    assert [w.word for w in asr.committed] == [w for _, _, w in script]


def _burst(seconds: float) -> np.ndarray:
    """A 200 Hz tone, amplitude-modulated at 3 Hz: Silero calls it speech, Whisper hears
    no word in it (or only punctuation)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * 200 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            ).astype(np.float32)


def test_silence_after_a_wordless_burst_does_not_pile_up(transcriber) -> None:
    """A noise burst VAD took for speech, one pass over it without a word, then silence:
    the buffer kept every second of the silence (61 s after a minute), as no pass came."""
    config = StreamingASRConfig()
    asr = StreamingTranscriber(config, transcriber=transcriber)
    audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), _burst(0.7),
                            np.zeros(60 * SAMPLE_RATE, np.float32)])
    for i in range(0, audio.size, SAMPLE_RATE // 4):
        asr.append(audio[i:i + SAMPLE_RATE // 4])
        while asr.due():
            asr.step()
    assert asr.passes >= 1 and [w.word for w in asr.committed] == []
    assert asr.buffer_seconds <= config.max_buffer + 0.5


def test_noise_commits_no_punctuation(transcriber) -> None:
    """Twelve seconds of that burst: Whisper writes " ." now and then, and two of those
    always "agreed" (they normalise to nothing): ". . . . . . ." was committed. (What
    Whisper makes up on such noise, a word now and then, is the model's.)"""
    asr = StreamingTranscriber(StreamingASRConfig(), transcriber=transcriber)
    audio = _burst(12.0)
    for i in range(0, audio.size, 4000):
        asr.append(audio[i:i + 4000])
        while asr.due():
            asr.step()
    asr.flush()
    from workbench.live.agreement import norm

    assert [w.word for w in asr.committed if not norm(w.word)] == []



def test_only_punctuation_marks_alone_are_dropped() -> None:
    """What Whisper writes alone on noise goes; symbols that are said stay ("Q & A", "50 %")."""
    from workbench.live.agreement import punctuation_only

    assert all(punctuation_only(w) for w in (" .", " ...", " ?", " -", "。", " "))
    assert not any(punctuation_only(w) for w in (" %", " &", " €", " 42", " don't", " a."))


def test_the_text_said_before_a_resume_starts_every_prompt(tmp_path: Path,
                                                           transcriber) -> None:
    """A recording resumed after a cut: the new live session's ASR began without the
    sentence it resumes (measured 2026-12-05, `python -m benchmarks live-resume --asr`: a
    resume cost the sample call and two generated conversations live WER). With the text
    said before (`prime`, its last `prompt_chars`, no word cut in two), every pass's prompt
    holds it, the committed words after it."""
    audio = _speech(tmp_path)
    asr = StreamingTranscriber(StreamingASRConfig(), transcriber=transcriber)
    asr.prime("x" * 300 + " y")
    assert asr.said_before == "y"  # (the cut fell inside the x-word: left out)
    said = "The old farmer walked to the market   with his son, and he said"
    asr.prime(said)
    assert asr.said_before == " ".join(said.split())
    prompts: list[Optional[str]] = []
    whisper = asr._whisper

    def spy(audio: np.ndarray, seconds: float, offset: float, encoder: Optional[float],
            options: dict) -> list:
        prompts.append(options["initial_prompt"])
        return whisper(audio, seconds, offset, encoder, options)

    asr._whisper = spy  # type: ignore[method-assign]  # (calls through to Whisper)
    for i in range(0, audio.size, 4800):
        asr.append(audio[i:i + 4800])
        asr.step()
    asr.flush()
    assert prompts[0] == asr.said_before  # (nothing committed yet)
    # each prompt: the end of (said before, then the committed words), the last 200 chars;
    # a retry goes without any prompt
    whole = " ".join([asr.said_before, "".join(w.word for w in asr.committed).strip()])
    assert len(prompts) > 2 and sum(p is None for p in prompts) <= asr.retries, prompts
    assert all(p in whole for p in prompts if p), (prompts, whole)  # (in that order)
    assert any(p.startswith(asr.said_before + " ") for p in prompts if p), prompts
    assert asr.stats()["said_before_chars"] == len(asr.said_before)
    assert word_error_rate(" ".join(SENTENCES[:2]), "".join(w.word for w in asr.committed)
                           ).wer < 0.3  # (the words after the cut are still heard)
