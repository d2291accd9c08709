"""Live results over the recording protocol (issue #16, server side) against a real server
with the real live models (tiny.en, segmentation-3.0, CAM++) in its live worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import pytest

from server.app import CONTENT_TYPES
from workbench.engine.audio import SAMPLE_RATE, to_int16
from workbench.notebook.client import LIVE_EVENTS, AsyncClient
from workbench.notebook.local_server import LocalServer
from workbench.research.datasets import sample_call

from .conftest import ServerFactory, cutting_proxy, session_in
from .test_export import check_exports_independently
from .test_recording_functional import recv, recv_until

pytestmark = [pytest.mark.models, pytest.mark.timeout(600)]

FORMATS = ("json", "srt", "vtt", "txt", "rttm", "csv")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One live recording at a time, renditions only after stop (the refined run is quick)."""
    srv = LocalServer(tmp_path_factory.mktemp("data"),
                      args=["--pipeline", "renditions", "--max-live-sessions", "1"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def call_pcm() -> bytes:
    return to_int16(sample_call().load_audio()).tobytes()


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, (url, r.status, await r.text())
        return await r.json()


async def wait_live_run(srv: LocalServer, sid: str, run_id: str, timeout: float = 240
                        ) -> dict[str, Any]:
    """The live run once saved; then waits until no live worker is left (budget free)."""
    deadline = time.monotonic() + timeout
    while True:
        run = await get(f"{srv.url}/api/sessions/{sid}/runs/{run_id}")
        if run["status"] in ("completed", "failed"):
            break
        assert time.monotonic() < deadline, f"live run still {run['status']}"
        await asyncio.sleep(0.5)
    await wait_no_live(srv)
    return run


async def wait_no_live(srv: LocalServer, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (await get(srv.url + "/api/health"))["live"]["active"]:
        assert time.monotonic() < deadline, "a live worker outlived its recording"
        await asyncio.sleep(0.2)


async def recorded_pcm(srv: LocalServer, sid: str) -> bytes:
    async with aiohttp.ClientSession() as s, s.get(f"{srv.url}/api/sessions/{sid}/audio") as r:
        wav = await r.read()
    assert wav[36:40] == b"data"
    return wav[44:]


def check_live_sequence(events: list[dict[str, Any]], first: int = 0
                        ) -> dict[int, dict[str, Any]]:
    """The protocol's promises on one connection's live events (its first committed word
    has index `first`); returns the committed words by index (with the speakers given
    later)."""
    words: dict[int, dict[str, Any]] = {}
    last_at = 0.0
    for e in events:
        assert e["type"] in LIVE_EVENTS and e["session_id"]
        if "at" in e:
            assert e["at"] >= last_at - 1e-6, "live events out of time order"
            last_at = e["at"]
            assert e["lag_seconds"] >= 0
        if e["type"] == "transcript_final":
            n = first + len(words)
            assert [w["index"] for w in e["words"]] == list(range(n, n + len(e["words"])))
            assert e["text"] == "".join(w["word"] for w in e["words"]).strip()
            for w in e["words"]:
                words[w["index"]] = dict(w)
        elif e["type"] == "speaker_labels":
            for w in e["words"]:
                before = words[w["index"]]  # a committed word, never changed
                assert before["speaker"] is None and w["speaker"] is not None
                assert {k: v for k, v in w.items() if k != "speaker"} == \
                    {k: v for k, v in before.items() if k != "speaker"}
                before["speaker"] = w["speaker"]
        elif e["type"] == "diarization_update":
            assert all(t["end"] <= e["final_until"] + 1e-3 for t in e["turns"])
        elif e["type"] == "transcript_partial":
            assert set(e) >= {"text", "start", "end"}
    return words


async def test_live_words_and_speakers_while_recording(live_server: LocalServer,
                                                       call_pcm: bytes, tmp_path: Path) -> None:
    """The sample call (and its first 15 s again: room for the live models to load on a
    busy machine) streamed in real time with live results: words and speakers arrive
    before stop, in order, never changed, on the recording's connection and on a second
    subscriber; a second live recording is over the budget of 1 and records normally;
    the live run is stored and served in every format, and the refined run supersedes it
    while the session's status follows the refined run alone."""
    srv = live_server
    call_pcm = call_pcm + call_pcm[: 15 * 32000]
    client = AsyncClient(srv.url, timeout=300)
    seen: list[dict[str, Any]] = []
    try:
        sid = (await client.create_session())["id"]
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/{sid}") as sub:
            async def subscriber() -> list[dict[str, Any]]:
                """What the second socket gets up to the refined result (read as it comes:
                a socket left unread answers no ping, and the server's heartbeat closes it)."""
                got: list[dict[str, Any]] = []
                while True:
                    m = await recv(sub, timeout=300)
                    if m["type"] in LIVE_EVENTS:
                        got.append(m)
                    if m["type"] == "processing_complete":
                        return got

            subscribing = asyncio.create_task(subscriber())
            recording = asyncio.create_task(client.record(
                np.frombuffer(call_pcm, np.int16), session_id=sid, realtime=True,
                live_results=True, on_live=seen.append))
            while not any(e["type"] == "transcript_final" for e in seen):
                assert not recording.done(), recording.result().messages
                await asyncio.sleep(0.2)
            # Meanwhile another recording asks for live results: over budget, it records
            # normally and is told why.
            other = call_pcm[: 5 * 32000]
            async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws2:
                await ws2.send_json({"action": "start", "input_format": "pcm_s16le",
                                     "live_results": True})
                started2 = await recv(ws2)
                paused2 = await recv(ws2)
                for i in range(0, len(other), 4000):
                    await ws2.send_bytes(other[i:i + 4000])
                await ws2.send_json({"action": "stop"})
                stopped2, before2 = await recv_until(ws2, "recording_stopped")
                done2, _ = await recv_until(ws2, "processing_complete")
            assert started2["type"] == "recording_started" and started2["live_results"] is False
            assert paused2["type"] == "live_paused" and "--max-live-sessions" in paused2["reason"]
            assert stopped2["live_run_id"] is None and "supersedes" not in done2
            assert not [m for m in before2 if m["type"] in LIVE_EVENTS]
            assert await recorded_pcm(srv, started2["session_id"]) == other

            report = await recording
            subscribed = await subscribing
        session = await get(f"{srv.url}/api/sessions/{sid}")
    finally:
        await client.close()

    types = [m["type"] for m in report.messages]
    stop_at = types.index("recording_stopped")
    assert report.last("recording_started")["live_results"] is True
    finals_before_stop = [m for m in report.messages[:stop_at] if m["type"] == "transcript_final"]
    assert finals_before_stop, "no committed words before stop"
    assert "diarization_update" in types[:stop_at]
    live_on_conn = [m for m in report.messages if m["type"] in LIVE_EVENTS]
    assert live_on_conn == report.live_events == seen
    words = check_live_sequence(live_on_conn)
    upto = types.index("processing_complete")
    assert subscribed == [m for m in report.messages[:upto] if m["type"] in LIVE_EVENTS]
    assert [w["word"] for w in report.live_words[:len(words)]] == \
        [words[i]["word"] for i in range(len(words))]

    # Runs: the refined one supersedes the live one; the session followed the refined run.
    live_id = report.live_run_id
    assert isinstance(live_id, str)
    complete = report.last("processing_complete")
    assert complete["supersedes"] == live_id and complete["run_id"] != live_id
    assert session["status"] == "completed"
    assert await recorded_pcm(srv, sid) == call_pcm
    live_run = await wait_live_run(srv, sid, live_id)
    assert live_run["status"] == "completed", live_run
    runs = (await get(f"{srv.url}/api/sessions/{sid}/runs"))["runs"]
    kinds = {r["id"]: (r["kind"], r["supersedes"]) for r in runs}
    assert kinds == {live_id: ("live", None), complete["run_id"]: ("refined", live_id)}
    assert (await get(f"{srv.url}/api/sessions/{sid}"))["status"] == "completed"

    # Every format of the live run, read by independent parsers.
    out = tmp_path / "live"
    out.mkdir()
    async with aiohttp.ClientSession() as s:
        for fmt in FORMATS:
            url = f"{srv.url}/api/sessions/{sid}/transcript?format={fmt}&run={live_id}"
            async with s.get(url) as r:
                assert r.status == 200, (fmt, await r.text())
                assert r.headers["Content-Type"].startswith(CONTENT_TYPES[fmt])
                (out / f"transcript.{fmt}").write_bytes(await r.read())
        # With renditions only, the live run is the session's transcript.
        async with s.get(f"{srv.url}/api/sessions/{sid}/transcript") as r:
            latest = await r.json()
    doc = check_exports_independently(out)
    assert doc == latest and doc["config"]["kind"] == "live"
    saved = [w for seg in doc["segments"] for w in seg["words"]]
    # The saved words are the committed ones (flushed words after the last event too).
    assert [w["word"] for w in saved[:len(words)]] == [words[i]["word"] for i in range(len(words))]
    assert live_run["summary"]["word_count"] == len(saved) >= 20  # ~44-60 measured under load
    # The report holds every word of the live run, with its speaker: the last ones, said
    # after stop, came after the (renditions) run's processing_complete and were lost
    assert [(w["word"], w["speaker"]) for w in report.live_words] == \
        [(w["word"], w["speaker"]) for w in saved]
    # ... which the live run's live_run_saved follows (the client waits for it)
    said = report.last("live_run_saved")
    assert said is not None and (said["run_id"], said["status"]) == (live_id, "completed")
    assert said["summary"] == live_run["summary"]
    types = [m["type"] for m in report.messages]
    assert max(i for i, t in enumerate(types) if t in LIVE_EVENTS and t != "live_run_saved") \
        < types.index("live_run_saved") and said in report.live_events
    assert types.index("recording_stopped") < types.index("live_run_saved")  # (its run id)
    assert doc["duration"] == pytest.approx(len(call_pcm) / 32000, abs=0.05)
    assert len(doc["speakers"]) >= 2


async def test_silence_gives_no_words(live_server: LocalServer) -> None:
    """Ten seconds of near silence (quiet noise) with live results, uploaded at once:
    diarization reports, ASR commits nothing, and the live run holds no words."""
    srv = live_server
    await wait_no_live(srv)
    noise = (np.random.default_rng(0).standard_normal(10 * SAMPLE_RATE) * 1e-3).astype(np.float32)
    async with AsyncClient(srv.url, timeout=120) as client:
        report = await client.record(noise, live_results=True)
    assert report.last("recording_started")["live_results"] is True
    run = await wait_live_run(srv, report.session_id, report.live_run_id)
    assert run["status"] == "completed" and run["summary"]["word_count"] == 0
    assert run["summary"]["duration_seconds"] == pytest.approx(10.0, abs=0.05)
    assert not any(e["type"] == "transcript_final" for e in report.live_events)


async def test_live_words_after_a_drop_at_the_end_come_from_the_saved_run(
        live_server: LocalServer, call_pcm: bytes) -> None:
    """The connection dropped right after processing_complete (renditions: quick) while
    the live run was still saving: record() returned at once without the live words said
    after `stop`, and without a word. It follows the live run over REST and takes the
    words it lacks from the saved transcript."""
    srv = live_server
    await wait_no_live(srv)
    runner, port = await cutting_proxy(srv.url, "processing_complete")
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}", timeout=300) as client:
            report = await client.record(np.frombuffer(call_pcm[:12 * 32000], np.int16),
                                         live_results=True)  # (at once: most words after stop)
    finally:
        await runner.cleanup()
    assert report.result is not None and report.live_run_id is not None
    run = await wait_live_run(srv, report.session_id, report.live_run_id)
    doc = await get(f"{srv.url}/api/sessions/{report.session_id}/transcript?format=json"
                    f"&run={report.live_run_id}")
    saved = [w for seg in doc["segments"] for w in seg["words"]]
    assert run["summary"]["word_count"] == len(saved) >= 5
    assert [(w["word"], w["speaker"]) for w in report.live_words] == \
        [(w["word"], w["speaker"]) for w in saved]


async def test_a_callback_raising_at_the_live_run_saved_is_raised(
        live_server: LocalServer, call_pcm: bytes) -> None:
    """A callback raising on an event after processing_complete (here the live run's
    live_run_saved) ended the wait for the live run, and record() returned as if all was
    well."""
    await wait_no_live(live_server)

    def fails(event: dict[str, Any]) -> None:
        if event["type"] == "live_run_saved":
            raise RuntimeError("the callback failed")

    async with AsyncClient(live_server.url, timeout=300) as client:
        with pytest.raises(RuntimeError, match="the callback failed"):
            await client.record(np.frombuffer(call_pcm[:8 * 32000], np.int16),
                                live_results=True, on_live=fails)


async def live_worker(srv: LocalServer, known: set[int]) -> psutil.Process:
    """The server's new live worker process: a child that is not in `known` and that
    niced itself (it does so first thing)."""
    assert srv.process is not None
    server = psutil.Process(srv.process.pid)
    deadline = time.monotonic() + 30
    while True:
        found = [p for p in server.children() if p.pid not in known
                 and p.nice() >= server.nice() + 10]
        if found:
            assert len(found) == 1
            return found[0]
        assert time.monotonic() < deadline, "no live worker process"
        await asyncio.sleep(0.05)


async def test_a_killed_live_worker_costs_the_recording_nothing(live_server: LocalServer,
                                                                call_pcm: bytes) -> None:
    """SIGKILL of the live worker mid-recording: `live_paused` says live results are off,
    every chunk is still confirmed, the recording completes byte for byte, no live run."""
    srv = live_server
    await wait_no_live(srv)
    pcm = call_pcm[: 12 * 32000]
    chunk = 3200  # 0.1 s
    assert live_server.process is not None
    known = {p.pid for p in psutil.Process(live_server.process.pid).children()}
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                            "live_results": True})
        started = await recv(ws)
        assert started["live_results"] is True
        worker = await live_worker(srv, known)
        half = len(pcm) // 2
        for i in range(0, half, chunk):
            await ws.send_bytes(pcm[i:i + chunk])
        os.kill(worker.pid, signal.SIGKILL)
        for i in range(half, len(pcm), chunk):
            await ws.send_bytes(pcm[i:i + chunk])
            await asyncio.sleep(0.01)
        paused, before = await recv_until(ws, "live_paused", timeout=30)
        await ws.send_json({"action": "stop"})
        stopped, seen = await recv_until(ws, "recording_stopped")
        seen = before + seen
        done, _ = await recv_until(ws, "processing_complete")
    assert "stopped" in paused["reason"] and "off for the rest" in paused["reason"]
    assert stopped["chunks_received"] == -(-len(pcm) // chunk)
    assert [m["chunks_received"] for m in seen if m["type"] == "progress"] == [100]
    assert stopped["live_run_id"] is None and "supersedes" not in done
    assert await recorded_pcm(srv, started["session_id"]) == pcm
    assert (await get(f"{srv.url}/api/sessions/{started['session_id']}"))["status"] == "completed"
    await wait_no_live(srv)


async def test_compressed_audio_resumed_continues_the_live_session(
        live_server: LocalServer, speech_dir: Path) -> None:
    """WebM/Opus decoded by the live worker as it arrives; a dropped connection resumed
    within the linger time continues the same live session (indexes go on), and the one
    live run covers both parts."""
    srv = live_server
    await wait_no_live(srv)
    webm = (speech_dir / "speech.webm").read_bytes()
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "input_format": "webm", "live_results": True})
            started = await recv(ws)
            sid = started["session_id"]
            for i in range(0, len(webm), 4000):
                await ws.send_bytes(webm[i:i + 4000])
        # dropped: the session is interrupted; its live worker waits for a resume
        await session_in(srv, sid, "interrupted", timeout=30)
        assert (await get(srv.url + "/api/health"))["live"]["active"] == 1
        async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws:
            await ws.send_json({"action": "start", "input_format": "webm", "live_results": True})
            resumed = await recv(ws)
            assert resumed["resumed"] is True and resumed["live_results"] is True
            for i in range(0, len(webm), 4000):
                await ws.send_bytes(webm[i:i + 4000])
            await ws.send_json({"action": "stop"})
            stopped, live = await recv_until(ws, "recording_stopped", timeout=60)
            done, after = await recv_until(ws, "processing_complete")
            live += after
    assert done["supersedes"] == stopped["live_run_id"]
    run = await wait_live_run(srv, sid, stopped["live_run_id"])
    assert run["status"] == "completed", run
    async with aiohttp.ClientSession() as s:
        url = f"{srv.url}/api/sessions/{sid}/transcript?format=json&run={run['id']}"
        async with s.get(url) as r:
            doc = json.loads(await r.read())
    words = [w for seg in doc["segments"] for w in seg["words"]]
    text = " ".join(w["word"] for w in words).lower()
    assert text.count("river") + text.count("quick") >= 3, text
    # the first part's words are there: the same live session went on over both parts
    part = stopped["duration_seconds"] / 2
    assert words[0]["start"] < part < words[-1]["end"] <= stopped["duration_seconds"] + 0.1
    events = [m for m in live if m["type"] in LIVE_EVENTS]
    finals = [m for m in events if m["type"] == "transcript_final"]
    check_live_sequence(events, finals[0]["words"][0]["index"] if finals else 0)


