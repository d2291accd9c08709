"""The demo dashboard: record, watch words and speakers appear, then the refined result.

``Dashboard(server)`` puts together, top to bottom:

1. the `Microphone` widget (the browser records and streams to the server with live
   results on);
2. the `LiveView` of that recording (words in speaker colours, a growing timeline);
3. once processing is complete, the refined transcript in a `TranscriptPlayer` (click
   a word to hear it), download links for every audio and transcript format (refined
   and live runs), and a comparison of the session's runs with DER/WER
   (`compare_session_runs`: against the session's reference when it has one, else
   against the refined run);
4. the session list and "process again with …" of `SessionPanel`; picking a session or
   finishing a run shows it in part 3.

Without a microphone (a test, a notebook under nbval) :meth:`Dashboard.play` sends a
file through the same path: the recording protocol with ``live_results``, at the
audio's pace, every server message going to the same handler the microphone feeds.
``notebooks/dashboard.ipynb`` only builds one and displays it; ``make demo`` serves
that notebook with Voilà.
"""

from __future__ import annotations

import concurrent.futures
import html
import os
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union
from urllib.parse import quote

import ipywidgets as w

from workbench.engine.formats import AUDIO_FORMATS, RESULT_FORMATS
from workbench.engine.transcript import Transcript
from workbench.notebook.client import UNDECODABLE_AUDIO, Client, RecordingReport, ServerError
from workbench.notebook.comparison import RunComparison, compare_session_runs, run_label
from workbench.notebook.live_view import LiveView
from workbench.notebook.microphone import Microphone
from workbench.notebook.player import TranscriptPlayer
from workbench.notebook.widgets import SessionPanel
from workbench.research.datasets.items import CorpusItem

__all__ = ["Dashboard"]


def _section(title: str) -> w.HTML:
    return w.HTML(f"<h3 style='margin:.8em 0 .2em'>{html.escape(title)}</h3>")


@dataclass
class _Found:
    """What :meth:`Dashboard.show` fetched of a session, to be written to "Result" at once."""

    session_id: str
    runs: list[dict[str, Any]]
    completed: list[dict[str, Any]]
    transcripts: dict[str, Transcript]  # by run
    shown: Optional[dict[str, Any]]  # the run in the player (None: no transcript yet)
    comparison: Optional[RunComparison]


