"""Live benchmark: latency, accuracy and cost of `workbench.live` against the offline pipeline.

``python -m benchmarks live [--quick] [--latencies 0.5,1,2,5] [--inputs sample,conv2,conv3,ami]
[--costs measured|ASR_SECONDS,DIAR_SECONDS] [--asr OPTION=VALUE] [--diarization OPTION=VALUE]
[--no-asr] [--no-offline] [--bench-dir data/bench] [--out benchmarks/results/live.json]``

Every input is streamed through `workbench.live.stream_file` once per latency (the
diarization latency: `OnlineDiarizationConfig.for_latency`, 7.5 s windows, a 0.5 s step
below 2 s of latency, 1 s from there), on the simulated clock: as fast as the machine
goes, each job's events appearing its measured wall time later in audio time, as if ASR
and diarization each had a core (``--costs A,D`` fixes the seconds per ASR pass and per
diarization step instead). Figures per run:

* word latency: audio time when a word was committed minus the word's end (p50, p95);
* speaker latency: the same for the moment the word got its speaker;
* WER and DER (collar 0, overlap scored) of the live transcript, beside the offline
  pipeline's (`workbench.pipeline.transcribe`, default configuration) on the same file;
* CPU seconds per audio second of the live stream (process CPU time, both workers);
* the fraction of the final words committed before the audio ended; ASR passes, and
  diarization steps skipped to keep up.

``--no-asr`` streams the diarization alone (``LiveConfig(transcribe=False)``): DER and its
components against latency in a few minutes, for DER-versus-latency curves (no WER or
word lag then; the refined run is still the whole offline pipeline unless
``--no-offline``).

Per latency the summary pools all inputs and each group (`input_group`: the sample call,
the generated conversations, the generated development corpus, the AMI train excerpts, the
AMI development excerpts, the long recordings), with
``der_ratio``: live DER over the offline DER on the inputs that have both (the table's
"DER live" column, in brackets).

Inputs: ``sample`` (the pyannote sample call, 30 s), ``conv2`` / ``conv3`` (generated
60 s conversations of 2 and 3 voices, cached under ``--bench-dir``), ``corpus-dev`` (the 8
generated conversations of the diarization benchmark's development set, 1-5 min, 2-5
voices, `benchmarks.diarization.dev_corpus`: a check, not in the defaults), ``ami`` (the AMI
train excerpts through `workbench.research.datasets.ami.ami_items`, fetched into ``data/``
on first use), ``ami-dev`` (the AMI development excerpts: a check, not in the defaults)
and ``meeting-M`` (an M-minute recording, 1 to 30: the AMI train excerpts and the sample
call in a row, repeated, `benchmarks.live_server.long_meeting`; for what only long
recordings show, such as labels that drift or merge); never the test subset.
``--quick``: the sample call at latencies 1 and 2 s.

``--server`` measures the real server instead (streams in real time over the protocol):
see `benchmarks.live_server`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks import (REPO_ROOT, finish, machine_info, machine_stamp, output_arguments,
                        recorded_options, reprinted, write_results, marks_partial)
from benchmarks.measure import number as _num
from benchmarks.measure import percentile_rounded as _pct

NAME = "live"
LATENCIES = (0.5, 1.0, 2.0, 5.0)
INPUTS = ("sample", "conv2", "conv3", "corpus-dev", "ami", "ami-dev")
DEFAULT_INPUTS = ("sample", "conv2", "conv3", "ami")
GENERATED = {
    "conv2": {"num_speakers": 2, "duration": 60.0, "overlap_ratio": 0.0, "seed": 21},
    "conv3": {"num_speakers": 3, "duration": 60.0, "overlap_ratio": 0.05, "seed": 31},
}


def prepare_inputs(names: Sequence[str], bench_dir: Path) -> list[Any]:
    from benchmarks.pipeline import generated_conversation
    from workbench.research.datasets import sample_call

    items = []
    for name in names:
        if name == "sample":
            items.append(sample_call())
        elif name in GENERATED:
            items.append(generated_conversation(bench_dir, f"live_{name}", GENERATED[name]))
        elif name == "corpus-dev":
            from benchmarks.diarization import dev_corpus

            items.extend(dev_corpus(bench_dir))
        elif name.startswith("meeting-"):
            from benchmarks.live_server import long_meeting

            items.append(long_meeting(int(name.rsplit("-", 1)[1]), bench_dir))
        elif name in ("ami", "ami-dev"):
            from workbench.research.datasets.ami import ami_items

            subset = "train" if name == "ami" else "development"
            items.extend(ami_items(subset, REPO_ROOT / "data"))
    return items


def _lags(runs: list[dict[str, Any]], kind: str) -> dict[str, Optional[float]]:
    """p50 / p95 of the ``kind`` ("word" / "speaker") latencies pooled over `runs`; a
    results file from before the runs kept their latencies (2026-12-04) gives the
    median of the runs' own percentiles instead."""
    keys = (f"{kind}_latency_p50", f"{kind}_latency_p95")
    if all(f"{kind}_latencies" in r for r in runs):
        pooled = [x for r in runs for x in r[f"{kind}_latencies"]]
        return {keys[0]: _pct(pooled, 50), keys[1]: _pct(pooled, 95)}
    return {k: _num(np.median([r[k] for r in runs if r[k] is not None]), 3)
            if any(r[k] is not None for r in runs) else None for k in keys}


