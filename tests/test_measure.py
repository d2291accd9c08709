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
    system_cpu_busy,
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


def test_a_table_printed_later_keeps_the_caps_of_its_run(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A results file's table took the ISA caps of the shell that printed it: a capped
    run reprinted from a plain shell lost "(capped: ...)", and the reverse gained one."""
    from benchmarks import machine_stamp

    capped = {"cpu_model": "EPYC", "cpu_count": 2, "cpu_flags": ["avx2"],
              "isa_caps": {"CT2_FORCE_CPU_ISA": "AVX2"}}
    monkeypatch.delenv("CT2_FORCE_CPU_ISA", raising=False)
    assert "(capped: CT2_FORCE_CPU_ISA=AVX2)" in machine_stamp(capped)
    monkeypatch.setenv("CT2_FORCE_CPU_ISA", "AVX2")
    assert "capped" not in machine_stamp({**capped, "isa_caps": {}})
    old = {k: v for k, v in capped.items() if k != "isa_caps"}  # a file from before the field
    assert "capped" not in machine_stamp(old)


def test_results_files_do_not_make_the_checkout_dirty(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Results files are tracked: once one benchmark of a `make bench` run wrote its file,
    every later one was stamped "<commit>+dirty" on a clean checkout."""
    import shutil
    import subprocess

    import benchmarks

    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "benchmarks" / "results" / "x.json").write_text("{}")
    (repo / "code.py").write_text("a = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    old = benchmarks.REPO_ROOT
    try:
        benchmarks.REPO_ROOT = repo
        clean = benchmarks._git_commit()
        assert clean and not clean.endswith("+dirty")
        (repo / "benchmarks" / "results" / "x.json").write_text('{"new": 1}')
        assert benchmarks._git_commit() == clean
        (repo / "code.py").write_text("a = 2\n")
        assert benchmarks._git_commit() == clean + "+dirty"
    finally:
        benchmarks.REPO_ROOT = old
    shutil.rmtree(repo)


def test_an_incomplete_run_says_so_above_its_table() -> None:
    from benchmarks import marks_partial

    table = marks_partial(lambda results: "| all | 1.0 |")
    assert table({}) == "| all | 1.0 |"
    assert table({"error": "KeyboardInterrupt: "}).startswith(
        "**Incomplete run** (stopped by KeyboardInterrupt: )")


def test_children_cpu_counts_the_children_still_there() -> None:
    """One child gone between listing and reading made the whole sum 0."""
    import psutil

    from benchmarks.measure import cpu_seconds

    class Gone:
        def cpu_times(self):  # type: ignore[no-untyped-def]
            raise psutil.NoSuchProcess(1)

    class Busy:
        def cpu_times(self):  # type: ignore[no-untyped-def]
            return type("T", (), {"user": 1.5, "system": 0.5})()

    class Parent:
        def children(self, recursive: bool = False) -> list:  # type: ignore[type-arg]
            return [Gone(), Busy()]

    assert cpu_seconds(Parent(), True) == 2.0  # type: ignore[arg-type]


def test_system_cpu_busy_counts_guest_time_once() -> None:
    """Linux counts guest time in user and nice: a host running a VM for 1 s of 2 was
    reported 66.7 % busy instead of 50 %."""
    from psutil._pslinux import scputimes

    zero = dict(nice=0.0, system=0.0, iowait=0.0, irq=0.0, softirq=0.0, steal=0.0, guest_nice=0.0)
    a = scputimes(user=0.0, idle=0.0, guest=0.0, **zero)
    b = scputimes(user=1.0, idle=1.0, guest=1.0, **zero)
    assert system_cpu_busy(a, b) == 50.0
    assert system_cpu_busy(a, scputimes(user=3.0, idle=1.0, guest=0.0, **zero)) == 75.0
