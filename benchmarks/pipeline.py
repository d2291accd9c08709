"""Pipeline benchmark: real-time factor per stage and peak memory, against senko.

``python -m benchmarks pipeline [--inputs 30s,5min,30min] [--asr-model tiny.en]
[--config JSON] [--variant NAME=JSON ...] [--isa native,avx2] [--threads N] [--no-senko]
[--bench-dir data/bench] [--out benchmarks/results/pipeline.json]``

Inputs (cached under ``--bench-dir``; the same seed gives the same files):

* ``30s`` -- the pyannote sample call (real phone speech, 2 speakers, RTTM + STM);
* ``5min`` -- a generated 3-speaker conversation (5 % overlapped speech);
* ``30min`` -- a generated 4-speaker conversation (5 % overlapped speech).

Each (input, system) runs in a fresh Python process, so that its peak resident memory
(``ru_maxrss``, models included) is its own and every run starts cold: the process loads
the models (timed as ``load``), runs once, and reports the transcript, the pipeline's
stage timings and its memory.  Systems: the workbench pipeline (``--asr-model``, default
diarization) and senko's own ``Diarizer`` (CPU: silero VAD, CAM++, its clustering) as the
diarization baseline.  DER (collar 0, overlap scored) and WER come from
`workbench.research.evaluation.score` on the references.

``--variant NAME=JSON`` (repeatable) adds a workbench system named NAME whose options are
JSON over ``--config``, run beside the default in the same benchmark run (e.g.
``--variant once='{"embedding_passes": "once"}'``), so that variants are compared under
the same load. ``--isa native,avx2`` runs every system once per instruction-set setting,
side by side: ``avx2`` caps CTranslate2, ATen, oneDNN and MKL at AVX2 (`benchmarks.isa
.AVX2_CAPS`; ONNX Runtime, which runs CAM++, has no cap and stays AVX-512),
``avx2-cpuid`` also hides AVX-512 from CPUID so that every library takes its AVX2 path
(`benchmarks.isa`: what a CPU without AVX-512 gets), ``native`` leaves them alone. The
table names the CPU model and flags.

A system that cannot run on this machine -- senko whose native library was built for
another CPU (probed first), or whose run a signal killed -- gives a row marked unavailable
with the reason, and the benchmark goes on. A workbench run killed by a signal (the OOM
killer's SIGKILL, say) gives a row marked killed: its targets fail, as does a target whose
run is missing.

Targets: RTF <= 0.2 on the 5-minute input, peak memory <= 3 GB on the 30-minute input,
DER no worse than senko's on every input with a reference.  Prints a markdown table and
writes everything to ``--out``; ``--table FILE`` re-prints the table of an earlier run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks import (REPO_ROOT, RESULTS_DIR, finish, machine_info, machine_stamp, marks_partial,
                        read_results, recorded_options, write_results)
from benchmarks.isa import AVX2_CAPS, ISA_SETTINGS, IsaUnavailable, child_environment
from benchmarks.measure import MB, Timer, own_cpu_seconds, own_peak_rss_bytes

NAME = "pipeline"
INPUTS = ("30s", "5min", "30min")
GENERATED = {  # name -> generate_conversation arguments
    "5min": {"num_speakers": 3, "duration": 300.0, "overlap_ratio": 0.05, "seed": 5},
    "30min": {"num_speakers": 4, "duration": 1800.0, "overlap_ratio": 0.05, "seed": 30},
}
STAGE_COLUMNS = ("decode", "asr", "vad", "segmentation", "embeddings", "clustering", "merge")
TARGETS = {"rtf_5min": 0.2, "peak_rss_mb_30min": 3000, "der_vs_senko": "<="}


# --------------------------------------------------------------------------- inputs


def prepare_input(name: str, bench_dir: Path) -> Any:
    """The `CorpusItem` of benchmark input `name` (generated once into `bench_dir`)."""
    from workbench.research.datasets import sample_call

    if name == "30s":
        return sample_call()
    if name not in GENERATED:
        raise ValueError(f"unknown input {name!r} (known: {', '.join(INPUTS)})")
    return generated_conversation(bench_dir, f"bench_{name}", GENERATED[name])


def generated_conversation(bench_dir: Path, uri: str, spec: dict[str, Any]) -> Any:
    """The conversation `generate_conversation(**spec)` as `uri` in `bench_dir`: the files
    there if this generator made them from this spec, else generated anew."""
    from workbench.research.datasets import GENERATOR_VERSION, CorpusItem, generate_conversation

    paths = {ext: bench_dir / f"{uri}.{ext}" for ext in ("wav", "rttm", "stm", "uem", "json")}
    if all(p.is_file() for p in paths.values()):
        info = json.loads(paths["json"].read_text())
        if (info.get("generator_version") == GENERATOR_VERSION and info.get("seed") == spec["seed"]
                and info.get("num_speakers") == spec["num_speakers"]
                and abs(info.get("duration", 0) - spec["duration"]) < 1e-6
                and info.get("overlap_ratio_requested") == spec["overlap_ratio"]):
            return CorpusItem(uri, paths["wav"], paths["rttm"], paths["stm"], paths["uem"], info)
    t0 = time.perf_counter()
    item = generate_conversation(bench_dir, uri=uri, **spec)
    print(f"generated {uri} in {time.perf_counter() - t0:.1f} s: {item.audio}", flush=True)
    return item


# --------------------------------------------------------------------------- one run


def _worker(system: str, audio: str, out: str, asr_model: str, threads: Optional[int],
            data_dir: str, config: Optional[str] = None) -> int:
    """Run one system once in this (fresh) process and write its figures to `out`."""
    t0 = time.perf_counter()
    import psutil
    import torch

    if threads:
        torch.set_num_threads(threads)
    from workbench.research.experiments import BaselineUnavailable, SenkoBaseline
    from workbench.engine.pipeline import PipelineConfig, get_pipeline

    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    if system == "senko":
        # In this process (itself a sandbox, see run_one), so that its memory is measured.
        try:
            runner: Any = SenkoBaseline(isolate=False)
        except BaselineUnavailable as exc:
            Path(out).write_text(json.dumps({"unavailable": exc.reason}))
            return 0
    else:
        options = {"asr_model": asr_model, **json.loads(config or "{}")}
        runner = get_pipeline(PipelineConfig.from_dict(options), data_dir=data_dir)
    load = time.perf_counter() - t1
    rss_loaded = psutil.Process().memory_info().rss
    cpu0 = own_cpu_seconds()
    with Timer() as running:
        transcript = runner(audio, uri=Path(audio).stem)
    cpu = own_cpu_seconds() - cpu0
    run = running.seconds
    peak = own_peak_rss_bytes()
    Path(out).write_text(json.dumps({
        "transcript": transcript.serialize(),
        "import_seconds": round(t_import, 3),
        "load_seconds": round(load, 3),
        "run_seconds": round(run, 3),
        "run_cpu_seconds": round(cpu, 3),
        "rss_after_load_mb": round(rss_loaded / MB, 1),
        "peak_rss_mb": round(peak / MB, 1),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }))
    return 0


def _unavailable(system: str, reason: str) -> dict[str, Any]:
    return {"system": system, "status": "unavailable", "reason": reason}


def run_one(system: str, item: Any, args: argparse.Namespace, scratch: Path,
            config: Optional[str] = None, isa: str = "native",
            label: Optional[str] = None) -> dict[str, Any]:
    """One (input, system) measurement in a fresh subprocess, scored on the references.

    A system that cannot run here -- senko whose native library does not run on this CPU
    (probed first), or whose process a signal killed -- gives a row with
    ``status == "unavailable"`` and the ``reason``; a workbench run whose process a signal
    killed (SIGKILL of the OOM killer, SIGSEGV) gives ``status == "killed"``, a failure of
    its targets (:func:`verdicts`); other failures raise. The child's environment is
    this one without inherited ISA caps or CPUID mask, then `isa`'s settings."""
    from workbench.research.baselines import crash_reason, senko_availability
    from workbench.research.evaluation import score
    from workbench.research.isolation import ChildCrashed, signal_description
    from workbench.engine.transcript import Transcript

    if system == "senko":
        availability = senko_availability()
        if not availability:
            return _unavailable(system, availability.reason or "unknown reason")
    out = scratch / f"{item.uri}-{label or system}-{isa}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.pipeline", "--worker", system,
               str(item.audio), str(out), "--asr-model", args.asr_model,
               "--data-dir", str(args.data_dir), "--config", config or args.config or "{}"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    try:  # (a capped or masked calling shell must not make a "native" row capped)
        env = child_environment(isa, {**os.environ, "HF_HUB_OFFLINE": "1"})
    except IsaUnavailable as error:
        return _unavailable(system, str(error))
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode < 0:  # killed by a signal: SIGILL, SIGSEGV, the OOM killer's SIGKILL
        tail = "\n".join((done.stderr or "").strip().splitlines()[-5:])
        if system == "senko":
            reason = crash_reason("senko's diarizer process",
                                  ChildCrashed("", exitcode=done.returncode))
            return {**_unavailable(system, reason), "stderr_tail": tail}
        # ours: not "unavailable" (a row verdicts() would skip) but a failed run, whose
        # peak memory is unknown -- the OOM killer's SIGKILL is the memory target missed
        return {"system": system, "isa": isa, "status": "killed",
                "reason": f"the run's process died of {signal_description(-done.returncode)}",
                "duration": round(item.duration, 3), "peak_rss_mb": None,
                "process_wall_seconds": round(wall, 2), "stderr_tail": tail}
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join((done.stderr or "").strip().splitlines()[-15:])
        raise RuntimeError(f"{system} on {item.uri} failed (exit {done.returncode}):\n{tail}")
    report = json.loads(out.read_text())
    if "unavailable" in report:
        return _unavailable(system, report["unavailable"])
    transcript = Transcript.from_dict(report.pop("transcript"))
    duration = item.duration
    stages = {k: v for k, v in transcript.timings.items() if k != "total"}
    if system == "senko":  # fbank features are part of computing embeddings
        stages["embeddings"] = stages.get("embeddings", 0.0) + stages.pop("fbank", 0.0)
    row = score(item, transcript)
    return {
        "system": system,
        "isa": isa,
        "status": "ok",
        "duration": round(duration, 3),
        "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
        "stage_rtf": {k: round(v / duration, 5) for k, v in stages.items()},
        "total_seconds": round(transcript.timings["total"], 3),
        "rtf": round(transcript.timings["total"] / duration, 5),
        "cpu_rtf": round(report["run_cpu_seconds"] / duration, 5),
        "process_wall_seconds": round(wall, 2),
        **report,
        "der": _num(row["der"]), "missed": _num(row["missed"]),
        "false_alarm": _num(row["false_alarm"]), "confusion": _num(row["confusion"]),
        "speech": _num(row["speech"]), "jer": _num(row["jer"]), "wer": _num(row["wer"]),
        "cpwer": _num(row["cpwer"]), "ref_speakers": _num(row["ref_speakers"]),
        "hyp_speakers": _num(row["hyp_speakers"]),
    }