class Dashboard:
    """Microphone, live view, refined result with player, downloads and comparison, sessions."""

    def __init__(self, server: Union[Client, str, Any], *, browser_url: Optional[str] = None,
                 token: Optional[str] = None, options: Optional[dict[str, Any]] = None,
                 reference: Optional[CorpusItem] = None,
                 work_dir: Union[str, os.PathLike, None] = None) -> None:
        """`server`: a `Client`, a URL or a `LocalServer` (for the kernel's REST calls);
        `browser_url`: the server as the browser reaches it (default: the same URL);
        `options`: run options sent with every recording (e.g. ``num_speakers``);
        `reference`: a `CorpusItem` to score every recording against (e.g. a script read
        aloud; else a session's runs are compared with its refined run)."""
        self._own_client = not isinstance(server, Client)
        self.client = server if isinstance(server, Client) else Client(server, token=token)
        self.token = token or self.client.aio.token
        self.browser_url = (browser_url or self.client.base_url).rstrip("/")
        self.options = dict(options or {})
        self.reference = reference
        self.references: dict[str, CorpusItem] = {}  # by session
        self._next_reference: Optional[CorpusItem] = None
        self._recordings = 0  # recordings started (a result shown late gives way to a newer one)
        # held while "Result" and what it shows change: a recording starting, a result written
        self._writing = threading.RLock()
        self._closed = False
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="workbench-dashboard-"))
        # a folder the dashboard made goes on close() or, at the latest, when the kernel exits
        self._remove_work_dir = (weakref.finalize(self, shutil.rmtree, self.work_dir, True)
                                 if not work_dir else None)
        self.events: list[dict[str, Any]] = []
        self.session_id: Optional[str] = None
        self.comparison: Optional[RunComparison] = None
        self.transcripts: dict[str, Transcript] = {}
        self.last_show: Optional[concurrent.futures.Future[Any]] = None
        self._last_show_of = 0  # the recording `last_show` was submitted under
        self._jobs: set[concurrent.futures.Future[Any]] = set()  # not ended yet
        self._work = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dashboard")

        self.microphone = Microphone(self.browser_url, token=self.token, options=self.options)
        self.microphone.on_event(self.on_event)
        self.recording_state = w.HTML()
        self.recording_state.add_class("dashboard-state")
        self.microphone.observe(self._on_state, names=["state", "session_id", "error"])
        self.live = LiveView()
        self.result_title = w.HTML("<i>no session yet: press Record</i>")
        self.result_title.add_class("dashboard-result-title")
        self.player = TranscriptPlayer()
        self.downloads = w.HTML()
        self.downloads.add_class("dashboard-downloads")
        self.comparison_html = w.HTML()
        self.comparison_html.add_class("dashboard-comparison")
        self.panel = SessionPanel(self.client, show_detail=False)
        self.panel.on_select(self._on_select)
        self.widget = w.VBox([
            _section("Record"), self.microphone, self.recording_state,
            _section("Live"), self.live.widget,
            _section("Result"), self.result_title, self.player, self.downloads,
            self.comparison_html,
            _section("Sessions"), self.panel.sessions_box,
        ])
        self.widget.add_class("workbench-dashboard")
        self._on_state()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def close(self) -> None:
        """Show nothing more, stop the session list's refreshes and the dashboard's thread
        (a result not started is dropped; one under way is not waited for: it ends on its
        own, at once when the dashboard made its client, closed here), and remove the work
        folder the dashboard made (once that result has ended)."""
        with self._writing:
            self._closed = True
        self.panel.close()  # first: a run it waits for no longer reaches the dashboard
        self._work.shutdown(wait=False, cancel_futures=True)
        if self._own_client:  # (a wait on it under way, e.g. for a run, ends now)
            self.client.close()
        remove = self._remove_work_dir
        if remove is not None:
            running = [job for job in list(self._jobs) if not job.done()]
            if running:  # (it may be writing there)
                running[-1].add_done_callback(lambda _: remove())
            else:
                remove()

    def _current(self, recordings: int) -> bool:
        """Whether "Result" is still the `recordings`-th recording's (and shown at all)."""
        return not self._closed and recordings == self._recordings

    # ------------------------------------------------------------------ recording
    def _on_state(self, change: Any = None) -> None:
        """The microphone's traitlets as the kernel sees them (a line under the widget); a
        recording ``detached`` from the server (its connection closed while processing)
        is followed over REST and its result shown, as after ``processing_complete``."""
        mic = self.microphone
        state = change["new"] if change is not None and change["name"] == "state" else None
        sid = mic.session_id or self.session_id
        if state == "detached" and sid:  # (a newer recording's "Result" is left alone)
            self._submit(self._follow_detached, sid, self._recordings)
        elif state == "failed" and sid and mic.session_id and not any(
                e.get("type") in ("recording_stopped", "processing_failed")
                or e.get("code") == UNDECODABLE_AUDIO for e in self.events):
            # the connection went while recording (it still said "recording session …")
            self.result_title.value = (
                f"<span style='color:#b00'>the recording of session {html.escape(sid[:8])} "
                "ended early: what arrived is kept, and can be processed from the list"
                "</span>")
        error = f" · <span style='color:#b00'>{html.escape(mic.error)}</span>" if mic.error else ""
        self.recording_state.value = (
            f"<span class='dashboard-state-line' data-state='{html.escape(mic.state)}' "
            f"data-session='{html.escape(mic.session_id)}' style='color:#666;font-size:85%'>"
            f"kernel: {html.escape(mic.state)}"
            + (f", session {html.escape(mic.session_id[:8])}" if mic.session_id else "")
            + f"{error}</span>")

    def on_event(self, message: dict[str, Any]) -> None:
        """Handle one server message of the recording (from the microphone or `play`)."""
        self.events.append(message)
        kind = message.get("type")
        if kind == "recording_started":
            with self._writing:  # (a result being written ends first; later ones give way)
                self._recordings += 1
                self.events = [message]
                self.session_id = message.get("session_id")
                reference, self._next_reference = self._next_reference or self.reference, None
                if reference is not None and self.session_id:
                    self.references[self.session_id] = reference
                self.result_title.value = ("<i>recording session "
                                           f"{html.escape(str(self.session_id)[:8])}…</i>")
                # what "Result" showed is another session's: not under this one's title
                self.transcripts, self.comparison = {}, None
                self.player.show(None, "")
                self.downloads.value = self.comparison_html.value = ""
        self.live.update(message)
        if kind == "recording_stopped":
            self.result_title.value = "<i>recorded; the refined run is processing…</i>"
        elif kind == "processing_complete":
            sid = message.get("session_id") or self.session_id
            if sid:
                self._submit(self._show_and_list, sid, self._recordings)
        elif kind == "processing_failed":
            self.result_title.value = (f"<span style='color:#b00'>processing failed: "
                                       f"{html.escape(str(message.get('message')))}</span>")
        elif kind == "error" and message.get("code") == UNDECODABLE_AUDIO:
            # no run follows: the received bytes are kept, nothing is processing
            self.result_title.value = (f"<span style='color:#b00'>the recording could not be "
                                       f"decoded: {html.escape(str(message.get('message')))}</span>")

    def play(self, audio: Union[str, os.PathLike], *, speed: float = 1.0,
             reference: Optional[CorpusItem] = None, timeout: float = 900.0) -> RecordingReport:
        """Send a file as if it were the microphone: live, at `speed` times its pace, with
        live results, through :meth:`on_event`; returns once its result is shown (at once
        when there is none to show: its processing failed).
        `reference` (e.g. the `CorpusItem` the file comes from) scores this recording."""
        mine: list[int] = []  # this recording's number

        def on_event(message: dict[str, Any]) -> None:
            self.on_event(message)
            if message.get("type") == "recording_started":
                mine.append(self._recordings)

        self._next_reference = reference
        try:
            report = self.client.record(Path(audio), realtime=True, speed=speed,
                                        options=self.options, live_results=True,
                                        on_event=on_event)
        finally:  # a start refused or failed: not the next (microphone) recording's reference
            self._next_reference = None
        with self._writing:
            shown, of = self.last_show, self._last_show_of
        if shown is not None and mine and of == mine[-1]:  # (none: e.g. processing failed)
            shown.result(timeout=timeout)
        return report

    # ------------------------------------------------------------------ results
    def _submit(self, show: Callable[[str, int], Any], session_id: str, recordings: int) -> None:
        """Run ``show(session_id, recordings)`` on the dashboard's thread (not once closed);
        what it raises is shown too (while "Result" is the `recordings`-th recording's)."""
        def job() -> Any:
            try:
                return show(session_id, recordings)
            except Exception as exc:
                with self._writing:
                    if self._current(recordings):
                        self.result_title.value = (f"<span style='color:#b00'>session "
                                                   f"{html.escape(session_id[:8])}: "
                                                   f"{html.escape(str(exc))}</span>")
                raise

        with self._writing:
            if self._closed:
                return
            future = self._work.submit(job)
            self.last_show, self._last_show_of = future, recordings
        self._jobs.add(future)
        future.add_done_callback(self._jobs.discard)

    def _follow_detached(self, session_id: str, recordings: int) -> Optional[RunComparison]:
        """Wait over REST until the session's runs have ended (its refined run queued once the
        stop is saved), then show the result, or why processing failed: not once a
        recording after the `recordings`-th has started ("Result" is that one's)."""
        deadline = time.monotonic() + self.client.aio.timeout
        while True:
            session = self.client.get_session(session_id)
            pending = [r for r in session["runs"] if r["status"] in ("queued", "running")]
            for run in pending:
                self.client.wait_for_run(session_id, run["id"])
            if pending:
                deadline = time.monotonic() + self.client.aio.timeout
            elif session["status"] not in ("recording", "processing"):
                break
            elif time.monotonic() > deadline:
                raise TimeoutError(f"session {session_id} stayed {session['status']} "
                                   f"for {self.client.aio.timeout:g} s")
            else:
                time.sleep(0.2)
        refined = [r for r in session["runs"] if (r.get("kind") or "refined") == "refined"]
        if refined and refined[-1]["status"] == "failed":
            with self._writing:
                if self._current(recordings):
                    self.result_title.value = (f"<span style='color:#b00'>processing failed: "
                                               f"{html.escape(str(refined[-1].get('error')))}</span>")
            self.panel.refresh()
            return None
        return self._show_and_list(session_id, recordings)

    def _show_and_list(self, session_id: str, recordings: int) -> Optional[RunComparison]:
        """Show the result at once; once the session's other runs (the live run saving
        its result) have ended, show it again with them in the comparison. Not once a
        recording after the `recordings`-th has started: "Result" is that one's then."""
        comparison = self.show(session_id, recordings) if self._current(recordings) else None
        if self._current(recordings):
            pending = [r for r in self.client.runs(session_id)
                       if r["status"] in ("queued", "running")]
            for run in pending:
                self.client.wait_for_run(session_id, run["id"])
            if pending:
                comparison = self.show(session_id, recordings)
        self.panel.refresh()
        return comparison

    def _on_select(self, session_id: str) -> None:
        # a session picked in the list, or one whose "process again" run has ended
        self._submit(self.show, session_id, self._recordings)

    def url(self, session_id: str, what: str, format: str, run: Optional[str] = None) -> str:
        """A link the browser can follow to the session's audio or transcript."""
        query = f"format={format}" + (f"&run={quote(run)}" if run else "")
        if self.token:
            query += f"&token={quote(self.token, safe='')}"
        return f"{self.browser_url}/api/sessions/{quote(session_id)}/{what}?{query}"

    def show(self, session_id: str, recordings: Optional[int] = None) -> Optional[RunComparison]:
        """Show a session's refined result: player, downloads, comparison of its runs
        (fetched first, then written at once; returns the comparison). Nothing is shown
        once a recording after the `recordings`-th (default: the recordings started so
        far) has started meanwhile: "Result" is that one's then."""
        recordings = self._recordings if recordings is None else recordings
        found = self._fetch(session_id)
        with self._writing:
            if not self._current(recordings):
                return None
            self._write(found)
        return found.comparison

    def _fetch(self, session_id: str) -> _Found:
        """A session's runs, their transcripts and their comparison, from the server."""
        runs = self.client.runs(session_id)
        completed = [r for r in runs if r["status"] == "completed"]
        transcripts: dict[str, Transcript] = {}
        for run in completed:
            try:
                transcripts[run["id"]] = self.client.transcript(session_id, run=run["id"])
            except ServerError:
                continue  # a run without a transcript (renditions only)
        refined = [r for r in completed if r["id"] in transcripts
                   and (r.get("kind") or "refined") == "refined"]
        shown = refined[-1] if refined else next(
            (r for r in reversed(completed) if r["id"] in transcripts), None)
        comparison = (self._compare(session_id, completed, transcripts)
                      if shown is not None else None)
        return _Found(session_id, runs, completed, transcripts, shown, comparison)

    def _write(self, found: _Found) -> None:
        """Put what `_fetch` found in "Result" (and `session_id`, `transcripts`, `comparison`)."""
        session_id = found.session_id
        self.session_id, self.transcripts = session_id, found.transcripts
        self.comparison = found.comparison
        self.downloads.value = self._downloads_html(session_id, found.completed, found.transcripts)
        if found.shown is None:
            self.result_title.value = f"<i>session {session_id[:8]}: no transcript yet</i>"
            self.player.show(None, self.url(session_id, "audio", "wav"))
            self.comparison_html.value = ""
            return
        shown = found.shown
        transcript = found.transcripts[shown["id"]]
        self.result_title.value = (
            f"<div class='dashboard-result' data-session='{html.escape(session_id)}' "
            f"data-run='{html.escape(shown['id'])}' data-speakers='{len(transcript.speakers)}'>"
            f"<b>{html.escape(run_label(shown))}</b> of session <code>{html.escape(session_id[:8])}"
            f"</code>: {len(transcript.speakers)} speaker(s), {len(transcript.words)} words, "
            f"{transcript.duration:.1f} s</div>")
        self.player.show(transcript, self.url(session_id, "audio", "wav"))
        waiting = [run_label(r) for r in found.runs if r["status"] in ("queued", "running")]
        note = (f"<div class='dashboard-waiting' style='color:#888'>still running: "
                f"{html.escape(', '.join(waiting))}</div>" if waiting else "")
        self.comparison_html.value = (found.comparison.html() if found.comparison else "") + note

    def _compare(self, session_id: str, runs: list[dict[str, Any]],
                 transcripts: dict[str, Transcript]) -> Optional[RunComparison]:
        reference = self.references.get(session_id)
        if reference is None and len(transcripts) < 2:
            return None
        audio = self.client.download(session_id, "audio", "wav",
                                     dest=self.work_dir / session_id / "audio.wav")
        assert isinstance(audio, Path)
        return compare_session_runs(runs, transcripts, audio=audio, reference=reference,
                                    work_dir=self.work_dir / session_id)

    def _downloads_html(self, session_id: str, runs: list[dict[str, Any]],
                        transcripts: dict[str, Transcript]) -> str:
        audio = " ".join(f"<a href='{html.escape(self.url(session_id, 'audio', f))}' download>{f}</a>"
                         for f in AUDIO_FORMATS)
        lines = [f"<div>audio: {audio}</div>"]
        for run in runs:
            if run["id"] not in transcripts:
                continue
            links = " ".join(
                f"<a class='dashboard-download' href='{html.escape(self.url(session_id, 'transcript', f, run['id']))}'"
                f" download>{f}</a>" for f in RESULT_FORMATS)
            lines.append(f"<div>{html.escape(run_label(run))}: {links}</div>")
        return "".join(lines)
