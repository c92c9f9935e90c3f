"""The reconnecting client (``dial(..., reconnect=Backoff(...))``) against real servers on
loopback: a server restarted on the same port, a TCP connection killed from the server
side, a port that refuses, refusals that stop it. Every wait is on an event, bounded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import wsmvc
from wsmvc import (
    Backoff,
    BadNamespace,
    BadRoom,
    CloseReason,
    ConnectionClosed,
    EventError,
    Message,
    NSConn,
    ReconnectingClient,
    Reject,
    Server,
)

from .conftest import Serve

T = 5.0  # seconds for anything that must happen
FAST = Backoff(initial=0.02, maximum=0.1)


class Log:
    """What a client saw, in order: its handlers' events and its reconnect events; each
    entry can be awaited."""

    def __init__(self) -> None:
        self.entries: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, entry: Any) -> None:
        self.entries.append(entry)
        self._changed.set()

    async def until(self, entry: Any, count: int = 1) -> None:
        """Wait until ``entry`` was seen ``count`` times."""

        async def seen() -> None:
            while self.entries.count(entry) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(seen(), T)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {entry!r} (x{count}) within {T}s: {self.entries}") from None

    def handler(self, label: str) -> Callable[[NSConn, Message], None]:
        def record(ns: NSConn, msg: Message) -> None:
            forced = " forced" if msg.forced else ""
            self.add(f"{label} {msg.event} {msg.room}{forced}".replace("  ", " ").strip())

        return record

    def events(self) -> dict[str, Any]:
        """The reconnect callbacks of ``dial``, recording into this log."""
        return {
            "on_lost": lambda client, reason: self.add(("lost", reason)),
            "on_retry": lambda client, attempt, delay, error: self.add(("retry", attempt)),
            "on_restored": lambda client: self.add("restored"),
            "on_restore_failed": lambda client, ns, room, error: self.add(
                ("refused", ns, room, str(error))
            ),
            "on_gave_up": lambda client, error: self.add(("gave up", error)),
        }


SYSTEM = (
    "_OnNamespaceConnected",
    "_OnRoomJoined",
    "_OnRoomLeft",
    "_OnNamespaceDisconnect",
)


def client_table(log: Log, *namespaces: str, **extra: Any) -> dict[str, dict[str, Any]]:
    return {
        ns: {**{event: log.handler(ns) for event in SYSTEM}, "news": log.handler(ns), **extra}
        for ns in namespaces
    }


class Site:
    """An app on a fixed loopback port, stopped and started again (a server restart)."""

    def __init__(self) -> None:
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self, server: Server) -> str:
        app = web.Application()
        server.mount(app, "/ws")
        runner = web.AppRunner(app, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.port = runner.addresses[0][1]
        self.runner = runner
        return f"ws://127.0.0.1:{self.port}/ws"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    s = Site()
    yield s
    await s.stop()


def kill_tcp(server: Server) -> None:
    """Abort the TCP connection of every client, server side: no close frame."""
    for conn in server.connections:
        assert conn.request is not None and conn.request.transport is not None
        conn.request.transport.abort()


# -- Backoff ------------------------------------------------------------------------------


def test_backoff_grows_to_its_maximum_and_jitter_only_shortens() -> None:
    b = Backoff(initial=0.5, maximum=4.0, factor=2.0, jitter=0.5)
    assert [b.bounds(n)[1] for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.bounds(3) == (2.0, 4.0)
    assert b.delay(3, rand=0.0) == 4.0
    assert b.delay(3, rand=1.0) == 2.0
    assert b.bounds(10_000) == (2.0, 4.0)  # factor ** n past a float's range
    assert Backoff(jitter=0).delay(0) == 0.5
    assert Backoff().attempts is None


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"initial": 0}, ValueError),
        ({"initial": -1.0}, ValueError),
        ({"maximum": 0.1, "initial": 0.5}, ValueError),
        ({"factor": 0.5}, ValueError),
        ({"jitter": 1.5}, ValueError),
        ({"jitter": -0.1}, ValueError),
        ({"attempts": 0}, ValueError),
        ({"maximum": float("inf")}, ValueError),
        ({"initial": "1"}, TypeError),
        ({"attempts": 1.5}, TypeError),
        ({"jitter": True}, TypeError),
    ],
)
def test_backoff_refuses_what_cannot_work(fields: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Backoff(**fields)


async def test_without_reconnect_dial_is_the_plain_client(serve: Serve) -> None:
    url = await serve(Server({"chat": {}}))
    conn = await wsmvc.dial(url, {"chat": {}})
    assert isinstance(conn, wsmvc.ClientConn)
    await conn.close()
    with pytest.raises(TypeError, match="reconnect"):
        await wsmvc.dial(url, {"chat": {}}, on_lost=lambda client, reason: None)  # type: ignore[call-overload]


async def test_the_first_dial_is_not_retried(serve: Serve) -> None:
    def refuse(conn: wsmvc.Conn) -> None:
        raise Reject("not today")

    url = await serve(Server({"chat": {}}, on_connect=refuse))
    with pytest.raises(Reject, match="not today"):
        await wsmvc.dial(url, {"chat": {}}, reconnect=FAST)


# -- restoring ----------------------------------------------------------------------------


async def test_a_restarted_server_gets_the_namespaces_and_rooms_back(site: Site) -> None:
    """The server shuts down; a new one starts on the same port: the application's handles
    work again, its namespaces are connected with their payloads, its rooms joined in the
    order it joined them, and handlers fire on the new connection."""
    log = Log()
    joins: list[tuple[str, str]] = []
    payloads: list[bytes] = []

    def make_server() -> Server:
        def on_connect_ns(ns: NSConn, msg: Message) -> None:
            payloads.append(msg.body)

        def on_join(ns: NSConn, msg: Message) -> None:
            joins.append((ns.namespace, msg.room))

        events = {
            "_OnNamespaceConnect": on_connect_ns,
            "_OnRoomJoin": on_join,
            "echo": lambda ns, msg: b"echo:" + msg.body,
        }
        return Server({"chat": events, "game": events})

    first = make_server()
    url = await site.start(first)
    client = await wsmvc.dial(
        url, client_table(log, "chat", "game"), reconnect=FAST, **log.events()
    )
    assert isinstance(client, ReconnectingClient)
    chat = await client.connect("chat", payload="alice")
    game = await client.connect("game")
    for room in ("r1", "r2"):
        await chat.join_room(room)
    await game.join_room("g1")
    assert (await chat.ask("echo", "1", timeout=T)).body == b"echo:1"
    first_id = client.id
    assert not first.connections[0].was_reconnected

    await site.stop()
    await log.until(("lost", CloseReason.SHUTDOWN))
    assert not client.connected
    assert client.conn is None
    assert client.close_code == 1001
    joins.clear()
    payloads.clear()

    second = make_server()
    await site.start(second)
    await log.until("restored")
    assert client.connected
    assert client.reconnects == 1
    assert client.id != first_id  # the new server chose a new id
    (new,) = second.connections
    assert new.id == client.id
    assert new.was_reconnected  # X-Websocket-Reconnect: <attempt>
    assert payloads == [b"alice", b""]  # in the order connected, with their payloads
    assert joins == [("chat", "r1"), ("chat", "r2"), ("game", "g1")]  # one at a time, in order
    assert [ns.id for ns in second.room_members("chat", "r1")] == [client.id]
    assert [ns.id for ns in second.room_members("chat", "r2")] == [client.id]
    assert [ns.id for ns in second.room_members("game", "g1")] == [client.id]
    assert list(client.namespaces) == ["chat", "game"]
    assert client.namespace("chat") is chat
    assert list(chat.rooms) == ["r1", "r2"]

    # The same handles work on the new connection, both ways.
    assert (await chat.ask("echo", "2", timeout=T)).body == b"echo:2"
    await second.broadcast(Message(namespace="chat", room="r2", event="news", body=b"hi"))
    await log.until("chat news r2")
    chat_r1 = chat.room("r1")
    assert chat_r1 is not None
    chat_r1.emit("echo", "into r1")  # no error: joined on the new connection
    await client.close()
    assert client.closed


async def test_a_killed_tcp_connection_is_lost_then_restored_in_order(serve: Serve) -> None:
    """The events in order: the lost connection's forced events, on_lost, on_retry, the
    restore's local events, on_restored."""
    server = Server({"chat": {}})
    url = await serve(server)
    log = Log()
    async with await wsmvc.dial(
        url, client_table(log, "chat"), reconnect=FAST, **log.events()
    ) as client:
        chat = await client.connect("chat")
        await chat.join_room("r1")
        log.entries.clear()

        kill_tcp(server)
        await log.until("restored")
        assert log.entries == [
            "chat _OnRoomLeft r1 forced",
            "chat _OnNamespaceDisconnect forced",
            ("lost", CloseReason.CONNECTION_LOST),
            ("retry", 1),
            "chat _OnNamespaceConnected",
            "chat _OnRoomJoined r1",
            "restored",
        ]
        assert [ns.id for ns in server.room_members("chat", "r1")] == [client.id]


