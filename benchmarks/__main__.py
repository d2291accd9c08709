"""``python -m benchmarks [NAME [flags...]]``

* no arguments: run every registered benchmark with its defaults, in order, as one run
  (a run id in every results file), then write that run's tables into BENCHMARKS.md;
* ``NAME [flags]``: run one (``python -m benchmarks ingest --help`` for its flags);
* ``--list``: the registered names;
* ``--write-document``: (re)write BENCHMARKS.md's latest block from the newest run's
  results files (files of other runs or machines are left out, with a line saying so).

To add a benchmark, write ``benchmarks/<name>.py`` with ``main(argv: list[str]) -> int``
and register it in :data:`BENCHMARKS`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks import RUN_ID_ENV, machine_info, machine_stamp, new_run_id

DOCUMENT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- latest-run:start -->", "<!-- latest-run:end -->"

# name -> module (imported lazily, so one benchmark's imports never slow another down)
BENCHMARKS: dict[str, str] = {
    "ingest": "benchmarks.ingest",
    "load": "benchmarks.load",
    "pipeline": "benchmarks.pipeline",
    "embedding": "benchmarks.embedding",
    "accuracy": "benchmarks.accuracy",
    "diarization": "benchmarks.diarization",
    "speakers": "benchmarks.speakers",
    "live": "benchmarks.live",
    # live diarization across a dropped and resumed recording, speakers kept or not
    "live-resume": "benchmarks.live_resume",
    # the same as `live --server`: live results through the real server, in real time
    "live-server": "benchmarks.live_server",
}


def run(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(BENCHMARKS[name])
    return int(module.main(list(argv)) or 0)


def _machine_key(machine: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two machines' figures comparable: CPU model, cores, vector flags, ISA
    caps, CPUID mask."""
    return (machine.get("cpu_model"), machine.get("cpu_count"),
            tuple(machine.get("cpu_flags") or ()),
            tuple(sorted((machine.get("isa_caps") or {}).items())), machine.get("cpuid_mask"))


def results_stamp(machine: dict[str, Any]) -> str:
    """:func:`benchmarks.machine_stamp` of a results file's machine (its own ISA caps and
    CPUID mask, not those of the current environment)."""
    return machine_stamp(machine, machine.get("isa_caps") or {})


def _heading(results: dict[str, Any]) -> str:
    machine = results.get("machine") or {}
    parameters = json.dumps(results.get("parameters") or {}, sort_keys=True, default=str)
    return (f"Machine: {results_stamp(machine)}. Measured {machine.get('date', '?')}, commit "
            f"{machine.get('git_commit', '?')}. Command: "
            f"`{results.get('command') or 'python -m benchmarks'}`. "
            f"Parameters: `{parameters}`.")


