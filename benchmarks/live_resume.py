"""Live results across a resume: what a recording that drops mid-way and is resumed later
costs the live diarization (and with `--asr` the live transcript), when the new live
session goes on with the last one's speakers (as the server does:
`LiveSession.seed_speakers`) and when it starts afresh.

    python -m benchmarks live-resume [--latency 2] [--at 0.5] [--inputs sample,conv2,conv3,ami]
                                     [--costs 0.6,0.3] [--asr] [--bench-dir data/bench]
                                     [--out FILE] [--table FILE]

Each input is streamed through `workbench.live.stream_file` (the diarization alone, on the
simulated clock with fixed job costs, as ``python -m benchmarks live --no-asr``; with
``--asr`` transcribed too, and the live WER of the inputs with a reference transcript
scored) four ways: ``whole``; ``resumed``: cut at ``--at`` of its duration (rounded down to a whole
second) into two live sessions, the second given the first's speakers (``speakers=``);
``primed``: the same, and the second session is given the 10 s of audio before the cut,
which its first diarization windows see (``context=``), and the first session's text, which
its ASR prompt starts with (``said=``), as the server does; ``afresh``: the same cut, the
second session's labels its own, no context. DER (collar 0, overlap
scored, inside the reference's UEM) of the two sessions' turns joined, against the whole
recording's reference; pooled per group (`benchmarks.live.input_group`) and over all.
Inputs as ``python -m benchmarks live`` (never the AMI test subset).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks import (REPO_ROOT, finish, machine_info, marks_partial, output_arguments,
                        recorded_options, reprinted, write_results)
from benchmarks.measure import number as _num

NAME = "live-resume"
SYSTEMS = ("whole", "resumed", "primed", "afresh")


def _scored(item: Any, transcript: Any, system: str, cut: Optional[float]) -> dict[str, Any]:
    from workbench.research.evaluation import score
    from workbench.research.metrics import diarization_error

    turns = transcript.turns
    e = diarization_error(item.reference_turns(), turns, uem=item.annotated())
    row = {"uri": item.uri, "system": system, "cut_seconds": cut,
           "der": _num(e.der), "missed": _num(e.missed, 6),
           "false_alarm": _num(e.false_alarm, 6), "confusion": _num(e.confusion, 6),
           "speech": _num(e.total, 6),
           "der_errors": _num(e.missed + e.false_alarm + e.confusion, 6),
           "speakers": len({t.speaker for t in turns})}
    if transcript.words and item.stm:  # (--asr: live WER where the input has an STM)
        scored = score(item, transcript)
        row.update(wer=_num(scored["wer"]), wer_errors=scored["wer_errors"],
                   ref_words=scored["ref_words"])
    return row


def run_input(item: Any, config: Any, costs: Any, models: Any, at: float) -> list[dict[str, Any]]:
    """The rows (`SYSTEMS`) of one input."""
    from workbench.engine.audio import SAMPLE_RATE, load_audio
    from dataclasses import replace

    from workbench.engine.transcript import Transcript, Turn, build_segments
    from workbench.live import stream_file

    audio = load_audio(item.audio)
    cut = int(audio.size * at) // SAMPLE_RATE * SAMPLE_RATE
    offset = cut / SAMPLE_RATE

    def live(samples: Any, speakers: Optional[dict[str, Any]] = None,
             context: Any = None, said: str = "") -> Any:
        return stream_file(samples, config=config, costs=costs, models=models, uri=item.uri,
                           speakers=speakers, context=context, said=said)

    rows = [_scored(item, live(audio).transcript, "whole", None)]
    first = live(audio[:cut])
    # the server's resume: the 10 s before the cut and the text said before it
    # (`LiveSession.prime`)
    before = audio[max(0, cut - 10 * SAMPLE_RATE):cut]
    for system, speakers, context, said in (("resumed", first.speakers, None, ""),
                                            ("primed", first.speakers, before,
                                             first.transcript.text),
                                            ("afresh", None, None, "")):
        second = live(audio[cut:], speakers, context, said).transcript
        words = list(first.transcript.words) + [
            replace(w, start=round(w.start + offset, 3), end=round(w.end + offset, 3))
            for w in second.words]
        turns = list(first.transcript.turns) + [
            Turn(round(t.start + offset, 3), round(t.end + offset, 3), t.speaker)
            for t in second.turns]
        joined = Transcript(segments=build_segments(words), turns=turns,
                            duration=audio.size / SAMPLE_RATE)
        rows.append(_scored(item, joined, system, offset))
    return rows


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group (and ``all``) and system: DER and confusion pooled over the inputs."""
    from benchmarks.live import input_group

    groups = sorted({input_group(r["uri"]) for r in runs})
    rows = []
    for group in ["all"] + (groups if len(groups) > 1 else []):
        mine = [r for r in runs if group == "all" or input_group(r["uri"]) == group]
        row: dict[str, Any] = {"group": group,
                               "inputs": len({r["uri"] for r in mine})}
        for system in SYSTEMS:
            of = [r for r in mine if r["system"] == system]
            speech = sum(r["speech"] for r in of)
            row[system] = _num(sum(r["der_errors"] for r in of) / speech) if speech else None
            row[f"{system}_confusion"] = (_num(sum(r["confusion"] for r in of) / speech)
                                          if speech else None)
            words = sum(r.get("ref_words", 0) for r in of)  # (--asr, inputs with an STM)
            row[f"{system}_wer"] = (_num(sum(r.get("wer_errors", 0) for r in of) / words)
                                    if words else None)
        rows.append(row)
    return rows


