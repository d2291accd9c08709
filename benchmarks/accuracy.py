"""Accuracy benchmark: DER, JER, WER, cpWER and real-time factor of several systems on a
generated corpus.

``python -m benchmarks accuracy [--n 20] [--minutes 1 5] [--seed 0]
[--systems default,threshold+0.1,oracle,asr-only,senko] [--asr-model tiny.en]
[--executor processes|inline|tcp://host:8786] [--workers N] [--threads 1]
[--corpus data/corpus] [--cache data/experiments/accuracy]
[--out benchmarks/results/accuracy.json]``

The corpus is `workbench.research.datasets.build_corpus` (2-5 speakers, 0 or 10 % overlapped
speech, ``--minutes`` long each), built once into ``--corpus`` and reused while its
parameters match (a corpus of more items with the same seed serves its first ``--n``).
Systems (``--systems``, comma-separated):

* ``default`` -- the workbench pipeline with its default settings (``--asr-model``);
* ``threshold-0.1`` / ``threshold+0.1`` -- the clustering threshold moved by 0.1;
* ``oracle`` -- the default pipeline told each recording's true speaker count;
* ``asr-only`` -- transcription without diarization (WER only; cpWER as one speaker);
* ``senko`` -- senko's own ``Diarizer`` on the CPU (diarization only); where its native
  code cannot run (built for another CPU), its rows say unavailable with the reason.

Cells run through `workbench.research.experiments.run_grid` and are cached under ``--cache``, so
a second run (or an interrupted one) only computes what is missing.  Prints the
aggregate and per-recording markdown tables and writes ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from benchmarks import (REPO_ROOT, machine_info, marks_partial, output_arguments, reprinted,
                        write_results)

NAME = "accuracy"
SYSTEM_NAMES = ("default", "threshold-0.1", "threshold+0.1", "oracle", "asr-only", "senko")
DEFAULT_SYSTEMS = ("default", "threshold+0.1", "oracle", "asr-only", "senko")
SUMMARY_COLUMNS = ("duration", "der", "missed", "false_alarm", "confusion", "jer", "wer",
                   "cpwer", "speaker_count_error", "rtf")
ROW_COLUMNS = ("duration", "der", "jer", "wer", "cpwer", "ref_speakers", "hyp_speakers", "rtf")


def make_systems(names: Sequence[str], asr_model: str) -> list[Any]:
    """The named systems (see the module docstring) on ASR model `asr_model`."""
    from dataclasses import replace

    from workbench.research.experiments import System
    from workbench.engine.pipeline import PipelineConfig

    base = PipelineConfig.from_dict({"asr_model": asr_model})
    threshold = base.diarization.clustering_threshold
    systems = []
    for name in names:
        if name == "default":
            systems.append(System("default", base))
        elif name in ("threshold-0.1", "threshold+0.1"):
            value = round(threshold + (0.1 if name.endswith("+0.1") else -0.1), 4)
            config = replace(base, diarization=replace(base.diarization,
                                                       clustering_threshold=value))
            systems.append(System(f"threshold {value:g}", config))
        elif name == "oracle":
            systems.append(System.oracle("oracle speakers", base))
        elif name == "asr-only":
            systems.append(System.asr_only("asr-only", base))
        elif name == "senko":
            systems.append(System.senko("senko"))
        else:
            raise ValueError(f"unknown system {name!r} (known: {', '.join(SYSTEM_NAMES)})")
    return systems


def corpus(args: argparse.Namespace) -> list[Any]:
    """The first ``--n`` items of the corpus in ``--corpus``, built when missing or when
    its parameters differ."""
    from workbench.research.datasets import ensure_corpus

    t0 = time.perf_counter()
    items = ensure_corpus(args.corpus, n=args.n, minutes=tuple(args.minutes), seed=args.seed)
    print(f"corpus: {len(items)} item(s) of {args.corpus} ready in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return items


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks accuracy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="corpus size (recordings)")
    parser.add_argument("--minutes", type=float, nargs=2, default=(1.0, 5.0),
                        metavar=("MIN", "MAX"), help="length range of a recording")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEM_NAMES)}")
    parser.add_argument("--asr-model", default="tiny.en")
    parser.add_argument("--executor", default="processes",
                        help="'processes' (local worker processes), 'inline' or a Dask "
                             "scheduler address (tcp://host:8786)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes (default: cores / threads)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--corpus", type=Path, default=REPO_ROOT / "data" / "corpus")
    parser.add_argument("--cache", type=Path,
                        default=REPO_ROOT / "data" / "experiments" / "accuracy")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data")
    parser.add_argument("--no-progress", action="store_true")
    output_arguments(parser, NAME)
    args = parser.parse_args(list(argv))
    if args.n < 1:
        parser.error("--n must be at least 1")
    for flag, count in (("--workers", args.workers), ("--threads", args.threads)):
        if count is not None and count < 1:
            parser.error(f"{flag} must be at least 1")
    if not 0 < args.minutes[0] <= args.minutes[1]:
        parser.error("--minutes: 0 < MIN <= MAX")
    args.system_names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.system_names if s not in SYSTEM_NAMES]
    if unknown or not args.system_names:
        parser.error(f"--systems: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {','.join(SYSTEM_NAMES)}")
    return args


def computed_cells(rows: Any) -> int:
    """How many cells of a table's rows (`ComparisonTable.recordings`) this run computed:
    not read from the cache, nor of a system that cannot run here (it computed nothing,
    and was counted)."""
    return int(((~rows["cached"].astype(bool)) & (rows["status"] == "ok")).sum())


@marks_partial
def reprint(results: dict[str, Any]) -> str:
    """The tables a results file saved (headed by a warning when its run stopped early)."""
    return "\n\n".join(results.get("markdown", {}).get(part, "")
                       for part in ("summary", "recordings"))


def main(argv: Sequence[str] = ()) -> int:
    args = parse_args(argv)
    if reprinted(args, reprint, NAME):
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from workbench.research.experiments import run_grid

    results: dict[str, Any] = {
        "benchmark": NAME,
        "command": ("python -m benchmarks accuracy " + " ".join(argv)).strip(),
        "machine": machine_info(),
        "parameters": {"n": args.n, "minutes": list(args.minutes), "seed": args.seed,
                       "systems": args.system_names, "asr_model": args.asr_model,
                       "executor": args.executor, "workers": args.workers,
                       "threads_per_worker": args.threads, "collar": 0.0,
                       "skip_overlap": False},
        "notes": [
            "Aggregates pool over recordings: DER = error seconds / reference speech seconds, "
            "WER and cpWER = errors / reference words, RTF = processing seconds / audio "
            "seconds, JER = mean over all (recording, reference speaker) pairs.",
            "RTF is measured per cell inside worker processes that share the CPUs (and with "
            "other jobs); cached cells keep the timings of the run that computed them.",
        ],
    }
    status = 0
    try:
        items = corpus(args)
        results["corpus"] = {
            "path": str(args.corpus),
            "items": [{"uri": i.uri, "duration": round(i.duration, 2),
                       **{k: i.info.get(k) for k in ("num_speakers", "overlap_ratio_achieved")}}
                      for i in items]}
        systems = make_systems(args.system_names, args.asr_model)
        results["systems"] = [s.serialize() for s in systems]
        executor = None if args.executor == "processes" else args.executor
        t0 = time.perf_counter()
        table = run_grid(systems, items, cache_dir=args.cache, executor=executor,
                         max_workers=args.workers, threads_per_worker=args.threads,
                         data_dir=args.data_dir, progress=not args.no_progress)
        results["wall_seconds"] = round(time.perf_counter() - t0, 1)
        results["cells_computed"] = computed_cells(table.recordings)
        results["unavailable"] = table.unavailable  # system -> reason
        results["summary"] = [r for r in table.records() if r["uri"] == "ALL"]
        results["rows"] = [r for r in table.records() if r["uri"] != "ALL"]
        results["markdown"] = {
            "summary": table.to_markdown(SUMMARY_COLUMNS, aggregates_only=True),
            "recordings": table.to_markdown(ROW_COLUMNS),
        }
    except Exception as exc:  # noqa: BLE001 - reported in the results file
        status = 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results(args.out, results)
    if "markdown" in results:
        print("\nAggregates (pooled over recordings; best in bold):\n")
        print(results["markdown"]["summary"])
        print("\nPer recording:\n")
        print(results["markdown"]["recordings"])
        print(f"\n{results['cells_computed']} cell(s) computed in {results['wall_seconds']} s; "
              f"written to {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
