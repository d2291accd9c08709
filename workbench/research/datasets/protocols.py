"""pyannote.database protocols as corpus items."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Optional


from workbench.engine.formats import PathLike, format_rttm, format_uem, from_annotation

from workbench.research.datasets.items import CorpusItem


# =========================================================================== pyannote protocols


def load_pyannote_protocol(name: str, subset: str,
                           out_dir: Optional[PathLike] = None) -> list[CorpusItem]:
    """Items of the `subset` (train, development or test: no default, so that nobody
    tunes on a test subset by leaving it out) of a pyannote.database protocol (e.g.
    ``"AMI.SpeakerDiarization.mini"``).

    The protocol's reference annotations are written as RTTM/UEM files into `out_dir`
    (default: ``<tmp>/workbench-protocol-<uid>-<name>-<subset>``, written again by each
    call) so that each item looks like any other.  Needs
    pyannote.database with the protocol registered (``database.yml``).
    """
    try:
        from pyannote.database import FileFinder, registry
    except ImportError as exc:  # pragma: no cover - pyannote.database is a dependency
        raise RuntimeError("load_pyannote_protocol needs pyannote.database "
                           "(pip install pyannote.database)") from exc
    if subset not in ("train", "development", "test"):
        raise ValueError(f"subset must be train, development or test, not {subset!r}")
    if name.count(".") != 2:
        raise ValueError(f"protocol name {name!r} must look like Database.Task.Protocol")
    try:
        # FileFinder resolves "audio" from the `Databases:` section of database.yml.
        protocol = registry.get_protocol(name, preprocessors={"audio": FileFinder()})
    except Exception as exc:
        raise ValueError(
            f"pyannote.database protocol {name!r} is not available: {exc} (register it in a "
            "database.yml: pyannote.database.registry.load_database(path) or "
            "PYANNOTE_DATABASE_CONFIG)") from exc
    # default: one folder per protocol and subset, written again by every call (a new
    # temporary folder per call was never removed: notebooks and tests piled them up)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.gettempdir()) / (
        f"workbench-protocol-{os.getuid()}-{name}-{subset}")
    out.mkdir(parents=True, exist_ok=True)
    if out_dir is None:  # a predictable name: only a real folder of this user's will do
        info = os.lstat(out)
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
            out = Path(tempfile.mkdtemp(prefix="workbench-protocol-"))
    try:
        files = list(getattr(protocol, subset)())
    except Exception as exc:
        raise ValueError(f"{name} has no usable {subset!r} subset: {exc}") from exc
    items = []
    for file in files:
        uri = str(file["uri"])
        try:
            audio = Path(str(file["audio"]))
        except Exception as exc:
            raise ValueError(f"{name}: no audio path for {uri!r}; add it to the database's "
                             "'preprocessors' / database.yml") from exc
        rttm = uem = None
        if "annotation" in file:
            rttm = out / f"{uri}.rttm"
            write_if_changed(rttm, format_rttm(uri, from_annotation(file["annotation"])))
        if "annotated" in file:
            uem = out / f"{uri}.uem"
            write_if_changed(uem, format_uem(uri, [(s.start, s.end) for s in file["annotated"]]))
        items.append(CorpusItem(uri, audio, rttm, None, uem,
                                {"protocol": name, "subset": subset}))
    return items


def write_if_changed(path: Path, text: str) -> None:
    """`text` into `path` unless it holds it already, atomically (items of an earlier call,
    or of another process, read the same file)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    # a temporary file of its own (mkstemp): a name made of the pid alone was shared by
    # the threads of a process, which then wrote into each other's file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
