"""Library helpers that exist for the notebooks."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_notebook_data_dir_temporary_folder_goes_with_the_process(tmp_path: Path) -> None:
    """Without a path or the variable, a notebook's folder is temporary: it and what the
    notebook wrote there are removed when its kernel (here: a process) exits."""
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_NOTEBOOK_DATA"}
    env["TMPDIR"] = str(tmp_path)
    code = ("from workbench.notebook.analysis import notebook_data_dir\n"
            "folder = notebook_data_dir('03')\n"
            "(folder / 'corpus').mkdir(); (folder / 'corpus' / 'a.wav').write_bytes(b'x')\n"
            "print(folder)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    folder = Path(out.strip())
    assert folder.parent == tmp_path and folder.name.startswith("workbench-03-")
    assert not folder.exists()