def live_config(latency: float, asr_options: Optional[dict[str, Any]] = None,
                diarization_options: Optional[dict[str, Any]] = None,
                transcribe: bool = True) -> Any:
    """The `LiveConfig` of a run at `latency` with these options (ConfigError if bad)."""
    from workbench.live import LiveConfig
    from workbench.live.asr import StreamingASRConfig
    from workbench.live.diarization import OnlineDiarizationConfig

    return LiveConfig(transcribe=transcribe, asr=StreamingASRConfig.from_dict(asr_options or {}),
                      diarization=OnlineDiarizationConfig.for_latency(
                          latency, **(diarization_options or {})))


def run_live(item: Any, latency: float, costs: Any, models: Any,
             asr_options: Optional[dict[str, Any]] = None,
             diarization_options: Optional[dict[str, Any]] = None,
             transcribe: bool = True) -> dict[str, Any]:
    """One live run of `item` at `latency`; with ``transcribe=False`` the diarization
    alone (WER and word figures None)."""
    from workbench.research.evaluation import score
    from workbench.live import stream_file

    config = live_config(latency, asr_options, diarization_options, transcribe)
    t0 = time.perf_counter()
    result = stream_file(item.audio, config=config, costs=costs, models=models, uri=item.uri)
    wall = time.perf_counter() - t0
    row = score(item, result.transcript)
    if not transcribe:  # no words: WER is not this run's figure
        row.update(wer=None, wer_errors=None, ref_words=None)
    words, speakers = result.word_latencies(), result.speaker_latencies()
    stats = result.stats
    asr = stats.get("asr") or {"passes": None, "retries": None, "pass_seconds": 0.0,
                               "max_buffer_seconds": None}
    return {
        "uri": item.uri, "system": "live", "latency": latency,
        "duration": round(result.duration, 3),
        "wer": _num(row["wer"]), "wer_errors": _num(row["wer_errors"]),
        "ref_words": _num(row["ref_words"]),
        "der": _num(row["der"]), "der_errors": _num(row["missed"] + row["false_alarm"]
                                                    + row["confusion"]),
        "missed": _num(row["missed"]), "false_alarm": _num(row["false_alarm"]),
        "confusion": _num(row["confusion"]),
        "speech": _num(row["speech"]), "hyp_speakers": _num(row["hyp_speakers"]),
        "ref_speakers": _num(row["ref_speakers"]),
        "word_latency_p50": _pct(words, 50), "word_latency_p95": _pct(words, 95),
        "speaker_latency_p50": _pct(speakers, 50), "speaker_latency_p95": _pct(speakers, 95),
        "word_latencies": [_num(x, 3) for x in words],
        "speaker_latencies": [_num(x, 3) for x in speakers],
        "cpu_per_audio_second": _num(stats["cpu_seconds"] / max(result.duration, 1e-9)),
        "committed_before_end": _num(result.committed_before_end()),
        "asr_passes": asr["passes"],
        "asr_retries": asr["retries"],
        "asr_seconds_per_pass": (None if asr["passes"] is None
                                 else _num(asr["pass_seconds"] / max(1, asr["passes"]))),
        "max_buffer_seconds": asr["max_buffer_seconds"],
        "diarization_steps": stats["diarization"]["steps"],
        "diarization_skipped_steps": stats["diarization"]["skipped_steps"],
        "diarization_seconds_per_step": _num(stats["diarization"]["step_seconds"]
                                             / max(1, stats["diarization"]["steps"])),
        "wall_seconds": round(wall, 2),
        "config": config.serialize(),
    }


