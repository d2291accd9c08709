"""Threshold sweep: cached segmentation/embeddings give the same DER as fresh runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from workbench.research.datasets import sample_call
from workbench.engine.config import DiarizationConfig
from workbench.engine.diarization.diarizer import Diarizer
from workbench.research.metrics import diarization_error
from workbench.research.tuning import best_config, load_config, save_config, sweep_configs, sweep_diarization

pytestmark = pytest.mark.models


def test_sweep_matches_independent_runs_and_saves_best(tmp_path: Path) -> None:
    item = sample_call()
    table = sweep_diarization([item], thresholds=[0.5, 0.9], min_duration_offs=[0.0, 0.5])
    assert len(table) == 4 and table["der"].between(0, 1).all()
    # The cached sweep agrees with a fresh Diarizer at one grid point.
    config = replace(DiarizationConfig(), clustering_threshold=0.9, min_duration_off=0.5)
    fresh = Diarizer(config)(item.load_audio())
    expected = diarization_error(item.reference(), fresh.annotation).der
    row = table[(table.clustering_threshold == 0.9) & (table.min_duration_off == 0.5)].iloc[0]
    assert row["der"] == pytest.approx(expected, abs=1e-6)
    best = best_config(table)
    assert best.clustering_threshold in (0.5, 0.9)
    assert table["der"].min() == pytest.approx(
        table[(table.clustering_threshold == best.clustering_threshold)
              & (table.min_duration_off == best.min_duration_off)]["der"].iloc[0])
    path = save_config(best, tmp_path / "best.json", evidence=table)
    assert load_config(path) == best


def test_config_sweep_shares_embeddings_and_matches_fresh_runs() -> None:
    item = sample_call()
    base = DiarizationConfig()
    configs = [base,
               replace(base, split_threshold=0.2, speaker_count="threshold",
                       clustering_method="centroid", clustering_threshold=0.6,
                       min_cluster_size=6),
               replace(base, split_piece_duration=None)]  # another embedding pass
    table = sweep_configs([item], configs)
    assert len(table) == 3 and table["der"].nunique() > 1
    assert {"split_threshold", "speaker_count", "split_piece_duration", "clustering_method",
            "clustering_threshold", "min_cluster_size"} <= set(table.columns)
    for config, (_, row) in zip(configs, table.iterrows()):
        fresh = Diarizer(config)(item.load_audio())
        assert row["der"] == pytest.approx(
            diarization_error(item.reference(), fresh.annotation).der, abs=1e-6)
        assert row["right_speaker_count"] == int(fresh.num_speakers == 2)
    # every varied field of the best row, None included (split_piece_duration)
    top = table.sort_values(["der", "right_speaker_count"], ascending=[True, False]).index[0]
    assert best_config(table, base) == configs[top]
    assert best_config(table.iloc[[2]], base) == configs[2]


def test_a_sweep_row_says_how_it_was_scored_and_the_whole_configuration() -> None:
    """Each row echoes its collar, whether the true count was given and the whole
    configuration measured, and `best_config` gives that configuration back.  Before, a
    row held only the fields that varied, so a sweep on another base came back as the
    defaults (here speaker_count "silhouette" instead of "threshold")."""
    item = sample_call()
    base = replace(DiarizationConfig(), speaker_count="threshold", min_cluster_size=6)
    table = sweep_diarization([item], thresholds=[0.5, 0.9], base=base, collar=0.25)
    assert table["collar"].tolist() == [0.25, 0.25]
    assert table["oracle_speakers"].tolist() == [False, False]
    best = best_config(table)
    assert best.speaker_count == "threshold" and best.min_cluster_size == 6
    top = table.sort_values(["der", "right_speaker_count"], ascending=[True, False]).iloc[0]
    assert best == replace(base, clustering_threshold=top["clustering_threshold"])
    assert DiarizationConfig.from_dict(top["config"]) == best


def test_best_config_reads_integers_and_nones_back_from_a_table() -> None:
    """A sweep over num_speakers (None against 2) stores the column as floats (NaN, 2.0):
    the best row gives back None or the integer 2 (2.0 was refused by the configuration)."""
    import numpy as np

    table = pd.DataFrame({"num_speakers": [np.nan, 2.0], "clustering_threshold": [0.3, 0.4],
                          "der": [0.2, 0.1], "right_speaker_count": [0, 1]})
    best = best_config(table)
    assert best.num_speakers == 2 and isinstance(best.num_speakers, int)
    assert best.clustering_threshold == 0.4
    assert best_config(table.assign(der=[0.05, 0.1])).num_speakers is None


def test_a_sweep_read_back_from_csv_or_json_gives_its_configuration(tmp_path: Path) -> None:
    """A sweep saved as CSV holds each row's `config` as text: `best_config` reads it (it
    fell back to the defaults plus the varied columns: speaker_count "threshold" came back
    "silhouette"); `save_config` keeps the sweep's floats exactly (pandas' JSON kept 10
    digits: 0.1 + 0.2 came back 0.3)."""
    import json

    base = replace(DiarizationConfig(), speaker_count="threshold", min_cluster_size=6)
    configs = [replace(base, clustering_threshold=t) for t in (0.1 + 0.2, 0.7)]
    table = pd.DataFrame({"clustering_threshold": [c.clustering_threshold for c in configs],
                          "der": [0.1, 0.2], "right_speaker_count": [1, 1],
                          "config": [c.serialize() for c in configs]})
    table.to_csv(tmp_path / "sweep.csv", index=False)
    assert best_config(pd.read_csv(tmp_path / "sweep.csv")) == configs[0]
    path = save_config(configs[0], tmp_path / "best.json", evidence=table)
    again = pd.DataFrame(json.loads(path.read_text())["sweep"])
    assert again["clustering_threshold"].tolist() == [0.1 + 0.2, 0.7]
    assert best_config(again) == configs[0]
    with pytest.raises(ValueError, match="not a configuration"):
        best_config(table.assign(config=["threshold 0.3", "?"]))


def test_a_sweep_refuses_a_test_subset() -> None:
    """A sweep chooses a configuration: items of a protocol's test subset (final figures
    only) are refused before any work (here the sample call labelled as such; no test
    file of a protocol is read)."""
    item = replace(sample_call(), info={"protocol": "Debug.SpeakerDiarization.Debug",
                                        "subset": "test"})
    with pytest.raises(ValueError, match="final figures only"):
        sweep_configs([item], [DiarizationConfig()])
    with pytest.raises(ValueError, match="final figures only"):
        sweep_diarization([item], thresholds=[0.3], min_duration_offs=[0.0])


def test_a_copy_of_a_test_recording_is_refused_by_its_checksum(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A test recording renamed and unlabelled is known by the sha256 of its audio. No
    test reads the test subset: the sample call stands in for it here, its checksum put
    in the list of the test recordings' checksums (which come from the list shipped with
    the dataset: two sha256 digests)."""
    import shutil

    from workbench.research import tuning
    from workbench.research.datasets import CorpusItem
    from workbench.research.datasets.ami import AMI_TEST_SHA256
    from workbench.engine.provenance import file_sha256

    assert len(AMI_TEST_SHA256) == 2 and all(len(h) == 64 for h in AMI_TEST_SHA256)
    copy = tmp_path / "meeting.wav"
    shutil.copy(sample_call().audio, copy)
    item = CorpusItem("meeting", copy)
    assert tuning._final_figures_only([item]) == []  # an ordinary recording
    monkeypatch.setattr(tuning, "AMI_TEST_SHA256", AMI_TEST_SHA256 | {file_sha256(copy)})
    with pytest.raises(ValueError, match="final figures only"):
        sweep_configs([item], [DiarizationConfig()])


def test_a_test_subset_stays_refused_through_manifests_clips_and_copies(
        tmp_path: Path) -> None:
    """The label of a test subset survives a manifest round trip and the speaker clips
    cut from such an item (before, `write_manifest` and `speaker_clips` dropped it and
    the sweep ran); an AMI test recording is known by its uri even without a label.  (It
    is known by its audio's checksum too, which no test reads: the test subset stays out
    of the tests.)"""
    from workbench.research.datasets import CorpusItem, load_manifest, speaker_clips, write_manifest

    labelled = replace(sample_call(), info={"protocol": "Debug.SpeakerDiarization.Debug",
                                            "subset": "test"})
    (again,) = load_manifest(write_manifest(tmp_path / "m" / "manifest.json", [labelled]))
    assert again.info["subset"] == "test" and again.info["protocol"] == labelled.info["protocol"]
    clips = speaker_clips(labelled, tmp_path / "clips")
    assert clips and all(c.info["subset"] == "test" for c in clips)
    for items in ([again], clips, [CorpusItem("tst01", sample_call().audio)]):
        with pytest.raises(ValueError, match="final figures only"):
            sweep_configs(items, [DiarizationConfig()])
