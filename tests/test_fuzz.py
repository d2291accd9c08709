"""Property-based tests: random and mutated input must only ever get clean errors.

* the audio decoding path (``workbench.engine.audio``) on random bytes and on mutated real
  WAV/WebM/Ogg/MP4/MP3/FLAC files: a result or :class:`AudioDecodeError`, nothing else,
  never a hang (each decode runs in a worker process under a time limit);
* the message parser (``server.protocol``) in process, and ``Connection.on_text`` through
  a live server;
* a stateful model (hypothesis ``RuleBasedStateMachine``) of random message sequences
  against one real server: it stays healthy, every accepted byte is on disk, and sessions
  only move along the allowed transitions.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import multiprocessing
import struct
import tempfile
import time
from typing import Any, Iterator, Optional

import aiohttp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from server.protocol import ErrorCode, ProtocolError, decode_chunk, parse_start
from server.finalise import wav_intact
from server.sessions import SESSION_STATES, TRANSITIONS
from workbench.engine.audio import (
    AudioDecodeError,
    InputFormat,
    detect_container,
    parse_wav_header,
    write_wav,
)
from workbench.notebook.local_server import LocalServer

from .conftest import espeak, ffmpeg

DECODE_TIMEOUT = 20.0  # seconds per decode before it counts as a hang
KNOWN_TYPES = {"recording_started", "progress", "recording_stopped", "processing_started",
               "processing_progress", "processing_complete", "processing_failed", "error"}
KNOWN_CODES = {int(c) for c in ErrorCode}


# ---------------------------------------------------------------------- audio decoding


def decode_in_worker(data: bytes, container: Optional[str]) -> tuple[str, int]:
    """Runs in the worker process: decode ``data`` as a file; ('ok', samples) or ('error', 0)."""
    from workbench.engine.audio import decode_file

    with tempfile.NamedTemporaryFile(suffix=".raw") as f:
        f.write(data)
        f.flush()
        try:
            samples = decode_file(f.name, InputFormat(container) if container else None)
        except AudioDecodeError as exc:
            assert str(exc) and "Traceback" not in str(exc)
            return "error", 0
    assert isinstance(samples, np.ndarray) and samples.dtype == np.float32 and samples.ndim == 1
    return "ok", len(samples)


@pytest.fixture(scope="module")
def decoder() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """One worker process for decodes (a crash or a hang in FFmpeg cannot take pytest down)."""
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    yield pool
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:  # a worker stuck in a decode would hold up a clean shutdown
        proc.kill()


def decode(pool: concurrent.futures.ProcessPoolExecutor, data: bytes,
           container: Optional[str]) -> tuple[str, int]:
    future = pool.submit(decode_in_worker, data, container)
    try:
        return future.result(timeout=DECODE_TIMEOUT)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"decoding {len(data)} bytes as {container} hung (> {DECODE_TIMEOUT} s)")


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A short espeak-ng utterance in every container a recording may use."""
    d = tmp_path_factory.mktemp("fuzz-audio")
    raw = espeak("Hello there, one two three.", d / "espeak.wav")
    out = {
        "wav": ffmpeg(raw, d / "a.wav", "-ar", "16000", "-c:a", "pcm_s16le"),
        "webm": ffmpeg(raw, d / "a.webm", "-c:a", "libopus", "-b:a", "32k"),
        "ogg": ffmpeg(raw, d / "a.ogg", "-c:a", "libopus", "-b:a", "32k"),
        "mp4": ffmpeg(raw, d / "a.m4a", "-c:a", "aac", "-b:a", "64k"),
        "mp3": ffmpeg(raw, d / "a.mp3", "-ar", "16000"),
        "flac": ffmpeg(raw, d / "a.flac", "-ar", "16000"),
    }
    return {name: path.read_bytes() for name, path in out.items()}


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few random edits, biased towards the header where parsers branch."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        head = draw(st.booleans())
        limit = min(len(data), 512) if head else len(data)
        pos = draw(st.integers(0, max(0, limit - 1)))
        op = draw(st.sampled_from(["flip", "byte", "int32", "truncate", "insert", "delete",
                                   "duplicate"]))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "int32":
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0xFFFF,
                                          len(data), len(data) * 1000]))
            data[pos:pos + 4] = value.to_bytes(4, draw(st.sampled_from(["little", "big"])))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 256))]
        elif op == "duplicate":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 2048))]
    return bytes(data)


