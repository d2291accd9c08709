"""Scoring transcripts against corpus references, and tables that compare systems.

`score` turns one recording's reference files (RTTM, STM, UEM of a `CorpusItem`) and
one system's `Transcript` into a flat row of figures: DER with its components in
seconds, JER, WER and cpWER with their counts, speaker counts and the real-time factor.
`compare` collects such rows (one per recording and system) into a `ComparisonTable`
with a pooled aggregate row per system::

    rows = [{"system": name, **score(item, transcripts[name][item.uri])}
            for name in transcripts for item in corpus]
    table = compare(rows)
    table            # in a notebook: the styled table, best value per column highlighted
    table.summary    # one aggregate row per system
    table.frame      # every row (recordings and aggregates) as a plain DataFrame

Aggregates are pooled, never means of per-file ratios: DER is the sum of error seconds
over the sum of reference speech seconds, WER and cpWER the sum of errors over the sum
of reference words, the real-time factor the sum of processing seconds over the sum of
audio seconds.  JER is by definition a mean over reference speakers within a file; the
aggregate is the mean over all (file, reference speaker) pairs, i.e. each file's JER
weighted by its number of reference speakers -- what DIHARD's ``dscore`` reports for a
whole set (speakers paired as dscore does: see `jaccard_error_rate`).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from workbench.research.datasets.items import CorpusItem
from workbench.research.metrics import (
    as_annotation,
    concatenated_minimum_permutation_wer,
    diarization_error,
    jaccard_error_rate,
    speakers_within,
    word_error_rate,
)
from workbench.engine.transcript import Transcript, TranscriptSegment, word_separator

if TYPE_CHECKING:  # pragma: no cover
    from pandas.io.formats.style import Styler
    from pyannote.core import Timeline

__all__ = ["ALL", "COLUMNS", "ComparisonTable", "Column", "compare", "score"]

ALL = "ALL"
"""The ``uri`` of a system's aggregate row in a `ComparisonTable`."""

UNATTRIBUTED = "<unattributed>"
"""Hypothesis speaker that words without a speaker are grouped under for cpWER."""

# STM speaker fields that say "speaker unknown": such an STM gives no cpWER reference.
_NO_SPEAKER = {"", "-", "na", "<na>", "unknown", "<unknown>", "spk", "speaker"}


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    """One figure of a score row: what it means, whether lower is better, how it
    aggregates over recordings (``sum``, ``ratio`` (pooled), ``mean``, ``first`` or
    None) and how it is displayed."""

    description: str
    lower_is_better: Optional[bool] = None
    aggregate: Optional[str] = "sum"
    format: str = "{:.2f}"


COLUMNS: dict[str, Column] = {
    "duration": Column("audio duration (s)", None, "sum", "{:.1f}"),
    "scored": Column("duration of the scored region, the UEM (s)", None, "sum", "{:.1f}"),
    "der": Column("diarization error rate = (missed + false_alarm + confusion) / speech",
                  True, "ratio", "{:.1%}"),
    "missed": Column("missed speech (s)", True, "sum"),
    "false_alarm": Column("false-alarm speech (s)", True, "sum"),
    "confusion": Column("speaker confusion (s)", True, "sum"),
    "speech": Column("reference speech in the scored region, overlap counted per speaker (s)",
                     None, "sum", "{:.1f}"),
    "jer": Column("Jaccard error rate (mean over reference speakers)", True, "ratio", "{:.1%}"),
    "jer_speakers": Column("reference speakers JER averages over", None, "sum", "{:.0f}"),
    "wer": Column("word error rate = wer_errors / ref_words (normalize_text applied)",
                  True, "ratio", "{:.1%}"),
    "wer_errors": Column("substitutions + deletions + insertions", True, "sum", "{:.0f}"),
    "substitutions": Column("WER substitutions", True, "sum", "{:.0f}"),
    "deletions": Column("WER deletions", True, "sum", "{:.0f}"),
    "insertions": Column("WER insertions", True, "sum", "{:.0f}"),
    "ref_words": Column("reference words (STM, normalised)", None, "sum", "{:.0f}"),
    "hyp_words": Column("hypothesis words (normalised)", None, "sum", "{:.0f}"),
    "cpwer": Column("concatenated minimum-permutation WER = cpwer_errors / cpwer_ref_words",
                    True, "ratio", "{:.1%}"),
    "cpwer_errors": Column("cpWER errors", True, "sum", "{:.0f}"),
    "cpwer_ref_words": Column("cpWER reference words", None, "sum", "{:.0f}"),
    "ref_speakers": Column("reference speakers (RTTM, else STM); aggregate: mean", None,
                           "mean", "{:.3g}"),
    "hyp_speakers": Column("hypothesis speakers; aggregate: mean", None, "mean", "{:.3g}"),
    "speaker_count_error": Column("|hyp_speakers - ref_speakers|; aggregate: mean", True,
                                  "mean", "{:.3g}"),
    "processing": Column("processing time of the run, transcript.timings['total'] (s)", None,
                         "sum", "{:.2f}"),
    "rtf": Column("real-time factor = processing / duration", True, "ratio", "{:.3f}"),
}

