"""Real voices: stretches of real recorded speech, one speaker each, that the
conversation generator lays out like the utterances of its synthetic voices.

`ami_voices()` cuts them from the AMI excerpts of the **train** subset only (trn00-trn09;
development and test are never used for voices) by their reference turns: a stretch is
one speaker's speech (own turns less than `MERGE_GAP` apart joined) during which nobody
else speaks, widened by `STRETCH_MARGIN` on each side, and the whole widened span must be
at least `STRETCH_MARGIN` away from every other speaker's turn and inside the file; the
speech itself lasts at least `MIN_STRETCH`. A voice is named ``ami:<AMI speaker label>``
(e.g. ``ami:FEE083``) and has no transcript, so conversations made with it get RTTM and
UEM only (DER, not WER); each clip carries the speaker's reference turns inside it
(`RealClip.speech`), which become the conversation's reference turns::

    voices = real_voices()                       # every AMI speaker with a stretch
    generate_conversation(out, num_speakers=3, voices=["ami:FEE083", "ami:MEE075", "ami:FEE078"])

The excerpts hold little speech without overlap: 7 speakers have a stretch at the
default margins (from 2.2 s to 36 s of clips each), so longer conversations repeat
clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from workbench.engine.audio import SAMPLE_RATE
from workbench.engine.formats import PathLike

from workbench.research.datasets import ami
from workbench.research.datasets.fillets import FILLETS_LANGUAGES, fillets_voices
from workbench.research.datasets.speech import MAX_INTERNAL_PAUSE, _speech_regions
from workbench.research.datasets.voices import RealClip, RealVoice, _recording

__all__ = ["AMI_VOICE_URIS", "MIN_STRETCH", "REAL_VOICE_SOURCES", "RealClip", "RealVoice", "ami_stretches",
           "ami_voices", "real_voice", "real_voices"]

AMI_VOICE_URIS = tuple(f"trn{i:02d}" for i in range(10))
"""The only AMI excerpts voices are cut from: the train subset (development is for
checking and test for final figures)."""
STRETCH_MARGIN = 0.2
"""Silence of other speakers (s) required on each side of a stretch, and kept in its cut."""
MIN_STRETCH = 1.5
"""Shortest stretch (s, without its margins)."""
MERGE_GAP = 0.5
"""A speaker's turns closer than this (s) with nobody else between are one stretch."""
MAX_CLIP = 8.0
"""Longer stretches are cut into clips of at most this (s) in their pauses (gaps between
the speaker's reference turns, or measured by the speech detector above the room's noise
floor: AMI references often make one turn of a long monologue)."""
_DEFAULT_DATA_DIR = Path("data")


def _subtract(spans: list[tuple[float, float]], cuts: Sequence[tuple[float, float]]
              ) -> list[tuple[float, float]]:
    for lo, hi in cuts:
        kept = []
        for a, b in spans:
            if hi <= a or lo >= b:
                kept.append((a, b))
                continue
            if lo > a:
                kept.append((a, lo))
            if hi < b:
                kept.append((hi, b))
        spans = kept
    return spans


def ami_stretches(data_dir: PathLike = _DEFAULT_DATA_DIR, *, margin: float = STRETCH_MARGIN,
                  min_duration: float = MIN_STRETCH, **fetch: Any
                  ) -> dict[str, list[RealClip]]:
    """Single-speaker stretches of the AMI train excerpts by speaker label, in file and
    time order. Each clip spans the stretch and `margin` s on each side: per the
    reference, no other speaker talks within `margin` of the clip (see the module)."""
    if margin < 0 or min_duration <= 0:
        raise ValueError("margin must be >= 0 and min_duration > 0")
    items = [i for i in ami.ami_items("train", data_dir, **fetch) if i.uri in AMI_VOICE_URIS]
    out: dict[str, list[RealClip]] = {}
    for item in items:
        assert item.info["subset"] == "train"
        turns = item.reference_turns()
        duration = item.duration
        for speaker in sorted({t.speaker for t in turns}):
            own: list[list[float]] = []
            for t in sorted((t for t in turns if t.speaker == speaker), key=lambda t: t.start):
                if own and t.start - own[-1][1] <= MERGE_GAP:
                    own[-1][1] = max(own[-1][1], t.end)
                else:
                    own.append([t.start, t.end])
            # Everything within 2 margins of another speaker goes: the clip adds one
            # margin and must still be a margin away from them.
            others = [(t.start - 2 * margin, t.end + 2 * margin)
                      for t in turns if t.speaker != speaker]
            inside = [(max(s, 2 * margin), min(e, duration - 2 * margin)) for s, e in own]
            for a, b in _subtract([(s, e) for s, e in inside if e > s], others):
                if b - a < min_duration:
                    continue
                a, b = a - margin, b + margin
                spoken = sorted((t.start, t.end) for t in turns if t.speaker == speaker)
                cuts = _pause_cuts(_recording(str(item.audio)), a, b, min_duration, spoken)
                for lo, hi in zip([a, *cuts], [*cuts, b]):
                    lo, hi = round(lo, 3), round(hi, 3)
                    out.setdefault(speaker, []).append(
                        RealClip(item.uri, lo, hi, speech=_speech_within(spoken, lo, hi)))
    return out


