"""Streaming transcription: faster-whisper over a growing, bounded audio buffer.

The anchors: ufal/whisper_streaming re-decodes the buffer every ~1 s and commits the
words two consecutive passes agree on (LocalAgreement-2), trimming the buffer at
committed segment ends past 15 s; WhisperLiveKit adds a Silero "voice activity
controller" and commits confident tokens early. On a 2-core CPU one faster-whisper
tiny.en pass costs ~2 s whatever the buffer length (its encoder always sees 30 s), so a
pass a second cannot keep up. `StreamingTranscriber` spends passes carefully:

* **Short passes.** The encoder sees the buffer plus 4 s of silence, not 30 s
  (`StreamingASRConfig.encoder_pad`), and a pass writes a bounded number of tokens: a
  pass over a 10 s buffer costs ~0.3 s instead of ~1 s (AVX-512, one thread).
* **No pass on silence.** Silero VAD (`StreamingVAD`) scores audio as it arrives; a pass
  runs only if speech arrived since the last one, and words that overlap no speech
  region are dropped (Whisper's hallucinations on silence and noise).
* **Adaptive step.** A pass is due once `min_step` s of new audio arrived; whoever drives
  the transcriber runs the next pass when the previous one finished, on all the audio
  that arrived meanwhile (steps merge instead of queueing: lag stays bounded).
* **Commit rules, all never retracted.** (1) LocalAgreement-2: the common prefix of
  this pass's and the previous pass's uncommitted words, allowing up to
  `agreement_edits` differing words when at least two agreeing words follow each
  difference (this pass's version is committed). (2) End of utterance: when the
  buffer ends in at least `end_silence` s of VAD silence after speech, one pass commits
  every word (nothing after the pause can change them). (3) Pause commit within one
  pass: words that end before a VAD pause of at least `pause_commit` s that Whisper also
  puts between two words, with `pause_margin` s of audio after the pause. (4) Confident
  words within one pass (as WhisperLiveKit's confidence validation): the leading
  uncommitted words whose probability is at least `confident_probability` and that end
  `confident_margin` s before the buffer end (None turns this rule off).
* **Bounded lag** (optional, `max_word_lag`): words of a pass that end that long before
  the audio it saw are committed without confirmation, and between passes (`overdue`)
  those of the last pass as soon as the audio received is that far past them.
* **Bounded buffer.** The buffer starts at the first uncommitted speech, is trimmed at
  committed sentence ends (or any committed word end past `trim_buffer` s) and never
  exceeds `max_buffer` s: before it would, the words of the current pass that end more
  than `force_margin` s before the buffer end are committed.
* Committed text before the buffer is the pass's prompt (last `prompt_chars` characters).

Times are absolute (seconds since the start of the stream).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, cast

import numpy as np

from workbench.engine.asr.transcribe import Transcriber
from workbench.engine.provenance import capped_threads
from workbench.engine.config import ASRConfig, build_config
from workbench.engine.audio import SAMPLE_RATE
from workbench.live.buffer import AudioBuffer
from workbench.live.vad import StreamingVAD
from workbench.engine.transcript import Word
from workbench.live.agreement import (agreement, cut_loop, cut_squeezed_repeat, loops, norm,
                                      punctuation_only)

__all__ = ["PassResult", "StreamingASRConfig", "StreamingTranscriber"]


@dataclass(frozen=True)
class StreamingASRConfig:
    """Model and commit policy of `StreamingTranscriber` (seconds unless noted).

    `beam_size` 1 (greedy) because a pass's cost bounds the lag; `cpu_threads` 1 leaves
    the other core to diarization (measured: one thread 1.8 s, two 2.3 s per pass when
    both run).
    """

    model: str = "tiny.en"
    compute_type: str = "int8"
    device: str = "cpu"
    language: Optional[str] = None
    beam_size: int = 1
    cpu_threads: int = 1
    min_step: float = 1.0
    max_buffer: float = 20.0
    trim_buffer: float = 10.0
    end_silence: float = 0.6
    pause_commit: float = 0.5
    pause_margin: float = 1.0
    force_margin: float = 4.0
    # measured on the sample call (fixed 1.8 s passes): no gain in word latency (p50
    # 4.7 s with, 4.6 s without), so off by default
    confident_probability: Optional[float] = None
    confident_margin: float = 1.5
    vad_threshold: float = 0.5
    speech_pad: float = 0.25
    prompt_chars: int = 200
    # Pass cost. The encoder sees the buffer and `encoder_pad` s of silence after it
    # instead of Whisper's 30 s window (None: the whole window; `Transcriber.decode`);
    # a pass writes at most `max_tokens_per_second` x buffer + 32 tokens (None: no
    # bound); `fallback` retries a looping pass with a beam of 5 (until 2026-12-04: at
    # temperatures 0.2, 0.4, 0.6, which sample: the same audio gave other words run to run).
    # Measured 2026-12-03 (AVX-512 EPYC, one thread, latency 2 s, fixed simulated costs
    # so that passes fall at the same times), pooled WER of the sample call, conv2 and
    # conv3 and the measured seconds per pass: 30 s window 23.2 %, 1.1-1.6 s; 4 s of
    # silence + 6 tokens/s + fallback (+ the retry below) 23.2 %, 0.27-0.46 s. With
    # measured costs the WER of one input moves by +-3 points from run to run (passes
    # fall elsewhere). 2 s of zero features instead of silence made the decoder loop
    # past the end (fallbacks of 5-9 s: 50 s of passes on the sample call against 19 s).
    encoder_pad: Optional[float] = 4.0
    max_tokens_per_second: Optional[float] = 6.0
    fallback: bool = True
    # faster-whisper's no-speech skip (with no log-probability threshold: on
    # no_speech_prob alone). Measured 2026-12-03, fixed costs 0.5 s per pass / 0.3 s per
    # step (deterministic), WER pooled over the sample call, conv2 and conv3: 30 s window
    # 23.2 %; short window with 0.6 23.2 %, with None (no skip) 27.8 %.
    no_speech_threshold: Optional[float] = 0.6
    # A pass that leaves this much VAD speech without a word (farther than 0.5 s from
    # every word) runs again without prompt and no-speech skip, then on the whole 30 s
    # window: Whisper sometimes wrote nothing for seconds of speech, pass after pass
    # (14 s of the sample call once, in the server; the buffer was then let go as noise
    # when full).
    retry_speech: float = 1.0
    # LocalAgreement with edits: the leading words of a pass agree with the previous
    # pass's hypothesis if the two differ by at most this many words (inserted, dropped
    # or replaced, each gap followed by at least `agreement_run` agreeing words, times
    # within `agreement_shift` s); the pass's own version is committed. 0: strict prefix
    # agreement (whisper_streaming). Measured 2026-12-03 (AVX2 caps, fixed costs of 0.4-0.8
    # s per pass, the sample call, conv2 and conv3: 9 runs, 1254 reference words), WER and
    # p95 word latency: edits 0 22.6 %, 4.1-5.1 s; 1 23.3 %, 4.4-5.0 s; 3 22.1 %, 3.2-3.5 s.
    agreement_edits: int = 3
    agreement_run: int = 2
    agreement_shift: float = 0.5
    # Lag bound: the words of a pass that end at least this many seconds before the audio
    # it saw are committed even when no rule above confirms them (None: no bound): where
    # speakers overlap, passes keep hearing one stretch differently. 3 s took the server's
    # p95 word lag from 5.1 to 3.8 s for +0.5-0.7 point of pooled WER; 2.5 and 2 s cost
    # more WER (BENCHMARKS.md, "`max_word_lag` 3 s by default").
    max_word_lag: Optional[float] = 3.0
    # The bound between passes too (`StreamingTranscriber.overdue`): the last pass's words
    # go as soon as they are that far behind the audio received, not when the next pass
    # ends (a step and a pass later). Fixed costs of 0.4-0.8 s per pass: the sample call's
    # p95 -0.24 to -0.34 s for one word more wrong of 81; through the server: BENCHMARKS.md,
    # "Words committed between passes".
    lag_between_passes: bool = True
    # ... up to the first word after `gap_speech` s of VAD speech that no word comes within
    # `gap_margin` s of (a pass that hears overlapped speech differently may drop it: the
    # next pass's to fill; BENCHMARKS.md, "A CPU with AVX-512 and AMX").
    gap_speech: float = 0.5
    gap_margin: float = 0.2

    def __post_init__(self) -> None:
        if self.min_step <= 0 or self.end_silence <= 0 or self.pause_commit <= 0:
            raise ValueError("min_step, end_silence and pause_commit must be > 0")
        if not 2 * self.min_step < self.max_buffer <= 30.0:
            raise ValueError("max_buffer must be in (2 x min_step, 30] (Whisper sees 30 s)")
        if not 0 < self.trim_buffer <= self.max_buffer:
            raise ValueError("trim_buffer must be in (0, max_buffer]")
        if not 0 < self.force_margin < self.max_buffer - self.min_step:
            raise ValueError("force_margin must be in (0, max_buffer - min_step)")
        if self.encoder_pad is not None and not 0.5 <= self.encoder_pad <= 30.0:
            raise ValueError("encoder_pad must be None or in [0.5, 30] s")
        if self.max_tokens_per_second is not None and self.max_tokens_per_second <= 0:
            raise ValueError("max_tokens_per_second must be None or > 0")
        if self.retry_speech <= 0:
            raise ValueError("retry_speech must be > 0")
        if self.agreement_edits < 0 or self.agreement_run < 1 or self.agreement_shift <= 0:
            raise ValueError("agreement_edits must be >= 0, agreement_run >= 1 and "
                             "agreement_shift > 0")
        if self.max_word_lag is not None and not 0 < self.max_word_lag < self.max_buffer:
            raise ValueError("max_word_lag must be None or in (0, max_buffer)")
        if self.gap_speech <= 0 or self.gap_margin < 0:
            raise ValueError("gap_speech must be > 0 and gap_margin >= 0")

    def asr_config(self) -> ASRConfig:
        """The `ASRConfig` of the model (VAD is done here, not by faster-whisper; threads
        at most the usable CPUs)."""
        return ASRConfig(model=self.model, compute_type=self.compute_type, device=self.device,
                         language=self.language, vad_filter=False, beam_size=self.beam_size,
                         cpu_threads=capped_threads(self.cpu_threads) or 0)

    def serialize(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StreamingASRConfig":
        """Unknown names and values of the wrong type raise `ConfigError` naming ``asr.NAME``."""
        return cast(StreamingASRConfig, build_config(cls, data, "asr", {}))


@dataclass(frozen=True)
class PassResult:
    """What one pass, the final flush or `overdue` (no pass) produced."""

    committed: tuple[Word, ...]
    partial: tuple[Word, ...]
    upto: float  # audio end the pass saw (`overdue`: the audio received) (s)
    buffer_seconds: float
    seconds: float  # wall time of the pass (0: words committed between passes, no pass)
    rule: str  # rules that committed: "agreement", "pause", "utterance", "lag", "force", "flush"


class StreamingTranscriber:
    """Feed audio with `append`, ask `due`, run `step`; `flush` at the end.

    Not thread-safe: one driver calls it (see `workbench.live.pipeline`). A loaded
    `Transcriber` can be shared between sessions run one after the other.
    """

    def __init__(self, config: Optional[StreamingASRConfig] = None, *,
                 transcriber: Optional[Transcriber] = None, data_dir: Any = "data") -> None:
        self.config = config or StreamingASRConfig()
        self.transcriber = transcriber or Transcriber(self.config.asr_config(), data_dir=data_dir)
        self.language = self.config.language or (None if self.transcriber.multilingual else "en")
        self.vad = StreamingVAD(threshold=self.config.vad_threshold)
        self._buffer = AudioBuffer()
        self._buffer_start = 0  # absolute sample where the next pass starts
        self._last_pass_end = 0  # absolute sample the last pass saw up to
        self._hypothesis: list[Word] = []  # uncommitted words of the last pass
        self.committed: list[Word] = []
        self.said_before = ""  # text said before this stream (`prime`): the prompt's start
        self.passes = 0
        self.retries = 0
        self.pass_seconds = 0.0
        self.max_buffer_seen = 0.0

    # ---------------------------------------------------------------- input

    @property
    def received(self) -> float:
        """Audio appended so far (s)."""
        return self._buffer.seconds

    def append(self, samples: np.ndarray) -> None:
        """Add 16 kHz mono float32 samples to the stream.  Silence with nothing pending
        is dropped here too once the buffer would pass `max_buffer` (no pass is due on
        silence, so `step` would never drop it: an hour of it would stay)."""
        self.vad.append(self._buffer.append(samples))
        if self._buffer.received - self._buffer_start > self.config.max_buffer * SAMPLE_RATE:
            self._drop_silence(self.received)

    def prime(self, said: str) -> None:
        """The text said just before this stream (a recording resumed after a cut), which
        the passes' prompt starts with: the first words after the cut are heard in context."""
        text, cap = " ".join(said.split()), self.config.prompt_chars
        if not cap:
            text = ""
        elif len(text) > cap:  # its last `prompt_chars`, no word cut in two at the start
            text = text[-cap:] if text[-cap - 1] == " " else text[-cap:].partition(" ")[2]
        self.said_before = text

    def _committed_end(self) -> float:
        return self.committed[-1].end if self.committed else 0.0

    def _speech(self, start: float, end: float) -> list[tuple[float, float]]:
        return self.vad.regions(max(0.0, start - 0.5), end)

    # ---------------------------------------------------------------- policy

    def due(self, upto: Optional[float] = None) -> bool:
        """Is a pass worth running on the audio up to `upto` (default: all received)?"""
        end = self._clip(upto)
        start = self._buffer_start / SAMPLE_RATE
        new = end - self._last_pass_end / SAMPLE_RATE
        speech = [r for r in self._speech(start, end) if r[1] > start]
        if not speech:
            return False
        spoke_since_pass = speech[-1][1] > self._last_pass_end / SAMPLE_RATE + 0.05
        if self._hypothesis and end - speech[-1][1] >= self.config.end_silence:
            return True  # utterance over: one pass commits it
        return spoke_since_pass and new >= self.config.min_step

    def _clip(self, upto: Optional[float]) -> float:
        return self.received if upto is None else max(0.0, min(upto, self.received))

    def step(self, upto: Optional[float] = None) -> Optional[PassResult]:
        """Run one pass on the buffer up to `upto` if `due`; None otherwise (also when a
        due pass is put off because the leading silence it would have seen was dropped:
        it runs once `min_step` s of audio follow the silence)."""
        end = self._clip(upto)
        # no pass over leading silence either: Whisper loops on it ("Hello. Hello. ...",
        # retried at higher temperatures: passes of ~2 s at a recording's start).
        # Measured 2026-12-03 (fixed costs 0.4/0.6/0.8 s, latency 2 s, the sample call,
        # conv2, conv3, AVX2 caps): WER 22.1 -> 19.1 %, p95 word lag 3.2-3.5 -> 2.7-3.4 s
        # (the sample call alone 6.2-12.7 -> 3.9-4.3 s)
        self._drop_silence(end)
        if not self.due(upto):
            return None
        return self._pass(end, final=False)

    def overdue(self, upto: Optional[float] = None) -> Optional[PassResult]:
        """Commit the last pass's leading words that end `max_word_lag` s or more before
        `upto` (default: all received) and `pause_margin` s before that pass's audio did
        (a word at its end may be cut there), up to the first after `gap_speech` s of
        speech without a word since the last committed one (passes that hear overlapped
        speech differently drop some: the next pass's to fill); None if none. No pass."""
        cfg, words = self.config, self._hypothesis
        if not cfg.lag_between_passes or cfg.max_word_lag is None or not words:
            return None
        bound = min(self._clip(upto) - cfg.max_word_lag,
                    self._last_pass_end / SAMPLE_RATE - cfg.pause_margin)
        k, last = 0, self.committed[-1:]  # (the word before words[k]; speech before the
        # buffer is gone: no pass could fill a gap there)
        while k < len(words) and words[k].end <= bound and self._missed_speech(
                last + words[k:k + 1], max(last[-1].end if last else 0.0, self._buffer_start
                                           / SAMPLE_RATE), words[k].end, cfg.gap_margin
        ) < cfg.gap_speech:
            k, last = k + 1, words[k:k + 1]
        if not k:
            return None
        self.committed.extend(words[:k])
        self._hypothesis = words[k:]
        return PassResult(tuple(words[:k]), tuple(self._hypothesis), self._clip(upto),
                          self.buffer_seconds, 0.0, "lag")

    def flush(self) -> Optional[PassResult]:
        """Commit everything (end of stream): last passes over the uncommitted speech."""
        results = []
        while True:
            end = self.received
            start = self._buffer_start / SAMPLE_RATE
            if end - start < 0.05 or not [r for r in self._speech(start, end) if r[1] > start]:
                break
            self._drop_silence(end)
            results.append(self._pass(end, final=True))
        self._hypothesis = []
        if not results:
            return None
        return PassResult(tuple(w for r in results for w in r.committed), (), results[-1].upto,
                          max(r.buffer_seconds for r in results),
                          sum(r.seconds for r in results), "flush")

    # ---------------------------------------------------------------- a pass

    def _decode(self, start: int, end: int) -> list[Word]:
        audio = self._buffer.slice(start, end)
        said = "".join(w.word for w in self.committed if w.end <= start / SAMPLE_RATE + 0.01)
        prompt = " ".join([self.said_before, said.strip()]).strip()
        prompt = prompt[-self.config.prompt_chars:] if self.config.prompt_chars else ""
        cfg = self.config
        seconds = audio.size / SAMPLE_RATE
        encoder_seconds = None
        if cfg.encoder_pad is not None:
            # Whisper was trained on windows whose end is silence padded before the
            # features: pad the audio likewise and let the encoder see just that
            audio = np.concatenate([audio, np.zeros(int(cfg.encoder_pad * SAMPLE_RATE),
                                                    dtype=np.float32)])
            encoder_seconds = audio.size / SAMPLE_RATE + 0.02
        max_new_tokens = None
        if cfg.max_tokens_per_second is not None:
            # a decoder that does not find the end repeats itself: bound what that costs
            # (faster-whisper caps the prompt at 223 tokens, Whisper's length is 448)
            max_new_tokens = min(224, int(np.ceil(cfg.max_tokens_per_second * seconds)) + 32)
        options = dict(
            language=self.language, beam_size=cfg.beam_size,
            word_timestamps=True, vad_filter=False, condition_on_previous_text=False,
            initial_prompt=prompt or None, max_new_tokens=max_new_tokens,
            no_speech_threshold=cfg.no_speech_threshold,
            # greedy decoding can loop ("the the the ..."): optionally retried (`_whisper`),
            # what still loops is cut (dropping the whole segment lost 20 s of words once)
            temperature=(0.0,), compression_ratio_threshold=2.4, log_prob_threshold=None)
        offset = start / SAMPLE_RATE
        words = self._whisper(audio, seconds, offset, encoder_seconds, options)
        missed = self._missed_speech(words, offset, offset + seconds)
        if missed >= cfg.retry_speech:
            # Whisper sometimes writes nothing, or a word, for seconds of speech: after a
            # prompt whose sentence the buffer resumes mid-word it ends the text at once,
            # and its no-speech skip drops a whole window at no_speech_prob 0.57-0.73
            # (a burst of 16 s of speech after a 1.25 s pass lost 53 of 56 words, in the
            # server). Again without prompt and skip, then on the whole 30 s window.
            self.retries += 1
            bare = {**options, "initial_prompt": None, "no_speech_threshold": None}
            windows = [encoder_seconds, None] if encoder_seconds is not None else [None]
            for window in windows:
                again = self._whisper(audio if window else audio[:int(seconds * SAMPLE_RATE)],
                                      seconds, offset, window, bare)
                again_missed = self._missed_speech(again, offset, offset + seconds)
                if again_missed < missed:
                    words, missed = again, again_missed
                if missed < cfg.retry_speech:
                    break
        return words

    def _whisper(self, audio: np.ndarray, seconds: float, offset: float,
                 encoder_seconds: Optional[float], options: dict[str, Any]) -> list[Word]:
        """One faster-whisper call: its words (times from the stream's start), up to a
        decoding loop."""
        segments = self.transcriber.decode(audio, encoder_seconds=encoder_seconds, **options)
        if self.config.fallback and options["beam_size"] < 5 and loops(segments):
            # Retried with a beam, not hotter: faster-whisper's temperature fallback
            # samples, and CTranslate2's sampling cannot be seeded (its random generators
            # live in its worker threads): the same audio gave other words from run to run
            retry = self.transcriber.decode(audio, encoder_seconds=encoder_seconds,
                                            **{**options, "beam_size": 5})
            if loops(retry) < loops(segments):
                segments = retry
        # a word's end can fall in the silence padded after the audio: clip it there (a
        # committed end past the audio made the next passes drop the words before it)
        words = [Word(start=round(offset + float(w.start), 3),
                      end=round(offset + min(float(w.end), seconds), 3),
                      word=w.word, probability=float(w.probability))
                 for s in segments for w in (s.words or ())
                 if float(w.start) < seconds and not punctuation_only(w.word)]
        return cut_squeezed_repeat(cut_loop(words))

    def _missed_speech(self, words: list[Word], start: float, end: float,
                       margin: float = 0.5) -> float:
        """Seconds of VAD speech in [start, end] farther than `margin` s from every word."""
        return self.vad.uncovered([(w.start - margin, w.end + margin) for w in words], start, end)

    def _pass(self, end_s: float, final: bool) -> PassResult:
        cfg = self.config
        started = time.perf_counter()
        start = self._buffer_start
        # never more than max_buffer: a late pass takes the first max_buffer s (and the
        # force rule commits most of it), the rest waits for the next pass
        end = min(int(round(end_s * SAMPLE_RATE)), start + int(cfg.max_buffer * SAMPLE_RATE))
        clipped = end < int(round(end_s * SAMPLE_RATE))
        end_s = end / SAMPLE_RATE
        words = self._decode(start, end)
        seconds = time.perf_counter() - started
        self.passes += 1
        self.pass_seconds += seconds
        buffer_seconds = (end - start) / SAMPLE_RATE
        self.max_buffer_seen = max(self.max_buffer_seen, buffer_seconds)
        self._last_pass_end = end

        speech = self._speech(start / SAMPLE_RATE, end_s)
        words = self._new_words(words, speech)
        rules: list[str] = []
        n = 0
        if final:
            n, rules = len(words), ["flush"]
            if clipped:  # more audio follows the cut: a word at it may be cut in two
                while n > 0 and words[n - 1].end > end_s - cfg.force_margin:
                    n -= 1
                if n == 0 and words and words[0].start - 0.2 <= start / SAMPLE_RATE + 0.05:
                    n = 1  # the next pass would start where this one did
        else:
            # (1) LocalAgreement-2
            n = agreement(words, self._hypothesis, cfg.agreement_edits, cfg.agreement_run,
                           cfg.agreement_shift)
            if n:
                rules.append("agreement")
            # (2) the utterance is over
            if speech and end_s - speech[-1][1] >= cfg.end_silence and len(words) > n:
                n, rules = len(words), rules + ["utterance"]
            # (4) confident words well before the buffer end, from the first uncommitted on
            if cfg.confident_probability is not None:
                k = n
                while (k < len(words) and words[k].probability >= cfg.confident_probability
                       and words[k].end <= end_s - cfg.confident_margin):
                    k += 1
                if k > n:
                    n, rules = k, rules + ["confident"]
            # (3) pauses inside the buffer that Whisper agrees with
            k = self._pause_cut(words, speech, end_s)
            if k > n:
                n, rules = k, rules + ["pause"]
            # (5) no word waits longer than max_word_lag behind the audio
            if cfg.max_word_lag is not None:
                k = n
                while k < len(words) and words[k].end <= end_s - cfg.max_word_lag:
                    k += 1
                if k > n:
                    n, rules = k, rules + ["lag"]
            # keep the next buffer under max_buffer
            if (end_s + cfg.min_step - start / SAMPLE_RATE > cfg.max_buffer):
                k = n
                while k < len(words) and words[k].end <= end_s - cfg.force_margin:
                    k += 1
                if k > n:
                    n, rules = k, rules + ["force"]
        commit = words[:n]
        self.committed.extend(commit)
        self._hypothesis = words[n:]
        if final and self._hypothesis:  # the next final pass starts before those words
            self._move_start(max(self._committed_end(), self._hypothesis[0].start - 0.2))
            # their audio is not heard yet: `_drop_silence` would drop a buffer over
            # `max_buffer` up to the clip as heard, and those words with it
            self._last_pass_end = self._buffer_start
            self._hypothesis = []
        else:
            self._trim(end_s, speech, final, len(commit))
        return PassResult(tuple(commit), tuple(self._hypothesis), end_s, buffer_seconds,
                          seconds, "+".join(rules))

    def _new_words(self, words: list[Word], speech: list[tuple[float, float]]) -> list[Word]:
        """Words of a pass after the committed ones, without those outside speech."""
        pad = self.config.speech_pad
        kept = [w for w in words
                if any(w.start < b + pad and w.end > a - pad for a, b in speech)]
        last = self._committed_end()
        kept = [w for w in kept if w.end > last + 0.05 and w.start >= last - 0.3]
        # Committed words the buffer still holds may come again at its head, their times
        # stretched past `last`: drop such a repeated n-gram. Not when the buffer holds no
        # committed audio (it starts at `last`), nor when the pass heard those words where
        # they were committed: then the copy after them is speech said again.
        held = [w for w in self.committed[-5:]
                if w.end > self._buffer_start / SAMPLE_RATE + 0.05]
        if held and kept:
            # (only the committed words the buffer holds: the pass cannot hear those
            # before it, so they said nothing about a repeat: "go go go" lost three)
            tail = [norm(w.word) for w in held]
            head = [norm(w.word) for w in kept[:5]]
            heard = [norm(w.word) for w in words if w.end <= last + 0.05]
            for size in range(min(len(tail), len(head)), 0, -1):
                if tail[-size:] == head[:size] and kept[size - 1].start < last + 1.0:
                    if heard[-size:] != tail[-size:]:
                        kept = kept[size:]
                    break
        # a pass must not reach back before the committed words (monotonic times)
        return [w if w.start >= last else Word(last, max(last, w.end), w.word, w.probability)
                for w in kept]

    def _pause_cut(self, words: list[Word], speech: list[tuple[float, float]], end_s: float) -> int:
        """Number of leading words that end before a committed-safe pause."""
        cfg = self.config
        cut = 0
        for (_, gap_start), (gap_end, _) in zip(speech[:-1], speech[1:]):
            if gap_end - gap_start < cfg.pause_commit or gap_end > end_s - cfg.pause_margin:
                continue
            k = 0
            while k < len(words) and words[k].end <= gap_start + 0.2:
                k += 1
            # Whisper must put the boundary there too: the next word starts after the pause
            if 0 < k < len(words) and words[k].start >= gap_end - 0.3:
                cut = max(cut, k)
        return cut

    def _trim(self, end_s: float, speech: list[tuple[float, float]], final: bool,
              committed_now: int = 0) -> None:
        cfg = self.config
        start_s = self._buffer_start / SAMPLE_RATE
        cut: Optional[float] = None
        if final:
            cut = end_s
        elif not self._hypothesis:
            over = not speech or end_s - speech[-1][1] >= cfg.end_silence
            if committed_now and not over:
                cut = self._committed_end()  # the tail may hold a word not decoded yet
            elif over or end_s + cfg.min_step - start_s > cfg.max_buffer:
                # utterance over (or no words in a full buffer): what is left is noise
                cut = max(self._committed_end(), end_s - 0.3)
        else:
            in_buffer = [w for w in self.committed if w.end > start_s]
            if in_buffer:
                ends = [w.end for w in in_buffer
                        if w.word.rstrip().endswith((".", "?", "!"))]
                if ends:
                    cut = ends[-1]
                elif end_s - start_s > cfg.trim_buffer:
                    cut = in_buffer[-1].end
            if cut is not None:
                # word times are rough: never clip the first pending word
                cut = min(cut, self._hypothesis[0].start - 0.2)
        if cut is not None and cut > start_s:
            self._move_start(cut)

    def _drop_silence(self, end_s: float) -> None:
        """With nothing pending, silence before `end_s` need not stay in the buffer."""
        if self._hypothesis:
            return
        start_s = self._buffer_start / SAMPLE_RATE
        speech = [r for r in self._speech(start_s, end_s) if r[1] > start_s]
        if end_s - start_s > self.config.max_buffer:
            # speech a pass has heard already and gave no words for goes too, at the buffer's
            # bound (a noise burst VAD took for speech kept all the silence after it)
            seen = self._last_pass_end / SAMPLE_RATE + 0.05
            speech = [r for r in speech if r[1] > seen]
        target = speech[0][0] - 0.3 if speech else end_s - 0.3
        if target > start_s:
            self._move_start(max(target, self._committed_end()))

    def _move_start(self, seconds: float) -> None:
        sample = min(self._buffer.received, int(round(seconds * SAMPLE_RATE)))
        if sample <= self._buffer_start:
            return
        self._buffer_start = sample
        self._last_pass_end = max(self._last_pass_end, sample)
        self._buffer.forget(self._buffer_start)

    # ---------------------------------------------------------------- state

    @property
    def partial(self) -> tuple[Word, ...]:
        """The current uncommitted hypothesis."""
        return tuple(self._hypothesis)

    @property
    def buffer_seconds(self) -> float:
        return (self._buffer.received - self._buffer_start) / SAMPLE_RATE

    def stats(self) -> dict[str, Any]:
        return {"passes": self.passes, "retries": self.retries,
                "pass_seconds": round(self.pass_seconds, 3),
                "max_buffer_seconds": round(self.max_buffer_seen, 3),
                "said_before_chars": len(self.said_before),
                "vad_seconds": round(self.vad.seconds, 3)}
