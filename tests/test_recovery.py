"""Connection state recovery on one server (``Server(recovery=...)``, docs/recovery.md).

A client speaking the recovery contract on a plain socket (:class:`Recovering`): it reads
only when told to, and vanishes with its TCP connection (no close frame), so what the
network loses is honestly lost. Each test asserts what the client gets back (its id, its
rooms, every message it missed, in order, once) and what the application sees (no
disconnect event for a recovered loss; the events once the window is over).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from urllib.parse import urlencode

import pytest

from wsmvc import Conn, Message, NSConn, Recovery, Server

from .wire_support import RawWS, Serve, T

RECOVERY = "_wsmvcRecovery"


class Recovering:
    """A wsmvc client's side of recovery on a :class:`RawWS`: counts the data frames it
    read after the recovery frame."""

    def __init__(self, raw: RawWS, conn_id: str, key: str, server_read: int | None) -> None:
        self.raw = raw
        self.id = conn_id
        self.key = key
        self.server_read = server_read  # None: a new connection
        self.read = 0

    @classmethod
    async def dial(
        cls, url: str, key: str | None = None, received: int = 0, *, base: int = 0
    ) -> Recovering:
        query = (
            {"wsmvc-recovery": "1"}
            if key is None
            else {
                "wsmvc-recovery": key,
                "wsmvc-received": str(received),
            }
        )
        return await cls.handshake(await RawWS.open(f"{url}?{urlencode(query)}"), base)

    @classmethod
    async def handshake(cls, raw: RawWS, base: int = 0) -> Recovering:
        """Send ``M`` on an upgraded websocket: the recovery frame, ``A<id>``; the client."""
        await raw.send("M")
        frame = await raw.recv_text()
        prefix = f";;;{RECOVERY};0;0;"
        assert frame.startswith(prefix), frame
        ack = await raw.recv_text()
        assert ack.startswith("A"), ack
        words = frame[len(prefix) :].split(" ")
        self = cls(raw, ack[1:], words[0], int(words[1]) if len(words) > 1 else None)
        self.read = base
        return self

    async def next(self) -> str:
        """The next data frame's text (counted)."""
        while True:
            op, data = await self.raw.recv()
            if op in (0x1, 0x2):
                self.read += 1
                return data.decode()
            assert op in (0x9, 0xA), (op, data)

    async def ask(self, frame: str) -> str:
        await self.raw.send(frame)
        return await self.next()

    async def join(self, room: str) -> None:
        assert await self.ask("$c;default;;_OnNamespaceConnect;0;0;") == "$c;;;;;;"
        assert await self.ask(f"$j;default;{room};_OnRoomJoin;0;0;") == "$j;;;;;;"

    def vanish(self) -> None:
        self.raw.abort()


class Events:
    """The application's disconnect events, and a wait for them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.changed.set()

    async def until(self, line: str) -> None:
        async def seen() -> None:
            while line not in self.lines:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(seen(), T)


def recovering_server(events: Events, **recovery: float) -> Server:
    def on_disconnect(conn: Conn) -> None:
        events(f"on_disconnect {conn.id}")

    def left(ns: NSConn, msg: Message) -> None:
        events(f"left {msg.room}")

    def echo(ns: NSConn, msg: Message) -> bytes:
        return b"echo:" + msg.body

    table = {"default": {"_OnRoomLeft": left, "echo": echo}}
    ids = itertools.count()  # distinct: a new connection is told by its new id
    return Server(
        table,
        recovery=Recovery(**recovery),  # type: ignore[arg-type]
        on_disconnect=on_disconnect,
        heartbeat=None,
        id_generator=lambda request: f"c{next(ids)}",
    )


def numbered(n: int) -> Message:
    return Message(namespace="default", room="r", event="n", body=str(n).encode())


async def until_kept(server: Server, conn_id: str) -> Conn:
    """The server saw the connection go (and kept it): its transport is gone."""
    [conn] = server.get_connections(conn_id)
    deadline = asyncio.get_running_loop().time() + T
    while conn.recovery is None or not conn.recovery.lost:
        assert asyncio.get_running_loop().time() < deadline, "the loss was never seen"
        await asyncio.sleep(0.01)
    return conn


async def test_a_client_back_within_the_window_gets_every_message_it_missed_once(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 numbered messages to the client's room; its TCP connection is killed after it
    read 100 (more were on the way, some in its socket); it comes back: same id, still in
    the room, and it reads 101..1000 in order, none twice; no disconnect event ran."""
    caplog.set_level(logging.INFO, "wsmvc")
    events = Events()
    server = recovering_server(events, max_messages=2000)
    url = await serve(server)
    client = await Recovering.dial(url)
    await client.join("r")
    base = client.read
    for n in range(1, 301):
        await server.broadcast(numbered(n))
    got = [await client.next() for _ in range(100)]
    assert got == [f";default;r;n;0;0;{n}" for n in range(1, 101)]
    client.vanish()
    await until_kept(server, client.id)
    for n in range(301, 1001):
        await server.broadcast(numbered(n))
    assert [ns.conn.id for ns in server.room_members("default", "r")] == [client.id]

    back = await Recovering.dial(url, client.key, client.read, base=client.read)
    assert back.id == client.id and back.key != client.key
    assert back.server_read == 2  # its connect and its join
    rest = [await back.next() for _ in range(900)]
    assert rest == [f";default;r;n;0;0;{n}" for n in range(101, 1001)]
    assert await back.ask("$e;default;;echo;0;0;hi") == "$e;default;;echo;0;0;echo:hi"
    assert events.lines == []
    assert [ns.conn.id for ns in server.room_members("default", "r")] == [client.id]
    assert base == 2
    back.raw.sock.close()


