"""The upgrade and the neffos handshake of issue 11, against real servers on 127.0.0.1.

* ``protocols=``: subprotocol negotiation, so a browser can carry a token in
  ``Sec-WebSocket-Protocol`` (aiohttp's client offers them as a browser does), read with
  ``offered_protocols`` in ``on_connect``; the agreed one is ``conn.protocol``.
* ``fire_disconnect_always``: ``on_disconnect`` for connections ``on_connect`` refused.
* The origin check compares scheme, host and port; ``trust_forwarded`` takes the server's
  own scheme and host from ``X-Forwarded-Proto``/``X-Forwarded-Host`` behind a proxy.
* ``query_headers``: which ``X-Websocket-Header-*`` query parameters become headers; by
  default none that a page could not set itself, and never over a real header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

import wsmvc
from wsmvc import Conn, Message, NSConn, Reject, Server, with_query_headers
from wsmvc.upgrade import Origins, QueryHeaders, offered_protocols

from .wire_support import Serve, T, expect, expect_close, handshake, http_url, show

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJl"  # a JWT's characters


# -------------------------------------------------------------------------------------------
# subprotocols
# -------------------------------------------------------------------------------------------


def token_server(**options: Any) -> tuple[Server, list[Conn]]:
    """The documented pattern: the browser offers ``["access_token", <token>]``; the
    server serves ``access_token`` and reads the token in ``on_connect``."""
    accepted: list[Conn] = []

    def on_connect(conn: Conn) -> None:
        assert conn.request is not None
        token = next((p for p in offered_protocols(conn.request) if p != "access_token"), None)
        if token != TOKEN:
            raise Reject("bad token")
        conn.store["user"] = "ann"
        accepted.append(conn)

    def whoami(ns: NSConn, msg: Message) -> str:
        return f"{ns.conn.store['user']} over {ns.conn.protocol}"

    server = Server(
        {"default": {"whoami": whoami}},
        protocols=["access_token"],
        on_connect=on_connect,
        **options,
    )
    return server, accepted


@pytest.mark.parametrize(
    "offer",
    [("access_token", TOKEN), (TOKEN, "access_token")],
    ids=["marker-first", "token-first"],
)
async def test_a_token_in_the_subprotocols_authenticates_a_browser_like_client(
    serve: Serve, session: aiohttp.ClientSession, offer: tuple[str, str]
) -> None:
    server, accepted = token_server()
    url = await serve(server)
    async with session.ws_connect(url, protocols=offer) as ws:
        assert ws.protocol == "access_token"  # never the token: it is not echoed
        await handshake(ws)
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
        await expect(ws, "$c;;;;;;")
        await ws.send_str("$1;default;;whoami;0;0;")
        await expect(ws, "$1;default;;whoami;0;0;ann over access_token")
    assert [c.protocol for c in accepted] == ["access_token"]


@pytest.mark.parametrize(
    "offer",
    [("access_token", "wrong"), ("access_token",)],
    ids=["wrong-token", "no-token"],
)
async def test_a_wrong_or_missing_token_is_refused_in_the_handshake(
    serve: Serve, session: aiohttp.ClientSession, offer: tuple[str, ...]
) -> None:
    server, accepted = token_server()
    url = await serve(server)
    async with session.ws_connect(url, protocols=offer) as ws:
        await ws.send_str("M")
        await expect(ws, "Hbad token")
        await expect_close(ws)
    assert accepted == []


async def test_a_client_offering_only_other_subprotocols_gets_400(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser would fail the connection anyway (the server must agree to one of its
    offer); the offer is not logged, it may be a token."""
    server, _ = token_server()
    url = await serve(server)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(url, protocols=("graphql-ws", TOKEN))
    assert refused.value.status == 400
    assert "none of ('access_token',)" in caplog.text
    assert TOKEN not in caplog.text