async def test_deleting_a_dropped_live_session_frees_its_worker(
        live_server: LocalServer, call_pcm: bytes) -> None:
    """A dropped recording's live worker waits for a resume; deleting the session ends it
    at once and frees its live slot: the next recording gets live results. (Before, the
    worker lived on until shutdown, counted against --max-live-sessions.)"""
    srv = live_server
    await wait_no_live(srv)
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                                "live_results": True})
            sid = (await recv(ws))["session_id"]
            await ws.send_bytes(call_pcm[:32000 * 3])
            await ws.send_json({"action": "nop"})
            await recv(ws)
        await session_in(srv, sid, "interrupted", timeout=30)
        assert (await get(srv.url + "/api/health"))["live"]["active"] == 1
        async with s.delete(f"{srv.url}/api/sessions/{sid}") as r:
            assert r.status == 204
        await wait_no_live(srv, timeout=10)
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                                "live_results": True})
            started = await recv(ws)
            assert started["live_results"] is True, started
            await ws.send_bytes(call_pcm[:32000 * 2])
            await ws.send_json({"action": "stop"})
            stopped, _ = await recv_until(ws, "recording_stopped", timeout=60)
    await wait_live_run(srv, started["session_id"], stopped["live_run_id"])


async def test_an_undecodable_stream_ends_live_results_not_the_recording(
        live_server: LocalServer) -> None:
    """Bytes that are not the declared WebM: the live worker says so (live results off),
    every byte is still kept, and `stop` reports the undecodable audio as always."""
    srv = live_server
    await wait_no_live(srv)
    junk = np.random.default_rng(2).integers(0, 256, 80000, dtype=np.uint8).tobytes()
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "input_format": "webm", "live_results": True})
        started = await recv(ws)
        for i in range(0, len(junk), 4000):
            await ws.send_bytes(junk[i:i + 4000])
        paused, before = await recv_until(ws, "live_paused", timeout=120)
        await ws.send_json({"action": "stop"})
        stopped, _ = await recv_until(ws, "recording_stopped")
        undecodable, _ = await recv_until(ws, "error")
    assert started["live_results"] is True and not before
    assert "could not be decoded" in paused["reason"] and "off for the rest" in paused["reason"]
    assert stopped["live_run_id"] is None and undecodable["code"] == 4008
    session = await get(f"{srv.url}/api/sessions/{started['session_id']}")
    assert session["status"] == "failed" and session["bytes_received"] == len(junk)
    await wait_no_live(srv)