FUZZ = settings(max_examples=60, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("container", ["wav", "webm", "ogg", "mp4", "mp3", "flac"])
@pytest.mark.parametrize("declared", [False, True], ids=["detected", "declared"])
def test_decode_mutated_real_files(decoder: Any, real_files: dict[str, bytes], container: str,
                                   declared: bool) -> None:
    assert decode(decoder, real_files[container], container if declared else None)[0] == "ok"

    @FUZZ
    @given(data=mutations(real_files[container]))
    def check(data: bytes) -> None:
        decode(decoder, data, container if declared else None)

    check()


@FUZZ
@given(data=st.binary(max_size=4096),
       container=st.sampled_from([None, "wav", "pcm_s16le", "webm", "ogg", "mp4", "mp3", "flac"]),
       magic=st.sampled_from([b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"\x1a\x45\xdf\xa3", b"OggS",
                              b"\x00\x00\x00\x18ftypmp42", b"ID3\x03", b"fLaC", b"\xff\xfb"]))
def test_decode_random_bytes(decoder: Any, data: bytes, container: Optional[str],
                             magic: bytes) -> None:
    decode(decoder, magic + data, container)


@settings(max_examples=300, deadline=None)
@given(head=st.one_of(st.binary(max_size=256),
                      st.binary(max_size=200).map(lambda b: b"RIFF\x00\x00\x00\x00WAVE" + b)))
def test_header_parsers_on_random_bytes(head: bytes) -> None:
    assert detect_container(head) in (None, "wav", "webm", "ogg", "mp4", "flac", "mp3")
    try:
        header = parse_wav_header(head)
    except AudioDecodeError:
        return
    if header is not None:
        assert header.channels >= 1 and header.sample_rate >= 1000
        assert 12 < header.data_offset <= len(head) + 8


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=256))
def test_wav_intact_on_random_files(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    # Random bytes after "RIFF" are never a complete canonical WAV (that would need "WAVE",
    # a PCM "fmt " chunk and a "data" chunk whose size matches the file to the byte).
    path = tmp_path_factory.getbasetemp() / "intact.wav"
    path.write_bytes(b"RIFF" + data)
    assert wav_intact(path) is False


@settings(max_examples=100, deadline=None)
@given(samples=st.lists(st.integers(-32768, 32767), max_size=400),
       cut=st.integers(1, 500), extra=st.binary(min_size=1, max_size=64),
       field=st.sampled_from([4, 40]), delta=st.integers(1, 1000))
def test_wav_intact_tells_complete_files_from_torn_ones(
        tmp_path_factory: pytest.TempPathFactory, samples: list[int], cut: int, extra: bytes,
        field: int, delta: int) -> None:
    """A complete canonical WAV is intact; cut short, grown, or with a wrong size field it is not."""
    path = tmp_path_factory.getbasetemp() / "canonical.wav"
    write_wav(path, np.array(samples, dtype=np.int16))
    whole = path.read_bytes()
    assert len(whole) == 44 + 2 * len(samples)
    assert wav_intact(path) is True
    path.write_bytes(whole[: max(len(whole) - cut, 0)])  # a torn write
    assert wav_intact(path) is False
    path.write_bytes(whole + extra)  # bytes past the declared data
    assert wav_intact(path) is False
    # The RIFF size (offset 4) or the data size (offset 40) disagreeing with the file.
    (size,) = struct.unpack("<I", whole[field : field + 4])
    path.write_bytes(whole[:field] + struct.pack("<I", (size + delta) % 2**32) + whole[field + 4 :])
    assert wav_intact(path) is False


# ---------------------------------------------------------------------- message parser

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10),
                                                                       children, max_size=4),
    max_leaves=12)
START_FIELDS = ["format", "input_format", "sample_rate", "channels", "live", "language",
                "num_speakers", "min_speakers", "max_speakers", "asr_model",
                "clustering_threshold", "vad_filter", "unknown"]


@settings(max_examples=400, deadline=None)
@given(msg=st.dictionaries(st.sampled_from(START_FIELDS) | st.text(max_size=20),
                           JSON | st.sampled_from(["wav", "mp4", "webm", "pcm", 16000, 2]),
                           max_size=8))
def test_parse_start_only_raises_protocol_errors(msg: dict[str, Any]) -> None:
    try:
        req = parse_start({"action": "start", **msg})
    except ProtocolError as exc:
        assert exc.code in KNOWN_CODES and exc.message and len(exc.message) < 200
        return
    assert req.format in ("wav", "mp4", None)  # None: not given (the session's, or WAV)
    assert 4000 <= req.input.sample_rate <= 192000 and 1 <= req.input.channels <= 8
    assert all(len(name) <= 40 for name in req.ignored)


@settings(max_examples=300, deadline=None)
@given(data=JSON | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()))
def test_decode_chunk_only_raises_protocol_errors(data: Any) -> None:
    try:
        out = decode_chunk(data)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.INVALID_ENCODING
        return
    assert isinstance(out, bytes) and base64.b64encode(out).decode() == data


