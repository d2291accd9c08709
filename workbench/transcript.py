"""Transcript types: words, diarization turns and speaker-attributed segments.

These frozen dataclasses are the one representation of a transcript used by the
ASR, diarization, merge and export code, the server and the notebooks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Optional


@dataclass(frozen=True)
class Word:
    """One recognised word with its time span (seconds) and, once merged, its speaker."""

    start: float
    end: float
    word: str
    probability: float = 1.0
    speaker: Optional[str] = None

    def with_speaker(self, speaker: Optional[str]) -> "Word":
        return replace(self, speaker=speaker)

    def serialize(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Turn:
    """One diarization turn: a speaker talking from `start` to `end` (seconds)."""

    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start

    def serialize(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TranscriptSegment:
    """A stretch of speech by one speaker: its words and their joined text."""

    start: float
    end: float
    speaker: Optional[str]
    text: str
    words: tuple[Word, ...] = ()

    def serialize(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "speaker": self.speaker,
            "text": self.text,
            "words": [w.serialize() for w in self.words],
        }
