"""Start the recording server as a subprocess on a free loopback port (for notebooks and tests).

``LocalServer`` is the one place where the workbench reaches for the server: it
runs ``python -m server`` in a child process, waits until ``/api/health``
answers, and stops it cleanly.  ``connect_or_start()`` uses the server named by
``WORKBENCH_SERVER_URL`` when set.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence, Union

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalServer:
    """A server process on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(self, data_dir: Union[str, os.PathLike], *, port: Optional[int] = None,
                 args: Sequence[str] = (), env: Optional[dict[str, str]] = None,
                 log_path: Optional[Union[str, os.PathLike]] = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self._port_chosen = not port  # (a chosen port taken meanwhile: choose another)
        self.args = list(args)
        self.env = env or {}
        self.log_path = Path(log_path) if log_path else self.data_dir / "server.log"
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "LocalServer":
        """Start the process and wait until it says it serves and is healthy. A port given
        that is taken is a RuntimeError (another server there would answer the health
        check for it); a port chosen here that was taken meanwhile (by another process
        that asked for a free port too) is replaced, up to three times. A server already
        running is left as it is (a second process on its data would fail, and the first
        one would no longer be stopped)."""
        if self.process is not None and self.process.poll() is None:
            return self
        attempts = 3 if self._port_chosen else 1
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
            if self._launch(timeout, last=attempt == attempts - 1):
                return self
        raise RuntimeError(f"no free port in {attempts} tries")  # (the last one raises first)

    def _launch(self, timeout: float, last: bool) -> bool:
        """One start on ``self.port``; False when the port was taken and another may be
        tried (not `last`)."""
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:  # as the server binds (SO_REUSEADDR): only a listening socket stops it
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", self.port))
        except OSError as exc:
            if not last:
                return False
            raise RuntimeError(f"port {self.port} is taken ({exc.strerror or exc}): another "
                               "server may be running there") from None
        finally:
            probe.close()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        log = open(self.log_path, "ab")
        logged = log.tell()  # (the log may be shared: what this start wrote comes after)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT),
            start_new_session=True,
        )
        log.close()
        # The server goes with its owner: at the interpreter's exit (a kernel restarted, a
        # script that never called stop(): it ran on in its own session, and a second one
        # was started on the same data) and when the wait below is interrupted.
        atexit.register(self.stop)
        # Its own "Serving on" line first: a health answer alone may come from another
        # server that took the port meanwhile (this one then exits: address in use).
        serving = f":{self.port} (data: "  # (in "Serving on http://HOST:PORT (data: ...")
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    why = self._why(logged)
                    if not last and "Address already in use" in why:
                        atexit.unregister(self.stop)
                        return False
                    raise RuntimeError(f"server exited with code {self.process.returncode}"
                                       f"{why}; see {self.log_path}")
                if any(line.startswith("Serving on http://") and serving in line
                       for line in self._written(logged).splitlines()) and self.healthy():
                    return True
                time.sleep(0.1)
        except BaseException:  # (Ctrl-C while it starts)
            self.kill()
            raise
        self.stop()
        raise TimeoutError(f"server did not become healthy within {timeout} s")

    def _written(self, offset: int) -> str:
        """What the server wrote to its log after ``offset``."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _why(self, offset: int) -> str:
        """``: <its last "error:" line>`` of what the server wrote to its log after ``offset``."""
        errors = [line.strip() for line in self._written(offset).splitlines()
                  if line.startswith("error:")]
        return f": {errors[-1]}" if errors else ""

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/api/health", timeout=1) as r:
                return json.load(r).get("status") == "ok"
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, wait for a clean exit (SIGKILL after ``timeout``); returns the exit code."""
        atexit.unregister(self.stop)
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash)."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connect_or_start(data_dir: Union[str, os.PathLike] = "data", **kwargs: object) -> Union[str, LocalServer]:
    """The URL in ``WORKBENCH_SERVER_URL`` if set, else a freshly started :class:`LocalServer`."""
    url = os.environ.get("WORKBENCH_SERVER_URL")
    if url:
        return url.rstrip("/")
    return LocalServer(data_dir, **kwargs).start()  # type: ignore[arg-type]
