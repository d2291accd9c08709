"""`ServerError`: what the workbench server (or a proxy before it) refused, as the
protocol client raises it."""

from __future__ import annotations

from http import HTTPStatus
from typing import Optional

_REFUSALS = {401: "(missing or invalid token)", 403: "(origin or host not allowed)",
             429: "(too many connections from this client)"}


class ServerError(RuntimeError):
    """The server answered with an error (REST ``{"error"}`` or protocol ``error``)."""

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[int] = None):
        super().__init__(message)
        self.status = status
        self.code = code


def refusal(status: int) -> str:
    """Why a server refuses an HTTP request or a WebSocket upgrade with `status`, in words."""
    if status in _REFUSALS:
        return _REFUSALS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


__all__ = ["ServerError", "refusal"]
