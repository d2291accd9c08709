"""SessionPanel driven programmatically (no browser) against a real server."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from workbench.notebook.client import Client
from workbench.notebook.local_server import LocalServer
from workbench.notebook.widgets import SessionPanel


def wait_until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_panel_stream_stop_refresh_and_process_again(server: LocalServer, speech_dir: Path) -> None:
    with Client(server) as client:
        panel = SessionPanel(client, audio_dir=speech_dir)
        assert str(speech_dir / "speech.wav") in panel.file_picker.options
        # the threshold control starts at the pipeline's default
        from workbench.engine.config import DiarizationConfig

        assert panel.threshold.value == pytest.approx(DiarizationConfig().clustering_threshold)
        before = len(panel.sessions)

        # Stream in real time and stop half-way, as a user clicking "Stop".
        panel.file_picker.value = str(speech_dir / "speech.wav")
        panel.realtime.value = True
        panel.stream_button.click()
        wait_until(lambda: panel.recording is not None)
        time.sleep(1.5)
        panel.stop_button.click()
        rec = panel.last_action.result(timeout=60)
        stopped = rec.last("recording_stopped")
        assert 1.0 < stopped["duration_seconds"] < 4.0  # the clip is ~8.6 s
        assert rec.result["type"] == "processing_complete"
        assert panel.progress.value == 1.0

        # The table and picker show the new session, and it is selected.
        assert len(panel.sessions) == before + 1
        assert panel.selected == rec.session_id == panel.session_picker.value
        assert rec.session_id[:8] in panel.table.value and "completed" in panel.table.value

        # Process again with other settings: a second run with those options.
        panel.num_speakers.value = 2
        panel.threshold.value = 0.35
        panel.process_button.click()
        run = panel.last_action.result(timeout=60)
        assert run["status"] == "completed"
        assert run["config"]["num_speakers"] == 2
        assert run["config"]["clustering_threshold"] == pytest.approx(0.35)
        runs = client.runs(rec.session_id)
        assert len(runs) == 2
        assert any(e["type"] == "processing_progress" for e in panel.events)

        # A bad file gives a visible message, not a traceback.
        with pytest.raises(FileNotFoundError):
            panel.stream(speech_dir / "missing.wav")
        assert "no such file" in panel.status.value


def test_stop_stops_the_stream_under_way_not_the_one_queued_behind_it(
        server: LocalServer, speech_dir: Path) -> None:
    """Stream clicked twice, then Stop: the second stream (queued) sent nothing and the
    server processed an empty session (one stop event was shared by all streams)."""
    with Client(server) as client:
        panel = SessionPanel(client, audio_dir=speech_dir)
        first = panel.stream(speech_dir / "speech.wav", realtime=True)
        second = panel.stream(speech_dir / "speech.wav", realtime=False)
        wait_until(lambda: panel.recording is not None)
        time.sleep(1.5)
        panel.stop()
        cut = first.result(timeout=60).last("recording_stopped")["duration_seconds"]
        whole = second.result(timeout=60).last("recording_stopped")["duration_seconds"]
        assert 1.0 < cut < 4.0 and whole == pytest.approx(8.6, abs=0.3)


def test_a_detached_recording_followed_to_its_end_leaves_a_newer_ones_result(
        server: LocalServer, tmp_path: Path) -> None:
    """Record is enabled while a recording is `detached`: the old session's result, once
    its run ended, replaced the new recording's "Result" (title, session, player)."""
    import threading

    from workbench.notebook.dashboard import Dashboard

    release = threading.Event()

    def slow():  # type: ignore[no-untyped-def]  # recording until released
        while not release.wait(0.2):
            yield bytes(6400)

    with Client(server) as client:
        dashboard = Dashboard(client, work_dir=tmp_path)
        old = client.submit(client.aio.record(slow(), input_format="pcm_s16le"))
        try:
            wait_until(lambda: any(s["status"] == "recording" for s in client.list_sessions()))
            a = next(s["id"] for s in client.list_sessions() if s["status"] == "recording")
            dashboard.microphone.session_id = a
            dashboard.microphone.state = "detached"  # its socket closed: followed over REST
            following = dashboard.last_show
            b = client.create_session()["id"]
            dashboard.microphone.state = "connecting"
            dashboard.on_event({"type": "recording_started", "session_id": b, "format": "wav"})
            dashboard.microphone.session_id, dashboard.microphone.state = b, "recording"
        finally:
            release.set()
        old.result(timeout=60)
        following.result(timeout=60)
        assert dashboard.session_id == b and b[:8] in dashboard.result_title.value
        dashboard.close()


