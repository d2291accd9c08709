"""Every link the server hands out comes from server/routes.py; the store holds none."""

from __future__ import annotations

from pathlib import Path

from server.routes import (
    RESULT_FORMATS,
    audio_links,
    result_links,
    session_json,
)
from server.sessions import AUDIO_FORMATS, SessionStore
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
