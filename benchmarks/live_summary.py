"""The live-server benchmark's figures per stream count (`benchmarks.live_server`):
latencies pooled over each level's recordings, and the answer -- the most concurrent
live streams whose p95 word latency is within the target."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from benchmarks.measure import number as _num
from benchmarks.measure import percentile_rounded as _pct

TARGET_P95 = 3.0  # seconds: p95 word latency (pooled over a level's recordings)


def marked_repeats(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`runs` with ``repeat`` set where a file written before the field lacks it: a live
    recording of an input already recorded at that stream count (and round) filled the
    last group."""
    seen: set[tuple[int, int, str]] = set()
    out = []
    for r in runs:
        key = (r["streams"], r.get("round", 0), r["uri"])
        if r["live"] and "repeat" not in r:
            r = {**r, "repeat": key in seen}
        if r["live"]:
            seen.add(key)
        out.append(r)
    return out


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stream count: pooled latencies over the level's live recordings (each
    input once a round: a recording that only filled the last group, ``repeat``, is left
    out), every round (``--rounds``) pooled, and each round's own p95 word latency and
    their median (a file from before rounds: one round)."""
    out = []
    for n in sorted({r["streams"] for r in runs}):
        live = [r for r in runs if r["streams"] == n and r["live"] and not r.get("repeat")]
        base = [r for r in runs if r["streams"] == n and not r["live"]]
        words = [x for r in live for x in r.get("word_latencies", [])]
        # words arrive in order: the first `words_before_stop` came before recording_stopped
        early = [x for r in live for x in r.get("word_latencies", [])[: r["words_before_stop"]]]
        speakers = [x for r in live for x in r.get("speaker_latencies", [])]
        refined = sum(r["refined_words"] or 0 for r in live)
        by_round = [_pct([x for r in live if r.get("round", 0) == k
                          for x in r.get("word_latencies", [])], 95)
                    for k in sorted({r.get("round", 0) for r in live})]
        measured = sorted(p for p in by_round if p is not None)
        out.append({
            "streams": n, "recordings": len(live), "rounds": len(by_round),
            "word_latency_p95_by_round": by_round,
            "word_latency_p95_median_of_rounds": _num(float(np.median(measured)))
            if measured else None,
            "word_latency_p50": _pct(words, 50), "word_latency_p95": _pct(words, 95),
            "word_latency_before_stop_p50": _pct(early, 50),
            "word_latency_before_stop_p95": _pct(early, 95),
            "speaker_latency_p50": _pct(speakers, 50), "speaker_latency_p95": _pct(speakers, 95),
            "first_word_delay_max": max((r["first_word_delay"] for r in live
                                         if r.get("first_word_delay") is not None), default=None),
            "before_stop_share": _num(sum(r["words_before_stop"] for r in live) / refined)
            if refined else None,
            "live_cpu_per_audio_second": _num(max((r["live_cpu_per_audio_second"] or 0
                                                  for r in live), default=0)),
            "chunk_reply_p95_ms_live": max((r["chunk_reply_p95_ms"] or 0 for r in live), default=None),
            "chunk_reply_p95_ms_without": max((r["chunk_reply_p95_ms"] or 0 for r in base),
                                              default=None) if base else None,
            "lost_bytes": sum(r["lost_bytes"] for r in runs if r["streams"] == n),  # fillers too
            "within_target": (p := _pct(words, 95)) is not None and p <= TARGET_P95,
        })
    return out


def most_streams(summary: list[dict[str, Any]]) -> Optional[int]:
    """The largest stream count N such that every count tried up to N met the target
    (None when the smallest missed it): 2 streams meeting it after 1 missed it is noise
    or load, not capacity."""
    best = None
    for s in sorted(summary, key=lambda s: s["streams"]):
        if not s["within_target"]:
            break
        best = s["streams"]
    return best


def most_streams_line(summary: list[dict[str, Any]]) -> str:
    """The table's answer: :func:`most_streams`, and a larger count that met the target
    after a smaller one missed it, named as such."""
    best = most_streams(summary)
    tried = sorted(summary, key=lambda s: s["streams"])
    missed = next((s["streams"] for s in tried if not s["within_target"]), None)
    later = [s["streams"] for s in tried
             if s["within_target"] and missed is not None and s["streams"] > missed]
    text = (f"Most concurrent live streams with p95 word latency ≤ {TARGET_P95:g} s: "
            f"{best if best is not None else 'none of those tried'}")
    if later:
        text += (f" ({missed} stream(s) missed it; "
                 f"{', '.join(map(str, later))} met it, after that miss)")
    return text + "."
