"""The recorder page (server/static) in Debian's Chromium, driven by Playwright.

Chromium's fake capture device plays a WAV file as the microphone, in real time,
from the moment the page opens it; everything else is real: the server process,
its pipeline, MediaRecorder, the WebSocket and the REST API.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pytest
import soundfile as sf

from workbench.engine.audio import decode_file
from workbench.engine.formats import read_rttm_turns, read_srt, read_vtt
from workbench.notebook.client import Client
from workbench.notebook.local_server import LocalServer

from .conftest import espeak

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

# The conversation: two clearly different espeak-ng voices taking turns.
TURNS = [
    ("en-us+m3", "Good morning. Did you bring the quarterly report for the meeting?"),
    ("en+f4", "Yes, I printed three copies and left them on the kitchen table."),
    ("en-us+m3", "Great. Please send the budget numbers to Stella before lunch."),
    ("en+f4", "Sure, I will email the spreadsheet this afternoon."),
]
EXPECTED_WORDS = ["morning", "report", "meeting", "copies", "kitchen", "table", "stella", "lunch",
                  "spreadsheet", "afternoon"]

# The resume test's microphone: a sine sweep whose frequency tells the time it was played.
SWEEP_START_HZ = 200.0
SWEEP_HZ_PER_S = 90.0
SWEEP_SECONDS = 20.0


# ---------------------------------------------------------------------- fixtures


def _write_48k(path: Path, samples: np.ndarray, rate: int = 48000) -> Path:
    sf.write(path, samples.astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A ~20 s two-speaker WAV (48 kHz) and its duration."""
    import soxr

    d = tmp_path_factory.mktemp("conversation")
    rate = 48000
    pieces = [np.zeros(rate // 2, np.float32)]
    for i, (voice, text) in enumerate(TURNS):
        x, r = sf.read(espeak(text, d / f"turn{i}.wav", voice=voice, speed=150), dtype="float32")
        pieces += [soxr.resample(x, r, rate), np.zeros(int(0.6 * rate), np.float32)]
    audio = np.concatenate(pieces)
    return _write_48k(d / "conversation.wav", audio), len(audio) / rate


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rate = 48000
    t = np.arange(int(SWEEP_SECONDS * rate)) / rate
    phase = 2 * np.pi * np.cumsum(SWEEP_START_HZ + SWEEP_HZ_PER_S * t) / rate
    return _write_48k(tmp_path_factory.mktemp("sweep") / "sweep.wav", 0.3 * np.sin(phase))


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        yield p


def launch(pw: Any, audio: Optional[Path] = None, *, grant: bool = True,
           microphone: bool = True) -> Any:
    """Chromium with a fake microphone playing `audio` (permission granted unless `grant=False`)."""
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    if grant:
        args.append("--use-fake-ui-for-media-stream")
    if microphone:
        args.append("--use-fake-device-for-media-stream")
        if audio is not None:
            args.append(f"--use-file-for-fake-audio-capture={audio}%noloop")
    return pw.chromium.launch(executable_path=CHROMIUM, args=args)


def open_page(browser: Any, srv: LocalServer, *, live: bool = False) -> tuple[Any, list[str]]:
    """The recorder page of `srv`, and the list its uncaught exceptions are collected in.

    "Live transcript while recording" is unticked unless `live` (the tests here are
    about recording and the refined result; tests/test_browser_live.py is about live).
    """
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(srv.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    assert page.is_checked("#live-results")  # on by default
    if not live:
        page.uncheck("#live-results")
    return page, errors


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def get_json(url: str) -> Any:
    return json.loads(fetch(url)[2])


def recorder(page: Any, expr: str) -> Any:
    return page.evaluate(f"() => {{ const r = window.__recorder; return {expr}; }}")


def notice(page: Any, key: str) -> Any:
    return page.locator(f"#notices .notice[data-key='{key}']")


def screenshot(page: Any, name: str) -> None:
    """Save the whole page to tests/artifacts/ (git-ignored) for a human to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def wait_result(page: Any, timeout: float = 60) -> None:
    page.wait_for_selector("#result[data-state='ready']", timeout=timeout * 1000)


def record_for(page: Any, seconds: float) -> None:
    """Press Start and record for `seconds` once the server has taken the recording."""
    page.click("#start")
    page.wait_for_function("window.__recorder && window.__recorder.state === 'recording'")
    time.sleep(seconds)


def recording_again(page: Any) -> str:
    """Wait until the page records its second part (back after an outage); the id of the
    session it records in."""
    page.wait_for_function(
        "window.__recorder.state === 'recording' && window.__recorder.parts === 2",
        timeout=20_000)
    return str(recorder(page, "r.sessionId"))


def stop_and_wait(page: Any, errors: list[str]) -> None:
    """Press Stop and wait for the result, with no error in the page."""
    page.click("#stop")
    wait_result(page)
    assert errors == []


def server_goes_away(page: Any, srv: LocalServer) -> None:
    """Stop the server mid-recording and wait until the page is reconnecting."""
    srv.stop()
    page.wait_for_function("window.__recorder.state === 'reconnecting'", timeout=10_000)


# ---------------------------------------------------------------------- end to end


@pytest.mark.timeout(240)
def test_record_conversation_end_to_end(pw: Any, conversation: tuple[Path, float],
                                        tmp_path: Path) -> None:
    """Record a two-speaker conversation through the page with the full pipeline."""
    wav, seconds = conversation
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "full"]).start()
    browser = launch(pw, wav)
    try:
        page, errors = open_page(browser, srv)
        page.evaluate("""() => {
            window.__stages = [];
            new MutationObserver(() => {
                const s = document.getElementById('stage').dataset.stage;
                if (s && !window.__stages.includes(s)) window.__stages.push(s);
            }).observe(document.getElementById('stage'), {attributes: true, childList: true});
        }""")
        page.click("#start")
        page.wait_for_function("window.__recorder && window.__recorder.state === 'recording'")
        levels, clock = [], set()
        deadline = time.monotonic() + seconds + 1.0
        while time.monotonic() < deadline:  # the clip plays in real time
            levels.append(float(page.get_attribute("#level", "data-db") or "-inf"))
            clock.add(page.inner_text("#elapsed"))
            time.sleep(0.25)
        page.click("#stop")
        page.wait_for_selector("#result[data-state='processing']", timeout=20_000)
        wait_result(page, timeout=180)
        sid = page.get_attribute("#result", "data-session-id")
        assert errors == []

        # While recording: the level meter moved and the clock ran.
        assert max(levels) > -30, levels
        assert len(clock) >= int(seconds) - 1
        # After stop: processing progress with stage names.
        stages = page.evaluate("window.__stages")
        assert "asr" in stages and "done" in stages, stages

        # The transcript: speaker-coloured turns holding the words that were spoken.
        turns = page.locator("#transcript .turn")
        assert turns.count() >= 2
        speakers = set(page.eval_on_selector_all("#transcript .turn", "els => els.map(e => e.dataset.speaker)"))
        assert len(speakers) >= 2, speakers
        colours = set(page.eval_on_selector_all(
            "#transcript .turn", "els => els.map(e => getComputedStyle(e).borderLeftColor)"))
        assert len(colours) >= 2
        text = page.inner_text("#transcript").lower()
        found = [w for w in EXPECTED_WORDS if w in text]
        assert len(found) >= 7, (found, text)
        assert page.locator("#transcript .turn .time").first.inner_text().startswith("0:0")

        # The player and every download link.
        player_src = page.get_attribute("#player", "src")
        assert player_src == f"/api/sessions/{sid}/audio?format=wav"
        links = dict(page.eval_on_selector_all(
            "#downloads a.download", "els => els.map(a => [a.dataset.format, a.href])"))
        assert sorted(links) == sorted(["wav", "mp4", "json", "srt", "vtt", "txt", "rttm", "csv"])
        # saved as the server names them: a run's files by its id (a run processed again,
        # or the live run, gets names of its own)
        names = dict(page.eval_on_selector_all(
            "#downloads a.download", "els => els.map(a => [a.dataset.format, a.download])"))
        (run,) = [r for r in get_json(f"{srv.url}/api/sessions/{sid}")["runs"]
                  if r["kind"] == "refined"]
        assert names["wav"] == f"{sid}.wav" and names["srt"] == f"{sid}.{run['id'][:8]}.srt"
        files = {fmt: fetch(url) for fmt, url in links.items()}
        assert all(status == 200 for status, _, _ in files.values())
        audio, rate = sf.read(io.BytesIO(files["wav"][2]))
        assert rate == 16000 and len(audio) / rate == pytest.approx(seconds + 1.0, abs=1.5)
        mp4 = tmp_path / "audio.mp4"
        mp4.write_bytes(files["mp4"][2])
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                                "stream=codec_name", "-of", "csv=p=0", str(mp4)],
                               capture_output=True, text=True, check=True)
        assert probe.stdout.strip() == "aac"
        doc = json.loads(files["json"][2])
        assert len({s["speaker"] for s in doc["segments"]}) >= 2
        srt = read_srt(files["srt"][2].decode())
        vtt_text = files["vtt"][2].decode()
        assert vtt_text.startswith("WEBVTT") and read_vtt(vtt_text)
        assert len(srt) == len(doc["segments"])
        # the TXT holds the JSON's segments, one line each (which words the ASR heard in
        # a browser recording is checked above: "stella" once came out as another word)
        txt = files["txt"][2].decode()
        assert len(txt.splitlines()) == len(doc["segments"])
        assert all(s["text"].strip() in txt for s in doc["segments"])
        assert len({t.speaker for t in read_rttm_turns(files["rttm"][2].decode())}) >= 2
        rows = list(csv.reader(io.StringIO(files["csv"][2].decode())))
        assert rows[0][:2] == ["segment", "speaker"] and len(rows) > 10

        # The session is in the list, and opening it from there shows the same result.
        item = page.locator(f"#session-list li[data-session-id='{sid}']")
        item.wait_for()
        assert "completed" in item.inner_text().lower()
        page.evaluate("document.getElementById('result').hidden = true")
        item.locator("button").click()
        wait_result(page)
        assert page.locator("#transcript .turn").count() == turns.count()

        screenshot(page, "browser_result.png")
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        assert session["status"] == "completed" and session["parts"][0]["container"] == "webm"
    finally:
        browser.close()
        srv.stop()


# ---------------------------------------------------------------------- dropped connection


def sweep_positions(samples: np.ndarray, rate: int = 16000, frame: float = 0.05) -> np.ndarray:
    """For each `frame`-long window of a recorded sweep: the sweep time it holds (nan: silence)."""
    n = int(rate * frame)
    window = np.hanning(n)
    out = []
    for i in range(0, len(samples) - n + 1, n):
        seg = samples[i:i + n]
        if np.sqrt(np.mean(seg ** 2)) < 0.02:
            out.append(np.nan)
            continue
        spectrum = np.abs(np.fft.rfft(seg * window, 16 * n))
        freq = np.argmax(spectrum) * rate / (16 * n)
        out.append((freq - SWEEP_START_HZ) / SWEEP_HZ_PER_S)
    return np.array(out)


@pytest.mark.timeout(120)
def test_dropped_connection_resumes_without_losing_the_outage(pw: Any, sweep: Path,
                                                              tmp_path: Path) -> None:
    """The server goes away mid-recording and comes back: the page keeps recording,
    resumes the same session, and the final audio has no gap as long as the outage."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        record_for(page, 3)

        outage_started = time.monotonic()
        srv.stop()  # SIGTERM: the server closes the socket (going away) and exits
        page.wait_for_function("window.__recorder.state === 'reconnecting'", timeout=10_000)
        assert "Connection to the server lost" in notice(page, "connection").inner_text()
        screenshot(page, "browser_reconnecting.png")
        time.sleep(2)
        srv = LocalServer(srv.data_dir, port=srv.port, args=["--pipeline", "renditions"]).start()
        outage = time.monotonic() - outage_started
        page.wait_for_function("window.__recorder.parts === 2 && window.__recorder.state === 'recording'",
                               timeout=20_000)
        assert "Reconnected" in notice(page, "connection").inner_text()
        time.sleep(2)
        page.click("#stop")
        wait_result(page)
        assert errors == []

        sid, wall, dropped = recorder(page, "[r.sessionId, r.elapsed, r.bytesDropped]")
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        assert [p["index"] for p in session["parts"]] == [0, 1]
        assert all(p["container"] == "webm" and p["bytes"] > 0 for p in session["parts"])
        _, _, body = fetch(f"{srv.url}/api/sessions/{sid}/audio?format=wav")
        audio = decode_file(_bytes_file(tmp_path / "final.wav", body))
        duration = len(audio) / 16000

        # Everything captured during the outage is in the recording: the final audio
        # is (nearly) as long as the wall-clock recording, not shorter by the outage.
        assert outage > 2.5
        assert duration > wall - 0.8, (duration, wall, outage, dropped)
        positions = sweep_positions(audio)
        voiced = positions[~np.isnan(positions)]
        assert np.isnan(positions[5:-5]).sum() * 0.05 < 0.3  # no silent stretch inside
        steps = np.diff(voiced)
        # The sweep moves on 0.05 s per 0.05 s frame; a jump is audio that never arrived.
        gap = float(steps.max() - 0.05)
        assert gap < 0.6, (gap, outage)
        assert steps.min() > -0.1  # nothing played twice either
        assert voiced[-1] - voiced[0] == pytest.approx(duration, abs=0.8)
    finally:
        browser.close()
        srv.stop()


@pytest.mark.timeout(150)
def test_a_stop_the_server_could_not_save_is_sent_again_once_it_can(
        pw: Any, sweep: Path, tmp_path: Path) -> None:
    """The server could not save the recording at `stop` (here audio.wav cannot be
    written: a folder is in its place) and answered 5000 with no `recording_stopped`: the
    page stayed "stopping" for good. It now asks over REST, as after a drop, and once the
    server has marked the session interrupted, resumes it and stops it again, backing off
    until the server can save it: the recording is processed."""
    with page_on_a_new_server(pw, sweep, tmp_path) as (srv, page, errors):
        record_for(page, 2)
        sid = recorder(page, "r.sessionId")
        in_the_way = srv.data_dir / "sessions" / sid / "audio.wav"
        in_the_way.mkdir()
        page.click("#stop")
        page.wait_for_function("window.__recorder.reconnects > 0", timeout=20_000)
        time.sleep(5)  # the server still cannot save it: the page's tries back off
        # (interrupted, or still recording while the server retries marking it so)
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        assert session["status"] in ("recording", "interrupted")
        assert len(session["parts"]) <= 7, len(session["parts"])  # (every 250 ms: ~15)
        in_the_way.rmdir()  # room again: the page's next resume and stop are saved
        wait_result(page, timeout=90)
        assert errors == []
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        assert session["status"] == "completed" and len(session["parts"]) >= 2, session
        assert session["duration_seconds"] >= 1.5


@contextlib.contextmanager
def page_on_a_new_server(pw: Any, sweep: Path,
                         tmp_path: Path) -> Iterator[tuple[LocalServer, Any, list[str]]]:
    """A server doing renditions only, its data in `tmp_path`, and the recorder page on it
    (recording `sweep`); both closed afterwards."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        yield srv, page, errors
    finally:
        browser.close()
        srv.stop()


def scripted_socket(page: Any, on_stop: list[dict[str, Any]]) -> list[Any]:
    """A scripted stand-in for the recording socket: `start` is answered with a
    `recording_started` of session s1, `stop` with the messages `on_stop`; the sockets."""
    sockets: list[Any] = []

    def stand_in(ws: Any) -> None:
        def on_message(message: Any) -> None:
            action = json.loads(message)["action"] if isinstance(message, str) else None
            if action == "start":
                ws.send(json.dumps({"type": "recording_started", "session_id": "s1",
                                    "format": "wav", "part": 1, "resumed": True}))
            elif action == "stop":
                for reply in on_stop:
                    ws.send(json.dumps(reply))
        ws.on_message(on_message)
        sockets.append(ws)

    page.route_web_socket("**/ws/**", stand_in)
    return sockets


STOPPED = {"type": "recording_stopped", "session_id": "s1", "duration_seconds": 3.0,
           "chunks_received": 3, "total_size_mb": 0.1, "truncated": False}


@pytest.mark.timeout(120)
def test_parts_left_out_of_the_recording_are_named_on_the_page(pw: Any, sweep: Path,
                                                               tmp_path: Path) -> None:
    """`recording_stopped` names the parts the server could not decode (`undecoded_parts`:
    processing goes on without them); the page said nothing, and the result came with
    part of the audio missing."""
    with page_on_a_new_server(pw, sweep, tmp_path) as (srv, page, errors):
        scripted_socket(page, [{**STOPPED, "undecoded_parts": [
            {"part": 1, "error": "Invalid data found"}]}])
        record_for(page, 1)
        page.click("#stop")
        box = notice(page, "warning")
        box.wait_for(timeout=20_000)
        text = box.inner_text()
        assert "1 part(s) of the recording could not be decoded" in text, text
        assert "part 2: Invalid data found" in text and "kept on the server" in text, text
        assert errors == []


@pytest.mark.timeout(120)
def test_chunks_refused_after_a_limit_raise_no_warning(pw: Any, sweep: Path,
                                                      tmp_path: Path) -> None:
    """The server ends a recording at a limit (4005) and refuses the chunks the page sent
    before that reached it (4002: no recording): each showed "Warning. Server: Recording
    not started" beside "Everything recorded up to the limit is kept"."""
    with page_on_a_new_server(pw, sweep, tmp_path) as (srv, page, errors):
        sockets = scripted_socket(page, [])
        record_for(page, 1)
        sockets[0].send(json.dumps({"type": "error", "code": 4005,
                                    "message": "Recording duration exceeds limit (1 hour)"}))
        notice(page, "limit").wait_for(timeout=20_000)
        for _ in range(2):
            sockets[0].send(json.dumps({"type": "error", "code": 4002, "message":
                                        "Recording not started. Send 'start' action first"}))
        sockets[0].send(json.dumps(STOPPED))  # (after them: once it is handled, so are they)
        page.wait_for_function("[...document.querySelectorAll('#log *')].some("
                               "e => e.textContent.includes('Recording stopped'))",
                               timeout=20_000)
        assert notice(page, "warning").count() == 0, notice(page, "warning").inner_text()
        assert errors == []


@pytest.mark.timeout(120)
def test_stop_during_an_outage_delivers_the_rest_later(pw: Any, sweep: Path, tmp_path: Path) -> None:
    """Stop pressed while the server is away: the audio waits in the page and is sent,
    followed by `stop`, once the server is back."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        page.check("input[name='format'][value='mp4']")
        page.click("#record-form details summary")
        page.select_option("#num-speakers", "2")
        record_for(page, 2)
        server_goes_away(page, srv)
        time.sleep(1)
        page.click("#stop")
        page.wait_for_function("window.__recorder.state === 'stopping'")
        assert recorder(page, "r.pendingBytes") > 0  # the audio since the drop waits here
        assert page.is_disabled("#stop")
        srv = LocalServer(srv.data_dir, port=srv.port, args=["--pipeline", "renditions"]).start()
        wait_result(page, timeout=30)
        assert errors == []
        sid, wall = recorder(page, "[r.sessionId, r.elapsed]")
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        assert session["status"] == "completed" and len(session["parts"]) == 2
        assert session["format"] == "mp4" and session["options"]["num_speakers"] == 2
        assert session["duration_seconds"] == pytest.approx(wall, abs=0.8)
    finally:
        browser.close()
        srv.stop()


@pytest.mark.timeout(150)
def test_a_server_restart_while_stop_is_saved_processes_the_recording_once(
        pw: Any, sweep: Path, tmp_path: Path) -> None:
    """The server stops right after the page sent `stop` and stays down a while. The page
    asked over REST whether the stop had arrived only on its first attempt back; on the
    next ones it resumed blindly, and the server, back, took the processed session's new
    `start`: an empty second part and a second run. Now it asks until it gets an answer,
    then follows the processing, and says nothing about a lost connection afterwards.
    Then "Process again", clicked twice at once, makes one run."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        record_for(page, 2)
        page.click("#stop")
        page.wait_for_function("window.__recorder.stopSent")
        srv.stop()  # (it finalises a stop that arrived: the restart processes the session)
        time.sleep(4)  # the page's attempts back fail meanwhile
        srv = LocalServer(srv.data_dir, port=srv.port, args=["--pipeline", "renditions"]).start()
        wait_result(page, timeout=60)
        sid = recorder(page, "r.sessionId")
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        refined = [r for r in session["runs"] if r["kind"] == "refined"]
        assert len(refined) == 1 and session["status"] == "completed", session
        assert not notice(page, "connection").is_visible()
        page.evaluate("""() => { const b = [...document.querySelectorAll('#result-actions button')]
                                   .find((e) => e.textContent === 'Process again');
                                 b.click(); b.click(); }""")
        page.wait_for_function(f"""async () => {{
            const s = await (await fetch('/api/sessions/{sid}')).json();
            return s.runs.filter((r) => r.kind === 'refined').length === 2
              && s.runs.every((r) => r.status === 'completed'); }}""")
        time.sleep(1)  # (a second run would be posted by now)
        wait_result(page, timeout=30)
        runs = [r for r in get_json(f"{srv.url}/api/sessions/{sid}")["runs"]
                if r["kind"] == "refined"]
        assert len(runs) == 2, runs
        assert errors == []
    finally:
        browser.close()
        srv.stop()


@pytest.mark.timeout(150)
def test_a_session_deleted_during_an_outage_is_said_to_be_gone(pw: Any, sweep: Path,
                                                               tmp_path: Path) -> None:
    """The session is deleted while the page is away: the server takes the page's
    `start` for a new session. The page went on in it without a word (and kept saying
    that the connection was lost); it says now that the old session is gone."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        record_for(page, 2)
        old = recorder(page, "r.sessionId")
        server_goes_away(page, srv)
        # the page stays away until the session is deleted (it came back first now and
        # then, resumed, and the DELETE was refused with 409: a race, not the case here)
        deleted = False

        def away_until_deleted(ws: Any) -> None:
            if deleted:
                ws.connect_to_server()
            else:
                ws.close(code=1001, reason="still away")

        page.route_web_socket("**/ws/**", away_until_deleted)
        srv = LocalServer(srv.data_dir, port=srv.port, args=["--pipeline", "renditions"]).start()
        request = urllib.request.Request(f"{srv.url}/api/sessions/{old}", method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 204
        deleted = True
        new = recording_again(page)
        assert new != old
        text = notice(page, "connection").inner_text()
        assert "deleted" in text and old[:8] in text and new[:8] in text, text
        stop_and_wait(page, errors)
    finally:
        browser.close()
        srv.stop()


@pytest.mark.timeout(150)
def test_a_server_back_with_a_token_asks_for_it_and_the_recording_resumes(
        pw: Any, sweep: Path, tmp_path: Path) -> None:
    """The server comes back started with a token: the page's sockets were refused (401)
    and it retried every 5 s for ever, never asking for the token (a reload, losing the
    audio kept in the page, was the way out). It asks now, and resumes the same session."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        record_for(page, 2)
        sid = recorder(page, "r.sessionId")
        server_goes_away(page, srv)
        token = "back with a token"
        srv = LocalServer(srv.data_dir, port=srv.port, args=["--pipeline", "renditions"],
                          env={"WORKBENCH_TOKEN": token}).start()
        page.wait_for_selector("#auth:not([hidden])", timeout=20_000)
        page.fill("#auth-token", token)
        page.click("#auth button[type='submit']")
        assert recording_again(page) == sid
        stop_and_wait(page, errors)
    finally:
        browser.close()
        srv.stop()


@pytest.mark.timeout(150)
def test_resume_refused_while_the_server_is_full_is_tried_again(pw: Any, sweep: Path,
                                                                 tmp_path: Path) -> None:
    """The server comes back full (its one recording slot taken by another client): the
    page's `start` on reconnect is refused with 4012. The page keeps the audio since the
    drop, tries again, and resumes once the slot is free; Stop pressed meanwhile waits
    for that too (before: the recording failed, or froze in 'stopping' after a Stop)."""
    args = ["--pipeline", "renditions", "--max-recordings", "1"]
    srv = LocalServer(tmp_path / "data", args=args).start()
    browser = launch(pw, sweep)
    client: Optional[Client] = None
    occupy = threading.Event()
    try:
        page, errors = open_page(browser, srv)
        record_for(page, 2)
        server_goes_away(page, srv)
        # the page's attempts wait until another recording holds the only slot
        page.evaluate("() => { const r = window.__recorder; r.__reconnect = r._reconnect;"
                      " r._reconnect = () => {}; }")
        srv = LocalServer(srv.data_dir, port=srv.port, args=args).start()
        client = Client(srv)
        other = client.submit(client.aio.record(np.zeros(16000 * 120, np.float32), realtime=True,
                                                stop_event=occupy, wait=False))
        deadline = time.monotonic() + 20
        while not any(s["status"] == "recording" for s in get_json(f"{srv.url}/api/sessions")["sessions"]):
            assert time.monotonic() < deadline and not other.done()
            time.sleep(0.1)
        page.evaluate("() => { const r = window.__recorder; r._reconnect = r.__reconnect;"
                      " r._scheduleReconnect(null); }")
        notice(page, "warning").wait_for(timeout=15_000)
        assert "cannot take the recording back yet" in notice(page, "warning").inner_text()
        assert recorder(page, "r.state") == "reconnecting"
        assert recorder(page, "r.pendingBytes") > 0
        page.click("#stop")
        page.wait_for_function("window.__recorder.state === 'stopping'")
        occupy.set()
        assert other.result(timeout=30).run_id
        wait_result(page, timeout=40)
        assert errors == []
        sid, wall = recorder(page, "[r.sessionId, r.elapsed]")
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        assert session["status"] == "completed" and len(session["parts"]) == 2
        assert session["duration_seconds"] == pytest.approx(wall, abs=0.8)
    finally:
        occupy.set()
        if client is not None:
            client.close()
        browser.close()
        srv.stop()


@pytest.mark.timeout(120)
def test_resume_refused_at_a_limit_processes_what_was_kept(pw: Any, sweep: Path,
                                                           tmp_path: Path) -> None:
    """The server comes back with a lower duration limit than the session already holds:
    the `start` on reconnect is refused with 4005. The page says that the audio since the
    drop could not be added and has what reached the server processed (before: after a
    Stop it failed, and the session stayed interrupted with nothing to start its run). The
    card follows that run until it is done (before: a run asked for was queued while the
    session still said interrupted, so the card showed the unprocessed session at once)."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        record_for(page, 3)
        server_goes_away(page, srv)
        time.sleep(1)
        page.click("#stop")
        page.wait_for_function("window.__recorder.state === 'stopping'")
        assert recorder(page, "r.pendingBytes") > 0
        srv = LocalServer(srv.data_dir, port=srv.port,
                          args=["--pipeline", "renditions", "--max-duration", "1"]).start()
        box = notice(page, "limit")
        box.wait_for(timeout=20_000)
        text = box.inner_text()
        assert "already at the server's limit" in text
        assert "Recording duration exceeds limit (1 second)" in text
        assert "were not added" in text and "being processed" in text
        wait_result(page, timeout=30)
        assert errors == []
        sid, dropped = recorder(page, "[r.sessionId, r.bytesDropped]")
        assert dropped > 0
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        assert session["status"] == "completed" and len(session["parts"]) == 1
        assert session["duration_seconds"] > 2
        assert page.locator("#downloads a[data-format='wav']").count() == 1
    finally:
        browser.close()
        srv.stop()


def _bytes_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------- failures on the page


def test_microphone_denied_is_explained(pw: Any, server: LocalServer, sweep: Path) -> None:
    before = len(get_json(f"{server.url}/api/sessions")["sessions"])
    browser = launch(pw, sweep, grant=False)
    try:
        page, errors = open_page(browser, server)
        page.click("#start")
        box = notice(page, "mic")
        box.wait_for()
        assert "Microphone access was denied" in box.inner_text()
        screenshot(page, "browser_microphone_denied.png")
        assert "allow the microphone" in box.inner_text().lower()
        assert page.get_attribute("#start", "disabled") is None  # one can try again
        assert page.is_hidden("#live")
        assert len(get_json(f"{server.url}/api/sessions")["sessions"]) == before
        assert errors == []
    finally:
        browser.close()


def test_page_clock_rounds_into_the_next_minute(pw: Any, server: LocalServer, sweep: Path) -> None:
    """Turn times, live line headers and talk times: 59.96 s is 1:00.0, not 0:60.0."""
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, server)
        shown = page.evaluate("""async () => {
            const { formatTime } = await import('/static/transcript.js');
            return [59.96, 119.97, 3599.97, 3661.04, 0].map(formatTime);
        }""")
        assert shown == ["1:00.0", "2:00.0", "1:00:00.0", "1:01:01.0", "0:00.0"]
        assert errors == []
    finally:
        browser.close()


def test_missing_microphone_is_explained(pw: Any, server: LocalServer) -> None:
    browser = launch(pw, microphone=False)
    try:
        page, errors = open_page(browser, server)
        page.click("#start")
        box = notice(page, "mic")
        box.wait_for()
        assert "No microphone was found" in box.inner_text()
        assert errors == []
    finally:
        browser.close()


def test_server_unreachable_is_explained(pw: Any, sweep: Path, tmp_path: Path) -> None:
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        srv.stop()
        page.click("#start")
        box = notice(page, "server")
        box.wait_for()
        assert "Cannot reach the server" in box.inner_text()
        assert "running" in box.inner_text()
        assert page.is_hidden("#live")  # no recording was started into the void
        page.click("#refresh")
        assert "Cannot reach the server" in notice(page, "server").inner_text()
        assert errors == []
    finally:
        browser.close()
        srv.stop()


def test_limit_reached_is_explained(pw: Any, sweep: Path, tmp_path: Path) -> None:
    """The server ends a recording at its duration limit: the page says so and shows what was kept."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions", "--max-duration", "2"]).start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        page.click("#start")
        box = notice(page, "limit")
        box.wait_for(timeout=15_000)
        text = box.inner_text()
        assert "Recording duration exceeds limit (2 seconds)" in text
        assert "kept" in text
        wait_result(page, timeout=30)
        assert page.get_attribute("#stop", "disabled") is not None
        sid = page.get_attribute("#result", "data-session-id")
        session = get_json(f"{srv.url}/api/sessions/{sid}")
        assert session["status"] == "completed" and 1.5 < session["duration_seconds"] < 3.5
        assert page.locator("#downloads a[data-format='wav']").count() == 1
        assert errors == []
    finally:
        browser.close()
        srv.stop()


def test_processing_failure_is_explained(pw: Any, server: LocalServer, sweep: Path) -> None:
    """A `processing_failed` event (from a scripted stand-in for the socket) is shown plainly."""
    sid = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{server.url}/api/sessions", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"}), timeout=10).read())["id"]
    browser = launch(pw, sweep)
    try:
        page = browser.new_page()

        def fake_server(ws: Any) -> None:
            def on_message(message: Any) -> None:
                if not isinstance(message, str):
                    return
                action = json.loads(message)["action"]
                if action == "start":
                    ws.send(json.dumps({"type": "recording_started", "session_id": sid,
                                        "format": "wav", "part": 0, "resumed": False}))
                elif action == "stop":
                    for event in [
                        {"type": "recording_stopped", "duration_seconds": 1.2},
                        {"type": "processing_started", "message": "Transcription started"},
                        {"type": "processing_progress", "stage": "asr", "progress": 0.5,
                         "overall": 0.25},
                        {"type": "processing_failed", "message": "ASR model could not be loaded"},
                    ]:
                        ws.send(json.dumps({**event, "session_id": sid}))
            ws.on_message(on_message)

        page.route_web_socket("**/ws/**", fake_server)
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready='1']")
        record_for(page, 1)
        page.click("#stop")
        box = notice(page, "recording")
        box.wait_for()
        text = box.inner_text()
        assert "Processing failed" in text and "ASR model could not be loaded" in text
        assert "ASR model could not be loaded" in page.inner_text("#log")
    finally:
        browser.close()