# pooled ratios: column -> (numerator columns, denominator column)
_RATIOS: dict[str, tuple[tuple[str, ...], str]] = {
    "der": (("missed", "false_alarm", "confusion"), "speech"),
    "wer": (("wer_errors",), "ref_words"),
    "cpwer": (("cpwer_errors",), "cpwer_ref_words"),
    "rtf": (("processing",), "duration"),
}

DISPLAY_COLUMNS: tuple[str, ...] = (
    "duration", "der", "missed", "false_alarm", "confusion", "jer", "wer", "cpwer",
    "ref_speakers", "hyp_speakers", "rtf",
)
"""Columns a `ComparisonTable` shows by default."""


# --------------------------------------------------------------------------- one recording


def _ran(transcript: Transcript, step: str) -> bool:
    """Did the run that made `transcript` transcribe / diarize?  (True when unknown.)"""
    options = transcript.config.get("options") if isinstance(transcript.config, Mapping) else None
    if isinstance(options, Mapping) and step in options:
        return bool(options[step])
    return True


def _inside(timeline: "Timeline", start: float, end: float) -> bool:
    middle = (start + end) / 2
    return any(s.start <= middle <= s.end for s in timeline)


def _scored(uem: "Timeline", kept: Sequence[TranscriptSegment],
            dropped: Sequence[TranscriptSegment], start: float, end: float) -> bool:
    """Is a hypothesis word scored under a UEM?  Reference utterances are kept or left
    out whole, by their midpoint; a word follows the utterance its midpoint falls in
    (kept: scored, even past the UEM's edge; left out: not scored, even inside the UEM),
    and the UEM alone decides where no utterance is (a word by word cut charged a perfect
    transcript errors wherever an utterance crossed the UEM's edge)."""
    middle = (start + end) / 2
    for spans, scored in ((kept, True), (dropped, False)):
        if any(s.start <= middle <= s.end for s in spans):
            return scored
    return any(s.start <= middle <= s.end for s in uem)


def _reference_segments(item: CorpusItem) -> list[TranscriptSegment]:
    return [s for s in item.reference_segments()
            if s.text and s.text.strip().lower() != "ignore_time_segment_in_scoring"]


def _hypothesis_units(transcript: Transcript
                      ) -> tuple[list[tuple[float, float, Optional[str], str]], str]:
    """(start, end, speaker, text) of each hypothesis word in time order (the segments
    without word timings), and what joins them (`word_separator`: ``" 3"`` ``".5"``
    is the one word the transcript shows)."""
    words = transcript.words
    if words:
        separator = word_separator(words)
        units = [(w.start, w.end, w.speaker, w.word if separator == "" else w.word.strip())
                 for w in words]
    else:
        separator = " "
        units = [(s.start, s.end, s.speaker, s.text) for s in transcript.segments if s.text]
    return sorted(units, key=lambda u: (u[0], u[1])), separator


