"""Recovery across servers, adversarially (docs/recovery.md, "Across servers";
wsmvc/handover.py): a move stopped at each of its awaits (the client gone, a server closing,
a request or task cancelled, the broker paused), and two returns with one key. Real Redis
and NATS; the harness is across_support.py."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

import wsmvc
from wsmvc import CloseReason, Server
from wsmvc.client_recovery import ClientRecovery

from ..test_client_recovery import when_changed
from ..test_reconnect import Log, T
from .across_support import Wrapped, cluster_of, joined_client, raw_return, wrap
from .conftest import Broker

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


async def until_members(server: Server, ids: list[str]) -> None:
    """Wait (within T) until ``server``'s presence has ``ids`` in room ``r`` of ``chat``,
    one member each (one server each)."""
    changed = asyncio.Event()
    unsubscribe = server.presence.on_change(lambda change: changed.set())
    members = server.presence.members
    try:
        await when_changed(changed, lambda: [m.conn_id for m in members("chat", "r")] == ids)
    finally:
        unsubscribe()


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
            assert (await chat.ask("echo", "x", timeout=T)).body == b"x"
            assert await a.until_gone(first) is CloseReason.MOVED
            # A's leave reaches B's presence after A's events ran (asynchronously).
            await until_members(b.server, [first])


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


async def test_the_old_server_shutting_down_before_the_take_gives_a_new_connection(
    broker: Broker,
) -> None:
    """A's ``server.close()`` while B restores the connection it described: A's kept
    connection ends there (its events, once); B's take gets nothing, and the client gets a
    new connection from B on its next try; nothing waits past the exchange's timeout."""
    async with cluster_of(broker, timeout=1.0) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)
        async with client:
            first = client.id
            cluster.route("b")
            b.connect_gate.armed = True
            cluster.balancer.kill()
            await b.connect_gate.wait_reached()
            await asyncio.wait_for(a.server.close(), T)
            assert await a.until_gone(first) is CloseReason.SHUTDOWN
            b.connect_gate.opened.set()
            await log.until("restored")
            assert not client.recovered and client.id != first
            assert b.ids() == [client.id]
            assert [g[0] for g in a.gone] == [first]


async def test_the_client_vanishing_while_the_new_server_takes(broker: Broker) -> None:
    """The client's TCP connection to B is reset while B's take is on its way: A hands the
    connection over (MOVED), B sees its client gone and closes it (its events run there);
    the client's next try gets a new connection; the old id is nowhere."""
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)

        async def vanishing(take: Wrapped, args: tuple[Any, ...]) -> Any:
            cluster.route("nowhere")
            cluster.balancer.kill()
            result = await take(*args)
            await asyncio.sleep(0.05)
            cluster.route("b")
            return result

        with pytest.MonkeyPatch.context() as patch:
            wrap(patch, "take", b, vanishing)
            async with client:
                first = client.id
                cluster.route("b")
                cluster.balancer.kill()
                await log.until("restored")
                assert client.id != first and not client.recovered
                assert await a.until_gone(first) is CloseReason.MOVED
                await b.until_gone(first)
                assert b.ids() == [client.id] and a.ids() == []
                assert [ns.id for ns in b.server.room_members("chat", "r")] == [client.id]


async def test_the_new_servers_serving_task_cancelled_during_the_take(broker: Broker) -> None:
    """B's serving task is cancelled while its take is on its way: the connection closes on
    B (its events once), A handed it over; the client's next try gets a new connection."""
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)

        async def cancelled(take: Wrapped, args: tuple[Any, ...]) -> Any:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().call_soon(task.cancel)
            return await take(*args)

        with pytest.MonkeyPatch.context() as patch:
            wrap(patch, "take", b, cancelled)
            async with client:
                first = client.id
                cluster.route("b")
                cluster.balancer.kill()
                await log.until("restored")
                assert client.id != first
                await a.until_gone(first)
                assert await b.until_gone(first) is CloseReason.CANCELLED
                assert b.ids() == [client.id] and a.ids() == []


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


# -- the broker paused in the middle of a move ------------------------------------------------


@pytest.mark.parametrize("step", ["describe", "take"])
async def test_the_broker_paused_while_the_new_server_asks_gives_a_new_connection(
    broker: Broker, step: str
) -> None:
    """The broker stops answering (SIGSTOP) as B asks A to describe the connection, or for
    its frames: B gives up after its timeout and the client's next try gets a new
    connection; A, which got the question late, ended its kept connection (its events,
    once: lost before a describe, MOVED after a take) rather than keeping it for a client
    that has a new one; nothing is left of the old id anywhere."""
    async with cluster_of(broker, timeout=1.0) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)

        async def paused(asking: Wrapped, args: tuple[Any, ...]) -> Any:
            broker.pause()
            try:
                return await asking(*args)
            finally:
                broker.resume()

        with pytest.MonkeyPatch.context() as patch:
            wrap(patch, step, b, paused)
            async with client:
                first = client.id
                cluster.route("b")
                cluster.balancer.kill()
                await log.until("restored")
                assert not client.recovered and client.id != first
                await a.until_gone(first)
                ended = CloseReason.CONNECTION_LOST if step == "describe" else CloseReason.MOVED
                assert [g for g in a.gone if g[0] == first] == [(first, ended)]
                if step == "take":
                    await b.until_gone(first)
                assert a.ids() == [] and a.server.room_members("chat", "r") == []
                assert b.ids() == [client.id]
                assert [ns.id for ns in b.server.room_members("chat", "r")] == [client.id]


# -- two returns with one key --------------------------------------------------------------


@pytest.mark.parametrize("where", ["a and b", "b twice"])
async def test_two_returns_with_one_key_at_once(broker: Broker, where: str) -> None:
    """Two websockets come back with the same key at the same moment (one to A and one to
    B, or both to B): exactly one gets the connection back; the other a new connection or
    a close; the old id is then on one server only, once, in its room."""
    async with cluster_of(broker) as cluster:
        a, b = cluster["a"], cluster["b"]
        log = Log()
        client, _chat = await joined_client(cluster, log)
        conn = client.conn
        assert conn is not None and isinstance(conn.recovery, ClientRecovery)
        key, received, first = conn.recovery.key, conn.received, client.id
        cluster.route("nowhere")
        cluster.balancer.kill()
        await log.until(("lost", CloseReason.CONNECTION_LOST))
        await client.close()
        ports = [a.port, b.port] if where == "a and b" else [b.port, b.port]
        async with aiohttp.ClientSession() as session:
            returns = (raw_return(session, port, key, received) for port in ports)
            outcomes = await asyncio.gather(*returns)
            recovered = [o for o in outcomes if o[0] == "recovered"]
            assert len(recovered) == 1 and recovered[0][1] == first, outcomes
            on_a, on_b = a.ids().count(first), b.ids().count(first)
            assert on_a + on_b == 1, (outcomes, a.ids(), b.ids())
            holder = a if on_a else b
            assert [ns.id for ns in holder.server.room_members("chat", "r")] == [first]