def test_access_token_is_asked_for_and_used(pw: Any, sweep: Path, tmp_path: Path) -> None:
    """A server with a token: the page asks for it once, then uses it everywhere."""
    token = "correct horse battery"
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "renditions"],
                      env={"WORKBENCH_TOKEN": token})
    srv.start()
    browser = launch(pw, sweep)
    try:
        page, errors = open_page(browser, srv)
        page.wait_for_selector("#auth:not([hidden])")
        page.fill("#auth-token", "wrong")
        page.click("#auth button[type='submit']")
        page.wait_for_function("document.getElementById('auth-message').textContent.includes('did not accept')")
        assert page.is_visible("#auth")
        page.fill("#auth-token", token)
        page.click("#auth button[type='submit']")
        page.wait_for_selector("#sessions-empty:not([hidden])")
        assert page.is_hidden("#auth")
        assert page.evaluate("sessionStorage.getItem('workbench.token')") == token

        record_for(page, 1.5)
        page.click("#stop")
        wait_result(page)
        assert errors == []
        src = page.get_attribute("#player", "src")
        assert "token=" in src
        for href in page.eval_on_selector_all("#downloads a.download", "els => els.map(a => a.href)"):
            assert "token=" in href
            status, _, body = fetch(href)  # the link alone carries the token
            assert status == 200 and body
        assert page.evaluate(f"fetch('{src}').then(r => r.status)") == 200
        with pytest.raises(urllib.error.HTTPError) as exc:
            fetch(f"{srv.url}/api/sessions")
        assert exc.value.code == 401
    finally:
        browser.close()
        srv.stop()
