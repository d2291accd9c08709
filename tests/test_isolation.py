"""Child processes for foreign native code: real crashes there, a live caller here."""

from __future__ import annotations

import ctypes
import os
import signal
import time

import pytest

from workbench.research.isolation import ChildCrashed, IsolatedProcess, run_isolated

pytestmark = pytest.mark.timeout(120)


def test_a_segfault_in_native_code_is_an_exception_and_the_next_call_gets_a_new_child() -> None:
    with IsolatedProcess("crashy") as child:
        first = child.call(os.getpid)
        assert first != os.getpid() and child.pid == first
        with pytest.raises(ChildCrashed, match=r"crashy: the child process died of SIGSEGV "
                                               r"\(segmentation fault\)") as crash:
            child.call(ctypes.string_at, 0)  # reads address 0 in C
        assert crash.value.signal == signal.SIGSEGV and crash.value.exitcode == -11
        assert "string_at" in crash.value.log  # faulthandler's traceback from the child
        assert child.pid is None
        second = child.call(os.getpid)
        assert second not in (first, os.getpid())
    assert child.pid is None


def test_sigill_is_named_and_exceptions_and_timeouts_come_back() -> None:
    with pytest.raises(ChildCrashed, match=r"SIGILL \(illegal instruction\)") as crash:
        run_isolated(signal.raise_signal, signal.SIGILL)
    assert crash.value.signal_name == "SIGILL"
    with pytest.raises(ChildCrashed, match="exited with status 3"):
        run_isolated(os._exit, 3)
    with IsolatedProcess("calls") as child:
        with pytest.raises(ValueError, match="invalid literal") as error:
            child.call(int, "not a number")
        assert any("in the isolated child process (calls)" in n for n in error.value.__notes__)
        assert child.call(sum, [1, 2, 3]) == 6  # the same child goes on after an exception
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="no answer within 0.5 s"):
            child.call(time.sleep, 30, timeout=0.5)
        assert time.monotonic() - t0 < 10
        assert child.call(divmod, 7, 2) == (3, 1)


def test_an_interrupted_call_never_hands_its_reply_to_the_next_call() -> None:
    """Ctrl-C while the child works: the child goes, so the next calls get their own
    answers (a child left at work would answer the next call with the old result)."""
    import _thread
    import signal
    import threading

    # interrupt_main() acts through the SIGINT handler: make it Python's own for this test
    # (a library used by an earlier test in the same process may have left another one)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with IsolatedProcess("interrupted") as child:
        first = child.call(os.getpid)
        timer = threading.Timer(0.3, _thread.interrupt_main)
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                child.call(time.sleep, 2)
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        assert child.pid is None  # the busy child was ended
        assert child.call(divmod, 7, 2) == (3, 1)
        assert child.call(abs, -5) == 5
        assert child.pid not in (None, first)


def test_a_child_that_dies_before_reading_its_start_leaves_nothing_open(monkeypatch) -> None:
    import gc
    import sys
    import warnings

    # A payload larger than the socket's buffer: start() is still sending it when the
    # child (whose Python cannot even start without its standard library) dies.
    monkeypatch.setattr(sys, "path", [*sys.path, "x" * (16 << 20)])
    child = IsolatedProcess("stillborn", env={"PYTHONHOME": "/nonexistent"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ChildCrashed, match="stillborn: the child process exited with status 1"):
            child.start()
        assert child.pid is None
        del child
        gc.collect()
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, [str(w.message) for w in unclosed]
