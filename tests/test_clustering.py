"""Speaker clustering: the silhouette speaker count and run assignment, on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from pyannote.audio.pipelines.clustering import AgglomerativeClustering
from pyannote.core import SlidingWindow, SlidingWindowFeature
from scipy.cluster.hierarchy import fcluster, linkage

from workbench.engine.config import MAX_SPEAKERS
from workbench.engine.diarization.clustering import (
    RUN_OWNERS,
    RunClustering,
    group_runs,
    most_local_speakers,
    silhouette_score,
)


def blobs(centres: list[np.ndarray], per: int, spread: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([c + spread * rng.normal(size=(per, c.size)) for c in centres])


def voices(n: int, dim: int = 32, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=dim) for _ in range(n)]


def clustering(speaker_count: str = "silhouette", **params: object) -> RunClustering:
    c = RunClustering(speaker_count=speaker_count, group_threshold=0.3)
    c.instantiate({"method": "average", "threshold": 0.25, "min_cluster_size": 1, **params})
    return c


def naive_silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - unit @ unit.T
    scores = []
    for i, li in enumerate(labels):
        same = [j for j in range(len(x)) if labels[j] == li and j != i]
        if not same:
            scores.append(0.0)
            continue
        a = np.mean([d[i, j] for j in same])
        b = min(np.mean([d[i, j] for j in range(len(x)) if labels[j] == other])
                for other in set(labels) if other != li)
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


def test_silhouette_matches_its_definition() -> None:
    x = blobs(voices(3), per=7, spread=0.6)
    labels = np.repeat([0, 1, 2], 7)
    labels[[3, 10]] = [1, 0]  # two points in the wrong cluster
    labels[20] = 3  # and a singleton
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    distances = 1 - unit @ unit.T
    np.fill_diagonal(distances, 0)
    assert silhouette_score(distances, labels) == pytest.approx(naive_silhouette(x, labels))
    assert silhouette_score(distances, np.zeros(len(x), int)) == 0.0


@pytest.mark.parametrize("speakers", [2, 3, 5])
def test_silhouette_count_finds_the_speakers(speakers: int) -> None:
    x = blobs(voices(speakers), per=12, spread=0.4)
    c = clustering()
    labels = c.cluster(x.copy(), min_clusters=1, max_clusters=len(x))
    assert len(set(labels)) == speakers
    evidence = c.count_evidence
    assert evidence["rule"] == "silhouette" and evidence["speakers"] == speakers
    assert evidence["embeddings"] == len(x) and evidence["most"] >= speakers
    if evidence["silhouettes"]:  # more than one candidate count
        assert max(evidence["silhouettes"], key=evidence["silhouettes"].get) == speakers
    # each cluster is one voice
    for k in range(speakers):
        assert len(set(labels[k * 12:(k + 1) * 12])) == 1


def test_one_voice_is_one_speaker() -> None:
    # one voice: every embedding within the threshold of the others -> no split at all
    x = blobs(voices(1), per=30, spread=0.15)
    assert set(clustering().cluster(x.copy(), min_clusters=1, max_clusters=30)) == {0}
    # the same embeddings are split when asked for two speakers, or when the threshold
    # says that this spread already separates speakers
    assert len(set(clustering().cluster(x.copy(), 1, 30, num_clusters=2))) == 2
    assert len(set(clustering(threshold=0.01).cluster(x.copy(), 1, 30))) >= 2


def test_speaker_count_bounds() -> None:
    x = blobs(voices(4), per=10, spread=0.4)
    assert len(set(clustering().cluster(x.copy(), min_clusters=1, max_clusters=2))) == 2
    assert len(set(clustering().cluster(x.copy(), min_clusters=6, max_clusters=40))) == 6


def test_threshold_rule_is_pyannotes() -> None:
    x = blobs(voices(3), per=10, spread=0.5)
    params = {"method": "centroid", "threshold": 0.6, "min_cluster_size": 6}
    ours = clustering("threshold", **params).cluster(x.copy(), 1, 30)
    theirs = AgglomerativeClustering(metric="cosine")
    theirs.instantiate(params)
    np.testing.assert_array_equal(ours, theirs.cluster(x.copy(), 1, 30))
    with pytest.raises(ValueError):
        RunClustering(speaker_count="eigengap")


def test_runs_of_one_local_speaker_go_to_their_own_voices() -> None:
    # 12 chunks of 20 frames; local speaker 0 of every chunk holds two runs, of voices a
    # and b in turn (as when segmentation gives two voices one local speaker), and local
    # speaker 1 a run of voice c
    a, b, c = voices(3)
    rng = np.random.default_rng(3)
    runs = np.zeros((12, 20, 3), np.float32)
    runs[:, 0:8, 0] = runs[:, 8:14, 1] = runs[:, 14:20, 2] = 1
    truth = np.zeros((12, 3), int)
    embeddings = np.zeros((12, 3, 32))
    for chunk in range(12):
        first, second = (a, b) if chunk % 2 else (b, a)
        truth[chunk] = [0 if first is a else 1, 0 if second is a else 1, 2]
        for j, voice in enumerate((first, second, c)):
            embeddings[chunk, j] = voice + 0.3 * rng.normal(size=32)
    owners = [[0, 0, 1]] * 12
    window = SlidingWindow(start=0.0, duration=10.0, step=2.0)
    hard, soft, centroids = clustering()(embeddings, SlidingWindowFeature(runs, window),
                                         file={RUN_OWNERS: owners})
    assert hard.shape == (12, 3) and soft.shape == (12, 3, 3) and centroids.shape == (3, 32)
    # the same voice -> the same speaker, different voices -> different speakers
    mapping = {t: h for t, h in zip(truth.ravel(), hard.ravel())}
    assert len(set(mapping.values())) == 3
    np.testing.assert_array_equal(hard, np.vectorize(mapping.get)(truth))
    # grouping the local speaker's runs first (as the clustering's training does) would
    # have kept the two voices apart too: they are farther than the group threshold
    grouped, _ = group_runs(runs, owners, embeddings, threshold=0.3)
    assert grouped.shape[2] == 3
    # a run without an embedding (too short) takes the speaker of its group
    embeddings[5, 1] = np.nan
    hard, _, _ = clustering()(embeddings, SlidingWindowFeature(runs, window),
                              file={RUN_OWNERS: owners})
    assert hard[5, 1] == hard[5, 0]
    # without run owners (no splitting), each row is clustered as pyannote does
    plain_hard, _, _ = clustering()(embeddings, SlidingWindowFeature(runs, window))
    assert plain_hard.shape == (12, 3)


def test_runs_of_a_mixed_group_are_divided_between_its_voices() -> None:
    # chunks 0-5: voices a, b and c each alone in a local speaker; chunks 6-11: local
    # speaker 0 holds a run of a then a run of b, and a group threshold of 2 keeps them
    # in one group (a mixture), as segmentation-3.0 does with two similar voices
    a, b, c = voices(3, seed=7)
    rng = np.random.default_rng(4)
    runs = np.zeros((12, 20, 3), np.float32)
    embeddings = np.full((12, 3, 32), np.nan)
    owners = []
    for chunk in range(12):
        if chunk < 6:
            runs[chunk, 0:7, 0] = runs[chunk, 7:14, 1] = runs[chunk, 14:20, 2] = 1
            owners.append([0, 1, 2])
        else:
            runs[chunk, 0:7, 0] = runs[chunk, 7:14, 1] = runs[chunk, 14:20, 2] = 1
            owners.append([0, 0, 1])
        for j, voice in enumerate((a, b, c)):
            embeddings[chunk, j] = voice + 0.2 * rng.normal(size=32)
    window = SlidingWindow(start=0.0, duration=10.0, step=2.0)
    segmentation = SlidingWindowFeature(runs, window)
    mixing = RunClustering(group_threshold=2.0)
    mixing.instantiate({"method": "average", "threshold": 0.25, "min_cluster_size": 1})
    hard, _, _ = mixing(embeddings, segmentation, num_clusters=3, file={RUN_OWNERS: owners})
    # every run of voice a (column 0), b (1) and c (2) has one speaker, three in all
    assert [len(set(hard[:, j])) for j in range(3)] == [1, 1, 1]
    assert len({hard[0, 0], hard[0, 1], hard[0, 2]}) == 3
    # clustering the groups themselves gives both runs of a mixed group one speaker
    grouped, group_embeddings = group_runs(runs, owners, embeddings, threshold=2.0)
    group_hard, _, _ = mixing(group_embeddings, SlidingWindowFeature(grouped, window),
                              num_clusters=3)
    assert all(grouped[chunk, 0:14, 0].all() for chunk in range(6, 12))
    assert len({group_hard[chunk, 0] for chunk in range(6, 12)}) == 1


def test_given_count_does_not_split_the_main_voice() -> None:
    # A meeting excerpt: one voice talks most (two sub-groups of embeddings), a second
    # one clearly apart, a third says a few words (one embedding near the first voice).
    # Cutting the dendrogram into three clusters splits the main voice in two (AMI
    # train: a forced count did worse than estimating); the given count must not.
    rng = np.random.default_rng(3)
    main, other = voices(2, seed=7)
    halves = [main + 0.3 * rng.normal(size=main.size) for _ in range(2)]
    x = np.vstack([h + 0.12 * rng.normal(size=(10, main.size)) for h in halves]
                  + [other + 0.12 * rng.normal(size=(10, main.size)),
                     main + 0.35 * rng.normal(size=(1, main.size))])
    naive = fcluster(linkage(x, "average", "cosine"), 3, criterion="maxclust")
    assert len(set(naive[:20].tolist())) == 2  # the trap
    c = clustering()
    labels = c.cluster(x.copy(), min_clusters=3, max_clusters=3, num_clusters=3)
    assert len(set(labels.tolist())) == 3
    assert len(set(labels[:20].tolist())) == 1  # the main voice stays whole
    assert len({labels[0], labels[20], labels[30]}) == 3


def test_count_from_clean_embeddings_clusters_all() -> None:
    # count_min_active_ratio: the count is estimated on the embeddings marked as clean,
    # the clusters are made of all of them
    x = blobs(voices(2), per=8, spread=0.3)
    c = clustering()
    c._count_rows = np.array([True] * 4 + [False] * 4 + [True] * 4 + [False] * 4)
    labels = c.cluster(x.copy(), min_clusters=1, max_clusters=len(x))
    assert len(set(labels.tolist())) == 2
    assert c.count_evidence["counted_embeddings"] == 8


def test_most_local_speakers_counts_those_that_fill_a_share_of_one_window() -> None:
    seg = np.zeros((2, 100, 3))
    seg[0, :50, 0] = 1
    seg[0, :3, 1] = 1  # 3 % of the window: a blip, not a speaker
    seg[1, :10, 0] = seg[1, 10:20, 1] = 1
    seg[1, 20:26, 2] = 1
    assert most_local_speakers(seg) == 3
    # runs of one local speaker count once (columns 0 and 1 of the second window: owner 0)
    assert most_local_speakers(seg, owners=[[0, 1, 2], [0, 0, 1]]) == 2
    assert most_local_speakers(seg, min_share=0.08) == 2
    assert most_local_speakers(np.zeros((0, 100, 3))) == 0


def many_voices(count: int = 200, n: int = 300) -> tuple[np.ndarray, SlidingWindowFeature,
                                                          dict]:
    """`n` one-run windows of `count` voices, one embedding each: noisy input on which
    min_cluster_size 1 leaves more than a hundred clusters apart."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((count, 192))
    embeddings = (centres[rng.integers(0, count, n)] + 0.3 * rng.standard_normal((n, 192)))
    segmentation = SlidingWindowFeature(np.ones((n, 589, 1), np.float32),
                                        SlidingWindow(start=0, duration=10, step=2))
    return embeddings[:, None, :], segmentation, {RUN_OWNERS: [[0]] * n}


