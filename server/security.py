"""Who may talk to the server: token authentication, Origin and Host checks, a redacting access log.

Checks run in one middleware, in this order, before any handler:

1. **Host** (DNS-rebinding guard): the ``Host`` header must name this server.  Without a
   token on a loopback address only loopback names are accepted, so a web page whose
   domain was re-pointed at 127.0.0.1 cannot read recordings.
2. **Origin**: a request that carries ``Origin`` (browsers do for WebSockets and for
   cross-site requests) must come from the server's own origin or an allowed one.  No
   ``Origin`` means a non-browser client: allowed.
3. **Token**: when the server has a token, every request except the health probe and the
   static recorder page must present it as ``Authorization: Bearer <token>`` or as a
   ``token`` query parameter (browsers cannot set headers on a WebSocket).
"""

from __future__ import annotations

import hmac
import logging
from typing import Awaitable, Callable, Optional
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from . import routes
from .config import ServerConfig, is_loopback

log = logging.getLogger("server.security")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# True when the request carried the token (a typed key: a plain string key warns).
AUTHENTICATED = web.RequestKey("authenticated", bool)

_OPEN_PATHS = (routes.INDEX, routes.HEALTH)
_OPEN_PREFIXES = (routes.STATIC + "/",)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def presented_token(request: web.Request) -> Optional[str]:
    """The token a request carries (Authorization: Bearer, else ?token=), or None."""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token")


def token_matches(given: Optional[str], expected: str) -> bool:
    """Constant-time comparison (length aside) of a presented token with the server's."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def _split_host(value: str) -> tuple[str, Optional[int]]:
    """'Example.org:8080' -> ('example.org', 8080); '[::1]' -> ('::1', None)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[1:end if end > 0 else None], value[end + 1:] if end > 0 else ""
    else:
        name, _, rest = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
        rest = ":" + rest if rest else ""
    port: Optional[int] = None
    if rest.startswith(":") and rest[1:].isdigit():
        port = int(rest[1:])
    return name, port


def _origin_parts(origin: str) -> Optional[tuple[str, str, Optional[int]]]:
    try:
        u = urlsplit(origin.strip().lower())
        port = u.port
    except ValueError:
        return None
    if not u.scheme or not u.hostname:
        return None
    return u.scheme, u.hostname, port if port is not None else _DEFAULT_PORTS.get(u.scheme)


def _pattern_matches(pattern: str, origin: str) -> bool:
    """``scheme://host[:port]`` exactly, or ``scheme://host:*`` for any port."""
    pattern = pattern.strip().lower().rstrip("/")
    if pattern in ("*", origin.lower()):
        return True
    any_port = pattern.endswith(":*")
    want = _origin_parts(pattern[:-2] if any_port else pattern)
    got = _origin_parts(origin)
    if want is None or got is None:
        return False
    return want[:2] == got[:2] and (any_port or want[2] == got[2])


def origin_allowed(origin: str, host_header: str, allowed: tuple[str, ...]) -> bool:
    """True for the server's own origin (as named by ``Host``) and for allowed origins."""
    got = _origin_parts(origin)
    if got is not None and host_header:
        name, port = _split_host(host_header)
        # Same origin: host and port as the browser addressed this server.  The scheme
        # is not compared: TLS usually ends at a reverse proxy in front of us.
        if got[1] == name and ((port is None and got[2] in (80, 443)) or got[2] == port or
                               (got[2] in (80, 443) and port in (80, 443))):
            return True
    return any(_pattern_matches(p, origin) for p in allowed)


def host_allowed(host_header: str, config: ServerConfig) -> bool:
    """DNS-rebinding guard: is ``Host`` a name this server answers to?"""
    allowed = config.allowed_hosts
    if not allowed:
        if config.token or not is_loopback(config.host):
            return True  # a token protects the data; a public bind names itself many ways
        allowed = ("localhost", config.host)
    name, _ = _split_host(host_header)
    if not name:
        return False
    return any(a == "*" or a.lower().strip("[]") == name for a in allowed) or is_loopback(name)


def client_address(request: web.Request, trust_proxy: bool) -> str:
    """The client's address: the peer, or (behind a trusted proxy) the last X-Forwarded-For hop."""
    if trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return request.remote or "unknown"


def make_middleware(config: ServerConfig) -> Middleware:
    """The middleware enforcing Host, Origin and token checks for ``config``."""

    @web.middleware
    async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host", ""), config):
            log.warning("Refused request with Host %r (not an allowed host name)",
                        request.headers.get("Host", "")[:100])
            return _error(403, "Host not allowed (DNS rebinding protection); see --allowed-hosts")
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(origin, request.host, config.allowed_origins):
            log.warning("Refused %s %s from origin %r", request.method, logged_path(request),
                        origin[:100])
            return _error(403, "Origin not allowed; see --allowed-origins")
        authenticated = config.token is None or token_matches(presented_token(request),
                                                              config.token)
        request[AUTHENTICATED] = authenticated
        path = request.path
        if not authenticated and not (path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES)):
            return _error(401, "Missing or invalid token", **{"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return security_middleware


def logged_path(request: web.BaseRequest) -> str:
    """The path as the client sent it, still percent-encoded: decoded, a "%0A" in it wrote
    a line of the client's choosing into the log (no token needed)."""
    return request.rel_url.raw_path[:300]


class MalformedRequestFilter(logging.Filter):
    """For aiohttp's own log of a request it could not parse: one line without the raw
    request line, which may hold ``?token=`` (a non-ASCII session id typed into curl
    logged the user's token with a traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "Refused a malformed request (%s, HTTP %s)", (
                type(exc).__name__, getattr(exc, "code", "?"))
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


SECURITY_HEADERS = {
    # no other site may frame the recorder page (its buttons could be clicked through:
    # "Process again" starts CPU-heavy work); no content sniffing; no Referer to leave
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def add_security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """`SECURITY_HEADERS` on every response (``on_response_prepare``)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def redacted_target(request: web.BaseRequest) -> str:
    """The request target for logs: path plus query, with every ``token`` value hidden."""
    query = [(k, "***" if k.lower() == "token" else v) for k, v in request.query.items()]
    target = logged_path(request)
    if query:
        target += "?" + urlencode(query, safe="*")
    return target


class RedactingAccessLogger(AbstractAccessLogger):
    """Access log without secrets: no raw request line, no Referer, ``token`` redacted."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.3fs', request.remote, request.method,
                         redacted_target(request), request.version.major,
                         request.version.minor, response.status, response.body_length, time)


__all__ = ["AUTHENTICATED", "MalformedRequestFilter", "SECURITY_HEADERS", "add_security_headers", "RedactingAccessLogger", "logged_path", "client_address", "host_allowed",
           "make_middleware", "origin_allowed", "presented_token", "token_matches"]