async def test_what_was_left_or_kicked_is_not_restored(serve: Serve) -> None:
    """Rooms the application left, and a room and a namespace the server took away, are
    not restored; the close of the lost connection forgets nothing."""

    async def kick(ns: NSConn, msg: Message) -> str:
        await ns.leave_room("r2")
        other = ns.conn.namespace("game")
        assert other is not None
        await other.disconnect()
        return "kicked"

    server = Server({"chat": {"kick": kick}, "game": {}})
    url = await serve(server)
    log = Log()
    async with await wsmvc.dial(
        url, client_table(log, "chat", "game"), reconnect=FAST, **log.events()
    ) as client:
        chat = await client.connect("chat")
        game = await client.connect("game")
        for room in ("r1", "r2", "r3"):
            await chat.join_room(room)
        await chat.leave_room("r3")
        await chat.ask("kick", timeout=T)
        await log.until("game _OnNamespaceDisconnect")
        assert list(chat.rooms) == ["r1"]
        assert client.namespace("game") is None

        kill_tcp(server)
        await log.until("restored")
        assert list(client.namespaces) == ["chat"]
        assert list(chat.rooms) == ["r1"]
        assert server.rooms("chat") == ["r1"]
        assert server.namespace_members("game") == []
        with pytest.raises(BadNamespace):
            game.emit("news")
        with pytest.raises(BadNamespace):
            await game.ask("news")


