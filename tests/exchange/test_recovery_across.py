"""Recovery across servers (docs/recovery.md, "Across servers"; wsmvc/handover.py): two
servers on a real Redis or NATS, behind a TCP balancer of the test's own that sends each new
connection where the test says (as a load balancer without sticky sessions would). The
client's TCP connection to server A is killed (reset, no close frame) while messages flow;
it comes back through the balancer to server B, which takes the connection over from A."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

import wsmvc
from wsmvc import CloseReason, Message, NSConn, ReconnectingClient, Recovery, Server
from wsmvc.exchange.broker import BrokerExchange
from wsmvc.exchange.markers import Marker, format_marker, parse_marker

from ..test_client_recovery import Counted, Received, numbered, when_changed
from ..test_reconnect import FAST, Log, T, client_table
from .conftest import Broker, make_exchange

ROOMY = Recovery(max_messages=4000)


class Balancer:
    """A TCP proxy on loopback: each new connection goes to ``target`` (a port) at the
    time it arrives; :meth:`kill` resets the connections open through it."""

    def __init__(self) -> None:
        self.target = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._kept: set[asyncio.StreamWriter] = set()  # upstreams left open by a kill
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        pair = (writer, up_writer)
        self._pairs.append(pair)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            if dst not in self._kept:
                dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        if pair in self._pairs:
            self._pairs.remove(pair)

    def kill(self, *, upstream: bool = True) -> None:
        """Reset every connection (no close frame): both sides see it vanish, or with
        ``upstream=False`` the client's side only (the server's websocket stays open and
        silent, as when a network path dies without a word)."""
        for client, server in self._pairs:
            if not upstream:
                self._kept.add(server)
            for writer in (client, server) if upstream else (client,):
                sock = writer.get_extra_info("socket")
                with contextlib.suppress(OSError):
                    linger = struct.pack("ii", 1, 0)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                writer.transport.abort()
        self._pairs.clear()

    async def close(self) -> None:
        self.kill()
        for writer in self._kept:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def serving(server: Server) -> AsyncIterator[int]:
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await asyncio.wait_for(runner.cleanup(), 3 * T)


class Pair:
    """Servers A and B on ``broker``, each counting its clients' notes."""

    def __init__(self, broker: Broker, **options: Any) -> None:
        self.counted = {"a": Counted(), "b": Counted()}
        self.changed = self.counted["b"].changed = self.counted["a"].changed  # either's notes
        self.reasons: dict[str, list[CloseReason | None]] = {"a": [], "b": []}
        self.servers = {name: self._server(name, broker, options) for name in ("a", "b")}

    def _server(self, name: str, broker: Broker, options: dict[str, Any]) -> Server:
        counted = self.counted[name]
        reasons = self.reasons[name]

        def on_disconnect(conn: wsmvc.Conn) -> None:
            reasons.append(conn.close_reason)
            counted.gone.append(conn.id)
            counted.changed.set()

        events = {"note": counted.note, "echo": lambda ns, msg: b"echo:" + msg.body}
        return Server(
            {"chat": events},
            recovery=options.get("recovery", ROOMY),
            heartbeat=None,
            on_disconnect=on_disconnect,
            exchange=make_exchange(broker, server_id=f"server-{name}"),
        )


@pytest.fixture
async def pair_behind_a_balancer(
    broker: Broker,
) -> AsyncIterator[tuple[Pair, Balancer]]:
    pair = Pair(broker)
    balancer = Balancer()
    await balancer.start()
    async with serving(pair.servers["a"]) as port_a, serving(pair.servers["b"]) as port_b:
        pair.ports = {"a": port_a, "b": port_b}  # type: ignore[attr-defined]
        balancer.target = port_a
        for server in pair.servers.values():
            await confirmed(server)
        try:
            yield pair, balancer
        finally:
            await balancer.close()


