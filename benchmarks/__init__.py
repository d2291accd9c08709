"""Benchmarks: scripts that measure the server and print figures (not tests).

Run ``python -m benchmarks`` for every registered benchmark, or
``python -m benchmarks NAME [flags]`` for one (see :mod:`benchmarks.__main__`).
Each benchmark module has ``main(argv) -> int``; results go to
``benchmarks/results/<name>.json`` with :func:`machine_info` and the parameters.
What they measure with (percentiles, CPU time, memory samplers, peak RSS) is in
:mod:`benchmarks.measure`; clients talk to the server through :mod:`workbench.client`
unless a figure needs a raw socket.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

if str(REPO_ROOT) not in sys.path:  # `server` and `workbench` from any working directory
    sys.path.insert(0, str(REPO_ROOT))

# the machine facts every results file and every cached cell records (one definition)
from workbench.engine.provenance import (  # noqa: E402
    ISA_CAPS, cpu_flag_set, cpu_model, cpuid_mask)


# The vector extensions that decide which kernels CTranslate2, oneDNN and MKL pick: tables
# from machines that differ here must never be mixed (a 2-core AVX2 EPYC ran the 5-minute
# pipeline 3.6x slower than an AVX-512 one).
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                "avx_vnni", "amx_tile")


def cpu_flags() -> list[str]:
    """The CPU's vector extensions among :data:`VECTOR_FLAGS` (from /proc/cpuinfo)."""
    have = cpu_flag_set()
    return [f for f in VECTOR_FLAGS if f in have]


_THIS_MACHINE: Any = object()  # machine_stamp()'s default: the machine running it


def machine_stamp(info: dict[str, Any] | None = _THIS_MACHINE,
                  caps: dict[str, str] | None = None) -> str:
    """One line naming the CPU, its vector flags and core count, for every table, with
    the ISA caps (`caps`, default: those `info` recorded when it was measured: a table
    printed later from a results file must not take the caps of the shell that prints
    it) and CPUID mask. Without `info`, this machine; with an empty or missing one (a
    results file that recorded no machine), ``unknown machine`` -- never the machine of
    the shell that prints the table."""
    if info is _THIS_MACHINE:
        info = machine_info()
    if not info:
        return "unknown machine"
    flags = " ".join(info.get("cpu_flags") or []) or "no flags read"
    if caps is None:  # (a file from before isa_caps: none known, not this shell's)
        caps = dict(info.get("isa_caps") or {})
    capped = (" (capped: " + " ".join(f"{k}={v}" for k, v in sorted(caps.items())) + ")"
              if caps else "")
    if info.get("cpuid_mask"):
        capped += f" (CPUID masked: {info['cpuid_mask']})"
    return (f"{info.get('cpu_model', 'unknown CPU')}, {info.get('cpu_count')} cores, "
            f"flags: {flags}{capped}")