async def test_a_client_not_back_in_time_is_disconnected_and_its_key_is_worthless(
    serve: Serve,
) -> None:
    """Past the window the disconnect events run (once); the key then opens a new
    connection (a new id, a recovery frame with a key alone)."""
    events = Events()
    server = recovering_server(events, window=0.3)
    url = await serve(server)
    client = await Recovering.dial(url)
    await client.join("r")
    client.vanish()
    await until_kept(server, client.id)
    await events.until(f"on_disconnect {client.id}")
    assert events.lines == ["left r", f"on_disconnect {client.id}"]
    assert server.connections == []
    again = await Recovering.dial(url, client.key, client.read)
    assert again.server_read is None and again.id != client.id
    again.raw.sock.close()


async def test_a_close_frame_ends_the_connection_for_good(serve: Serve) -> None:
    """A client that closes (a close frame) left on purpose: its events run at once."""
    events = Events()
    server = recovering_server(events)
    url = await serve(server)
    client = await Recovering.dial(url)
    await client.join("r")
    await client.raw.send(b"\x03\xe8", 0x8)
    await events.until(f"on_disconnect {client.id}")
    again = await Recovering.dial(url, client.key, client.read)
    assert again.server_read is None
    again.raw.sock.close()


async def test_too_much_missed_gives_the_connection_up_at_once(serve: Serve) -> None:
    """While it is away, more than ``max_messages`` for it: it is given up then (its events
    run), not at the end of the window; coming back opens a new connection."""
    events = Events()
    server = recovering_server(events, window=60, max_messages=10)
    url = await serve(server)
    client = await Recovering.dial(url)
    await client.join("r")
    client.vanish()
    await until_kept(server, client.id)
    for n in range(11):
        await server.broadcast(numbered(n))
    await events.until(f"on_disconnect {client.id}")
    again = await Recovering.dial(url, client.key, client.read)
    assert again.server_read is None
    again.raw.sock.close()


async def test_a_client_back_before_the_server_saw_it_go_takes_over(serve: Serve) -> None:
    """The old TCP connection still looks alive to the server (no FIN yet): the client's
    return drops it and goes on, with what was sent on it replayed."""
    events = Events()
    server = recovering_server(events)
    url = await serve(server)
    client = await Recovering.dial(url)
    await client.join("r")
    for n in range(1, 6):
        await server.broadcast(numbered(n))
    assert await client.next() == ";default;r;n;0;0;1"
    back = await Recovering.dial(url, client.key, client.read, base=client.read)
    assert back.id == client.id
    rest = [await back.next() for _ in range(4)]
    assert rest == [f";default;r;n;0;0;{n}" for n in range(2, 6)]
    assert events.lines == []
    client.raw.sock.close()
    back.raw.sock.close()


async def test_shutdown_ends_a_kept_connection_at_once(serve: Serve) -> None:
    """``server.close()`` does not wait for a kept connection's window: its events run."""
    events = Events()
    server = recovering_server(events, window=60)
    url = await serve(server)
    client = await Recovering.dial(url)
    await client.join("r")
    client.vanish()
    await until_kept(server, client.id)
    await asyncio.wait_for(server.close(), T)
    assert events.lines == ["left r", f"on_disconnect {client.id}"]


async def test_a_client_that_does_not_ask_gets_no_recovery_frame(serve: Serve) -> None:
    """A neffos client (no ``wsmvc-recovery`` in the URL) sees nothing of recovery."""
    server = recovering_server(Events())
    url = await serve(server)
    raw = await RawWS.open(url)
    await raw.send("M")
    assert (await raw.recv_text()).startswith("A")
    await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
    assert await raw.recv_text() == "$c;;;;;;"
    raw.sock.close()


@pytest.mark.parametrize("query", ["wsmvc-recovery=short", "wsmvc-recovery=" + "x" * 32])
async def test_a_malformed_or_unknown_key_opens_a_new_connection(serve: Serve, query: str) -> None:
    """A key the server does not know (or cannot be one) is a new recoverable connection."""
    server = recovering_server(Events())
    url = await serve(server)
    raw = await RawWS.open(f"{url}?{query}&wsmvc-received=0")
    await raw.send("M")
    assert (await raw.recv_text()).startswith(f";;;{RECOVERY};0;0;")
    assert (await raw.recv_text()).startswith("A")
    raw.sock.close()


