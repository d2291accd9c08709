"""The test suite runs these notebooks with nbval: their data goes to a temporary
directory (removed afterwards), and notebook 01 streams at twice real time, the
server's limit for a live recording; the dashboard, which has no microphone here, plays
the sample call through the same path.  Variables already set are kept."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_created: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("WORKBENCH_NOTEBOOK_DATA"):
        folder = tempfile.mkdtemp(prefix="workbench-notebooks-")
        _created.append(folder)
        os.environ["WORKBENCH_NOTEBOOK_DATA"] = folder  # the kernels inherit it
    os.environ.setdefault("WORKBENCH_NOTEBOOK_SPEED", "2")
    os.environ.setdefault("WORKBENCH_DASHBOARD_PLAY", "sample")


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _created:
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("WORKBENCH_NOTEBOOK_DATA") == folder:
            del os.environ["WORKBENCH_NOTEBOOK_DATA"]
