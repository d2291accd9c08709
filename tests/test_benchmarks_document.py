"""BENCHMARKS.md's latest block: one run, one machine, every table stamped.

The writer (:mod:`benchmarks.__main__`) is under test. The results files are small
hand-made inputs, and the benchmarks are a stand-in module that writes and renders such
files, so nothing here measures anything.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

import benchmarks
import benchmarks.__main__ as bench_main

AVX512 = {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_count": 2,
          "cpu_flags": ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"], "isa_caps": {}}
AVX2 = {"cpu_model": "AMD EPYC", "cpu_count": 2, "cpu_flags": ["avx2", "fma"], "isa_caps": {}}

# A stand-in benchmark: `main([])` writes results/<name>.json the way the real ones do
# (machine_info() included), `main(["--table", FILE])` prints that file's table.
FAKE = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from benchmarks import machine_info, write_results

    def main(argv):
        if argv[:1] == ["--table"]:
            results = json.loads(Path(argv[1]).read_text())
            print("| figure | value |")
            print("|---|---|")
            print(f"| {results['benchmark']} figure | {results['figure']} |")
            return 0
        name = os.environ["FAKE_BENCH_NAME_" + str(len(CALLS))]
        CALLS.append(name)
        if name == "broken":
            return 1  # could not run: writes nothing
        write_results(Path(os.environ["FAKE_BENCH_DIR"]) / f"{name}.json",
                      {"benchmark": name, "command": "python -m benchmarks",
                       "machine": machine_info(), "parameters": {"n": 3}, "figure": 42})
        return 0

    CALLS = []
''')

OLD_DOCUMENT = """# Benchmarks

Hand-written text that must survive.

## Latest `make bench` run

<!-- latest-run:start -->
| old | mixed block |
<!-- latest-run:end -->

Text after the block.
"""


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Results directory, document and stand-in benchmarks alpha/beta/gamma in tmp_path."""
    (tmp_path / "fake_bench.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(bench_main, "BENCHMARKS", {n: "fake_bench"
                                                    for n in ("alpha", "beta", "gamma")})
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(bench_main, "RESULTS", results)
    monkeypatch.setattr(bench_main, "DOCUMENT", tmp_path / "BENCHMARKS.md")
    (tmp_path / "BENCHMARKS.md").write_text(OLD_DOCUMENT)
    monkeypatch.delenv(benchmarks.RUN_ID_ENV, raising=False)
    yield tmp_path
    sys.modules.pop("fake_bench", None)


def results_file(directory: Path, name: str, run_id: str | None, machine: dict[str, Any],
                 date: str, figure: float, parameters: dict[str, Any] | None = None) -> None:
    (directory / "results" / f"{name}.json").write_text(json.dumps({
        "benchmark": name, "command": f"python -m benchmarks {name}",
        "machine": {**machine, "date": date, "git_commit": "abc1234", "run_id": run_id},
        "parameters": parameters or {"n": 8}, "figure": figure}))


def block(directory: Path) -> str:
    text = (directory / "BENCHMARKS.md").read_text()
    assert text.startswith("# Benchmarks\n\nHand-written text that must survive.")
    assert text.endswith("<!-- latest-run:end -->\n\nText after the block.\n")
    assert "mixed block" not in text
    return text.split("<!-- latest-run:start -->")[1].split("<!-- latest-run:end -->")[0]


def test_full_run_writes_only_its_own_results(bench: Path) -> None:
    results_file(bench, "alpha", "20261202T100000Z", AVX512, "2026-12-02T10:00:00+00:00", 1.5,
                 {"inputs": ["30s", "5min"]})
    results_file(bench, "beta", "20261202T100000Z", AVX512, "2026-12-02T10:30:00+00:00", 2.5)
    results_file(bench, "gamma", "20261125T090000Z", AVX512, "2026-11-25T09:00:00+00:00", 9.5)
    bench_main.write_document(["alpha", "beta", "gamma"], run_id="20261202T100000Z",
                              machine=AVX512)
    text = block(bench)
    assert "run `20261202T100000Z`" in text
    assert "| alpha figure | 1.5 |" in text and "| beta figure | 2.5 |" in text
    assert "9.5" not in text and "### gamma" not in text
    assert ("- gamma: left out, `benchmarks/results/gamma.json` comes from another run "
            "(run id 20261125T090000Z, measured 2026-11-25T09:00:00+00:00") in text
    # each table headed by its own machine stamp (vector flags included), date and parameters
    alpha = text.split("### alpha")[1].split("###")[0]
    assert ("Machine: Intel(R) Xeon(R) Processor, 2 cores, flags: avx2 fma avx512f avx512bw "
            "avx512_vnni. Measured 2026-12-02T10:00:00+00:00") in alpha
    assert 'Parameters: `{"inputs": ["30s", "5min"]}`' in alpha
    assert "Measured 2026-12-02T10:30:00+00:00" in text.split("### beta")[1]