def test_a_recording_that_failed_is_no_longer_shown_as_recording(tmp_path: Path) -> None:
    """The connection lost while recording (a server restart): "Result" went on saying
    "recording session …"; a failed processing keeps its own message."""
    from workbench.notebook.dashboard import Dashboard

    dashboard = Dashboard("http://127.0.0.1:9", work_dir=tmp_path)  # (nothing listens)
    try:
        for last, title in ((None, "ended early: what arrived is kept"),
                            ({"type": "processing_failed", "message": "x"}, "processing failed: x")):
            dashboard.microphone.state = "connecting"
            dashboard.on_event({"type": "recording_started", "session_id": "s" * 36})
            dashboard.microphone.session_id, dashboard.microphone.state = "s" * 36, "recording"
            if last is not None:
                dashboard.on_event(last)
            dashboard.microphone.state = "failed"
            assert title in dashboard.result_title.value
    finally:
        dashboard.close()


def test_dashboard_removes_the_work_folder_it_made(tmp_path: Path) -> None:
    """A dashboard's temporary work folder goes with close(); a folder the caller gave
    stays."""
    from workbench.notebook.dashboard import Dashboard

    made = Dashboard("http://127.0.0.1:9")  # nothing listens: no request is needed here
    folder = made.work_dir
    assert folder.is_dir()
    made.close()
    assert not folder.exists()
    given = Dashboard("http://127.0.0.1:9", work_dir=tmp_path)
    given.close()
    assert tmp_path.is_dir()


def test_dashboard_says_when_a_recording_cannot_be_decoded(server: LocalServer) -> None:
    """The real server's answer to bytes that are no WebM (recording_stopped, then 4008,
    and no run): the dashboard shows the failure instead of "processing…" for ever (and
    the recording is a ServerError: no run follows)."""
    from workbench.notebook.client import ServerError
    from workbench.notebook.dashboard import Dashboard

    board = Dashboard(server)
    try:
        with pytest.raises(ServerError) as info:
            board.client.record([b"not a webm file at all " * 40], input_format="webm",
                                on_event=board.on_event)
        assert info.value.code == 4008
        assert [e.get("code") for e in board.events if e["type"] == "error"] == [4008]
        assert "could not be decoded" in board.result_title.value
    finally:
        board.close()


def test_a_panel_closes_its_thread_and_shows_a_refused_run(server: LocalServer) -> None:
    """"Process again" refused by the server (here: no such session) showed nothing (the
    error went to the widget's log only); a panel had no close(), so its action thread
    outlived the dashboard that closed it."""
    import threading

    from workbench.notebook.client import ServerError

    before = {t.ident for t in threading.enumerate()}
    panel = SessionPanel(server.url)
    with pytest.raises(ServerError):
        panel.process_again("no-such-session").result(timeout=30)
    assert "Session not found" in panel.status.value
    panel.refresh()
    panel._actions.submit(lambda: None).result(timeout=10)  # its worker thread starts
    panel.close()

    def left() -> list[str]:
        return [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]

    wait_until(lambda: not left(), timeout=10)