class SyncWS:
    """An aiohttp WebSocket driven synchronously (hypothesis tests are synchronous)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str) -> None:
        self.loop = loop
        self.session: Optional[aiohttp.ClientSession] = None
        self.ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self.url = url
        self.run(self._connect())

    async def _connect(self) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def send_str(self, text: str) -> None:
        self.run(self.ws.send_str(text))  # type: ignore[union-attr]

    def send_bytes(self, data: bytes) -> None:
        self.run(self.ws.send_bytes(data))  # type: ignore[union-attr]

    def roundtrip(self) -> list[dict[str, Any]]:
        """Every message the server sent in answer to what came before a ``nop``."""
        async def go() -> list[dict[str, Any]]:
            assert self.ws is not None
            await self.ws.send_json({"action": "nop"})
            seen = []
            while True:
                msg = await self.ws.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
                m = json.loads(msg.data)
                assert m.get("type") in KNOWN_TYPES, m
                if m.get("code") == ErrorCode.UNKNOWN_ACTION:
                    return seen
                seen.append(m)

        return self.run(go())

    def close(self) -> None:
        async def go() -> None:
            if self.ws is not None:
                await self.ws.close()
            if self.session is not None:
                await self.session.close()

        self.run(go())


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    srv = LocalServer(tmp_path_factory.mktemp("fuzz-data"),
                      args=["--pipeline", "renditions", "--progress-every", "3"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def health(loop: asyncio.AbstractEventLoop, srv: LocalServer) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as s, s.get(f"{srv.url}/api/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"

    loop.run_until_complete(go())


def test_on_text_through_a_live_server(fuzz_server: LocalServer,
                                       loop: asyncio.AbstractEventLoop) -> None:
    """Random text frames on one connection: every reply is a known message, the server lives."""
    ws = SyncWS(loop, f"{fuzz_server.ws_url}/ws/fuzz-text")
    texts = (st.text(max_size=200)
             | JSON.map(json.dumps)
             | st.fixed_dictionaries(
                 {"action": st.sampled_from(["start", "audio_chunk", "stop", "nop", ""])},
                 optional={k: JSON for k in ["data", *START_FIELDS]}).map(json.dumps))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(text=texts)
    def check(text: str) -> None:
        ws.send_str(text)
        for m in ws.roundtrip():
            if m["type"] == "error":
                assert m["code"] in KNOWN_CODES and m["code"] != ErrorCode.INTERNAL, m

    try:
        check()
    finally:
        ws.close()
    health(loop, fuzz_server)


# ---------------------------------------------------------------------- stateful model


def reachable(a: str, b: str) -> bool:
    """Can a session observed in state ``a`` be seen next in ``b`` (via allowed transitions)?"""
    seen, frontier = {a}, [a]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return b in seen


class RecordingProtocol(RuleBasedStateMachine):
    """Random sequences of protocol actions against one real server, checked against a model."""

    srv: LocalServer
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.ws: Optional[SyncWS] = None
        self.sid: Optional[str] = None
        self.recording = False
        self.accepted: dict[str, list[bytes]] = {}
        self.status: dict[str, str] = {}

    # ------------------------------------------------------------------ helpers
    def get_status(self, sid: str) -> str:
        async def go() -> str:
            async with aiohttp.ClientSession() as s, s.get(f"{self.srv.url}/api/sessions/{sid}") as r:
                return (await r.json())["status"]

        return self.loop.run_until_complete(go())

    def observe(self, expect: Optional[tuple[str, ...]] = None) -> None:
        """Read the session's state; it must follow from the last one and match ``expect``."""
        if self.sid is None:
            return
        status = self.get_status(self.sid)
        assert status in SESSION_STATES
        before = self.status.get(self.sid)
        if before is not None:
            assert reachable(before, status), f"{before} -> {status}"
        if expect is not None:
            assert status in expect, (status, expect)
        self.status[self.sid] = status

    def connect(self, path: str) -> None:
        self.ws = SyncWS(self.loop, f"{self.srv.ws_url}/ws/{path}")

    @initialize(record=st.booleans())
    def open_connection(self, record: bool) -> None:
        self.connect("new")
        if record:
            self.start(16000, 1, True)

    # ------------------------------------------------------------------ rules
    @precondition(lambda self: not self.recording)
    @rule(rate=st.sampled_from([8000, 16000, 48000]), channels=st.integers(1, 2),
          declare=st.booleans())
    def start(self, rate: int, channels: int, declare: bool) -> None:
        assert self.ws is not None
        msg: dict[str, Any] = {"action": "start", "format": "wav"}
        if declare:
            msg.update(input_format="pcm_s16le", sample_rate=rate, channels=channels)
        self.ws.send_str(json.dumps(msg))
        replies = self.ws.roundtrip()
        errors = [m for m in replies if m["type"] == "error"]
        started = [m for m in replies if m["type"] == "recording_started"]
        if started:
            assert not errors
            sid = started[0]["session_id"]
            if self.sid is not None:
                assert sid == self.sid  # a connection bound to a session records into it
            self.sid = sid
            self.accepted.setdefault(sid, [])
            self.recording = True
            self.observe(("recording",))
        else:
            # Only a session still processing its previous run may refuse.
            assert [e["code"] for e in errors] == [ErrorCode.SESSION_BUSY], replies
            self.observe(("processing", "completed", "failed"))

    @precondition(lambda self: self.recording)
    @rule()
    def start_twice(self) -> None:
        assert self.ws is not None
        self.ws.send_str('{"action": "start", "input_format": "pcm_s16le"}')
        errors = [m for m in self.ws.roundtrip() if m["type"] == "error"]
        assert [e["code"] for e in errors] == [ErrorCode.ALREADY_RECORDING]

    @rule(chunks=st.lists(st.tuples(st.binary(max_size=3000), st.booleans()), min_size=1,
                          max_size=6))
    def send_chunks(self, chunks: list[tuple[bytes, bool]]) -> None:
        """A few chunks, each as a binary frame or as base64 JSON."""
        assert self.ws is not None
        expected = []
        for data, binary in chunks:
            if binary:
                self.ws.send_bytes(data)
            else:
                self.ws.send_str(json.dumps({"action": "audio_chunk",
                                             "data": base64.b64encode(data).decode()}))
            if not self.recording:
                expected.append(ErrorCode.NOT_STARTED)
            elif not data and not binary:
                expected.append(ErrorCode.INVALID_ENCODING)  # empty base64 is not a chunk
            elif data:
                self.accepted[self.sid].append(data)  # type: ignore[index]
        errors = [m for m in self.ws.roundtrip() if m["type"] == "error"]
        assert [e["code"] for e in errors] == expected

    @rule()
    def stop(self) -> None:
        assert self.ws is not None
        self.ws.send_str('{"action": "stop"}')
        replies = self.ws.roundtrip()
        if not self.recording:
            assert [m["code"] for m in replies if m["type"] == "error"] == [ErrorCode.NOT_STARTED]
            return
        own = [m for m in replies if not m["type"].startswith("processing_")
               or m["type"] == "processing_started"]
        assert own[0]["type"] == "recording_stopped", replies
        self.recording = False
        self.observe(("processing", "completed", "failed"))
        # Wait for the run: whether a later `start` is refused as busy must not depend on
        # timing (hypothesis replays each sequence and needs the same outcome).
        deadline = time.monotonic() + 30
        while self.get_status(self.sid) == "processing" and time.monotonic() < deadline:  # type: ignore[arg-type]
            time.sleep(0.02)
        self.observe(("completed", "failed"))

    @rule(text=st.text(max_size=100) | JSON.filter(lambda v: not isinstance(v, dict)).map(json.dumps))
    def garbage(self, text: str) -> None:
        assume(not text.lstrip().startswith("{"))  # no accidental valid action
        assert self.ws is not None
        self.ws.send_str(text)
        errors = [m for m in self.ws.roundtrip() if m["type"] == "error"]
        assert [e["code"] for e in errors] in ([ErrorCode.INVALID_MESSAGE],), errors

    @rule(same_session=st.booleans())
    def reconnect(self, same_session: bool) -> None:
        assert self.ws is not None
        self.ws.close()
        if self.recording:
            deadline = time.monotonic() + 10
            while self.get_status(self.sid) == "recording" and time.monotonic() < deadline:  # type: ignore[arg-type]
                time.sleep(0.02)
            self.recording = False
            self.observe(("interrupted",))
        if same_session and self.sid is not None:
            self.connect(self.sid)
        else:
            self.sid = None
            self.connect("new")

    # ------------------------------------------------------------------ invariants
    @invariant()
    def server_is_healthy(self) -> None:
        health(self.loop, self.srv)

    @invariant()
    def accepted_bytes_are_on_disk(self) -> None:
        for sid, chunks in self.accepted.items():
            directory = self.srv.data_dir / "sessions" / sid
            raw = b"".join(p.read_bytes() for p in sorted(directory.glob("part-*.raw")))
            assert raw == b"".join(chunks), sid

    def teardown(self) -> None:
        if self.ws is not None:
            self.ws.close()


def test_protocol_state_machine(fuzz_server: LocalServer,
                                loop: asyncio.AbstractEventLoop) -> None:
    RecordingProtocol.srv = fuzz_server
    RecordingProtocol.loop = loop
    run_state_machine_as_test(RecordingProtocol, settings=settings(
        max_examples=40, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    log = fuzz_server.log_path.read_text()
    assert "Traceback" not in log and "Unexpected state change" not in log
