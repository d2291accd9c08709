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


def _run_config(args: argparse.Namespace) -> Any:
    """The `RunConfig` of ``transcribe``'s flags over ``--config``; ConfigError if bad."""
    from workbench.engine.config import FLAT_OPTIONS, ConfigError, RunConfig

    try:
        options = json.loads(args.config) if args.config else {}
    except ValueError as exc:
        raise ConfigError("config", f"--config is not JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ConfigError("config", "--config must be a JSON object")
    for key, (section, attr) in FLAT_OPTIONS.items():
        value = getattr(args, key)
        if value is not None:  # a flag wins over the same option in --config
            if isinstance(options.get(section), dict):
                options[section] = {k: v for k, v in options[section].items() if k != attr}
            options[key] = value
    if args.no_diarization:
        options["diarize"] = False
    return RunConfig.from_dict(options)


def cli_pipeline(config: Any, data_dir: Any) -> Any:
    """The command line's `Pipeline`: its models load lazily, on first use, so that
    decoding (and its progress line) comes first and a half that is off never loads
    (get_pipeline, for processes that run many times, loads them at once)."""
    from workbench.engine.pipeline import Pipeline

    return Pipeline(config, data_dir=data_dir)


def _transcribe(args: argparse.Namespace) -> int:
    from workbench.engine.config import ConfigError

    try:  # before the pipeline (torch, models) is imported
        config = _run_config(args)
    except ConfigError as exc:
        print(f"error: invalid configuration: {exc}", file=sys.stderr)
        return 2
    audio, out = Path(args.audio), Path(args.out)
    if not audio.is_file():
        print(f"error: {'not a file' if audio.exists() else 'no such file'}: {audio}",
              file=sys.stderr)
        return 2
    try:  # where the results go is checked before any work
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        print(f"error: cannot write the results to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    from workbench.engine.audio import AudioDecodeError, load_audio  # torch-free

    if audio.stat().st_size == 0:  # (the library reads it as no audio at all)
        print(f"error: cannot decode {audio}: the file is empty", file=sys.stderr)
        return 2
    progress = _Progress()
    # decode before the pipeline's libraries (torch, pyannote, CTranslate2) are imported,
    # so that the first progress line comes within a second or so
    progress("decode", 0, 1)
    try:
        samples = load_audio(audio)
    except (AudioDecodeError, OSError) as exc:
        progress.close()
        reason = ("not a WAV, WebM, Ogg, MP4/AAC, MP3 or FLAC file"
                  if "unrecognised container" in str(exc) else str(exc))
        print(f"error: cannot decode {audio}: {reason}", file=sys.stderr)
        return 2
    progress("decode", 1, 1)
    pipeline = cli_pipeline(config, args.data_dir)
    try:  # the models, before any work: a model, language or compute type that cannot
        # be had fails here, not after diarization (which runs beside the ASR) has ended
        if config.transcribe:
            _ = pipeline.transcriber
        if config.diarize:
            _ = pipeline.diarizer
    except (ValueError, LookupError, OSError, RuntimeError) as exc:  # (ModelError too)
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    transcript = pipeline(samples, uri=audio.stem, hook=lambda stage, done, total: (
        None if stage == "decode" else progress(stage, done, total)))  # (decoded above)
    progress.close()
    try:
        paths = transcript.save(args.out)
    except OSError as exc:  # (checked before the work, but e.g. a folder of a result's name)
        print(f"error: cannot write the results to {out}: {exc}", file=sys.stderr)
        return 1
    s = transcript.summary()
    print(f"{s['duration_seconds']:.1f} s, {s['speakers']} speaker(s), {s['word_count']} words "
          f"in {transcript.timings.get('total', 0):.1f} s -> {Path(args.out)}/transcript."
          f"{{{','.join(paths)}}}")
    return 0


_FLAG_HELP = {
    "asr_model": "tiny.en (default), base, small, a CTranslate2 folder...",
    "language": "language code (default: detected)",
    "vad_filter": "skip non-speech with Silero VAD before ASR (default: on)",
    "num_speakers": "exact number of speakers (default: estimated)",
    "pipeline_path": "a local pyannote pipeline (folder with config.yaml) for diarization",
}


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per flat run option of workbench.engine.config (``--num-speakers N``...);
    booleans get ``--x/--no-x``. Unset flags leave the configuration's default."""
    from workbench.engine.config import FLAT_OPTIONS, flat_option_default, flat_option_type

    for name in FLAT_OPTIONS:
        kind = flat_option_type(name)
        flag = "--" + name.replace("_", "-")
        help_text = _FLAG_HELP.get(name) or f"default: {flat_option_default(name)}"
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (``transcribe``'s option flags come from workbench.engine.config)."""
    p = argparse.ArgumentParser(prog="python -m workbench")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe and diarize an audio file")
    t.add_argument("audio")
    t.add_argument("--out", required=True, help="output directory")
    _add_option_flags(t)
    t.add_argument("--no-diarization", action="store_true", help="ASR alone")
    t.add_argument("--config", help="JSON pipeline configuration (nested or flat options)")
    t.add_argument("--data-dir", default="data", help="where assembled models are kept")
    t.set_defaults(func=_transcribe)
    # build-corpus's flags belong to workbench.research.datasets (python -m workbench build-corpus -h)
    sub.add_parser("build-corpus", help="generate the standard evaluation corpus",
                   add_help=False)
    return p


def transcribe_config(argv: Sequence[str]) -> Any:
    """The `RunConfig` that ``python -m workbench transcribe ARGV`` would run with."""
    return _run_config(build_parser().parse_args(["transcribe", *argv]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = build_parser()
    args, rest = p.parse_known_args(argv)
    if args.command == "build-corpus":
        from workbench.research.datasets.cli import main as datasets_main

        return int(datasets_main(["build-corpus", *rest]) or 0)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
