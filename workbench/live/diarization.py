"""Online speaker diarization: segmentation-3.0 on a rolling window, CAM++ embeddings
per local speaker and incremental clustering of speakers.

The anchor is diart (Coria et al. 2021): every `step` s, segment the last `window` s,
embed each local speaker, map local speakers to global ones (constrained: two local
speakers of one window never get the same global speaker) and aggregate the global
activations of the overlapping windows; a frame is output `latency` s after it arrived.
diart's clustering: a local speaker is active if its peak activation >= ``tau_active``,
it updates its centroid only if its mean activation >= ``rho_update``, and it opens a new
speaker when every centroid is further than ``delta_new``. Here:

* thresholds are cosine distances measured for CAM++ (see `OnlineDiarizationConfig`);
* only a local speaker with enough speech in the window (``rho_update`` of it) may open a
  new speaker; a short one that matches nobody goes to the nearest free speaker, so brief
  noises, laughs and overlaps do not create speakers; the very first item opens the
  first speaker even if short, and the first long voice near it (`adopt_distance`) takes
  that speaker over instead of opening another;
* local speakers are cut into runs at pauses and ~1.5 s pieces, each assigned on its own
  (segmentation-3.0 sometimes gives two voices one local speaker), cannot-link between
  overlapping runs of different local speakers;
* a voice that goes on without a pause from frames the last window gave a speaker keeps
  that speaker where its embedding alone would open a new one (`continue_iou`, from 2 s
  of latency; diart has no such link between windows);
* optionally (`confirm_windows` > 1) a new centroid becomes a speaker only once long
  runs joined it in that many windows; until then its runs go to the nearest speaker;
* embeddings skip overlapped frames when enough clean ones remain;
* windows are weighted by a Hann-shaped profile when aggregated (edges count less);
  from 2 s of latency the number of speakers of each frame comes from the powerset
  classes, as in the offline pipeline (`count_speakers`), and the speakers with the most
  votes take the frame;
* when the worker falls behind it skips steps (never more than keeps every frame covered
  by a window) instead of queueing them, so its lag stays bounded;
* output is turns that are final up to ``final_until`` (never revised), plus a tentative
  tail. No speaker cap below `max_speakers` (default 20);
* a frame no speaker would take gets the one with the most votes where a second model,
  pyannote/segmentation 2.x, hears speech there (`fill_speech`, as offline);
* every `split_every` s a speaker whose speech falls into two clear groups (at least
  `split_distance` apart, `split_min_speech` s each) is split in two from then on: two
  close voices that joined one speaker when the second first spoke (diart never splits);
* optionally (`recluster_every`, off) all speech embedded so far is clustered again now
  and then and mapped onto the speakers given so far (figures at the option).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, cast

import numpy as np

from workbench.engine.audio import SAMPLE_RATE
from workbench.engine.diarization.voice_activity import VoiceActivity
from workbench.engine.provenance import torch_threads
from workbench.live.buffer import AudioBuffer
from workbench.live.clustering import OnlineSpeakerClustering, continuing
from workbench.live.diarization_config import OnlineDiarizationConfig
from workbench.engine.transcript import Turn

__all__ = ["OnlineDiarizationConfig", "OnlineDiarizer", "OnlineSpeakerClustering", "StepResult"]


@dataclass(frozen=True)
class StepResult:
    """What one diarization step made final (and its tentative tail)."""

    turns: tuple[Turn, ...]
    final_until: float
    tentative: tuple[Turn, ...]
    window_end: float
    seconds: float
    skipped: int


def _label(index: int) -> str:
    return f"SPEAKER_{index:02d}"


class OnlineDiarizer:
    """Feed audio with `append`; `step` while `due`; `flush` at the end."""

    def __init__(self, config: Optional[OnlineDiarizationConfig] = None, *,
                 models: Optional[tuple[Any, Any]] = None) -> None:
        import torch

        from workbench.engine.diarization.embedding import CAMPPlusEmbedding, load_segmentation_model

        self.config = config or OnlineDiarizationConfig()
        pair: tuple[Any, Any] = models or (  # pyannote's Model, CAMPPlusEmbedding
            load_segmentation_model(),
            CAMPPlusEmbedding.from_state_dict_file(runtime=self.config.embedding_runtime))
        self.segmentation, self.embedding = pair
        threads = self.config.num_threads or torch.get_num_threads()
        self.voice_activity = (VoiceActivity(self.config.fill_speech_threshold).load(threads)
                               if self.config.fill_speech else None)
        self.embedding.use_runtime(self.config.embedding_runtime)
        self.segmentation.to(torch.device(self.config.device))
        self.embedding.to(torch.device(self.config.device))
        from pyannote.audio.utils.powerset import Powerset

        spec = self.segmentation.specifications
        self._powerset = Powerset(len(spec.classes), spec.powerset_max_classes)
        # speakers of each powerset class (a buffer: typed Tensor | Module by torch)
        self._cardinality = cast(torch.Tensor, self._powerset.cardinality).cpu().numpy()
        rf = self.segmentation.receptive_field
        self.frame_step = float(rf.step)
        self._frame_offset = float(rf.duration) / 2
        self.clustering = OnlineSpeakerClustering(self.config.delta_new, self.config.max_speakers,
                                                  self.config.confirm_windows,
                                                  self.config.adopt_distance)
        self._window_samples = int(round(self.config.window * SAMPLE_RATE))
        self._buffer = AudioBuffer()
        # aggregation over global frames [_base, _base + len)
        self._base = 0
        self._sum = np.zeros((0, self.config.max_speakers), dtype=np.float64)
        self._weight = np.zeros(0, dtype=np.float64)
        self._count = np.zeros(0, dtype=np.float64)  # weighted speaker counts
        self._heard = np.zeros(0, dtype=np.float64)  # the same, of `voice_activity`
        self._last_end = 0.0  # end of the last window processed (s)
        # the last window's start and the speakers it gave each frame (`continuing`)
        self._prev: Optional[tuple[float, np.ndarray]] = None
        self._last_recluster = 0.0
        self._last_split = 0.0
        self.splits = 0  # speakers split in two (`split_distance`)
        self.final_until = 0.0
        self.context_seconds = 0.0  # audio before the session kept for its windows (`prime`)
        self.steps = 0
        self.skipped = 0
        self.step_seconds = 0.0
        n = self.segmentation.num_frames(self._window_samples)
        self._profile = 0.05 + np.hanning(n + 2)[1:-1]

    @property
    def received(self) -> float:
        return self._buffer.seconds

    def append(self, samples: np.ndarray) -> None:
        self._buffer.append(samples)

    def prime(self, context: np.ndarray) -> bool:
        """Audio that preceded this session (a resumed recording's last seconds before the
        cut), for the first windows to see instead of silence; nothing is said about it
        (its frames lie before 0). Of it, the last ``window - step`` s are kept: what the
        first window, ending one step in, can hold (less when that step is skipped:
        `step`). Only before the first step, once; returns whether it took."""
        keep = self._window_samples - int(round(self.config.step * SAMPLE_RATE))
        if self.steps or self._buffer.start != 0 or keep <= 0:
            return False
        context = np.asarray(context, dtype=np.float32).reshape(-1)[-keep:]
        self._buffer.prepend(context)
        self.context_seconds = context.size / SAMPLE_RATE
        return bool(context.size)

    def _next_end(self, upto: float) -> Optional[float]:
        cfg = self.config
        first = self._last_end + cfg.step
        if upto + 1e-9 < first:
            return None
        latest = math.floor(upto / cfg.step + 1e-9) * cfg.step
        advance = max(cfg.step, cfg.latency, cfg.window - cfg.latency)
        return min(latest, self._last_end + math.floor(advance / cfg.step + 1e-9) * cfg.step)

    def due(self, upto: Optional[float] = None) -> bool:
        """Has a step's worth of audio arrived (up to `upto`, default all received)?"""
        return self._next_end(self.received if upto is None else min(upto, self.received)) is not None

    def step(self, upto: Optional[float] = None) -> Optional[StepResult]:
        """Process the newest due window (skipping older due ones) and finalize."""
        upto = self.received if upto is None else min(upto, self.received)
        end = self._next_end(upto)
        if end is None:
            return None
        skipped = int(round((end - self._last_end) / self.config.step)) - 1
        return self._process(end, skipped, final=False)

    def flush(self) -> Optional[StepResult]:
        """Process the audio left and make everything final."""
        end = self.received
        if end <= self.final_until:
            return None
        if end > self._last_end + 1e-6:
            # windows up to the end, each within reach of the previous one
            while True:
                nxt = self._next_end(end)
                if nxt is None or nxt >= end - 1e-6:
                    break
                self._process(nxt, 0, final=False, emit=False)
            return self._process(end, 0, final=True)
        return self._finalize(end, 0.0, 0, final=True)

    # ---------------------------------------------------------------- one window

    def _window(self, end: float) -> tuple[np.ndarray, float]:
        stop = int(round(end * SAMPLE_RATE))
        start = stop - self._window_samples
        lo = max(start, self._buffer.start)
        audio = self._buffer.slice(lo, stop)
        if lo > start:
            audio = np.concatenate([np.zeros(lo - start, dtype=np.float32), audio])
        return audio, start / SAMPLE_RATE

    def _process(self, end: float, skipped: int, final: bool, emit: bool = True
                 ) -> Optional[StepResult]:
        import torch

        cfg = self.config
        started = time.perf_counter()
        with torch_threads(cfg.num_threads), torch.inference_mode():
            audio, start = self._window(end)
            active, count = self._segment(audio)  # (frames, local speakers) binary
            heard = (np.zeros(0) if self.voice_activity is None else
                     self.voice_activity.frame_speakers(audio, torch.get_num_threads()))
            runs, owners, embeddings, long, cannot = self._embed(audio, active)
        ok = np.isfinite(embeddings).all(axis=1) if len(owners) else np.zeros(0, bool)
        speakers = [-1] * len(owners)
        if (cfg.recluster_every is not None
                and end - self._last_recluster >= cfg.recluster_every - 1e-6):
            merged = self.clustering.recluster(cfg.recluster_threshold, cfg.recluster_min_speech)
            self._last_recluster = end
            for old, new in merged.items():  # votes not final yet follow the speaker
                if old < self._sum.shape[1] and new < self._sum.shape[1]:
                    self._sum[:, new] += self._sum[:, old]
                    self._sum[:, old] = 0.0
                    if self._prev is not None:  # (and what the last window gave it)
                        self._prev[1][:, new] |= self._prev[1][:, old]
                        self._prev[1][:, old] = False
        if (cfg.split_distance is not None and cfg.recluster_every is None
                and end - self._last_split >= cfg.split_every - 1e-6):
            self.splits += len(self.clustering.split(cfg.split_distance, cfg.split_min_speech,
                                                     cfg.step / cfg.window))
            self._last_split = end
        fallback = np.full(len(owners), -1)
        if cfg.continues_speakers and self._prev is not None and len(owners):
            fallback = continuing(self._prev, start, runs, owners, self.frame_step,
                                  cast(float, cfg.continue_iou), self.clustering.labels)
        if ok.any():
            idx = np.flatnonzero(ok)
            for k, g in zip(idx, self.clustering.speakers(embeddings[idx], long[idx],
                                                          cannot[np.ix_(idx, idx)],
                                                          fallback[idx])):
                speakers[k] = g
            if cfg.recluster_every is not None or cfg.split_distance is not None:
                borrowed = set(self.clustering.borrowed)  # (their centroid waits: not theirs)
                self.clustering.remember(embeddings[idx], runs[:, idx].sum(axis=0) * self.frame_step,
                                         [-1 if j in borrowed else speakers[i]
                                          for j, i in enumerate(idx)],
                                         cfg.recluster_history, long[idx])
        # runs too short to embed follow the longest embedded run of their local speaker
        for i, o in enumerate(owners):
            if speakers[i] < 0:
                same = [j for j in range(len(owners)) if owners[j] == o and speakers[j] >= 0]
                if same:
                    speakers[i] = speakers[max(same, key=lambda j: runs[:, j].sum())]
        frames = active.shape[0]
        glob = np.zeros((frames, cfg.max_speakers))
        for i, g in enumerate(speakers):
            if g >= 0:
                glob[:, g] = np.maximum(glob[:, g], runs[:, i])
        self._accumulate(start, glob, count, heard)
        # (all runs' speakers: those of long runs only made AMI train 30.3 % at 5 s, worse
        # than without `continuing`; BENCHMARKS.md, "A voice going on keeps its speaker")
        self._prev = (start, glob > 0.5)
        self._last_end = end
        self.steps += 1
        self.skipped += skipped
        seconds = time.perf_counter() - started
        self.step_seconds += seconds
        self._forget(end)
        if not emit:
            return None
        return self._finalize(end, seconds, skipped, final)

    def _segment(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The window's local speakers ``(frames, speakers)`` (the most likely powerset
        class) and the number of speakers of each frame (`powerset_frame_count`)."""
        import torch

        from workbench.engine.diarization.local_speakers import powerset_frame_count

        x = torch.from_numpy(np.ascontiguousarray(audio))[None, None]
        out = self.segmentation(x)
        multi = self._powerset.to_multilabel(out)[0].cpu().numpy()
        count = powerset_frame_count(torch.exp(out).cpu().numpy(),
                                     self._cardinality,
                                     self.config.overlap_bias)[0]
        return multi.astype(np.float64), count.astype(np.float64)

    def _embed(self, audio: np.ndarray, active: np.ndarray
               ) -> tuple[np.ndarray, list[int], np.ndarray, np.ndarray, np.ndarray]:
        """Runs of the local speakers and their embeddings.

        As the offline pipeline does (`workbench.engine.diarization.local_speakers.split_into_runs`), each
        local speaker is cut into runs at silences >= `split_min_gap` and into pieces of
        about `split_piece` s, because segmentation-3.0 sometimes gives two voices one
        local speaker; each local speaker goes through CAM++ once and each run pools its
        frames (`CAMPPlusEmbedding.embed_parts`). Returns the runs ``(frames, runs)``,
        their owners, embeddings ``(runs, dim)`` (NaN rows: too short), which are long
        (the run, or its local speaker with a run of `long_run_min` s, fills `rho_update`
        of the window), and which pairs cannot share a speaker (overlapping runs of
        different owners).
        """
        import torch

        from workbench.engine.diarization.local_speakers import split_into_runs

        cfg = self.config
        frames = active.shape[0]
        min_frames = cfg.min_active / self.frame_step
        keep = active * (active.sum(axis=0, keepdims=True) >= min_frames)
        runs, owners = split_into_runs(
            keep[None], max(1, round(cfg.split_min_gap / self.frame_step)),
            max(1, round(cfg.split_piece / self.frame_step)) if cfg.split_piece else None)
        runs, owners_list = runs[0] > 0.5, owners[0]
        if not owners_list:
            empty = np.zeros((0, 0), dtype=bool)
            return runs[:, :0], [], np.zeros((0, self.embedding.dimension)), np.zeros(0, bool), empty
        runs = runs[:, :len(owners_list)]
        clean = keep * (keep.sum(axis=1, keepdims=True) < 2)
        use_clean = clean.sum(axis=0) >= min_frames
        speakers = np.where(use_clean[None, :], clean, keep) > 0.5
        waveform = torch.from_numpy(np.ascontiguousarray(audio))[None]
        embeddings = self.embedding.embed_parts(waveform, speakers, runs, owners_list)
        lengths = runs.sum(axis=0)
        owner = np.asarray(owners_list)
        long = lengths >= cfg.rho_update * frames
        if cfg.long_run_min is not None:
            # or its local speaker fills rho_update of the window and the run is no blip
            total = np.bincount(owner, weights=lengths)[owner]
            long |= ((total >= cfg.rho_update * frames)
                     & (lengths >= cfg.long_run_min / self.frame_step))
        overlap = (runs.T.astype(np.int32) @ runs.astype(np.int32)) > 0
        cannot = overlap & (owner[:, None] != owner[None, :])
        return runs, owners_list, embeddings.cpu().numpy().astype(np.float64), long, cannot

    def _accumulate(self, start: float, glob: np.ndarray, count: np.ndarray,
                    heard: np.ndarray) -> None:
        first = int(round((start + self._frame_offset) / self.frame_step))
        n = glob.shape[0]
        profile = self._profile[:n] if n <= self._profile.size else np.ones(n)
        lo = max(first, self._base)
        hi = first + n
        need = hi - self._base
        if need > self._weight.size:
            grow = need - self._weight.size
            self._sum = np.concatenate([self._sum, np.zeros((grow, self._sum.shape[1]))])
            self._weight = np.concatenate([self._weight, np.zeros(grow)])
            self._count = np.concatenate([self._count, np.zeros(grow)])
            self._heard = np.concatenate([self._heard, np.zeros(grow)])
        if hi <= lo:
            return
        src = slice(lo - first, hi - first)
        dst = slice(lo - self._base, hi - self._base)
        self._sum[dst] += glob[src] * profile[src, None]
        self._weight[dst] += profile[src]
        self._count[dst] += count[src] * profile[src]
        if heard.size:  # (its frames are segmentation-3.0's: the same number)
            self._heard[dst] += heard[src] * profile[src]

    def _forget(self, end: float) -> None:
        stop = int(round(end * SAMPLE_RATE)) - self._window_samples
        self._buffer.forget(stop)

    def _activations(self, lo: int, hi: int) -> np.ndarray:
        """Binary ``(hi - lo, speakers)`` activations of global frames [lo, hi)."""
        a, b = lo - self._base, hi - self._base
        weight = np.zeros(hi - lo)
        total = np.zeros((hi - lo, self.config.max_speakers))
        counted, heard = np.zeros(hi - lo), np.zeros(hi - lo)
        valid_a, valid_b = max(a, 0), min(b, self._weight.size)
        if valid_b > valid_a:
            weight[valid_a - a:valid_b - a] = self._weight[valid_a:valid_b]
            total[valid_a - a:valid_b - a] = self._sum[valid_a:valid_b]
            counted[valid_a - a:valid_b - a] = self._count[valid_a:valid_b]
            heard[valid_a - a:valid_b - a] = self._heard[valid_a:valid_b]
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(weight[:, None] > 0, total / weight[:, None], 0.0)
            count = np.rint(np.where(weight > 0, counted / weight, 0.0))
            hears = np.rint(np.where(weight > 0, heard / weight, 0.0)) >= 1
        rank = np.argsort(np.argsort(-score, axis=1, kind="stable"), axis=1, kind="stable")
        if not self.config.counts_speakers:
            active = score >= self.config.tau_active
            # (fill_speech) a frame no speaker takes: the one with the most votes there
            return active | ((rank == 0) & hears[:, None] & ~active.any(axis=1, keepdims=True)
                             & (score > 0))
        # the `count` speakers with the most votes (and any at all) in each frame
        count = np.where((count == 0) & hears, 1, count)  # (fill_speech)
        return (rank < count[:, None]) & (score > 0)

    def _seconds(self, frame: Any) -> float:
        """Global frame -> seconds, rounded to the millisecond one way for turn ends and
        block edges alike (Python's round() of a Python int: NumPy rounds 24.5025 to 24.502,
        Python to 24.503, and a turn's end must equal the edge it is snapped to)."""
        return round(int(frame) * self.frame_step, 3)

    def _turns(self, active: np.ndarray, lo: int) -> list[Turn]:
        turns = []
        for g in range(active.shape[1]):
            col = active[:, g].astype(np.int8)
            if not col.any():
                continue
            edges = np.flatnonzero(np.diff(np.concatenate([[0], col, [0]])))
            for a, b in zip(edges[::2], edges[1::2]):
                turns.append(Turn(self._seconds(lo + a), self._seconds(lo + b), _label(g)))
        return sorted(turns, key=lambda t: (t.start, t.end, t.speaker))

    def _finalize(self, end: float, seconds: float, skipped: int, final: bool) -> StepResult:
        cfg = self.config
        until = end if final else max(self.final_until, end - cfg.latency)
        lo = int(round(self.final_until / self.frame_step))
        hi = int(round(until / self.frame_step))
        turns = self._turns(self._activations(lo, hi), lo) if hi > lo else []
        if turns:
            # frames [lo, hi) stand for the span [final_until, until]: a turn at either
            # edge of the block reaches that edge exactly (rounding to the frame grid
            # would leave a sliver of up to a frame unlabelled, or labelled twice, at
            # every step)
            first, last = self._seconds(lo), self._seconds(hi)
            turns = [Turn(self.final_until if t.start <= first else t.start,
                          until if t.end >= last else t.end, t.speaker) for t in turns]
        now_hi = int(round(end / self.frame_step))
        tentative = self._turns(self._activations(hi, now_hi), hi) if now_hi > hi else []
        # the guess starts at the final boundary, not at its frame (up to 8 ms before)
        tentative = [Turn(max(t.start, until), t.end, t.speaker) for t in tentative
                     if t.end > until]
        self.final_until = until
        # frames before the final boundary are never needed again
        keep_from = hi - self._base
        if keep_from > 0:
            self._sum = self._sum[keep_from:]
            self._weight = self._weight[keep_from:]
            self._count = self._count[keep_from:]
            self._heard = self._heard[keep_from:]
            self._base = hi
        return StepResult(tuple(turns), until, tuple(tentative), end, seconds, skipped)

    def known_speakers(self) -> dict[str, Any]:
        """The speakers given so far, as JSON values for `seed_speakers` of a later session
        of the same recording (a resume): each speaker's label and CAM++ centroid."""
        return {"embedding": "cam++", "dimension": int(self.embedding.dimension),
                "speakers": [{"speaker": _label(label), "centroid": [float(v) for v in c],
                              "long": learned}
                             for label, c, learned in self.clustering.known()]}

    def seed_speakers(self, known: Mapping[str, Any]) -> bool:
        """Go on with the speakers of an earlier session (`known_speakers`): a voice near
        one of them takes its label, a new voice the next free one. Only before this
        session has given a speaker; returns whether it seeded."""
        return self.clustering.seed(self.read_known(known))

    def read_known(self, known: Mapping[str, Any]) -> list[tuple[int, np.ndarray, bool]]:
        """`known_speakers` JSON -> the clustering's (label, centroid, long) items;
        ValueError for what this diarizer cannot use (another embedding model, a label
        beyond `max_speakers` or given twice, a damaged centroid)."""
        dim = self.embedding.dimension
        if known.get("embedding") != "cam++" or known.get("dimension") != dim:
            raise ValueError(f"speakers of another embedding model ({known.get('embedding')}, "
                             f"{known.get('dimension')} dimensions; this one: cam++, {dim})")
        items = known.get("speakers")
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            raise ValueError("known speakers are a list of {speaker, centroid, long}")
        speakers = []
        for item in items:
            try:
                centroid = np.asarray(item.get("centroid"), dtype=np.float64)
            except (TypeError, ValueError):
                centroid = np.zeros(0)
            name = str(item.get("speaker"))
            if (not name.startswith("SPEAKER_") or not name[8:].isdigit()
                    or centroid.shape != (dim,) or not np.isfinite(centroid).all()
                    or not centroid.any()):
                raise ValueError(f"not a speaker this diarizer can go on with: {name!r}")
            speakers.append((int(name[8:]), centroid, bool(item.get("long", True))))
        self.clustering.check_seed(speakers)  # (labels: distinct, below max_speakers)
        return speakers

    def identity(self) -> dict[str, Any]:
        """The models this diarizer runs (names, sha256 checksums, package versions): the
        bundled segmentation-3.0 (no offline front end), CAM++ on its embedding runtime,
        the fill-speech model when `fill_speech` is on, and the online clustering."""
        from workbench.engine.config import DiarizationConfig
        from workbench.engine.diarization.diarizer import model_identity

        out = model_identity(DiarizationConfig(embedding_runtime=self.config.embedding_runtime,
                                               fill_speech=False))
        out["segmentation"].pop("frontend", None)
        out["clustering"] = "workbench.live.OnlineSpeakerClustering"
        if self.voice_activity is not None:
            out["voice_activity"] = self.voice_activity.identity()
        return out

    def stats(self) -> dict[str, Any]:
        return {"steps": self.steps, "skipped_steps": self.skipped,
                "context_seconds": round(self.context_seconds, 3),
                "step_seconds": round(self.step_seconds, 3),
                "speakers": self.clustering.num_speakers,
                "reclusterings": self.clustering.reclusterings, "splits": self.splits,
                "counts_speakers": self.config.counts_speakers}