def test_a_refresh_keeps_the_selected_session_and_selects_nothing(server: LocalServer) -> None:
    """New sessions first in the picker moved its value to the newest and back: a refresh
    selected (drew, downloaded) two sessions, and a dashboard ended on the old one."""
    import numpy as np

    with Client(server) as client:
        older = client.record(np.zeros(1600, np.float32)).session_id
        panel = SessionPanel(client)
        panel.refresh()
        panel.session_picker.value = older  # the user picks it
        wait_until(lambda: panel.selected == older)
        picked: list[str] = []
        panel.on_select(picked.append)
        client.record(np.zeros(1600, np.float32))  # a new session, listed first
        panel.refresh()
        time.sleep(0.5)
        assert picked == [] and panel.selected == older
        assert panel.session_picker.value == older
        panel.close()


def test_auto_refresh_stops_even_during_a_refresh(server: LocalServer) -> None:
    """A refresh under way when auto-refresh was stopped scheduled the next one all the
    same, for ever; and one under way when the panel closed its client raised in the timer
    thread ("Event loop is closed")."""
    import asyncio
    import threading

    errors: list[BaseException] = []
    hook, threading.excepthook = threading.excepthook, lambda args: errors.append(args.exc_value)
    try:
        with Client(server) as client:
            panel = SessionPanel(client)
            refreshes: list[float] = []
            refresh = panel.refresh

            def slow_refresh() -> object:  # a busy server: each refresh takes 0.5 s
                refreshes.append(time.monotonic())
                time.sleep(0.5)
                return refresh()

            panel.refresh = slow_refresh  # type: ignore[method-assign]
            panel.auto_refresh(0.2)
            wait_until(lambda: len(refreshes) >= 2)
            time.sleep(0.1)  # inside a refresh
            panel.stop_auto_refresh()
            stopped = time.monotonic()
            time.sleep(2.0)
            assert [t for t in refreshes if t > stopped] == []
            panel.close()
        own = SessionPanel(server.url)  # a panel that closes its own client
        listing = own.client.aio.list_sessions

        async def busy() -> object:  # a busy server: the call is under way at close
            await asyncio.sleep(1.0)
            return await listing()

        own.client.aio.list_sessions = busy  # type: ignore[method-assign]
        own.auto_refresh(0.2)  # (its first refresh runs here, the next in a timer thread)
        time.sleep(0.6)
        own.close()
        time.sleep(1.5)
        assert errors == []
    finally:
        threading.excepthook = hook


def test_process_again_shows_that_the_session_was_deleted(server: LocalServer) -> None:
    """The session deleted before "process again"'s run ended: the panel went on saying
    "run … queued" (progress 0), the job's error unread."""
    import numpy as np

    from workbench.notebook.client import ServerError

    with Client(server) as client:
        sid = client.record(np.zeros(16000, np.float32)).session_id
        panel = SessionPanel(client)
        start_run = client.start_run

        def start_then_delete(session_id: str, config: dict) -> dict:  # type: ignore[type-arg]
            run = start_run(session_id, config)
            client.delete_session(session_id)  # before the panel waits for the run
            return run

        client.start_run = start_then_delete  # type: ignore[method-assign]
        job = panel.process_again(sid)
        with pytest.raises(ServerError):
            job.result(timeout=30)
        assert f"Session {sid} was deleted" in panel.status.value
        assert "queued" not in panel.status.value and panel.progress.description == "failed"
        assert sid not in [s["id"] for s in panel.sessions]
        panel.close()


def test_dashboard_follows_a_detached_microphone(server: LocalServer) -> None:
    """The browser's socket closed while the server processed (state "detached"): the
    dashboard said "the refined run is processing…" for ever, the result never shown."""
    import numpy as np

    from workbench.notebook.dashboard import Dashboard

    board = Dashboard(server)
    try:  # the microphone's messages up to processing_started, then its socket closes
        rec = board.client.record(np.zeros(5 * 16000, np.float32), wait=False,
                                  on_event=board.on_event)
        assert "processing" in board.result_title.value
        board.microphone.session_id = rec.session_id
        board.microphone.state = "detached"
        assert board.last_show is not None
        board.last_show.result(timeout=60)
        assert [r["status"] for r in board.client.runs(rec.session_id)] == ["completed"]
        assert f"session {rec.session_id[:8]}: no transcript yet" in board.result_title.value
        assert board.url(rec.session_id, "audio", "wav") in board.downloads.value
    finally:
        board.close()