def _by_speaker(pairs: Iterable[tuple[Optional[str], str]], separator: str = " ") -> dict[str, str]:
    texts: dict[str, list[str]] = {}
    for speaker, text in pairs:
        texts.setdefault(UNATTRIBUTED if speaker is None else str(speaker), []).append(text)
    return {speaker: separator.join(parts) for speaker, parts in texts.items()}


def score(item: CorpusItem, transcript: Transcript, *, collar: float = 0.0,
          skip_overlap: bool = False) -> dict[str, Any]:
    """Score one system's `transcript` of `item` against the item's references.

    Returns one flat row (see `COLUMNS` for every key): ``uri``, ``duration``,
    ``scored``; ``collar`` and ``skip_overlap`` as given; DER (``der``) and its components in seconds (``missed``,
    ``false_alarm``, ``confusion``, ``speech`` = reference speech); JER (``jer``,
    ``jer_speakers``); WER (``wer`` and its counts, after `normalize_text`, reference
    from the STM); cpWER (``cpwer``, ``cpwer_errors``, ``cpwer_ref_words``; meeteval, when
    the STM names speakers); ``ref_speakers``, ``hyp_speakers``,
    ``speaker_count_error``; ``processing`` (``transcript.timings['total']``) and
    ``rtf``.

    Diarization is scored inside the UEM (the whole file without one) with `collar` and
    `skip_overlap` as in pyannote.metrics.  With a UEM, reference utterances whose
    midpoint lies outside it are left out of WER and cpWER, and so are the hypothesis
    words whose midpoint lies in such an utterance; a word inside a kept utterance is
    scored, and elsewhere a word counts when its midpoint lies inside the UEM (as sclite
    treats regions excluded from scoring, and as asclite keeps reference segments whole
    and hypothesis words by their midpoint).  Figures that do not
    apply are NaN: no RTTM (or a run that did not diarize) gives no DER/JER, no STM (or a
    run that did not transcribe) no WER.  Words without a speaker are one extra
    hypothesis speaker for cpWER, so ASR alone gets the cpWER of "one speaker said
    everything".
    """
    nan = math.nan
    duration = float(item.duration)
    uem = item.annotated()
    row: dict[str, Any] = {"uri": item.uri, "duration": duration,
                           "scored": float(uem.duration()),
                           # how DER / JER were scored, echoed (`ComparisonTable` notes it)
                           "collar": float(collar), "skip_overlap": bool(skip_overlap)}
    row.update(dict.fromkeys(
        ("der", "missed", "false_alarm", "confusion", "speech", "jer", "jer_speakers",
         "wer", "wer_errors", "substitutions", "deletions", "insertions", "ref_words",
         "hyp_words", "cpwer", "cpwer_errors", "cpwer_ref_words", "ref_speakers",
         "hyp_speakers", "speaker_count_error"), nan))

    diarized = _ran(transcript, "diarize")
    if item.rttm is not None:
        reference = item.reference()
        row["ref_speakers"] = speakers_within(reference, uem)
        if diarized:
            hypothesis = as_annotation(transcript.turns, uri=item.uri)
            der = diarization_error(reference, hypothesis, uem=uem, collar=collar,
                                    skip_overlap=skip_overlap)
            jer = jaccard_error_rate(reference, hypothesis, uem=uem, collar=collar,
                                     skip_overlap=skip_overlap)
            row.update(der=der.der, missed=der.missed, false_alarm=der.false_alarm,
                       confusion=der.confusion, speech=der.total,
                       jer=jer.jer, jer_speakers=jer.speaker_count)

    if item.stm is not None:
        every = _reference_segments(item)
        segments = every
        dropped: list[TranscriptSegment] = []
        if item.uem is not None:
            segments = [s for s in every if _inside(uem, s.start, s.end)]
            dropped = [s for s in every if not _inside(uem, s.start, s.end)]
        speakers = {str(s.speaker) for s in segments if s.speaker is not None}
        # whether the STM names its speakers, from all of it: a scored region without a
        # reference utterance still charges cpWER the words said there, as WER (before,
        # cpWER was left undefined there and pooled lower than WER on the same words)
        named = {str(s.speaker) for s in every if s.speaker is not None}
        has_speakers = not every or bool(named) and not all(
            s.lower() in _NO_SPEAKER for s in named)
        if item.rttm is None and speakers and has_speakers:
            row["ref_speakers"] = len(speakers)
        if _ran(transcript, "transcribe"):
            units, separator = _hypothesis_units(transcript)
            if item.uem is not None:
                units = [u for u in units if _scored(uem, segments, dropped, u[0], u[1])]
            unscored = item.unscored_regions()  # as sclite: words there are not scored
            units = [u for u in units
                     if not any(a <= (u[0] + u[1]) / 2 <= b for a, b in unscored)]
            hypothesis_text = separator.join(u[3] for u in units)
            reference_text = " ".join(s.text for s in segments)
            wer = word_error_rate(reference_text, hypothesis_text)
            row.update(wer=wer.wer, wer_errors=wer.errors, substitutions=wer.substitutions,
                       deletions=wer.deletions, insertions=wer.insertions,
                       ref_words=wer.reference_words, hyp_words=wer.hypothesis_words)
            if has_speakers:
                cp = concatenated_minimum_permutation_wer(
                    _by_speaker((s.speaker, s.text) for s in segments),
                    _by_speaker(((u[2], u[3]) for u in units), separator))
                row.update(cpwer=cp.cpwer, cpwer_errors=cp.errors,
                           cpwer_ref_words=cp.reference_words)

    if diarized:  # speakers inside the UEM on both sides, as pyannote counts them
        row["hyp_speakers"] = speakers_within(transcript.turns, uem)
        if not math.isnan(row["ref_speakers"]):
            row["speaker_count_error"] = abs(row["hyp_speakers"] - row["ref_speakers"])
    total = transcript.timings.get("total") if transcript.timings else None
    row["processing"] = float(total) if total is not None else nan
    row["rtf"] = row["processing"] / duration if duration > 0 else nan
    return row


