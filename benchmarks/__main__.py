"""``python -m benchmarks [NAME [flags...]]``

* no arguments: run every registered benchmark with its defaults, in order;
* ``NAME [flags]``: run one (``python -m benchmarks ingest --help`` for its flags);
* ``--list``: the registered names;
* ``--write-document``: (re)write the latest tables into BENCHMARKS.md (a full run does).

To add a benchmark, write ``benchmarks/<name>.py`` with ``main(argv: list[str]) -> int``
and register it in :data:`BENCHMARKS`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

DOCUMENT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- latest-run:start -->", "<!-- latest-run:end -->"

# name -> module (imported lazily, so one benchmark's imports never slow another down)
BENCHMARKS: dict[str, str] = {
    "ingest": "benchmarks.ingest",
    "load": "benchmarks.load",
    "pipeline": "benchmarks.pipeline",
    "accuracy": "benchmarks.accuracy",
    "diarization": "benchmarks.diarization",
}


def run(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(BENCHMARKS[name])
    return int(module.main(list(argv)) or 0)


def tables(names: Sequence[str]) -> str:
    """Markdown tables of the latest results file of each benchmark in ``names``."""
    parts = [f"Written by `python -m benchmarks` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."]
    for name in names:
        results = RESULTS / f"{name}.json"
        if not results.exists():
            continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            run(name, ["--table", str(results)])
        parts.append(f"### {name}\n\n{buf.getvalue().strip()}")
    return "\n\n".join(parts)


def write_document(names: Sequence[str], document: Path = DOCUMENT) -> None:
    """Put the latest tables into the benchmarks document between the run markers."""
    text = document.read_text() if document.exists() else "# Benchmarks\n"
    block = f"{START}\n{tables(names)}\n{END}"
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
        worst = 0
        for name in BENCHMARKS:
            print(f"=== benchmark: {name}", flush=True)
            worst = max(worst, run(name, []))
        write_document(list(BENCHMARKS))
        return worst
    name, rest = args[0], args[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; registered: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return run(name, rest)


if __name__ == "__main__":
    sys.exit(main())