def _num(value: Any) -> Any:
    try:
        return None if value != value else round(float(value), 5)  # NaN -> None
    except (TypeError, ValueError):
        return value


# --------------------------------------------------------------------------- report


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


@marks_partial
def markdown_table(results: dict[str, Any]) -> str:
    """The runs as a markdown table: per-stage RTF, total RTF, memory, DER, WER."""
    head = ["input", "system", "ISA", "audio s", *STAGE_COLUMNS, "RTF", "CPU s / audio s", "load s",
            "peak RSS MB", "DER", "WER", "speakers (ref)"]
    machine = results.get("machine") or {}
    stamp = machine_stamp(machine) if machine else "unknown machine"
    load = machine.get("load_average_at_start")
    lines = [f"Machine: {stamp}" + (f"; load average at start {load}" if load else ""), "",
             "| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    notes = []
    for run in results.get("runs", []):
        if run.get("status") == "unavailable":
            cells = [run["input"], run["system"], run.get("isa", "native"), "unavailable"] \
                + ["–"] * (len(head) - 4)
            lines.append("| " + " | ".join(cells) + " |")
            notes.append(f"- {run['system']} on {run['input']} unavailable: {run['reason']}")
            continue
        if run.get("status") == "killed":
            cells = [run["input"], run["system"], run.get("isa", "native"),
                     _fmt(run.get("duration"), ".0f"), *["–"] * len(STAGE_COLUMNS),
                     "**killed**", "–", "–", "**killed**", "–", "–", "–"]
            lines.append("| " + " | ".join(cells) + " |")
            notes.append(f"- {run['system']} on {run['input']} killed: {run['reason']} "
                         "(RTF and peak memory unknown: its targets fail)")
            continue
        stages = run.get("stage_rtf", {})
        cells = [run["input"], run["system"], run.get("isa", "native"), f"{run['duration']:.0f}",
                 *[_fmt(stages.get(s), ".3f") for s in STAGE_COLUMNS],
                 f"**{run['rtf']:.3f}**", _fmt(run.get("cpu_rtf"), ".3f"),
                 f"{run['load_seconds']:.1f}",
                 f"{run['peak_rss_mb']:.0f}", _fmt(run.get("der"), ".1%"),
                 _fmt(run.get("wer"), ".1%"),
                 f"{_fmt(run.get('hyp_speakers'), '.0f')} ({_fmt(run.get('ref_speakers'), '.0f')})"]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += [""] + list(dict.fromkeys(notes))
    verdict = results.get("verdict") or {}
    if verdict:
        lines.append("")
        lines += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in verdict.items()]
    return "\n".join(lines)