async def test_a_part_that_decodes_to_nothing_keeps_the_live_words_of_the_others(
        live_server: LocalServer, speech_dir: Path) -> None:
    """Speech, then two resumes that each sent only the first bytes of a WebM (its header:
    a drop right after a start, a stop right after a resume). Such a part's decoder failed
    as it closed: at the next part that ended live results, at `stop` it failed the live
    run (every earlier word lost). The refined run leaves such parts out; so do live
    results now."""
    srv = live_server
    await wait_no_live(srv)
    head = (speech_dir / "speech.webm").read_bytes()[:40]
    parts = [("pcm_s16le", (speech_dir / "speech.pcm").read_bytes()), ("webm", head),
             ("webm", head)]
    said: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s:
        sid = "new"
        for n, (container, data) in enumerate(parts):
            async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws:
                await ws.send_json({"action": "start", "input_format": container,
                                    "live_results": True})
                started = await recv(ws)
                assert started["live_results"] is True, started
                sid = started["session_id"]
                await ws.send_bytes(data)
                if n == 0:  # (the worker has loaded its models: it takes each part now)
                    said += (await recv_until(ws, "transcript_final", timeout=180))[1]
                said += await drain(ws, quiet=1.0)
                if n == len(parts) - 1:
                    await ws.send_json({"action": "stop"})
                    stopped, seen = await recv_until(ws, "recording_stopped", timeout=120)
                    said += seen
                    break
            await session_in(srv, sid, "interrupted", timeout=30)  # dropped
    assert not [m for m in said if m["type"] == "live_paused"], said
    run = await wait_live_run(srv, sid, stopped["live_run_id"])
    assert run["status"] == "completed", run
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{srv.url}/api/sessions/{sid}/transcript?format=txt&run={run['id']}"
                         ) as r:
            text = (await r.text()).lower()
    assert "river" in text or "quick" in text, text


async def test_a_live_worker_hung_in_its_flush_frees_its_slot_soon_after_stop(
        live_server: LocalServer, speech_dir: Path) -> None:
    """The live worker hangs while it saves (its FFmpeg decoder, stopped here, never ends)
    but still reports its position twice a second: those reports kept the live run
    `running` and the live slot held for FINISH_TIMEOUT (600 s). Reports of no progress
    are no sign of life now: it fails once nothing moved for STALL_SECONDS."""
    from server.live import STALL_SECONDS

    srv = live_server
    await wait_no_live(srv)
    assert srv.process is not None
    known = {p.pid for p in psutil.Process(srv.process.pid).children()}
    webm = (speech_dir / "speech.webm").read_bytes()
    assert len(webm) < 60000  # within a pipe's buffer: the worker never waits for FFmpeg
    ffmpeg = None
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "input_format": "webm",
                                "live_results": True})
            sid = (await recv(ws))["session_id"]
            worker = await live_worker(srv, known)
            await ws.send_bytes(webm)
            deadline = time.monotonic() + 180  # (its models load first)
            while not (found := [p for p in worker.children() if p.name() == "ffmpeg"]):
                assert time.monotonic() < deadline, "no FFmpeg decoder in the live worker"
                await asyncio.sleep(0.1)
            (ffmpeg,) = found
            ffmpeg.suspend()
            await ws.send_json({"action": "stop"})
            stopped, _ = await recv_until(ws, "recording_stopped", timeout=60)
        t0 = time.monotonic()
        run = await wait_live_run(srv, sid, stopped["live_run_id"], timeout=STALL_SECONDS + 60)
        assert run["status"] == "failed" and time.monotonic() - t0 < STALL_SECONDS + 30
    finally:
        if ffmpeg is not None and ffmpeg.is_running():
            ffmpeg.kill()  # (orphaned, stopped: its worker was killed)
    assert (await get(srv.url + "/api/health"))["live"]["active"] == 0


async def test_seed_clients_see_nothing_new(live_server: LocalServer, call_pcm: bytes) -> None:
    """Without `live_results` nothing changes: no new field, no live event, no live run."""
    srv = live_server
    pcm = call_pcm[: 3 * 32000]
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
        started = await recv(ws)
        for i in range(0, len(pcm), 4000):
            await ws.send_bytes(pcm[i:i + 4000])
        await ws.send_json({"action": "stop"})
        done, seen = await recv_until(ws, "processing_complete")
    assert set(started) == {"type", "session_id", "format", "part", "resumed"}
    stopped = next(m for m in seen if m["type"] == "recording_stopped")
    assert set(stopped) == {"type", "duration_seconds", "session_id", "chunks_received",
                            "total_size_mb", "truncated"}
    assert "supersedes" not in done
    assert [m["type"] for m in seen] == ["recording_stopped", "processing_started",
                                         "processing_progress", "processing_progress"]
    runs = (await get(f"{srv.url}/api/sessions/{started['session_id']}/runs"))["runs"]
    assert [(r["kind"], r["supersedes"]) for r in runs] == [("refined", None)]


