"""Recovery across servers, adversarially (docs/recovery.md, "Across servers"; wsmvc/handover.py):
closes and cancellations at each await of a move, the broker paused in the middle of it, two
returns with one key, forged requests on the broker, a second move, bounds. Real Redis and
NATS, servers in this process behind the TCP :class:`Balancer` of test_recovery_across."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import wsmvc
from wsmvc import CloseReason, Message, NSConn, Recovery, Server
from wsmvc.handover import Handover

from ..test_reconnect import FAST, Log, T, client_table
from .conftest import Broker, eventually, make_exchange
from .test_recovery_across import ROOMY, Balancer, confirmed, serving


class Router(Balancer):
    """A :class:`Balancer` that refuses new connections while its target is 0."""

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.target:
            writer.transport.abort()
            return
        await super()._pipe(reader, writer)


class Gate:
    """A hook that, once :attr:`armed`, says it was reached and waits to be opened."""

    def __init__(self) -> None:
        self.armed = False
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self) -> None:
        if self.armed:
            self.armed = False
            self.reached.set()
            await self.opened.wait()

    async def wait_reached(self) -> None:
        await asyncio.wait_for(self.reached.wait(), T)


class Node:
    """One server of the cluster with what the test watches on it."""

    def __init__(self, name: str, broker: Broker, timeout: float, **options: Any) -> None:
        self.name = name
        self.gone: list[tuple[str, CloseReason | None]] = []  # on_disconnect
        self.changed = asyncio.Event()
        self.connect_gate = Gate()  # in its _OnNamespaceConnect
        self.port = 0
        events: dict[str, Any] = {
            "_OnNamespaceConnect": self._on_connect,
            "echo": lambda ns, msg: msg.body,
        }
        events.update(options.pop("events", {}))
        self.server = Server(
            {"chat": events},
            recovery=options.pop("recovery", ROOMY),
            heartbeat=None,
            on_disconnect=self._on_disconnect,
            exchange=make_exchange(broker, server_id=f"server-{name}", timeout=timeout),
            **options,
        )

    async def _on_connect(self, ns: NSConn, msg: Message) -> None:
        await self.connect_gate()

    def _on_disconnect(self, conn: wsmvc.Conn) -> None:
        self.gone.append((conn.id, conn.close_reason))
        self.changed.set()

    async def until_gone(self, conn_id: str, timeout: float = T) -> CloseReason | None:
        """The close reason of ``conn_id``'s disconnect events here, once they ran."""

        async def wait() -> CloseReason | None:
            while True:
                for gone_id, reason in self.gone:
                    if gone_id == conn_id:
                        return reason
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{conn_id} not gone from {self.name} in {timeout}s") from None

    @property
    def handover(self) -> Handover:
        handover = self.server._handover
        assert handover is not None
        return handover

    def ids(self) -> list[str]:
        return [c.id for c in self.server.connections]


class Cluster:
    """Servers by name behind one balancer."""

    def __init__(self, nodes: dict[str, Node], balancer: Balancer) -> None:
        self.nodes = nodes
        self.balancer = balancer
        self.url = f"ws://127.0.0.1:{balancer.port}/ws"

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def route(self, name: str) -> None:
        """New TCP connections go to ``name`` from now on (``nowhere``: refused)."""
        self.balancer.target = self.nodes[name].port if name in self.nodes else 0

    async def dial(self, log: Log, **extra: Any) -> wsmvc.ReconnectingClient:
        client = await wsmvc.dial(
            self.url, client_table(log, "chat", **extra), reconnect=FAST, **log.events()
        )
        assert isinstance(client, wsmvc.ReconnectingClient)
        return client


@contextlib.asynccontextmanager
async def cluster_of(
    broker: Broker, names: str = "ab", *, timeout: float = 5.0, **options: Any
) -> AsyncIterator[Cluster]:
    nodes = {name: Node(name, broker, timeout, **dict(options)) for name in names}
    balancer = Router()
    await balancer.start()
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes.values():
            node.port = await stack.enter_async_context(serving(node.server))
        for node in nodes.values():
            await confirmed(node.server)
        cluster = Cluster(nodes, balancer)
        cluster.route(names[0])
        try:
            yield cluster
        finally:
            await balancer.close()


Wrapped = Callable[..., Awaitable[Any]]


