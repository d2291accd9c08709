"""Who may talk to the server and how much: token, Origin and Host checks, abuse limits,
hostile input and session ids (several over a raw socket, which no client library normalises)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import aiohttp
import pytest

from server.config import ConfigError, ServerConfig, check, is_loopback
from server.limits import LivePacer, chunk_seconds
from server.protocol import ErrorCode
from server.security import origin_allowed
from workbench.notebook.local_server import REPO_ROOT, LocalServer, free_port

from .conftest import session_in
from .test_processing_functional import InProcessServer

TIMEOUT = 20
TOKEN = "s3cret-T0ken-for-tests"
PCM_SECOND = b"\x01\x00" * 16000  # 1 s of 16 kHz mono s16le
START_PCM = {"action": "start", "format": "wav", "input_format": "pcm_s16le"}


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = TIMEOUT) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data}"
    return json.loads(msg.data)


async def sync(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Round trip: every reply to earlier messages, up to the answer to an unknown action."""
    await ws.send_json({"action": "nop"})
    seen = []
    while True:
        m = await recv(ws)
        if m.get("code") == ErrorCode.UNKNOWN_ACTION:
            return seen
        seen.append(m)


async def http(method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, url, **kwargs) as r:
        try:
            body = await r.json(content_type=None)
        except ValueError:
            body = None
        return r.status, body, r.headers


# ---------------------------------------------------------------------- raw sockets


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request exactly as written; returns the status and the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1", "surrogateescape") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