async def test_live_results_off_and_bad_flag(start_server: ServerFactory,
                                             call_pcm: bytes) -> None:
    """--max-live-sessions 0: a clear refusal, the recording intact; a non-boolean flag is
    an invalid field."""
    srv = start_server("--max-live-sessions", "0")
    assert (await get(srv.url + "/api/health"))["live"] == {"active": 0, "max": 0, "warm": 0}
    pcm = call_pcm[: 4 * 32000]
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                            "live_results": "yes"})
        bad = await recv(ws)
        assert bad == {"type": "error", "code": 4010,
                       "message": "'live_results' must be true or false"}
        await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                            "live_results": True})
        started = await recv(ws)
        paused = await recv(ws)
        for i in range(0, len(pcm), 4000):
            await ws.send_bytes(pcm[i:i + 4000])
        await ws.send_json({"action": "stop"})
        stopped, seen = await recv_until(ws, "recording_stopped")
    assert started["live_results"] is False
    assert paused == {"type": "live_paused", "session_id": started["session_id"],
                      "reason": "Live results are off on this server (--max-live-sessions 0); "
                                "recording normally"}
    assert stopped["live_run_id"] is None and not seen
    assert await recorded_pcm(srv, started["session_id"]) == pcm


def test_a_bad_live_config_is_refused_at_start(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """--live-config (or WORKBENCH_LIVE_CONFIG) must be options LiveConfig takes: anything
    else stops the server at start-up with one line saying what is wrong."""
    from server.config import ConfigError, ServerConfig, check, parse_args

    for value, said in (("nope", "not JSON (Expecting value at character 0)"),
                        ("[1]", "live options must be a JSON object"),
                        ('{"asr": 5}', "'asr' must be a JSON object (got 5)"),
                        ('{"asr": {"nope": 1}}', "unknown ASR option(s): nope (known: "),
                        ('{"diarization": {"latency": 20}}',
                         "diarization: latency must be in [step, window]"),
                        ('{"diarization": {"latency": "5"}}',
                         "'diarization.latency' must be a number (got '5')"),
                        # (a string is truthy: "false" would have turned the rule on)
                        ('{"asr": {"lag_between_passes": "false"}}',
                         "'asr.lag_between_passes' must be true or false (got 'false')"),
                        ('{"transcribe": 0}', "'transcribe' must be true or false (got 0)")):
        with pytest.raises(SystemExit):
            parse_args(["--live-config", value])
        assert f"argument --live-config: {said}" in capsys.readouterr().err
    assert parse_args([]).live_config == {}
    options = {"asr": {"max_word_lag": 2.5}, "diarization": {"latency": 5.0}}
    assert parse_args(["--live-config", json.dumps(options)]).live_config == options
    monkeypatch.setenv("WORKBENCH_LIVE_CONFIG", '{"transcribe": false}')
    assert parse_args([]).live_config == {"transcribe": False}
    assert parse_args(["--live-config", ""]).live_config == {}  # (the flag wins)
    monkeypatch.setenv("WORKBENCH_LIVE_CONFIG", '{"transcribe": 0}')
    with pytest.raises(SystemExit):  # (named: no --live-config was given)
        parse_args([])
    assert "WORKBENCH_LIVE_CONFIG: 'transcribe' must be true or false (got 0)" in \
        capsys.readouterr().err
    with pytest.raises(ConfigError, match="--live-config: unknown live option"):
        check(ServerConfig(live_config={"latency": 5.0}))


async def test_the_live_config_reaches_the_live_worker_and_its_run(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """--live-config: the live worker (the one loaded ahead too) runs with those options,
    and the live run's config (its transcript's and the run's own) echoes them."""
    options = {"asr": {"max_word_lag": 2.5}, "diarization": {"latency": 5.0}}
    srv = start_server("--max-live-sessions", "1", "--live-warm",
                       "--live-config", json.dumps(options))
    deadline = time.monotonic() + 180
    while (await get(srv.url + "/api/health"))["live"]["warm"] != 1:
        assert time.monotonic() < deadline, "no live worker loaded ahead"
        await asyncio.sleep(0.5)
    pcm = (speech_dir / "speech.pcm").read_bytes() + bytes(3 * 32000)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                            "live_results": True})
        sid = (await recv(ws))["session_id"]
        await send_in_real_time(ws, pcm)
        await ws.send_json({"action": "stop"})
        stopped, _ = await recv_until(ws, "recording_stopped", timeout=60)
    await wait_live_run(srv, sid, stopped["live_run_id"])
    doc = await get(f"{srv.url}/api/sessions/{sid}/transcript?format=json&run={stopped['live_run_id']}")
    live = doc["config"]["options"]
    assert live["asr"]["max_word_lag"] == 2.5 and live["diarization"]["latency"] == 5.0
    assert [w for seg in doc["segments"] for w in seg["words"]]
    # and the run itself (GET .../runs) says so, every option with its value
    runs = (await get(f"{srv.url}/api/sessions/{sid}/runs"))["runs"]
    assert next(r for r in runs if r["id"] == stopped["live_run_id"])["config"] == live


def test_a_store_made_before_live_runs_gets_the_kind_column(tmp_path: Path) -> None:
    """An existing database (runs without `kind`/`supersedes`) opens with every run refined."""
    import sqlite3

    from server.sessions import SessionStore

    db = sqlite3.connect(tmp_path / "workbench.sqlite3")
    db.executescript("""
        CREATE TABLE sessions (id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, format TEXT NOT NULL DEFAULT 'wav',
            duration_seconds REAL NOT NULL DEFAULT 0, bytes_received INTEGER NOT NULL DEFAULT 0,
            chunks_received INTEGER NOT NULL DEFAULT 0, options TEXT NOT NULL DEFAULT '{}',
            error TEXT);
        CREATE TABLE runs (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, seq INTEGER NOT NULL,
            status TEXT NOT NULL, config TEXT NOT NULL, created_at REAL NOT NULL,
            started_at REAL, finished_at REAL, stage TEXT, progress REAL NOT NULL DEFAULT 0,
            error TEXT, summary TEXT NOT NULL DEFAULT '{}', attempts INTEGER NOT NULL DEFAULT 0);
        INSERT INTO sessions (id, status, created_at, updated_at) VALUES ('s1', 'completed', 1, 1);
        INSERT INTO runs (id, session_id, seq, status, config, created_at)
            VALUES ('r1', 's1', 0, 'completed', '{}', 1);
    """)
    db.commit()
    db.close()
    store = SessionStore(tmp_path)
    try:
        session = store.get_session("s1")
        assert session is not None
        run = session.runs[0].serialize()
        assert (run["kind"], run["supersedes"]) == ("refined", None)
        assert store.runs_in("completed")[0].id == "r1" and not store.runs_in("completed",
                                                                              kind="live")
    finally:
        store.close()


def test_a_live_run_never_moves_its_session(tmp_path: Path) -> None:
    """The session's status follows its refined runs: a live run saved before or after
    the refined run completes leaves it as the refined run says."""
    from server.sessions import SessionStore

    store = SessionStore(tmp_path)
    try:
        sid = store.create_session().id
        store.set_status(sid, "recording")
        store.set_status(sid, "processing")
        live = store.create_run(sid, {}, kind="live")
        refined = store.create_run(sid, {}, supersedes=live.id)
        assert (live.status, refined.status) == ("running", "queued")
        assert [r.id for r in store.runs_in("queued", "running")] == [refined.id]
        assert store.finish_run(refined.id, ok=True, summary={}) is True  # live still running
        assert store.get_session(sid).status == "completed"
        assert store.finish_run(live.id, ok=False, error="gone") is False
        session = store.get_session(sid)
        assert session.status == "completed" and session.error is None
        assert [(r.kind, r.status, r.supersedes) for r in session.runs] == [
            ("live", "failed", None), ("refined", "completed", live.id)]
    finally:
        store.close()


def test_the_next_live_session_takes_the_newest_speakers_any_run_gave(tmp_path: Path) -> None:
    """A live run that gave no speaker (silence, or a stream that started too late to be
    seeded) saved an empty list, and that list hid the older run's speakers: the next
    resume started its labels afresh. Runs without speakers (empty, failed with no file,
    unreadable) are passed over now."""
    from server.live_said import known_speakers
    from server.live_worker import SPEAKERS_FILE
    from server.sessions import SessionStore

    store = SessionStore(tmp_path)
    try:
        sid = store.create_session().id
        assert known_speakers(store, sid) is None
        said = {"embedding": "cam++", "dimension": 3,
                "speakers": [{"speaker": "SPEAKER_00", "centroid": [1.0, 0.0, 0.0]}]}
        contents = [json.dumps(said), json.dumps({**said, "speakers": []}), None, "{not json"]
        for content in contents:  # oldest first
            run = store.create_run(sid, {}, kind="live")
            folder = store.run_dir(sid, run.id)
            folder.mkdir(parents=True)
            if content is not None:
                (folder / SPEAKERS_FILE).write_text(content)
        store.create_run(sid, {})  # (a refined run: never asked)
        assert known_speakers(store, sid) == said
    finally:
        store.close()


