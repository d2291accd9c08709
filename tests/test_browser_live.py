"""The recorder page's live transcript in Debian's Chromium, driven by Playwright.

* `test_live_view_draws_the_librarys_events`: the events `workbench.live.stream_file`
  makes for the sample call (real models) are played to the page, one at a time, by a
  scripted stand-in for the recording socket; after each one the page must show exactly
  the committed words so far, in their speakers' lines, and the latest partial.
* `test_live_words_before_stop_then_the_refined_transcript`: a real server, a fake
  microphone playing real speech: live words appear before Stop, then the refined
  speaker-attributed transcript replaces them.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest

from workbench.notebook.local_server import LocalServer

from .test_browser import (  # noqa: F401  (fixtures)
    CHROMIUM,
    conversation,
    get_json,
    launch,
    notice,
    open_page,
    pw,
    screenshot,
    sweep,
    wait_result,
)

pytestmark = [pytest.mark.browser, pytest.mark.models,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]

# The page's palette (transcript.js), as computed styles give it.
FIRST_COLOURS = ["rgb(37, 99, 235)", "rgb(217, 72, 15)", "rgb(15, 157, 88)"]

SNAPSHOT = """() => {
  const view = document.getElementById('live-view');
  const words = [...view.querySelectorAll('.live-line .word')].map((w) => [
    Number(w.dataset.index), w.textContent, w.closest('.live-line').dataset.speaker]);
  const lines = [...view.querySelectorAll('.live-line')].map((l) => [
    l.dataset.speaker, getComputedStyle(l).borderLeftColor]);
  const lanes = [...view.querySelectorAll('.lane-row')].map((r) => [
    r.dataset.speaker, getComputedStyle(r.querySelector('.swatch')).backgroundColor,
    r.querySelectorAll('.seg:not(.tentative)').length, r.querySelectorAll('.seg.tentative').length]);
  const partial = view.querySelector('.live-partial');
  return {words, lines, lanes, partial: partial.hidden ? null : partial.textContent,
          partialColour: getComputedStyle(partial).color,
          status: view.querySelector('.live-status').textContent, hidden: view.hidden};
}"""


@pytest.fixture(scope="module")
def library_events(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The wire form of every event a live session makes for the sample call (speakers 5 s
    behind: many words are committed before their speaker is known)."""
    from workbench.live import JobCosts, LiveConfig, stream_file
    from workbench.live.asr import StreamingASRConfig
    from workbench.live.diarization import OnlineDiarizationConfig
    from workbench.research.datasets import sample_call

    config = LiveConfig(asr=StreamingASRConfig(),
                        diarization=OnlineDiarizationConfig(latency=5.0, step=1.0))
    result = stream_file(sample_call().audio, config=config,
                         costs=JobCosts(asr_pass=1.8, diarization_step=0.2),
                         data_dir=tmp_path_factory.mktemp("live"))
    return [e.serialize() for e in result.events]


class Expected:
    """What the page must show after the events so far: the contract, applied in Python."""

    def __init__(self) -> None:
        self.words: dict[int, list[Any]] = {}  # index -> [text, speaker]
        self.partial: Optional[str] = None
        self.speakers: list[str] = []  # by order of appearance

    def _seen(self, speaker: Optional[str]) -> None:
        if speaker is not None and speaker not in self.speakers:
            self.speakers.append(speaker)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "transcript_final":
            for w in event["words"]:
                self.words.setdefault(w["index"], [w["word"].strip(), w["speaker"]])
                self._seen(w["speaker"])
        elif kind == "speaker_labels":
            for w in event["words"]:
                if w["index"] in self.words and w["speaker"] is not None:
                    self.words[w["index"]][1] = w["speaker"]
                    self._seen(w["speaker"])
        elif kind == "transcript_partial":
            self.partial = event["text"] or None
        elif kind == "diarization_update":
            for t in [*event["turns"], *event["tentative"]]:
                self._seen(t["speaker"])

    def word_rows(self) -> list[list[Any]]:
        return [[i, text, speaker or ""] for i, (text, speaker) in sorted(self.words.items())]


@pytest.mark.timeout(600)
def _health(srv: LocalServer) -> dict[str, Any]:
    with urllib.request.urlopen(srv.url + "/api/health", timeout=10) as r:
        return json.loads(r.read())


