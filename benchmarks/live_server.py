"""Live benchmark against the real server: live results streamed in real time over the protocol.

``python -m benchmarks live --server [--streams 1,2] [--inputs sample,ami-train-2]
[--chunk-seconds 0.25] [--no-baseline] [--out benchmarks/results/live-server.json]``

One fresh server (``python -m server`` on a free 127.0.0.1 port, data in a temporary
directory removed afterwards) with ``--live-warm``, ``--max-live-sessions`` = the largest
``--streams`` and ``--progress-every 1``. Inputs: ``sample`` (the pyannote sample call,
30 s, RTTM and STM references) and ``ami-train-N`` (the first N AMI train excerpts of
`workbench.research.datasets.ami`, 30 s each, RTTM; never the test subset). For each
stream count N the inputs are recorded in groups of N at once (the last group is filled
from the start of the list, so every group has N streams), each through
`workbench.notebook.client` with ``live_results: true``, 16 kHz mono PCM in
``--chunk-seconds`` chunks on real-time deadlines; every group waits for its refined runs
and live runs before the next one starts. Figures per recording:

* word latency: receive time of a word's ``transcript_final`` minus (stream start + the
  word's end), stream start = the send of the first chunk minus one chunk's duration (a
  microphone hands the first chunk over once its audio is captured; p50, p95);
* speaker-label latency: the same for the message that gave the word its speaker;
* first-word delay: receive time of the first ``transcript_final`` after the stream start;
* words before stop (received before ``recording_stopped``) and their share of the
  refined run's word count;
* WER and DER (collar 0, overlap scored; `workbench.research.evaluation.score`) of the
  saved live run and of the refined run;
* CPU seconds per audio second of the live worker processes (the pids the server logs
  for the group's sessions; psutil, sampled every 0.25 s, from the group's start to the
  workers' exit), over the group's audio seconds;
* chunk reply latency (``progress`` reply minus the send of the chunk it counts), and the
  same for a group of N recordings of the first input without ``live_results``
  (``--no-baseline`` skips it): the recording must not suffer;
* bytes lost: the session's ``part-000.raw`` and ``audio.wav`` against the sent bytes.

The answer: the most concurrent live streams whose p95 word latency (pooled over the
level's recordings) is at most 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

import psutil

from server.config import ConfigError, check_live_config

from benchmarks import (REPO_ROOT, finish, machine_info, machine_stamp, output_arguments,
                        recorded_options, reprinted, write_results, marks_partial)
from benchmarks.live import live_options, option_arguments
from benchmarks.measure import number as _num
from benchmarks.measure import percentile_rounded as _pct
from benchmarks.live_summary import (  # noqa: F401 - re-exported
    TARGET_P95, marked_repeats, most_streams, most_streams_line, summarize)

NAME = "live-server"
SAMPLE_EVERY = 0.25
LIVE_NICE = 10  # server.live_worker nices itself by 10


# ---------------------------------------------------------------------------- inputs


def numbered(name: str, prefix: str, low: int, high: int) -> bool:
    """Whether `name` is `prefix` and a whole number from `low` to `high`."""
    tail = name[len(prefix):]
    return name.startswith(prefix) and tail.isdigit() and low <= int(tail) <= high


def parse_inputs(spec: str) -> list[str]:
    """``sample``, ``ami-train-N`` (1 <= N <= 10) and ``meeting-M`` (1 <= M <= 30) names."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        if name == "sample" or numbered(name, "ami-train-", 1, 10) \
                or numbered(name, "meeting-", 1, 30):
            continue
        raise ValueError(f"unknown input {name!r}: use sample, ami-train-N (N from 1 to 10) "
                         "or meeting-M (M minutes, 1 to 30)")
    if not names:
        raise ValueError("no inputs")
    return names