def _speech_within(spoken: list[tuple[float, float]], lo: float, hi: float
                   ) -> tuple[tuple[float, float], ...]:
    """The speaker's reference turns inside (lo, hi), in s from `lo`, pauses up to the
    generator's MAX_INTERNAL_PAUSE bridged (as its detector bridges them)."""
    regions: list[list[float]] = []
    for s, e in spoken:
        s, e = max(s, lo) - lo, min(e, hi) - lo
        if e <= s:
            continue
        if regions and s - regions[-1][1] <= MAX_INTERNAL_PAUSE:
            regions[-1][1] = max(regions[-1][1], e)
        else:
            regions.append([s, e])
    return tuple((round(s, 3), round(e, 3)) for s, e in regions)


def _pause_cuts(samples: np.ndarray, start: float, end: float, min_duration: float,
                spoken: Sequence[tuple[float, float]] = ()) -> list[float]:
    """Times in (start, end) that split it into pieces of at most MAX_CLIP and at least
    `min_duration` s, in the middle of a pause where it can: a gap between the speaker's
    reference turns (`spoken`), or one the speech detector measures above the room's
    noise floor."""
    if end - start <= MAX_CLIP:
        return []
    regions = _speech_regions(samples[int(round(start * SAMPLE_RATE)):
                                      int(round(end * SAMPLE_RATE))], noise_margin_db=10.0)
    pauses = [start + (e + s) / 2 for (_, e), (s, _) in zip(regions, regions[1:])]
    inside = [(s, e) for s, e in spoken if e > start and s < end]
    pauses = sorted(pauses + [(e + s) / 2 for (_, e), (s, _) in zip(inside, inside[1:])
                              if s > e])
    cuts: list[float] = []
    last = start
    while end - last > MAX_CLIP:
        fitting = [p for p in pauses
                   if min_duration <= p - last <= MAX_CLIP and end - p >= min_duration]
        cut = float(fitting[-1]) if fitting else min(last + MAX_CLIP, end - min_duration)
        cuts.append(round(cut, 3))
        last = cut
    return cuts


AMI_VOICE_LICENCE = (f"AMI Meeting Corpus audio, CC BY 4.0; excerpts and references from "
                     f"{ami.SOURCE_PACKAGE} {ami.SOURCE_VERSION} (MIT)")


def ami_voices(data_dir: PathLike = _DEFAULT_DATA_DIR, **fetch: Any) -> list[RealVoice]:
    """Every AMI train speaker with at least one stretch, as a `RealVoice` named
    ``ami:<label>`` (the excerpts are fetched on first use, see `fetch_ami`)."""
    root = ami.fetch_ami(data_dir, **fetch)
    voices = []
    for speaker, clips in sorted(ami_stretches(data_dir, **fetch).items()):
        voices.append(RealVoice(
            name=f"ami:{speaker}", engine="ami", model=speaker, clips=tuple(clips),
            audio_dir=root, description=f"AMI speaker {speaker}, {len(clips)} stretches",
            source=f"AMI excerpts of {ami.SOURCE_PACKAGE} {ami.SOURCE_VERSION} tests/data, "
                   "train subset (trn00-trn09)",
            licence=AMI_VOICE_LICENCE))
    return voices


REAL_VOICE_SOURCES = ("ami", *(f"fillets-{lang}" for lang in FILLETS_LANGUAGES))
"""Sources of real voices: the AMI train excerpts (no transcripts) and the acted
dialogue of Fish Fillets NG in Czech and Dutch (transcribed, see `fillets`)."""


def real_voices(source: str = "ami", data_dir: PathLike = _DEFAULT_DATA_DIR, **fetch: Any
                ) -> list[RealVoice]:
    """The real voices of `source` (one of `REAL_VOICE_SOURCES`), fetched on first use;
    `fetch` goes to `fetch_ami`."""
    if source == "ami":
        return ami_voices(data_dir, **fetch)
    if source.startswith("fillets-") and source[len("fillets-"):] in FILLETS_LANGUAGES:
        return fillets_voices(source[len("fillets-"):], data_dir)
    raise ValueError(f"unknown real voice source {source!r}; known: "
                     f"{', '.join(REAL_VOICE_SOURCES)}")


def real_voice(name: str, data_dir: PathLike = _DEFAULT_DATA_DIR, **fetch: Any) -> RealVoice:
    """One real voice by name, e.g. ``"ami:FEE083"`` or ``"fillets-cs:small"``."""
    source, _, _label = name.partition(":")
    pool = {v.name: v for v in real_voices(source, data_dir, **fetch)}
    if name not in pool:
        raise ValueError(f"unknown real voice {name!r}; known: {', '.join(pool)}")
    return pool[name]


def is_real_voice_name(name: str) -> bool:
    """Whether `name` names a real voice (``<source>:<speaker>``)."""
    return name.partition(":")[0] in REAL_VOICE_SOURCES and ":" in name
