"""Inspecting a recorded session: audio (librosa), transcript tables, diarization, plots, statistics.

``load_session`` gathers everything about one session — from a running server
(by REST) or straight from a data directory — into a :class:`SessionData`::

    data = load_session(session_id, server="http://127.0.0.1:8765")
    data.segments          # pandas DataFrame, one row per speaker segment
    data.words             # pandas DataFrame, one row per word
    data.annotation        # pyannote.core.Annotation of the diarization
    data.speaker_stats()   # talk time, turns, overlap, words per minute
    data.plot()            # waveform + spectrogram + speaker timeline + words
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from workbench.engine.audio import SAMPLE_RATE
from workbench.engine.formats import load, load_served, to_annotation
from workbench.engine.transcript import Transcript, Turn, served_runs

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure
    from pyannote.core import Annotation

    from workbench.notebook.client import Client

SPEAKER_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
                   "#8c564b", "#e377c2"]


def speaker_colours(speakers: Sequence[str]) -> dict[str, str]:
    """A stable colour per speaker label (in order of first appearance)."""
    return {s: SPEAKER_COLOURS[i % len(SPEAKER_COLOURS)] for i, s in enumerate(speakers)}


def segments_frame(t: Transcript) -> pd.DataFrame:
    """One row per segment: start, end, duration, speaker, text, words."""
    return pd.DataFrame(
        [{"start": s.start, "end": s.end, "duration": s.end - s.start, "speaker": s.speaker,
          "text": s.text, "words": len(s.words)} for s in t.segments],
        columns=["start", "end", "duration", "speaker", "text", "words"],
    )


def words_frame(t: Transcript) -> pd.DataFrame:
    """One row per word: start, end, word, probability, speaker."""
    return pd.DataFrame(
        [{"start": w.start, "end": w.end, "word": w.word.strip(), "probability": w.probability,
          "speaker": w.speaker} for w in t.words],
        columns=["start", "end", "word", "probability", "speaker"],
    )


def speaker_stats(t: Transcript) -> pd.DataFrame:
    """Per speaker: talk time (s), share of talk, turns, overlap (s), words, words per minute."""
    ann = to_annotation(t.turns, uri="audio")
    rows = []
    words = words_frame(t)
    overlap_tl = ann.get_overlap()
    total_talk = 0.0
    for speaker in t.speakers:
        timeline = ann.label_timeline(speaker, copy=True).support()
        talk = timeline.duration()
        total_talk += talk
        overlap = timeline.crop(overlap_tl, mode="intersection").support().duration() \
            if len(overlap_tl) else 0.0
        n_words = int((words["speaker"] == speaker).sum()) if len(words) else 0
        rows.append({"speaker": speaker, "talk_time": talk, "turns": len(timeline),
                     "overlap": overlap, "words": n_words,
                     "words_per_minute": (60 * n_words / talk) if talk > 0 else 0.0})
    frame = pd.DataFrame(rows, columns=["speaker", "talk_time", "turns", "overlap", "words",
                                        "words_per_minute"])
    frame.insert(2, "share", frame["talk_time"] / total_talk if total_talk else 0.0)
    return frame.set_index("speaker")


@dataclass
class SessionData:
    """One session's audio (loaded by librosa), runs and transcript, ready for analysis."""

    session_id: str
    audio: np.ndarray
    sample_rate: int
    transcript: Optional[Transcript]
    session: dict[str, Any] = field(default_factory=dict)
    audio_path: Optional[Path] = None

    @property
    def runs(self) -> list[dict[str, Any]]:
        return list(self.session.get("runs", []))

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate

    def _need(self) -> Transcript:
        if self.transcript is None:
            raise ValueError(f"session {self.session_id} has no completed transcript yet")
        return self.transcript

    @property
    def segments(self) -> pd.DataFrame:
        return segments_frame(self._need())

    @property
    def words(self) -> pd.DataFrame:
        return words_frame(self._need())

    @property
    def annotation(self) -> "Annotation":
        return to_annotation(self._need().turns, uri=self.session_id)

    def speaker_stats(self) -> pd.DataFrame:
        return speaker_stats(self._need())

    def plot(self, start: float = 0.0, end: Optional[float] = None, **kwargs: Any) -> "Figure":
        return plot_session(self, start=start, end=end, **kwargs)

    def _repr_html_(self) -> str:
        head = (f"<b>Session {self.session_id}</b> — {self.duration:.1f} s at "
                f"{self.sample_rate} Hz, status {self.session.get('status', '?')}, "
                f"{len(self.runs)} run(s)")
        if self.transcript is None:
            return head + "<br><i>no transcript yet</i>"
        stats = self.speaker_stats().round(2).to_html()
        return head + "<br>" + stats + self.transcript._repr_html_()