def _load(path: Path) -> Optional[dict[str, Any]]:
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def tables(names: Sequence[str], run_id: Optional[str] = None,
           machine: Optional[dict[str, Any]] = None,
           results_dir: Optional[Path] = None,
           raised: Optional[dict[str, str]] = None) -> str:
    """Markdown tables of one run's results: ``results_dir/<name>.json`` for each name.

    Only files whose ``machine.run_id`` is ``run_id`` (default: the newest run id among
    the files) and whose machine matches ``machine`` (default: that of the run's first
    file) are shown, each headed by its machine stamp, date and parameters; every other
    file gets a line saying why it was left out, so a block never mixes runs or machines.
    A benchmark that raised in the run (`raised`: name -> error) is left out with its error.
    """
    results_dir = RESULTS if results_dir is None else results_dir
    raised = raised or {}
    loaded = {name: _load(results_dir / f"{name}.json") for name in names}
    if run_id is None:
        run_ids = [r["machine"].get("run_id") for r in loaded.values()
                   if r and isinstance(r.get("machine"), dict) and r["machine"].get("run_id")]
        run_id = max(run_ids) if run_ids else None
    if machine is None:
        machine = next((r["machine"] for r in loaded.values() if r and run_id is not None
                        and (r.get("machine") or {}).get("run_id") == run_id), None)
    written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if run_id is None or machine is None:
        head = (f"Written by `python -m benchmarks` on {written}: no results file here comes "
                "from a full `python -m benchmarks` run (none carries a run id), so there is "
                "nothing to show; the next `make bench` fills this block.")
    else:
        head = (f"Written by `python -m benchmarks` on {written}: run `{run_id}` on "
                f"{results_stamp(machine)}. Only that run's results on that machine are shown.")
    shown, left_out = [], []
    for name in names:
        results = loaded[name]
        path = f"`benchmarks/results/{name}.json`"
        if name in raised:
            left_out.append(f"- {name}: left out, the benchmark raised in this run "
                            f"({raised[name]}).")
            continue
        if results is None:
            left_out.append(f"- {name}: left out, {path} is missing or unreadable.")
            continue
        other = results.get("machine") or {}
        if run_id is None or other.get("run_id") != run_id:
            origin = (f"comes from another run (run id {other['run_id']}"
                      if other.get("run_id") else
                      "has no run id (one benchmark run alone, or older than run ids")
            left_out.append(f"- {name}: left out, {path} {origin}, measured "
                            f"{other.get('date', '?')} on {results_stamp(other)}).")
            continue
        if machine is not None and _machine_key(other) != _machine_key(machine):
            left_out.append(f"- {name}: left out, {path} was measured on another machine "
                            f"({results_stamp(other)}).")
            continue
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                run(name, ["--table", str(results_dir / f"{name}.json")])
        except Exception as exc:  # one broken table must not lose the others of a long run
            left_out.append(f"- {name}: left out, its table could not be rendered "
                            f"({type(exc).__name__}: {exc}).")
            continue
        shown.append(f"### {name}\n\n{_heading(results)}\n\n{buf.getvalue().strip()}")
    parts = [head]
    if left_out:
        parts.append("\n".join(left_out))
    return "\n\n".join(parts + shown)


def write_document(names: Sequence[str], document: Optional[Path] = None,
                   run_id: Optional[str] = None, machine: Optional[dict[str, Any]] = None,
                   results_dir: Optional[Path] = None,
                   raised: Optional[dict[str, str]] = None) -> None:
    """Put one run's tables (see :func:`tables`) into the document between the run markers."""
    document = DOCUMENT if document is None else document
    text = document.read_text() if document.exists() else "# Benchmarks\n"
    block = f"{START}\n{tables(names, run_id, machine, results_dir, raised)}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Latest `make bench` run\n\n" + block + "\n"
    document.write_text(text)
    print(f"tables written to {document}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nregistered:", ", ".join(BENCHMARKS))
        return 0
    if args and args[0] == "--write-document":
        write_document(list(BENCHMARKS))
        return 0
    if args and args[0] == "--list":
        print("\n".join(BENCHMARKS))
        return 0
    if not args:
        run_id = new_run_id()
        machine = machine_info()
        before = os.environ.get(RUN_ID_ENV)
        os.environ[RUN_ID_ENV] = run_id  # machine_info() puts it into every results file
        worst, failed = 0, {}
        try:
            for name in BENCHMARKS:
                print(f"=== benchmark: {name} (run {run_id})", flush=True)
                try:
                    worst = max(worst, run(name, []))
                except SystemExit as exc:  # (an argparse error, a sys.exit(n) inside)
                    if exc.code not in (None, 0):
                        failed[name] = f"exited with {exc.code!r}"
                except Exception as exc:  # noqa: BLE001 - one must not end the whole run
                    failed[name] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                    print(f"=== benchmark {name} raised {type(exc).__name__}: {exc}; "
                          "going on with the others", file=sys.stderr, flush=True)
        finally:
            if before is None:
                os.environ.pop(RUN_ID_ENV, None)
            else:
                os.environ[RUN_ID_ENV] = before
            # (also after an interrupt: the tables of the benchmarks that finished)
            write_document(list(BENCHMARKS), run_id=run_id, machine=machine, raised=failed)
        if failed:
            print("benchmarks that raised:\n" + "\n".join(f"- {k}: {v}" for k, v in
                                                       failed.items()), file=sys.stderr)
            return max(worst, 1)
        return worst
    name, rest = args[0], args[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; registered: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return run(name, rest)


if __name__ == "__main__":
    sys.exit(main())