def run_offline(item: Any) -> dict[str, Any]:
    from workbench.research.evaluation import score
    from workbench.engine.pipeline import transcribe

    cpu = time.process_time()
    transcript = transcribe(item.audio)
    cpu = time.process_time() - cpu
    row = score(item, transcript)
    return {"uri": item.uri, "system": "offline", "duration": round(item.duration, 3),
            "wer": _num(row["wer"]), "wer_errors": _num(row["wer_errors"]),
            "ref_words": _num(row["ref_words"]), "der": _num(row["der"]),
            "der_errors": _num(row["missed"] + row["false_alarm"] + row["confusion"]),
            "speech": _num(row["speech"]), "hyp_speakers": _num(row["hyp_speakers"]),
            "ref_speakers": _num(row["ref_speakers"]),
            "cpu_per_audio_second": _num(cpu / item.duration),
            "rtf": _num(transcript.timings["total"] / item.duration)}


def _pooled(rows: list[dict[str, Any]], errors: str, total: str,
            digits: Optional[int] = 6) -> Optional[float]:
    # (6 digits: at 4, 2.204 s of errors in 24.35 s of speech, 9.0513 %, printed 9.0 %)
    e = sum(r[errors] or 0 for r in rows if r.get(errors) is not None)
    t = sum(r[total] or 0 for r in rows if r.get(total) is not None)
    if not t:
        return None
    return e / t if digits is None else _num(e / t, digits)