def load_session(session_id: str, *, server: Union[str, "Client", None] = None,
                 data_dir: Union[str, os.PathLike, None] = None, run: Optional[str] = None,
                 cache_dir: Union[str, os.PathLike, None] = None) -> SessionData:
    """Load a session's audio with librosa plus its latest (or named) completed transcript.

    Give ``server`` (a URL or :class:`~workbench.notebook.client.Client`) to load over
    REST (files are cached under ``cache_dir``), or ``data_dir`` to read the
    server's data directory directly (`_local_session`: the latest run as the server
    picks it, from its store when that can be read). Either way a ``run`` the session
    does not have is a KeyError (not a session "with no completed transcript yet").
    """
    import librosa

    transcript: Optional[Transcript] = None
    if server is not None:
        from workbench.notebook.client import Client, ServerError

        client = server if isinstance(server, Client) else Client(server)
        try:
            session = client.get_session(session_id)
            if run is not None and run not in [r.get("id") for r in session.get("runs", [])]:
                raise KeyError(f"no run {run} in session {session_id}")
            cache = Path(cache_dir or Path("data") / "cache" / "sessions") / session_id
            wav = client.download(session_id, "audio", "wav", dest=cache / "audio.wav")
            assert isinstance(wav, Path)
            try:
                transcript = client.transcript(session_id, run=run)
            except ServerError as exc:
                if exc.status not in (404, 409):
                    raise
        finally:
            if client is not server:  # made here for a URL: its thread and socket go
                client.close()
    elif data_dir is not None:
        transcript, session = _local_session(Path(data_dir), session_id, run)
        wav = Path(data_dir) / "sessions" / session_id / "audio.wav"
    else:
        raise ValueError("give server= or data_dir=")
    audio, sr = librosa.load(str(wav), sr=SAMPLE_RATE, mono=True)
    return SessionData(session_id, audio, int(sr), transcript, session, Path(wav))


def _store_runs(data_dir: Path, session_id: str) -> Optional[tuple[str, list[dict[str, Any]]]]:
    """(session status, its runs in creation order: id, status, kind) from the server's
    store ``data_dir/workbench.sqlite3``, opened read-only; None when it cannot be read
    (no store, another layout, locked or damaged) or does not know the session."""
    import sqlite3

    path = data_dir / "workbench.sqlite3"
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
        try:
            row = db.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            runs = db.execute("SELECT id, status, kind FROM runs WHERE session_id = ? "
                              "ORDER BY seq", (session_id,)).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    if row is None:
        return None
    return str(row[0]), [{"id": r[0], "status": r[1], "kind": r[2]} for r in runs]


def _local_session(data_dir: Path, session_id: str, run: Optional[str]
                   ) -> tuple[Optional[Transcript], dict[str, Any]]:
    """A session's transcript and runs read from the server's data directory.

    With the server's store readable, runs are in their creation order and the latest
    is picked as the server does: the newest completed refined run with a
    ``transcript.json``, else every completed live run's, one after another.  Without it (the files
    alone: a copied ``sessions/`` folder), runs are ordered by when their
    ``transcript.json`` was written and the kind a transcript names (``config.kind``)
    tells live from refined -- which can differ from the server's choice when a file was
    rewritten later, and a run is known by its folder.  A `run` the session does not
    have is a KeyError; one not completed or without a transcript gives None."""
    directory = data_dir / "sessions" / session_id
    if not (directory / "audio.wav").exists():
        raise KeyError(f"no recorded audio for session {session_id} in {data_dir}")
    runs_dir = directory / "runs"
    stored = _store_runs(data_dir, session_id)
    if stored is not None:
        status, runs = stored
        latest = served_runs([r for r in runs if r["status"] == "completed"
                              and (runs_dir / r["id"] / "transcript.json").is_file()],
                             lambda r: r["kind"])
    else:
        status = "on disk"
        outputs = sorted(runs_dir.glob("*/transcript.json"), key=lambda p: p.stat().st_mtime)
        runs = [{"id": p.parent.name, "status": "completed"} for p in outputs]
        kinds = {p.parent.name: (json.loads(p.read_text()).get("config") or {}).get("kind")
                 for p in outputs}
        # as the server serves it: the newest refined run, else every live one
        latest = served_runs(runs, lambda r: "live" if kinds[r["id"]] == "live" else "refined")
    session = {"id": session_id, "status": status, "runs": runs}
    if len(latest) > 1 and run is None:  # recorded in parts, live only: every live run's
        # transcript in order, as the server serves it
        return load_served(runs_dir, [r["id"] for r in latest]), session
    if run is not None:
        named = next((r for r in runs if r["id"] == run), None)
        if named is None and (stored is not None or not (runs_dir / run).is_dir()):
            raise KeyError(f"no run {run} in session {session_id}")
        latest = [] if named is not None and named["status"] != "completed" else [{"id": run}]
    path = runs_dir / latest[0]["id"] / "transcript.json" if latest else None
    if path is None or not path.is_file():
        return None, session
    return load(path), session