@pytest.mark.parametrize("upstream", [True, False], ids=["both sides reset", "client side"])
async def test_a_client_killed_on_one_server_gets_every_message_from_the_other(
    pair_behind_a_balancer: tuple[Pair, Balancer],
    caplog: pytest.LogCaptureFixture,
    upstream: bool,
) -> None:
    """1,000 numbered messages to the client's room, odd ones from A, even ones from B; its
    TCP connection to A is reset after the 310th and it comes back to B: its handler saw
    1..1000 once each, each server's in their order; its notes reached a server once
    each, in order; the same id, no forced event on the client; A ran its disconnect
    events (MOVED). ``client side``: A still sees its websocket open when the client is
    back on B; A drops it then."""
    caplog.set_level(logging.INFO, "wsmvc")
    pair, balancer = pair_behind_a_balancer
    a, b = pair.servers["a"], pair.servers["b"]
    client, chat, got, log_ = await joined(pair, balancer)
    async with client:
        first_id = client.id
        for n in range(1, 1001):
            sender = a if n % 2 else b  # both servers broadcast to the room
            await sender.broadcast(numbered(n))
            if n <= 310:
                chat.emit("note", str(n))
            if n % 20 == 0:
                await asyncio.sleep(0)
            if n == 310:
                balancer.target = pair.ports["b"]  # type: ignore[attr-defined]
                balancer.kill(upstream=upstream)
                await log_.until(("lost", CloseReason.CONNECTION_LOST))
                for note in range(311, 411):
                    chat.emit("note", str(note))
        await log_.until("restored")
        for n in range(411, 511):
            chat.emit("note", str(n))
        await got.until(1000)
        notes = pair.counted
        await when_changed(pair.changed, lambda: len(notes["a"].notes + notes["b"].notes) >= 510)
        # In order per sending server (across servers there is no order to keep), once.
        assert sorted(got.numbers) == list(range(1, 1001))
        assert [n for n in got.numbers if n % 2] == list(range(1, 1001, 2))
        assert [n for n in got.numbers if not n % 2] == list(range(2, 1001, 2))
        assert sorted(notes["a"].notes + notes["b"].notes) == list(range(1, 511))
        assert notes["b"].notes == sorted(notes["b"].notes)
        assert notes["a"].notes == list(range(1, len(notes["a"].notes) + 1))
        assert log_.entries == [("lost", CloseReason.CONNECTION_LOST), ("retry", 1), "restored"]
        assert client.recovered and client.id == first_id
        assert [c.id for c in b.connections] == [first_id]
        assert [ns.id for ns in b.room_members("chat", "r")] == [first_id]
        await notes["a"].until_gone(first_id)
        assert pair.reasons["a"] == [CloseReason.MOVED]
        assert a.connections == []
        assert (await chat.ask("echo", "still", timeout=T)).body == b"echo:still"
        noticed = [
            r.getMessage()
            for r in caplog.records
            if "lost (its client came back to another" in r.getMessage()
        ]
        assert len(noticed) == (0 if upstream else 1), noticed


async def joined(pair: Pair, balancer: Balancer) -> tuple[ReconnectingClient, Any, Received, Log]:
    """A reconnecting client through the balancer (to A) in room ``r`` of ``chat``, its
    numbered messages and its log (cleared); A's subscription of ``chat`` confirmed, so
    that B's broadcasts reach it."""
    got = Received()
    log_ = Log()
    url = f"ws://127.0.0.1:{balancer.port}/ws"
    client = await wsmvc.dial(
        url, client_table(log_, "chat", n=got), reconnect=FAST, **log_.events()
    )
    chat = await client.connect("chat")
    await chat.join_room("r")
    await confirmed(pair.servers["a"])
    log_.entries.clear()
    return client, chat, got, log_


async def confirmed(server: Server) -> None:
    """The broker has every subscription ``server`` asked for so far."""
    exchange = server.exchange
    assert isinstance(exchange, BrokerExchange)
    await exchange.settle(T)


def test_a_marker_carries_the_publications_number() -> None:
    for marker in [
        Marker("s1", seq=7),
        Marker("s1", "alice0x1", None, True, None, 9),
        Marker("s1", "", "x y", False, None, 3),
        Marker("s1", "", None, False, (("r",), ("i",), ("o",)), 12),
    ]:
        assert parse_marker(format_marker(marker)) == marker
    assert parse_marker("neffos(0xs1())wsmvc:::x") is None


