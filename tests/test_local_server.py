"""LocalServer: the server as a child process, started and stopped from a notebook or test."""

from __future__ import annotations

from pathlib import Path

from workbench.notebook.local_server import LocalServer


def test_starting_a_running_server_again_keeps_it(tmp_path: Path) -> None:
    """start() on a running server started a second process on the same data: it exited
    (the data folder's lock), start() raised, and `process` named the dead one, so stop()
    left the first server running, orphaned. Now the running server is kept."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"])
    with srv:
        first = srv.process
        assert first is not None
        assert srv.start() is srv
        assert srv.process is first and first.poll() is None and srv.healthy()
    assert first.poll() is not None  # stopped with the server it is
    srv.start()  # a stopped server starts again
    try:
        assert srv.process is not first and srv.healthy()
    finally:
        srv.stop()
