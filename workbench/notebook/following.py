"""Following a run to its end over REST and the session's event socket, through a server
restart (`AsyncClient.wait_for_run`, and `record` after its connection dropped)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

import aiohttp

from workbench.notebook.errors import ServerError

if TYPE_CHECKING:
    from workbench.notebook.client import AsyncClient

# HTTP statuses of a server (or a proxy before it) that is away for a moment
AWAY = (502, 503, 504)
_ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
          aiohttp.WSMsgType.ERROR)


async def follow_run(client: "AsyncClient", session_id: str, run_id: str,
                     on_event: Optional[Callable[[dict[str, Any]], None]], poll: float,
                     reached: bool) -> dict[str, Any]:
    """Run `run_id` of `session_id` once it has ended (`AsyncClient.wait_for_run`): REST
    polls of its runs and the session's event socket (its progress to `on_event`), both
    opened again after a server restart; `reached`: the server has answered before."""
    deadline = time.monotonic() + client.timeout
    seen: Any = None
    away: Optional[BaseException] = None  # why the server could not be reached
    away_since = 0.0
    ws: Optional[aiohttp.ClientWebSocketResponse] = None
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:  # (each attempt within the time left: a silent network hangs too)
                if ws is None or ws.closed:  # (first, or after a restart)
                    ws = await asyncio.wait_for(client._connect(session_id), max(left, poll))
                    reached = True  # (it answered: what fails from here may pass)
                runs = await asyncio.wait_for(client.runs(session_id), max(left, poll))
            except ServerError as exc:  # (its sockets heard processing_failed, maybe not us)
                if exc.status == 404:
                    raise ServerError(f"Session {session_id} was deleted: run {run_id} "
                                      f"will not end ({exc})", status=404) from None
                if exc.status not in AWAY or not reached:
                    raise
                away, away_since = exc, away_since if away else time.monotonic()
            except aiohttp.ClientSSLError:
                raise
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                    OSError) as exc:  # restarting (or killed mid-answer); timeouts too
                if not reached:
                    raise
                away, away_since = exc, away_since if away else time.monotonic()
            else:
                reached, away = True, None
            if away is not None:
                await asyncio.sleep(poll)
                continue
            run = next((r for r in runs if r["id"] == run_id), None)
            if run is None:
                raise ServerError(f"no run {run_id} in session {session_id}", status=404)
            if run["status"] in ("completed", "failed"):
                return run
            if (run["status"], run.get("stage"), run.get("progress")) != seen:
                seen = (run["status"], run.get("stage"), run.get("progress"))
                deadline = time.monotonic() + client.timeout  # it moves: wait on
            assert ws is not None
            if ws.closed:  # no more events (e.g. a server restart): poll, then reconnect
                await asyncio.sleep(poll)
                continue
            try:
                msg = await ws.receive(timeout=poll)
            except asyncio.TimeoutError:
                continue
            if msg.type in _ENDED:  # (a socket that closes at once: one poll's pause)
                await asyncio.sleep(poll)
            elif msg.type == aiohttp.WSMsgType.TEXT and on_event is not None:
                event = json.loads(msg.data)
                if event.get("run_id") == run_id:
                    on_event(event)
    finally:
        if ws is not None:
            await ws.close()
    message = f"run {run_id} did not move for {client.timeout:g} s"
    if away is not None:
        message += (f", and the server has not answered for the last "
                    f"{time.monotonic() - away_since:.0f} s ({away})")
    raise TimeoutError(message)


__all__ = ["AWAY", "follow_run"]
