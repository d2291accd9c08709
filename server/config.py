"""Server configuration: command-line flags, each with an environment variable fallback."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Per-recording limits of the recording protocol (seed defaults)."""

    max_duration_seconds: float = 3600.0
    max_chunk_bytes: int = 1 * MiB
    max_total_bytes: int = 500 * MiB
    # Largest WebSocket message accepted at all; bigger frames close the
    # connection with 1009.  Room for a base64 chunk a little over the limit so
    # that one gets the seed's "Chunk size exceeds limit" error instead.
    max_message_bytes: int = 4 * MiB


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
    progress_every: int = 100
    fsync_interval: float = 1.0
    heartbeat: float = 30.0
    log_level: str = "INFO"
    default_run_config: dict[str, Any] = field(default_factory=dict)

    def serialize(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_dir"] = str(self.data_dir)
        return out


_ENV = "WORKBENCH_"


def _env(name: str, default: Any) -> Any:
    return os.environ.get(_ENV + name.upper(), default)


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
                   help="processing worker processes (bounded concurrency)")
    p.add_argument("--max-duration", type=float,
                   default=float(_env("max_duration", lim.max_duration_seconds)),
                   help="seconds per recording")
    p.add_argument("--max-chunk-bytes", type=int,
                   default=int(_env("max_chunk_bytes", lim.max_chunk_bytes)))
    p.add_argument("--max-total-bytes", type=int,
                   default=int(_env("max_total_bytes", lim.max_total_bytes)))
    p.add_argument("--max-message-bytes", type=int,
                   default=int(_env("max_message_bytes", lim.max_message_bytes)))
    p.add_argument("--progress-every", type=int, default=int(_env("progress_every", d.progress_every)))
    p.add_argument("--heartbeat", type=float, default=float(_env("heartbeat", d.heartbeat)))
    p.add_argument("--log-level", default=_env("log_level", d.log_level))
    a = p.parse_args(argv)
    return ServerConfig(
        host=a.host,
        port=a.port,
        data_dir=a.data_dir,
        limits=Limits(a.max_duration, a.max_chunk_bytes, a.max_total_bytes, a.max_message_bytes),
        pipeline=a.pipeline,
        workers=max(1, a.workers),
        progress_every=max(1, a.progress_every),
        heartbeat=a.heartbeat,
        log_level=a.log_level.upper(),
    )


__all__ = ["Limits", "ServerConfig", "parse_args", "MiB", "fields"]
