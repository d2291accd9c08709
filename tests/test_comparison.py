"""The dashboard's comparison of a session's runs (hand-made transcripts, no models)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from workbench.engine.audio import write_wav
from workbench.engine.transcript import Transcript, Turn, Word, assign_speakers, build_segments
from workbench.notebook.comparison import compare_session_runs


def transcript(turns: list[Turn]) -> Transcript:
    words = [Word(0.5, 1.0, " one"), Word(3.5, 4.0, " two"), Word(6.5, 7.0, " three")]
    return Transcript(build_segments(assign_speakers(words, turns)), turns, 10.0)


def test_run_options_are_escaped_and_the_best_values_highlighted(tmp_path: Path) -> None:
    """A run's options (strings a client chose, which the server accepts) went unescaped
    into the table's row labels, shown as HTML in the dashboard; and the "best values
    highlighted" of its docstring were not."""
    audio = write_wav(tmp_path / "audio.wav", np.zeros(16000 * 10, np.float32))
    exact = [Turn(0.0, 3.0, "A"), Turn(3.0, 6.0, "B"), Turn(6.0, 9.0, "A")]
    worse = [Turn(0.0, 6.0, "A"), Turn(6.0, 9.0, "A")]
    payload = "<img src=x onerror=alert(1)>"
    runs = [  # scored against the latest refined run
        {"id": "again-0001", "config": {"language": payload, "transcribe": False}},
        {"id": "live-0002", "kind": "live", "config": {}},
        {"id": "refined-0003", "kind": "refined", "config": {}},
    ]
    transcripts = {"again-0001": transcript(worse), "live-0002": transcript(exact),
                   "refined-0003": transcript(exact)}
    comparison = compare_session_runs(runs, transcripts, audio=audio, work_dir=tmp_path / "w")
    assert comparison is not None
    page = comparison.html()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    # the live run matches the reference: its DER cell (column 0) is the highlighted one
    styled = re.search(r"<style[^>]*>(.*?)</style>", page, re.S)
    assert styled is not None
    rules = styled.group(1)
    assert "background-color" in rules
    highlighted = set(re.findall(r"#T_\w+?_(row\d+_col\d+)", rules))
    assert "the refined run refined-" in page
    again, live = (f"row{i}" for i in range(2))
    assert f"{live}_col0" in highlighted and f"{again}_col0" not in highlighted


def test_a_live_run_is_named_by_its_latency() -> None:
    """A live run's config holds every option of its pipeline (as the server stores it,
    `server.live_worker.live_run_options`): its name says the latency and what it left
    out, not every flag."""
    from server.live_worker import live_run_options
    from workbench.notebook.comparison import run_label

    run = {"id": "live-0002abcd", "kind": "live",
           "config": live_run_options({"diarization": {"latency": 5.0}, "transcribe": False})}
    assert run_label(run) == "live live-000 (latency=5.0, transcribe=False)"
    run["config"] = live_run_options(None)
    assert run_label(run) == "live live-000 (latency=2.0)"
    assert run_label({"id": "refined-01", "config": {"language": "en"}}) == \
        "refined refined- (language=en)"


def test_a_refined_run_that_did_not_transcribe_is_no_text_reference(tmp_path: Path) -> None:
    """The newest refined run ran with {"transcribe": false}: its empty text was the WER
    reference, and every other run got WER inf.  Now its turns stay the DER reference
    and the words of the newest refined run that transcribed are the text reference
    (that run's own row gets no WER); with no such run there is no WER at all."""
    import math

    audio = write_wav(tmp_path / "audio.wav", np.zeros(16000 * 10, np.float32))
    turns = [Turn(0.0, 3.0, "A"), Turn(3.0, 6.0, "B"), Turn(6.0, 9.0, "A")]
    words_only = transcript(turns)
    said = Transcript(build_segments(assign_speakers(
        [Word(0.5, 1.0, " one"), Word(3.5, 4.0, " two"), Word(6.5, 7.0, " tree")], turns)),
        turns, 10.0)
    no_words = Transcript([], turns, 10.0, config={"options": {"transcribe": False}})
    runs = [{"id": "refined-0001", "kind": "refined", "config": {}},
            {"id": "live-0002", "kind": "live", "config": {}},
            {"id": "refined-0003", "kind": "refined", "config": {"transcribe": False}}]
    transcripts = {"refined-0001": words_only, "live-0002": said, "refined-0003": no_words}
    comparison = compare_session_runs(runs, transcripts, audio=audio, work_dir=tmp_path / "a")
    assert comparison is not None
    rows = comparison.table.recordings.droplevel("uri")
    live = rows[rows["run"] == "live-0002"].iloc[0]
    assert live["wer"] == pytest.approx(1 / 3) and live["der"] == 0.0
    text_run = rows[rows["run"] == "refined-0001"].iloc[0]
    assert math.isnan(text_run["wer"]) and text_run["der"] == 0.0
    assert "words: the refined run refined-" in comparison.against
    assert not np.isinf(comparison.table.frame["wer"].astype(float)).any()

    # no refined run transcribed: DER only, WER undefined ("–"), never inf
    runs = [runs[1], runs[2]]
    comparison = compare_session_runs(runs, transcripts, audio=audio, work_dir=tmp_path / "b")
    assert comparison is not None
    assert math.isnan(comparison.table.summary["wer"].iloc[0])
    assert comparison.table.summary["der"].iloc[0] == 0.0
    assert "no words" in comparison.against and ">inf<" not in comparison.html()