def verdicts(runs: Sequence[dict[str, Any]],
             inputs: Optional[Sequence[str]] = None) -> dict[str, bool]:
    """PASS/FAIL per target, from the native workbench runs of `inputs` (default: the
    inputs of `runs`). A workbench run killed by a signal, or missing (an interrupted
    run), fails the targets of its input; DER is judged where senko's run has a DER."""
    out: dict[str, bool] = {}
    native = [r for r in runs if r.get("isa", "native") == "native"]
    by = {(r["input"], r["system"]): r for r in native if r.get("status") != "unavailable"}
    asked = list(dict.fromkeys(inputs if inputs is not None else [r["input"] for r in native]))

    def ours(name: str) -> Optional[dict[str, Any]]:
        """The workbench run of `name` if it finished, else None (killed or missing)."""
        run = by.get((name, "workbench"))
        return run if run is not None and run.get("status", "ok") == "ok" else None

    if "5min" in asked:
        run = ours("5min")
        out[f"RTF <= {TARGETS['rtf_5min']} on 5min"] = run is not None and \
            run["rtf"] <= TARGETS["rtf_5min"]
    if "30min" in asked:
        run = ours("30min")
        out[f"peak memory <= {TARGETS['peak_rss_mb_30min']} MB on 30min"] = \
            run is not None and run["peak_rss_mb"] <= TARGETS["peak_rss_mb_30min"]
    for name in asked:
        senko, run = by.get((name, "senko")), ours(name)
        if senko is None or senko.get("der") is None:
            continue  # no baseline to be judged against
        if run is None or run.get("der") is not None:
            out[f"DER <= senko's on {name}"] = run is not None and \
                run["der"] <= senko["der"] + 1e-9
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pipeline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", default=",".join(INPUTS),
                        help=f"comma-separated subset of {','.join(INPUTS)}")
    parser.add_argument("--asr-model", default="tiny.en")
    parser.add_argument("--config", default=None,
                        help="extra pipeline options as JSON, e.g. '{\"split_threshold\": null}'")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="a workbench variant run beside the default: options as JSON "
                             "over --config (repeatable)")
    parser.add_argument("--isa", default="native",
                        help=f"comma-separated instruction-set settings, each system run "
                             f"under each: {','.join(ISA_SETTINGS)}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: torch's own choice)")
    parser.add_argument("--no-senko", action="store_true", help="skip the senko baseline")
    parser.add_argument("--bench-dir", type=Path, default=REPO_ROOT / "data" / "bench")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data",
                        help="workbench data dir (assembled ASR models)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{NAME}.json")
    parser.add_argument("--table", type=Path, default=None,
                        help="re-print the table of an earlier results file and exit")
    parser.add_argument("--worker", nargs=3, metavar=("SYSTEM", "AUDIO", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv))
    names = [n.strip() for n in args.inputs.split(",") if n.strip()]
    unknown = [n for n in names if n not in INPUTS]
    if unknown or not names:
        parser.error(f"--inputs: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {','.join(INPUTS)}")
    args.input_names = names
    args.variants = {}
    for text in args.variant:
        name, sep, options = text.partition("=")
        name = name.strip()
        try:
            extra = json.loads(options) if sep else None
        except ValueError as exc:
            parser.error(f"--variant {text!r}: not JSON ({exc})")
        if not name or not isinstance(extra, dict) or name in ("workbench", "senko") \
                or name in args.variants:
            parser.error(f"--variant {text!r}: expected a new NAME=JSON object")
        args.variants[name] = json.dumps({**json.loads(args.config or "{}"), **extra})
    args.isas = [n.strip() for n in args.isa.split(",") if n.strip()]
    if not args.isas or any(n not in ISA_SETTINGS for n in args.isas):
        parser.error(f"--isa: choose from {','.join(ISA_SETTINGS)}")
    return args


