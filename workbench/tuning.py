"""Tuning diarization: sweep clustering threshold and ``min_duration_off`` on a development set.

DER per configuration is pooled over the items (summed error seconds over
summed reference seconds), so long recordings weigh what they should::

    table = sweep_diarization(items, thresholds=[0.6, 0.7, 0.8], min_duration_offs=[0.0, 0.5])
    best = best_config(table)            # a DiarizationConfig
    save_config(best, "data/best_diarization.json")
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import pandas as pd

from .datasets import CorpusItem
from .diarization import DiarizationConfig, Diarizer
from .metrics import diarization_error

Progress = Callable[[str, int, int], None]


def sweep_diarization(items: Sequence[CorpusItem], *, thresholds: Sequence[float],
                      min_duration_offs: Sequence[float] = (0.0,),
                      base: Optional[DiarizationConfig] = None, collar: float = 0.0,
                      oracle_speakers: bool = False,
                      hook: Optional[Progress] = None) -> pd.DataFrame:
    """DER (pooled over ``items``) for every (threshold, min_duration_off) pair.

    Returns one row per configuration: ``clustering_threshold``,
    ``min_duration_off``, ``der``, its components in seconds, the number of items
    whose speaker count was right, and a per-item DER column for each item.
    """
    import torch

    base = base or DiarizationConfig()
    if base.pipeline_path is not None:
        raise ValueError("sweeps tune the bundled pipeline; pipeline_path is not supported")
    references = {item.uri: item.reference() for item in items}
    # One pipeline in pyannote's training mode: segmentation and embeddings are
    # computed once per file and cached in its dict; each configuration then only
    # re-runs clustering and post-processing (both parameters act only there).
    pipeline = Diarizer(base).pipeline
    pipeline.training = True
    files = {item.uri: {"waveform": torch.from_numpy(item.load_audio())[None],
                        "sample_rate": 16000, "uri": item.uri} for item in items}
    grid = list(itertools.product(thresholds, min_duration_offs))
    rows = []
    for step, (threshold, mdo) in enumerate(grid):
        if hook:
            hook("sweep", step, len(grid))
        pipeline.instantiate(replace(base, clustering_threshold=float(threshold),
                                     min_duration_off=float(mdo)).pipeline_parameters())
        totals = {"missed": 0.0, "false_alarm": 0.0, "confusion": 0.0, "total": 0.0}
        row: dict[str, Any] = {"clustering_threshold": threshold, "min_duration_off": mdo,
                               "right_speaker_count": 0}
        for item in items:
            ref = references[item.uri]
            n_ref = len(ref.labels())
            with torch.inference_mode():
                output = pipeline(files[item.uri],
                                  num_speakers=n_ref if oracle_speakers else None)
            hypothesis = output.speaker_diarization
            der = diarization_error(ref, hypothesis, collar=collar)
            for key in totals:
                totals[key] += getattr(der, key)
            row[f"der[{item.uri}]"] = der.der
            row["right_speaker_count"] += int(len(hypothesis.labels()) == n_ref)
        row.update(totals)
        row["der"] = (totals["missed"] + totals["false_alarm"] + totals["confusion"]) / \
            max(totals["total"], 1e-9)
        rows.append(row)
    if hook:
        hook("sweep", len(grid), len(grid))
    front = ["clustering_threshold", "min_duration_off", "der", "missed", "false_alarm",
             "confusion", "total", "right_speaker_count"]
    frame = pd.DataFrame(rows)
    return frame[front + [c for c in frame.columns if c not in front]]


def best_config(table: pd.DataFrame, base: Optional[DiarizationConfig] = None
                ) -> DiarizationConfig:
    """The configuration of the sweep's lowest pooled DER (ties: more right speaker counts)."""
    ranked = table.sort_values(["der", "right_speaker_count"], ascending=[True, False])
    top = ranked.iloc[0]
    return replace(base or DiarizationConfig(),
                   clustering_threshold=float(top["clustering_threshold"]),
                   min_duration_off=float(top["min_duration_off"]))


def save_config(config: DiarizationConfig, path: Union[str, os.PathLike],
                evidence: Optional[pd.DataFrame] = None) -> Path:
    """Write a diarization configuration (and the sweep that chose it) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"diarization": config.serialize()}
    if evidence is not None:
        doc["sweep"] = json.loads(evidence.to_json(orient="records"))
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_config(path: Union[str, os.PathLike]) -> DiarizationConfig:
    return DiarizationConfig.from_dict(json.loads(Path(path).read_text())["diarization"])
