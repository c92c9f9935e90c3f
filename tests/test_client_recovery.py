"""The reconnecting Python client and connection state recovery (docs/recovery.md,
"Clients"), against real servers on loopback: TCP connections killed from the server side
(its transport aborted, no close frame) while messages flow both ways, servers without
recovery, windows that pass, returns the server refuses. Each test asserts what the
application sees: its handlers' messages (all, in order, once), its events (no forced
event for a recovered loss), its connection id, and what the server counted."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

import wsmvc
from wsmvc import (
    AskTimeout,
    Backoff,
    CloseReason,
    ConnectionClosed,
    Message,
    NSConn,
    ReconnectingClient,
    Recovery,
    Reject,
    Server,
)

from .conftest import Serve
from .test_reconnect import FAST, Log, T, client_table

log = logging.getLogger(__name__)
ROOMY = Recovery(max_messages=4000)  # the 1,000 messages and the notes fit


def drop(server: Server, conn_id: str, *, reset: bool = False) -> None:
    """The network loses ``conn_id``'s TCP connection: its transport is aborted, server
    side (no close frame either way); ``reset``: with a TCP reset, so what is still in
    the client's socket unread is lost too."""
    (conn,) = server.get_connections(conn_id)
    assert conn.request is not None and conn.request.transport is not None
    _abort(conn.request.transport, reset)


def drop_client(client: ReconnectingClient) -> None:
    """The client's side of the network fails: its socket is reset (what it has not
    read yet is lost, and the server sees a reset)."""
    conn = client.conn
    assert conn is not None
    transport = conn._ws._conn.transport  # type: ignore[union-attr]
    assert transport is not None
    _abort(transport, True)


def _abort(transport: asyncio.BaseTransport, reset: bool) -> None:
    if reset:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


class Gate:
    """Upgrades answered 503 while closed: the server is out of the client's reach."""

    def __init__(self) -> None:
        self.closed = False
        self.refused = 0
        self.refusing = asyncio.Event()  # an upgrade was refused

    def app(self) -> web.Application:
        @web.middleware
        async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
            if self.closed:
                self.refused += 1
                self.refusing.set()
                return web.Response(status=503)
            return await handler(request)  # type: ignore[no-any-return]

        return web.Application(middlewares=[gate])


async def when_changed(changed: asyncio.Event, done: Callable[[], bool]) -> None:
    """Wait (at most ``T`` seconds) until ``done()``, looking again each time ``changed``
    is set."""

    async def wait() -> None:
        while not done():
            changed.clear()
            await changed.wait()

    await asyncio.wait_for(wait(), T)


class Counted:
    """A server's record of what clients sent it: ``note`` bodies in arrival order."""

    def __init__(self) -> None:
        self.notes: list[int] = []
        self.changed = asyncio.Event()
        self.gone: list[str] = []  # on_disconnect ids

    def note(self, ns: NSConn, msg: Message) -> None:
        self.notes.append(int(msg.body))
        self.changed.set()

    async def until(self, count: int) -> None:
        await when_changed(self.changed, lambda: len(self.notes) >= count)

    async def until_gone(self, conn_id: str) -> None:
        await when_changed(self.changed, lambda: conn_id in self.gone)

    def server(self, recovery: Recovery | None = ROOMY, **kw: Any) -> Server:
        def on_disconnect(conn: wsmvc.Conn) -> None:
            self.gone.append(conn.id)
            self.changed.set()

        events = {"note": self.note, "echo": lambda ns, msg: b"echo:" + msg.body}
        return Server(
            {"chat": events}, recovery=recovery, heartbeat=None, on_disconnect=on_disconnect, **kw
        )


def numbered(n: int) -> Message:
    return Message(namespace="chat", room="r", event="n", body=str(n).encode())