# --------------------------------------------------------------------------- many recordings


def _pooled(errors: float, length: float) -> float:
    if length > 0:
        return errors / length
    return 0.0 if errors == 0 else math.inf


def _aggregate(group: pd.DataFrame) -> dict[str, Any]:
    """One system's aggregate row; a figure pools only the rows where it is defined, and
    `files` and `duration` count only the recordings the system ran on (rows of a system
    that could not run on some carry ``status == "unavailable"``)."""
    if "status" in group:
        group = group[group["status"].fillna("ok") == "ok"]
    out: dict[str, Any] = {"files": len(group)}
    for name, column in COLUMNS.items():
        if name not in group or column.aggregate is None:
            continue
        values = pd.to_numeric(group[name], errors="coerce")
        if column.aggregate == "sum":
            out[name] = float(values.sum()) if values.notna().any() else math.nan
        elif column.aggregate == "mean":
            out[name] = float(values.mean()) if values.notna().any() else math.nan
    for name, (numerators, denominator) in _RATIOS.items():
        if name not in group or denominator not in group:
            continue
        defined = pd.to_numeric(group[name], errors="coerce").notna()
        if not defined.any():
            out[name] = math.nan
            continue
        part = group[defined]
        errors = sum(float(pd.to_numeric(part[c]).sum()) for c in numerators)
        out[name] = _pooled(errors, float(pd.to_numeric(part[denominator]).sum()))
    if "jer" in group and "jer_speakers" in group:
        jer = pd.to_numeric(group["jer"], errors="coerce")
        weight = pd.to_numeric(group["jer_speakers"], errors="coerce")
        defined = jer.notna() & weight.notna()
        out["jer"] = (float((jer[defined] * weight[defined]).sum() / weight[defined].sum())
                      if defined.any() and weight[defined].sum() > 0 else math.nan)
        out["jer_speakers"] = float(weight[defined].sum()) if defined.any() else math.nan
    return out


