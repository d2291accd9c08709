"""`python -m benchmarks embedding`: both runtimes timed on the real sample call, their
outputs compared, a results file and a stamped table (tiny sizes: the figures themselves
are the benchmark's, not the test's)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks import embedding  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.timeout(300)]


def test_runs_both_runtimes_and_writes_a_stamped_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "embedding.json"
    assert embedding.main(["--frames", "60,250", "--threads", "1", "--repeats", "1",
                           "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    rows = results["rows"]
    assert [(r["frames"], r["threads"]) for r in rows] == [(60, 1), (250, 1)]
    for r in rows:
        assert r["torch_ms"] > 0 and r["onnx_ms"] > 0
        assert r["ratio"] == pytest.approx(r["torch_ms"] / r["onnx_ms"], rel=0.01)
        assert r["relative_difference"] < 1e-4
    printed = capsys.readouterr().out
    assert "| 250 | 1 |" in printed and results["machine"]["cpu_model"] in printed
    assert embedding.main(["--table", str(out)]) == 0
    assert "| 60 | 1 |" in capsys.readouterr().out


def test_bad_arguments_are_refused(capsys) -> None:
    for bad in (["--frames", "10"], ["--threads", "0"], ["--frames", "x"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            embedding.main(bad)
    assert "python -m benchmarks embedding" in capsys.readouterr().err