def test_a_refused_play_leaves_no_reference_for_the_next_recording(server: LocalServer,
                                                                   speech_dir: Path) -> None:
    """play()'s reference was kept when the server refused the start: the next recording
    (the microphone's) was scored against it."""
    import numpy as np

    from workbench.notebook.client import ServerError
    from workbench.notebook.dashboard import Dashboard
    from workbench.research.datasets.items import CorpusItem

    board = Dashboard(server, options={"num_speakers": "two"})  # refused by the server
    try:
        item = CorpusItem(uri="script", audio=speech_dir / "reference.wav")
        with pytest.raises(ServerError):
            board.play(speech_dir / "reference.wav", speed=4.0, reference=item)
        rec = board.client.record(np.zeros(1600, np.float32), on_event=board.on_event)
        assert board.session_id == rec.session_id
        assert rec.session_id not in board.references
    finally:
        board.close()


def test_a_result_shown_late_gives_way_to_a_newer_recording(server: LocalServer) -> None:
    """The previous session's result, still to be shown on the dashboard's thread (busy
    here) when a new recording starts, drew the old session under the new recording."""
    import threading

    import numpy as np

    from workbench.notebook.dashboard import Dashboard

    board = Dashboard(server)
    try:
        first = board.client.record(np.zeros(1600, np.float32))
        busy = threading.Event()
        board._work.submit(busy.wait, 60)
        board.on_event({"type": "processing_complete", "session_id": first.session_id})
        board.on_event({"type": "recording_started", "session_id": "0" * 32,
                        "live_results": False})
        busy.set()
        assert board.last_show is not None
        board.last_show.result(timeout=60)
        assert board.session_id == "0" * 32
        assert first.session_id not in (board.player.src or "") + board.downloads.value
    finally:
        board.close()


def test_a_new_recording_clears_the_previous_result(server: LocalServer) -> None:
    """On recording_started only the title changed: the player, downloads and comparison
    went on showing the previous session under the new recording's title."""
    import numpy as np

    from workbench.notebook.dashboard import Dashboard

    board = Dashboard(server)
    try:
        first = board.client.record(np.zeros(1600, np.float32), on_event=board.on_event)
        assert board.last_show is not None
        board.last_show.result(timeout=60)
        assert first.session_id in board.player.src and first.session_id in board.downloads.value
        board.comparison_html.value = "<div class='run-comparison'>previous</div>"
        seen: dict[str, str] = {}

        def on_event(message: dict) -> None:  # type: ignore[type-arg]
            board.on_event(message)
            if message["type"] == "recording_started":
                seen.update(title=board.result_title.value, player=board.player.src,
                            downloads=board.downloads.value, comparison=board.comparison_html.value)

        second = board.client.record(np.zeros(1600, np.float32), on_event=on_event)
        assert second.session_id[:8] in seen["title"]
        assert seen["player"] == "" and board.player.words == []
        assert first.session_id not in seen["downloads"] and seen["comparison"] == ""
    finally:
        board.close()


