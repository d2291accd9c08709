"""Recording clients in Chromium when clicks and server replies cross: the recorder page
(server/static) and the notebook's microphone widget (workbench/notebook/static).

The recording socket is a scripted stand-in (`page.route_web_socket`), so that a reply
can come exactly between two clicks; the REST API is a real server's (renditions only).

* A second recording started while the first is still processed: the first one's late
  messages (its live words flushed after stop, its progress and result) must not hide or
  fill the second one's live transcript; nor must a click on its own entry in the list.
* Stop pressed before the server answered the first `start`, then the start refused:
  the page says so and can record again (it stayed "stopping" for good).
* The session deleted while it is processed, told over the socket (`processing_failed`)
  or met as a 404 by the REST polling that follows a socket lost during processing: the
  page says it was deleted (not that its audio is kept), drops its card and its list
  entry, and stops asking for it (it stayed "processing" and polled for good).
* A past session opened while recording: the recording's own entry brings its live
  transcript back, every word so far in it (it said "being recorded right now" and stayed
  hidden), and at Stop the card follows the recording with its live words in view.
* A live run that failed (the refined one completed): the note says it could not be saved,
  at `processing_complete` and when the session is opened again (it said "still being
  saved; open the session again", and opened again said nothing).
* The widget: Stop pressed while the browser asks for the microphone cancels the start
  (the recording began anyway); a socket closed before any session started is a failure,
  not "processing goes on"; after a limit ended the recording, the recorder's last chunk
  is not sent (the server can only refuse it); a new recording started while the last one
  is processed is not ended by that one's late result (which closed the new socket).
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Callable

import pytest

from workbench.notebook.local_server import LocalServer, REPO_ROOT

from .test_browser import CHROMIUM, launch, notice, open_page, pw, sweep  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(),
                                 reason="Debian chromium is not installed")]

MICROPHONE_JS = REPO_ROOT / "workbench" / "notebook" / "static" / "microphone.js"


def new_session(srv: LocalServer) -> str:
    req = urllib.request.Request(f"{srv.url}/api/sessions", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=10).read())["id"]


def scripted(on_start: Callable[[Any, int], None], on_stop: Callable[[Any, int], None]
             ) -> tuple[Callable[[Any], None], list[Any]]:
    """A stand-in for the recording socket calling `on_start(ws, n)` / `on_stop(ws, n)` for
    the n-th socket's `start` / `stop`; and the list of sockets it was given."""
    sockets: list[Any] = []

    def handler(ws: Any) -> None:
        n = len(sockets)
        sockets.append(ws)

        def on_message(message: Any) -> None:
            if isinstance(message, str):
                action = json.loads(message).get("action")
                (on_start if action == "start" else on_stop)(ws, n)
        ws.on_message(on_message)
    return handler, sockets


