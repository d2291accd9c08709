"""Every path and URL of the server in one place: the route table's paths and the links
handed to clients (a session's audio, a run's results, the REST session object).

The session store and the job queue return data; REST answers and WebSocket events
turn it into links here.
"""

from __future__ import annotations

from typing import Any, Iterable

from workbench.engine.formats import RESULT_FORMATS

from .sessions import AUDIO_FORMATS, Session

HEALTH = "/api/health"
SESSIONS = "/api/sessions"
SESSION = SESSIONS + "/{session_id}"
SESSION_AUDIO = SESSION + "/audio"
SESSION_TRANSCRIPT = SESSION + "/transcript"
SESSION_RUNS = SESSION + "/runs"
SESSION_RUN = SESSION_RUNS + "/{run_id}"
WEBSOCKET = "/ws/{session_id}"
INDEX = "/"
STATIC = "/static"


def audio_url(session_id: str, fmt: str) -> str:
    """Where the recording of ``session_id`` is downloaded as ``fmt`` (wav or mp4)."""
    return SESSION_AUDIO.format(session_id=session_id) + f"?format={fmt}"


def transcript_url(session_id: str, fmt: str, run_id: str) -> str:
    """Where run ``run_id``'s result is downloaded as ``fmt`` (json, srt, ...)."""
    return SESSION_TRANSCRIPT.format(session_id=session_id) + f"?format={fmt}&run={run_id}"


def audio_links(session_id: str, formats: Iterable[str] = AUDIO_FORMATS) -> dict[str, str]:
    """Format -> download URL of a session's audio, for each of ``formats``."""
    return {fmt: audio_url(session_id, fmt) for fmt in formats}


def result_links(session_id: str, run_id: str) -> dict[str, str]:
    """Format -> download URL of every result format of one run."""
    return {fmt: transcript_url(session_id, fmt, run_id) for fmt in RESULT_FORMATS}


def session_json(session: Session) -> dict[str, Any]:
    """The REST session object: :meth:`Session.serialize` plus ``files``, the download
    links of the audio renditions present on disk."""
    return {**session.serialize(), "files": audio_links(session.id, session.renditions)}


__all__ = ["RESULT_FORMATS", "audio_links", "audio_url", "result_links", "session_json",
           "transcript_url"]
