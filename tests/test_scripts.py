"""``scripts/run.sh`` (``make run``) and ``scripts/demo.sh`` (``make demo``) started for real
on a pseudo-terminal, as from a shell: one Ctrl-C, or a SIGTERM to the script, stops the
server and JupyterLab; a port in use, or a server that dies at start, stops the start."""

from __future__ import annotations

import os
import socket
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

from workbench.notebook.local_server import free_port

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


class Script:
    """A start-up script running as the foreground job of its own terminal (a pty), as
    `make run` does in a shell; what it writes is kept in `output`."""

    def __init__(self, name: str, port: int, ui_port: int, data: Path, env: dict[str, str]):
        master, terminal = os.openpty()
        # setsid --ctty: a session whose controlling terminal is the pty, so that the ^C
        # written to it sends SIGINT to the foreground process group, as a keyboard does.
        # env --default-signal: the signals a terminal's shell leaves at their default for
        # the command it runs (this process may ignore some: the script could then not
        # trap them, and one Ctrl-C did nothing; seen with the suite on two workers)
        self.process = subprocess.Popen(
            ["env", "--default-signal=HUP,INT,QUIT,TERM", "setsid", "--ctty", "bash",
             str(ROOT / "scripts" / name), str(port), str(ui_port), str(data)],
            stdin=terminal, stdout=terminal, stderr=terminal, cwd=ROOT, env=env)
        os.close(terminal)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.started: list[psutil.Process] = []  # what it started, seen by `note_children`

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every holder of the terminal has closed it
                break
            if not chunk:
                break
            self._chunks.append(chunk)

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def note_children(self) -> None:
        try:
            self.started += psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass

    def ctrl_c(self) -> None:
        os.write(self._master, b"\x03")

    def running(self) -> list[psutil.Process]:
        """What the script started that still runs (zombies left to their new parent not)."""
        alive = []
        for proc in self.started:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        return alive

    def exit_status(self, timeout: float) -> int:
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the script still runs after {timeout} s:\n{self.output}\n"
                        f"{self.signal_state()}")
        # what it wrote last may still be in the terminal: the reader ends once no process
        # holds it (a CI run read '' from a script that had said why it stopped)
        self._reader.join(5)
        return status

    def signal_state(self) -> str:
        """Why a signal may not have acted: the terminal's ISIG, and per process of the
        script its group, session, the terminal's foreground group and its signal masks."""
        lines = [f"terminal ISIG: {bool(termios.tcgetattr(self._master)[3] & termios.ISIG)}"]
        try:
            procs = [psutil.Process(self.process.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        for proc in procs:
            try:
                stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                masks = [line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                         if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))]
                lines.append(f"{proc.pid} {command_line(proc)[:60]!r} state {stat[0]} pgrp "
                             f"{stat[2]} session {stat[3]} foreground {stat[5]} wchan "
                             f"{Path(f'/proc/{proc.pid}/wchan').read_text()} "
                             + " ".join(m.replace(":\t", " ") for m in masks))
            except (OSError, psutil.NoSuchProcess):
                pass
        return "\n".join(lines)

    def wait_until_stopped(self, timeout: float) -> tuple[int, list[psutil.Process]]:
        """The script's exit status, and what it started that still runs after it."""
        status = self.exit_status(timeout)
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        return status, self.running()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.note_children()
            self.process.kill()
        for proc in self.running():
            proc.kill()
        self.process.wait(10)
        self._reader.join(5)
        os.close(self._master)


@pytest.fixture
def start_script(tmp_path: Path) -> Iterator[Callable[..., Script]]:
    """Start a script on free loopback ports with a temporary data dir; all killed at the end."""
    scripts: list[Script] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter")}

    def _start(name: str, port: int = 0, ui_port: int = 0, data: Path | None = None) -> Script:
        script = Script(name, port or free_port(), ui_port or free_port(),
                        data or tmp_path / "data", env)
        scripts.append(script)
        return script

    yield _start
    for script in scripts:
        script.kill()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port in use: a socket listening on it that never accepts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, script: Script) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if script.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} (script status {script.process.poll()}):\n{script.output}")
        time.sleep(0.2)


# what each script starts beside the server, as its command line shows it
UI = {"run.sh": "jupyter-lab", "demo.sh": "voila"}


def command_line(proc: psutil.Process) -> str:
    """`proc`'s command line, or "" when it has ended since it was seen (a short-lived
    child of JupyterLab's: CI failed on one gone between the two calls)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return ""


def started(start_script: Callable[..., Script], name: str) -> tuple[Script, int, int]:
    """The script with its server and its JupyterLab or Voilà both answering."""
    port, ui_port = free_port(), free_port()
    script = start_script(name, port, ui_port)
    wait_until(lambda: "Recorder page" in script.output, 20, "no 'Recorder page' line", script)
    wait_until(lambda: answers(ui_port), 30, f"{UI[name]} did not answer", script)
    script.note_children()
    commands = [command_line(p) for p in script.started]
    assert any(UI[name] in c for c in commands) and any("-m server" in c for c in commands)
    return script, port, ui_port


@pytest.mark.parametrize("name", ["run.sh", "demo.sh"])
def test_one_ctrl_c_stops_the_server_and_the_notebook_server(
        start_script: Callable[..., Script], name: str) -> None:
    script, port, ui_port = started(start_script, name)
    script.ctrl_c()
    status, running = script.wait_until_stopped(20)
    assert status == 130, script.output
    assert not running, f"still running: {running}\n{script.output}"
    assert not answers(port) and not answers(ui_port)
    assert "Shut down this Jupyter server" not in script.output
    # the server stops on one signal only (a second one during its shutdown kills it halfway)
    assert "Traceback" not in script.output, script.output


def test_sigterm_to_the_script_stops_the_server_and_jupyterlab(
        start_script: Callable[..., Script]) -> None:
    script, port, lab_port = started(start_script, "run.sh")
    script.process.terminate()
    status, running = script.wait_until_stopped(20)
    assert status == 143, script.output
    assert not running, f"still running: {running}\n{script.output}"
    assert not answers(port) and not answers(lab_port)


@pytest.mark.parametrize("name", ["run.sh", "demo.sh"])
def test_a_server_port_in_use_stops_the_start(start_script: Callable[..., Script],
                                              listener: socket.socket, name: str) -> None:
    port = listener.getsockname()[1]
    ui_port = free_port()
    script = start_script(name, port, ui_port)
    status = script.exit_status(30)
    assert status == 1, script.output  # (the trap's bare kill made it 2)
    assert f"port {port} is in use" in script.output
    assert "Recorder page" not in script.output and not answers(ui_port)


@pytest.mark.parametrize("name", ["run.sh", "demo.sh"])
def test_a_server_that_dies_at_start_stops_the_start(start_script: Callable[..., Script],
                                                     tmp_path: Path, name: str) -> None:
    data = tmp_path / "not-a-directory"
    data.touch()  # the server fails to make its data dir
    ui_port = free_port()
    script = start_script(name, data=data, ui_port=ui_port)
    status = script.exit_status(30)
    assert status == 1, script.output
    assert "the server exited before it answered" in script.output
    assert "Recorder page" not in script.output and not answers(ui_port)


def test_a_jupyterlab_port_in_use_stops_the_start(start_script: Callable[..., Script],
                                                  listener: socket.socket) -> None:
    lab_port = listener.getsockname()[1]
    script = start_script("run.sh", ui_port=lab_port)
    status = script.exit_status(30)
    assert status == 1, script.output
    assert f"port {lab_port} (JupyterLab) is in use" in script.output
    assert "Recorder page" not in script.output