def test_second_recording_keeps_its_live_view(pw: Any, server: LocalServer, sweep: Any) -> None:
    first, second = new_session(server), new_session(server)
    ids = [first, second]

    def on_start(ws: Any, n: int) -> None:
        ws.send(json.dumps({"type": "recording_started", "session_id": ids[n], "format": "wav",
                            "part": 0, "resumed": False, "live_results": True}))

    def on_stop(ws: Any, n: int) -> None:
        for event in [{"type": "recording_stopped", "duration_seconds": 2.0},
                      {"type": "processing_started", "message": "Transcription started"}]:
            ws.send(json.dumps({**event, "session_id": ids[n]}))

    handler, sockets = scripted(on_start, on_stop)
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server, live=True)
        page.route_web_socket("**/ws/**", handler)
        page.click("#start")
        page.wait_for_function("window.__recorder?.state === 'recording'")
        page.click("#stop")
        page.wait_for_function("window.__recorder.state === 'processing'")
        page.wait_for_selector("#start:not([disabled])")

        page.click("#start")  # the first recording is still being processed
        page.wait_for_function(f"window.__recorder.sessionId === '{second}'"
                               " && window.__recorder.state === 'recording'")
        page.wait_for_selector("#live-view:not([hidden])")
        word = {"word": " hello", "start": 0.2, "end": 0.6, "probability": 0.9, "speaker": None}
        sockets[1].send(json.dumps({"type": "transcript_final", "session_id": second,
                                    "words": [{**word, "index": 0}], "lag_seconds": 0.5}))
        page.wait_for_function("document.querySelector('#live-view .word')?.textContent.includes('hello')")

        # the first recording's late messages: a word flushed after its stop, progress, result
        late = {"word": " stale", "start": 1.0, "end": 1.4, "probability": 0.9, "speaker": None}
        for event in [{"type": "transcript_final", "words": [{**late, "index": 0}], "lag_seconds": 1.0},
                      {"type": "processing_progress", "stage": "asr", "progress": 0.5, "overall": 0.3},
                      {"type": "processing_complete", "duration_seconds": 2.0, "speakers": None,
                       "word_count": None}]:
            sockets[0].send(json.dumps({**event, "session_id": first}))
        time.sleep(1.0)  # the page has had time to act on them
        assert page.get_attribute("#result", "data-session-id") == second
        assert page.is_visible("#live-view")
        assert page.get_attribute("#result", "data-state") == "live"
        words = page.eval_on_selector_all("#live-view .word", "els => els.map(e => e.textContent.trim())")
        assert words == ["hello"]
        assert "Processing" not in page.inner_text("#log") and "Done" not in page.inner_text("#log")

        sockets[1].send(json.dumps({"type": "transcript_final", "session_id": second,
                                    "words": [{**word, "word": " again", "start": 0.7, "end": 1.0,
                                               "index": 1}], "lag_seconds": 0.5}))
        page.wait_for_function("document.querySelectorAll('#live-view .word').length === 2")
        assert page.is_visible("#live-view")
        # the list still follows the first recording (its session is listed)
        page.wait_for_selector(f"#session-list li[data-session-id='{first}']", state="attached")
        # the recording's own entry in the list, clicked: its live transcript stays in view
        page.click(f"#session-list li[data-session-id='{second}'] button")
        page.wait_for_timeout(1000)
        assert page.is_visible("#live-view") and page.get_attribute("#result", "data-state") == "live"
        assert errors == []
    finally:
        browser.close()


LIVE_WORDS = "() => [...document.querySelectorAll('#live-view .word')].map((e) => e.textContent)"


def test_past_session_opened_while_recording_gives_the_live_view_back(
        pw: Any, server: LocalServer, sweep: Any) -> None:
    old, sid = new_session(server), new_session(server)

    def on_start(ws: Any, n: int) -> None:
        ws.send(json.dumps({"type": "recording_started", "session_id": sid, "format": "wav",
                            "part": 0, "resumed": False, "live_results": True}))

    def on_stop(ws: Any, n: int) -> None:
        for event in [{"type": "recording_stopped", "duration_seconds": 2.0, "live_run_id": "lr"},
                      {"type": "processing_started", "message": "Processing started"}]:
            ws.send(json.dumps({**event, "session_id": sid}))

    def word(i: int, text: str) -> str:
        return json.dumps({"type": "transcript_final", "session_id": sid, "lag_seconds": 0.5,
                           "words": [{"index": i, "word": f" {text}", "start": i, "end": i + 0.5,
                                      "probability": 0.9, "speaker": "SPEAKER_00"}]})

    def open_old() -> None:
        page.click(f"#session-list li[data-session-id='{old}'] button")
        page.wait_for_selector(f"#result[data-session-id='{old}'][data-state='ready']")
        assert page.is_hidden("#live-view")

    handler, sockets = scripted(on_start, on_stop)
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server, live=True)
        page.route_web_socket("**/ws/**", handler)
        page.click("#start")
        page.wait_for_function("window.__recorder?.state === 'recording'")
        page.wait_for_selector("#live-view:not([hidden])")
        sockets[0].send(word(0, "hello"))
        page.wait_for_function("document.getElementById('live-view').dataset.words === '1'")
        page.wait_for_selector(f"#session-list li[data-session-id='{old}']", state="attached")
        open_old()
        sockets[0].send(word(1, "world"))  # said while the past session is on show
        page.wait_for_function("document.getElementById('live-view').dataset.words === '2'")

        # the recording's own entry: its live transcript again, with every word so far
        page.click(f"#session-list li[data-session-id='{sid}'] button")
        page.wait_for_selector("#live-view:not([hidden])", timeout=3000)
        assert page.get_attribute("#result", "data-session-id") == sid
        assert page.get_attribute("#result", "data-state") == "live"
        assert page.evaluate(LIVE_WORDS) == ["hello", "world"]
        assert "being recorded" not in page.inner_text("#result-actions")
        page.wait_for_timeout(500)  # nothing late hides it again
        assert page.is_visible("#live-view")

        # a past session on show at Stop: the card follows the recording, its live words in view
        open_old()
        page.click("#stop")
        page.wait_for_selector(f"#result[data-session-id='{sid}'][data-state='processing']")
        page.wait_for_selector("#live-view:not([hidden])", timeout=3000)
        assert page.evaluate(LIVE_WORDS) == ["hello", "world"]
        assert "live transcript; the refined one replaces it" in page.inner_text("#result-summary")
        assert errors == []
    finally:
        browser.close()


