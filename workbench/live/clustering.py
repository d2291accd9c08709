"""Incremental clustering of speakers for online diarization (`workbench.live.diarization`).

`OnlineSpeakerClustering` keeps global speakers as centroids (sums of unit CAM++
embeddings) and assigns each window's items (local speakers or runs of them) to them, as
diart does: join the nearest speaker within ``delta_new``, open a new one otherwise (long
items only), never give two items that cannot share one the same speaker; plus a
confirmation count for new voices, the take-over of a speaker only a short first item
opened (``adopt_distance``), the split of a speaker whose speech falls into two clear
groups (`split`: two close voices merged early), and an optional re-clustering of all
speech so far.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["OnlineSpeakerClustering", "continuing"]


def continuing(prev: tuple[float, np.ndarray], start: float, runs: np.ndarray,
               owners: list[int], frame_step: float, threshold: float,
               labels: list[Optional[int]]) -> np.ndarray:
    """The centroid each run of a window goes on from, or -1: a run inside a stretch of
    its local speaker without a pause (its runs' extents: runs are cut at pauses) that
    starts in the frames the last window saw too, where a speaker that window gave them
    agrees with the stretch on at least `threshold` of them (intersection over union; the
    best agreeing one). ``prev``: the last window's start (s) and the speakers it gave
    ``(frames, speakers)`` bool; ``runs`` ``(frames, runs)`` bool,
    ``owners`` their local speakers; ``labels``: each centroid's speaker (`assign`'s
    `fallback` takes the result)."""
    prev_start, prev_active = prev
    n = runs.shape[0]
    shift = int(round((start - prev_start) / frame_step))
    out = np.full(len(owners), -1)
    if not 0 < shift < n or prev_active.shape[0] != n:
        return out
    owner = np.asarray(owners)
    before = prev_active[shift:]  # (shared frames, speakers)
    lengths = runs.sum(axis=0)
    for o in set(owners):
        mine = owner == o
        full = np.zeros(n, bool)
        for j in np.flatnonzero(mine):  # (a gap too short to cut a run is inside it)
            frames = np.flatnonzero(runs[:, j])
            if frames.size:
                full[frames[0]:frames[-1] + 1] = True
        edges = np.flatnonzero(np.diff(np.concatenate([[0], full.astype(np.int8), [0]])))
        for s, e in zip(edges[::2], edges[1::2]):  # its stretches of speech without a pause
            if s >= n - shift:
                continue  # (all of it new: nothing to go on from)
            act = np.zeros(n - shift, bool)
            act[s:min(e, n - shift)] = True
            inter = (act[:, None] & before).sum(axis=0)
            union = (act[:, None] | before).sum(axis=0)
            iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
            g = int(np.argmax(iou))
            if iou[g] >= threshold and g in labels:
                inside = mine & (runs[s:e].sum(axis=0) == lengths)
                out[inside] = labels.index(g)
    return out


class OnlineSpeakerClustering:
    """Global speakers as centroids (sums of unit CAM++ embeddings), assigned per window."""

    def __init__(self, delta_new: float, max_speakers: int = 20, confirm_windows: int = 1,
                 adopt_distance: Optional[float] = None) -> None:
        self.delta_new = delta_new
        self.max_speakers = max_speakers
        self.confirm_windows = confirm_windows
        self.adopt_distance = adopt_distance
        self.centroids: list[np.ndarray] = []
        self.learned_long: list[bool] = []  # has a long item joined the centroid yet?
        self.hits: list[int] = []  # windows in which a long item joined each centroid
        self.labels: list[Optional[int]] = []  # output speaker of each confirmed centroid
        self.next_label = 0
        # what `recluster` learns from: unit embeddings, their speech (s), their speaker
        self._history: list[np.ndarray] = []
        self._weights: list[float] = []
        self._given: list[int] = []
        self._long: list[bool] = []
        self.borrowed: list[int] = []  # items the last `speakers` gave a stand-in speaker
        self.reclusterings = 0
        self._seeded: list[tuple[int, np.ndarray, bool]] = []  # (label, centroid, long)

    @property
    def num_speakers(self) -> int:
        """Speakers given so far (output labels used)."""
        return self.next_label

    def remember(self, embeddings: np.ndarray, seconds: np.ndarray, speakers: list[int],
                 keep: int = 1500, long: Optional[np.ndarray] = None) -> None:
        """Keep items, their seconds, the speaker they were given and whether they were
        long (moved a centroid) for `recluster` and `split` (at most `keep`: beyond, every
        other one of the older half is dropped)."""
        flags = np.zeros(len(speakers), bool) if long is None else np.asarray(long, bool)
        for e, w, g, f in zip(embeddings, seconds, speakers, flags):
            if g >= 0 and np.isfinite(e).all():
                self._history.append(e / np.linalg.norm(e))
                self._weights.append(float(w))
                self._given.append(int(g))
                self._long.append(bool(f))
        if len(self._history) > keep:
            half = len(self._history) // 2
            order = list(range(0, half, 2)) + list(range(half, len(self._history)))
            self._history = [self._history[i] for i in order]
            self._weights = [self._weights[i] for i in order]
            self._given = [self._given[i] for i in order]
            self._long = [self._long[i] for i in order]

    def recluster(self, threshold: float, min_speech: float) -> dict[int, int]:
        """Cluster everything remembered again and make those clusters the centroids.

        Average-linkage cosine clusters apart at `threshold`; a cluster with less than
        `min_speech` s joins the nearest bigger one. Each cluster takes the speaker that
        shares most of its speech with it (Hungarian matching, so two clusters never take
        one speaker); a cluster left without one becomes a new speaker. Speakers that
        no cluster takes stop being given (they were a split or a mix). Returns those,
        each with the speaker most of its speech went to.
        """
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.optimize import linear_sum_assignment

        n = len(self._history)
        if n < 4:
            return {}
        x = np.stack(self._history)
        w = np.asarray(self._weights)
        clusters = fcluster(linkage(x, method="average", metric="cosine"), threshold,
                            criterion="distance") - 1
        k = clusters.max() + 1
        speech = np.bincount(clusters, weights=w, minlength=k)
        big = np.flatnonzero(speech >= min_speech)
        if big.size == 0:
            big = np.array([int(np.argmax(speech))])
        sums = np.stack([(x[clusters == c] * w[clusters == c, None]).sum(axis=0) for c in range(k)])
        unit = sums / np.linalg.norm(sums, axis=1, keepdims=True)
        nearest = big[np.argmax(unit @ unit[big].T, axis=1)]
        clusters = nearest[clusters]  # small clusters join the nearest big one
        given = np.asarray(self._given)
        labels = sorted(set(given.tolist()))
        shared = np.array([[w[(clusters == c) & (given == g)].sum() for g in labels]
                           for c in big])
        rows, cols = linear_sum_assignment(-shared)
        mapping = {int(big[r]): labels[c] for r, c in zip(rows, cols) if shared[r, c] > 0}
        for c in big:
            if int(c) not in mapping and self.next_label < self.max_speakers:
                mapping[int(c)] = self.next_label
                self.next_label += 1
        kept = [int(c) for c in big if int(c) in mapping]
        # as `assign` keeps them: sums of unit embeddings
        self.centroids = [x[clusters == c].sum(axis=0) for c in kept]
        self.learned_long = [True] * len(kept)
        self.labels = [mapping[c] for c in kept]
        self.hits = [self.confirm_windows] * len(kept)
        new_given = [mapping.get(int(c), g) for c, g in zip(clusters, self._given)]
        merged: dict[int, int] = {}
        for g in set(labels) - set(self.labels):
            went = [ng for og, ng in zip(self._given, new_given) if og == g and ng != g]
            if went:
                merged[g] = max(set(went), key=went.count)
        self._given = new_given
        # a seeded speaker (an earlier session's) not given in this one yet has no speech
        # here to be clustered from: kept as it came, for when that person speaks
        for label, centroid, learned in self._seeded:
            if label not in self.labels and label not in labels:
                self.centroids.append(centroid.copy())
                self.learned_long.append(learned)
                self.labels.append(label)
                self.hits.append(self.confirm_windows)
        self.reclusterings += 1
        return merged

    def split(self, distance: float, min_speech: float, scale: float = 1.0) -> dict[int, int]:
        """Split each speaker whose remembered items fall into two groups (average-linkage
        cosine, cut into two) each with `min_speech` s of speech or more and at least
        `distance` apart (cosine between the groups' mean directions): two voices close
        enough to have been merged when the second one first spoke. An item's seconds
        count `scale` times (the online diarizer remembers every run of every window, so
        a second of speech about window / step times: scale = step / window). The group
        with more speech keeps the speaker; the other becomes a new speaker (up to
        `max_speakers`) whose centroid its long items make, and they leave the kept
        speaker's centroid. Labels already given do not change; nothing is split while
        a centroid waits for confirmation (`confirm_windows`). Returns ``{speaker: new
        speaker}``."""
        from scipy.cluster.hierarchy import fcluster, linkage

        out: dict[int, int] = {}
        if len(self._history) < 6 or None in self.labels:
            return out
        x = np.stack(self._history)
        w = np.asarray(self._weights) * scale
        long = np.asarray(self._long)
        for c, label in enumerate(list(self.labels)):
            if label is None or self.next_label >= self.max_speakers:
                continue
            mine = np.flatnonzero(np.asarray(self._given) == label)
            if len(mine) < 6 or w[mine].sum() < 2 * min_speech:
                continue
            groups = fcluster(linkage(x[mine], method="average", metric="cosine"), 2,
                              criterion="maxclust") - 1
            if groups.max() < 1:
                continue
            speech = [w[mine][groups == g].sum() for g in (0, 1)]
            if min(speech) < min_speech:
                continue
            sums = [x[mine][groups == g].sum(axis=0) for g in (0, 1)]
            unit = [v / np.linalg.norm(v) for v in sums]
            if 1.0 - float(unit[0] @ unit[1]) < distance:
                continue
            keep = int(np.argmax(speech))
            moved = mine[groups != keep]
            learned = x[moved[long[moved]]].sum(axis=0) if long[moved].any() else None
            rest = self.centroids[c] - (learned if learned is not None else 0.0)
            # (what the moved voice taught the centroid leaves it; if little would be left,
            # the kept group's items are the centroid)
            if np.linalg.norm(rest) > 0.5 and float(rest @ sums[keep]) > 0:
                self.centroids[c] = rest
            else:
                self.centroids[c] = sums[keep]
                for i in mine[groups == keep]:  # (all of them in it now)
                    self._long[i] = True
            self.centroids.append(learned if learned is not None else sums[1 - keep])
            if learned is None:
                for i in moved:
                    self._long[i] = True
            self.learned_long.append(True)
            self.hits.append(self.confirm_windows)
            self.labels.append(self.next_label)
            for i in moved:
                self._given[i] = self.next_label
            out[label] = self.next_label
            self.next_label += 1
        return out

    def known(self) -> list[tuple[int, np.ndarray, bool]]:
        """The speakers given so far: (label, centroid, whether a long item joined it),
        in label order (what `seed` takes)."""
        return sorted((label, c.copy(), learned)
                      for c, label, learned in zip(self.centroids, self.labels, self.learned_long)
                      if label is not None and c.any())

    def seed(self, speakers: list[tuple[int, np.ndarray, bool]]) -> bool:
        """Start from the speakers an earlier session of the same recording gave (`known`):
        each keeps its label, and new voices are numbered after them. Only before any
        speaker is given (labels already out cannot change): returns whether it seeded.
        `recluster` learns from this session's speech only, so it drops seeded speakers
        that no new speech joins, except those this session has not given yet (they keep
        their label for when they speak)."""
        self.check_seed(speakers)
        if self.centroids or self.next_label or not speakers:
            return False
        labels = [int(label) for label, _, _ in speakers]
        self._seeded = [(int(label), np.asarray(c, dtype=np.float64).copy(), bool(learned))
                        for label, c, learned in speakers]
        self.centroids = [np.asarray(c, dtype=np.float64).copy() for _, c, _ in speakers]
        self.learned_long = [bool(learned) for _, _, learned in speakers]
        self.hits = [self.confirm_windows] * len(speakers)
        self.labels = list(labels)
        self.next_label = max(labels) + 1
        return True

    def check_seed(self, speakers: list[tuple[int, np.ndarray, bool]]) -> None:
        """ValueError unless the labels of `speakers` (for `seed`) are distinct and below
        `max_speakers`."""
        labels = [int(label) for label, _, _ in speakers]
        if len(set(labels)) != len(labels) or any(not 0 <= g < self.max_speakers for g in labels):
            raise ValueError(f"not speakers this clustering can go on with: {labels} are not "
                             f"distinct labels below max_speakers ({self.max_speakers})")

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine distances ``(local, global)``."""
        if not self.centroids:
            return np.zeros((len(embeddings), 0))
        c = np.stack(self.centroids)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        return 1.0 - e @ c.T

    def assign(self, embeddings: np.ndarray, long: np.ndarray,
               cannot_link: Optional[np.ndarray] = None,
               fallback: Optional[np.ndarray] = None) -> list[int]:
        """Global speaker of each item (a local speaker or a run of one).

        Items go longest-first (``long`` ones before the others, then in order). Each
        takes the nearest speaker not already given to an item it cannot share one with
        (`cannot_link`, ``(k, k)`` bool; default: all pairs, diart's constraint for local
        speakers of one window). Within `delta_new` it joins it (and, if long, moves its
        centroid); farther, a long item joins its `fallback` centroid (a voice going on
        from the last window: `continuing`; -1 none) if allowed, or takes over the nearest
        allowed centroid that only short items joined so far if it is within
        `adopt_distance`, or else opens a new speaker (up to `max_speakers`); a short one
        joins the nearest allowed speaker anyway (or opens the first one).
        """
        k = len(embeddings)
        if k == 0:
            return []
        if cannot_link is None:
            cannot_link = ~np.eye(k, dtype=bool)
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        out = [-1] * k
        for r in sorted(range(k), key=lambda i: (not long[i], i)):
            banned = {out[j] for j in range(k) if cannot_link[r, j] and out[j] >= 0}
            dist = self.distances(unit[r][None])[0]
            allowed = [int(c) for c in np.argsort(dist) if int(c) not in banned]
            weak = [c for c in allowed if not self.learned_long[c]]
            if allowed and dist[allowed[0]] <= self.delta_new:
                out[r] = allowed[0]
            elif (long[r] and fallback is not None and fallback[r] >= 0
                  and int(fallback[r]) not in banned):
                out[r] = int(fallback[r])  # its local speaker goes on from the last window
            elif (long[r] and weak and self.adopt_distance is not None
                  and dist[weak[0]] <= self.adopt_distance):
                # a centroid that only a short item made (the first words, "Hello?")
                # takes the first long voice near enough instead of a new speaker
                out[r] = weak[0]
                self.centroids[out[r]] = np.zeros_like(unit[r])
            elif (long[r] or not self.centroids) and len(self.centroids) < 4 * self.max_speakers:
                self.centroids.append(np.zeros_like(unit[r]))
                self.learned_long.append(False)
                self.hits.append(0)
                self.labels.append(None)
                out[r] = len(self.centroids) - 1
            elif allowed:
                out[r] = allowed[0]
            else:
                continue
            # new speakers always learn their first embedding; others only from long items
            if long[r] or not self.centroids[out[r]].any():
                self.centroids[out[r]] = self.centroids[out[r]] + unit[r]
            self.learned_long[out[r]] = self.learned_long[out[r]] or bool(long[r])
        return out

    def speakers(self, embeddings: np.ndarray, long: np.ndarray,
                 cannot_link: Optional[np.ndarray] = None,
                 fallback: Optional[np.ndarray] = None) -> list[int]:
        """Output speaker (0, 1, ...) of each item: `assign`, then a centroid becomes a
        speaker once long items joined it in `confirm_windows` windows (the first one at
        once); until then its items go to the confirmed speaker nearest to it, so a
        stray voice-like noise never shows up as a speaker. -1: none. `borrowed` then
        lists the items given such a stand-in speaker (`remember` must not file them under
        it: they taught another centroid)."""
        centroid = self.assign(embeddings, long, cannot_link, fallback)
        self.borrowed = []
        for c in set(centroid) - {-1}:
            if any(long[i] for i, x in enumerate(centroid) if x == c):
                self.hits[c] += 1
            if (self.labels[c] is None and self.next_label < self.max_speakers
                    and (self.hits[c] >= self.confirm_windows or self.next_label == 0)):
                self.labels[c] = self.next_label
                self.next_label += 1
        out = []
        for k, c in enumerate(centroid):
            label = self.labels[c] if c >= 0 else -1
            if label is None:
                self.borrowed.append(k)
                confirmed = [i for i, g in enumerate(self.labels) if g is not None]
                d = self.distances(self.centroids[c][None])[0]
                label = self.labels[min(confirmed, key=lambda i: d[i])]
            out.append(int(label) if label is not None else -1)
        return out