class Received:
    """The client's handler of ``n``: every number, in order of arrival."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.changed = asyncio.Event()

    def __call__(self, ns: NSConn, msg: Message) -> None:
        self.numbers.append(int(msg.body))
        self.changed.set()

    async def until(self, count: int) -> None:
        await when_changed(self.changed, lambda: len(self.numbers) >= count)


@pytest.mark.parametrize("how", ["server aborts", "server resets", "client resets"])
async def test_a_client_back_within_the_window_loses_nothing_either_way(
    serve: Serve, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sender broadcasts 1,000 numbered messages to the client's room; the TCP connection
    is killed after the 310th (``how``), while more go on; the client emits numbered
    notes before the loss (without waiting: some are in flight when it dies), while it
    reconnects, and after. Back within the window: its handler saw 1..1000 in order, none
    twice; the server got every note once, in order; no forced event ran, on either side;
    the same connection id, ``client.recovered``."""
    caplog.set_level(logging.INFO, "wsmvc")
    counted = Counted()
    server = counted.server()
    url = await serve(server)
    got = Received()
    log_ = Log()
    started = time.perf_counter()
    client = await wsmvc.dial(
        url, client_table(log_, "chat", n=got), reconnect=FAST, **log_.events()
    )
    async with client:
        chat = await client.connect("chat")
        await chat.join_room("r")
        first_id = client.id
        log_.entries.clear()

        for n in range(1, 1001):
            await server.broadcast(numbered(n))
            if n <= 310:
                chat.emit("note", str(n))  # not awaited: some are on the wire at the loss
            if n % 20 == 0:
                await asyncio.sleep(0)  # the client reads some, the server some notes
            if n == 310:  # not right after a yield: the last ones are in the sockets
                if how == "client resets":
                    drop_client(client)
                else:
                    drop(server, first_id, reset=how == "server resets")
                await log_.until(("lost", CloseReason.CONNECTION_LOST))
                assert client.reconnecting and not client.connected
                for note in range(311, 411):
                    chat.emit("note", str(note))  # they wait for the connection
        await log_.until("restored")
        for n in range(411, 511):
            chat.emit("note", str(n))

        await got.until(1000)
        await counted.until(510)
        elapsed = time.perf_counter() - started
        assert got.numbers == list(range(1, 1001))
        assert counted.notes == list(range(1, 511))
        assert log_.entries == [("lost", CloseReason.CONNECTION_LOST), ("retry", 1), "restored"]
        assert client.recovered and client.reconnects == 1
        assert client.id == first_id
        (conn,) = server.connections
        assert conn.id == first_id
        assert [ns.id for ns in server.room_members("chat", "r")] == [first_id]
        assert counted.gone == []
        assert (await chat.ask("echo", "still", timeout=T)).body == b"echo:still"
        again = [r.getMessage() for r in caplog.records if "recovered, " in r.getMessage()]
        log.info("1,000 messages, %s: %.3f s; %s", how, elapsed, again)


async def test_an_ask_in_flight_and_one_made_while_away_are_answered_once_back(
    serve: Serve,
) -> None:
    """An ask waiting when the connection dies keeps waiting (the server answers it after
    the return); an ask and emits made while reconnecting wait, in order, and are
    answered; the server's ask of the client made while it is away reaches it once back."""
    release = asyncio.Event()
    started = asyncio.Event()
    order: list[str] = []

    async def slow(ns: NSConn, msg: Message) -> bytes:
        started.set()
        await release.wait()
        return b"late"

    def record(ns: NSConn, msg: Message) -> bytes:
        order.append(msg.text)
        return b"ok:" + msg.body

    server = Server({"chat": {"slow": slow, "record": record}}, recovery=Recovery(), heartbeat=None)
    url = await serve(server)
    log_ = Log()
    table = {"chat": {"question": lambda ns, msg: b"answer to " + msg.body}}
    async with await wsmvc.dial(url, table, reconnect=FAST, **log_.events()) as client:
        chat = await client.connect("chat")
        pending = asyncio.ensure_future(chat.ask("slow", timeout=T))
        await asyncio.wait_for(started.wait(), T)
        drop(server, client.id)
        await log_.until(("lost", CloseReason.CONNECTION_LOST))
        (conn,) = server.connections
        ns = conn.namespace("chat")
        assert ns is not None
        server_ask = asyncio.ensure_future(ns.ask("question", "q", timeout=T))
        chat.emit("record", "1")
        queued = asyncio.ensure_future(chat.ask("record", "2", timeout=T))
        await asyncio.sleep(0)  # the ask is queued (it runs up to its wait)
        chat.emit("record", "3")
        release.set()
        assert (await asyncio.wait_for(pending, T)).body == b"late"
        assert (await asyncio.wait_for(queued, T)).body == b"ok:2"
        assert (await asyncio.wait_for(server_ask, T)).body == b"answer to q"
        assert (await chat.ask("record", "4", timeout=T)).body == b"ok:4"
        assert order == ["1", "2", "3", "4"]
        assert client.recovered
        assert "restored" in log_.entries


