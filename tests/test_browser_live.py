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
        assert page.get_attribute("#live-view", "data-run-id") == "live-run"
        assert errors == []
    finally:
        browser.close()