def test_stream_sends_the_given_options_over_the_panel_s(server: LocalServer,
                                                         speech_dir: Path) -> None:
    """Notebook 01 set only num_speakers of its OPTIONS on the panel and stream() sent
    the panel's three settings alone; the speaker box stopped at 20 while a
    configuration takes up to 64.  Now stream(options=...) sends them over the panel's,
    and a count above the bound is refused before anything is streamed."""
    from workbench.engine.config import MAX_SPEAKERS, ConfigError

    with Client(server) as client:
        panel = SessionPanel(client)
        try:
            assert panel.num_speakers.max == MAX_SPEAKERS
            panel.num_speakers.value = 30
            assert panel.num_speakers.value == 30
            panel.threshold.value = 0.35
            options = {"num_speakers": 3, "min_duration_off": 0.25, "language": "en"}
            rec = panel.stream(speech_dir / "reference.wav", realtime=False,
                               options=options).result(timeout=60)
            assert rec.result["type"] == "processing_complete"
            config = client.runs(rec.session_id)[0]["config"]
            assert {k: config.get(k) for k in options} == options
            assert config["clustering_threshold"] == pytest.approx(0.35)
            assert config["asr_model"] == "tiny.en"
            before = len(client.list_sessions())
            with pytest.raises(ConfigError, match="num_speakers"):
                panel.stream(speech_dir / "reference.wav", realtime=False,
                             options={"num_speakers": MAX_SPEAKERS + 1})
            assert "num_speakers" in panel.status.value
            with pytest.raises(ConfigError, match="unknown option.*num_speaker;"):
                panel.stream(speech_dir / "reference.wav", realtime=False,
                             options={"num_speaker": 2})  # (misspelt: the server ignored it)
            assert len(client.list_sessions()) == before
        finally:
            panel.close()


def test_the_panel_says_when_the_server_is_away_and_when_it_is_back(tmp_path: Path) -> None:
    """Process again with the server away failed without a word in the panel (aiohttp's
    connection error went to the widget log alone, which Voila does not show); and the
    "cannot reach the server" of a refresh stayed after the server was back."""
    import numpy as np

    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]).start()
    try:
        with Client(srv) as client:
            sid = client.record(np.zeros(16000, np.float32)).session_id
            panel = SessionPanel(client)
            try:
                srv.stop()
                panel.refresh()
                assert "cannot reach the server" in panel.status.value
                with pytest.raises(OSError):  # (aiohttp's ClientConnectorError)
                    panel.process_again(sid).result(timeout=30)
                assert "cannot reach the server" in panel.status.value, panel.status.value
                srv.start()
                assert [s["id"] for s in panel.refresh()] == [sid]
                assert "cannot reach the server" not in panel.status.value
            finally:
                panel.close()
    finally:
        srv.stop()


# ----------------------------------------------------------------- found in a review

def test_the_panel_asks_the_server_on_its_own_thread(server: LocalServer) -> None:
    """Refresh, "Process again" and a pick (the detail shown) made their REST calls on the
    notebook's thread: the kernel was held for as long as the server took."""
    import threading

    import ipywidgets as w
    import numpy as np

    with Client(server) as client:
        older = client.record(np.zeros(16000, np.float32)).session_id
        client.record(np.zeros(1600, np.float32))  # the newest: the picker's first
        panel = SessionPanel(client)
        try:
            asked: dict[str, list[str]] = {}
            for name in ("list_sessions", "start_run", "download"):
                def on_its_thread(*args, _call=getattr(client, name), _name=name, **kwargs):  # type: ignore[no-untyped-def]
                    asked.setdefault(_name, []).append(threading.current_thread().name)
                    return _call(*args, **kwargs)

                setattr(client, name, on_its_thread)
            panel.refresh_button.click()
            panel.session_picker.value = older  # the user picks it: its detail is fetched
            assert panel.selected == older
            panel.process_button.click()
            assert panel.last_action is not None
            assert panel.last_action.result(timeout=60)["status"] == "completed"
            for queued in (panel._actions, panel._asks):  # what it queued has run
                queued.submit(lambda: None).result(timeout=60)
            assert sorted(asked) == ["download", "list_sessions", "start_run"]
            assert all(thread.startswith("panel") for threads in asked.values()
                       for thread in threads), asked
            assert any(isinstance(shown, w.Audio) for shown in panel.detail.children)
        finally:
            panel.close()


