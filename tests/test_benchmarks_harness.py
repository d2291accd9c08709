"""The benchmarks' harness: where results go, what a failed or killed run reports, what a
table and an exit code say. Nothing here measures: the benchmarks run against hand-made
results, or so that they stop before any model loads (a worker process killed at its
start, a benchmark directory that cannot be made)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

import benchmarks
import benchmarks.__main__ as bench_main
from benchmarks import REPO_ROOT, machine_stamp

MASK = "/nowhere/avx2-cpuid-0123456789ab.so"  # the CPUID mask's name (benchmarks.isa)

# Every Python process started with this folder on PYTHONPATH: its environment written to
# $HARNESS_ENV_DUMP, then killed by SIGKILL as the OOM killer would (before any import).
KILLER = textwrap.dedent('''
    import json, os, signal
    if os.environ.get("HARNESS_ENV_DUMP"):
        with open(os.environ["HARNESS_ENV_DUMP"], "w") as f:
            json.dump(dict(os.environ), f)
        os.kill(os.getpid(), signal.SIGKILL)
''')


@pytest.fixture
def killed_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Python children die of SIGKILL at start, from a shell capped to AVX2 and masked;
    yields the file their environment is written to."""
    (tmp_path / "killer").mkdir()
    (tmp_path / "killer" / "sitecustomize.py").write_text(KILLER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "killer"), str(REPO_ROOT)]))
    dump = tmp_path / "child-env.json"
    monkeypatch.setenv("HARNESS_ENV_DUMP", str(dump))
    for key, value in (("CT2_FORCE_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2"),
                       ("ONEDNN_MAX_CPU_ISA", "AVX2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2")):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LD_PRELOAD", MASK)
    yield dump


# ---------------------------------------------------------------------------- diarization


def test_final_figures_never_overwrite_the_development_results_file() -> None:
    """`--sets ami --final` wrote diarization-ami.json (the train/development figures)
    and a plain `--final` diarization.json."""
    from benchmarks.diarization import parse_args

    assert parse_args(["--sets", "ami", "--final"]).out.name == "diarization-ami-final.json"
    assert parse_args(["--final"]).out.name == "diarization-final.json"
    assert parse_args(["--sets", "ami"]).out.name == "diarization-ami.json"
    assert parse_args([]).out.name == "diarization.json"
    assert parse_args(["--final", "--out", "x.json"]).out == Path("x.json")


def test_diarization_records_the_ami_systems_it_scores(tmp_path: Path) -> None:
    """With --final, parameters.systems listed 16 systems while AMI scored its own only."""
    from benchmarks.ami import AMI_SYSTEMS
    from benchmarks.diarization import main

    (tmp_path / "file").write_text("")
    out = tmp_path / "d.json"
    # a benchmark directory that cannot be made: the run stops before scoring anything
    assert main(["--sets", "ami", "--final", "--no-senko", "--bench-dir",
                 str(tmp_path / "file" / "bench"), "--out", str(out)]) == 1
    results = json.loads(out.read_text())
    assert results["error"].startswith(("FileExistsError", "NotADirectoryError"))
    assert results["parameters"]["ami_systems"] == list(AMI_SYSTEMS)
    assert results["options"]["final"] is True
    assert results["options"]["bench_dir"] == str(tmp_path / "file" / "bench")
    main(["--sets", "ami", "--final", "--systems", "default,once", "--ami-systems", "default",
          "--bench-dir", str(tmp_path / "file" / "bench"), "--out", str(out)])
    assert json.loads(out.read_text())["parameters"]["ami_systems"] == ["default", "once"]


# ---------------------------------------------------------------------------- pipeline


