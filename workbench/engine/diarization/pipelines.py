"""pyannote.audio `SpeakerDiarization` pipelines used by the `Diarizer`.

`SpeakerDiarizationWithoutPLDA` lets a pipeline run without a PLDA (agglomerative
clustering needs none); `SplittingSpeakerDiarization` cuts each local speaker of a
segmentation window into runs (`split_into_runs`) that are embedded and clustered one
by one (see `workbench.engine.diarization.clustering`).
"""

from __future__ import annotations

import functools
import math
import threading
import time
import warnings
from typing import Any, Callable, Optional, cast

import numpy as np
import torch
from pyannote.audio.core.plda import PLDA
from pyannote.audio.core.task import Specifications
from pyannote.audio.pipelines import SpeakerDiarization
from pyannote.audio.utils.powerset import Powerset
from pyannote.core import SlidingWindowFeature

from workbench.engine.diarization.clustering import RUN_OWNERS, RunClustering
from workbench.engine.diarization.embedding import CAMPPlusEmbedding
from workbench.engine.diarization.local_speakers import (cluster_activations, powerset_frame_count,
                                                         speakers_from_nearest, split_into_runs)
from workbench.engine.diarization.voice_activity import (SpeakerActivity, VoiceActivity,
                                                         fill_silent_frames,
                                                         segment_with_activity)
from workbench.engine.diarization.workers import BatchSplitter, in_workers
from workbench.engine.provenance import usable_cpus

__all__ = ["SpeakerDiarizationWithoutPLDA", "SplittingSpeakerDiarization"]


class _UnusedPLDA(PLDA):
    """Placeholder that satisfies `get_plda` when the clustering needs no PLDA."""

    def __init__(self) -> None:  # noqa: D107 - deliberately skips PLDA loading
        pass

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        raise RuntimeError("this pipeline was built without a PLDA")


class SpeakerDiarizationWithoutPLDA(SpeakerDiarization):
    """`SpeakerDiarization` that accepts ``plda=None`` for clusterings without PLDA.

    pyannote.audio 4.0.7 passes `plda` to `get_plda`, which raises TypeError on None
    even though only ``VBxClustering`` uses it. Here None is swapped for a placeholder
    during construction and stored back as None; VBx without PLDA is refused clearly.
    """

    def __init__(
        self,
        *args: Any,
        plda: Any = None,
        clustering: str = "AgglomerativeClustering",
        **kwargs: Any,
    ) -> None:
        if plda is None and clustering == "VBxClustering":
            raise ValueError("VBxClustering needs a PLDA; pass plda=... or another clustering")
        super().__init__(  # type: ignore[misc]  # (`args` end before plda: callers use keywords)
            *args,
            plda=_UnusedPLDA() if plda is None else plda,
            clustering=clustering,
            **kwargs,
        )
        if plda is None:
            self.plda = None  # type: ignore[assignment]  # (pyannote's type has no None)
            self._plda = None