def test_live_view_draws_the_librarys_events(pw: Any, server: LocalServer, sweep: Path,
                                             library_events: list[dict[str, Any]]) -> None:
    kinds = {e["type"] for e in library_events}
    assert {"transcript_partial", "transcript_final", "speaker_labels",
            "diarization_update"} <= kinds
    sid = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{server.url}/api/sessions", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"}), timeout=10).read())["id"]
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server, live=True)
        sockets: list[Any] = []
        starts: list[dict[str, Any]] = []

        def fake_server(ws: Any) -> None:
            def on_message(message: Any) -> None:
                if not isinstance(message, str):
                    return
                msg = json.loads(message)
                if msg["action"] == "start":
                    starts.append(msg)
                    ws.send(json.dumps({"type": "recording_started", "session_id": sid,
                                        "format": "wav", "part": 0, "resumed": False,
                                        "live_results": True}))
                elif msg["action"] == "stop":
                    for event in [{"type": "recording_stopped", "duration_seconds": 30.0,
                                   "live_run_id": "live-run"},
                                  {"type": "processing_started", "message": "Transcription started"}]:
                        ws.send(json.dumps({**event, "session_id": sid}))
            ws.on_message(on_message)
            sockets.append(ws)

        page.route_web_socket("**/ws/**", fake_server)
        page.click("#start")
        page.wait_for_function("window.__recorder && window.__recorder.state === 'recording'")
        assert starts[0]["live_results"] is True  # the checkbox, on by default
        page.wait_for_selector("#live-view:not([hidden])")
        assert page.get_attribute("#result", "data-state") == "live"
        ws = sockets[0]

        expected = Expected()
        half = len(library_events) // 2
        shown: list[list[Any]] = []
        handled = 0
        for n, event in enumerate(library_events):
            ws.send(json.dumps({**event, "session_id": sid}))
            expected.apply(event)
            want = expected.word_rows()
            handled += 1
            page.wait_for_function(
                "n => Number(document.getElementById('live-view').dataset.events) === n", arg=handled)
            snap = page.evaluate(SNAPSHOT)
            assert snap["words"] == want, (n, event)
            assert snap["partial"] == expected.partial, (n, event)
            # committed words never change: what was shown before is still there, as it was
            assert [w[:2] for w in snap["words"][:len(shown)]] == [w[:2] for w in shown]
            shown = snap["words"]
            # one line per run of one speaker; each line in its speaker's lane colour
            speakers = [s for s, _ in snap["lines"]]
            assert all(a != b for a, b in zip(speakers, speakers[1:])), speakers
            lane_colour = {s: c for s, c, _, _ in snap["lanes"]}
            for speaker, colour in snap["lines"]:
                if speaker:
                    assert colour == lane_colour[speaker]
            assert [s for s, *_ in snap["lanes"]] == expected.speakers
            if n == half:
                ws.send(json.dumps({"type": "live_paused", "session_id": sid,
                                    "reason": "Live work is 9.0 s behind the audio"}))
                box = notice(page, "live")
                box.wait_for()
                assert "Live transcript paused" in box.inner_text()
                assert "9.0 s behind" in box.inner_text() and "loses nothing" in box.inner_text()
                assert "paused" in page.inner_text("#live-view .live-status")
                ws.send(json.dumps({"type": "live_resumed", "session_id": sid}))
                handled += 2
                page.wait_for_function("document.querySelector('#notices .notice[data-key=live]')"
                                       ".textContent.includes('resumed')")
                assert "paused" not in page.inner_text("#live-view .live-status")

        # At the end: every word has a speaker, coloured by order of appearance.
        snap = page.evaluate(SNAPSHOT)
        assert len(snap["words"]) >= 40 and all(s for _, _, s in snap["words"])
        assert [c for _, c, _, _ in snap["lanes"]][:3] == FIRST_COLOURS[:len(snap["lanes"][:3])]
        assert sum(final for *_, final, _ in snap["lanes"]) > 0
        text = " ".join(w for _, w, _ in snap["words"]).lower()
        assert "hello" in text
        screenshot(page, "browser_live_view.png")

        # Stop: the live transcript stays in view while the refined run is made.
        page.click("#stop")
        page.wait_for_selector("#result[data-state='processing']")
        assert page.is_visible("#live-view")
        # (the card is the processing one from the click on; the run's id comes with
        # recording_stopped, a moment later)
        page.wait_for_selector("#live-view[data-run-id='live-run']", timeout=10_000)
        assert page.is_visible("#live-view")
        assert errors == []
    finally:
        browser.close()


