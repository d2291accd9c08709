"""What segmentation-3.0 says about each window, read for the clustering: each local
speaker cut into runs of speech (`split_into_runs`), and how many speakers each frame
holds according to the powerset classes (`powerset_frame_count`). The offline pipeline
(`workbench.engine.diarization.pipelines`) and the online diarizer
(`workbench.live.diarization`) both use them.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["cluster_activations", "powerset_frame_count", "split_into_runs",
           "speakers_from_nearest"]


def split_into_runs(
    activity: np.ndarray, min_gap_frames: int, piece_frames: Optional[int] = None
) -> tuple[np.ndarray, list[list[int]]]:
    """Split each local speaker of each chunk into runs of speech.

    `activity` is a ``(chunks, frames, speakers)`` binary segmentation. A run ends where
    the speaker is silent for at least `min_gap_frames` frames; with `piece_frames`, a
    longer run is then cut into ``round(length / piece_frames)`` equal pieces (at least
    one), so that two voices without a pause between them fall in different runs.
    Returns the ``(chunks, frames, max_runs)`` segmentation of the runs (each frame of a
    run keeps its value, so runs partition the activity exactly and per-frame speaker
    counts do not change) and, per chunk, the local speaker each run came from.
    """
    if piece_frames is not None and piece_frames < 1:
        raise ValueError("piece_frames must be >= 1 (or None)")
    active = np.nan_to_num(activity, nan=0.0) > 0.5
    num_chunks, num_frames, num_speakers = active.shape
    spans: list[list[tuple[int, int, int]]] = []
    for c in range(num_chunks):
        chunk_spans: list[tuple[int, int, int]] = []
        for k in range(num_speakers):
            frames = np.flatnonzero(active[c, :, k])
            if frames.size == 0:
                continue
            breaks = np.flatnonzero(np.diff(frames) > min_gap_frames)
            starts = np.concatenate(([frames[0]], frames[breaks + 1]))
            ends = np.concatenate((frames[breaks], [frames[-1]])) + 1
            for start, end in zip(starts.tolist(), ends.tolist()):
                pieces = 1 if piece_frames is None else max(1, round((end - start) / piece_frames))
                bounds = np.linspace(start, end, pieces + 1).round().astype(int)
                chunk_spans.extend((k, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]))
        spans.append(chunk_spans)
    runs = np.zeros((num_chunks, num_frames, max(1, max(map(len, spans), default=0))),
                    dtype=activity.dtype)
    owners: list[list[int]] = []
    for c, chunk_spans in enumerate(spans):
        for j, (k, start, end) in enumerate(chunk_spans):
            runs[c, start:end, j] = activity[c, start:end, k]
        owners.append([k for k, _, _ in chunk_spans])
    return runs, owners


def powerset_frame_count(probabilities: np.ndarray, cardinality: np.ndarray,
                         overlap_bias: float = 0.0) -> np.ndarray:
    """Speakers per frame of each chunk from powerset class probabilities.

    `probabilities` is ``(chunks, frames, classes)`` (each frame sums to 1) and
    `cardinality` the number of speakers of each class. The probabilities of the classes
    with the same number of speakers are summed and the most likely number wins; a
    number of two or more speakers (overlap) also wins when its probability is within
    `overlap_bias` of the best. Returns ``(chunks, frames)`` integers.
    """
    cardinality = np.asarray(cardinality).astype(int)
    data = np.nan_to_num(probabilities, nan=0.0)
    by_count = np.stack([data[..., cardinality == n].sum(axis=-1)
                         for n in range(int(cardinality.max()) + 1)], axis=-1)
    count = np.argmax(by_count, axis=-1)
    if overlap_bias > 0 and by_count.shape[-1] > 2:
        best = by_count.max(axis=-1)
        overlap = by_count[..., 2:]
        favoured = overlap.max(axis=-1) + overlap_bias >= best
        count = np.where(favoured, np.argmax(overlap, axis=-1) + 2, count)
    return count


def cluster_activations(segmentations: Any, hard_clusters: np.ndarray,
                         count: Any) -> np.ndarray:
    """The ``(frames, clusters)`` activations that pyannote's `to_diarization` ranks,
    on the frames of its output."""
    from pyannote.audio.core.inference import Inference
    from pyannote.core import SlidingWindowFeature

    num_chunks, num_frames, _ = segmentations.data.shape
    num_clusters = int(np.max(hard_clusters)) + 1
    clustered = np.full((num_chunks, num_frames, num_clusters), np.nan)
    for c in range(num_chunks):
        for k in np.unique(hard_clusters[c]):
            if k >= 0:
                clustered[c, :, k] = np.max(segmentations.data[c][:, hard_clusters[c] == k],
                                            axis=1)
    activations = Inference.aggregate(
        SlidingWindowFeature(clustered, segmentations.sliding_window), count.sliding_window,
        hamming=False, missing=0.0, skip_average=True)
    return activations.crop(activations.extent & count.extent, return_data=False).data


def speakers_from_nearest(discrete: np.ndarray, activations: np.ndarray) -> int:
    """Give the frames of `discrete` ``(frames, clusters)`` that hold speakers where no
    cluster is active (`activations` all 0: the count says speech that no window's local
    speaker covers, as `fill_speech` and the powerset count make) the clusters most active
    at the nearest frame where one is, in place; pyannote ranks such a frame's clusters by
    index, so they went to the first cluster. Returns how many frames changed."""
    active = activations.max(axis=1) > 0
    unranked = np.flatnonzero((discrete.sum(axis=1) > 0) & ~active)
    ranked = np.flatnonzero(active)
    if len(unranked) == 0 or len(ranked) == 0:
        return 0
    position = np.searchsorted(ranked, unranked)
    after = ranked[np.clip(position, 0, len(ranked) - 1)]
    before = ranked[np.clip(position - 1, 0, len(ranked) - 1)]
    nearest = np.where(np.abs(unranked - before) <= np.abs(after - unranked), before, after)
    changed = 0
    for t, n in zip(unranked, nearest):
        speakers = int(discrete[t].sum())
        top = np.argsort(-activations[n], kind="stable")[:speakers]
        row = np.zeros_like(discrete[t])
        row[top] = 1
        changed += int(not np.array_equal(row, discrete[t]))
        discrete[t] = row
    return changed
