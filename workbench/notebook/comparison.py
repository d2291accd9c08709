"""How the runs of one session compare: live against refined, or one system against another.

``compare_session_runs`` scores every completed run of a session with
`workbench.research.evaluation.score` (DER, WER and the rest of its row) and tabulates
them with `compare` into a `ComparisonTable`, one system per run. The reference is
the session's own when it has one (a `CorpusItem`, e.g. the sample call that was
played into it); otherwise the latest refined run stands in for one, so the table
says how far the live result (or another run) is from it.
"""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from workbench.engine.formats import format_rttm, format_stm
from workbench.engine.transcript import Transcript
from workbench.research.datasets.items import CorpusItem
from workbench.research.evaluation import COLUMNS as EVALUATION_COLUMNS
from workbench.research.evaluation import ComparisonTable, compare, score

__all__ = ["RunComparison", "compare_session_runs", "run_label", "transcript_reference"]

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
    """A short name for a run: its kind, its id and the options it was given."""
    config = run.get("config") or {}
    kind = run.get("kind") or config.get("kind") or "refined"
    options = ", ".join(f"{k}={v}" for k, v in sorted(config.items())
                        if k not in ("kind", "pipeline") and not isinstance(v, (dict, list)))
    return f"{kind} {str(run['id'])[:8]}" + (f" ({options})" if options else "")


def transcript_reference(transcript: Transcript, audio: Path, folder: Path,
                         uri: str = "session") -> CorpusItem:
    """A `CorpusItem` whose references (RTTM turns, STM words) are `transcript`'s."""
    folder.mkdir(parents=True, exist_ok=True)
    rttm, stm = folder / f"{uri}.rttm", folder / f"{uri}.stm"
    rttm.write_text(format_rttm(uri, transcript.turns))
    stm.write_text(format_stm(uri, transcript.segments))
    return CorpusItem(uri=uri, audio=Path(audio), rttm=rttm if transcript.turns else None,
                      stm=stm, info={"reference": "a run of the session"})


def compare_session_runs(runs: Sequence[Mapping[str, Any]], transcripts: Mapping[str, Transcript],
                         *, audio: Path, reference: Optional[CorpusItem] = None,
                         work_dir: Optional[Path] = None) -> Optional[RunComparison]:
    """Score the session's completed runs (`transcripts` by run id) in one table.

    With `reference` every run is scored against it; without, against the latest
    refined run (which then is not a row of its own). None when there is nothing to
    compare (no run, or only the run that would be the reference).
    """
    done = [r for r in runs if r["id"] in transcripts]
    if not done:
        return None
    rows: list[dict[str, Any]] = []
    if reference is None:
        refined = [r for r in done if (r.get("kind") or "refined") == "refined"]
        if not refined or len(done) < 2:
            return None
        base = refined[-1]
        folder = Path(work_dir or tempfile.mkdtemp(prefix="workbench-compare-"))
        reference = transcript_reference(transcripts[base["id"]], audio, folder)
        done = [r for r in done if r["id"] != base["id"]]
        against = f"the refined run {str(base['id'])[:8]}"
    else:
        against = f"the reference of {reference.uri}"
    for run in done:
        row = score(reference, transcripts[run["id"]])
        rows.append({"system": run_label(run), "run": run["id"], **row})
    return RunComparison(compare(rows), against)