async def warm_server(start_server: ServerFactory, slots: int = 1) -> LocalServer:
    """A server with `slots` live slots and a worker loaded ahead (--live-warm), once it is."""
    srv = start_server("--max-live-sessions", str(slots), "--live-warm")
    deadline = time.monotonic() + 180
    while (await get(srv.url + "/api/health"))["live"] != {"active": 0, "max": slots, "warm": 1}:
        assert time.monotonic() < deadline, "no live worker loaded ahead"
        await asyncio.sleep(0.5)
    return srv


async def send_in_real_time(ws: aiohttp.ClientWebSocketResponse, pcm: bytes) -> None:
    """16 kHz s16le `pcm` in 0.25 s chunks, each when a microphone would have it."""
    t0 = time.monotonic()
    for n, i in enumerate(range(0, len(pcm), 8000)):
        await asyncio.sleep(max(0.0, t0 + n * 0.25 - time.monotonic()))
        await ws.send_bytes(pcm[i:i + 8000])


async def test_a_worker_loaded_ahead_gives_words_within_seconds(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """--live-warm: a live worker waits with its models loaded, so a short utterance
    streamed in real time has committed words before stop (a worker started at `start`
    spends longer than the utterance loading its models on this machine)."""
    srv = await warm_server(start_server)
    pcm = (speech_dir / "speech.pcm").read_bytes() + bytes(3 * 32000)  # + 3 s of silence
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                            "live_results": True})
        started = await recv(ws)
        assert started["live_results"] is True
        assert (await get(srv.url + "/api/health"))["live"]["active"] == 1
        await send_in_real_time(ws, pcm)
        # a pass may still be running on this busy machine: wait for the first word a bit
        first, early = await recv_until(ws, "transcript_final", timeout=30)
        await ws.send_json({"action": "stop"})
        stopped, _ = await recv_until(ws, "recording_stopped")
    assert not [m for m in early if m["type"] == "live_paused"]
    assert first["words"][0]["index"] == 0 and first["words"][0]["start"] < 3.0
    assert isinstance(stopped["live_run_id"], str)


async def live_then_heard(s: aiohttp.ClientSession, srv: LocalServer, pcm: bytes
                          ) -> tuple[aiohttp.ClientWebSocketResponse, str,
                                     aiohttp.ClientWebSocketResponse, list[dict[str, Any]]]:
    """A live recording of `pcm` in real time, with a second socket subscribed to it: the
    recording's socket, the session id, the subscriber (left open) and what it heard up to
    the first committed words."""
    ws = await s.ws_connect(f"{srv.ws_url}/ws/new")
    await ws.send_json({"action": "start", "input_format": "pcm_s16le", "live_results": True})
    sid = (await recv(ws))["session_id"]
    sub = await s.ws_connect(f"{srv.ws_url}/ws/{sid}")
    await send_in_real_time(ws, pcm)
    first, heard = await recv_until(sub, "transcript_final", timeout=30)
    return ws, sid, sub, heard + [first]


