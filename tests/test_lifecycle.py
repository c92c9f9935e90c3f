"""The connection lifecycle when closes, disconnects, joins and handlers cross (issue 8).

Each test is one way for a close, a namespace disconnect or a join to meet a handler, an
ask or a write that is under way, checked on a real server with a raw or a Python client:
no ghost member is left in the registry, no frame is lost or overtaken by the close, no ask
waits for its timeout when its answer can no longer come, and every disconnect event fires
once, after the handler that was running. The numbered cases of the issue are named in
the docstrings ("case N"); the tests around each one vary it (another hook, another side,
another way to close).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import struct
from collections.abc import Callable
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
    Reject,
    Server,
)
from wsmvc.exchange import LocalExchange
from wsmvc.states import ConnState

from .wire_support import (
    RawWS,
    Serve,
    T,
    barrier,
    conn_by_id,
    expect,
    expect_close,
    handshake,
    make_server,
    ready,
    recv,
    recv_text,
    show,
)

NEVER = 60.0  # an ask timeout long enough to mean "would have waited": the test fails first


class Log:
    """What hooks and handlers did, in order, and a way to wait for one of them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._waiters: dict[str, asyncio.Event] = {}

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        event = self._waiters.get(line)
        if event is not None:
            event.set()

    async def reached(self, line: str) -> None:
        if line in self.lines:
            return
        event = self._waiters.setdefault(line, asyncio.Event())
        await asyncio.wait_for(event.wait(), T)

    def count(self, line: str) -> int:
        return self.lines.count(line)


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms); fail after ``T`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + T
    while not condition():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def hooks(log: Log) -> dict[str, Any]:
    """System-event handlers that log ``<event>`` or ``<event>:<room>``."""

    def record(ns: NSConn, msg: Message) -> None:
        log(f"{msg.event}:{msg.room}" if msg.room else msg.event)

    return {
        e: record
        for e in (
            "_OnNamespaceConnected",
            "_OnNamespaceDisconnect",
            "_OnRoomJoined",
            "_OnRoomLeave",
            "_OnRoomLeft",
        )
    }


def captured(conns: list[Conn]) -> Any:
    def on_connect(conn: Conn) -> None:
        conns.append(conn)

    return on_connect


# -------------------------------------------------------------------------------------------
# case 1: a close inside on_connect
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [False, True], ids=["neffos", "native-only"])
async def test_a_close_inside_on_connect_leaves_no_connection_behind(
    serve: Serve, session: aiohttp.ClientSession, native: bool
) -> None:
    """Case 1: ``on_connect`` closes the connection (4000): no ``A``, no registry entry,
    nothing written afterwards, and ``on_disconnect`` balances the ``on_connect`` that ran."""
    log = Log()
    conns: list[Conn] = []

    async def on_connect(conn: Conn) -> None:
        conns.append(conn)
        log("on_connect")
        await conn.close(4000, "go away")
        log("closed")
        assert not conn.write(Message(namespace="", event="late"))
        with pytest.raises(ConnectionClosed):
            await conn.connect("")

    events: dict[str, Any] = {"_OnNativeMessage": lambda ns, msg: None} if native else {}
    server = Server(
        {"": events},
        on_connect=on_connect,
        on_disconnect=lambda conn: log("on_disconnect"),
        id_generator=lambda request: "c1",
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        if not native:
            await ws.send_str("M")
        msg = await expect_close(ws)
        assert msg.type is WSMsgType.CLOSE and msg.data == 4000, show(msg)
        assert msg.extra == "go away"
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert log.lines == ["on_connect", "closed", "on_disconnect"]
    assert server.connections == []
    assert server.get_connections("c1") == []
    assert server.namespace_members("") == []
    assert conns[0].state is ConnState.CLOSED


async def test_a_close_from_elsewhere_during_on_connect_is_not_acknowledged(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 1, from another task: the connection closes while ``on_connect`` awaits; once
    ``on_connect`` returns there is no ``A``, no registry entry, one ``on_disconnect``."""
    log = Log()
    conns: list[Conn] = []
    release = asyncio.Event()

    async def on_connect(conn: Conn) -> None:
        conns.append(conn)
        log("on_connect")
        await release.wait()
        log("on_connect returns")

    server = make_server(on_connect=on_connect, on_disconnect=lambda c: log("on_disconnect"))
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ws.send_str("M")
        await log.reached("on_connect")
        closing = asyncio.create_task(conns[0].close(4001))
        msg = await expect_close(ws)  # the close frame, not an A<id>
        assert msg.type is WSMsgType.CLOSE and msg.data == 4001, show(msg)
        assert not closing.done()  # it waits for on_connect, then the disconnect events
        release.set()
        await asyncio.wait_for(closing, T)
    assert log.lines == ["on_connect", "on_connect returns", "on_disconnect"]
    assert server.connections == []


async def test_a_client_gone_during_on_connect_is_never_registered(serve: Serve) -> None:
    """Case 1, the client vanishes while ``on_connect`` awaits."""
    log = Log()
    conns: list[Conn] = []
    release = asyncio.Event()

    async def on_connect(conn: Conn) -> None:
        conns.append(conn)
        log("on_connect")
        await release.wait()

    server = make_server(on_connect=on_connect, on_disconnect=lambda c: log("on_disconnect"))
    url = await serve(server)
    raw = await RawWS.open(url)
    await raw.send("M")
    await log.reached("on_connect")
    raw.abort()
    release.set()
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert log.lines == ["on_connect", "on_disconnect"]
    assert server.connections == []


async def test_a_refused_connection_gets_no_on_disconnect(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """The balance the other way: ``on_connect`` refused (Reject), so no ``on_disconnect``."""
    log = Log()
    conns: list[Conn] = []

    def on_connect(conn: Conn) -> None:
        conns.append(conn)
        raise Reject("no")

    server = make_server(on_connect=on_connect, on_disconnect=lambda c: log("on_disconnect"))
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ws.send_str("M")
        await expect(ws, "Hno")
        await expect_close(ws)
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert log.lines == []
    assert server.connections == []


# -------------------------------------------------------------------------------------------
# case 2: a close while a join (or a connect) is being decided
# -------------------------------------------------------------------------------------------


async def test_a_close_during_an_async_join_hook_leaves_no_member(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 2: the join hook sleeps 0.5 s; another task closes the connection meanwhile."""
    log = Log()

    async def joining(ns: NSConn, msg: Message) -> None:
        log("join hook")
        await asyncio.sleep(0.5)
        log("join hook returns")

    server = Server(
        {"default": {**hooks(log), "_OnRoomJoin": joining}},
        id_generator=lambda request: "c1",
        on_disconnect=lambda conn: log("on_disconnect"),
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$j;default;r;_OnRoomJoin;0;0;")
        await log.reached("join hook")
        conn = conn_by_id(server, "c1")
        await asyncio.wait_for(conn.close(), T)  # returns once the disconnect events ran
        msg = await expect_close(ws)  # no answer to the join: the connection closed
        assert msg.type is WSMsgType.CLOSE, show(msg)
    assert log.lines == [
        "_OnNamespaceConnected",
        "join hook",
        "join hook returns",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    assert server.room_members("default", "r") == []
    assert server.rooms("default") == []
    assert server.connections == []


async def test_shutdown_during_an_async_connect_hook_connects_nothing(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 2 with a namespace connect and the server's shutdown: never connected, so no
    ``_OnNamespaceConnected`` and no ``_OnNamespaceDisconnect``."""
    log = Log()

    async def connecting(ns: NSConn, msg: Message) -> None:
        log("connect hook")
        await asyncio.sleep(0.5)
        log("connect hook returns")

    server = Server(
        {"default": {**hooks(log), "_OnNamespaceConnect": connecting}},
        on_disconnect=lambda conn: log("on_disconnect"),
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
        await log.reached("connect hook")
        # Read as a client does meanwhile: close() returns once the close handshake ended.
        closing = asyncio.ensure_future(server.close())
        msg = await expect_close(ws)
        await asyncio.wait_for(closing, T)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1001, show(msg)
    assert log.lines == ["connect hook", "connect hook returns", "on_disconnect"]
    assert server.namespace_members("default") == []


async def test_a_server_join_whose_local_hook_outlives_the_connection_fails(
    serve: Serve,
) -> None:
    """Case 2 from the server's side: ``ns.join_room()`` from another task; the local
    ``_OnRoomJoin`` sleeps while the client closes. The join raises ``ConnectionClosed``, the
    room has no member and ``_OnRoomJoined`` never fires."""
    log = Log()
    nsconns: list[NSConn] = []

    async def joining(ns: NSConn, msg: Message) -> None:
        log("local join hook")
        await asyncio.sleep(0.5)

    def connected(ns: NSConn, msg: Message) -> None:
        nsconns.append(ns)

    server = Server(
        {
            "default": {
                **hooks(log),
                "_OnRoomJoin": joining,
                "_OnNamespaceConnected": connected,
            }
        }
    )
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {}})
    await client.connect("default", timeout=T)
    ns = nsconns[0]
    join_task = asyncio.create_task(ns.join_room("r", timeout=T))
    await log.reached("local join hook")
    await client.close()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(join_task, T)
    await asyncio.wait_for(ns.conn.wait_closed(), T)
    assert "_OnRoomJoined:r" not in log.lines
    assert log.count("_OnNamespaceDisconnect") == 1
    assert server.room_members("default", "r") == []


# -------------------------------------------------------------------------------------------
# case 3: a close inside a disconnect event runs that event once
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["client-disconnect", "client-close", "server-close"])
async def test_a_close_inside_the_namespace_disconnect_handler_runs_it_once(
    serve: Serve, session: aiohttp.ClientSession, how: str
) -> None:
    """Case 3: the ``_OnNamespaceDisconnect`` handler calls ``await ns.conn.close()``; whatever
    made the namespace disconnect, that handler runs once, as do the room events."""
    log = Log()

    async def disconnecting(ns: NSConn, msg: Message) -> None:
        log("_OnNamespaceDisconnect")
        await ns.conn.close()
        log("closed inside")

    server = Server(
        {"default": {**hooks(log), "_OnNamespaceDisconnect": disconnecting}},
        id_generator=lambda request: "c1",
        on_disconnect=lambda conn: log("on_disconnect"),
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "r")
        conn = conn_by_id(server, "c1")
        if how == "client-disconnect":
            await ws.send_str("$d;default;;_OnNamespaceDisconnect;0;0;")
        elif how == "client-close":
            await ws.close()
        else:
            await asyncio.wait_for(conn.close(), T)
        await asyncio.wait_for(conn.wait_closed(), T)
    events = log.lines[log.lines.index("_OnNamespaceConnected") + 2 :]  # after the join
    assert events.count("_OnNamespaceDisconnect") == 1, events
    assert events.count("_OnRoomLeave:r") == 1, events
    assert events.count("_OnRoomLeft:r") == 1, events
    assert events[-1] == "on_disconnect"
    assert server.connections == []
    assert server.room_members("default", "r") == []


async def test_a_close_inside_a_forced_room_leave_runs_each_event_once(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 3 with a room: the forced ``_OnRoomLeave`` of a client's namespace disconnect
    closes the connection; every event of that namespace still runs once, in spec order."""
    log = Log()

    async def leaving(ns: NSConn, msg: Message) -> None:
        log(f"_OnRoomLeave:{msg.room}")
        await ns.conn.close()

    server = Server(
        {"default": {**hooks(log), "_OnRoomLeave": leaving}},
        id_generator=lambda request: "c1",
        on_disconnect=lambda conn: log("on_disconnect"),
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "a", "b")
        conn = conn_by_id(server, "c1")
        await ws.send_str("$d;default;;_OnNamespaceDisconnect;0;0;")
        await asyncio.wait_for(conn.wait_closed(), T)
    start = log.lines.index("_OnRoomJoined:b") + 1
    assert log.lines[start:] == [
        "_OnNamespaceDisconnect",
        "_OnRoomLeave:a",
        "_OnRoomLeft:a",
        "_OnRoomLeave:b",
        "_OnRoomLeft:b",
        "on_disconnect",
    ]


# -------------------------------------------------------------------------------------------
# case 4: asks whose namespace goes away end at once
# -------------------------------------------------------------------------------------------


def kicking_server(log: Log) -> Server:
    async def kick(ns: NSConn, msg: Message) -> str:
        await ns.disconnect(timeout=T)
        log("kicked")
        return "you are out"  # can no longer be written into the namespace

    return Server({"default": {**hooks(log), "kick": kick}}, id_generator=lambda request: "c1")


async def test_an_ask_whose_handler_disconnects_the_namespace_ends_at_once(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 4 on the wire: the client's ask is answered with ``bad namespace`` right after
    the handler returns, and the namespace's disconnect event runs after the handler."""
    log = Log()
    url = await serve(kicking_server(log))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$k;default;;kick;0;0;")
        request = await recv_text(ws)
        m = re.fullmatch(r"([0-9]+);default;;_OnNamespaceDisconnect;0;0;", request)
        assert m, request
        await ws.send_str(f"{m[1]};;;;;;")  # the client agrees
        await expect(ws, "$k;default;;kick;1;0;bad namespace")
        await barrier(ws)
    assert log.lines[-2:] == ["kicked", "_OnNamespaceDisconnect"]


async def test_an_ask_of_the_python_client_ends_when_the_server_kicks_it(serve: Serve) -> None:
    """Case 4 with the Python client: its ask fails the moment its namespace is gone."""
    log = Log()
    url = await serve(kicking_server(log))
    async with await wsmvc.dial(url, {"default": {}}) as client:
        ns = await client.connect("default", timeout=T)
        with pytest.raises((ConnectionClosed, EventError)):
            await asyncio.wait_for(ns.ask("kick", timeout=NEVER), T)
        assert client.namespace("default") is None


async def test_a_server_ask_ends_at_once_when_the_client_leaves_the_namespace(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 4, the other direction: ``server.ask(to=...)`` while the client disconnects the
    namespace instead of answering: ``ConnectionClosed`` at once, not ``AskTimeout``."""
    server = make_server(id_generator=lambda request: "c1")
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        asking = asyncio.create_task(
            server.ask(Message(namespace="default", event="q"), to="c1", timeout=NEVER)
        )
        assert re.fullmatch(r"[0-9]+;default;;q;0;0;", await recv_text(ws))
        await ws.send_str("$d;default;;_OnNamespaceDisconnect;0;0;")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(asking, T)
        await expect(ws, "$d;;;;;;")


async def test_a_server_ask_ends_at_once_when_the_client_closes(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    server = make_server(id_generator=lambda request: "c1")
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        asking = asyncio.create_task(
            server.ask(Message(namespace="default", event="q"), to="c1", timeout=NEVER)
        )
        await recv_text(ws)
        await ws.close()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(asking, T)


async def test_a_client_join_answered_after_the_server_disconnected_it_ends_at_once(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 4 with a join: the join hook runs while the server (another task) disconnects
    the namespace; the join's answer is ``bad namespace``, and no member is left."""
    log = Log()
    release = asyncio.Event()

    async def joining(ns: NSConn, msg: Message) -> None:
        log("join hook")
        await release.wait()

    server = Server(
        {"default": {**hooks(log), "_OnRoomJoin": joining}},
        id_generator=lambda request: "c1",
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$j;default;r;_OnRoomJoin;0;0;")
        await log.reached("join hook")
        ns = conn_by_id(server, "c1").namespace("default")
        assert ns is not None
        kicking = asyncio.create_task(ns.disconnect(timeout=T))
        request = await recv_text(ws)
        m = re.fullmatch(r"([0-9]+);default;;_OnNamespaceDisconnect;0;0;", request)
        assert m, request
        await ws.send_str(f"{m[1]};;;;;;")
        await until(lambda: server.namespace_members("default") == [])  # removed at once...
        assert not kicking.done()  # ...its events wait for the join hook to return
        release.set()
        await expect(ws, "$j;default;r;_OnRoomJoin;1;0;bad namespace")
        await asyncio.wait_for(kicking, T)
    assert "_OnRoomJoined:r" not in log.lines
    assert log.count("_OnNamespaceDisconnect") == 1
    assert server.room_members("default", "r") == []


# -------------------------------------------------------------------------------------------
# case 5: the close never overtakes what was written before it
# -------------------------------------------------------------------------------------------

DEFLATE = pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])


@DEFLATE
async def test_a_refusal_sends_H_before_the_close(serve: Serve, deflate: bool) -> None:
    """Case 5: ``Reject`` in ``on_connect``: ``H<reason>`` arrives, then the close frame."""

    def on_connect(conn: Conn) -> None:
        raise Reject("not today")

    url = await serve(make_server(on_connect=on_connect))
    raw = await RawWS.open(url, deflate=deflate)
    try:
        await raw.send("M")
        assert await raw.recv_text() == "Hnot today"
        assert await raw.close_code() == 1008
    finally:
        raw.abort()


@DEFLATE
@pytest.mark.parametrize("size", [10, 70_000], ids=["small", "large"])
async def test_frames_written_before_a_close_arrive_before_the_close_frame(
    serve: Serve, deflate: bool, size: int
) -> None:
    """Case 5: a handler emits three messages then closes: the three arrive, in order, then
    the close frame (large messages are compressed off the event loop by aiohttp)."""

    async def three_then_close(ns: NSConn, msg: Message) -> None:
        for i in range(3):
            assert ns.emit("m", f"{i}:" + "x" * size)
        await ns.conn.close(4002)

    url = await serve(Server({"default": {"go": three_then_close}}))
    raw = await RawWS.open(url, deflate=deflate)
    try:
        await raw.send("M")
        assert (await raw.recv_text()).startswith("A")
        await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await raw.recv_text() == "$c;;;;;;"
        await raw.send(";default;;go;0;0;")
        for i in range(3):
            assert await raw.recv_text() == f";default;;m;0;0;{i}:" + "x" * size
        op, data = await raw.recv()
        assert (op, struct.unpack("!H", data[:2])[0]) == (0x8, 4002)
    finally:
        raw.abort()


# -------------------------------------------------------------------------------------------
# case 6: bounded input (the memory of a server process under a flood)
# -------------------------------------------------------------------------------------------
# Measured in a server subprocess (tests/lifecycle_flood_app.py) from its peak RSS: see
# test_flood_memory below.


# -------------------------------------------------------------------------------------------
# case 7: a close while a handler awaits an ask of its own client
# -------------------------------------------------------------------------------------------


def asking_server(log: Log, **options: Any) -> Server:
    async def question(ns: NSConn, msg: Message) -> None:
        log("handler starts")
        try:
            await ns.ask("q", timeout=NEVER)
        except ConnectionClosed:
            log("ask failed")
        await asyncio.sleep(0)  # the handler goes on after the failure
        log(f"emit after close: {ns.emit('x')}")
        log("handler returns")

    return Server(
        {"default": {**hooks(log), "ask_me": question}},
        id_generator=lambda request: "c1",
        on_disconnect=lambda conn: log("on_disconnect"),
        **options,
    )


AFTER_THE_HANDLER = [
    "handler starts",
    "ask failed",
    "emit after close: False",
    "handler returns",
    "_OnNamespaceDisconnect",
    "on_disconnect",
]


async def test_shutdown_while_a_handler_awaits_an_ask_runs_events_after_it(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 7 with shutdown: the ask fails at once with ``ConnectionClosed``; the disconnect
    events start only after the handler returned."""
    log = Log()
    server = asking_server(log)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(";default;;ask_me;0;0;")
        await recv_text(ws)  # the server's question, never answered
        # Read as a client does meanwhile: close() returns once the close handshake ended.
        closing = asyncio.ensure_future(server.close())
        msg = await expect_close(ws)
        await asyncio.wait_for(closing, T)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1001, show(msg)
    start = log.lines.index("handler starts")
    assert log.lines[start:] == AFTER_THE_HANDLER


async def test_the_send_buffer_limit_while_a_handler_awaits_an_ask(serve: Serve) -> None:
    """Case 7 with the send-buffer limit: the stalled client is cut off (1008) while its
    handler waits for its answer; events after the handler, as with shutdown."""
    log = Log()
    server = asking_server(log, send_buffer_limit=64 * 1024)
    url = await serve(server)
    stalled = await RawWS.open(url, rcvbuf=4096)
    try:
        await stalled.send("M")
        await stalled.recv_text()
        await stalled.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await stalled.recv_text() == "$c;;;;;;"
        await stalled.send(";default;;ask_me;0;0;")
        await log.reached("handler starts")
        conn = conn_by_id(server, "c1")
        blob = os.urandom(16 * 1024)
        for _ in range(1000):  # the client reads nothing from here on
            if conn.closed:
                break
            await server.broadcast(Message(namespace="default", event="b", body=blob))
            # One broadcast per loop step, as from a chat: a burst written within one step
            # is let through (tests/test_adversarial.py); a later step finding the buffer
            # still past the limit cuts the stalled client.
            await asyncio.sleep(0)
        assert conn.closed and conn.close_code == 1008
        await asyncio.wait_for(conn.wait_closed(), T)
    finally:
        stalled.abort()
    start = log.lines.index("handler starts")
    assert log.lines[start:] == AFTER_THE_HANDLER


# -------------------------------------------------------------------------------------------
# case 8: ask timeouts
# -------------------------------------------------------------------------------------------


async def test_ask_timeouts_zero_none_and_default(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 8: ``timeout=0`` fails at once without sending; ``None`` waits past the default;
    left out, the connection's ``ask_timeout`` applies."""
    server = make_server(id_generator=lambda request: "c1", ask_timeout=0.2)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        ns = conn_by_id(server, "c1").namespace("default")
        assert ns is not None
        with pytest.raises(AskTimeout):
            await ns.ask("q", timeout=0)
        with pytest.raises(AskTimeout):
            await server.ask(Message(namespace="default", event="q"), to="c1", timeout=0)
        await barrier(ws)  # nothing was sent for them

        with pytest.raises(AskTimeout, match=r"within 0\.2s"):
            await ns.ask("q")  # the default: ask_timeout
        await recv_text(ws)  # its question (no longer awaited)

        forever = asyncio.create_task(ns.ask("q", timeout=None))
        m = re.fullmatch(r"([0-9]+);default;;q;0;0;", await recv_text(ws))
        assert m
        done, _ = await asyncio.wait([forever], timeout=0.6)  # three times the default
        assert not done
        await ws.send_str(f"{m[1]};default;;q;0;0;late but fine")
        assert (await asyncio.wait_for(forever, T)).body == b"late but fine"


async def test_client_ask_timeouts_zero_none_and_default(serve: Serve) -> None:
    """Case 8 on the Python client, for asks and the other requests that take a timeout."""
    release = asyncio.Event()

    async def slow(ns: NSConn, msg: Message) -> str:
        await release.wait()
        return "done"

    url = await serve(Server({"default": {"slow": slow}, "other": {}}))
    async with await wsmvc.dial(url, {"default": {}, "other": {}}, ask_timeout=0.2) as client:
        ns = await client.connect("default", timeout=T)
        for call in (
            ns.ask("slow", timeout=0),
            ns.join_room("r", timeout=0),
            client.connect("other", timeout=0),
        ):
            with pytest.raises(AskTimeout):
                await call
        assert client.namespace("other") is None and ns.rooms == {}
        with pytest.raises(AskTimeout):
            await ns.ask("slow")
        release.set()  # answers the first slow ask (unmatched now) and the next one at once
        assert (await ns.ask("slow", timeout=None)).body == b"done"


# -------------------------------------------------------------------------------------------
# case 9: an error is never answered
# -------------------------------------------------------------------------------------------


async def test_an_error_message_is_never_answered_whatever_its_target(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 9: a message carrying an error (isError=1) gets no answer: for an unknown event,
    an unconnected namespace, a room not joined, a join or leave in an unconnected namespace,
    an unknown event of no namespace at all."""
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await ready(ws)
        for frame in (
            "$e1;default;;nosuch;1;0;oops",
            "$e2;nope;;ping;1;0;oops",
            "$e3;default;notjoined;ping;1;0;oops",
            "$e4;nope;r;_OnRoomJoin;1;0;oops",
            "$e5;nope;r;_OnRoomLeave;1;0;oops",
            "$e6;;;nosuch;1;0;oops",
            "7;nope;;ping;1;0;oops",
        ):
            await ws.send_str(frame)
        await barrier(ws)


async def test_the_python_client_never_answers_an_error(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Case 9 on the client side: errors from the server for unknown events or namespaces."""
    conns: list[Conn] = []
    url = await serve(make_server(on_connect=captured(conns)))
    async with await wsmvc.dial(url, {"default": {}}) as client:
        ns = await client.connect("default", timeout=T)
        server_side = conns[0]
        server_ns = server_side.namespace("default")
        assert server_ns is not None
        for event in ("nosuch", "also_nosuch"):
            server_side.write(Message(namespace="default", event=event, err="oops", token="9"))
        # A round trip afterwards: had the client answered, the server's handler table has no
        # such event and would have logged; the answer to "ping" proves the order.
        assert (await ns.ask("ping", timeout=T)).body == b"pong"


# -------------------------------------------------------------------------------------------
# case 10: re-broadcasting a received message
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", [False, True], ids=["one-server", "through-an-exchange"])
async def test_a_rebroadcast_message_carries_no_token_or_marker(
    serve: Serve, session: aiohttp.ClientSession, exchange: bool
) -> None:
    """Case 10: ``server.broadcast(msg)`` of a received ask, or of a message whose token
    looks like an exchange marker, reaches the others without that token."""
    seen: list[tuple[str, str]] = []

    async def chat(ns: NSConn, msg: Message) -> None:
        seen.append((msg.token, msg.marker))
        await ns.server.broadcast(msg, exclude=ns)

    first = LocalExchange() if exchange else None
    second = LocalExchange(first) if first is not None else None
    ids = itertools.count()
    server1 = Server(
        {"default": {"chat": chat}}, exchange=first, id_generator=lambda r: f"a{next(ids)}"
    )
    url1 = await serve(server1)
    url2 = url1
    if second is not None:
        url2 = await serve(Server({"default": {}}, exchange=second))
    async with session.ws_connect(url1) as sender, session.ws_connect(url2) as other:
        await ready(sender)
        await ready(other)
        marker = "neffos(0x" + "f" * 32 + "(a0x1))wsmvc:x:YQ=="
        await sender.send_str("$ask1;default;;chat;0;0;hello")
        await sender.send_str(f"{marker};default;;chat;0;0;marked")
        await expect(other, ";default;;chat;0;0;hello", ";default;;chat;0;0;marked")
        assert seen == [("$ask1", ""), (marker, "")]  # the peer's token is opaque


# -------------------------------------------------------------------------------------------
# case 11: a reader that stopped is cut off at once, with 1008
# -------------------------------------------------------------------------------------------


@DEFLATE
async def test_a_stalled_reader_is_cut_off_at_once_with_1008(
    serve: Serve, session: aiohttp.ClientSession, deflate: bool
) -> None:
    """Case 11: 64 KiB broadcasts to a client that stopped reading, with the default
    send-buffer limit: the moment the limit is passed the server is done with it (its
    disconnect events run at once, not after a close handshake that cannot happen), and the
    client, when it reads again, finds what was buffered and then a 1008 close frame."""
    gone = asyncio.Event()
    ids = itertools.count()
    server = make_server(
        on_disconnect=lambda conn: gone.set() if conn.id == "c0" else None,
        id_generator=lambda r: f"c{next(ids)}",
    )
    url = await serve(server)
    stalled = await RawWS.open(url, rcvbuf=4096, deflate=deflate)
    try:
        await stalled.send("M")
        assert await stalled.recv_text() == "Ac0"
        await stalled.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await stalled.recv_text() == "$c;;;;;;"
        stalled_conn = conn_by_id(server, "c0")
        async with session.ws_connect(url, compress=15 if deflate else 0) as good:
            assert await ready(good) == "c1"
            sent = 0
            while not stalled_conn.closed and sent < 2000:
                blob = os.urandom(64 * 1024)  # incompressible
                await server.broadcast(
                    Message(namespace="default", event="b", body=blob, binary=True)
                )
                sent += 1
                assert (await recv(good)).data == b";default;;b;0;0;" + blob
            assert stalled_conn.closed and stalled_conn.close_code == 1008, sent
            await asyncio.wait_for(gone.wait(), 1.0)  # at once: no close handshake to wait for
            assert await stalled.close_code() == 1008
    finally:
        stalled.abort()


# -------------------------------------------------------------------------------------------
# case 12: a client that asks back before it answers
# -------------------------------------------------------------------------------------------


def ask_back_client(client_log: Log) -> dict[str, Any]:
    async def question(ns: NSConn, msg: Message) -> str:
        back = await ns.ask("back", timeout=T)  # asks the server before it answers
        client_log(f"server said {back.text}")
        return "answer"

    return {"question": question}


async def test_asking_back_works_for_an_ask_made_outside_the_connections_handlers(
    serve: Serve,
) -> None:
    """Case 12, the case that works: ``server.ask(to=...)`` from another task (an HTTP
    endpoint, a background job); the client's own ask is handled meanwhile."""
    client_log = Log()
    server = Server({"default": {"back": lambda ns, msg: "here"}}, id_generator=lambda r: "c1")
    url = await serve(server)
    async with await wsmvc.dial(url, {"default": ask_back_client(client_log)}) as client:
        await client.connect("default", timeout=T)
        reply = await server.ask(Message(namespace="default", event="question"), to="c1")
        assert reply.body == b"answer"
    assert client_log.lines == ["server said here"]


async def test_asking_back_inside_a_handler_times_out_and_says_why(serve: Serve) -> None:
    """Case 12, the case that cannot work: the server's ask is made inside a handler of that
    very connection, whose messages are handled in order; the ``AskTimeout`` says why."""
    failures: list[str] = []

    async def relay(ns: NSConn, msg: Message) -> str:
        try:
            await ns.ask("question", timeout=0.5)
        except AskTimeout as exc:
            failures.append(str(exc))
            raise EventError("no answer") from None
        return "unreachable"

    server = Server({"default": {"relay": relay, "back": lambda ns, msg: "here"}})
    url = await serve(server)
    client_log = Log()
    async with await wsmvc.dial(url, {"default": ask_back_client(client_log)}) as client:
        ns = await client.connect("default", timeout=T)
        with pytest.raises(EventError, match="no answer"):
            await ns.ask("relay", timeout=T)
    (text,) = failures
    assert "no answer to 'question' within 0.5s" in text
    assert "a peer that asks back before it answers cannot answer an ask made inside" in text


# -------------------------------------------------------------------------------------------
# shutdown, concurrent closes, cancellation
# -------------------------------------------------------------------------------------------


async def test_shutdown_closes_a_connection_still_in_its_upgrade(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A connection whose ``id_generator`` still runs when shutdown starts is upgraded and
    closed with 1001 as soon as it returns; ``server.close()`` waits for it."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow_id(request: web.Request) -> str:
        entered.set()
        await release.wait()
        return "late"

    server = make_server(id_generator=slow_id)
    url = await serve(server)
    dialing = asyncio.create_task(session.ws_connect(url))
    await asyncio.wait_for(entered.wait(), T)
    closing = asyncio.create_task(server.close())
    await asyncio.sleep(0)
    assert not closing.done()  # it waits for the upgrade under way
    release.set()
    ws = await asyncio.wait_for(dialing, T)
    msg = await expect_close(ws)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1001, show(msg)
    await asyncio.wait_for(closing, T)
    assert server.connections == []


async def test_shutdown_closes_a_connection_waiting_for_its_M(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    server = make_server()
    url = await serve(server)
    async with session.ws_connect(url) as ws:  # upgraded, never sends M
        # Read as a client does meanwhile: close() returns once the close handshake ended.
        closing = asyncio.ensure_future(server.close())
        msg = await expect_close(ws)
        await asyncio.wait_for(closing, T)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1001, show(msg)


async def test_every_caller_of_close_returns_after_the_disconnect_events(serve: Serve) -> None:
    """Several tasks close the same connection at once (and the server shuts down): each
    returns only once the disconnect events and ``on_disconnect`` ran, which ran once."""
    log = Log()
    conns: list[Conn] = []

    async def on_disconnect(conn: Conn) -> None:
        await asyncio.sleep(0.1)  # a slow on_disconnect: the callers must wait for it
        log("on_disconnect")

    server = Server(
        {"default": hooks(log)}, on_connect=captured(conns), on_disconnect=on_disconnect
    )
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {}})
    await client.connect("default", timeout=T)
    conn = conns[0]
    returned: list[list[str]] = []

    async def close(code: int) -> None:
        await conn.close(code)
        returned.append(list(log.lines))

    async def shutdown() -> None:
        await server.close()
        returned.append(list(log.lines))

    await asyncio.wait_for(asyncio.gather(close(4000), close(4001), shutdown()), T)
    expected = ["_OnNamespaceConnected", "_OnNamespaceDisconnect", "on_disconnect"]
    assert returned == [expected, expected, expected]
    assert conn.close_code == 4000  # the first close decides
    await client.close()


async def test_a_cancelled_close_still_closes(serve: Serve) -> None:
    """Cancelling a task that awaits ``close()`` cancels that task (CancelledError is
    re-raised), not the close: the connection closes and its events run, once."""
    log = Log()
    conns: list[Conn] = []
    release = asyncio.Event()

    async def on_disconnect(conn: Conn) -> None:
        await release.wait()
        log("on_disconnect")

    server = Server({"default": {}}, on_connect=captured(conns), on_disconnect=on_disconnect)
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {}})
    closing = asyncio.create_task(conns[0].close())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    release.set()
    await asyncio.wait_for(conns[0].wait_closed(), T)
    assert log.lines == ["on_disconnect"]
    await client.close()


async def test_a_cancelled_ask_leaves_nothing_waiting(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Cancelling a task in ``ns.ask()`` re-raises CancelledError and forgets the token: a
    late answer is then an ordinary event (spec 4 step 3d), handled by its handler."""
    got: list[bytes] = []
    server = Server(
        {"default": {"q": lambda ns, msg: got.append(msg.body)}},
        id_generator=lambda request: "c1",
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        conn = conn_by_id(server, "c1")
        ns = conn.namespace("default")
        assert ns is not None
        asking = asyncio.create_task(ns.ask("q", timeout=NEVER))
        m = re.fullmatch(r"([0-9]+);default;;q;0;0;", await recv_text(ws))
        assert m
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        assert conn.session.asks == {}
        await ws.send_str(f"{m[1]};default;;q;0;0;too late")
        await barrier(ws)
        assert got == [b"too late"]


async def test_cancelling_the_serving_task_closes_and_re_raises(serve: Serve) -> None:
    """The serving task (aiohttp's handler task) cancelled: the connection closes (1006),
    the disconnect events and ``on_disconnect`` run, and the task ends cancelled."""
    log = Log()
    conns: list[Conn] = []
    server = Server(
        {"default": hooks(log)},
        on_connect=captured(conns),
        on_disconnect=lambda conn: log("on_disconnect"),
    )
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {}})
    await client.connect("default", timeout=T)
    task = conns[0].reader.task
    assert task is not None
    task.cancel()
    await asyncio.wait([task], timeout=T)
    assert task.cancelled()
    assert log.lines == ["_OnNamespaceConnected", "_OnNamespaceDisconnect", "on_disconnect"]
    assert server.connections == []
    await asyncio.wait_for(client.wait_closed(), T)
    await client.close()


# -------------------------------------------------------------------------------------------
# crossing requests: both sides change the same namespace or room at once
# -------------------------------------------------------------------------------------------


async def test_a_server_connect_while_the_clients_connect_is_being_decided(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """``conn.connect("default")`` from another task while the client's own connect of it
    waits for its hook: the server's call waits for that decision and returns the same
    namespace connection; nothing is asked twice."""
    log = Log()
    release = asyncio.Event()

    async def connecting(ns: NSConn, msg: Message) -> None:
        log(f"connect hook local={msg.local}")
        await release.wait()

    server = Server({"default": {"_OnNamespaceConnect": connecting}}, id_generator=lambda r: "c1")
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
        await log.reached("connect hook local=False")
        conn = conn_by_id(server, "c1")
        connecting_too = asyncio.create_task(conn.connect("default", timeout=T))
        await asyncio.sleep(0)
        assert not connecting_too.done()  # it waits for the client's connect to be decided
        release.set()
        await expect(ws, "$c;;;;;;")
        ns = await asyncio.wait_for(connecting_too, T)
        assert ns is conn.namespace("default")
        await barrier(ws)  # the server's connect asked nothing of the client
    assert log.lines == ["connect hook local=False"]


async def test_a_server_disconnect_crossing_the_clients_refused_disconnect(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """The client asks to disconnect ``default`` and the server's hook refuses it, while the
    server disconnected it from another task and the client agreed to that: it ends
    disconnected on both sides, the client's own request is answered with an empty reply,
    and ``_OnNamespaceDisconnect`` ran once."""
    log = Log()
    release = asyncio.Event()

    async def refusing(ns: NSConn, msg: Message) -> None:
        log(f"_OnNamespaceDisconnect local={msg.local}")
        await release.wait()
        raise EventError("stay")

    server = Server(
        {"default": {**hooks(log), "_OnNamespaceDisconnect": refusing}},
        id_generator=lambda r: "c1",
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "r")
        ns = conn_by_id(server, "c1").namespace("default")
        assert ns is not None
        await ws.send_str("$d;default;;_OnNamespaceDisconnect;0;0;")
        await log.reached("_OnNamespaceDisconnect local=False")
        kicking = asyncio.create_task(ns.disconnect(timeout=T))
        request = await recv_text(ws)
        m = re.fullmatch(r"([0-9]+);default;;_OnNamespaceDisconnect;0;0;", request)
        assert m, request
        await ws.send_str(f"{m[1]};;;;;;")  # the client agrees to the server's disconnect
        await until(lambda: not ns.connected)  # removed at once
        release.set()  # the hook refuses the client's own request: moot now
        await expect(ws, "$d;;;;;;")
        await asyncio.wait_for(kicking, T)
    assert log.count("_OnNamespaceDisconnect local=False") == 1
    assert "_OnNamespaceDisconnect" not in log.lines  # no second disconnect event
    assert log.count("_OnRoomLeft:r") == 1
    assert server.room_members("default", "r") == []


async def test_a_server_join_refused_by_its_own_hook_sends_nothing(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A server-side ``join_room`` runs its local ``_OnRoomJoin`` first: a refusal raises
    and nothing reaches the client, so the two sides never disagree (Go asks first)."""

    def no_vip(ns: NSConn, msg: Message) -> None:
        if msg.room == "vip":
            raise EventError("vip only")

    server = Server({"default": {"_OnRoomJoin": no_vip}}, id_generator=lambda r: "c1")
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        ns = conn_by_id(server, "c1").namespace("default")
        assert ns is not None
        with pytest.raises(EventError, match="vip only"):
            await ns.join_room("vip", timeout=T)
        await barrier(ws)  # no join request was sent
        assert ns.rooms == {}
        assert server.room_members("default", "vip") == []


async def test_crossing_joins_of_the_same_room_agree(serve: Serve) -> None:
    """The server joins the client to a room while the client asks to join it too: the
    client's own request gets ``bad room`` (the room is being joined), the server's join
    completes, and both sides end joined."""
    release = asyncio.Event()
    nsconns: list[NSConn] = []

    async def joining(ns: NSConn, msg: Message) -> None:
        if msg.local:
            await release.wait()

    server = Server(
        {
            "default": {
                "_OnRoomJoin": joining,
                "_OnNamespaceConnected": lambda ns, msg: nsconns.append(ns),
            }
        }
    )
    url = await serve(server)
    async with await wsmvc.dial(url, {"default": {}}) as client:
        cns = await client.connect("default", timeout=T)
        server_join = asyncio.create_task(nsconns[0].join_room("r", timeout=T))
        await asyncio.sleep(0)
        with pytest.raises(EventError, match="bad room"):
            await cns.join_room("r", timeout=T)
        release.set()
        await asyncio.wait_for(server_join, T)
        await until(lambda: "r" in cns.rooms)
        assert list(nsconns[0].rooms) == ["r"]


@pytest.mark.parametrize("before", ["nothing", "namespace disconnect", "messages arriving"])
async def test_a_python_client_close_completes_the_close_handshake(
    serve: Serve, before: str
) -> None:
    """The Python client's ``close(code, reason)`` returns only after the server answered its
    close frame: the server has already handled the close (no connection, no member, its
    disconnect events ran) and saw the client's own code. aiohttp's client skips the
    handshake once a ``receive()`` of it was cancelled; the client must never do that."""
    closed: list[int | None] = []
    on_server: list[Conn] = []

    async def chatter(ns: NSConn, msg: Message) -> None:
        for i in range(50):
            if not ns.emit("tick", str(i)):
                return
            await asyncio.sleep(0)

    server = Server(
        {"default": {"chatter": chatter}},
        on_connect=on_server.append,
        on_disconnect=lambda conn: closed.append(conn.close_code),
    )
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {"tick": lambda ns, msg: None}})
    ns = await client.connect("default", timeout=T)
    if before == "namespace disconnect":
        await ns.disconnect(timeout=T)
    elif before == "messages arriving":
        ns.emit("chatter")
        await asyncio.sleep(0)
    await client.close(4001, "bye")
    assert server.connections == []
    assert server.namespace_members("default") == []
    assert closed == [4001]
    assert on_server[0].state is ConnState.CLOSED
