"""The heartbeat (issue 9): on by default; a client that stops answering is closed, one
that answers stays, however long its handlers run.

The clients here are aiohttp's with ``autoping=False``: they see every ping and answer
only when the test says so, so "answered" and "silent" are what the test does, not timing.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time

import aiohttp
import pytest
from aiohttp import WSMsgType

import wsmvc
from wsmvc import Conn, Message, NSConn, Server

from .wire_support import (
    RawWS,
    Serve,
    T,
    conn_by_id,
    expect,
    handshake,
    make_server,
    ready,
    recv,
    show,
)

BEAT = 0.2  # seconds: short, so that tests see many pings


def test_heartbeat_is_on_by_default() -> None:
    """A silent peer is found without configuration (the docstring says 20 s, and why)."""
    assert Server().heartbeat == 20.0
    assert Server.__doc__ is not None and "Default 20" in Server.__doc__


async def answer_pings(ws: aiohttp.ClientWebSocketResponse, count: int) -> None:
    """Read ``count`` pings, answering each; anything else the server sends fails."""
    for _ in range(count):
        msg = await recv(ws)
        assert msg.type is WSMsgType.PING, f"expected a ping, got {show(msg)}"
        await ws.pong(msg.data)


async def test_a_client_that_stops_answering_pings_is_closed(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    gone = asyncio.Event()
    codes: list[int | None] = []

    def on_disconnect(conn: Conn) -> None:
        codes.append(conn.close_code)
        gone.set()

    server = make_server(heartbeat=BEAT, on_disconnect=on_disconnect)
    url = await serve(server)
    ws = await session.ws_connect(url, autoping=False)
    conn_id = await ready(ws, "lobby")
    await answer_pings(ws, 2)  # alive for two periods, then silent (reads nothing more)
    silent_since = time.monotonic()
    with caplog.at_level(logging.INFO, logger="wsmvc"):
        await asyncio.wait_for(gone.wait(), T)
    # Not before the next ping had its half period to be answered.
    assert time.monotonic() - silent_since >= BEAT / 2
    assert server.room_members("default", "lobby") == []
    assert not server.namespace_members("default")
    # Logged once, at INFO, with the connection and the reason (conn.close_reason).
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(conn_id in m and "keepalive ping timeout" in m for m in said), said
    # The client sees the end of the connection behind the pings it did not read.
    while True:
        msg = await recv(ws)
        if msg.type is not WSMsgType.PING:
            break
    # The close frame says why, as the websockets library does.
    assert msg.type is WSMsgType.CLOSE, show(msg)
    assert (msg.data, msg.extra) == (1011, "keepalive ping timeout")
    assert codes == [1006]  # for the server's side: the connection is lost


async def test_a_client_that_answers_stays_and_is_served(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    url = await serve(make_server(heartbeat=BEAT))
    ws = await session.ws_connect(url, autoping=False)
    await ready(ws)
    await answer_pings(ws, 5)
    await ws.send_str("$1;default;;ping;0;0;hi")
    await expect(ws, "$1;default;;ping;0;0;pong")


async def test_pongs_keep_a_connection_whose_handler_runs_long(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """The serving task is busy in a handler for many periods: it cannot read pongs, so
    it is not closed for them, but it is still pinged (keeping proxies from timing out),
    and the pongs count once it reads again."""
    release = asyncio.Event()

    async def slow(nsconn: NSConn, msg: Message) -> str:
        await release.wait()
        return "done"

    server = Server({"default": {"slow": slow}}, heartbeat=BEAT)
    url = await serve(server)
    ws = await session.ws_connect(url, autoping=False)
    conn_id = await handshake(ws)
    await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
    await expect(ws, "$c;;;;;;")
    await ws.send_str("$2;default;;slow;0;0;")
    await answer_pings(ws, 5)
    assert not conn_by_id(server, conn_id).closed
    release.set()
    await expect(ws, "$2;default;;slow;0;0;done")


async def test_messages_count_as_life(serve: Serve, session: aiohttp.ClientSession) -> None:
    """A client that keeps talking is not pinged: whatever arrives resets the heartbeat."""
    url = await serve(make_server(heartbeat=BEAT))
    ws = await session.ws_connect(url, autoping=False)
    await ready(ws)
    deadline = time.monotonic() + 4 * BEAT
    n = 0
    while time.monotonic() < deadline:
        n += 1
        await ws.send_str(f"$m{n};default;;ping;0;0;{n}")
        msg = await recv(ws)
        assert msg.type is WSMsgType.TEXT, f"a ping came while the client talked: {show(msg)}"
        assert msg.data == f"$m{n};default;;ping;0;0;pong"
        await asyncio.sleep(BEAT / 4)  # the pace of the talk, not a wait for a result


async def test_no_heartbeat_means_no_pings(serve: Serve, session: aiohttp.ClientSession) -> None:
    url = await serve(make_server(heartbeat=None))
    ws = await session.ws_connect(url, autoping=False)
    await ready(ws)
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=3 * BEAT)


async def test_the_python_client_answers_by_itself(serve: Serve) -> None:
    """wsmvc's own client, as users run it, stays connected through many pings: without
    its pongs the server would close it after 1.5 periods; the test waits 6."""
    server = make_server(heartbeat=BEAT)
    url = await serve(server)
    async with await wsmvc.dial(url, {"default": {}}) as client:
        nsconn = await client.connect("default")
        (member,) = server.namespace_members("default")
        await asyncio.sleep(6 * BEAT)
        assert not member.conn.closed
        reply = await nsconn.ask("ping", "hi", timeout=T)
        assert reply.body == b"pong"


async def test_the_server_answers_a_clients_ping(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Pongs are the server's own (aiohttp's autoping is off): with the payload, RFC 6455
    §5.5.3, in order with the messages."""
    url = await serve(make_server(heartbeat=None))
    ws = await session.ws_connect(url, autoping=False)
    await ready(ws)
    await ws.send_str("$1;default;;ping;0;0;")
    await ws.ping(b"are you there")
    await ws.send_str("$2;default;;ping;0;0;")
    await expect(ws, "$1;default;;ping;0;0;pong")
    msg = await recv(ws)
    assert (msg.type, msg.data) == (WSMsgType.PONG, b"are you there"), show(msg)
    await expect(ws, "$2;default;;ping;0;0;pong")