def _status(group: pd.DataFrame) -> dict[str, Any]:
    """An aggregate row's ``status`` and ``reason`` (rows of a system that could not run
    carry ``status == "unavailable"`` and a ``reason``, see `experiments.run_grid`)."""
    if "status" not in group:
        return {}
    statuses = set(group["status"].dropna())
    status = ("ok" if statuses <= {"ok"} else "unavailable" if statuses == {"unavailable"}
              else "partly unavailable")
    reasons = [] if "reason" not in group else list(dict.fromkeys(group["reason"].dropna()))
    return {"status": status, "reason": "; ".join(map(str, reasons)) or None}


def compare(rows: Union[Sequence[Mapping[str, Any]], pd.DataFrame],
            by: str = "system") -> "ComparisonTable":
    """Tabulate score rows (one per recording and system, e.g. from `score` plus a
    ``system`` key) with a pooled aggregate row per system (see the module docstring).

    `by` names the column that tells systems apart.  Rows keep their order of first
    appearance: recordings in order, each with its systems, then the aggregates.
    """
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("no rows to compare")
    for key in ("uri", by):
        if key not in frame.columns:
            raise ValueError(f"rows have no {key!r} column (add one to each row, e.g. "
                             f"row[{key!r}] = ...)")
    if frame.duplicated(["uri", by]).any():
        dups = frame.loc[frame.duplicated(["uri", by]), ["uri", by]].values.tolist()[:3]
        raise ValueError(f"more than one row for the same recording and {by}: {dups}")
    frame["uri"] = frame["uri"].astype(str)
    if (frame["uri"] == ALL).any():
        raise ValueError(f"a recording may not be called {ALL!r} (the aggregate rows' name)")
    systems = list(dict.fromkeys(frame[by]))
    uris = list(dict.fromkeys(frame["uri"]))

    ordered = frame.assign(_u=frame["uri"].map({u: i for i, u in enumerate(uris)}),
                           _s=frame[by].map({s: i for i, s in enumerate(systems)}))
    ordered = ordered.sort_values(["_u", "_s"], kind="stable").drop(columns=["_u", "_s"])
    ordered.insert(0, "files", 1)
    summary = pd.DataFrame([{by: s, "uri": ALL, **_aggregate(frame[frame[by] == s]),
                             **_status(frame[frame[by] == s])} for s in systems])
    full = pd.concat([ordered, summary], ignore_index=True)
    metric_names = [c for c in COLUMNS if c in full.columns]
    rest = [c for c in full.columns if c not in ("uri", by, "files", *metric_names)]
    full = full[["uri", by, "files", *metric_names, *rest]].set_index(["uri", by])
    return ComparisonTable(full, by=by)


