"""The server's processing jobs on a Dask cluster instead of local worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.notebook.client import Client
from workbench.notebook.local_server import LocalServer


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as c:
        yield c


def test_runs_execute_on_the_dask_cluster(cluster, tmp_path: Path, speech_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from distributed import Client as DaskClient

    with DaskClient(cluster) as dask:
        worker_pids = set(dask.run(os.getpid).values())
    server = LocalServer(tmp_path / "data", args=["--pipeline", "renditions",
                                                  "--dask-scheduler", cluster.scheduler_address])
    with server, Client(server) as client:
        rec = client.record(speech_dir / "speech.ogg", format="mp4")
        assert rec.result is not None and rec.result["type"] == "processing_complete", rec.messages
        run = client.runs(rec.session_id)[-1]
        assert run["status"] == "completed"
        assert run["summary"]["executor"] == "dask"
        assert run["summary"]["worker_pid"] in worker_pids  # ran in the Dask worker process
        assert client.download(rec.session_id, "audio", "mp4")[4:8] == b"ftyp"
        # A second run through REST goes the same way.
        second = client.start_run(rec.session_id, {})
        done = client.wait_for_run(rec.session_id, second["id"])
        assert done["status"] == "completed" and done["summary"]["executor"] == "dask"
