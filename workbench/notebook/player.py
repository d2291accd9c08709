"""An audio player over a transcript: click a word and the audio plays from there.

``TranscriptPlayer`` is an anywidget (``static/player.js``): an HTML audio element on
``src`` (a URL the browser can fetch, e.g. the server's
``/api/sessions/{id}/audio?format=wav``) above the transcript's words in speaker
colours. Clicking a word seeks to its start and plays; the word being played is
underlined. ``clicked`` (index of the last word clicked) and ``current_time`` (where
the audio was paused or sought to) come back from the browser.
"""

from __future__ import annotations

from typing import Any, Optional

import anywidget
import traitlets as t

from workbench.engine.transcript import Transcript
from workbench.notebook.analysis import speaker_colours
from workbench.notebook.microphone import STATIC

__all__ = ["TranscriptPlayer"]


class TranscriptPlayer(anywidget.AnyWidget):
    """Audio player and clickable, speaker-coloured words."""

    _esm = STATIC / "player.js"

    src = t.Unicode("").tag(sync=True)
    words: t.List[dict[str, Any]] = t.List().tag(sync=True)
    colours = t.Dict().tag(sync=True)
    clicked = t.Int(-1).tag(sync=True)
    current_time = t.Float(0.0).tag(sync=True)

    def show(self, transcript: Optional[Transcript], src: str = "") -> None:
        """Play `src` with the words of `transcript` (None: no words)."""
        words: list[dict[str, Any]] = []
        speakers: list[str] = []
        if transcript is not None:
            speakers = list(transcript.speakers)
            words = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
                      "speaker": w.speaker} for w in transcript.words]
        self.clicked = -1
        self.colours = speaker_colours(speakers)
        self.words = words
        self.src = src

    def seek(self, seconds: float) -> None:
        """Move the audio to `seconds` in every browser view."""
        self.send({"seek": float(seconds)})