def from_transcript(audio_path: Union[str, os.PathLike], transcript: Transcript,
                    session_id: Optional[str] = None) -> SessionData:
    """A :class:`SessionData` for an audio file and a transcript made without the server."""
    import librosa

    audio, sr = librosa.load(str(audio_path), sr=SAMPLE_RATE, mono=True)
    return SessionData(session_id or Path(audio_path).stem, audio, int(sr), transcript,
                       {"status": "offline", "runs": []}, Path(audio_path))


def notebook_data_dir(name: str, path: Union[str, os.PathLike, None] = None) -> Path:
    """The folder a notebook writes its data to (server data, corpora, caches, results).

    ``path`` when given; else ``$WORKBENCH_NOTEBOOK_DATA/<name>`` when that variable is
    set (the test suite sets it); else a new temporary directory.  Never the
    repository's ``data/`` unless asked for.  The folder exists on return.
    """
    if path is not None:
        folder = Path(path)
    elif os.environ.get("WORKBENCH_NOTEBOOK_DATA"):
        folder = Path(os.environ["WORKBENCH_NOTEBOOK_DATA"]) / name
    else:
        return Path(tempfile.mkdtemp(prefix=f"workbench-{name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- plots


def plot_timeline(ax: Any, turns: Sequence[Turn], speakers: Sequence[str],
                  start: float = 0.0, end: Optional[float] = None) -> None:
    """Draw diarization turns as one coloured lane per speaker."""
    colours = speaker_colours(speakers)
    for lane, speaker in enumerate(speakers):
        spans = [(t.start, t.end - t.start) for t in turns if t.speaker == speaker]
        ax.broken_barh(spans, (lane - 0.4, 0.8), color=colours[speaker], alpha=0.85)
    ax.set_yticks(range(len(speakers)), labels=list(speakers))
    ax.set_ylim(-0.6, len(speakers) - 0.4)
    ax.set_xlim(start, end if end is not None else max((t.end for t in turns), default=1.0))
    ax.set_xlabel("time (s)")


def plot_session(data: SessionData, start: float = 0.0, end: Optional[float] = None,
                 show_words: bool = True, figsize: tuple[float, float] = (14, 7)) -> "Figure":
    """Waveform and spectrogram (librosa.display) aligned with the speaker timeline and words."""
    import librosa
    import librosa.display
    import matplotlib.pyplot as plt

    end = data.duration if end is None else min(end, data.duration)
    a, b = int(start * data.sample_rate), int(end * data.sample_rate)
    clip = data.audio[a:b]
    fig, axes = plt.subplots(3, 1, figsize=figsize, sharex=True,
                             gridspec_kw={"height_ratios": [1, 1.4, 0.9]})
    librosa.display.waveshow(clip, sr=data.sample_rate, ax=axes[0], offset=start, color="#555")
    axes[0].set_ylabel("amplitude")
    hop = 160
    spec = librosa.amplitude_to_db(np.abs(librosa.stft(clip, n_fft=512, hop_length=hop)),
                                   ref=np.max)
    # frame times from where the clip starts (else specshow draws from t=0)
    frames = a / data.sample_rate + np.arange(spec.shape[1]) * hop / data.sample_rate
    librosa.display.specshow(spec, sr=data.sample_rate, hop_length=hop, x_axis="time",
                             y_axis="hz", ax=axes[1], x_coords=frames, cmap="magma")
    axes[1].set_ylim(0, 8000)
    if data.transcript is not None:
        t = data.transcript
        turns = [x for x in t.turns if x.end > start and x.start < end]
        plot_timeline(axes[2], turns, t.speakers, start, end)
        if show_words:
            colours = speaker_colours(t.speakers)
            lanes = {s: i for i, s in enumerate(t.speakers)}
            for i, w in enumerate(x for x in t.words if start <= x.start < end):
                lane = lanes.get(w.speaker, 0) if w.speaker else -0.5
                axes[2].text(w.start, lane + (0.25 if i % 2 else -0.25), w.word.strip(),
                             fontsize=7, color="black" if w.speaker else "#888",
                             bbox={"facecolor": colours.get(w.speaker or "", "#eee"),
                                   "alpha": 0.25, "pad": 0.5, "linewidth": 0})
    axes[2].set_xlim(start, end)
    axes[0].set_title(f"{data.session_id}: {start:.1f}–{end:.1f} s")
    fig.tight_layout()
    return fig
