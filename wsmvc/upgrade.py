"""What the HTTP upgrade request tells the server before a connection exists: its origin,
the subprotocols it offers, the headers neffos.js puts in the query, the client's reconnect
count, and the default connection id (``neffos-protocol.md`` §1).

:class:`Upgrade` is what :class:`~wsmvc.Server` asks of each request: whether it may
upgrade (:meth:`Upgrade.refusal`), and the request to upgrade (:meth:`Upgrade.prepare`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Final, Literal
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from multidict import CIMultiDict

from .framing import declare_no_context_takeover
from .protocol import shorten

__all__ = [
    "QUERY_HEADER_PREFIX",
    "RECONNECT_HEADER",
    "Origins",
    "QueryHeaders",
    "Upgrade",
    "default_id_generator",
    "offered_protocols",
    "reconnect_tries",
    "size_limits",
    "with_query_headers",
]

log = logging.getLogger("wsmvc")

QUERY_HEADER_PREFIX = "x-websocket-header-"
RECONNECT_HEADER = "X-Websocket-Reconnect"

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_WEB_SCHEMES: Final = {"ws": "http", "wss": "https"}

Origin = tuple[str, str, int]  # scheme, host, port: what two origins must share to be one


def default_id_generator(request: web.Request) -> str:
    """A random UUID (version 4), like neffos' default."""
    return str(uuid.uuid4())


def _origin(url: str) -> Origin | None:
    """``url``'s origin (lower-case scheme and host, the port with the scheme's default);
    ``None`` if it is not an http(s) origin (``null``, a file, garbage)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    scheme = _WEB_SCHEMES.get(scheme, scheme)  # a proxy may say "wss"
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]


def _first(value: str | None) -> str | None:
    """The first of a comma-separated header's values (the client-facing proxy's)."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


class Origins:
    """The origins browsers may connect from: ``None``, the server's own only; ``"*"``,
    any; or these origins (``"https://example.com"``; case, a trailing ``/`` and a default
    port do not matter; ``"null"`` matches the ``null`` origin of a file or sandboxed
    page). Requests without an ``Origin`` header (non-browser clients) are allowed.

    Two origins are the same when scheme, host and port are (RFC 6454): a page on
    ``http://`` is not the site on ``https://``. The server's own origin is the request's
    scheme and ``Host``; behind a proxy that terminates TLS or rewrites ``Host``,
    ``trust_forwarded`` takes them from ``X-Forwarded-Proto`` and ``X-Forwarded-Host``
    (their first value) instead, which only a proxy in front of every request may set.
    Raises ``ValueError`` for a listed entry that is not an origin.
    """

    __slots__ = ("_allowed", "_null", "trust_forwarded")

    def __init__(
        self, allowed: Iterable[str] | Literal["*"] | None, *, trust_forwarded: bool = False
    ) -> None:
        self.trust_forwarded = trust_forwarded
        self._null = False
        if allowed is None or allowed == "*":
            self._allowed: frozenset[Origin] | Literal["*"] | None = allowed
            return
        if isinstance(allowed, str):
            raise ValueError(f"allowed_origins takes a list of origins or '*', not {allowed!r}")
        origins = set()
        for entry in allowed:
            if entry.strip().lower() == "null":
                self._null = True
                continue
            origin = _origin(entry)
            if origin is None:
                raise ValueError(
                    f"allowed_origins: {entry!r} is not an origin; write it as a browser sends"
                    " it, e.g. 'https://app.example.com' or 'http://localhost:8080'"
                )
            origins.add(origin)
        self._allowed = frozenset(origins)

    @property
    def same_origin(self) -> bool:
        """Whether only the server's own origin is allowed (``allowed_origins=None``)."""
        return self._allowed is None

    def own(self, request: web.BaseRequest) -> str:
        """The server's own origin as this request shows it (``scheme://host``)."""
        scheme, host = request.scheme, request.host
        if self.trust_forwarded:
            headers = request.headers
            scheme = _first(headers.get("X-Forwarded-Proto")) or scheme
            host = _first(headers.get("X-Forwarded-Host")) or host
        return f"{scheme.lower()}://{host}"

    def allow(self, request: web.BaseRequest) -> bool:
        """Whether ``request`` may upgrade."""
        origin = request.headers.get("Origin")
        if origin is None or self._allowed == "*":
            return True
        if self._allowed is None:
            theirs = _origin(origin)
            return theirs is not None and theirs == _origin(self.own(request))
        if origin.strip().lower() == "null":
            return self._null
        return _origin(origin) in self._allowed