async def test_what_the_server_connected_is_the_servers_to_redo(serve: Serve) -> None:
    """A namespace the server connected (in on_connect) is not restored by the client;
    closing the current connection itself (``client.conn.close()``) makes it reconnect."""
    connections = 0

    async def on_connect(conn: wsmvc.Conn) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await conn.connect("news")

    server = Server({"chat": {}, "news": {}}, on_connect=on_connect)
    url = await serve(server)
    log = Log()
    async with await wsmvc.dial(
        url, client_table(log, "chat", "news"), reconnect=FAST, **log.events()
    ) as client:
        await log.until("news _OnNamespaceConnected")
        await client.connect("chat")
        assert client.conn is not None
        assert client.conn.namespace("news") is not None
        assert list(client.namespaces) == ["chat"]

        await client.conn.close()
        await log.until("restored")
        assert ("lost", CloseReason.CLIENT_CLOSED) in log.entries
        assert client.conn is not None
        assert client.conn.namespace("news") is None
        assert [ns.id for ns in server.namespace_members("chat")] == [client.id]
        assert server.namespace_members("news") == []


async def test_a_refusal_on_restore_is_reported_and_the_rest_restored(serve: Serve) -> None:
    refusing: set[str] = set()

    def on_join(ns: NSConn, msg: Message) -> None:
        if msg.room in refusing:
            raise EventError(f"no {msg.room} now")

    def on_connect_ns(ns: NSConn, msg: Message) -> None:
        if ns.namespace in refusing:
            raise EventError("closed for today")

    events = {"_OnRoomJoin": on_join, "_OnNamespaceConnect": on_connect_ns}
    server = Server({"chat": events, "game": events, "news": events})
    url = await serve(server)
    log = Log()
    async with await wsmvc.dial(
        url, client_table(log, "chat", "game", "news"), reconnect=FAST, **log.events()
    ) as client:
        chat = await client.connect("chat")
        game = await client.connect("game")
        await client.connect("news")
        for room in ("a", "vip", "b"):
            await chat.join_room(room)
        vip = chat.room("vip")
        assert vip is not None
        refusing.update({"vip", "game"})

        kill_tcp(server)
        await log.until("restored")
        refusals = [e for e in log.entries if isinstance(e, tuple) and e[0] == "refused"]
        assert refusals == [
            ("refused", "chat", "vip", "no vip now"),  # chat and its rooms first
            ("refused", "game", None, "closed for today"),
        ]
        assert list(client.namespaces) == ["chat", "news"]
        assert list(chat.rooms) == ["a", "b"]
        assert [ns.id for ns in server.room_members("chat", "b")] == [client.id]
        assert server.room_members("chat", "vip") == []
        with pytest.raises(BadRoom):
            vip.emit("news")
        with pytest.raises(BadNamespace):
            game.emit("news")


