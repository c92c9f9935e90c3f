"""A handler that outlives its connection's close is cancelled after ``close_timeout``.

Whoever closes (the client, ``conn.close()``, ``server.close()`` at shutdown), the handler
running then gets ``close_timeout`` seconds to return; past that it is cancelled (logged
at WARNING), the disconnect events run, and the connection's task ends. Without that, a
stuck handler held ``close()`` forever, and aiohttp's own shutdown cancelled the whole task
later, skipping the events (and, racing it, logged "Unhandled exception").
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time

import aiohttp
import pytest
from aiohttp import web

import wsmvc
from wsmvc import Conn, Message, NSConn, Server

from .wire_support import RawWS, Serve, T

GRACE = 0.3  # close_timeout of these servers, seconds
CLOSED = asyncio.Event()  # set by a test once the close began: the ``slow`` handler goes on


class Log:
    """What ran, in order, and a way to wait for a line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._events: dict[str, asyncio.Event] = {}

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self._events.setdefault(line, asyncio.Event()).set()

    async def reached(self, line: str) -> None:
        await asyncio.wait_for(self._events.setdefault(line, asyncio.Event()).wait(), T)


def stuck_server(log: Log, **options: object) -> Server:
    """A server whose ``stuck`` handler waits forever (logging its cancellation), whose
    ``slow`` handler returns 0.1 s after the test sets ``CLOSED``, and whose ``shielded`` handler
    awaits a job that must outlive the connection."""
    CLOSED.clear()

    async def stuck(ns: NSConn, msg: Message) -> None:
        log("stuck starts")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log("stuck cancelled")
            raise

    async def slow(ns: NSConn, msg: Message) -> str:
        log("slow starts")
        await CLOSED.wait()
        await asyncio.sleep(0.1)
        log("slow returns")
        return "done"

    async def job() -> None:
        await asyncio.sleep(3 * GRACE)
        log("job done")

    async def shielded(ns: NSConn, msg: Message) -> None:
        log("shielded starts")
        await asyncio.shield(asyncio.ensure_future(job()))

    def on_disconnect(conn: Conn) -> None:
        log("on_disconnect")

    def disconnected(ns: NSConn, msg: Message) -> None:
        log("_OnNamespaceDisconnect")

    table = {
        "default": {
            "stuck": stuck,
            "slow": slow,
            "shielded": shielded,
            "_OnNamespaceDisconnect": disconnected,
        }
    }
    options.setdefault("close_timeout", GRACE)
    return Server(table, on_disconnect=on_disconnect, **options)  # type: ignore[arg-type]


async def start(server: Server, url: str, event: str, log: Log) -> wsmvc.Conn:
    client = await wsmvc.dial(url, {"default": {}})
    ns = await client.connect("default", timeout=T)
    assert ns.emit(event)
    await log.reached(f"{event} starts")
    return client


def cut_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "after the close began" in r.getMessage()
    ]


