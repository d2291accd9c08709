"""Corpora: the pyannote sample call, single-speaker clips cut from an item, generated
corpora (`build_corpus`, `ensure_corpus`) and their manifests (`write_manifest`,
`load_manifest`, which also reads a user's own JSON or CSV list of recordings)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from workbench.engine.audio import SAMPLE_RATE, write_wav
from workbench.engine.progress import ProgressHook
from workbench.engine.formats import PathLike, format_rttm, format_uem
from workbench.engine.transcript import Turn

from workbench.research.datasets.items import CorpusItem
from workbench.research.datasets.synthesis import GENERATOR_VERSION, _resolve_pool, generate_conversation


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
        # the protocol and subset go with the clips: a test subset's stay final-figures-only
        clips.append(CorpusItem(uri, paths["wav"], paths["rttm"], None, paths["uem"], {
            "source": item.uri, "speaker": speaker, "num_speakers": 1,
            **{k: item.info[k] for k in ("protocol", "subset") if k in item.info}}))
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
    voices: Optional[Sequence[str]] = None,
    hook: Optional[ProgressHook] = None,
) -> Path:
    """Generate `n` conversations into `out_dir` and write ``manifest.json``; return its path.

    Each conversation draws its speaker count from `speakers` (inclusive), its length
    from `minutes` (whole seconds), its overlap ratio from `overlap_choices` and its own
    seed, all from a RNG seeded with `seed`.  `voices` is the pool of voice names
    (synthetic or real, e.g. ``"ami:FEE083"``; default: the synthetic catalogue); each
    item records the ``sources`` and licences of its real voices.
    `hook("conversations", done, n)` reports progress.
    """
    if not speakers[0] <= speakers[1] or speakers[0] < 1:
        raise ValueError(f"speakers must be (min, max) with 1 <= min <= max, not {tuple(speakers)}")
    # all checked before the folder is touched (a corpus of -2 conversations was "built";
    # an overlap of 0.7 failed after some conversations, with the old manifest gone)
    if n < 1:
        raise ValueError(f"n must be at least 1 conversation, not {n}")
    if not 1 / 60 <= minutes[0] <= minutes[1] < math.inf:  # (lengths are whole seconds)
        raise ValueError(f"minutes must be (min, max) with 1 s (1/60) <= min <= max, finite, "
                         f"not {tuple(minutes)}")
    if not overlap_choices or not all(0.0 <= o < 0.5 for o in overlap_choices):
        raise ValueError(f"overlap_choices must be ratios in [0, 0.5), not {list(overlap_choices)}")
    if any(o > 0 for o in overlap_choices) and speakers[0] < 2:
        raise ValueError("overlapped speech needs at least 2 speakers: speakers' min must be "
                         "2 or more when an overlap ratio is above 0")
    if noise_db is not None and not math.isfinite(noise_db):
        raise ValueError(f"noise_db must be a finite SNR in dB (got {noise_db})")
    pool = _resolve_pool(voices)  # checked before the folder is touched (a mistyped voice
    if len(pool) < speakers[1]:   # removed the manifest of an intact corpus)
        raise ValueError(f"up to {speakers[1]} speakers requested but only {len(pool)} voices "
                         f"available ({', '.join(v.name for v in pool)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the folder's old manifest goes first: a build stopped half-way (Ctrl-C, an error)
    # left it naming files the build had partly replaced, and ensure_corpus took them
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    items: list[CorpusItem] = []
    for i in range(n):
        num_speakers = int(rng.integers(speakers[0], speakers[1] + 1))
        duration = float(round(rng.uniform(minutes[0] * 60, minutes[1] * 60)))
        overlap = float(overlap_choices[int(rng.integers(len(overlap_choices)))])
        item_seed = int(rng.integers(2**31))
        items.append(generate_conversation(
            out, num_speakers=num_speakers, duration=duration, overlap_ratio=overlap,
            noise_db=noise_db, seed=item_seed, voices=voices, uri=f"conv{i:03d}"))
        if hook is not None:
            hook("conversations", i + 1, n)
    return write_manifest(out / MANIFEST_NAME, items, corpus={
        "generator": "workbench.datasets.build_corpus", "generator_version": GENERATOR_VERSION,
        "seed": seed, "n": n, "speakers": list(speakers), "minutes": list(minutes),
        "overlap_choices": list(overlap_choices), "noise_db": noise_db,
        **({"voices": list(voices)} if voices is not None else {})})


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
                and meta.get("noise_db") is None and meta.get("voices") is None):
            items = load_manifest(manifest)[:n]
            if all(Path(i.audio).is_file() for i in items):
                return items
    build_corpus(out_dir, n=n, minutes=minutes, seed=seed)
    return load_manifest(manifest)


_ITEM_KEYS = ("uri", "num_speakers", "duration", "overlap_ratio_requested",
              "overlap_ratio_achieved", "seed", "noise_db", "generator_version", "sources",
              # where an item comes from: a protocol's test subset stays final-figures-only
              "protocol", "subset", "source", "speaker")


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
        listed = data.get("items") if isinstance(data, dict) else data
        if not isinstance(listed, list):
            raise ValueError(f"{path}: expected a list of entries or {{'items': [...]}}")
        entries = listed
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
