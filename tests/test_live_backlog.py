"""How far live work is behind the audio (`server.live_backlog.Backlog`), across resumes
that change the input format, and what the server says when live results end at `stop`."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import pytest

from server.live import OFF_BACKLOG, LiveHub, LiveStream
from server.live_backlog import MAX_PENDING_BYTES, Backlog
from server.sessions import SessionStore
from workbench.engine.audio import InputFormat

PCM16 = 16000 * 2  # bytes a second: 16 kHz mono
PCM48 = 48000 * 2 * 2  # 48 kHz stereo


def test_waiting_bytes_count_at_the_rate_of_the_part_they_belong_to() -> None:
    """3 s of 48 kHz stereo PCM waiting after a resume are 3 s, whatever came before.
    Before, one rate for every part read them as 18 s after 60 s of 16 kHz mono, and as
    about 144 s after a minute of WebM: a false `live_paused`, or live results off."""
    pcm = Backlog()
    pcm.begin_part("pcm_s16le", PCM16)
    assert pcm.add(60 * PCM16)
    pcm.report(60 * PCM16, 60.0, 60.0)
    pcm.begin_part("pcm_s16le", PCM48)
    assert pcm.add(3 * PCM48) and pcm.seconds() == pytest.approx(3.0)

    webm = Backlog()
    webm.begin_part("webm", None)
    webm.add(60 * 4000)  # 32 kbit/s
    webm.report(60 * 4000, 60.0, 60.0)
    webm.begin_part("pcm_s16le", PCM48)
    webm.add(3 * PCM48)
    assert webm.seconds() == pytest.approx(3.0)


def test_a_compressed_part_is_measured_on_its_own_bytes() -> None:
    """After a PCM part, a WebM part's waiting bytes count at the rate the worker decodes
    that part at (not the PCM's: 48 times too few seconds here)."""
    b = Backlog()
    b.begin_part("pcm_s16le", PCM48)
    b.add(60 * PCM48)
    b.report(60 * PCM48, 60.0, 60.0)
    b.begin_part("webm", None)
    b.add(3 * 4000)
    b.report(60 * PCM48 + 4000, 61.0, 61.0)  # one second of it decoded and taken up
    assert b.seconds() == pytest.approx(2.0)
    b.report(60 * PCM48 + 4000, 61.0, 60.5)  # and the engines half a second behind
    assert b.seconds() == pytest.approx(2.5)


def test_a_compressed_part_after_another_is_measured_past_the_last_one_s_tail() -> None:
    """A WebM part's last frames come out of the worker's decoder only once it hears of
    the next part: they are not the new part's audio (counted so, 3 s of the new part's
    bytes at 4000 B/s read as 1.5 s waiting for 1 s here)."""
    b = Backlog()
    b.begin_part("webm", None)
    b.add(40000)
    b.report(40000, 9.0, 9.0)  # 10 s of audio sent, its last second not decoded yet
    b.begin_part("webm", None)
    b.add(12000)
    b.report(40000, 9.0, 9.0)  # a report at the boundary, before the tail is out
    b.report(44000, 11.0, 11.0)  # that second, and the new part's first
    b.report(48000, 12.0, 12.0)
    assert b.seconds() == pytest.approx(1.0)


def test_more_than_the_queue_holds_is_an_overflow() -> None:
    b = Backlog()
    b.begin_part("pcm_s16le", PCM16)
    assert b.add(MAX_PENDING_BYTES) and not b.overflow
    assert not b.add(1) and b.overflow and b.forwarded == MAX_PENDING_BYTES
    assert "MiB waiting" in b.reason() and b.reason().startswith(
        "Live results fell too far behind the audio")


async def test_live_results_ended_at_stop_say_they_are_not_saved(tmp_path: Path) -> None:
    """A recording that stops while its live work is more than OFF_BACKLOG s behind does
    not save these live results as a run, and `live_paused` says so.  Before, it said "Live results are off for the
    rest of this recording; the recording goes on" although the recording had ended."""
    said: list[dict[str, Any]] = []

    async def notify(session_id: str, message: dict[str, Any], source: Any = None) -> None:
        said.append(message)

    store = SessionStore(tmp_path)
    hub = LiveHub(store, notify, max_streams=1, data_dir=str(tmp_path))
    stream = LiveStream(hub, "s1")
    # a stand-in for the worker's process: finish() asks whether it is alive (the
    # worker's own behaviour is tested through the server in test_live_server.py)
    stream.process = mp.get_context("spawn").Process(target=time.sleep, args=(60,), daemon=True)
    stream.process.start()
    try:
        stream.state = "running"
        stream.begin_part(InputFormat("pcm_s16le"))
        seconds = int(OFF_BACKLOG) + 10
        stream.feed(b"\0" * (seconds * PCM16))
        assert await stream.finish(store) is None
    finally:
        stream.process.kill()
        stream.process.join(10)
    assert said == [{"type": "live_paused", "session_id": "s1",
                     "reason": f"Live results fell {seconds} s behind the audio. "
                               "These live results are not saved as a run"}]
    assert stream.state == "off" and not hub.unsaved
