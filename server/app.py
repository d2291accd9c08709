"""The aiohttp application: the REST handlers, the route table, start-up (with crash
recovery, see :mod:`server.recovery`) and shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from aiohttp import WSCloseCode, web
from aiohttp.web_protocol import RequestPayloadError

from workbench.engine.audio import AudioDecodeError
from workbench.engine.rendition import encode_mp4, rendition_current
from workbench.engine.config import ConfigError
from workbench.engine.transcript import served_runs

from . import routes
from .config import ServerConfig, check
from .connection import websocket_handler
from .jobs import JobQueue, TooManyRuns, check_run_config
from .live import LiveHub
from .worker import safe_details
from .recovery import fail_live_runs, recover, requeue_orphans
from .routes import RESULT_FORMATS, session_json
from .security import AUTHENTICATED, add_security_headers, logged_path, make_middleware
from .sessions import AUDIO_FORMATS, SessionStore, valid_id
from .state import STATE, AppState

log = logging.getLogger("server")

STATIC_DIR = Path(__file__).parent / "static"

# Content type of each result format (routes.RESULT_FORMATS).
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
        log.exception("Unhandled error on %s %s", request.method, logged_path(request))
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
    try:
        raw = await request.read()
    except RequestPayloadError:  # e.g. a Content-Encoding its bytes are not in
        raise web.HTTPBadRequest(text="Request body could not be read: it is not in its "
                                      "Content-Encoding") from None
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


def _checked_run_config(request: web.Request, config: Any, what: str, switch: bool = True
                        ) -> dict[str, Any]:
    """The client's ``config`` over the server's default run configuration, checked with
    workbench.engine.config (no model library is imported), or a 400.  Model or pipeline folders
    named by the client are refused unless the server runs with --allow-local-models.
    ``switch``: the ``pipeline`` switch is allowed (a run's, not a session's options:
    `start` refuses it there, so a session created with it could never record)."""
    state = _state(request)
    try:
        check_run_config(config, switch=switch, local_models=state.config.allow_local_models)
        return check_run_config({**state.config.default_run_config, **config}, whole=True)
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
        "live": state.live.status(),
    })


async def create_session(request: web.Request) -> web.Response:
    body = await _json_body(request)
    fmt = body.get("format", "wav")
    if fmt not in AUDIO_FORMATS:
        raise web.HTTPBadRequest(text="Invalid format. Use 'wav' or 'mp4'")
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise web.HTTPBadRequest(text="'options' must be a JSON object")
    _checked_run_config(request, options, "session options", switch=False)
    session = await asyncio.to_thread(_state(request).store.create_session, None, fmt, options)
    log.info("✅ Created session: %s", session.id)
    return web.json_response(session_json(session), status=201)


async def list_sessions(request: web.Request) -> web.Response:
    sessions = await asyncio.to_thread(_state(request).store.list_sessions)
    return await _json_response({"sessions": [session_json(s) for s in sessions]})


async def get_session(request: web.Request) -> web.Response:
    session = await _session_or_404(request)
    return web.json_response(session_json(session))


def _refuse_if_recording(state: AppState, session_id: str) -> None:
    recording = state.recording.get(session_id)
    if recording is not None and recording.saving:  # (stop decodes the recording first)
        raise web.HTTPConflict(text="Session is being saved after stop; try again in a moment")
    if recording is not None:
        raise web.HTTPConflict(text="Session is recording; stop it first")


async def delete_session(request: web.Request) -> web.Response:
    session = await _session_or_404(request)
    state = _state(request)
    _refuse_if_recording(state, session.id)
    if not await asyncio.to_thread(state.store.delete_session, session.id):
        if await asyncio.to_thread(state.store.get_session, session.id) is not None:
            raise web.HTTPConflict(text="Session is recording; stop it first")  # resumed
        raise web.HTTPNotFound(text="Session not found")  # deleted by another request
    state.live.discard(session.id)  # a live worker waiting for a resume that cannot come
    state.live_owed.pop(session.id, None)
    await state.jobs.forget(session.id)  # its run, if one is under way, stops
    for run in session.runs:  # clients told processing_started hear that it ended
        if run.kind == "refined" and run.status in ("queued", "running"):
            await state.notify(session.id, {"type": "processing_failed", "session_id": session.id,
                                            "run_id": run.id, "message": "The session was deleted"})
    log.info("Deleted session %s", session.id)
    return web.Response(status=204)


async def get_audio(request: web.Request) -> web.StreamResponse:
    session = await _session_or_404(request)
    fmt = request.query.get("format", "wav")
    if fmt not in AUDIO_FORMATS:
        raise web.HTTPBadRequest(text="Invalid format. Use 'wav' or 'mp4'")
    state = _state(request)
    store = state.store
    wav = store.audio_path(session.id, "wav")
    if not await asyncio.to_thread(wav.exists):
        raise web.HTTPNotFound(text="This session has no recorded audio yet")
    path = store.audio_path(session.id, fmt)
    if fmt == "mp4":
        if session.duration_seconds <= 0:  # FFmpeg would write an empty file
            raise web.HTTPUnprocessableEntity(text="The recording has no audio to encode")
        if not await asyncio.to_thread(rendition_current, wav, path):
            encode = state.encoding.get(session.id)
            if encode is None:  # one encode per session, whoever asks meanwhile
                encode = asyncio.get_running_loop().run_in_executor(
                    state.encoder, _encode_current, wav, path)
                state.encoding[session.id] = encode
                encode.add_done_callback(lambda _: state.encoding.pop(session.id, None))
            try:
                await asyncio.shield(encode)
            except AudioDecodeError as exc:
                raise web.HTTPUnprocessableEntity(text=str(exc)) from None
            except FileNotFoundError:  # deleted meanwhile
                raise web.HTTPNotFound(text="Session not found") from None
    return web.FileResponse(path, headers={
        "Content-Type": f"audio/{fmt}",
        "Content-Disposition": f'attachment; filename="{session.id}.{fmt}"',
    })


def _encode_current(wav: Path, rendition: Path) -> None:
    """Encode the MP4 rendition of `wav`; again if `wav` was rewritten meanwhile (a
    resumed recording stopped during the encode). The encode of a WAV rewritten meanwhile
    is dropped, never put in place: made after the new WAV, it would pass for current."""
    while True:
        before = wav.stat().st_mtime_ns
        encode_mp4(wav, rendition, keep=lambda: wav.stat().st_mtime_ns == before)
        if wav.stat().st_mtime_ns == before:
            return


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
        def served() -> list[Any]:  # the newest refined run, else every live run
            return served_runs([r for r in session.runs if r.status == "completed" and (
                store.run_dir(session.id, r.id) / "transcript.json").exists()],
                lambda r: r.kind)

        runs = await asyncio.to_thread(served)
        if not runs:
            raise web.HTTPNotFound(text="No completed transcript for this session yet")
        if len(runs) > 1:  # recorded in parts, live results only: all of them in order
            merged = await asyncio.to_thread(_joined, store, session.id, runs, fmt)
            return web.Response(text=merged, headers={
                "Content-Type": f"{CONTENT_TYPES[fmt]}; charset=utf-8",
                "Content-Disposition": f'inline; filename="{session.id}.{fmt}"'})
        run = runs[0]
    path = store.run_dir(session.id, run.id) / f"transcript.{fmt}"
    if not await asyncio.to_thread(path.exists):
        raise web.HTTPNotFound(text="This run produced no transcript")
    return web.FileResponse(path, headers={
        "Content-Type": f"{CONTENT_TYPES[fmt]}; charset=utf-8",
        # a run asked for by id is named by it too (runs of one session clashed in a browser)
        "Content-Disposition": (f'inline; filename="{session.id}.{fmt}"' if run_id is None
                                else f'inline; filename="{session.id}.{run.id[:8]}.{fmt}"'),
    })


def _joined(store: SessionStore, session_id: str, runs: list[Any], fmt: str) -> str:
    """The live runs of a session recorded in parts, one after another, in `fmt`."""
    from workbench.engine.formats import WRITERS, load_served

    return WRITERS[fmt](load_served(store.session_dir(session_id) / "runs", [r.id for r in runs]))


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
    _refuse_if_recording(state, session.id)
    if session.status == "recording":
        raise web.HTTPConflict(text="Session is recording; stop it first")
    if not await asyncio.to_thread(state.store.audio_path(session.id).exists):
        raise web.HTTPConflict(text="This session has no recorded audio to process")
    # Checked with workbench.engine.config, not the pipeline: the server never imports torch.
    config = _checked_run_config(request, config, "run configuration")
    try:
        run = await state.jobs.submit(session.id, config, waiting_limit=True)
    except TooManyRuns as exc:
        raise web.HTTPTooManyRequests(text=str(exc)) from None
    except Exception:
        if await asyncio.to_thread(state.store.get_session, session.id) is None:
            raise web.HTTPNotFound(text="Session not found") from None  # deleted meanwhile
        raise
    return web.json_response(run.serialize(), status=202)


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not await asyncio.to_thread(page.exists):
        raise web.HTTPNotFound(text="No recorder page installed")
    return web.FileResponse(page)


# ---------------------------------------------------------------------- lifecycle


# Threads for blocking file and SQLite work (asyncio.to_thread).  The default pool has
# cpu_count + 4 threads; with hundreds of recordings their fsyncs queue up behind each
# other and reply latency suffers (benchmarks/load.py), so allow more to wait on the disk.
IO_THREADS = 32
# Threads for MP4 encodes (FFmpeg runs in each): apart from the I/O threads, so that
# downloads of many sessions at once delay each other, not the recordings.
ENCODE_THREADS = 2


async def _on_startup(app: web.Application) -> None:
    state = app[STATE]
    state.lock.acquire()  # before recovery, which takes open recordings for crash leftovers
    try:  # (a start-up that fails runs no cleanup: the lock must not outlive it)
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(IO_THREADS, thread_name_prefix="io"))
        state.encoder = concurrent.futures.ThreadPoolExecutor(ENCODE_THREADS,
                                                              thread_name_prefix="encode")
        await asyncio.to_thread(recover, state.store, state.config.limits.max_duration_seconds)
        await asyncio.to_thread(requeue_orphans, state.store, state.run_config)
        await asyncio.to_thread(fail_live_runs, state.store)
        await state.jobs.start()
        state.live.start()
    except BaseException:
        state.lock.release()
        raise


async def _on_shutdown(app: web.Application) -> None:
    state = app[STATE]
    state.closing = True
    # Concurrently: one client slow to answer the close must not hold up the others.
    await asyncio.gather(*(state.close(ws, WSCloseCode.GOING_AWAY, b"Server shutdown")
                           for ws in list(state.sockets)), return_exceptions=True)


async def _on_cleanup(app: web.Application) -> None:
    state = app[STATE]
    # Recordings whose handler did not get to run its `finally:` yet.
    for conn in list(state.recording.values()):
        await conn.finish("shutdown")
    # Finalisations started by handlers that were cancelled meanwhile.
    while state.finishing:
        await asyncio.gather(*list(state.finishing), return_exceptions=True)
    for task in list(state.retrying):
        task.cancel()
    await asyncio.gather(*list(state.retrying), return_exceptions=True)
    try:
        if state.encoder is not None:  # encodes under way end; waiting ones are dropped
            await asyncio.to_thread(state.encoder.shutdown, True, cancel_futures=True)
        await state.live.close()
        await state.jobs.close()
        state.store.close()
    finally:
        state.lock.release()


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
    state.live = LiveHub(state.store, state.notify, max_streams=config.max_live_sessions,
                         data_dir=str(config.data_dir), log_level=config.log_level,
                         warm=config.live_warm, config=config.live_config)
    app[STATE] = state
    app.router.add_get(routes.HEALTH, health)
    app.router.add_post(routes.SESSIONS, create_session)
    app.router.add_get(routes.SESSIONS, list_sessions)
    app.router.add_get(routes.SESSION, get_session)
    app.router.add_delete(routes.SESSION, delete_session)
    app.router.add_get(routes.SESSION_AUDIO, get_audio)
    app.router.add_get(routes.SESSION_TRANSCRIPT, get_transcript)
    app.router.add_get(routes.SESSION_RUNS, list_runs)
    app.router.add_post(routes.SESSION_RUNS, create_run)
    app.router.add_get(routes.SESSION_RUN, get_run)
    app.router.add_get(routes.WEBSOCKET, websocket_handler)
    app.router.add_get(routes.INDEX, index)
    if STATIC_DIR.exists():
        app.router.add_static(routes.STATIC, STATIC_DIR, follow_symlinks=False)
    app.on_startup.append(_on_startup)
    app.on_response_prepare.append(add_security_headers)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


__all__ = ["create_app", "json"]
