"""Recovery across servers, adversarially, continued: another publisher on the broker,
the old server's application changing the connection while it moves, bounds, exactly once
across two moves with three servers broadcasting, and controllers with injection on the new
server. Real Redis and NATS; the harness is across_support.py."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

import wsmvc
from wsmvc import CloseReason, Message, NSConn, Recovery, connection_scope, controller, event
from wsmvc.exchange.broker import BrokerExchange

from ..test_client_recovery import Received, numbered
from ..test_reconnect import FAST, Log, T, client_table
from .across_support import cluster_of, joined_client
from .conftest import Broker, eventually, make_exchange
from .test_recovery_across import confirmed

# -- another publisher on the broker ---------------------------------------------------------


async def test_forged_answers_and_requests_on_the_broker(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A publisher of its own on the broker ("mallory") floods both servers' request
    channels while a client moves: answers for every small request id in the name of A,
    bad JSON, unknown ops, huge parts, describes and takes of keys it guessed. The moves
    still happen (two clients); nothing fails with a traceback; both are served after."""
    caplog.set_level(logging.INFO, "wsmvc")
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, chat = await joined_client(cluster, log)
        other_log = Log()
        other = await cluster.dial(other_log)
        other_chat = await other.connect("chat")
        mallory = make_exchange(broker, server_id="mallory")
        await mallory.start()
        await mallory.wait_connected(T)
        to_a = mallory.side_channel("requests.server-a")
        to_b = mallory.side_channel("requests.server-b")
        guess = "server-a." + "A" * 32
        describe = {"op": "describe", "key": guess, "lease": "x"}
        take = {"op": "take", "key": guess, "lease": "", "received": -1}
        junk = [
            (to_a, b"q\nmallory\n1\n0\nnot json"),
            (to_a, b"q\nmallory\n2\n0\n[1, 2]"),
            (to_a, b'q\nmallory\n3\n0\n{"op": "explode", "key": "k", "lease": "l"}'),
            (to_a, b"q\nmallory\n4\n0\n" + json.dumps(describe).encode()),
            (to_a, b"q\nmallory\n5\n0\n" + json.dumps(take).encode()),
            (to_a, b'q\nserver-a\n6\n0\n{"op": "describe", "key": "x", "lease": "x"}'),
            (to_a, b"garbage without a header"),
            (to_b, b"p\nserver-a\n1\n0\n" + b"x" * 200_000),
        ]
        stop = asyncio.Event()

        async def flood() -> None:
            while not stop.is_set():
                for channel, payload in junk:
                    mallory.side_publish(channel, payload)
                for rid in range(1, 200):
                    mallory.side_publish(to_b, f"e\nserver-a\n{rid}\n0\n".encode())
                    mallory.side_publish(to_a, f"e\nserver-b\n{rid}\n0\n".encode())
                await asyncio.sleep(0.005)

        flooding = asyncio.ensure_future(flood())
        try:
            async with client, other:
                first = client.id
                cluster.route("b")
                cluster.balancer.kill(upstream=True)
                await log.until("restored")
                assert client.recovered and client.id == first
                await other_log.until("restored")
                assert other.recovered
                assert sorted(b.ids()) == sorted([first, other.id]) and a.ids() == []
                for n in range(20):
                    body = f"still {n}"
                    assert (await other_chat.ask("echo", body, timeout=T)).body == body.encode()
                assert (await chat.ask("echo", "x", timeout=T)).body == b"x"
        finally:
            stop.set()
            await flooding
            await mallory.stop()
        tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("wsmvc")]
        assert tracebacks == []


# -- server-side changes, and handlers, on the old server --------------------------------------


