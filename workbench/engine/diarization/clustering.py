"""Clustering speaker embeddings into speakers: how many, and who said each run.

`RunClustering` is pyannote.audio's `AgglomerativeClustering` with two changes, both
measured on the development set of BENCHMARKS.md ("Diarization"):

- **Speaker count by silhouette** (``speaker_count="silhouette"``, the default). A fixed
  distance threshold has to sit between the spread of one speaker's embeddings and the
  distance between two speakers, and CAM++ puts both close together here: on the real
  sample call one speaker's groups merge at 0.60 (centroid linkage) while two synthetic
  voices merge at 0.67. The dendrogram is cut instead at the number of clusters with the
  best mean silhouette, searched from 2 up to the number of clusters that
  `threshold` leaves apart (a distance below which embeddings are one speaker: one
  speaker's recordings merged below 0.11 here, different speakers above 0.39, in
  average-linkage cosine distance). ``speaker_count="threshold"`` is pyannote's rule.
- **Runs.** When the pipeline splits local speakers into runs (see
  `workbench.engine.diarization.pipelines.SplittingSpeakerDiarization`), the runs of one local speaker
  whose voices match are grouped (`group_runs`) and the groups train the clustering;
  then every run goes to the speaker whose centroid is closest to its own embedding, so
  a local speaker that mixes two voices is divided between them.
- **A given count** (``num_clusters``, measured on the AMI excerpts of `workbench.ami`)
  changes nothing when the count estimated without it is within the given bounds.
  Otherwise `given_count_min_active_ratio` lets shorter clean speech into the training
  set, the clusters of the estimate (made of the usual training set, at most the given
  count) stay and the shorter speech joins the nearest of them, and the most outlying
  embeddings become the missing speakers (`_forced_cut`). Such a forced speaker keeps
  the runs of its own embeddings only (`_keep_forced_to_members`), and the pipeline's
  reconstruction gives it their frames if the windows' other copies outvote it
  (`SplittingSpeakerDiarization.reconstruct`): the given count is honoured at the cost
  of a few runs. Cutting the dendrogram into that many clusters split the main voice of
  meetings whose other participants hardly speak, and re-clustering with the shorter
  speech re-cut the main voices (AMI train, true count: 37.8 % DER, then 30.6 %, now
  27.9 % against 27.5 % estimating).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
from pyannote.audio.pipelines.clustering import AgglomerativeClustering
from pyannote.core import SlidingWindowFeature
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist

from workbench.engine.config import MAX_SPEAKERS, SPEAKER_COUNT_RULES

__all__ = ["RUN_OWNERS", "SPEAKER_COUNT_RULES", "RunClustering", "group_members", "group_runs",
           "most_local_speakers", "silhouette_score"]

RUN_OWNERS = "workbench/run_owners"
"""Key of the pipeline's file dict under which the local speaker of each run is kept."""
LOCAL_SPEAKER_MIN_SHARE = 0.05
"""Share of a window a local speaker must fill to count in `most_local_speakers` (0.5 s
of a 10 s window)."""


def most_local_speakers(segmentations: np.ndarray, owners: Optional[list[list[int]]] = None,
                        min_share: float = LOCAL_SPEAKER_MIN_SHARE) -> int:
    """The most local speakers that fill `min_share` of one window: how many speakers
    the segmentation alone tells apart at once, a lower bound of the file's count.

    `segmentations` is ``(chunks, frames, speakers)`` binary; with `owners` (per chunk,
    the local speaker of each column: runs of `RUN_OWNERS`) columns count per owner."""
    filled = np.nan_to_num(segmentations, nan=0.0).sum(axis=1)  # (chunks, columns)
    if filled.size == 0:
        return 0
    needed = min_share * segmentations.shape[1]
    if owners is None:
        return int((filled >= needed).sum(axis=1).max())
    most = 0
    for chunk, chunk_owners in zip(filled, owners):
        per_owner: dict[int, float] = {}
        for column, owner in enumerate(chunk_owners):
            per_owner[owner] = per_owner.get(owner, 0.0) + float(chunk[column])
        most = max(most, sum(v >= needed for v in per_owner.values()))
    return most


