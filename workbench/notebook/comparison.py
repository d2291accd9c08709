"""How the runs of one session compare: live against refined, or one system against another.

``compare_session_runs`` scores every completed run of a session with
`workbench.research.evaluation.score` (DER, WER and the rest of its row) and tabulates
them with `compare` into a `ComparisonTable`, one system per run. The reference is
the session's own when it has one (a `CorpusItem`, e.g. the sample call that was
played into it); otherwise the latest refined run stands in for one, so the table
says how far the live result (or another run) is from it -- its words standing in for
the reference text only when it transcribed (else the newest refined run that did).
"""

from __future__ import annotations

import html
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from workbench.engine.formats import format_rttm, format_stm
from workbench.engine.transcript import Transcript
from workbench.research.datasets.items import CorpusItem
from workbench.research.evaluation import COLUMNS as EVALUATION_COLUMNS
from workbench.research.evaluation import ComparisonTable, compare, score

__all__ = ["RunComparison", "compare_session_runs", "run_label", "transcribed",
           "transcript_reference"]

COLUMNS = ("der", "missed", "false_alarm", "confusion", "wer", "hyp_speakers", "ref_speakers",
           "hyp_words")
"""What the dashboard's comparison table shows."""


@dataclass
class RunComparison:
    """The runs of one session side by side (`table`), scored against `against`."""

    table: ComparisonTable
    against: str

    def html(self, columns: Sequence[str] = COLUMNS) -> str:
        """The per-run rows of `COLUMNS`, the best value of each column among the runs
        highlighted (`ComparisonTable.best`), and what they are scored against.  The run
        labels are escaped: they carry the options a client gave the run."""
        shown = [c for c in columns if c in self.table.frame.columns
                 and self.table.frame[c].notna().any()]
        recordings = self.table.recordings
        rows = recordings[shown].droplevel("uri")
        best = self.table.best(shown).loc[recordings.index].to_numpy()
        formats = {c: EVALUATION_COLUMNS[c].format for c in shown}

        def highlight(frame: Any) -> Any:
            return pd.DataFrame(np.where(best, "font-weight: bold; background-color: #c7e9c0;", ""),
                                index=frame.index, columns=frame.columns)

        styled = (rows.style.format(formats, na_rep="–").format_index(escape="html")
                  .apply(highlight, axis=None).to_html())
        return (f"<div class='run-comparison'><div style='color:#555'>scored against "
                f"{html.escape(self.against)}</div>{styled}</div>")

    def _repr_html_(self) -> str:
        return self.html()


def run_label(run: Mapping[str, Any]) -> str:
    """A short name for a run: its kind, its id and the options it was given (of a live
    run, whose config holds every option of its pipeline: its latency, and what it left
    out)."""
    config = run.get("config") or {}
    kind = run.get("kind") or config.get("kind") or "refined"
    if kind == "live" and isinstance(config.get("diarization"), Mapping):
        config = {"latency": config["diarization"].get("latency"),
                  **{k: False for k in ("transcribe", "diarize") if config.get(k) is False}}
    options = ", ".join(f"{k}={v}" for k, v in sorted(config.items())
                        if k not in ("kind", "pipeline") and not isinstance(v, (dict, list)))
    return f"{kind} {str(run['id'])[:8]}" + (f" ({options})" if options else "")


def transcribed(transcript: Transcript, run: Optional[Mapping[str, Any]] = None) -> bool:
    """Whether `transcript` holds the words of a run that transcribed: neither the run's
    options (`run`'s ``config``) nor the transcript's own say ``transcribe`` false, and
    some segment has text (a run that did not transcribe has turns and no words)."""
    said = [(run or {}).get("config") or {}]
    if isinstance(transcript.config, Mapping):
        said.append(transcript.config.get("options") or {})
    if any(isinstance(o, Mapping) and o.get("transcribe", True) is False for o in said):
        return False
    return any(s.text.strip() for s in transcript.segments)


def transcript_reference(transcript: Transcript, audio: Path, folder: Path,
                         uri: str = "session", *, text: Union[Transcript, bool] = True
                         ) -> CorpusItem:
    """A `CorpusItem` whose references are `transcript`'s turns (RTTM) and the words
    (STM) of `text`: True, `transcript`'s own when it transcribed (`transcribed`); a
    `Transcript`, that one's; False, none.  Without words there is no STM, so the WER
    of what is scored against it is undefined (NaN, shown as "–"), not infinite."""
    folder.mkdir(parents=True, exist_ok=True)
    rttm = folder / f"{uri}.rttm"
    rttm.write_text(format_rttm(uri, transcript.turns))
    words = (transcript if text is True and transcribed(transcript) else
             text if isinstance(text, Transcript) else None)
    stm = None
    if words is not None:
        stm = folder / f"{uri}.stm"
        stm.write_text(format_stm(uri, words.segments))
    return CorpusItem(uri=uri, audio=Path(audio), rttm=rttm if transcript.turns else None,
                      stm=stm, info={"reference": "a run of the session"})


_TEXT_FIGURES = ("wer", "wer_errors", "substitutions", "deletions", "insertions", "ref_words",
                 "hyp_words", "cpwer", "cpwer_errors", "cpwer_ref_words")


def compare_session_runs(runs: Sequence[Mapping[str, Any]], transcripts: Mapping[str, Transcript],
                         *, audio: Path, reference: Optional[CorpusItem] = None,
                         work_dir: Optional[Path] = None) -> Optional[RunComparison]:
    """Score the session's completed runs (`transcripts` by run id) in one table.

    With `reference` every run is scored against it.  Without, the latest refined run
    is the reference (and not a row of its own): its turns for DER, and its words for
    WER when it transcribed.  When it did not (run options ``transcribe`` false, or no
    words), the words of the newest refined run that did are the text reference, and
    that run's own row has no WER figures (it would be scored against itself); when no
    refined run transcribed, there is no text reference and WER is NaN ("–"), never the
    infinite WER of an empty reference.  `RunComparison.against` says which runs are
    the references.  None when there is nothing to compare (no run, or only the run that
    would be the reference).
    """
    done = [r for r in runs if r["id"] in transcripts]
    if not done:
        return None
    rows: list[dict[str, Any]] = []
    text_run: Optional[str] = None
    if reference is None:
        refined = [r for r in done if (r.get("kind") or "refined") == "refined"]
        if not refined or len(done) < 2:
            return None
        base = refined[-1]
        spoken = [r for r in refined if transcribed(transcripts[r["id"]], r)]
        words = spoken[-1] if spoken else None
        folder = Path(work_dir or tempfile.mkdtemp(prefix="workbench-compare-"))
        reference = transcript_reference(
            transcripts[base["id"]], audio, folder,
            text=transcripts[words["id"]] if words is not None else False)
        done = [r for r in done if r["id"] != base["id"]]
        against = f"the refined run {str(base['id'])[:8]}"
        if words is None:
            against += " (no words: no refined run transcribed)"
        elif words is not base:
            text_run = words["id"]
            against += (f" (it did not transcribe; words: the refined run "
                        f"{str(text_run)[:8]})")
    else:
        against = f"the reference of {reference.uri}"
    for run in done:
        row = score(reference, transcripts[run["id"]])
        if run["id"] == text_run:  # (its words are the reference of the others)
            row.update(dict.fromkeys(_TEXT_FIGURES, math.nan))
        rows.append({"system": run_label(run), "run": run["id"], **row})
    return RunComparison(compare(rows), against)