@pytest.mark.parametrize("change", ["join", "leave"])
async def test_a_room_change_on_the_old_server_while_the_connection_moves(
    broker: Broker, change: str
) -> None:
    """A's application joins the kept connection to room ``s`` (or makes it leave ``r``)
    after A described it to B and before B takes it (the ask waits for the client): the
    client, once moved, and B agree about its rooms, and the change on A failed."""
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, chat = await joined_client(cluster, log)
        async with client:
            first = client.id
            kept = a.server.get_connections(first)[0].namespace("chat")
            assert kept is not None
            cluster.route("b")
            b.connect_gate.armed = True
            cluster.balancer.kill()
            await b.connect_gate.wait_reached()
            changing: asyncio.Future[Any] = asyncio.ensure_future(
                kept.join_room("s", timeout=None)
                if change == "join"
                else kept.leave_room("r", timeout=None)
            )

            async def asked() -> bool:
                return bool(kept.conn.session.asks)

            await eventually(asked, "A's ask of the kept connection", T, 0.001)
            b.connect_gate.opened.set()
            await log.until("restored")
            assert client.recovered and client.id == first
            with pytest.raises(wsmvc.ConnectionClosed):
                await asyncio.wait_for(changing, T)
            # An ask after the replay: the client has handled everything replayed.
            assert (await chat.ask("echo", "x", timeout=T)).body == b"x"
            moved = b.server.get_connections(first)[0].namespace("chat")
            assert moved is not None
            conn = client.conn
            assert conn is not None
            mine = conn.namespace("chat")
            assert mine is not None
            assert sorted(mine.rooms) == sorted(moved.rooms) == ["r"]


@pytest.mark.parametrize("busy", [0.3, 1.5])
async def test_a_clients_ask_answered_by_the_old_server_while_it_moves(
    broker: Broker, busy: float
) -> None:
    """The client asks A; A's handler is still at work (``busy`` seconds, the second longer
    than the describes B used to try) when the client's TCP connection is reset and it
    comes back to B: the move waits for the handler, the client gets its answer (as on one
    server)."""
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(ns: NSConn, msg: Message) -> bytes:
        started.set()
        await release.wait()
        return b"slow:" + msg.body

    async with cluster_of(broker, events={"slow": slow}) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, chat = await joined_client(cluster, log)
        async with client:
            first = client.id
            asking = asyncio.ensure_future(chat.ask("slow", "q", timeout=3 * T))
            await asyncio.wait_for(started.wait(), T)
            cluster.route("b")
            cluster.balancer.kill()
            await log.until(("lost", CloseReason.CONNECTION_LOST))
            await asyncio.sleep(busy)  # the handler's work, not a wait for the test
            release.set()
            await log.until("restored")
            assert client.recovered and client.id == first
            assert (await asyncio.wait_for(asking, 2 * T)).body == b"slow:q"
            assert await a.until_gone(first) is CloseReason.MOVED
            assert b.ids() == [first] and a.ids() == []


# -- bounds ------------------------------------------------------------------------------------


async def test_a_kept_frame_larger_than_the_broker_takes(broker: Broker) -> None:
    """A's application sends the kept connection a 1.5 MB message while it moves (NATS
    carries 1 MiB at most in one message): the client, moved to B, gets it, once."""
    big = b"x" * 1_500_000
    got: list[bytes] = []
    arrived = asyncio.Event()

    def on_big(ns: NSConn, msg: Message) -> None:
        got.append(msg.body)
        arrived.set()

    recovery = Recovery(max_bytes=8 << 20)
    async with cluster_of(broker, recovery=recovery) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client = await wsmvc.dial(
            cluster.url,
            client_table(log, "chat", big=on_big),
            reconnect=FAST,
            max_message_size=4 << 20,
            **log.events(),
        )
        async with client:
            chat = await client.connect("chat")
            await chat.join_room("r")
            await confirmed(a.server)
            first = client.id
            kept = a.server.get_connections(first)[0].namespace("chat")
            assert kept is not None
            cluster.route("b")
            b.connect_gate.armed = True
            cluster.balancer.kill()
            await b.connect_gate.wait_reached()
            assert kept.emit("big", big)
            b.connect_gate.opened.set()
            await log.until("restored")
            assert client.recovered and client.id == first
            await asyncio.wait_for(arrived.wait(), T)
            assert (await chat.ask("echo", "x", timeout=T)).body == b"x"
            assert got == [big]


async def test_more_written_while_moving_than_the_bounds_keep(broker: Broker) -> None:
    """B's ``_OnNamespaceConnected`` hook sends the connection moving in more messages than
    ``max_messages`` (held until the take): B cannot move it exactly; the client's next
    try gets a new connection (not the same refusal again and again), A ends its kept one."""
    chatty = {"on": False}

    def hook(ns: NSConn, msg: Message) -> None:
        if chatty["on"]:
            for n in range(60):
                ns.emit("news", str(n))

    async with cluster_of(
        broker, recovery=Recovery(max_messages=50), events={"_OnNamespaceConnected": hook}
    ) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)
        async with client:
            first = client.id
            chatty["on"] = True
            cluster.route("b")
            cluster.balancer.kill()
            await log.until("restored")
            assert not client.recovered and client.id != first
            await a.until_gone(first)
            assert b.ids() == [client.id] and a.ids() == []


