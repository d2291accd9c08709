"""Synthetic conversations: utterances of several voices laid out with a requested
amount of overlapped speech; the reference turns are measured from the rendered audio."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from workbench.engine.audio import SAMPLE_RATE, write_wav
from workbench.engine.formats import PathLike, format_rttm, format_stm, format_uem
from workbench.engine.transcript import TranscriptSegment, Turn

from workbench.research.datasets.items import CorpusItem
from workbench.research.datasets.real_voices import RealVoice, is_real_voice_name, real_voice
from workbench.research.datasets.voices import SENTENCES, Voice, _resolve_voices
from workbench.research.datasets.speech import MAX_INTERNAL_PAUSE, SPEECH_LEVEL_DBFS, _speech_regions


GENERATOR_VERSION = "3"
"""Version of the conversation generator; bumped whenever the same seed would give
different files (3: AMI voices' reference turns from the AMI annotation)."""


AnyVoice = Union[Voice, RealVoice]


@dataclass(frozen=True)
class _Utterance:
    speaker: str
    text: Optional[str]  # None: a real clip without transcript
    samples: np.ndarray  # trimmed, levelled
    regions: tuple[tuple[float, float], ...]  # speech within `samples`, starts at 0
    source: Optional[tuple[str, float, float]] = None  # real clip: (uri, start, end) cut

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def speech(self) -> float:
        return sum(e - s for s, e in self.regions)


def _num_lines(voice: AnyVoice) -> int:
    """How many utterances `voice` can say: the built-in sentences, or its clips."""
    return len(voice.clips) if isinstance(voice, RealVoice) else len(SENTENCES)


def _line_key(voice: AnyVoice, index: int) -> Union[int, tuple[str, int]]:
    # A sentence is not repeated soon by anyone; a real clip not soon by its speaker.
    return (voice.name, index) if isinstance(voice, RealVoice) else index


def _utterance(voice: AnyVoice, index: int, level_dbfs: float) -> Optional[_Utterance]:
    if isinstance(voice, RealVoice):
        clip = voice.clips[index]
        text, raw = clip.text, voice.clip_audio(index)
        # a human reference of the speech (AMI) over the energy detector, which takes a
        # meeting room's noise floor, 33-37 dB under the speech, for speech
        regions = list(clip.speech) if clip.speech is not None else _speech_regions(raw)
    else:
        text, raw = SENTENCES[index], voice.render(SENTENCES[index])
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
    source = None
    if isinstance(voice, RealVoice):
        clip = voice.clips[index]
        source = (clip.source, round(clip.start + t0, 3),
                  round(clip.start + b / SAMPLE_RATE, 3))
    return _Utterance(voice.name, text, (samples * gain).astype(np.float32), local, source)


def _resolve_pool(voices: Optional[Sequence[Union[str, AnyVoice]]]) -> list[AnyVoice]:
    """Synthetic voices (names or `Voice`) and real ones (``ami:<speaker>`` or
    `RealVoice`); default: every available synthetic voice."""
    if voices is None:
        return list(_resolve_voices(None))
    pool: list[AnyVoice] = []
    for v in voices:
        if isinstance(v, str) and is_real_voice_name(v):
            v = real_voice(v)
        if isinstance(v, RealVoice):
            if not v.clips or not v.available():
                raise RuntimeError(f"real voice {v.name!r} has no recording here")
            pool.append(v)
        else:
            pool.extend(_resolve_voices([v]))
    if len({v.name for v in pool}) != len(pool):
        raise ValueError("voice names must be distinct")
    return pool


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
    voices: Optional[Sequence[Union[str, AnyVoice]]] = None,
    uri: Optional[str] = None,
) -> CorpusItem:
    """Synthesise a conversation between `num_speakers` distinct voices and its references.

    Utterances are built-in `SENTENCES` picked by a RNG seeded with `seed`, spoken by
    voices drawn from `voices` (names or `Voice` objects; default: every available
    catalogue voice), or clips of real speakers (``"ami:<speaker>"`` names or
    `RealVoice` objects, see `workbench.research.datasets.real_voices`), separated by pauses drawn from `pause` (s).  Some utterances start
    before the previous one ends so that `overlap_ratio` of the speech time has two or
    more speakers (see `measure_overlap_ratio`).  The reference turns are measured on
    each rendered utterance (frame energy; pauses longer than `MAX_INTERNAL_PAUSE` split
    a turn), or, for AMI clips, taken from the AMI annotation.  `noise_db` adds white
    noise at that SNR (dB, relative to the speech power).  `uri` defaults to
    ``synth_s<seed>_<n>spk_<duration>s_ov<overlap %>``, with a short hash of `voices`,
    `noise_db` and `pause` appended when any is given.

    Writes ``uri.wav`` (16 kHz 16-bit PCM, `duration` s), ``uri.rttm``, ``uri.stm`` (one
    line per utterance; only when every utterance has a text: real clips without a
    transcript give none), ``uri.uem`` (the whole file) and ``uri.json`` (parameters and
    measured figures; with real voices also ``sources`` (their source and licence) and
    ``utterances`` (where each real clip was cut)) to `out_dir`.  The same arguments give
    byte-identical files.
    """
    if num_speakers < 1:
        raise ValueError("num_speakers must be at least 1")
    if not 0.0 <= overlap_ratio < 0.5:
        raise ValueError("overlap_ratio must be in [0, 0.5)")
    if overlap_ratio > 0 and num_speakers < 2:
        raise ValueError("overlapped speech needs at least 2 speakers")
    if not 0.0 <= pause[0] <= pause[1] < math.inf:
        raise ValueError("pause must be (min, max) with 0 <= min <= max, finite")
    if not 0 < duration < math.inf:  # (inf or NaN: an OverflowError deep in the mixing)
        raise ValueError(f"duration must be a positive number of seconds (got {duration})")
    if noise_db is not None and not math.isfinite(noise_db):  # (NaN noise: a silent WAV)
        raise ValueError(f"noise_db must be a finite SNR in dB (got {noise_db})")
    if uri is None:
        uri = (f"synth_s{seed}_{num_speakers}spk_{int(round(duration))}s"
               f"_ov{int(round(overlap_ratio * 100)):02d}")
        whole = (abs(duration - round(duration)) < 1e-9
                 and abs(overlap_ratio * 100 - round(overlap_ratio * 100)) < 1e-9)
        if voices is not None or noise_db is not None or tuple(pause) != (0.2, 1.0) or not whole:
            # other voices, noise, pauses or lengths make another conversation: another
            # name (the default name alone let a second call overwrite the first's files;
            # voices are described whole: two sets named alike overwrote each other too)
            described = [v if isinstance(v, str) else v.serialize() for v in voices or ()]
            blob = json.dumps([described, noise_db, [float(p) for p in pause], float(duration),
                               float(overlap_ratio)], sort_keys=True, default=str)
            uri += "_" + hashlib.sha256(blob.encode()).hexdigest()[:6]
    if not uri or any(c.isspace() for c in uri) or "/" in uri:
        raise ValueError(f"invalid uri {uri!r}: no whitespace or '/'")
    pool = _resolve_pool(voices)
    if len(pool) < num_speakers:
        raise ValueError(f"{num_speakers} speakers requested but only {len(pool)} voices "
                         f"available ({', '.join(v.name for v in pool)})")

    rng = np.random.default_rng(seed)
    speakers = [pool[i] for i in rng.permutation(len(pool))[:num_speakers]]
    levels = {v.name: SPEECH_LEVEL_DBFS + float(rng.uniform(-3.0, 3.0)) for v in speakers}
    end_limit = duration - 0.1  # keep a little silence at the end of the file

    placed: list[tuple[float, _Utterance]] = []
    recent: list[Union[int, tuple[str, int]]] = []
    speech = overlap = 0.0
    floor_end = 0.0  # end of the speech placed so far
    previous: Optional[AnyVoice] = None
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
            lines = _num_lines(voice)
            choices = ([i for i in range(lines) if _line_key(voice, i) not in recent]
                       or list(range(lines)))
            index = choices[int(rng.integers(len(choices)))]
            utt = _utterance(voice, index, levels[voice.name])
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
        recent = (recent + [_line_key(voice, index)])[-12:]
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
                                  u.speaker, u.text or "") for s, u in placed]
    transcribed = all(u.text is not None for _, u in placed)
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
    real = [v for v in speakers if isinstance(v, RealVoice)]
    if real:
        info["sources"] = {v.name: {"source": v.source, "licence": v.licence} for v in real}
        info["utterances"] = [
            {"speaker": u.speaker, "start": round(s, 3), "end": round(s + u.duration, 3),
             "source": u.source[0], "source_start": u.source[1], "source_end": u.source[2],
             "text": u.text} for s, u in placed if u.source is not None]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{uri}.{ext}" for ext in ("wav", "rttm", "stm", "uem", "json")}
    write_wav(paths["wav"], mix.astype(np.float32))
    paths["rttm"].write_text(format_rttm(uri, turns), encoding="utf-8")
    if transcribed:
        paths["stm"].write_text(format_stm(uri, segments), encoding="utf-8")
    else:
        paths["stm"].unlink(missing_ok=True)
    paths["uem"].write_text(format_uem(uri, [(0.0, n / SAMPLE_RATE)]), encoding="utf-8")
    paths["json"].write_text(json.dumps({"uri": uri, **info}, indent=2) + "\n", encoding="utf-8")
    return CorpusItem(uri, paths["wav"], paths["rttm"], paths["stm"] if transcribed else None,
                      paths["uem"], info)
