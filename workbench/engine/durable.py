"""Files that outlive a crash of the machine, not only of the process: written whole or
not at all (a temporary file beside the target, fsynced, renamed), and the folder that
names them fsynced too, so the new name is on disk when the call returns (a file's fsync
does not make its directory entry durable: after a power loss a renamed or new file can
be missing, or back to its old content)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Union

__all__ = ["as_new_file", "atomic_write", "make_folder", "move_back", "replace_durably",
           "sync_folder"]

# what fsync of a folder says on a file system that cannot sync one (not a failed write)
_NO_FOLDER_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EOPNOTSUPP}


def sync_folder(folder: Union[str, os.PathLike]) -> None:
    """fsync a folder, so the entries created, renamed or removed in it are durable (a
    no-op where the file system cannot sync a folder or the folder cannot be opened;
    OSError for a failed write-back, e.g. EIO)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_FOLDER_SYNC:
            raise
    finally:
        os.close(fd)


def make_folder(folder: Union[str, os.PathLike]) -> Path:
    """``mkdir -p`` whose new folders are named durably (each new one's parent fsynced)."""
    folder = Path(folder)
    missing = []
    at = folder
    while not at.exists() and at.parent != at:
        missing.append(at)
        at = at.parent
    folder.mkdir(parents=True, exist_ok=True)
    for new in reversed(missing):
        sync_folder(new.parent)
    return folder


def as_new_file(fd: int) -> None:
    """Give a temporary file of `tempfile.mkstemp` (mode 0600) the permissions the umask
    gives a new file, as `open` would, before it takes its name: a session's audio was
    0600 whatever the umask while its transcripts followed it."""
    os.fchmod(fd, 0o666 & ~_umask())


def _umask() -> int:
    """This process's umask, read without setting it (``os.umask`` would change it for
    every thread for a moment); 0o077 when it cannot be read (a kernel before 4.7: the
    files stay the owner's, as mkstemp makes them)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o077


def replace_durably(tmp: Union[str, os.PathLike], path: Union[str, os.PathLike]) -> None:
    """`os.replace` of an fsynced `tmp` onto `path`, then the folder's fsync."""
    os.replace(tmp, path)
    sync_folder(Path(path).parent)


def atomic_write(path: Path, payload: bytes) -> None:
    """Write `payload` at `path` whole or not at all: a temporary file of its own in the
    same folder, fsynced, then renamed (`replace_durably`; a new folder: `make_folder`)."""
    make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        as_new_file(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        replace_durably(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def move_back(moved: Union[str, os.PathLike], folder: Union[str, os.PathLike]) -> None:
    """Give a renamed folder its name back: a rename, or, when `folder` was made anew
    meanwhile (a writer that did not know), every entry of `moved` that `folder` lacks
    moved into it, at any depth, so nothing of either is lost; `moved` is gone after."""
    moved, folder = Path(moved), Path(folder)
    if not folder.exists():
        moved.rename(folder)
        sync_folder(folder.parent)
        return
    for entry in list(moved.iterdir()):
        target = folder / entry.name
        if not target.exists():
            entry.rename(target)
        elif entry.is_dir() and target.is_dir():
            move_back(entry, target)
        # (a file in both: the newer one, in `folder`, stays)
    sync_folder(folder)
    import shutil

    shutil.rmtree(moved, ignore_errors=True)