def _pipeline_args(tmp_path: Path) -> Any:
    from benchmarks.pipeline import parse_args

    return parse_args(["--inputs", "30s", "--no-senko", "--bench-dir", str(tmp_path / "bench"),
                       "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "p.json")])


def test_a_killed_workbench_run_fails_its_targets(tmp_path: Path, killed_children: Path) -> None:
    """The OOM killer's SIGKILL made the 30-minute row "unavailable", which verdicts()
    skipped: the memory target could not fail."""
    from benchmarks.pipeline import markdown_table, run_one, verdicts
    from workbench.research.datasets import sample_call

    item = sample_call()
    row = run_one("workbench", item, _pipeline_args(tmp_path), tmp_path)
    assert row["status"] == "killed" and "SIGKILL" in row["reason"]
    assert row["peak_rss_mb"] is None
    runs = [{"input": "30min", "uri": item.uri, **row, "system": "workbench", "isa": "native"}]
    verdict = verdicts(runs)
    assert verdict == {"peak memory <= 3000 MB on 30min": False}
    table = markdown_table({"machine": {}, "runs": runs, "verdict": verdict})
    assert "| 30min | workbench | native | 30 |" in table and "**killed**" in table
    assert "- FAIL: peak memory <= 3000 MB on 30min" in table
    # a target whose run is missing (an interrupted run) fails too
    senko = {"input": "5min", "system": "senko", "isa": "native", "status": "ok",
             "rtf": 0.1, "peak_rss_mb": 900.0, "der": 0.2}
    assert verdicts([senko], ["5min"]) == {"RTF <= 0.2 on 5min": False,
                                           "DER <= senko's on 5min": False}
    assert verdicts([senko], []) == {}  # not asked for (e.g. --isa avx2 only): no targets


def test_a_native_row_does_not_inherit_the_shell_s_isa_caps_or_mask(
        tmp_path: Path, killed_children: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--isa native` from a capped or CPUID-masked shell ran capped, labelled native."""
    from benchmarks.pipeline import main

    assert main(["--inputs", "30s", "--no-senko", "--bench-dir", str(tmp_path / "bench"),
                 "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "p.json")]) == 0
    env = json.loads(killed_children.read_text())
    assert not {"CT2_FORCE_CPU_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                "MKL_ENABLE_INSTRUCTIONS"} & set(env)
    assert MASK not in env.get("LD_PRELOAD", "")
    results = json.loads((tmp_path / "p.json").read_text())
    assert results["parameters"]["data_dir"] == str(tmp_path / "data")  # was not recorded
    assert results["options"]["data_dir"] == str(tmp_path / "data")
    (run,) = results["runs"]
    assert run["status"] == "killed" and run["isa"] == "native"
    # nor does the table's machine stamp claim the shell's caps for it
    assert results["machine"]["isa_caps"] == {} and results["machine"]["cpuid_mask"] is None
    # `avx2` keeps its own caps; the command-line form strips what the shell set
    from benchmarks.isa import AVX2_CAPS, child_environment

    capped = child_environment("avx2", {"LD_PRELOAD": f"/lib/a.so {MASK}", "ATEN_CPU_CAPABILITY":
                                        "default", "HOME": "/h"})
    assert capped == {**AVX2_CAPS, "LD_PRELOAD": "/lib/a.so", "HOME": "/h"}
    monkeypatch.delenv("HARNESS_ENV_DUMP")  # `env` must run, not die
    done = subprocess.run([sys.executable, "-m", "benchmarks.isa", "native", "env"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "CT2_FORCE_CPU_ISA=" not in done.stdout and MASK not in done.stdout


# ---------------------------------------------------------------------------- live server


def _live(uri: str, streams: int, lags: list[float], **extra: Any) -> dict[str, Any]:
    return {"uri": uri, "live": True, "streams": streams, "refined_words": 10,
            "refined_wer": 0.1, "refined_der": 0.05, "chunk_reply_p50_ms": 5.0,
            "chunk_reply_p95_ms": 20.0, "lost_bytes": 0, "word_latencies": lags,
            "speaker_latencies": lags, "word_latency_p50": lags[0], "word_latency_p95": lags[-1],
            "speaker_latency_p50": lags[0], "speaker_latency_p95": lags[-1],
            "first_word_delay": 3.0, "words_before_stop": 1, "before_stop_share": 0.1,
            "live_wer": 0.2, "live_der": 0.1, "live_cpu_per_audio_second": 0.9, **extra}


def test_most_streams_is_not_a_count_after_a_smaller_one_missed() -> None:
    """live-server-count.json: 1 stream p95 3.26 s missed the 3 s target, 2 streams 2.77 s
    met it, and the answer was "2"."""
    from benchmarks import live_server

    summary = [{"streams": 1, "within_target": False}, {"streams": 2, "within_target": True}]
    assert live_server.most_streams(summary) is None
    assert live_server.most_streams([{"streams": 3, "within_target": True}, *summary[1:],
                                     {"streams": 1, "within_target": True}]) == 3
    runs = [_live("sample", 1, [1.0, 3.26]), _live("sample", 2, [1.0, 2.77]),
            _live("trn00", 2, [1.0, 2.5])]
    table = live_server.markdown_table({"machine": {}, "runs": runs,
                                        "most_streams_within_target": 2})
    assert ("with p95 word latency ≤ 3 s: none of those tried (1 stream(s) missed it; 2 met "
            "it, after that miss).") in table


def test_the_answer_comes_from_the_runs_not_a_saved_summary() -> None:
    """A file from before `repeat`: its saved summary counted the filler recording (two
    streams missed the target), the table's rows did not, and its answer line the saved."""
    from benchmarks import live_server

    runs = [_live("sample", 1, [1.0, 2.0]), _live("sample", 2, [1.0, 2.5]),
            _live("trn00", 2, [1.0, 2.6]), _live("trn01", 2, [1.0, 2.7]),
            _live("sample", 2, [1.0, 9.0])]  # the filler of the last group
    saved = [{"streams": 2, "within_target": False}]
    table = live_server.markdown_table({"machine": {}, "runs": runs, "summary": saved,
                                        "most_streams_within_target": 1})
    assert "| 2 | 1.00 / 2.70 |" in table
    assert "with p95 word latency ≤ 3 s: 2." in table


# ---------------------------------------------------------------------------- python -m benchmarks


FAKE = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from benchmarks import machine_info, write_results

    def main(argv):
        if argv[:1] == ["--table"]:
            print(f"| figure | {json.loads(Path(argv[1]).read_text())['figure']} |")
            return 0
        name = os.environ["HARNESS_NAMES"].split(",")[len(CALLS)]
        CALLS.append(name)
        if name == "raises":
            raise RuntimeError("model file missing")
        write_results(Path(os.environ["HARNESS_DIR"]) / f"{name}.json",
                      {"benchmark": name, "machine": machine_info(), "figure": name + "-42"})
        return 0

    CALLS = []
''')


def test_one_benchmark_raising_does_not_lose_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A benchmark that raised ended `python -m benchmarks`: the later benchmarks never
    ran and BENCHMARKS.md was not written."""
    (tmp_path / "harness_fake_bench.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(bench_main, "BENCHMARKS", {n: "harness_fake_bench"
                                                    for n in ("alpha", "beta", "gamma")})
    (tmp_path / "results").mkdir()
    monkeypatch.setattr(bench_main, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench_main, "DOCUMENT", tmp_path / "BENCHMARKS.md")
    monkeypatch.setenv("HARNESS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("HARNESS_NAMES", "alpha,raises,gamma")
    monkeypatch.delenv(benchmarks.RUN_ID_ENV, raising=False)
    try:
        assert bench_main.main([]) == 1
    finally:
        sys.modules.pop("harness_fake_bench", None)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| figure | alpha-42 |" in text and "| figure | gamma-42 |" in text
    assert ("- beta: left out, the benchmark raised in this run (RuntimeError: model file "
            "missing).") in text
    assert "beta: RuntimeError: model file missing" in capsys.readouterr().err


# ---------------------------------------------------------------------------- load, ingest, accuracy


def test_load_counts_a_truncated_audio_wav_as_a_failure() -> None:
    """A truncated audio.wav showed "0 bytes (1/1 byte-exact)" and exit status 0."""
    from benchmarks.load import markdown_table, passed

    figures = {"streams_ok": 0, "streams_failed": 0, "lost_bytes": 0, "raw_exact": 1,
               "wav_exact": 0, "sent_mb": 1.9, "progress_latency": {
                   "p50_ms": 1, "p99_ms": 2, "max_ms": 3}, "nop_round_trip": {
                   "p50_ms": 1, "p99_ms": 2}, "server": {
                   "cpu_percent_of_one_core": 5, "rss_mb_before": 60,
                   "rss_mb_peak_streaming": 61, "rss_mb_per_stream": 1}}
    table = markdown_table({"machine": {}, "parameters": {"streams": 1, "seconds": 60},
                            "results": figures})
    assert "**0/1** (part-000.raw exact 1/1, audio.wav exact 0/1)" in table
    assert not passed(figures, 1)
    assert passed({**figures, "streams_ok": 1, "wav_exact": 1}, 1)
    assert not passed({**figures, "streams_ok": 1, "lost_bytes": 3}, 1)


def test_incomplete_ingest_and_accuracy_runs_say_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import accuracy, ingest

    stopped = {"error": "KeyboardInterrupt: ", "machine": {}, "command": "c",
               "markdown": {"summary": "| all | 1 |", "recordings": "| r | 1 |"}}
    path = tmp_path / "r.json"
    for module in (ingest, accuracy):
        path.write_text(json.dumps({**stopped, "benchmark": module.NAME}))
        assert module.main(["--table", str(path)]) == 0
        assert capsys.readouterr().out.startswith(
            "**Incomplete run** (stopped by KeyboardInterrupt: )")


def test_accuracy_counts_only_the_cells_it_computed() -> None:
    """A system that cannot run here (senko built for another CPU) computes nothing: its
    cells were counted as computed ("1 cell(s) computed" when every other was cached)."""
    import pandas as pd

    from benchmarks.accuracy import computed_cells

    rows = pd.DataFrame({"cached": [True, False, False, False],
                         "status": ["ok", "ok", "unavailable", "ok"]})
    assert computed_cells(rows) == 2
    assert computed_cells(rows.iloc[[0, 2]]) == 0


@pytest.mark.parametrize("flag", ["--workers", "--threads"])
def test_accuracy_refuses_no_workers_or_threads(
        flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--threads 0 failed in every worker with an unexplained BrokenProcessPool (torch
    cannot run on 0 threads) and --workers 0 meant the default."""
    from benchmarks.accuracy import parse_args
    from workbench.research.experiments import run_grid

    with pytest.raises(SystemExit):
        parse_args([flag, "0"])
    assert f"{flag} must be at least 1" in capsys.readouterr().err
    import numpy as np

    for option in ("max_workers", "threads_per_worker"):
        for bad in (0, True, 1.5, "2"):
            with pytest.raises(ValueError, match=f"{option} must be a whole number of at least 1"):
                run_grid([], [], cache_dir="unused", **{option: bad})
        with pytest.raises(ValueError, match="at least one system"):  # (numpy's whole numbers do)
            run_grid([], [], cache_dir="unused", **{option: np.int64(2)})


@pytest.mark.parametrize("module_name", ["accuracy", "diarization", "embedding", "ingest", "live",
                                         "live_resume", "live_server", "load", "pipeline",
                                         "speakers"])
def test_a_table_of_a_file_that_is_not_the_benchmarks_says_why(
        tmp_path: Path, module_name: str) -> None:
    """--table FILE of a missing file, of text that is no JSON or of another benchmark's
    results ended in a traceback (FileNotFoundError, JSONDecodeError, KeyError) or, for
    some, an empty table and exit 0."""
    import importlib

    module = importlib.import_module(f"benchmarks.{module_name}")
    other = "load" if module.NAME != "load" else "ingest"
    cases = {"missing.json": (None, "cannot be read (No such file or directory)"),
             "text.json": ("not json", "not a results file (no JSON: "),
             "other.json": (json.dumps({"benchmark": other, "machine": {}}),
                            f"not a results file of `python -m benchmarks {module.NAME}` "
                            f"(it is one of `{other}`)"),
             "empty.json": ("{}", "(it names no benchmark)")}
    for name, (text, says) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(SystemExit) as stopped:
            module.main(["--table", str(path)])
        assert isinstance(stopped.value.code, str) and stopped.value.code.startswith(
            f"--table {path}: ") and says in stopped.value.code, stopped.value.code


def test_live_records_the_options_it_ran_with(tmp_path: Path) -> None:
    """live did not record --no-offline nor --bench-dir."""
    from benchmarks.live import main

    (tmp_path / "file").write_text("")
    bench = str(tmp_path / "file" / "bench")  # cannot be made: the run stops at once
    out = tmp_path / "live.json"
    assert main(["--no-offline", "--bench-dir", bench, "--out", str(out)]) == 1
    results = json.loads(out.read_text())
    assert results["parameters"]["offline"] is False
    assert results["parameters"]["bench_dir"] == bench
    assert results["options"]["no_offline"] is True and results["options"]["bench_dir"] == bench
    assert "table" not in results["options"]


# ---------------------------------------------------------------------------- machine stamp


def test_a_results_file_without_a_machine_is_not_stamped_with_this_one() -> None:
    from benchmarks.load import markdown_table

    this = machine_stamp()
    assert this.startswith(benchmarks.machine_info()["cpu_model"])
    assert machine_stamp({}) == machine_stamp(None) == "unknown machine"
    table = markdown_table({"machine": {}, "parameters": {}, "results": {}})
    assert table.startswith("Machine: unknown machine") and this not in table


def test_live_resume_pools_each_system_over_the_speech_of_its_group() -> None:
    """The live-resume table: DER per system pooled over the group's speech (not a mean of
    the inputs' DER), the confusion beside it, a group per kind of input."""
    from benchmarks.live_resume import SYSTEMS, summarize, table

    def row(uri: str, system: str, errors: float, speech: float) -> dict[str, Any]:
        return {"uri": uri, "system": system, "der_errors": errors, "speech": speech,
                "confusion": errors / 2, "der": errors / speech}

    runs = [row(uri, system, errors, speech)
            for uri, speech in (("sample", 24.0), ("trn00", 10.0), ("trn03", 30.0))
            for system, errors in zip(SYSTEMS, (1.0, 2.0, 1.6, 6.0), strict=True)]
    summary = {r["group"]: r for r in summarize(runs)}
    assert set(summary) == {"all", "sample", "ami"}
    assert summary["ami"]["inputs"] == 2
    assert summary["ami"]["resumed"] == pytest.approx(4.0 / 40.0)
    assert summary["all"]["afresh"] == pytest.approx(18.0 / 64.0, abs=1e-4)
    assert summary["all"]["afresh_confusion"] == pytest.approx(9.0 / 64.0, abs=1e-4)
    text = table({"machine": {}, "parameters": {"at": 0.5}, "runs": runs})
    assert summary["ami"]["primed"] == pytest.approx(3.2 / 40.0)
    assert ("| ami | 2 | 5.0 % (2.5 %) | 10.0 % (5.0 %) | 8.0 % (4.0 %) | 30.0 % (15.0 %) |"
            in text)
    assert "Incomplete run" in table({"machine": {}, "parameters": {"at": 0.5}, "runs": runs,
                                      "error": "KeyboardInterrupt"})
    assert "Live WER" not in text  # (--asr only: WER pooled over the reference words)
    for r in runs:
        if r["uri"] == "sample":
            r.update(wer_errors={"whole": 8, "resumed": 12, "primed": 10, "afresh": 12}[
                r["system"]], ref_words=80)
    text = table({"machine": {}, "parameters": {"at": 0.5}, "runs": runs})
    assert "| all | 10.0 % | 15.0 % | 12.5 % | 15.0 % |" in text
    assert summarize(runs)[0]["primed_wer"] == pytest.approx(10 / 80)


def test_the_ami_benchmarks_read_the_repositorys_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`diarization --sets ami` and `speakers` fetched the AMI excerpts into the working
    directory's data/ (the library's default), a second copy when run from elsewhere;
    the other benchmarks read the repository's."""
    import workbench.research.datasets.ami as ami
    from benchmarks import REPO_ROOT
    from benchmarks.ami import run_ami
    from benchmarks.speakers import measure

    asked: list[Path] = []

    class Asked(Exception):
        pass

    def ami_items(subset: str, data_dir: Path = Path("data"), **fetch: object) -> list[object]:
        asked.append(Path(data_dir))
        raise Asked  # (where it would fetch is all this test wants)

    monkeypatch.setattr(ami, "ami_items", ami_items)
    monkeypatch.chdir(tmp_path)
    for run in (lambda: run_ami(senko=False), lambda: measure(["campplus"], [2.0], ["train"])):
        with pytest.raises(Asked):
            run()
    assert asked == [REPO_ROOT / "data"] * 2
