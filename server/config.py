"""Server configuration: command-line flags, each with an environment variable fallback."""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

from .limits import Limits, MiB, message_room

# Origins a browser page may connect from when --allowed-origins is not given
# (besides the server's own origin, which is always allowed); "*" is any port.
DEFAULT_ALLOWED_ORIGINS: tuple[str, ...] = (
    "http://localhost:*", "https://localhost:*",
    "http://127.0.0.1:*", "https://127.0.0.1:*",
    "http://[::1]:*", "https://[::1]:*",
)


def auto_live_sessions() -> int:
    """The default budget of live recordings: one per core. A live worker takes 0.6-0.9
    CPU s per audio second; measured 2026-12-03 on 2 cores capped to AVX2 (BENCHMARKS.md,
    "Live results through the server"), two live recordings at once kept p95 word
    latency at 4.7 s with the refined runs after `stop` sharing the cores, chunk replies
    p95 12 ms and no byte lost."""
    try:  # the cores this process may use (taskset, a container's cpuset), not the machine's
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores)


def live_config(value: str) -> dict[str, Any]:
    """``--live-config``: a JSON object of `workbench.live.LiveConfig` options ('': none);
    ConfigError unless `LiveConfig.from_dict` takes it."""
    if not str(value).strip():
        return {}
    try:
        options = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--live-config: not JSON ({exc.msg} at character {exc.pos})") from None
    check_live_config(options)
    return dict(options)


def check_live_config(options: Any) -> None:
    """ConfigError unless `options` is a JSON object `LiveConfig.from_dict` takes."""
    from .live_worker import live_config_error

    error = live_config_error(options)
    if error:
        raise ConfigError(f"--live-config: {error}")


def live_sessions(value: str) -> int:
    """``--max-live-sessions``: ``auto`` or a count (0: live results off)."""
    if str(value).strip().lower() == "auto":
        return auto_live_sessions()
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a count, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 'auto' or >= 0")
    return n


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server can be told at start-up."""

    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("data")
    limits: Limits = field(default_factory=Limits)
    # "full": renditions + transcription + diarization after stop;
    # "renditions": audio renditions only (fast; used by protocol tests).
    pipeline: str = "full"
    workers: int = 1
    # Recordings with live results at once (each one live worker process; 0: off).
    max_live_sessions: int = field(default_factory=auto_live_sessions)
    # Keep one live worker loaded ahead of the next live recording (first words sooner).
    live_warm: bool = False
    # Options of every live recording's pipeline (`workbench.live.LiveConfig.from_dict`:
    # e.g. {"diarization": {"latency": 5.0}}); {}: the defaults. Echoed into each live run.
    live_config: dict[str, Any] = field(default_factory=dict)
    # A Dask scheduler address ("tcp://host:8786"): runs go to that cluster instead
    # of local worker processes (its workers must see the data directory).
    dask_scheduler: Optional[str] = None
    progress_every: int = 100
    fsync_interval: float = 1.0
    heartbeat: float = 30.0
    log_level: str = "INFO"
    default_run_config: dict[str, Any] = field(default_factory=dict)
    # Shared secret required on the REST API and the WebSocket (None: no authentication,
    # allowed only on a loopback address unless `insecure`).
    token: Optional[str] = field(default=None, repr=False)
    insecure: bool = False
    # Browser origins allowed besides the server's own ("*": any origin).
    allowed_origins: tuple[str, ...] = DEFAULT_ALLOWED_ORIGINS
    # Host header names accepted (DNS-rebinding guard); empty: automatic (see security.py).
    allowed_hosts: tuple[str, ...] = ()
    # Take the client address from the last X-Forwarded-For entry (behind a reverse proxy).
    trust_proxy: bool = False
    # Run options that name files on the server (an ASR model folder, a pyannote pipeline
    # folder) are refused from clients unless this is set: such a folder is code to load.
    allow_local_models: bool = False
    access_log: bool = False

    def serialize(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_dir"] = str(self.data_dir)
        out["token"] = "***" if self.token else None
        return out


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration the server refuses to start with."""


