"""The server's wire behaviour seen by a raw client (neffos-protocol.md §1, §3-§11, §15, §16).

No wsmvc client here: frames are written and read by hand, with aiohttp's client websocket or,
where a client must misbehave below the websocket layer (stop reading, vanish without a close
frame), with a small websocket client written on a plain socket (``RawWS``).

Every expected frame is exact. "The server sent nothing" is checked with a *barrier*: a connect
request to an undeclared namespace, which the server always answers (``bad namespace``) and
handles in arrival order, so anything the server would have sent for the frames before it must
arrive before the barrier's answer. No test sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from tests.wire_support import (
    PROBE_NS,
    WS,
    Call,
    RawWS,
    Recorder,
    Serve,
    T,
    barrier,
    conn_by_id,
    connect_ns,
    expect,
    expect_close,
    handshake,
    http_url,
    join,
    make_server,
    ping,
    ready,
    recv,
    recv_binary,
    recv_text,
    show,
)
from wsmvc import Conn, EventError, Message, NSConn, Reject, Reply, Server

# -------------------------------------------------------------------------------------------
# handshake (§3, 16.15-16.17, §1.3-1.5)
# -------------------------------------------------------------------------------------------


async def test_ack_is_the_first_frame_and_carries_the_server_id(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    server = make_server()
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ws.send_str("M")
        msg = await recv(ws)
        assert msg.type is WSMsgType.TEXT, show(msg)
        assert msg.data.startswith("A")
        conn_id = msg.data[1:]
        assert str(uuid.UUID(conn_id)) == conn_id  # default id: a UUID4 string (spec 1.5)
        assert [c.id for c in server.connections] == [conn_id]


async def test_only_the_first_byte_M_matters(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = make_server()
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ws.send_str("Mxyz")
        ack = await recv_text(ws)
        assert re.fullmatch(r"A[0-9a-f-]{36}", ack)
        await connect_ns(ws)


async def test_second_M_is_an_ignored_frame(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Vector 46."""
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("M")
        await barrier(ws)