def test_a_resume_leaves_a_past_session_on_show(pw: Any, server: LocalServer, sweep: Any) -> None:
    """A past session opened while recording with live results, then the socket dropped:
    the resume (`resumed` with `live_results`) pulled the card back to the live view; only
    the recording's own entry in the list brings it back (README)."""
    old, sid = new_session(server), new_session(server)

    def on_start(ws: Any, n: int) -> None:
        ws.send(json.dumps({"type": "recording_started", "session_id": sid, "format": "wav",
                            "part": n, "resumed": n > 0, "live_results": True}))

    handler, sockets = scripted(on_start, lambda ws, n: None)
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server, live=True)
        page.route_web_socket("**/ws/**", handler)
        page.click("#start")
        page.wait_for_selector("#live-view:not([hidden])")
        page.wait_for_selector(f"#session-list li[data-session-id='{old}']", state="attached")
        page.click(f"#session-list li[data-session-id='{old}'] button")
        page.wait_for_selector(f"#result[data-session-id='{old}'][data-state='ready']")
        page.evaluate("window.__recorder.ws.close()")  # the connection drops
        page.wait_for_function("window.__recorder?.state === 'recording'", timeout=15_000)
        deadline = time.monotonic() + 15
        while len(sockets) < 2:
            assert time.monotonic() < deadline, "no resume"
            page.wait_for_timeout(100)
        page.wait_for_timeout(1000)  # the resumed part's recording_started is taken in
        assert page.get_attribute("#result", "data-session-id") == old
        assert page.is_hidden("#live-view")
        page.click(f"#session-list li[data-session-id='{sid}'] button")  # its own entry: back
        page.wait_for_selector("#live-view:not([hidden])", timeout=3000)
        assert errors == []
    finally:
        browser.close()


def test_a_session_another_page_records_is_followed_to_its_result(
        pw: Any, server: LocalServer, sweep: Any) -> None:
    """Page B opened the session page A was recording ("being recorded right now"); A
    stopped and the session completed, but B's card stayed as it was, with no player,
    downloads or "Process again"."""
    browser = launch(pw, sweep)
    try:
        a, errors_a = open_page(browser, server)
        b, errors_b = open_page(browser, server)
        a.click("#start")
        a.wait_for_function("window.__recorder?.state === 'recording'")
        sid = a.evaluate("window.__recorder.sessionId")
        b.click("#refresh")
        b.wait_for_selector(f"#session-list li[data-session-id='{sid}']", state="attached")
        b.click(f"#session-list li[data-session-id='{sid}'] button")
        b.wait_for_selector(f"#result[data-session-id='{sid}'][data-state='ready']")
        assert "being recorded right now" in b.inner_text("#result-actions")
        a.wait_for_timeout(1500)
        a.click("#stop")
        b.wait_for_function(f"""() => document.getElementById('result').dataset.sessionId === '{sid}'
            && document.getElementById('result-status').textContent === 'completed'
            && document.getElementById('result').dataset.state === 'ready'""", timeout=60_000)
        assert "Process again" in b.inner_text("#result-actions")
        assert b.is_visible("#player")
        assert errors_a == [] and errors_b == []
    finally:
        browser.close()