async def test_a_refusal_without_its_callback_is_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    refusing = False

    def on_join(ns: NSConn, msg: Message) -> None:
        if refusing:
            raise EventError("full")

    server = Server({"chat": {"_OnRoomJoin": on_join}})
    url = await serve(server)
    restored = asyncio.Event()
    async with await wsmvc.dial(
        url, {"chat": {}}, reconnect=FAST, on_restored=lambda client: restored.set()
    ) as client:
        chat = await client.connect("chat")
        await chat.join_room("r")
        refusing = True
        with caplog.at_level(logging.WARNING, logger="wsmvc"):
            kill_tcp(server)
            await asyncio.wait_for(restored.wait(), T)
        assert "could not restore room 'r' of 'chat': full" in caplog.text
        assert chat.rooms == {}


# -- while the connection is down ---------------------------------------------------------


async def test_without_recovery_asks_in_flight_fail_and_what_is_sent_while_down_waits(
    serve: Serve,
) -> None:
    """A server without recovery: an ask waiting when the connection is lost fails with
    ConnectionClosed at once; until the connection is restored, emits and asks wait and go
    after the restore, in order (docs/client-python.md, "While the connection is down");
    connect and join_room are refused."""
    asked = asyncio.Event()
    release = asyncio.Event()
    got: list[bytes] = []

    async def slow(ns: NSConn, msg: Message) -> bytes:
        asked.set()
        await release.wait()
        return b"late"

    def echo(ns: NSConn, msg: Message) -> bytes:
        got.append(msg.body)
        return b"echo:" + msg.body

    server = Server(
        {"chat": {"slow": slow, "note": lambda ns, msg: got.append(msg.body), "echo": echo}}
    )
    url = await serve(server)
    gate = asyncio.Event()  # holds the reconnect task in on_lost

    async def on_lost(client: ReconnectingClient, reason: CloseReason) -> None:
        await gate.wait()

    client = await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, on_lost=on_lost)
    try:
        chat = await client.connect("chat")
        pending = asyncio.ensure_future(chat.ask("slow", timeout=None))
        await asyncio.wait_for(asked.wait(), T)
        kill_tcp(server)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(pending, T)
        assert not client.connected and client.reconnecting
        chat.emit("note", "while down")
        queued = asyncio.ensure_future(chat.ask("echo", "asked while down", timeout=T))
        await asyncio.sleep(0)  # it waits in the queue
        chat.emit("note", "after the ask")
        with pytest.raises(ConnectionClosed):
            await client.connect("chat")
        with pytest.raises(ConnectionClosed):
            await chat.join_room("r")
        gate.set()
        await asyncio.wait_for(client.wait_connected(), T)
        assert (await asyncio.wait_for(queued, T)).body == b"echo:asked while down"
        chat.emit("note", "after")
        release.set()
        assert (await chat.ask("slow", timeout=T)).body == b"late"
        assert got == [b"while down", b"asked while down", b"after the ask", b"after"]
        assert not client.recovered  # the server offers no recovery
    finally:
        release.set()
        gate.set()
        await client.close()


async def test_ask_tokens_stay_unique_across_reconnects(serve: Serve) -> None:
    tokens: list[str] = []

    def note(ns: NSConn, msg: Message) -> bytes:
        tokens.append(msg.token)
        return b"ok"

    server = Server({"chat": {"note": note}})
    url = await serve(server)
    log = Log()
    async with await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, **log.events()) as client:
        chat = await client.connect("chat")
        for _ in range(3):
            await chat.ask("note", timeout=T)
        kill_tcp(server)
        await log.until("restored")
        for _ in range(3):
            await chat.ask("note", timeout=T)
    assert len(tokens) == 6
    assert len(set(tokens)) == 6


# -- backoff, giving up, closing ----------------------------------------------------------