@dataclass
class ComparisonTable:
    """Figures of several systems on several recordings, and their pooled aggregates.

    `frame` is indexed by (``uri``, system) and holds one row per recording and system
    followed by one aggregate row per system (``uri == ALL``); `summary` is the
    aggregate rows alone, indexed by system; `recordings` the per-recording rows.  In a
    notebook the table shows itself styled, the best value of each column highlighted
    within each recording (and among the aggregates of the systems that ran on every
    recording, see `best`).
    """

    frame: pd.DataFrame
    by: str = "system"

    @property
    def summary(self) -> pd.DataFrame:
        return self.frame.xs(ALL, level="uri")

    @property
    def recordings(self) -> pd.DataFrame:
        return self.frame[self.frame.index.get_level_values("uri") != ALL]

    @property
    def systems(self) -> list[str]:
        return list(dict.fromkeys(self.frame.index.get_level_values(self.by)))

    def _columns(self, columns: Optional[Sequence[str]]) -> list[str]:
        wanted = DISPLAY_COLUMNS if columns is None else tuple(columns)
        missing = [c for c in wanted if c not in self.frame.columns]
        if columns is not None and missing:
            raise KeyError(f"no such column(s): {', '.join(missing)}")
        present = [c for c in wanted if c in self.frame.columns]
        # hide columns that are empty everywhere (e.g. cpWER without any STM)
        shown = [c for c in present if self.frame[c].notna().any()] or present
        if columns is None and self.unavailable:
            shown.append("status")
        return shown

    @property
    def unavailable(self) -> dict[str, str]:
        """Systems that could not run on (some of) the recordings: name -> reason."""
        if "status" not in self.frame.columns:
            return {}
        summary = self.summary
        return {str(system): str(summary.loc[system, "reason"] or "no reason given")
                for system in summary.index if summary.loc[system, "status"] != "ok"}

    @property
    def cells(self) -> pd.DataFrame:
        """Where each recording x system row came from (the columns `run_grid` adds):
        ``cached`` (read back from an earlier run), ``stale`` (computed by other code,
        models or packages and served because of ``stale="reuse"``), the
        ``code_version`` of the workbench code that computed it (None: not recorded),
        ``other_machine`` (another CPU, instruction-set caps or threads than this run's:
        its timings are not this machine's, other flags or caps can change its words) and
        ``machine_differences`` (what differs)."""
        cols = [c for c in ("status", "cached", "stale", "code_version", "other_machine",
                            "machine_differences") if c in self.frame.columns]
        return self.recordings[cols]

    def _coverage(self) -> tuple[dict[Any, set[str]], set[str]]:
        """(the recordings each system ran on, every recording any system ran on); a row
        of ``status == "unavailable"`` is no recording its system ran on."""
        rows = self.recordings
        if "status" in rows:
            rows = rows[rows["status"].fillna("ok") == "ok"]
        ran: dict[Any, set[str]] = {system: set() for system in self.systems}
        for uri, system in rows.index:
            ran[system].add(str(uri))
        return ran, set().union(*ran.values())

    @property
    def fewer_recordings(self) -> dict[str, tuple[int, int]]:
        """Systems that did not run on every recording some system ran on (a recording
        is missing from their rows, or was unavailable to them): name -> (recordings it
        ran on, recordings any system ran on).  Their aggregate rows pool other speech
        than the others' and are never marked best."""
        ran, every = self._coverage()
        return {str(system): (len(uris), len(every)) for system, uris in ran.items()
                if uris != every}

    def _notes(self) -> list[str]:
        notes = [f"{system} {self.summary.loc[system, 'status']}: {reason}"
                 for system, reason in self.unavailable.items()]
        if {"collar", "skip_overlap"} <= set(self.frame.columns) and "der" in self.frame:
            scored = self.recordings[self.recordings["der"].notna()]
            notes += [f"DER and JER with a collar of {c:g} s, overlapped speech "
                      f"{'not scored' if o else 'scored'}" for c, o in sorted(
                          {(float(c), bool(o)) for c, o in zip(scored["collar"],
                                                               scored["skip_overlap"])})]
        notes += [f"{system} ran on {ran} of {every} recordings: its {ALL} row pools those "
                  "alone and is not compared with the others'"
                  for system, (ran, every) in self.fewer_recordings.items() if ran]
        if "stale" in self.frame.columns:
            stale = self.recordings[self.recordings["stale"].fillna(False).astype(bool)]
            if len(stale):
                versions = ", ".join(sorted({"unknown" if _missing(v) else str(v)
                                             for v in stale["code_version"]}))
                notes.append(f"{len(stale)} cell(s) stale: computed by other code, models or "
                             f"packages (code {versions}); run_grid(stale='rerun') "
                             "computes them again")
        if "other_machine" in self.frame.columns:
            moved = self.recordings[self.recordings["other_machine"].fillna(False).astype(bool)]
            if len(moved):
                what = "; ".join(sorted({str(v) for v in moved.get(
                    "machine_differences", pd.Series(dtype=object)).dropna()}))
                notes.append(f"{len(moved)} cell(s) computed on another machine or with other "
                             f"settings ({what or 'not recorded'}): their timings (rtf) are "
                             "not this run's, and other CPU flags or ISA caps can change their "
                             "words too; run_grid(other_machine='rerun') reruns them here")
        return notes

    def best(self, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
        """Boolean frame: True where a value is the best of its column among the systems
        that ran on the same recording, or among the aggregates of the systems that ran
        on every recording (one that ran on fewer, `fewer_recordings`, is not measured
        on the same speech: its aggregate is never marked).  Only columns with a
        direction (`Column.lower_is_better`) and groups of two or more systems are
        marked."""
        cols = self._columns(columns)
        marks = pd.DataFrame(False, index=self.frame.index, columns=cols)
        fewer = set(self.fewer_recordings)
        for uri in dict.fromkeys(self.frame.index.get_level_values("uri")):
            block = self.frame.xs(uri, level="uri", drop_level=False)
            if uri == ALL:
                block = block[[str(s) not in fewer
                               for s in block.index.get_level_values(self.by)]]
            elif "status" in block:  # only systems that ran on this recording
                block = block[block["status"].fillna("ok") == "ok"]
            if len(block) < 2:
                continue
            for c in cols:
                direction = COLUMNS[c].lower_is_better if c in COLUMNS else None
                if direction is None:
                    continue
                values = pd.to_numeric(block[c], errors="coerce")
                if values.notna().sum() < 2:
                    continue
                target = values.min() if direction else values.max()
                hit = values.index[np.isclose(values.to_numpy(dtype=float), target,
                                              rtol=1e-9, atol=1e-12)]
                marks.loc[hit, c] = True
        return marks

    def style(self, columns: Optional[Sequence[str]] = None) -> "Styler":
        """A pandas `Styler` of the chosen columns (default `DISPLAY_COLUMNS`) with the
        best value per column and recording highlighted and the aggregate rows set off."""
        cols = self._columns(columns)
        marks = self.best(cols)
        view = self.frame[cols]

        def highlight(frame: pd.DataFrame) -> pd.DataFrame:
            best = np.where(marks.to_numpy(), "font-weight: bold; background-color: #c7e9c0;", "")
            total = (frame.index.get_level_values("uri") == ALL)[:, None]
            rule = np.where(total, "border-top: 1px solid #888;", "")
            return pd.DataFrame(np.char.add(best.astype(str), rule.astype(str)),
                                index=frame.index, columns=frame.columns)

        formats = {c: COLUMNS[c].format for c in cols if c in COLUMNS}
        caption = ("best value per column and recording highlighted; "
                   f"{ALL} rows pool all recordings (sums, not means of ratios)")
        caption = "<br>".join([caption, *map(html.escape, self._notes())])
        return (view.style.apply(highlight, axis=None)
                .format(formats, na_rep="–")
                .set_caption(caption))

    def _repr_html_(self) -> str:
        return self.style().to_html()

    def to_markdown(self, columns: Optional[Sequence[str]] = None, *,
                    aggregates_only: bool = False) -> str:
        """A GitHub-flavoured markdown table; the best values are in bold."""
        cols = self._columns(columns)
        marks = self.best(cols)
        frame = self.frame.xs(ALL, level="uri", drop_level=False) if aggregates_only \
            else self.frame
        lines = ["| uri | " + self.by + " | " + " | ".join(cols) + " |",
                 "|---|---|" + "---:|" * len(cols)]
        for (uri, system), values in frame[cols].iterrows():
            cells = []
            for c in cols:
                value = values[c]
                text = "–" if _missing(value) else (
                    COLUMNS[c].format.format(value) if c in COLUMNS else str(value))
                if not _missing(value) and bool(marks.loc[(uri, system), c]):
                    text = f"**{text}**"
                cells.append(text)
            lines.append(f"| {uri} | {system} | " + " | ".join(cells) + " |")
        notes = self._notes()
        return "\n".join(lines + ([""] + [f"- {note}" for note in notes] if notes else []))

    def records(self) -> list[dict[str, Any]]:
        """Every row as a plain-JSON dict (NaN and inf as None)."""
        out = []
        for record in self.frame.reset_index().to_dict(orient="records"):
            out.append({k: (None if _missing(v) or (isinstance(v, float) and math.isinf(v))
                        else _plain(v)) for k, v in record.items()})
        return out

    def __repr__(self) -> str:
        cols = self._columns(None)
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            text = f"ComparisonTable({len(self.systems)} systems)\n{self.frame[cols]!r}"
        return "\n".join([text, *self._notes()])

    def __str__(self) -> str:
        return self.__repr__()


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value