@pytest.mark.parametrize("end", ["result", "socket-closed"])
def test_past_session_opened_after_stop_stays_in_view(pw: Any, server: LocalServer,
                                                     sweep: Any, end: str) -> None:
    """The recording's `recording_stopped`, progress and result do not pull the card away
    from a session opened after Stop (also before the server answered the stop): its
    result is announced with an Open button instead, also when its socket closed during
    processing (the page then follows it over REST without showing it)."""
    old, sid = new_session(server), new_session(server)

    def on_start(ws: Any, n: int) -> None:
        ws.send(json.dumps({"type": "recording_started", "session_id": sid, "format": "wav",
                            "part": 0, "resumed": False}))

    handler, sockets = scripted(on_start, lambda ws, n: None)  # the stop answered below
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server)
        page.route_web_socket("**/ws/**", handler)
        page.click("#start")
        page.wait_for_function("window.__recorder?.state === 'recording'")
        page.click("#stop")
        page.wait_for_selector(f"#result[data-session-id='{sid}'][data-state='processing']")
        page.wait_for_selector(f"#session-list li[data-session-id='{old}']", state="attached")
        page.click(f"#session-list li[data-session-id='{old}'] button")
        page.wait_for_selector(f"#result[data-session-id='{old}'][data-state='ready']")

        events = [{"type": "recording_stopped", "duration_seconds": 2.0},
                  {"type": "processing_started", "message": "Processing started"},
                  {"type": "processing_progress", "stage": "asr", "progress": 0.5, "overall": 0.3}]
        if end == "result":
            events.append({"type": "processing_complete", "duration_seconds": 2.0,
                           "speakers": 2, "word_count": 7, "run_id": "r1"})
        for event in events:
            sockets[0].send(json.dumps({**event, "session_id": sid}))
        if end == "result":
            page.wait_for_function("window.__recorder.state === 'completed'")
        else:
            page.wait_for_function("window.__recorder.state === 'processing'")
            sockets[0].close()
        ready = notice(page, f"ready:{sid}")
        ready.wait_for(timeout=10000)
        assert sid[:8] in ready.inner_text()
        page.wait_for_timeout(500)  # nothing late takes the card either
        assert page.get_attribute("#result", "data-session-id") == old
        assert page.get_attribute("#result", "data-state") == "ready"
        assert page.is_hidden("#processing")
        assert "Recording stopped" in page.inner_text("#log")
        assert "Processing: " in page.inner_text("#log")

        ready.get_by_role("button", name="Open").click()
        page.wait_for_selector(f"#result[data-session-id='{sid}'][data-state='ready']")
        assert ready.count() == 0
        assert errors == []
    finally:
        browser.close()


