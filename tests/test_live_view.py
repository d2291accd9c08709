"""The live view (workbench.notebook.live_view) drawn from the real events of a live run:
`workbench.live.stream_file` on the pyannote sample call, every event sent through JSON
as the server sends it."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import pytest

from workbench.live import JobCosts, LiveConfig, stream_file
from workbench.live.asr import StreamingASRConfig
from workbench.live.diarization import OnlineDiarizationConfig
from workbench.notebook.analysis import SPEAKER_COLOURS
from workbench.notebook.live_view import LiveView
from workbench.research.datasets import sample_call

pytestmark = [pytest.mark.models, pytest.mark.timeout(900)]

COSTS = JobCosts(asr_pass=1.8, diarization_step=0.2)  # deterministic lags (test_live_pipeline)
CONFIG = LiveConfig(asr=StreamingASRConfig(),
                    diarization=OnlineDiarizationConfig(latency=2.0, step=1.0))


@pytest.fixture(scope="module")
def run() -> tuple[list[dict[str, Any]], float]:
    """The wire events of the sample call streamed live, and the audio's duration."""
    result = stream_file(sample_call().audio, config=CONFIG, costs=COSTS)
    events = [json.loads(json.dumps(e.serialize())) for e in result.events]
    return events, result.duration


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + 0.04:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def _seconds(spans: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in _union(spans))


def test_words_speakers_and_colours_follow_the_events(run) -> None:
    events, _ = run
    view = LiveView()
    view.update({"type": "recording_started", "session_id": "s1", "live_results": True})
    expected_words: dict[int, str] = {}
    expected_speaker: dict[int, Any] = {}
    first_seen: list[str] = []
    for event in events:
        assert view.update(event) is True
        for word in event.get("words", []):
            if event["type"] == "transcript_final":
                expected_words[word["index"]] = word["word"]
            expected_speaker[word["index"]] = word["speaker"]
        speakers = [w["speaker"] for w in event.get("words", [])]
        speakers += [t["speaker"] for t in event.get("turns", []) + event.get("tentative", [])]
        for speaker in speakers:
            if speaker is not None and speaker not in first_seen:
                first_seen.append(speaker)

    assert len(expected_words) > 40  # the sample call has ~80 words
    assert sorted(view.words) == list(range(len(expected_words)))  # indexes 0..n-1, none lost
    assert view.text == "".join(expected_words[i] for i in sorted(expected_words)).strip()
    assert {i: w["speaker"] for i, w in view.words.items()} == expected_speaker
    assert sum(s is not None for s in expected_speaker.values()) > 0.9 * len(expected_speaker)
    # colours by order of appearance, and every drawn word in its speaker's colour
    assert view.speakers == first_seen and len(first_seen) >= 2
    assert view.colours == {s: SPEAKER_COLOURS[i] for i, s in enumerate(first_seen)}
    drawn = re.findall(r"<span class='live-word' data-index='(\d+)' data-speaker='([^']*)' "
                       r"data-start='[^']*' style='color:([^']+)'>", view.html())
    assert len(drawn) == len(expected_words)
    for index, speaker, colour in drawn:
        assert speaker == (expected_speaker[int(index)] or "")
        assert colour == (view.colours[speaker] if speaker else "#888")


def test_the_timeline_grows_with_the_audio_and_keeps_every_final_turn(run) -> None:
    events, duration = run
    view = LiveView()
    extents, raw = [], defaultdict(list)
    for event in events:
        view.update(event)
        extents.append(view.extent)
        assert view.extent >= event["at"] - 1e-9
        for turn in event.get("turns", []):
            raw[turn["speaker"]].append((turn["start"], turn["end"]))
        svg = re.search(r"<svg class='live-timeline' data-extent='([\d.]+)' data-turns='(\d+)'",
                        view.html())
        assert svg and float(svg.group(1)) == pytest.approx(max(view.extent, 1.0), abs=1e-3)
        assert int(svg.group(2)) == len(view.turns)
    assert extents == sorted(extents)  # never shrinks
    # from the first second to the whole call (`at` runs on past the end while the
    # last simulated jobs finish)
    assert extents[0] < duration / 3
    assert duration - 1.0 <= extents[-1] <= max(e["at"] for e in events) + 1e-9
    # joined turns cover exactly what the events made final, speaker by speaker
    for speaker, spans in raw.items():
        mine = [(t["start"], t["end"]) for t in view.turns if t["speaker"] == speaker]
        assert _seconds(mine) == pytest.approx(_seconds(spans), abs=1e-6)
    assert len(view.turns) < sum(len(s) for s in raw.values())  # turns across updates joined
    drawn = re.findall(r"<rect class='live-turn' data-kind='final'", view.html())
    assert len(drawn) == len(view.turns)


