"""``python -m benchmarks [NAME [flags...]]``

* no arguments: run every registered benchmark with its defaults, in order;
* ``NAME [flags]``: run one (``python -m benchmarks ingest --help`` for its flags);
* ``--list``: the registered names.

To add a benchmark, write ``benchmarks/<name>.py`` with ``main(argv: list[str]) -> int``
and register it in :data:`BENCHMARKS`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# name -> module (imported lazily, so one benchmark's imports never slow another down)
BENCHMARKS: dict[str, str] = {
    "ingest": "benchmarks.ingest",
    "load": "benchmarks.load",
    "pipeline": "benchmarks.pipeline",
    "accuracy": "benchmarks.accuracy",
}


def run(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(BENCHMARKS[name])
    return int(module.main(list(argv)) or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nregistered:", ", ".join(BENCHMARKS))
        return 0
    if args and args[0] == "--list":
        print("\n".join(BENCHMARKS))
        return 0
    if not args:
        worst = 0
        for name in BENCHMARKS:
            print(f"=== benchmark: {name}", flush=True)
            worst = max(worst, run(name, []))
        return worst
    name, rest = args[0], args[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; registered: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return run(name, rest)


if __name__ == "__main__":
    sys.exit(main())