def _git_commit() -> str | None:
    """The checked-out commit (read-only ``git rev-parse``); None outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=5)
        # (results files are tracked: one benchmark's results made every later one in a
        # `make bench` run look "+dirty")
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!benchmarks/results"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# A full `python -m benchmarks` run sets this variable to its run id for every benchmark it
# runs; `machine_info()` records it, and the document takes only one run's results.
RUN_ID_ENV = "BENCHMARKS_RUN_ID"


def new_run_id() -> str:
    """A run id: the UTC start time, so that ids sort by age (``20261202T171500Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def machine_info() -> dict[str, Any]:
    """Where and when the figures were measured."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "isa_caps": {k: os.environ[k] for k in ISA_CAPS if k in os.environ},
        # benchmarks.isa's preloaded library: AVX-512 hidden from CPUID (--isa avx2-cpuid)
        "cpuid_mask": cpuid_mask(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        # Set by a full `python -m benchmarks` run: which results belong together.
        "run_id": os.environ.get(RUN_ID_ENV),
    }
    try:
        import psutil

        info["cpu_count_physical"] = psutil.cpu_count(logical=False)
        info["memory_total_mb"] = round(psutil.virtual_memory().total / 1e6)
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except (ImportError, OSError):
        pass
    try:
        import aiohttp

        info["aiohttp"] = aiohttp.__version__
    except ImportError:
        pass
    return info


def write_results(path: str | os.PathLike[str], results: dict[str, Any]) -> Path:
    """Write ``results`` as indented JSON (directories created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def finish(path: str | os.PathLike[str], results: dict[str, Any], table: str) -> None:
    """End a run: note the load average, write `results` to `path`, print `table`."""
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results(path, results)
    print()
    print(table)
    print(f"\nwritten to {path}")


def output_arguments(parser: Any, name: str) -> None:
    """``--out`` (default ``benchmarks/results/<name>.json``) and ``--table FILE``."""
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json")
    parser.add_argument("--table", type=Path,
                        help="re-print the table of an earlier results file and exit")


def recorded_options(args: Any, leave_out: tuple[str, ...] = ("table",)) -> dict[str, Any]:
    """Every option of a run as parsed (``vars(args)``, defaults and derived values
    included; paths as text), for its results file: what was run, not only what was typed."""
    def plain(value: Any) -> Any:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return repr(value)

    return {k: plain(v) for k, v in sorted(vars(args).items()) if k not in leave_out}


def reprinted(args: Any, table: Callable[[dict[str, Any]], str], name: str) -> bool:
    """With ``--table FILE``: print that results file's `table` and say so."""
    if not getattr(args, "table", None):
        return False
    print(table(read_results(args.table, name)))
    return True


def read_results(path: Path, name: str) -> dict[str, Any]:
    """Benchmark `name`'s results file at `path` (``--table``); SystemExit saying why when
    it cannot be read, is no JSON, or is no results file of `name` (a table of another
    benchmark's file failed on a missing key, or printed nothing)."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SystemExit(f"--table {path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise SystemExit(f"--table {path}: not a results file (no JSON: {exc})") from None
    made_by = results.get("benchmark") if isinstance(results, dict) else None
    if made_by != name:
        raise SystemExit(f"--table {path}: not a results file of `python -m benchmarks {name}` "
                         + (f"(it is one of `{made_by}`)" if isinstance(made_by, str)
                            else "(it names no benchmark)"))
    return results


def server_env(streams: int = 1) -> dict[str, str]:
    """Limits switched off through WORKBENCH_* variables (ignored by servers without them).

    Every benchmark client comes from 127.0.0.1, so the per-address connection limit
    would refuse the real-time clients: it is switched off; the server-wide cap on open
    recordings is raised only when ``streams`` exceeds its default (100)."""
    env = {"WORKBENCH_MAX_CONNECTIONS_PER_CLIENT": "0"}
    if streams > 100:
        env["WORKBENCH_MAX_RECORDINGS"] = str(streams)
    return env


def server_source_digest() -> str:
    """SHA-1 of server/*.py: which server code was measured (the tree may be uncommitted)."""
    import hashlib

    h = hashlib.sha1()
    for path in sorted((REPO_ROOT / "server").glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


__all__ = ["REPO_ROOT", "RESULTS_DIR", "RUN_ID_ENV", "cpu_flags", "finish", "machine_info",
           "machine_stamp", "marks_partial", "new_run_id", "output_arguments",
           "read_results", "recorded_options", "reprinted", "server_env",
           "server_source_digest", "write_results"]


def marks_partial(table: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    """A results file's table, headed by a warning when the run stopped early (its
    ``error``): totals and group rows then pool only what finished, and looked complete."""
    @functools.wraps(table)
    def wrapped(results: dict[str, Any]) -> str:
        text = table(results)
        if results.get("error"):
            text = (f"**Incomplete run** (stopped by {results['error']}): the figures below "
                    "cover only the inputs that finished.\n\n" + text)
        return text

    return wrapped