def input_group(uri: str) -> str:
    """The group an input is pooled in besides "all": ``generated`` (conv2, conv3),
    ``corpus-dev`` (conv000-conv007), ``ami`` (the AMI train excerpts), ``ami-dev`` (the
    development ones), ``meeting`` (the long recordings) or the input itself (the sample
    call)."""
    if uri.startswith("live_conv"):
        return "generated"
    if uri.startswith("conv") and uri[4:].isdigit():
        return "corpus-dev"
    if uri[:3] == "trn":
        return "ami"
    if uri[:3] == "dev":
        return "ami-dev"
    if uri.startswith("meeting-"):
        return "meeting"
    return uri


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per latency, one row over all inputs (``group`` "all") and, with more than one
    group, one per `input_group`: pooled WER/DER live and offline, ``der_ratio`` (live
    DER over offline DER, on the inputs that have both), the live DER's ``missed``,
    ``false_alarm`` and ``confusion`` (shares of the speech; None unless every run has
    them), lag percentiles of the words pooled over the runs (`_lags`), medians of the
    runs' CPU and committed shares."""
    live = [r for r in results["runs"] if r["system"] == "live"]
    offline = [r for r in results["runs"] if r["system"] == "offline"]
    groups = sorted({input_group(r["uri"]) for r in live})
    rows = []
    for latency in sorted({r["latency"] for r in live}):
        for group in ["all"] + (groups if len(groups) > 1 else []):
            def member(r: dict[str, Any]) -> bool:
                return group == "all" or input_group(r["uri"]) == group

            runs = [r for r in live if r["latency"] == latency and member(r)]
            mine = [r for r in offline if member(r)]
            der, offline_der = (_pooled(runs, "der_errors", "speech"),
                                _pooled(mine, "der_errors", "speech"))
            # the ratio on the inputs that have both runs
            both = {r["uri"] for r in runs} & {o["uri"] for o in mine}
            paired = _pooled([r for r in runs if r["uri"] in both], "der_errors", "speech",
                             digits=None)
            refined = _pooled([o for o in mine if o["uri"] in both], "der_errors", "speech",
                              digits=None)
            rows.append({
                "latency": latency, "group": group, "inputs": len(runs),
                "wer": _pooled(runs, "wer_errors", "ref_words"),
                "der": der,
                "offline_wer": _pooled(mine, "wer_errors", "ref_words"),
                "offline_der": offline_der,
                "der_ratio": _num(paired / refined, 3) if paired is not None and refined
                else None,
                # DER's components, shares of the speech (when every run has them)
                **{k: _pooled(runs, k, "speech")
                   if runs and all(r.get(k) is not None for r in runs) else None
                   for k in ("missed", "false_alarm", "confusion")},
                **_lags(runs, "word"), **_lags(runs, "speaker"),
                **{k: _num(np.median([r[k] for r in runs if r[k] is not None]), 3)
                   if any(r[k] is not None for r in runs) else None
                   for k in ("cpu_per_audio_second", "committed_before_end")},
            })
    return rows


