"""Why a connection closed: ``conn.close_reason`` beside ``conn.close_code`` (issue 11).

Every way a connection ends, on a real server on loopback: the reason is set the moment
the close starts (so a handler still running sees it, and so do the disconnect events and
``on_disconnect`` that run after it), the first close decides, the wire carries the code
RFC 6455 means (a read timeout is 1001 "going away", not a clean 1000) with the reason's
text, a wsmvc client learns the server's reason from that text, and each close is logged
once at its reason's level.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import wsmvc
from wsmvc import CloseReason, Conn, ConnectionClosed, Message, NSConn, Reject, Server

from .wire_support import RawWS, Serve, T, conn_by_id, expect_close, make_server, ready

NEVER = 60.0


class Ends:
    """What the server's hooks saw of each connection's end: ``(event, reason, code)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, CloseReason | None, int | None]] = []
        self.conns: list[Conn] = []
        self.done = asyncio.Event()

    def on_connect(self, conn: Conn) -> None:
        self.conns.append(conn)

    def on_disconnect(self, conn: Conn) -> None:
        self.seen.append(("on_disconnect", conn.close_reason, conn.close_code))
        self.done.set()

    def namespace_disconnect(self, ns: NSConn, msg: Message) -> None:
        if msg.forced:  # the close's own event
            self.seen.append((msg.event, ns.conn.close_reason, ns.conn.close_code))

    def room_left(self, ns: NSConn, msg: Message) -> None:
        self.seen.append((f"{msg.event}:{msg.room}", ns.conn.close_reason, ns.conn.close_code))

    def server(self, **options: Any) -> Server:
        events: dict[str, Any] = {
            "ping": lambda ns, msg: "pong",
            "_OnNamespaceDisconnect": self.namespace_disconnect,
            "_OnRoomLeft": self.room_left,
        }
        events.update(options.pop("events", {}))
        return Server(
            {"default": events},
            on_connect=self.on_connect,
            on_disconnect=self.on_disconnect,
            **options,
        )

    async def ended(self) -> None:
        await asyncio.wait_for(self.done.wait(), T)

    def all_say(self, reason: CloseReason, code: int) -> None:
        """Every hook of the close saw ``reason`` and ``code``."""
        assert self.seen, "no disconnect event ran"
        assert {(r, c) for _, r, c in self.seen} == {(reason, code)}, self.seen
        assert self.seen[-1][0] == "on_disconnect", self.seen


async def close_frame(raw: RawWS) -> tuple[int, str]:
    """Read frames until the close frame: its code and reason text."""
    while True:
        op, data = await raw.recv()
        if op == 0x8:
            return int(struct.unpack("!H", data[:2])[0]), data[2:].decode()


_clients: list[wsmvc.ClientConn] = []


async def dial(url: str, **kwargs: Any) -> wsmvc.ClientConn:
    client = await wsmvc.dial(url, {"default": {}}, timeout=T, ask_timeout=T, **kwargs)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Every client's HTTP session is closed, however its connection ended."""
    yield
    while _clients:
        await _clients.pop().close()


def closing_records(caplog: pytest.LogCaptureFixture, conn_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "wsmvc"
        and f"<Conn {conn_id!r} server" in r.getMessage()
        and ": closing (" in r.getMessage()
    ]


# -- the reasons, one by one ----------------------------------------------------------------