def test_results_from_another_machine_are_left_out(bench: Path) -> None:
    run = "20261202T100000Z"
    results_file(bench, "alpha", run, AVX512, "2026-12-02T10:00:00+00:00", 1.5)
    results_file(bench, "beta", run, AVX2, "2026-12-02T10:10:00+00:00", 2.5)
    capped = {**AVX512, "isa_caps": {"CT2_FORCE_CPU_ISA": "AVX2"}}
    results_file(bench, "gamma", run, capped, "2026-12-02T10:20:00+00:00", 3.5)
    bench_main.write_document(["alpha", "beta", "gamma"], run_id=run, machine=AVX512)
    text = block(bench)
    assert "| alpha figure | 1.5 |" in text
    assert "2.5" not in text and "3.5" not in text
    assert ("- beta: left out, `benchmarks/results/beta.json` was measured on another machine "
            "(AMD EPYC, 2 cores, flags: avx2 fma).") in text
    assert "- gamma: left out" in text and "(capped: CT2_FORCE_CPU_ISA=AVX2)" in text


def test_write_document_alone_takes_the_newest_run_only(bench: Path) -> None:
    results_file(bench, "alpha", "20261201T090000Z", AVX2, "2026-12-01T09:00:00+00:00", 1.5)
    results_file(bench, "beta", None, AVX512, "2026-11-25T12:00:00+00:00", 2.5)
    results_file(bench, "gamma", "20261202T100000Z", AVX512, "2026-12-02T10:00:00+00:00", 3.5)
    assert bench_main.main(["--write-document"]) == 0
    text = block(bench)
    assert "run `20261202T100000Z` on Intel(R) Xeon(R) Processor" in text
    assert "| gamma figure | 3.5 |" in text
    assert "1.5" not in text and "2.5" not in text
    assert "- alpha: left out" in text and "(run id 20261201T090000Z" in text
    assert ("- beta: left out, `benchmarks/results/beta.json` has no run id (one benchmark "
            "run alone, or older than run ids, measured 2026-11-25T12:00:00+00:00") in text


def test_no_full_run_leaves_the_block_empty_with_a_note(bench: Path) -> None:
    results_file(bench, "alpha", None, AVX512, "2026-11-25T12:00:00+00:00", 1.5)
    assert bench_main.main(["--write-document"]) == 0
    text = block(bench)
    assert "the next `make bench` fills this block" in text
    assert "1.5" not in text and "###" not in text
    assert "- alpha: left out" in text
    assert "- beta: left out, `benchmarks/results/beta.json` is missing or unreadable." in text


def test_full_run_stamps_every_results_file_with_its_run_id(
        bench: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # alpha and gamma run; beta fails, and its results file of an earlier run stays behind
    monkeypatch.setenv("FAKE_BENCH_DIR", str(bench / "results"))
    for i, name in enumerate(("alpha", "broken", "gamma")):
        monkeypatch.setenv(f"FAKE_BENCH_NAME_{i}", name)
    results_file(bench, "beta", "20261101T000000Z", benchmarks.machine_info(),
                 "2026-11-01T00:00:00+00:00", 7.5)
    assert bench_main.main([]) == 1
    alpha = json.loads((bench / "results" / "alpha.json").read_text())["machine"]
    gamma = json.loads((bench / "results" / "gamma.json").read_text())["machine"]
    assert alpha["run_id"] and alpha["run_id"] == gamma["run_id"] != "20261101T000000Z"
    assert alpha["cpu_flags"] == benchmarks.cpu_flags()
    text = block(bench)
    assert f"run `{alpha['run_id']}`" in text
    assert "| alpha figure | 42 |" in text and "| gamma figure | 42 |" in text
    assert "7.5" not in text and "- beta: left out" in text
    assert benchmarks.RUN_ID_ENV not in os.environ
