"""Crash safety against real server processes: SIGKILL at random moments while several clients
record, SIGKILL while a run is processing, and SIGTERM with recordings open.

The promise under test: every chunk the server confirmed (a ``progress`` message covers all
chunks up to ``chunks_received``; ``recording_stopped`` covers everything) is in the
session's ``audio.wav`` after a restart, byte for byte, in a valid WAV; and the store is
intact.  Set CRASH_TEST_SEED to replay one sequence of kill offsets.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import aiohttp
import numpy as np
import pytest

from server.finalise import wav_intact
from server.sessions import SessionStore
from workbench.notebook.local_server import LocalServer

REPETITIONS = 20
CLIENTS = 4
PROGRESS_EVERY = 5
WAV_HEADER = 44  # workbench.engine.audio.write_wav writes the canonical header


def server_args(*extra: str) -> list[str]:
    return ["--pipeline", "renditions", "--progress-every", str(PROGRESS_EVERY), *extra]


@dataclass
class Stream:
    """One client's recording: what it sent and what the server confirmed."""

    chunk: int
    stop_after: Optional[int]
    rng: random.Random
    session_id: Optional[str] = None
    sent: list[bytes] = field(default_factory=list)
    confirmed_chunks: int = 0
    stop_confirmed: bool = False
    stop_sent: bool = False
    close_code: Optional[int] = None
    closed_at: Optional[float] = None

    @property
    def sent_bytes(self) -> bytes:
        return b"".join(self.sent)

    @property
    def confirmed_bytes(self) -> int:
        if self.stop_confirmed:
            return len(self.sent_bytes)
        return sum(len(c) for c in self.sent[: self.confirmed_chunks])


async def run_stream(url: str, stream: Stream, max_chunks: int = 100_000) -> None:
    """Stream PCM until the server goes away (or `stop_after` chunks, then `stop`)."""
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(url, autoping=True) as ws:
            await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le"})
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return  # killed before the recording started
            started = json.loads(msg.data)
            assert started["type"] == "recording_started", started
            stream.session_id = started["session_id"]
            reader = asyncio.create_task(read_replies(ws, stream))
            try:
                for i in range(max_chunks):
                    if ws.closed:
                        break
                    if stream.stop_after is not None and i == stream.stop_after:
                        await ws.send_json({"action": "stop"})
                        stream.stop_sent = True
                        break
                    data = stream.rng.randbytes(stream.chunk)
                    stream.sent.append(data)  # before sending: it may be received and kept
                    await ws.send_bytes(data)
                    await asyncio.sleep(0.002)
                await asyncio.wait_for(reader, 30)
            finally:
                reader.cancel()
    except (aiohttp.ClientError, ConnectionError, RuntimeError, asyncio.TimeoutError,
            asyncio.CancelledError):
        pass  # the server died under us: what counts is what it confirmed


async def read_replies(ws: aiohttp.ClientWebSocketResponse, stream: Stream) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        m = json.loads(msg.data)
        if m["type"] == "progress":
            stream.confirmed_chunks = max(stream.confirmed_chunks, m["chunks_received"])
        elif m["type"] == "recording_stopped":
            stream.stop_confirmed = True
        elif m["type"] == "error":
            raise AssertionError(f"unexpected error {m}")
    stream.close_code = ws.close_code
    stream.closed_at = time.monotonic()


def wav_data(path: Path) -> bytes:
    """The PCM payload of a canonical WAV, after checking its header is whole and true."""
    assert wav_intact(path), f"{path} is not a valid WAV"
    blob = path.read_bytes()
    riff, _, wave, fmt, _, tag, channels, rate, _, _, bits, data, size = struct.unpack(
        "<4sI4s4sIHHIIHH4sI", blob[:WAV_HEADER])
    assert (riff, wave, fmt, data) == (b"RIFF", b"WAVE", b"fmt ", b"data")
    assert (tag, channels, rate, bits) == (1, 1, 16000, 16)
    assert size == len(blob) - WAV_HEADER
    return blob[WAV_HEADER:]


def check_kept(store_dir: Path, stream: Stream, context: str) -> None:
    """Everything confirmed is on disk and in audio.wav, nothing that was not sent."""
    directory = store_dir / "sessions" / stream.session_id  # type: ignore[operator]
    sent = stream.sent_bytes
    confirmed = stream.confirmed_bytes
    raw = b"".join(p.read_bytes() for p in sorted(directory.glob("part-*.raw")))
    assert sent.startswith(raw), f"{context}: raw part is not a prefix of what was sent"
    assert len(raw) >= confirmed, f"{context}: {confirmed - len(raw)} confirmed bytes lost"
    pcm = wav_data(directory / "audio.wav")
    usable = len(raw) - len(raw) % 2  # a chunk cut mid-sample loses its last byte
    assert pcm == raw[:usable], f"{context}: audio.wav differs from the raw bytes"
    assert len(pcm) >= confirmed - confirmed % 2, f"{context}: confirmed audio missing"


