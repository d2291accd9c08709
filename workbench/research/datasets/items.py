"""A corpus item: one recording and its reference files (RTTM turns, STM text, UEM
scored region), read with `workbench.engine.formats`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from workbench.engine.audio import wav_duration
from workbench.engine.formats import PathLike, read_rttm, read_stm, read_uem, to_annotation
from workbench.engine.transcript import TranscriptSegment, Turn

if TYPE_CHECKING:  # pragma: no cover
    from pyannote.core import Annotation, Timeline


# =========================================================================== items


@dataclass(frozen=True)
class CorpusItem:
    """One recording of a corpus and its optional reference files.

    `rttm` holds the reference speaker turns, `stm` the speaker-attributed reference
    text (one line per utterance), `uem` the region to score (the whole file when
    absent).  `info` carries whatever the source knows besides (generation
    parameters, measured overlap ratio, ...).  Paths may be given as strings: they
    are kept as `Path` objects.
    """

    uri: str
    audio: Path
    rttm: Optional[Path] = None
    stm: Optional[Path] = None
    uem: Optional[Path] = None
    info: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("audio", "rttm", "stm", "uem"):
            value = getattr(self, name)
            if value is None and name != "audio":
                continue
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{self.uri}: CorpusItem.{name} must be a path, not "
                                f"{type(value).__name__}")
            object.__setattr__(self, name, Path(value))

    @property
    def duration(self) -> float:
        """Duration of the audio in seconds (read from the file header)."""
        if self.audio.suffix.lower() == ".wav":
            duration = wav_duration(self.audio)
            if duration > 0:
                return duration
        import soundfile

        return float(soundfile.info(str(self.audio)).duration)

    def load_audio(self) -> np.ndarray:
        """The recording as 16 kHz mono float32 samples."""
        from workbench.engine.audio import load_audio

        return load_audio(self.audio)

    def reference_turns(self) -> list[Turn]:
        """Reference speaker turns from the RTTM, sorted by start time."""
        if self.rttm is None:
            raise ValueError(f"{self.uri}: no reference RTTM")
        rows = _rows_for_uri(read_rttm(self.rttm), self.uri, self.rttm)
        return sorted(rows, key=lambda t: (t.start, t.end, t.speaker))

    def reference(self) -> "Annotation":
        """Reference speaker turns as a `pyannote.core.Annotation`."""
        return to_annotation(self.reference_turns(), uri=self.uri)

    def reference_segments(self) -> list[TranscriptSegment]:
        """Reference utterances (speaker, start, end, text) from the STM, in time order."""
        if self.stm is None:
            raise ValueError(f"{self.uri}: no reference STM")
        rows = _rows_for_uri(read_stm(self.stm), self.uri, self.stm)
        return sorted(rows, key=lambda s: (s.start, s.end))

    def unscored_regions(self) -> list[tuple[float, float]]:
        """(start, end) of the STM's ``ignore_time_segment_in_scoring`` lines: words
        there count neither in the reference nor in the hypothesis."""
        if self.stm is None:
            return []
        scored = {u for u, _ in read_stm(self.stm)}
        uri = self.uri if self.uri in scored or len(scored) != 1 else next(iter(scored))
        return sorted((s.start, s.end) for u, s in read_stm(self.stm, unscored=True)
                      if u == uri)

    def reference_text(self) -> str:
        """The whole reference transcript, utterances joined in time order."""
        return " ".join(s.text for s in self.reference_segments() if s.text)

    def annotated(self) -> "Timeline":
        """The region to score (UEM) as a `pyannote.core.Timeline`; the whole file by default."""
        from pyannote.core import Segment, Timeline

        if self.uem is not None:
            spans = _rows_for_uri(read_uem(self.uem), self.uri, self.uem)
            if spans:
                return Timeline([Segment(s, e) for s, e in spans], uri=self.uri)
        return Timeline([Segment(0.0, self.duration)], uri=self.uri)

    def as_pyannote(self) -> dict[str, Any]:
        """The item as a pyannote "ProtocolFile"-like dict: ``uri``, ``audio`` and, when
        references exist, ``annotation`` and ``annotated``."""
        file: dict[str, Any] = {"uri": self.uri, "audio": str(self.audio)}
        if self.rttm is not None:
            file["annotation"] = self.reference()
            file["annotated"] = self.annotated()
        return file

    def serialize(self, relative_to: Optional[PathLike] = None) -> dict[str, Any]:
        """Manifest entry: paths relative to `relative_to` when given, plus `info`."""

        def rel(path: Optional[Path]) -> Optional[str]:
            if path is None:
                return None
            if relative_to is not None:
                return Path(os.path.relpath(path, relative_to)).as_posix()
            return str(path)

        entry: dict[str, Any] = {
            "uri": self.uri,
            "audio": rel(self.audio),
            "rttm": rel(self.rttm),
            "stm": rel(self.stm),
            "uem": rel(self.uem),
        }
        entry.update({k: v for k, v in self.info.items() if k not in entry})
        return entry


# ---------------------------------------------------------------- reference files


def _rows_for_uri(rows: Sequence[tuple[str, Any]], uri: str, path: Path) -> list[Any]:
    """Rows of `uri`; a file that describes exactly one other uri is taken as this one's
    (users' own references often name the recording differently)."""
    mine = [row for u, row in rows if u == uri]
    if mine:
        return mine
    uris = {u for u, _ in rows}
    if len(uris) == 1:
        return [row for _, row in rows]
    if not uris:
        return []
    raise ValueError(f"{path} has no entries for uri {uri!r} (it has {sorted(uris)[:5]})")