def _f(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _rate(run: dict[str, Any], key: str = "der") -> Optional[float]:
    """A run's DER (or WER) from its sums when it has them (``der`` and ``wer`` are
    rounded to 4 digits: 0.0905 printed 9.0 % for 9.05 %)."""
    errors, total = ("der_errors", "speech") if key == "der" else ("wer_errors", "ref_words")
    if run.get(errors) is not None and run.get(total):
        return run[errors] / run[total]
    return run.get(key)


@marks_partial
def markdown_table(results: dict[str, Any]) -> str:
    head = (f"Live results ({machine_stamp(results['machine'])}; "
            f"costs: {results['parameters']['costs']}; load average at start "
            f"{results['machine'].get('load_average_at_start')})\n\n")
    lines = ["| input | latency (s) | WER live | WER offline | DER live | DER offline | "
             "word lag p50 / p95 (s) | speaker lag p50 / p95 (s) | CPU s / audio s | "
             "committed before end | passes | skipped steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    offline = {r["uri"]: r for r in results["runs"] if r["system"] == "offline"}
    for r in results["runs"]:
        if r["system"] != "live":
            continue
        o = offline.get(r["uri"], {})
        lines.append(
            f"| {r['uri']} | {r['latency']:g} | {_f(_rate(r, 'wer'), '.1%')} "
            f"| {_f(_rate(o, 'wer'), '.1%')} "
            f"| {_f(_rate(r), '.1%')} | {_f(_rate(o), '.1%')} "
            f"| {_f(r['word_latency_p50'], '.2f')} / {_f(r['word_latency_p95'], '.2f')} "
            f"| {_f(r['speaker_latency_p50'], '.2f')} / {_f(r['speaker_latency_p95'], '.2f')} "
            f"| {_f(r['cpu_per_audio_second'], '.2f')} | {_f(r['committed_before_end'], '.0%')} "
            f"| {_f(r['asr_passes'], 'd')} | {r['diarization_skipped_steps']} |")
    for s in results.get("summary", []):
        ratio = f" ({s['der_ratio']:.2f}x)" if s.get("der_ratio") is not None else ""
        lines.append(
            f"| **{s.get('group', 'all')}** | {s['latency']:g} | {_f(s['wer'], '.1%')} "
            f"| {_f(s['offline_wer'], '.1%')} | {_f(s['der'], '.1%')}{ratio} "
            f"| {_f(s['offline_der'], '.1%')} "
            f"| {_f(s['word_latency_p50'], '.2f')} / {_f(s['word_latency_p95'], '.2f')} "
            f"| {_f(s['speaker_latency_p50'], '.2f')} / {_f(s['speaker_latency_p95'], '.2f')} "
            f"| {_f(s['cpu_per_audio_second'], '.2f')} | {_f(s['committed_before_end'], '.0%')} "
            f"| | |")
    if any(r.get("missed") is not None for r in results["runs"] if r["system"] == "live"):
        lines += ["", "DER of the live runs and its components (shares of the speech):", "",
                  "| input | latency (s) | DER | missed | false alarm | confusion |",
                  "|---|---|---|---|---|---|"]
        for s in results.get("summary", []):
            lines.append(f"| **{s.get('group', 'all')}** | {s['latency']:g} | "
                         f"{_f(s['der'], '.1%')} | {_f(s.get('missed'), '.1%')} | "
                         f"{_f(s.get('false_alarm'), '.1%')} | {_f(s.get('confusion'), '.1%')} |")
    return head + "\n".join(lines)


def option_arguments(parser: argparse.ArgumentParser) -> None:
    """``--asr OPTION=VALUE`` and ``--diarization OPTION=VALUE`` (repeatable)."""
    parser.add_argument("--asr", action="append", default=[], metavar="OPTION=VALUE",
                        help="a StreamingASRConfig option for the live runs (repeatable), "
                             "e.g. encoder_pad=none; values are JSON (none/null = None)")
    parser.add_argument("--diarization", action="append", default=[], metavar="OPTION=VALUE",
                        help="an OnlineDiarizationConfig option for the live runs "
                             "(repeatable), e.g. adopt_distance=none")


def live_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``args.asr_options`` and ``args.diarization_options`` from `option_arguments`' flags
    (a value that is not JSON is a string; ``none`` is None)."""
    for flag in ("asr", "diarization"):
        options: dict[str, Any] = {}
        for option in getattr(args, flag):
            key, sep, value = option.partition("=")
            if not sep:
                parser.error(f"--{flag} {option!r}: expected OPTION=VALUE")
            try:
                options[key.strip()] = (None if value.strip().lower() == "none"
                                        else json.loads(value))
            except json.JSONDecodeError:
                options[key.strip()] = value.strip()
        setattr(args, f"{flag}_options", options)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks live",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", action="store_true",
                        help="measure the real server instead (benchmarks.live_server; "
                             "`live --server --help` for its flags)")
    parser.add_argument("--quick", action="store_true",
                        help="the sample call at latencies 1 and 2 s")
    parser.add_argument("--latencies", default=",".join(f"{x:g}" for x in LATENCIES))
    parser.add_argument("--inputs", default=",".join(DEFAULT_INPUTS),
                        help=f"comma-separated, of {','.join(INPUTS)} and meeting-M (M "
                             "minutes, 1 to 30)")
    parser.add_argument("--costs", default="measured",
                        help="'measured' or fixed 'ASR_PASS_SECONDS,DIARIZATION_STEP_SECONDS'")
    option_arguments(parser)
    parser.add_argument("--no-offline", action="store_true", help="skip the offline pipeline")
    parser.add_argument("--no-asr", action="store_true",
                        help="stream the diarization alone (DER against latency; no WER)")
    parser.add_argument("--bench-dir", type=Path, default=REPO_ROOT / "data" / "bench")
    output_arguments(parser, NAME)
    args = parser.parse_args(list(argv))
    if args.quick:
        args.latencies, args.inputs = "1,2", "sample"
    live_options(parser, args)
    args.latency_values = [float(x) for x in args.latencies.split(",") if x.strip()]
    for latency in args.latency_values:  # (checked before models load, inputs are made)
        try:
            live_config(latency, args.asr_options, args.diarization_options)
        except ValueError as exc:
            parser.error(f"--asr / --diarization at latency {latency:g} s: {exc}")
    args.input_names = [n.strip() for n in args.inputs.split(",") if n.strip()]
    from benchmarks.live_server import numbered

    unknown = [n for n in args.input_names
               if n not in INPUTS and not numbered(n, "meeting-", 1, 30)]
    if unknown:
        parser.error(f"--inputs: unknown {', '.join(unknown)}; choose from {','.join(INPUTS)} "
                     "or meeting-M (M minutes, 1 to 30)")
    return args


def main(argv: Sequence[str] = ()) -> int:
    if "--server" in argv:
        from benchmarks import live_server

        return live_server.main([a for a in argv if a != "--server"])
    args = parse_args(argv)
    # (older files: without the groups, so the summary is made again)
    if reprinted(args, lambda results: markdown_table({**results, "summary": summarize(results)}),
                 NAME):
        return 0
    from workbench.live import JobCosts, LiveConfig, load_models, warm_up

    costs = None
    if args.costs != "measured":
        asr, diar = (float(x) for x in args.costs.split(","))
        costs = JobCosts(asr_pass=asr, diarization_step=diar)
    results: dict[str, Any] = {
        "benchmark": NAME,
        "command": ("python -m benchmarks live " + " ".join(argv)).strip(),
        "machine": machine_info(),
        "parameters": {"latencies": args.latency_values, "inputs": args.input_names,
                       "transcribe": not args.no_asr, "offline": not args.no_offline,
                       "bench_dir": str(args.bench_dir),
                       "asr": args.asr_options, "diarization": args.diarization_options,
                       "costs": args.costs, "generated_inputs": GENERATED,
                       "der": {"collar": 0.0, "skip_overlap": False},
                       "chunk_seconds": 0.25},
        "options": recorded_options(args),
        "caveats": [
            "Simulated clock: ASR and diarization each act as a thread with a core of its "
            "own; each job's events appear its measured wall time later (in audio time). "
            "Other jobs on the machine inflate those times, and so the lags: see the load "
            "averages in machine.",
            "CPU s / audio s is the process CPU time (both workers) over the audio duration.",
            "Offline: workbench.pipeline.transcribe with the default configuration.",
        ],
        "runs": [],
    }
    status = 0
    try:
        args.bench_dir.mkdir(parents=True, exist_ok=True)
        items = prepare_inputs(args.input_names, args.bench_dir)
        models = load_models(LiveConfig(transcribe=not args.no_asr))
        # the first input's measured passes and steps must not pay the first-call costs
        results["warm_up_seconds"] = round(warm_up(models, LiveConfig(
            transcribe=not args.no_asr)), 2)
        for item in items:
            if not args.no_offline:
                print(f"{item.uri}: offline ...", end=" ", flush=True)
                run = run_offline(item)
                results["runs"].append(run)
                print(f"WER {_f(run['wer'], '.1%')} DER {_f(run['der'], '.1%')}", flush=True)
            for latency in args.latency_values:
                print(f"{item.uri}: live, latency {latency:g} s ...", end=" ", flush=True)
                run = run_live(item, latency, costs, models, args.asr_options,
                               args.diarization_options, transcribe=not args.no_asr)
                results["runs"].append(run)
                print(f"WER {_f(run['wer'], '.1%')} DER {_f(run['der'], '.1%')} word lag p50 "
                      f"{_f(run['word_latency_p50'], '.2f')} s", flush=True)
                write_results(args.out, results)
    except Exception as exc:  # noqa: BLE001 - reported in the results file
        status = 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    results["summary"] = summarize(results)
    finish(args.out, results, markdown_table(results))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
