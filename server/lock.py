"""One server per data directory: a lock held from start-up to shutdown.

A second server on the same data directory would take the first one's open recordings
for crash leftovers (start-up recovery marks them ``interrupted``, then accepts a resume
while the first still writes), queue its running runs again and delete its half-written
files. ``flock`` is released by the kernel when the holder exits, SIGKILL included; the
lock file is not inherited by worker processes (spawned, and Python's descriptors are
not inheritable).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

LOCK_NAME = "server.lock"


class DataDirInUse(RuntimeError):
    """Another process holds the data directory's lock."""


class DataDirLock:
    """The lock of one data directory (``acquire`` at start-up, ``release`` at the end)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DataDirInUse` naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise DataDirInUse(
                f"Another server (pid {holder or 'unknown'}) is using the data directory "
                f"{self.path.parent}; stop it or give this one another --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # (closing releases the lock; the file stays, harmless)
            self._fd = None


__all__ = ["DataDirInUse", "DataDirLock", "LOCK_NAME"]
