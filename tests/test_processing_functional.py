"""Record -> stop -> transcription + diarization in the server's worker, then re-process."""

from __future__ import annotations


import aiohttp
import pytest

from workbench.audio import to_int16
from workbench.datasets import sample_call
from server.worker import STAGE_WEIGHTS, OverallProgress
from workbench.local_server import LocalServer

from .test_recording_functional import recv, recv_until, stream

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def full_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    srv = LocalServer(tmp_path_factory.mktemp("data"), args=["--pipeline", "full"])
    srv.start()
    yield srv
    srv.stop()


async def test_record_process_and_run_again(full_server: LocalServer) -> None:
    srv = full_server
    pcm = to_int16(sample_call().load_audio()).tobytes()
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "format": "mp4", "input_format": "pcm_s16le",
                                "num_speakers": 2})
            sid = (await recv(ws))["session_id"]
            await stream(ws, pcm, 16000, binary=True)
            await ws.send_json({"action": "stop"})
            stopped, _ = await recv_until(ws, "recording_stopped")
            assert stopped["duration_seconds"] == pytest.approx(len(pcm) / 32000, abs=0.001)
            started = await recv(ws)
            assert started == {"type": "processing_started",
                               "message": "Transcription and diarization started",
                               "session_id": sid, "run_id": started["run_id"]}
            done, progress = await recv_until(ws, "processing_complete", "processing_failed",
                                              timeout=400)
            assert done["type"] == "processing_complete", done
        assert done["speakers"] == 2 and done["word_count"] > 40
        assert done["duration_seconds"] == pytest.approx(len(pcm) / 32000, abs=0.01)
        stages = {p["stage"] for p in progress if p["type"] == "processing_progress"}
        assert {"asr", "segmentation", "embeddings", "clustering", "merge"} <= stages
        overall = [p["overall"] for p in progress if p["type"] == "processing_progress"]
        assert overall == sorted(overall) and all(0 <= p["progress"] <= 1 for p in progress)
        for fmt, link in done["results"].items():
            async with s.get(srv.url + link) as r:
                assert r.status == 200, (fmt, await r.text())
                body = await r.text()
                assert body.strip()
        async with s.get(f"{srv.url}/api/sessions/{sid}/transcript?format=json") as r:
            first = await r.json()
        assert first["config"]["options"]["diarization"]["num_speakers"] == 2
        assert {seg["speaker"] for seg in first["segments"]} == {"SPEAKER_00", "SPEAKER_01"}
        async with s.get(f"{srv.url}/api/sessions/{sid}/audio?format=mp4") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "audio/mp4"

        # A second run with another configuration keeps both.
        async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws:  # subscribe to its events
            async with s.post(f"{srv.url}/api/sessions/{sid}/runs",
                              json={"diarize": False}) as r:
                assert r.status == 202
                second = await r.json()
            assert second["status"] == "queued"
            done2, _ = await recv_until(ws, "processing_complete", "processing_failed",
                                        timeout=300)
            assert done2["type"] == "processing_complete" and done2["run_id"] == second["id"]
        async with s.get(f"{srv.url}/api/sessions/{sid}/runs") as r:
            runs = (await r.json())["runs"]
        assert [x["status"] for x in runs] == ["completed", "completed"]
        async with s.get(f"{srv.url}/api/sessions/{sid}/transcript?format=json&run={runs[0]['id']}") as r:
            assert (await r.json())["config"]["options"]["diarize"] is True
        async with s.get(f"{srv.url}/api/sessions/{sid}/transcript?format=json") as r:
            latest = await r.json()
        assert latest["config"]["options"]["diarize"] is False and latest["diarization"] == []
        # Bad configurations are refused up front.
        async with s.post(f"{srv.url}/api/sessions/{sid}/runs", json={"bogus": 1}) as r:
            assert r.status == 400 and "bogus" in (await r.json())["error"]


def test_overall_progress_never_goes_down_when_stages_interleave() -> None:
    # ASR and diarization progress at the same time in the worker
    overall = OverallProgress()
    figures = [overall("decode", 1.0), overall("asr", 0.2), overall("segmentation", 0.5),
               overall("asr", 0.6), overall("embeddings", 0.3), overall("asr", 0.5),
               overall("segmentation", 1.0), overall("asr", 1.0), overall("embeddings", 1.0),
               overall("clustering", 1.0), overall("merge", 1.0), overall("renditions", 1.0),
               overall("unknown stage", 1.0)]
    assert figures == sorted(figures)
    assert figures[-1] == pytest.approx(1.0)
    assert figures[3] == pytest.approx(STAGE_WEIGHTS["decode"] + 0.6 * STAGE_WEIGHTS["asr"]
                                       + 0.5 * STAGE_WEIGHTS["segmentation"])