def test_a_refresh_and_a_pick_wait_for_no_stream_or_run(server: LocalServer) -> None:
    """Refresh and a pick's detail went to the panel's one thread, behind a stream being
    recorded or a run being waited for: the list and the detail came once those ended."""
    import threading

    with Client(server) as client:
        sid = client.record(np.zeros(1600, np.float32)).session_id
        panel = SessionPanel(client)
        gate = threading.Event()
        try:
            long = panel._action(lambda: gate.wait(60))  # (a stream or a run under way)
            listed = panel._later(panel.refresh)  # what the Refresh button does
            assert listed is not None
            assert sid in [s["id"] for s in listed.result(timeout=30)]
            panel.select(sid)
            assert panel.last_detail is not None
            panel.last_detail.result(timeout=30)
            assert panel.detail.children and not long.done()
        finally:
            gate.set()
            panel.close()


def test_a_refresh_ending_on_another_thread_does_not_make_a_refresh_select(
        server: LocalServer) -> None:
    """The "no selection while the options change" flag was one for all threads: a
    refresh on another thread (the panel's, the dashboard's, a timer) that ended while
    this one put in new options cleared it, and the picker moved to the newest session
    selected that session."""
    import threading

    with Client(server) as client:
        first = client.record(np.zeros(1600, np.float32)).session_id
        panel = SessionPanel(client)
        try:
            panel.session_picker.value = first  # the user picks it
            assert panel.selected == first
            client.record(np.zeros(1600, np.float32))  # newer: new options move the picker
            picked: list[str] = []
            panel.on_select(picked.append)
            others: list[threading.Thread] = []

            def meanwhile(change: dict) -> None:  # type: ignore[type-arg]
                if not others:  # as the new options are taken in: another refresh, to its end
                    others.append(threading.Thread(target=panel.refresh))
                    others[0].start()
                    others[0].join(30)

            panel.session_picker.observe(meanwhile, names="_options_labels")
            panel.refresh()
            assert others and not others[0].is_alive()
            assert picked == [] and panel.selected == first == panel.session_picker.value
        finally:
            panel.close()


def test_a_refresh_keeps_a_pick_made_while_it_ran(server: LocalServer) -> None:
    """A refresh put back the picker's value it had read before the new options, so a
    session selected meanwhile (a stream's end on the panel's other thread) was shown in
    the table and detail while the picker showed the old one."""
    import threading

    with Client(server) as client:
        first = client.record(np.zeros(1600, np.float32)).session_id
        newer = client.record(np.zeros(1600, np.float32)).session_id
        panel = SessionPanel(client, show_detail=False)
        try:
            panel.session_picker.value = first  # the user picks it
            client.record(np.zeros(1600, np.float32))  # newer still: new options
            done: list[threading.Thread] = []

            def meanwhile(change: dict) -> None:  # type: ignore[type-arg]
                if not done:  # as the new options are taken in: a pick on another thread
                    done.append(threading.Thread(target=panel.select, args=(newer,)))
                    done[0].start()
                    done[0].join(30)

            panel.session_picker.observe(meanwhile, names="_options_labels")
            panel.refresh()
            assert done and not done[0].is_alive()
            assert panel.selected == newer == panel.session_picker.value
        finally:
            panel.close()


