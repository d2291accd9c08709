"""Cells: where `run_grid` caches one (recording, system) result, and the key that says
which audio, configuration, code, models and packages computed it.

A cell is ``cache_dir/<uri>-<audio sha256[:12]>/<system key>/<environment key>/`` holding
``transcript.json`` (written last: its presence marks a finished cell) and
``provenance.json``.  The environment (`environment`) is the workbench code that computes
results (`code_version`), the checksums of the models and the versions of the packages.
A process computes a cell only in the environment its key names (`check_environment`):
a Dask worker started on other code, or a kernel whose code was edited after it was
imported, is refused instead of storing its output under the new code's key.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from workbench.engine.formats import PathLike
from workbench.engine.pipeline import DEFAULT_DATA_DIR
from workbench.engine.provenance import RESULT_ROOMS, file_sha256, source_version
from workbench.engine.provenance import package_version as _distribution_version
from workbench.research.datasets.items import CorpusItem

if TYPE_CHECKING:
    from workbench.research.experiments import System

__all__ = ["EnvironmentMismatch", "RESULT_ROOMS", "cell_path", "check_environment",
           "code_version", "environment", "environment_key", "source_version"]


def _audio_checksum(path: Path) -> str:
    return file_sha256(path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "item"


def code_version() -> str:
    """A short hash of the workbench code that computes results (`source_version` of the
    package's `RESULT_ROOMS`), anew at every call (~2 ms): code edited while a kernel runs
    counts at once (the workers a grid spawns import the files as they are now)."""
    return source_version(Path(__file__).resolve().parent.parent)


_BASELINE_PACKAGES = {"senko": ("senko", "silero-vad", "torch", "numpy", "scikit-learn")}


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
        for identity in provenance["models"].values():
            if isinstance(identity, Mapping) and isinstance(identity.get("packages"), Mapping):
                packages.update(identity["packages"])
        models = _checksums_only(provenance["models"])
    else:
        models = {}
        packages = {name: _distribution_version(name)
                    for name in _BASELINE_PACKAGES[system.baseline]}
    packages = {k: v for k, v in packages.items() if k != "speech-workbench"}
    return {"code": code_version(), "models": models, "packages": packages}


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


def _stale_cell(cache_dir: PathLike, item: CorpusItem, system: System) -> Optional[Path]:
    """The newest finished cell of the same audio and configuration computed in another
    environment (other code, models or packages), or None.  A cell stored before
    environments were part of the key sits directly in the system's folder."""
    folder = _system_folder(cache_dir, item, system)
    found = [p.parent for p in folder.glob("*/transcript.json")]
    if (folder / "transcript.json").is_file():
        found.append(folder)
    return max(found, key=lambda p: (p / "transcript.json").stat().st_mtime, default=None)


def _cell_code_version(folder: Path) -> Optional[str]:
    return (_read_provenance(folder).get("environment") or {}).get("code")


def _write_json(path: Path, document: Any) -> None:
    """Atomic write: a temporary file in the same folder, fsynced, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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
