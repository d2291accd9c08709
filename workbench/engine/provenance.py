"""What a result needs to be reproduced: file checksums, package versions, and the thread
counts of a run (torch's held for its length, none beyond the usable CPUs)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union, overload

__all__ = ["CPUID_MASK_PREFIX", "ISA_CAPS", "capped_threads", "cpu_flag_set", "cpu_model",
           "cpuid_mask", "file_sha256", "model_cache_dir", "package_version",
           "package_versions", "torch_threads", "usable_cpus"]


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Union[str, "os.PathLike[str]"]) -> str:
    """sha256 of a file (hex), cached while its size, times and inode stay the same."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path)), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def package_version(distribution: str) -> Optional[str]:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def package_versions(distributions: Iterable[str]) -> dict[str, Optional[str]]:
    """`package_version` of each distribution."""
    return {name: package_version(name) for name in distributions}


ISA_CAPS = ("CT2_FORCE_CPU_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
            "MKL_ENABLE_INSTRUCTIONS")
"""Environment variables that cap the instruction sets of CTranslate2, ATen, oneDNN and
MKL (to see roughly what an AVX2-only CPU gets on an AVX-512 machine)."""

CPUID_MASK_PREFIX = "avx2-cpuid-"
"""The file name of the benchmarks' preloaded library that hides AVX-512 from CPUID: how
a process tells that it is masked."""


def cpuid_mask() -> Optional[str]:
    """What this process's CPUID hides (``"no AVX-512"``) when the mask is preloaded."""
    return "no AVX-512" if CPUID_MASK_PREFIX in os.environ.get("LD_PRELOAD", "") else None


def _cpuinfo_value(*keys: str) -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    return _cpuinfo_value("model name") or platform.processor() or platform.machine() \
        or "unknown"


def cpu_flag_set() -> set[str]:
    """Every flag of the CPU (/proc/cpuinfo's ``flags`` or ``Features``; empty if unread)."""
    return set((_cpuinfo_value("flags", "Features") or "").split())


def usable_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask where there is one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


@overload
def capped_threads(threads: int) -> int: ...
@overload
def capped_threads(threads: Optional[int]) -> Optional[int]: ...
def capped_threads(threads: Optional[int]) -> Optional[int]:
    """`threads`, at most `usable_cpus` (0 and None, which let the library choose, kept).
    Threads beyond the CPUs only wait for each other: 1024 CTranslate2 threads on 2 CPUs
    took a 10 s run from ~1 s to 48 s, and the worker kept its 2057 threads."""
    if threads is None or threads <= 0:
        return threads
    return min(threads, usable_cpus())


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` (None: left alone; at most
    `usable_cpus`) inside the block, restored after it."""
    import torch

    before = torch.get_num_threads()
    threads = capped_threads(threads)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_cache_dir() -> Path:
    """Where exported models are kept: ``$WORKBENCH_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/speech-workbench``, else ``~/.cache/speech-workbench``."""
    explicit = os.environ.get("WORKBENCH_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "speech-workbench"


RESULT_ROOMS = ("engine", "research")
"""The rooms of the package whose code computes results (editing notebook/ or the entry
points keeps experiment cells valid)."""

NO_CELL_MODULES = (
    "research/evaluation.py", "research/metrics.py", "research/tuning.py",
    *(f"research/datasets/{name}.py" for name in (
        "__main__", "ami", "cli", "corpus", "fetching", "fillets", "protocols", "real_voices",
        "speech", "synthesis", "voices")))
"""Modules of those rooms that no cell runs, left out of `source_version`: scoring (a
cell holds a transcript; its figures are computed from it anew for every table) and
making or fetching datasets (a cell's key holds its audio's checksum, and the references
are no part of it).  A cell's worker imports some of them, but they only define things
when imported (tests check it), so editing them keeps cached transcripts valid; any
other module of the rooms, a new one included, counts."""


def source_version(package: Path, rooms: Iterable[str] = RESULT_ROOMS,
                   leave_out: Iterable[str] = NO_CELL_MODULES) -> str:
    """A short hash of every ``.py`` file in the `rooms` of `package` but those of
    `leave_out` (paths relative to `package`): its path in the package and its bytes
    (~2 ms for the workbench)."""
    skip = set(leave_out)
    digest = hashlib.sha256()
    for path in sorted(p for room in rooms for p in (package / room).rglob("*.py")):
        relative = path.relative_to(package)
        if "__pycache__" in path.parts or relative.as_posix() in skip:
            continue
        digest.update(str(relative).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