async def test_a_server_without_recovery_gives_a_new_connection_restored(serve: Serve) -> None:
    """No recovery frame: the loss is today's (forced events at once, a new id, the
    namespaces and rooms restored); what was sent while reconnecting goes after the
    restore."""
    counted = Counted()
    server = counted.server(recovery=None)
    url = await serve(server)
    log_ = Log()
    async with await wsmvc.dial(
        url, client_table(log_, "chat"), reconnect=FAST, **log_.events()
    ) as client:
        chat = await client.connect("chat")
        await chat.join_room("r")
        first_id = client.id
        log_.entries.clear()
        drop(server, first_id)
        await log_.until(("lost", CloseReason.CONNECTION_LOST))
        chat.emit("note", "1")
        await log_.until("restored")
        await counted.until(1)
        assert counted.notes == [1]
        assert not client.recovered
        assert client.id != first_id
        assert log_.entries == [
            "chat _OnRoomLeft r forced",
            "chat _OnNamespaceDisconnect forced",
            ("lost", CloseReason.CONNECTION_LOST),
            ("retry", 1),
            "chat _OnNamespaceConnected",
            "chat _OnRoomJoined r",
            "restored",
        ]
        assert [ns.id for ns in server.room_members("chat", "r")] == [client.id]


async def test_a_client_back_after_the_servers_window_gets_a_new_connection(
    serve: Serve,
) -> None:
    """The server keeps the connection 0.3 s; the client is out of reach longer (its
    upgrades get 503 until the server gave the connection up): the server's answer says
    new connection, so the kept one ends then (its forced events, its ask fails), and
    namespaces and rooms are restored on the new one; what waited goes after."""
    counted = Counted()
    gate = Gate()
    server = counted.server(recovery=Recovery(window=0.3))
    url = await serve(server, app=gate.app())
    log_ = Log()
    async with await wsmvc.dial(
        url, client_table(log_, "chat"), reconnect=FAST, **log_.events()
    ) as client:
        chat = await client.connect("chat")
        await chat.join_room("r")
        first_id = client.id
        log_.entries.clear()
        silent = asyncio.ensure_future(chat.ask("note", "0", timeout=T))  # no answer comes
        await counted.until(1)
        gate.closed = True
        drop(server, first_id)
        await log_.until(("lost", CloseReason.CONNECTION_LOST))
        chat.emit("note", "1")
        await counted.until_gone(first_id)  # the server's window passed
        assert not silent.done()  # still kept on the client's side
        gate.closed = False
        await log_.until("restored")
        await counted.until(2)
        assert counted.notes == [0, 1]
        try:
            await asyncio.wait_for(silent, T)
        except ConnectionClosed:
            pass
        else:
            raise AssertionError("the ask of the connection that ended did not fail")
        assert not client.recovered
        assert client.id != first_id
        entries = [e for e in log_.entries if not (isinstance(e, tuple) and e[0] == "retry")]
        assert entries == [
            ("lost", CloseReason.CONNECTION_LOST),
            "chat _OnRoomLeft r forced",
            "chat _OnNamespaceDisconnect forced",
            "chat _OnNamespaceConnected",
            "chat _OnRoomJoined r",
            "restored",
        ]
        assert [ns.id for ns in server.room_members("chat", "r")] == [client.id]


async def test_the_clients_own_window_ends_the_kept_connection(serve: Serve) -> None:
    """Out of reach for longer than the client's window (``Recovery(window=...)``): the
    kept connection ends on the client's side then (its forced events, asks fail); once
    the server is reachable the client dials a new connection and restores."""
    counted = Counted()
    gate = Gate()
    server = counted.server()
    url = await serve(server, app=gate.app())
    log_ = Log()
    async with await wsmvc.dial(
        url,
        client_table(log_, "chat"),
        reconnect=FAST,
        recovery=Recovery(window=0.2),
        **log_.events(),
    ) as client:
        chat = await client.connect("chat")
        await chat.join_room("r")
        first_id = client.id
        log_.entries.clear()
        gate.closed = True
        drop(server, first_id)
        await log_.until("chat _OnNamespaceDisconnect forced")
        assert gate.refused > 0 and not client.connected
        gate.closed = False
        await log_.until("restored")
        assert not client.recovered and client.id != first_id
        assert "chat _OnRoomJoined r" in log_.entries