def test_a_failed_live_run_is_not_said_to_be_still_saving(pw: Any, start_server: Any,
                                                          sweep: Any, tmp_path: Any) -> None:
    """The refined run completed, its live run failed (left `running` by a crash, failed by
    the next start): the note says the live transcript could not be saved, at
    `processing_complete` and when the session is opened again."""
    from server.sessions import SessionStore

    store = SessionStore(tmp_path / "data")
    try:
        sid = store.create_session().id
        store.set_status(sid, "recording")
        store.set_status(sid, "processing")
        live = store.create_run(sid, {}, kind="live")  # `running`: the crash came before it was saved
        refined = store.create_run(sid, {}, supersedes=live.id)
        store.finish_run(refined.id, ok=True, summary={"speakers": 1, "word_count": 2})
    finally:
        store.close()
    server = start_server()
    runs = {r["id"]: r for r in json.loads(urllib.request.urlopen(
        f"{server.url}/api/sessions/{sid}", timeout=10).read())["runs"]}
    assert runs[live.id]["status"] == "failed" and runs[refined.id]["status"] == "completed"

    def on_start(ws: Any, n: int) -> None:
        ws.send(json.dumps({"type": "recording_started", "session_id": sid, "format": "wav",
                            "part": 0, "resumed": False, "live_results": True}))

    def on_stop(ws: Any, n: int) -> None:
        for event in [{"type": "recording_stopped", "duration_seconds": 2.0, "live_run_id": live.id},
                      {"type": "processing_complete", "run_id": refined.id, "duration_seconds": 2.0,
                       "speakers": 1, "word_count": 2, "supersedes": live.id}]:
            ws.send(json.dumps({**event, "session_id": sid}))

    handler, _ = scripted(on_start, on_stop)
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server, live=True)
        page.route_web_socket("**/ws/**", handler)
        page.click("#start")
        page.wait_for_function("window.__recorder?.state === 'recording'")
        page.click("#stop")
        page.wait_for_selector(f"#result[data-session-id='{sid}'][data-state='ready']")

        def check(when: str) -> None:
            note = page.inner_text("#live-note") if page.is_visible("#live-note") else ""
            assert "could not be saved" in note, (when, note)
            assert "still being saved" not in note and "open the session again" not in note, note
            assert page.locator("#downloads .live-run").count() == 0  # no files to offer

        check("at processing_complete")
        page.evaluate("document.getElementById('result').dataset.state = ''")
        page.click(f"#session-list li[data-session-id='{sid}'] button")
        page.wait_for_selector(f"#result[data-session-id='{sid}'][data-state='ready']")
        check("opened again")
        assert errors == []
    finally:
        browser.close()


def test_a_live_transcript_in_parts_is_shown_once_every_part_is_saved(
        pw: Any, start_server: Any, sweep: Any, tmp_path: Any) -> None:
    """Renditions, a session in two parts: the first part's live run saved, the second's
    still saving when its renditions run completed. Opened, the card showed the first
    part's words alone for good (no second look), under notes that said both "the live
    transcript" and "the refined transcript supersedes it". It waits for the second."""
    import numpy as np

    from server.sessions import SessionStore
    from workbench.engine.audio import write_wav
    from workbench.engine.transcript import Transcript, Turn, Word, build_segments

    def said(words: list[tuple[float, str]], speaker: str) -> Transcript:
        t = Transcript(build_segments([Word(s, s + 0.4, w, speaker=speaker) for s, w in words]),
                       [Turn(0, 10, speaker)], 10.0)
        t.config = {"kind": "live"}
        return t

    server = start_server()
    store = SessionStore(server.data_dir)  # (beside the server, as its workers write)
    try:
        sid = store.create_session().id
        write_wav(store.audio_path(sid), np.zeros(16000 * 10, np.float32))
        first, second = store.create_run(sid, {}, kind="live"), None
        one = said([(0.5, " part"), (1.0, " one")], "SPEAKER_00")
        one.save(store.run_dir(sid, first.id))
        store.finish_run(first.id, ok=True, summary={**one.summary(), "first_index": 0})
        second = store.create_run(sid, {}, kind="live")  # saving
        renditions = store.create_run(sid, {}, supersedes=second.id)
        store.finish_run(renditions.id, ok=True, summary={"duration_seconds": 10.0})
        store.update_session(sid, status="completed", duration_seconds=10.0)
        browser = launch(pw, sweep)
        try:
            page, errors = open_page(browser, server)
            page.click(f"#session-list li[data-session-id='{sid}'] button")
            page.wait_for_selector("#processing:not([hidden])")  # "Saving the live transcript"
            time.sleep(1.5)
            assert "part one" not in page.inner_text("#transcript")
            two = said([(5.5, " part"), (6.0, " two"), (6.5, " words")], "SPEAKER_01")
            two.save(store.run_dir(sid, second.id))
            store.finish_run(second.id, ok=True, summary={**two.summary(), "first_index": 2})
            page.wait_for_selector(f"#result[data-session-id='{sid}'][data-state='ready']",
                                   timeout=15_000)
            text = page.inner_text("#transcript")
            assert "part one" in text and "part two words" in text, text
            assert "5 words" in page.inner_text("#result-summary")
            assert errors == []
        finally:
            browser.close()
    finally:
        store.close()