def long_meeting(minutes: int, out_dir: Path) -> Any:
    """A ``minutes``-long recording: the AMI train excerpts and the sample call one after
    the other (0.5 s apart), repeated; RTTM shifted along (AMI labels are people)."""
    import numpy as np

    from workbench.engine.audio import SAMPLE_RATE, decode_file, write_wav
    from workbench.research.datasets import sample_call
    from workbench.research.datasets.ami import ami_items
    from workbench.research.datasets.items import CorpusItem

    sources = ami_items("train", REPO_ROOT / "data") + [sample_call()]
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    uri = f"meeting-{minutes}"
    decoded = [decode_file(item.audio) for item in sources]
    pieces, lines, offset, k = [], [], 0.0, 0
    while offset < minutes * 60:
        item, audio = sources[k % len(sources)], decoded[k % len(sources)]
        k += 1
        for turn in item.reference_turns():
            lines.append(f"SPEAKER {uri} 1 {offset + turn.start:.3f} "
                         f"{turn.end - turn.start:.3f} <NA> <NA> {turn.speaker} <NA> <NA>\n")
        pieces += [audio, gap]
        offset += (audio.size + gap.size) / SAMPLE_RATE
    out_dir.mkdir(parents=True, exist_ok=True)
    audio_path = write_wav(out_dir / f"{uri}.wav", np.concatenate(pieces))
    rttm = out_dir / f"{uri}.rttm"
    rttm.write_text("".join(lines))
    return CorpusItem(uri, audio_path, rttm=rttm, info={
        "source": f"{k} pieces: AMI train excerpts and the sample call, repeated"})


def prepare_inputs(names: Sequence[str], work_dir: Path) -> list[Any]:
    from workbench.research.datasets import sample_call
    from workbench.research.datasets.ami import ami_items

    items: list[Any] = []
    for name in names:
        if name == "sample":
            items.append(sample_call())
        elif name.startswith("meeting-"):
            items.append(long_meeting(int(name.rsplit("-", 1)[1]), work_dir))
        else:
            items.extend(ami_items("train", REPO_ROOT / "data")[: int(name.rsplit("-", 1)[1])])
    return items


def groups(n_items: int, streams: int) -> list[list[int]]:
    """Indexes of the items recorded together: every item once, every group ``streams`` long
    (the last one filled up with the first items again)."""
    count = math.ceil(n_items / streams)
    return [[(g * streams + k) % n_items for k in range(streams)] for g in range(count)]


# ---------------------------------------------------------------------------- live worker CPU