async def test_the_waits_grow_are_jittered_and_bounded(site: Site) -> None:
    """Against a port that refuses TCP: each attempt comes after its announced delay, the
    delays lie within Backoff.bounds and grow to the maximum; after ``attempts`` the
    client gives up with the last error."""
    backoff = Backoff(initial=0.02, maximum=0.16, factor=2.0, jitter=0.5, attempts=6)
    url = await site.start(Server({"chat": {}}))
    loop = asyncio.get_running_loop()
    retries: list[tuple[float, int, float]] = []  # (when, attempt, delay)
    gave_up: asyncio.Future[BaseException] = loop.create_future()

    def on_retry(client: ReconnectingClient, attempt: int, delay: float, error: Any) -> None:
        retries.append((loop.time(), attempt, delay))

    client = await wsmvc.dial(
        url,
        {"chat": {}},
        reconnect=backoff,
        on_retry=on_retry,
        on_gave_up=lambda client, error: gave_up.set_result(error),
    )
    await site.stop()  # nothing listens there any more
    error = await asyncio.wait_for(gave_up, T)
    finished = loop.time()

    assert isinstance(error, aiohttp.ClientConnectorError)  # connection refused
    assert client.closed
    assert client.error is error
    with pytest.raises(ConnectionClosed, match="gave up"):
        await client.wait_connected()
    await asyncio.wait_for(client.wait_closed(), T)

    assert [attempt for _, attempt, _ in retries] == [1, 2, 3, 4, 5, 6]
    delays = [delay for _, _, delay in retries]
    for n, delay in enumerate(delays):
        low, high = backoff.bounds(n)
        assert low <= delay <= high, (n, delay)
    assert [backoff.bounds(n)[1] for n in range(6)] == [0.02, 0.04, 0.08, 0.16, 0.16, 0.16]
    assert len({round(d / backoff.bounds(n)[1], 9) for n, d in enumerate(delays)}) > 1  # jitter
    # Each attempt came after its delay: the time from one announcement to the next (or to
    # giving up, after the last) is at least that delay (a refused dial takes ~1 ms).
    ends = [when for when, _, _ in retries[1:]] + [finished]
    gaps = [end - when for end, (when, _, _) in zip(ends, retries, strict=True)]
    for gap, delay in zip(gaps, delays, strict=True):
        assert delay - 0.002 <= gap <= delay + 1.0, (gap, delay)
    assert gaps[4] > gaps[0]


async def test_close_during_a_wait_returns_at_once_and_stops(site: Site) -> None:
    url = await site.start(Server({"chat": {}}))
    log = Log()
    client = await wsmvc.dial(
        url, {"chat": {}}, reconnect=Backoff(initial=30.0, maximum=30.0), **log.events()
    )
    await client.connect("chat")
    await site.stop()
    await log.until(("retry", 1))  # now waiting 15-30 s
    await asyncio.wait_for(client.close(), 1.0)
    assert client.closed
    await asyncio.wait_for(client.wait_closed(), T)
    with pytest.raises(ConnectionClosed, match="closed"):
        await client.wait_connected()
    with pytest.raises(ConnectionClosed):
        await client.connect("chat")
    await site.start(Server({"chat": {}}))  # it does not come back
    await client.close()  # idempotent
    assert [e for e in log.entries if e == "restored" or e[0] == "gave up"] == []


async def test_on_lost_may_close_the_client(serve: Serve) -> None:
    """The application decides a loss is final (here: the server kicked it with 4003)."""
    kicked = asyncio.Event()

    async def ban(ns: NSConn, msg: Message) -> None:
        await ns.conn.close(4003, "banned")

    async def on_lost(client: ReconnectingClient, reason: CloseReason) -> None:
        if client.close_code == 4003:
            await client.close()  # from the callback: returns at once
            kicked.set()

    retries: list[int] = []
    url = await serve(Server({"chat": {"ban": ban}}))
    client = await wsmvc.dial(
        url,
        {"chat": {}},
        reconnect=FAST,
        on_lost=on_lost,
        on_retry=lambda client, attempt, delay, error: retries.append(attempt),
    )
    chat = await client.connect("chat")
    chat.emit("ban")
    await asyncio.wait_for(kicked.wait(), T)
    await asyncio.wait_for(client.wait_closed(), T)
    assert client.closed
    assert retries == []


async def test_close_from_a_handler_of_its_connection(serve: Serve) -> None:
    closed = asyncio.Event()
    holder: list[ReconnectingClient] = []

    async def bye(ns: NSConn, msg: Message) -> None:
        await holder[0].close()  # returns at once: the connection's events wait for us
        closed.set()

    server = Server({"chat": {}})
    url = await serve(server)
    client = await wsmvc.dial(url, {"chat": {"bye": bye}}, reconnect=FAST)
    holder.append(client)
    await client.connect("chat")
    await server.broadcast(Message(namespace="chat", event="bye"))
    await asyncio.wait_for(closed.wait(), T)
    await asyncio.wait_for(client.wait_closed(), T)
    assert client.closed
    assert server.connections == []


