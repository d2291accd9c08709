"""The Voilà dashboard (notebooks/dashboard.ipynb) in Debian's Chromium, driven by Playwright.

A real server (full pipeline, live results) and a real Voilà serving the dashboard
notebook run on free loopback ports; Chromium's fake microphone plays the pyannote sample
call (real speech, two speakers). The page records through the microphone widget: the
browser streams WebM/Opus to the server itself, live words appear while it records, and
after Stop the refined, speaker-attributed transcript shows in the player. The frames
the widget sent and the messages it received are checked against the protocol and
against what the server stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import soundfile as sf

from workbench.notebook.live_view import LIVE_EVENTS
from workbench.notebook.local_server import REPO_ROOT, LocalServer, free_port
from workbench.research.datasets import sample_call

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
VOILA = Path(sys.executable).with_name("voila")
NOTEBOOK = REPO_ROOT / "notebooks" / "dashboard.ipynb"
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.models,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
    pytest.mark.skipif(not VOILA.exists(), reason="voila is not installed"),
]


@pytest.fixture(scope="module")
def microphone_audio(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The sample call at 48 kHz (what Chromium's fake capture device plays) and its length."""
    import soxr

    audio, rate = sf.read(sample_call().audio, dtype="float32")
    audio = soxr.resample(audio, rate, 48000)
    path = tmp_path_factory.mktemp("mic") / "sample48k.wav"
    sf.write(path, audio, 48000, subtype="PCM_16")
    return path, len(audio) / 48000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LocalServer, str]]:
    """A server with live results and Voilà serving the dashboard against it."""
    srv = LocalServer(tmp_path / "data", args=["--pipeline", "full", "--max-live-sessions", "1"])
    srv.start()
    port = free_port()
    env = {**os.environ, "WORKBENCH_SERVER_URL": srv.url, "WORKBENCH_DASHBOARD_PLAY": "",
           "WORKBENCH_NOTEBOOK_DATA": str(tmp_path / "notebooks"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    log = open(tmp_path / "voila.log", "wb")
    voila = subprocess.Popen(
        [str(VOILA), str(NOTEBOOK), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         "--Voila.port_retries=0", "--show_tracebacks=True"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(NOTEBOOK.parent),
        start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(200):
            assert voila.poll() is None, (tmp_path / "voila.log").read_text()
            try:
                with urllib.request.urlopen(url + "static/", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # Voilà answers (opening the page itself would start a kernel)
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        else:
            raise TimeoutError((tmp_path / "voila.log").read_text())
        yield srv, url
    finally:
        voila.terminate()
        try:
            voila.wait(15)
        except subprocess.TimeoutExpired:
            voila.kill()
        log.close()
        srv.stop()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


@pytest.mark.timeout(480)
def test_record_live_words_then_the_refined_transcript(
        stack: tuple[LocalServer, str], microphone_audio: tuple[Path, float],
        tmp_path: Path) -> None:
    srv, url = stack
    wav, seconds = microphone_audio
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url, timeout=180_000)
            record = page.locator(".workbench-microphone button.mic-record")
            record.wait_for(timeout=120_000)
            page.wait_for_selector(".workbench-live-view .live-view")

            # ---- recording: live words appear before Stop
            record.click()
            page.wait_for_selector(".workbench-microphone[data-state='recording']", timeout=30_000)
            started = time.monotonic()
            levels, clock = [], set()

            def look() -> None:  # the level meter and the elapsed time while recording
                levels.append(page.get_attribute(".mic-level", "data-db") or "")
                clock.add(page.inner_text(".mic-elapsed"))
                time.sleep(0.5)

            while page.locator(".workbench-live-view .live-word").count() < 5:
                assert time.monotonic() - started < 150, "no live words while recording"
                assert page.get_attribute(".workbench-microphone", "data-state") == "recording"
                look()
            live_before_stop = page.locator(".workbench-live-view .live-word").all_inner_texts()
            assert page.get_attribute(".workbench-microphone", "data-state") == "recording"
            assert page.locator(".workbench-live-view .live-timeline").count() == 1
            # let the whole call play (the live view keeps growing), then Stop
            while time.monotonic() - started < seconds + 1.0:
                look()
            extent = float(page.get_attribute(".live-timeline", "data-extent") or 0)
            page.click(".workbench-microphone button.mic-stop")
            recorded_for = time.monotonic() - started
            assert max(float(x) for x in levels if x) > -40, levels
            assert len(clock) > seconds / 2, clock  # the clock ran: each reading a new time

            # ---- after Stop: the refined, speaker-attributed transcript in the player
            page.wait_for_selector(".dashboard-result[data-speakers]", timeout=300_000)
            sid = page.get_attribute(".dashboard-result", "data-session")
            # the kernel saw the widget's state and session id (traitlets synced back)
            page.wait_for_selector(f".dashboard-state-line[data-state='completed'][data-session='{sid}']",
                                   timeout=30_000)
            run_id = page.get_attribute(".dashboard-result", "data-run")
            page.wait_for_selector(".workbench-player .player-word")
            shown = page.eval_on_selector_all(
                ".workbench-player .player-word",
                "els => els.map(e => [e.textContent.trim(), e.dataset.speaker, Number(e.dataset.start)])")
            refined = get_json(f"{srv.url}/api/sessions/{sid}/transcript?format=json&run={run_id}")
            words = [w for s in refined["segments"] for w in s["words"]]
            assert [w[0] for w in shown] == [w["word"].strip() for w in words]
            assert len({w[1] for w in shown}) >= 2  # two speakers, each word attributed
            assert all(w[1] for w in shown)
            # a clicked word seeks the audio to its start
            target = shown[len(shown) // 2]
            page.locator(".workbench-player .player-word").nth(len(shown) // 2).click()
            page.wait_for_function(
                f"() => Math.abs(document.querySelector('.player-audio').currentTime - {target[2]}) < 0.5"
                " && document.querySelector('.player-audio').readyState > 0", timeout=20_000)
            assert page.get_attribute(".player-audio", "src") == \
                f"{srv.url}/api/sessions/{sid}/audio?format=wav"
            # downloads and, once the live run is saved, live vs refined
            page.wait_for_selector(".dashboard-comparison .run-comparison", timeout=120_000)
            comparison = page.inner_text(".dashboard-comparison")
            assert "live" in comparison and "refined run" in comparison
            links = page.eval_on_selector_all(".dashboard-downloads a", "els => els.map(a => a.href)")
            assert len(links) == 2 + 6 * 2  # wav, mp4; six formats of the live and refined runs
            for link in links:
                with urllib.request.urlopen(link, timeout=30) as r:
                    assert r.status == 200 and r.read()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard_result.png"), full_page=True)

            # ---- the widget's frames and messages against the protocol and the server
            log = page.evaluate("window.__workbenchMicrophones[0]")
            sent, received = log["sent"], log["received"]
            assert errors == []
        finally:
            browser.close()

    start = sent[0]
    assert start["kind"] == "text" and start["message"]["action"] == "start"
    assert start["message"]["live_results"] is True
    assert start["message"]["input_format"] == "webm" and start["message"]["format"] == "wav"
    assert sent[-1] == {**sent[-1], "kind": "text", "message": {"action": "stop"}}
    middle = sent[1:-1]
    assert middle and all(f["kind"] == "binary" and f["bytes"] > 0 for f in middle)
    session = get_json(f"{srv.url}/api/sessions/{sid}")
    assert session["bytes_received"] == sum(f["bytes"] for f in middle)
    assert session["chunks_received"] == len(middle)
    assert [p["container"] for p in session["parts"]] == ["webm"]
    # every captured second arrived (the call, then the fake device's silence until Stop)
    assert session["duration_seconds"] == pytest.approx(recorded_for, abs=3.0)

    kinds = [m["type"] for m in received]
    assert kinds[0] == "recording_started" and received[0]["live_results"] is True
    assert "error" not in kinds
    assert all(m["session_id"] == sid for m in received
               if m["type"] in LIVE_EVENTS + ("recording_started", "recording_stopped"))
    stopped = kinds.index("recording_stopped")
    finals = [w for m in received if m["type"] == "transcript_final" for w in m["words"]]
    before = [w for m in received[:stopped] if m["type"] == "transcript_final" for w in m["words"]]
    assert [w["index"] for w in finals] == list(range(len(finals)))  # never repeated or retracted
    assert len(before) >= len(live_before_stop) >= 5
    live_run = received[stopped]["live_run_id"]
    assert live_run and received[-1]["type"] == "processing_complete"
    assert received[-1]["supersedes"] == live_run and received[-1]["run_id"] == run_id
    runs = {r["id"]: r for r in get_json(f"{srv.url}/api/sessions/{sid}/runs")["runs"]}
    assert runs[live_run]["kind"] == "live" and runs[live_run]["status"] == "completed"
    assert runs[run_id]["kind"] == "refined"
    live = get_json(f"{srv.url}/api/sessions/{sid}/transcript?format=json&run={live_run}")
    stored = [w["word"] for s in live["segments"] for w in s["words"]]
    assert stored[:len(finals)] == [w["word"] for w in finals]  # what was shown is what was kept
    for m in received:
        if m["type"] == "diarization_update":
            assert m["final_until"] <= m["at"] + 1e-6
    assert extent >= min(seconds, 10.0)  # the timeline grew with the recording
