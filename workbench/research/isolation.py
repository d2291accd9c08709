"""Run foreign native code in a child process, so that its crash is an exception here.

A library built for another CPU dies with SIGILL, a bad pointer with SIGSEGV; either
takes the whole Python process with it -- a notebook kernel, a pytest run, a worker
pool.  An `IsolatedProcess` is a fresh Python interpreter (``subprocess``, so it works
from daemonic Dask workers too) that runs the functions sent to it one at a time and
sends back their results; when it dies, the caller gets `ChildCrashed` naming the
signal, and the next call starts a new child::

    with IsolatedProcess("fbank") as child:
        features = child.call(extract, samples)   # runs in the child
    run_isolated(ctypes.string_at, 0)             # ChildCrashed: ... SIGSEGV (...)

Functions and arguments travel by pickle (functions by reference: they must be
importable, e.g. module-level).  State that should outlive one call lives in the
child's module globals (a model loaded on first use stays loaded).  The child's output
goes to a log file whose tail is kept with a crash (`ChildCrashed.log`).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import weakref
from multiprocessing.connection import Connection
from typing import Any, Callable, Optional, cast

__all__ = ["ChildCrashed", "IsolatedProcess", "run_isolated", "signal_description"]

# The child's first lines use the standard library only: the parent's sys.path arrives
# first, then this module can be imported from wherever the parent imported it.
_BOOT = (
    "import faulthandler, sys\n"
    "from multiprocessing.connection import Connection\n"
    "faulthandler.enable()\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "sys.path[:] = conn.recv()\n"
    "from workbench.research.isolation import _serve\n"
    "_serve(conn)\n"
)
_LOG_TAIL = 4000  # characters of the child's output kept with a crash


def signal_description(number: int) -> str:
    """``"SIGILL (illegal instruction)"`` for a signal number."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    text = signal.strsignal(number) or ""
    return f"{name} ({text.lower()})" if text else name


class ChildCrashed(RuntimeError):
    """The child process died (a signal or an exit) before answering a call.

    `signal` is the signal number that killed it (None for an exit), `exitcode` the
    ``returncode`` (negative for a signal), `log` the tail of its output."""

    def __init__(self, message: str, *, exitcode: Optional[int], log: str = "") -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.signal = -exitcode if exitcode is not None and exitcode < 0 else None
        self.log = log

    @property
    def signal_name(self) -> Optional[str]:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"


def _stop(process: subprocess.Popen, conn: Optional[Connection], log: Any) -> None:
    """Close the child's channel (it exits on end of file), kill it if it lingers."""
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
    if process.poll() is None:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


class IsolatedProcess:
    """A child Python process that runs functions for this one (see the module docstring).

    `name` labels the child (its command line and messages).  The child starts on the
    first `call` (or `start`) and keeps running between calls; `close` ends it, as does
    garbage collection or the end of this process.  A child that crashes is replaced by a
    fresh one on the next call.  `env` adds variables to the child's environment.
    """

    def __init__(self, name: str = "isolated", *, env: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.env = dict(env or {})
        self._process: Optional[subprocess.Popen] = None
        self._conn: Optional[Connection] = None
        self._log: Any = None
        self._finalizer: Optional[weakref.finalize] = None

    @property
    def pid(self) -> Optional[int]:
        """The running child's process id (None before it starts or after it ended)."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def start(self) -> "IsolatedProcess":
        """Start the child now (a no-op while one is running)."""
        if self.pid is not None:
            return self
        self._discard()
        ours, theirs = socket.socketpair()
        self._log = tempfile.TemporaryFile(mode="w+b", prefix=f"isolated-{self.name}-")
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), self.name],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, env={**os.environ, **self.env}, close_fds=True)
        except BaseException:
            ours.close()
            self._log.close()
            self._log = None
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        # before the first send: a child that dies at once leaves its socket and log closed
        self._finalizer = weakref.finalize(self, _stop, self._process, self._conn, self._log)
        try:
            self._conn.send(list(sys.path))
        except (BrokenPipeError, ConnectionResetError):  # died at once (killed, or a crash)
            raise self._crashed() from None
        return self

    def call(self, function: Callable[..., Any], /, *args: Any,
             timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` in the child; its result, or its exception raised
        here (with the child's traceback as a note).  ChildCrashed when the child dies
        first; TimeoutError (the child killed) when it takes longer than `timeout` s."""
        self.start()
        assert self._conn is not None and self._process is not None
        try:
            self._conn.send((function, args, kwargs))
        except (BrokenPipeError, ConnectionResetError):
            raise self._crashed() from None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            status, payload, text = self._await_reply(deadline, timeout)
        except BaseException:
            # Interrupted (Ctrl-C in a notebook) or crashed: a child still at work would
            # hand this call's reply to the next call, so it goes.
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
                self._process.wait()
                self._discard()
            raise
        if status == "ok":
            return payload
        if text:
            payload.add_note(f"in the isolated child process ({self.name}):\n{text}")
        raise payload

    def _await_reply(self, deadline: Optional[float], timeout: Optional[float]
                     ) -> tuple[str, Any, str]:
        assert self._conn is not None and self._process is not None
        while True:
            # A grandchild may hold the socket open after the child died: look at the
            # child itself now and then, not only at the socket.
            try:
                ready = self._conn.poll(0.5)
            except (OSError, EOFError):
                ready = True
            if ready:
                try:
                    status, payload, text = self._conn.recv()
                except (EOFError, OSError):
                    raise self._crashed() from None
                except Exception as exc:  # noqa: BLE001 - a reply this process cannot load
                    raise RuntimeError(f"{self.name}: the child's reply could not be read: "
                                       f"{type(exc).__name__}: {exc}") from exc
                return status, payload, text
            if self._process.poll() is not None:
                raise self._crashed()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no answer within {timeout:g} s; "
                                   "the child process was killed")

    def _crashed(self) -> ChildCrashed:
        assert self._process is not None
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # socket gone but the child lives on: end it
            self._process.kill()
            code = self._process.wait()
        log = ""
        if self._log is not None:
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - _LOG_TAIL))
            log = self._log.read().decode("utf-8", "replace")
        how = (f"died of {signal_description(-code)}" if code < 0
               else f"exited with status {code}")
        self._discard()
        return ChildCrashed(f"{self.name}: the child process {how}", exitcode=code, log=log)

    def _discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._process = self._conn = self._log = self._finalizer = None

    def close(self) -> None:
        """End the child (it finishes the call in progress, if any, first)."""
        self._discard()

    def __enter__(self) -> "IsolatedProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.pid is not None else "not running"
        return f"IsolatedProcess({self.name!r}, {state})"


def run_isolated(function: Callable[..., Any], /, *args: Any, timeout: Optional[float] = None,
                 name: Optional[str] = None, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in a fresh child process that ends afterwards."""
    with IsolatedProcess(name or cast(str, getattr(function, "__name__", "isolated"))) as child:
        return child.call(function, *args, timeout=timeout, **kwargs)


def _serve(conn: Connection) -> None:
    """The child's loop: run each (function, args, kwargs) received, send the outcome."""
    while True:
        try:
            function, args, kwargs = conn.recv()
        except EOFError:  # the parent closed the channel (or died)
            return
        try:
            reply: tuple[str, Any, str] = ("ok", function(*args, **kwargs), "")
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            text = traceback.format_exc()
            try:  # an exception that does not survive pickling arrives as a RuntimeError
                pickle.loads(pickle.dumps(exc))
            except Exception:  # noqa: BLE001
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            reply = ("error", exc, text)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), reply[2]))