def record_on_a_stand_in(page: Any, sid: str) -> list[Any]:
    """Start recording on the page against a scripted stand-in for the recording socket,
    which answers `start` with a live `recording_started` of session `sid`: the sockets
    (send the live events to the first)."""
    sockets: list[Any] = []

    def fake_server(ws: Any) -> None:
        def on_message(message: Any) -> None:
            if isinstance(message, str) and json.loads(message)["action"] == "start":
                ws.send(json.dumps({"type": "recording_started", "session_id": sid,
                                    "format": "wav", "part": 0, "resumed": False,
                                    "live_results": True}))
        ws.on_message(on_message)
        sockets.append(ws)

    page.route_web_socket("**/ws/**", fake_server)
    page.click("#start")
    page.wait_for_function("window.__recorder && window.__recorder.state === 'recording'")
    return sockets


@pytest.mark.timeout(300)
def test_live_view_takes_what_it_missed_from_a_replay(pw: Any, server: LocalServer, sweep: Path,
                                                      library_events: list[dict[str, Any]]) -> None:
    """The page's socket missed the middle third of the events (a dropped connection); the
    server's `live_replay` on resume (everything final so far) fills the gap: the page ends
    with every word and speaker, as one that saw every event."""
    from server.live import FinalSoFar

    sid = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{server.url}/api/sessions", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"}), timeout=10).read())["id"]
    k, m = len(library_events) // 3, 2 * len(library_events) // 3
    said = FinalSoFar()
    for event in library_events[:m]:
        said.add(event)
    replay = said.replay()
    assert replay is not None
    # the resumed socket is subscribed from its upgrade on: a later update may come first
    early = [e for e in library_events[k:m] if e["type"] == "diarization_update" and e["turns"]]
    sent = library_events[:k] + early[-1:] + [replay] + library_events[m:]
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server, live=True)
        sockets = record_on_a_stand_in(page, sid)
        for event in sent:
            sockets[0].send(json.dumps({**event, "session_id": sid}))
        page.wait_for_function(
            "n => Number(document.getElementById('live-view').dataset.events) === n", arg=len(sent))
        expected = Expected()
        for event in library_events:
            expected.apply(event)
        snap = page.evaluate(SNAPSHOT)
        assert snap["words"] == expected.word_rows()
        assert [s for s, *_ in snap["lanes"]] == expected.speakers
        assert errors == []
    finally:
        browser.close()


