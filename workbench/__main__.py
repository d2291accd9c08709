"""Command line: ``python -m workbench transcribe AUDIO --out DIR [...]`` and friends."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence


class _Progress:
    """A tqdm bar per stage, fed by the pipeline's hook. Stages may progress at the same
    time (ASR and diarization run concurrently), so each keeps its own line."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, completed: float, total: float) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = self._tqdm(
                total=float(total) or 1.0, desc=f"{stage:>12}", unit="", leave=True,
                file=sys.stderr, position=len(self.bars),
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}")
        bar.total = float(total) or 1.0
        bar.n = float(completed)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _transcribe(args: argparse.Namespace) -> int:
    from .pipeline import PipelineConfig, get_pipeline

    options: dict[str, Any] = json.loads(args.config) if args.config else {}
    for key in ("asr_model", "language", "num_speakers", "min_speakers", "max_speakers",
                "clustering_threshold"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    if args.vad_filter:
        options["vad_filter"] = True
    if args.no_diarization:
        options["diarize"] = False
    try:
        config = PipelineConfig.from_dict(options)
    except (TypeError, ValueError) as exc:
        print(f"error: invalid configuration: {exc}", file=sys.stderr)
        return 2
    audio = Path(args.audio)
    if not audio.exists():
        print(f"error: no such file: {audio}", file=sys.stderr)
        return 2
    progress = _Progress()
    pipeline = get_pipeline(config, data_dir=args.data_dir)
    transcript = pipeline(audio, hook=progress)
    progress.close()
    paths = transcript.save(args.out)
    s = transcript.summary()
    print(f"{s['duration_seconds']:.1f} s, {s['speakers']} speaker(s), {s['word_count']} words "
          f"in {transcript.timings.get('total', 0):.1f} s -> {Path(args.out)}/transcript."
          f"{{{','.join(paths)}}}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m workbench")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe and diarize an audio file")
    t.add_argument("audio")
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--asr-model", help="tiny.en (default), base, small, a CTranslate2 folder...")
    t.add_argument("--language")
    t.add_argument("--num-speakers", type=int)
    t.add_argument("--min-speakers", type=int)
    t.add_argument("--max-speakers", type=int)
    t.add_argument("--clustering-threshold", type=float)
    t.add_argument("--vad-filter", action="store_true")
    t.add_argument("--no-diarization", action="store_true", help="ASR alone")
    t.add_argument("--config", help="JSON pipeline configuration (nested or flat options)")
    t.add_argument("--data-dir", default="data", help="where assembled models are kept")
    t.set_defaults(func=_transcribe)
    # build-corpus's flags belong to workbench.datasets (python -m workbench build-corpus -h)
    sub.add_parser("build-corpus", help="generate the standard evaluation corpus",
                   add_help=False)
    args, rest = p.parse_known_args(argv)
    if args.command == "build-corpus":
        from .datasets import main as datasets_main

        return int(datasets_main(["build-corpus", *rest]) or 0)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