def is_loopback(host: str) -> bool:
    """True when ``host`` names only the local machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check(config: ServerConfig) -> None:
    """Refuse configurations that would expose recordings: a public bind without a token."""
    if not is_loopback(config.host) and not config.token and not config.insecure:
        raise ConfigError(
            f"Refusing to listen on {config.host!r} without authentication: set a token with "
            "--token or WORKBENCH_TOKEN (clients then send 'Authorization: Bearer <token>' or "
            "'?token=<token>'), or pass --insecure to serve everyone on the network anyway.")
    if config.token is not None and not config.token.strip():
        raise ConfigError("The token must not be empty")
    lim = config.limits
    for flag, value in (("--max-duration", lim.max_duration_seconds),
                        ("--max-chunk-bytes", lim.max_chunk_bytes),
                        ("--max-total-bytes", lim.max_total_bytes),
                        ("--max-message-bytes", lim.max_message_bytes)):
        if not (value > 0 and math.isfinite(value)):  # (0 would cut every recording to
            # nothing, not turn it off; infinity overflows the sample counts of the audio)
            raise ConfigError(f"{flag} must be > 0 and finite, not {value:g}")
    room = message_room(lim.max_chunk_bytes)
    if lim.max_message_bytes < room:  # (a chunk within its limit closed the socket: 1009)
        raise ConfigError(f"--max-message-bytes ({lim.max_message_bytes}) must hold a chunk of "
                          f"--max-chunk-bytes ({lim.max_chunk_bytes}) sent as base64 JSON: at "
                          f"least {room} (left out, it follows the chunk limit)")
    for flag, value in (("--max-recordings", lim.max_recordings),
                        ("--max-connections-per-client", lim.max_connections_per_client),
                        ("--idle-timeout", lim.idle_timeout_seconds),
                        ("--live-max-speed", lim.live_max_speed),
                        ("--live-burst", lim.live_burst_seconds),
                        ("--heartbeat", config.heartbeat)):
        if not (value >= 0 and math.isfinite(value)):  # (a negative heartbeat closed every
            # socket at once)
            raise ConfigError(f"{flag} must be >= 0 and finite (0: off), not {value:g}")
    for flag, value, least in (("--max-body-bytes", lim.max_body_bytes, 1024),
                               ("--workers", config.workers, 1),
                               ("--progress-every", config.progress_every, 1)):
        if value < least:  # (each was raised to it without a word)
            raise ConfigError(f"{flag} must be at least {least}, not {value}")
    check_live_config(config.live_config)
    if not 0 <= config.port <= 65535:  # (0: a free port)
        raise ConfigError(f"--port must be between 0 and 65535, not {config.port}")
    if config.log_level not in LOG_LEVELS:  # (WORKBENCH_LOG_LEVEL=verbose: a traceback)
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not "
                          f"{config.log_level!r}")


_ENV = "WORKBENCH_"


def _env(name: str, default: Any) -> Any:
    return os.environ.get(_ENV + name.upper(), default)


def _env_flag(name: str) -> bool:
    return str(_env(name, "")).strip().lower() in ("1", "true", "yes", "on")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def parse_args(argv: Optional[Sequence[str]] = None) -> ServerConfig:
    """Build a :class:`ServerConfig` from flags; each flag falls back to WORKBENCH_<NAME>."""
    d = ServerConfig()
    lim = Limits()
    p = argparse.ArgumentParser(prog="python -m server", description="Live recording, "
                                "transcription and diarization server.")
    p.add_argument("--host", default=_env("host", d.host))
    p.add_argument("--port", type=int, default=int(_env("port", d.port)))
    p.add_argument("--data-dir", type=Path, default=Path(_env("data_dir", d.data_dir)))
    p.add_argument("--pipeline", choices=("full", "renditions"), default=_env("pipeline", d.pipeline),
                   help="work done after stop (default: full)")
    p.add_argument("--workers", type=int, default=int(_env("workers", d.workers)),
                   help="processing worker processes, or runs in flight on Dask (bounded)")
    p.add_argument("--max-live-sessions", type=live_sessions,
                   default=_env("max_live_sessions", "auto"),
                   help="live streams at once, each counted until its live run is saved "
                        "('auto': one per core; 0: live results off)")
    p.add_argument("--live-warm", action="store_true", default=_env_flag("live_warm"),
                   help="keep one live worker with its models loaded ahead of the next "
                        "live recording")
    p.add_argument("--live-config", default=_env("live_config", None),
                   metavar="JSON", help="options of every live recording's pipeline, as "
                   "workbench.live.LiveConfig.from_dict takes them, e.g. "
                   "'{\"diarization\": {\"latency\": 5.0}}' (default: none)")
    p.add_argument("--dask-scheduler", default=_env("dask_scheduler", None) or None,
                   help="run processing jobs on this Dask cluster (tcp://host:port)")
    p.add_argument("--max-duration", type=float,
                   default=float(_env("max_duration", lim.max_duration_seconds)),
                   help="seconds per recording")
    p.add_argument("--max-chunk-bytes", type=int,
                   default=int(_env("max_chunk_bytes", lim.max_chunk_bytes)))
    p.add_argument("--max-total-bytes", type=int,
                   default=int(_env("max_total_bytes", lim.max_total_bytes)))
    p.add_argument("--max-message-bytes", type=int,
                   default=_env("max_message_bytes", None),
                   help="largest WebSocket message (default: 4 MiB, more when a base64 "
                        "chunk of --max-chunk-bytes needs it)")
    p.add_argument("--max-recordings", type=int,
                   default=int(_env("max_recordings", lim.max_recordings)),
                   help="recordings open at once (0: no limit)")
    p.add_argument("--max-connections-per-client", type=int,
                   default=int(_env("max_connections_per_client", lim.max_connections_per_client)),
                   help="open WebSockets per client address (0: no limit)")
    p.add_argument("--idle-timeout", type=float,
                   default=float(_env("idle_timeout", lim.idle_timeout_seconds)),
                   help="seconds of silence from a recording client before it is "
                        "interrupted (0: never)")
    p.add_argument("--max-body-bytes", type=int,
                   default=int(_env("max_body_bytes", lim.max_body_bytes)),
                   help="largest HTTP request body")
    p.add_argument("--live-max-speed", type=float,
                   default=float(_env("live_max_speed", lim.live_max_speed)),
                   help="how much faster than real time a 'live' client may send (0: no check)")
    p.add_argument("--live-burst", type=float,
                   default=float(_env("live_burst", lim.live_burst_seconds)),
                   help="seconds of audio a 'live' client may send ahead of that pace")
    p.add_argument("--progress-every", type=int, default=int(_env("progress_every", d.progress_every)))
    p.add_argument("--heartbeat", type=float, default=float(_env("heartbeat", d.heartbeat)))
    p.add_argument("--log-level", type=str.upper, default=_env("log_level", d.log_level),
                   choices=LOG_LEVELS)
    p.add_argument("--token", default=_env("token", None),
                   help="require this token on the REST API and the WebSocket (prefer the "
                        "WORKBENCH_TOKEN variable: flags show in process lists)")
    p.add_argument("--insecure", action="store_true", default=_env_flag("insecure"),
                   help="allow a non-loopback --host without a token")
    p.add_argument("--allowed-origins", type=_csv,
                   default=_csv(_env("allowed_origins", ",".join(DEFAULT_ALLOWED_ORIGINS))),
                   help="comma-separated browser origins allowed besides the server's own "
                        "(scheme://host[:port|:*]; '*' for any)")
    p.add_argument("--allowed-hosts", type=_csv, default=_csv(_env("allowed_hosts", "")),
                   help="comma-separated Host header names accepted ('*' for any); default: "
                        "loopback names for a tokenless server on a loopback --host, any "
                        "host with a token or on another --host")
    p.add_argument("--allow-local-models", action="store_true",
                   default=_env_flag("allow_local_models"),
                   help="let clients name model or pyannote pipeline folders on this machine "
                        "(asr_model / pipeline_path paths) in run options")
    p.add_argument("--trust-proxy", action="store_true", default=_env_flag("trust_proxy"),
                   help="behind a reverse proxy: the client address is the last "
                        "X-Forwarded-For entry")
    p.add_argument("--access-log", action="store_true", default=_env_flag("access_log"),
                   help="log every HTTP request (tokens redacted)")
    a = p.parse_args(argv)
    try:  # (checked here, not as the flag's type: a bad environment variable is named)
        a.live_config = live_config(a.live_config or "")
    except ConfigError as exc:
        flagged = any(x.split("=")[0] == "--live-config" for x in (
            sys.argv[1:] if argv is None else argv))
        p.error(f"{'argument --live-config' if flagged else 'WORKBENCH_LIVE_CONFIG'}: "
                f"{str(exc).removeprefix('--live-config: ')}")
    config = ServerConfig(
        host=a.host,
        port=a.port,
        data_dir=a.data_dir,
        limits=Limits(
            max_duration_seconds=a.max_duration,
            max_chunk_bytes=a.max_chunk_bytes,
            max_total_bytes=a.max_total_bytes,
            max_message_bytes=a.max_message_bytes,  # (None: as the chunk limit needs)
            max_recordings=a.max_recordings,  # (checked: a negative one was taken for 0)
            max_connections_per_client=a.max_connections_per_client,
            idle_timeout_seconds=a.idle_timeout,
            max_body_bytes=a.max_body_bytes,
            live_max_speed=a.live_max_speed,
            live_burst_seconds=a.live_burst,
        ),
        pipeline=a.pipeline,
        workers=a.workers,
        max_live_sessions=a.max_live_sessions,
        live_warm=a.live_warm,
        live_config=a.live_config or {},
        dask_scheduler=a.dask_scheduler,
        progress_every=a.progress_every,
        heartbeat=a.heartbeat,
        log_level=a.log_level.upper(),
        token=a.token or None,
        insecure=a.insecure,
        allowed_origins=a.allowed_origins,
        allowed_hosts=a.allowed_hosts,
        trust_proxy=a.trust_proxy,
        allow_local_models=a.allow_local_models,
        access_log=a.access_log,
    )
    try:
        check(config)
    except ConfigError as exc:
        p.error(str(exc))
    return config


__all__ = ["Limits", "ServerConfig", "ConfigError", "DEFAULT_ALLOWED_ORIGINS", "check",
           "is_loopback", "parse_args", "MiB", "fields"]
