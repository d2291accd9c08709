"""`OnlineDiarizationConfig`: the rolling window, the clustering and the latency of the
online diarizer (`workbench.live.diarization.OnlineDiarizer`), with the measurements
behind each default."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, cast

from workbench.engine.config import build_config

__all__ = ["OnlineDiarizationConfig"]


@dataclass(frozen=True)
class OnlineDiarizationConfig:
    """Rolling-window and clustering parameters (seconds; distances are cosine).

    `latency`: a frame is final once the newest window ends `latency` s after it
    (``step <= latency <= window``); the lag of a speaker label is about `latency` plus
    the time a step takes. `delta_new`: CAM++ distance from every speaker beyond which a
    long local speaker is a new speaker. `rho_update`: fraction of the window a local
    speaker must fill to update a centroid or open a speaker. `tau_active`: activation
    threshold of the aggregated, weighted votes of windows (when speakers are not
    counted: `count_speakers`).
    """

    # 7.5 s windows and a 1 s step since 2026-12-04 (see `long_run_min` for the figures)
    window: float = 7.5
    step: float = 1.0
    latency: float = 2.0
    tau_active: float = 0.5
    # measured 2026-12-02 (latency 2 s, step 0.5 s), sample call / a generated 3-voice
    # conversation: delta 0.55, rho 0.1 -> DER 13 / 52 % (2 voices found); 0.35 -> 37 /
    # 18 %; 0.45 + rho 0.3 -> 14.5 / 18.5 % (3 voices); 0.5 + rho 0.3 -> 10 / 30 %.
    rho_update: float = 0.2
    # A run is long (may open or move a speaker) when it fills `rho_update` of the window
    # or its local speaker does and the run lasts `long_run_min` s; None: the run alone
    # must (the rule before 2026-12-04, with which no run of an 8 or 10 s window could
    # ever open a speaker; such a configuration is refused). Measured 2026-12-04 at 2 s
    # (step 1 s), DER pooled, sample call / conv2 + conv3 / AMI train / development:
    #   5 s window, rho 0.3, run alone (before):  13.7 / 15.3 / 34.5 / 31.3 % (step 0.5 s:
    #   13.8 / 13.1 / 35.0 / 32.7 %); 7.5 s, rho 0.2, run alone: 13.7 / - / 31.5 / 22.7 %;
    #   10 s, rho 0.15: 12.4 / - / 33.6 / 28.4 %; 7.5 s, rho 0.2, long_run_min 0.3 / 0.75
    #   / 1.0: 10.1 / 9.0 / 29.6, 29.9, 29.7 / 27.1 % (tau_active 0.4 / 0.6: 30.8 / 30.7 %
    #   on train; 0.75 s pieces 36.2 %). 1.0 (AMI train: 0.3-1.0 level) keeps a generated
    #   2-voice dialogue's second voice one speaker where 0.3-0.75 split a piece off.
    long_run_min: Optional[float] = 1.0
    delta_new: float = 0.45
    max_speakers: int = 20
    # 3 (a new voice waits 3 windows): sample call DER 29.5 % against 16.0 % (2 s, step 1 s)
    confirm_windows: int = 1
    # The first speaker opens on the first item even if it is short ("Hello?"): its
    # centroid is then one noisy embedding. The first long item within `adopt_distance`
    # of a centroid no long item has joined yet takes it over instead of opening a new
    # speaker (None: off). Measured 2026-12-03 (latency 2 s, diarization alone, fixed
    # costs 0.6/0.3 s), DER off / 0.8: sample call 15.7 / 13.3 % (3 speakers / 2: the
    # caller's "Hello?" was a speaker of its own), conv2 + conv3 14.9 / 14.9 %, AMI train
    # 34.3 / 34.2 %, AMI development 31.1 / 31.1 %; 1.2 as 0.8 on the sample call.
    adopt_distance: Optional[float] = 0.8
    min_active: float = 0.2
    # every `recluster_every` s of audio, all speech embedded so far is clustered again
    # (average-linkage cosine, cut at `recluster_threshold`) and the clusters are mapped
    # onto the speakers given so far (most shared speech); None (default): off. Measured
    # 2026-12-03 (latency 2 s), DER off / every 5 s at 0.45: sample call + conv2 + conv3
    # 15.1 / 8.0 %, but AMI train 34.3 / 35.3 % (0.35: 42.1 %) and development 31.1 /
    # 44.9 % (one speaker split in three): it does not hold on real meetings.
    recluster_every: Optional[float] = None
    recluster_threshold: float = 0.45
    recluster_min_speech: float = 2.0  # s of speech a new cluster needs to be a speaker
    recluster_history: int = 1500  # embeddings kept for it (older ones thinned)
    split_min_gap: float = 0.1
    split_piece: Optional[float] = 1.5
    # count_speakers: each frame's speakers are the `count` global speakers with the most
    # votes, `count` being the windows' weighted mean of the number of speakers that
    # segmentation-3.0's powerset classes give the frame, overlap winning within
    # `overlap_bias` of the best number (the offline pipeline's `powerset_count`); False:
    # a speaker is active where its weighted votes reach `tau_active`; None: from 2 s of
    # latency on (where two windows or more vote on each frame's count, unless the worker
    # skips steps).
    # Measured 2026-12-04, OnlineDiarizer alone (every step run), DER pooled, votes ->
    # count (overlap_bias 0.3), sample call / conv2 + conv3 / AMI train / development: at
    # 2 s 10.1 / 9.0 / 29.7 / 27.1 % -> 9.4 / 9.0 / 29.7 / 26.7 %; at 5 s 9.1 / 7.3 / 30.9 /
    # 24.3 % -> 8.6 / 7.4 / 30.2 / 24.4 %; at 1 s 11.2 / 9.7 / 32.5 / 34.5 % -> 11.4 / 9.8 /
    # 32.3 / 35.5 %. overlap_bias at 2 s: 0 10.2 / 8.8 / 30.1 / 26.9 %, 0.5 9.7 / 9.1 /
    # 29.5 / 26.3 %.
    count_speakers: Optional[bool] = None
    overlap_bias: float = 0.3
    # fill_speech: a frame no speaker would take gets the one with the most votes (if any)
    # where pyannote/segmentation 2.x, run on each window too, hears speech (offline:
    # `fill_speech`, workbench.engine.diarization.voice_activity). Diarizer alone (costs
    # 0.6 / 0.3 s), sample call / generated / AMI train / development, off -> on: at 2 s
    # 9.1 / 8.6 / 29.4 / 26.5 % -> 9.1 / 8.5 / 28.9 / 26.2 %, at 5 s 8.5 / 7.0 / 30.0 /
    # 24.1 % -> 8.6 / 7.0 / 28.9 / 23.6 % (BENCHMARKS.md, "A second opinion on speech").
    fill_speech: bool = True
    fill_speech_threshold: float = 0.6
    # A voice going on: a stretch of a local speaker without a pause that starts in frames
    # the last window saw, where a speaker that window gave them agrees with it on
    # `continue_iou` of them (intersection over union), keeps that speaker where its
    # embedding would open a new one (CAM++ drifts within a voice in overlap more than
    # segmentation loses it over one step); `continue_speakers` None: from 2 s of
    # latency. Measured 2026-12-07 (diarizer alone, costs 0.6 / 0.3 s), sample / generated
    # / AMI train / development / train + development, off -> 0.8: at 5 s 8.6 / 7.0 / 28.9
    # / 23.6 / 28.0 % -> 8.6 / 7.0 / 27.8 / 20.8 / 26.7 %; at 2 s train 28.9 -> 28.2,
    # development 26.2 -> 21.8 %; at 0.5 / 1 s (an earlier form) train 32.7 / 31.1 -> 33.4
    # / 31.7 % (hence from 2 s); train at 5 s with 0.7 / 0.9: 28.7 / 27.8 %. A 6-minute
    # meeting of 23 voices: 40.6 / 40.2 -> 35.8 / 35.6 % at 2 / 5 s (BENCHMARKS.md, "A
    # voice going on keeps its speaker").
    continue_iou: Optional[float] = 0.8
    continue_speakers: Optional[bool] = None
    # A speaker split in two: every `split_every` s, each speaker's remembered items are
    # cut into two groups (average-linkage cosine); when both hold `split_min_speech` s
    # of speech (each run is remembered once per window that holds it: its seconds count
    # step / window, so a worker that skips steps counts less and splits later) and their
    # mean directions lie `split_distance` apart or more, the group with less speech
    # becomes a new speaker from then on, its long items leaving the kept speaker's
    # centroid (None: off; not with `recluster_every`). Close voices
    # (under `delta_new` apart) that segmentation-3.0 gives one local speaker join one
    # label when the second first speaks; this parts them later. Measured 2026-12-07
    # (diarizer alone, costs 0.6 / 0.3 s), off -> on: the 8 generated development
    # conversations (`--inputs corpus-dev`) at 0.5 / 2 / 5 s 20.8 / 29.0 / 28.1 -> 18.6 /
    # 16.5 / 15.5 %; the sample call, conv2 + conv3 and AMI development unchanged at 0.5,
    # 1, 2 and 5 s; AMI train 28.2 -> 28.1 % at 2 s (train + development 27.1 -> 27.0 %),
    # 27.8 -> 27.9 % at 5 s (26.7 % both); a 6-minute meeting of 23 voices 35.8 / 35.6 ->
    # 36.7 / 36.9 % at 2 / 5 s. `split_min_speech` 1 / 3 s: corpus-dev 21.9 / 24.4 % at
    # 5 s; distance 0.35 / 0.45 (an earlier form): corpus-dev 15.5 / 24.4 %, the meeting
    # 37.7 / 35.8 % at 5 s (BENCHMARKS.md, "A speaker split in two").
    split_distance: Optional[float] = 0.4
    split_min_speech: float = 0.4
    split_every: float = 5.0
    device: str = "cpu"
    num_threads: Optional[int] = 1
    # what runs CAM++'s frame network (DiarizationConfig.embedding_runtime)
    embedding_runtime: str = "onnx"

    def __post_init__(self) -> None:
        from workbench.engine.config import EMBEDDING_RUNTIMES

        if self.embedding_runtime not in EMBEDDING_RUNTIMES:
            raise ValueError(f"embedding_runtime must be one of {', '.join(EMBEDDING_RUNTIMES)}")
        if not 0 < self.step <= self.window <= 10.0:
            raise ValueError("need 0 < step <= window <= 10 (segmentation-3.0 sees 10 s)")
        if not self.step <= self.latency <= self.window:
            raise ValueError("latency must be in [step, window]")
        if not 0 <= self.overlap_bias <= 1 or not 0 < self.fill_speech_threshold < 1:
            raise ValueError("overlap_bias must be in [0, 1], fill_speech_threshold in (0, 1)")
        if not 0 < self.tau_active < 1 or not 0 <= self.rho_update < 1:
            raise ValueError("tau_active must be in (0, 1), rho_update in [0, 1)")
        if not 0 < self.delta_new <= 2:
            raise ValueError("delta_new must be in (0, 2] (cosine distance)")
        if self.long_run_min is not None and self.long_run_min < 0:
            raise ValueError("long_run_min must be None or >= 0 (seconds)")
        # runs are cut into pieces of under 1.5 x split_piece, and none outlasts the window
        longest = min(self.window, 1.5 * self.split_piece if self.split_piece else self.window)
        needed = (self.long_run_min if self.long_run_min is not None
                  else self.rho_update * self.window)
        if needed >= longest:
            raise ValueError(f"no run could ever open a speaker: runs last under {longest:g} s, "
                             f"a long one needs {needed:g} s (rho_update x window or "
                             "long_run_min)")
        if self.continue_iou is not None and not 0 < self.continue_iou <= 1:
            raise ValueError("continue_iou must be None or in (0, 1]")
        if self.split_distance is not None and not 0 < self.split_distance <= 2:
            raise ValueError("split_distance must be None or in (0, 2] (cosine distance)")
        if self.split_min_speech <= 0 or self.split_every <= 0:
            raise ValueError("split_min_speech and split_every must be > 0 (seconds)")
        if self.confirm_windows < 1:
            raise ValueError("confirm_windows must be >= 1")
        if self.adopt_distance is not None and not 0 < self.adopt_distance <= 2:
            raise ValueError("adopt_distance must be None or in (0, 2] (cosine distance)")
        if self.max_speakers < 1:
            raise ValueError("max_speakers must be >= 1")
        if self.recluster_every is not None and self.recluster_every <= 0:
            raise ValueError("recluster_every must be None or > 0")
        if not 0 < self.recluster_threshold <= 2 or self.recluster_history < 10:
            raise ValueError("recluster_threshold must be in (0, 2], recluster_history >= 10")

    @property
    def counts_speakers(self) -> bool:
        """Whether frames take their number of speakers from the powerset classes
        (`count_speakers`, None: from 2 s of latency)."""
        return self.latency >= 2.0 if self.count_speakers is None else self.count_speakers

    @property
    def continues_speakers(self) -> bool:
        """Whether a voice going on from the last window keeps its speaker (`continue_iou`;
        `continue_speakers` None: from 2 s of latency)."""
        on = self.latency >= 2.0 if self.continue_speakers is None else self.continue_speakers
        return on and self.continue_iou is not None

    @classmethod
    def for_latency(cls, latency: float, **overrides: Any) -> "OnlineDiarizationConfig":
        """Speaker labels final `latency` s after the audio: the default window, a 0.5 s
        step below 2 s of latency, 1 s from there (half the work)."""
        step = 0.5 if latency < 2 else 1.0
        return cls.from_dict({"step": min(step, latency), "latency": latency, **overrides})

    def serialize(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OnlineDiarizationConfig":
        """Unknown names and wrong types raise `ConfigError` naming ``diarization.NAME``."""
        return cast(OnlineDiarizationConfig, build_config(cls, data, "diarization", {}))