async def test_shutdown_cancels_a_stuck_handler_and_runs_the_events(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """``server.close()`` with a handler waiting forever: it returns after about
    ``close_timeout``; the handler saw CancelledError, then the disconnect events ran."""
    log = Log()
    server = stuck_server(log)
    url = await serve(server)
    client = await start(server, url, "stuck", log)
    began = time.monotonic()
    await asyncio.wait_for(server.close(), T)
    took = time.monotonic() - began
    assert log.lines == [
        "stuck starts",
        "stuck cancelled",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    assert GRACE <= took < GRACE + 2, took
    assert len(cut_warnings(caplog)) == 1
    assert server.connections == []
    await asyncio.wait_for(client.wait_closed(), T)
    assert client.close_code == 1001


async def test_a_kick_while_a_handler_is_stuck_ends_the_connection(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """The application kicks the client with ``conn.close()`` from outside any handler:
    ``close()`` returns, the handler is cut, the events run, once; the serving task ends
    normally (the cut is not its cancellation)."""
    log = Log()
    server = stuck_server(log)
    url = await serve(server)
    client = await start(server, url, "stuck", log)
    [conn] = server.connections
    await asyncio.wait_for(conn.close(4000), T)  # returned: the events ran
    assert log.lines == [
        "stuck starts",
        "stuck cancelled",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    assert len(cut_warnings(caplog)) == 1
    task = conn.reader.task
    assert task is not None
    await asyncio.wait([task], timeout=T)
    assert task.done() and not task.cancelled()
    await asyncio.wait_for(client.wait_closed(), T)
    assert client.close_code == 4000


@pytest.mark.parametrize("how", ["reset", "shutdown"])
async def test_a_client_that_vanishes_while_a_handler_is_stuck_is_noticed(
    serve: Serve, how: str
) -> None:
    """Nothing reads while a handler runs, so the client's close frame waits unread; but
    once its TCP end is gone (reset, or shut down without a close frame) the heartbeat
    sees the transport closed: the connection leaves the registry, the handler is cut
    ``close_timeout`` later, the events run."""
    log = Log()
    server = stuck_server(log, heartbeat=0.2)
    url = await serve(server)
    raw = await RawWS.open(url)

    async def text() -> bytes:
        while True:
            op, data = await raw.recv()
            if op == 0x1:
                return data
            if op == 0x9:  # the heartbeat's ping
                await raw.send(data, 0xA)

    await raw.send("M")
    assert (await text()).startswith(b"A")
    await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
    assert await text() == b"$c;;;;;;"
    await raw.send(";default;;stuck;0;0;")
    await log.reached("stuck starts")
    if how == "reset":
        raw.abort()
    else:
        raw.sock.shutdown(socket.SHUT_RDWR)
    await log.reached("on_disconnect")
    assert log.lines == [
        "stuck starts",
        "stuck cancelled",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    assert server.connections == [] and server.namespace_members("default") == []
    raw.sock.close()


async def test_a_handler_that_returns_within_close_timeout_is_not_cut(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that needs a little time after the close (0.1 s; ``close_timeout`` 1 s)
    finishes its work; nothing is cancelled or logged; the events run after it."""
    log = Log()
    server = stuck_server(log, close_timeout=1.0)
    url = await serve(server)
    client = await start(server, url, "slow", log)
    [conn] = server.connections
    closing = asyncio.ensure_future(conn.close())
    await asyncio.sleep(0)  # the close began (the handler is told by CLOSED below)
    CLOSED.set()
    await asyncio.wait_for(closing, T)
    assert log.lines == ["slow starts", "slow returns", "_OnNamespaceDisconnect", "on_disconnect"]
    assert cut_warnings(caplog) == []
    await asyncio.wait_for(client.wait_closed(), T)


async def test_a_shielded_job_outlives_the_cut(serve: Serve) -> None:
    """What the handler shields with ``asyncio.shield()`` goes on after the cut."""
    log = Log()
    server = stuck_server(log)
    url = await serve(server)
    client = await start(server, url, "shielded", log)
    [conn] = server.connections
    await asyncio.wait_for(conn.close(), T)
    await log.reached("on_disconnect")
    assert "job done" not in log.lines  # the handler was cut before its job ended
    await log.reached("job done")
    await asyncio.wait_for(client.wait_closed(), T)


async def test_a_stuck_on_connect_is_cut_at_shutdown(serve: Serve) -> None:
    """``on_connect`` waiting forever: shutdown cuts it; no ``on_disconnect`` (the
    connection never opened), and the client sees the 1001."""
    log = Log()

    async def on_connect(conn: Conn) -> None:
        log("on_connect starts")
        await asyncio.Event().wait()

    server = Server(
        {"default": {}},
        on_connect=on_connect,
        on_disconnect=lambda conn: log("on_disconnect"),
        close_timeout=GRACE,
    )
    url = await serve(server)
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str("M")
        await log.reached("on_connect starts")
        await asyncio.wait_for(server.close(), T)
        msg = await asyncio.wait_for(ws.receive(), T)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001
    assert log.lines == ["on_connect starts"]


async def test_a_handler_that_swallows_the_cut_still_lets_the_connection_end(
    serve: Serve,
) -> None:
    """A handler that catches the cut's CancelledError and returns: the events run and
    the serving task ends normally (not cancelled)."""
    log = Log()

    async def stubborn(ns: NSConn, msg: Message) -> None:
        log("stubborn starts")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log("swallowed")

    server = Server(
        {"default": {"stubborn": stubborn}},
        on_disconnect=lambda conn: log("on_disconnect"),
        close_timeout=GRACE,
    )
    url = await serve(server)
    client = await wsmvc.dial(url, {"default": {}})
    ns = await client.connect("default", timeout=T)
    ns.emit("stubborn")
    await log.reached("stubborn starts")
    [conn] = server.connections
    await asyncio.wait_for(conn.close(), T)
    assert log.lines == ["stubborn starts", "swallowed", "on_disconnect"]
    task = conn.reader.task
    assert task is not None
    await asyncio.wait([task], timeout=T)
    assert task.done() and not task.cancelled()
    await client.close()


async def test_aiohttp_shutdown_with_a_stuck_handler_logs_no_unhandled_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The application stops (``runner.cleanup()``) while a handler is stuck: wsmvc cuts it
    within ``close_timeout``, before aiohttp's own ``shutdown_timeout`` (which would cancel
    the whole task, skip the events, and race aiohttp's handler waiter)."""
    gc.collect()  # what earlier tests left to the collector is not logged during this one
    caplog.clear()
    log = Log()
    server = stuck_server(log)
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app, shutdown_timeout=GRACE + 3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"
    client = await start(server, url, "stuck", log)
    began = time.monotonic()
    await asyncio.wait_for(runner.cleanup(), T)
    assert time.monotonic() - began < GRACE + 2.5
    assert log.lines == [
        "stuck starts",
        "stuck cancelled",
        "_OnNamespaceDisconnect",
        "on_disconnect",
    ]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    await asyncio.wait_for(client.wait_closed(), T)


async def test_shutdown_returns_once_the_serving_tasks_ended(serve: Serve) -> None:
    """A client that never answers the close frame: ``server.close()`` returns only once
    the connection's task ended (its close handshake given up, the transport dropped), so
    aiohttp's own shutdown that follows finds no handler running (and has nothing to race
    or to cancel)."""
    server = Server({"default": {}}, close_timeout=GRACE)
    url = await serve(server)
    raw = await RawWS.open(url)  # reads nothing from now on: the close frame goes unanswered
    await raw.send("M")
    assert (await raw.recv_text()).startswith("A")
    [conn] = server.connections
    task = conn.reader.task
    assert task is not None
    await asyncio.wait_for(server.close(), T)
    assert task.done()
    raw.sock.close()


async def test_aiohttp_shutdown_closes_the_tcp_connection_once_the_close_frame_is_out() -> None:
    """aiohttp's shutdown stops reading its connections before wsmvc closes them, so the
    client's answer to the close frame is never read: the server closes the TCP connection
    right after its close frame (1001) rather than holding every client for
    ``close_timeout`` (a browser waits for the server to close)."""
    server = Server({"default": {}}, close_timeout=3.0)
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app, shutdown_timeout=10)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    raw = await RawWS.open(f"ws://127.0.0.1:{runner.addresses[0][1]}/ws")
    await raw.send("M")
    assert (await raw.recv_text()).startswith("A")
    began = time.monotonic()
    cleanup = asyncio.ensure_future(runner.cleanup())
    assert await raw.close_code() == 1001
    await raw.send(b"\x03\xe9", 0x8)  # the client's answer, as a browser sends it
    with pytest.raises(EOFError):  # then waits for the server to close
        await raw.recv()
    assert time.monotonic() - began < 1.5
    await asyncio.wait_for(cleanup, T)
    raw.sock.close()