@pytest.mark.timeout(300)
def test_a_replay_keeps_an_earlier_live_stream_s_turns_and_ends_a_pause(
        pw: Any, server: LocalServer, sweep: Path) -> None:
    """A session's second live stream (its first was saved: a drop longer than 30 s)
    replays its own turns, from the second its audio begins (`from`): the first stream's
    turns before it stay on the lanes (the page emptied them all), and a pause said before
    the replay is over (one still holding is said again after it; the page kept showing
    it for the rest of the recording).  Then a resumed part clears a pause too."""
    sid = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{server.url}/api/sessions", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"}), timeout=10).read())["id"]
    word = {"index": 0, "word": " hello", "start": 0.5, "end": 0.9, "speaker": "SPEAKER_00"}
    sent = [{"type": "transcript_final", "words": [word], "text": "hello", "lag_seconds": 1.0,
             "at": 2.0},
            {"type": "diarization_update", "turns": [{"start": 0.2, "end": 2.0,
                                                     "speaker": "SPEAKER_00"}],
             "final_until": 2.0, "tentative": [], "speakers": 1, "lag_seconds": 1.0, "at": 3.0},
            {"type": "live_paused", "reason": "Live results are 12 s behind the audio"},
            {"type": "live_replay", "words": [], "turns": [{"start": 41.0, "end": 43.0,
                                                           "speaker": "SPEAKER_01"}],
             "final_until": 43.0, "at": 44.0, "from": 40.0}]
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server, live=True)
        sockets = record_on_a_stand_in(page, sid)
        for event in sent[:3]:
            sockets[0].send(json.dumps({**event, "session_id": sid}))
        page.wait_for_function("document.getElementById('live-view').dataset.paused === '1'")
        sockets[0].send(json.dumps({**sent[3], "session_id": sid}))
        page.wait_for_function(
            "n => Number(document.getElementById('live-view').dataset.events) === n", arg=4)
        snap = page.evaluate(SNAPSHOT)
        assert [(s, final) for s, _, final, _ in snap["lanes"]] == [("SPEAKER_00", 1),
                                                                   ("SPEAKER_01", 1)]
        assert page.evaluate("document.getElementById('live-view').dataset.paused") == ""
        sockets[0].send(json.dumps({**sent[2], "session_id": sid}))
        page.wait_for_function("document.getElementById('live-view').dataset.paused === '1'")
        sockets[0].send(json.dumps({"type": "recording_started", "session_id": sid,
                                    "format": "wav", "part": 1, "resumed": True,
                                    "live_results": True}))
        page.wait_for_function("document.getElementById('live-view').dataset.paused === ''")
        assert errors == []
    finally:
        browser.close()


# ---------------------------------------------------------------------- against a real server