def wrap(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    node: Node,
    around: Callable[[Wrapped, tuple[Any, ...]], Awaitable[Any]],
) -> None:
    """``Handover.<name>`` of ``node`` goes through ``around(original, args)``."""
    original = getattr(Handover, name)

    async def patched(self: Handover, *args: Any) -> Any:
        bound = functools.partial(original, self)
        if self is node.handover:
            return await around(bound, args)
        return await bound(*args)

    monkeypatch.setattr(Handover, name, patched)


async def joined_client(
    cluster: Cluster, log: Log
) -> tuple[wsmvc.ReconnectingClient, wsmvc.ReconnectingNamespace]:
    client = await cluster.dial(log)
    chat = await client.connect("chat")
    await chat.join_room("r")
    for node in cluster.nodes.values():
        await confirmed(node.server)
    log.entries.clear()
    return client, chat


# -- closes and cancellations during the move ----------------------------------------------


async def test_a_request_cancelled_while_the_new_server_asks_leaves_the_key_serving(
    broker: Broker,
) -> None:
    """The aiohttp request handler of the return is cancelled while B's question is on its
    way (aiohttp's shutdown, ``handler_cancellation``): the key serves again on A, and the
    client's next try, to A, gets its connection back."""
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)

        async def cancelled(describe: Wrapped, args: tuple[Any, ...]) -> Any:
            cluster.route("a")
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().call_soon(task.cancel)
            return await describe(*args)

        with pytest.MonkeyPatch.context() as patch:
            wrap(patch, "describe", b, cancelled)
            async with client:
                first = client.id
                cluster.route("b")
                cluster.balancer.kill()
                await log.until("restored")
                assert client.recovered and client.id == first
                assert a.ids() == [first] and b.ids() == []


async def test_the_client_vanishing_in_the_new_servers_hooks_and_back_there_later(
    broker: Broker,
) -> None:
    """As above, but the client's next try comes after B's hooks returned, to B again: B
    did not take a connection whose client is gone; the key serves, the client is back."""
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)
        async with client:
            first = client.id
            cluster.route("b")
            b.connect_gate.armed = True
            cluster.balancer.kill()
            await b.connect_gate.wait_reached()
            cluster.route("nowhere")
            cluster.balancer.kill()
            b.connect_gate.opened.set()
            await b.until_gone(first)
            cluster.route("b")
            await log.until("restored")
            assert client.recovered and client.id == first
            assert b.ids() == [first] and a.ids() == []


async def test_the_client_vanishing_in_the_new_servers_hooks_gets_its_connection_back(
    broker: Broker,
) -> None:
    """The client's TCP connection to B is reset while B's hooks restore its connection,
    and its next try goes to A: A takes it back (B's move stops there, its events run on
    B); the client has its connection, A has it once."""
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, chat = await joined_client(cluster, log)
        async with client:
            first = client.id
            cluster.route("b")
            b.connect_gate.armed = True
            cluster.balancer.kill()
            await b.connect_gate.wait_reached()
            cluster.route("a")
            cluster.balancer.kill()
            await log.until("restored")
            b.connect_gate.opened.set()
            assert client.recovered and client.id == first
            await b.until_gone(first)
            assert a.ids() == [first] and b.ids() == []
            assert [ns.id for ns in a.server.room_members("chat", "r")] == [first]
            assert (await chat.ask("echo", "x", timeout=T)).body == b"x"


async def test_a_second_try_while_the_first_move_waits_takes_it_over(broker: Broker) -> None:
    """The client's try to B waits in B's hooks; its TCP connection is reset and its next
    try goes to B again (a client's handshake timeout, a flaky path): that second move gets
    the connection (the first one's take gets nothing, its close runs its events on B
    alone); the client has its connection once, in its room, everywhere."""
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, chat = await joined_client(cluster, log)
        async with client:
            first = client.id
            cluster.route("b")
            b.connect_gate.armed = True
            cluster.balancer.kill()
            await b.connect_gate.wait_reached()
            cluster.balancer.kill()
            await log.until("restored")
            assert client.recovered and client.id == first
            b.connect_gate.opened.set()
            await b.until_gone(first)
            assert b.ids() == [first] and a.ids() == []
            assert [ns.id for ns in b.server.room_members("chat", "r")] == [first]
            assert [m.conn_id for m in b.server.presence.members("chat", "r")] == [first]
            assert (await chat.ask("echo", "x", timeout=T)).body == b"x"
            assert await a.until_gone(first) is CloseReason.MOVED