SILHOUETTE_BLOCK = 1 << 22
"""Elements of the float64 rows `silhouette_score` sums at a time (32 MB): the square
matrix of distances stays in its own precision (float32 in `RunClustering`)."""


def silhouette_score(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a partition, from a square matrix of pairwise distances.

    A member of a singleton cluster scores 0 (as in scikit-learn); a single cluster
    scores 0 too.
    """
    labels = np.unique(labels, return_inverse=True)[1]
    n, k = len(labels), int(labels.max()) + 1 if len(labels) else 0
    if k < 2:
        return 0.0
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0
    sizes = onehot.sum(axis=0)
    # (n, k): summed distance from each point to each cluster, in float64 a block of
    # rows at a time (no float64 copy of the whole matrix)
    rows = max(1, SILHOUETTE_BLOCK // max(n, 1))
    sums = np.empty((n, k))
    for first in range(0, n, rows):
        sums[first:first + rows] = distances[first:first + rows].astype(np.float64) @ onehot
    own = sizes[labels]
    a = sums[np.arange(n), labels] / np.maximum(own - 1, 1)
    mean_to = sums / sizes
    mean_to[np.arange(n), labels] = np.inf
    b = mean_to.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(own > 1, (b - a) / np.maximum(a, b), 0.0)
    return float(np.nan_to_num(s).mean())


def group_members(
    runs: np.ndarray, owners: list[list[int]], embeddings: np.ndarray, threshold: float
) -> list[list[list[int]]]:
    """Per chunk, the groups (lists of run indices) of `group_runs`."""
    lengths = np.nan_to_num(runs, nan=0.0).sum(axis=1)  # (chunks, runs)
    embedded = ~np.isnan(embeddings).any(axis=2)  # (chunks, runs)
    groups: list[list[list[int]]] = []
    for c, chunk_owners in enumerate(owners):
        chunk_groups: list[list[int]] = []
        for k in dict.fromkeys(chunk_owners):
            members = [j for j, owner in enumerate(chunk_owners) if owner == k]
            valid = [j for j in members if embedded[c, j]]
            if len(valid) < 2:
                chunk_groups.append(members)
                continue
            labels = fcluster(linkage(embeddings[c, valid], method="average", metric="cosine"),
                              threshold, criterion="distance")
            parts: dict[int, list[int]] = {}
            for j, label in zip(valid, labels):
                parts.setdefault(int(label), []).append(j)
            longest = max(parts.values(), key=lambda part: lengths[c, part].sum())
            longest.extend(j for j in members if j not in valid)
            chunk_groups.extend(parts.values())
        groups.append(chunk_groups)
    return groups


def group_runs(
    runs: np.ndarray, owners: list[list[int]], embeddings: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Regroup the runs of each local speaker whose voices match.

    Within one local speaker of one chunk, runs whose embeddings are within cosine
    distance `threshold` (average linkage) form one group; runs without an embedding
    (too short or all overlapped) join the longest group. Returns the ``(chunks, frames,
    max_groups)`` segmentation of the groups and their ``(chunks, max_groups, dim)``
    embeddings: the mean of the groups' unit-norm run embeddings weighted by run length
    (NaN for a group with no embedded run).
    """
    groups = group_members(runs, owners, embeddings, threshold)
    return _group_layout(runs, embeddings, groups)


def _group_layout(runs: np.ndarray, embeddings: np.ndarray, groups: list[list[list[int]]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    num_chunks, num_frames, _ = runs.shape
    lengths = np.nan_to_num(runs, nan=0.0).sum(axis=1)
    embedded = ~np.isnan(embeddings).any(axis=2)
    width = max(1, max(map(len, groups), default=0))
    grouped = np.zeros((num_chunks, num_frames, width), dtype=runs.dtype)
    grouped_embeddings = np.full((num_chunks, width, embeddings.shape[2]), np.nan)
    for c, chunk_groups in enumerate(groups):
        for g, members in enumerate(chunk_groups):
            grouped[c, :, g] = runs[c, :, members].sum(axis=0)
            valid = [j for j in members if embedded[c, j]]
            if valid:
                unit = embeddings[c, valid] / np.linalg.norm(embeddings[c, valid], axis=1,
                                                             keepdims=True)
                weights = lengths[c, valid][:, None]
                grouped_embeddings[c, g] = (unit * weights).sum(axis=0) / weights.sum()
    return grouped, grouped_embeddings


class RunClustering(AgglomerativeClustering):
    """Agglomerative clustering that picks the speaker count by silhouette and assigns runs.

    Hyper-parameters are pyannote's (``method``, ``threshold``, ``min_cluster_size``).
    `speaker_count` is ``"silhouette"`` (see the module docstring) or ``"threshold"``
    (pyannote's rule: clusters still apart at `threshold` with at least
    `min_cluster_size` members are the speakers). `group_threshold` is the cosine
    distance within which runs of one local speaker are grouped before clustering (None:
    runs are clustered as they come).
    """

    def __init__(self, metric: str = "cosine", speaker_count: str = "silhouette",
                 group_threshold: Optional[float] = None, min_active_ratio: float = 0.2,
                 count_min_active_ratio: Optional[float] = None,
                 given_count_min_active_ratio: Optional[float] = None) -> None:
        super().__init__(metric=metric)
        if speaker_count not in SPEAKER_COUNT_RULES:
            raise ValueError(f"speaker_count must be one of {', '.join(SPEAKER_COUNT_RULES)}")
        self.speaker_count = speaker_count
        self.group_threshold = group_threshold
        self.min_active_ratio = min_active_ratio
        """Share of a chunk a local speaker (or group of runs) must speak alone for its
        embedding to train the clustering (pyannote: 0.2, i.e. 2 s of a 10 s window)."""
        self.count_min_active_ratio = count_min_active_ratio
        """The same share for the embeddings that estimate the number of speakers (None:
        `min_active_ratio`); the clusters are then formed on all of the first kind."""
        self.given_count_min_active_ratio = given_count_min_active_ratio
        """`min_active_ratio` when the number of speakers (or a minimum of two or more) is
        given (None: the same)."""
        self._wanted_clusters = 1
        self._forced_from: Optional[int] = None
        self._estimate: Optional[int] = None
        self._estimate_rows: Optional[np.ndarray] = None
        self._estimate_index: set[tuple[int, int]] = set()
        # (not `_training`: pyannote's Pipeline keeps its `training` flag there, and a
        # parent pipeline's `training = ...` overwrote these arrays with a bool)
        self._trained_on: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None
        self._given_bounds: tuple[int, int] = (1, np.iinfo(np.int32).max)
        self._estimate_agrees: Optional[bool] = None
        self._count_rows: Optional[np.ndarray] = None
        self.count_evidence: dict[str, Any] = {}
        """How the last call chose the number of speakers: ``rule``, ``embeddings`` (how
        many trained the clustering), ``speakers``; for the silhouette rule also
        ``most`` (clusters apart at the threshold), ``silhouettes`` (per candidate
        count) and ``merge_distances`` (the dendrogram's last merges, highest last); with
        a given count ``requested`` (the count asked for), ``found`` (the clusters the
        silhouette kept) and
        ``estimate_within_given`` (whether the count estimated without it met it, and
        the estimate's training set was kept); with `count_min_active_ratio`,
        ``counted_embeddings``; and ``most_local_speakers`` (`most_local_speakers`: the
        most speakers the segmentation told apart in one window)."""

    # ------------------------------------------------------------------ training set

    def filter_embeddings(self, embeddings: np.ndarray,
                          segmentations: Optional[SlidingWindowFeature] = None,
                          min_active_ratio: Optional[float] = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The embeddings that train the clustering: those of local speakers who speak
        alone for `min_active_ratio` of the chunk; all valid embeddings when that leaves
        fewer than the clusters asked for (a given count or minimum of 2 or more)."""
        self._estimate_index = set()
        chosen = self._training_set(embeddings, segmentations, min_active_ratio)
        self._estimate_rows = None
        if self._estimate_agrees is False:
            # the embeddings the estimate was made of: the given count keeps its clusters
            self._estimate_rows = np.array(
                [(c, s) in self._estimate_index
                 for c, s in zip(chosen[1].tolist(), chosen[2].tolist())], dtype=bool)
        return chosen

    def _training_set(self, embeddings: np.ndarray,
                      segmentations: Optional[SlidingWindowFeature],
                      min_active_ratio: Optional[float]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ratio = self.min_active_ratio if min_active_ratio is None else min_active_ratio
        self._estimate_agrees = None
        if self._wanted_clusters >= 2 and self.given_count_min_active_ratio is not None:
            self._estimate_agrees = self._estimate_within_given(embeddings, segmentations,
                                                                ratio)
            if not self._estimate_agrees:
                ratio = self.given_count_min_active_ratio
        chosen = super().filter_embeddings(embeddings, segmentations=segmentations,
                                           min_active_ratio=ratio)
        self._count_rows = None
        strict = self.count_min_active_ratio
        if strict is not None and strict > ratio and self._wanted_clusters < 2:
            _, chunk_idx, speaker_idx = super().filter_embeddings(
                embeddings, segmentations=segmentations, min_active_ratio=strict)
            counted = set(zip(chunk_idx.tolist(), speaker_idx.tolist()))
            self._count_rows = np.array([(c, s) in counted for c, s in
                                         zip(chosen[1].tolist(), chosen[2].tolist())], bool)
        if self._wanted_clusters >= 2 and len(chosen[0]) < self._wanted_clusters:
            # In meetings with much overlapped speech few local speakers talk alone for
            # 2 s; without a fallback a forced count of 4 found 1 speaker (AMI trn07).
            chunk_idx, speaker_idx = np.where(~np.isnan(embeddings).any(axis=2))
            if len(chunk_idx) > len(chosen[0]):
                return embeddings[chunk_idx, speaker_idx], chunk_idx, speaker_idx
        return chosen

    def _estimate_within_given(self, embeddings: np.ndarray,
                               segmentations: Optional[SlidingWindowFeature], ratio: float
                               ) -> bool:
        """Whether the count estimated without a given one (on the usual training set)
        is within the given bounds: then the given count changes nothing, so that it is
        never worse than estimating where the estimate is right (AMI dev01: 2 speakers
        either way, 33.5 % DER estimated, 53.1 % through the given count's path)."""
        chosen, chunk_idx, speaker_idx = super().filter_embeddings(
            embeddings, segmentations=segmentations, min_active_ratio=ratio)
        self._estimate_index = set(zip(chunk_idx.tolist(), speaker_idx.tolist()))
        if len(chosen) < 2:
            found = 1 if len(chosen) else 0
        else:
            evidence = self.count_evidence
            found = self._best_count(chosen, self._dendrogram(chosen), 1, len(chosen))
            self.count_evidence = evidence
        low, high = self._given_bounds
        self._estimate = found
        return low <= found <= high

    # ------------------------------------------------------------------ speaker count

    def _dendrogram(self, embeddings: np.ndarray) -> np.ndarray:
        # the same metric handling as pyannote's AgglomerativeClustering.cluster
        if self.metric == "cosine" and self.method in ("centroid", "median", "ward"):
            with np.errstate(divide="ignore", invalid="ignore"):
                embeddings = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
            return linkage(embeddings, method=self.method, metric="euclidean")
        return linkage(embeddings, method=self.method, metric=self.metric)

    def cluster(  # type: ignore[override]  # (pyannote's __call__ always passes the bounds)
            self, embeddings: np.ndarray, min_clusters: int, max_clusters: int,
            num_clusters: Optional[int] = None) -> np.ndarray:
        """0-indexed cluster of each embedding (see the class docstring for the count)."""
        n = len(embeddings)
        if self.speaker_count == "threshold":
            labels = super().cluster(embeddings, min_clusters=min_clusters,
                                     max_clusters=max_clusters, num_clusters=num_clusters)
            self.count_evidence = {"rule": "threshold", "embeddings": n,
                                   "speakers": len(set(labels.tolist()))}
            return labels
        if n < 2:
            self.count_evidence = {"rule": "silhouette", "embeddings": n, "speakers": 1}
            return np.zeros(n, dtype=int)
        dendrogram = self._dendrogram(embeddings)
        self.count_evidence = {"rule": "given" if num_clusters else "silhouette",
                               "embeddings": n,
                               "merge_distances": [round(float(d), 4)
                                                   for d in dendrogram[-5:, 2]]}
        rows = self._count_rows
        if num_clusters is None and rows is not None and len(rows) == n and not rows.all():
            # the count from the embeddings of speakers who talk alone long enough, the
            # clusters from all
            counted = embeddings[rows]
            found = 1 if len(counted) < 2 else self._best_count(
                counted, self._dendrogram(counted), min_clusters, max_clusters)
            self.count_evidence.update(counted_embeddings=len(counted))
            labels = self._forced_cut(embeddings, dendrogram, max(found, min_clusters))
        elif num_clusters is None and self._estimate_agrees is False:
            # bounds the estimate does not meet: the nearest count within them, the way a
            # given count is made (the silhouette over the short speech they let in chose
            # 7 speakers on a 2-speaker call for a minimum of 3)
            low, high = self._given_bounds
            wanted = min(max(self._estimate or 1, low, min_clusters), high, max_clusters)
            labels = self._forced_cut(embeddings, dendrogram, wanted)
        elif num_clusters is None:
            num_clusters = self._best_count(embeddings, dendrogram, min_clusters, max_clusters)
            labels = np.unique(fcluster(dendrogram, num_clusters, criterion="maxclust"),
                               return_inverse=True)[1]
        else:
            labels = self._forced_cut(embeddings, dendrogram, num_clusters)
        self.count_evidence["speakers"] = len(set(labels.tolist()))
        if self._estimate_agrees is not None:
            self.count_evidence["estimate_within_given"] = self._estimate_agrees
        return labels

    def _forced_cut(self, embeddings: np.ndarray, dendrogram: np.ndarray, k: int
                    ) -> np.ndarray:
        """`k` clusters for a given speaker count: the clusters the silhouette finds (at
        most `k`), then the embeddings farthest from their cluster's centroid as new ones.

        Cutting the dendrogram into exactly `k` clusters splits the voices that talk most
        when the others hardly speak: on AMI meetings (speakers of 0.4 s next to one of
        24 s in 30 s) a forced count of 3 or 4 spread the main speaker over every cluster
        and did worse than estimating. Speakers the embeddings do not separate cost
        least as small clusters.
        """
        n = len(embeddings)
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        rows = self._estimate_rows
        if rows is not None and len(rows) == n and rows.any():
            # the estimate's clusters, from the embeddings it was made of; the shorter
            # speech that a given count lets in joins the nearest of them (clustered
            # with it, it split the main voices: AMI trn05, trn08)
            usual = embeddings[rows]
            found, usual_labels = 1, np.zeros(len(usual), dtype=int)
            if len(usual) >= 2:
                usual_dendrogram = self._dendrogram(usual)
                found = self._best_count(usual, usual_dendrogram, 1,
                                         max(1, min(k, self._estimate or k)))
                usual_labels = np.unique(fcluster(usual_dendrogram, found,
                                                  criterion="maxclust"),
                                         return_inverse=True)[1]
            centroids = np.stack([unit[rows][usual_labels == c].mean(axis=0)
                                  for c in range(found)])
            labels = np.argmax(unit @ centroids.T, axis=1)
            labels[rows] = usual_labels
        else:
            found = self._best_count(embeddings, dendrogram, 1, k)
            labels = np.unique(fcluster(dendrogram, found, criterion="maxclust"),
                               return_inverse=True)[1]
        while labels.max() + 1 < min(k, n):
            centroids = np.stack([unit[labels == c].mean(axis=0)
                                  for c in range(labels.max() + 1)])
            centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
            distance = 1.0 - np.sum(unit * centroids[labels], axis=1)
            distance[np.bincount(labels)[labels] < 2] = -np.inf  # keep every cluster
            labels[int(np.argmax(distance))] = labels.max() + 1
        self.count_evidence["found"] = found
        if labels.max() + 1 > found:
            self._forced_from = found
        return labels

    @property
    def forced_clusters(self) -> list[int]:
        """The clusters the last call made out of outlying embeddings for a given count
        (`_forced_cut`); the pipeline's reconstruction keeps each of them."""
        if self._forced_from is None or self._trained_on is None:
            return []
        return list(range(self._forced_from, int(self._trained_on[2].max()) + 1))

    def assign_embeddings(self, embeddings: np.ndarray, train_chunk_idx: np.ndarray,
                          train_speaker_idx: np.ndarray, train_clusters: np.ndarray,
                          constrained: bool = False) -> Any:
        rows = self._estimate_rows
        if rows is not None and len(rows) == len(train_clusters) and self._forced_from:
            # centroids of the estimate's embeddings (and the forced clusters' own)
            keep = rows | (train_clusters >= self._forced_from)
            train_chunk_idx, train_speaker_idx, train_clusters = (
                train_chunk_idx[keep], train_speaker_idx[keep], train_clusters[keep])
        # kept for _keep_forced_to_members: which embeddings formed each cluster
        self._trained_on = (train_chunk_idx, train_speaker_idx, train_clusters)
        return super().assign_embeddings(embeddings, train_chunk_idx, train_speaker_idx,
                                         train_clusters, constrained=constrained)

    def _forced_members(self, shape: tuple[int, int]) -> dict[int, np.ndarray]:
        """Per cluster that `_forced_cut` made out of outlying embeddings, the ``(chunks,
        speakers)`` mask of the embeddings that formed it."""
        if self._forced_from is None or self._trained_on is None:
            return {}
        chunk_idx, speaker_idx, clusters = self._trained_on
        out = {}
        for k in range(self._forced_from, int(clusters.max()) + 1):
            mask = np.zeros(shape, dtype=bool)
            mask[chunk_idx[clusters == k], speaker_idx[clusters == k]] = True
            out[k] = mask
        return out

    @staticmethod
    def _keep_forced_to_members(soft: np.ndarray, members: dict[int, np.ndarray]) -> None:
        """A cluster made for a given count out of a few outlying embeddings may take the
        runs of those embeddings only (each still goes where it is nearest): the speakers
        the embeddings did not separate cost least that way. Runs of other speakers near
        its outlier would join it otherwise, and they were mostly the main voice's."""
        for k, mask in members.items():
            soft[..., k] = np.where(mask, soft[..., k], _UNREACHABLE)

    def _best_count(self, embeddings: np.ndarray, dendrogram: np.ndarray,
                    min_clusters: int, max_clusters: int) -> int:
        n = len(embeddings)
        # pyannote's heuristic for small inputs: at most a tenth of the embeddings
        min_size = min(self.min_cluster_size, max(1, round(0.1 * n)))
        apart = fcluster(dendrogram, self.threshold, criterion="distance")
        most = int((np.bincount(apart) >= min_size).sum())
        # at most MAX_SPEAKERS candidates (each costs a pass over the n x n distances;
        # min_cluster_size 1 left every embedding of noisy input its own cluster)
        most = max(min_clusters, min(most, max_clusters, MAX_SPEAKERS))
        self.count_evidence.update(threshold=float(self.threshold), most=most, silhouettes={})
        if most <= 1:
            return 1
        low = max(2, min_clusters)
        if low >= most or n <= 2:
            return max(low, min(most, n))
        unit = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float32)
        distances = unit @ unit.T  # float32, made in place: one n x n array
        np.subtract(1.0, distances, out=distances)
        np.clip(distances, 0.0, 2.0, out=distances)
        np.fill_diagonal(distances, 0.0)
        scores = {k: silhouette_score(distances, fcluster(dendrogram, k, criterion="maxclust"))
                  for k in range(low, min(most, n - 1) + 1)}
        self.count_evidence["silhouettes"] = {k: round(v, 4) for k, v in scores.items()}
        return max(scores, key=lambda k: (scores[k], -k))

    # ------------------------------------------------------------------ runs

    # (pyannote annotates its __call__ as one array; it returns these three too)
    def __call__(  # type: ignore[override]
            self, embeddings: np.ndarray, segmentations: Optional[SlidingWindowFeature] = None,
            num_clusters: Optional[int] = None, min_clusters: Optional[int] = None,
            max_clusters: Optional[int] = None, file: Any = None, **kwargs: Any
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # pyannote skips the clustering with fewer than two embeddings or one speaker at most
        self.count_evidence = {"rule": "none", "embeddings": 0, "speakers": 1}
        self._forced_from, self._trained_on, self._estimate = None, None, None
        self._wanted_clusters = num_clusters or min_clusters or 1
        self._given_bounds = (self._wanted_clusters,
                              num_clusters or max_clusters or np.iinfo(np.int32).max)
        owners = file.get(RUN_OWNERS) if isinstance(file, Mapping) else None
        hard, soft, centroids = self._cluster(embeddings, segmentations, owners, num_clusters,
                                              min_clusters, max_clusters)
        if num_clusters:  # (fewer embeddings than that give fewer speakers)
            self.count_evidence["requested"] = int(num_clusters)
        if segmentations is not None:
            self.count_evidence["most_local_speakers"] = most_local_speakers(
                segmentations.data, owners)
        return hard, soft, centroids

    def _cluster(self, embeddings: np.ndarray, segmentations: Optional[SlidingWindowFeature],
                 owners: Optional[list[list[int]]], num_clusters: Optional[int],
                 min_clusters: Optional[int], max_clusters: Optional[int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if owners is None or self.group_threshold is None or segmentations is None:
            hard, soft, centroids = super().__call__(
                embeddings, segmentations, num_clusters=num_clusters,
                min_clusters=min_clusters, max_clusters=max_clusters)
            forced = self._forced_members(hard.shape)
            if forced:
                self._keep_forced_to_members(soft, forced)
                hard = np.argmax(np.nan_to_num(soft, nan=_UNREACHABLE), axis=2)
            if num_clusters and segmentations is not None:
                hard = _every_cluster_used(hard, soft, segmentations.data)
            return hard, soft, centroids
        groups = group_members(segmentations.data, owners, embeddings, self.group_threshold)
        grouped, group_embeddings = _group_layout(segmentations.data, embeddings, groups)
        group_hard, group_soft, centroids = super().__call__(
            group_embeddings, SlidingWindowFeature(grouped, segmentations.sliding_window),
            num_clusters=num_clusters, min_clusters=min_clusters, max_clusters=max_clusters)
        num_chunks, num_runs, dimension = embeddings.shape
        # each run goes to the centroid nearest its own embedding; runs without one
        # (too short, or all in overlap) take their group's scores
        soft = (2.0 - cdist(embeddings.reshape(-1, dimension), centroids, metric=self.metric)
                ).reshape(num_chunks, num_runs, -1)
        forced = self._forced_members(group_hard.shape)
        runs_of = {k: np.zeros((num_chunks, num_runs), dtype=bool) for k in forced}
        for c, chunk_groups in enumerate(groups):
            for g, members in enumerate(chunk_groups):
                for j in members:
                    if np.isnan(soft[c, j]).any():
                        soft[c, j] = group_soft[c, g]
                    for k, mask in forced.items():
                        runs_of[k][c, j] = mask[c, g]
        self._keep_forced_to_members(soft, runs_of)
        filled = np.nan_to_num(soft, nan=np.nanmin(soft) if np.isfinite(soft).any() else 0.0)
        hard = np.argmax(filled, axis=2)  # (not int8: more than 127 clusters wrapped)
        if num_clusters:
            hard = _every_cluster_used(hard, soft, segmentations.data)
        return hard, soft, centroids


_UNREACHABLE = -1.0
"""A score below any centroid's (scores are 2 minus a cosine distance: 0 to 2)."""


def _every_cluster_used(hard: np.ndarray, soft: np.ndarray, segmentations: np.ndarray
                        ) -> np.ndarray:
    """Give each cluster that no active local speaker (or run) went to the one that
    fits it best, taken from a cluster that keeps others: a speaker count the caller
    gave is honoured even when one speaker's centroid is nobody's nearest."""
    hard = hard.copy()
    active = np.nan_to_num(segmentations, nan=0.0).sum(axis=1) > 0  # (chunks, speakers)
    scores = np.nan_to_num(soft, nan=-np.inf)
    num_clusters = soft.shape[2]
    for k in range(num_clusters):
        members = active & (hard == k)
        if members.any():
            continue
        sizes = np.bincount(hard[active].ravel(), minlength=num_clusters)
        best, where = -np.inf, None
        for c, j in zip(*np.nonzero(active)):
            current = hard[c, j]
            if sizes[current] < 2 or not np.isfinite(scores[c, j, k]):
                continue
            gain = scores[c, j, k] - scores[c, j, current]
            if gain > best:
                best, where = gain, (c, j)
        if where is not None:
            hard[where] = k
    return hard
