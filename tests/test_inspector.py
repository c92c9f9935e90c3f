"""The inspector (``wsmvc.inspector``): a real server on 127.0.0.1, real clients.

The application's clients and the inspector's user are ``wsmvc.dial`` clients: the user
connects the inspector's namespace on ``/inspector/ws`` as the page does, and reads the
snapshots it is pushed. Nothing sleeps: every wait is for a snapshot that satisfies a
condition, an answer or a close, each with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

import wsmvc
from wsmvc import CloseReason, EventError, Message, NSConn, Server
from wsmvc.inspector import KICKED, NAMESPACE, Inspector, loopback_only
from wsmvc.testing import Inbox

ADMIN = {"X-Admin": "yes"}
WAIT = 5.0
Snapshot = dict[str, Any]


def admin_only(request: web.Request) -> bool:
    return request.headers.get("X-Admin") == "yes"


async def admin_only_async(request: web.Request) -> bool:
    await asyncio.sleep(0)
    return request.headers.get("X-Admin") == "yes"


def raise_lookup(ns: NSConn, msg: Message) -> None:
    raise RuntimeError(f"lookup of {msg.text} failed")


def refuse(ns: NSConn, msg: Message) -> None:
    raise EventError("not allowed")


def app_server(**options: Any) -> Server:
    """The application's server: namespace ``chat`` (``say`` does nothing, ``echo``
    answers the body, ``boom`` raises RuntimeError, ``nope`` answers an error), namespace
    ``news``."""
    handlers = {
        "say": lambda ns, msg: None,
        "echo": lambda ns, msg: msg.body,
        "boom": raise_lookup,
        "nope": refuse,
    }
    return Server({"chat": handlers, "news": {}}, **options)


@attrs.define
class Site:
    server: Server
    inspector: Inspector
    ws: str  # ws://127.0.0.1:<port>
    http: str  # http://127.0.0.1:<port>
    runner: web.AppRunner
    clients: list[wsmvc.ClientConn] = attrs.Factory(list)

    async def user(self, *rooms: str, namespace: str = "chat") -> wsmvc.ClientConn:
        """A client of the application, connected to ``namespace`` and ``rooms``."""
        conn = await wsmvc.dial(self.ws + "/ws", {"chat": {}, "news": {}})
        self.clients.append(conn)
        ns = await conn.connect(namespace)
        for room in rooms:
            await ns.join_room(room)
        return conn

    async def page(self, headers: dict[str, str] = ADMIN) -> Page:
        """An inspector page's connection (what the page's script does)."""
        inbox = Inbox(timeout=WAIT)
        conn = await wsmvc.dial(
            self.ws + "/inspector/ws", {NAMESPACE: inbox.handlers("snapshot")}, headers=headers
        )
        self.clients.append(conn)
        return Page(conn, await conn.connect(NAMESPACE), inbox)


@attrs.define
class Page:
    conn: wsmvc.ClientConn
    ns: Any
    inbox: Inbox

    async def next(self) -> Snapshot:
        msg = await self.inbox.next("snapshot")
        snapshot: Snapshot = json.loads(msg.body)
        return snapshot

    async def until(self, what: str, ok: Callable[[Snapshot], bool]) -> Snapshot:
        """The first snapshot for which ``ok`` holds; AssertionError after WAIT seconds."""
        deadline = time.monotonic() + WAIT
        last: Snapshot | None = None
        while time.monotonic() < deadline:
            try:
                msg = await self.inbox.next("snapshot", max(deadline - time.monotonic(), 0.01))
            except AssertionError:
                break
            last = json.loads(msg.body)
            if ok(last):
                return last
        raise AssertionError(f"no snapshot with {what} within {WAIT}s; the last:\n{last}")


def ids(snapshot: Snapshot) -> list[str]:
    return [item["id"] for item in snapshot["connections"]["items"]]


def room(snapshot: Snapshot, namespace: str, name: str) -> dict[str, Any] | None:
    for item in snapshot["rooms"]["items"]:
        if (item["namespace"], item["name"]) == (namespace, name):
            return dict(item)
    return None


Start = Callable[..., Awaitable[Site]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """``site = await start(server=None, **inspector_options)``: the application's server
    at ``/ws`` and its inspector at ``/inspector`` (check: the ``X-Admin: yes`` header,
    snapshots every 0.1 s unless told), on a free port."""
    sites: list[Site] = []

    async def start_(server: Server | None = None, **options: Any) -> Site:
        server = server if server is not None else app_server()
        options.setdefault("check", admin_only)
        options.setdefault("interval", 0.1)
        app = web.Application()
        server.mount(app, "/ws")
        inspector = Inspector(server, **options)
        inspector.mount(app, "/inspector")
        runner = web.AppRunner(app, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        site = Site(server, inspector, f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}", runner)
        sites.append(site)
        return site

    yield start_
    for site in sites:
        for client in site.clients:
            await client.close()
        await site.runner.cleanup()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, allow_redirects=False) as response,
    ):
        return response.status, await response.text(), response.headers


# -- off by default, and the check -----------------------------------------------------------


async def test_off_by_default_a_server_has_no_inspector_route_and_no_tap() -> None:
    server = app_server()
    app = web.Application()
    server.mount(app, "/ws")
    async with wsmvc.testing.running(app=app, path="/ws") as url:
        base = url.removesuffix("/ws").replace("ws://", "http://")
        for path in ("/inspector", "/inspector/", "/ws/inspector.js"):
            assert (await get(base + path, ADMIN))[0] == 404, path
    assert len(server.handlers.taps) == 0


@pytest.mark.parametrize("check", [admin_only, admin_only_async], ids=["sync", "async"])
async def test_a_refused_check_gets_403_on_every_path_and_on_the_upgrade(
    start: Start, check: Callable[[web.Request], object]
) -> None:
    site = await start(check=check)
    await site.user("lobby")
    for path in ("", "/", "/inspector.js", "/inspector.css", "/ws/wsmvc.js", "/ws"):
        status, text, headers = await get(site.http + "/inspector" + path)
        assert (status, text) == (403, "403: Forbidden\n"), path
        assert headers["Cache-Control"] == "no-store"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await site.page(headers={"X-Admin": "no"})
    assert refused.value.status == 403
    assert site.inspector.pages == 0
    # Allowed, the same paths answer.
    assert (await get(site.http + "/inspector/", ADMIN))[0] == 200
    page = await site.page()
    assert ids(await page.next()) == [site.clients[0].id]


async def test_a_check_that_raises_or_answers_no_bool_refuses_and_is_logged(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: web.Request) -> bool:
        raise RuntimeError("session store down")

    site = await start(check=broken)
    with caplog.at_level(logging.ERROR, "wsmvc"):
        assert (await get(site.http + "/inspector/", ADMIN))[0] == 403
    assert "the check failed on GET /inspector/; refused" in caplog.text
    assert "session store down" in caplog.text

    caplog.clear()
    site = await start(check=lambda request: "yes")
    with caplog.at_level(logging.ERROR, "wsmvc"):
        assert (await get(site.http + "/inspector/", ADMIN))[0] == 403
    assert "the check returned 'yes', not a bool" in caplog.text


async def test_a_check_may_redirect_to_a_login_page(start: Start) -> None:
    def to_login(request: web.Request) -> bool:
        raise web.HTTPFound("/login")

    site = await start(check=to_login)
    status, _, headers = await get(site.http + "/inspector/")
    assert (status, headers["Location"]) == (302, "/login")


async def test_loopback_only_admits_this_machine_but_not_what_came_through_a_proxy(
    start: Start,
) -> None:
    site = await start(check=loopback_only)
    assert (await get(site.http + "/inspector/"))[0] == 200
    assert (await get(site.http + "/inspector/", {"X-Forwarded-For": "203.0.113.9"}))[0] == 403
    assert (await get(site.http + "/inspector/", {"Forwarded": "for=203.0.113.9"}))[0] == 403


async def test_the_page_and_its_files_are_served_from_the_package(start: Start) -> None:
    site = await start()
    status, _, headers = await get(site.http + "/inspector?x=1", ADMIN)
    assert (status, headers["Location"]) == (302, "/inspector/?x=1")
    status, html, headers = await get(site.http + "/inspector/", ADMIN)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="inspector.js"></script>' in html
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    status, script, headers = await get(site.http + "/inspector/inspector.js", ADMIN)
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert "import { dial } from './ws/wsmvc.js';" in script
    assert "innerHTML" not in script  # names come from clients: text only
    status, _, headers = await get(site.http + "/inspector/inspector.css", ADMIN)
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert (await get(site.http + "/inspector/ws/wsmvc.js", ADMIN))[0] == 200


# -- what the snapshots show --------------------------------------------------------------------


async def test_snapshots_follow_connections_namespaces_and_rooms(start: Start) -> None:
    site = await start()
    page = await site.page()
    first = await page.next()
    assert first["connections"] == {"total": 0, "matched": 0, "filter": "", "items": []}
    assert first["pages"] == 1 and first["interval"] == 0.1

    alice = await site.user("lobby", "kitchen")
    bob = await site.user("lobby")
    carol = await site.user(namespace="news")
    snap = await page.until("three connections", lambda s: len(ids(s)) == 3)
    assert ids(snap) == [alice.id, bob.id, carol.id]  # in the order they connected
    assert snap["totals"]["connections"] == 3  # the inspector's own page is not one
    assert len(site.server.connections) == 3
    described = snap["connections"]["items"][0]
    assert described["address"] == "127.0.0.1"
    assert described["userAgent"].startswith("Python/")
    assert described["namespaces"] == [
        {"name": "chat", "rooms": ["lobby", "kitchen"], "roomCount": 2}
    ]
    assert snap["namespaces"] == {
        "total": 2,
        "items": [
            {"name": "chat", "connections": 2, "rooms": 2},
            {"name": "news", "connections": 1, "rooms": 0},
        ],
    }
    assert snap["rooms"]["total"] == 2
    assert snap["rooms"]["items"] == [  # the most populated first
        {"namespace": "chat", "name": "lobby", "count": 2, "members": [alice.id, bob.id]},
        {"namespace": "chat", "name": "kitchen", "count": 1, "members": [alice.id]},
    ]

    await alice.namespace("chat").room("lobby").leave()  # type: ignore[union-attr]
    snap = await page.until(
        "alice out of the lobby",
        lambda s: (
            room(s, "chat", "lobby")
            == {"namespace": "chat", "name": "lobby", "count": 1, "members": [bob.id]}
        ),
    )
    await bob.close()
    snap = await page.until("bob gone", lambda s: ids(s) == [alice.id, carol.id])
    assert room(snap, "chat", "lobby") is None


async def test_messages_are_counted_per_connection_and_namespace_with_rates(start: Start) -> None:
    site = await start()
    page = await site.page()
    await page.next()  # the page is open: from now on messages are counted per connection
    alice = await site.user()
    chat = alice.namespace("chat")
    assert chat is not None
    for n in range(20):
        chat.emit("say", str(n))
    await chat.ask("echo", "last", timeout=WAIT)  # answered: the 20 before were handled
    rates: list[float] = []  # every snapshot's: the deltas between them add up to 22

    def counted(s: Snapshot) -> bool:
        rates.append(s["rates"]["in"])
        return bool(s["connections"]["items"][0]["in"] >= 22)

    snap = await page.until("alice's 22 messages", counted)
    assert snap["totals"]["in"] >= 22
    item = snap["connections"]["items"][0]
    assert item["in"] == 22  # connect + 20 emits + the ask
    assert item["out"] == 1  # the ask's answer (acknowledgements are not events)
    assert max(rates) > 0
    assert set(snap["rates"]["namespaces"]) == {"chat"}


async def test_handler_exceptions_fill_a_bounded_ring_error_answers_are_counted(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    site = await start(max_errors=3)
    alice = await site.user()
    chat = alice.namespace("chat")
    assert chat is not None
    with caplog.at_level(logging.CRITICAL, "wsmvc"):  # wsmvc logs each with its traceback
        for n in range(5):
            with pytest.raises(EventError):
                await chat.ask("boom", f"#{n}", timeout=WAIT)
        with pytest.raises(EventError, match="not allowed"):
            await chat.ask("nope", timeout=WAIT)
    page = await site.page()
    snap = await page.next()  # kept before any page opened
    errors = snap["errors"]
    assert [e["text"] for e in errors] == [f"lookup of #{n} failed" for n in (4, 3, 2)]
    assert errors[0] | {"time": 0} == {
        "time": 0,
        "id": alice.id,
        "namespace": "chat",
        "room": "",
        "event": "boom",
        "type": "RuntimeError",
        "text": "lookup of #4 failed",
    }
    assert abs(errors[0]["time"] - time.time()) < 60
    assert snap["totals"]["errorAnswers"] == 1  # EventError: an answer, not an error


# -- disconnecting ------------------------------------------------------------------------------


async def test_disconnect_closes_that_connection_with_a_reason(start: Start) -> None:
    closed: list[Any] = []
    server = app_server(on_disconnect=lambda conn: closed.append(conn.close_reason))
    site = await start(server)
    page = await site.page()
    alice = await site.user("lobby")
    bob = await site.user("lobby")
    await page.until("both", lambda s: len(ids(s)) == 2)

    answer = await page.ns.ask("disconnect", alice.id, timeout=WAIT)
    assert json.loads(answer.body) == {"closed": 1}
    await asyncio.wait_for(alice.wait_closed(), WAIT)
    assert alice.close_code == 1008
    assert closed == [CloseReason.SERVER_CLOSED]
    snap = await page.until("alice gone", lambda s: ids(s) == [bob.id])
    assert room(snap, "chat", "lobby") == {
        "namespace": "chat",
        "name": "lobby",
        "count": 1,
        "members": [bob.id],
    }
    assert not bob.closed

    with pytest.raises(EventError) as unknown:
        await page.ns.ask("disconnect", alice.id, timeout=WAIT)
    assert str(unknown.value) == f"no connection with id {alice.id!r} on this server"
    assert KICKED == "disconnected from the inspector"


async def test_the_close_frame_says_why(start: Start) -> None:
    site = await start()
    page = await site.page()
    async with aiohttp.ClientSession() as session, session.ws_connect(site.ws + "/ws") as raw:
        await raw.send_str("M")
        assert (await raw.receive_str()).startswith("A")
        snap = await page.until("the raw client", lambda s: len(ids(s)) == 1)
        await page.ns.ask("disconnect", ids(snap)[0], timeout=WAIT)
        frame = await raw.receive(WAIT)
    assert (frame.type, frame.data, frame.extra) == (aiohttp.WSMsgType.CLOSE, 1008, KICKED)


# -- bounds ---------------------------------------------------------------------------------------


async def test_a_snapshot_is_capped_and_says_how_much_it_left_out(start: Start) -> None:
    site = await start(max_connections=5, max_rooms=3, max_members=4)
    users = [await site.user("big", f"own-{n:02}") for n in range(12)]
    page = await site.page()
    snap = await page.until("twelve", lambda s: s["totals"]["connections"] == 12)
    listed = snap["connections"]
    assert (listed["total"], listed["matched"], len(listed["items"])) == (12, 12, 5)
    assert ids(snap) == [user.id for user in users[:5]]
    assert snap["rooms"]["total"] == 13
    assert len(snap["rooms"]["items"]) == 3
    big = snap["rooms"]["items"][0]
    assert (big["name"], big["count"], big["members"]) == ("big", 12, [u.id for u in users[:4]])

    # A connection's rooms: max_members listed, across its namespaces; long names cut.
    long_name = "x" * 100
    many = await site.user("a", "b", "c", long_name)
    news = await many.connect("news")
    await news.join_room("d")
    await page.ns.ask("filter", many.id, timeout=WAIT)
    snap = await page.until("only it", lambda s: ids(s) == [many.id])
    assert snap["connections"]["items"][0]["namespaces"] == [
        {"name": "chat", "rooms": ["a", "b", "c", "x" * 64 + "…"], "roomCount": 4},
        {"name": "news", "rooms": [], "roomCount": 1},
    ]


async def test_many_connections_make_a_snapshot_of_bounded_size(start: Start) -> None:
    site = await start(max_connections=20, max_rooms=10, max_members=5)
    await asyncio.gather(*(site.user("all", f"room-{n}") for n in range(150)))
    page = await site.page()
    msg_body: list[int] = []

    def full(s: Snapshot) -> bool:
        msg_body.append(len(json.dumps(s)))
        return bool(s["totals"]["connections"] == 150)

    snap = await page.until("150 connections", full)
    assert len(snap["connections"]["items"]) == 20
    assert len(snap["rooms"]["items"]) == 10 and snap["rooms"]["total"] == 151
    assert msg_body[-1] < 16_000  # 150 connections or 10,000: the same bound


async def test_snapshots_come_once_an_interval_unless_a_page_asks(start: Start) -> None:
    site = await start(interval=0.3)
    page = await site.page()
    times = [(await page.next())["time"] for _ in range(4)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.3 * 0.9, gaps

    # A page's request brings the next one sooner, but not sooner than interval / 10.
    before = (await page.next())["time"]
    await page.ns.ask("filter", "", timeout=WAIT)
    after = (await page.next())["time"]
    assert after - before >= 0.03 * 0.9


async def test_each_page_has_its_own_filter(start: Start) -> None:
    site = await start()
    alice = await site.user("kitchen")
    bob = await site.user("garden")
    one, two = await site.page(), await site.page()
    assert await one.ns.ask("filter", "KITCH", timeout=WAIT)
    snap = await one.until("the filter", lambda s: s["connections"]["filter"] == "KITCH")
    assert ids(snap) == [alice.id]
    assert (snap["connections"]["total"], snap["connections"]["matched"]) == (2, 1)
    await one.ns.ask("filter", bob.id[:8], timeout=WAIT)
    assert ids(
        await one.until("bob", lambda s: s["connections"]["matched"] == 1 and ids(s) == [bob.id])
    )
    assert ids(await two.next()) == [alice.id, bob.id]


# -- apart from the application -------------------------------------------------------------------


async def test_inspector_pages_never_meet_the_applications_hooks_or_taps(start: Start) -> None:
    seen: list[str] = []
    server = app_server(
        on_connect=lambda conn: seen.append(f"connect {conn.id}"),
        taps=[lambda tapped: seen.append(f"{tapped.direction} {tapped.message.event}")],
    )
    site = await start(server)
    page = await site.page()
    await page.next()
    await page.ns.ask("filter", "x", timeout=WAIT)
    assert seen == []
    assert site.server.connections == []
    assert site.inspector.pages == 1 and site.inspector.path == "/inspector"


async def test_shutdown_closes_the_pages(start: Start) -> None:
    site = await start()
    page = await site.page()
    await page.next()
    await site.runner.cleanup()
    await asyncio.wait_for(page.conn.wait_closed(), WAIT)
    assert page.conn.close_code == 1001
    assert site.inspector.pages == 0


async def test_a_page_that_closes_stops_the_snapshots(start: Start) -> None:
    site = await start()
    page = await site.page()
    await page.next()
    await page.conn.close()
    second = await site.page()  # a new page starts them again
    assert (await second.next())["pages"] == 1


# -- configuration errors -----------------------------------------------------------------------


def test_wrong_arguments_fail_at_once(caplog: pytest.LogCaptureFixture) -> None:
    server = app_server()
    with pytest.raises(TypeError, match="watches a wsmvc Server"):
        Inspector(object(), check=admin_only)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="check must be a function"):
        Inspector(server, check="admin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval must be > 0"):
        Inspector(server, check=admin_only, interval=0)
    with pytest.raises(ValueError, match="connections must be a positive int"):
        Inspector(server, check=admin_only, max_connections=0)
    inspector = Inspector(server, check=admin_only)
    app = web.Application()
    with pytest.raises(ValueError, match="a path of its own"):
        inspector.mount(app, "/")
    inspector.mount(app, "/ops/inspector/")
    assert inspector.path == "/ops/inspector"
    with pytest.raises(RuntimeError, match="mounted already, at '/ops/inspector'"):
        inspector.mount(app, "/again")
