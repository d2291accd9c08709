"""A microphone for notebooks: records in the browser and streams to the server itself.

``Microphone`` is an anywidget (its JavaScript is ``static/microphone.js``). Record asks
the browser for the microphone, and MediaRecorder's WebM/Opus chunks go as binary
frames over the recording protocol, straight from the browser to the server's
``/ws/new`` with ``"live_results": true`` (README, "Recording protocol", "Live
results"): the kernel never carries the audio. The widget shows the input level,
the elapsed time and the server's messages.

The Python side follows the recording through traitlets — ``state`` (``idle``,
``connecting``, ``recording``, ``stopping``, ``processing``, ``completed``,
``failed``, ``detached``), ``session_id``, ``elapsed``, ``level_db``,
``live_results``, ``error`` — and through the server's messages: each one is appended
to ``events``, set as ``last_event`` (observe it) and handed to every
``on_event(callback)``::

    mic = Microphone("http://127.0.0.1:8765", options={"num_speakers": 2})
    mic.on_event(print)
    mic                     # press Record in the notebook (or Voilà) page
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import anywidget
import traitlets as t

__all__ = ["Microphone", "STATES"]

STATIC = Path(__file__).with_name("static")

STATES = ("idle", "connecting", "recording", "stopping", "processing", "completed", "failed",
          "detached")
"""The widget's ``state`` values, in the order a recording goes through them
(``detached``: the connection closed while the server was still processing)."""

EventCallback = Callable[[dict[str, Any]], None]


class Microphone(anywidget.AnyWidget):
    """Record from the browser's microphone to a workbench server, with live results."""

    _esm = STATIC / "microphone.js"

    # set by Python
    server_url = t.Unicode("").tag(sync=True)
    token = t.Unicode("").tag(sync=True)
    options = t.Dict().tag(sync=True)
    format = t.Unicode("wav").tag(sync=True)
    # set by the browser
    state = t.Unicode("idle").tag(sync=True)
    session_id = t.Unicode("").tag(sync=True)
    input_format = t.Unicode("").tag(sync=True)
    elapsed = t.Float(0.0).tag(sync=True)
    level_db = t.Float(-120.0).tag(sync=True)  # dBFS RMS, twice a second (-120: silence)
    live_results = t.Bool(False).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    # Python only: the latest server message
    last_event = t.Dict()

    def __init__(self, server_url: Any = "", *, token: Optional[str] = None,
                 options: Optional[dict[str, Any]] = None, format: str = "wav",
                 **kwargs: Any) -> None:
        """`server_url` as the browser reaches the server (a URL or a `LocalServer`);
        `options` are extra fields of ``start`` (run options such as ``num_speakers``)."""
        super().__init__(server_url=str(getattr(server_url, "url", server_url)).rstrip("/"),
                         token=token or "", options=dict(options or {}), format=format,
                         **kwargs)
        self.events: list[dict[str, Any]] = []
        self._callbacks: list[EventCallback] = []
        self.on_msg(self._on_browser_message)

    def on_event(self, callback: EventCallback) -> None:
        """Call ``callback(message)`` for every server message of the recording."""
        self._callbacks.append(callback)

    def start(self) -> None:
        """Press Record (in every browser view of the widget)."""
        self.send({"command": "start"})

    def stop(self) -> None:
        """Press Stop: the rest of the audio and ``stop`` go to the server."""
        self.send({"command": "stop"})

    def _on_browser_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "server":
            return
        message = content.get("message")
        if not isinstance(message, dict):
            return
        if message.get("type") == "recording_started":
            self.events = []
        self.events.append(message)
        self.last_event = message
        for callback in list(self._callbacks):
            callback(message)
