"""Writing a :class:`~workbench.engine.transcript.Transcript` as JSON, SRT, WebVTT, TXT, RTTM and CSV,
and reading SRT, WebVTT and RTTM back."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Union

from workbench.engine.transcript import Transcript, Turn

FORMATS = ("json", "srt", "vtt", "txt", "rttm", "csv")


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _speaker(label: object) -> str:
    return str(label) if label is not None else "UNKNOWN"


def to_json(t: Transcript) -> str:
    return json.dumps(t.serialize(), indent=2, ensure_ascii=False) + "\n"


def to_srt(t: Transcript) -> str:
    blocks = []
    for i, s in enumerate(t.segments, 1):
        blocks.append(f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n"
                      f"[{_speaker(s.speaker)}] {s.text}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(t: Transcript) -> str:
    out = ["WEBVTT", ""]
    for s in t.segments:
        out.append(f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}")
        out.append(f"<v {_vtt_escape(_speaker(s.speaker))}>{_vtt_escape(s.text)}</v>")
        out.append("")
    return "\n".join(out)


def to_txt(t: Transcript) -> str:
    return "".join(f"[{_timestamp(s.start, '.')}] {_speaker(s.speaker)}: {s.text}\n"
                   for s in t.segments)


def _token(text: str) -> str:
    return re.sub(r"\s+", "_", text) or "_"


def to_rttm(t: Transcript) -> str:
    uri = _token(t.uri)
    return "".join(
        f"SPEAKER {uri} 1 {turn.start:.3f} {turn.end - turn.start:.3f} <NA> <NA> "
        f"{_token(turn.speaker)} <NA> <NA>\n"
        for turn in sorted(t.turns, key=lambda x: (x.start, x.end))
    )


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


def save(t: Transcript, out_dir: Union[str, os.PathLike], formats: tuple[str, ...] = FORMATS
         ) -> dict[str, Path]:
    """Write ``out_dir/transcript.<fmt>`` for each format (each file atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        path = out / f"transcript.{fmt}"
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".transcript.{fmt}.")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(WRITERS[fmt](t))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        paths[fmt] = path
    return paths


def load(path: Union[str, os.PathLike]) -> Transcript:
    """Read a ``transcript.json`` back."""
    return Transcript.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- readers

_CUE_TIME = re.compile(r"(\d+):(\d{2}):(\d{2})[,.](\d{3})\s*-->\s*(\d+):(\d{2}):(\d{2})[,.](\d{3})")


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
        body = " ".join(lines[2:])
        sm = re.match(r"\[([^\]]*)\]\s?(.*)", body)
        speaker, words = (sm.group(1), sm.group(2)) if sm else ("", body)
        cues.append((_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), speaker, words))
    return cues


def read_vtt(text: str) -> list[tuple[float, float, str, str]]:
    """Parse WebVTT with ``<v Speaker>`` voice tags: (start, end, speaker, text) per cue."""
    if not text.startswith("WEBVTT"):
        raise ValueError("not a WebVTT file")
    cues = []
    for block in re.split(r"\n\s*\n", text.strip())[1:]:
        lines = block.strip().splitlines()
        timing = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if timing is None:
            continue
        m = _CUE_TIME.search(lines[timing])
        if not m:
            raise ValueError(f"bad WebVTT timing line: {lines[timing]!r}")
        body = " ".join(lines[timing + 1 :])
        vm = re.match(r"<v\s+([^>]*)>(.*?)(?:</v>)?$", body)
        speaker, words = (vm.group(1), vm.group(2)) if vm else ("", body)
        unescape = lambda x: x.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")  # noqa: E731
        cues.append((_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), unescape(speaker),
                     unescape(words)))
    return cues


def read_rttm_turns(text: str) -> list[Turn]:
    """Parse RTTM ``SPEAKER`` lines into turns."""
    turns = []
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            turns.append(Turn(start, round(start + dur, 3), f[7]))
    return turns