async def test_a_client_offering_no_subprotocol_has_none(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    url = await serve(Server({"default": {"p": lambda ns, msg: str(ns.conn.protocol)}}))
    async with session.ws_connect(url) as ws:
        assert ws.protocol is None
        await handshake(ws)
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
        await expect(ws, "$c;;;;;;")
        await ws.send_str("$1;default;;p;0;0;")
        await expect(ws, "$1;default;;p;0;0;None")


async def test_a_server_serving_no_subprotocol_does_not_log_an_offer(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp logs an offer it cannot agree to, values included: a token would end up in
    the log. A server that serves none drops the offer first (as before, no protocol is
    agreed; a browser that offered one then fails the connection itself)."""
    caplog.set_level(logging.DEBUG)
    url = await serve(Server({"default": {}}))
    async with session.ws_connect(url, protocols=("access_token", TOKEN)) as ws:
        assert ws.protocol is None
        await handshake(ws)
    assert TOKEN not in caplog.text


async def test_the_python_client_sees_the_agreed_subprotocol(serve: Serve) -> None:
    """``conn.protocol`` on a client connection too (aiohttp's ``ws_connect`` with
    ``protocols=``, the client connection wrapping it)."""
    server, _ = token_server()
    url = await serve(server)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, protocols=("access_token", TOKEN))
        await handshake(ws)
        await ws.close()
    seen: list[str | None] = []

    def on_connect(conn: Conn) -> None:
        seen.append(conn.protocol)

    url2 = await serve(Server({"default": {}}, on_connect=on_connect, protocols=["v2", "v1"]))
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url2, protocols=("v1", "v2"))
        assert ws.protocol == "v1"  # the client's first that the server serves
        await handshake(ws)
        await ws.close()
    assert seen == ["v1"]


def test_protocols_is_a_list_not_a_string() -> None:
    with pytest.raises(ValueError, match="protocols takes a list"):
        Server({"default": {}}, protocols="access_token")


# -------------------------------------------------------------------------------------------
# on_disconnect for refused connections
# -------------------------------------------------------------------------------------------


class Hooks:
    """``on_connect`` refusing as told, recording the connections of both hooks."""

    def __init__(self, refuse: Callable[[Conn], Awaitable[None] | None]) -> None:
        self.refuse = refuse
        self.connected: list[Conn] = []
        self.disconnected: list[Conn] = []

    async def on_connect(self, conn: Conn) -> None:
        self.connected.append(conn)
        result = self.refuse(conn)
        if result is not None:
            await result

    def on_disconnect(self, conn: Conn) -> None:
        self.disconnected.append(conn)


def by_reject(conn: Conn) -> None:
    raise Reject("no")


def by_error(conn: Conn) -> None:
    raise RuntimeError("boom")


def after_a_write(conn: Conn) -> None:
    conn.write(Message(event="hello"))  # acknowledges early (A<id>), as in Go
    raise Reject("no after all")


async def accept(conn: Conn) -> None:
    return None


REFUSALS = {"reject": by_reject, "error": by_error, "after-a-write": after_a_write}


async def dial_refused(url: str) -> None:
    try:
        client = await wsmvc.dial(url, {"default": {}}, timeout=T)
    except (Reject, wsmvc.ConnectionClosed):
        return
    # Acknowledged before the refusal: the server closes it instead.
    await asyncio.wait_for(client.wait_closed(), T)
    await client.close()


@pytest.mark.parametrize("refusal", list(REFUSALS))
@pytest.mark.parametrize("always", [False, True], ids=["default", "fire_disconnect_always"])
async def test_on_disconnect_for_refused_connections_only_when_asked(
    serve: Serve, caplog: pytest.LogCaptureFixture, refusal: str, always: bool
) -> None:
    hooks = Hooks(REFUSALS[refusal])
    server = Server(
        {"default": {}},
        on_connect=hooks.on_connect,
        on_disconnect=hooks.on_disconnect,
        fire_disconnect_always=always,
    )
    url = await serve(server)
    await dial_refused(url)
    [conn] = hooks.connected
    await asyncio.wait_for(conn.wait_closed(), T)  # after on_disconnect, had it to run
    assert hooks.disconnected == ([conn] if always else [])
    assert server.connections == []


@pytest.mark.parametrize("always", [False, True], ids=["default", "fire_disconnect_always"])
async def test_an_accepted_connection_gets_on_disconnect_once_either_way(
    serve: Serve, always: bool
) -> None:
    hooks = Hooks(accept)
    server = Server(
        {"default": {}},
        on_connect=hooks.on_connect,
        on_disconnect=hooks.on_disconnect,
        fire_disconnect_always=always,
    )
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {}})
    await client.close()
    [conn] = hooks.connected
    await asyncio.wait_for(conn.wait_closed(), T)
    assert hooks.disconnected == [conn]


async def test_a_client_that_never_sent_M_gets_neither_hook(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """``on_connect`` never ran for it, so even ``fire_disconnect_always`` runs no
    ``on_disconnect``."""
    hooks = Hooks(accept)
    server = Server(
        {"default": {}},
        on_connect=hooks.on_connect,
        on_disconnect=hooks.on_disconnect,
        fire_disconnect_always=True,
        handshake_timeout=0.2,
        id_generator=lambda request: "silent",
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        msg = await expect_close(ws)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008, show(msg)
    # The server's side ends once its serving task ran out; a second, accepted connection
    # after it gives the test a point where the first is surely done.
    client = await wsmvc.dial(url, {"default": {}})
    await client.close()
    [accepted] = hooks.connected
    await asyncio.wait_for(accepted.wait_closed(), T)
    assert hooks.disconnected == [accepted]


async def test_a_refused_native_connection_gets_on_disconnect_when_asked(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    hooks = Hooks(by_reject)
    server = Server(
        {"": {"_OnNativeMessage": lambda ns, msg: None}},
        on_connect=hooks.on_connect,
        on_disconnect=hooks.on_disconnect,
        fire_disconnect_always=True,
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        msg = await expect_close(ws)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008, show(msg)
    [conn] = hooks.connected
    await asyncio.wait_for(conn.wait_closed(), T)
    assert hooks.disconnected == [conn]


# -------------------------------------------------------------------------------------------
# origins: scheme, host and port
# -------------------------------------------------------------------------------------------


async def upgrade_status(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    try:
        async with session.ws_connect(url, headers=headers) as ws:
            await handshake(ws)
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


def netloc_of(url: str) -> str:
    return url.removeprefix("ws://").split("/", 1)[0]


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://{netloc}", 101),
        ("HTTP://{NETLOC}", 101),  # case does not matter
        ("http://{netloc}/", 101),
        ("https://{netloc}", 403),  # the scheme differs: before, this was let in
        ("http://{host}:1", 403),  # another port
        ("http://localhost:{port}", 403),  # another host name
        ("http://{host}", 403),  # port 80
        ("null", 403),
        ("garbage", 403),
        ("http://{netloc}.evil.example", 403),
    ],
)
async def test_the_default_origin_check_compares_scheme_host_and_port(
    serve: Serve, session: aiohttp.ClientSession, origin: str, status: int
) -> None:
    url = await serve(Server({"default": {}}))
    netloc = netloc_of(url)
    host, port = netloc.split(":")
    headers = {"Origin": origin.format(netloc=netloc, NETLOC=netloc.upper(), host=host, port=port)}
    assert await upgrade_status(session, url, headers) == status


@pytest.mark.parametrize(
    ("host_header", "origin", "status"),
    [
        ("chat.example.com", "http://chat.example.com", 101),
        ("chat.example.com", "http://chat.example.com:80", 101),  # the default port
        ("chat.example.com:80", "http://chat.example.com", 101),
        ("Chat.Example.com", "http://chat.example.COM", 101),
        ("chat.example.com:8080", "http://chat.example.com", 403),
        ("[::1]:8080", "http://[::1]:8080", 101),
        ("[::1]:8080", "http://[::1]:8081", 403),
    ],
)
async def test_default_ports_and_hosts_are_compared_as_origins(
    serve: Serve, session: aiohttp.ClientSession, host_header: str, origin: str, status: int
) -> None:
    url = await serve(Server({"default": {}}))
    headers = {"Host": host_header, "Origin": origin}
    assert await upgrade_status(session, url, headers) == status


@pytest.mark.parametrize(
    ("forwarded", "origin", "trusted", "untrusted"),
    [
        # TLS ends at the proxy: the page is https, the request reaching the server is http.
        ({"X-Forwarded-Proto": "https"}, "https://{netloc}", 101, 403),
        ({"X-Forwarded-Proto": "https"}, "http://{netloc}", 403, 101),
        # The proxy rewrites Host.
        (
            {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.com"},
            "https://chat.example.com",
            101,
            403,
        ),
        (
            {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.com"},
            "https://evil.example",
            403,
            403,
        ),
        # Several proxies: the first value is the client-facing one.
        (
            {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "a.example, b.internal"},
            "https://a.example",
            101,
            403,
        ),
        ({}, "http://{netloc}", 101, 101),  # trusted, but no proxy said anything
        ({"X-Forwarded-Proto": "wss"}, "https://{netloc}", 101, 403),  # some proxies say so
    ],
)
async def test_trust_forwarded_takes_the_proxys_scheme_and_host(
    serve: Serve,
    session: aiohttp.ClientSession,
    forwarded: dict[str, str],
    origin: str,
    trusted: int,
    untrusted: int,
) -> None:
    for trust, status in ((True, trusted), (False, untrusted)):
        url = await serve(Server({"default": {}}, trust_forwarded=trust))
        headers = {**forwarded, "Origin": origin.format(netloc=netloc_of(url))}
        assert await upgrade_status(session, url, headers) == status, (trust, headers)


async def test_a_refusal_behind_a_tls_proxy_says_what_to_do(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve(Server({"default": {}}))
    headers = {"X-Forwarded-Proto": "https", "Origin": f"https://{netloc_of(url)}"}
    assert await upgrade_status(session, url, headers) == 403
    assert "not in allowed_origins" in caplog.text
    assert "trust_forwarded=True" in caplog.text


async def test_a_huge_origin_is_logged_cut_short(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve(Server({"default": {}}))
    origin = "https://" + "o" * 6000 + ".example"
    assert await upgrade_status(session, url, {"Origin": origin}) == 403
    assert max(len(r.getMessage()) for r in caplog.records) < 1000


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://app.example.com", 101),
        ("https://app.example.com:443", 101),
        ("HTTPS://APP.EXAMPLE.COM", 101),
        ("http://app.example.com", 403),  # the scheme
        ("https://app.example.com:8443", 403),  # the port
        ("http://localhost:8080", 101),
        ("http://localhost", 403),
        ("null", 101),
        ("https://other.example.com", 403),
    ],
)
async def test_listed_origins_compare_as_origins(
    serve: Serve, session: aiohttp.ClientSession, origin: str, status: int
) -> None:
    allowed = ["https://app.example.com/", "http://localhost:8080", "null"]
    url = await serve(Server({"default": {}}, allowed_origins=allowed))
    assert await upgrade_status(session, url, {"Origin": origin}) == status


@pytest.mark.parametrize("entry", ["app.example.com", "*.example.com", "ftp://x.example", ""])
def test_an_entry_that_is_not_an_origin_fails_when_the_server_is_made(entry: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        Server({"default": {}}, allowed_origins=[entry])


def test_a_single_origin_string_is_refused() -> None:
    with pytest.raises(ValueError, match="list of origins"):
        Server({"default": {}}, allowed_origins="https://app.example.com")


async def test_no_origin_and_any_origin(serve: Serve, session: aiohttp.ClientSession) -> None:
    url = await serve(Server({"default": {}}))
    assert await upgrade_status(session, url, {}) == 101  # not a browser
    url = await serve(Server({"default": {}}, allowed_origins="*"))
    assert await upgrade_status(session, url, {"Origin": "https://anywhere.example"}) == 101


# -------------------------------------------------------------------------------------------
# headers from the query
# -------------------------------------------------------------------------------------------


class Seen:
    """An ``id_generator`` that records the headers of each upgrade."""

    def __init__(self) -> None:
        self.headers: list[dict[str, list[str]]] = []

    def __call__(self, request: web.Request) -> str:
        self.headers.append({k.lower(): request.headers.getall(k) for k in request.headers})
        return str(len(self.headers))


def query(**headers: str) -> str:
    return "&".join(f"X-Websocket-Header-{k.replace('_', '-')}={v}" for k, v in headers.items())


async def headers_for(
    serve: Serve,
    session: aiohttp.ClientSession,
    params: str,
    *,
    real: dict[str, str] | None = None,
    **options: Any,
) -> dict[str, list[str]]:
    seen = Seen()
    url = await serve(Server({"default": {}}, id_generator=seen, **options))
    async with session.ws_connect(f"{url}?{params}", headers=real) as ws:
        await handshake(ws)
    return seen.headers[0]


async def test_application_headers_come_from_the_query_by_default(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """neffos.js in a browser sends its ``headers`` option this way: unchanged."""
    got = await headers_for(
        serve,
        session,
        query(Authorization="Bearer%20t0k", X_Username="ann", X_Websocket_Reconnect="2")
        + "&x-websocket-header-x-lower=yes",
    )
    assert got["authorization"] == ["Bearer t0k"]
    assert got["x-username"] == ["ann"]
    assert got["x-websocket-reconnect"] == ["2"]
    assert got["x-lower"] == ["yes"]


@pytest.mark.parametrize(
    "name",
    [
        "Cookie",
        "Host",
        "Origin",
        "Referer",
        "Connection",
        "Upgrade",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
        "Sec-Fetch-Site",
        "Proxy-Authorization",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "Forwarded",
        "X-Real-IP",
        "Transfer-Encoding",
        "Content-Length",
        "X-HTTP-Method-Override",
    ],
)
async def test_headers_a_page_could_not_set_never_come_from_the_query_by_default(
    serve: Serve, session: aiohttp.ClientSession, name: str
) -> None:
    got = await headers_for(serve, session, f"X-Websocket-Header-{name}=forged")
    assert "forged" not in [v for values in got.values() for v in values], got


async def test_the_query_never_replaces_nor_repeats_a_real_header(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    got = await headers_for(
        serve,
        session,
        query(X_Username="mallory", Authorization="forged"),
        real={"X-Username": "ann", "Authorization": "Bearer real"},
    )
    assert got["x-username"] == ["ann"]
    assert got["authorization"] == ["Bearer real"]


async def test_an_allow_list_takes_only_its_names(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    got = await headers_for(
        serve,
        session,
        query(X_Token="t", X_Username="ann", X_Websocket_Reconnect="3", x_forwarded_host="a.b"),
        query_headers=["x-token", "X-Forwarded-Host"],
    )
    assert got["x-token"] == ["t"]
    assert got["x-forwarded-host"] == ["a.b"]  # listed explicitly: the application's call
    assert "x-username" not in got
    assert got["x-websocket-reconnect"] == ["3"]  # neffos.js' reconnect count, always


async def test_an_empty_allow_list_turns_query_headers_off(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    reconnects: list[int] = []
    got = await headers_for(
        serve,
        session,
        query(Authorization="x", X_Websocket_Reconnect="4"),
        query_headers=(),
        on_connect=lambda conn: reconnects.append(conn.reconnect_tries),
    )
    assert "authorization" not in got
    assert reconnects == [4]


async def test_a_middleware_with_an_allow_list(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """``with_query_headers(request, allow=...)`` in a middleware; the server's own pass
    afterwards finds the headers there and adds nothing twice."""
    users: list[str | None] = []

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request = with_query_headers(request, allow=["X-User"])
        users.append(request.headers.get("X-User"))
        return await handler(request)

    seen = Seen()
    app = web.Application(middlewares=[auth])
    url = await serve(Server({"default": {}}, id_generator=seen), app=app)
    async with session.ws_connect(f"{url}?{query(X_User='ann', X_Other='o')}") as ws:
        await handshake(ws)
    assert users == ["ann"]
    assert seen.headers[0]["x-user"] == ["ann"]
    assert seen.headers[0]["x-other"] == ["o"]  # the server's default adds the rest


async def test_a_forged_forwarded_host_in_the_query_does_not_pass_the_origin_check(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A page on evil.example cannot make its own origin the server's by putting
    ``X-Forwarded-Host``/``-Proto`` in the query, even when a middleware turned the query
    into headers before the check and the server trusts a proxy."""

    @web.middleware
    async def early(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await handler(with_query_headers(request))

    app = web.Application(middlewares=[early])
    url = await serve(Server({"default": {}}, trust_forwarded=True), app=app)
    forged = f"{url}?{query(X_Forwarded_Host='evil.example', X_Forwarded_Proto='https')}"
    assert await upgrade_status(session, forged, {"Origin": "https://evil.example"}) == 403


def test_query_headers_is_a_list_not_a_string() -> None:
    with pytest.raises(ValueError, match="list of header names"):
        Server({"default": {}}, query_headers="Authorization")


def test_the_policy_on_its_own() -> None:
    default = QueryHeaders()
    assert default.allows("Authorization") and default.allows("x-custom")
    assert not default.allows("SEC-WEBSOCKET-KEY") and not default.allows("x-forwarded-port")
    listed = QueryHeaders(["Authorization"])
    assert listed.allows("authorization") and not listed.allows("X-Custom")
    assert listed.allows("X-Websocket-Reconnect")
    assert Origins(["https://a.example"]).same_origin is False
    assert Origins(None).same_origin is True


async def test_http_only_endpoints_answer_as_before(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """HEAD and other methods are not upgrades: no origin or subprotocol check."""
    url = await serve(Server({"default": {}}, protocols=["x"]))
    async with session.head(http_url(url), headers={"Origin": "https://evil.example"}) as r:
        assert r.status == 204
    async with session.post(http_url(url)) as r:
        assert r.status == 405
