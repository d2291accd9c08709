"""Transcript types: words, diarization turns and speaker-attributed segments.

These frozen dataclasses are the one representation of a transcript used by the
ASR, diarization, merge and export code, the server and the notebooks.
"""

from __future__ import annotations

import functools
import heapq
import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar

R = TypeVar("R")


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


# --------------------------------------------------------------------------- words to speakers


def assign_speakers(words: Iterable[Word], turns: Iterable[Turn], *,
                    tolerance: float = 0.5) -> list[Word]:
    """Give each word the speaker whose turn overlaps it most.

    Pass exclusive turns (one speaker at a time) for the cleanest result;
    overlapping turns work too (the largest overlap wins, ties go to the turn
    that started first).  A word that overlaps no turn goes to the nearest turn
    within ``tolerance`` seconds, else keeps ``speaker=None``.

    A sweep over words and turns sorted by time, with a heap of the turns
    active at the current word: O((W + T) log T), not W x T.
    """
    ordered = sorted(enumerate(words), key=lambda iw: (iw[1].start, iw[1].end))
    pending = sorted(turns, key=lambda t: (t.start, t.end))
    active: list[tuple[float, int, Turn]] = []  # heap by end time
    out: list[Optional[Word]] = [None] * len(ordered)
    nxt = 0
    last_ended: Optional[Turn] = None  # latest-ending turn already behind the sweep
    for index, word in ordered:
        while nxt < len(pending) and pending[nxt].start < word.end:
            heapq.heappush(active, (pending[nxt].end, nxt, pending[nxt]))
            nxt += 1
        while active and active[0][0] <= word.start:
            _, _, gone = heapq.heappop(active)
            if last_ended is None or gone.end > last_ended.end:
                last_ended = gone
        best: Optional[Turn] = None
        best_overlap = 0.0
        for _, order, turn in sorted(active, key=lambda a: a[1]):
            overlap = min(turn.end, word.end) - max(turn.start, word.start)
            if overlap > best_overlap:
                best, best_overlap = turn, overlap
        if best is None:
            # In a gap (or a zero-length word): nearest turn on either side.
            candidates = []
            if last_ended is not None:
                candidates.append((word.start - last_ended.end, last_ended))
            for _, _, turn in active:  # a zero-length word inside a turn, or a turn
                # pushed for an earlier, longer word that starts after this one ends
                candidates.append((max(0.0, turn.start - word.end, word.start - turn.end),
                                   turn))
            if nxt < len(pending):
                candidates.append((pending[nxt].start - word.end, pending[nxt]))
            candidates = [c for c in candidates if c[0] <= tolerance]
            if candidates:
                best = min(candidates, key=lambda c: c[0])[1]
        out[index] = word.with_speaker(best.speaker if best else None)
    return [w for w in out if w is not None]


# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, CJK symbols
# and punctuation, kana, Bopomofo, Han, fullwidth forms. faster-whisper cuts text in
# zh, ja, th, lo, my and yue into words at token boundaries, with no space between them.
_UNSPACED_SCRIPT = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3000-\u30ff\u3100-\u312f"
    "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua9e0-\ua9ff\uaa60-\uaa7f"
    "\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff]")


def word_separator(words: Iterable[Word]) -> str:
    """What joins `words` into text (`build_segments`): ``""`` for faster-whisper's words,
    which carry the space before them if there is one (any word starts with white space
    or holds a character of a script written without spaces), else ``" "`` (bare words).
    Joining faster-whisper's ``" 3"`` ``".5"`` or ``" o"`` ``"'clock"`` with spaces makes
    two words of one."""
    return "" if any(w.word[:1].isspace() or _UNSPACED_SCRIPT.search(w.word)
                     for w in words) else " "


def build_segments(words: Sequence[Word], *, max_pause: float = 1.0,
                   max_duration: float = 30.0) -> list[TranscriptSegment]:
    """Group speaker-attributed words into segments, split at speaker changes, pauses
    longer than ``max_pause`` and segments longer than ``max_duration`` seconds.

    A segment's text is its words as faster-whisper writes them: each word carries the
    space before it, if there is one (``" Hello"``, ``" 50"``, ``"%"``), so they are
    joined as given; in Chinese, Japanese, Thai, Lao, Burmese and Cantonese no word
    does (``"你好，"``, ``"世界。"``).  `words` are taken for faster-whisper's when any of
    them starts with white space or holds a character of a script written without
    spaces; otherwise they are bare words (``"Hello"``, ``"there."``, as other
    recognisers and hand-made lists give them) and are joined with single spaces.
    """
    segments: list[TranscriptSegment] = []
    current: list[Word] = []
    ordered = sorted(words, key=lambda w: (w.start, w.end))
    separator = word_separator(ordered)

    def flush() -> None:
        if current:
            text = separator.join(w.word for w in current).strip()
            segments.append(TranscriptSegment(current[0].start, max(w.end for w in current),
                                              current[0].speaker, text, tuple(current)))
            current.clear()

    for w in ordered:
        if current and (w.speaker != current[-1].speaker
                        or w.start - current[-1].end > max_pause
                        or w.end - current[0].start > max_duration):
            flush()
        current.append(w)
    flush()
    return segments