def test_stop_before_the_start_is_answered_then_refused(pw: Any, server: LocalServer,
                                                        sweep: Any) -> None:
    starts: list[Any] = []

    def on_start(ws: Any, n: int) -> None:
        starts.append(ws)  # answered below, after Stop

    handler, _ = scripted(on_start, lambda ws, n: None)
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server)
        page.route_web_socket("**/ws/**", handler)
        page.click("#start")
        page.wait_for_function("window.__recorder?.state === 'connecting'")
        deadline = time.monotonic() + 10
        while not starts and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert starts, "the page sent no start"
        page.click("#stop")
        page.wait_for_function("window.__recorder.state === 'stopping'")
        starts[0].send(json.dumps({"type": "error", "code": 4012, "message":
                                   "Too many recordings in progress (limit 1); try again later"}))
        page.wait_for_function("window.__recorder.state === 'failed'", timeout=5000)
        box = notice(page, "recording")
        box.wait_for()
        assert "refused to start" in box.inner_text() and "Too many recordings" in box.inner_text()
        assert page.is_enabled("#start")
        assert errors == []
    finally:
        browser.close()



def delete_session(srv: LocalServer, sid: str) -> None:
    req = urllib.request.Request(f"{srv.url}/api/sessions/{sid}", method="DELETE")
    assert urllib.request.urlopen(req, timeout=10).status == 204


def processing(sid: str) -> tuple[Callable[[Any], None], list[Any]]:
    """A socket stand-in recording session `sid`, whose processing, after stop, stays at 50 %."""
    def on_start(ws: Any, n: int) -> None:
        ws.send(json.dumps({"type": "recording_started", "session_id": sid, "format": "wav",
                            "part": 0, "resumed": False, "live_results": False}))

    def on_stop(ws: Any, n: int) -> None:
        for event in [{"type": "recording_stopped", "duration_seconds": 2.0},
                      {"type": "processing_started", "message": "Processing started"},
                      {"type": "processing_progress", "stage": "renditions", "progress": 0.5,
                       "overall": 0.5}]:
            ws.send(json.dumps({**event, "session_id": sid}))
    return scripted(on_start, on_stop)


def record_until_processing(page: Any, sid: str) -> None:
    page.wait_for_selector(f"#session-list li[data-session-id='{sid}']", state="attached")
    page.click("#start")
    page.wait_for_function("window.__recorder?.state === 'recording'")
    page.click("#stop")
    page.wait_for_function("window.__recorder.state === 'processing'"
                           " && document.getElementById('percent').textContent === '50 %'")


def assert_deleted(page: Any, sid: str) -> None:
    """The page says `sid` was deleted, shows no card for it, and has it no more in its list."""
    box = notice(page, "recording")
    box.wait_for(timeout=8000)
    page.wait_for_selector(f"#session-list li[data-session-id='{sid}']", state="detached")
    page.wait_for_timeout(1500)  # late answers (a reopening, a list refresh) have come in
    text = box.inner_text()
    assert "deleted" in text and "kept" not in text, text
    assert page.is_hidden("#result")
    assert notice(page, "server").count() == 0, notice(page, "server").all_inner_texts()


def test_processing_failed_because_the_session_was_deleted(pw: Any, server: LocalServer,
                                                           sweep: Any) -> None:
    sid = new_session(server)
    handler, sockets = processing(sid)
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server)
        page.route_web_socket("**/ws/**", handler)
        record_until_processing(page, sid)
        delete_session(server, sid)  # from another page: the server tells this one
        sockets[0].send(json.dumps({"type": "processing_failed", "session_id": sid, "run_id": "r1",
                                    "message": "The session was deleted"}))
        page.wait_for_function("window.__recorder.state === 'failed'")
        assert_deleted(page, sid)
        assert errors == []
    finally:
        browser.close()