async def test_a_resumed_live_recording_replays_what_its_client_missed(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """The recording's connection drops while its live worker goes on (a subscriber hears
    it): the resumed connection gets, right after `recording_started`, one `live_replay`
    with every word and turn final so far, and the subscriber none (it heard them); the
    word indexes then go on after it."""
    srv = await warm_server(start_server)
    pcm = (speech_dir / "speech.pcm").read_bytes() + bytes(3 * 32000)  # + 3 s of silence
    async with aiohttp.ClientSession() as s:
        ws, sid, sub, heard = await live_then_heard(s, srv, pcm)
        async with sub:
            await ws.close()  # dropped: what the worker says from now on, its client misses
            await session_in(srv, sid, "interrupted", timeout=30)
            heard += await drain(sub, 5.0)  # the worker said what it can without more audio
            async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws2:
                await ws2.send_json({"action": "start", "input_format": "pcm_s16le",
                                     "live_results": True})
                # (the resumed socket is subscribed from its upgrade on: the worker's
                # events may come before these)
                started, _ = await recv_until(ws2, "recording_started", timeout=30)
                assert started["resumed"] is True and started["live_results"] is True
                replay, _ = await recv_until(ws2, "live_replay", timeout=30)
                # everything the subscriber heard is in it, as the subscriber has it (what
                # it gets after its drain was said before the replay, unless the worker
                # spoke after 5 s of silence: then the replay holds a prefix of it)
                later = await drain(sub, 1.0)
                assert "live_replay" not in [m["type"] for m in later]
                heard_by_then = check_live_sequence([e for e in heard if e["type"] in LIVE_EVENTS])
                said = check_live_sequence([e for e in heard + later if e["type"] in LIVE_EVENTS])
                replayed = {w["index"]: w for w in replay["words"]}
                assert heard_by_then and set(heard_by_then) <= set(replayed)
                for i, w in replayed.items():  # (a speaker may be given after the replay)
                    assert {**w, "speaker": said[i]["speaker"]} == said[i]
                    assert w["speaker"] in (None, said[i]["speaker"])
                turns = [t for e in heard + later if e["type"] == "diarization_update"
                         for t in e["turns"]]
                assert replay["turns"] == turns[:len(replay["turns"])]
                assert len(replay["turns"]) >= len([t for e in heard if e["type"] ==
                                                    "diarization_update" for t in e["turns"]])
                for i in range(0, len(pcm), 8000):
                    await ws2.send_bytes(pcm[i:i + 8000])
                await ws2.send_json({"action": "stop"})
                stopped, _ = await recv_until(ws2, "recording_stopped", timeout=60)
    run = await wait_live_run(srv, sid, stopped["live_run_id"])
    assert run["status"] == "completed"
    url = f"{srv.url}/api/sessions/{sid}/transcript?format=json&run={run['id']}"
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        doc = json.loads(await r.read())
    words = [w for seg in doc["segments"] for w in seg["words"]]
    assert len(words) > len(replay["words"])  # the second part's words follow the replayed ones


async def test_a_resume_without_live_results_hears_none_and_supersedes_the_live_run(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """A live recording drops; its resume does not ask for live results: the live stream
    is saved at that start, and its last words went to the resumed socket too (README:
    a client that does not ask sees none of these); the refined run of that recording
    now supersedes the live run saved then (it superseded nothing)."""
    srv = await warm_server(start_server)
    pcm = (speech_dir / "speech.pcm").read_bytes() + bytes(2 * 32000)
    async with aiohttp.ClientSession() as s:
        ws, sid, sub, _ = await live_then_heard(s, srv, pcm)
        await sub.close()
        await ws.close()
        await session_in(srv, sid, "interrupted", timeout=30)
        async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws2:
            await ws2.send_json({"action": "start", "input_format": "pcm_s16le"})
            for i in range(0, len(pcm), 8000):
                await ws2.send_bytes(pcm[i:i + 8000])
            await ws2.send_json({"action": "stop"})
            done, seen = await recv_until(ws2, "processing_complete", "processing_failed",
                                          timeout=120)
    assert done["type"] == "processing_complete", done
    assert [m["type"] for m in seen if m["type"] in LIVE_EVENTS] == []
    runs = (await get(f"{srv.url}/api/sessions/{sid}/runs"))["runs"]
    live = [r for r in runs if r["kind"] == "live"]
    assert len(live) == 1 and done.get("supersedes") == live[0]["id"]
    refined = [r for r in runs if r["kind"] == "refined"]
    assert refined[-1]["supersedes"] == live[0]["id"]


async def test_a_resume_without_live_results_hears_no_flush_after_its_stop(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """The live stream that a resume without live results ends flushes its last words in
    the background (held here: its worker stopped); that recording stopped meanwhile, its
    socket got them after its stop (it was unmuted at once), though it never asked."""
    srv = await warm_server(start_server)
    worker = first_live_worker(srv)
    pcm = (speech_dir / "speech.pcm").read_bytes()
    async with aiohttp.ClientSession() as s:
        ws, sid, sub, _ = await live_then_heard(s, srv, pcm[:len(pcm) // 2])
        await ws.close()
        await session_in(srv, sid, "interrupted", timeout=30)
        worker.suspend()
        try:
            async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws2:
                await ws2.send_json({"action": "start", "input_format": "pcm_s16le"})
                _, seen = await recv_until(ws2, "recording_started", timeout=60)  # saving
                await ws2.send_bytes(pcm[:32000])
                await ws2.send_json({"action": "stop"})
                stopped, before = await recv_until(ws2, "recording_stopped", timeout=60)
                seen += before + [stopped]
                await asyncio.sleep(1.0)  # (unmuted at once, before)
                _resume(worker)
                live = [r for r in (await get(f"{srv.url}/api/sessions/{sid}/runs"))["runs"]
                        if r["kind"] == "live"]
                assert len(live) == 1
                await wait_live_run(srv, sid, live[0]["id"])
                seen += await drain(ws2)
            heard = await drain(sub)
        finally:
            _resume(worker)
            await sub.close()
    assert [m["type"] for m in seen if m["type"] in LIVE_EVENTS] == []
    assert [m for m in heard if m["type"] == "transcript_final"]  # the watcher got the flush


async def test_the_live_run_stops_at_the_duration_limit(start_server: ServerFactory,
                                                       call_pcm: bytes) -> None:
    """--max-duration 10, 1 s chunks: the chunk that crosses the limit ends the recording and
    audio.wav stops at 10 s, but the live worker heard all of it: the live run's words and
    turns ran on to 11 s, past the audio a player can seek to."""
    srv = start_server("--max-live-sessions", "1", "--live-warm", "--max-duration", "10")
    deadline = time.monotonic() + 180
    while (await get(srv.url + "/api/health"))["live"]["warm"] != 1:
        assert time.monotonic() < deadline, "no live worker loaded ahead"
        await asyncio.sleep(0.5)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "input_format": "pcm_s16le", "live_results": True})
        sid = (await recv(ws))["session_id"]
        t0 = time.monotonic()
        for i in range(12):  # in real time, 1 s a chunk
            await ws.send_bytes(call_pcm[i * 32000:(i + 1) * 32000])
            await asyncio.sleep(max(0.0, t0 + i + 1 - time.monotonic()))
        stopped, _ = await recv_until(ws, "recording_stopped", timeout=60)
    assert stopped["duration_seconds"] == 10.0 and stopped["truncated"] is True
    await wait_live_run(srv, sid, stopped["live_run_id"])
    doc = await get(f"{srv.url}/api/sessions/{sid}/transcript?format=json&run={stopped['live_run_id']}")
    words = [w for seg in doc["segments"] for w in seg["words"]]
    assert words and doc["duration"] <= 10.0
    assert max(w["end"] for w in words) <= 10.0
    assert max(t["end"] for t in doc["diarization"]) <= 10.0
    assert all(seg["end"] <= 10.0 for seg in doc["segments"])


async def test_a_watcher_joining_a_live_recording_gets_the_words_so_far(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """A socket that subscribes to a live recording under way (a dashboard opened late)
    got the events from then on only: word indexes starting at 30 with nothing before
    until the live run was saved. It now gets a `live_replay` of everything final so far
    first; a resume's socket still gets its replay after `recording_started` only."""
    srv = await warm_server(start_server)
    pcm = (speech_dir / "speech.pcm").read_bytes()
    async with aiohttp.ClientSession() as s:
        ws, sid, sub, heard = await live_then_heard(s, srv, pcm + bytes(4 * 32000))
        async with ws, sub, s.ws_connect(f"{srv.ws_url}/ws/{sid}") as late:
            replay = await recv(late)
            assert replay["type"] == "live_replay" and replay["session_id"] == sid
            finals = [w for e in heard if e["type"] == "transcript_final" for w in e["words"]]
            indexes = [w["index"] for w in replay["words"]]
            assert indexes == list(range(len(indexes))) and len(indexes) >= len(finals)
            assert [w["word"] for w in replay["words"][:len(finals)]] == [w["word"] for w in finals]
            await ws.send_json({"action": "stop"})
            stopped, _ = await recv_until(ws, "recording_stopped", timeout=60)
        await wait_live_run(srv, sid, stopped["live_run_id"])
        async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as after:  # nothing live any more
            try:
                got = await recv(after, timeout=2)
            except asyncio.TimeoutError:
                got = None
            assert got is None, got


async def test_two_live_starts_at_once_load_no_extra_workers(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """--max-live-sessions 2 --live-warm: two recordings with live results started
    together take the worker loaded ahead and the one being started ahead after it; no
    third worker loads its models next to them (measured before: three more workers
    loaded at once and starved the live ones of CPU)."""
    srv = await warm_server(start_server, slots=2)
    assert srv.process is not None
    server = psutil.Process(srv.process.pid)

    def workers() -> set[int]:
        return {p.pid for p in server.children(recursive=False)
                if p.is_running() and p.nice() >= server.nice() + 10}

    pcm = (speech_dir / "speech.pcm").read_bytes()
    seen: set[int] = set(workers())
    async with aiohttp.ClientSession() as s, \
            s.ws_connect(f"{srv.ws_url}/ws/new") as a, s.ws_connect(f"{srv.ws_url}/ws/new") as b:
        for ws in (a, b):
            await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                                "live_results": True})
        assert (await recv(a))["live_results"] is True
        assert (await recv(b))["live_results"] is True
        for i in range(0, len(pcm), 16000):
            for ws in (a, b):
                await ws.send_bytes(pcm[i:i + 16000])
            seen |= workers()
            await asyncio.sleep(0.25)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            seen |= workers()
            await asyncio.sleep(0.1)
        assert len(seen) == 2, f"live worker processes seen: {sorted(seen)}"
        for ws in (a, b):
            await ws.send_json({"action": "stop"})
            await recv_until(ws, "recording_stopped")


async def drain(ws: aiohttp.ClientWebSocketResponse, quiet: float = 3.0) -> list[dict[str, Any]]:
    """Every message until none comes for `quiet` seconds."""
    got = []
    while True:
        try:
            got.append(await recv(ws, quiet))
        except asyncio.TimeoutError:
            return got


def committed_indexes(events: list[dict[str, Any]]) -> list[int]:
    return [w["index"] for e in events if e["type"] == "transcript_final" for w in e["words"]]


async def test_word_indexes_go_on_after_a_live_worker_died_while_waiting(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """A dropped live recording's worker dies while it waits for the resume: no live run
    is saved, and the resumed recording's new live stream numbered its words from 0 again
    (clients keep words by index: they took the new ones for repeats)."""
    srv = await warm_server(start_server)
    assert srv.process is not None
    server = psutil.Process(srv.process.pid)
    ahead = [p for p in server.children() if p.nice() >= server.nice() + 10]
    assert len(ahead) == 1  # the worker loaded ahead: the recording below takes it
    pcm = (speech_dir / "speech.pcm").read_bytes() + bytes(2 * 32000)
    async with aiohttp.ClientSession() as s:
        ws, sid, sub, heard = await live_then_heard(s, srv, pcm)
        async with sub:
            await ws.close()
            await session_in(srv, sid, "interrupted", timeout=30)
            heard += await drain(sub)  # the first stream's words up to its drop
            ahead[0].kill()
            await wait_no_live(srv)  # its stream has ended, nothing saved
            heard += await drain(sub, quiet=1.0)  # (any word it said before the kill)
            first_part = committed_indexes(heard)
            assert first_part
            async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws2:
                await ws2.send_json({"action": "start", "input_format": "pcm_s16le",
                                     "live_results": True})
                started, _ = await recv_until(ws2, "recording_started", timeout=60)
                assert started["resumed"] is True and started["live_results"] is True
                await send_in_real_time(ws2, pcm)
                await ws2.send_json({"action": "stop"})
                stopped, _ = await recv_until(ws2, "recording_stopped", timeout=60)
            run = await wait_live_run(srv, sid, stopped["live_run_id"])
            heard += await drain(sub)
    indexes = committed_indexes(heard)
    assert indexes == list(range(len(indexes))), indexes  # never a number twice
    assert len(indexes) > len(first_part)
    assert run["status"] == "completed" and run["summary"]["first_index"] == len(first_part)


async def resume_live(s: aiohttp.ClientSession, srv: LocalServer, sid: str
                      ) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any], float]:
    """A resume of `sid` with live results, once the last socket is let go (4011 until
    then): the open socket, its `recording_started` and the seconds that start took."""
    for _ in range(200):
        ws = await s.ws_connect(f"{srv.ws_url}/ws/{sid}")
        t0 = time.monotonic()
        await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                            "live_results": True})
        reply, _ = await recv_until(ws, "recording_started", "error", timeout=60)
        if reply["type"] != "error":
            return ws, reply, time.monotonic() - t0
        await ws.close()
        assert reply["code"] == 4011, reply
        await asyncio.sleep(0.02)
    raise AssertionError("the last socket of the session was never let go")


