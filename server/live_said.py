"""What a recording's live results have said so far, for the clients that missed some of
it: `FinalSoFar` (the committed words and final turns of one live stream, replayed to a
resumed connection as ``live_replay``), and where the word indexes of a session's next
live stream go on: `next_word_index` (after the saved live runs) and `WordNumbers` (a
live stream's words numbered over the recording as they go out); and the speakers it
gave, which the next live stream goes on with: `known_speakers`, with the recording's last
seconds before the resume for its first windows (`audio_before`) and what was said before
it for its ASR's prompt (`said_before`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, Awaitable, Callable, Mapping, Optional

from workbench.engine.audio import SAMPLE_RATE, AudioDecodeError, parse_wav_header

from .live_worker import SPEAKERS_FILE, shift_event
from .sessions import Session, SessionStore

log = logging.getLogger("server.live")

# Audio before a resume handed to the new live session (segmentation-3.0's longest window;
# its diarization keeps what its first window can hold: `OnlineDiarizer.prime`)
CONTEXT_SECONDS = 10.0
SAID_CHARS = 1000  # of the text said before it (its ASR's prompt keeps the last 200)


def next_word_index(session: Session) -> int:
    """The ``index`` of the next committed word of a session whose earlier parts had
    live results (0 when none was saved): indexes count over the whole recording."""
    live = [r for r in session.runs if r.kind == "live" and r.status == "completed"]
    if not live:
        return 0
    summary = live[-1].summary
    return int(summary.get("first_index", 0)) + int(summary.get("word_count", 0))


def known_speakers(store: SessionStore, session_id: str) -> Optional[dict[str, Any]]:
    """The speakers of the session's newest saved live run that gave any (its worker's
    `SPEAKERS_FILE`; runs without one, failed or silent, are passed over), or None: the
    next live stream of the recording starts from them, so a voice keeps its label
    across a resume."""
    session = store.get_session(session_id)
    for run in reversed(session.runs if session is not None else []):
        if run.kind != "live":
            continue
        path = store.run_dir(session_id, run.id) / SPEAKERS_FILE
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # (a live run that failed, or saved before speakers were kept)
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable: %s", path, exc)
            continue
        if isinstance(known, dict) and known.get("speakers"):
            return known  # (a run that gave no speaker leaves the older runs' to go on with)
    return None


def audio_before(store: SessionStore, session_id: str, until: float,
                 seconds: float = CONTEXT_SECONDS) -> bytes:
    """The recording's last `seconds` before `until` (s from its start), 16 kHz mono 16-bit
    PCM from its ``audio.wav`` (finalised when the part before the resume ended); b"" when
    there is none to read (the resumed live session then starts without it)."""
    if until <= 0:
        return b""
    path = store.audio_path(session_id, "wav")
    try:
        with open(path, "rb") as f:
            header = parse_wav_header(f.read(1 << 12))
            form = None if header is None else (header.sample_rate, header.channels,
                                                 header.sample_width, header.is_float)
            if header is None or form != (SAMPLE_RATE, 1, 2, False):
                raise AudioDecodeError("not the server's 16 kHz mono 16-bit WAV")
            frames = (os.fstat(f.fileno()).st_size - header.data_offset) // 2
            end = min(frames, int(round(until * SAMPLE_RATE)))
            start = max(0, end - int(round(seconds * SAMPLE_RATE)))
            f.seek(header.data_offset + 2 * start)
            return f.read(2 * (end - start)) if end > start else b""
    except FileNotFoundError:
        return b""
    except Exception as exc:  # noqa: BLE001 - an aid: the live session goes on without it
        log.warning("The audio before the resume of session %s not read: %r", session_id, exc)
        return b""


def said_before(store: SessionStore, session_id: str, until: float) -> str:
    """The text of the session's newest saved live transcript (of a run not failed) if it
    ends at `until` (s: where a resume begins; within 1 s), its last `SAID_CHARS`, for the
    next live session's ASR prompt; "" when there is none (the recording before the resume
    had no live results, or they failed)."""
    try:
        session = store.get_session(session_id)
        saved = [path for r in (session.runs if session is not None and until > 0 else [])
                 if r.kind == "live" and r.status != "failed"
                 and (path := store.run_dir(session_id, r.id) / "transcript.json").exists()]
        if not saved:  # (its worker writes it before it says it is done)
            return ""
        doc = json.loads(saved[-1].read_text(encoding="utf-8"))
        if abs(float(doc["duration"]) - until) > 1.0:
            return ""  # (a part without live results came after it)
        text = " ".join(str(s["text"]) for s in doc["segments"]).strip()
        return text[-SAID_CHARS:]  # (the prompt takes the last 200 characters)
    except Exception as exc:  # noqa: BLE001 - an aid: the live session goes on without it
        log.warning("What was said before the resume of session %s not read: %r",
                    session_id, exc)
        return ""


class FinalSoFar:
    """What a live recording has said final so far, from its serialized events: the
    committed words (by ``index``, with the speakers given since) and the final turns.

    For a client that missed some of it (a dropped connection resumed), `replay` is one
    ``live_replay`` message with all of it; clients keep the words they lacked (by index)
    and take its turns in place of their own from ``from`` on (where this stream's audio
    begins: earlier turns are an earlier live stream's of the session).
    """

    def __init__(self, first_index: int = 0, start: float = 0.0) -> None:
        self.first_index = first_index
        self.start = start
        self.words: dict[int, dict[str, Any]] = {}
        self.turns: list[dict[str, Any]] = []
        self.final_until = 0.0
        self.at = 0.0

    @property
    def next_index(self) -> int:
        """The ``index`` the next committed word will take."""
        return max(self.words, default=self.first_index - 1) + 1

    def add(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("transcript_final", "speaker_labels"):
            for word in event.get("words", []):
                index = int(word["index"])
                self.words[index] = {**self.words.get(index, {}), **word}
        elif kind == "diarization_update":
            self.turns.extend(dict(t) for t in event.get("turns", []))
            self.final_until = max(self.final_until, float(event.get("final_until", 0.0)))
        self.at = max(self.at, float(event.get("at", 0.0)))

    def replay(self) -> Optional[dict[str, Any]]:
        """The ``live_replay`` message (None while nothing is final)."""
        if not self.words and not self.turns:
            return None
        return {"type": "live_replay", "words": [dict(self.words[i]) for i in sorted(self.words)],
                "turns": [dict(t) for t in self.turns], "final_until": round(self.final_until, 3),
                "at": round(self.at, 3), "from": round(self.start, 3)}


class WordNumbers:
    """A live stream's word indexes over the recording: its worker numbers its words from
    0, they go out from `base` on. `base` is known at once, or (the session's last live
    stream still saving: its last words come first) only later; meanwhile the stream's
    events wait here, in order, and go out once it is known. So a resumed recording starts
    at once, and its live words still follow the last stream's, in indexes and in time."""

    def __init__(self, base: Optional[int] = 0) -> None:
        self.base = base
        self.held: list[dict[str, Any]] = []
        self.known = asyncio.Event()  # base known, nothing held
        if base is not None:
            self.known.set()

    def take(self, event: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The event as it goes out now, or None: held until `settle`."""
        if self.base is None:
            self.held.append(event)
            return None
        return shift_event(event, 0.0, self.base)

    async def settle(self, base: int, send: Callable[[dict[str, Any]], Awaitable[None]]
                     ) -> None:
        """`base` is known: the held events go out (before any that comes meanwhile)."""
        while self.held:
            await send(shift_event(self.held.pop(0), 0.0, base))
        self.base = base
        self.known.set()


__all__ = ["FinalSoFar", "next_word_index", "WordNumbers"]