async def test_a_server_refusing_the_return_ends_the_kept_connection(serve: Serve) -> None:
    """The server gave the connection up and refuses the new one (``Reject``): the client
    gives up, and its kept connection ends then (forced events, queued asks fail)."""
    refusing = False

    def on_connect(conn: wsmvc.Conn) -> None:
        if refusing:
            raise Reject("banned")

    counted = Counted()
    gate = Gate()
    server = counted.server(recovery=Recovery(window=0.2), on_connect=on_connect)
    url = await serve(server, app=gate.app())
    log_ = Log()
    client = await wsmvc.dial(url, client_table(log_, "chat"), reconnect=FAST, **log_.events())
    chat = await client.connect("chat")
    first_id = client.id
    gate.closed = True
    drop(server, first_id)
    await log_.until(("lost", CloseReason.CONNECTION_LOST))
    queued = asyncio.ensure_future(chat.ask("echo", "x", timeout=T))
    await counted.until_gone(first_id)
    refusing = True
    gate.closed = False
    await asyncio.wait_for(client.wait_closed(), T)
    assert isinstance(client.error, Reject)
    try:
        await asyncio.wait_for(queued, T)
    except ConnectionClosed:
        pass
    else:
        raise AssertionError("the queued ask did not fail")
    assert "chat _OnNamespaceDisconnect forced" in log_.entries
    assert [e[0] for e in log_.entries if isinstance(e, tuple)][-1] == "gave up"


async def test_recovery_none_never_asks(serve: Serve) -> None:
    """``recovery=None``: the upgrade asks nothing, the server keeps nothing, a loss is
    today's (forced events at once)."""
    counted = Counted()
    server = counted.server()
    url = await serve(server)
    log_ = Log()
    async with await wsmvc.dial(
        url, client_table(log_, "chat"), reconnect=FAST, recovery=None, **log_.events()
    ) as client:
        await client.connect("chat")
        (conn,) = server.connections
        assert conn.recovery is None
        log_.entries.clear()
        drop(server, client.id)
        await log_.until("restored")
        assert log_.entries[0] == "chat _OnNamespaceDisconnect forced"
        assert not client.recovered


async def test_queue_limit_bounds_what_waits_and_zero_refuses(serve: Serve) -> None:
    """While reconnecting at most ``queue_limit`` messages wait (then ConnectionClosed);
    ``queue_limit=0`` refuses every one, as before recovery."""
    counted = Counted()
    gate = Gate()
    server = counted.server()
    url = await serve(server, app=gate.app())
    for limit in (2, 0):
        log_ = Log()
        client = await wsmvc.dial(
            url, {"chat": {}}, reconnect=FAST, queue_limit=limit, **log_.events()
        )
        async with client:
            chat = await client.connect("chat")
            gate.closed = True
            drop(server, client.id)
            await log_.until(("lost", CloseReason.CONNECTION_LOST))
            for n in range(limit):
                chat.emit("note", str(n))
            try:
                chat.emit("note", "too many")
            except ConnectionClosed as exc:
                assert "reconnecting" in str(exc)
            else:
                raise AssertionError("an emit past the limit was taken")
            try:
                await chat.ask("echo", "x", timeout=T)
            except ConnectionClosed:
                pass
            else:
                raise AssertionError("an ask past the limit was taken")
            gate.closed = False
            await log_.until("restored")
            assert (await chat.ask("echo", "x", timeout=T)).body == b"echo:x"
    assert counted.notes == [0, 1]


async def test_a_queued_ask_times_out_while_waiting(serve: Serve) -> None:
    """An ask made while reconnecting fails with AskTimeout when the connection is not
    back within its timeout, counted from the call; it is never sent."""
    counted = Counted()
    gate = Gate()
    server = counted.server()
    url = await serve(server, app=gate.app())
    log_ = Log()
    async with await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, **log_.events()) as client:
        chat = await client.connect("chat")
        gate.closed = True
        drop(server, client.id)
        await log_.until(("lost", CloseReason.CONNECTION_LOST))
        try:
            await chat.ask("note", "1", timeout=0.1)
        except AskTimeout:
            pass
        else:
            raise AssertionError("no AskTimeout")
        gate.closed = False
        await log_.until("restored")
        chat.emit("note", "2")
        await counted.until(1)
        assert counted.notes == [2]


