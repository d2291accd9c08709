"""Record -> stop -> transcription + diarization in the server's worker, then re-process."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from server.app import CONTENT_TYPES

from workbench.engine.audio import to_int16, write_wav
from workbench.research.datasets import sample_call
from server.worker import STAGE_WEIGHTS, OverallProgress, execute, run_stages
from workbench.notebook.local_server import LocalServer

from .test_export import check_exports_independently
from .test_recording_functional import recv, recv_until, stream

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def full_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    srv = LocalServer(tmp_path_factory.mktemp("data"),
                      args=["--pipeline", "full", "--allow-local-models"])
    srv.start()
    yield srv
    srv.stop()


async def test_record_process_and_run_again(full_server: LocalServer, tmp_path: Path) -> None:
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
        # Every format as downloaded, read by independent parsers, agrees with the JSON.
        assert set(done["results"]) == {"json", "srt", "vtt", "txt", "rttm", "csv"}
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        for fmt, link in done["results"].items():
            async with s.get(srv.url + link) as r:
                assert r.status == 200, (fmt, await r.text())
                assert r.headers["Content-Type"].startswith(CONTENT_TYPES[fmt])
                (downloads / f"transcript.{fmt}").write_bytes(await r.read())
        parsed = check_exports_independently(downloads)
        async with s.get(f"{srv.url}/api/sessions/{sid}/transcript?format=json") as r:
            first = await r.json()
        assert parsed == first
        words = [w for seg in first["segments"] for w in seg["words"]]
        assert len(words) == done["word_count"] and len(first["speakers"]) == done["speakers"]
        assert first["duration"] == pytest.approx(done["duration_seconds"], abs=0.01)
        assert first["config"]["options"]["diarization"]["num_speakers"] == 2
        # the recording is named by its session, as a live run's is (it was "audio" for all)
        assert first["uri"] == sid
        rttm = (downloads / "transcript.rttm").read_text().splitlines()
        assert rttm and {line.split()[1] for line in rttm} == {sid}
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
            # a run named by id downloads under its own name (two runs clashed as <sid>.json)
            assert r.headers["Content-Disposition"] == \
                f'inline; filename="{sid}.{runs[0]["id"][:8]}.json"'
        async with s.get(f"{srv.url}/api/sessions/{sid}/transcript?format=json") as r:
            latest = await r.json()
            assert r.headers["Content-Disposition"] == f'inline; filename="{sid}.json"'
        assert latest["config"]["options"]["diarize"] is False and latest["diarization"] == []
        # Bad configurations are refused up front.
        async with s.post(f"{srv.url}/api/sessions/{sid}/runs", json={"bogus": 1}) as r:
            assert r.status == 400 and "bogus" in (await r.json())["error"]


async def record_pcm(srv: LocalServer, pcm: bytes, **options: Any) -> tuple[str, str]:
    """Record `pcm` (16 kHz mono s16le) as a new session; returns its id and its run's id."""
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le",
                            **options})
        sid = (await recv(ws))["session_id"]
        await stream(ws, pcm, 32000, binary=True)
        await ws.send_json({"action": "stop"})
        started, _ = await recv_until(ws, "processing_started")
    return sid, started["run_id"]


async def wait_run(srv: LocalServer, sid: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(f"{srv.url}/api/sessions/{sid}/runs/{run_id}") as r:
                run = await r.json()
            if run["status"] in ("completed", "failed") or time.monotonic() > deadline:
                return run
            await asyncio.sleep(0.2)


async def get_json_status(url: str) -> tuple[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        body = await r.json()
    return body["status"], body


async def test_a_session_deleted_while_processed_leaves_nothing_on_disk(
        full_server: LocalServer) -> None:
    """DELETE while the session's run is in a worker: 204, and when the worker has
    finished nothing of the session is left (before, the worker wrote the run's
    transcripts into a folder made anew for the deleted session, kept for ever)."""
    srv = full_server
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "format": "wav",
                                "input_format": "pcm_s16le"})
            sid = (await recv(ws))["session_id"]
            await stream(ws, to_int16(sample_call().load_audio()).tobytes(), 32000, binary=True)
            await ws.send_json({"action": "stop"})
            while True:  # the worker has read the audio and transcribes it
                progress, _ = await recv_until(ws, "processing_progress", timeout=120)
                if progress["stage"] not in ("renditions", "queued", "load"):
                    break
            async with s.delete(f"{srv.url}/api/sessions/{sid}") as r:
                assert r.status == 204
        folder = srv.data_dir / "sessions" / sid
        assert not folder.exists()
        deadline = time.monotonic() + 300
        while True:  # until the worker is done with the run
            _, health = await get_json_status(f"{srv.url}/api/health")
            if health["busy_workers"] == 0:
                break
            assert time.monotonic() < deadline, health
            await asyncio.sleep(0.2)
        async with s.get(f"{srv.url}/api/sessions/{sid}") as r:
            assert r.status == 404
    assert not folder.exists(), sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