def _resume(process: psutil.Process) -> None:
    """Let a stopped worker go on, if it is still there (once let go, it may have saved
    and exited already)."""
    try:
        process.resume()
    except psutil.NoSuchProcess:
        pass


def first_live_worker(srv: LocalServer) -> psutil.Process:
    """The live worker a warm server loaded ahead (the first recording's)."""
    assert srv.process is not None
    server = psutil.Process(srv.process.pid)
    (worker,) = [p for p in server.children() if p.nice() >= server.nice() + 10]
    return worker


async def resume_live_after_a_save(s: aiohttp.ClientSession, srv: LocalServer, sid: str,
                                   worker: psutil.Process, pcm: bytes, hold: float
                                   ) -> tuple[dict[str, Any], dict[str, Any], float]:
    """The interrupted `sid`'s live stream saved by a resume without live results (its
    `worker` stopped for `hold` s from then on, if `hold`), then a resume with live results
    right after that sends `pcm` in real time and stops: its `recording_started`, its
    `recording_stopped` and the seconds its start took."""
    if hold:
        worker.suspend()

    async def let_it_save() -> None:
        await asyncio.sleep(hold)  # (the new stream hears its first words meanwhile)
        _resume(worker)

    try:
        async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws2:
            await ws2.send_json({"action": "start", "input_format": "pcm_s16le"})
            await recv_until(ws2, "recording_started", timeout=60)  # the save begins
        ws3, reply, waited = await resume_live(s, srv, sid)  # while it saves, if held
        async with ws3:
            saved = asyncio.ensure_future(let_it_save())
            await send_in_real_time(ws3, pcm)
            await saved
            await ws3.send_json({"action": "stop"})
            stopped, _ = await recv_until(ws3, "recording_stopped", timeout=60)
    finally:
        _resume(worker)
    return reply, stopped, waited