async def test_the_new_server_shutting_down_in_its_hooks_leaves_the_key_serving(
    broker: Broker,
) -> None:
    """B's ``server.close()`` while its hooks restore the moving connection: B does not
    take it, and tells A so; the client's next try, to A, gets its connection back."""
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)
        async with client:
            first = client.id
            cluster.route("b")
            b.connect_gate.armed = True
            cluster.balancer.kill()
            await b.connect_gate.wait_reached()
            cluster.route("a")
            closing = asyncio.ensure_future(b.server.close())
            await asyncio.sleep(0)
            b.connect_gate.opened.set()
            await asyncio.wait_for(closing, T)
            await log.until("restored")
            assert client.recovered and client.id == first
            assert a.ids() == [first]
            assert [ns.id for ns in a.server.room_members("chat", "r")] == [first]
            assert (first, CloseReason.MOVED) not in a.gone


# -- the broker paused in the middle of a move ------------------------------------------------


async def test_the_broker_paused_while_the_new_server_asks_ends_the_kept_connection(
    broker: Broker,
) -> None:
    """The broker stops answering (SIGSTOP) as B asks A to describe the connection: B
    gives up after its timeout and serves a new connection; once the broker is back, A
    (which got the question late) ends its kept connection (its events, once) rather than
    keeping it for a client that has a new one."""
    async with cluster_of(broker, timeout=1.0) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)

        async def paused(describe: Wrapped, args: tuple[Any, ...]) -> Any:
            broker.pause()
            try:
                return await describe(*args)
            finally:
                broker.resume()

        with pytest.MonkeyPatch.context() as patch:
            wrap(patch, "describe", b, paused)
            async with client:
                first = client.id
                cluster.route("b")
                cluster.balancer.kill()
                await log.until("restored")
                assert not client.recovered and client.id != first
                assert await a.until_gone(first) is CloseReason.CONNECTION_LOST
                assert a.ids() == [] and a.server.room_members("chat", "r") == []
                assert b.ids() == [client.id]


async def test_the_broker_paused_while_the_new_server_takes_gives_a_new_connection(
    broker: Broker,
) -> None:
    """The broker stops answering as B asks A for the frames: B gives up after its timeout
    (1011); the client's next try gets a new connection; A, which got the take late, ended
    its kept connection (its events once); nothing is left of the old id anywhere."""
    async with cluster_of(broker, timeout=1.0) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)

        async def paused(take: Wrapped, args: tuple[Any, ...]) -> Any:
            broker.pause()
            try:
                return await take(*args)
            finally:
                broker.resume()

        with pytest.MonkeyPatch.context() as patch:
            wrap(patch, "take", b, paused)
            async with client:
                first = client.id
                cluster.route("b")
                cluster.balancer.kill()
                await log.until("restored")
                assert not client.recovered and client.id != first
                await a.until_gone(first)
                await b.until_gone(first)
                assert [g for g in a.gone if g[0] == first] == [(first, CloseReason.MOVED)]
                assert a.ids() == [] and b.ids() == [client.id]
                assert [ns.id for ns in b.server.room_members("chat", "r")] == [client.id]


async def test_on_connect_refusing_on_the_new_server_ends_the_kept_connection(
    broker: Broker,
) -> None:
    """B's ``on_connect`` refuses the returning client (``Reject``): the client is refused
    for good, and A does not keep the connection for it (its events run, once)."""
    refusing = {"on": False}

    def on_connect(conn: wsmvc.Conn) -> None:
        if refusing["on"]:
            raise wsmvc.Reject("not here")

    async with cluster_of(broker, on_connect=on_connect) as cluster:
        a = cluster["a"]
        log = Log()
        client, _chat = await joined_client(cluster, log)
        async with client:
            first = client.id
            refusing["on"] = True
            cluster.route("b")
            cluster.balancer.kill()
            await log.until(("lost", CloseReason.CONNECTION_LOST))
            assert await a.until_gone(first) is CloseReason.CONNECTION_LOST
            assert a.ids() == [] and a.server.room_members("chat", "r") == []


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
