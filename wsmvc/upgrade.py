"""What the HTTP upgrade request tells the server before a connection exists: its origin,
the headers neffos.js puts in the query, the client's reconnect count, and the default
connection id (``neffos-protocol.md`` §1)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "QUERY_HEADER_PREFIX",
    "RECONNECT_HEADER",
    "Origins",
    "default_id_generator",
    "reconnect_tries",
    "with_query_headers",
]

QUERY_HEADER_PREFIX = "x-websocket-header-"
RECONNECT_HEADER = "X-Websocket-Reconnect"


def default_id_generator(request: web.Request) -> str:
    """A random UUID (version 4), like neffos' default."""
    return str(uuid.uuid4())


class Origins:
    """The origins browsers may connect from: ``None``, the server's own only; ``"*"``,
    any; or these origins (``"https://example.com"``; case and a trailing ``/`` do not
    matter). Requests without an ``Origin`` header (non-browser clients) are allowed."""

    __slots__ = ("_allowed",)

    def __init__(self, allowed: Iterable[str] | Literal["*"] | None) -> None:
        if allowed is None or allowed == "*":
            self._allowed: frozenset[str] | Literal["*"] | None = allowed
        else:
            self._allowed = frozenset(o.lower().rstrip("/") for o in allowed)

    def allow(self, request: web.BaseRequest) -> bool:
        """Whether ``request`` may upgrade."""
        origin = request.headers.get("Origin")
        if origin is None or self._allowed == "*":
            return True
        if self._allowed is None:
            return urlsplit(origin).netloc.lower() == request.host.lower()
        return origin.lower().rstrip("/") in self._allowed


def with_query_headers(request: web.Request) -> web.Request:
    """The request with its ``X-Websocket-Header-<Name>`` query parameters as headers.

    Browsers cannot set headers on a websocket, so neffos.js sends them this way
    (spec 1.3). The server does this before ``id_generator``; call it in a middleware
    (which runs earlier) to read such a header there, e.g. an ``Authorization`` token.
    """
    extra = [
        (key[len(QUERY_HEADER_PREFIX) :], value)
        for key, value in request.query.items()
        if len(key) > len(QUERY_HEADER_PREFIX) and key.lower().startswith(QUERY_HEADER_PREFIX)
    ]
    if not extra:
        return request
    headers = CIMultiDict(request.headers)
    for key, value in extra:
        headers.add(key, value)
    return request.clone(headers=headers)


def reconnect_tries(request: web.BaseRequest) -> int:
    """How many times neffos.js tried to reconnect before this request (its
    ``X-Websocket-Reconnect`` header; 0 if absent or not a number)."""
    value = request.headers.get(RECONNECT_HEADER)
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