@pytest.fixture(scope="module")
def sample_call_48k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The sample call (a real 30 s phone call of two people) as the fake microphone plays it."""
    import soundfile as sf
    import soxr

    from workbench.research.datasets import sample_call

    audio, rate = sf.read(sample_call().audio, dtype="float32")
    audio = soxr.resample(audio, rate, 48000)
    path = tmp_path_factory.mktemp("call") / "sample48k.wav"
    sf.write(path, audio, 48000, subtype="PCM_16")
    return path, len(audio) / 48000


def warm_live_server(data: Path, pipeline: str,
                     env: Optional[dict[str, str]] = None) -> LocalServer:
    """A server of one live session with `pipeline`, once its worker loaded ahead
    (--live-warm) is ready: the page is measured, not the model loading (10-50 s on a busy
    2-core box, longer than the call)."""
    srv = LocalServer(data, args=["--pipeline", pipeline, "--max-live-sessions", "1",
                                  "--live-warm"], env=env).start()
    deadline = time.monotonic() + 180
    while _health(srv)["live"].get("warm") != 1:
        assert time.monotonic() < deadline, "no live worker loaded ahead"
        time.sleep(0.5)
    return srv


LIVE_LINKS = "#downloads a.download[data-kind='live']"


def wait_live_links(page: Any, timeout: float = 60) -> dict[str, str]:
    """The live run's download links by format, once the card shows them (the live run may
    be saved after the refined run ended: its links come then)."""
    page.wait_for_function(f"document.querySelectorAll(\"{LIVE_LINKS}\").length >= 6",
                           timeout=timeout * 1000)
    links = page.eval_on_selector_all(LIVE_LINKS, "els => els.map(a => [a.dataset.format, a.href])")
    return dict(links)


def live_workers(srv: LocalServer) -> list[Any]:
    """The server's live worker processes: its children that niced themselves (they do so
    first thing; the processing workers do not)."""
    import psutil

    assert srv.process is not None
    server = psutil.Process(srv.process.pid)
    found = []
    for child in server.children():
        try:
            if child.nice() > server.nice():
                found.append(child)
        except psutil.Error:  # (gone meanwhile)
            pass
    return found


def words_of(text: str) -> list[str]:
    return [w for w in (t.strip(".,?!;:\"'").lower() for t in text.split()) if w]


@pytest.mark.timeout(600)
def test_live_words_before_stop_then_the_refined_transcript(
        pw: Any, sample_call_48k: tuple[Path, float], tmp_path: Path) -> None:
    wav, seconds = sample_call_48k
    srv = warm_live_server(tmp_path / "data", "full")
    browser = launch(pw, wav)
    try:
        page, errors = open_page(browser, srv, live=True)
        page.click("#start")
        page.wait_for_function("window.__recorder && window.__recorder.state === 'recording'")
        started = time.monotonic()
        page.wait_for_selector("#live-view:not([hidden])", timeout=10_000)
        # Live words while the call is still playing, well before Stop.
        page.wait_for_function("Number(document.getElementById('live-view').dataset.words) >= 5",
                               timeout=(seconds + 90) * 1000)
        first_words_after = time.monotonic() - started
        time.sleep(max(0.0, seconds + 1.5 - (time.monotonic() - started)))  # the whole call
        assert page.evaluate("window.__recorder.state") == "recording"
        before_stop = page.evaluate(SNAPSHOT)
        screenshot(page, "browser_live_recording.png")
        page.click("#stop")
        page.wait_for_selector("#result[data-state='processing']", timeout=20_000)
        assert page.is_visible("#live-view")  # kept in view until the refined one is ready
        wait_result(page, timeout=300)
        sid = page.get_attribute("#result", "data-session-id")
        assert errors == []

        shown = [w for _, w, _ in before_stop["words"]]
        assert len(shown) >= 20, (first_words_after, shown)
        print(f"first live words {first_words_after:.1f} s after start; {len(shown)} words before Stop")
        assert any(s for _, _, s in before_stop["words"])  # speakers while recording

        # The refined speaker-attributed transcript replaced the live one, and says so.
        assert page.is_hidden("#live-view")
        note = page.inner_text("#live-note")
        assert "refined transcript replaces the live one" in note
        speakers = set(page.eval_on_selector_all("#transcript .turn", "els => els.map(e => e.dataset.speaker)"))
        assert len(speakers) >= 2, speakers
        runs = get_json(f"{srv.url}/api/sessions/{sid}/runs")["runs"]
        live = [r for r in runs if r["kind"] == "live"]
        refined = [r for r in runs if r["kind"] == "refined"]
        assert len(live) == 1 and len(refined) == 1 and refined[0]["supersedes"] == live[0]["id"]
        assert live[0]["id"][:8] in note

        # Both transcripts download in every format; the live one holds the words shown live.
        live_links = wait_live_links(page)
        assert sorted(live_links) == sorted(["json", "srt", "vtt", "txt", "rttm", "csv"])
        assert all(f"run={live[0]['id']}" in href for href in live_links.values())
        live_doc = get_json(live_links["json"])
        live_words = [w for seg in live_doc["segments"] for w in words_of(seg["text"])]
        shown_words = words_of(" ".join(shown))
        assert live_words[:len(shown_words)] == shown_words  # committed words never changed
        refined_text = page.inner_text("#transcript").lower()
        assert sum(w in refined_text for w in set(shown_words)) >= 0.6 * len(set(shown_words))
        screenshot(page, "browser_live_refined.png")
    finally:
        browser.close()
        srv.stop()


@pytest.mark.timeout(600)
def test_the_live_downloads_come_once_the_live_run_is_saved_after_the_refined_one(
        pw: Any, sample_call_48k: tuple[Path, float], tmp_path: Path) -> None:
    """On a busy machine the refined run can end while the live run is still being saved.
    The card then shows the refined transcript at once, and the live run's downloads join
    it when the live run is saved (they were never shown), and the note says so. The live
    worker is stopped (SIGSTOP) from Stop until the card is ready, which forces that order
    (the server's stall limit for a silent live worker is lifted meanwhile)."""
    wav, _ = sample_call_48k
    srv = warm_live_server(tmp_path / "data", "full", env={"WORKBENCH_LIVE_STALL_SECONDS": "600"})
    browser = launch(pw, wav)
    stopped: list[Any] = []
    try:
        page, errors = open_page(browser, srv, live=True)
        page.click("#start")
        page.wait_for_function("window.__recorder && window.__recorder.state === 'recording'")
        page.wait_for_function("Number(document.getElementById('live-view').dataset.words) >= 3",
                               timeout=120_000)
        stopped = live_workers(srv)
        assert stopped, "no live worker"
        for worker in stopped:
            worker.suspend()
        page.click("#stop")
        wait_result(page, timeout=300)
        sid = page.get_attribute("#result", "data-session-id")
        runs = get_json(f"{srv.url}/api/sessions/{sid}/runs")["runs"]
        (live,) = [r for r in runs if r["kind"] == "live"]
        (refined,) = [r for r in runs if r["kind"] == "refined"]
        assert live["status"] == "running" and refined["status"] == "completed"
        assert page.eval_on_selector_all(LIVE_LINKS, "els => els.length") == 0
        assert page.eval_on_selector_all("#downloads a.download", "els => els.length") > 0
        assert "still being saved" in page.inner_text("#live-note")
        for worker in stopped:
            worker.resume()
        live_links = wait_live_links(page)
        assert sorted(live_links) == sorted(["json", "srt", "vtt", "txt", "rttm", "csv"])
        assert all(f"run={live['id']}" in href for href in live_links.values())
        saved = {r["id"]: r for r in get_json(f"{srv.url}/api/sessions/{sid}/runs")["runs"]}
        assert saved[live["id"]]["status"] == "completed"
        note = page.inner_text("#live-note")
        assert "replaces the live one" in note and 'under "Live transcript"' in note, note
        assert errors == []
    finally:
        for worker in stopped:
            try:
                worker.resume()
            except Exception:  # noqa: BLE001 - (gone)
                pass
        browser.close()
        srv.stop()


def test_live_results_over_budget_are_explained(pw: Any, sweep: Path, tmp_path: Path) -> None:
    """A server with live results off: the page says so, and records as usual."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions", "--max-live-sessions", "0"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv, live=True)
        page.click("#start")
        box = notice(page, "live")
        box.wait_for(timeout=15_000)
        assert "No live transcript for this recording" in box.inner_text()
        assert "recording itself goes on" in box.inner_text()
        assert page.is_hidden("#live-view")
        time.sleep(1.5)
        page.click("#stop")
        wait_result(page, timeout=30)
        sid = page.get_attribute("#result", "data-session-id")
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        assert session["status"] == "completed" and session["duration_seconds"] > 1
        assert [r["kind"] for r in session["runs"]] == ["refined"]
        assert page.is_hidden("#live-view") and page.is_hidden("#live-note")
        assert errors == []
    finally:
        browser.close()
        srv.stop()


@pytest.mark.timeout(600)
def test_with_renditions_only_the_live_transcript_stays_the_sessions(
        pw: Any, sample_call_48k: tuple[Path, float], tmp_path: Path) -> None:
    """`--pipeline renditions`: its run makes no transcript, so the live run is the
    session's. At processing_complete the page hid the live words and said "No
    transcript: this server only made audio files"; opened again, it said so too. It
    shows the live run's transcript once that is saved, with its downloads."""
    wav, _ = sample_call_48k
    srv = warm_live_server(tmp_path / "data", "renditions")
    browser = launch(pw, wav)
    try:
        page, errors = open_page(browser, srv, live=True)
        page.click("#start")
        page.wait_for_function("Number(document.getElementById('live-view').dataset.words) >= 5",
                               timeout=120_000)
        page.click("#stop")
        wait_result(page, timeout=120)
        sid = page.get_attribute("#result", "data-session-id")
        for _ in range(2):  # after Stop, then opened again from the list
            text = page.inner_text("#transcript")
            assert "live transcript made while recording" in text and "No transcript" not in text, text
            live = [r for r in get_json(f"{srv.url}/api/sessions/{sid}/runs")["runs"]
                    if r["kind"] == "live"]
            assert len(live) == 1 and live[0]["status"] == "completed"
            served = get_json(f"{srv.url}/api/sessions/{sid}")["transcript"]
            assert served["runs"] == [live[0]["id"]] and served["kind"] == "live"
            assert f"{served['word_count']} words" in page.inner_text("#result-summary")
            hrefs = page.eval_on_selector_all("#downloads a.download", "els => els.map(a => a.href)")
            # the session's transcript (every live run's, as the server joins a recording
            # made in parts), not one run's
            assert any(href.endswith(f"/api/sessions/{sid}/transcript?format=json") for href in hrefs)
            page.evaluate("document.getElementById('result').dataset.state = 'old'")
            page.click(f"#session-list li[data-session-id='{sid}'] button")
            wait_result(page, timeout=30)
        assert errors == []
    finally:
        browser.close()
        srv.stop()