def test_a_result_fetched_when_a_newer_recording_started_is_not_written(
        server: LocalServer) -> None:
    """The previous recording's result, its fetching under way (here: the server slow to
    answer its first request) when a new recording started, went on to write "Result",
    `session_id`, transcripts and comparison of the old session under the new recording."""
    import threading

    import numpy as np

    from workbench.notebook.dashboard import Dashboard

    board = Dashboard(server)
    try:
        first = board.client.record(np.zeros(1600, np.float32))
        inside, go_on = threading.Event(), threading.Event()
        runs = board.client.runs

        def slow_runs(session_id: str) -> list:  # type: ignore[type-arg]
            inside.set()
            assert go_on.wait(30)
            return runs(session_id)

        board.client.runs = slow_runs  # type: ignore[method-assign]
        board.on_event({"type": "processing_complete", "session_id": first.session_id})
        assert inside.wait(30)  # the result is being fetched
        board.on_event({"type": "recording_started", "session_id": "0" * 32,
                        "live_results": False})
        go_on.set()
        assert board.last_show is not None
        board.last_show.result(timeout=60)
        assert board.session_id == "0" * 32 and "0" * 8 in board.result_title.value
        assert board.transcripts == {} and board.comparison is None
        assert first.session_id not in (board.player.src or "") + board.downloads.value
    finally:
        board.close()


TEN_MINUTES = (0.1 * np.sin(np.arange(600 * 16000) * 2 * np.pi * 440 / 16000)).astype(np.float32)
"""A recording whose MP4 takes the server's worker seconds: runs after it wait in the queue."""


def test_play_waits_for_no_result_of_a_previous_recording(server: LocalServer,
                                                          tmp_path: Path) -> None:
    """play() waited for `last_show`, whatever recording it was for: a recording whose
    processing failed (here: its session deleted while its run waited) re-raised a
    previous result's error instead of returning its report."""
    from workbench.engine.audio import write_wav
    from workbench.notebook.client import ServerError
    from workbench.notebook.dashboard import Dashboard

    board = Dashboard(server)
    other = Client(server)
    busy = None
    try:
        board.on_event({"type": "processing_complete", "session_id": "no-such-session"})
        assert board.last_show is not None
        with pytest.raises(ServerError):  # the previous result: its session is no more
            board.last_show.result(timeout=30)
        busy = board.client.record(TEN_MINUTES, format="mp4", wait=False).session_id
        on_event = board.on_event

        def delete_once_queued(message: dict) -> None:  # type: ignore[type-arg]
            on_event(message)
            if message["type"] == "processing_started":  # (its run waits behind the MP4)
                wait_until(lambda: _deleted(other, message["session_id"]))

        board.on_event = delete_once_queued  # type: ignore[method-assign]
        write_wav(tmp_path / "short.wav", np.zeros(8000, np.float32))
        report = board.play(tmp_path / "short.wav", speed=4.0)
        assert report.result is not None and report.result["type"] == "processing_failed"
        assert "processing failed: The session was deleted" in board.result_title.value
    finally:
        if busy is not None:
            other.delete_session(busy)
        other.close()
        board.close()


def _deleted(client: Client, session_id: str) -> bool:
    """Delete a session; False while the server still saves its recording (409)."""
    from workbench.notebook.client import ServerError

    try:
        client.delete_session(session_id)
    except ServerError as exc:
        if exc.status != 409:
            raise
        return False
    return True


def test_closing_a_dashboard_waits_for_no_run_and_a_run_ending_later_selects_nothing(
        server: LocalServer, tmp_path: Path) -> None:
    """close() waited for the result being shown, here waiting for a run that takes
    seconds (minutes for a long recording); and a "process again" run that ended after
    close() selected its session, whose showing went to the closed dashboard's thread:
    "cannot schedule new futures after shutdown"."""
    from workbench.notebook.dashboard import Dashboard

    with Client(server) as client:
        short = client.record(np.zeros(1600, np.float32)).session_id
        long = client.record(TEN_MINUTES, format="mp4", wait=False).session_id  # (for seconds)
        board = Dashboard(client, work_dir=tmp_path)
        board.on_event({"type": "processing_complete", "session_id": long})  # (waits for its run)
        again = board.panel.process_again(short)
        wait_until(lambda: "queued" in board.panel.status.value)  # its job waits for the run
        board.close()
        assert client.get_session(long)["runs"][-1]["status"] in ("queued", "running")
        assert again.result(timeout=120)["status"] == "completed"
        assert board.panel.selected is None
