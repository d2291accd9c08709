"""Measurement helpers shared by the benchmarks: percentiles, units, CPU time, and the
resident memory of a process (a sampler thread, and the kernel's exact high-water mark).

Figures use decimal megabytes (:data:`MB`, 10^6 bytes) and milliseconds.
"""

from __future__ import annotations

import math
import resource
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Sequence

if TYPE_CHECKING:
    import psutil

# psutil is imported where it is used: the pipeline benchmark's worker times its own
# imports, and `own_cpu_seconds`/`own_peak_rss_bytes` need only the standard library.

MB = 1_000_000


# ---------------------------------------------------------------------- numbers


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def number(value: Any, digits: int = 4) -> Optional[float]:
    """`value` as a float rounded to `digits` (None for None, NaN or no number)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else round(value, digits)


def percentile_rounded(values: Sequence[float], q: float) -> Optional[float]:
    """`percentile` (nearest rank) rounded to the millisecond; None for no values."""
    return number(percentile([float(v) for v in values], q), 3)


def ms(seconds: Optional[float]) -> Optional[float]:
    """Seconds as milliseconds rounded to 0.01 (None stays None)."""
    return None if seconds is None else round(seconds * 1000, 2)


def mb(n_bytes: float) -> float:
    """Bytes as decimal megabytes rounded to 0.01."""
    return round(n_bytes / MB, 2)


def latency_summary(values: Sequence[float]) -> dict[str, Any]:
    """``n`` and p50/p90/p99/max in milliseconds (nearest rank) of durations in seconds;
    None for each figure without values."""
    if not values:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(values), "p50_ms": ms(percentile(values, 50)),
            "p90_ms": ms(percentile(values, 90)), "p99_ms": ms(percentile(values, 99)),
            "max_ms": ms(max(values))}


class Timer:
    """Wall-clock seconds of a ``with`` block (``perf_counter``): ``.seconds`` after it."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


# ---------------------------------------------------------------------- CPU


@dataclass
class CpuSnapshot:
    """CPU seconds (user + system) of a process and of each of its children at one moment."""

    main: float
    children: dict[int, float]
    at: float
    main_system: float = 0.0


def cpu_snapshot(proc: psutil.Process) -> CpuSnapshot:
    import psutil

    t = proc.cpu_times()
    kids: dict[int, float] = {}
    for child in proc.children(recursive=True):
        try:
            ct = child.cpu_times()
            kids[child.pid] = ct.user + ct.system
        except psutil.Error:
            pass
    return CpuSnapshot(t.user + t.system, kids, time.perf_counter(), t.system)


def cpu_delta(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, float]:
    """CPU seconds used between two snapshots: the server and (summed) its children.

    A child that exited inside the window is not counted (its time is gone with it)."""
    kids = sum(v - a.children.get(pid, 0.0) for pid, v in b.children.items())
    return {"server_cpu_s": b.main - a.main, "server_system_cpu_s": b.main_system - a.main_system,
            "children_cpu_s": kids, "wall_s": b.at - a.at}


def cpu_seconds(proc: psutil.Process, children: bool) -> float:
    """CPU seconds (user + system) of ``proc``, or of its children summed (a child gone
    between listing and reading counts nothing, the others still count); 0 when
    unreadable. A difference of two such sums is wrong when children come and go in
    between: use `cpu_snapshot` / `cpu_delta` for that."""
    import psutil

    try:
        procs = proc.children(recursive=True) if children else [proc]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def own_cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def system_cpu_busy(a: Any, b: Any) -> float:
    """Whole-machine CPU busy % (all cores, 100 = every core busy) between two cpu_times()."""
    idle = (b.idle + getattr(b, "iowait", 0)) - (a.idle + getattr(a, "iowait", 0))

    def all_time(t: Any) -> float:  # Linux counts guest time in user and nice already
        return sum(t) - getattr(t, "guest", 0) - getattr(t, "guest_nice", 0)

    total = all_time(b) - all_time(a)
    return round(100 * (1 - idle / total), 1) if total > 0 else 0.0


