"""Every file format the workbench reads or writes.

- Results: a `~workbench.engine.transcript.Transcript` as JSON, SRT, WebVTT, TXT, RTTM
  and CSV (`RESULT_FORMATS`, `save`, `load`; `read_srt`, `read_vtt`, `read_rttm_turns`
  read them back).
- Reference files: RTTM speaker turns (`read_rttm`, `format_rttm`), STM utterances
  (`read_stm`, `format_stm`) and UEM scored regions (`read_uem`, `format_uem`), and
  turns as a pyannote `Annotation` (`to_annotation`, `from_annotation`).
- Audio renditions a recording can be downloaded as: `AUDIO_FORMATS`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Sequence, Union

from workbench.engine.durable import as_new_file, make_folder, sync_folder
from workbench.engine.transcript import Transcript, TranscriptSegment, Turn

if TYPE_CHECKING:
    from pyannote.core import Annotation

PathLike = Union[str, "os.PathLike[str]"]
"""A file path: a string or any `os.PathLike`."""

RESULT_FORMATS = ("json", "srt", "vtt", "txt", "rttm", "csv")
"""Result files of a run: ``transcript.<format>``."""

AUDIO_FORMATS = ("wav", "mp4")
"""Renditions a recording can be downloaded as."""

IGNORED_STM_TEXT = "ignore_time_segment_in_scoring"
"""STM text that marks a region left out of scoring (the segment is not speech)."""


def _milliseconds(seconds: float) -> int:
    return int(round(max(seconds, 0.0) * 1000))


def _timestamp(seconds: float, sep: str) -> str:
    return _clock(_milliseconds(seconds), sep)


def _clock(ms: int, sep: str) -> str:
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_timing(start: float, end: float, sep: str) -> str:
    """``start --> end`` of an SRT or WebVTT cue, ending at least 1 ms after it starts:
    WebVTT requires end > start, and players skip a cue of zero length (a segment of one
    word whose times Whisper rounded to the same 0.01 s)."""
    first = _milliseconds(start)
    return f"{_clock(first, sep)} --> {_clock(max(_milliseconds(end), first + 1), sep)}"


def _speaker(label: object) -> str:
    return _one_line(str(label)) if label is not None else "UNKNOWN"


def _one_line(text: str) -> str:
    """`text` on one line: a line break (a blank line ends an SRT/VTT cue) becomes a
    space, and line breaks at the end are dropped."""
    lines = text.splitlines()
    if lines == [text] or not text:  # no line break
        return text
    return " ".join(part.strip() for part in lines if part.strip())


def check_times(t: Transcript) -> None:
    """A ValueError naming the first time of `t` (a word's, a segment's, a turn's) that is
    no finite number: no result format can hold it (JSON's ``NaN`` is no JSON)."""
    for kind, items in (("word", t.words), ("segment", t.segments), ("turn", t.turns)):
        for item in items:
            if not (math.isfinite(item.start) and math.isfinite(item.end)):
                raise ValueError(f"a {kind}'s times must be finite numbers, not "
                                 f"{item.start!r}-{item.end!r} ({item!r:.80})")
    if not math.isfinite(t.duration):
        raise ValueError(f"a transcript's duration must be a finite number, not {t.duration!r}")


def to_json(t: Transcript) -> str:
    check_times(t)
    return json.dumps(t.serialize(), indent=2, ensure_ascii=False) + "\n"


def to_srt(t: Transcript) -> str:
    blocks = []
    for i, s in enumerate(t.segments, 1):
        blocks.append(f"{i}\n{_cue_timing(s.start, s.end, ',')}\n"
                      f"[{_speaker(s.speaker)}] {_one_line(s.text)}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(t: Transcript) -> str:
    out = ["WEBVTT", ""]
    for s in t.segments:
        out.append(_cue_timing(s.start, s.end, "."))
        out.append(f"<v {_vtt_escape(_speaker(s.speaker))}>{_vtt_escape(_one_line(s.text))}</v>")
        out.append("")
    return "\n".join(out)


def to_txt(t: Transcript) -> str:
    return "".join(f"[{_timestamp(s.start, '.')}] {_speaker(s.speaker)}: {_one_line(s.text)}\n"
                   for s in t.segments)


def _token(text: str) -> str:
    return re.sub(r"\s+", "_", text) or "_"


def to_rttm(t: Transcript) -> str:
    return format_rttm(t.uri, sorted(t.turns, key=lambda x: (x.start, x.end)))


def to_csv(t: Transcript) -> str:
    """One row per word: segment index, speaker, start, end, word, probability."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["segment", "speaker", "start", "end", "word", "probability"])
    for i, s in enumerate(t.segments):
        for word in s.words:
            w.writerow([i, _speaker(word.speaker), f"{word.start:.3f}", f"{word.end:.3f}",
                        word.word.strip(), f"{word.probability:.4f}"])
    return buf.getvalue()


WRITERS: dict[str, Callable[[Transcript], str]] = {
    "json": to_json, "srt": to_srt, "vtt": to_vtt, "txt": to_txt, "rttm": to_rttm, "csv": to_csv,
}


def save(t: Transcript, out_dir: Union[str, os.PathLike], formats: tuple[str, ...] = RESULT_FORMATS
         ) -> dict[str, Path]:
    """Write ``out_dir/transcript.<fmt>`` for each format (each file atomically, with the
    permissions the umask gives a new file; a write that fails leaves no temporary file;
    the files and a new `out_dir` named durably: `workbench.engine.durable`)."""
    check_times(t)  # (before any file: a NaN broke SRT after the JSON was written)
    out = make_folder(out_dir)
    paths = {}
    for fmt in formats:
        path = out / f"transcript.{fmt}"
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".transcript.{fmt}.")
        try:
            as_new_file(fd)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(WRITERS[fmt](t))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths[fmt] = path
    sync_folder(out)  # (once for all the names)
    return paths




def load(path: Union[str, os.PathLike]) -> Transcript:
    """Read a ``transcript.json`` back."""
    return Transcript.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def load_served(runs_dir: Union[str, os.PathLike], run_ids: Sequence[str]) -> Transcript:
    """A session's transcript from the ``transcript.json`` of the runs it is made of
    (`served_runs`, folders of ``runs_dir``): one run's, or the live runs of a session
    recorded in parts one after another (their ids in ``config.live_runs``)."""
    parts = [load(Path(runs_dir) / r / "transcript.json") for r in run_ids]
    if len(parts) == 1:
        return parts[0]
    return Transcript.concatenate(parts, live_runs=list(run_ids))


# --------------------------------------------------------------------------- readers

_CUE_TIME = re.compile(r"(\d+):(\d{2}):(\d{2})[,.](\d{3})\s*-->\s*(\d+):(\d{2}):(\d{2})[,.](\d{3})")
_VTT_TIME = re.compile(r"(?:(\d+):)?(\d{2}):(\d{2})[,.](\d{3})\s*-->\s*(?:(\d+):)?(\d{2}):(\d{2})[,.](\d{3})")


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def read_srt(text: str) -> list[tuple[float, float, str, str]]:
    """Parse our SRT: (start, end, speaker, text) per cue."""
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.strip().splitlines()
        if len(lines) < 3:
            continue
        m = _CUE_TIME.search(lines[1])
        if not m:
            raise ValueError(f"bad SRT timing line: {lines[1]!r}")
        speaker, words = _bracketed(" ".join(lines[2:]))
        cues.append((_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), speaker, words))
    return cues


def _bracketed(body: str) -> tuple[str, str]:
    """(speaker, text) of an SRT cue's ``[speaker] text``: the speaker ends at the bracket
    that closes the first (a name like ``Dr. [X]`` ended at its own ``]``); ("", body)
    without one."""
    depth = 0
    for i, ch in enumerate(body):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth == 0:
            if i == 0 or ch != "]":
                return "", body
            rest = body[i + 1:]
            return body[1:i], rest[1:] if rest.startswith(" ") else rest
    return "", body


def read_vtt(text: str) -> list[tuple[float, float, str, str]]:
    """Parse WebVTT with ``<v Speaker>`` voice tags: (start, end, speaker, text) per cue."""
    text = text.removeprefix("\ufeff")
    if not text.startswith("WEBVTT"):
        raise ValueError("not a WebVTT file")
    cues = []
    for block in re.split(r"\n\s*\n", text.strip())[1:]:
        lines = block.strip().splitlines()
        timing = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if timing is None:
            continue
        m = _VTT_TIME.search(lines[timing])  # (hours may be left out)
        if not m:
            raise ValueError(f"bad WebVTT timing line: {lines[timing]!r}")
        body = " ".join(lines[timing + 1 :])
        vm = re.match(r"<v\s+([^>]*)>(.*?)(?:</v>)?$", body)
        speaker, words = (vm.group(1), vm.group(2)) if vm else ("", body)
        unescape = lambda x: x.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")  # noqa: E731
        hours = tuple(h or "0" for h in m.groups())
        cues.append((_seconds(*hours[:4]), _seconds(*hours[4:]), unescape(speaker),
                     unescape(words)))
    return cues


def read_rttm_turns(text: str) -> list[Turn]:
    """Turns of RTTM text (every file id), ends rounded to the millisecond as written."""
    return [Turn(t.start, round(t.end, 3), t.speaker)
            for _, t in _parse_rttm(text.removeprefix("\ufeff").splitlines(), "<rttm>")]


# --------------------------------------------------------------- reference files


def _records(lines: Iterable[str], source: object) -> Iterator[tuple[str, list[str]]]:
    """``(where, fields)`` of the non-empty, non-comment (``;;`` or ``#``) lines, split on
    whitespace; `where` is ``source:line`` for error messages."""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped and not stripped.startswith((";;", "#")):
            yield f"{source}:{number}", stripped.split()


def _times(where: str, kind: str, start: str, end: str, *, duration: bool = False
           ) -> tuple[float, float]:
    """``(start, end)`` of a reference line (`end` is a duration with `duration`): finite
    numbers that do not end before they start, or a ValueError naming the line (a UEM
    region ending before its start scored nothing, so an empty hypothesis scored 0 %; a
    turn of negative or NaN length was left out without a word)."""
    try:
        a, b = float(start), float(end)
    except ValueError:
        raise ValueError(f"{where}: a {kind} line's times must be numbers (got {start!r}, "
                         f"{end!r})") from None
    if not (math.isfinite(a) and math.isfinite(b)) or (b < 0 if duration else b < a):
        raise ValueError(f"{where}: a {kind} line must not end before it starts and its "
                         f"times must be finite (got {start}, {end})")
    return a, a + b if duration else b


def _read_lines(path: PathLike) -> list[str]:
    # (a byte order mark, as Windows tools write, made the first line's uri or type
    # another: its record was dropped without a word)
    return Path(path).read_text(encoding="utf-8-sig").splitlines()


def _parse_rttm(lines: Iterable[str], source: object) -> list[tuple[str, Turn]]:
    rows = []
    for where, fields in _records(lines, source):
        if fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(f"{where}: an RTTM SPEAKER line has at least 8 fields")
        start, end = _times(where, "RTTM", fields[3], fields[4], duration=True)
        rows.append((fields[1], Turn(start, end, fields[7])))
    return rows


def read_rttm(path: PathLike) -> list[tuple[str, Turn]]:
    """``(uri, turn)`` of each ``SPEAKER`` line of an RTTM file, in file order.

    Fields: ``SPEAKER uri channel start duration <NA> <NA> speaker <NA> <NA>``. Speaker
    names are kept as written (``NA`` or ``<NA>`` is a name here, never a missing value).
    """
    return _parse_rttm(_read_lines(path), path)


def format_rttm(uri: str, turns: Iterable[Turn]) -> str:
    """RTTM ``SPEAKER`` lines of `turns` (white space in names becomes ``_``); a turn of no
    length at the millisecond is left out (RTTM durations are positive: one ending before
    it started was written with a negative one, which `read_rttm` refuses)."""
    uri = _token(uri)
    return "".join(
        f"SPEAKER {uri} 1 {turn.start:.3f} {round(turn.end, 3) - round(turn.start, 3):.3f} "
        "<NA> <NA> "
        f"{_token(turn.speaker)} <NA> <NA>\n"
        for turn in turns if round(turn.end, 3) - round(turn.start, 3) >= 0.0005
    )


def read_stm(path: PathLike, *, unscored: bool = False) -> list[tuple[str, TranscriptSegment]]:
    """``(uri, utterance)`` of each line of an STM file
    (``uri channel speaker start end [<label>] text``), in file order.

    The optional ``<...>`` label is skipped; segments whose text is
    ``ignore_time_segment_in_scoring`` are left out (they mark unscored regions) or, with
    `unscored`, are all that is returned.
    """
    rows = []
    for where, fields in _records(_read_lines(path), path):
        if len(fields) < 5:
            raise ValueError(f"{where}: an STM line has at least 5 fields")
        uri, _channel, speaker, start, end, *words = fields
        if words and words[0].startswith("<") and words[0].endswith(">"):
            words = words[1:]
        text = " ".join(words)
        if (text.lower() == IGNORED_STM_TEXT) != unscored:
            continue
        rows.append((uri, TranscriptSegment(*_times(where, "STM", start, end), speaker, text)))
    return rows


def format_stm(uri: str, segments: Iterable[TranscriptSegment]) -> str:
    """STM lines of `segments` (fields split on whitespace: the uri and speakers as RTTM
    writes them, an unknown speaker as UNKNOWN, the text on one line)."""
    def text(s: TranscriptSegment) -> str:  # text opening with <...> would read as a label
        said = _one_line(s.text)
        first = said.split(maxsplit=1)[0] if said.split() else ""
        return f"<o> {said}" if first.startswith("<") and first.endswith(">") else said

    return "".join(f"{_token(uri)} 1 {_token(s.speaker) if s.speaker else 'UNKNOWN'} "
                   f"{s.start:.3f} {s.end:.3f} {text(s)}\n" for s in segments)


def read_uem(path: PathLike) -> list[tuple[str, tuple[float, float]]]:
    """``(uri, (start, end))`` of each line of a UEM file (``uri channel start end``)."""
    rows = []
    for where, fields in _records(_read_lines(path), path):
        if len(fields) < 4:
            raise ValueError(f"{where}: a UEM line has 4 fields")
        rows.append((fields[0], _times(where, "UEM", fields[2], fields[3])))
    return rows


def format_uem(uri: str, spans: Iterable[tuple[float, float]]) -> str:
    """UEM lines of the scored regions `spans` (``(start, end)`` in seconds)."""
    return "".join(f"{_token(uri)} 1 {start:.3f} {end:.3f}\n" for start, end in spans)


# --------------------------------------------------------------- pyannote.core


def to_annotation(turns: Union["Annotation", Iterable[Turn]], uri: Optional[str] = None) -> "Annotation":
    """A pyannote `Annotation` of `turns` (an `Annotation` is returned as is)."""
    from pyannote.core import Annotation, Segment

    if isinstance(turns, Annotation):
        return turns
    annotation = Annotation(uri=uri)
    for track, turn in enumerate(turns):
        annotation[Segment(turn.start, turn.end), track] = turn.speaker
    return annotation


def from_annotation(annotation: "Annotation") -> list[Turn]:
    """The turns of a pyannote `Annotation`: times rounded to the millisecond, labels as
    strings, sorted by start, end and speaker."""
    turns = [Turn(round(segment.start, 3), round(segment.end, 3), str(label))
             for segment, _, label in annotation.itertracks(yield_label=True)]
    return sorted(turns, key=lambda t: (t.start, t.end, t.speaker))
