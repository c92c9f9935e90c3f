"""Adversarial lifecycle tests: closes, disconnects, joins and cancellations at every await.

Each test drives a real aiohttp server on 127.0.0.1 with a real client (a raw aiohttp
websocket, ``RawWS`` on a plain socket, or ``wsmvc.dial``) into a crossing of two flows,
then checks the promises of ``docs/lifecycle.md`` and ``docs/ask-reply.md``: every
disconnect event once, after the running handler, never nested; no ghost in the registry;
asks that fail at once; ``close()`` returning after the events; the close frame after what
was written before it; no task left behind; no StateError and no traceback in the log for
anything a client or an application can do. Nothing sleeps to hope: the tests wait on
events and conditions, with timeouts.

Each guards a crossing that nothing else tests; most were bugs when written. The one
once marked ``xfail(strict=True)`` (a burst to a reading client cut off by the send-buffer
limit) passes since issue 9.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

import wsmvc
from wsmvc import (
    AskTimeout,
    Conn,
    ConnectionClosed,
    EventError,
    Message,
    NSConn,
    Server,
)
from wsmvc.states import ConnState, NsState, RoomState, StateError

from .wire_support import (
    RawWS,
    Serve,
    T,
    barrier,
    expect,
    expect_close,
    handshake,
    ready,
    recv,
    recv_text,
    show,
)

NEVER = 60.0  # an ask timeout that means "would wait": the test fails long before it

SYSTEM_EVENTS = (
    "_OnNamespaceConnected",
    "_OnNamespaceDisconnect",
    "_OnRoomJoin",
    "_OnRoomJoined",
    "_OnRoomLeave",
    "_OnRoomLeft",
)

DEFLATE = pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])


# -------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------


class Events:
    """What hooks and handlers did: counted, in order, which ones ran inside another (a
    handler that starts while another is still running is *nested*), and a way to wait
    for one of them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.counts: Counter[str] = Counter()
        self.running: list[str] = []
        self.nested: list[tuple[str, list[str]]] = []
        self._waiters: dict[str, asyncio.Event] = {}

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.counts[line] += 1
        event = self._waiters.get(line)
        if event is not None:
            event.set()

    def enter(self, line: str) -> None:
        """A handler starts (it calls :meth:`leave` when it returns)."""
        if self.running:
            self.nested.append((line, list(self.running)))
        self.running.append(line)
        self(line)

    def leave(self, line: str) -> None:
        self.running.remove(line)

    async def reached(self, line: str) -> None:
        if line in self.lines:
            return
        event = self._waiters.setdefault(line, asyncio.Event())
        await asyncio.wait_for(event.wait(), T)

    def after(self, line: str) -> list[str]:
        """What happened after the first ``line``."""
        return self.lines[self.lines.index(line) + 1 :]


def recorder(events: Events, *names: str) -> dict[str, Any]:
    """Synchronous system-event handlers that record ``<event>`` or ``<event>:<room>``."""

    def record(ns: NSConn, msg: Message) -> None:
        events(f"{msg.event}:{msg.room}" if msg.room else msg.event)

    return dict.fromkeys(names or SYSTEM_EVENTS, record)


def capture(conns: list[Conn]) -> Callable[[Conn], None]:
    """An ``on_connect`` that keeps the server side of each connection."""

    def on_connect(conn: Conn) -> None:
        conns.append(conn)

    return on_connect