# -- exactly once across two moves; per-process state -------------------------------------


async def test_three_servers_broadcasting_while_the_client_moves_twice(broker: Broker) -> None:
    """A, B and C each broadcast their own numbered sequence to the client's room, yielding
    after each message, while the client moves A -> B, then B -> C: each server's sequence
    reaches it complete, in order, once; it kept its id; A and B ended theirs (MOVED)."""
    got = Received()
    async with cluster_of(broker, "abc") as cluster:
        nodes = [cluster["a"], cluster["b"], cluster["c"]]
        log = Log()
        client = await cluster.dial(log, n=got)
        async with client:
            chat = await client.connect("chat")
            await chat.join_room("r")
            for node in nodes:
                await confirmed(node.server)
            log.entries.clear()
            first = client.id
            total = 1500
            marks = {400: "b", 900: "c"}
            reached = {n: asyncio.Event() for n in marks}

            async def send(index: int) -> None:
                server = nodes[index].server
                for n in range(index + 1, total + 1, 3):
                    await server.broadcast(numbered(n))
                    for mark, event in reached.items():
                        if n >= mark:
                            event.set()
                    await asyncio.sleep(0)

            senders = asyncio.gather(*(send(i) for i in range(3)))
            for count, (mark, name) in enumerate(marks.items(), 1):
                await asyncio.wait_for(reached[mark].wait(), T)
                cluster.route(name)
                cluster.balancer.kill()
                await log.until("restored", count)
            await senders
            await got.until(total)
            for index in range(3):
                mine = [n for n in got.numbers if n % 3 == (index + 1) % 3]
                assert mine == list(range(index + 1, total + 1, 3)), index
            assert len(got.numbers) == total
            assert client.recovered and client.id == first
            assert await nodes[0].until_gone(first) is CloseReason.MOVED
            assert await nodes[1].until_gone(first) is CloseReason.MOVED
            assert nodes[2].ids() == [first]


SEEN: list[tuple[str, str, str]] = []  # (server, hook, id or room): Shop's hooks


@connection_scope
class Cart:
    """One per connection (its namespaces share it)."""

    def __init__(self) -> None:
        self.items: list[str] = []


@controller(namespace="shop")
class Shop:
    """A controller of the test: where its hooks ran, and a cart."""

    cart: Cart
    conn: NSConn

    def _where(self) -> str:
        exchange = self.conn.conn.server.exchange
        assert isinstance(exchange, BrokerExchange)
        return exchange.id

    @event
    def on_namespace_connect(self, msg: Message) -> None:
        SEEN.append((self._where(), "connect", self.conn.conn.id))

    @event
    def on_room_join(self, msg: Message) -> None:
        SEEN.append((self._where(), "join", msg.room))

    @event
    def on_namespace_disconnect(self, msg: Message) -> None:
        SEEN.append((self._where(), "disconnect", self.conn.conn.id))

    @event
    def on_add(self, msg: Message) -> str:
        self.cart.items.append(msg.text)
        return f"{self._where()} {len(self.cart.items)}"


async def test_controllers_with_injection_on_the_new_server(broker: Broker) -> None:
    """The namespace is served by a controller with a connection-scoped dependency: B
    builds the moving connection's controller (and its dependency) there, its hooks see
    the connection's id, namespace and room; A's ran its disconnect hook; the client's
    next event reaches B's instance."""
    async with cluster_of(broker, controllers=[Shop]) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        table = client_table(log, "shop")
        client = await wsmvc.dial(cluster.url, table, reconnect=FAST, **log.events())
        async with client:
            shop = await client.connect("shop")
            await shop.join_room("r")
            assert (await shop.ask("OnAdd", "apple", timeout=T)).text == "server-a 1"
            first = client.id
            SEEN.clear()
            cluster.route("b")
            cluster.balancer.kill()
            await log.until("restored")
            assert client.recovered and client.id == first
            assert (await shop.ask("OnAdd", "pear", timeout=T)).text == "server-b 1"
            assert await a.until_gone(first) is CloseReason.MOVED
            assert sorted(SEEN) == sorted(
                [
                    ("server-b", "connect", first),
                    ("server-b", "join", "r"),
                    ("server-a", "disconnect", first),
                ]
            )
            assert [ns.id for ns in b.server.room_members("shop", "r")] == [first]
