"""ipywidgets panels: control and inspect sessions of a running server from a notebook.

``SessionPanel(client)`` shows a live table of sessions; streams a WAV file as a
new live session (real time or as fast as possible); stops it; processes a
session again with other settings (ASR model, speaker count, clustering
threshold) with a progress bar fed by the server's events; and shows the
selected session's audio player, speaker-coloured transcript and timeline.
Every button has a method of the same name, so the panel's logic can be driven
(and tested) without a browser. What a button or a pick asks of the server runs on the
panel's own threads, not the notebook's (a slow server does not hold up the kernel).
"""

from __future__ import annotations

import concurrent.futures
import html
import io
import threading
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import ipywidgets as w

from workbench.engine.config import MAX_SPEAKERS, ConfigError, RunConfig
from workbench.notebook.analysis import speaker_colours
from workbench.notebook.client import Client, ServerError
from workbench.engine.transcript import Transcript

ASR_MODELS = ["tiny.en", "base"]

T = TypeVar("T")


def _fmt_time(iso: Optional[str]) -> str:
    return (iso or "")[:19].replace("T", " ")


def sessions_table_html(sessions: list[dict[str, Any]], selected: Optional[str] = None) -> str:
    """The session list as an HTML table (newest first)."""
    rows = []
    for s in sessions:
        style = " style='background:#eef5ff'" if s["id"] == selected else ""
        runs = s.get("runs", [])
        stage = next((f"{r['stage']} {100 * r['progress']:.0f}%" for r in reversed(runs)
                      if r["status"] == "running"), "")
        rows.append(
            f"<tr{style}><td><code>{s['id'][:8]}</code></td><td>{html.escape(s['status'])}</td>"
            f"<td>{s['duration_seconds']:.1f}</td><td>{s.get('speakers') or ''}</td>"
            f"<td>{len(runs)}</td><td>{html.escape(stage)}</td>"
            f"<td>{_fmt_time(s['created_at'])}</td></tr>")
    return ("<table style='border-collapse:collapse'><tr><th>session</th><th>status</th>"
            "<th>duration (s)</th><th>speakers</th><th>runs</th><th>running</th><th>created</th>"
            "</tr>" + "".join(rows) + "</table>")


def transcript_html(t: Transcript) -> str:
    """Speaker-coloured transcript turns with timestamps."""
    colours = speaker_colours(t.speakers)
    lines = []
    for s in t.segments:
        c = colours.get(s.speaker or "", "#666")
        lines.append(f"<div style='margin:2px 0'><span style='color:#888'>{s.start:7.2f}s</span> "
                     f"<b style='color:{c}'>{html.escape(str(s.speaker))}</b> "
                     f"{html.escape(s.text)}</div>")
    return "".join(lines) or "<i>(no words)</i>"