async def test_the_client_closes(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    ends = Ends()
    url = await serve(ends.server())
    caplog.set_level(logging.DEBUG, logger="wsmvc")
    client = await dial(url)
    ns = await client.connect("default", timeout=T)
    await ns.join_room("r", timeout=T)
    await client.close()
    await ends.ended()
    ends.all_say(CloseReason.CLIENT_CLOSED, 1000)
    assert [e for e, _, _ in ends.seen] == [
        "_OnRoomLeft:r",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    # The client's side says the same of itself.
    assert client.close_reason is CloseReason.CLIENT_CLOSED
    assert client.close_code == 1000
    # Logged once, at DEBUG: nothing went wrong.
    [record] = closing_records(caplog, ends.conns[0].id)
    assert record.levelno == logging.DEBUG
    assert "client closed" in record.getMessage()


async def test_the_server_kicks_the_client(serve: Serve) -> None:
    ends = Ends()

    async def kick(ns: NSConn, msg: Message) -> None:
        await ns.conn.close(4000, "you are out")

    url = await serve(ends.server(events={"kick": kick}))
    client = await dial(url)
    ns = await client.connect("default", timeout=T)
    ns.emit("kick")
    await ends.ended()
    ends.all_say(CloseReason.SERVER_CLOSED, 4000)
    await client.wait_closed()
    assert client.close_code == 4000
    assert client.close_reason is CloseReason.SERVER_CLOSED  # "you are out" is no reason of ours


async def test_a_read_timeout_is_1001_on_the_wire_not_a_clean_1000(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6455 §7.4.1: 1000 says the connection's purpose was fulfilled; a server giving up
    on a silent client is "going away" (1001). The reason text says which."""
    ends = Ends()
    url = await serve(ends.server(read_timeout=0.3, heartbeat=None))
    caplog.set_level(logging.INFO, logger="wsmvc")
    raw = await RawWS.open(url)
    try:
        await raw.send("M")
        assert (await raw.recv_text()).startswith("A")
        await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await raw.recv_text() == "$c;;;;;;"
        # silent from here on
        assert await close_frame(raw) == (1001, "read timeout")
    finally:
        raw.abort()
    await ends.ended()
    ends.all_say(CloseReason.READ_TIMEOUT, 1001)
    [record] = closing_records(caplog, ends.conns[0].id)
    assert record.levelno == logging.INFO


async def test_a_wsmvc_client_learns_the_servers_reason(serve: Serve) -> None:
    ends = Ends()
    url = await serve(ends.server(read_timeout=0.3, heartbeat=None))
    client = await dial(url)
    await client.connect("default", timeout=T)
    await asyncio.wait_for(client.wait_closed(), T)
    assert (client.close_code, client.close_reason) == (1001, CloseReason.READ_TIMEOUT)
    await ends.ended()
    ends.all_say(CloseReason.READ_TIMEOUT, 1001)


async def test_a_read_timeout_while_a_handler_awaits_an_ask(serve: Serve) -> None:
    """The close crosses a handler in flight: the handler's ask fails at once, and it sees
    the reason; the disconnect events run after it returns, with the same reason."""
    ends = Ends()
    in_handler: list[CloseReason | None] = []
    returned = asyncio.Event()

    async def question(ns: NSConn, msg: Message) -> None:
        try:
            await ns.ask("never-answered", timeout=NEVER)
        except ConnectionClosed:
            in_handler.append(ns.conn.close_reason)
        ends.seen.append(("handler returns", ns.conn.close_reason, ns.conn.close_code))
        returned.set()

    url = await serve(ends.server(read_timeout=0.3, heartbeat=None, events={"q": question}))
    raw = await RawWS.open(url)
    try:
        await raw.send("M")
        assert (await raw.recv_text()).startswith("A")
        await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await raw.recv_text() == "$c;;;;;;"
        await raw.send(";default;;q;0;0;")
        assert (await raw.recv_text()).endswith(";default;;never-answered;0;0;")
        assert await close_frame(raw) == (1001, "read timeout")  # the client never answers
    finally:
        raw.abort()
    await ends.ended()
    assert returned.is_set()
    assert in_handler == [CloseReason.READ_TIMEOUT]
    assert [e for e, _, _ in ends.seen] == [
        "handler returns",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    ends.all_say(CloseReason.READ_TIMEOUT, 1001)


async def test_a_client_that_stops_answering_pings(serve: Serve) -> None:
    ends = Ends()
    url = await serve(ends.server(heartbeat=0.2))
    raw = await RawWS.open(url)
    try:
        await raw.send("M")
        assert (await raw.recv_text()).startswith("A")
        # reads nothing, answers no ping
        await ends.ended()
    finally:
        raw.abort()
    ends.all_say(CloseReason.HEARTBEAT_TIMEOUT, 1006)


async def test_a_client_that_stops_reading_overflows_the_send_buffer(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    ends = Ends()
    url = await serve(ends.server(send_buffer_limit=64 * 1024, heartbeat=None))
    caplog.set_level(logging.INFO, logger="wsmvc")
    stalled = await RawWS.open(url, rcvbuf=4096)
    try:
        await stalled.send("M")
        conn_id = (await stalled.recv_text())[1:]
        await stalled.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await stalled.recv_text() == "$c;;;;;;"
        conn = conn_by_id(ends.conns[0].server, conn_id)
        sent = 0
        while not conn.closed and sent < 4000:
            conn.write(Message("default", event="blob", body=os.urandom(16 * 1024), binary=True))
            sent += 1
            await asyncio.sleep(0)  # let the write buffer outlive a loop step
        assert conn.closed, sent
        await ends.ended()
    finally:
        stalled.abort()
    ends.all_say(CloseReason.SEND_BUFFER_OVERFLOW, 1008)
    [record] = closing_records(caplog, conn_id)
    assert record.levelno == logging.WARNING


async def test_server_shutdown(serve: Serve) -> None:
    ends = Ends()
    server = ends.server()
    url = await serve(server)
    client = await dial(url)
    await client.connect("default", timeout=T)
    await server.close()
    await ends.ended()
    ends.all_say(CloseReason.SHUTDOWN, 1001)
    await asyncio.wait_for(client.wait_closed(), T)
    assert (client.close_code, client.close_reason) == (1001, CloseReason.SHUTDOWN)


async def test_shutdown_while_a_handler_is_in_flight(serve: Serve) -> None:
    ends = Ends()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(ns: NSConn, msg: Message) -> str:
        entered.set()
        await release.wait()
        ends.seen.append(("handler returns", ns.conn.close_reason, ns.conn.close_code))
        return "late"

    server = ends.server(events={"slow": slow})
    url = await serve(server)
    client = await dial(url)
    ns = await client.connect("default", timeout=T)
    ns.emit("slow")
    await asyncio.wait_for(entered.wait(), T)
    closing = asyncio.ensure_future(server.close())
    await asyncio.wait_for(client.wait_closed(), T)  # the close frame does not wait for it
    assert client.close_reason is CloseReason.SHUTDOWN
    assert not ends.done.is_set()  # the events wait for the handler
    release.set()
    await asyncio.wait_for(closing, T)
    assert [e for e, _, _ in ends.seen] == [
        "handler returns",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    ends.all_say(CloseReason.SHUTDOWN, 1001)


async def test_the_handshake_times_out(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(handshake_timeout=0.2)
    url = await serve(server)
    caplog.set_level(logging.INFO, logger="wsmvc")
    raw = await RawWS.open(url)
    try:
        assert await close_frame(raw) == (1008, "handshake timeout")  # never sent M
    finally:
        raw.abort()
    [record] = [r for r in caplog.records if ": closing (" in r.getMessage()]
    assert "(1008, handshake timeout)" in record.getMessage()
    assert record.levelno == logging.INFO


@pytest.mark.parametrize(
    ("payload", "opcode", "code"),
    [
        (b"x" * 1001, 0x2, 1009),  # over max_message_size
        (b"\xff\xfe", 0x1, 1007),  # a text frame that is not UTF-8
    ],
    ids=["too-big", "invalid-utf8"],
)
async def test_a_protocol_error(
    serve: Serve, caplog: pytest.LogCaptureFixture, payload: bytes, opcode: int, code: int
) -> None:
    ends = Ends()
    url = await serve(ends.server(max_message_size=1000))
    caplog.set_level(logging.INFO, logger="wsmvc")
    raw = await RawWS.open(url)
    try:
        await raw.send("M")
        conn_id = (await raw.recv_text())[1:]
        await raw.send(payload, opcode=opcode)
        await ends.ended()
    finally:
        raw.abort()
    ends.all_say(CloseReason.PROTOCOL_ERROR, code)
    [record] = closing_records(caplog, conn_id)
    assert record.levelno == logging.WARNING


async def test_a_client_sending_too_much_is_told_a_protocol_error(serve: Serve) -> None:
    """The server closes a dial() client with 1009 (its message is over the server's
    max_message_size): the client's close_reason is PROTOCOL_ERROR, as the server's."""
    ends = Ends()
    url = await serve(ends.server(max_message_size=1000))
    client = await dial(url)
    ns = await client.connect("default", timeout=T)
    ns.emit("x", b"y" * 2000)
    await asyncio.wait_for(client.wait_closed(), T)
    assert (client.close_code, client.close_reason) == (1009, CloseReason.PROTOCOL_ERROR)
    ends.all_say(CloseReason.PROTOCOL_ERROR, 1009)


async def test_a_refused_connection(serve: Serve) -> None:
    conns: list[Conn] = []

    def on_connect(conn: Conn) -> None:
        conns.append(conn)
        raise Reject("not today")

    url = await serve(make_server(on_connect=on_connect))
    with pytest.raises(Reject, match="not today"):
        await dial(url)
    [conn] = conns
    await asyncio.wait_for(conn.wait_closed(), T)
    assert (conn.close_reason, conn.close_code) == (CloseReason.REFUSED, 1008)


async def test_the_connection_is_lost(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    ends = Ends()
    url = await serve(ends.server(heartbeat=None))
    caplog.set_level(logging.INFO, logger="wsmvc")
    raw = await RawWS.open(url)
    await raw.send("M")
    conn_id = (await raw.recv_text())[1:]
    raw.abort()  # no close frame
    await ends.ended()
    ends.all_say(CloseReason.CONNECTION_LOST, 1006)
    [record] = closing_records(caplog, conn_id)
    assert record.levelno == logging.INFO


# -- rules ------------------------------------------------------------------------------------


async def test_the_first_close_decides_the_reason(serve: Serve) -> None:
    """A kick inside a handler, then the client's own close frame: still a kick."""
    ends = Ends()

    async def kick(ns: NSConn, msg: Message) -> str:
        await ns.conn.close(4001)
        await ns.conn.close(4002, cause=CloseReason.SHUTDOWN)  # ignored: closing already
        return "ignored"

    url = await serve(ends.server(events={"kick": kick}))
    client = await dial(url)
    ns = await client.connect("default", timeout=T)
    with pytest.raises(ConnectionClosed):
        await ns.ask("kick", timeout=T)
    await ends.ended()
    ends.all_say(CloseReason.SERVER_CLOSED, 4001)


async def test_a_cause_given_to_close(serve: Serve) -> None:
    """``close(cause=...)``: an application that drains its own connections says so."""
    ends = Ends()
    server = ends.server()
    url = await serve(server)
    client = await dial(url)
    await client.connect("default", timeout=T)
    [conn] = server.connections
    await conn.close(1001, "maintenance", cause=CloseReason.SHUTDOWN)
    assert ends.done.is_set()  # close() from outside waits for the events
    ends.all_say(CloseReason.SHUTDOWN, 1001)


async def test_no_reason_before_the_close(serve: Serve) -> None:
    server = make_server()
    url = await serve(server)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        conn_id = await ready(ws)
        conn = conn_by_id(server, conn_id)
        assert conn.close_reason is None and conn.close_code is None
        await ws.close()
        await expect_close(ws)
        await asyncio.wait_for(conn.wait_closed(), T)
        assert conn.close_reason is CloseReason.CLIENT_CLOSED


def test_reasons_have_texts_and_levels() -> None:
    assert CloseReason.READ_TIMEOUT.text == "read timeout"
    assert CloseReason.from_text("server shutdown") is CloseReason.SHUTDOWN
    assert CloseReason.from_text("bye") is None
    assert CloseReason.CLIENT_CLOSED.level == logging.DEBUG
    assert CloseReason.CONNECTION_LOST.level == logging.INFO
    assert CloseReason.SEND_BUFFER_OVERFLOW.level == logging.WARNING
    assert CloseReason.INTERNAL_ERROR.level == logging.ERROR
    assert len({r.text for r in CloseReason}) == len(CloseReason)
    # The one generic text: what a server's 1011 close says is the client's INTERNAL_ERROR
    # (and what earlier servers said still is).
    assert CloseReason.from_text(wsmvc.errors.GENERIC_ERROR) is CloseReason.INTERNAL_ERROR
    assert CloseReason.from_text("internal error") is CloseReason.INTERNAL_ERROR


async def test_an_app_without_server_close_still_gets_reasons(serve: Serve) -> None:
    """The aiohttp app's own shutdown (``on_shutdown``) closes with SHUTDOWN too."""
    ends = Ends()
    server = ends.server()
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = await dial(f"ws://127.0.0.1:{port}/ws")
    await client.connect("default", timeout=T)
    await runner.cleanup()
    await ends.ended()
    ends.all_say(CloseReason.SHUTDOWN, 1001)
    await asyncio.wait_for(client.wait_closed(), T)
    assert client.close_reason is CloseReason.SHUTDOWN
