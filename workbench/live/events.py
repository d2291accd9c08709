"""Events a live session emits, in the order it emits them.

Every event is a frozen dataclass with ``type`` (its wire name) and ``serialize()``
(plain JSON), and carries ``at``: the audio time (seconds since the start of the
recording) that had arrived when the event was made, so ``lag_seconds`` is
``at - <end of what the event reports>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from workbench.engine.transcript import Turn, Word

__all__ = [
    "DiarizationUpdate",
    "EventHook",
    "LiveEvent",
    "SpeakerLabels",
    "TranscriptFinal",
    "TranscriptPartial",
]


def _r(x: float) -> float:
    return round(float(x), 3)


def _word(w: Word, index: Optional[int] = None) -> dict[str, Any]:
    out: dict[str, Any] = {"word": w.word, "start": _r(w.start), "end": _r(w.end),
                           "probability": round(float(w.probability), 4), "speaker": w.speaker}
    if index is not None:
        out["index"] = index
    return out


@dataclass(frozen=True)
class TranscriptPartial:
    """The current hypothesis after the committed words: may change or vanish.

    `text` is empty when nothing is pending (the previous partial is void).
    """

    text: str
    start: float
    end: float
    at: float
    type: str = field(default="transcript_partial", init=False)

    @property
    def lag_seconds(self) -> float:
        return max(0.0, self.at - self.end) if self.text else 0.0

    def serialize(self) -> dict[str, Any]:
        return {"type": self.type, "text": self.text, "start": _r(self.start),
                "end": _r(self.end), "lag_seconds": _r(self.lag_seconds), "at": _r(self.at)}


@dataclass(frozen=True)
class TranscriptFinal:
    """Newly committed words, in order; never retracted or changed afterwards.

    `first_index` is the position of the first of them among all committed words of the
    session. A word's ``speaker`` is None while diarization has not made its span final;
    a later `SpeakerLabels` event gives it.
    """

    words: tuple[Word, ...]
    first_index: int
    at: float
    type: str = field(default="transcript_final", init=False)

    @property
    def lag_seconds(self) -> float:
        """Audio time at commit minus the end of the last word committed."""
        return max(0.0, self.at - self.words[-1].end) if self.words else 0.0

    @property
    def text(self) -> str:
        return "".join(w.word for w in self.words).strip()

    def serialize(self) -> dict[str, Any]:
        return {"type": self.type,
                "words": [_word(w, self.first_index + i) for i, w in enumerate(self.words)],
                "text": self.text, "lag_seconds": _r(self.lag_seconds), "at": _r(self.at)}


@dataclass(frozen=True)
class SpeakerLabels:
    """Speakers for committed words that had none (``index`` as in `TranscriptFinal`)."""

    labels: tuple[tuple[int, Word], ...]
    at: float
    type: str = field(default="speaker_labels", init=False)

    @property
    def lag_seconds(self) -> float:
        return max(0.0, self.at - max(w.end for _, w in self.labels)) if self.labels else 0.0

    def serialize(self) -> dict[str, Any]:
        return {"type": self.type, "words": [_word(w, i) for i, w in self.labels],
                "lag_seconds": _r(self.lag_seconds), "at": _r(self.at)}


@dataclass(frozen=True)
class DiarizationUpdate:
    """Speaker turns of the span that became final, ``[previous final_until, final_until]``.

    Turns before `final_until` never change; a turn running across the previous
    boundary comes again, clipped to the new span (join same-speaker turns that touch).
    `tentative` is the current guess for ``[final_until, at]`` and may change.
    """

    turns: tuple[Turn, ...]
    final_until: float
    at: float
    tentative: tuple[Turn, ...] = ()
    speakers: int = 0
    type: str = field(default="diarization_update", init=False)

    @property
    def lag_seconds(self) -> float:
        """Audio time at emission minus `final_until`."""
        return max(0.0, self.at - self.final_until)

    def serialize(self) -> dict[str, Any]:
        turns = lambda ts: [{"start": _r(t.start), "end": _r(t.end), "speaker": t.speaker}  # noqa: E731
                            for t in ts]
        return {"type": self.type, "turns": turns(self.turns), "final_until": _r(self.final_until),
                "tentative": turns(self.tentative), "speakers": self.speakers,
                "lag_seconds": _r(self.lag_seconds), "at": _r(self.at)}


LiveEvent = Union[TranscriptPartial, TranscriptFinal, SpeakerLabels, DiarizationUpdate]
"""Any event of a live session."""

EventHook = Callable[[LiveEvent], None]
"""Receives each event as it is made (from a worker thread in threaded sessions)."""
