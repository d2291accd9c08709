"""Library helpers that exist for the notebooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.notebook.analysis import notebook_data_dir
from workbench.notebook.local_server import REPO_ROOT


def test_notebook_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_NOTEBOOK_DATA", raising=False)
    first, second = notebook_data_dir("03"), notebook_data_dir("03")
    try:
        assert first.is_dir() and second.is_dir() and first != second
        assert REPO_ROOT not in first.resolve().parents  # a temporary directory
    finally:
        first.rmdir()
        second.rmdir()

    monkeypatch.setenv("WORKBENCH_NOTEBOOK_DATA", str(tmp_path / "nb"))
    assert notebook_data_dir("03") == tmp_path / "nb" / "03"
    assert (tmp_path / "nb" / "03").is_dir()
    # an explicit path wins over the variable
    assert notebook_data_dir("03", tmp_path / "mine") == tmp_path / "mine"
    assert (tmp_path / "mine").is_dir()