async def test_a_run_that_fails_in_the_worker_is_reported_and_the_server_goes_on(
        full_server: LocalServer, speech_dir: Path) -> None:
    """An ASR model that does not exist passes validation but fails inside the worker:
    processing_failed with a clear message, the session and run are `failed`, and the
    same server then completes a good run of the same session."""
    srv = full_server
    pcm = (speech_dir / "speech.pcm").read_bytes()
    missing = "/nonexistent/whisper-model"
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le",
                                "asr_model": missing})
            sid = (await recv(ws))["session_id"]
            await stream(ws, pcm, 32000, binary=True)
            await ws.send_json({"action": "stop"})
            started, _ = await recv_until(ws, "processing_started")
            failed, _ = await recv_until(ws, "processing_complete", "processing_failed",
                                         timeout=300)
        assert failed["type"] == "processing_failed", failed
        assert failed["run_id"] == started["run_id"] and failed["session_id"] == sid
        message = failed["message"]
        assert "no model folder at /nonexistent/whisper-model" in message
        assert "Traceback" not in message and len(message) < 500
        async with s.get(f"{srv.url}/api/sessions/{sid}") as r:
            session = await r.json()
        assert session["status"] == "failed"
        run = session["runs"][0]
        assert run["status"] == "failed" and run["error"] == message
        assert run["config"]["asr_model"] == missing
        async with s.get(f"{srv.url}/api/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        # The session keeps its audio and can be processed again.
        async with s.post(f"{srv.url}/api/sessions/{sid}/runs",
                          json={"asr_model": "tiny.en", "diarize": False}) as r:
            assert r.status == 202
            good = await r.json()
    run = await wait_run(srv, sid, good["id"])
    assert run["status"] == "completed", run
    assert run["summary"]["word_count"] > 10
    status, _ = await get_json_status(f"{srv.url}/api/sessions/{sid}")
    assert status == "completed"
    # A name that is no model: the whole message (it was cut at 200 characters, after
    # the first installable model)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{srv.url}/api/sessions/{sid}/runs",
                          json={"asr_model": "nonexistent-model", "diarize": False}) as r:
            assert r.status == 202
            bad = await r.json()
    run = await wait_run(srv, sid, bad["id"])
    assert run["status"] == "failed"
    assert "tiny.en" in run["error"] and "base" in run["error"], run["error"]
    assert run["error"].endswith("or pass the path of a local CTranslate2 Whisper folder.")


async def test_two_workers_run_two_sessions_at_once(
        tmp_path: Path, speech_dir: Path) -> None:
    """With --workers 2, the runs of two sessions are in flight at the same time."""
    pcm = (speech_dir / "speech.pcm").read_bytes()
    with LocalServer(tmp_path / "data", args=["--pipeline", "full", "--workers", "2"]) as srv:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{srv.url}/api/health") as r:
                assert (await r.json())["workers"] == 2
        first, second = await asyncio.gather(record_pcm(srv, pcm), record_pcm(srv, pcm))
        busy_seen = 0

        async def watch_health() -> None:
            nonlocal busy_seen
            async with aiohttp.ClientSession() as s:
                while True:
                    async with s.get(f"{srv.url}/api/health") as r:
                        busy_seen = max(busy_seen, (await r.json())["busy_workers"])
                    await asyncio.sleep(0.05)

        watcher = asyncio.ensure_future(watch_health())
        try:
            runs = await asyncio.gather(wait_run(srv, *first), wait_run(srv, *second))
        finally:
            watcher.cancel()
    assert [r["status"] for r in runs] == ["completed", "completed"], runs
    assert busy_seen == 2
    # Each run started before the other finished.
    a, b = runs
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


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