async def test_broadcasts_during_the_move_arrive_once(
    pair_behind_a_balancer: tuple[Pair, Balancer], caplog: pytest.LogCaptureFixture
) -> None:
    """The senders yield after every message, so the move happens while both servers
    broadcast: frames A kept and frames B held overlap, and are sent once."""
    caplog.set_level(logging.INFO, "wsmvc")
    pair, balancer = pair_behind_a_balancer
    a, b = pair.servers["a"], pair.servers["b"]
    client, _chat, got, log_ = await joined(pair, balancer)
    async with client:
        first_id = client.id
        at_310 = asyncio.Event()

        async def send(server: Server, numbers: range) -> None:
            for n in numbers:
                await server.broadcast(numbered(n))
                if n >= 300:
                    at_310.set()
                await asyncio.sleep(0)

        senders = asyncio.gather(send(a, range(1, 1001, 2)), send(b, range(2, 1001, 2)))
        await at_310.wait()
        balancer.target = pair.ports["b"]  # type: ignore[attr-defined]
        balancer.kill()
        await senders
        await log_.until("restored")
        await got.until(1000)
        assert sorted(got.numbers) == list(range(1, 1001))
        assert [n for n in got.numbers if n % 2] == list(range(1, 1001, 2))
        assert [n for n in got.numbers if not n % 2] == list(range(2, 1001, 2))
        assert client.recovered and client.id == first_id
        moved = [r.getMessage() for r in caplog.records if "moved here" in r.getMessage()]
        assert len(moved) == 1, moved


async def test_a_hook_refusing_on_the_new_server_gives_a_new_connection(broker: Broker) -> None:
    """B's ``_OnRoomJoin`` refuses the room the client was in: B does not take the
    connection over; the client's next try gets a new connection (A ended the kept one,
    its events ran), restores its namespace and sees the room refused."""
    refuse = {"on": False}

    def join(ns: NSConn, msg: Message) -> None:
        if refuse["on"]:
            raise wsmvc.Reject("no rooms here")

    events = {"_OnRoomJoin": join}
    gone: dict[str, list[CloseReason | None]] = {"a": [], "b": []}
    a_ended = asyncio.Event()

    def on_disconnect(name: str, conn: wsmvc.Conn) -> None:
        gone[name].append(conn.close_reason)
        if name == "a":
            a_ended.set()

    servers = {
        name: Server(
            {"chat": events},
            recovery=ROOMY,
            heartbeat=None,
            exchange=make_exchange(broker, server_id=f"server-{name}"),
            on_disconnect=functools.partial(on_disconnect, name),
        )
        for name in ("a", "b")
    }
    balancer = Balancer()
    await balancer.start()
    log_ = Log()
    async with serving(servers["a"]) as port_a, serving(servers["b"]) as port_b:
        for server in servers.values():
            await confirmed(server)  # connected: B can ask A
        balancer.target = port_a
        url = f"ws://127.0.0.1:{balancer.port}/ws"
        client = await wsmvc.dial(url, client_table(log_, "chat"), reconnect=FAST, **log_.events())
        async with client:
            chat = await client.connect("chat")
            await chat.join_room("r")
            first_id = client.id
            refuse["on"] = True
            balancer.target = port_b
            balancer.kill()
            await log_.until("restored")
            assert client.id != first_id and not client.recovered
            assert [c.id for c in servers["b"].connections] == [client.id]
            assert "chat" in client.namespaces
            assert servers["b"].room_members("chat", "r") == []

        await asyncio.wait_for(a_ended.wait(), T)
        assert gone["a"] == [CloseReason.CONNECTION_LOST]
    await balancer.close()


async def test_a_client_back_after_its_server_stopped_gets_a_new_connection(
    broker: Broker,
) -> None:
    """A stops (its kept connections go with it): B cannot take the connection over; the
    client gets a new one from B and restores its namespace and room."""
    servers = {
        name: Server(
            {"chat": {}},
            recovery=ROOMY,
            heartbeat=None,
            exchange=make_exchange(broker, server_id=f"server-{name}", timeout=1.0),
        )
        for name in ("a", "b")
    }
    balancer = Balancer()
    await balancer.start()
    log_ = Log()
    async with serving(servers["b"]) as port_b:
        async with serving(servers["a"]) as port_a:
            for server in servers.values():
                await confirmed(server)
            balancer.target = port_a
            url = f"ws://127.0.0.1:{balancer.port}/ws"
            client = await wsmvc.dial(
                url, client_table(log_, "chat"), reconnect=FAST, **log_.events()
            )
            chat = await client.connect("chat")
            await chat.join_room("r")
            first_id = client.id
            balancer.target = port_b
        # A is gone (its runner cleaned up: the client was told 1001 and comes back).
        await log_.until("restored")
        assert client.id != first_id and not client.recovered
        assert [ns.id for ns in servers["b"].room_members("chat", "r")] == [client.id]
        await client.close()
    await balancer.close()