# ---------------------------------------------------------------------- memory


def own_peak_rss_bytes() -> int:
    """This process's resident high-water mark in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def proc_status_kb(pid: int, field: str) -> Optional[int]:
    """A ``kB`` field of /proc/PID/status (``VmRSS``, ``VmHWM``), None where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) of ``pid``; False when refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return proc_status_kb(pid, "VmHWM") is not None


class MemorySample(NamedTuple):
    """One sample of a :class:`MemorySampler` (bytes)."""

    t: float
    rss: int
    children_rss: int
    threads: int
    own_rss: int  # this (measuring) process


class MemorySampler:
    """Samples a process's resident memory (and its children's, its thread count and this
    process's own) every ``interval`` s in a thread, as a context manager."""

    def __init__(self, pid: int, interval: float = 0.5,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.me = psutil.Process()
        self.interval = interval
        self.clock = clock
        self.samples: list[MemorySample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> MemorySample:
        """Take one sample now (also called at the edges of each measured window)."""
        with self._lock:
            return self._sample()

    def _sample(self) -> MemorySample:
        import psutil

        try:
            rss = self.proc.memory_info().rss
            threads = self.proc.num_threads()
            kids = 0
            for c in self.proc.children(recursive=True):
                try:
                    kids += c.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            rss = kids = threads = 0
        s = MemorySample(self.clock(), rss, kids, threads, self.me.memory_info().rss)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def window(self, t0: float, t1: float) -> list[MemorySample]:
        return [s for s in self.samples if t0 <= s.t <= t1]

    def peak(self, t0: float, t1: float) -> dict[str, Any]:
        """Peak RSS (MB), children's RSS (MB) and thread count over samples in [t0, t1]."""
        w = self.window(t0, t1)
        if not w:
            return {"rss_mb": None, "children_rss_mb": None, "threads": None, "samples": 0}
        return {"rss_mb": mb(max(s.rss for s in w)),
                "children_rss_mb": mb(max(s.children_rss for s in w)),
                "threads": max(s.threads for s in w), "samples": len(w)}

    def settled_rss(self, n: int = 4, pause: float = 0.25) -> int:
        """Median of ``n`` fresh samples (the baseline)."""
        values = []
        for i in range(n):
            values.append(self.sample().rss)
            if i + 1 < n:
                time.sleep(pause)
        return int(statistics.median(values))


class PeakWindow:
    """Peak resident memory of a process over a ``with`` block: the kernel's exact
    high-water mark when it can be reset, else a 0.05 s sampler."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampler = MemorySampler(pid, interval=0.05)

    def __enter__(self) -> "PeakWindow":
        self.rss_before = MemorySampler(self.pid).settled_rss(n=3, pause=0.2)
        self.exact = reset_peak_rss(self.pid)
        self.t0 = time.perf_counter()
        self.sampler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sampler.__exit__()
        self.t1 = time.perf_counter()
        hwm = proc_status_kb(self.pid, "VmHWM") if self.exact else None
        sampled = self.sampler.peak(self.t0, self.t1)["rss_mb"]
        self.peak_mb = mb(hwm * 1024) if hwm is not None else sampled
        self.method = "VmHWM" if hwm is not None else "sampled every 0.05 s"

    def figures(self) -> dict[str, Any]:
        return {"rss_mb_before": mb(self.rss_before), "rss_mb_peak": self.peak_mb,
                "rss_growth_mb": (round(self.peak_mb - mb(self.rss_before), 2)
                                  if self.peak_mb is not None else None),
                "peak_method": self.method, "seconds": round(self.t1 - self.t0, 3)}


__all__ = ["MB", "CpuSnapshot", "MemorySample", "MemorySampler", "PeakWindow", "Timer",
           "cpu_delta", "cpu_seconds", "cpu_snapshot", "latency_summary", "mb", "ms",
           "own_cpu_seconds", "own_peak_rss_bytes", "percentile", "proc_status_kb",
           "reset_peak_rss", "system_cpu_busy"]