async def test_cancelled_waiters_do_not_disturb_the_reconnect(site: Site) -> None:
    """A task awaiting the restore is cancelled (and so is one awaiting close()): each
    gets its CancelledError, the client reconnects all the same, the others are woken."""
    url = await site.start(Server({"chat": {}}))
    log = Log()
    client = await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, **log.events())
    chat = await client.connect("chat")
    await site.stop()
    await log.until(("retry", 2))
    cancelled = asyncio.ensure_future(client.wait_connected())
    waiting = asyncio.ensure_future(client.wait_connected())
    await asyncio.sleep(0)  # both wait now
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    server = Server({"chat": {"ping": lambda ns, msg: b"pong"}})
    await site.start(server)
    await asyncio.wait_for(waiting, T)
    assert (await chat.ask("ping", timeout=T)).body == b"pong"

    closing = asyncio.ensure_future(client.close())
    await asyncio.sleep(0)
    closing.cancel()  # the caller gives up waiting; the close goes on
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(client.wait_closed(), T)
    assert client.closed
    assert server.connections == []


async def test_cancelling_the_reconnect_task_closes_the_client(site: Site) -> None:
    """The event loop shutting down cancels every task, the client's too: it releases its
    connection and HTTP session and the cancellation goes on."""
    url = await site.start(Server({"chat": {}}))
    log = Log()
    client = await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, **log.events())
    await client.connect("chat")
    await site.stop()
    await log.until(("retry", 1))
    task = client._task
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.closed
    await asyncio.wait_for(client.wait_closed(), T)
    assert client._http.closed


# -- refusals stop it -----------------------------------------------------------------------


def gated_app(statuses: list[int]) -> tuple[web.Application, list[int]]:
    """An app whose upgrades are answered with the next of ``statuses`` while any are
    left; the statuses it answered are listed."""
    answered: list[int] = []

    @web.middleware
    async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
        if statuses:
            status = statuses.pop(0)
            answered.append(status)
            return web.Response(status=status)
        return await handler(request)  # type: ignore[no-any-return]

    return web.Application(middlewares=[gate]), answered


async def test_a_403_upgrade_stops_reconnecting(serve: Serve) -> None:
    statuses: list[int] = []
    app, answered = gated_app(statuses)
    server = Server({"chat": {}})
    url = await serve(server, app=app)
    log = Log()
    client = await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, **log.events())
    await client.connect("chat")
    statuses.extend([403, 403, 403])
    kill_tcp(server)
    await asyncio.wait_for(client.wait_closed(), T)
    gave_up = [e for e in log.entries if isinstance(e, tuple) and e[0] == "gave up"]
    assert len(gave_up) == 1
    error = gave_up[0][1]
    assert isinstance(error, aiohttp.WSServerHandshakeError)
    assert error.status == 403
    assert client.error is error
    assert answered == [403]  # one attempt, not three
    assert ("retry", 2) not in log.entries


async def test_a_503_upgrade_is_retried(serve: Serve) -> None:
    statuses: list[int] = []
    app, answered = gated_app(statuses)
    server = Server({"chat": {}})
    url = await serve(server, app=app)
    log = Log()
    async with await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, **log.events()) as client:
        await client.connect("chat")
        statuses.extend([503, 503])  # a proxy in front of a restarting server
        kill_tcp(server)
        await log.until("restored")
        assert answered == [503, 503]
        assert ("retry", 3) in log.entries
        assert server.namespace_members("chat")[0].id == client.id


async def test_the_servers_reject_stops_reconnecting(serve: Serve) -> None:
    refusing = False

    def on_connect(conn: wsmvc.Conn) -> None:
        if refusing:
            raise Reject("banned")

    server = Server({"chat": {}}, on_connect=on_connect)
    url = await serve(server)
    log = Log()
    client = await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, **log.events())
    await client.connect("chat")
    refusing = True
    kill_tcp(server)
    await asyncio.wait_for(client.wait_closed(), T)
    assert isinstance(client.error, Reject)
    assert client.error.reason == "banned"
    assert [e for e in log.entries if isinstance(e, tuple) and e[0] == "retry"] == [("retry", 1)]