def main(argv: Sequence[str] = ()) -> int:
    args = parse_args(argv)
    if args.worker:
        return _worker(*args.worker, args.asr_model, args.threads, str(args.data_dir),
                       args.config)
    if args.table:
        print(markdown_table(read_results(args.table, NAME)))
        return 0
    command = "python -m benchmarks pipeline " + " ".join(argv)
    systems = ["workbench", *args.variants] + ([] if args.no_senko else ["senko"])
    results: dict[str, Any] = {
        "benchmark": NAME,
        "command": command.strip(),
        "machine": machine_info(),
        "parameters": {"inputs": args.input_names, "asr_model": args.asr_model,
                       "config": json.loads(args.config or "{}"),
                       "variants": {k: json.loads(v) for k, v in args.variants.items()},
                       "isa": args.isas, "avx2_caps": AVX2_CAPS,
                       "threads": args.threads, "systems": systems,
                       "data_dir": str(args.data_dir), "bench_dir": str(args.bench_dir),
                       "generated_inputs": {k: v for k, v in GENERATED.items()
                                            if k in args.input_names},
                       "der": {"collar": 0.0, "skip_overlap": False}, "mb": MB},
        "options": recorded_options(args, leave_out=("table", "worker")),
        "targets": TARGETS,
        "caveats": [
            "Each run is a fresh process: peak RSS includes the models; RTF excludes loading "
            "(see load_seconds).",
            "RTF is wall time / audio time; cpu_rtf is the process's CPU time (all threads) / "
            "audio time, which contention from other jobs inflates less.",
            "Other jobs may share the CPUs: see the load averages in machine.",
            "senko's figures come from its own timing_stats; its 'embeddings' include fbank "
            "feature extraction.",
        ],
        "runs": [],
    }
    # every run's process drops the shell's caps and CPUID mask (run_one): its ISA column
    # says what it ran under, and the stamp must not claim this shell's caps for it
    results["machine"].update(isa_caps={}, cpuid_mask=None)
    args.bench_dir.mkdir(parents=True, exist_ok=True)
    scratch = args.bench_dir / "runs"
    scratch.mkdir(parents=True, exist_ok=True)
    status = 0
    try:
        for name in args.input_names:
            item = prepare_input(name, args.bench_dir)
            for system, isa in itertools.product(systems, args.isas):
                print(f"{name}: {system} ({isa}) ...", end=" ", flush=True)
                worker = "senko" if system == "senko" else "workbench"
                run = {"input": name, "uri": item.uri,
                       **run_one(worker, item, args, scratch, args.variants.get(system), isa,
                                 label=system),
                       "system": system, "isa": isa}
                results["runs"].append(run)
                if run.get("status") in ("unavailable", "killed"):
                    print(f"{run['status']}: {run['reason']}", flush=True)
                else:
                    print(f"RTF {run['rtf']:.3f}, peak {run['peak_rss_mb']:.0f} MB, "
                          f"DER {_fmt(run['der'], '.1%')}", flush=True)
                write_results(args.out, results)  # partial results survive an interruption
    except Exception as exc:  # noqa: BLE001 - reported in the results file
        status = 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    # targets are for the native runs: every input asked for has them (or fails them)
    results["verdict"] = verdicts(results["runs"],
                                  args.input_names if "native" in args.isas else [])
    finish(args.out, results, markdown_table(results))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
