"""Command line of the datasets: ``python -m workbench build-corpus`` and
``python -m workbench.research.datasets build-corpus|generate|sample``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence


from workbench.research.datasets.voices import VOICES
from workbench.research.datasets.synthesis import generate_conversation
from workbench.research.datasets.corpus import build_corpus, sample_call


# =========================================================================== command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m workbench.research.datasets {build-corpus,generate,sample} ...``"""
    parser = argparse.ArgumentParser(prog="python -m workbench.research.datasets",
                                     description="Synthetic conversations and corpora.")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build-corpus", help="generate N conversations and a manifest.json")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--n", type=int, default=20)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--speakers", type=int, nargs=2, default=(2, 5), metavar=("MIN", "MAX"))
    b.add_argument("--minutes", type=float, nargs=2, default=(1, 5), metavar=("MIN", "MAX"))
    b.add_argument("--overlap", type=float, nargs="+", default=(0.0, 0.1),
                   help="overlap ratios to choose from")
    b.add_argument("--noise-db", type=float, default=None, help="SNR of added noise (dB)")
    b.add_argument("--voices", nargs="+", default=None,
                   help="voice pool: synthetic names or real voices such as ami:FEE083")

    g = sub.add_parser("generate", help="generate one conversation")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--speakers", type=int, default=2)
    g.add_argument("--duration", type=float, default=60.0)
    g.add_argument("--overlap", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--noise-db", type=float, default=None)
    g.add_argument("--voices", nargs="+", default=None,
                   help=f"voice pool ({', '.join(v.name for v in VOICES)}, or real "
                        "voices such as ami:FEE083)")
    g.add_argument("--uri", default=None)

    sub.add_parser("sample", help="print the paths of the pyannote sample call")

    args = parser.parse_args(argv)
    try:
        if args.command == "build-corpus":
            t0 = time.perf_counter()

            def progress(stage: str, completed: float, total: float) -> None:
                print(f"\r{stage}: {completed}/{total}", end="", file=sys.stderr, flush=True)

            manifest = build_corpus(args.out, n=args.n, speakers=tuple(args.speakers),
                                    minutes=tuple(args.minutes), overlap_choices=args.overlap,
                                    seed=args.seed, noise_db=args.noise_db, voices=args.voices,
                                    hook=progress)
            print(file=sys.stderr)
            print(f"{manifest} ({args.n} conversations, {time.perf_counter() - t0:.1f} s)")
        elif args.command == "generate":
            item = generate_conversation(
                args.out, num_speakers=args.speakers, duration=args.duration,
                overlap_ratio=args.overlap, seed=args.seed, noise_db=args.noise_db,
                voices=args.voices, uri=args.uri)
            print(json.dumps(item.serialize(), indent=2))
        else:
            print(json.dumps(sample_call().serialize(), indent=2))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