def test_following_a_deleted_session_stops(pw: Any, server: LocalServer, sweep: Any) -> None:
    sid = new_session(server)
    handler, sockets = processing(sid)
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server)
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if r.url.endswith(f"/api/sessions/{sid}")
                else None)
        page.route_web_socket("**/ws/**", handler)
        record_until_processing(page, sid)
        delete_session(server, sid)
        sockets[0].close(code=1001, reason="going away")  # the page follows over REST now
        assert_deleted(page, sid)
        polls = len(asked)
        assert polls >= 1
        page.wait_for_timeout(3500)  # more than two polling intervals
        assert len(asked) == polls
        assert errors == []
    finally:
        browser.close()

# ---------------------------------------------------------------------- the notebook widget

WIDGET_PAGE = """<!doctype html><html><body><div id="mic"></div><script type="module">
import widget from '/microphone.js';
const values = {state: 'idle', server_url: 'http://localhost:9', token: '', options: {},
                format: 'wav', elapsed: 0, level_db: -120, session_id: '', live_results: false,
                error: '', input_format: ''};
const handlers = {};
const model = {
  get: (k) => values[k], set: (k, v) => { values[k] = v; (handlers['change:' + k] || []).forEach((f) => f()); },
  save_changes() {}, send() {}, on: (name, f) => { (handlers[name] ||= []).push(f); },
};
window.__model = values;
window.__command = (command) => (handlers['msg:custom'] || []).forEach((f) => f({command}));
widget.render({model, el: document.getElementById('mic')});
window.__ready = true;
</script></body></html>"""

# The browser's permission prompt, stood in for by a getUserMedia that answers after 1.5 s.
SLOW_PROMPT = """(() => {
  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (c) => new Promise((resolve, reject) =>
    setTimeout(() => real(c).then(resolve, reject), window.__promptMs ?? 0));
})();"""


def widget_page(browser: Any, handler: Callable[[Any], None]) -> tuple[Any, list[str]]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script(SLOW_PROMPT)
    page.route("http://localhost:9/", lambda route: route.fulfill(
        status=200, content_type="text/html", body=WIDGET_PAGE))
    page.route("http://localhost:9/microphone.js", lambda route: route.fulfill(
        status=200, content_type="text/javascript", body=MICROPHONE_JS.read_text()))
    page.route_web_socket("ws://localhost:9/**", handler)
    page.goto("http://localhost:9/")
    page.wait_for_function("window.__ready === true")
    return page, errors


def sent(page: Any) -> list[Any]:
    return page.evaluate("window.__workbenchMicrophones[0].sent")


def test_widget_stop_during_the_microphone_prompt_cancels(pw: Any, sweep: Any) -> None:
    handler, sockets = scripted(lambda ws, n: None, lambda ws, n: None)
    browser = launch(pw, sweep)
    try:
        page, errors = widget_page(browser, handler)
        page.evaluate("window.__promptMs = 1500")
        page.click(".mic-record")
        page.wait_for_function("window.__model.state === 'connecting'")
        page.click(".mic-stop")
        page.wait_for_timeout(3000)  # the prompt answers after 1.5 s
        assert page.evaluate("window.__model.state") == "idle"
        assert sockets == [] and sent(page) == []
        assert page.is_enabled(".mic-record") and page.is_disabled(".mic-stop")
        # and it records normally afterwards
        page.evaluate("window.__promptMs = 0")
        page.click(".mic-record")
        page.wait_for_function("window.__workbenchMicrophones[0].sent.length > 0")
        assert sent(page)[0]["message"]["action"] == "start"
        assert errors == []
    finally:
        browser.close()


def test_widget_socket_closed_before_any_session_is_a_failure(pw: Any, sweep: Any) -> None:
    handler, sockets = scripted(lambda ws, n: None, lambda ws, n: None)
    browser = launch(pw, sweep)
    try:
        page, errors = widget_page(browser, handler)
        page.click(".mic-record")
        page.wait_for_function("window.__workbenchMicrophones[0].sent.length > 0")  # the start
        page.click(".mic-stop")
        page.wait_for_function("window.__model.state === 'stopping'")
        sockets[0].close(code=1001, reason="going away")
        page.wait_for_function("window.__model.state !== 'stopping'", timeout=5000)
        assert page.evaluate("window.__model.state") == "failed"
        assert "before the recording started" in page.evaluate("window.__model.error")
        assert errors == []
    finally:
        browser.close()


