"""The benchmarks' measurement helpers (benchmarks/measure.py): percentiles and memory."""

from __future__ import annotations

import mmap
import os

from benchmarks.measure import (
    MemorySampler,
    PeakWindow,
    latency_summary,
    mb,
    ms,
    percentile,
)


def test_percentile_is_nearest_rank() -> None:
    values = [0.5, 0.1, 0.4, 0.2, 0.3]
    assert percentile(values, 50) == 0.3
    assert percentile(values, 99) == 0.5
    assert percentile(values, 0) == 0.1
    assert percentile([], 50) is None


def test_latency_summary_in_milliseconds() -> None:
    assert latency_summary([]) == {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None,
                                   "max_ms": None}
    summary = latency_summary([0.001, 0.002, 0.5])
    assert summary == {"n": 3, "p50_ms": 2.0, "p90_ms": 500.0, "p99_ms": 500.0, "max_ms": 500.0}
    assert ms(None) is None and ms(0.0123456) == 12.35 and mb(2_500_000) == 2.5


def test_memory_sampler_and_peak_window_see_this_process() -> None:
    with MemorySampler(os.getpid(), interval=0.01) as sampler:
        first = sampler.sample()
    assert first.rss > 0 and first.own_rss > 0 and first.threads >= 1
    assert sampler.peak(first.t, first.t)["rss_mb"] == mb(first.rss)
    with PeakWindow(os.getpid()) as window:
        # fresh pages from the kernel: a malloc'd block may reuse heap pages that earlier
        # tests freed but glibc kept resident (then RSS does not grow)
        block = mmap.mmap(-1, 64_000_000)
        for offset in range(0, len(block), 4096):  # touch every page
            block[offset] = 1
    figures = window.figures()
    assert figures["rss_growth_mb"] is not None and figures["rss_growth_mb"] >= 50
    block.close()
