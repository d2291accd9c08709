"""What one recording over the protocol gave: `RecordingReport` (messages, live words,
the run and its outcome), as :meth:`workbench.notebook.client.AsyncClient.record` returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

TERMINAL = ("processing_complete", "processing_failed")


@dataclass
class RecordingReport:
    """What happened during one :meth:`AsyncClient.record` call."""

    session_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    chunks_sent: int = 0
    bytes_sent: int = 0
    seconds_sent: float = 0.0
    live_events: list[dict[str, Any]] = field(default_factory=list)
    # Committed live words by index, each with its speaker once known (a
    # ``speaker_labels`` event fills in words committed without one).
    live_words: list[dict[str, Any]] = field(default_factory=list)

    def add_live(self, event: dict[str, Any]) -> None:
        """Take in one live event (in arrival order)."""
        self.live_events.append(event)
        if event.get("type") not in ("transcript_final", "speaker_labels", "live_replay"):
            return
        for word in event.get("words", []):
            i = word["index"]
            self.live_words[i] = {**self._heard(i), **word}

    def add_saved(self, words: list[dict[str, Any]], first_index: int) -> None:
        """The saved live run's `words` (its transcript's, from ``first_index``) in place of
        those not heard (the connection ended before its last live events)."""
        for i, word in enumerate(words, first_index):
            heard = self._heard(i)
            self.live_words[i] = {**word, **heard, "index": i,
                                  "speaker": heard.get("speaker") or word.get("speaker")}

    def _heard(self, index: int) -> dict[str, Any]:
        """What was heard of live word `index` so far ({} if nothing; the list grows)."""
        if index >= len(self.live_words):
            self.live_words.extend({} for _ in range(index + 1 - len(self.live_words)))
        return self.live_words[index]

    @property
    def live_run_id(self) -> Optional[str]:
        """The run that stores the live result (``recording_stopped.live_run_id``)."""
        stopped = self.last("recording_stopped")
        return stopped.get("live_run_id") if stopped else None

    @property
    def live_text(self) -> str:
        return "".join(w.get("word", "") for w in self.live_words).strip()

    def last(self, kind: str) -> Optional[dict[str, Any]]:
        return next((m for m in reversed(self.messages) if m.get("type") == kind), None)

    @property
    def run_id(self) -> Optional[str]:
        started = self.last("processing_started") or self.result  # (or followed over REST)
        return started.get("run_id") if started else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "error"]

    @property
    def result(self) -> Optional[dict[str, Any]]:
        """The ``processing_complete`` or ``processing_failed`` event, if it arrived."""
        return next((m for m in reversed(self.messages) if m.get("type") in TERMINAL), None)


def run_outcome(session_id: str, run: dict[str, Any]) -> dict[str, Any]:
    """The message that ends a run (``processing_complete`` / ``_failed``), from its REST form."""
    if run["status"] == "completed":
        summary = run.get("summary") or {}
        return {"type": "processing_complete", "session_id": session_id, "run_id": run["id"],
                **{k: summary.get(k) for k in ("speakers", "duration_seconds", "word_count")},
                **({"supersedes": run["supersedes"]} if run.get("supersedes") else {})}
    return {"type": "processing_failed", "session_id": session_id, "run_id": run["id"],
            "message": run.get("error") or "Processing failed"}


__all__ = ["TERMINAL", "RecordingReport", "run_outcome"]