async def test_a_silent_client_is_not_closed_while_its_handler_runs(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """No reader runs during the handler, so a missing pong cannot be told from an unread
    one: the connection is judged once the handler returned (and then closed)."""
    release, gone = asyncio.Event(), asyncio.Event()

    async def slow(nsconn: NSConn, msg: Message) -> None:
        await release.wait()

    server = Server(
        {"default": {"slow": slow}}, heartbeat=BEAT, on_disconnect=lambda conn: gone.set()
    )
    url = await serve(server)
    ws = await session.ws_connect(url, autoping=False)
    conn_id = await handshake(ws)
    await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
    await expect(ws, "$c;;;;;;")
    await ws.send_str("$2;default;;slow;0;0;")  # then silent: no pong, nothing read
    await asyncio.sleep(6 * BEAT)  # four pong deadlines pass while the handler runs
    assert not conn_by_id(server, conn_id).closed
    release.set()
    await asyncio.wait_for(gone.wait(), T)


async def test_an_ask_to_a_vanished_client_ends_with_the_heartbeat(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """The server asks a client that went silent: the helper reader is listening, so the
    heartbeat closes the connection and the ask fails then, not after its timeout."""
    outcome: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def ask_back(nsconn: NSConn, msg: Message) -> None:
        try:
            await nsconn.ask("question", timeout=60)
        except Exception as exc:
            outcome.set_result(exc)

    server = Server({"default": {"ask_back": ask_back}}, heartbeat=BEAT)
    url = await serve(server)
    ws = await session.ws_connect(url, autoping=False)
    await handshake(ws)
    await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
    await expect(ws, "$c;;;;;;")
    await ws.send_str("$2;default;;ask_back;0;0;")  # then reads nothing, answers nothing
    exc = await asyncio.wait_for(outcome, T)
    assert isinstance(exc, wsmvc.ConnectionClosed), repr(exc)


async def test_pings_resume_for_the_first_client_after_the_server_was_empty(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """The heartbeat's timer stops when a sweep finds no connection and starts again with
    the next one."""
    gone = asyncio.Event()
    server = make_server(heartbeat=BEAT, on_disconnect=lambda conn: gone.set())
    url = await serve(server)
    first = await session.ws_connect(url, autoping=False)
    await ready(first)
    await answer_pings(first, 1)
    await first.close()
    await asyncio.wait_for(gone.wait(), T)
    await asyncio.sleep(2 * BEAT)  # sweeps find nobody meanwhile: the timer stops
    assert not server.connections
    second = await session.ws_connect(url, autoping=False)
    await ready(second)
    await answer_pings(second, 2)


def test_a_heartbeat_of_zero_or_less_is_refused() -> None:
    """``None`` turns pings off; 0 is not a quiet way to say the same."""
    for value in (0, -1.0):
        with pytest.raises(ValueError, match="positive number of seconds"):
            Server(heartbeat=value)


async def test_a_client_that_vanishes_before_its_handshake_is_closed(serve: Serve) -> None:
    """Without a handshake timeout, the heartbeat still finds a client that upgraded and
    then went silent without sending ``M``: it is pinged, then closed."""
    url = await serve(make_server(heartbeat=BEAT, handshake_timeout=None))
    raw = await RawWS.open(url)  # upgraded; never sends M, never answers (reading sends nothing)
    try:
        op, _ = await raw.recv()
        assert op == 0x9  # a ping
        while (frame := await raw.recv())[0] == 0x9:
            pass
        op, data = frame
        assert op == 0x8, frame
        assert (struct.unpack("!H", data[:2])[0], data[2:]) == (1011, b"keepalive ping timeout")
    finally:
        raw.sock.close()