@marks_partial
def table(results: dict[str, Any]) -> str:
    def pct(value: Any) -> str:
        return "–" if value is None else f"{100 * value:.1f} %"

    at = (results.get("parameters") or {}).get("at")
    lines = [f"Live DER (confusion) with the recording dropped at {at} of its duration and "
             "resumed in a new live session, pooled:", "",
             "| recordings | inputs | not dropped | resumed, speakers kept | speakers kept, "
             "audio before the cut seen | resumed, labels afresh |", "|---|---:|---:|---:|---:|---:|"]
    rows = summarize(results.get("runs") or [])
    for row in rows:
        cells = [f"{pct(row[s])} ({pct(row[f'{s}_confusion'])})" for s in SYSTEMS]
        lines.append(f"| {row['group']} | {row['inputs']} | " + " | ".join(cells) + " |")
    if any(row[f"{s}_wer"] is not None for row in rows for s in SYSTEMS):
        lines += ["", "Live WER (`--asr`; inputs with a reference transcript), pooled:", "",
                  "| recordings | not dropped | resumed, speakers kept | speakers kept, audio "
                  "and words before the cut given | resumed, labels afresh |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {row['group']} | " + " | ".join(pct(row[f"{s}_wer"]) for s in SYSTEMS)
                  + " |" for row in rows if row[f"{SYSTEMS[0]}_wer"] is not None]
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks live-resume",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=2.0,
                        help="the diarization latency (s), as `live`")
    parser.add_argument("--at", type=float, default=0.5,
                        help="where the recording drops, a fraction of its duration")
    from benchmarks.live import DEFAULT_INPUTS, INPUTS

    parser.add_argument("--inputs", default=",".join(DEFAULT_INPUTS),
                        help="comma-separated, as `python -m benchmarks live --inputs`")
    parser.add_argument("--costs", default="0.6,0.3",
                        help="fixed 'ASR_PASS_SECONDS,DIARIZATION_STEP_SECONDS'")
    parser.add_argument("--asr", action="store_true",
                        help="transcribe too (live WER of the inputs with a reference "
                             "transcript; the primed session's ASR prompt starts with the "
                             "text said before the cut)")
    parser.add_argument("--bench-dir", type=Path, default=REPO_ROOT / "data" / "bench")
    output_arguments(parser, NAME)
    args = parser.parse_args(list(argv))
    if reprinted(args, table, NAME):
        return 0
    names = [n.strip() for n in args.inputs.split(",") if n.strip()]
    if unknown := [n for n in names if n not in INPUTS]:
        parser.error(f"--inputs: unknown {', '.join(unknown)}; choose from {','.join(INPUTS)}")
    if not 0 < args.at < 1 or args.latency <= 0:
        parser.error("--at must be between 0 and 1 and --latency above 0")
    try:
        asr_cost, step_cost = (float(x) for x in args.costs.split(","))
    except ValueError:
        parser.error("--costs takes two numbers: ASR_PASS_SECONDS,DIARIZATION_STEP_SECONDS")
    from workbench.live import JobCosts, LiveConfig, load_models
    from workbench.live.diarization import OnlineDiarizationConfig

    config = LiveConfig(transcribe=args.asr,
                        diarization=OnlineDiarizationConfig.for_latency(args.latency))
    results: dict[str, Any] = {
        "benchmark": NAME, "machine": machine_info(),
        "command": " ".join(["python -m benchmarks live-resume", *argv]),
        "parameters": {"latency": args.latency, "at": args.at, "inputs": names,
                       "costs": args.costs, "config": config.serialize(),
                       "der": {"collar": 0.0, "skip_overlap": False}},
        "options": recorded_options(args), "runs": []}
    status = 0
    try:
        args.bench_dir.mkdir(parents=True, exist_ok=True)
        from benchmarks.live import prepare_inputs

        items = prepare_inputs(names, args.bench_dir)
        models = load_models(config)
        for item in items:
            rows = run_input(item, config, JobCosts(asr_cost, step_cost), models, args.at)
            results["runs"].extend(rows)
            print(item.uri, " ".join(f"{r['system']} {100 * r['der']:.1f} %" for r in rows),
                  flush=True)
            write_results(args.out, results)
    except Exception as exc:  # noqa: BLE001 - reported in the results file
        status = 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    results["summary"] = summarize(results["runs"])
    finish(args.out, results, table(results))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
