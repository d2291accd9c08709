"""Tuning diarization: sweep configurations on a development set.

DER per configuration is pooled over the items (summed error seconds over
summed reference seconds), so long recordings weigh what they should::

    table = sweep_diarization(items, thresholds=[0.15, 0.25, 0.35], min_duration_offs=[0.0, 0.5])
    best = best_config(table)            # a DiarizationConfig
    save_config(best, "data/best_diarization.json")

    # any set of configurations; those that differ only after the embeddings share them
    table = sweep_configs(items, [replace(base, split_threshold=t) for t in (0.2, 0.3, 0.4)])
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import typing
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pandas as pd

from workbench.research.datasets.items import CorpusItem
from workbench.engine.config import DiarizationConfig
from workbench.engine.diarization.diarizer import Diarizer, retune
from workbench.engine.audio import SAMPLE_RATE
from workbench.engine.progress import ProgressHook
from workbench.engine.provenance import file_sha256, torch_threads
from workbench.research.datasets.ami import AMI_TEST_SHA256, AMI_TEST_URIS
from workbench.research.metrics import diarization_error, speakers_within



# Fields that change the segmentation or the embeddings: configurations that agree on
# them share one pass of both per file; the others act in the clustering and after it.
_EMBEDDING_FIELDS = ("segmentation_step", "segmentation_onset", "embedding_exclude_overlap",
                     "split_min_gap",
                     "split_piece_duration", "embedding_batch_size",
                     "segmentation_batch_size", "device", "pipeline_path",
                     "embedding_passes", "embedding_share", "embedding_share_coverage",
                     "embedding_share_agreement", "embedding_block",
                     "embedding_context", "embedding_runtime", "segmentation_frontend")


def _final_figures_only(items: Sequence[CorpusItem]) -> list[str]:
    """The uris of items of a test subset: labelled so (``info["subset"]``), or the AMI
    test recordings by name (their uri, or the ``source`` a clip was cut from) or by the
    sha256 of their audio (a copy renamed, or read from a list that lost the labels)."""
    final = []
    for item in items:
        info = item.info or {}
        if (info.get("subset") == "test" or item.uri in AMI_TEST_URIS
                or info.get("source") in AMI_TEST_URIS
                or (Path(item.audio).is_file()
                    and file_sha256(item.audio) in AMI_TEST_SHA256)):
            final.append(item.uri)
    return sorted(final)


def _embedding_key(config: DiarizationConfig) -> tuple[Any, ...]:
    return (*(getattr(config, name) for name in _EMBEDDING_FIELDS),
            config.split_threshold is None)


def sweep_configs(items: Sequence[CorpusItem], configs: Sequence[DiarizationConfig], *,
                  collar: float = 0.0, oracle_speakers: bool = False,
                  hook: Optional[ProgressHook] = None) -> pd.DataFrame:
    """DER (pooled over ``items``) of each diarization configuration.

    Configurations that differ only after the embeddings (clustering, speaker count,
    grouping threshold, ``min_duration_off``) share one segmentation and embedding pass
    per file. Returns one row per configuration: the fields that differ between the
    configurations, ``der``, its components in seconds, the number of items whose
    speaker count was right, the items' summed speaker-count errors, and per item its DER
    (``der[URI]``), speaker count (``speakers[URI]``) and the distance of the last merge
    of the clustering's dendrogram (``last_merge[URI]``: where the two most different
    groups of voices joined; NaN without one); then how it was scored (``collar``,
    ``oracle_speakers``) and the whole configuration (``config``, as `serialize` gives it).
    """
    import torch

    if any(c.pipeline_path is not None for c in configs):
        raise ValueError("sweeps tune the bundled pipeline; pipeline_path is not supported")
    if not configs or not items:  # (a KeyError from pandas' columns said nothing)
        raise ValueError(f"nothing to sweep: {len(configs)} configuration(s) (e.g. an empty "
                         f"list of thresholds) over {len(items)} item(s)")
    final = _final_figures_only(items)
    if final:  # a sweep chooses: the test subset of a protocol is for final figures
        raise ValueError(f"items of a test subset ({', '.join(final)}) are for final figures "
                         "only: tune on train, check on development")
    uris = [item.uri for item in items]
    twice = sorted({u for u in uris if uris.count(u) > 1})
    if twice:  # results are keyed by uri: one would silently replace the other
        raise ValueError(f"items share a uri: {', '.join(twice)} (two corpora built with "
                         "build_corpus both name theirs conv000...; give them other uris)")
    references = {item.uri: item.reference() for item in items}
    varying = [f.name for f in fields(DiarizationConfig)
               if len({json.dumps(getattr(c, f.name)) for c in configs}) > 1]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(_embedding_key(config), []).append(i)
    rows: list[dict[str, Any]] = [{} for _ in configs]
    waveforms = {item.uri: torch.from_numpy(item.load_audio())[None] for item in items}
    done = 0
    for indices in groups.values():
        # One pipeline in pyannote's training mode: segmentation and embeddings are
        # computed once per file and cached in its dict; each configuration then only
        # re-runs clustering and post-processing.
        pipeline = Diarizer(configs[indices[0]]).pipeline
        pipeline.training = True
        files = {uri: {"waveform": waveform, "sample_rate": SAMPLE_RATE, "uri": uri}
                 for uri, waveform in waveforms.items()}
        for i in indices:
            if hook:
                hook("sweep", done, len(configs))
            config = configs[i]
            retune(pipeline, config)
            rows[i] = _score_config(pipeline, config, items, files, references, collar,
                                    oracle_speakers)
            rows[i].update({name: getattr(config, name) for name in varying})
            # how it was scored, and the whole configuration measured (`best_config`)
            rows[i].update(collar=collar, oracle_speakers=oracle_speakers,
                           config=config.serialize())
            done += 1
    if hook:
        hook("sweep", len(configs), len(configs))
    front = [*varying, "der", "missed", "false_alarm", "confusion", "total",
             "right_speaker_count", "speaker_count_error"]
    frame = pd.DataFrame(rows)
    return frame[front + [c for c in frame.columns if c not in front]]


def _score_config(pipeline: Any, config: DiarizationConfig, items: Sequence[CorpusItem],
                  files: dict[str, Any], references: dict[str, Any], collar: float,
                  oracle_speakers: bool) -> dict[str, Any]:
    import torch

    totals = {"missed": 0.0, "false_alarm": 0.0, "confusion": 0.0, "total": 0.0}
    row: dict[str, Any] = {"right_speaker_count": 0, "speaker_count_error": 0}
    with torch_threads(config.num_threads):  # as Diarizer does (see DiarizationConfig)
        for item in items:
            ref = references[item.uri]
            n_ref = len(ref.labels())
            with torch.inference_mode():
                output = pipeline(files[item.uri],
                                  num_speakers=n_ref if oracle_speakers else config.num_speakers,
                                  min_speakers=config.min_speakers,
                                  max_speakers=config.max_speakers)
            hypothesis = output.speaker_diarization
            der = diarization_error(ref, hypothesis, uem=item.annotated(), collar=collar)
            for key in totals:
                totals[key] += getattr(der, key)
            row[f"der[{item.uri}]"] = der.der
            # speakers compared inside the UEM, as `evaluation.score` does (the given
            # count is the whole file's: the pipeline hears all of it)
            n_hyp = speakers_within(hypothesis, item.annotated())
            row[f"speakers[{item.uri}]"] = n_hyp
            merges = getattr(pipeline.clustering, "count_evidence", {}).get("merge_distances")
            row[f"last_merge[{item.uri}]"] = merges[-1] if merges else math.nan
            n_scored = speakers_within(ref, item.annotated())
            row["right_speaker_count"] += int(n_hyp == n_scored)
            row["speaker_count_error"] += abs(n_hyp - n_scored)
    row.update(totals)
    row["der"] = (totals["missed"] + totals["false_alarm"] + totals["confusion"]) / \
        max(totals["total"], 1e-9)
    return row


def sweep_diarization(items: Sequence[CorpusItem], *, thresholds: Sequence[float],
                      min_duration_offs: Sequence[float] = (0.0,),
                      base: Optional[DiarizationConfig] = None, collar: float = 0.0,
                      oracle_speakers: bool = False,
                      hook: Optional[ProgressHook] = None) -> pd.DataFrame:
    """DER (pooled over ``items``) for every (threshold, min_duration_off) pair.

    Returns one row per configuration: ``clustering_threshold``,
    ``min_duration_off``, ``der``, its components in seconds, the number of items
    whose speaker count was right, and a per-item DER column for each item.
    """
    base = base or DiarizationConfig()
    grid = list(itertools.product(thresholds, min_duration_offs))
    configs = [replace(base, clustering_threshold=float(t), min_duration_off=float(m))
               for t, m in grid]
    table = sweep_configs(items, configs, collar=collar, oracle_speakers=oracle_speakers,
                          hook=hook)
    # both columns, even when one of them does not vary
    table["clustering_threshold"] = [t for t, _ in grid]
    table["min_duration_off"] = [m for _, m in grid]
    front = ["clustering_threshold", "min_duration_off"]
    return table[front + [c for c in table.columns if c not in front]]


def best_config(table: pd.DataFrame, base: Optional[DiarizationConfig] = None
                ) -> DiarizationConfig:
    """The configuration of the sweep's lowest pooled DER (ties: more right speaker counts):
    the whole configuration that row measured (its ``config``: a dict, or its text as a
    CSV file gives it back).  A row without one (saved before rows had it) gives `base`
    (default: the defaults) with every configuration field the table has a column for
    (those the sweep varied)."""
    ranked = table.sort_values(["der", "right_speaker_count"], ascending=[True, False])
    top = ranked.iloc[0]
    measured = top["config"] if "config" in table.columns else None
    if isinstance(measured, str):
        measured = _config_text(measured)
    if isinstance(measured, dict):
        return DiarizationConfig.from_dict(measured)
    hints = typing.get_type_hints(DiarizationConfig)
    chosen = {}
    for f in fields(DiarizationConfig):
        if f.name in table.columns:
            value = top[f.name]
            value = value.item() if hasattr(value, "item") else value  # NumPy -> Python
            if isinstance(value, float) and math.isnan(value):
                value = None  # a column mixing None and numbers holds NaN for None
            elif (isinstance(value, float) and value.is_integer()
                  and int in (hints[f.name], *typing.get_args(hints[f.name]))):
                value = int(value)  # and floats for the integers
            chosen[f.name] = value
    return replace(base or DiarizationConfig(), **chosen)


def _config_text(text: str) -> dict[str, Any]:
    """A row's ``config`` as a CSV file holds it: JSON, or the dict's Python repr (what
    ``DataFrame.to_csv`` writes)."""
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            return value
    raise ValueError(f"A sweep row's config is not a configuration: {text[:80]!r}")


def _plain(value: Any) -> Any:
    """`value` for JSON, exactly: NumPy scalars as Python's, NaN as null (pandas' own
    ``to_json`` keeps 10 significant digits of a float)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def save_config(config: DiarizationConfig, path: Union[str, os.PathLike],
                evidence: Optional[pd.DataFrame] = None) -> Path:
    """Write a diarization configuration (and the sweep that chose it) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"diarization": config.serialize()}
    if evidence is not None:
        doc["sweep"] = _plain(evidence.to_dict(orient="records"))
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_config(path: Union[str, os.PathLike]) -> DiarizationConfig:
    return DiarizationConfig.from_dict(json.loads(Path(path).read_text())["diarization"])