# Headers a page may not set itself (the Fetch standard's forbidden request-header names),
# and those a proxy sets: never taken from the query unless listed explicitly.
_FORBIDDEN: Final = frozenset(
    {
        "accept-charset",
        "accept-encoding",
        "access-control-request-headers",
        "access-control-request-method",
        "connection",
        "content-length",
        "cookie",
        "cookie2",
        "date",
        "dnt",
        "expect",
        "host",
        "keep-alive",
        "origin",
        "referer",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "via",
        "x-http-method",
        "x-http-method-override",
        "x-method-override",
        "forwarded",
        "x-real-ip",
    }
)
_FORBIDDEN_PREFIXES: Final = ("proxy-", "sec-", "x-forwarded-")


class QueryHeaders:
    """Which ``X-Websocket-Header-<Name>`` query parameters become headers (spec 1.3).

    ``allow=None`` (the default): any name but those a browser page may not set itself
    (``Cookie``, ``Host``, ``Origin``, ``Sec-*``, ``Proxy-*``...: the Fetch standard's
    forbidden names) and those a proxy sets (``Forwarded``, ``X-Forwarded-*``,
    ``X-Real-IP``). A list: only these names (any case). Either way the neffos.js
    reconnect count (``X-Websocket-Reconnect``) is taken, and a header the request
    carries already is never replaced nor repeated: the query adds, it does not override.
    """

    __slots__ = ("_allow",)

    def __init__(self, allow: Iterable[str] | None = None) -> None:
        if isinstance(allow, str):
            raise ValueError(f"query_headers takes a list of header names, not {allow!r}")
        self._allow = None if allow is None else frozenset(name.lower() for name in allow)

    def allows(self, name: str) -> bool:
        """Whether the query may set the header ``name``."""
        lower = name.lower()
        if lower == "x-websocket-reconnect":
            return True
        if self._allow is not None:
            return lower in self._allow
        return lower not in _FORBIDDEN and not lower.startswith(_FORBIDDEN_PREFIXES)

    def apply(self, request: web.Request) -> web.Request:
        """``request`` with its allowed query headers added (itself if there are none)."""
        prefix = len(QUERY_HEADER_PREFIX)
        present = request.headers
        extra = [
            (name, value)
            for key, value in request.query.items()
            if len(key) > prefix
            and key[:prefix].lower() == QUERY_HEADER_PREFIX
            and (name := key[prefix:]) not in present
            and self.allows(name)
        ]
        if not extra:
            return request
        headers = CIMultiDict(request.headers)
        for name, value in extra:
            headers.add(name, value)
        return request.clone(headers=headers)


_ANY = QueryHeaders()


def with_query_headers(request: web.Request, allow: Iterable[str] | None = None) -> web.Request:
    """The request with its ``X-Websocket-Header-<Name>`` query parameters as headers.

    Browsers cannot set headers on a websocket, so neffos.js sends them this way
    (spec 1.3). ``allow``: the header names that may come this way (any case); by default
    any name but those a page could not set on a request itself and those of proxies
    (:class:`QueryHeaders`). A header the request has already is kept as it is. The server
    does this before ``id_generator`` (with its ``query_headers``); call it in a middleware
    (which runs earlier) to read such a header there, e.g. an ``Authorization`` token.
    """
    return (_ANY if allow is None else QueryHeaders(allow)).apply(request)


def offered_protocols(request: web.BaseRequest) -> list[str]:
    """The subprotocols the client offered (``Sec-WebSocket-Protocol``), in its order.

    A browser can put a token there (``new WebSocket(url, ["access_token", token])``; the
    server answers with the one it serves, ``Server(protocols=["access_token"])``) and
    read it in ``on_connect`` or ``id_generator``; see ``docs/deploying.md``.
    """
    return [
        proto.strip()
        for header in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ())
        for proto in header.split(",")
        if proto.strip()
    ]


