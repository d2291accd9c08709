"""The packages type-check clean: mypy on `workbench` and `server`, with the settings of
pyproject.toml's ``[tool.mypy]`` (mypy is one of the test tools)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_clean() -> None:
    # ~25 s from scratch, about a second with mypy's cache (.mypy_cache/) of a previous run
    result = subprocess.run([sys.executable, "-m", "mypy", "workbench", "server"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        print(output)
    assert result.returncode == 0, f"mypy found errors (exit {result.returncode}):\n{output}"
