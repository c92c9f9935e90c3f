"""When the broker goes away: local delivery goes on, remote delivery resumes on its return.

Each test has a broker of its own (Redis, then NATS) so it can kill it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
import yarl

import wsmvc
from wsmvc import ConnectionClosed, Message, Server
from wsmvc.exchange.broker import BrokerExchange
from wsmvc.testing import running

from ..conftest import Serve
from .conftest import (
    WAIT,
    Broker,
    Peer,
    Peers,
    StartCluster,
    eventually,
    fence,
    id_from_name,
    make_exchange,
    status,
    until_heard,
)


async def test_broker_killed_and_restarted_in_the_middle_of_a_stream(
    broker: Broker, start_cluster: StartCluster, peers: Peers
) -> None:
    cluster = start_cluster(broker, ["s1", "s2"])
    sender = await peers.connect(cluster["s1"], "sender")
    local = await peers.connect(cluster["s1"], "local")
    remote = await peers.connect(cluster["s2"], "remote")
    await peers.ready(sender)
    sent: list[int] = []

    def send(n: int) -> None:
        sender.emit("broadcast", str(n))
        sent.append(n)

    # Before: the broker is up, both servers' clients get everything.
    for n in range(1, 51):
        send(n)
    assert await remote.texts(50) == [str(n) for n in range(1, 51)]
    assert await local.texts(50) == [str(n) for n in range(1, 51)]

    # Down: the broker crashes. Both servers notice; s1's clients still get s1's broadcasts.
    broker.kill()

    async def both(connected: bool) -> bool:
        states = await asyncio.gather(status(sender), status(remote))
        return all(s["connected"] is connected for s in states)

    await eventually(lambda: both(False), "both servers notice the broker is gone")
    for n in range(51, 101):
        send(n)
    assert await local.texts(50) == [str(n) for n in range(51, 101)]
    assert (await status(sender))["dropped"] == 50  # counted, not queued for later

    # Back: probe until the remote client hears s1 again; that must take a few seconds only.
    broker.restart()
    loop = asyncio.get_running_loop()
    restarted = loop.time()
    first_back: int | None = None
    while first_back is None:
        assert loop.time() - restarted < 10, "remote delivery did not resume within 10s"
        send(sent[-1] + 1)
        try:
            first_back = int((await asyncio.wait_for(remote.inbox.get(), 0.1)).text)
        except asyncio.TimeoutError:
            continue
    resumed_after = loop.time() - restarted
    assert resumed_after < 5, f"remote delivery resumed {resumed_after:.1f}s after the restart"

    # Once both are connected and flushed, nothing more is lost.
    await eventually(lambda: both(True), "both servers reconnected")
    await peers.ready(sender)
    tail = [sent[-1] + i for i in range(1, 51)]
    for n in tail:
        send(n)
    got = await fence(sender, [local, remote], timeout=10)

    # s1's own client got every broadcast exactly once, in order, whatever the broker did.
    assert [int(t) for t in got["local@s1"]] == sent[100:]
    # The remote client: 1..50 before, nothing sent while down, then a gap-free tail;
    # nothing twice, nothing out of order.
    after = [first_back, *(int(t) for t in got["remote@s2"])]
    assert after == sorted(set(after)), f"duplicated or reordered: {after}"
    assert after[0] > 100, "a broadcast sent while the broker was down arrived later"
    assert after[-len(tail) :] == tail, (
        f"before: 50, after the restart: {len(after)} of {len(sent) - 100} "
        f"(first {after[0]}, resumed after {resumed_after:.2f}s)"
    )


async def test_a_server_starts_without_its_broker_serves_locally_and_joins_when_it_appears(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    broker.stop()
    lonely = make_exchange(broker)
    server = Server({"default": {}}, exchange=lonely, id_generator=id_from_name)
    url = await serve(server)
    alice = await peers.connect(url, "alice", at="lonely")
    bob = await peers.connect(url, "bob", at="lonely")
    assert not lonely.connected

    await server.broadcast(Message(namespace="default", event="chat", body=b"local only"))

    assert (await alice.next()).text == "local only"
    assert (await bob.next()).text == "local only"

    broker.restart()
    await lonely.wait_connected(10)
    other = make_exchange(broker)
    other_url = await serve(Server({"default": {}}, exchange=other, id_generator=id_from_name))
    carol = await peers.connect(other_url, "carol", at="other")
    await other.flush(WAIT)
    await lonely.flush(WAIT)

    async def probe(token: str) -> None:
        await server.broadcast(Message(namespace="default", event="probe", body=token.encode()))

    await until_heard(probe, [carol])

    await server.broadcast(Message(namespace="default", event="chat", body=b"now shared"))

    assert [(await p.next()).text for p in (alice, bob, carol)] == ["now shared"] * 3


async def test_broadcasts_published_during_shutdown_are_sent_before_the_exchange_stops(
    broker: Broker,
) -> None:
    """A server's last broadcasts (its connections' leave events) reach the other servers."""
    first, second = make_exchange(broker), make_exchange(broker)
    sender = Server({"default": {}}, exchange=first)
    receiver = Server({"default": {}}, exchange=second)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    handlers = {"default": {"bye": lambda ns, m: got.put_nowait(m.body)}}

    async def send(body: bytes) -> None:
        await sender.broadcast(Message(namespace="default", event="bye", body=body))

    async with running(receiver) as url, await wsmvc.dial(url, handlers) as client:
        await client.connect("default")
        await second.flush(WAIT)
        await first.start()
        await first.wait_connected(WAIT)
        # NATS may miss what is published right after a subscription (see until_heard):
        # probe until one arrives, within a deadline.
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            assert asyncio.get_running_loop().time() < deadline, "no probe arrived"
            await send(b"probe")
            try:
                await asyncio.wait_for(got.get(), 0.1)
                break
            except asyncio.TimeoutError:
                continue
        for i in range(200):
            await send(b"%d" % i)
        await first.stop()  # right away, with the publications still queued
        bodies: list[bytes] = []
        while len(bodies) < 200:
            body = await asyncio.wait_for(got.get(), WAIT)
            if body != b"probe":  # a late probe
                bodies.append(body)
        assert bodies == [b"%d" % i for i in range(200)]


Probe = Callable[[str], Awaitable[None]]


async def sender_and_remote(
    broker: Broker, serve: Serve, peers: Peers
) -> tuple[BrokerExchange, Server, Peer, Probe]:
    """Server A, whose exchange gives up within 1 s and queues at most 100 broadcasts, and
    a client of server B that hears A's broadcasts; A's exchange, A, the client, and the
    probe (a broadcast from A) that ``until_heard`` sends."""
    table: dict[str, dict[str, object]] = {"default": {}}
    exchange = make_exchange(broker, timeout=1.0, reconnect_delay=(0.05, 0.2), max_pending=100)
    a = Server(table, exchange=exchange)  # type: ignore[arg-type]
    b = Server(table, exchange=make_exchange(broker), id_generator=id_from_name)  # type: ignore[arg-type]
    await serve(a, path="/a")
    remote = await peers.connect(await serve(b, path="/b"), "remote", at="B")

    async def probe(token: str) -> None:
        await a.broadcast(Message(namespace="default", event="probe", body=token.encode()))

    await until_heard(probe, [remote])
    return exchange, a, remote, probe


async def test_a_broker_that_hangs_is_given_up_and_found_again(
    broker: Broker, serve: Serve, peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker stops answering (SIGSTOP) without closing anything: a flush times out, the
    exchange says it is not connected and why, drops (counts) rather than queues, and
    once the broker answers again broadcasts flow with no help (issue 10 §3)."""
    exchange, a, remote, probe = await sender_and_remote(broker, serve, peers)
    caplog.set_level(logging.WARNING, logger="wsmvc.exchange")
    broker.pause()
    try:
        with pytest.raises(ConnectionClosed, match="did not answer"):
            await exchange.flush(WAIT)
        assert not exchange.connected
        for n in range(300):  # dropped and counted, not queued
            await a.broadcast(Message(namespace="default", event="chat", body=b"%d" % n))
        assert exchange.dropped >= 300
    finally:
        broker.resume()
    await exchange.wait_connected(WAIT * 2)
    assert any(
        "lost its broker" in r.getMessage() and "did not answer" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    await until_heard(probe, [remote])
    await a.broadcast(Message(namespace="default", event="chat", body=b"after"))
    assert [m.text for m in await remote.until("after")] == []


async def test_publications_wait_for_a_hung_broker_within_a_bound(
    redis_broker: Broker, serve: Serve, peers: Peers
) -> None:
    """Redis answers every PUBLISH: while it hangs, the one in flight waits (at most
    ``timeout``) and what the server broadcasts meanwhile queues up to ``max_pending``
    (the batch in flight included);
    past it, broadcasts are dropped and counted. NATS has no such wait (its client buffers
    within its own bound, and the round-trip check finds the hang)."""
    exchange, a, remote, probe = await sender_and_remote(redis_broker, serve, peers)
    redis_broker.pause()
    try:
        for n in range(300):
            await a.broadcast(Message(namespace="default", event="chat", body=b"%d" % n))
        assert exchange.connected  # nothing has timed out yet
        assert exchange.dropped == 200  # 100 queued or in flight, together
    finally:
        redis_broker.resume()
    await until_heard(probe, [remote])


async def test_what_nats_cannot_carry_is_refused_alone_and_said(
    nats_broker: Broker, serve: Serve, peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    """NATS closes a connection that publishes more than its max_payload (1 MiB). A
    broadcast, a question or an answer that large is not sent to the other servers (an
    error in the log; the ask fails at once; the remote answer becomes an error answer),
    and the exchange stays connected: what comes next flows as before."""
    table: dict[str, dict[str, object]] = {"default": {}}
    roomy = 2 << 20  # the servers take messages larger than NATS does
    exchange = make_exchange(nats_broker)
    a = Server(table, exchange=exchange, max_message_size=roomy)  # type: ignore[arg-type]
    b = Server(
        table,  # type: ignore[arg-type]
        exchange=make_exchange(nats_broker),
        id_generator=id_from_name,
        max_message_size=roomy,
    )
    await serve(a, path="/a")
    url_b = await serve(b, path="/b")
    remote = await peers.connect(url_b, "remote", exact_id=True, at="B")
    huge = "x" * 1_100_000
    talker = await wsmvc.dial(
        str(yarl.URL(url_b).update_query({"X-Websocket-Header-X-Name": "talker"})),
        {"default": {"long_story": lambda ns, msg: huge}},
        timeout=WAIT,
    )
    try:
        await talker.connect("default", timeout=WAIT)
        await until_heard(probe_from(a), [remote])
        caplog.set_level(logging.ERROR, logger="wsmvc.exchange")

        await a.broadcast(Message(namespace="default", event="chat", body=huge.encode()))
        await a.broadcast(Message(namespace="default", event="chat", body=b"after"))
        assert [m.text for m in await remote.until("after")] == []
        with pytest.raises(ConnectionClosed, match="did not go out to the other servers"):
            question = Message(namespace="default", event="question", body=huge.encode())
            await a.ask(question, to="remote", timeout=WAIT)
        with pytest.raises(wsmvc.EventError, match="did not go out to the asking server"):
            await a.ask(Message(namespace="default", event="long_story"), to="talker", timeout=WAIT)

        assert exchange.connected and exchange.dropped == 0
        question = Message(namespace="default", event="question", body=b"still there?")
        assert (await a.ask(question, to="remote", timeout=WAIT)).text == (
            f"{remote.label} heard still there?"
        )
        refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(refusals) == 3, refusals
        assert all("the broker takes 1048576 at most" in r for r in refusals), refusals
    finally:
        await talker.close()


def probe_from(server: Server) -> Callable[[str], Awaitable[None]]:
    async def probe(token: str) -> None:
        await server.broadcast(Message(namespace="default", event="probe", body=token.encode()))

    return probe
