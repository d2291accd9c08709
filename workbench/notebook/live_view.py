"""What a live recording looks like while it runs: words in speaker colours and a speaker
timeline that grows with the audio, both built from the server's live events.

``LiveView.update(message)`` takes every message of a recording connection (README,
"Live results"): ``transcript_final`` adds committed words (by ``index``, never
retracted), ``speaker_labels`` gives speakers to words that had none,
``transcript_partial`` replaces the pending hypothesis, ``diarization_update`` adds
final turns (joined with the same speaker's previous turn when they touch) and a
tentative tail, ``live_paused`` / ``live_resumed`` say whether live work keeps up,
``live_replay`` (after a resume) fills in what the view missed.
Speakers are coloured in their order of appearance. The view needs no server: the
events of `workbench.live.stream_file` (``event.serialize()``) drive it the same way::

    view = LiveView()
    for event in result.events:
        view.update(event.serialize())
    view.widget          # an ipywidgets.HTML that re-renders on every update
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Optional

import ipywidgets as w

from workbench.notebook.analysis import speaker_colours
from workbench.notebook.client import LIVE_EVENTS

__all__ = ["LIVE_EVENTS", "LiveView"]

UNKNOWN_COLOUR = "#888"
_JOIN_GAP = 0.04  # s: same-speaker turns this close are one turn (events.DiarizationUpdate)


class LiveView:
    """Live words and a growing speaker timeline of one recording."""

    def __init__(self) -> None:
        self.widget = w.HTML(layout={"width": "100%"})
        self.widget.add_class("workbench-live-view")
        self.reset()

    def reset(self, session_id: Optional[str] = None) -> None:
        """Forget everything (a new recording)."""
        self.session_id = session_id
        self.words: dict[int, dict[str, Any]] = {}
        self.partial: dict[str, Any] = {"text": "", "start": 0.0, "end": 0.0}
        self.turns: list[dict[str, Any]] = []
        self.tentative: list[dict[str, Any]] = []
        self.final_until = 0.0
        self.at = 0.0
        self.speakers: list[str] = []
        self.paused: Optional[str] = None
        self.live_results: Optional[bool] = None
        self.events = 0
        self._render()

    # ------------------------------------------------------------------ state
    def _see(self, speaker: Optional[str]) -> None:
        if speaker is not None and speaker not in self.speakers:
            self.speakers.append(speaker)

    def _add_turn(self, turn: Mapping[str, Any]) -> None:
        start, end, speaker = float(turn["start"]), float(turn["end"]), turn["speaker"]
        self._see(speaker)
        previous = next((t for t in reversed(self.turns) if t["speaker"] == speaker), None)
        if previous is not None and previous["end"] >= start - _JOIN_GAP:
            previous["end"] = max(previous["end"], end)
            previous["start"] = min(previous["start"], start)
        else:
            self.turns.append({"start": start, "end": end, "speaker": speaker})

    def update(self, message: Mapping[str, Any]) -> bool:
        """Apply one server message; True when it changed the view."""
        kind = message.get("type")
        if kind == "recording_started":
            if message.get("session_id") != self.session_id or not message.get("resumed"):
                self.reset(message.get("session_id"))
            self.live_results = message.get("live_results")
            self.paused = None  # (a pause that still holds is said again after it)
            self._render()
            return True
        if kind not in LIVE_EVENTS:
            return False
        self.events += 1
        self.at = max(self.at, float(message.get("at", 0.0)))
        if kind == "transcript_final":
            for word in message.get("words", []):
                self.words[int(word["index"])] = dict(word)
                self._see(word.get("speaker"))
        elif kind == "speaker_labels":
            for word in message.get("words", []):
                known = self.words.setdefault(int(word["index"]), dict(word))
                known["speaker"] = word.get("speaker")
                self._see(word.get("speaker"))
        elif kind == "transcript_partial":
            self.partial = {"text": message.get("text", ""), "start": message.get("start", 0.0),
                            "end": message.get("end", 0.0)}
        elif kind == "live_replay":  # after a resume, everything final so far
            for word in message.get("words", []):
                known = self.words.setdefault(int(word["index"]), dict(word))
                known["speaker"] = word.get("speaker") or known.get("speaker")
                self._see(known["speaker"])
            # every final turn of its live stream from `from` on, ours included; earlier
            # ones are an earlier live stream's of the session: they stay
            start = float(message.get("from", 0.0))
            self.turns = [t for t in self.turns if t["start"] < start]
            self.paused = None  # (a `live_paused` follows while still behind)
            for turn in message.get("turns", []):
                self._add_turn(turn)
            self.final_until = max(self.final_until, float(message.get("final_until", 0.0)))
        elif kind == "diarization_update":
            for turn in message.get("turns", []):
                self._add_turn(turn)
            self.final_until = max(self.final_until, float(message.get("final_until", 0.0)))
            self.tentative = [dict(t) for t in message.get("tentative", [])]
            for turn in self.tentative:
                self._see(turn["speaker"])
        elif kind == "live_paused":
            self.paused = str(message.get("reason") or "paused")
        elif kind == "live_resumed":
            self.paused = None
        self._render()
        return True

    # ------------------------------------------------------------------ reading
    @property
    def colours(self) -> dict[str, str]:
        """Speaker -> colour, in order of appearance."""
        return speaker_colours(self.speakers)

    @property
    def ordered_words(self) -> list[dict[str, Any]]:
        return [self.words[i] for i in sorted(self.words)]

    @property
    def text(self) -> str:
        """The committed words so far."""
        return "".join(w["word"] for w in self.ordered_words).strip()

    @property
    def extent(self) -> float:
        """Seconds the timeline spans: the audio heard so far (it grows while recording)."""
        ends = [self.at, self.final_until]
        ends += [t["end"] for t in self.turns + self.tentative]
        ends += [w["end"] for w in self.words.values()]
        return max(ends)

    # ------------------------------------------------------------------ drawing
    def words_html(self) -> str:
        colours = self.colours
        parts: list[str] = []
        current: object = object()
        for word in self.ordered_words:
            speaker = word.get("speaker")
            colour = colours.get(speaker, UNKNOWN_COLOUR) if speaker else UNKNOWN_COLOUR
            if speaker != current and speaker is not None:
                parts.append(f"<b class='live-speaker' style='color:{colour}'>"
                             f"{html.escape(speaker)}:</b>")
                current = speaker
            parts.append(
                f"<span class='live-word' data-index='{int(word['index'])}' "
                f"data-speaker='{html.escape(speaker or '')}' data-start='{word['start']}' "
                f"style='color:{colour}'>{html.escape(word['word'].strip())}</span>")
        if self.partial["text"]:
            parts.append(f"<span class='live-partial' style='color:#999;font-style:italic'>"
                         f"{html.escape(self.partial['text'])}</span>")
        return " ".join(parts) or "<i class='live-empty'>(no words yet)</i>"

    def timeline_html(self, width: int = 800, lane: int = 14) -> str:
        """An SVG: one lane per speaker, final turns solid, the tentative tail faded."""
        extent = max(self.extent, 1.0)
        colours = self.colours
        lanes = {s: i for i, s in enumerate(self.speakers)}
        height = max(1, len(lanes)) * (lane + 4) + 16
        rects: list[str] = []
        for turns, opacity, kind in ((self.turns, 1.0, "final"), (self.tentative, 0.35, "tentative")):
            for t in turns:
                y = lanes[t["speaker"]] * (lane + 4)
                x = width * t["start"] / extent
                wd = max(1.0, width * (t["end"] - t["start"]) / extent)
                rects.append(
                    f"<rect class='live-turn' data-kind='{kind}' "
                    f"data-speaker='{html.escape(t['speaker'])}' x='{x:.1f}' y='{y}' "
                    f"width='{wd:.1f}' height='{lane}' fill='{colours[t['speaker']]}' "
                    f"fill-opacity='{opacity}'><title>{html.escape(t['speaker'])} "
                    f"{t['start']:.1f}-{t['end']:.1f} s</title></rect>")
        x_final = width * self.final_until / extent
        rects.append(f"<line x1='{x_final:.1f}' x2='{x_final:.1f}' y1='0' y2='{height - 14}' "
                     f"stroke='#aaa' stroke-dasharray='2,2'/>")
        rects.append(f"<text x='{width - 2}' y='{height - 3}' font-size='10' text-anchor='end' "
                     f"fill='#666'>{extent:.1f} s</text>")
        return (f"<svg class='live-timeline' data-extent='{extent:.3f}' "
                f"data-turns='{len(self.turns)}' width='100%' viewBox='0 0 {width} {height}' "
                f"preserveAspectRatio='none' style='max-width:{width}px;height:{height}px'>"
                + "".join(rects) + "</svg>")

    def legend_html(self) -> str:
        return " ".join(f"<span class='live-legend' style='color:{c}'>&#9632; {html.escape(s)}</span>"
                        for s, c in self.colours.items())

    def html(self) -> str:
        """The whole view: state line, legend, timeline, words."""
        status = f"{self.extent:.1f} s heard, {len(self.words)} words, {len(self.speakers)} speakers"
        if self.live_results is False:
            status += " · the server gives no live results for this recording"
        if self.paused:
            status += f" · <span class='live-paused' style='color:#b00'>live paused: " \
                      f"{html.escape(self.paused)}</span>"
        return (f"<div class='live-view' data-words='{len(self.words)}'>"
                f"<div class='live-status' style='color:#555'>{status}</div>"
                f"<div>{self.legend_html()}</div>{self.timeline_html()}"
                f"<div class='live-words' style='line-height:1.6'>{self.words_html()}</div></div>")

    def _render(self) -> None:
        self.widget.value = self.html()

    def _repr_html_(self) -> str:
        return self.html()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
