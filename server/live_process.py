"""A live worker process as the server sees it (`WorkerProcess`): started with
:func:`server.live_worker.live_worker_main`, its messages moved over two pipes by two
threads, never by the event loop: what goes to it waits in a queue (`_outbox`; None ends
it), what it says arrives in an asyncio queue (`_inbox`; ``("eof",)`` when it is gone)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import threading
from typing import Any, Optional

from .live_worker import live_worker_main


class WorkerProcess:
    """A live worker process and its two pipe threads."""

    def __init__(self) -> None:
        self.process: Any = None
        self._outbox: "queue.Queue[Optional[tuple[Any, ...]]]" = queue.Queue()
        self._inbox: "asyncio.Queue[tuple[Any, ...]]" = asyncio.Queue()
        self._conn_out: Any = None
        self._conn_in: Any = None
        self._threads: list[threading.Thread] = []

    def spawn(self, spec: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        """Start the worker process and its two pipe threads (blocking: from a thread)."""
        ctx = mp.get_context("spawn")
        to_child, from_server = ctx.Pipe(duplex=False)
        from_child, to_server = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=live_worker_main, args=(to_child, to_server, spec),
                                   name="workbench-live", daemon=True)
        self.process.start()
        to_child.close()  # the child's ends: EOF here when the child is gone
        to_server.close()
        self._conn_out, self._conn_in = from_server, from_child
        self._threads = [
            threading.Thread(target=self._send_loop, name="live-send", daemon=True),
            threading.Thread(target=self._recv_loop, args=(loop,), name="live-recv",
                             daemon=True)]
        for t in self._threads:
            t.start()

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                break
            try:
                self._conn_out.send(item)
            except (BrokenPipeError, OSError):
                break  # the worker is gone: the reader reports it
        while True:  # drop what is left (the recording has it on disk)
            try:
                self._outbox.get_nowait()
            except queue.Empty:
                break
        try:
            self._conn_out.close()
        except OSError:
            pass

    def _recv_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                msg = self._conn_in.recv()
            except (EOFError, OSError):
                msg = ("eof",)
            except Exception as exc:  # noqa: BLE001 - a garbled message: treat as gone
                msg = ("error", f"The live worker sent an unreadable message ({exc!r})")
            try:
                loop.call_soon_threadsafe(self._inbox.put_nowait, msg)
            except RuntimeError:  # the loop is closed: the server is gone
                return
            if msg[0] == "eof":
                return

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def _kill(self) -> None:
        self._outbox.put(None)
        if self.process is not None and self.process.is_alive():
            self.process.kill()  # and reaped (it stayed a zombie until the next spawn)
            threading.Thread(target=self.process.join, args=(10,), daemon=True).start()


__all__ = ["WorkerProcess"]