async def test_two_losses_in_a_row_are_both_recovered(serve: Serve) -> None:
    """Counts run over the connection's whole life: a second loss after a recovery is
    recovered too, with the key the first recovery gave, and what the client sent is
    counted across both."""
    events = Events()
    server = recovering_server(events)
    url = await serve(server)
    client = await Recovering.dial(url)
    await client.join("r")
    await server.broadcast(numbered(1))
    assert await client.next() == ";default;r;n;0;0;1"
    client.vanish()
    await until_kept(server, client.id)
    await server.broadcast(numbered(2))
    second = await Recovering.dial(url, client.key, client.read, base=client.read)
    assert second.server_read == 2
    assert await second.next() == ";default;r;n;0;0;2"
    assert await second.ask("$e;default;;echo;0;0;x") == "$e;default;;echo;0;0;echo:x"
    second.vanish()
    await until_kept(server, client.id)
    await server.broadcast(numbered(3))
    third = await Recovering.dial(url, second.key, second.read, base=second.read)
    assert (third.id, third.server_read) == (client.id, 3)
    assert await third.next() == ";default;r;n;0;0;3"
    again = await Recovering.dial(url, client.key, client.read)  # each key serves once
    assert again.server_read is None and again.id != client.id
    again.raw.sock.close()
    assert events.lines == []
    third.raw.sock.close()


async def test_a_handler_reply_and_a_server_ask_during_the_loss_arrive_after_it(
    serve: Serve,
) -> None:
    """A handler running when the connection is lost still answers (the answer waits for
    the client), and the server's ask made meanwhile reaches the client once it is back;
    its answer settles the ask."""
    events = Events()
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(ns: NSConn, msg: Message) -> bytes:
        started.set()
        await release.wait()
        return b"late"

    server = recovering_server(events)
    server.on("default", "slow")(slow)
    url = await serve(server)
    client = await Recovering.dial(url)
    await client.join("r")
    await client.raw.send("$s;default;;slow;0;0;")
    await started.wait()
    client.vanish()  # unseen: nothing reads while the handler runs (and no heartbeat here)
    [conn] = server.get_connections(client.id)
    ns = conn.namespace("default")
    assert ns is not None
    asking = asyncio.ensure_future(ns.ask("question", b"?", timeout=T))
    await asyncio.sleep(0)  # the ask runs up to its wait: its question is written (and kept)
    release.set()
    back = await Recovering.dial(url, client.key, client.read, base=client.read)
    question = await back.next()
    assert await back.next() == "$s;default;;slow;0;0;late"
    token = question.split(";", 1)[0]
    assert question == f"{token};default;;question;0;0;?"
    await back.raw.send(f"{token};default;;question;0;0;!")
    answer = await asyncio.wait_for(asking, T)
    assert answer.body == b"!"
    assert events.lines == []
    back.raw.sock.close()


async def test_recovery_with_compression_replays_what_was_compressed(serve: Serve) -> None:
    """With permessage-deflate, the replay is compressed for the new websocket as it
    negotiated (the kept frames are the messages, not the bytes on the old wire)."""
    events = Events()
    server = recovering_server(events)
    url = await serve(server)
    client = await Recovering.dial(url)
    await client.join("r")
    client.vanish()
    await until_kept(server, client.id)
    big = Message(namespace="default", room="r", event="big", body=b"z" * 4000)
    await server.broadcast(big)
    query = urlencode({"wsmvc-recovery": client.key, "wsmvc-received": client.read})
    raw = await RawWS.open(f"{url}?{query}", deflate=True)
    await raw.send("M")
    assert (await raw.recv_text()).startswith(f";;;{RECOVERY};0;0;")
    assert await raw.recv_text() == f"A{client.id}"
    op, data = await raw.recv()
    assert (op, data, raw.compressed) == (0x1, b";default;r;big;0;0;" + b"z" * 4000, True)
    raw.sock.close()


async def test_a_heartbeat_timeout_keeps_the_connection_too(serve: Serve) -> None:
    """A client whose TCP connection stays up but that answers no ping (the network
    dropped it silently) is kept like a vanished one, and recovered."""
    events = Events()

    def on_disconnect(conn: Conn) -> None:
        events(f"on_disconnect {conn.id}")

    server = Server(
        {"default": {}},
        recovery=Recovery(),
        on_disconnect=on_disconnect,
        heartbeat=0.2,
    )
    url = await serve(server)
    client = await Recovering.dial(url)
    assert await client.ask("$c;default;;_OnNamespaceConnect;0;0;") == "$c;;;;;;"
    await until_kept(server, client.id)  # it never answers the pings
    back = await Recovering.dial(url, client.key, client.read, base=client.read)
    assert back.id == client.id and back.server_read == 1
    assert events.lines == []
    client.raw.sock.close()
    back.raw.sock.close()