class RawWebSocket:
    """A minimal WebSocket client over a plain socket: the path goes out byte for byte."""

    def __init__(self, port: int, target: bytes, headers: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(b"GET " + target + (
            f" HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade"
            f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        ).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.head = head

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._read(8))
        return b0 & 0x0F, self._read(n)

    def recv_json(self) -> dict[str, Any]:
        opcode, data = self.recv()
        assert opcode == 0x1, (opcode, data)
        return json.loads(data)

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------- configuration


def test_loopback_detection_and_public_bind_check() -> None:
    for host in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org", ""):
        assert not is_loopback(host), host
    check(ServerConfig(host="127.0.0.1"))
    check(ServerConfig(host="0.0.0.0", token=TOKEN))
    check(ServerConfig(host="0.0.0.0", insecure=True))
    with pytest.raises(ConfigError, match="--token"):
        check(ServerConfig(host="0.0.0.0"))
    assert "s3cret" not in repr(ServerConfig(token=TOKEN))
    assert ServerConfig(token=TOKEN).serialize()["token"] == "***"


def test_limits_that_would_cut_every_recording_are_refused_at_start(capsys) -> None:  # type: ignore[no-untyped-def]
    """--max-duration 0 was accepted and cut every recording to 0 s (the resume check
    read 0 as "off"); negative "no limit" values likewise."""
    from dataclasses import replace

    from server.config import parse_args
    from server.limits import Limits

    for change, message in (({"max_duration_seconds": 0.0}, "--max-duration must be > 0"),
                            ({"max_total_bytes": -1}, "--max-total-bytes must be > 0"),
                            ({"idle_timeout_seconds": -5.0}, "--idle-timeout must be >= 0"),
                            # infinity overflowed the sample count at every stop, and a crash
                            # recovery with it stopped the server from starting
                            ({"max_duration_seconds": float("inf")}, "--max-duration must be > 0 and finite"),
                            ({"live_burst_seconds": float("nan")}, "--live-burst must be >= 0")):
        with pytest.raises(ConfigError, match=message):
            check(ServerConfig(limits=replace(Limits(), **change)))
    check(ServerConfig(limits=replace(Limits(), max_recordings=0, idle_timeout_seconds=0.0)))
    with pytest.raises(ConfigError, match="--heartbeat must be >= 0"):  # closed every socket at once
        check(ServerConfig(heartbeat=-1.0))
    check(ServerConfig(heartbeat=0.0))
    # out of range on the command line: refused (a negative limit was taken for 0, "off";
    # the body limit, workers and progress were raised without a word)
    for argv, message in ((["--max-recordings", "-1"], "--max-recordings must be >= 0"),
                          (["--idle-timeout", "-1"], "--idle-timeout must be >= 0"),
                          (["--max-body-bytes", "10"], "--max-body-bytes must be at least 1024"),
                          (["--workers", "0"], "--workers must be at least 1"),
                          (["--progress-every", "0"], "--progress-every must be at least 1"),
                          (["--log-level", "verbose"], "invalid choice: 'VERBOSE'"),
                          (["--port", "-5"], "--port must be between 0 and 65535")):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert message in capsys.readouterr().err, argv
    assert parse_args(["--log-level", "debug"]).log_level == "DEBUG"
    assert parse_args(["--log-level", "critical"]).log_level == "CRITICAL"  # (logging's)
    with pytest.raises(ConfigError, match="--log-level must be one of"):
        check(ServerConfig(log_level="VERBOSE"))
    with pytest.raises(SystemExit):
        parse_args(["--max-duration", "0"])
    assert "--max-duration must be > 0" in capsys.readouterr().err
    # a chunk limit a message cannot carry (as base64): allowed chunks closed the socket
    # with 1009 and left the session interrupted, with nothing of it kept
    with pytest.raises(SystemExit):
        parse_args(["--max-chunk-bytes", "5000000", "--max-message-bytes", "5000000"])
    assert "at least 6667692 (left out, it follows the chunk limit)" in capsys.readouterr().err
    assert parse_args(["--max-chunk-bytes", "5000000"]).limits.max_message_bytes == 6667692
    assert parse_args([]).limits.max_message_bytes == 4 * 1024 * 1024
    # made in code, too (only the command line followed the chunk limit: refused)
    check(ServerConfig(limits=Limits(max_chunk_bytes=5_000_000)))
    assert Limits(max_chunk_bytes=5_000_000).max_message_bytes == 6667692
    with pytest.raises(ConfigError, match="at least 6667692"):
        check(ServerConfig(limits=Limits(max_chunk_bytes=5_000_000, max_message_bytes=4 << 20)))


def test_public_bind_without_token_is_refused(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--host", "0.0.0.0", "--port", str(port),
         "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "WORKBENCH_TOKEN": "", "WORKBENCH_INSECURE": ""})
    assert proc.returncode == 2
    assert "without authentication" in proc.stderr and "--insecure" in proc.stderr


async def test_public_bind_with_a_token_starts(tmp_path: Path) -> None:
    # (--insecure is checked by test_loopback_detection_and_public_bind_check: a test
    # should not serve an unauthenticated server on every interface, even briefly.)
    srv = LocalServer(tmp_path, args=["--pipeline", "renditions", "--host", "0.0.0.0"],
                      env={"WORKBENCH_TOKEN": TOKEN})
    with srv:
        status, body, _ = await http("GET", f"{srv.url}/api/sessions",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and "sessions" in body
        assert (await http("GET", f"{srv.url}/api/sessions"))[0] == 401


# ---------------------------------------------------------------------- token


async def test_token_required_on_rest_and_websocket(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--token", TOKEN, "--access-log")
    base = srv.url
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for method, path in [("GET", "/api/sessions"), ("POST", "/api/sessions"),
                         ("GET", "/api/sessions/abc"), ("DELETE", "/api/sessions/abc"),
                         ("GET", "/api/sessions/abc/audio"), ("GET", "/api/nothing-here")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            status, body, resp_headers = await http(method, base + path, headers=headers)
            assert status == 401, (method, path, headers)
            assert body == {"error": "Missing or invalid token"}
            assert resp_headers["WWW-Authenticate"] == "Bearer"
        status, body, _ = await http("GET", f"{base}/api/sessions?token=wrong{TOKEN}")
        assert status == 401
    status, body, _ = await http("POST", f"{base}/api/sessions", headers=bearer)
    assert status == 201
    sid = body["id"]
    status, body, _ = await http("GET", f"{base}/api/sessions/{sid}?token={TOKEN}")
    assert status == 200 and body["id"] == sid

    # Health: open, but details only with the token.
    status, body, _ = await http("GET", f"{base}/api/health")
    assert status == 200 and body == {"status": "ok"}
    status, body, _ = await http("GET", f"{base}/api/health", headers=bearer)
    assert body["status"] == "ok" and "recording" in body and "workers" in body
    # The recorder page is public (it holds no data); it asks for the token itself.
    page = (REPO_ROOT / "server" / "static" / "index.html").read_bytes()
    style = (REPO_ROOT / "server" / "static" / "style.css").read_bytes()
    async with aiohttp.ClientSession() as s:
        for path, want in (("/", page), ("/static/index.html", page), ("/static/style.css", style)):
            async with s.get(base + path) as r:
                assert r.status == 200, path
                assert await r.read() == want, path
        async with s.get(f"{base}/static/no-such-file.js") as r:
            assert r.status == 404

    async with aiohttp.ClientSession() as s:
        for url, headers in ((f"{srv.ws_url}/ws/x", {}),
                             (f"{srv.ws_url}/ws/x?token=nope", {}),
                             (f"{srv.ws_url}/ws/x", {"Authorization": "Bearer nope"})):
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await s.ws_connect(url, headers=headers)
            assert exc.value.status == 401
        for url, headers, want in ((f"{srv.ws_url}/ws/{sid}?token={TOKEN}", {}, sid),
                                   (f"{srv.ws_url}/ws/new", bearer, None)):
            async with s.ws_connect(url, headers=headers) as ws:
                await ws.send_json(START_PCM)
                started = await recv(ws)
                assert started["type"] == "recording_started"
                assert started["session_id"] == want or want is None
                await ws.send_bytes(PCM_SECOND)
                await ws.send_json({"action": "stop"})
                assert (await recv(ws))["type"] == "recording_stopped"

    # No token needed to write a line of one's choosing (a %0A in the path), from the
    # access log or the Origin refusal; nor does a request aiohttp cannot parse put its raw
    # line, token and all, in the log.
    forged = "/x%0A2026-01-01 00:00:00,000 - server.security - WARNING - FORGED".replace(" ", "%20")
    for head in (f"GET {forged} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 f"GET {forged} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
                 "Connection: close\r\n\r\n"):
        status, _ = raw_request(srv.port, head)
        assert status in (401, 403)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(f"GET /api/sessions?token={TOKEN}&q=s\xc3\xa9ance\x01 HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\nConnection: close\r\n\r\n".encode("latin-1"))
        assert b" 400 " in sock.recv(100)

    # The access log shows requests but never the token.
    srv.stop()
    log = srv.log_path.read_text()
    assert '"GET /api/sessions/' in log and "token=***" in log
    assert TOKEN not in log
    assert not [line for line in log.splitlines() if line.startswith("2026-01-01")]
    assert "Refused a malformed request" in log


def test_every_answer_forbids_framing_and_sniffing(server: LocalServer) -> None:
    """The recorder page could be framed by any site (its buttons clicked through)."""
    for path in ("/", "/static/app.js", "/api/health", "/api/sessions"):
        with urllib.request.urlopen(server.url + path, timeout=10) as r:
            assert r.headers["X-Frame-Options"] == "DENY", path
            assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer"


async def test_token_from_environment(tmp_path: Path) -> None:
    with LocalServer(tmp_path, args=["--pipeline", "renditions"],
                     env={"WORKBENCH_TOKEN": TOKEN}) as srv:
        assert (await http("GET", f"{srv.url}/api/sessions"))[0] == 401
        assert (await http("GET", f"{srv.url}/api/sessions?token={TOKEN}"))[0] == 200


# ---------------------------------------------------------------------- origin and host


def test_origin_rules() -> None:
    from server.config import DEFAULT_ALLOWED_ORIGINS as D

    assert origin_allowed("http://127.0.0.1:8765", "127.0.0.1:8765", ())
    assert origin_allowed("https://rec.example.org", "rec.example.org", ())  # TLS at a proxy
    assert not origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8765", ())
    assert not origin_allowed("https://evil.example", "127.0.0.1:8765", D)
    assert not origin_allowed("null", "127.0.0.1:8765", D)
    assert not origin_allowed("http://localhost.evil.example:80", "127.0.0.1:8765", D)
    assert origin_allowed("http://localhost:3000", "127.0.0.1:8765", D)
    assert origin_allowed("https://[::1]:8888", "127.0.0.1:8765", D)
    assert origin_allowed("https://app.example.org", "x:1", ("https://app.example.org",))
    assert not origin_allowed("http://app.example.org", "x:1", ("https://app.example.org",))
    assert origin_allowed("https://anything.example", "x:1", ("*",))


async def test_websocket_origin_check(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server()
    strict = start_server("--allowed-origins", "https://app.example.org",
                          "--allowed-hosts", "rec.example.org",
                          data_dir=srv.data_dir.parent / "strict")

    async def status_for(server: LocalServer, origin: Optional[str]) -> int:
        headers = {"Origin": origin} if origin else {}
        async with aiohttp.ClientSession() as s:
            try:
                async with s.ws_connect(f"{server.ws_url}/ws/o", headers=headers) as ws:
                    await ws.send_json({"action": "nop"})
                    assert (await recv(ws))["code"] == ErrorCode.UNKNOWN_ACTION
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    own = f"http://127.0.0.1:{srv.port}"
    assert await status_for(srv, None) == 101           # not a browser
    assert await status_for(srv, own) == 101            # same origin
    assert await status_for(srv, "http://localhost:3000") == 101   # default allowlist
    assert await status_for(srv, "https://evil.example") == 403
    assert await status_for(srv, "null") == 403
    assert await status_for(strict, "https://app.example.org") == 101
    assert await status_for(strict, f"http://127.0.0.1:{strict.port}") == 101
    assert await status_for(strict, "http://localhost:3000") == 403
    # --allowed-hosts adds names (a reverse proxy forwarding its own Host); loopback stays.
    for host, want in (("rec.example.org", 200), (f"127.0.0.1:{strict.port}", 200),
                       ("other.example.org", 403)):
        status, _ = raw_request(strict.port, f"GET /api/sessions HTTP/1.1\r\nHost: {host}\r\n"
                                             "Connection: close\r\n\r\n")
        assert status == want, host
    # Cross-site REST writes (CSRF) are refused the same way, with a JSON error.
    status, body, _ = await http("POST", f"{srv.url}/api/sessions",
                                 headers={"Origin": "https://evil.example"})
    assert status == 403 and "Origin" in body["error"]


def test_dns_rebinding_host_check(server: LocalServer) -> None:
    """No token on loopback: a Host header naming another site (a rebound domain) is refused."""
    for host in ("evil.example", f"evil.example:{server.port}", "192.168.1.5"):
        status, data = raw_request(server.port, f"GET /api/sessions HTTP/1.1\r\nHost: {host}\r\n"
                                                f"Connection: close\r\n\r\n")
        assert status == 403 and b"Host not allowed" in data
    for host in ("localhost", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        status, _ = raw_request(server.port, f"GET /api/sessions HTTP/1.1\r\nHost: {host}\r\n"
                                             f"Connection: close\r\n\r\n")
        assert status == 200, host


def test_static_files_do_not_follow_symlinks(server: LocalServer, tmp_path: Path) -> None:
    """A symlink in the static directory pointing outside it is not served (file or folder)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret outside the static dir")
    static = REPO_ROOT / "server" / "static"
    links = [static / f"_test_link_{os.getpid()}.txt", static / f"_test_dir_{os.getpid()}"]
    links[0].symlink_to(secret)
    links[1].symlink_to(tmp_path, target_is_directory=True)
    try:
        for target in (f"/static/{links[0].name}", f"/static/{links[1].name}/secret.txt"):
            status, data = raw_request(server.port, f"GET {target} HTTP/1.1\r\n"
                                                    f"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert status in (403, 404), (target, status)
            assert b"top secret" not in data
        # A regular file beside the links is served: the refusals are about the links.
        status, data = raw_request(server.port, "GET /static/style.css HTTP/1.1\r\n"
                                                "Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert status == 200
    finally:
        for link in links:
            link.unlink()


# ---------------------------------------------------------------------- abuse limits


async def test_max_concurrent_recordings(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--max-recordings", "2")
    async with aiohttp.ClientSession() as s:
        a = await s.ws_connect(f"{srv.ws_url}/ws/a")
        b = await s.ws_connect(f"{srv.ws_url}/ws/b")
        c = await s.ws_connect(f"{srv.ws_url}/ws/c")
        for ws in (a, b):
            await ws.send_json(START_PCM)
            assert (await recv(ws))["type"] == "recording_started"
        await c.send_json(START_PCM)
        assert await recv(c) == {"type": "error", "code": ErrorCode.TOO_MANY_RECORDINGS,
                                 "message": "Too many recordings in progress (limit 2); "
                                            "try again later"}
        await a.send_json({"action": "stop"})
        assert (await recv(a))["type"] == "recording_stopped"
        assert (await recv(a))["type"] == "processing_started"  # the slot is free
        await c.send_json(START_PCM)
        assert (await recv(c))["type"] == "recording_started"
        for ws in (a, b, c):
            await ws.close()


async def test_concurrent_starts_take_no_slot_they_do_not_use(start_server) -> None:  # type: ignore[no-untyped-def]
    """Starts still being looked up held a slot each: eight concurrent starts of one session
    at --max-recordings 3 got one recording_started, two 4011 and five 4012. And closed
    sockets no longer count in /api/health's connections."""
    srv = start_server("--max-recordings", "3")
    status, session, _ = await http("POST", f"{srv.url}/api/sessions", json={})
    assert status == 201, session
    async with aiohttp.ClientSession() as s:
        sockets = [await s.ws_connect(f"{srv.ws_url}/ws/{session['id']}") for _ in range(8)]
        await asyncio.gather(*(ws.send_json(START_PCM) for ws in sockets))
        replies = [await recv(ws) for ws in sockets]
        started = [r for r in replies if r["type"] == "recording_started"]
        assert len(started) == 1, replies
        assert all(r.get("code") == ErrorCode.SESSION_BUSY for r in replies if r not in started), replies
        for ws in sockets:
            await ws.close()
    for _ in range(50):
        status, health, _ = await http("GET", f"{srv.url}/api/health")
        if health["connections"] == 0:
            break
        await asyncio.sleep(0.1)
    assert health["connections"] == 0, health


async def test_idle_recording_is_interrupted(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--idle-timeout", "1")
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/idle") as watcher:
            # A connection that is not recording may stay quiet.
            async with s.ws_connect(f"{srv.ws_url}/ws/idle") as ws:
                await ws.send_json(START_PCM)
                sid = (await recv(ws))["session_id"]
                await ws.send_bytes(PCM_SECOND)
                t0 = time.monotonic()
                err = await recv(ws, timeout=5)
                assert err == {"type": "error", "code": ErrorCode.IDLE_TIMEOUT,
                               "message": "No message for 1 second: recording interrupted "
                                          "(audio kept) and connection closed"}
                closing = await ws.receive(timeout=5)
                assert closing.type == aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 1008 and 0.9 < time.monotonic() - t0 < 4
            await asyncio.sleep(1.5)
            await watcher.send_json({"action": "nop"})
            assert (await recv(watcher))["code"] == ErrorCode.UNKNOWN_ACTION
    session = await session_in(srv, sid, "interrupted")
    assert session["status"] == "interrupted"
    assert session["duration_seconds"] == pytest.approx(1.0)


async def test_message_size_limit_closes_1009(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--max-message-bytes", "65536", "--max-chunk-bytes", "40000")
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/big") as ws:
            await ws.send_json(START_PCM)
            sid = (await recv(ws))["session_id"]
            await ws.send_bytes(PCM_SECOND)          # 32000 bytes: accepted
            await ws.send_bytes(bytes(70000))        # over the message limit
            msg = await ws.receive(timeout=TIMEOUT)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1009
        session = await session_in(srv, sid, "interrupted")
        assert session["status"] == "interrupted" and session["bytes_received"] == 32000
        async with s.ws_connect(f"{srv.ws_url}/ws/next") as ws:
            await ws.send_json({"action": "start", "input_format": "pcm_s16le"})
            assert (await recv(ws))["type"] == "recording_started"


async def test_http_body_limit(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--max-body-bytes", "2048")
    big = json.dumps({"format": "wav", "options": {"note": "x" * 4000}})
    status, body, _ = await http("POST", f"{srv.url}/api/sessions", data=big,
                                 headers={"Content-Type": "application/json"})
    assert status == 413 and "error" in body
    # a body that is not in the Content-Encoding it names: a 400, not a 500
    status, body, _ = await http("POST", f"{srv.url}/api/sessions", data=b"{}", headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert status == 400 and "not in its Content-Encoding" in body["error"], body
    status, body, _ = await http("POST", f"{srv.url}/api/sessions", json={"format": "wav"})
    assert status == 201


async def test_connections_per_client(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--max-connections-per-client", "3")
    proxied = start_server("--max-connections-per-client", "1", "--trust-proxy",
                           data_dir=srv.data_dir.parent / "proxied")
    async with aiohttp.ClientSession() as s:
        open_ = [await s.ws_connect(f"{srv.ws_url}/ws/c{i}") for i in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await s.ws_connect(f"{srv.ws_url}/ws/c3")
        assert exc.value.status == 429
        status, body, _ = await http("GET", f"{srv.url}/ws/c3", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()})
        assert status == 429 and body == {"error": "Too many connections from your address "
                                                   "(limit 3)"}
        await open_[0].close()
        for _ in range(50):  # a slot is freed once the server has finished with that socket
            try:
                again = await s.ws_connect(f"{srv.ws_url}/ws/c4")
                break
            except aiohttp.WSServerHandshakeError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the closed connection's slot was not freed")
        for ws in (*open_[1:], again):
            await ws.close()
        # Behind a proxy each forwarded client address has its own budget.
        one = await s.ws_connect(f"{proxied.ws_url}/ws/p",
                                 headers={"X-Forwarded-For": "203.0.113.7"})
        two = await s.ws_connect(f"{proxied.ws_url}/ws/p",
                                 headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.8"})
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await s.ws_connect(f"{proxied.ws_url}/ws/p",
                               headers={"X-Forwarded-For": "9.9.9.9, 203.0.113.7"})
        await one.close()
        await two.close()


def test_live_pacer_token_bucket() -> None:
    now = [0.0]
    pacer = LivePacer(2.0, 10.0, clock=lambda: now[0])
    assert all(pacer.admit(1.0) for _ in range(11))  # the burst (the last one goes into debt)
    assert not pacer.admit(1.0)
    now[0] += 1.0  # 2 s of credit per second: back to +1
    assert pacer.admit(1.0) and pacer.admit(1.0) and not pacer.admit(1.0)
    # Sustained 3x real time is refused after about burst / (3 - 2) = 10 s.
    now[0] = 0.0
    pacer = LivePacer(2.0, 10.0, clock=lambda: now[0])
    while pacer.admit(0.3):
        now[0] += 0.1
    assert 9.0 <= now[0] <= 11.0
    # Real time is never refused.
    pacer = LivePacer(2.0, 0.0, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.25
        assert pacer.admit(0.25)
    assert chunk_seconds(32000, 32000, "pcm_s16le") == 1.0
    assert chunk_seconds(72000, None, "webm") == 1.0
    assert chunk_seconds(192000, None, None) == 1.0


async def test_live_audio_faster_than_real_time(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--live-max-speed", "2", "--live-burst", "1")
    half = PCM_SECOND[:16000]  # 0.5 s
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/live") as ws:
            await ws.send_json({**START_PCM, "live": True})
            sid = (await recv(ws))["session_id"]
            for _ in range(6):  # 3 s of audio at once: the 1 s burst (+ one chunk of debt) only
                await ws.send_bytes(half)
            replies = await sync(ws)
            assert replies and all(r["code"] == ErrorCode.TOO_FAST for r in replies)
            assert replies[0]["message"] == (
                "Audio arrives faster than real time: a live recording may send at most 2x "
                "real time after a 1 s burst. Chunk refused; slow down")
            accepted = 6 - len(replies)
            assert 2 <= accepted <= 5
            await asyncio.sleep(0.5)  # credit for another 1 s of audio
            await ws.send_bytes(half)
            assert await sync(ws) == []
            await ws.send_json({"action": "stop"})
            stopped = await recv(ws)
            assert stopped["duration_seconds"] == pytest.approx(0.5 * (accepted + 1))
        raw = (srv.data_dir / "sessions" / sid / "part-000.raw").read_bytes()
        assert raw == half * (accepted + 1)
        # The same speed without "live" is a file upload: never refused.
        async with s.ws_connect(f"{srv.ws_url}/ws/upload") as ws:
            await ws.send_json(START_PCM)
            await recv(ws)
            for _ in range(20):
                await ws.send_bytes(half)
            assert await sync(ws) == []


async def test_compression_off_and_heartbeat(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--heartbeat", "0.3")
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.ws_url}/ws/hb", compress=15, autoping=False) as ws:
            assert ws.compress == 0  # permessage-deflate declined (no zip bombs, no CPU)
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.PING


async def test_heartbeat_drops_a_dead_peer_and_finalises_its_recording(
        start_server) -> None:  # type: ignore[no-untyped-def]
    """A raw client that records, then stops answering pings (but keeps its TCP connection
    open): the server drops it after one missed pong and the session is `interrupted`
    with every accepted byte in audio.wav."""
    srv = start_server("--heartbeat", "0.5", "--idle-timeout", "0")
    ws = RawWebSocket(srv.port, b"/ws/dead-peer")
    try:
        assert ws.status == 101
        ws.send(json.dumps(START_PCM).encode())
        started = ws.recv_json()
        assert started["type"] == "recording_started"
        sid = started["session_id"]
        for _ in range(3):
            ws.send(PCM_SECOND, opcode=0x2)
        # From here on the peer reads nothing and answers nothing.
        session = await session_in(srv, sid, "interrupted", timeout=15)
        assert session["status"] == "interrupted"
        # The server closed the TCP connection itself: what is left to read ends in EOF.
        ws.sock.settimeout(10)
        opcodes = []
        try:
            while True:
                opcode, _ = ws.recv()
                opcodes.append(opcode)
        except ConnectionError:
            pass
        assert 0x9 in opcodes  # it did ping before giving up
    finally:
        ws.close()
    assert session["bytes_received"] == 3 * len(PCM_SECOND)
    assert session["duration_seconds"] == pytest.approx(3.0, abs=0.001)
    wav = srv.data_dir / "sessions" / sid / "audio.wav"
    assert wav.read_bytes()[44:] == 3 * PCM_SECOND


async def test_websocket_upgrade_gets_503_while_shutting_down(tmp_path: Path) -> None:
    """Once shutdown has begun, open recordings are closed with 1001 (their audio kept) and
    a WebSocket upgrade that still reaches the server is refused with 503 before the upgrade.

    The application runs in process: in a server process the listening socket closes
    before shutdown starts, so a late upgrade can only arrive on a connection that was
    already being served; here the shutdown is started while the site still listens."""
    async with InProcessServer(tmp_path / "data") as srv, aiohttp.ClientSession() as s:
        app, port = srv.app, srv.port
        ws = await s.ws_connect(f"ws://127.0.0.1:{port}/ws/open")
        await ws.send_json(START_PCM)
        sid = (await recv(ws))["session_id"]
        await ws.send_bytes(PCM_SECOND)
        await sync(ws)
        await app.shutdown()  # what SIGTERM starts: state.closing, close every socket
        closed = await ws.receive(timeout=TIMEOUT)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1001
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await s.ws_connect(f"ws://127.0.0.1:{port}/ws/late")
        assert exc.value.status == 503
        async with s.get(f"http://127.0.0.1:{port}/ws/late") as r:
            assert r.status == 503
            assert await r.json() == {"error": "Server is shutting down"}
    wav = tmp_path / "data" / "sessions" / sid / "audio.wav"
    assert wav.read_bytes()[44:] == PCM_SECOND
    assert [p.name for p in (tmp_path / "data" / "sessions").iterdir()] == [sid]


# ---------------------------------------------------------------------- input validation


async def test_hostile_messages_get_clear_errors(server: LocalServer) -> None:
    """Each bad message gets its error; a bystander's recording is untouched throughout."""
    async with aiohttp.ClientSession() as s:
        bystander = await s.ws_connect(f"{server.ws_url}/ws/bystander")
        await bystander.send_json(START_PCM)
        bsid = (await recv(bystander))["session_id"]
        async with s.ws_connect(f"{server.ws_url}/ws/hostile") as ws:
            cases: list[tuple[Any, int]] = [
                ("42", ErrorCode.INVALID_MESSAGE), ('"start"', ErrorCode.INVALID_MESSAGE),
                ("null", ErrorCode.INVALID_MESSAGE), ("[]", ErrorCode.INVALID_MESSAGE),
                ("{", ErrorCode.INVALID_MESSAGE), ("[" * 100000, ErrorCode.INVALID_MESSAGE),
                ('{"a": ' + "9" * 5000 + "}", ErrorCode.INVALID_MESSAGE),
                ({"action": 1}, ErrorCode.UNKNOWN_ACTION),
                ({"action": ["start"]}, ErrorCode.UNKNOWN_ACTION),
                ({"action": "x" * 1_000_000}, ErrorCode.UNKNOWN_ACTION),
                ({"no_action": True}, ErrorCode.UNKNOWN_ACTION),
                ({"action": "audio_chunk", "data": "AAAA"}, ErrorCode.NOT_STARTED),
                ({"action": "stop"}, ErrorCode.NOT_STARTED),
                ({"action": "start", "format": 1}, ErrorCode.INVALID_FORMAT),
                ({"action": "start", "format": {"x": 1}}, ErrorCode.INVALID_FORMAT),
                ({"action": "start", "format": "w" * 100000}, ErrorCode.INVALID_FORMAT),
                ({"action": "start", "input_format": 7}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "input_format": "exe"}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "sample_rate": "16000"}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "sample_rate": 10 ** 30}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "sample_rate": 16000.0}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "channels": True}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "language": "x" * 10000}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "language": ["en"]}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "num_speakers": 0}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "num_speakers": 2.5}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "clustering_threshold": "NaN"}, ErrorCode.INVALID_FIELD),
                ('{"action": "start", "clustering_threshold": NaN}', ErrorCode.INVALID_FIELD),
                ('{"action": "start", "clustering_threshold": Infinity}',
                 ErrorCode.INVALID_FIELD),
                ({"action": "start", "vad_filter": "yes"}, ErrorCode.INVALID_FIELD),
                ({"action": "start", "live": 1}, ErrorCode.INVALID_FIELD),
            ]
            for message, code in cases:
                await ws.send_str(message if isinstance(message, str) else json.dumps(message))
                reply = await recv(ws)
                assert reply["type"] == "error" and reply["code"] == code, (str(message)[:80], reply)
                assert len(reply["message"]) < 300 and "Traceback" not in reply["message"]
            await ws.send_bytes(b"\x00\x01")  # binary before start
            assert (await recv(ws))["code"] == ErrorCode.NOT_STARTED
            # Unknown fields are ignored, and named in the reply.
            await ws.send_json({**START_PCM, "colour": "blue", "sample_rate": 16000,
                                "z" * 500: 1})
            started = await recv(ws)
            assert started["type"] == "recording_started"
            assert started["ignored_fields"] == ["colour", "z" * 40]
            await ws.send_json(START_PCM)  # start twice
            assert (await recv(ws))["code"] == ErrorCode.ALREADY_RECORDING
            await bystander.send_bytes(PCM_SECOND)
            await ws.send_bytes(PCM_SECOND)
            await ws.send_json({"action": "stop"})
            assert (await recv(ws))["type"] == "recording_stopped"
            await ws.send_json({"action": "stop"})  # stop twice
            reply, _ = await _until_error(ws)
            assert reply["code"] == ErrorCode.NOT_STARTED
            await ws.send_bytes(PCM_SECOND)  # chunks after stop
            assert (await _until_error(ws))[0]["code"] == ErrorCode.NOT_STARTED
            await ws.send_json({"action": "audio_chunk", "data": "AAAA"})
            assert (await _until_error(ws))[0]["code"] == ErrorCode.NOT_STARTED
        await bystander.send_bytes(PCM_SECOND)
        await bystander.send_json({"action": "stop"})
        stopped = await recv(bystander)
        assert stopped["type"] == "recording_stopped"
        assert stopped["duration_seconds"] == pytest.approx(2.0)
        await bystander.close()
    raw = (server.data_dir / "sessions" / bsid / "part-000.raw").read_bytes()
    assert raw == PCM_SECOND * 2


async def _until_error(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], list[Any]]:
    seen = []
    while (m := await recv(ws))["type"] != "error":
        seen.append(m)
    return m, seen


def test_invalid_utf8_text_frame_closes_1007(server: LocalServer) -> None:
    ws = RawWebSocket(server.port, b"/ws/utf8")
    try:
        assert ws.status == 101
        ws.send(json.dumps(START_PCM).encode())
        started = ws.recv_json()
        assert started["type"] == "recording_started"
        ws.send(PCM_SECOND, opcode=0x2)
        ws.send(b'{"action": "\xff\xfe"}')
        while True:
            opcode, data = ws.recv()
            if opcode == 0x8:
                break
        assert struct.unpack(">H", data[:2])[0] == 1007  # "invalid frame payload data"
    finally:
        ws.close()
    sid = started["session_id"]
    for _ in range(100):
        session = json.loads(raw_request(server.port, f"GET /api/sessions/{sid} HTTP/1.1\r\n"
                                         f"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")[1]
                             .split(b"\r\n\r\n", 1)[1])
        if session["status"] == "interrupted":
            break
        time.sleep(0.05)
    assert session["status"] == "interrupted" and session["bytes_received"] == 32000


HOSTILE_IDS = [
    b"..", b"%2e%2e", b"..%2F..%2Fetc", b"..%252f..%252f", b"%00", b"abc%00def",
    b"%E2%98%83snow", b"\xe2\x98\x83", b"a" * 4000, b"con", b"..%5c..%5cwindows",
    b"%0d%0aX-Injected:%201", b"session%0a2025-01-01 - server - ERROR - forged",
    b"x" * 64, b"-leading-dash", b".hidden", b"%2F", b"%252e%252e",
]


@pytest.mark.parametrize("path_id", HOSTILE_IDS, ids=lambda b: b[:20].decode("latin-1"))
def test_hostile_session_ids_over_raw_socket(server: LocalServer, path_id: bytes) -> None:
    """Odd or hostile path ids: a fresh session (UUID) is recorded, nothing outside it is touched."""
    before = sorted(p.name for p in server.data_dir.iterdir())
    ws = RawWebSocket(server.port, b"/ws/" + path_id)
    try:
        if ws.status != 101:  # refused before the upgrade: fine, as long as it is a 4xx
            assert 400 <= ws.status < 500, ws.head
            return
        ws.send(json.dumps(START_PCM).encode())
        started = ws.recv_json()
        assert started["type"] == "recording_started"
        sid = started["session_id"]
        assert len(sid) == 36  # a fresh UUID: only an existing session's id is used as is
        ws.send(PCM_SECOND, opcode=0x2)
        ws.send(b'{"action": "stop"}')
        assert ws.recv_json()["type"] == "recording_stopped"
    finally:
        ws.close()
    assert (server.data_dir / "sessions" / sid / "part-000.raw").read_bytes() == PCM_SECOND
    assert sorted(p.name for p in server.data_dir.iterdir()) == before
    # No line of the log was forged by the id.
    for line in server.log_path.read_text().splitlines():
        assert not line.startswith(("2025-01-01 - server", "X-Injected")), line


@pytest.mark.parametrize("target", [
    "/api/sessions/%00", "/api/sessions/..%00", "/api/sessions/" + "a" * 3000,
    "/api/sessions/%E2%98%83", "/api/sessions/%2e%2e/runs", "/api/sessions/x/runs/..%2f..%2f",
    "/api/sessions/x/transcript?run=../../workbench.sqlite3",
])
def test_hostile_rest_ids(server: LocalServer, target: str) -> None:
    status, data = raw_request(server.port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                            f"Connection: close\r\n\r\n")
    assert status in (400, 404), (target, status)
    assert b"SQLite format" not in data and b'"error"' in data


def playlists(outside: Path) -> dict[str, bytes]:
    """Text playlists that make FFmpeg open `outside` when its format probing picks them."""
    return {
        "ffconcat": f"ffconcat version 1.0\nfile '{outside}'\n".encode(),
        "hls": (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
                f"#EXTINF:5.0,\nfile://{outside}\n#EXT-X-ENDLIST\n").encode(),
    }


@pytest.mark.parametrize("kind", ["ffconcat", "hls"])
@pytest.mark.parametrize("input_format", ["webm", "ogg", "mp4", "mp3", "flac", None])
async def test_playlists_disguised_as_audio_are_refused(
        server: LocalServer, speech_dir: Path, kind: str, input_format: Optional[str]) -> None:
    """A part whose bytes are an ffconcat or HLS playlist naming a real audio file outside
    the session directory: error 4008, nothing of that file is decoded, the bytes are kept."""
    from .test_recording_functional import by_type, record

    outside = speech_dir / ("speech.mp3" if kind == "hls" else "speech.flac")
    payload = playlists(outside)[kind]
    if kind == "hls":
        # The threat is real: FFmpeg's HLS demuxer, once picked, reads the outside file.
        import av

        probe = speech_dir / f"hls-{input_format}.raw"
        probe.write_bytes(payload)
        with av.open(str(probe), format="hls") as media:
            assert sum(1 for _ in media.decode(audio=0)) > 10
    start = {"input_format": input_format} if input_format else {}
    msgs = await record(server, payload, start=start, binary=True, wait_processing=False)
    sid = msgs[0]["session_id"]
    errors = by_type(msgs, "error")
    assert [e["code"] for e in errors] == [ErrorCode.UNDECODABLE_AUDIO], msgs
    message = errors[0]["message"]
    if input_format:
        # Refused by the signature check before FFmpeg sees the bytes.
        assert f"the bytes are not {input_format} (the declared input_format)" in message
    else:
        assert "unrecognised container" in message
    assert str(outside) not in message and "speech" not in message
    assert by_type(msgs, "recording_stopped")[0]["duration_seconds"] == 0
    assert not by_type(msgs, "processing_started")
    session = await session_in(server, sid, "failed")
    assert session["status"] == "failed" and session["duration_seconds"] == 0
    session_dir = server.data_dir / "sessions" / sid
    assert (session_dir / "part-000.raw").read_bytes() == payload
    assert not (session_dir / "audio.wav").exists()


def test_overlong_request_line_is_refused(server: LocalServer) -> None:
    status, _ = raw_request(server.port, f"GET /api/sessions/{'a' * 20000} HTTP/1.1\r\n"
                                         f"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status in (400, 414)
    status, _ = raw_request(server.port, "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                         "Connection: close\r\n\r\n")
    assert status == 200


async def stuck_recording(s: aiohttp.ClientSession, port: int
                          ) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A recording of 1 s whose client then reads nothing (a small receive buffer)."""
    stuck = await s.ws_connect(f"ws://127.0.0.1:{port}/ws/stuck")
    stuck.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await stuck.send_json(START_PCM)
    sid = (await recv(stuck))["session_id"]
    await stuck.send_bytes(PCM_SECOND)
    await sync(stuck)
    return stuck, sid


async def test_a_client_that_stops_reading_is_dropped_not_waited_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that stops reading fills its socket buffers, and a send to it then
    waits for ever (the heartbeat does not end it). Events go to a session's subscribers in
    turn and the job queue hands its events on one at a time, so one such client froze the
    events of every session (and its own recording held its slot for good). A connection
    that takes no message for ``SEND_TIMEOUT`` is dropped; its recording is finalised as on
    any disconnect, and the other subscribers get every event."""
    import server.state

    monkeypatch.setattr(server.state, "SEND_TIMEOUT", 1.0, raising=False)
    async with InProcessServer(tmp_path / "data") as srv, aiohttp.ClientSession() as s:
        app, port = srv.app, srv.port
        state = app[server.state.STATE]
        _, sid = await stuck_recording(s, port)
        reader = await s.ws_connect(f"ws://127.0.0.1:{port}/ws/{sid}")
        await sync(reader)  # (subscribed once its handler answers)
        event = {"type": "processing_progress", "session_id": sid, "pad": "x" * 500_000}
        got: list[dict[str, Any]] = []

        async def read() -> None:
            while len(got) < 40:
                got.append(await recv(reader))

        reading = asyncio.ensure_future(read())
        for _ in range(40):  # 20 MB: more than the stuck socket's buffers hold
            await asyncio.wait_for(state.notify(sid, event), 10)
        await asyncio.wait_for(reading, TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while sid in state.recording and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert sid not in state.recording  # dropped, its recording finalised
        session = state.store.get_session(sid)
        assert session is not None and session.status == "interrupted"
        await reader.close()
    wav = tmp_path / "data" / "sessions" / sid / "audio.wav"
    assert wav.read_bytes()[44:] == PCM_SECOND


async def test_shutdown_does_not_wait_for_a_client_that_stops_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shutdown closes every socket; the close of one whose buffers are full waited for
    ever (the server never exited on SIGTERM). Such a socket is dropped after
    ``SEND_TIMEOUT`` and its recording kept."""
    import server.state

    monkeypatch.setattr(server.state, "SEND_TIMEOUT", 1000.0, raising=False)
    async with InProcessServer(tmp_path / "data") as srv, aiohttp.ClientSession() as s:
        app, port = srv.app, srv.port
        state = app[server.state.STATE]
        _, sid = await stuck_recording(s, port)
        event = {"type": "processing_progress", "session_id": sid, "pad": "x" * 500_000}

        async def flood() -> None:
            for _ in range(40):
                await state.notify(sid, event)

        flooding = asyncio.ensure_future(flood())
        await asyncio.sleep(2)
        assert not flooding.done()  # the socket's buffers are full
        monkeypatch.setattr(server.state, "SEND_TIMEOUT", 1.0)
        await asyncio.wait_for(app.shutdown(), 10)
        flooding.cancel()
    wav = tmp_path / "data" / "sessions" / sid / "audio.wav"
    assert wav.read_bytes()[44:] == PCM_SECOND


async def test_a_client_that_reads_slowly_is_not_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a connection that takes nothing is dropped: one reading a large message more
    slowly than ``SEND_TIMEOUT`` allows for the whole of it keeps its connection (a client
    reading 1 MB at 400 kB/s was cut off after 164 kB). Here 12 MB at about 3 MB/s, through a
    small receive buffer: what the server's socket cannot hold waits in its transport."""
    import server.state

    monkeypatch.setattr(server.state, "SEND_TIMEOUT", 1.0, raising=False)
    async with InProcessServer(tmp_path / "data") as srv, aiohttp.ClientSession() as s:
        app, port = srv.app, srv.port
        state = app[server.state.STATE]
        ws = await s.ws_connect(f"ws://127.0.0.1:{port}/ws/slow")
        await ws.send_json(START_PCM)
        sid = (await recv(ws))["session_id"]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # (before connecting)
        sock.connect(("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /ws/{sid} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        while len(state.subscribers.get(sid, ())) < 2:
            await asyncio.sleep(0.05)
        event = {"type": "processing_progress", "session_id": sid, "pad": "x" * 12_000_000}
        sending = asyncio.ensure_future(state.notify(sid, event))
        got, began = 0, time.monotonic()
        while got < 12_000_000:
            data = await asyncio.wait_for(reader.read(1 << 16), 5)
            assert data, f"dropped after {got} bytes"
            got += len(data)
            await asyncio.sleep(max(0.0, began + got / 3e6 - time.monotonic()))
        assert time.monotonic() - began > 2.5  # (the old limit was for the whole message)
        await asyncio.wait_for(sending, 5)
        writer.close()
        await ws.close()
