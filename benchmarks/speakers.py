"""Speaker-embedding benchmark: how well each model tells the people of one real meeting
apart from a short piece of their speech (issue #14).

    python -m benchmarks speakers [--seconds 0.5,1,2] [--models cam++,resemblyzer]
                                  [--subsets train,development] [--out FILE] [--table FILE]

Input: the AMI excerpts (`workbench.research.datasets.ami`; the test subset is refused,
it is kept for final figures). Each reference speaker's solo speech (no other speaker
talking) is cut into back-to-back pieces of each length; every piece is embedded by each
model. Per model and length, over the pairs of pieces of one file: the median cosine
distance of same-speaker and of different-speaker pairs and the **equal error rate**
(the threshold at which as many same-speaker pairs fall above it as different-speaker
pairs below it). A diarizer's clustering decides exactly this within each file, so the
figure bounds how short a speaker's speech can be and still be counted.

Models: ``cam++`` (the diarizer's, weights bundled with the workbench) and
``resemblyzer`` (Resemblyzer 0.1.4's GE2E d-vector, Apache-2.0: the only speaker model
of the ones issue #14 names whose weights are on PyPI; its wheel is fetched with ``pip
download`` into ``data/models/`` on first use and only ``pretrained.pt`` is read, its
network rebuilt here: a 3-layer LSTM over 40 mel bands, the mean of 1.6 s partials
every 0.77 s, as its ``embed_utterance``).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from benchmarks import REPO_ROOT, finish, machine_info, machine_stamp, output_arguments, reprinted

NAME = "speakers"
MODELS = ("cam++", "resemblyzer")
SUBSETS = ("train", "development")
RESEMBLYZER = {"package": "resemblyzer", "version": "0.1.4",
               "wheel": "Resemblyzer-0.1.4-py3-none-any.whl",
               "wheel_sha256": "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f",
               "weights": "resemblyzer/pretrained.pt",
               "weights_sha256": "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
               "licence": "Apache-2.0"}
SAMPLE_RATE = 16000


def equal_error_rate(same: Sequence[float], different: Sequence[float]) -> tuple[float, float]:
    """``(rate, threshold)``: the distance threshold where the share of same-speaker
    distances above it is closest to the share of different-speaker distances at or below
    it, and the mean of the two shares there."""
    same_d, diff_d = np.sort(np.asarray(same, float)), np.sort(np.asarray(different, float))
    if not len(same_d) or not len(diff_d):
        raise ValueError("need same-speaker and different-speaker pairs")
    thresholds = np.unique(np.concatenate([same_d, diff_d]))
    rejected = 1.0 - np.searchsorted(same_d, thresholds, side="right") / len(same_d)
    accepted = np.searchsorted(diff_d, thresholds, side="right") / len(diff_d)
    best = int(np.argmin(np.abs(rejected - accepted)))
    return float((rejected[best] + accepted[best]) / 2), float(thresholds[best])


def solo_runs(item: Any) -> dict[str, list[tuple[float, float]]]:
    """Per reference speaker of `item`, the ``(start, end)`` stretches (s, inside the UEM)
    where that speaker talks and nobody else does."""
    reference, uem = item.reference(), item.annotated()
    runs = {}
    for label in sorted(reference.labels()):
        others = reference.subset([x for x in reference.labels() if x != label])
        solo = (reference.label_timeline(label).support()
                .extrude(others.get_timeline().support()).crop(uem))
        runs[label] = [(round(s.start, 3), round(s.end, 3)) for s in solo]
    return runs


def solo_pieces(item: Any, seconds: float, audio: Optional[np.ndarray] = None
                ) -> list[tuple[str, float, np.ndarray]]:
    """``(speaker, start, samples)`` of back-to-back `seconds`-long pieces of each reference
    speaker's solo speech in `item` (`solo_runs`)."""
    audio = item.load_audio() if audio is None else audio
    width = int(round(seconds * SAMPLE_RATE))
    pieces = []
    for label, runs in solo_runs(item).items():
        for start, end in runs:
            for first in np.arange(start, end - seconds + 1e-6, seconds):
                begin = int(round(first * SAMPLE_RATE))
                pieces.append((label, round(float(first), 3), audio[begin:begin + width]))
    return pieces


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resemblyzer_weights(data_dir: Path = REPO_ROOT / "data") -> Path:
    """Resemblyzer's ``pretrained.pt``, from its PyPI wheel (downloaded on first use)."""
    folder = data_dir / "models" / f"resemblyzer-{RESEMBLYZER['version']}"
    weights = folder / "pretrained.pt"
    if weights.is_file() and _sha256(weights) == RESEMBLYZER["weights_sha256"]:
        return weights
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--dest", str(folder), f"{RESEMBLYZER['package']}=={RESEMBLYZER['version']}"]
    proc = subprocess.run(command, capture_output=True, text=True)
    wheel = folder / RESEMBLYZER["wheel"]
    if proc.returncode != 0 or not wheel.is_file():
        raise RuntimeError(f"could not download Resemblyzer ({' '.join(command)}): "
                           f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    if _sha256(wheel) != RESEMBLYZER["wheel_sha256"]:
        raise RuntimeError(f"{wheel} does not have the expected SHA-256")
    with zipfile.ZipFile(wheel) as archive:
        weights.write_bytes(archive.read(RESEMBLYZER["weights"]))
    if _sha256(weights) != RESEMBLYZER["weights_sha256"]:
        raise RuntimeError(f"{weights} does not have the expected SHA-256")
    (folder / "LICENCE.txt").write_text(
        f"Resemblyzer {RESEMBLYZER['version']} (PyPI), {RESEMBLYZER['licence']}\n")
    return weights


def _resemblyzer() -> Callable[[np.ndarray], np.ndarray]:
    import librosa
    import torch
    from torch import nn

    class VoiceEncoder(nn.Module):  # Resemblyzer's network (voice_encoder.py)
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.norm(raw, dim=1, keepdim=True)

    model = VoiceEncoder()
    state = torch.load(resemblyzer_weights(), map_location="cpu")["model_state"]
    # the checkpoint also holds the training loss's two scalars; every weight must load
    missing = model.load_state_dict(state, strict=False).missing_keys
    if missing:
        raise RuntimeError(f"Resemblyzer's checkpoint lacks {', '.join(missing)}")
    model.eval()

    def embed(samples: np.ndarray) -> np.ndarray:
        # its preprocessing (preprocess_wav) without trim_long_silences, since a piece is
        # solo speech already: volume raised (never lowered) to -30 dBFS; power mel
        # spectrogram
        rms = float(np.sqrt(np.mean(np.square(samples * 32767.0))))
        gain_db = -30.0 - 20.0 * np.log10(max(rms, 1e-9) / 32767.0)
        if gain_db > 0:
            samples = samples * 10 ** (gain_db / 20)
        # its partial utterances (compute_partial_slices, rate 1.3 per s, coverage 0.75):
        # 160-frame slices every 77 frames; the last one, zero-padded, if 75 % is audio
        frames = int(np.ceil((len(samples) + 1) / 160))
        starts = list(range(0, max(1, frames - 160 + 77 + 1), 77))
        if len(starts) > 1 and (len(samples) - starts[-1] * 160) / (160 * 160) < 0.75:
            starts = starts[:-1]
        padded = np.pad(samples, (0, max(0, (starts[-1] + 160) * 160 - len(samples))))
        mel = librosa.feature.melspectrogram(y=padded.astype(np.float32), sr=SAMPLE_RATE,
                                             n_fft=400, hop_length=160, n_mels=40
                                             ).astype(np.float32).T
        partials = [mel[i:i + 160] for i in starts]
        with torch.no_grad():
            mean = model(torch.from_numpy(np.stack(partials))).mean(dim=0)
        return (mean / torch.norm(mean)).numpy()

    return embed


def _campplus() -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from workbench.engine.diarization.embedding import CAMPPlusEmbedding

    model = CAMPPlusEmbedding.from_state_dict_file(runtime="onnx")

    def embed(samples: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(samples).float()[None, None])[0].numpy()

    return embed


EMBEDDERS: dict[str, Callable[[], Callable[[np.ndarray], np.ndarray]]] = {
    "cam++": _campplus, "resemblyzer": _resemblyzer}


def measure(models: Sequence[str], seconds: Sequence[float], subsets: Sequence[str],
            data_dir: Optional[Path] = None, files: Optional[list[dict[str, Any]]] = None
            ) -> list[dict[str, Any]]:
    """Rows of figures per model and piece length; `files` (if given) gets, per file, each
    reference speaker's longest solo stretch (``longest_solo``, s)."""
    from workbench.research.datasets.ami import ami_items

    files = [] if files is None else files
    if "test" in subsets:
        raise ValueError("the AMI test subset is kept for final figures")
    data_dir = REPO_ROOT / "data" if data_dir is None else data_dir  # (not the working directory's)
    items = [item for subset in subsets for item in ami_items(subset, data_dir)]
    audio = {item.uri: item.load_audio() for item in items}
    for item in items:
        longest = {label: max((end - start for start, end in runs), default=0.0)
                   for label, runs in solo_runs(item).items()}
        files.append({"uri": item.uri, "longest_solo": {k: round(v, 2) for k, v in longest.items()}})
    embedders = {name: EMBEDDERS[name]() for name in models}
    rows = []
    for length in seconds:
        # files with two speakers or more who talk alone that long: the others have no
        # different-speaker pair
        per_file = [pieces for pieces in (solo_pieces(item, length, audio[item.uri])
                                          for item in items)
                    if len({speaker for speaker, _, _ in pieces}) >= 2]
        for name, embed in embedders.items():
            same: list[float] = []
            different: list[float] = []
            for pieces in per_file:
                vectors = np.stack([embed(samples) for _, _, samples in pieces])
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                for i, j in itertools.combinations(range(len(pieces)), 2):
                    distance = 1.0 - float(vectors[i] @ vectors[j])
                    (same if pieces[i][0] == pieces[j][0] else different).append(distance)
            rate, threshold = (equal_error_rate(same, different) if same and different
                               else (None, None))
            rows.append({"model": name, "seconds": length, "files": len(per_file),
                         "same_pairs": len(same), "different_pairs": len(different),
                         "median_same": float(np.median(same)) if same else None,
                         "median_different": float(np.median(different)) if different else None,
                         "eer": rate, "eer_threshold": threshold})
            print(f"{name} {length:g} s: EER {_cell(rate, '.1f', 100)} %", flush=True)
    return rows


def _cell(value: Optional[float], spec: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(scale * value, spec)


def table(results: dict[str, Any]) -> str:
    p = results["parameters"]
    lines = [f"Machine: {machine_stamp(results['machine'])}", "",
             f"Solo pieces of AMI {' + '.join(p['subsets'])}; pairs within one file.", "",
             "| model | piece | files | pairs same / different | median distance same / "
             "different | equal error rate (threshold) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['model']} | {r['seconds']:g} s | {r['files']} | {r['same_pairs']} / "
                     f"{r['different_pairs']} | {_cell(r['median_same'], '.3f')} / "
                     f"{_cell(r['median_different'], '.3f')} | "
                     f"**{_cell(r['eer'], '.1f', 100)} %** ({_cell(r['eer_threshold'], '.3f')}) |")
    files = results.get("files") or []
    if files:
        lines += ["", "Each reference speaker's longest solo stretch (s), per file:", "",
                  "| file | speakers: longest solo stretch |", "|---|---|"]
        lines += [f"| {f['uri']} | " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(
            f["longest_solo"].items(), key=lambda kv: -kv[1])) + " |" for f in files]
        for least in (1.0, 2.0):
            every = sum(min(f["longest_solo"].values(), default=0.0) >= least for f in files)
            lines.append(f"\nFiles whose every speaker talks alone for {least:g} s at a stretch: "
                         f"**{every} of {len(files)}**.")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks speakers",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="0.5,1,2", help="comma-separated piece lengths")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--subsets", default=",".join(SUBSETS),
                        help="comma-separated AMI subsets (train, development)")
    output_arguments(parser, NAME)
    args = parser.parse_args(argv)
    if reprinted(args, table, NAME):
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    try:
        seconds = [float(v) for v in args.seconds.split(",")]
    except ValueError:
        parser.error("--seconds takes comma-separated numbers")
    if unknown := sorted(set(models) - set(MODELS)):
        parser.error(f"unknown models: {', '.join(unknown)} (known: {', '.join(MODELS)})")
    if "test" in subsets:
        parser.error("the AMI test subset is kept for final figures: use train, development")
    if unknown := sorted(set(subsets) - set(SUBSETS)):
        parser.error(f"unknown subsets: {', '.join(unknown)} (known: {', '.join(SUBSETS)})")
    if not models or not subsets:
        parser.error("--models and --subsets need at least one each")
    if not seconds or min(seconds) < 0.2:
        parser.error("--seconds must be at least 0.2 (CAM++ needs a few frames)")
    files: list[dict[str, Any]] = []
    results = {"benchmark": NAME, "machine": machine_info(),
               "command": " ".join(["python -m benchmarks speakers", *(argv or [])]),
               "parameters": {"seconds": seconds, "models": models, "subsets": subsets,
                              "resemblyzer": RESEMBLYZER},
               "files": files}
    results["rows"] = measure(models, seconds, subsets, files=files)
    finish(args.out, results, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