def integrity(data_dir: Path) -> None:
    db = sqlite3.connect(data_dir / "workbench.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.json()


async def wait_until(predicate: Any, timeout: float = 20, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)


# ---------------------------------------------------------------------- SIGKILL while recording


async def test_sigkill_at_random_moments_keeps_every_confirmed_chunk(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    srv = LocalServer(data_dir, args=server_args()).start()
    streams: list[Stream] = []
    try:
        for rep in range(REPETITIONS):
            context = f"seed {seed}, repetition {rep}"
            batch = [Stream(chunk=rng.choice([320, 999, 3200, 4001]),
                            stop_after=rng.choice([None, None, rng.randrange(5, 60)]),
                            rng=random.Random(rng.random()))
                     for _ in range(CLIENTS)]
            tasks = [asyncio.create_task(run_stream(f"{srv.ws_url}/ws/crash-{rep}-{i}", st))
                     for i, st in enumerate(batch)]
            await asyncio.sleep(rng.uniform(0.05, 0.8))
            srv.kill()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

            # Now and then the crash also leaves a torn audio.wav and a half-written temp file.
            torn = None
            if rep % 4 == 3 and streams:
                torn = rng.choice([st for st in streams if st.session_id])
                wav = data_dir / "sessions" / torn.session_id / "audio.wav"  # type: ignore[operator]
                blob = wav.read_bytes()
                wav.write_bytes(blob[: rng.randrange(0, len(blob) + 1)] + b"\x00garbage")
                (wav.parent / ".audio.wav.x1y2z3").write_bytes(b"RIFF....half")

            srv = LocalServer(data_dir, args=server_args()).start()
            for st in batch:
                if st.session_id is None:
                    continue  # killed before the session existed
                session = await get_json(f"{srv.url}/api/sessions/{st.session_id}")
                if st.stop_confirmed:
                    assert session["status"] in ("processing", "completed"), (context, session)
                elif not st.stop_sent:
                    assert session["status"] == "interrupted", (context, session)
                else:
                    assert session["status"] in ("interrupted", "processing", "completed")
                check_kept(data_dir, st, context)
            if torn is not None:
                check_kept(data_dir, torn, f"{context} (torn audio.wav repaired)")
                assert not list(data_dir.glob("sessions/*/.audio.*"))
            streams += batch
            integrity(data_dir)

        # No session is left recording, nothing is stuck processing, and all kept bytes hold.
        async def settled() -> Any:
            sessions = (await get_json(f"{srv.url}/api/sessions"))["sessions"]
            busy = [s for s in sessions if s["status"] in ("recording", "processing")]
            return sessions if not busy else None

        sessions = await wait_until(settled, timeout=30)
        assert sessions, "some sessions are still recording or processing"
        for s in sessions:
            # `idle`: killed between creating the session and starting its recording.
            assert s["status"] in ("interrupted", "completed") or (
                s["status"] == "idle" and s["bytes_received"] == 0), s
            assert all(r["status"] == "completed" for r in s["runs"]), s
        for st in streams:
            if st.session_id:
                check_kept(data_dir, st, f"seed {seed}, final check")
        assert sum(st.confirmed_bytes for st in streams) > 0
        print(f"seed {seed}: {len(streams)} recordings, "
              f"{sum(1 for st in streams if st.confirmed_chunks)} with confirmed chunks, "
              f"{sum(st.stop_confirmed for st in streams)} stops confirmed, "
              f"{sum(st.confirmed_bytes for st in streams)} confirmed bytes kept")
    finally:
        srv.stop()
    integrity(data_dir)


# ---------------------------------------------------------------------- SIGKILL while processing


async def test_sigkill_during_processing_resumes_the_run(tmp_path: Path) -> None:
    """A run killed mid-way is queued again at start-up and completes; no temp file is left."""
    data_dir = tmp_path / "data"
    srv = LocalServer(data_dir, args=server_args()).start()
    seconds = 600  # MP4 encoding of 10 min takes a few seconds: time enough to kill it
    pcm = (np.random.default_rng(1).standard_normal(16000 * seconds) * 2000).astype("<i2").tobytes()
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/long") as ws:
            await ws.send_json({"action": "start", "format": "mp4", "input_format": "pcm_s16le"})
            sid = json.loads((await ws.receive(timeout=10)).data)["session_id"]
            for i in range(0, len(pcm), 1 << 20):
                await ws.send_bytes(pcm[i:i + (1 << 20)])
            await ws.send_json({"action": "stop"})
            while (m := json.loads((await ws.receive(timeout=30)).data))["type"] != "processing_started":
                pass
            run_id = m["run_id"]

            async def running() -> bool:
                session = await get_json(f"{srv.url}/api/sessions/{sid}")
                run = session["runs"][0]
                return run["status"] == "running" and run["stage"] == "renditions"

            assert await wait_until(running, timeout=30, every=0.05)
            await asyncio.sleep(0.3)
        workers = children(srv.process.pid)
        assert workers  # the job worker, busy with the run
        os.kill(srv.process.pid, signal.SIGKILL)  # the server alone, not its process group
        srv.process.wait(10)
        # a killed server sends its workers nothing: they see their parent gone and exit
        # (before, each kill left one behind, finishing the run the restart queues again)
        gone = await wait_until(lambda: _none_alive(workers), timeout=10, every=0.1)
        try:  # whatever is left of the group
            os.killpg(srv.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert gone, f"worker process(es) {sorted(workers)} outlived the killed server"
        session = SessionStore(data_dir)
        try:
            assert session.get_run(run_id).status == "running"  # type: ignore[union-attr]
        finally:
            session.close()

        srv = LocalServer(data_dir, args=server_args()).start()

        async def done() -> Any:
            session = await get_json(f"{srv.url}/api/sessions/{sid}")
            return session if session["runs"][0]["status"] in ("completed", "failed") else None

        session = await wait_until(done, timeout=60)
        assert session and session["runs"][0]["status"] == "completed", session
        assert session["status"] == "completed" and len(session["runs"]) == 1
        directory = data_dir / "sessions" / sid
        assert not list(directory.glob(".audio.*"))
        assert wav_data(directory / "audio.wav") == pcm
        srv.stop()
        store = SessionStore(data_dir)
        try:  # the restart did not use up the run's retry (a worker crash now failed it)
            assert store.get_run(run_id).attempts == 1  # type: ignore[union-attr]
        finally:
            store.close()
        import av

        with av.open(str(directory / "audio.mp4")) as c:
            assert c.streams.audio[0].codec_context.name == "aac"
            assert abs(float(c.duration) / 1e6 - seconds) < 0.5  # type: ignore[arg-type]
    finally:
        srv.stop()
    integrity(data_dir)


async def test_a_recording_follows_its_run_through_a_server_restart(tmp_path: Path) -> None:
    """`record()` outlasts a server killed while its run processes: the client loses the
    socket, then the server itself, polls until the restarted server (same port) answers,
    and reports the outcome of the run the restart queued again under its id. Before,
    the first refused poll ended the wait with "following run ... failed"."""
    from workbench.notebook.client import AsyncClient

    data_dir = tmp_path / "data"
    srv = LocalServer(data_dir, args=server_args()).start()
    port = srv.port
    seconds = 600  # MP4 encoding of 10 min takes a few seconds: time enough to kill it
    pcm = (np.random.default_rng(2).standard_normal(16000 * seconds) * 2000).astype("<i2").tobytes()
    try:
        async with AsyncClient(srv.url, timeout=120) as client:
            recording = asyncio.ensure_future(client.record(
                (pcm[i:i + (1 << 20)] for i in range(0, len(pcm), 1 << 20)),
                format="mp4", input_format="pcm_s16le"))

            async def renditions() -> Any:
                sessions = (await get_json(f"{srv.url}/api/sessions"))["sessions"]
                runs = sessions[0]["runs"] if sessions else []
                return bool(runs) and runs[0]["status"] == "running" \
                    and runs[0]["stage"] == "renditions"

            assert await wait_until(renditions, timeout=60, every=0.05)
            os.kill(srv.process.pid, signal.SIGKILL)
            srv.process.wait(10)
            await asyncio.sleep(1.0)  # the client meets a server that is not there
            assert not recording.done()
            try:  # the workers see their parent gone; whatever is left of the group goes
                os.killpg(srv.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            srv = LocalServer(data_dir, port=port, args=server_args()).start()
            rec = await asyncio.wait_for(recording, timeout=120)
        assert rec.last("recording_stopped") is not None
        assert rec.result is not None and rec.result["type"] == "processing_complete", rec.messages
        assert rec.result["run_id"] == rec.run_id
        session = await get_json(f"{srv.url}/api/sessions/{rec.session_id}")
        assert session["status"] == "completed" and len(session["runs"]) == 1
        assert wav_data(data_dir / "sessions" / rec.session_id / "audio.wav") == pcm
    finally:
        srv.stop()
    integrity(data_dir)


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


async def _none_alive(pids: set[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() and "Z" != _state(pid) for pid in pids)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


# ---------------------------------------------------------------------- SIGTERM


async def test_sigterm_finalises_open_recordings_and_says_going_away(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = LocalServer(data_dir, args=server_args()).start()
    streams = [Stream(chunk=3200, stop_after=None, rng=random.Random(i)) for i in range(3)]
    tasks = [asyncio.create_task(run_stream(f"{srv.ws_url}/ws/term-{i}", st))
             for i, st in enumerate(streams)]

    async def all_confirmed() -> bool:
        return all(st.confirmed_chunks >= 2 * PROGRESS_EVERY for st in streams)

    assert await wait_until(all_confirmed, timeout=20, every=0.02)
    terminated = time.monotonic()
    code = await asyncio.to_thread(srv.stop)
    await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert code == 0
    for st in streams:
        assert st.close_code == 1001, st.close_code  # GOING_AWAY
        assert st.closed_at is not None and st.closed_at - terminated < 5
    # Finalised by the server itself (not by the next start's recovery).
    store = SessionStore(data_dir)
    try:
        for st in streams:
            session = store.get_session(st.session_id)  # type: ignore[arg-type]
            assert session is not None and session.status == "interrupted"
            assert session.bytes_received == sum(p.bytes for p in session.parts)
            check_kept(data_dir, st, "SIGTERM")
            assert len(wav_data(data_dir / "sessions" / st.session_id / "audio.wav")) \
                == session.bytes_received // 2 * 2  # type: ignore[operator]
    finally:
        store.close()
    log = srv.log_path.read_text()
    assert "Recovered session" not in log
    integrity(data_dir)


async def test_session_left_processing_without_a_run_gets_one(tmp_path: Path) -> None:
    """A crash between `recording_stopped` (status processing) and queueing the run: the run
    is queued at start-up, so the session does not stay `processing` forever."""
    data_dir = tmp_path / "data"
    srv = LocalServer(data_dir, args=server_args()).start()
    pcm = random.Random(7).randbytes(32000)
    sids = []
    for _ in range(2):
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/orphan") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le", "language": "en"})
            sids.append(json.loads((await ws.receive(timeout=10)).data)["session_id"])
            await ws.send_bytes(pcm)
            await ws.send_json({"action": "stop"})
            while json.loads((await ws.receive(timeout=30)).data)["type"] != "processing_complete":
                pass
    srv.stop()
    sid, finished = sids
    store = SessionStore(data_dir)
    db = store._db
    # `sid`: stopped, but the crash came before its run was queued.
    db.execute("DELETE FROM runs WHERE session_id = ?", (sid,))
    db.execute("UPDATE sessions SET status = 'processing' WHERE id = ?", (sid,))
    # `finished`: its run completed, but the crash came before the session was updated.
    db.execute("UPDATE sessions SET status = 'processing', updated_at = "
               "(SELECT finished_at - 1 FROM runs WHERE session_id = ?) WHERE id = ?",
               (finished, finished))
    store.close()

    srv = LocalServer(data_dir, args=server_args()).start()
    try:
        async def completed() -> Any:
            session = await get_json(f"{srv.url}/api/sessions/{sid}")
            return session if session["status"] == "completed" else None

        session = await wait_until(completed, timeout=30)
        assert session, "the orphaned session was not processed"
        assert len(session["runs"]) == 1 and session["runs"][0]["status"] == "completed"
        assert session["runs"][0]["config"]["language"] == "en"  # the session's options
        assert wav_data(data_dir / "sessions" / sid / "audio.wav") == pcm
        other = await get_json(f"{srv.url}/api/sessions/{finished}")
        assert other["status"] == "completed" and len(other["runs"]) == 1  # no second run
    finally:
        srv.stop()


def test_the_last_run_ending_moves_its_session_in_the_same_transaction(tmp_path: Path) -> None:
    """A reader never sees every run of a session finished while the session still says
    `processing` (CI saw that window once): the store ends the run and moves the session in
    one commit, and only when no other run is queued or running."""
    store = SessionStore(tmp_path / "data")
    try:
        sid = store.create_session().id
        for status in ("recording", "processing"):
            store.set_status(sid, status)
        first, second = store.create_run(sid, {}), store.create_run(sid, {})
        assert store.finish_run(first.id, ok=True, summary={"speakers": 2}) is False
        assert store.get_session(sid).status == "processing"  # second is still queued
        assert store.finish_run(second.id, ok=False, error="boom") is True
        session = store.get_session(sid)
        assert (session.status, session.error) == ("failed", "boom")
        runs = {r.id: r for r in session.runs}
        assert runs[first.id].status == "completed" and runs[first.id].summary == {"speakers": 2}
        assert runs[second.id].status == "failed" and runs[second.id].error == "boom"
        assert store.finish_run("nosuchrun", ok=True) is False
    finally:
        store.close()


def processing_run(tmp_path: Path) -> tuple[SessionStore, str, Any, Any, list[dict[str, Any]]]:
    """A store whose one session is processing, its run running, and a job queue (not
    started) on it: store, session id, run, queue, and the list of what it notified."""
    from server.jobs import JobQueue

    said: list[dict[str, Any]] = []

    async def notify(session_id: str, message: dict[str, Any]) -> None:
        said.append(message)

    store = SessionStore(tmp_path / "data")
    sid = store.create_session().id
    for status in ("recording", "processing"):
        store.set_status(sid, status)
    run = store.create_run(sid, {})
    store.update_run(run.id, status="running")
    return store, sid, run, JobQueue(store, notify), said


async def test_a_run_ends_once_whatever_its_worker_sends(tmp_path: Path) -> None:
    """A worker killed just after sending `done` got its run queued again (its death was
    seen before its event); the run then ended twice: two processing_complete, and its
    second worker's outcome written over the first. The second end is ignored."""
    store, sid, run, jobs, said = processing_run(tmp_path)
    try:
        await jobs._on_event(("done", run.id, {"speakers": 2, "word_count": 5}))
        await jobs._on_event(("failed", run.id, "a second worker's outcome"))
        await jobs._on_event(("done", run.id, {"speakers": 3, "word_count": 9}))
        assert [m["type"] for m in said] == ["processing_complete"]
        ended = store.get_run(run.id)
        assert ended is not None and ended.status == "completed"
        assert ended.summary == {"speakers": 2, "word_count": 5}
        # the reaper failed a run whose worker had sent `done` before dying: the result wins
        late = store.create_run(sid, {})
        store.set_status(sid, "processing")
        store.update_run(late.id, status="running")
        await jobs._finish(late.id, ok=False, message="The worker process died while processing")
        assert store.get_session(sid).status == "failed"  # type: ignore[union-attr]
        await jobs._on_event(("done", late.id, {"speakers": 1, "word_count": 2}))
        assert store.get_run(late.id).status == "completed"  # type: ignore[union-attr]
        assert store.get_session(sid).status == "completed"  # type: ignore[union-attr]
    finally:
        store.close()


async def test_a_run_s_end_that_could_not_be_stored_is_stored_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's `done` whose run could not be marked completed (a full disk, a database
    locked by another process) is handled again a second later: the run completes, its
    session too, and clients hear `processing_complete`.  It was only logged: the run
    stayed running (its transcript answered 409) and the session processing (no resume)
    until a restart."""
    store, sid, run, jobs, said = processing_run(tmp_path)
    try:
        finish_run, failures = store.finish_run, []

        def full_disk_once(*args: Any, **kwargs: Any) -> Any:
            if not failures:
                failures.append(1)
                raise OSError(28, "No space left on device")
            return finish_run(*args, **kwargs)

        monkeypatch.setattr(store, "finish_run", full_disk_once)
        await jobs._on_event(("done", run.id, {"speakers": 2, "word_count": 5}))
        assert store.get_run(run.id).status == "running" and said == []  # type: ignore[union-attr]
        again = await asyncio.wait_for(jobs._inbox.get(), 10)  # (what _consume takes)
        assert again == ("done", run.id, {"speakers": 2, "word_count": 5})
        await jobs._on_event(again)
        assert store.get_run(run.id).status == "completed"  # type: ignore[union-attr]
        assert store.get_session(sid).status == "completed"  # type: ignore[union-attr]
        assert [m["type"] for m in said] == ["processing_complete"] and not jobs._end_delay
        # a run given to another worker meanwhile (its first one was reaped): its end comes
        # from that one, the old `done` is not tried again (it freed that worker, and ended
        # the run under it)
        from server.jobs import _Worker

        later = store.create_run(sid, {})
        store.update_run(later.id, status="running")
        failures.clear()
        await jobs._on_event(("done", later.id, {"speakers": 1, "word_count": 1}))
        jobs._workers = [_Worker(None, None, run_id=later.id)]
        await asyncio.sleep(1.5)
        assert jobs._inbox.empty() and not jobs._end_delay
        assert store.get_run(later.id).status == "running"  # type: ignore[union-attr]
    finally:
        store.close()


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from server.part_writer import PartWriter
from server.sessions import Part

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
path = Path(sys.argv[1])
writer = PartWriter(path, Part(0, "pcm_s16le", 16000, 1, 0))
writer.open()
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (100000, hard))  # room for 3 chunks and a bit
refused = []
for n in range(1, 7):
    if n == 6:  # room again
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    try:
        writer.append(bytes([n]) * 32000, sync=True)
    except OSError:
        refused.append(n)
writer.close()
data = path.read_bytes()
print(repr((refused, writer.part.bytes, len(data), [data[i] for i in range(0, len(data), 32000)])))
"""


def test_a_chunk_that_cannot_be_written_adds_nothing(tmp_path: Path) -> None:
    """A full disk (here the file-size limit) cuts a chunk's write short: the part keeps
    the chunks accepted before it and the next one follows them (before: the refused
    chunk's first bytes stayed in the file, and in audio.wav, between them)."""
    import subprocess
    import sys

    repo = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "part-000.raw"), repo],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    refused, counted, size, firsts = eval(out.stdout)  # noqa: S307 - our own print
    assert refused == [4, 5]
    assert counted == size == 4 * 32000
    assert firsts == [1, 2, 3, 6]


def test_a_chunk_whose_fsync_fails_adds_nothing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk written whole whose fsync then fails (an I/O error; a quota met at fsync
    on network storage; here the disk's answer) is refused like one that could not be
    written: before, its bytes stayed in the part, and the resend the refusal invites put
    them there twice. A close whose fsync fails still closes the file."""
    import errno

    from server.part_writer import PartWriter
    from server.sessions import Part

    path = tmp_path / "part-000.raw"
    writer = PartWriter(path, Part(0, "pcm_s16le", 16000, 1, 0))
    writer.open()
    writer.append(b"\x01" * 3200, sync=True)
    fsync, failing = os.fsync, [True]

    def disk(fd: Any) -> None:
        if failing[0]:
            raise OSError(errno.EIO, "Input/output error")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", disk)
    with pytest.raises(OSError):
        writer.append(b"\x02" * 3200, sync=True)
    assert path.stat().st_size == writer.part.bytes == 3200
    failing[0] = False
    writer.append(b"\x02" * 3200, sync=True)  # the resend
    assert path.read_bytes() == b"\x01" * 3200 + b"\x02" * 3200 and writer.part.bytes == 6400
    writer.append(b"\x03" * 320)
    failing[0] = True
    file = writer._file
    with pytest.raises(OSError):
        writer.close()
    assert file is not None and file.closed


FULL_DISK_RECOVERY = """
import resource, signal, sys
sys.path.insert(0, sys.argv[2])
from server.recovery import recover
from server.sessions import SessionStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
store = SessionStore(sys.argv[1])
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (200000, hard))  # room for 6 s of audio
print(repr(recover(store, max_seconds=60.0)))
store.close()
"""


def test_a_recording_not_rebuilt_at_start_up_keeps_no_older_audio(tmp_path: Path) -> None:
    """A resumed recording whose rebuild failed at start-up (a full disk; here the
    file-size limit) kept the audio.wav of its first stop: the next start-up found it
    intact and never rebuilt it, and a run then took it for the whole recording. It is
    removed (no run can take it), and the next start-up rebuilds the recording."""
    import subprocess
    import sys

    from server.finalise import finalise
    from server.recovery import recover
    from workbench.engine.audio import InputFormat

    store = SessionStore(tmp_path)
    session = store.create_session()
    pcm = b"\x01\x00" * 16000
    fmt = InputFormat("pcm_s16le", 16000, 1)
    first = store.add_part(session.id, fmt)
    (store.session_dir(session.id) / first.filename).write_bytes(pcm)
    store.update_part(session.id, first.__class__(first.index, "pcm_s16le", 16000, 1, len(pcm)))
    finalise(store, store.get_session(session.id))  # the first stop: 1 s
    second = store.add_part(session.id, fmt)  # resumed: 10 s more, then the crash
    (store.session_dir(session.id) / second.filename).write_bytes(pcm * 10)
    store.set_status(session.id, "recording")
    store.close()

    repo = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", FULL_DISK_RECOVERY, str(tmp_path), repo],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    store = SessionStore(tmp_path)
    after = store.get_session(session.id)
    assert after is not None and after.status == "interrupted"
    assert after.error and "raw parts are kept" in after.error
    assert not store.audio_path(session.id).exists()  # not the first stop's 1 s
    assert recover(store, max_seconds=60.0) == [session.id]  # the next start-up
    after = store.get_session(session.id)
    assert after is not None and after.duration_seconds == 11.0 and after.error is None
    assert store.audio_path(session.id).read_bytes()[44:] == pcm * 11
    store.close()


def test_a_recording_that_never_decoded_is_not_called_damaged(tmp_path: Path,
                                                              caplog: Any) -> None:
    """A recording whose only part never decoded has no audio.wav; every start-up decoded
    it again and warned that its audio.wav "is damaged and cannot be rebuilt"."""
    from server.recovery import recover
    from workbench.engine.audio import InputFormat

    store = SessionStore(tmp_path)
    session = store.create_session()
    part = store.add_part(session.id, InputFormat(None, 16000, 1))
    (store.session_dir(session.id) / part.filename).write_bytes(b"not audio at all\n" * 20)
    store.set_status(session.id, "recording")
    assert recover(store) == [session.id]  # the crash's start-up: it cannot decode
    after = store.get_session(session.id)
    assert after is not None and after.status == "interrupted" and after.error
    assert all(p.error for p in after.parts)
    caplog.clear()
    with caplog.at_level("WARNING", logger="server"):
        assert recover(store) == []  # the next start-ups
    assert not [r for r in caplog.records if session.id in r.getMessage()]
    store.close()


async def test_a_second_server_on_the_same_data_is_refused(tmp_path: Path) -> None:
    """A second server on a data directory in use took the first one's open recording
    for a crash leftover (marked it interrupted, then let a client resume it while the
    first still wrote). It now exits at start-up naming the first one; the first goes on."""
    import subprocess
    import sys

    from workbench.notebook.local_server import free_port

    data_dir = tmp_path / "data"
    srv = LocalServer(data_dir, args=server_args()).start()
    try:
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(f"{srv.ws_url}/ws/first")
            await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le"})
            sid = json.loads((await ws.receive(timeout=20)).data)["session_id"]
            second = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "server", "--port", str(free_port()),
                                 "--data-dir", str(data_dir), *server_args()],
                capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, second.stderr[-2000:]
            assert (f"Another server (pid {srv.process.pid}) is using the data directory "  # type: ignore[union-attr]
                    f"{data_dir}") in second.stderr
            assert "Serving on" not in second.stdout
            await ws.send_bytes(b"\x01\x00" * 16000)
            await ws.send_json({"action": "stop"})
            while (reply := json.loads((await ws.receive(timeout=20)).data))["type"] != \
                    "recording_stopped":
                assert reply["type"] != "error", reply
            async with s.get(f"{srv.url}/api/sessions/{sid}") as r:
                assert (await r.json())["duration_seconds"] == 1.0
            await ws.close()
    finally:
        srv.stop()
    assert "Recovered session" not in srv.log_path.read_text()


def test_a_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    """A port another program listens on gave a traceback (aiohttp's OSError); now one
    line that says what to do. The same for a --host that is not this machine's."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [("127.0.0.1", [], f"error: cannot listen on 127.0.0.1:{port}: Address already "
                                   "in use: another program (another server?) listens there; "
                                   "pick another --port")]
        nonlocal_bind = Path("/proc/sys/net/ipv4/ip_nonlocal_bind")
        if nonlocal_bind.exists() and nonlocal_bind.read_text().strip() == "0":
            # (where binding foreign addresses is allowed, the server would serve)
            cases.append(("192.0.2.1", ["--insecure"], f"error: cannot listen on 192.0.2.1:"
                                                       f"{port}: Cannot assign requested address"))
        for host, flags, said in cases:
            run = subprocess.run(
                [sys.executable, "-m", "server", "--host", host, "--port", str(port),
                 "--data-dir", str(tmp_path / "data"), *flags, *server_args()],
                capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
            assert run.returncode == 1 and said in run.stderr, run.stderr[-2000:]
            assert "Traceback" not in run.stderr and "Serving on" not in run.stdout


async def test_a_run_ending_during_shutdown_is_saved(tmp_path: Path) -> None:
    """Shutdown gives workers 5 s to end their run, but stopped handling their events
    first: a run that ended in those seconds stayed 'running', its files written, and was
    done again at the next start-up. Here the run encodes the MP4 of 10 s of audio
    and the server is told to stop once the run has begun."""
    data_dir = tmp_path / "data"
    srv = LocalServer(data_dir, args=server_args()).start()
    pcm = (np.sin(np.arange(10 * 16000) / 9) * 8000).astype("<i2").tobytes()
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{srv.ws_url}/ws/long") as ws:
            await ws.send_json({"action": "start", "format": "mp4", "input_format": "pcm_s16le"})
            sid = json.loads((await ws.receive(timeout=20)).data)["session_id"]
            for i in range(0, len(pcm), 64000):
                await ws.send_bytes(pcm[i:i + 64000])
            await ws.send_json({"action": "stop"})
            while json.loads((await ws.receive(timeout=60)).data)["type"] != \
                    "processing_progress":  # (the worker has it)
                pass
            assert await asyncio.to_thread(srv.stop) == 0
    finally:
        srv.kill()
    store = SessionStore(data_dir)
    try:
        session = store.get_session(sid)
        assert session is not None
        assert [(r.status, r.attempts) for r in session.runs] == [("completed", 1)]
        assert session.status == "completed"
        assert (data_dir / "sessions" / sid / "audio.mp4").stat().st_size > 0
    finally:
        store.close()


def _one_part_session(store: SessionStore, pcm: bytes) -> tuple[Any, Any]:
    """A session of one 16 kHz mono PCM part holding `pcm` (as a recording leaves it):
    the session and its part."""
    from workbench.engine.audio import InputFormat

    session = store.create_session()
    part = store.add_part(session.id, InputFormat("pcm_s16le", 16000, 1))
    (store.session_dir(session.id) / part.filename).write_bytes(pcm)
    store.update_part(session.id, part.__class__(part.index, "pcm_s16le", 16000, 1, len(pcm)))
    return session, part


def test_a_part_kept_in_part_is_rebuilt_at_start_up(tmp_path: Path) -> None:
    """A part that decoded only in part carries an error too: start-up took it for one
    that never decoded and left its missing audio.wav missing."""
    from server.recovery import recover
    from workbench.engine.audio import PARTLY_DECODED

    store = SessionStore(tmp_path)
    session, part = _one_part_session(store, b"\x01\x00" * 16000)
    store.set_status(session.id, "recording")
    store.set_status(session.id, "interrupted")
    store.set_part_errors(session.id, {part.index: PARTLY_DECODED + "1 packet(s) left out"})
    assert recover(store) == [session.id]
    assert store.audio_path(session.id).read_bytes()[44:] == b"\x01\x00" * 16000
    store.close()


def test_a_start_up_that_fails_leaves_the_data_directory_free(tmp_path: Path) -> None:
    """The lock is taken first in start-up; a start-up that failed after it (no cleanup
    runs then) kept it, and the next server in this process was refused."""
    from aiohttp import web

    from server.app import create_app
    from server.config import parse_args
    from workbench.notebook.local_server import free_port

    data_dir = tmp_path / "data"

    async def start() -> None:
        app = create_app(parse_args(["--port", str(free_port()), "--data-dir", str(data_dir),
                                     "--pipeline", "renditions"]))
        runner = web.AppRunner(app)
        try:
            await runner.setup()
        finally:
            await runner.cleanup()

    stale = data_dir / "sessions" / "x" / ".audio.wav.tmp"
    (stale / "in").mkdir(parents=True)  # recovery cannot remove it: start-up fails
    with pytest.raises(OSError):
        asyncio.run(start())
    (stale / "in").rmdir()
    stale.rmdir()
    asyncio.run(start())  # not "Another server (pid <this one>) is using the data directory"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_new_files_and_their_names_reach_the_disk(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A file's fsync does not make its name durable: after a power loss (not a process
    crash) a new part file, a renamed audio.wav, its MP4, a transcript or a new run folder
    could be missing, or back to its old content. Each folder that names them is fsynced
    after they are named in it now."""
    from server.part_writer import PartWriter
    from server.sessions import Part
    from workbench.engine.audio import WavWriter, write_wav
    from workbench.engine.rendition import encode_mp4
    from workbench.engine.transcript import Transcript, Turn

    events: list[tuple[str, str]] = []  # ("fsync", what) and ("named", folder), in order
    fsync, replace = os.fsync, os.replace

    def record_fsync(fd: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def record_replace(src: Any, dst: Any, **kw: Any) -> None:
        replace(src, dst, **kw)
        events.append(("named", str(Path(dst).parent)))

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    session = tmp_path / "sessions" / "s1"
    writer = PartWriter(session / "part-000.raw", Part(0, None, 16000, 1, 0))
    try:
        writer.open()
        assert events[-2:] == [("fsync", str(session)), ("fsync", str(session.parent))]
    finally:
        writer.close()

    def after(path: Path, write: Any, *folders: Path) -> None:
        """`write()` makes `path`, fsyncs it, names it, then fsyncs its folder (and
        `folders`, new folders' parents)."""
        events.clear()
        write()
        assert path.exists(), path
        named = max(i for i, e in enumerate(events) if e == ("named", str(path.parent)))
        assert ("fsync", str(path.parent)) in events[named + 1:], events
        assert any(kind == "fsync" and what != str(path.parent) for kind, what in
                   events[:named]), events  # (the file's own fsync first)
        for folder in folders:
            assert ("fsync", str(folder)) in events, (folder, events)

    after(session / "audio.wav", lambda: write_wav(session / "audio.wav", np.zeros(1600, np.int16)))

    def blocks() -> None:
        with WavWriter(session / "audio.wav") as out:
            out.write(np.zeros(1600, np.int16))

    after(session / "audio.wav", blocks)
    after(session / "audio.mp4", lambda: encode_mp4(session / "audio.wav", session / "audio.mp4"))
    run = session / "runs" / "r1"
    transcript = Transcript(language="en", duration=0.1, segments=[], turns=[Turn(0.0, 0.1, "A")])
    after(run / "transcript.json", lambda: transcript.save(run), run.parent, session)


def test_the_removal_of_a_stale_mp4_reaches_the_disk(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop after a resume writes a new audio.wav and removes the MP4 of the older
    audio: before the new audio.wav is named (a crash between the two left the old MP4
    beside the new audio, and a run then kept it for its rendition), and durably (the
    session folder fsynced after the removal: a power loss could bring it back)."""
    from server.finalise import finalise

    store = SessionStore(tmp_path)
    session, _ = _one_part_session(store, b"\x01\x00" * 16000)
    folder = store.session_dir(session.id)
    stale = store.audio_path(session.id, "mp4")
    stale.write_bytes(b"an MP4 of older audio")
    events: list[tuple[str, str]] = []
    fsync, unlink, replace = os.fsync, Path.unlink, os.replace

    def record_fsync(fd: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def record_unlink(path: Path, *args: Any, **kwargs: Any) -> None:
        unlink(path, *args, **kwargs)
        events.append(("removed", str(path)))

    def record_replace(src: Any, dst: Any, **kw: Any) -> None:
        replace(src, dst, **kw)
        events.append(("named", str(dst)))

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(Path, "unlink", record_unlink)
    monkeypatch.setattr(os, "replace", record_replace)
    try:
        assert finalise(store, store.get_session(session.id)) == 1.0  # type: ignore[arg-type]
    finally:
        store.close()
    assert not stale.exists()
    removed = events.index(("removed", str(stale)))
    assert ("fsync", str(folder)) in events[removed + 1:], events
    assert removed < events.index(("named", str(folder / "audio.wav"))), events


def test_an_mp4_encoded_while_stop_decodes_does_not_stay(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A download of the MP4 while a stop decodes encodes the older audio.wav again (no
    MP4 is there): that file is removed once the new audio.wav is in place, or a run would
    keep it for the rendition of the new audio."""
    import server.finalise as finalise_module

    store = SessionStore(tmp_path)
    session, _ = _one_part_session(store, b"\x01\x00" * 16000)
    mp4 = store.audio_path(session.id, "mp4")
    decode = finalise_module.decode_to_wav

    def decode_while_downloaded(*args: Any, **kwargs: Any) -> Any:
        mp4.write_bytes(b"an MP4 of the older audio.wav, encoded meanwhile")
        return decode(*args, **kwargs)

    monkeypatch.setattr(finalise_module, "decode_to_wav", decode_while_downloaded)
    try:
        assert finalise_module.finalise(store, store.get_session(session.id)) == 1.0  # type: ignore[arg-type]
    finally:
        store.close()
    assert not mp4.exists()


def test_a_folder_that_cannot_be_synced_is_not_a_failed_write(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """`sync_folder` on a file system without folder fsync (EINVAL) goes on; a failed
    write-back (EIO) is an error, not a durable name."""
    import errno

    from workbench.engine.durable import sync_folder

    def failing(code: int) -> Any:
        def fsync(fd: int) -> None:
            raise OSError(code, os.strerror(code))
        return fsync

    monkeypatch.setattr(os, "fsync", failing(errno.EINVAL))
    sync_folder(tmp_path)
    monkeypatch.setattr(os, "fsync", failing(errno.EIO))
    with pytest.raises(OSError, match="Input/output error"):
        sync_folder(tmp_path)


DELETE_CUT_SHORT = """
import os, sys
sys.path.insert(0, sys.argv[3])
sys.argv[4] = sys.argv[4].replace("-made-anew", "")
import server.sessions as sessions
from server.sessions import SessionStore

store = SessionStore(sys.argv[1])
if sys.argv[4] == "after-commit":  # dies while the files are being removed
    import shutil
    shutil.rmtree = lambda *a, **k: os._exit(9)
else:  # dies after the folder's rename, before the row's removal commits
    sessions.sync_folder = lambda folder: os._exit(9)
store.delete_session(sys.argv[2])
"""


@pytest.mark.parametrize("moment", ["after-commit", "before-commit", "before-commit-made-anew"])
def test_a_delete_cut_short_is_finished_or_undone_at_start_up(tmp_path: Path, moment: str) -> None:
    """The server dying in the middle of a DELETE (a real process, ended by os._exit at
    that point): after the row's removal committed, start-up removes the files (they stayed
    on disk for good, the API saying 404); before it, the session keeps its files."""
    import subprocess
    import sys

    from server.recovery import recover, unknown_folders

    store = SessionStore(tmp_path)
    session, part = _one_part_session(store, b"\x01\x00" * 1600)
    store.set_status(session.id, "recording")
    store.set_status(session.id, "interrupted")
    folder = store.session_dir(session.id)
    (folder / "runs" / "r0").mkdir(parents=True)  # a completed run's files
    (folder / "runs" / "r0" / "transcript.json").write_text("{}")
    store.close()
    repo = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", DELETE_CUT_SHORT, str(tmp_path), session.id, repo,
                          moment], capture_output=True, text=True, timeout=60)
    assert out.returncode == 9, out.stderr[-2000:]
    if moment.endswith("made-anew"):  # a worker's files written after the rename
        (folder / "runs" / "r1").mkdir(parents=True)
        (folder / "runs" / "r1" / "transcript.json").write_text("{}")

    store = SessionStore(tmp_path)
    try:
        recover(store)
        if moment == "after-commit":
            assert store.get_session(session.id) is None
            assert not folder.exists()
        else:
            assert store.get_session(session.id) is not None
            assert (folder / part.filename).read_bytes() == b"\x01\x00" * 1600
            assert (folder / "runs" / "r1" / "transcript.json").exists() == moment.endswith("anew")
            assert (folder / "runs" / "r0" / "transcript.json").exists()  # (lost when merged)
        assert sorted(p.name for p in store.sessions_dir.iterdir()) == (
            [] if moment == "after-commit" else [session.id])
        assert unknown_folders(store) == []
    finally:
        store.close()


def test_folders_of_no_session_are_left_alone_and_named(tmp_path: Path, caplog: Any) -> None:
    """A session folder without a row (a database lost or replaced) is never removed on a
    guess: start-up names it in the log."""
    from server.recovery import recover

    store = SessionStore(tmp_path)
    (store.sessions_dir / "orphan-1").mkdir()
    (store.sessions_dir / "orphan-1" / "part-000.raw").write_bytes(b"\x00\x01")
    with caplog.at_level("WARNING", logger="server.recovery"):
        recover(store)
    store.close()
    assert (tmp_path / "sessions" / "orphan-1" / "part-000.raw").exists()
    assert "belong to no session (left alone): orphan-1" in caplog.text


async def started_with_a_second(ws: aiohttp.ClientWebSocketResponse) -> str:
    """A recording started on `ws` (WAV of PCM) with one second of audio sent: its session."""
    from .test_recording_functional import recv

    await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le"})
    sid = (await recv(ws))["session_id"]
    await ws.send_bytes(b"\x01\x00" * 16000)
    return str(sid)


class DiskFull:
    """The store's writes of `names` fail as SQLite's do on a full disk while `full` is
    set (a collaborator's failure: the subject is how the connection copes)."""

    def __init__(self, store: SessionStore, monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
        self.full = False
        self.failed: list[str] = []
        for name in names:
            real = getattr(store, name)

            def failing(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                if self.full:
                    self.failed.append(_name)
                    raise sqlite3.OperationalError("database or disk is full")
                return _real(*args, **kw)
            monkeypatch.setattr(store, name, failing)


async def test_a_confirmed_chunk_is_not_an_error_when_its_count_cannot_be_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The byte count stored after a `progress` failing (a full disk) is no error of the
    chunk, which is on disk and was confirmed (it got a 5000 too, inviting a resend that
    would have doubled it); the recording goes on."""
    from .test_processing_functional import InProcessServer
    from .test_recording_functional import recv, recv_until

    async with InProcessServer(tmp_path) as srv, aiohttp.ClientSession() as s:
        disk = DiskFull(srv.state.store, monkeypatch, "update_part")
        every = srv.state.config.progress_every
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le"})
            sid = (await recv(ws))["session_id"]
            disk.full = True
            for _ in range(every + 1):
                await ws.send_bytes(b"\x01\x00" * 160)
            progress, before = await recv_until(ws, "progress")
            assert progress["chunks_received"] == every and before == []
            for _ in range(100):  # (the count is stored after the reply)
                if disk.failed:
                    break
                await asyncio.sleep(0.02)
            disk.full = False
            await ws.send_json({"action": "stop"})
            stopped, before = await recv_until(ws, "recording_stopped")
        assert disk.failed == ["update_part"]
        assert [m for m in before if m["type"] == "error"] == []
        assert stopped["chunks_received"] == every + 1
        wav = srv.state.store.audio_path(sid).read_bytes()
        assert len(wav) - 44 == (every + 1) * 320


async def test_a_finish_that_failed_is_interrupted_once_the_disk_has_room(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stop` on a full disk: the session was left `recording` with no connection until a
    restart (every resume, delete and run refused). It becomes `interrupted` as soon as
    the store can write again, and can be resumed."""
    from .test_processing_functional import InProcessServer
    from .test_recording_functional import recv

    async with InProcessServer(tmp_path) as srv, aiohttp.ClientSession() as s:
        store = srv.state.store
        disk = DiskFull(store, monkeypatch, "update_part", "set_status")
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            sid = await started_with_a_second(ws)
            disk.full = True
            await ws.send_json({"action": "stop"})
            reply = await recv(ws)
            assert reply["type"] == "error" and reply["code"] == 5000, reply
        await asyncio.sleep(1.5)
        assert store.get_session(sid).status == "recording"  # type: ignore[union-attr]
        disk.full = False
        for _ in range(40):
            if store.get_session(sid).status == "interrupted":  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.25)
        session = store.get_session(sid)
        assert session is not None and session.status == "interrupted"
        # the counts the failed stop could not store come from the part's file (a resume
        # counted --max-total-bytes from 0 and let the recording grow past it)
        assert session.bytes_received == 32000 and session.parts[0].bytes == 32000
        async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws:
            await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le"})
            started = await recv(ws)
            assert started["type"] == "recording_started" and started["resumed"], started


async def test_a_run_that_could_not_be_queued_at_stop_is_queued_once_the_disk_has_room(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stop` saved the recording (`recording_stopped`, the session `processing`), then
    queueing its run failed (a full disk): the session stayed `processing` with no run
    until a restart, every resume refused (4011). The run is queued as soon as the store
    can write again, and the session's sockets hear `processing_started`."""
    from .test_processing_functional import InProcessServer
    from .test_recording_functional import recv, recv_until

    async with InProcessServer(tmp_path) as srv, aiohttp.ClientSession() as s:
        store = srv.state.store
        disk = DiskFull(store, monkeypatch, "create_run")
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            sid = await started_with_a_second(ws)
            disk.full = True
            await ws.send_json({"action": "stop"})
            await recv_until(ws, "recording_stopped")
            reply = await recv(ws)
            assert reply["type"] == "error" and reply["code"] == 5000, reply
            await queued_once_the_disk_has_room(ws, store, sid, disk)
        assert disk.failed[0] == "create_run"


async def queued_once_the_disk_has_room(ws: aiohttp.ClientWebSocketResponse,
                                        store: SessionStore, sid: str, disk: DiskFull) -> None:
    """A stop left `sid` processing with no run while the disk was full (the retry's
    first attempt, after 1 s, failed too); once it has room, the run is queued, the socket
    hears it, and it completes."""
    from .test_recording_functional import recv_until

    await asyncio.sleep(1.5)
    disk.full = False  # (the next attempt comes 2 s after the first)
    session = store.get_session(sid)
    assert session is not None and session.status == "processing" and not session.runs
    started, _ = await recv_until(ws, "processing_started", timeout=15)
    ended, _ = await recv_until(ws, "processing_complete", timeout=60)
    session = store.get_session(sid)
    assert session is not None and [r.id for r in session.runs] == [started["run_id"]]
    assert ended["run_id"] == started["run_id"] and session.status == "completed"


async def test_a_stop_that_fails_once_the_session_is_processing_still_queues_its_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills just after `stop` stored the session `processing`, before its run
    was queued (here the store's next read fails, then the run's creation): the
    connection tried to mark it interrupted, which a processing session refuses, so the
    client heard only a 5000 and the session stayed `processing` with no run and no
    resume until a restart. The stop is said, and the run queued once the store works."""
    from .test_processing_functional import InProcessServer
    from .test_recording_functional import recv

    async with InProcessServer(tmp_path) as srv, aiohttp.ClientSession() as s:
        store = srv.state.store
        disk = DiskFull(store, monkeypatch, "get_session", "create_run")
        set_status = store.set_status

        def then_full(session_id: str, status: str, **fields: Any) -> None:
            set_status(session_id, status, **fields)
            disk.full = disk.full or status == "processing"

        monkeypatch.setattr(store, "set_status", then_full)
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            sid = await started_with_a_second(ws)
            await ws.send_json({"action": "stop"})
            stopped, reply = await recv(ws), await recv(ws)
            assert stopped["type"] == "recording_stopped", stopped
            assert reply["type"] == "error" and reply["code"] == 5000, reply
            await queued_once_the_disk_has_room(ws, store, sid, disk)
        assert disk.failed[:2] == ["get_session", "create_run"]


async def test_an_idle_recording_whose_finish_fails_still_closes_its_socket(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle timeout ends a recording on a full disk: the finish's failure escaped the
    handler before the socket was closed, so the client saw the connection drop (1006)
    instead of the 1008 "Idle timeout" close; the session becomes interrupted later."""
    from .test_processing_functional import InProcessServer
    from .test_recording_functional import recv

    async with InProcessServer(tmp_path, "--idle-timeout", "1") as srv, \
            aiohttp.ClientSession() as s:
        store = srv.state.store
        disk = DiskFull(store, monkeypatch, "update_part", "set_status")
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            sid = await started_with_a_second(ws)
            disk.full = True
            told = await recv(ws, timeout=10)
            assert told["type"] == "error" and told["code"] == 4014, told
            closing = await ws.receive(timeout=10)
            assert closing.type == aiohttp.WSMsgType.CLOSE, closing
            assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION, ws.close_code
        assert "update_part" in disk.failed
        disk.full = False
        for _ in range(40):
            if store.get_session(sid).status == "interrupted":  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.25)
        assert store.get_session(sid).status == "interrupted"  # type: ignore[union-attr]


async def test_a_resume_while_the_last_connection_is_saved_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `start` on a session whose connection dropped and whose audio is still being saved
    (a long WebM takes seconds) was told "already recording on another connection" though
    no other connection existed."""
    import server.connection as connection

    from .test_processing_functional import InProcessServer
    from .test_recording_functional import recv

    release = asyncio.Event()
    real = connection.finalise_async

    async def slow(*args: Any, **kw: Any) -> Any:  # the decode, held until released
        await release.wait()
        return await real(*args, **kw)

    monkeypatch.setattr(connection, "finalise_async", slow)
    async with InProcessServer(tmp_path) as srv, aiohttp.ClientSession() as s:
        try:
            async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
                await ws.send_json({"action": "start", "format": "wav",
                                    "input_format": "pcm_s16le"})
                sid = (await recv(ws))["session_id"]
                await ws.send_bytes(b"\x01\x00" * 16000)
            for _ in range(40):  # the drop seen: the recording is being saved
                if getattr(srv.state.recording.get(sid), "saving", False):
                    break
                await asyncio.sleep(0.05)
            async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws:
                await ws.send_json({"action": "start", "format": "wav",
                                    "input_format": "pcm_s16le"})
                refused = await recv(ws)
        finally:
            release.set()  # (a failure must not hold the server's shutdown)
        assert refused["code"] == 4011
        assert refused["message"] == "Session is being saved after stop; try again in a moment"
        for _ in range(40):
            if srv.state.store.get_session(sid).status == "interrupted":  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.1)
        async with s.ws_connect(f"{srv.ws_url}/ws/{sid}") as ws:
            await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le"})
            assert (await recv(ws))["type"] == "recording_started"


@pytest.mark.parametrize("damage", ["overwritten", "not-a-database"])
def test_a_damaged_session_database_is_named_at_start_up(tmp_path: Path, damage: str) -> None:
    """`python -m server` on a damaged workbench.sqlite3 says which file and what to do
    (it ended in a raw traceback)."""
    import subprocess
    import sys

    store = SessionStore(tmp_path)
    for _ in range(40):
        store.create_session(options={"note": "x" * 2000})
    store.close()
    db = tmp_path / "workbench.sqlite3"
    data = bytearray(db.read_bytes())
    if damage == "overwritten":
        data[4096:12288] = b"\xa5" * 8192  # pages of the tables
    else:
        data[:100] = b"\x00" * 100  # the header
    db.write_bytes(bytes(data))
    repo = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-m", "server", "--port", "0", "--data-dir", str(tmp_path),
                          "--pipeline", "renditions"], capture_output=True, text=True, timeout=120,
                         cwd=repo)
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: the session database {db} is damaged"), out.stderr[-2000:]
    assert "sqlite3 recovered.sqlite3" in out.stderr and "Traceback" not in out.stderr


def test_a_delete_that_fails_after_the_rename_keeps_the_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's rename synced, then the delete fails (here the folder's fsync: EIO; or
    a full disk at COMMIT): the row is rolled back, and its files were left under
    `.deleted-<id>` (audio 404 until a restart)."""
    import errno

    import server.sessions as sessions

    store = SessionStore(tmp_path)
    try:
        session, part = _one_part_session(store, b"\x01\x00" * 1600)

        def eio(folder: Any) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(sessions, "sync_folder", eio)
        with pytest.raises(OSError):
            store.delete_session(session.id)
        assert store.get_session(session.id) is not None
        assert (store.session_dir(session.id) / part.filename).read_bytes() == b"\x01\x00" * 1600
        assert [p.name for p in store.sessions_dir.iterdir()] == [session.id]
    finally:
        store.close()


def test_a_write_refused_by_another_process_s_lock_lets_the_store_go_on(tmp_path: Path) -> None:
    """Another process holds the database's write lock (a sqlite3 shell, a backup) longer
    than SQLite waits: a write fails with "database is locked", and the store still serves
    every other thread once the lock is let go.  The failed BEGIN kept the store's own
    lock: every later call of any other thread (REST, chunk counts, stop) hung for ever."""
    import sqlite3
    import threading

    store = SessionStore(tmp_path)
    try:
        sid = store.create_session().id
        store._db.execute("PRAGMA busy_timeout = 200")  # (SQLite waits 5 s by default)
        holder = sqlite3.connect(tmp_path / "workbench.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        failed: list[BaseException] = []

        def write() -> None:
            try:
                store.set_status(sid, "recording")
            except BaseException as exc:  # noqa: BLE001 - looked at below
                failed.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(30)
        holder.execute("ROLLBACK")
        holder.close()
        assert len(failed) == 1 and "locked" in str(failed[0]), failed
        seen: list[Any] = []
        reader = threading.Thread(target=lambda: seen.append(store.set_status(sid, "recording")))
        reader.daemon = True  # (it hung)
        reader.start()
        reader.join(10)
        assert seen, "the store hangs after a write refused by another process's lock"
        assert store.get_session(sid).status == "recording"  # type: ignore[union-attr]
    finally:
        if store._lock.acquire(timeout=1):  # (held by the failed write's thread: close hung)
            store._lock.release()
            store.close()


def test_a_locked_session_database_is_not_called_damaged(tmp_path: Path) -> None:
    """A healthy store locked by another process (a sqlite3 shell, a backup) was reported
    damaged, with advice to replace it by a .recover output: it is the lock's error now."""
    import sqlite3

    from server.sessions import StoreDamaged

    SessionStore(tmp_path).close()
    holder = sqlite3.connect(tmp_path / "workbench.sqlite3", isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError, match="locked") as caught:
            SessionStore(tmp_path)
        assert not isinstance(caught.value, StoreDamaged)
    finally:
        holder.close()
    SessionStore(tmp_path).close()  # intact once let go


def test_result_files_a_killed_worker_left_half_written_are_removed_at_start_up(
        tmp_path: Path) -> None:
    """A worker killed while it wrote a run's results (`workbench.engine.formats.save`:
    a temporary file, then a rename) left the temporary file for good: start-up removed
    only those of the audio. The results written whole stay."""
    import tempfile

    from server.recovery import recover
    from server.live_worker import SPEAKERS_FILE

    store = SessionStore(tmp_path / "data")
    try:
        sid = store.create_session().id
        run_dir = store.run_dir(sid, store.create_run(sid, {}).id)
        run_dir.mkdir(parents=True)
        (run_dir / "transcript.json").write_text('{"segments": []}')
        left = []
        for name in ("transcript.srt", "transcript.json", SPEAKERS_FILE):
            fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{name}.")  # (as `save` names it)
            os.write(fd, b"1\n00:00:00,000 --> 00:0")
            os.close(fd)
            left.append(Path(tmp))
        recover(store)
        assert [path.name for path in left if path.exists()] == []
        assert sorted(p.name for p in run_dir.iterdir()) == ["transcript.json"]
        assert (run_dir / "transcript.json").read_text() == '{"segments": []}'
    finally:
        store.close()
