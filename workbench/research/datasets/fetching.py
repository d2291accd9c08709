"""Installing a fetched dataset folder when several processes fetch it at once.

A fetch stages the dataset in a temporary folder beside its final one; `dataset_lock`
lets one process (or thread) at a time install it, and the others, once they hold the
lock, find it complete and use it.  A complete folder is never deleted or replaced: an
incomplete one (an interrupted fetch) is renamed aside before the staged one takes its
name, so readers of a complete folder never see files vanish (before, each process
deleted the folder the one before it had installed, and readers failed).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

__all__ = ["dataset_lock", "install_staged"]


@contextlib.contextmanager
def dataset_lock(root: Path) -> Iterator[None]:
    """An exclusive `fcntl.flock` on ``.<root name>.lock`` beside `root`, held for the
    block (processes and threads: each call opens the file anew)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def install_staged(staged: Path, root: Path, aside: Path) -> None:
    """Move the complete folder `staged` to `root`.  The caller holds `dataset_lock` and
    has found `root` incomplete under it: whatever is at `root` is first renamed to
    `aside` (a path that does not exist yet in the caller's temporary folder, removed
    with it), never deleted where it stands."""
    if root.exists() or root.is_symlink():
        os.replace(root, aside)
    os.replace(staged, root)