async def test_a_live_resume_starts_at_once_and_numbers_after_the_stream_being_saved(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """A resume without live results saves the session's live stream (it flushes its last
    words in the background, held up here: its worker stopped for a while); a resume with
    live results right after waited for that flush before `recording_started`, up to 20 s
    (and the words it flushed later took the new stream's first indexes again). It starts
    at once now; the new stream's words go out after the flushed ones, their indexes and
    times following theirs."""
    from server.live import FLUSH_WAIT

    srv = await warm_server(start_server, slots=2)
    first_worker = first_live_worker(srv)
    pcm = (speech_dir / "speech.pcm").read_bytes()
    async with aiohttp.ClientSession() as s:
        ws, sid, sub, heard = await live_then_heard(s, srv, pcm)
        async with sub:
            await ws.close()
            await session_in(srv, sid, "interrupted", timeout=30)
            reply, stopped, waited = await resume_live_after_a_save(
                s, srv, sid, first_worker, pcm + bytes(2 * 32000), hold=6)
            assert waited < FLUSH_WAIT / 4
            assert reply["live_results"] is True
            await wait_live_run(srv, sid, stopped["live_run_id"])
            heard += await drain(sub)
    check_live_sequence([e for e in heard if e["type"] in LIVE_EVENTS])  # indexes, times
    runs = [r for r in (await get(f"{srv.url}/api/sessions/{sid}/runs"))["runs"]
            if r["kind"] == "live"]
    assert len(runs) == 2 and all(r["status"] == "completed" for r in runs)
    first, second = (r["summary"] for r in runs)
    assert second["first_index"] == first["first_index"] + first["word_count"]
    assert second["word_count"] > 0
    # no refined transcript (renditions): /transcript is both live runs' (it was the last
    # one's alone)
    doc = await get(f"{srv.url}/api/sessions/{sid}/transcript?format=json")
    words = [w for seg in doc["segments"] for w in seg["words"]]
    assert len(words) == first["word_count"] + second["word_count"]
    assert doc["config"] == {"live_runs": [r["id"] for r in runs]}
    async with aiohttp.ClientSession() as s, \
            s.get(f"{srv.url}/api/sessions/{sid}/transcript?format=srt") as r:
        assert r.status == 200 and r.headers["Content-Disposition"] == f'inline; filename="{sid}.srt"'
    # the session's speakers are those of the runs its transcript is made of (a renditions
    # run made none, and the session said null while its transcript was served; then the
    # last part's alone)
    session = await session_in(srv, sid, "completed", timeout=60)
    assert session["speakers"] == len(set(first["speaker_labels"]) | set(second["speaker_labels"]))
    assert session["speakers"] >= 1
    # and it says what its transcript is made of (the page took it from the runs itself)
    assert session["transcript"] == {"runs": [r["id"] for r in runs], "kind": "live",
                                     "speakers": session["speakers"], "word_count": len(words)}


async def test_a_live_resume_with_one_slot_waits_for_its_own_stream_being_saved(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """With a budget of one live worker, the session's own last stream still saving held
    the only slot: a resume with live results right after was refused at once ("Live
    results are busy"). It waits for that save (at most FLUSH_WAIT s) and gets the slot."""
    srv = await warm_server(start_server, slots=1)
    first_worker = first_live_worker(srv)
    pcm = (speech_dir / "speech.pcm").read_bytes()

    async def let_it_flush() -> None:
        await asyncio.sleep(3)  # the resume below asks while the first stream still saves
        first_worker.resume()

    async with aiohttp.ClientSession() as s:
        ws, sid, sub, _ = await live_then_heard(s, srv, pcm)
        await sub.close()
        await ws.close()
        await session_in(srv, sid, "interrupted", timeout=30)
        first_worker.suspend()
        try:
            async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws2:
                await ws2.send_json({"action": "start", "input_format": "pcm_s16le"})
                await recv_until(ws2, "recording_started", timeout=60)  # the save begins
            flushed = asyncio.ensure_future(let_it_flush())
            ws3, reply, _ = await resume_live(s, srv, sid)
            async with ws3:
                assert reply["live_results"] is True, reply
                await flushed
                await ws3.send_json({"action": "stop"})
                stopped, _ = await recv_until(ws3, "recording_stopped", timeout=60)
        finally:
            _resume(first_worker)
        await wait_live_run(srv, sid, stopped["live_run_id"])


async def test_a_stuck_live_worker_frees_its_slot_soon_after_stop(
        start_server: ServerFactory, speech_dir: Path) -> None:
    """A live worker that hangs (here SIGSTOP) before `stop` held its live slot, and the
    live run stayed `running`, for FINISH_TIMEOUT (600 s); it now fails once the worker has
    said nothing for STALL_SECONDS, and the killed worker is reaped (it stayed a zombie)."""
    from server.live import STALL_SECONDS

    srv = await warm_server(start_server)
    worker = first_live_worker(srv)
    pcm = (speech_dir / "speech.pcm").read_bytes()
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "input_format": "pcm_s16le", "live_results": True})
        sid = (await recv(ws))["session_id"]
        await send_in_real_time(ws, pcm[: len(pcm) // 2])
        worker.suspend()
        await send_in_real_time(ws, pcm[len(pcm) // 2:])
        await ws.send_json({"action": "stop"})
        stopped, _ = await recv_until(ws, "recording_stopped", timeout=60)
    t0 = time.monotonic()
    run = await wait_live_run(srv, sid, stopped["live_run_id"], timeout=STALL_SECONDS + 60)
    assert run["status"] == "failed" and time.monotonic() - t0 < STALL_SECONDS + 30
    assert (await get(srv.url + "/api/health"))["live"]["active"] == 0
    deadline = time.monotonic() + 15
    while psutil.pid_exists(worker.pid):  # reaped, not a zombie
        assert time.monotonic() < deadline, psutil.Process(worker.pid).status()
        await asyncio.sleep(0.2)
    assert await recorded_pcm(srv, sid) == pcm


async def test_a_stop_far_behind_ends_live_results_at_once(start_server: ServerFactory) -> None:
    """Fifteen minutes of audio sent at once with live results, then `stop`: the worker was
    left to work through all of it (about 95 s here) while it held its live slot; `stop`
    now applies the rule that applies while recording (off beyond 120 s behind)."""
    srv = await warm_server(start_server)
    pcm = bytes(900 * 32000)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
        await ws.send_json({"action": "start", "input_format": "pcm_s16le", "live_results": True})
        sid = (await recv(ws))["session_id"]
        for i in range(0, len(pcm), 1 << 20):
            await ws.send_bytes(pcm[i:i + (1 << 20)])
        await ws.send_json({"action": "stop"})
        stopped, _ = await recv_until(ws, "recording_stopped", timeout=120)
    assert stopped["live_run_id"] is None
    await wait_no_live(srv, timeout=15)
    assert await recorded_pcm(srv, sid) == pcm


def test_the_live_budget_counts_the_cores_this_process_may_use() -> None:
    import subprocess
    import sys

    from workbench.notebook.local_server import REPO_ROOT

    out = subprocess.run([sys.executable, "-c", "import os; os.sched_setaffinity(0, {0}); "
                          "from server.config import auto_live_sessions; print(auto_live_sessions())"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1"


def test_the_audio_before_a_resume_comes_from_the_recordings_wav(tmp_path: Path) -> None:
    """A resumed recording's new live session is handed the last seconds before the resume
    (`audio_before`) from the audio.wav finalised when the part before it ended: exactly
    those samples; nothing when there is no WAV or one the server did not write."""
    from server.live_said import audio_before
    from server.sessions import SessionStore
    from workbench.engine.audio import write_wav

    store = SessionStore(tmp_path)
    try:
        sid = store.create_session().id
        assert audio_before(store, sid, 5.0) == b""  # (no audio.wav yet)
        ramp = (np.arange(12 * SAMPLE_RATE) % 20000).astype(np.int16)
        write_wav(store.audio_path(sid, "wav"), ramp)
        pcm = audio_before(store, sid, 11.5, seconds=10.0)
        assert np.array_equal(np.frombuffer(pcm, "<i2"),
                              ramp[int(1.5 * SAMPLE_RATE):int(11.5 * SAMPLE_RATE)])
        assert np.array_equal(np.frombuffer(audio_before(store, sid, 3.0), "<i2"),
                              ramp[:3 * SAMPLE_RATE])  # (less before: what there is)
        assert len(audio_before(store, sid, 60.0)) == 2 * 10 * SAMPLE_RATE  # (the end)
        assert audio_before(store, sid, 0.0) == b""  # (a new recording: nothing before)
        write_wav(store.audio_path(sid, "wav"), np.zeros(8000, np.float32), sample_rate=8000)
        assert audio_before(store, sid, 0.5) == b""  # (not the server's 16 kHz WAV)
    finally:
        store.close()


def test_what_was_said_before_a_resume_comes_from_the_live_run_that_ends_there(
        tmp_path: Path) -> None:
    """The next live session's ASR prompt starts with the text of the newest saved live
    transcript (`said_before`), only when it ends where the resume begins (a part without
    live results in between: nothing); live runs that saved none are passed over."""
    from server.live_said import said_before
    from server.sessions import SessionStore
    from workbench.engine.transcript import Transcript, TranscriptSegment, Word

    store = SessionStore(tmp_path)
    try:
        sid = store.create_session().id
        assert said_before(store, sid, 10.0) == ""
        words = (Word(8.0, 8.4, " the", 0.9), Word(8.4, 9.0, " farmer", 0.9))
        run = store.create_run(sid, {}, kind="live")
        assert said_before(store, sid, 10.0) == ""  # (not saved yet)
        Transcript([TranscriptSegment(8.0, 9.0, "SPEAKER_00", "the farmer", words)], [],
                   duration=10.0).save(store.run_dir(sid, run.id))
        assert said_before(store, sid, 10.0) == said_before(store, sid, 10.6) == "the farmer"
        store.finish_run(run.id, ok=True, summary={})
        assert said_before(store, sid, 12.0) == ""  # (audio without live results since)
        assert said_before(store, sid, 0.0) == ""
        failed = store.create_run(sid, {}, kind="live")  # (saved its text, then failed)
        Transcript([TranscriptSegment(8.0, 9.0, "SPEAKER_00", "a stall", words)], [],
                   duration=10.0).save(store.run_dir(sid, failed.id))
        store.finish_run(failed.id, ok=False, error="the worker stopped answering")
        assert said_before(store, sid, 10.0) == "the farmer"  # (the failed one passed over)
        later = store.create_run(sid, {}, kind="live")  # a later part's run, 20-40 s
        Transcript([TranscriptSegment(38.0, 39.0, "SPEAKER_00", "x " * 800 + "the end",
                                      words)], [], duration=40.0).save(
            store.run_dir(sid, later.id))
        assert said_before(store, sid, 10.0) == ""  # (the newest saved one only)
        assert said_before(store, sid, 40.0).endswith("x the end")
        assert len(said_before(store, sid, 40.0)) == 1000  # (what the prompt can use, and more)
    finally:
        store.close()


@pytest.mark.parametrize("while_saving", [False, True], ids=["saved", "while-saving"])
async def test_a_later_live_session_keeps_the_speaker_labels_of_the_last(
        start_server: ServerFactory, tmp_path: Path, while_saving: bool) -> None:
    """A live recording drops and is resumed once its live run is saved: the new live
    session's clustering started afresh, so whoever spoke first was SPEAKER_00 again. It
    goes on with the saved run's speakers now: each voice keeps its label although the
    other one speaks first in the second part. `while_saving`: the resume comes while the
    last live stream still saves (its worker stopped for 6 s): the new session gave its
    first voice a label of its own before the speakers came; its diarization waits for
    them now."""
    from workbench.research.datasets import generate_conversation

    from server.live_worker import SPEAKERS_FILE

    before = generate_conversation(tmp_path, num_speakers=2, duration=20.0, seed=100,
                                   voices=["rob", "fay"])
    after = generate_conversation(tmp_path, num_speakers=2, duration=20.0, seed=101,
                                  voices=["fay", "rob"])
    first_voice = [min(item.reference_turns(), key=lambda t: t.start).speaker
                   for item in (before, after)]
    assert first_voice[0] != first_voice[1]
    pcm = [to_int16(item.load_audio()).tobytes() for item in (before, after)]
    srv = await warm_server(start_server, slots=2 if while_saving else 1)
    first_worker = first_live_worker(srv)
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{srv.ws_url}/ws/new")
        await ws.send_json({"action": "start", "input_format": "pcm_s16le",
                            "live_results": True})
        sid = (await recv(ws))["session_id"]
        await send_in_real_time(ws, pcm[0])
        await ws.close()
        await session_in(srv, sid, "interrupted", timeout=30)
        reply, stopped, _ = await resume_live_after_a_save(
            s, srv, sid, first_worker, pcm[1] + bytes(32000), hold=6 if while_saving else 0)
        assert reply["live_results"] is True, reply
        await wait_live_run(srv, sid, stopped["live_run_id"])
        runs = [r for r in (await get(f"{srv.url}/api/sessions/{sid}/runs"))["runs"]
                if r["kind"] == "live"]
        assert [r["status"] for r in runs] == ["completed", "completed"], runs
        labels = []
        for item, run, offset in zip((before, after), runs, (0.0, len(pcm[0]) / 32000)):
            url = f"{srv.url}/api/sessions/{sid}/transcript?format=json&run={run['id']}"
            async with s.get(url) as r:
                doc = json.loads(await r.read())
            covered: dict[str, dict[str, float]] = {}
            for ref in item.reference_turns():
                for t in doc["diarization"]:
                    shared = min(ref.end + offset, t["end"]) - max(ref.start + offset, t["start"])
                    if shared > 0:
                        per = covered.setdefault(ref.speaker, {})
                        per[t["speaker"]] = per.get(t["speaker"], 0.0) + shared
            labels.append({ref: max(per, key=per.__getitem__) for ref, per in covered.items()})
    assert len(set(labels[0].values())) == 2, labels
    assert labels[1] == labels[0]  # the same voice, the same label
    # the second session's first windows had the audio before the resume (6.5 s: what the
    # first 7.5 s window, ending 1 s in, holds), and its ASR the first run's text
    assert [r["summary"]["context_seconds"] for r in runs] == [0.0, 6.5], runs
    assert runs[0]["summary"]["said_before_chars"] == 0, runs
    assert runs[1]["summary"]["said_before_chars"] > 20, runs
    saved = json.loads((srv.data_dir / "sessions" / sid / "runs" / runs[0]["id"] /
                        SPEAKERS_FILE).read_text())
    assert sorted(s["speaker"] for s in saved["speakers"]) == sorted(set(labels[0].values()))