def test_more_than_127_clusters_keep_their_labels() -> None:
    # the hard labels were int8: cluster 128 became -128 and speakers merged silently
    embeddings, segmentation, file = many_voices()
    c = clustering("threshold", threshold=0.3)
    hard, soft, centroids = c(embeddings, segmentation, file=file)
    assert len(centroids) > 127 and c.count_evidence["speakers"] == len(centroids)
    assert hard.min() >= 0
    np.testing.assert_array_equal(hard, np.argmax(np.nan_to_num(soft, nan=-1.0), axis=2))


def test_silhouette_search_stops_at_the_speaker_limit() -> None:
    # every candidate count costs a pass over the n x n distances: the search goes up to
    # MAX_SPEAKERS (the batch limit of num_speakers), not to every cluster apart
    embeddings, segmentation, file = many_voices()
    c = clustering(threshold=0.3)
    hard, _, centroids = c(embeddings, segmentation, file=file)
    evidence = c.count_evidence
    assert evidence["most"] == MAX_SPEAKERS
    assert max(evidence["silhouettes"]) == MAX_SPEAKERS
    assert evidence["speakers"] == len(centroids) <= MAX_SPEAKERS
    assert 0 <= hard.min() and hard.max() < len(centroids)


def test_silhouettes_need_one_float32_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    # the distances stay float32 and are summed in float64 a block of rows at a time
    # (a float64 copy of the n x n matrix doubled the peak), with the same scores
    import tracemalloc

    from workbench.engine.diarization import clustering as module

    n = 2000
    x = blobs(voices(6, dim=64), per=n // 6 + 1, spread=0.8)[:n]
    c = clustering(threshold=0.3)
    dendrogram = c._dendrogram(x)
    expected = c._best_count(x, dendrogram, 1, 8)
    scores = dict(c.count_evidence["silhouettes"])
    monkeypatch.setattr(module, "SILHOUETTE_BLOCK", 1 << 16, raising=False)
    tracemalloc.start()
    try:
        assert c._best_count(x, dendrogram, 1, 8) == expected
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert c.count_evidence["silhouettes"] == scores
    assert peak < 1.3 * n * n * 4, peak / 2**20


def test_the_pipeline_training_flag_is_not_the_clusterings_own_state() -> None:
    """RunClustering kept the embeddings behind its clusters in `_training`, where
    pyannote's Pipeline keeps its `training` flag: the flag read as None (or the arrays),
    and a parent pipeline's `training = True` put a bool in their place."""
    c = clustering()
    assert c.training is False
    c.training = True
    assert c.training is True and c.forced_clusters == []
