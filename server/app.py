"""The aiohttp application: REST API, WebSocket recording endpoint, start-up recovery, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import WSCloseCode, web

from workbench.engine.audio import AudioDecodeError, encode_mp4
from workbench.engine.config import ConfigError
from workbench.engine.formats import AUDIO_FORMATS

from .config import ServerConfig, check
from .jobs import RESULT_FORMATS, JobQueue, check_run_config
from .protocol import safe_details
from .recorder import finalise, wav_intact
from .recording import websocket_handler
from .security import AUTHENTICATED, make_middleware
from .sessions import SessionStore, valid_id
from .state import STATE, AppState

log = logging.getLogger("server")

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_TYPES = {
    "json": "application/json",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "txt": "text/plain",
    "rttm": "text/plain",
    "csv": "text/csv",
}


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    """Every error is JSON ``{"error": ...}``; no stack trace ever reaches a client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return json_error(exc.status, exc.reason if exc.text is None or exc.text.startswith(
            f"{exc.status}:") else exc.text)
    except Exception as exc:
        log.exception("Unhandled error on %s %s", request.method, request.path)
        return json_error(500, f"Internal error: {safe_details(exc)}")


def _state(request: web.Request) -> AppState:
    return request.app[STATE]


async def _session_or_404(request: web.Request) -> Any:
    sid = request.match_info["session_id"]
    session = None
    if valid_id(sid):
        session = await asyncio.to_thread(_state(request).store.get_session, sid)
    if session is None:
        raise web.HTTPNotFound(text="Session not found")
    return session


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    try:  # in a thread: a body may be up to --max-body-bytes of JSON
        body = await asyncio.to_thread(json.loads, raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise web.HTTPBadRequest(text="Request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="Request body must be a JSON object")
    return body


async def _json_response(payload: Any, status: int = 200) -> web.Response:
    """A JSON response encoded in a thread (session lists grow with every run)."""
    text = await asyncio.to_thread(json.dumps, payload)
    return web.json_response(text=text, status=status)


def _checked_run_config(config: Any, what: str) -> dict[str, Any]:
    """``config`` checked with workbench.engine.config (no model library is imported), or a 400."""
    try:
        return check_run_config(config)
    except ConfigError as exc:
        raise web.HTTPBadRequest(text=f"Invalid {what}: {exc}") from None


# ---------------------------------------------------------------------- handlers


async def health(request: web.Request) -> web.Response:
    """Liveness for anyone; the figures only for a request that carries the token."""
    state = _state(request)
    if not request.get(AUTHENTICATED, False):
        return web.json_response({"status": "ok"})
    return web.json_response({
        "status": "ok",
        "recording": len(state.recording),
        "connections": len(state.sockets),
        "workers": state.jobs.size,
        "busy_workers": state.jobs.busy(),
        "pipeline": state.config.pipeline,
    })


async def create_session(request: web.Request) -> web.Response:
    body = await _json_body(request)
    fmt = body.get("format", "wav")
    if fmt not in AUDIO_FORMATS:
        raise web.HTTPBadRequest(text="Invalid format. Use 'wav' or 'mp4'")
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise web.HTTPBadRequest(text="'options' must be a JSON object")
    _checked_run_config(options, "session options")
    session = await asyncio.to_thread(_state(request).store.create_session, None, fmt, options)
    log.info("✅ Created session: %s", session.id)
    return web.json_response(session.serialize(), status=201)


async def list_sessions(request: web.Request) -> web.Response:
    sessions = await asyncio.to_thread(_state(request).store.list_sessions)
    return await _json_response({"sessions": [s.serialize() for s in sessions]})


async def get_session(request: web.Request) -> web.Response:
    session = await _session_or_404(request)
    return web.json_response(session.serialize())


async def delete_session(request: web.Request) -> web.Response:
    session = await _session_or_404(request)
    state = _state(request)
    if session.id in state.recording:
        raise web.HTTPConflict(text="Session is recording; stop it first")
    await asyncio.to_thread(state.store.delete_session, session.id)
    log.info("Deleted session %s", session.id)
    return web.Response(status=204)


async def get_audio(request: web.Request) -> web.StreamResponse:
    session = await _session_or_404(request)
    fmt = request.query.get("format", "wav")
    if fmt not in AUDIO_FORMATS:
        raise web.HTTPBadRequest(text="Invalid format. Use 'wav' or 'mp4'")
    directory = _state(request).store.session_dir(session.id)
    wav = directory / "audio.wav"
    if not wav.exists():
        raise web.HTTPNotFound(text="This session has no recorded audio yet")
    path = wav
    if fmt == "mp4":
        path = directory / "audio.mp4"
        if not path.exists():
            try:
                await asyncio.to_thread(encode_mp4, wav, path)
            except AudioDecodeError as exc:
                raise web.HTTPUnprocessableEntity(text=str(exc)) from None
    return web.FileResponse(path, headers={
        "Content-Type": "audio/wav" if fmt == "wav" else "audio/mp4",
        "Content-Disposition": f'attachment; filename="{session.id}.{fmt}"',
    })


async def get_transcript(request: web.Request) -> web.StreamResponse:
    session = await _session_or_404(request)
    fmt = request.query.get("format", "json")
    if fmt not in RESULT_FORMATS:
        raise web.HTTPBadRequest(text=f"Invalid format. Use one of: {', '.join(RESULT_FORMATS)}")
    run_id = request.query.get("run")
    store = _state(request).store
    if run_id is not None:
        run = next((r for r in session.runs if r.id == run_id), None)
        if run is None:
            raise web.HTTPNotFound(text="Run not found")
        if run.status != "completed":
            raise web.HTTPConflict(text=f"Run is {run.status}")
    else:
        def latest() -> Any:
            return next((r for r in reversed(session.runs) if r.status == "completed"
                         and (store.run_dir(session.id, r.id) / "transcript.json").exists()),
                        None)

        run = await asyncio.to_thread(latest)
        if run is None:
            raise web.HTTPNotFound(text="No completed transcript for this session yet")
    path = store.run_dir(session.id, run.id) / f"transcript.{fmt}"
    if not await asyncio.to_thread(path.exists):
        raise web.HTTPNotFound(text="This run produced no transcript")
    return web.FileResponse(path, headers={
        "Content-Type": f"{CONTENT_TYPES[fmt]}; charset=utf-8",
        "Content-Disposition": f'inline; filename="{session.id}.{fmt}"',
    })


async def list_runs(request: web.Request) -> web.Response:
    session = await _session_or_404(request)
    return await _json_response({"runs": [r.serialize() for r in session.runs]})


async def get_run(request: web.Request) -> web.Response:
    session = await _session_or_404(request)
    run = next((r for r in session.runs if r.id == request.match_info["run_id"]), None)
    if run is None:
        raise web.HTTPNotFound(text="Run not found")
    return web.json_response(run.serialize())


async def create_run(request: web.Request) -> web.Response:
    session = await _session_or_404(request)
    state = _state(request)
    config = await _json_body(request)
    if session.id in state.recording or session.status == "recording":
        raise web.HTTPConflict(text="Session is recording; stop it first")
    if not await asyncio.to_thread((state.store.session_dir(session.id) / "audio.wav").exists):
        raise web.HTTPConflict(text="This session has no recorded audio to process")
    # Checked with workbench.engine.config, not the pipeline: the server never imports torch.
    config = _checked_run_config({**state.config.default_run_config, **config},
                                 "run configuration")
    run = await state.jobs.submit(session.id, config)
    return web.json_response(run.serialize(), status=202)


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not await asyncio.to_thread(page.exists):
        raise web.HTTPNotFound(text="No recorder page installed")
    return web.FileResponse(page)


# ---------------------------------------------------------------------- lifecycle


def recover(store: SessionStore, max_seconds: float | None = None) -> list[str]:
    """After a crash: finalise recordings that were open and mark them ``interrupted``.

    Part sizes are taken from the files (the store is updated on a cadence);
    the WAV is rebuilt from the raw parts, so a torn header cannot survive.  A
    finished session whose ``audio.wav`` is torn or missing gets it rebuilt too,
    and half-written temporary files are removed.
    """
    recovered = []
    for stale in store.sessions_dir.glob("*/.audio.*"):
        stale.unlink(missing_ok=True)  # an atomic write cut short (audio.wav / audio.mp4)
    for session in store.sessions_in("recording"):
        directory = store.session_dir(session.id)
        total = 0
        for part in session.parts:
            path = directory / part.filename
            part.bytes = path.stat().st_size if path.exists() else 0
            total += part.bytes
            store.update_part(session.id, part)
        error = None
        try:
            duration = finalise(store, store.get_session(session.id) or session, max_seconds)
        except AudioDecodeError as exc:
            duration, error = 0.0, str(exc)
        store.set_status(session.id, "interrupted", duration_seconds=duration,
                         bytes_received=total, error=error)
        log.warning("Recovered session %s after a crash: %.2f s kept, now interrupted",
                    session.id, duration)
        recovered.append(session.id)
    for session in store.sessions_in("interrupted", "processing", "completed"):
        wav = store.session_dir(session.id) / "audio.wav"
        if not session.parts or (wav.exists() and wav_intact(wav)):
            continue
        try:
            duration = finalise(store, session, max_seconds)
        except AudioDecodeError as exc:
            log.warning("Session %s: audio.wav is damaged and cannot be rebuilt: %s",
                        session.id, exc)
            continue
        store.update_session(session.id, duration_seconds=duration)
        log.warning("Rebuilt the damaged audio.wav of session %s from its raw parts", session.id)
        recovered.append(session.id)
    return recovered


def requeue_orphans(store: SessionStore, config_for: Callable[[Any], dict[str, Any]]) -> list[str]:
    """Sessions left ``processing`` without a queued or running run get what the crash
    denied them: the outcome of their last run when it finished after the session entered
    ``processing`` (a crash before the status was updated), else a new run (a crash
    between ``stop`` and queueing the run)."""
    orphans = []
    for session in store.sessions_in("processing"):
        if any(r.status in ("queued", "running") for r in session.runs):
            continue
        last = session.runs[-1] if session.runs else None
        if last is not None and last.finished_at and last.finished_at >= session.updated_at:
            ok = last.status == "completed"
            store.set_status(session.id, "completed" if ok else "failed",
                             error=None if ok else last.error)
            log.warning("Session %s: marked %s after its last run, as a crash left it",
                        session.id, "completed" if ok else "failed")
        else:
            run = store.create_run(session.id, config_for(session))
            log.warning("Queued run %s for session %s, left processing by a crash", run.id,
                        session.id)
            orphans.append(session.id)
    return orphans


# Threads for blocking file and SQLite work (asyncio.to_thread).  The default pool has
# cpu_count + 4 threads; with hundreds of recordings their fsyncs queue up behind each
# other and reply latency suffers (benchmarks/load.py), so allow more to wait on the disk.
IO_THREADS = 32


async def _on_startup(app: web.Application) -> None:
    state = app[STATE]
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(IO_THREADS, thread_name_prefix="io"))
    await asyncio.to_thread(recover, state.store, state.config.limits.max_duration_seconds)
    await asyncio.to_thread(requeue_orphans, state.store, state.run_config)
    await state.jobs.start()


async def _on_shutdown(app: web.Application) -> None:
    state = app[STATE]
    state.closing = True
    # Concurrently: one client slow to answer the close must not hold up the others.
    await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")
                           for ws in list(state.sockets)), return_exceptions=True)