async def until(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Wait until ``condition()`` holds (checked every 5 ms); fail after ``T`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + T
    while not condition():
        assert loop.time() < deadline, f"{what} never held"
        await asyncio.sleep(0.005)


async def turns(n: int = 10) -> None:
    """Let every task that is ready run (``n`` loop iterations, no wall-clock wait)."""
    for _ in range(n):
        await asyncio.sleep(0)


def no_ghosts(server: Server, *namespaces: str, rooms: tuple[str, ...] = ()) -> None:
    """Nothing of any connection is left in the server's registry."""
    assert server.connections == []
    for namespace in namespaces:
        assert server.namespace_members(namespace) == [], namespace
        assert server.rooms(namespace) == [], namespace
        for room in rooms:
            assert server.room_members(namespace, room) == [], (namespace, room)


def wsmvc_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR (and worse) records of wsmvc's logger, with their exception's type."""
    found = []
    for record in caplog.records:
        if record.name.startswith("wsmvc") and record.levelno >= logging.ERROR:
            exc = record.exc_info[1] if record.exc_info else None
            found.append(f"{record.getMessage()} [{type(exc).__name__ if exc else ''}]")
    return found


def no_state_errors(caplog: pytest.LogCaptureFixture) -> None:
    """A StateError reaching a log is a bug: never for what a client or an app can do."""
    for record in caplog.records:
        exc = record.exc_info[1] if record.exc_info else None
        assert not isinstance(exc, StateError), record.getMessage()
        assert "StateError" not in record.getMessage(), record.getMessage()


async def request_of(ws: Any, pattern: str) -> str:
    """Read one frame of an aiohttp client websocket matching ``<token>;<pattern>``; the
    token (the server's requests have digits only)."""
    frame = await recv_text(ws)
    m = re.fullmatch(rf"([0-9]+);{pattern}", frame)
    assert m, frame
    return m[1]


async def raw_request_of(raw: RawWS, pattern: str) -> str:
    """:func:`request_of` for a :class:`RawWS`."""
    frame = await raw.recv_text()
    m = re.fullmatch(rf"([0-9]+);{pattern}", frame)
    assert m, frame
    return m[1]


def text(payload: str) -> bytes:
    """A whole masked text frame, to send several in one TCP write with ``send_raw``."""
    return RawWS.frame(payload.encode(), 0x1)


def close_frame(code: int) -> bytes:
    return RawWS.frame(struct.pack("!H", code), 0x8)


async def raw_ready(url: str, *rooms: str, deflate: bool = False) -> RawWS:
    """A :class:`RawWS` after the handshake, connected to ``default``, in ``rooms``."""
    raw = await RawWS.open(url, deflate=deflate)
    await raw.send("M")
    assert (await raw.recv_text()).startswith("A")
    await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
    assert await raw.recv_text() == "$c;;;;;;"
    for room in rooms:
        await raw.send(f"$j;default;{room};_OnRoomJoin;0;0;")
        assert await raw.recv_text() == "$j;;;;;;"
    return raw


@asynccontextmanager
async def running(server: Server, path: str = "/ws") -> AsyncIterator[str]:
    """A server the test shuts down itself, to look at what is left afterwards."""
    app = web.Application()
    server.mount(app, path)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"ws://127.0.0.1:{runner.addresses[0][1]}{path}"
    finally:
        await runner.cleanup()


async def leftover_tasks() -> list[asyncio.Task[Any]]:
    """Tasks other than the test's own still pending once a few loop turns passed."""
    me = asyncio.current_task()
    left: list[asyncio.Task[Any]] = []
    for _ in range(50):
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not left:
            break
        await asyncio.sleep(0.01)
    return left


async def outcome(aw: Awaitable[Any]) -> str:
    """How an awaitable ended: ``ok``, or the name of what it raised."""
    try:
        await aw
    except BaseException as exc:  # the point is to name it
        return type(exc).__name__
    return "ok"


# -------------------------------------------------------------------------------------------
# a server-side namespace disconnect crossing a close, a handler, another disconnect
# -------------------------------------------------------------------------------------------


async def test_a_kick_then_a_close_in_one_handler_fires_the_namespace_events(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A handler kicks its client from the namespace (``await ns.disconnect()``: the client
    agrees, the namespace is removed, its events wait for the handler) and then closes the
    connection. The namespace's events must run once, before ``on_disconnect``."""
    events = Events()

    async def kick(ns: NSConn, msg: Message) -> None:
        await ns.disconnect(timeout=T)
        events("kicked")
        await ns.conn.close(4000)

    conns: list[Conn] = []
    server = Server(
        {"default": {**recorder(events), "kick": kick}},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "r")
        await ws.send_str(";default;;kick;0;0;")
        token = await request_of(ws, "default;;_OnNamespaceDisconnect;0;0;")
        await ws.send_str(f"{token};;;;;;")
        msg = await expect_close(ws)
        assert msg.data == 4000, show(msg)
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert events.after("kicked") == [
        "_OnRoomLeave:r",
        "_OnRoomLeft:r",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    no_ghosts(server, "default", rooms=("r",))


@pytest.mark.parametrize("how", ["conn.close", "server.close"])
async def test_a_kick_agreed_during_a_handler_then_a_close_fires_the_events(
    serve: Serve, how: str
) -> None:
    """Another task kicks the client (``ns.disconnect()``) while a slow handler of that
    connection runs; the client agrees. Before the handler returns the connection is
    closed (``conn.close()`` from a third task, or the server's shutdown). Once the handler
    returns, the kicked namespace's events must run once, then ``on_disconnect``."""
    events = Events()
    release = asyncio.Event()

    async def slow(ns: NSConn, msg: Message) -> None:
        events("slow starts")
        await release.wait()
        events("slow returns")

    conns: list[Conn] = []
    server = Server(
        {"default": {**recorder(events), "slow": slow}},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
        # The raw client never answers the close frame: server.close() waits for the
        # close handshake until it is given up (close_timeout + 1 s), within T.
        close_timeout=1.0,
    )
    url = await serve(server)
    raw = await raw_ready(url, "r")
    try:
        await raw.send(";default;;slow;0;0;")
        await events.reached("slow starts")
        conn = conns[0]
        ns = conn.namespace("default")
        assert ns is not None
        kicking = asyncio.create_task(ns.disconnect(timeout=T))
        token = await raw_request_of(raw, "default;;_OnNamespaceDisconnect;0;0;")
        await raw.send(f"{token};;;;;;")
        await until(lambda: server.namespace_members("default") == [], "the kick")
        closing = asyncio.create_task(conn.close(4000) if how == "conn.close" else server.close())
        await until(lambda: conn.closed)
        release.set()
        await asyncio.wait_for(closing, T)
        await asyncio.wait_for(kicking, T)
    finally:
        release.set()
        raw.abort()
    assert events.after("slow returns") == [
        "_OnRoomLeave:r",
        "_OnRoomLeft:r",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]


async def test_a_kick_while_the_clients_leave_hook_runs_fires_room_left_once(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The client leaves room ``r``; its ``_OnRoomLeave`` hook awaits. Meanwhile another
    task kicks the client from the namespace and the client agrees (the forced leave takes
    the room). ``_OnRoomLeft:r`` must fire once, not once forced and once more when the
    client's leave hook returns."""
    events = Events()
    release = asyncio.Event()

    async def leaving(ns: NSConn, msg: Message) -> None:
        events(f"_OnRoomLeave:{msg.room}")
        if not msg.forced:
            await release.wait()

    conns: list[Conn] = []
    server = Server(
        {"default": {**recorder(events), "_OnRoomLeave": leaving}}, on_connect=capture(conns)
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "r")
        await ws.send_str("$l;default;r;_OnRoomLeave;0;0;")
        await events.reached("_OnRoomLeave:r")
        ns = conns[0].namespace("default")
        assert ns is not None
        kicking = asyncio.create_task(ns.disconnect(timeout=T))
        token = await request_of(ws, "default;;_OnNamespaceDisconnect;0;0;")
        await ws.send_str(f"{token};;;;;;")
        await until(lambda: server.namespace_members("default") == [], "the kick")
        release.set()
        await recv_text(ws)  # the answer to the leave, whatever it is
        await asyncio.wait_for(kicking, T)
        await barrier(ws)
    assert events.counts["_OnRoomLeft:r"] == 1, events.lines
    assert events.counts["_OnNamespaceDisconnect"] == 1, events.lines
    no_state_errors(caplog)


async def test_a_refused_client_disconnect_does_not_survive_an_agreed_kick(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The client disconnects ``default``; the server's hook will refuse (``EventError``)
    but first awaits. Meanwhile another task kicks the client from ``default`` and the
    client agrees: it is gone on the client's side. When the hook then refuses, the server
    must not put the namespace back (a ghost member the client no longer has)."""
    events = Events()
    release = asyncio.Event()

    async def disconnecting(ns: NSConn, msg: Message) -> None:
        events("_OnNamespaceDisconnect" + (":local" if msg.local else ""))
        if not msg.local:
            await release.wait()
            raise EventError("stay")

    conns: list[Conn] = []
    server = Server(
        {"default": {**recorder(events), "_OnNamespaceDisconnect": disconnecting}},
        on_connect=capture(conns),
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$d;default;;_OnNamespaceDisconnect;0;0;")
        await events.reached("_OnNamespaceDisconnect")
        ns = conns[0].namespace("default")
        assert ns is not None
        kicking = asyncio.create_task(ns.disconnect(timeout=T))
        token = await request_of(ws, "default;;_OnNamespaceDisconnect;0;0;")
        await ws.send_str(f"{token};;;;;;")  # the client agrees: gone on its side
        await until(lambda: conns[0].session.asks == {}, "the kick's answer")
        release.set()
        await recv_text(ws)  # the answer to the client's own disconnect
        await asyncio.wait_for(kicking, T)
        assert server.namespace_members("default") == []
        assert conns[0].namespace("default") is None
        await barrier(ws)
    assert events.counts["_OnNamespaceDisconnect"] == 1, events.lines
    no_state_errors(caplog)


async def test_two_kicks_at_once_both_return_after_the_events(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Two tasks call ``ns.disconnect()`` at once while a handler runs (so the events wait
    for it); the client agrees to both. Both calls must return only once the disconnect
    events ran (``disconnect_namespace``: "called from another task this returns once they
    ran")."""
    events = Events()
    release = asyncio.Event()

    async def slow(ns: NSConn, msg: Message) -> None:
        events("slow starts")
        await release.wait()
        events("slow returns")

    conns: list[Conn] = []
    server = Server({"default": {**recorder(events), "slow": slow}}, on_connect=capture(conns))
    url = await serve(server)

    async def kick(ns: NSConn, name: str) -> None:
        await ns.disconnect(timeout=T)
        events(f"{name} returned")

    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(";default;;slow;0;0;")
        await events.reached("slow starts")
        ns = conns[0].namespace("default")
        assert ns is not None
        kicks = [asyncio.create_task(kick(ns, name)) for name in ("k1", "k2")]
        tokens = [await request_of(ws, "default;;_OnNamespaceDisconnect;0;0;") for _ in kicks]
        for token in tokens:
            await ws.send_str(f"{token};;;;;;")
        await until(lambda: server.namespace_members("default") == [], "the kick")
        await turns()
        release.set()
        await asyncio.wait_for(asyncio.gather(*kicks), T)
    after = events.after("slow returns")
    assert after[0] == "_OnNamespaceDisconnect", events.lines
    assert sorted(after[1:]) == ["k1 returned", "k2 returned"], events.lines


@pytest.mark.parametrize("first", ["disconnect", "close"])
async def test_a_close_racing_a_kick_runs_the_events_once_before_both_return(
    serve: Serve, session: aiohttp.ClientSession, first: str
) -> None:
    """``ns.disconnect()`` and ``conn.close()`` from two tasks at once, in either order:
    each returns after every event and ``on_disconnect`` ran, each event once."""
    events = Events()
    conns: list[Conn] = []
    returned: list[list[str]] = []
    server = Server(
        {"default": recorder(events)},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
    )
    url = await serve(server)

    async def then(what: str, aw: Awaitable[None]) -> None:
        await aw
        returned.append([what, *events.lines])

    async with session.ws_connect(url) as ws:
        await ready(ws, "r")
        conn = conns[0]
        ns = conn.namespace("default")
        assert ns is not None
        kick = then("disconnect", ns.disconnect(timeout=T))
        close = then("close", conn.close(4000))
        calls = (kick, close) if first == "disconnect" else (close, kick)
        tasks = [asyncio.create_task(call) for call in calls]
        msg = await recv(ws)
        if msg.type is WSMsgType.TEXT:  # the kick went out first: agree to it
            await ws.send_str(msg.data.split(";", 1)[0] + ";;;;;;")
            msg = await recv(ws)
        assert msg.type is WSMsgType.CLOSE, show(msg)
        await asyncio.wait_for(asyncio.gather(*tasks), T)
    assert len(returned) == 2
    for lines in returned:
        assert lines[-1] == "on_disconnect", lines
    assert events.counts["_OnNamespaceDisconnect"] == 1
    assert events.counts["_OnRoomLeft:r"] == 1
    no_ghosts(server, "default", rooms=("r",))


async def test_both_sides_disconnecting_at_once_fire_each_event_once(serve: Serve) -> None:
    """The Python client and the server disconnect ``default`` at the same moment: both
    calls return, neither side keeps the namespace, each side's events fire once."""
    events = Events()
    client_events = Events()
    conns: list[Conn] = []
    server = Server({"default": recorder(events)}, on_connect=capture(conns))
    url = await serve(server)
    async with await wsmvc.dial(url, {"default": recorder(client_events)}) as client:
        ns = await client.connect("default", timeout=T)
        await ns.join_room("r", timeout=T)
        server_ns = conns[0].namespace("default")
        assert server_ns is not None
        await asyncio.wait_for(
            asyncio.gather(ns.disconnect(timeout=T), server_ns.disconnect(timeout=T)), T
        )
        assert client.namespace("default") is None
        assert conns[0].namespace("default") is None
        assert server.namespace_members("default") == []
    for side in (events, client_events):
        assert side.counts["_OnNamespaceDisconnect"] == 1, side.lines
        assert side.counts["_OnRoomLeft:r"] == 1, side.lines


# -------------------------------------------------------------------------------------------
# disconnect events and on_disconnect against exceptions that are not Exceptions
# -------------------------------------------------------------------------------------------


class Fatal(BaseException):
    """Not an ``Exception``: what a handler can raise that wsmvc must never swallow."""


@pytest.mark.parametrize("what", ["base-exception", "cancelled-error", "task-cancelled"])
async def test_a_handler_ending_in_a_base_exception_still_gets_every_event(
    serve: Serve, what: str
) -> None:
    """A handler raises a ``BaseException`` subclass, raises ``CancelledError`` itself, or
    its serving task is cancelled while it awaits: the connection closes, the disconnect
    events and ``on_disconnect`` run once, nothing is left in the registry, and the
    serving task ends with what was raised (never swallowed)."""
    events = Events()
    conns: list[Conn] = []
    started = asyncio.Event()

    async def boom(ns: NSConn, msg: Message) -> None:
        events("boom")
        if what == "base-exception":
            raise Fatal("x")
        if what == "cancelled-error":
            raise asyncio.CancelledError()
        started.set()
        await asyncio.Event().wait()

    server = Server(
        {"default": {**recorder(events), "boom": boom}},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
    )
    url = await serve(server)
    raw = await raw_ready(url, "r")
    try:
        await raw.send("$b;default;;boom;0;0;")
        task = conns[0].reader.task
        assert task is not None
        if what == "task-cancelled":
            await asyncio.wait_for(started.wait(), T)
            task.cancel()
        await raw.close_code()
        await raw.send_raw(close_frame(1000))
        await asyncio.wait([task], timeout=T)
    finally:
        raw.abort()
    assert task.done()
    if what == "base-exception":
        assert isinstance(task.exception(), Fatal)
    else:
        assert task.cancelled()
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert events.after("boom") == [
        "_OnRoomLeave:r",
        "_OnRoomLeft:r",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    no_ghosts(server, "default", rooms=("r",))


async def test_the_close_frame_never_carries_1006(serve: Serve) -> None:
    """Cancelling a connection's serving task closes it "with 1006" (``docs/lifecycle.md``)
    but 1006 is the code for a connection that ended *without* a close frame: a close
    frame must carry another (1001 or 1011)."""
    conns: list[Conn] = []
    server = Server({"default": {}}, on_connect=capture(conns))
    url = await serve(server)
    raw = await raw_ready(url)
    try:
        task = conns[0].reader.task
        assert task is not None
        task.cancel()
        code = await raw.close_code()
    finally:
        raw.abort()
    assert code not in (1005, 1006, 1015), code


@pytest.mark.parametrize("what", ["fatal-in-event", "cancel-while-event-awaits"])
async def test_a_disconnect_event_ending_in_a_base_exception_skips_nothing_else(
    serve: Serve, what: str
) -> None:
    """The connection (namespaces ``default`` with rooms ``a`` and ``b``, and ``other``)
    goes away; the forced ``_OnRoomLeft:a`` raises a ``BaseException``, or the serving
    task is cancelled while it awaits (as aiohttp does at shutdown once
    ``shutdown_timeout`` passed). The other events and ``on_disconnect`` must still run
    once: a handler that raises ``CancelledError`` before the close is treated that way."""
    events = Events()
    conns: list[Conn] = []
    in_event = asyncio.Event()

    async def left(ns: NSConn, msg: Message) -> None:
        events(f"_OnRoomLeft:{msg.room}")
        if msg.room == "a":
            if what == "fatal-in-event":
                raise Fatal("x")
            in_event.set()
            await asyncio.Event().wait()

    server = Server(
        {"default": {**recorder(events), "_OnRoomLeft": left}, "other": recorder(events)},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
    )
    url = await serve(server)
    raw = await raw_ready(url, "a", "b")
    try:
        await raw.send("$c;other;;_OnNamespaceConnect;0;0;")
        assert await raw.recv_text() == "$c;;;;;;"
        task = conns[0].reader.task
        assert task is not None
    finally:
        raw.abort()
    if what == "cancel-while-event-awaits":
        await asyncio.wait_for(in_event.wait(), T)
        task.cancel()
    await asyncio.wait([task], timeout=T)
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert events.counts["_OnRoomLeft:b"] == 1, events.lines
    assert events.counts["_OnNamespaceDisconnect"] == 2, events.lines
    assert events.counts["on_disconnect"] == 1, events.lines
    no_ghosts(server, "default", "other", rooms=("a", "b"))


# -------------------------------------------------------------------------------------------
# server-side connects and joins crossing the client, a close, a cancellation
# -------------------------------------------------------------------------------------------


async def test_connect_while_the_clients_own_connect_is_decided_waits_for_it(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The client connects ``default``; the server's ``_OnNamespaceConnect`` awaits. A
    background task calls ``conn.connect("default")`` meanwhile: no StateError, it gets
    the namespace the client's connect made."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def connecting(ns: NSConn, msg: Message) -> None:
        if not msg.local:
            entered.set()
            await release.wait()

    conns: list[Conn] = []
    server = Server({"default": {"_OnNamespaceConnect": connecting}}, on_connect=capture(conns))
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
        await asyncio.wait_for(entered.wait(), T)
        connecting_task = asyncio.create_task(conns[0].connect("default", timeout=T))
        await turns()
        release.set()
        await expect(ws, "$c;;;;;;")
        ns = await asyncio.wait_for(connecting_task, T)
        assert ns.state is NsState.CONNECTED
        assert server.namespace_members("default") == [ns]
        await barrier(ws)  # and nothing else was asked of the client
    no_state_errors(caplog)


async def test_connect_while_the_clients_disconnect_is_decided_connects_anew(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """The client disconnects ``default``; the server's hook awaits. A background task
    calls ``conn.connect("default")`` meanwhile. It must not return the namespace that is
    going away: it waits for the decision and connects again (asking the client)."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def disconnecting(ns: NSConn, msg: Message) -> None:
        if not msg.local:
            entered.set()
            await release.wait()

    conns: list[Conn] = []
    server = Server(
        {"default": {"_OnNamespaceDisconnect": disconnecting}}, on_connect=capture(conns)
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$d;default;;_OnNamespaceDisconnect;0;0;")
        await asyncio.wait_for(entered.wait(), T)
        connecting_task = asyncio.create_task(conns[0].connect("default", timeout=T))
        await turns()
        release.set()
        await expect(ws, "$d;;;;;;")

        async def agree() -> None:
            token = await request_of(ws, "default;;_OnNamespaceConnect;0;0;")
            await ws.send_str(f"{token};;;;;;")

        agreeing = asyncio.create_task(agree())
        try:
            ns = await asyncio.wait_for(connecting_task, T)
            assert ns.state is NsState.CONNECTED, ns
            assert server.namespace_members("default") == [ns]
        finally:
            agreeing.cancel()
            await outcome(agreeing)


async def test_a_clients_connect_during_the_servers_refused_connect_is_not_acknowledged(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A background task calls ``conn.connect("default")``; the server's local
    ``_OnNamespaceConnect`` awaits and will refuse. The client sends its own connect of
    ``default`` meanwhile and gets ``$c;;;;;;`` (connected) at once; the server's connect
    is then refused and the server has no ``default``: the client's next ask there gets
    ``bad namespace``. The client's connect must wait for the decision (or be refused)."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def connecting(ns: NSConn, msg: Message) -> None:
        if msg.local:
            entered.set()
            await release.wait()
            raise EventError("not now")

    conns: list[Conn] = []
    server = Server(
        {"default": {"_OnNamespaceConnect": connecting, "ping": lambda ns, m: "pong"}},
        on_connect=capture(conns),
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        connecting_task = asyncio.create_task(conns[0].connect("default", timeout=T))
        await asyncio.wait_for(entered.wait(), T)
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
        answered = asyncio.create_task(recv_text(ws))
        await turns()
        release.set()
        with pytest.raises(EventError):
            await asyncio.wait_for(connecting_task, T)
        answer = await answered
        await ws.send_str("$p;default;;ping;0;0;")
        pong = await recv_text(ws)
    # the two sides agree: connected with a working namespace, or not connected at all
    if answer == "$c;;;;;;":
        assert pong == "$p;default;;ping;0;0;pong"
    else:
        assert pong == "$p;default;;ping;1;0;bad namespace"


async def test_a_server_connect_agreed_then_disconnected_never_fires_connected_late(
    serve: Serve,
) -> None:
    """A background task calls ``conn.connect("default")``; the client's agreement and its
    own disconnect of ``default`` arrive in one TCP segment. The server's
    ``_OnNamespaceDisconnect`` (for the client's disconnect) awaits. ``_OnNamespaceConnected``
    must not start inside it, nor after it."""
    events = Events()
    release = asyncio.Event()

    async def disconnecting(ns: NSConn, msg: Message) -> None:
        events.enter("_OnNamespaceDisconnect")
        await release.wait()
        events.leave("_OnNamespaceDisconnect")

    def connected(ns: NSConn, msg: Message) -> None:
        events.enter("_OnNamespaceConnected")
        events.leave("_OnNamespaceConnected")

    conns: list[Conn] = []
    server = Server(
        {"default": {"_OnNamespaceDisconnect": disconnecting, "_OnNamespaceConnected": connected}},
        on_connect=capture(conns),
    )
    url = await serve(server)
    raw = await RawWS.open(url)
    try:
        await raw.send("M")
        await raw.recv_text()
        connecting_task = asyncio.create_task(conns[0].connect("default", timeout=T))
        token = await raw_request_of(raw, "default;;_OnNamespaceConnect;0;0;")
        await raw.send_raw(text(f"{token};;;;;;") + text("$d;default;;_OnNamespaceDisconnect;0;0;"))
        await events.reached("_OnNamespaceDisconnect")
        await turns()
        release.set()
        assert await raw.recv_text() == "$d;;;;;;"
        await asyncio.wait([connecting_task], timeout=T)
    finally:
        release.set()
        raw.abort()
    assert events.nested == []
    if "_OnNamespaceConnected" in events.lines:
        assert events.lines == ["_OnNamespaceConnected", "_OnNamespaceDisconnect"]


async def test_a_server_join_agreed_then_closed_never_fires_joined_late(serve: Serve) -> None:
    """A background task calls ``ns.join_room("r")``; the client's agreement and its close
    frame arrive in one TCP segment. The join is finished only when its task resumes, and
    by then the close has begun: ``join_room`` raises ``ConnectionClosed`` rather than
    return a room of a closed connection, and neither ``_OnRoomJoined`` nor the forced
    ``_OnRoomLeave`` of a join that never completed fires."""
    events = Events()
    release = asyncio.Event()

    async def leaving(ns: NSConn, msg: Message) -> None:
        events.enter(f"_OnRoomLeave:{msg.room}")
        await release.wait()
        events.leave(f"_OnRoomLeave:{msg.room}")

    def joined(ns: NSConn, msg: Message) -> None:
        events.enter(f"_OnRoomJoined:{msg.room}")
        events.leave(f"_OnRoomJoined:{msg.room}")

    conns: list[Conn] = []
    server = Server(
        {"default": {"_OnRoomLeave": leaving, "_OnRoomJoined": joined}},
        on_connect=capture(conns),
    )
    url = await serve(server)
    raw = await raw_ready(url)
    try:
        ns = conns[0].namespace("default")
        assert ns is not None
        joining = asyncio.create_task(ns.join_room("r", timeout=T))
        token = await raw_request_of(raw, "default;r;_OnRoomJoin;0;0;")
        await raw.send_raw(text(f"{token};;;;;;") + close_frame(1000))
        ended = await outcome(asyncio.wait_for(joining, T))
        await asyncio.wait_for(conns[0].wait_closed(), T)
    finally:
        release.set()
        raw.abort()
    assert events.nested == []
    assert ended == "ConnectionClosed"
    assert events.lines == []  # never joined here: no joined, no forced leave


async def test_a_cancelled_connect_does_not_cancel_another_task_sharing_it(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Two tasks call ``conn.connect("default")``; the first is cancelled by its
    ``wait_for`` timeout. The second must not receive that ``CancelledError``: it goes on
    and connects."""
    conns: list[Conn] = []
    server = Server({"default": {}}, on_connect=capture(conns))
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        conn = conns[0]
        first = asyncio.create_task(asyncio.wait_for(conn.connect("default", timeout=T), 0.1))
        await turns(1)
        second = asyncio.create_task(conn.connect("default", timeout=T))
        await request_of(ws, "default;;_OnNamespaceConnect;0;0;")  # never answered
        with pytest.raises(asyncio.TimeoutError):
            await first

        async def agree() -> None:
            while True:
                token = await request_of(ws, "default;;_OnNamespaceConnect;0;0;")
                await ws.send_str(f"{token};;;;;;")

        agreeing = asyncio.create_task(agree())
        try:
            await asyncio.wait([second], timeout=T)
            assert not second.cancelled()
            ns = second.result()
            assert ns.state is NsState.CONNECTED
        finally:
            agreeing.cancel()
            await outcome(agreeing)


@pytest.mark.parametrize(
    "where",
    [
        "asking",
        pytest.param(
            "local-hook",
        ),
        "done-hook",
    ],
)
@pytest.mark.parametrize("change", ["join", "leave"])
async def test_a_cancelled_server_join_or_leave_leaves_the_room_settled(
    serve: Serve, session: aiohttp.ClientSession, where: str, change: str
) -> None:
    """``ns.join_room("r")`` / ``ns.leave_room("r")`` from a background task, cancelled
    while it waits for the client, while its local ``_OnRoomJoin``/``_OnRoomLeave`` awaits,
    or while ``_OnRoomJoined``/``_OnRoomLeft`` awaits. Afterwards the room is settled
    (joined and a member, or left and not a member), no ask waits, and the connection still
    closes cleanly."""
    events = Events()
    hook = asyncio.Event()
    conns: list[Conn] = []
    if change == "join":
        first, done_event = "_OnRoomJoin", "_OnRoomJoined"
    else:
        first, done_event = "_OnRoomLeave", "_OnRoomLeft"

    async def hooked(ns: NSConn, msg: Message) -> None:
        events(f"{msg.event}:{msg.room}:{'local' if msg.local else 'peer'}")
        armed = (where == "local-hook" and msg.event == first) or (
            where == "done-hook" and msg.event == done_event
        )
        if armed and msg.local and not msg.forced:
            hook.set()
            await asyncio.Event().wait()

    server = Server(
        {"default": {**recorder(events), first: hooked, done_event: hooked}},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, *(["r"] if change == "leave" else []))
        ns = conns[0].namespace("default")
        assert ns is not None
        call = ns.join_room if change == "join" else ns.leave_room
        task = asyncio.create_task(call("r", timeout=T))

        asked = asyncio.Event()

        async def agree() -> None:
            token = await request_of(ws, f"default;r;{first};0;0;")
            asked.set()
            if where != "asking":
                await ws.send_str(f"{token};;;;;;")

        agreeing = asyncio.create_task(agree())
        await asyncio.wait_for((asked if where == "asking" else hook).wait(), T)
        task.cancel()
        assert await outcome(task) == "CancelledError"
        agreeing.cancel()
        await outcome(agreeing)
        state = ns.room_state("r")
        members = server.room_members("default", "r")
        assert (state, bool(members)) in {(RoomState.JOINED, True), (RoomState.LEFT, False)}
        assert conns[0].session.asks == {}
        await ws.close()
    await asyncio.wait_for(conns[0].wait_closed(), T)
    no_ghosts(server, "default", rooms=("r",))
    assert events.counts["on_disconnect"] == 1


@pytest.mark.parametrize("where", ["connected-hook", "on-connect-after", "other-task"])
async def test_a_close_during_an_on_connect_that_connects(serve: Serve, where: str) -> None:
    """``on_connect`` connects the Python client to ``default``; the connection is closed
    inside ``_OnNamespaceConnected``, in ``on_connect`` right after the connect, or by
    another task while ``_OnNamespaceConnected`` awaits. Each event once, ``on_disconnect``
    last, the close code of the close, nothing in the registry."""
    events = Events()
    conns: list[Conn] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    async def on_connect(conn: Conn) -> None:
        conns.append(conn)
        await conn.connect("default", timeout=T)
        if where == "on-connect-after":
            await conn.close(4000)
            assert not conn.write(Message(namespace="default", event="x"))
        events("on_connect returns")

    async def connected(ns: NSConn, msg: Message) -> None:
        events("_OnNamespaceConnected")
        if where == "connected-hook":
            await ns.conn.close(4000)
        elif where == "other-task":
            inside.set()
            await release.wait()

    server = Server(
        {"default": {**recorder(events), "_OnNamespaceConnected": connected}},
        on_connect=on_connect,
        on_disconnect=lambda c: events("on_disconnect"),
    )
    url = await serve(server)
    client_events = Events()
    client = await wsmvc.dial(url, {"default": recorder(client_events)})
    try:
        if where == "other-task":
            await asyncio.wait_for(inside.wait(), T)
            closing = asyncio.create_task(conns[0].close(4000))
            await turns()
            assert not closing.done()  # it waits for the hook, then the events
            release.set()
            await asyncio.wait_for(closing, T)
            assert events.lines[-1] == "on_disconnect"
        await asyncio.wait_for(conns[0].wait_closed(), T)
        await asyncio.wait_for(client.wait_closed(), T)
    finally:
        release.set()
        await client.close()
    assert events.counts["_OnNamespaceConnected"] == 1
    assert events.lines[-2:] == ["_OnNamespaceDisconnect", "on_disconnect"]
    assert events.counts["_OnNamespaceDisconnect"] == 1
    assert client_events.counts["_OnNamespaceDisconnect"] <= 1
    assert conns[0].close_code == 4000
    no_ghosts(server, "default")


# -------------------------------------------------------------------------------------------
# the close path
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 200_000], ids=["small", "large"])
@pytest.mark.parametrize(
    "deflate",
    [
        False,
        pytest.param(
            True,
        ),
    ],
    ids=["plain", "deflate"],
)
async def test_a_client_close_never_overtakes_frames_written_before_it(
    serve: Serve, deflate: bool, size: int
) -> None:
    """A handler emits three messages; the client's close frame follows its request in
    the same TCP segment, so the server reads it right after the handler returned. The
    three messages arrive, in order, before the server's close frame."""

    def three(ns: NSConn, msg: Message) -> None:
        for i in range(3):
            assert ns.emit("m", f"{i}:" + "x" * size)

    url = await serve(Server({"default": {"go": three}}))
    raw = await raw_ready(url, deflate=deflate)
    got: list[str] = []
    try:
        await raw.send_raw(text(";default;;go;0;0;") + close_frame(4100))
        while not got or got[-1] not in ("close", "EOF"):
            try:
                op, data = await raw.recv()
            except EOFError:
                got.append("EOF")
            else:
                got.append("close" if op == 0x8 else f"{op}:{data[:18].decode()}:{len(data)}")
    finally:
        raw.abort()
    length = len(";default;;m;0;0;0:") + size
    assert got == [f"1:;default;;m;0;0;{i}::{length}" for i in range(3)] + ["close"], got


async def test_a_client_that_closes_and_keeps_sending_is_not_handled_further(
    serve: Serve,
) -> None:
    """The client sends its close frame, then keeps sending requests: none is handled,
    the server drops the TCP connection, ``on_disconnect`` runs once with the client's
    code."""
    counts: Counter[str] = Counter()
    conns: list[Conn] = []
    server = Server(
        {"default": {"ping": lambda ns, m: counts.update(["ping"]) or "pong"}},
        on_connect=capture(conns),
        on_disconnect=lambda c: counts.update(["on_disconnect"]),
    )
    url = await serve(server)
    raw = await raw_ready(url)
    try:
        await raw.send_raw(close_frame(4100))
        with pytest.raises(OSError):  # ConnectionError included: the server hung up
            for _ in range(2000):
                await raw.send_raw(text("$p;default;;ping;0;0;" + "x" * 1000))
                await asyncio.sleep(0.001)
    finally:
        raw.abort()
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert counts == Counter({"on_disconnect": 1})
    assert conns[0].close_code == 4100
    no_ghosts(server, "default")


async def test_a_client_that_never_answers_the_close_is_dropped_in_time(serve: Serve) -> None:
    """``conn.close()`` returns once the events ran, without waiting for the client's close
    frame; a client that never sends it (and keeps talking) loses its TCP connection after
    ``close_timeout``."""
    counts: Counter[str] = Counter()
    conns: list[Conn] = []
    server = Server(
        {"default": {}},
        on_connect=capture(conns),
        on_disconnect=lambda c: counts.update(["on_disconnect"]),
        close_timeout=0.3,
    )
    url = await serve(server)
    raw = await RawWS.open(url)
    loop = asyncio.get_running_loop()
    try:
        await raw.send("M")
        await raw.recv_text()
        start = loop.time()
        await asyncio.wait_for(conns[0].close(4001), 1.0)
        assert counts["on_disconnect"] == 1
        assert await raw.close_code() == 4001
        with pytest.raises((EOFError, OSError)):
            while loop.time() - start < 3:
                await raw.send("$p;default;;ping;0;0;")
                await raw._fill()
        assert loop.time() - start < 2.5
    finally:
        raw.abort()
    no_ghosts(server, "default")


async def test_server_close_inside_a_handler_does_not_wait_for_that_handler(
    serve: Serve,
) -> None:
    """A handler (an admin command) calls ``await server.close()``: like ``conn.close()``
    inside a handler of its own connection it should not wait for itself. It waits
    ``2 * (close_timeout + 2)`` s instead (14 s with the defaults; bounded here at 1 s)."""
    events = Events()
    returned: list[str] = []

    async def shutdown(ns: NSConn, msg: Message) -> None:
        returned.append(await outcome(asyncio.wait_for(ns.server.close(), 1.0)))

    conns: list[Conn] = []
    server = Server(
        {"default": {**recorder(events), "shutdown": shutdown}},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
        close_timeout=0.2,
    )
    url = await serve(server)
    async with await wsmvc.dial(url, {"default": {}}) as client:
        ns = await client.connect("default", timeout=T)
        ns.emit("shutdown")
        await asyncio.wait_for(conns[0].wait_closed(), T)
    assert returned == ["ok"]
    assert events.after("_OnNamespaceConnected") == ["_OnNamespaceDisconnect", "on_disconnect"]


@pytest.mark.parametrize("what", ["disconnect", "close"])
@pytest.mark.parametrize(
    "how",
    [
        pytest.param(
            "wait_for",
        ),
        pytest.param("gather"),
    ],
)
async def test_a_handler_bounding_its_own_kick_or_close_is_not_deadlocked(
    serve: Serve, what: str, how: str
) -> None:
    """A handler does what the docs show, ``await ns.disconnect()`` or ``await
    conn.close()``, but bounded as a careful user would: ``asyncio.wait_for(..., 1)``, or
    run beside another call with ``asyncio.gather``. Called from the handler itself it
    returns at once; wrapped, it runs in a child task, waits for the events, which wait
    for the handler, which waits for it: a TimeoutError after the bound (``wait_for`` on
    Python 3.10/3.11) or a deadlock (``gather``, bounded here at 1 s)."""
    events = Events()
    ended: list[str] = []

    async def kick(ns: NSConn, msg: Message) -> None:
        call = ns.disconnect(timeout=T) if what == "disconnect" else ns.conn.close(4000)
        wrapped = asyncio.wait_for(call, 1.0) if how == "wait_for" else asyncio.gather(call)
        ended.append(await outcome(asyncio.wait_for(wrapped, 1.0)))
        events("kick returns")

    conns: list[Conn] = []
    server = Server(
        {"default": {**recorder(events, "_OnNamespaceDisconnect"), "kick": kick}},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
    )
    url = await serve(server)
    async with await wsmvc.dial(url, {"default": {}}) as client:
        ns = await client.connect("default", timeout=T)
        ns.emit("kick")
        await events.reached("kick returns")
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert ended == ["ok"]
    assert events.after("kick returns")[0] == "_OnNamespaceDisconnect"


async def test_two_handlers_closing_each_others_connection_do_not_deadlock(
    serve: Serve,
) -> None:
    """Connections ``a`` and ``b``; a handler of each closes the other's connection at the
    same moment (two moderators banning each other, two logins of one user replacing each
    other). Each ``close()`` waits for the other connection's events, which wait for the
    other handler, which waits for the first: neither ever returns (bounded here at 1 s)."""
    conns: dict[str, Conn] = {}
    both = asyncio.Event()
    arrived: list[str] = []
    ended: dict[str, str] = {}

    async def close_other(ns: NSConn, msg: Message) -> None:
        arrived.append(ns.id)
        if len(arrived) == 2:
            both.set()
        await both.wait()
        other = conns["b" if ns.id == "a" else "a"]
        ended[ns.id] = await outcome(asyncio.wait_for(other.close(4000), 1.0))

    ids = iter("ab")
    server = Server(
        {"default": {"close_other": close_other}},
        id_generator=lambda request: next(ids),
        on_connect=lambda conn: conns.__setitem__(conn.id, conn),
    )
    url = await serve(server)
    async with (
        await wsmvc.dial(url, {"default": {}}) as a,
        await wsmvc.dial(url, {"default": {}}) as b,
    ):
        ns_a = await a.connect("default", timeout=T)
        ns_b = await b.connect("default", timeout=T)
        ns_a.emit("close_other")
        ns_b.emit("close_other")
        await until(lambda: len(ended) == 2, "both handlers ended")
    assert ended == {"a": "ok", "b": "ok"}


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_a_burst_to_a_reading_client_is_delivered_not_cut_off(
    serve: Serve, deflate: bool
) -> None:
    """The server broadcasts 40 binary messages of 256 KiB in one step to a client that
    reads all the time; ``send_buffer_limit`` is 1 MiB. The limit is for "a client that
    stops reading": this one must get all 40, compressed or not. The bytes are random, so
    deflate cannot shrink the burst under the limit."""
    server = Server({"default": {}}, send_buffer_limit=1 << 20)
    url = await serve(server)
    got: list[bytes] = []
    handlers = {"default": {"chunk": lambda ns, m: got.append(m.body[:4])}}
    async with await wsmvc.dial(url, handlers, compress=deflate) as client:
        await client.connect("default", timeout=T)
        blob = os.urandom(256 * 1024)
        for i in range(40):
            await server.broadcast(
                Message(namespace="default", event="chunk", body=b"%04d" % i + blob, binary=True)
            )
        await until(lambda: len(got) == 40 or client.closed, "all 40, or the close")
        assert not client.closed, client.close_code
        assert got == [b"%04d" % i for i in range(40)]


async def test_a_connection_renamed_after_login_leaves_no_ghost(serve: Serve) -> None:
    """A user coming from python-socketio renames the connection when its user logs in
    (``conn.id`` is public, ``docs/coming-from-python-socketio.md`` maps ``sid`` to it).
    Either the rename is refused, or ``get_connections`` follows the new name; and once
    the client left, nothing is listed under either name."""
    conns: list[Conn] = []

    def login(ns: NSConn, msg: Message) -> str:
        ns.conn.id = msg.text
        return "welcome"

    server = Server(
        {"default": {"login": login}},
        id_generator=lambda request: "guest",
        on_connect=capture(conns),
    )
    url = await serve(server)
    async with await wsmvc.dial(url, {"default": {}}) as client:
        ns = await client.connect("default", timeout=T)
        renamed = await outcome(ns.ask("login", "ann", timeout=T)) == "ok"
        assert server.get_connections(conns[0].id) == conns
        if renamed:
            assert server.get_connections("guest") == []
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert server.get_connections("guest") == []
    assert server.get_connections("ann") == []


# -------------------------------------------------------------------------------------------
# asks: crossing frames, foreign tokens, the bound, and what gets logged
# -------------------------------------------------------------------------------------------


async def test_frames_right_after_M_interleave_with_the_asks_of_on_connect(
    serve: Serve,
) -> None:
    """The client sends ``M`` and five requests in one segment, before its ``A``;
    ``on_connect`` connects it (an ask) and then asks it its name, and the client mixes
    more requests around its answers. ``on_connect`` gets its answers, then every request
    is handled and answered, in arrival order."""
    order: list[str] = []

    async def on_connect(conn: Conn) -> None:
        ns = await conn.connect("default", timeout=T)
        answer = await ns.ask("name", timeout=T)
        order.append(f"on_connect got {answer.text}")

    def ping(ns: NSConn, msg: Message) -> str:
        order.append(f"ping {msg.text}")
        return f"pong {msg.text}"

    server = Server({"default": {"ping": ping}}, on_connect=on_connect)
    url = await serve(server)
    raw = await RawWS.open(url)
    try:
        await raw.send_raw(
            text("M") + b"".join(text(f"$p{i};default;;ping;0;0;{i}") for i in range(5))
        )
        assert (await raw.recv_text()).startswith("A")
        token = await raw_request_of(raw, "default;;_OnNamespaceConnect;0;0;")
        await raw.send_raw(
            text("$p5;default;;ping;0;0;5")
            + text(f"{token};;;;;;")
            + text("$p6;default;;ping;0;0;6")
        )
        token = await raw_request_of(raw, "default;;name;0;0;")
        await raw.send_raw(text("$p7;default;;ping;0;0;7") + text(f"{token};default;;name;0;0;ann"))
        answers = [await raw.recv_text() for _ in range(8)]
    finally:
        raw.abort()
    assert order == ["on_connect got ann"] + [f"ping {i}" for i in range(8)]
    assert answers == [f"$p{i};default;;ping;0;0;pong {i}" for i in range(8)]


async def test_duplicated_and_foreign_answer_tokens(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The server asks ``c1``. ``c2`` sends an answer with ``c1``'s token: it does not
    resolve ``c1``'s ask (it is ``c2``'s own ``q`` event). ``c1`` then answers three times
    (the last as an error): the first is the answer, the others are ordinary ``q`` events."""
    seen: list[str] = []
    ids = iter(["c1", "c2"])
    server = Server(
        {"default": {"q": lambda ns, m: seen.append(f"{ns.id} {m.text or m.err} {m.token}")}},
        id_generator=lambda request: next(ids),
    )
    url = await serve(server)
    async with session.ws_connect(url) as one, session.ws_connect(url) as two:
        await ready(one)
        await ready(two)
        asking = asyncio.create_task(
            server.ask(Message(namespace="default", event="q", body=b"?"), to="c1", timeout=T)
        )
        token = await request_of(one, "default;;q;0;0;\\?")
        await two.send_str(f"{token};default;;q;0;0;from two")
        await barrier(two)
        assert not asking.done()
        await one.send_str(f"{token};default;;q;0;0;first")
        await one.send_str(f"{token};default;;q;0;0;second")
        await one.send_str(f"{token};default;;q;1;0;third as error")
        await barrier(one)
        assert (await asking).text == "first"
    assert seen == [
        f"c2 from two {token}",
        f"c1 second {token}",
        f"c1 third as error {token}",
    ]
    no_state_errors(caplog)
    assert wsmvc_errors(caplog) == []


async def test_a_flood_while_a_handler_asks_stays_bounded_and_in_order(serve: Serve) -> None:
    """``max_queue=4``: while a handler awaits its ask, the client floods 200 requests and
    only then answers. The server holds at most ``max_queue + 1`` of them (it stops
    reading, so the answer stuck behind the flood cannot arrive: the ask times out, as
    documented), then handles all 200 in order."""
    got: list[str] = []
    peak = [0]
    results: list[str] = []
    conns: list[Conn] = []

    async def ask_me(ns: NSConn, msg: Message) -> None:
        try:
            await ns.ask("q", timeout=0.5)
            results.append("answered")
        except AskTimeout:
            results.append("timed out")

    server = Server(
        {"default": {"ask_me": ask_me, "count": lambda ns, m: got.append(m.text)}},
        on_connect=capture(conns),
        max_queue=4,
    )
    url = await serve(server)
    raw = await raw_ready(url)
    try:
        await raw.send(";default;;ask_me;0;0;")
        token = await raw_request_of(raw, "default;;q;0;0;")
        await raw.send_raw(b"".join(text(f";default;;count;0;0;{i}") for i in range(200)))
        await raw.send(f"{token};default;;q;0;0;late")
        session = conns[0].session

        def handled_all() -> bool:
            peak[0] = max(peak[0], len(session.queued()))
            return len(got) == 200

        await until(handled_all, "all 200 handled")
    finally:
        raw.abort()
    assert peak[0] <= 5
    assert got == [str(i) for i in range(200)]
    assert results == ["timed out"]


async def test_a_hook_whose_ask_fails_because_the_client_left_logs_no_error(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """``_OnNamespaceConnected`` asks the client something; the client vanishes. The ask
    fails with ``ConnectionClosed`` as documented; a client going away is not a server
    error, and an ordinary event handler in the same case is only logged at DEBUG."""
    events = Events()

    async def connected(ns: NSConn, msg: Message) -> None:
        events("asking")
        await ns.ask("name", timeout=NEVER)

    conns: list[Conn] = []
    server = Server(
        {"default": {"_OnNamespaceConnected": connected}},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
    )
    url = await serve(server)
    raw = await RawWS.open(url)
    await raw.send("M")
    await raw.recv_text()
    await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
    await events.reached("asking")
    raw.abort()
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert events.counts["on_disconnect"] == 1
    assert wsmvc_errors(caplog) == []


async def test_a_client_leaving_during_on_connects_connect_gets_on_disconnect(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """``on_connect`` connects the client (an ask); the client vanishes before answering.
    ``docs/lifecycle.md``: ``on_disconnect`` runs "even if [...] the client went away
    meanwhile". Instead the ``ConnectionClosed`` that the client's leaving raised inside
    ``on_connect`` is logged as a server error and counts as a refusal."""
    events = Events()
    conns: list[Conn] = []

    async def on_connect(conn: Conn) -> None:
        conns.append(conn)
        events("on_connect")
        await conn.connect("default", timeout=NEVER)

    server = Server(
        {"default": {}}, on_connect=on_connect, on_disconnect=lambda c: events("on_disconnect")
    )
    url = await serve(server)
    raw = await RawWS.open(url)
    await raw.send("M")
    await raw.recv_text()  # A<id>: written by the connect inside on_connect
    await raw.recv_text()  # the connect request
    raw.abort()
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert wsmvc_errors(caplog) == []
    assert events.lines == ["on_connect", "on_disconnect"]


# -------------------------------------------------------------------------------------------
# shutdown
# -------------------------------------------------------------------------------------------


async def test_shutdown_while_clients_churn_leaves_nothing_behind() -> None:
    """Eight Python clients dial, connect, join and close in a loop; the server shuts down
    in the middle. Every ``on_connect`` is balanced by an ``on_disconnect``, every
    connect and join event by its disconnect and leave, the registry is empty, every
    connection is ``closed`` and no task is left once the app is cleaned up."""
    counts: Counter[str] = Counter()
    conns: list[Conn] = []

    def on_connect(conn: Conn) -> None:
        conns.append(conn)
        counts["on_connect"] += 1

    def record(ns: NSConn, msg: Message) -> None:
        counts[msg.event] += 1

    server = Server(
        {"default": dict.fromkeys(SYSTEM_EVENTS, record)},
        on_connect=on_connect,
        on_disconnect=lambda conn: counts.update(["on_disconnect"]),
        close_timeout=0.5,
    )
    joined = [0]
    closing = asyncio.Event()

    async def churn(url: str) -> None:
        while not closing.is_set():
            try:
                client = await wsmvc.dial(url, {"default": {}}, timeout=2)
            except Exception:  # refused (503) or cut off: the server closes
                continue
            try:
                ns = await client.connect("default", timeout=2)
                await ns.join_room("r", timeout=2)
                joined[0] += 1
            except (ConnectionClosed, EventError):
                pass
            finally:
                await client.close()

    async with running(server) as url:
        workers = [asyncio.create_task(churn(url)) for _ in range(8)]
        await until(lambda: joined[0] >= 30, "30 joins")
        await asyncio.wait_for(server.close(), T)
        closing.set()
        await asyncio.wait_for(asyncio.gather(*workers), T)
        no_ghosts(server, "default", rooms=("r",))
        for conn in conns:
            await asyncio.wait_for(conn.wait_closed(), T)
            assert conn.state is ConnState.CLOSED
    assert counts["on_connect"] == counts["on_disconnect"] > 0
    assert counts["_OnNamespaceConnected"] == counts["_OnNamespaceDisconnect"]
    assert counts["_OnRoomJoined"] == counts["_OnRoomLeft"]
    assert await leftover_tasks() == []


async def test_shutdown_closes_every_kind_of_connection_with_1001(
    session: aiohttp.ClientSession,
) -> None:
    """At shutdown: one request in ``id_generator``, one upgraded without ``M``, one in
    ``on_connect``, one whose handler awaits an ask, one idle Python client. All get 1001
    (the upgrade once ``id_generator`` returns), the ask fails at once, ``on_disconnect``
    balances ``on_connect``, the registry is empty, no task is left behind."""
    counts: Counter[str] = Counter()
    entered_id = asyncio.Event()
    release_id = asyncio.Event()
    in_on_connect = asyncio.Event()
    release_on_connect = asyncio.Event()
    asked = asyncio.Event()
    ids = iter(range(100))

    async def id_generator(request: web.Request) -> str:
        name = request.query.get("name", "x")
        if name == "slow-id":
            entered_id.set()
            await release_id.wait()
        return f"{name}-{next(ids)}"

    async def on_connect(conn: Conn) -> None:
        counts["on_connect"] += 1
        if conn.id.startswith("slow-connect"):
            in_on_connect.set()
            await release_on_connect.wait()

    async def ask_me(ns: NSConn, msg: Message) -> str:
        asked.set()
        try:
            await ns.ask("q", timeout=NEVER)
        except ConnectionClosed:
            counts["ask failed"] += 1
            raise
        return "no"

    server = Server(
        {"default": {"ask_me": ask_me}},
        id_generator=id_generator,
        on_connect=on_connect,
        on_disconnect=lambda c: counts.update(["on_disconnect"]),
        close_timeout=0.5,
    )
    async with running(server) as url:
        upgrading = asyncio.create_task(session.ws_connect(url + "?name=slow-id"))
        await asyncio.wait_for(entered_id.wait(), T)
        before_m = await session.ws_connect(url + "?name=before-m")
        connecting = await session.ws_connect(url + "?name=slow-connect")
        await connecting.send_str("M")
        await asyncio.wait_for(in_on_connect.wait(), T)
        asking = await session.ws_connect(url + "?name=asking")
        await ready(asking)
        await asking.send_str(";default;;ask_me;0;0;")
        await recv_text(asking)
        await asyncio.wait_for(asked.wait(), T)
        client = await wsmvc.dial(url + "?name=py", {"default": {}})
        await client.connect("default", timeout=T)
        closing = asyncio.create_task(server.close())
        await turns()
        release_id.set()
        release_on_connect.set()
        await asyncio.wait_for(closing, T)
        late = await asyncio.wait_for(upgrading, T)
        codes = []
        for ws in (late, before_m, connecting, asking):
            msg = await expect_close(ws)
            codes.append(msg.data)
            await ws.close()
        await asyncio.wait_for(client.wait_closed(), T)
        assert codes == [1001, 1001, 1001, 1001]
        assert client.close_code == 1001
        no_ghosts(server, "default")
        await client.close()
    assert counts["on_connect"] == counts["on_disconnect"] == 3
    assert counts["ask failed"] == 1
    assert await leftover_tasks() == []


async def test_the_handshake_deadline_holds_against_a_trickling_client(serve: Serve) -> None:
    """A client that never sends ``M`` but keeps the line busy (pings and garbage every
    20 ms) is still closed with 1008 at ``handshake_timeout``."""
    server = Server({"default": {}}, handshake_timeout=0.3)
    url = await serve(server)
    raw = await RawWS.open(url)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def trickle() -> None:
        while True:
            await raw.send(b"ping", opcode=0x9)
            await raw.send("garbage")
            await asyncio.sleep(0.02)

    trickling = asyncio.create_task(trickle())
    try:
        assert await raw.close_code() == 1008
        assert loop.time() - start < 1.0
    finally:
        trickling.cancel()
        await outcome(trickling)
        raw.abort()
    assert server.connections == []


# -------------------------------------------------------------------------------------------
# native-only servers
# -------------------------------------------------------------------------------------------


async def test_a_native_server_that_greets_in_on_connect_keeps_working(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A native-only server (``on_native_message`` only) whose ``on_connect`` greets the
    client with ``conn.write(Message(..., native=True))`` (``examples/native`` builds such
    messages): the greeting is not sent, and the client's messages are never handled."""
    events = Events()

    def on_connect(conn: Conn) -> None:
        conn.write(Message(event="_OnNativeMessage", body=b"hi", native=True))

    def native(ns: NSConn, msg: Message) -> str:
        events(f"got {msg.text}")
        return "echo " + msg.text

    server = Server({"": {"_OnNativeMessage": native}}, on_connect=on_connect)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ws.send_str("hello")
        frames: list[Any] = []
        with contextlib.suppress(asyncio.TimeoutError):
            while len(frames) < 2:
                msg = await ws.receive(timeout=1.0)
                frames.append(msg.data)
    assert events.lines == ["got hello"]
    assert frames[-1] == "echo hello", frames


# -------------------------------------------------------------------------------------------
# the Python client's own lifecycle
# -------------------------------------------------------------------------------------------


async def test_the_python_client_closing_inside_its_own_handler(serve: Serve) -> None:
    """A handler of the Python client closes the client (``await client.close()`` inside
    it returns at once): the client ends ``closed``, the server's events and
    ``on_disconnect`` run once."""
    events = Events()
    holder: list[wsmvc.ClientConn] = []

    async def bye(ns: NSConn, msg: Message) -> None:
        await holder[0].close()
        events("client close returned")

    conns: list[Conn] = []
    server = Server(
        {"default": recorder(events, "_OnNamespaceDisconnect")},
        on_connect=capture(conns),
        on_disconnect=lambda c: events("on_disconnect"),
    )
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {"bye": bye}}, timeout=2)
    holder.append(client)
    await client.connect("default", timeout=T)
    server_ns = conns[0].namespace("default")
    assert server_ns is not None
    assert server_ns.emit("bye")
    await asyncio.wait_for(client.wait_closed(), T)
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert client.state is ConnState.CLOSED
    assert events.counts == Counter(
        {"client close returned": 1, "_OnNamespaceDisconnect": 1, "on_disconnect": 1}
    )


async def test_the_python_client_closing_while_the_server_asks_it(serve: Serve) -> None:
    """``server.ask`` waits for the Python client, whose handler is still working; the
    client closes from another task. The server's ask fails at once with
    ``ConnectionClosed``; the client's ``close()`` returns once its handler did."""
    events = Events()
    release = asyncio.Event()

    async def question(ns: NSConn, msg: Message) -> str:
        events("client handler")
        await release.wait()
        return "late"

    server = Server({"default": {}}, id_generator=lambda request: "c1")
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {"q": question}})
    await client.connect("default", timeout=T)
    asking = asyncio.create_task(
        server.ask(Message(namespace="default", event="q"), to="c1", timeout=NEVER)
    )
    await events.reached("client handler")
    closing = asyncio.create_task(client.close())
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(asking, T)
    assert not closing.done()
    release.set()
    await asyncio.wait_for(closing, T)
    assert client.state is ConnState.CLOSED
    no_ghosts(server, "default")


async def test_the_python_client_closed_right_after_dial(serve: Serve) -> None:
    """``close()`` right after ``dial()`` (before the client's serving task ran once)
    returns with the client ``closed``, and the server sees one connect and one
    disconnect."""
    counts: Counter[str] = Counter()
    server = Server(
        {"default": {}},
        on_connect=lambda c: counts.update(["on_connect"]),
        on_disconnect=lambda c: counts.update(["on_disconnect"]),
    )
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {}})
    await client.close()
    assert client.state is ConnState.CLOSED
    await until(lambda: counts["on_disconnect"] == 1, "on_disconnect")
    assert counts == Counter({"on_connect": 1, "on_disconnect": 1})


# -------------------------------------------------------------------------------------------
# as a new user: the presence list of docs/getting-started.md, kicked and closed
# -------------------------------------------------------------------------------------------


async def test_a_presence_list_stays_true_through_kicks_leaves_and_closes(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """A small app as a user would write it from the docs: a controller that keeps who is
    online in ``on_namespace_connected``/``on_namespace_disconnect`` and a moderator event
    that kicks another user from the namespace. Users join, get kicked, leave and close
    in every order; the presence list always matches ``server.namespace_members``."""
    online: set[str] = set()

    @wsmvc.controller(namespace="chat")
    class Chat:
        conn: NSConn

        @wsmvc.event
        def on_namespace_connected(self, msg: Message) -> None:
            online.add(self.conn.id)

        @wsmvc.event
        def on_namespace_disconnect(self, msg: Message) -> None:
            online.discard(self.conn.id)

        @wsmvc.event
        async def on_kick(self, msg: Message) -> str:
            for other in self.conn.server.get_connections(msg.text):
                victim = other.namespace("chat")
                if victim is not None:
                    await victim.disconnect(timeout=T)
            return "done"

    ids = iter(f"u{i}" for i in range(100))
    server = Server(controllers=[Chat], id_generator=lambda request: next(ids))
    url = await serve(server)

    def members() -> set[str]:
        return {ns.id for ns in server.namespace_members("chat")}

    clients = [await wsmvc.dial(url, {"chat": {}}) for _ in range(4)]
    try:
        spaces = [await c.connect("chat", timeout=T) for c in clients]
        assert online == members() == {"u0", "u1", "u2", "u3"}
        assert (await spaces[0].ask("OnKick", "u1", timeout=T)).text == "done"
        assert online == members() == {"u0", "u2", "u3"}
        await spaces[2].disconnect(timeout=T)
        await clients[3].close()
        await until(lambda: members() == {"u0"}, "u3's close")
        assert online == {"u0"}
        # kick yourself: the answer cannot be written any more, the client's ask fails
        with pytest.raises((EventError, ConnectionClosed)):
            await spaces[0].ask("OnKick", "u0", timeout=T)
        await until(lambda: members() == set(), "u0's kick")
        assert online == set()
    finally:
        for client in clients:
            await client.close()
    no_ghosts(server, "chat")
    no_state_errors(caplog)
    assert wsmvc_errors(caplog) == []