def test_widget_sends_no_chunk_after_a_limit(pw: Any, sweep: Any) -> None:
    def on_start(ws: Any, n: int) -> None:
        ws.send(json.dumps({"type": "recording_started", "session_id": "s1", "format": "wav",
                            "part": 0, "resumed": False, "live_results": False}))

    handler, sockets = scripted(on_start, lambda ws, n: None)
    browser = launch(pw, sweep)
    try:
        page, errors = widget_page(browser, handler)
        page.click(".mic-record")
        page.wait_for_function("window.__model.state === 'recording'")
        page.wait_for_function("window.__workbenchMicrophones[0].sent.length >= 3")
        # frames sent from the moment the widget takes the limit's message
        page.evaluate("""() => {
          const log = window.__workbenchMicrophones[0];
          const push = log.received.push.bind(log.received);
          log.received.push = (m) => {
            if (m.type === 'error') window.__sentAtLimit = log.sent.length;
            return push(m);
          };
        }""")
        sockets[0].send(json.dumps({"type": "error", "code": 4005, "message":
                                    "Recording duration limit reached (2 seconds)"}))
        page.wait_for_function("window.__sentAtLimit !== undefined")
        page.wait_for_timeout(1000)  # four more timeslices, and the recorder's last chunk
        count = page.evaluate("window.__sentAtLimit")
        assert len(sent(page)) == count, sent(page)[count:]
        assert errors == []
    finally:
        browser.close()


def test_widget_new_recording_while_the_last_one_is_processed(pw: Any, sweep: Any) -> None:
    """`Microphone.start()` while the previous recording is still processed: the previous
    socket's late result neither ends the new recording nor closes its socket."""
    sockets: list[Any] = []
    closed: list[tuple[int, Any]] = []
    actions: list[tuple[int, str]] = []

    def handler(ws: Any) -> None:
        n = len(sockets)
        sockets.append(ws)

        def on_message(message: Any) -> None:
            if not isinstance(message, str):
                return
            action = json.loads(message)["action"]
            actions.append((n, action))
            events = ([{"type": "recording_started", "format": "wav", "part": 0, "resumed": False,
                        "live_results": True}] if action == "start" else
                      [{"type": "recording_stopped", "duration_seconds": 1.0},
                       {"type": "processing_started", "message": "Processing started"}])
            for event in events:
                ws.send(json.dumps({**event, "session_id": f"session-{n}"}))
        ws.on_message(on_message)
        ws.on_close(lambda code, reason: closed.append((n, code)))

    browser = launch(pw, sweep)
    try:
        page, errors = widget_page(browser, handler)
        page.click(".mic-record")
        page.wait_for_function("window.__model.state === 'recording'")
        page.click(".mic-stop")
        page.wait_for_function("window.__model.state === 'processing'")
        page.evaluate("window.__command('start')")  # what Microphone.start() sends
        page.wait_for_function("window.__model.state === 'recording'"
                               " && window.__model.session_id === 'session-1'")
        try:  # the first recording's result, late (its socket may be closed by now)
            sockets[0].send(json.dumps({"type": "processing_complete", "session_id": "session-0",
                                        "duration_seconds": 1.0, "speakers": None,
                                        "word_count": None}))
        except Exception:
            pass
        page.wait_for_timeout(1000)
        assert page.evaluate("window.__model.state") == "recording"
        assert closed == [(0, 1000)], closed  # the first socket closed, the new one open
        assert "is still being processed on the server" in page.inner_text(".mic-messages")
        frames = len(sent(page))
        page.wait_for_timeout(600)
        assert len(sent(page)) > frames  # the new recording's chunks still go out
        page.click(".mic-stop")
        page.wait_for_function("window.__model.state === 'processing'", timeout=5000)
        assert actions == [(0, "start"), (0, "stop"), (1, "start"), (1, "stop")]
        assert errors == []
    finally:
        browser.close()
