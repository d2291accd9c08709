"""``python -m server [--host 127.0.0.1] [--port 8765] [--data-dir data]``"""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Optional, Sequence

from aiohttp import web

from .app import create_app
from .config import is_loopback, parse_args
from .lock import DataDirInUse
from .security import MalformedRequestFilter, RedactingAccessLogger
from .sessions import StoreDamaged


def main(argv: Optional[Sequence[str]] = None) -> int:
    config = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.INFO if config.access_log
                                                 else logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    try:
        app = create_app(config)
    except StoreDamaged as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    auth = "token required" if config.token else "no token"
    if not is_loopback(config.host) and not config.token:
        logging.getLogger("server").warning(
            "--insecure: serving %s without authentication to everyone who can reach it",
            config.host)
    serving = f"Serving on http://{config.host}:{config.port} (data: {config.data_dir}, {auth})"
    try:  # (printed once the port is bound and start-up is done)
        web.run_app(app, host=config.host, port=config.port, shutdown_timeout=5.0,
                    print=lambda _: print(serving, flush=True), handle_signals=True,
                    access_log_class=RedactingAccessLogger)
    except DataDirInUse as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:  # binding the port or the address (start-up work was undone)
        binding = (exc.strerror or "").startswith("error while attempting to bind")
        if exc.errno is None or not binding:  # (asyncio's words for a failed bind)
            raise  # another OSError, e.g. a data directory this user may not write
        why = {errno.EADDRINUSE: ": another program (another server?) listens there; pick "
                                 "another --port",
               errno.EADDRNOTAVAIL: ": this machine has no such address; check --host",
               errno.EACCES: ": ports below 1024 need root; pick another --port"
               if config.port < 1024 else ""}.get(exc.errno, "")
        host = f"[{config.host}]" if ":" in config.host else config.host
        print(f"error: cannot listen on {host}:{config.port}: {os.strerror(exc.errno)}{why}",
              file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