def test_words_show_before_the_audio_ends_and_the_partial_comes_and_goes(run) -> None:
    events, duration = run
    view = LiveView()
    partial_shown = partial_cleared = False
    words_midway = 0
    for event in events:
        view.update(event)
        if event["at"] < duration - 5:
            words_midway = len(view.words)
        if event["type"] == "transcript_partial":
            shown = "class='live-partial'" in view.html()
            assert shown == bool(event["text"])
            if event["text"]:
                partial_shown = True
                assert event["text"].replace("'", "&#x27;") in view.html()
            elif partial_shown:
                partial_cleared = True
    assert words_midway > 10  # live words well before the end of the recording
    assert partial_shown and partial_cleared


def test_a_new_recording_resets_a_resumed_one_does_not(run) -> None:
    events, _ = run
    view = LiveView()
    view.update({"type": "recording_started", "session_id": "a", "live_results": True})
    for event in events[:len(events) // 2]:
        view.update(event)
    words = len(view.words)
    assert words > 0
    view.update({"type": "recording_started", "session_id": "a", "resumed": True,
                 "live_results": True})
    assert len(view.words) == words
    view.update({"type": "live_paused", "reason": "over budget", "session_id": "a"})
    assert "live paused: over budget" in view.html()
    view.update({"type": "live_resumed", "session_id": "a"})
    assert "live paused" not in view.html()
    view.update({"type": "recording_started", "session_id": "b", "live_results": False})
    assert view.words == {} and view.turns == [] and view.extent == 0.0
    assert "no live results" in view.html()
    assert view.update({"type": "progress", "chunks_received": 100}) is False


def test_a_resumed_view_takes_what_it_missed_from_the_replay(run) -> None:
    """A connection dropped after a third of the events and resumed after two thirds:
    the server's `live_replay` (everything final so far) fills the gap, also when an update
    made just before it reached the resumed socket first, and the view ends as one that
    saw every event."""
    from server.live import FinalSoFar

    events, _ = run
    whole, resumed = LiveView(), LiveView()
    for view in (whole, resumed):
        view.update({"type": "recording_started", "session_id": "a", "live_results": True})
    for event in events:
        whole.update(event)
    k, m = len(events) // 3, 2 * len(events) // 3
    for event in events[:k]:
        resumed.update(event)
    said = FinalSoFar()
    for event in events[:m]:
        said.add(event)
    replay = said.replay()
    assert replay is not None and len(replay["words"]) > len(resumed.words)
    # the resumed socket is subscribed from its upgrade on: a later update may come first
    early = [e for e in events[k:m] if e["type"] == "diarization_update" and e["turns"]]
    assert early
    resumed.update(early[-1])
    resumed.update({"type": "recording_started", "session_id": "a", "resumed": True,
                    "live_results": True})
    resumed.update({**replay, "session_id": "a"})
    for event in events[m:]:
        resumed.update(event)
    assert resumed.words == whole.words
    assert resumed.turns == whole.turns and resumed.final_until == whole.final_until


def test_a_replay_keeps_an_earlier_live_stream_s_turns_and_ends_a_pause() -> None:
    """A session's second live stream (the first was saved: a drop longer than 30 s)
    replays its own turns from the second its audio begins (`from`): the first stream's
    turns before it stay (the view emptied them all), and a pause said before it is over
    (one still holding is said again after it; the view kept it).  So does a resumed
    part's `recording_started`."""
    view = LiveView()
    view.update({"type": "recording_started", "session_id": "a", "live_results": True})
    view.update({"type": "diarization_update", "turns": [
        {"start": 0.2, "end": 2.0, "speaker": "SPEAKER_00"}], "final_until": 2.0, "at": 3.0})
    view.update({"type": "live_paused", "reason": "12 s behind"})
    view.update({"type": "live_replay", "words": [], "final_until": 43.0, "at": 44.0,
                 "from": 40.0, "turns": [{"start": 41.0, "end": 43.0, "speaker": "SPEAKER_01"}]})
    assert view.turns == [{"start": 0.2, "end": 2.0, "speaker": "SPEAKER_00"},
                          {"start": 41.0, "end": 43.0, "speaker": "SPEAKER_01"}]
    assert view.paused is None
    view.update({"type": "live_replay", "words": [], "final_until": 44.0, "at": 45.0,
                 "from": 40.0, "turns": [{"start": 41.0, "end": 44.0, "speaker": "SPEAKER_01"}]})
    assert view.turns[1:] == [{"start": 41.0, "end": 44.0, "speaker": "SPEAKER_01"}]
    view.update({"type": "live_paused", "reason": "12 s behind"})
    view.update({"type": "recording_started", "session_id": "a", "resumed": True,
                 "live_results": True})
    assert view.paused is None and len(view.turns) == 2
