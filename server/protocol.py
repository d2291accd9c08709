"""The recording protocol: client actions, server messages and the seed's exact error texts.

Client -> server (JSON text frames unless noted)::

    {"action": "start", "format": "wav"|"mp4", ...options}
    {"action": "audio_chunk", "data": "<base64>"}     (or a binary frame: the raw chunk)
    {"action": "stop"}

Server -> client: ``recording_started``, ``progress``, ``recording_stopped``,
``processing_started``, ``processing_progress``, ``processing_complete``,
``processing_failed`` and ``error`` (``{"type": "error", "code": N, "message": ...}``);
with ``"live_results": true`` in ``start`` also the live events of :mod:`server.live`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Optional

from workbench.engine.audio import CONTAINERS, SAMPLE_RATE, InputFormat
from workbench.engine.config import FLAT_OPTIONS, ConfigError

from .limits import Limits
from .jobs import check_run_config
from .sessions import AUDIO_FORMATS


class ErrorCode(IntEnum):
    """Numeric codes sent with every ``error`` message."""

    UNKNOWN_ACTION = 4000
    INVALID_FORMAT = 4001
    NOT_STARTED = 4002
    CHUNK_TOO_LARGE = 4003
    TOTAL_SIZE_EXCEEDED = 4004
    DURATION_EXCEEDED = 4005
    INVALID_ENCODING = 4006
    INVALID_MESSAGE = 4007
    UNDECODABLE_AUDIO = 4008
    ALREADY_RECORDING = 4009
    INVALID_FIELD = 4010
    SESSION_BUSY = 4011
    TOO_MANY_RECORDINGS = 4012
    TOO_FAST = 4013
    IDLE_TIMEOUT = 4014
    INTERNAL = 5000


def _plural(n: float, unit: str) -> str:
    n_txt = f"{n:g}"
    return f"{n_txt} {unit}" + ("" if n == 1 else "s")


def human_duration(seconds: float) -> str:
    """3600 -> '1 hour', 90 -> '90 seconds', 1800 -> '30 minutes'."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return _plural(seconds / 3600, "hour")
    if seconds >= 60 and seconds % 60 == 0:
        return _plural(seconds / 60, "minute")
    return _plural(seconds, "second")


def human_bytes(n: int) -> str:
    """1048576 -> '1MB' (the seed's spelling of MiB), 524288000 -> '500MB', 1000 -> '1000 bytes'."""
    mib = 1024 * 1024
    if n >= mib and n % mib == 0:
        return f"{n // mib}MB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}KB"
    return f"{n} bytes"


class Messages:
    """The seed's error texts, word for word (limits spelled from the configuration)."""

    UNKNOWN_ACTION = "Unknown action"
    INVALID_FORMAT = "Invalid format. Use 'wav' or 'mp4'"
    NOT_STARTED = "Recording not started. Send 'start' action first"
    INVALID_ENCODING = "Invalid audio data encoding"
    # (4007) a binary frame that holds an action (`holds_action`): refused, not recorded
    ACTION_IN_BINARY = ("Invalid message: a JSON message in a binary frame; send actions as "
                        "text frames (binary frames are audio)")

    @staticmethod
    def chunk_too_large(limits: Limits) -> str:
        return f"Chunk size exceeds limit ({human_bytes(limits.max_chunk_bytes)})"

    @staticmethod
    def total_size_exceeded(limits: Limits) -> str:
        return f"Total data size exceeds limit ({human_bytes(limits.max_total_bytes)})"

    @staticmethod
    def duration_exceeded(limits: Limits) -> str:
        return f"Recording duration exceeds limit ({human_duration(limits.max_duration_seconds)})"

    @staticmethod
    def too_many_recordings(limits: Limits) -> str:
        return (f"Too many recordings in progress (limit {limits.max_recordings}); "
                "try again later")

    @staticmethod
    def too_fast(limits: Limits) -> str:
        return (f"Audio arrives faster than real time: a live recording may send at most "
                f"{limits.live_max_speed:g}x real time after a {limits.live_burst_seconds:g} s "
                "burst. Chunk refused; slow down")

    @staticmethod
    def idle_timeout(limits: Limits) -> str:
        return (f"No message for {human_duration(limits.idle_timeout_seconds)}: recording "
                "interrupted (audio kept) and connection closed")

    @staticmethod
    def internal(details: str) -> str:
        return f"Erro interno: {details}"


MAX_ACTION_BYTES = 64 * 1024
"""Binary frames up to this size are checked by `holds_action` (a control message is
small; an ``audio_chunk`` action sent as binary by mistake up to 48 KiB of audio)."""