def size_limits(
    headers: Mapping[str, str], max_message_size: int, compress: bool
) -> tuple[int, int]:
    """``(aiohttp's max_msg_size, the connection's own check)`` for a connection whose
    messages may be ``max_message_size`` bytes, exactly, with or without compression
    (``headers``: the upgrade request's; the own check is 0 when aiohttp's is exact).

    aiohttp refuses a frame whose payload *reaches* its limit, and an inflated message
    *larger* than it; and it applies one limit to both the compressed frame and the
    inflated message, though a message deflate cannot shrink grows a little. So without
    permessage-deflate its limit is one more than ours, and with it, roomier by deflate's
    worst growth, and the connection checks the inflated size
    (:func:`~wsmvc.protocol.exceeds`).
    """
    offer = headers.get("Sec-WebSocket-Extensions", "")
    if not compress or "permessage-deflate" not in offer.lower():
        return max_message_size + 1, 0
    return max_message_size + max_message_size // 8 + 64, max_message_size


def reconnect_tries(request: web.BaseRequest) -> int:
    """How many times neffos.js tried to reconnect before this request (its
    ``X-Websocket-Reconnect`` header; 0 if absent or not a number)."""
    value = request.headers.get(RECONNECT_HEADER)
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


class Upgrade:
    """What the server checks of an upgrade request and what it takes from it: the
    origin (:class:`Origins`), the subprotocols it serves (``protocols``), the query
    headers (:class:`QueryHeaders`)."""

    __slots__ = ("_query", "origins", "protocols")

    def __init__(
        self,
        allowed_origins: Iterable[str] | Literal["*"] | None,
        trust_forwarded: bool = False,
        query_headers: Iterable[str] | None = None,
        protocols: Iterable[str] = (),
    ) -> None:
        if isinstance(protocols, str):
            raise ValueError(f"protocols takes a list of subprotocol names, not {protocols!r}")
        self.origins = Origins(allowed_origins, trust_forwarded=trust_forwarded)
        self.protocols = tuple(protocols)
        self._query = QueryHeaders(query_headers)

    def refusal(self, request: web.BaseRequest) -> web.Response | None:
        """The answer that refuses ``request`` (logged), or ``None`` to go on: 403 for an
        origin not allowed, 400 for subprotocols offered none of which is served."""
        origins = self.origins
        if not origins.allow(request):
            log.warning(
                "refused websocket from origin %r (the server's: %r): not in allowed_origins%s",
                shorten(request.headers.get("Origin", "")),
                shorten(origins.own(request)),
                _PROXY_HINT if origins.same_origin and not origins.trust_forwarded else "",
            )
            return web.Response(status=403, text="origin not allowed\n")
        if self.protocols:
            offered = offered_protocols(request)
            if offered and not any(p in self.protocols for p in offered):
                # Their values are not logged: they may carry a token.
                log.warning(
                    "refused websocket offering %d subprotocol(s), none of %r",
                    len(offered),
                    self.protocols,
                )
                return web.Response(status=400, text="no acceptable subprotocol\n")
        return None

    def prepare(self, request: web.Request) -> web.Request:
        """The request to upgrade: with its allowed query headers; without a subprotocol
        offer when the server serves none (aiohttp would log the offer, maybe a token)."""
        request = self._query.apply(request)
        if not self.protocols and hdrs.SEC_WEBSOCKET_PROTOCOL in request.headers:
            headers = CIMultiDict(request.headers)
            del headers[hdrs.SEC_WEBSOCKET_PROTOCOL]
            request = request.clone(headers=headers)
        return request


_PROXY_HINT: Final = (
    " (behind a proxy that terminates TLS or rewrites Host, pass Server(trust_forwarded=True)"
    " and have the proxy set X-Forwarded-Proto and X-Forwarded-Host)"
)


async def declare_no_context_takeover_on(
    request: web.Request, response: web.StreamResponse
) -> None:
    """An ``on_response_prepare`` hook: a websocket upgrade's permessage-deflate answer says
    ``server_no_context_takeover``. aiohttp answers the client's offer as it is; every
    message of ours is compressed without context, which RFC 7692 §7.1.1.1 lets the
    server declare unasked."""
    extensions = response.headers.get("Sec-WebSocket-Extensions")
    if extensions is not None and isinstance(response, web.WebSocketResponse):
        response.headers["Sec-WebSocket-Extensions"] = declare_no_context_takeover(extensions)
