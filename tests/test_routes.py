"""Every link the server hands out comes from server/routes.py; the store holds none."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from server.routes import (
    RESULT_FORMATS,
    audio_links,
    result_links,
    session_json,
)
from server.sessions import AUDIO_FORMATS, Run, Session, SessionStore
from workbench.engine.formats import RESULT_FORMATS as FORMATS


def test_result_formats_are_the_exporters() -> None:
    assert RESULT_FORMATS == FORMATS
    links = result_links("s1", "r1")
    assert list(links) == list(FORMATS)
    assert links["srt"] == "/api/sessions/s1/transcript?format=srt&run=r1"


def test_session_object_links_only_the_renditions_on_disk(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    try:
        session = store.create_session()
        assert session.renditions == () and "files" not in session.serialize()
        assert session_json(session)["files"] == {}
        store.audio_path(session.id, "wav").write_bytes(b"RIFF")
        session = store.get_session(session.id)
        assert session is not None and session.renditions == ("wav",)
        assert session_json(session)["files"] == {
            "wav": f"/api/sessions/{session.id}/audio?format=wav"}
        assert audio_links(session.id) == {
            fmt: f"/api/sessions/{session.id}/audio?format={fmt}" for fmt in AUDIO_FORMATS}
    finally:
        store.close()


def test_session_speakers_are_those_of_the_transcript_it_serves() -> None:
    """A session recorded in parts with live results serves every live run's words
    (`served_runs`); its `speakers` counted the last part's labels alone."""
    def run(i: int, kind: str, labels: Optional[list[str]], status: str = "completed") -> Run:
        summary: dict[str, Any] = {} if labels is None else {
            "word_count": 3, "speakers": len(labels), "speaker_labels": labels}
        return Run(f"r{i}", "s", status, {}, float(i), summary=summary, kind=kind)

    session = Session("s", "completed", 0.0, 0.0)
    assert session.serialize()["speakers"] is None and session.serialize()["transcript"] is None
    session.runs = [run(0, "live", ["A", "B"]), run(1, "live", ["B"]),
                    run(2, "refined", None)]  # parts 1 and 2, then a renditions run
    assert session.serialize()["speakers"] == 2
    session.runs.append(run(3, "live", ["C"]))
    assert session.serialize()["speakers"] == 3
    session.runs.append(run(4, "refined", ["A", "B", "C", "D"], status="failed"))
    assert session.serialize()["speakers"] == 3
    assert session.serialize()["transcript"] == {"runs": ["r0", "r1", "r3"], "kind": "live",
                                                 "speakers": 3, "word_count": 9}
    session.runs.append(run(5, "refined", ["X"]))  # a refined run supersedes the live ones
    assert session.serialize()["speakers"] == 1
    assert session.serialize()["transcript"] == {"runs": ["r5"], "kind": "refined",
                                                 "speakers": 1, "word_count": 3}