async def test_first_frame_A_is_not_adopted_and_early_frames_wait_for_M(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """16.17: a client cannot set its id with ``A``; 16.15: early frames are handled after ``A``."""
    server = make_server()
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ws.send_str("Aevil")
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
        await ws.send_str("$p;default;;ping;0;0;")
        await ws.send_bytes(b"$b;default;;ping;0;0;\x00")
        await ws.send_str("M")
        ack = await recv_text(ws)
        assert ack != "Aevil"
        conn_id = ack[1:]
        assert str(uuid.UUID(conn_id)) == conn_id
        assert [c.id for c in server.connections] == [conn_id]
        await expect(ws, "$c;;;;;;", "$p;default;;ping;0;0;pong")
        assert await recv_binary(ws) == b"$b;default;;ping;0;0;pong"
        await barrier(ws)


async def test_frames_before_M_are_handled_after_the_ack(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    rec = Recorder()
    url = await serve(make_server(rec))
    async with session.ws_connect(url) as ws:
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
        await ws.send_str("$j;default;r;_OnRoomJoin;0;0;")
        await ws.send_str("$p;default;r;ping;0;0;")
        await ws.send_str("M")
        assert (await recv_text(ws)).startswith("A")
        await expect(ws, "$c;;;;;;", "$j;;;;;;", "$p;default;r;ping;0;0;pong")
        assert rec.events() == [
            "_OnNamespaceConnect",
            "_OnNamespaceConnected",
            "_OnRoomJoin",
            "_OnRoomJoined",
        ]


async def test_reject_sends_H_reason_then_closes(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    conns: list[Conn] = []
    disconnected: list[Conn] = []

    def on_connect(conn: Conn) -> None:
        conns.append(conn)
        raise Reject("not allowed; go away")

    server = make_server(on_connect=on_connect, on_disconnect=disconnected.append)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ws.send_str("M")
        assert await recv_text(ws) == "Hnot allowed; go away"  # vector 3
        await expect_close(ws)
    (conn,) = conns
    await asyncio.wait_for(conn.wait_closed(), T)
    assert server.connections == []
    assert disconnected == []  # spec 3 / 16.20: no OnDisconnect for a refused connection


async def test_on_connect_runs_before_the_ack(serve: Serve, session: aiohttp.ClientSession) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def on_connect(conn: Conn) -> None:
        started.set()
        await release.wait()

    server = make_server(on_connect=on_connect)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ws.send_str("M")
        await asyncio.wait_for(started.wait(), T)
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")  # waits for the ack too
        assert server.connections == []  # not acknowledged while on_connect runs
        release.set()
        assert (await recv_text(ws)).startswith("A")
        await expect(ws, "$c;;;;;;")


async def test_server_connect_inside_on_connect_sends_the_ack_first(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Spec 3 (exception) and 5.2: a write in OnConnect sends ``A<id>`` before it."""
    rec = Recorder()

    async def on_connect(conn: Conn) -> None:
        await conn.connect("default")

    url = await serve(make_server(rec, on_connect=on_connect, id_generator=lambda r: "conn1"))
    async with session.ws_connect(url) as ws:
        await ws.send_str("M")
        await expect(ws, "Aconn1")
        request = await recv_text(ws)
        m = re.fullmatch(r"([0-9]+);default;;_OnNamespaceConnect;0;0;", request)
        assert m, request
        await ws.send_str(f"{m[1]};;;;;;")
        await ws.send_str("$p;default;;ping;0;0;")
        await expect(ws, "$p;default;;ping;0;0;pong")
    assert rec.calls[:2] == [
        ("_OnNamespaceConnect", "", False, True),
        ("_OnNamespaceConnected", "", False, True),
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_id_generator(serve: Serve, session: aiohttp.ClientSession, kind: str) -> None:
    def sync_gen(request: web.Request) -> str:
        return "sync-id"

    async def async_gen(request: web.Request) -> str:
        await asyncio.sleep(0)
        return "async-id"

    server = make_server(id_generator=sync_gen if kind == "sync" else async_gen)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ws.send_str("M")
        await expect(ws, f"A{kind}-id")
        assert [c.id for c in server.connections] == [f"{kind}-id"]


@pytest.mark.parametrize("key", ["X-Websocket-Header-X-Username", "x-websocket-header-x-username"])
async def test_query_parameter_headers_reach_id_generator(
    serve: Serve, session: aiohttp.ClientSession, key: str
) -> None:
    """Spec 1.3: ``X-Websocket-Header-<Name>=v`` becomes header ``<Name>: v``."""
    seen: list[str | None] = []

    def gen(request: web.Request) -> str:
        seen.append(request.headers.get("X-Username"))
        return request.headers.get("X-Username", "nobody")

    url = await serve(make_server(id_generator=gen))
    async with session.ws_connect(f"{url}?{key}=bob") as ws:
        await ws.send_str("M")
        await expect(ws, "Abob")
    assert seen == ["bob"]


@pytest.mark.parametrize(
    ("headers", "query", "tries"),
    [
        ({"X-Websocket-Reconnect": "3"}, "", 3),
        ({}, "?X-Websocket-Header-X-Websocket-Reconnect=2", 2),
        ({}, "", 0),
    ],
    ids=["header", "query", "none"],
)
async def test_reconnect_counter(
    serve: Serve, session: aiohttp.ClientSession, headers: dict[str, str], query: str, tries: int
) -> None:
    """Spec 1.4."""
    conns: list[Conn] = []
    url = await serve(make_server(on_connect=conns.append))
    async with session.ws_connect(url + query, headers=headers) as ws:
        await handshake(ws)
        (conn,) = conns
        assert conn.reconnect_tries == tries
        assert conn.was_reconnected is (tries > 0)


async def test_native_only_server_needs_no_handshake(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Vector 37 / spec 9.1: every frame, even ``M``, is a native message."""
    got: list[Message] = []

    def native(nsconn: NSConn, msg: Message) -> bytes:
        got.append(msg)
        return b"echo:" + msg.body

    url = await serve(Server({"": {"_OnNativeMessage": native}}))
    async with session.ws_connect(url) as ws:
        await ws.send_str("hello")
        await expect(ws, "echo:hello")
        await ws.send_str("M")
        await expect(ws, "echo:M")
    assert [(m.event, m.body, m.native, m.namespace) for m in got] == [
        ("_OnNativeMessage", b"hello", True, ""),
        ("_OnNativeMessage", b"M", True, ""),
    ]


async def test_mixed_mode_native_frames(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Vectors 38 and 39 / spec 9.2."""
    got: list[bytes] = []

    def native(nsconn: NSConn, msg: Message) -> None:
        got.append(msg.body)

    url = await serve(Server({"": {"_OnNativeMessage": native}, "default": {"ping": ping}}))
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("plain text")  # "" not connected yet: dropped
        await barrier(ws)
        assert got == []
        await connect_ns(ws, "")
        await ws.send_str("plain text")
        await ws.send_str("x;y;z;w;v;u;t")  # an envelope for namespace y: dropped
        await barrier(ws)
        assert got == [b"plain text"]


# -------------------------------------------------------------------------------------------
# the edge-input table of §15 (after ``M``)
# -------------------------------------------------------------------------------------------


async def test_duplicate_connect_gets_empty_reply_and_no_events(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    rec = Recorder()
    url = await serve(make_server(rec))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        rec.calls.clear()
        await ws.send_str("$2;default;;_OnNamespaceConnect;0;0;")
        await expect(ws, "$2;;;;;;")
        assert rec.calls == []


@pytest.mark.parametrize(
    "frame",
    [
        "$5;other;;_OnNamespaceConnect;0;1;",
        "$5;default;;_OnNamespaceConnect;0;1;",
        "$5;default;r2;_OnRoomJoin;0;1;",
        "$5;default;r;_OnRoomLeave;0;1;",
        "$5;default;;_OnNamespaceDisconnect;0;1;",
    ],
    ids=["connect-new", "connect-again", "join", "leave", "disconnect"],
)
async def test_noop_system_requests_are_ignored(
    serve: Serve, session: aiohttp.ClientSession, frame: str
) -> None:
    """Spec 2.5: isNoOp ``1`` on connect/disconnect/join/leave → no reply, no events."""
    rec = Recorder()
    server = Server(
        {"default": {"ping": ping, **rec.system()}, "other": {"ping": ping, **rec.system()}}
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        conn_id = await ready(ws, "r")
        rec.calls.clear()
        await ws.send_str(frame)
        await barrier(ws)
        assert rec.calls == []
        conn = conn_by_id(server, conn_id)
        assert sorted(conn.namespaces) == ["default"]
        assert sorted(conn.namespaces["default"].rooms) == ["r"]


async def test_noop_flag_has_no_effect_on_ordinary_events(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Vector 25: the answer is written with isNoOp ``0``."""
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$n;default;;ping;0;1;x")
        await expect(ws, "$n;default;;ping;0;0;pong")


async def test_connect_undeclared_namespace(serve: Serve, session: aiohttp.ClientSession) -> None:
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$3;nope;;_OnNamespaceConnect;0;0;")
        await expect(ws, "$3;nope;;_OnNamespaceConnect;1;0;bad namespace")


async def test_connect_without_token_is_ignored(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Vector 27."""
    rec = Recorder()
    server = make_server(rec)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        conn_id = await handshake(ws)
        await ws.send_str(";default;;_OnNamespaceConnect;0;0;some id")
        await barrier(ws)
        assert rec.calls == []
        assert conn_by_id(server, conn_id).namespaces == {}


@pytest.mark.parametrize(
    ("frame", "answer"),
    [
        ("$4;nope;;ping;0;0;", "$4;nope;;ping;1;0;bad namespace"),
        ("$4;other;;ping;0;0;", "$4;other;;ping;1;0;bad namespace"),
        ("$6;nope;r;_OnRoomJoin;0;0;", "$6;nope;r;_OnRoomJoin;1;0;bad namespace"),
        ("$6;other;r;_OnRoomLeave;0;0;", "$6;other;r;_OnRoomLeave;1;0;bad namespace"),
    ],
    ids=["ask-undeclared", "ask-declared-not-connected", "join", "leave"],
)
async def test_ask_to_unconnected_namespace_is_answered(
    serve: Serve, session: aiohttp.ClientSession, frame: str, answer: str
) -> None:
    """Deliberate deviation from Go (which sends nothing, spec 4 / 16.8): asks get an error."""
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(frame)
        await expect(ws, answer)


@pytest.mark.parametrize(
    "frame",
    [
        ";nope;;ping;0;0;",
        ";other;;ping;0;0;",
        "5;other;;ping;0;0;",  # a reply-looking token that matches nothing: still no answer
        ";other;r;_OnRoomJoin;0;0;",
    ],
    ids=["emit-undeclared", "emit-declared-not-connected", "server-token", "join-no-token"],
)
async def test_emit_to_unconnected_namespace_gets_nothing(
    serve: Serve, session: aiohttp.ClientSession, frame: str
) -> None:
    called: list[Message] = []

    def record(nsconn: NSConn, msg: Message) -> str:
        called.append(msg)
        return "pong"

    url = await serve(Server({"default": {"ping": record}, "other": {"ping": record}}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(frame)
        await barrier(ws)
        assert called == []


async def test_leave_room_not_joined(serve: Serve, session: aiohttp.ClientSession) -> None:
    rec = Recorder()
    url = await serve(make_server(rec))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        rec.calls.clear()
        await ws.send_str("$7;default;zz;_OnRoomLeave;0;0;")
        await expect(ws, "$7;;;;;;")
        assert rec.calls == []


@pytest.mark.parametrize("room", ["r", "zz"], ids=["joined", "not-joined"])
async def test_room_left_request_is_answered_with_an_error(
    serve: Serve, session: aiohttp.ClientSession, room: str
) -> None:
    """Deliberate deviation (spec 16.12): neffos.js leaveAll() asks with ``_OnRoomLeft``."""
    rec = Recorder()
    server = make_server(rec)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        conn_id = await ready(ws, "r")
        rec.calls.clear()
        await ws.send_str(f"$8;default;{room};_OnRoomLeft;0;0;")
        answer = await recv_text(ws)
        assert answer.startswith(f"$8;default;{room};_OnRoomLeft;1;0;leaveAll is not supported")
        assert rec.calls == []
        nsconn = conn_by_id(server, conn_id).namespaces["default"]
        assert server.room_members("default", "r") == [nsconn]  # nothing left


async def test_room_left_without_token_is_an_ordinary_event(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    rec = Recorder()
    server = make_server(rec)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "r")
        rec.calls.clear()
        await ws.send_str(";default;r;_OnRoomLeft;0;0;")
        await barrier(ws)
        assert rec.calls == [("_OnRoomLeft", "r", False, False)]
        assert len(server.room_members("default", "r")) == 1


async def test_disconnect_when_not_connected(serve: Serve, session: aiohttp.ClientSession) -> None:
    rec = Recorder()
    url = await serve(make_server(rec))
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$11;default;;_OnNamespaceDisconnect;0;0;")
        await expect(ws, "$11;;;;;;")
        assert rec.calls == []


async def test_replies_in_a_room_not_joined_are_suppressed_and_asks_told(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Spec 4 / 16.9: the handler runs, its answer is not written. A client's ask (``$``
    token) is answered with the known error ``bad room`` instead, so it does not hang."""
    calls: list[tuple[str, str]] = []

    def failing(nsconn: NSConn, msg: Message) -> None:
        calls.append(("fail", msg.room))
        raise EventError("boom")

    def answering(nsconn: NSConn, msg: Message) -> str:
        calls.append(("ping", msg.room))
        return "pong"

    url = await serve(Server({"default": {"fail": failing, "ping": answering}}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(";default;notjoined;fail;0;0;")
        await ws.send_str("$q;default;notjoined;ping;0;0;x")
        await expect(ws, "$q;default;notjoined;ping;1;0;bad room")
        await barrier(ws)
        assert calls == [("fail", "notjoined"), ("ping", "notjoined")]
        await join(ws, "r")
        await ws.send_str("$q2;default;r;ping;0;0;x")
        await ws.send_str(";default;r;fail;0;0;")
        await expect(ws, "$q2;default;r;ping;0;0;pong", ";default;r;fail;1;0;boom")


async def test_unmatched_reply_token_is_handled_as_an_event(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("999;default;;ping;0;0;x")
        await expect(ws, "999;default;;ping;0;0;pong")
        await ws.send_str("#5;default;;ping;0;0;x")  # old clients' token (16.30)
        await expect(ws, "#5;default;;ping;0;0;pong")


async def test_client_error_reaches_the_handler(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    got: list[tuple[str, bytes]] = []

    def chat(nsconn: NSConn, msg: Message) -> None:
        got.append((msg.err, msg.body))

    url = await serve(Server({"default": {"chat": chat}}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(";default;;chat;1;0;client error text")
        await barrier(ws)
        assert got == [("client error text", b"")]


async def test_an_error_message_is_never_answered(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Spec 7.3: answering an error would let two peers bounce it forever."""
    got: list[str] = []

    def chat(nsconn: NSConn, msg: Message) -> str:
        got.append(msg.err)
        return "reply"

    def boom(nsconn: NSConn, msg: Message) -> None:
        got.append(msg.err)
        raise EventError("again")

    url = await serve(Server({"default": {"chat": chat, "fail": boom}}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(";default;;chat;1;0;e1")
        await ws.send_str(";default;;fail;1;0;e2")
        await barrier(ws)
        assert got == ["e1", "e2"]


async def test_ask_to_unknown_event(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Deliberate deviation: an ask with no handler is answered with an error."""
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(";default;;nohandler;0;0;x")
        await barrier(ws)
        await ws.send_str("$9;default;;nohandler;0;0;x")
        await expect(ws, "$9;default;;nohandler;1;0;unknown event 'nohandler'")


async def test_any_event_handler_is_the_fallback(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Spec 2.9: exact name, else ``_OnAnyEvent``."""

    def any_event(nsconn: NSConn, msg: Message) -> str:
        return "any:" + msg.event

    url = await serve(Server({"default": {"ping": ping, "_OnAnyEvent": any_event}}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$1;default;;whatever;0;0;")
        await ws.send_str("$2;default;;ping;0;0;")
        await expect(ws, "$1;default;;whatever;0;0;any:whatever", "$2;default;;ping;0;0;pong")


# -------------------------------------------------------------------------------------------
# handler results (§7.2, 8.2)
# -------------------------------------------------------------------------------------------


async def test_handler_results(serve: Serve, session: aiohttp.ClientSession) -> None:
    async def async_str(nsconn: NSConn, msg: Message) -> str:
        await asyncio.sleep(0)
        return "async;str"

    def as_bytes(nsconn: NSConn, msg: Message) -> bytes:
        return b"by\ntes"

    def as_reply(nsconn: NSConn, msg: Message) -> Reply:
        return Reply(b"PONG;x")

    def as_reply_str(nsconn: NSConn, msg: Message) -> Reply:
        return Reply("text reply")

    def nothing(nsconn: NSConn, msg: Message) -> None:
        return None

    async def async_error(nsconn: NSConn, msg: Message) -> None:
        raise EventError("custom; error\nline2")

    def crash(nsconn: NSConn, msg: Message) -> None:
        raise RuntimeError("secret detail")

    events = {
        "s": async_str,
        "b": as_bytes,
        "r": as_reply,
        "rs": as_reply_str,
        "none": nothing,
        "err": async_error,
        "crash": crash,
    }
    url = await serve(Server({"default": events}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        for name in events:
            await ws.send_str(f"$1795678451172823685;default;;{name};0;0;p")
        await expect(
            ws,
            "$1795678451172823685;default;;s;0;0;async;str",
            "$1795678451172823685;default;;b;0;0;by\ntes",
            "$1795678451172823685;default;;r;0;0;PONG;x",  # vector 28
            "$1795678451172823685;default;;rs;0;0;text reply",
            # "none" sends nothing (16.7)
            "$1795678451172823685;default;;err;1;0;custom; error\nline2",  # vector 29
            "$1795678451172823685;default;;crash;1;0;internal server error",
        )
        await barrier(ws)
        await ws.send_str(";default;;err;0;0;")
        await expect(ws, ";default;;err;1;0;custom; error\nline2")  # vector 30


async def test_debug_errors_sends_the_exception_text(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    def crash(nsconn: NSConn, msg: Message) -> None:
        raise RuntimeError("secret detail")

    url = await serve(Server({"default": {"crash": crash}}, debug_errors=True))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$1;default;;crash;0;0;")
        answer = await recv_text(ws)
        assert answer.startswith("$1;default;;crash;1;0;")
        assert "secret detail" in answer


async def test_tokens_are_echoed_verbatim(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Vectors 32, 33."""
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$352000000000432135791;default;;ping;0;0;p")
        await ws.send_str("$123.456;default;;ping;0;0;x")
        await expect(
            ws, "$352000000000432135791;default;;ping;0;0;pong", "$123.456;default;;ping;0;0;pong"
        )


async def test_escaped_names_are_answered_escaped(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Vector 45: the handler sees ``;``, the answer re-escapes."""
    seen: list[tuple[str, str, str, bytes]] = []

    def handler(nsconn: NSConn, msg: Message) -> bytes:
        seen.append((msg.namespace, msg.room, msg.event, msg.body))
        return b"re;ply"

    url = await serve(Server({"my;ns": {"ev;1": handler}}))
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await connect_ns(ws, "my@%!semicolon@%!ns")
        await join(ws, "r@%!semicolon@%!1", ns="my@%!semicolon@%!ns")
        await ws.send_str("$e;my@%!semicolon@%!ns;r@%!semicolon@%!1;ev@%!semicolon@%!1;0;0;b;o;d;y")
        await expect(ws, "$e;my@%!semicolon@%!ns;r@%!semicolon@%!1;ev@%!semicolon@%!1;0;0;re;ply")
    assert seen == [("my;ns", "r;1", "ev;1", b"b;o;d;y")]


# -------------------------------------------------------------------------------------------
# system events: order and refusals (§5, §6, vectors 7, 13, 15)
# -------------------------------------------------------------------------------------------


async def test_connect_order(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Spec 5.1: ``_OnNamespaceConnect`` → reply → ``_OnNamespaceConnected``."""
    rec = Recorder()

    def connected(nsconn: NSConn, msg: Message) -> None:
        rec(nsconn, msg)
        nsconn.emit("welcome", "hi")

    server = Server({"default": {**rec.system(), "_OnNamespaceConnected": connected}})
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$1795678450690943437;default;;_OnNamespaceConnect;0;0;")  # vector 4
        await expect(ws, "$1795678450690943437;;;;;;", ";default;;welcome;0;0;hi")  # vector 5
    assert rec.calls[:2] == [
        ("_OnNamespaceConnect", "", False, False),
        ("_OnNamespaceConnected", "", False, False),
    ]


async def test_join_order(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Spec 6.1: ``_OnRoomJoin`` → ``_OnRoomJoined`` → reply."""
    rec = Recorder()

    def joined(nsconn: NSConn, msg: Message) -> None:
        rec(nsconn, msg)
        room = nsconn.room(msg.room)
        assert room is not None
        room.emit("hello", "room")

    server = Server({"default": {**rec.system(), "_OnRoomJoined": joined}})
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        conn_id = await ready(ws)
        rec.calls.clear()
        await ws.send_str("$1795678452076166785;default;room1;_OnRoomJoin;0;0;")  # vector 12
        await expect(ws, ";default;room1;hello;0;0;room", "$1795678452076166785;;;;;;")
        assert rec.calls == [
            ("_OnRoomJoin", "room1", False, False),
            ("_OnRoomJoined", "room1", False, False),
        ]
        nsconn = conn_by_id(server, conn_id).namespaces["default"]
        assert server.room_members("default", "room1") == [nsconn]
        # a duplicate join: empty reply, no events (16.11)
        rec.calls.clear()
        await ws.send_str("$dup;default;room1;_OnRoomJoin;0;0;")
        await expect(ws, "$dup;;;;;;")
        assert rec.calls == []


async def test_leave_order(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Spec 6.3: ``_OnRoomLeave`` → ``_OnRoomLeft`` → reply."""
    rec = Recorder()

    def left(nsconn: NSConn, msg: Message) -> None:
        rec(nsconn, msg)
        nsconn.emit("left", msg.room)

    server = Server({"default": {**rec.system(), "_OnRoomLeft": left}})
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "room1")
        rec.calls.clear()
        await ws.send_str("$1795678452437519006;default;room1;_OnRoomLeave;0;0;")  # vector 14
        await expect(ws, ";default;;left;0;0;room1", "$1795678452437519006;;;;;;")
        assert rec.calls == [
            ("_OnRoomLeave", "room1", False, False),
            ("_OnRoomLeft", "room1", False, False),
        ]
        assert server.room_members("default", "room1") == []


async def test_client_disconnect_order(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Spec 5.3 / 16.22: ``_OnNamespaceDisconnect`` first, then forced leaves, then the reply."""
    rec = Recorder()
    disconnected = asyncio.Event()
    server = make_server(rec, on_disconnect=lambda conn: disconnected.set())
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "r1", "r2")
        rec.calls.clear()
        await ws.send_str("$1795678452678654349;default;;_OnNamespaceDisconnect;0;0;")  # v10
        await expect(ws, "$1795678452678654349;;;;;;")
        assert rec.calls == [
            ("_OnNamespaceDisconnect", "", False, False),
            ("_OnRoomLeave", "r1", True, False),
            ("_OnRoomLeft", "r1", True, False),
            ("_OnRoomLeave", "r2", True, False),
            ("_OnRoomLeft", "r2", True, False),
        ]
        assert server.namespace_members("default") == []
        assert server.room_members("default", "r1") == []
        await ws.send_str("$p;default;;ping;0;0;")
        await expect(ws, "$p;default;;ping;1;0;bad namespace")
        rec.calls.clear()
    await asyncio.wait_for(disconnected.wait(), T)
    assert rec.calls == []  # nothing left to disconnect on close


async def test_connect_refused_vector_7(serve: Serve, session: aiohttp.ClientSession) -> None:
    rec = Recorder()

    def deny(nsconn: NSConn, msg: Message) -> None:
        rec(nsconn, msg)
        raise EventError("denied by server")

    server = Server({"deny": {**rec.system(), "_OnNamespaceConnect": deny, "ping": ping}})
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$1795678456264933370;deny;;_OnNamespaceConnect;0;0;")
        await expect(ws, "$1795678456264933370;deny;;_OnNamespaceConnect;1;0;denied by server")
        assert server.namespace_members("deny") == []
        assert rec.events() == ["_OnNamespaceConnect"]
        await ws.send_str(";deny;;ping;0;0;")
        await barrier(ws)


async def test_join_refused_vector_13(serve: Serve, session: aiohttp.ClientSession) -> None:
    rec = Recorder()

    def vip_only(nsconn: NSConn, msg: Message) -> None:
        rec(nsconn, msg)
        if msg.room == "vip":
            raise EventError("vip only")

    server = Server({"default": {**rec.system(), "_OnRoomJoin": vip_only}})
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws)
        rec.calls.clear()
        await ws.send_str("$1795678456682161251;default;vip;_OnRoomJoin;0;0;")
        await expect(ws, "$1795678456682161251;default;vip;_OnRoomJoin;1;0;vip only")
        assert rec.events() == ["_OnRoomJoin"]
        assert server.room_members("default", "vip") == []


async def test_leave_refused_vector_15(serve: Serve, session: aiohttp.ClientSession) -> None:
    rec = Recorder()

    def sticky(nsconn: NSConn, msg: Message) -> None:
        rec(nsconn, msg)
        if msg.room == "sticky" and not msg.forced:
            raise EventError("cannot leave")

    server = Server({"default": {**rec.system(), "_OnRoomLeave": sticky}})
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "sticky")
        rec.calls.clear()
        await ws.send_str("$1795678456923235771;default;sticky;_OnRoomLeave;0;0;")
        await expect(ws, "$1795678456923235771;default;sticky;_OnRoomLeave;1;0;cannot leave")
        assert rec.events() == ["_OnRoomLeave"]
        assert len(server.room_members("default", "sticky")) == 1


async def test_disconnect_refused(serve: Serve, session: aiohttp.ClientSession) -> None:
    rec = Recorder()

    def stay(nsconn: NSConn, msg: Message) -> None:
        rec(nsconn, msg)
        if not msg.forced:
            raise EventError("stay")

    server = Server({"default": {**rec.system(), "_OnNamespaceDisconnect": stay, "ping": ping}})
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "r")
        rec.calls.clear()
        await ws.send_str("$d;default;;_OnNamespaceDisconnect;0;0;")
        await expect(ws, "$d;default;;_OnNamespaceDisconnect;1;0;stay")
        assert rec.calls == [("_OnNamespaceDisconnect", "", False, False)]
        await ws.send_str("$p;default;r;ping;0;0;")
        await expect(ws, "$p;default;r;ping;0;0;pong")  # still connected, room still joined


@pytest.mark.parametrize(
    ("event", "frame"),
    [
        ("_OnNamespaceConnect", "$x;default;;_OnNamespaceConnect;0;0;"),
        ("_OnRoomJoin", "$x;default;r2;_OnRoomJoin;0;0;"),
        ("_OnRoomLeave", "$x;default;r;_OnRoomLeave;0;0;"),
        ("_OnNamespaceDisconnect", "$x;default;;_OnNamespaceDisconnect;0;0;"),
    ],
)
async def test_refusal_by_any_exception_uses_the_generic_text(
    serve: Serve, session: aiohttp.ClientSession, event: str, frame: str
) -> None:
    def crash(nsconn: NSConn, msg: Message) -> None:
        if msg.token == "$x":
            raise RuntimeError("secret")

    server = Server({"default": {"ping": ping, event: crash}})
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        if event != "_OnNamespaceConnect":
            await connect_ns(ws)
            await join(ws, "r")
        await ws.send_str(frame)
        await expect(ws, frame.replace(";0;0;", ";1;0;internal server error"))


# -------------------------------------------------------------------------------------------
# binary frames (§2.8, 16.18)
# -------------------------------------------------------------------------------------------


async def test_binary_in_binary_out(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Vector 35, plus the deviation answers."""
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_bytes(b"$21;default;;ping;0;0;\x00\x01")
        assert await recv_binary(ws) == b"$21;default;;ping;0;0;pong"
        await ws.send_bytes(b"$22;default;;fail;0;0;\x00\x01")
        assert await recv_binary(ws) == b"$22;default;;fail;1;0;boom"
        await ws.send_bytes(b"$23;nope;;ping;0;0;\xff")
        assert await recv_binary(ws) == b"$23;nope;;ping;1;0;bad namespace"
        await ws.send_bytes(b"$24;default;;nohandler;0;0;\xff")
        assert await recv_binary(ws) == b"$24;default;;nohandler;1;0;unknown event 'nohandler'"


async def test_binary_body_reaches_the_handler(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Vector 34."""
    got: list[Message] = []

    def chat(nsconn: NSConn, msg: Message) -> None:
        got.append(msg)

    url = await serve(Server({"default": {"chat": chat}}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_bytes(b";default;;chat;0;0;\x00\xff;a")
        await barrier(ws)
    (msg,) = got
    assert (msg.body, msg.binary, msg.token) == (b"\x00\xff;a", True, "")


@pytest.mark.parametrize(
    ("setup_rooms", "frame"),
    [
        ((), b"$c;other;;_OnNamespaceConnect;0;0;"),
        ((), b"$c;default;r;_OnRoomJoin;0;0;"),
        (("r",), b"$c;default;r;_OnRoomLeave;0;0;"),
        ((), b"$c;default;;_OnNamespaceDisconnect;0;0;"),
        ((), b"$c;default;;_OnNamespaceConnect;0;0;"),
    ],
    ids=["connect", "join", "leave", "disconnect", "connect-again"],
)
async def test_empty_replies_are_text_even_for_binary_requests(
    serve: Serve, session: aiohttp.ClientSession, setup_rooms: tuple[str, ...], frame: bytes
) -> None:
    url = await serve(make_server())
    async with session.ws_connect(url) as ws:
        await ready(ws, *setup_rooms)
        await ws.send_bytes(frame)
        await expect(ws, "$c;;;;;;")


def _refuse(nsconn: NSConn, msg: Message) -> None:
    if not msg.forced:
        raise EventError("no")


@pytest.mark.parametrize(
    ("frame", "answer"),
    [
        (b"$c;nope;;_OnNamespaceConnect;0;0;", b"$c;nope;;_OnNamespaceConnect;1;0;bad namespace"),
        (b"$c;deny;;_OnNamespaceConnect;0;0;", b"$c;deny;;_OnNamespaceConnect;1;0;no"),
        (b"$c;default;vip;_OnRoomJoin;0;0;", b"$c;default;vip;_OnRoomJoin;1;0;no"),
        (b"$c;default;r;_OnRoomLeave;0;0;", b"$c;default;r;_OnRoomLeave;1;0;no"),
        (
            b"$c;default;;_OnNamespaceDisconnect;0;0;",
            b"$c;default;;_OnNamespaceDisconnect;1;0;no",
        ),
    ],
    ids=[
        "connect-bad-namespace",
        "connect-refused",
        "join-refused",
        "leave-refused",
        "disconnect-refused",
    ],
)
async def test_refusals_of_binary_requests_are_binary(
    serve: Serve, session: aiohttp.ClientSession, frame: bytes, answer: bytes
) -> None:
    """Spec 2.8 / 16.18: an error answer to a binary message is binary (Go writes the request
    message back with its binary flag: ``replyConnect``/``replyDisconnect`` call ``c.Write(msg)``).
    Only empty replies are always text."""

    def refuse_vip(nsconn: NSConn, msg: Message) -> None:
        if msg.room == "vip":
            raise EventError("no")

    server = Server(
        {
            "default": {
                "_OnRoomJoin": refuse_vip,
                "_OnRoomLeave": _refuse,
                "_OnNamespaceDisconnect": _refuse,
            },
            "deny": {"_OnNamespaceConnect": _refuse},
        }
    )
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "r")
        await ws.send_bytes(frame)
        assert await recv_binary(ws) == answer


# -------------------------------------------------------------------------------------------
# ordering, asks from handlers (16.27, 8.3, 8.5)
# -------------------------------------------------------------------------------------------


async def test_messages_are_handled_in_arrival_order(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    order: list[str] = []

    async def slow(nsconn: NSConn, msg: Message) -> str:
        order.append("slow-start")
        await asyncio.sleep(0.2)
        order.append("slow-end")
        return "slow"

    def fast(nsconn: NSConn, msg: Message) -> str:
        order.append("fast:" + msg.text)
        return "fast:" + msg.text

    url = await serve(Server({"default": {"slow": slow, "fast": fast}}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$1;default;;slow;0;0;")
        for i in range(2, 6):
            await ws.send_str(f"${i};default;;fast;0;0;{i}")
        await expect(
            ws,
            "$1;default;;slow;0;0;slow",
            *(f"${i};default;;fast;0;0;fast:{i}" for i in range(2, 6)),
        )
    assert order == ["slow-start", "slow-end", "fast:2", "fast:3", "fast:4", "fast:5"]


async def test_handler_awaiting_an_ask_gets_the_reply(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Spec 8.3 / 8.5: no deadlock; frames that arrive meanwhile wait their turn."""

    async def relay(nsconn: NSConn, msg: Message) -> bytes:
        reply = await nsconn.ask("question", b"q?", timeout=T)
        return b"got " + reply.body

    url = await serve(Server({"default": {"relay": relay, "ping": ping}}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$1;default;;relay;0;0;")
        question = await recv_text(ws)
        m = re.fullmatch(r"([0-9]+);default;;question;0;0;q\?", question)  # vector 31
        assert m, question
        await ws.send_str("$2;default;;ping;0;0;")  # arrives while relay waits
        await ws.send_str(f"{m[1]};default;;question;0;0;answer")
        await expect(ws, "$1;default;;relay;0;0;got answer", "$2;default;;ping;0;0;pong")

        # an error answer fails the server's ask
        await ws.send_str("$3;default;;relay;0;0;")
        question = await recv_text(ws)
        m = re.fullmatch(r"([0-9]+);default;;question;0;0;q\?", question)
        assert m, question
        await ws.send_str(f"{m[1]};default;;question;1;0;no answer for you")
        await expect(ws, "$3;default;;relay;1;0;no answer for you")


# -------------------------------------------------------------------------------------------
# close (§11.2, 16.21)
# -------------------------------------------------------------------------------------------

CLOSE_ORDER: list[Call] = [
    ("_OnRoomLeave", "r", True, True),
    ("_OnRoomLeft", "r", True, True),
    ("_OnNamespaceDisconnect", "", True, True),
    ("on_disconnect", "", False, False),
]


async def test_close_frame_fires_close_events_in_order_once(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    rec = Recorder()
    done = asyncio.Event()

    def on_disconnect(conn: Conn) -> None:
        rec.calls.append(("on_disconnect", "", False, False))
        done.set()

    server = make_server(rec, on_disconnect=on_disconnect)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        conn = conn_by_id(server, await ready(ws, "r"))
        rec.calls.clear()
        await ws.close()
    await asyncio.wait_for(done.wait(), T)
    await asyncio.wait_for(conn.wait_closed(), T)
    assert rec.calls == CLOSE_ORDER
    assert server.connections == []
    assert server.room_members("default", "r") == []
    assert server.namespace_members("default") == []


async def test_vanished_client_fires_close_events_in_order_once(serve: Serve) -> None:
    rec = Recorder()
    done = asyncio.Event()

    def on_disconnect(conn: Conn) -> None:
        rec.calls.append(("on_disconnect", "", False, False))
        done.set()

    server = make_server(rec, on_disconnect=on_disconnect)
    url = await serve(server)
    raw = await RawWS.open(url)
    try:
        await raw.send("M")
        conn_id = (await raw.recv_text())[1:]
        await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await raw.recv_text() == "$c;;;;;;"
        await raw.send("$j;default;r;_OnRoomJoin;0;0;")
        assert await raw.recv_text() == "$j;;;;;;"
        conn = conn_by_id(server, conn_id)
        rec.calls.clear()
    finally:
        raw.abort()
    await asyncio.wait_for(done.wait(), T)
    await asyncio.wait_for(conn.wait_closed(), T)
    assert rec.calls == CLOSE_ORDER
    assert server.connections == []


# -------------------------------------------------------------------------------------------
# HTTP (§1.2)
# -------------------------------------------------------------------------------------------


async def test_head_answers_without_upgrading(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = make_server()
    url = await serve(server)
    async with session.head(http_url(url), allow_redirects=False) as resp:
        assert 200 <= resp.status < 400
        assert resp.status != 101
    assert server.connections == []


async def test_post_is_405(serve: Serve, session: aiohttp.ClientSession) -> None:
    url = await serve(make_server())
    async with session.post(http_url(url), data=b"x") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET"


async def test_get_without_upgrade_is_400(serve: Serve, session: aiohttp.ClientSession) -> None:
    url = await serve(make_server())
    async with session.get(http_url(url)) as resp:
        assert resp.status == 400


async def test_cross_origin_refused_by_default(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    url = await serve(make_server())
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(url, origin="http://evil.example")
    assert info.value.status == 403


@pytest.mark.parametrize("allowed", [["http://evil.example"], "*"], ids=["listed", "star"])
async def test_cross_origin_allowed_when_configured(
    serve: Serve, session: aiohttp.ClientSession, allowed: list[str] | str
) -> None:
    url = await serve(make_server(allowed_origins=allowed))
    async with session.ws_connect(url, origin="http://evil.example") as ws:
        await handshake(ws)


async def test_listed_origins_refuse_others(serve: Serve, session: aiohttp.ClientSession) -> None:
    url = await serve(make_server(allowed_origins=["http://good.example"]))
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(url, origin="http://evil.example")
    assert info.value.status == 403


async def test_same_origin_and_no_origin_allowed(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    url = await serve(make_server())
    netloc = urlsplit(url).netloc
    async with session.ws_connect(url, origin=f"http://{netloc}") as ws:
        await handshake(ws)
    async with session.ws_connect(url) as ws:
        await handshake(ws)


# -------------------------------------------------------------------------------------------
# safety: sizes, slow readers, timeouts, shutdown
# -------------------------------------------------------------------------------------------


async def test_message_over_max_message_size_closes_with_1009(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    url = await serve(make_server(max_message_size=1024))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$1;default;;ping;0;0;" + "x" * 2000)
        msg = await expect_close(ws)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1009, show(msg)


async def test_message_of_exactly_max_message_size_is_accepted(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """``max_message_size``: *larger* messages close (Server docstring)."""
    url = await serve(make_server(max_message_size=1024))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        head = "$1;default;;ping;0;0;"
        await ws.send_str(head + "x" * (1024 - len(head)))
        msg = await recv(ws)
        assert msg.type is WSMsgType.TEXT and msg.data == "$1;default;;ping;0;0;pong", show(msg)


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])
async def test_stalled_reader_is_closed_with_1008_and_others_keep_receiving(
    serve: Serve, session: aiohttp.ClientSession, deflate: bool
) -> None:
    disconnected: list[str] = []
    gone = asyncio.Event()

    def on_disconnect(conn: Conn) -> None:
        disconnected.append(conn.id)
        gone.set()

    ids = itertools.count()
    server = make_server(
        send_buffer_limit=64 * 1024,
        on_disconnect=on_disconnect,
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
        # from here on the stalled client never reads until the server gave up on it
        async with session.ws_connect(url, compress=15 if deflate else 0) as good:
            assert await ready(good) == "c1"
            sent = 0
            while sent < 4000 and not stalled_conn.closed:
                # fresh random bytes each time: incompressible even with context takeover
                blob = os.urandom(16 * 1024)
                await server.broadcast(
                    Message(namespace="default", event="blob", body=blob, binary=True)
                )
                sent += 1
                assert await recv_binary(good) == b";default;;blob;0;0;" + blob
            assert stalled_conn.closed, f"still open after {sent} x 16 KiB"
            assert stalled_conn.close_code == 1008
            # the stalled client reads again: what was buffered, then the close frame
            assert await stalled.close_code() == 1008
            await stalled.send(struct.pack("!H", 1008), opcode=0x8)
            # the good client is not held back by the stalled one
            for i in range(20):
                await server.broadcast(Message(namespace="default", event="after", body=b"%d" % i))
                await expect(good, f";default;;after;0;0;{i}")
            await asyncio.wait_for(gone.wait(), T)
            assert disconnected == ["c0"]
            assert [c.id for c in server.connections] == ["c1"]
    finally:
        stalled.abort()


async def test_read_timeout_closes_an_idle_connection(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    rec = Recorder()
    done = asyncio.Event()

    def on_disconnect(conn: Conn) -> None:
        rec.calls.append(("on_disconnect", "", False, False))
        done.set()

    server = make_server(rec, read_timeout=0.3, on_disconnect=on_disconnect)
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await ready(ws, "r")
        rec.calls.clear()
        await expect_close(ws)  # sent nothing for 0.3 s
    await asyncio.wait_for(done.wait(), T)
    assert rec.calls == CLOSE_ORDER
    assert server.connections == []


async def test_read_timeout_is_per_read(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Traffic keeps the connection open past ``read_timeout`` (spec 1.7: a fresh deadline per
    read)."""
    url = await serve(make_server(read_timeout=0.4))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        loop = asyncio.get_running_loop()
        start = loop.time()
        i = 0
        while loop.time() - start < 1.0:
            i += 1
            await ws.send_str(f"$p{i};default;;ping;0;0;")
            await expect(ws, f"$p{i};default;;ping;0;0;pong")
            await asyncio.sleep(0.1)


async def test_graceful_shutdown_closes_with_1001_and_fires_events(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    rec = Recorder()
    disconnected: list[str] = []
    ids = iter(["a", "b"])
    server = make_server(
        rec,
        on_disconnect=lambda conn: disconnected.append(conn.id),
        id_generator=lambda r: next(ids),
    )
    url = await serve(server)
    async with session.ws_connect(url) as a, session.ws_connect(url) as b:
        assert await ready(a, "r") == "a"
        assert await ready(b) == "b"
        rec.calls.clear()
        closing = asyncio.create_task(server.close())
        for ws in (a, b):
            msg = await expect_close(ws)
            assert msg.type is WSMsgType.CLOSE and msg.data == 1001, show(msg)
        await asyncio.wait_for(closing, T)
    assert sorted(disconnected) == ["a", "b"]
    assert sorted(rec.calls) == sorted(
        [
            ("_OnRoomLeave", "r", True, True),
            ("_OnRoomLeft", "r", True, True),
            ("_OnNamespaceDisconnect", "", True, True),
            ("_OnNamespaceDisconnect", "", True, True),
        ]
    )
    assert server.connections == []
    # a closed server upgrades nobody
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(url)
    assert info.value.status >= 500


# -------------------------------------------------------------------------------------------
# broadcast (§10)
# -------------------------------------------------------------------------------------------


def by_header(request: web.Request) -> str:
    return request.headers["X-Username"]


class Clients:
    """Named raw clients connected to ``default`` (ids from the ``X-Username`` header)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.ws: dict[str, WS] = {}
        self._all: list[WS] = []

    async def add(self, key: str, conn_id: str, *rooms: str) -> WS:
        ws = await self.session.ws_connect(self.url, headers={"X-Username": conn_id})
        self._all.append(ws)
        assert await ready(ws, *rooms) == conn_id
        self.ws[key] = ws
        return ws

    async def close(self) -> None:
        for ws in self._all:
            await ws.close()


@pytest.fixture
async def clients_factory(
    session: aiohttp.ClientSession,
) -> AsyncIterator[Callable[[str], Clients]]:
    made: list[Clients] = []

    def make(url: str) -> Clients:
        c = Clients(session, url)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def test_broadcast_to_namespace_room_and_id(
    serve: Serve, clients_factory: Callable[[str], Clients]
) -> None:
    server = make_server(id_generator=by_header)
    url = await serve(server)
    c = clients_factory(url)
    a = await c.add("a", "a", "r")
    b = await c.add("b", "b", "r")
    z = await c.add("c", "c")
    other = await c.session.ws_connect(url, headers={"X-Username": "o"})
    c._all.append(other)
    await handshake(other)
    await connect_ns(other, "other")

    await server.broadcast(Message(namespace="default", event="news", body=b"hi all"))
    for ws in (a, b, z):
        await expect(ws, ";default;;news;0;0;hi all")
    await barrier(other)  # not connected to default

    await server.broadcast(Message(namespace="default", room="r", event="chat", body=b"room only"))
    await expect(a, ";default;r;chat;0;0;room only")
    await expect(b, ";default;r;chat;0;0;room only")
    await barrier(z)

    await server.broadcast(Message(namespace="default", event="dm", body=b"to b"), to="b")
    await expect(b, ";default;;dm;0;0;to b")
    await barrier(a)
    await barrier(z)

    await server.broadcast(Message(namespace="default", event="bin", body=b"\x00\xff", binary=True))
    for ws in (a, b, z):
        assert await recv_binary(ws) == b";default;;bin;0;0;\x00\xff"


@pytest.mark.parametrize("how", ["conn", "nsconn", "id"])
async def test_broadcast_excluding(
    serve: Serve, clients_factory: Callable[[str], Clients], how: str
) -> None:
    server = make_server(id_generator=by_header)
    url = await serve(server)
    c = clients_factory(url)
    a = await c.add("a", "a")
    b = await c.add("b", "b")
    z = await c.add("c", "c")
    conn_b = conn_by_id(server, "b")
    choices: dict[str, Conn | NSConn | str] = {
        "conn": conn_b,
        "nsconn": conn_b.namespaces["default"],
        "id": "b",
    }
    exclude = choices[how]
    await server.broadcast(
        Message(namespace="default", event="news", body=b"not b"), exclude=exclude
    )
    await expect(a, ";default;;news;0;0;not b")
    await expect(z, ";default;;news;0;0;not b")
    await barrier(b)


async def test_broadcast_by_id_hits_every_connection_with_that_id(
    serve: Serve, clients_factory: Callable[[str], Clients]
) -> None:
    """Spec 10.3: ids need not be unique; ``to`` and exclusion by id compare plain strings,
    exclusion by connection excludes exactly one."""
    server = make_server(id_generator=by_header)
    url = await serve(server)
    c = clients_factory(url)
    x1 = await c.add("x1", "x")
    x2 = await c.add("x2", "x")
    y = await c.add("y", "y")

    await server.broadcast(Message(namespace="default", event="e", body=b"1"), to="x")
    await expect(x1, ";default;;e;0;0;1")
    await expect(x2, ";default;;e;0;0;1")
    await barrier(y)

    await server.broadcast(Message(namespace="default", event="e", body=b"2"), exclude="x")
    await expect(y, ";default;;e;0;0;2")
    await barrier(x1)
    await barrier(x2)

    first = server.get_connections("x")[0]
    await server.broadcast(Message(namespace="default", event="e", body=b"3"), exclude=first)
    received = []
    for ws in (x1, x2):
        await ws.send_str(f"$who;{PROBE_NS};;_OnNamespaceConnect;0;0;")
        frame = await recv_text(ws)
        if frame == ";default;;e;0;0;3":
            received.append(ws)
            frame = await recv_text(ws)
        assert frame == f"$who;{PROBE_NS};;_OnNamespaceConnect;1;0;bad namespace"
    assert len(received) == 1
    await expect(y, ";default;;e;0;0;3")


async def test_many_broadcasts_arrive_in_order_everywhere(
    serve: Serve, clients_factory: Callable[[str], Clients]
) -> None:
    server = make_server(id_generator=by_header)
    url = await serve(server)
    c = clients_factory(url)
    receivers = [await c.add(str(i), str(i), "r") for i in range(4)]
    n = 500

    async def send_all() -> None:
        for i in range(n):
            room = "r" if i % 2 else ""
            await server.broadcast(
                Message(namespace="default", room=room, event="n", body=b"%d" % i)
            )

    async def receive_all(ws: WS) -> list[str]:
        return [await recv_text(ws) for _ in range(n)]

    results = await asyncio.gather(send_all(), *(receive_all(ws) for ws in receivers))
    expected = [f";default;{'r' if i % 2 else ''};n;0;0;{i}" for i in range(n)]
    for got in results[1:]:
        assert got == expected