def test_overall_progress_ends_at_one_for_the_stages_a_run_does() -> None:
    """The weights are the full pipeline's: a run without ASR ended at 0.64, one without
    diarization at 0.41, renditions alone at 0.02."""
    from workbench.engine.config import RunConfig

    for options in ({"transcribe": False}, {"diarize": False}, None):
        config = None if options is None else RunConfig.from_dict(options)
        overall = OverallProgress(run_stages(config))
        figures = [overall(stage, 1.0) for stage in run_stages(config)]
        assert figures[-1] == pytest.approx(1.0) and figures == sorted(figures), options
    overall = OverallProgress(run_stages(RunConfig.from_dict({})))
    assert overall("asr", 1.0) < 1.0 and overall.finish() == 1.0  # silence: no segmentation


async def test_a_renditions_run_reports_that_it_ended(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server()
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le"})
        await recv(ws)
        await ws.send_bytes(b"\x01\x00" * 16000)
        await ws.send_json({"action": "stop"})
        done, seen = await recv_until(ws, "processing_complete", "processing_failed")
    assert done["type"] == "processing_complete", done
    overall = [m["overall"] for m in seen if m["type"] == "processing_progress"]
    assert overall and overall == sorted(overall) and overall[-1] == 1.0  # (was 0.02)


# ------------------------------------------------------- runs racing deletes and resumes


class InProcessServer:
    """The application in this process (renditions only), so a test can reach its store."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        from server.app import create_app
        from server.config import parse_args
        from workbench.notebook.local_server import free_port

        self.port = free_port()
        self.app = create_app(parse_args(["--port", str(self.port), "--data-dir",
                                          str(data_dir), "--pipeline", "renditions", *args]))
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "InProcessServer":
        from aiohttp import web

        from server.state import STATE

        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.state = self.app[STATE]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    async def record(self, s: aiohttp.ClientSession, path: str = "new",
                     **start: Any) -> dict[str, Any]:
        """One second of PCM recorded and stopped; the last message (processing's end, or
        the error that refused the start)."""
        async with s.ws_connect(f"{self.ws_url}/ws/{path}") as ws:
            await ws.send_json({"action": "start", "format": "wav",
                                "input_format": "pcm_s16le", **start})
            first = await recv(ws)
            if first["type"] == "error":
                return first
            await ws.send_bytes(b"\x01\x00" * 16000)
            await ws.send_json({"action": "stop"})
            end, _ = await recv_until(ws, "processing_complete", "processing_failed",
                                      timeout=60)
            return end


async def test_a_session_deleted_as_its_run_starts_does_not_stop_processing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session of a queued run is deleted between the dispatcher's reads (here: as
    soon as it has been read): that run is dropped with it, and the next recording is
    processed. (Before, the dispatcher ended with a KeyError and no run ever started again
    while /api/health still said ok.)"""
    async with InProcessServer(tmp_path / "data") as srv:
        store = srv.state.store
        victim = await asyncio.to_thread(store.create_session, None, "wav", {})
        read = store.get_session

        def read_then_delete(session_id: str):  # type: ignore[no-untyped-def]
            found = read(session_id)
            if session_id == victim.id:
                store.delete_session(session_id)
            return found

        monkeypatch.setattr(store, "get_session", read_then_delete)
        await srv.state.jobs.submit(victim.id, {})
        await asyncio.sleep(1.5)  # the dispatcher polls every 0.5 s
        assert store.get_session(victim.id) is None
        async with aiohttp.ClientSession() as s:
            end = await srv.record(s)
        assert end["type"] == "processing_complete", end


async def test_a_resume_racing_a_run_gets_a_clear_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run begins (the session moves to processing) between a resume's check and its
    start: the resume is refused as busy, adds no part, and the run goes on; a run whose
    session is recording waits instead of taking it over. (Before: an internal error,
    an empty part left behind, or a recording session marked processing, then completed
    with its new audio never processed.)"""
    async with InProcessServer(tmp_path / "data") as srv:
        store = srv.state.store
        async with aiohttp.ClientSession() as s:
            first = await srv.record(s, "resumable")
            assert first["type"] == "processing_complete", first
            sid = first["session_id"]
            parts = len(store.get_session(sid).parts)
            set_status = store.set_status

            def run_wins(session_id: str, status: str, **fields: Any) -> None:
                if session_id == sid and status == "recording":  # the dispatcher, just before
                    assert store.begin_processing(session_id)
                set_status(session_id, status, **fields)

            monkeypatch.setattr(store, "set_status", run_wins)
            refused = await srv.record(s, sid)
            monkeypatch.setattr(store, "set_status", set_status)
        assert refused["type"] == "error" and refused["code"] == 4011, refused
        assert refused["message"] == "Session is processing; wait until it has finished"
        session = store.get_session(sid)
        assert session.status == "processing" and len(session.parts) == parts
        assert sid not in srv.state.recording
        store.set_status(sid, "completed")
        store.set_status(sid, "recording")
        assert not store.begin_processing(sid)  # a run waits while the session records
        assert store.get_session(sid).status == "recording"


async def test_a_stop_that_fails_to_finish_leaves_the_session_resumable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error while a stop finishes the recording (here: audio.wav cannot be
    written) leaves the session `interrupted`, as a dropped connection does, not
    `recording` with no connection; a later start resumes it and completes."""
    import server.connection as connection

    async with InProcessServer(tmp_path / "data") as srv:
        finalise = connection.finalise_async

        async def disk_full(*args: Any, **kwargs: Any) -> Any:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(connection, "finalise_async", disk_full)
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{srv.ws_url}/ws/full") as ws:
                await ws.send_json({"action": "start", "format": "wav",
                                    "input_format": "pcm_s16le"})
                sid = (await recv(ws))["session_id"]
                await ws.send_bytes(b"\x01\x00" * 16000)
                await ws.send_json({"action": "stop"})
                await ws.receive(timeout=20)  # the internal error, or the close
            session = srv.state.store.get_session(sid)
            assert session.status == "interrupted", session.status
            assert "OSError" in session.error
            monkeypatch.setattr(connection, "finalise_async", finalise)
            end = await srv.record(s, sid)
        assert end["type"] == "processing_complete", end
        assert srv.state.store.get_session(sid).duration_seconds == pytest.approx(2.0)


async def test_mp4_encodes_wait_for_their_own_threads_not_the_recordings(
        tmp_path: Path) -> None:
    """MP4 encodes run on their own threads (`ENCODE_THREADS`). On the I/O threads, as
    before, downloads of 32 long sessions at once held every thread that chunk writes
    and the store need, and recordings waited. Here the encode threads are all busy: a
    download waits for one, while a recording, a listing and the WAV go on."""
    import threading

    from server.app import ENCODE_THREADS

    async with InProcessServer(tmp_path / "data") as srv, aiohttp.ClientSession() as s:
        first = await srv.record(s)
        assert first["type"] == "processing_complete", first
        url = f"http://127.0.0.1:{srv.port}/api/sessions/{first['session_id']}/audio"
        gate = threading.Event()
        assert srv.state.encoder is not None
        busy = [srv.state.encoder.submit(gate.wait, 60) for _ in range(ENCODE_THREADS)]

        async def mp4() -> tuple[int, bytes]:
            async with s.get(url + "?format=mp4") as r:
                return r.status, await r.read()

        download = asyncio.ensure_future(mp4())
        try:
            second = await asyncio.wait_for(srv.record(s), 30)
            assert second["type"] == "processing_complete", second
            async with s.get(f"http://127.0.0.1:{srv.port}/api/sessions") as r:
                assert r.status == 200 and len((await r.json())["sessions"]) == 2
            async with s.get(url + "?format=wav") as r:
                assert r.status == 200 and len(await r.read()) == 44 + 32000
            assert not download.done()  # its encode waits for a thread of its own
        finally:
            gate.set()
        status, body = await asyncio.wait_for(download, 60)
        assert all(f.result() for f in busy)
    assert status == 200 and body[4:8] == b"ftyp", (status, body[:64])


def test_sessions_take_turns_in_the_queue() -> None:
    from server.jobs import take_turns
    from server.sessions import Run

    def run(i: int, sid: str) -> Run:
        return Run(id=f"r{i}", session_id=sid, status="queued", config={}, created_at=0.0)

    queued = [run(0, "a"), run(1, "a"), run(2, "a"), run(3, "b"), run(4, "a"), run(5, "c")]
    assert [r.id for r in take_turns(queued)] == ["r0", "r3", "r5", "r1", "r2", "r4"]


def test_a_run_whose_session_is_deleted_fails_quietly(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A session deleted while its worker reads its files (the server renames the folder,
    then kills the worker): the run fails saying so, and no traceback is logged. Before,
    only the pipeline's read was covered: a delete during the renditions (the MP4 encode,
    the WAV's duration) logged a traceback and failed with FileNotFoundError."""
    session = tmp_path / "sessions" / "s1"
    session.mkdir(parents=True)
    write_wav(session / "audio.wav", np.zeros(16000, dtype=np.float32))
    task = {"run_id": "r1", "session_dir": str(session), "run_dir": str(session / "runs" / "r1"),
            "data_dir": str(tmp_path), "format": "mp4", "pipeline": "full", "config": {}}

    def emit(event: tuple[Any, ...]) -> None:  # the delete comes as the renditions begin
        if event[:4] == ("progress", "r1", "renditions", 0.0) and session.exists():
            session.rename(tmp_path / "sessions" / ".deleted-s1")

    with caplog.at_level(logging.ERROR):
        assert execute(task, emit) == \
            ("failed", "r1", "The session's audio is gone (the session was deleted)")
    assert caplog.records == []


async def test_a_deleted_sessions_run_stops_and_a_backlog_is_bounded(start_server) -> None:  # type: ignore[no-untyped-def]
    """A session deleted while its run ran kept its worker for the whole run (the queue
    waiting behind it) and its client was never told the run ended; a session could
    queue runs without bound."""
    from server.jobs import MAX_QUEUED_RUNS

    srv = start_server()
    pcm = (b"\x01\x00\x40\x00" * 8000) * 600  # 10 minutes: its MP4 takes seconds to encode
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/long") as long:
        await long.send_json({"action": "start", "format": "mp4", "input_format": "pcm_s16le"})
        sid = (await recv(long))["session_id"]
        for i in range(0, len(pcm), 1 << 19):
            await long.send_bytes(pcm[i:i + (1 << 19)])
        await long.send_json({"action": "stop"})
        await recv_until(long, "processing_progress", timeout=60)  # its worker has it
        async with s.ws_connect(f"{srv.ws_url}/ws/short") as short:
            await short.send_json({"action": "start", "format": "wav",
                                   "input_format": "pcm_s16le"})
            other = (await recv(short))["session_id"]
            await short.send_bytes(b"\x01\x00" * 16000)
            await short.send_json({"action": "stop"})
            await recv_until(short, "processing_started")
        async def post() -> tuple[int, Any]:
            async with s.post(f"{srv.url}/api/sessions/{other}/runs", json={}) as r:
                return r.status, await r.json()

        answers = await asyncio.gather(*(post() for _ in range(MAX_QUEUED_RUNS + 4)))
        statuses = sorted(status for status, _ in answers)  # (posted at once: counted and
        # queued as one step, else several saw the same count) its stop's run waits too
        assert statuses == [202] * (MAX_QUEUED_RUNS - 1) + [429] * 5, statuses
        # (which posts are refused is the server's order, not gather's)
        assert all("at most 16" in body["error"] for status, body in answers if status == 429)
        async with s.delete(f"{srv.url}/api/sessions/{sid}") as r:
            assert r.status == 204
        deleted = time.monotonic()
        failed, _ = await recv_until(long, "processing_failed", "processing_complete",
                                     timeout=10)
        assert failed["type"] == "processing_failed", failed
        assert failed["message"] == "The session was deleted"
        while True:  # the other session's runs all go through at once
            async with s.get(f"{srv.url}/api/sessions/{other}") as r:
                runs = (await r.json())["runs"]
            if all(run["status"] == "completed" for run in runs):
                break
            assert time.monotonic() - deleted < 5, [run["status"] for run in runs]
            await asyncio.sleep(0.2)
    assert not (srv.data_dir / "sessions" / sid).exists()
    assert "Traceback" not in srv.log_path.read_text()