# --------------------------------------------------------------------------- the result


@dataclass
class Transcript:
    """A speaker-attributed transcript: what one pipeline run produced, and how.

    ``turns`` is the diarization (overlap allowed); ``config`` holds everything
    needed to reproduce the run (options, model identities and checksums,
    package versions); ``timings`` the seconds spent per stage.
    """

    segments: list[TranscriptSegment]
    turns: list[Turn]
    duration: float
    language: Optional[str] = None
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    uri: str = "audio"

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def speakers(self) -> list[str]:
        """Speakers in order of first appearance (diarization first, then words)."""
        seen: dict[str, None] = {}
        for t in sorted(self.turns, key=lambda t: t.start):
            seen.setdefault(t.speaker, None)
        for s in self.segments:
            if s.speaker is not None:
                seen.setdefault(s.speaker, None)
        return list(seen)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)

    def summary(self) -> dict[str, Any]:
        return {
            "speakers": len(self.speakers),
            "speaker_labels": self.speakers,
            "duration_seconds": round(self.duration, 3),
            "word_count": len(self.words),
            "segments": len(self.segments),
            "language": self.language,
            "timings": self.timings,
        }

    def save(self, out_dir: Any) -> dict[str, Any]:
        """Write ``out_dir/transcript.{json,srt,vtt,txt,rttm,csv}``; returns the paths."""
        from workbench.engine.formats import save

        return save(self, out_dir)

    def serialize(self) -> dict[str, Any]:
        """The ``transcript.json`` document."""
        return {
            "uri": self.uri,
            "duration": round(self.duration, 3),
            "language": self.language,
            "speakers": self.speakers,
            "segments": [s.serialize() for s in self.segments],
            "diarization": [t.serialize() for t in self.turns],
            "config": self.config,
            "timings": self.timings,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Transcript":
        segments = [
            TranscriptSegment(s["start"], s["end"], s.get("speaker"), s["text"],
                              tuple(Word(**w) for w in s.get("words", [])))
            for s in doc.get("segments", [])
        ]
        turns = [Turn(t["start"], t["end"], t["speaker"]) for t in doc.get("diarization", [])]
        return cls(segments, turns, doc.get("duration", 0.0), doc.get("language"),
                   doc.get("config", {}), doc.get("timings", {}), doc.get("uri", "audio"))

    @classmethod
    def concatenate(cls, parts: list["Transcript"], **config: Any) -> "Transcript":
        """One transcript of consecutive ones (e.g. the live runs of a session recorded in
        several parts, whose times already follow each other); `config` describes it."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls([s for t in parts for s in t.segments], [u for t in parts for u in t.turns],
                   max(t.duration for t in parts),
                   next((t.language for t in parts if t.language), None), dict(config),
                   {}, parts[0].uri)

    def _repr_html_(self) -> str:  # notebook display
        import html

        colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
        index: dict[Optional[str], int] = {s: i for i, s in enumerate(self.speakers)}
        rows = "".join(
            f"<div><span style='color:#888'>[{_clock(s.start)}–{_clock(s.end)}]</span> "
            f"<b style='color:{colours[index.get(s.speaker, 0) % len(colours)]}'>"
            f"{html.escape(str(s.speaker))}</b>: {html.escape(s.text)}</div>"
            for s in self.segments
        )
        head = (f"<b>Transcript</b> — {self.duration:.1f} s, {len(self.speakers)} speaker(s), "
                f"{len(self.words)} words")
        return head + rows


def served_runs(runs: Sequence[R], kind: Callable[[R], str]) -> list[R]:
    """Of a session's completed runs that have a transcript (in creation order), those
    its transcript is made of, as GET /transcript without ``run`` and `load_session`
    serve it: the newest refined run; with none, every live run in order (a session
    recorded in parts with live results has one per part: `Transcript.concatenate`)."""
    refined = [r for r in runs if kind(r) == "refined"]
    return refined[-1:] if refined else [r for r in runs if kind(r) == "live"]


def _clock(seconds: float) -> str:
    """mm:ss.ss (hundredths rounded first: 59.999 s is 01:00.00, not 00:60.00)."""
    m, hundredths = divmod(round(seconds * 100), 6000)
    return f"{m:02d}:{hundredths / 100:05.2f}"


@functools.lru_cache(maxsize=8)
def _non_word(keep: str) -> "re.Pattern[str]":
    return re.compile(rf"[^\w{keep}]|_")


def replace_non_word(text: str, replacement: str, keep: str = "") -> str:
    """`text` with every character that is no part of a word replaced by `replacement`:
    all but letters, digits, combining marks (vowel signs, viramas, diacritics, which
    ``\\w`` does not match) and the characters of `keep` (a regex class fragment, e.g.
    ``"'"`` or ``r"\\s"``).  Word error rates and the live ASR's word agreement compare
    words so."""
    def one(match: "re.Match[str]") -> str:
        return match.group() if unicodedata.category(match.group())[0] == "M" else replacement

    return _non_word(keep).sub(one, text)