def holds_action(data: bytes) -> bool:
    """Whether a binary frame is a JSON object with an ``action`` (a client that sent its
    control message as binary): taken as audio it went into the recording, and shifted
    every later sample of a PCM recording by its odd length, while the ``stop`` in it
    never stopped anything. Audio rarely starts with ``{`` and then fails to parse at once."""
    if len(data) > MAX_ACTION_BYTES:  # (before strip: it copies an audio chunk)
        return False
    body = data.strip()
    if body[:1] != b"{" or body[-1:] != b"}":
        return False
    try:
        msg = json.loads(body)
    except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
        return False
    return isinstance(msg, dict) and "action" in msg


class ProtocolError(Exception):
    """A client mistake: becomes an ``error`` message; the connection goes on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": int(code), "message": message, **extra}


def decode_chunk(data: Any) -> bytes:
    """Decode the base64 ``data`` of an ``audio_chunk`` (strict alphabet and padding)."""
    if not isinstance(data, str) or not data:
        raise ProtocolError(ErrorCode.INVALID_ENCODING, Messages.INVALID_ENCODING)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(ErrorCode.INVALID_ENCODING, Messages.INVALID_ENCODING) from None


# Processing options a client may put in `start` (flat names; see workbench.engine.config):
# they are stored with the session and become the configuration of the run started at
# `stop`.
RUN_OPTION_FIELDS: tuple[str, ...] = tuple(FLAT_OPTIONS)

_INPUT_ALIASES = {"pcm": "pcm_s16le", "s16le": "pcm_s16le", "m4a": "mp4", "aac": "mp4",
                  "opus": "ogg", "matroska": "webm", "mkv": "webm"}


START_FIELDS = frozenset({"action", "format", "input_format", "sample_rate", "channels", "live",
                          "live_results", *RUN_OPTION_FIELDS})
MAX_REPORTED_FIELDS = 20


@dataclass(frozen=True)
class StartRequest:
    """A validated ``start`` action."""

    format: Optional[str]  # None: not given (a new session records WAV, a resumed one keeps its own)
    input: InputFormat
    options: dict[str, Any] = field(default_factory=dict)  # a null: clear (`given_options`)
    live: bool = False
    # Words and speakers pushed while recording (`server.live`); a live run saved at the end.
    live_results: bool = False
    # Fields the server does not know (ignored; echoed in ``recording_started``).
    ignored: tuple[str, ...] = ()


def _field_error(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_FIELD, message)


def given_options(options: dict[str, Any]) -> dict[str, Any]:
    """`start`'s run options without the nulls (a null clears a stored option)."""
    return {name: value for name, value in options.items() if value is not None}


def parse_start(msg: dict[str, Any]) -> StartRequest:
    """Validate a ``start`` message; raises :class:`ProtocolError` with a clear message."""
    fmt = msg.get("format")
    if fmt is not None and fmt not in AUDIO_FORMATS:
        raise ProtocolError(ErrorCode.INVALID_FORMAT, Messages.INVALID_FORMAT)

    container = msg.get("input_format")
    if container is not None:
        if not isinstance(container, str):
            raise _field_error("'input_format' must be a string")
        container = _INPUT_ALIASES.get(container.lower(), container.lower())
        if container not in CONTAINERS:
            raise _field_error(f"Invalid input_format. Use one of: {', '.join(CONTAINERS)}")
    rate = msg.get("sample_rate", SAMPLE_RATE)
    channels = msg.get("channels", 1)
    if not isinstance(rate, int) or isinstance(rate, bool) or not 4000 <= rate <= 192000:
        raise _field_error("'sample_rate' must be an integer between 4000 and 192000")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 8:
        raise _field_error("'channels' must be an integer between 1 and 8")

    # null: not given, and on a resume it clears what the session stored (`given_options`)
    options = {name: msg[name] for name in RUN_OPTION_FIELDS if name in msg}
    try:
        check_run_config(given_options(options), switch=False)
    except ConfigError as exc:
        raise _field_error(f"Invalid field in 'start': {exc}") from None
    live = msg.get("live", False)
    if not isinstance(live, bool):
        raise _field_error("'live' must be true or false")
    live_results = msg.get("live_results", False)
    if not isinstance(live_results, bool):
        raise _field_error("'live_results' must be true or false")
    ignored = tuple(sorted(k[:40] for k in msg if k not in START_FIELDS))[:MAX_REPORTED_FIELDS]
    return StartRequest(fmt, InputFormat(container, rate, channels), options, live,
                        live_results, ignored)