class LiveCpu:
    """CPU seconds of the server's niced children (live workers), sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.server = psutil.Process(pid)
        self.seen: dict[int, tuple[float, float]] = {}  # pid -> (cpu at first sight, last)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            children = self.server.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                if child.nice() < LIVE_NICE:
                    continue
                t = child.cpu_times()
                cpu = t.user + t.system
            except psutil.Error:
                continue
            first = self.seen.get(child.pid, (cpu, cpu))[0]
            self.seen[child.pid] = (first, cpu)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._sample()

    def __enter__(self) -> "LiveCpu":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def of(self, pids: set[int]) -> float:
        """CPU seconds of these workers since first seen in the window."""
        return sum(last - first for pid, (first, last) in self.seen.items() if pid in pids)


def worker_pids(log_path: Path, session_ids: set[str]) -> set[int]:
    """The live worker of each session, as the server logs it when live results start."""
    found = set()
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    for m in re.finditer(r"Live results for session (\S+) \(worker pid (\d+)", text):
        if m.group(1) in session_ids:
            found.add(int(m.group(2)))
    return found


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


# ---------------------------------------------------------------------------- one recording


async def record_one(client: Any, item: Any, live: bool, chunk_seconds: float) -> dict[str, Any]:
    """Stream ``item`` in real time; timestamps of every chunk and reply; the report."""
    from workbench.engine.audio import SAMPLE_RATE, decode_file, to_int16

    pcm = to_int16(decode_file(item.audio)).tobytes()
    step = int(SAMPLE_RATE * chunk_seconds) * 2
    sends: list[float] = []
    received: list[tuple[float, dict[str, Any]]] = []

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(pcm), step):
            sends.append(time.monotonic())  # sent right after this yield
            yield pcm[i : i + step]

    # A second socket subscribed to the session hears the live events that come after
    # the recording's connection closes (words flushed at stop, after the refined run).
    session_id = (await client.create_session("wav"))["id"]
    heard: list[tuple[float, dict[str, Any]]] = []

    async def listen() -> None:
        async for event in client.events(session_id):
            heard.append((time.monotonic(), event))

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    rec = await client.record(
        chunks(), session_id=session_id, realtime=True, input_format="pcm_s16le",
        chunk_seconds=chunk_seconds, options={"sample_rate": SAMPLE_RATE, "channels": 1},
        live_results=live, on_event=lambda e: received.append((time.monotonic(), e)))
    return {"item": item, "pcm": pcm, "sends": sends, "received": received, "heard": heard,
            "listener": listener, "report": rec}


def merged(received: list[tuple[float, dict[str, Any]]],
           heard: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, dict[str, Any]]]:
    """Replies and ``recording_stopped`` from the recording's connection, live words
    from the subscribed socket (the recording's own when the subscriber heard none)."""
    words = ("transcript_final", "speaker_labels")
    if not any(e.get("type") in words for _, e in heard):
        return received
    return sorted([x for x in received if x[1].get("type") not in words]
                  + [x for x in heard if x[1].get("type") in words], key=lambda x: x[0])


def timings(sends: list[float], received: list[tuple[float, dict[str, Any]]],
            chunk_seconds: float) -> dict[str, Any]:
    """Word and speaker latencies, first-word delay, words before stop, chunk replies.

    The audio's clock starts `chunk_seconds` before the first send: chunk k (audio up to
    (k + 1) x `chunk_seconds`) goes at start + k x `chunk_seconds`, as a microphone would
    hand it over at start + (k + 1) x `chunk_seconds` (before 2026-12-04, session 20, the
    clock started at the first send: lags 0.25 s too small with 0.25 s chunks)."""
    t0 = (sends[0] - chunk_seconds) if sends else 0.0
    word_lags, word_ends, speaker_lags, replies = [], [], [], []
    first_word = None
    stopped_at = math.inf
    before_stop = 0
    labelled: set[int] = set()
    for at, event in received:
        kind = event.get("type")
        if kind == "recording_stopped":
            stopped_at = min(stopped_at, at)
        elif kind == "progress":
            k = int(event.get("chunks_received", 0))
            if 1 <= k <= len(sends):
                replies.append(at - sends[k - 1])
        elif kind in ("transcript_final", "speaker_labels"):
            for word in event.get("words", []):
                end = float(word["end"])
                if kind == "transcript_final":
                    word_lags.append(at - t0 - end)
                    word_ends.append(end)
                    first_word = at - t0 if first_word is None else first_word
                    before_stop += at < stopped_at
                if word.get("speaker") is not None and word["index"] not in labelled:
                    labelled.add(word["index"])
                    speaker_lags.append(at - t0 - end)
    return {"word_latencies": word_lags, "word_ends": word_ends,
            "speaker_latencies": speaker_lags,
            "chunk_replies": replies, "first_word_delay": first_word,
            "words_before_stop": before_stop, "live_words": len(word_lags)}


async def measure_group(client: Any, server: Any, items: list[Any], live: bool,
                        chunk_seconds: float) -> list[dict[str, Any]]:
    """Record ``items`` at once; wait for refined and live runs; score and check bytes."""
    from benchmarks.timing_client import verify_on_disk
    from workbench.research.evaluation import score

    warm_wait = await client.wait_live_warm() if live else None
    load = [round(x, 2) for x in os.getloadavg()]
    with LiveCpu(server.process.pid) as cpu:
        outs = await asyncio.gather(*(record_one(client, it, live, chunk_seconds) for it in items))
        for out in outs:
            rec = out["report"]
            if live and rec.live_run_id:
                await client.wait_for_run(rec.session_id, rec.live_run_id)
        await asyncio.sleep(0.5)
        for out in outs:
            out["listener"].cancel()
        pids = worker_pids(server.log_path, {o["report"].session_id for o in outs})
        for _ in range(60):  # each worker exits once its run is saved: its CPU is final
            if all(_gone(pid) for pid in pids):
                break
            await asyncio.sleep(SAMPLE_EVERY)
    live_cpu = cpu.of(pids) if live else None
    audio_seconds = sum(len(o["pcm"]) / 32000 for o in outs)
    rows = []
    for out in outs:
        item, rec = out["item"], out["report"]
        t = timings(out["sends"], merged(out["received"], out["heard"]), chunk_seconds)
        row: dict[str, Any] = {
            "uri": item.uri, "live": live, "streams": len(items),
            "duration": round(len(out["pcm"]) / 32000, 3), "session_id": rec.session_id,
            "load_average": load,
            "live_results_granted": bool((rec.last("recording_started") or {})
                                         .get("live_results")),
            "paused": [e.get("reason") for _, e in out["received"]
                       if e.get("type") == "live_paused"],
            "chunk_reply_p50_ms": _ms(_pct(t["chunk_replies"], 50)),
            "chunk_reply_p95_ms": _ms(_pct(t["chunk_replies"], 95)),
            "chunk_replies": len(t["chunk_replies"]),
            **verify_on_disk(server.data_dir / "sessions" / rec.session_id, out["pcm"]),
        }
        row.pop("extra_parts", None)
        refined = await client.transcript(rec.session_id, run=rec.run_id) if rec.run_id else None
        ref_row = score(item, refined) if refined is not None else {}
        row.update(refined_words=len(refined.words) if refined is not None else None,
                   refined_wer=_num(ref_row.get("wer")), refined_der=_num(ref_row.get("der")))
        if live:
            lt = await client.transcript(rec.session_id, run=rec.live_run_id) \
                if rec.live_run_id else None
            live_row = score(item, lt) if lt is not None else {}
            said = ((lt.config or {}).get("stats") or {}) if lt is not None else {}
            diarized = said.get("diarization") or {}
            row.update(
                word_latency_p50=_pct(t["word_latencies"], 50),
                word_latency_p95=_pct(t["word_latencies"], 95),
                speaker_latency_p50=_pct(t["speaker_latencies"], 50),
                speaker_latency_p95=_pct(t["speaker_latencies"], 95),
                first_word_delay=_num(t["first_word_delay"], 3),
                live_words=t["live_words"], words_before_stop=t["words_before_stop"],
                before_stop_share=_num(t["words_before_stop"] / row["refined_words"])
                if row["refined_words"] else None,
                live_wer=_num(live_row.get("wer")), live_der=_num(live_row.get("der")),
                live_run_id=rec.live_run_id, warm_wait_seconds=warm_wait,
                # (a worker that falls behind skips diarization steps: BENCHMARKS.md, "A
                # diarizer that falls behind")
                diarization_steps=diarized.get("steps"),
                diarization_skipped_steps=diarized.get("skipped_steps"),
                asr_passes=(said.get("asr") or {}).get("passes"),
                live_cpu_per_audio_second=_num(live_cpu / audio_seconds),
                lag_by_minute=lag_by_minute(t["word_ends"], t["word_latencies"],
                                            [w.end for w in refined.words] if refined else ()),
                lag_slope_per_minute=lag_slope(t["word_ends"], t["word_latencies"]),
                word_latencies=[round(x, 3) for x in t["word_latencies"]],
                speaker_latencies=[round(x, 3) for x in t["speaker_latencies"]])
        rows.append(row)
    return rows


def lag_by_minute(ends: Sequence[float], lags: Sequence[float],
                  refined_ends: Sequence[float] = ()) -> list[dict[str, Any]]:
    """Word latency p50/p95 per minute of the recording (by the word's end), with the
    refined run's word count in the same minute."""
    rows = []
    for minute in range(int(max([*ends, *refined_ends], default=-1) // 60) + 1):
        x = [lag for end, lag in zip(ends, lags) if minute * 60 <= end < (minute + 1) * 60]
        rows.append({"minute": minute, "words": len(x), "p50": _pct(x, 50), "p95": _pct(x, 95),
                     "refined_words": sum(minute * 60 <= e < (minute + 1) * 60
                                          for e in refined_ends)})
    return rows


def lag_slope(ends: Sequence[float], lags: Sequence[float]) -> Optional[float]:
    """Least-squares slope of word latency over the recording (seconds of lag per
    minute of audio): 0 when lag does not grow. None below 2 minutes of words."""
    import numpy as np

    if len(ends) < 10 or max(ends) - min(ends) < 120:
        return None
    return round(float(np.polyfit(np.asarray(ends) / 60.0, np.asarray(lags), 1)[0]), 4)


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000, 1)


# ---------------------------------------------------------------------------- table


def _f(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


@marks_partial
def markdown_table(results: dict[str, Any]) -> str:
    m = results["machine"]
    runs = marked_repeats(results["runs"])
    head = (f"Live results through the server ({machine_stamp(m)}; measured {m.get('date')}; "
            f"load average {m.get('load_average_at_start')} at start, "
            f"{m.get('load_average_at_end')} at end, from other jobs)\n\n")
    lines = ["| input | streams | word lag p50 / p95 (s) | speaker lag p50 / p95 (s) | "
             "first word (s) | words before stop / refined | WER live / refined | "
             "DER live / refined | live CPU s / audio s | chunk reply p50 / p95 (ms) | "
             "lost bytes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r["live"]:
            lines.append(
                f"| {r['uri']}{' (filler)' if r['repeat'] else ''}{_round(r)} | {r['streams']} "
                f"| {_f(r['word_latency_p50'], '.2f')} / {_f(r['word_latency_p95'], '.2f')} "
                f"| {_f(r['speaker_latency_p50'], '.2f')} / {_f(r['speaker_latency_p95'], '.2f')} "
                f"| {_f(r['first_word_delay'], '.1f')} "
                f"| {r['words_before_stop']} / {_f(r['refined_words'], 'd')} "
                f"({_f(r['before_stop_share'], '.0%')}) "
                f"| {_f(r['live_wer'], '.1%')} / {_f(r['refined_wer'], '.1%')} "
                f"| {_f(r['live_der'], '.1%')} / {_f(r['refined_der'], '.1%')} "
                f"| {_f(r['live_cpu_per_audio_second'], '.2f')} "
                f"| {_f(r['chunk_reply_p50_ms'], '.0f')} / {_f(r['chunk_reply_p95_ms'], '.0f')} "
                f"| {r['lost_bytes']} |")
        else:
            lines.append(
                f"| {r['uri']} (no live) | {r['streams']} | | | | | – / "
                f"{_f(r['refined_wer'], '.1%')} | – / {_f(r['refined_der'], '.1%')} | "
                f"| {_f(r['chunk_reply_p50_ms'], '.0f')} / {_f(r['chunk_reply_p95_ms'], '.0f')} "
                f"| {r['lost_bytes']} |")
    lines += ["", "| streams | word lag p50 / p95 (s) | of words before stop p50 / p95 (s) | "
              "speaker lag p50 / p95 (s) | "
              "words before stop | live CPU s / audio s | chunk reply p95 (ms) live / without | "
              f"p95 word lag ≤ {TARGET_P95:g} s | p95 word lag by round (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    # from the runs (a file's saved summary, and its most_streams_within_target, may
    # count a filler recording as a figure)
    summary = summarize(runs) if all("word_latencies" in r for r in runs if r["live"]) \
        else results.get("summary", [])
    for s in summary:
        lines.append(
            f"| {s['streams']} | {_f(s['word_latency_p50'], '.2f')} / "
            f"{_f(s['word_latency_p95'], '.2f')} "
            f"| {_f(s.get('word_latency_before_stop_p50'), '.2f')} / "
            f"{_f(s.get('word_latency_before_stop_p95'), '.2f')} "
            f"| {_f(s['speaker_latency_p50'], '.2f')} / "
            f"{_f(s['speaker_latency_p95'], '.2f')} | {_f(s['before_stop_share'], '.0%')} "
            f"| {_f(s['live_cpu_per_audio_second'], '.2f')} "
            f"| {_f(s['chunk_reply_p95_ms_live'], '.0f')} / "
            f"{_f(s['chunk_reply_p95_ms_without'], '.0f')} | "
            f"{'yes' if s['within_target'] else 'no'} | {_by_round(s)} |")
    for r in results["runs"]:
        minutes = r.get("lag_by_minute") or []
        if len(minutes) >= 3:
            lines += ["", f"Word lag by minute, {r['uri']}{_round(r)} ({r['streams']} "
                      f"stream(s); slope {_f(r.get('lag_slope_per_minute'), '+.3f')} s per "
                      "minute):", "",
                      "| minute | live words | refined words | p50 (s) | p95 (s) |",
                      "|---|---|---|---|---|"]
            lines += [f"| {m['minute']} | {m['words']} | {_f(m.get('refined_words'), 'd')} | "
                      f"{_f(m['p50'], '.2f')} | {_f(m['p95'], '.2f')} |" for m in minutes]
    lines.append("\n" + most_streams_line(summary))
    return head + "\n".join(lines)


def _round(run: dict[str, Any]) -> str:
    return f" (round {run['round'] + 1})" if run.get("round") else ""


def _by_round(level: dict[str, Any]) -> str:
    rounds = level.get("word_latency_p95_by_round") or []  # "–" for one round
    if len(rounds) < 2:
        return "–"
    return (", ".join(_f(p, ".2f") for p in rounds)
            + f" (median {_f(level.get('word_latency_p95_median_of_rounds'), '.2f')})")


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks live --server",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,2",
                        help="live streams at once, comma-separated (1 and 2 by default)")
    parser.add_argument("--inputs", default="sample,ami-train-2",
                        help="sample, ami-train-N (the first N AMI train excerpts) and/or "
                             "meeting-M (an M-minute recording: the AMI train excerpts and "
                             "the sample call one after the other, repeated)")
    parser.add_argument("--chunk-seconds", type=float, default=0.25)
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the recordings without live results (chunk replies)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="record each stream count's live groups this many times, one "
                             "round after the other on the same server (fresh sessions): "
                             "the figures pool every round, and the table gives each "
                             "round's p95 word latency and their median (one run's p95 "
                             "moves by a few tenths of a second)")
    option_arguments(parser)  # (given to the server as --live-config)
    output_arguments(parser, NAME)
    args = parser.parse_args(list(argv))
    live_options(parser, args)
    args.live_config = {part: options for part, options in
                        (("asr", args.asr_options), ("diarization", args.diarization_options))
                        if options}
    try:
        check_live_config(args.live_config)
    except ConfigError as exc:
        parser.error(str(exc).replace("--live-config: ", "--asr / --diarization: "))
    try:
        args.stream_counts = sorted({int(x) for x in args.streams.split(",") if x.strip()})
        args.input_names = parse_inputs(args.inputs)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.stream_counts or min(args.stream_counts) < 1:
        parser.error("--streams: positive counts")
    if not args.chunk_seconds > 0:
        parser.error("--chunk-seconds must be positive")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


async def run_levels(args: argparse.Namespace, server: Any, items: list[Any],
                     results: dict[str, Any]) -> None:
    from workbench.notebook.client import AsyncClient

    async with AsyncClient(server.url, timeout=900) as client:
        for n in args.stream_counts:
            if not args.no_baseline:
                print(f"{n} stream(s) without live: {items[0].uri} ...", flush=True)
                results["runs"] += await measure_group(client, server, [items[0]] * n, False,
                                                       args.chunk_seconds)
            for k in range(args.rounds):
                recorded: set[int] = set()
                for group in groups(len(items), n):
                    names = ", ".join(items[i].uri for i in group)
                    said = f" (round {k + 1} of {args.rounds})" if args.rounds > 1 else ""
                    print(f"{n} live stream(s){said}: {names} ...", end=" ", flush=True)
                    rows = await measure_group(client, server, [items[i] for i in group],
                                               True, args.chunk_seconds)
                    for i, row in zip(group, rows):
                        # a last group filled up with the first items: load, not figures
                        row["repeat"] = i in recorded
                        row["round"] = k
                        recorded.add(i)
                    results["runs"] += rows
                    print("; ".join(f"{r['uri']} word lag p95 "
                                    f"{_f(r['word_latency_p95'], '.2f')} s" for r in rows),
                          flush=True)
                    write_results(args.out, results)


def main(argv: Sequence[str] = ()) -> int:
    args = parse_args(argv)
    if reprinted(args, markdown_table, NAME):
        return 0
    from benchmarks import server_env, server_source_digest
    from workbench.notebook.local_server import LocalServer

    server_args = ["--live-warm", "--max-live-sessions", str(max(args.stream_counts)),
                   "--progress-every", "1"]
    # (always: a WORKBENCH_LIVE_CONFIG in the environment would configure it unseen)
    server_args += ["--live-config", json.dumps(args.live_config)]
    results: dict[str, Any] = {
        "benchmark": NAME,
        "command": ("python -m benchmarks live --server " + " ".join(argv)).strip(),
        "machine": machine_info(),
        "parameters": {"streams": args.stream_counts, "inputs": args.input_names,
                       "chunk_seconds": args.chunk_seconds, "baseline": not args.no_baseline,
                       "rounds": args.rounds,
                       "server_args": server_args, "target_p95_word_latency": TARGET_P95,
                       "der": {"collar": 0.0, "skip_overlap": False},
                       "server_source": server_source_digest()},
        "options": recorded_options(args),
        "caveats": [
            "The machine runs other jobs (see the load averages): latencies and CPU include "
            "their contention.",
            "Live CPU: the group's live workers (pids from the server log), from the "
            "group's start (a warm worker's model loading before it is left out) to their "
            "exit; the per-recording figure is the group's total over the group's audio "
            "seconds.",
            "--live-warm keeps one worker loaded ahead: with 2 streams at once the second "
            "one loads its models after start (a longer first-word delay).",
            "Refined run: the server's default pipeline; live run: the live worker's "
            "saved transcript. AMI train excerpts have no STM: no WER.",
        ],
        "runs": [],
    }
    status = 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-server-"))
    try:
        items = prepare_inputs(args.input_names, tmp / "inputs")
        with LocalServer(tmp / "data", args=server_args,
                         env=server_env(max(args.stream_counts))) as server:
            time.sleep(1.0)
            asyncio.run(run_levels(args, server, items, results))
    except Exception as exc:  # noqa: BLE001 - reported in the results file
        status = 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["summary"] = summarize(results["runs"])
    results["most_streams_within_target"] = most_streams(results["summary"])
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finish(args.out, results, markdown_table(results))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