async def _on_cleanup(app: web.Application) -> None:
    state = app[STATE]
    # Recordings whose handler did not get to run its `finally:` yet.
    for conn in list(state.recording.values()):
        await conn.finish("shutdown")
    # Finalisations started by handlers that were cancelled meanwhile.
    while state.finishing:
        await asyncio.gather(*list(state.finishing), return_exceptions=True)
    await state.jobs.close()
    state.store.close()


def create_app(config: ServerConfig) -> web.Application:
    """Build the application for ``config`` (the data directory is created if missing)."""
    check(config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app = web.Application(middlewares=[error_middleware, make_middleware(config)],
                          client_max_size=config.limits.max_body_bytes)
    state = AppState(config, SessionStore(config.data_dir))
    state.jobs = JobQueue(state.store, state.notify, workers=config.workers,
                          dask_scheduler=config.dask_scheduler,
                          pipeline=config.pipeline, log_level=config.log_level)
    app[STATE] = state
    app.router.add_get("/api/health", health)
    app.router.add_post("/api/sessions", create_session)
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_get("/api/sessions/{session_id}", get_session)
    app.router.add_delete("/api/sessions/{session_id}", delete_session)
    app.router.add_get("/api/sessions/{session_id}/audio", get_audio)
    app.router.add_get("/api/sessions/{session_id}/transcript", get_transcript)
    app.router.add_get("/api/sessions/{session_id}/runs", list_runs)
    app.router.add_post("/api/sessions/{session_id}/runs", create_run)
    app.router.add_get("/api/sessions/{session_id}/runs/{run_id}", get_run)
    app.router.add_get("/ws/{session_id}", websocket_handler)
    app.router.add_get("/", index)
    if STATIC_DIR.exists():
        app.router.add_static("/static", STATIC_DIR, follow_symlinks=False)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


__all__ = ["create_app", "recover", "json"]