class SplittingSpeakerDiarization(SpeakerDiarizationWithoutPLDA):
    """`SpeakerDiarization` that splits local speakers into runs and assigns each run.

    segmentation-3.0 sometimes gives two voices one local speaker in a 10 s chunk
    (consecutive turns of similar voices, often with no pause between them: it happens
    on synthetic speech all the time), and pyannote then embeds and clusters the mixture
    as one speaker. Here each local speaker is cut into runs at silences of at least
    `split_min_gap` seconds, and runs longer than about `split_piece_duration` seconds
    into equal pieces. Each local speaker goes through CAM++ once and each run's
    embedding pools that pass's frame features over the run's frames
    (`CAMPPlusEmbedding.embed_parts`), so runs cost no more than local speakers.
    The clustering (`workbench.engine.diarization.clustering.RunClustering`) groups the runs of a local
    speaker that are within cosine distance `split_threshold`, clusters the groups and
    gives every run the speaker nearest its own embedding; the runs then replace the
    local speakers in pyannote's reconstruction. Runs partition the activity, so speaker
    counts and overlap handling are unchanged.

    `speaker_count` is the clustering's rule for the number of speakers
    (``"silhouette"`` or pyannote's ``"threshold"``). ``split_threshold=None`` embeds and
    clusters local speakers as pyannote does. Splitting needs a powerset segmentation
    model (like segmentation-3.0), whose binarized output is what apply() reconstructs,
    and a `CAMPPlusEmbedding`.

    `powerset_count` counts the speakers of each frame from the powerset classes'
    probabilities (`powerset_frame_count`, with `overlap_bias` towards overlap) instead of
    summing the binarized local speakers: the argmax class of segmentation-3.0 is often
    one speaker where two talk at once, and the reconstruction then keeps one of them.
    """

    def __init__(
        self, *args: Any, split_threshold: Optional[float] = None, split_min_gap: float = 0.1,
        split_piece_duration: Optional[float] = None, speaker_count: str = "silhouette",
        segmentation_onset: Optional[float] = None, min_active_ratio: float = 0.2,
        count_min_active_ratio: Optional[float] = None,
        given_count_min_active_ratio: Optional[float] = None, powerset_count: bool = False,
        overlap_bias: float = 0.0, embedding_passes: str = "shared",
        embedding_block: float = 10.0, embedding_context: float = 1.0,
        embedding_share: int = 2, embedding_share_coverage: float = 0.0,
        embedding_share_agreement: float = 0.0, embedding_workers: int = 1,
        segmentation_workers: int = 1, recount_extra_speakers: bool = False,
        voice_activity: Optional[VoiceActivity] = None, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.voice_activity = voice_activity
        self._activity: Optional[SpeakerActivity] = None
        self.recount_extra_speakers = recount_extra_speakers
        self.recount_seconds = 0.0
        """Time the last call spent clustering again (`recount_extra_speakers`)."""
        if embedding_workers < 1:
            raise ValueError("embedding_workers must be at least 1")
        if segmentation_workers < 1:
            raise ValueError("segmentation_workers must be at least 1")
        self.embedding_workers = embedding_workers
        self.segmentation_workers = segmentation_workers
        if embedding_passes not in ("window", "shared", "once"):
            raise ValueError("embedding_passes must be 'window', 'shared' or 'once'")
        self.embedding_share = embedding_share
        self.embedding_share_coverage = embedding_share_coverage
        self.embedding_share_agreement = embedding_share_agreement
        self.embedding_passes = embedding_passes
        self.embedding_block = embedding_block
        self.embedding_context = embedding_context
        self.powerset_count = powerset_count
        self.overlap_bias = overlap_bias
        self._class_probabilities: Optional[SlidingWindowFeature] = None
        self.split_threshold = split_threshold
        self.split_min_gap = split_min_gap
        self.split_piece_duration = split_piece_duration
        self.segmentation_onset = segmentation_onset
        if self.klustering != "AgglomerativeClustering":
            raise ValueError("SplittingSpeakerDiarization clusters agglomeratively")
        self.clustering = RunClustering(metric=self._embedding.metric,
                                        speaker_count=speaker_count,
                                        group_threshold=split_threshold,
                                        min_active_ratio=min_active_ratio,
                                        count_min_active_ratio=count_min_active_ratio,
                                        given_count_min_active_ratio=(
                                            given_count_min_active_ratio))
        powerset = cast(Specifications, self._segmentation.model.specifications).powerset
        if segmentation_onset is not None and not powerset:
            raise ValueError("segmentation_onset needs a powerset segmentation model")
        if powerset_count and not powerset:
            raise ValueError("powerset_count needs a powerset segmentation model")
        model = getattr(self._embedding, "model_", None)
        if split_threshold is not None and not isinstance(model, CAMPPlusEmbedding):
            raise TypeError("splitting local speakers needs the CAMPPlusEmbedding model")

    def apply(self, file: Any, num_speakers: Optional[int] = None,  # type: ignore[override]
              min_speakers: Optional[int] = None, max_speakers: Optional[int] = None,
              **kwargs: Any) -> Any:  # (`hook` is one of the `kwargs`)
        """pyannote's pipeline; then, with `recount_extra_speakers` and no exact count
        given, if the output holds more speakers than the clustering found (the
        reconstruction gives the frames that count more speakers than there are clusters
        to an unclustered extra speaker: padding in pyannote's ``to_diarization``), the
        clustering runs again with the output's number as a given count, on the same
        segmentation and runs, when that number is within `min_speakers`..`max_speakers`
        (a right maximum kept the extra speaker: AMI trn03 2.4 -> 5.9 %)."""
        self.recount_seconds = 0.0
        if isinstance(self.clustering, RunClustering):
            self.clustering.count_evidence = {}  # audio without speech never reaches it
        recount = (self.recount_extra_speakers and isinstance(self.clustering, RunClustering)
                   and num_speakers is None)
        training, cached = self.training, set(file)  # type: ignore[has-type]  # (untyped property)
        # keep segmentation and runs in `file` for the second clustering, unless it holds
        # such caches already (from other settings: outside training they are not used)
        stale = any(str(key).startswith("training_cache/") for key in cached)
        self.training = training or (recount and not stale)
        try:
            output = super().apply(file, num_speakers=num_speakers, min_speakers=min_speakers,
                                   max_speakers=max_speakers, **kwargs)
            found = self.clustering.count_evidence.get("speakers") if recount else None
            if found is None:
                return output
            # (a legacy pipeline returns the Annotation itself)
            diarization: Any = getattr(output, "speaker_diarization", output)
            labels = len(diarization.labels())
            if labels <= found or labels < (min_speakers or 1) \
                    or labels > (max_speakers or labels):
                return output
            estimate = dict(self.clustering.count_evidence)
            started = time.perf_counter()
            kwargs.pop("hook", None)  # the stages were reported; this is clustering again
            with warnings.catch_warnings():
                # our own count, not the caller's: pyannote's "outside the given bounds"
                warnings.filterwarnings("ignore", r"\s*The detected number of speakers")
                again = super().apply(file, num_speakers=labels, **kwargs)
            self.recount_seconds = time.perf_counter() - started
            if self.clustering.count_evidence.get("speakers", 0) < labels:
                # too few embeddings to cluster that many: the first output stands
                self.clustering.count_evidence = estimate
                return output
            again_evidence = self.clustering.count_evidence
            again_evidence.pop("requested", None)  # (our count, not the caller's)
            self.clustering.count_evidence = {**again_evidence, "recounted_from": estimate}
            return again
        finally:
            self.training = training
            if recount and not training:
                for key in set(file) - cached:
                    if str(key).startswith("training_cache/"):
                        del file[key]

    def get_segmentations(self, file: Any, hook: Any = None) -> SlidingWindowFeature:
        """pyannote's; with `voice_activity` also the second opinion on speech that
        `speaker_count` fills silent frames from (`segment_with_activity`)."""
        if self.voice_activity is None:
            self._activity = None
            return self._segment(file, hook)
        segmentations, self._activity = segment_with_activity(
            self.voice_activity, file, hook, self._segment, cache=self.training)
        return segmentations

    def _segment(self, file: Any, hook: Any) -> SlidingWindowFeature:
        inference = self._segmentation
        workers = min(self.segmentation_workers, usable_cpus())  # (more only wait)
        if workers <= 1:
            return self._segmentations(file, hook)
        # each batch of windows is cut into `segmentation_workers` parts that run at once
        # (the model releases the GIL): 2.1x faster on two cores, where two torch threads
        # in one forward pass gave 1.6x for more CPU time
        inference.infer = BatchSplitter(  # type: ignore[method-assign]  # (for this call)
            type(inference).infer.__get__(inference), workers)
        try:
            return self._segmentations(file, hook)
        finally:
            inference.infer.close()
            del inference.infer

    def _segmentations(self, file: Any, hook: Any) -> SlidingWindowFeature:
        self._class_probabilities = None
        if self.segmentation_onset is None and not self.powerset_count:
            segmentations = super().get_segmentations(file, hook=hook)
            # a fresh wrapper, so that get_embeddings can rebind its data without touching
            # the copy pyannote caches in the file while tuning
            return SlidingWindowFeature(segmentations.data, segmentations.sliding_window)
        probabilities = file.get(_CLASSES_CACHE) if self.training else None
        if probabilities is None:
            probabilities = self._class_probability_chunks(file, hook)
            if self.training:
                file[_CLASSES_CACHE] = probabilities
        self._class_probabilities = probabilities
        mapping = cast(torch.Tensor, self._powerset().mapping).cpu().numpy()  # (classes, speakers)
        if self.segmentation_onset is None:  # pyannote's: the speakers of the argmax class
            binary = mapping[np.argmax(probabilities.data, axis=-1)]
        else:
            binary = probabilities.data @ mapping > self.segmentation_onset
        return SlidingWindowFeature(binary.astype(np.float32), probabilities.sliding_window)

    def _powerset(self) -> Powerset:
        conversion = self._segmentation.conversion
        if not isinstance(conversion, Powerset):
            raise TypeError("segmentation_onset and powerset_count need pyannote's Powerset "
                            "conversion")
        return conversion

    def _class_probability_chunks(self, file: Any, hook: Any) -> SlidingWindowFeature:
        """The powerset classes' probabilities per chunk and frame: their argmax gives
        pyannote's segmentation; per speaker their sums (thresholded at
        `segmentation_onset`) keep speech, and second voices, whose class is not the most
        likely one; per number of speakers they give `powerset_count`'s count."""
        inference = self._segmentation
        hard = self._powerset()
        inference.conversion = _PowersetProbabilities()  # type: ignore[assignment]  # (a Module)
        try:
            return inference(file, hook=None if hook is None
                             else functools.partial(hook, "segmentation", None))
        finally:
            inference.conversion = hard

    def speaker_count(  # type: ignore[override]  # (not static: pyannote calls it on self)
            self, binarized_segmentations: SlidingWindowFeature, frames: Any,
            warm_up: tuple[float, float] = (0.1, 0.1)) -> SlidingWindowFeature:
        """pyannote's frame-level count, or with `powerset_count` the same aggregation of
        `powerset_frame_count` per chunk."""
        probabilities = self._class_probabilities
        if (not self.powerset_count or probabilities is None
                or probabilities.data.shape[:2] != binarized_segmentations.data.shape[:2]):
            count = super().speaker_count(binarized_segmentations, frames, warm_up=warm_up)
        else:
            cardinality = cast(torch.Tensor, self._powerset().cardinality).cpu().numpy()
            counts = powerset_frame_count(probabilities.data, cardinality,
                                          self.overlap_bias).astype(np.float32)
            count = super().speaker_count(
                SlidingWindowFeature(counts[..., None], probabilities.sliding_window), frames,
                warm_up=warm_up)
        return count if self._activity is None else fill_silent_frames(count, self._activity)

    def reconstruct(self, segmentations: SlidingWindowFeature, hard_clusters: np.ndarray,
                    count: SlidingWindowFeature) -> SlidingWindowFeature:
        """pyannote's reconstruction; frames that count speech where no cluster is active
        take the clusters of the nearest frame where one is (`speakers_from_nearest`); each
        speaker made for a given count (`RunClustering.forced_clusters`) that lost every
        frame takes the frames its own runs cover, from the weakest speaker there: it holds
        one copy of a stretch of speech that the windows' other copies give to another
        speaker, and the given count is honoured at the cost of that stretch alone.

        With `powerset_count` a frame can count a speaker where no local speaker is
        active (the most likely class is silence, the speech classes together are not):
        when that is all the audio holds (AMI trn02 at 15-18 s alone), no speaker has a
        cluster and pyannote's reconstruction fails ("negative dimensions"); nobody is
        then given that speech."""
        if hard_clusters.size == 0 or int(np.max(hard_clusters)) < 0:
            return self.to_diarization(
                SlidingWindowFeature(np.zeros((*segmentations.data.shape[:2], 1)),
                                     segmentations.sliding_window),
                SlidingWindowFeature(np.zeros_like(count.data), count.sliding_window))
        discrete = super().reconstruct(segmentations, hard_clusters, count)
        activations = cluster_activations(segmentations, hard_clusters, count)
        if activations.shape != discrete.data.shape:
            return discrete
        speakers_from_nearest(discrete.data, activations)
        forced = getattr(self.clustering, "forced_clusters", [])
        missing = [k for k in forced
                   if k < discrete.data.shape[1] and not discrete.data[:, k].any()]
        if not missing:
            return discrete
        others = np.ones(discrete.data.shape[1], dtype=bool)
        others[forced] = False  # a forced speaker gives way only if it keeps some frames
        for k in missing:
            for t in np.nonzero(activations[:, k] > 0)[0]:
                speaking = np.nonzero(discrete.data[t])[0]
                can = [j for j in speaking if others[j] or discrete.data[:, j].sum() > 1]
                if can:
                    weakest = can[int(np.argmin(activations[t, can]))]
                    discrete.data[t, weakest], discrete.data[t, k] = 0.0, 1.0
        return discrete

    def get_embeddings(
        self,
        file: Any,
        binary_segmentations: SlidingWindowFeature,
        exclude_overlap: bool = False,
        hook: Any = None,
    ) -> np.ndarray:
        specifications = cast(Specifications, self._segmentation.model.specifications)
        if self.split_threshold is None or not specifications.powerset:
            return super().get_embeddings(file, binary_segmentations, exclude_overlap, hook)
        window = binary_segmentations.sliding_window
        activity = np.nan_to_num(binary_segmentations.data, nan=0.0)
        num_frames = activity.shape[1]
        cached = file.get(_RUNS_CACHE) if self.training else None
        if cached is None:
            frames_per_second = num_frames / window.duration
            runs, owners = split_into_runs(
                activity, max(1, round(self.split_min_gap * frames_per_second)),
                None if self.split_piece_duration is None
                else max(1, round(self.split_piece_duration * frames_per_second)))
            embeddings = self._embed_runs(file, binary_segmentations, runs, owners,
                                          exclude_overlap, hook)
            if self.training:  # tuning: the next trial reuses them (see pyannote's cache)
                file[_RUNS_CACHE] = (runs, owners, embeddings)
        else:
            runs, owners, embeddings = cached
        file[RUN_OWNERS] = owners
        # apply() passes this same object on to the clustering and, for powerset models,
        # to the reconstruction: the runs replace the local speakers from here on
        binary_segmentations.data = runs
        return embeddings

    def _embed_runs(self, file: Any, binary_segmentations: SlidingWindowFeature,
                    runs: np.ndarray, owners: list[list[int]], exclude_overlap: bool,
                    hook: Any) -> np.ndarray:
        model: CAMPPlusEmbedding = self._embedding.model_
        activity = np.nan_to_num(binary_segmentations.data, nan=0.0) > 0.5
        num_chunks, num_frames, _ = activity.shape
        embedded = activity
        if exclude_overlap:
            # as pyannote's get_embeddings: a speaker's overlapped frames are left out of
            # its embedding unless too few clean frames remain
            num_samples = binary_segmentations.sliding_window.duration * self._embedding.sample_rate
            min_frames = math.ceil(num_frames * self._embedding.min_num_samples / num_samples)
            clean = activity & (activity.sum(axis=2, keepdims=True) < 2)
            use_clean = clean.sum(axis=1) > min_frames  # (chunks, speakers)
            embedded = np.where(use_clean[:, None, :], clean, activity)
        parts = runs > 0.5
        if self.embedding_passes == "once":
            return self._pool_runs(file, binary_segmentations, embedded, parts, owners, hook)
        if self.embedding_passes == "shared":
            return self._share_passes(file, binary_segmentations, embedded, parts, owners,
                                      hook)
        out = np.full((num_chunks, runs.shape[2], model.dimension), np.nan, dtype=np.float32)
        window = binary_segmentations.sliding_window
        if hook is not None:
            hook("embeddings", None, total=num_chunks, completed=0)

        def embed(c: int) -> np.ndarray:
            waveform, _ = self._audio.crop(file, window[c], mode="pad")
            with torch.inference_mode():
                return model.embed_parts(waveform.to(model.device), embedded[c], parts[c],
                                         owners[c]).cpu().numpy()

        for c, embeddings in enumerate(in_workers(embed, num_chunks,
                                                  self._embedding_workers_for(file))):
            out[c] = embeddings
            if hook is not None:
                hook("embeddings", None, total=num_chunks, completed=c + 1)
        return out


    def _share_passes(self, file: Any, binary_segmentations: SlidingWindowFeature,
                      embedded: np.ndarray, parts: np.ndarray, owners: list[list[int]],
                      hook: Any) -> np.ndarray:
        """``embedding_passes="shared"``: the network passes of every
        `embedding_share`-th window (and the last) serve the windows between them.

        As in "window", a pass is one local speaker's frames of one window alone. A run of
        a window without passes pools the frame features of the pass, among the two
        nearest windows with passes, that holds most of its frames, if that pass holds at
        least `embedding_share_coverage` of them and agrees with the run's local speaker
        where the windows overlap (`_donor`); otherwise its own window gets passes."""
        model: CAMPPlusEmbedding = self._embedding.model_
        num_chunks, num_frames, num_parts = parts.shape
        out = np.full((num_chunks, num_parts, model.dimension), np.nan, dtype=np.float32)
        window = binary_segmentations.sliding_window
        sample_rate = self._embedding.sample_rate
        shift = model.feature_step // 2
        chunk_fbank = model.num_fbank_frames(round(window.duration * sample_rate))
        reach = math.ceil(window.duration / window.step)  # windows that overlap one
        stride = max(1, int(self.embedding_share))
        computed = sorted(set(range(0, num_chunks, stride)) | {num_chunks - 1})

        def first_frame(c: int) -> int:
            return round(window[c].start * sample_rate / shift)

        def share_window(c: int, passes_of: Callable[..., dict[int, tuple[torch.Tensor,
                                                                         torch.Tensor]]]
                         ) -> None:
            # the runs of window c: each pools a donor's pass or its own
            speakers = model._to_fbank_frames(torch.from_numpy(embedded[c]), chunk_fbank)
            runs = model._to_fbank_frames(torch.from_numpy(parts[c]), chunk_fbank)
            donors = sorted((d for d in computed if abs(d - c) < reach),
                            key=lambda d: (abs(d - c), d))[:2]
            for j, owner in enumerate(owners[c]):
                frames = first_frame(c) + torch.nonzero(runs[:, j] & speakers[:, owner])[:, 0]
                if len(frames) == 0:
                    continue
                d, k = c, owner
                if c not in computed:
                    d, k = self._donor(frames, speakers[:, owner], first_frame(c), [
                        (d, first_frame(d), passes_of(d)) for d in donors]) or (c, owner)
                passes = passes_of(d, None if d in computed else k)
                if k not in passes:
                    continue
                selected, features = passes[k]
                mask = torch.zeros(chunk_fbank, dtype=torch.bool)
                local = frames - first_frame(d)
                mask[local[(local >= 0) & (local < chunk_fbank)]] = True
                out[c, j] = model.pool_frames(selected, features, mask).cpu().numpy()

        def share(first: int, last: int) -> None:
            # windows first .. last - 1, with a cache of their own: the passes of a window
            # are the same whichever range computes them, so ranges can run at once
            cache: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
            empty: set[tuple[int, int]] = set()  # (window, local speaker) without frames

            def passes_of(c: int, owner: Optional[int] = None
                          ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
                # windows with passes: every local speaker; others: the one asked for
                wanted = list(owners[c]) if owner is None else [owner]
                have = cache.setdefault(c, {})
                missing = [k for k in dict.fromkeys(wanted) if k not in have and
                           (c, k) not in empty]
                if missing:
                    waveform, _ = self._audio.crop(file, window[c], mode="pad")
                    have.update(model.speaker_passes(waveform.to(model.device), embedded[c],
                                                     missing))
                    empty.update((c, k) for k in missing if k not in have)
                return have

            with torch.inference_mode():
                for c in range(first, last):
                    if stop.is_set():  # another range failed (in_workers)
                        return
                    share_window(c, passes_of)
                    for d in [d for d in cache if d < c - reach]:
                        del cache[d]
                    progress()

        lock, stop = threading.Lock(), threading.Event()
        done = [0]

        def progress() -> None:
            with lock:
                done[0] += 1
                if hook is not None:
                    hook("embeddings", None, total=num_chunks, completed=done[0])

        if hook is not None:
            hook("embeddings", None, total=num_chunks, completed=0)
        workers = min(self._embedding_workers_for(file), num_chunks)
        bounds = np.linspace(0, num_chunks, max(workers, 1) + 1).round().astype(int)
        ranges = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        for _ in in_workers(lambda r: share(*ranges[r]), len(ranges), workers, stop):
            pass
        return out

    def _embedding_workers_for(self, file: Any) -> int:
        # audio read from a file (not a waveform in memory) is cropped by one thread;
        # workers beyond the CPUs only wait for each other
        return min(self.embedding_workers, usable_cpus()) if "waveform" in file else 1

    def _donor(self, frames: torch.Tensor, speaker: torch.Tensor, first: int,
               donors: list[tuple[int, int, dict[int, tuple[torch.Tensor, torch.Tensor]]]]
               ) -> Optional[tuple[int, int]]:
        """The (window, local speaker) whose pass may serve a run: it holds at least
        `embedding_share_coverage` of the run's frames (absolute fbank frames `frames`)
        and, where the two windows overlap, the same frames as the run's own local speaker
        (`speaker`, the fbank-frame mask of its window starting at frame `first`) up to
        `embedding_share_agreement` (intersection over union), so that a pass of a window
        where the segmentation gave this voice to a mixture serves nothing; it never
        serves a run none of whose frames it holds."""
        size = len(speaker)
        own = first + torch.nonzero(speaker)[:, 0]
        best: Optional[tuple[float, int, int]] = None
        for d, d_first, passes in donors:
            local = frames - d_first
            local = local[(local >= 0) & (local < size)]
            lo, hi = max(first, d_first), min(first, d_first) + size
            mine = own[(own >= lo) & (own < hi)] - d_first
            for k, (selected, _) in passes.items():
                covered = int(selected[local].sum())
                if covered == 0 or covered < self.embedding_share_coverage * len(frames):
                    continue
                theirs = selected[lo - d_first: hi - d_first]
                both = int(selected[mine].sum())
                union = len(mine) + int(theirs.sum()) - both
                if union and both / union >= self.embedding_share_agreement and \
                        (best is None or covered > best[0]):
                    best = (covered, d, k)
        return None if best is None else best[1:]

    def _pool_runs(self, file: Any, binary_segmentations: SlidingWindowFeature,
                   embedded: np.ndarray, parts: np.ndarray, owners: list[list[int]],
                   hook: Any) -> np.ndarray:
        """``embedding_passes="once"``: the recording's frame features are computed once
        (`CAMPPlusEmbedding.recording_features`) and each run pools those of the frames
        where it speaks (and its local speaker is embedded), as `embed_parts` does within
        a window. A run with fewer than two feature frames gets NaN."""
        model: CAMPPlusEmbedding = self._embedding.model_
        num_chunks, num_frames, num_parts = parts.shape
        out = np.full((num_chunks, num_parts, model.dimension), np.nan, dtype=np.float32)
        waveform, sample_rate = self._audio(file)

        def progress(done: int, total: int) -> None:
            if hook is not None:
                hook("embeddings", None, total=total, completed=done)

        progress(0, 1)
        with torch.inference_mode():
            features = model.recording_features(
                waveform.to(model.device), self.embedding_block, self.embedding_context,
                progress=progress)
        if features.numel() == 0:
            return out
        num_features = features.shape[1]
        # fbank frames of a chunk, as embed_parts maps segmentation frames onto them
        shift = model.feature_step // 2
        window = binary_segmentations.sliding_window
        length = int(sample_rate * model.hparams["frame_length"] / 1000)
        chunk_fbank = 1 + (round(window.duration * sample_rate) - length) // shift
        with torch.inference_mode():
            for c in range(num_chunks):
                first = round(window[c].start * sample_rate / shift)  # its first fbank frame
                speakers = model._to_fbank_frames(torch.from_numpy(embedded[c]), chunk_fbank)
                runs = model._to_fbank_frames(torch.from_numpy(parts[c]), chunk_fbank)
                for j, owner in enumerate(owners[c]):
                    frames = torch.nonzero(runs[:, j] & speakers[:, owner])[:, 0]
                    index = torch.unique((first + frames) // 2)
                    index = index[index < num_features]
                    if len(index) >= 2:
                        out[c, j] = model.pool(features[:, index]).cpu().numpy()
        return out


_RUNS_CACHE = "training_cache/workbench_runs"
_CLASSES_CACHE = "training_cache/workbench_powerset_classes"


class _PowersetProbabilities(torch.nn.Module):
    """Powerset log-probabilities -> probabilities of the classes."""

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.exp(outputs)