async def test_close_while_kept_runs_the_forced_events(serve: Serve) -> None:
    """``client.close()`` while the connection is kept ends it for good: its forced
    events run, its asks fail."""
    gate = Gate()
    server = Counted().server()
    url = await serve(server, app=gate.app())
    log_ = Log()
    client = await wsmvc.dial(
        url,
        client_table(log_, "chat"),
        reconnect=Backoff(initial=0.02, maximum=0.1),
        **log_.events(),
    )
    chat = await client.connect("chat")
    pending = asyncio.ensure_future(chat.ask("echo", "x", timeout=None))
    await asyncio.sleep(0)
    gate.closed = True
    drop(server, client.id)
    await log_.until(("lost", CloseReason.CONNECTION_LOST))
    await asyncio.wait_for(gate.refusing.wait(), T)
    await asyncio.wait_for(client.close(), T)
    assert "chat _OnNamespaceDisconnect forced" in log_.entries
    assert pending.done()
    assert isinstance(pending.exception(), ConnectionClosed) or pending.result().body == b"echo:x"


async def test_a_silently_dead_path_is_noticed_by_the_heartbeat_and_recovered(
    serve: Serve,
) -> None:
    """The server stops reading the connection (a path that drops everything one way, no
    FIN, no RST): the client's heartbeat gets no pong and counts the connection lost;
    its return takes the connection over from the server (which never saw it go), and
    what was broadcast meanwhile arrives once, in order."""
    counted = Counted()
    server = counted.server()
    url = await serve(server)
    got = Received()
    log_ = Log()
    async with await wsmvc.dial(
        url, {"chat": {"n": got}}, reconnect=FAST, heartbeat=0.2, **log_.events()
    ) as client:
        chat = await client.connect("chat")
        await chat.join_room("r")
        first_id = client.id
        (conn,) = server.connections
        assert conn.request is not None and conn.request.transport is not None
        conn.request.transport.pause_reading()
        await server.broadcast(numbered(1))
        await log_.until(("lost", CloseReason.CONNECTION_LOST))
        for n in range(2, 6):
            await server.broadcast(numbered(n))
        chat.emit("note", "7")
        await log_.until("restored")
        await got.until(5)
        await counted.until(1)
        assert got.numbers == [1, 2, 3, 4, 5]
        assert counted.notes == [7]
        assert client.recovered and client.id == first_id
        assert counted.gone == []


async def test_a_handler_awaiting_an_ask_across_the_loss_gets_its_answer(serve: Serve) -> None:
    """A client handler waits for its own ask of the server when the connection dies (the
    helper reader sees the loss, not the serving task): once recovered the answer reaches
    that handler on the new websocket, and the connection goes on."""
    release = asyncio.Event()
    asked = asyncio.Event()

    async def slow(ns: NSConn, msg: Message) -> bytes:
        asked.set()
        await release.wait()
        return b"late"

    server = Server(
        {"chat": {"slow": slow, "echo": lambda ns, msg: b"echo:" + msg.body}},
        recovery=Recovery(),
        heartbeat=None,
    )
    url = await serve(server)
    answers: list[bytes] = []
    done = asyncio.Event()

    async def work(ns: NSConn, msg: Message) -> None:
        answers.append((await ns.ask("slow", timeout=T)).body)
        done.set()

    log_ = Log()
    async with await wsmvc.dial(
        url, {"chat": {"work": work}}, reconnect=FAST, **log_.events()
    ) as client:
        chat = await client.connect("chat")
        (conn,) = server.connections
        ns = conn.namespace("chat")
        assert ns is not None
        ns.emit("work")
        await asyncio.wait_for(asked.wait(), T)
        drop(server, client.id)
        await log_.until(("lost", CloseReason.CONNECTION_LOST))
        assert not done.is_set()
        release.set()  # the server answers while the client is away: kept for it
        await log_.until("restored")
        await asyncio.wait_for(done.wait(), T)
        assert answers == [b"late"]
        assert (await chat.ask("echo", "after", timeout=T)).body == b"echo:after"
        assert client.recovered


async def test_the_options_are_checked(serve: Serve) -> None:
    """``recovery`` and ``queue_limit`` only mean something with ``reconnect``; a
    ``queue_limit`` must be a whole number, 0 or more."""
    server = Counted().server()
    url = await serve(server)
    with pytest.raises(TypeError, match="reconnect"):
        await wsmvc.dial(url, {"chat": {}}, recovery=Recovery(window=5))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="reconnect"):
        await wsmvc.dial(url, {"chat": {}}, queue_limit=3)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="0 or more"):
        await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, queue_limit=-1)
    with pytest.raises(TypeError, match="whole number"):
        await wsmvc.dial(url, {"chat": {}}, reconnect=FAST, queue_limit=True)
    async with await wsmvc.dial(url, {"chat": {}}) as plain:  # never reconnects: never asks
        (conn,) = server.connections
        assert conn.id == plain.id and conn.recovery is None