class SessionPanel:
    """A live session table plus stream / stop / process-again / inspect controls."""

    def __init__(self, client: Union[Client, str, Any], *,
                 audio_dir: Union[str, Path, None] = None, show_detail: bool = True) -> None:
        """`show_detail=False` leaves the selected session's display to whoever listens
        with :meth:`on_select` (the dashboard shows it its own way)."""
        self._own_client = not isinstance(client, Client)
        self.client = client if isinstance(client, Client) else Client(client)
        self.show_detail = show_detail
        self._on_select: list[Any] = []
        self.sessions: list[dict[str, Any]] = []
        self.selected: Optional[str] = None
        self.recording: Optional[str] = None
        self.last_action: Optional[concurrent.futures.Future[Any]] = None
        # the selected session's detail (player, transcript, timeline) being fetched
        self.last_detail: Optional[concurrent.futures.Future[Any]] = None
        self.events: list[dict[str, Any]] = []
        # one stop per stream asked for, oldest first (Stop stops the oldest not stopped)
        self._stops: list[threading.Event] = []
        self._auto: Optional[threading.Timer] = None
        self._auto_generation = 0  # bumped by stop_auto_refresh: a tick under way stops
        self._lock = threading.Lock()
        self._closed = False
        # set while this thread's refresh changes the picker's options: no selection
        # follows (per thread: a refresh on another thread ending does not clear it)
        self._refreshing = threading.local()
        # Long actions run here, off the notebook's thread and off the client's loop.
        self._actions = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="panel")
        # Short requests (the list, a session's detail): not behind a stream or a run
        self._asks = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="panel-ask")

        files = sorted(str(p) for p in Path(audio_dir).glob("*.wav")) if audio_dir else []
        self.table = w.HTML()
        self.session_picker = w.Dropdown(description="Session", options=[], layout={"width": "420px"})
        self.file_picker = w.Combobox(description="WAV file", options=files,
                                      value=files[0] if files else "", layout={"width": "420px"})
        self.realtime = w.ToggleButtons(options=[("real time", True), ("fast", False)],
                                        value=False, description="Pace")
        self.stream_button = w.Button(description="Stream as new session", icon="microphone",
                                      button_style="primary")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger")
        self.asr_model = w.Dropdown(options=ASR_MODELS, value="tiny.en", description="ASR model")
        # (the bound of RunConfig's num_speakers: a larger count is no configuration)
        self.num_speakers = w.BoundedIntText(value=0, min=0, max=MAX_SPEAKERS,
                                             description="Speakers", tooltip="0 = automatic")
        # DiarizationConfig.clustering_threshold's default (not imported: it pulls in torch)
        self.threshold = w.FloatSlider(value=0.3, min=0.05, max=1.0, step=0.05,
                                       description="Threshold", readout_format=".2f",
                                       tooltip="least cosine distance between two speakers")
        self.process_button = w.Button(description="Process again", icon="refresh")
        self.refresh_button = w.Button(description="Refresh", icon="sync")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="Progress")
        self.status = w.HTML()
        self.detail = w.VBox()

        self.stream_button.on_click(lambda _: self.stream())
        self.stop_button.on_click(lambda _: self.stop())
        self.process_button.on_click(lambda _: self.process_again())
        self.refresh_button.on_click(lambda _: self._later(self.refresh))
        self.session_picker.observe(self._on_pick, names="value")
        # the session list and "process again with ...", without streaming (the dashboard's part)
        self.sessions_box = w.VBox([
            w.HBox([self.refresh_button, self.status]),
            self.table,
            w.HBox([self.session_picker]),
            w.HBox([self.asr_model, self.num_speakers, self.threshold, self.process_button]),
            self.progress,
        ])
        self.widget = w.VBox([
            w.HBox([self.refresh_button, self.status]),
            self.table,
            w.HBox([self.file_picker, self.realtime]),
            w.HBox([self.stream_button, self.stop_button]),
            w.HBox([self.session_picker]),
            w.HBox([self.asr_model, self.num_speakers, self.threshold, self.process_button]),
            self.progress,
            self.detail,
        ])
        self.refresh()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> list[dict[str, Any]]:
        """Reload the session list (table and picker), on this thread (the Refresh button
        does it on the panel's)."""
        if self._closed:  # (a refresh under way when the panel closed its client)
            return self.sessions
        unreachable = "cannot reach the server: "
        try:
            self.sessions = self.client.list_sessions()
        except (ServerError, OSError) as exc:
            self._say(f"{unreachable}{exc}", error=True)
            return self.sessions
        except (RuntimeError, concurrent.futures.CancelledError) as exc:  # (ServerError is
            if self._closed:  # a RuntimeError: taken above) the client closed meanwhile
                return self.sessions
            self._say(f"cannot refresh: {str(exc) or type(exc).__name__}", error=True)
            raise
        if html.escape(unreachable) in self.status.value:  # (it stayed once the server was back)
            self._say("")
        self.table.value = sessions_table_html(self.sessions, self.selected)
        options = [(f"{s['id'][:8]} · {s['status']} · {s['duration_seconds']:.1f}s", s["id"])
                   for s in self.sessions]
        current = self.session_picker.value
        # (new options move the picker's value to the first, the newest session, and
        # back: each move selected, drew and downloaded a session, and the dashboard
        # ended on the old one instead of the recording just made)
        was, self._refreshing.on = getattr(self._refreshing, "on", False), True
        try:
            self.session_picker.options = options
            ids = [o[1] for o in options]
            # (the selection, not the value read above: a pick meanwhile, e.g. by a
            # stream's end on another thread, is kept)
            keep = self.selected if self.selected in ids else current
            if keep in ids:
                self.session_picker.value = keep
        finally:
            self._refreshing.on = was  # (a refresh from an observer of this one: still on)
        return self.sessions

    def auto_refresh(self, every: float = 2.0) -> None:
        """Refresh the table every ``every`` seconds until :meth:`stop_auto_refresh`."""
        self.stop_auto_refresh()
        generation = self._auto_generation

        def tick() -> None:
            if generation != self._auto_generation:
                return
            self.refresh()
            with self._lock:  # (stopped during the refresh: no next one)
                if generation == self._auto_generation:
                    self._auto = threading.Timer(every, tick)
                    self._auto.daemon = True
                    self._auto.start()
        tick()

    def stop_auto_refresh(self) -> None:
        with self._lock:
            self._auto_generation += 1
        if self._auto is not None:
            self._auto.cancel()
            self._auto = None

    def close(self) -> None:
        """Stop the refreshes and the panel's threads (an action not started is dropped; one
        under way, e.g. waiting for a run, ends on its own without holding this up) and
        close the client when the panel made it from a URL."""
        self._closed = True
        self.stop_auto_refresh()
        self._actions.shutdown(wait=False, cancel_futures=True)
        self._asks.shutdown(wait=False, cancel_futures=True)
        if self._own_client:
            self.client.close()

    def _later(self, job: Callable[..., T], *args: Any,
               long: bool = False) -> Optional["concurrent.futures.Future[T]"]:
        """``job(*args)`` on a thread of the panel's (`long`: the one for streams and runs;
        else the one for short requests, which never wait behind them); None once the
        panel is closed."""
        try:
            return (self._actions if long else self._asks).submit(job, *args)
        except RuntimeError:  # (shut down)
            if self._closed:
                return None
            raise

    def _action(self, job: Callable[[], T]) -> "concurrent.futures.Future[T]":
        """A button's long action on the panel's thread, as :attr:`last_action`."""
        future = self._later(job, long=True)
        if future is None:
            raise RuntimeError("this panel is closed")
        self.last_action = future
        return future

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00" if error else "#333"
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    # ------------------------------------------------------------------ actions
    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        kind = event.get("type")
        if kind == "recording_started":
            self.recording = event["session_id"]
            self._say(f"recording {event['session_id'][:8]}…")
        elif kind == "progress":
            self._say(f"recording: {event['chunks_received']} chunks, "
                      f"{event['total_size_mb']} MB")
        elif kind == "recording_stopped":
            self._say(f"recorded {event['duration_seconds']:.1f} s; processing…")
        elif kind == "processing_progress":
            self.progress.value = float(event.get("overall", event.get("progress", 0.0)))
            self.progress.description = str(event.get("stage", ""))[:12]
        elif kind == "processing_complete":
            self.progress.value = 1.0
            self.progress.description = "done"
            self._say(f"done: {event.get('speakers')} speaker(s), "
                      f"{event.get('word_count')} words")
        elif kind in ("processing_failed", "error"):
            self._say(event.get("message", "failed"), error=True)

    def stream(self, path: Optional[Union[str, Path]] = None, realtime: Optional[bool] = None,
               speed: float = 1.0, options: Optional[dict[str, Any]] = None
               ) -> "concurrent.futures.Future[Any]":
        """Stream a WAV file as a new live session (returns a future of the RecordingReport);
        in real time, ``speed`` times the audio's own pace.  The run options sent are the
        panel's (ASR model, speaker count, clustering threshold) with `options` (any of
        `FLAT_OPTIONS`, e.g. ``{"num_speakers": 2, "language": "en"}``) over them; they are
        checked first (`RunConfig.from_dict`): a bad one is a `ConfigError` naming it,
        and nothing is streamed."""
        source = Path(path or self.file_picker.value)
        if not source.exists():
            self._say(f"no such file: {source}", error=True)
            raise FileNotFoundError(source)
        options = {**self._options(), **(options or {})}
        try:
            RunConfig.from_dict(options)  # (a misspelt name too: the server ignored it)
        except ConfigError as exc:
            self._say(f"not streamed: {exc}", error=True)
            raise
        self.progress.value = 0.0
        pace = self.realtime.value if realtime is None else realtime

        # its own stop (one shared by all stopped a stream queued behind the one Stop was
        # meant for, at its first chunk)
        stopped = threading.Event()
        self._stops.append(stopped)

        def job() -> Any:
            try:
                rec = self.client.record(source, realtime=pace, speed=speed, options=options,
                                         on_event=self._on_event, stop_event=stopped)
            except Exception as exc:
                self._say(f"recording failed: {exc}", error=True)
                raise
            finally:
                self.recording = None
                self._stops.remove(stopped)
            self.refresh()
            self.select(rec.session_id)
            return rec

        try:
            return self._action(job)
        except RuntimeError:  # (closed)
            self._stops.remove(stopped)
            raise

    def stop(self) -> None:
        """Stop the recording in progress (the server finalises and processes it); with
        none in progress, the oldest stream asked for, at its start."""
        pending = [e for e in list(self._stops) if not e.is_set()]
        if pending:
            pending[0].set()

    def _options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"asr_model": self.asr_model.value,
                                "clustering_threshold": float(self.threshold.value)}
        if self.num_speakers.value:
            opts["num_speakers"] = int(self.num_speakers.value)
        return opts

    def process_again(self, session_id: Optional[str] = None) -> "concurrent.futures.Future[Any]":
        """Queue a new run of the selected session with the panel's settings and wait for
        it, on the panel's thread; returns a future of the ended run (what the server
        refused, or a server away, is said in the panel and raised by the future)."""
        sid = session_id or self.selected
        if sid is None:
            self._say("select a session first", error=True)
            raise ValueError("no session selected")
        self.progress.value = 0.0
        options = self._options()  # (the settings as they are when asked)

        def job() -> Any:
            try:
                run = self.client.start_run(sid, options)
            except Exception as exc:  # the reason in the panel, not only a log line (a server
                # away: aiohttp's connection error, which only the widget log showed)
                if not self._closed:
                    self._say(f"cannot reach the server: {exc}" if isinstance(exc, OSError)
                              else str(exc) or type(exc).__name__, error=True)
                raise
            self._say(f"run {run['id'][:8]} queued")
            try:
                done = self.client.wait_for_run(sid, run["id"], self._on_event)
            except Exception as exc:  # e.g. the session deleted meanwhile: said, not only raised
                if not self._closed:
                    self.refresh()
                    self.progress.description = "failed"
                    self._say(f"run {run['id'][:8]}: {exc}", error=True)
                raise
            self.refresh()
            self.select(sid)
            return done

        return self._action(job)

    # ------------------------------------------------------------------ details
    def _on_pick(self, change: dict[str, Any]) -> None:
        if getattr(self._refreshing, "on", False):
            return
        if change.get("new") and change["new"] != self.selected:
            self.select(change["new"])

    def on_select(self, callback: Any) -> None:
        """Call ``callback(session_id)`` whenever a session is selected (picker, a
        finished stream or run, or :meth:`select`)."""
        self._on_select.append(callback)

    def select(self, session_id: str) -> None:
        """Select a session (nothing once the panel is closed); with ``show_detail``, show
        its audio player, speaker-coloured transcript and diarization timeline, fetched on
        the panel's thread (:attr:`last_detail`)."""
        if self._closed:  # (a stream or run that ended after close())
            return
        self.selected = session_id
        if self.session_picker.value != session_id and session_id in [
                o[1] for o in self.session_picker.options]:
            self.session_picker.value = session_id
        self.table.value = sessions_table_html(self.sessions, self.selected)
        for callback in list(self._on_select):
            callback(session_id)
        if self.show_detail:
            self.last_detail = self._later(self._show_detail, session_id)

    def _show_detail(self, session_id: str) -> None:
        """Fetch and show a selected session's detail (unless another was selected meanwhile)."""
        shown: list[w.Widget] = []
        try:
            try:
                wav = self.client.download(session_id, "audio", "wav")
                assert isinstance(wav, bytes)
                shown.append(w.Audio(value=wav, format="wav", autoplay=False))
            except ServerError as exc:
                shown.append(w.HTML(f"<i>{html.escape(str(exc))}</i>"))
            try:
                t: Optional[Transcript] = self.client.transcript(session_id)
            except ServerError:
                t = None
                shown.append(w.HTML("<i>no transcript yet</i>"))
            if t is not None:
                shown.append(w.HTML(transcript_html(t)))
                if t.turns:
                    shown.append(w.Image(value=_timeline_png(t), format="png"))
        except Exception as exc:  # (e.g. the server away) said where the detail goes
            if self._closed:
                return
            shown.append(w.HTML(f"<span style='color:#b00'>session {html.escape(session_id[:8])}: "
                                f"{html.escape(str(exc) or type(exc).__name__)}</span>"))
        if self.selected == session_id and not self._closed:
            self.detail.children = tuple(shown)


def _timeline_png(t: Transcript) -> bytes:
    """The transcript's speaker turns as a PNG timeline (no pyplot: drawn off the main thread)."""
    from matplotlib.figure import Figure

    from workbench.notebook.analysis import plot_timeline

    fig = Figure(figsize=(12, 0.5 + 0.4 * len(t.speakers)))
    plot_timeline(fig.subplots(), t.turns, t.speakers, 0.0, t.duration)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
