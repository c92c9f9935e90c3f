"""Trying to break the cluster features: presence, the broker's side channel, what other
(malicious, buggy or older) publishers put on the broker, the emitter.

Real ``redis-server`` / ``nats-server`` processes and real websocket clients; a raw broker
client plays the foreign publisher.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from wsmvc import ConnectionClosed, Message, Server
from wsmvc.emitter import Emitter
from wsmvc.exchange.broker import BrokerExchange
from wsmvc.presence import Change, Member

from ..conftest import Serve
from .conftest import (
    CLUSTER_APP,
    START_TIMEOUT,
    WAIT,
    Broker,
    ClusterServer,
    Peers,
    RedisBroker,
    eventually,
    id_from_name,
    log_problems,
    make_exchange,
    spawn,
    until_heard,
)

TABLE: dict[str, dict[str, object]] = {"default": {}}


def chat(body: str, room: str = "") -> Message:
    return Message(namespace="default", room=room, event="chat", body=body.encode())


def server_on(broker: Broker, **options: Any) -> Server:
    exchange = make_exchange(broker, **options)
    return Server(TABLE, exchange=exchange, id_generator=id_from_name)  # type: ignore[arg-type]


def exchange_of(server: Server) -> BrokerExchange:
    exchange = server.exchange
    assert isinstance(exchange, BrokerExchange)
    return exchange


class RawClient:
    """A plain Redis or NATS client on the broker: another publisher, not a wsmvc server."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._client: Any = None
        self._pubsub: Any = None
        self._task: Any = None

    async def __aenter__(self) -> RawClient:
        if isinstance(self.broker, RedisBroker):
            from redis.asyncio import Redis

            self._client = Redis.from_url(self.broker.url)
        else:
            import nats

            self._client = await nats.connect(self.broker.url, allow_reconnect=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if isinstance(self.broker, RedisBroker):
            if self._pubsub is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
                await self._pubsub.aclose()
            await self._client.aclose()
        else:
            await self._client.close()

    async def subscribe(self, channel: str, received: Callable[[bytes], None]) -> None:
        if isinstance(self.broker, RedisBroker):
            pubsub = self._client.pubsub()

            async def on_message(message: dict[str, Any]) -> None:
                received(message["data"])

            await pubsub.subscribe(**{channel: on_message})
            self._task = asyncio.ensure_future(pubsub.run())
            self._pubsub = pubsub
        else:

            async def on_msg(msg: Any) -> None:
                received(msg.data)

            await self._client.subscribe(channel, cb=on_msg)
            await self._client.flush()

    async def publish(self, channel: str, payload: bytes) -> None:
        if isinstance(self.broker, RedisBroker):
            await self._client.publish(channel, payload)
        else:
            await self._client.publish(channel, payload)
            await self._client.flush()


@pytest.fixture
def lost_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="wsmvc")
    caplog.set_level(logging.INFO, logger="nats")
    return caplog


def losses(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the log says about a broker connection lost (or a reader that died)."""
    return [
        r.getMessage()
        for r in caplog.records
        if any(s in r.getMessage() for s in ("its broker", "encountered error"))
    ]


# -- what foreign publishers put on the broker -----------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000  # valid JSON nesting no parser gets through


def bad_presence_messages(victim: str) -> list[bytes]:
    return [
        b"not json",
        DEEP,
        json.dumps({"s": "evil", "t": "b", "q": "7"}).encode(),  # a seq that is no number
        json.dumps({"s": ["evil"], "t": "b", "q": 1}).encode(),  # a server that is no str
        json.dumps({"s": {"x": 1}, "t": "a", "q": 1, "j": [], "l": []}).encode(),
        json.dumps({"s": "evil", "t": "a", "q": 1.5, "j": [], "l": []}).encode(),
        json.dumps({"s": "evil", "t": "a", "q": 1, "j": [["default", "r", ["x"]]]}).encode(),
        json.dumps({"s": "evil", "t": "s", "q": 1, "m": [], "p": "a", "n": 1}).encode(),
        json.dumps({"s": "evil", "t": "r", "o": ["x"]}).encode(),
        json.dumps({"s": "evil", "t": "g"}).encode(),
        json.dumps({"s": 5, "t": "g"}).encode(),
        json.dumps({"s": "evil", "t": "r", "o": victim}).encode(),
        json.dumps([1, 2]).encode(),
        b"\xff\xfe",
    ]


def bad_envelopes(namespace: str = "default") -> list[bytes]:
    def marker(data: bytes) -> str:
        return "neffos(0xevil())wsmvc:m:" + base64.urlsafe_b64encode(data).decode()

    tokens = [
        marker(DEEP),
        marker(b"not json"),
        marker(b'{"r": 1, "x": [], "xr": []}'),
        marker(b"[1]"),
        "neffos(0xevil())wsmvc:m:!!!",
        "neffos(0xevil())wsmvc:x:@@@",
        "neffos(0xevil())wsmvc:x:" + base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ]
    return [f"{t};{namespace};;chat;0;0;bad".encode() for t in tokens]


async def test_what_foreign_publishers_put_on_the_broker_costs_no_connection(
    broker: Broker, serve: Serve, peers: Peers, lost_log: pytest.LogCaptureFixture
) -> None:
    """Malformed presence messages (deep JSON, wrong types), malformed markers and an ask
    with a 5 KB answer channel from a buggy, malicious or older server: each is dropped
    (logged), the receiving server keeps its broker connection, and the broadcasts after
    them arrive, in order, at once."""
    a, b = server_on(broker), server_on(broker)
    await serve(a, path="/a")
    url_b = await serve(b, path="/b")
    peer = await peers.connect(url_b, "p", at="B")
    await until_heard(_probe(a), [peer])

    async with RawClient(broker) as raw:
        for payload in bad_presence_messages(exchange_of(b).id):
            await raw.publish(exchange_of(b).side_channel("presence"), payload)
        for payload in bad_envelopes():
            await raw.publish(exchange_of(b).namespace_channel("default"), payload)
        # An ask whose answer channel NATS cannot take (a control line is 4 KiB at most:
        # nats-server would close the connection that publishes the answer).
        ask = f"R{'x' * 5000};default;;question;0;0;hi".encode()
        await raw.publish(exchange_of(b).id_channel(peer.id), ask)
        for n in range(20):
            await a.broadcast(chat(f"after-{n}"))
        got = [m.text for m in await peer.until("after-19", timeout=WAIT)]
    assert [t for t in got if t.startswith("after-")] == [f"after-{n}" for n in range(19)]
    assert losses(lost_log) == []
    assert exchange_of(b).connected and exchange_of(b).dropped == 0


def _probe(server: Server, to: str | None = None) -> Any:
    async def probe(token: str) -> None:
        msg = Message(namespace="default", event="probe", body=token.encode())
        await server.broadcast(msg, to=to)

    return probe


# -- presence ----------------------------------------------------------------------------------


class FixedIdServer(ClusterServer):
    """A ``cluster_app.py`` process whose exchange has a fixed ``server_id`` (a host name,
    a pod name): restarted, it comes back under the same id."""

    def __init__(self, name: str, broker: Broker, log_dir: Path, server_id: str) -> None:
        super().__init__(name, broker, log_dir)
        self.server_id = server_id

    def launch(self) -> None:
        argv = [sys.executable, "-u", str(CLUSTER_APP), "--port", "0", "--broker"]
        argv += [self.broker.url, "--name", self.name, "--server-id", self.server_id]
        self._proc = spawn(argv, self.log_path, stdout=subprocess.PIPE)

    def start(self) -> None:
        self.launch()
        self.wait_ready(time.monotonic() + START_TIMEOUT)


@pytest.fixture
def fixed_id_servers(tmp_path: Path) -> Iterator[Callable[[Broker, str], FixedIdServer]]:
    started: list[FixedIdServer] = []

    def make(broker: Broker, server_id: str) -> FixedIdServer:
        server = FixedIdServer(server_id, broker, tmp_path, server_id)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
    problems = [p for s in started for p in log_problems(s.log())]
    assert not problems, "\n".join(problems)


async def test_a_server_restarted_under_its_fixed_server_id_brings_no_ghosts(
    broker: Broker,
    serve: Serve,
    peers: Peers,
    fixed_id_servers: Callable[[Broker, str], FixedIdServer],
) -> None:
    """A server with ``server_id="node-a"`` is killed and started again (same id, a new
    process): its old members leave every replica and its new ones appear, within the
    bound of a killed server (``ttl`` + ``beat``), however many changes the old process
    had announced."""
    watcher = server_on(broker)
    await serve(watcher, path="/watcher")
    node = fixed_id_servers(broker, "node-a")
    node.start()
    for name in ("ann", "ben", "cat"):
        await peers.connect(node, name, rooms=["lobby"])

    def lobby() -> list[str]:
        return [m.conn_id for m in watcher.presence.members("default", "lobby")]

    await eventually(lambda: _true(len(lobby()) == 3), "the three members seen")
    node.kill()
    node.start()
    frank = await peers.connect(node, "frank", rooms=["lobby"])
    bound = watcher.presence.ttl + watcher.presence.beat + 1
    try:
        await eventually(lambda: _true(lobby() == [frank.id]), f"only {frank.id}", bound)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the lobby seen from another server: {lobby()}") from None
    assert watcher.presence.members("default", "lobby") == [Member(frank.id, "node-a")]


async def _true(value: bool) -> bool:
    return value


async def test_a_stuck_async_on_change_callback_does_not_hold_up_shutdown(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    """An async ``on_change`` callback that never returns (stuck on a slow API, say): the
    server still shuts down (the callback is cancelled after the exchange's ``timeout``),
    and its members leave the other servers' replicas at once."""
    stays, goes = server_on(broker), server_on(broker)
    await serve(stays, path="/stays")
    stuck, release = asyncio.Event(), asyncio.Event()

    async def slow(change: Change) -> None:
        stuck.set()
        await release.wait()

    goes.presence.on_change(slow)
    app = web.Application()
    goes.mount(app, "/goes")
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/goes"
    await peers.connect(url, "carol", rooms=["lobby"], at="goes")
    await eventually(lambda: _true(stays.presence.count("default", "lobby") == 1), "carol seen")
    await asyncio.wait_for(stuck.wait(), WAIT)
    loop = asyncio.get_running_loop()
    started = loop.time()
    cleanup = asyncio.ensure_future(runner.cleanup())
    try:
        await eventually(
            lambda: _true(stays.presence.count("default", "lobby") == 0),
            "carol gone from the other server",
            timeout=stays.presence.ttl - 1,
        )
        await asyncio.wait_for(asyncio.shield(cleanup), 3 * WAIT)
    finally:
        release.set()
        await asyncio.wait_for(cleanup, WAIT)
    assert loop.time() - started < 3 * WAIT


# -- connections given up ------------------------------------------------------------------------


@pytest.fixture
def no_gc() -> Iterator[None]:
    """A connection left open is closed by the garbage collector some time later (when
    its objects are collected): no collection during the test, so a leak shows."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_nats_connection_given_up_on_a_hung_broker_is_closed(
    nats_broker: Broker, no_gc: None, lost_log: pytest.LogCaptureFixture
) -> None:
    """NATS hangs while the exchange publishes (its buffer full): the exchange gives the
    broker up and reconnects once it answers again. The connection given up is closed,
    not left on the broker with its subscriptions (where it would stay until collected)."""
    exchange = make_exchange(nats_broker, timeout=0.5, max_pending=100_000)
    Server(TABLE, exchange=exchange)  # type: ignore[arg-type]
    exchange.namespace_opened("default")
    await exchange.start()
    try:
        await exchange.wait_connected(WAIT)
        await exchange.flush(WAIT)
        nats_broker.pause()
        try:
            for _ in range(5000):
                exchange.publish(chat("x" * 8192))
            await eventually(lambda: _true(not exchange.connected), "the hung broker given up")

            async def tried_again() -> bool:  # the connection given up is behind it
                return sum("retrying" in r.getMessage() for r in lost_log.records) >= 2

            await eventually(tried_again, "a second attempt")
        finally:
            nats_broker.resume()
        await exchange.wait_connected(WAIT)
        await exchange.flush(WAIT)
        await eventually(lambda: _eq(nats_broker.clients(), 1), "one connection on the broker")
        subscriptions = await nats_broker.subscriptions()
        assert subscriptions[exchange.namespace_channel("default")] == 1, subscriptions
    finally:
        await asyncio.wait_for(exchange.stop(), WAIT)
    await eventually(lambda: _eq(nats_broker.clients(), 0), "no connection after stop")


async def test_stop_while_connecting_to_a_hung_broker_leaves_no_connection(
    broker: Broker, no_gc: None
) -> None:
    """``stop()`` while the exchange is still connecting (the broker accepted the TCP
    connection but answers nothing): once the broker answers again, nothing of ours is
    connected to it."""
    exchange = make_exchange(broker, timeout=2.0)
    Server(TABLE, exchange=exchange)  # type: ignore[arg-type]
    broker.pause()
    try:
        await exchange.start()
        await asyncio.sleep(0.5)  # connecting, inside the client library
        await asyncio.wait_for(exchange.stop(), WAIT)
    finally:
        broker.resume()
    await eventually(lambda: _eq(broker.clients(), 0), "no connection after stop")


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


# -- the emitter ----------------------------------------------------------------------------------


async def test_an_emitter_broadcast_the_broker_cannot_take_raises(
    nats_broker: Broker, serve: Serve, peers: Peers
) -> None:
    """An emitter has no local connections: a broadcast larger than NATS' max_payload
    reaches nobody, so ``broadcast()`` says so (ConnectionClosed) instead of returning as
    if the broker had it; the emitter stays usable."""
    server = server_on(nats_broker)
    peer = await peers.connect(await serve(server), "p")
    async with Emitter(make_exchange(nats_broker)) as emitter:
        await until_heard(_emitted(emitter), [peer])
        with pytest.raises(ConnectionClosed):
            await emitter.broadcast(chat("x" * (2 << 20)))
        await emitter.broadcast(chat("small"))
        assert (await peer.next()).text == "small"


async def test_emitter_broadcasts_beyond_max_pending_raise_and_the_others_arrive(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    """100 tasks broadcast through one emitter at once, with ``max_pending=10``: a
    broadcast that returned normally reached the client; the others raised."""
    server = server_on(broker)
    peer = await peers.connect(await serve(server), "p")
    async with Emitter(make_exchange(broker, max_pending=10)) as emitter:
        await until_heard(_emitted(emitter), [peer])

        async def send(n: int) -> int | None:
            try:
                await emitter.broadcast(chat(str(n)))
            except ConnectionClosed:
                return None
            return n

        sent = [n for n in await asyncio.gather(*(send(n) for n in range(100))) if n is not None]
        await emitter.broadcast(chat("end"))
    got = [int(m.text) for m in await peer.until("end")]
    assert got == sent


def _emitted(emitter: Emitter) -> Callable[[str], Awaitable[None]]:
    async def probe(token: str) -> None:
        await emitter.broadcast(Message(namespace="default", event="probe", body=token.encode()))

    return probe


async def test_a_member_too_large_for_the_broker_does_not_freeze_its_servers_presence(
    nats_broker: Broker, serve: Serve, peers: Peers
) -> None:
    """With the name limits off (``max_name_size=None``), a client joins a room whose name
    takes 300 KB of UTF-8 and 1.8 MB as JSON (control characters are escaped), more than
    NATS carries in one message. The other servers still follow every other member of
    its server: a member joining after it is seen everywhere."""
    exchange = make_exchange(nats_broker)
    big = Server(TABLE, exchange=exchange, id_generator=id_from_name, max_name_size=None)  # type: ignore[arg-type]
    watcher = server_on(nats_broker)
    url = await serve(big, path="/big")
    await serve(watcher, path="/watcher")
    huge = "\x01" * 300_000
    await peers.connect(url, "p", rooms=["lobby"], at="big")
    await peers.connect(url, "q", rooms=[huge], at="big")
    late = await peers.connect(url, "late", rooms=["lobby"], at="big")
    bound = watcher.presence.ttl + watcher.presence.beat

    async def seen() -> bool:
        return late.id in {m.conn_id for m in watcher.presence.members("default", "lobby")}

    await eventually(seen, f"{late.id} seen from the other server", bound)
    assert watcher.presence.count("default") == big.presence.count("default")


# -- an idle connection to a broker that hangs -------------------------------------------------


async def test_an_idle_connection_to_a_hung_broker_is_given_up_and_the_log_says_why(
    broker: Broker, serve: Serve, peers: Peers, lost_log: pytest.LogCaptureFixture
) -> None:
    """Nothing is published: the hang is found by the liveness checks alone (Redis: the
    watchdog's pings on the subscriber connection; NATS: its client's pings), within a
    few ``ping_interval``; every failed attempt is logged with its reason; once the broker
    answers again, broadcasts flow."""
    exchange = make_exchange(broker, ping_interval=0.3, timeout=1.0)
    quiet = Server(TABLE, exchange=exchange, id_generator=id_from_name)  # type: ignore[arg-type]
    sender = server_on(broker)
    await serve(sender, path="/sender")
    peer = await peers.connect(await serve(quiet, path="/quiet"), "p", at="quiet")
    await until_heard(_probe(sender), [peer])
    broker.pause()
    try:
        took = await eventually(
            lambda: _true(not exchange.connected), "the hang noticed", timeout=5, every=0.01
        )
        assert took < 5 * exchange.ping_interval + exchange.timeout, took

        async def failed_attempt() -> bool:  # a reconnection attempt timed out meanwhile
            return sum("retrying" in r.getMessage() for r in lost_log.records) >= 2

        await eventually(failed_attempt, "a failed reconnection attempt")
    finally:
        broker.resume()
    await exchange.wait_connected(WAIT)
    await until_heard(_probe(sender), [peer])
    reasons = [
        r.getMessage().split(": ", 1)[1] for r in lost_log.records if "retrying" in r.getMessage()
    ]
    assert reasons and all(not reason.startswith(";") for reason in reasons), reasons


async def test_redis_subscriber_connections_killed_400_times_leave_no_connection(
    redis_broker: Broker, no_gc: None
) -> None:
    """Redis closes the subscriber connections of four exchanges 400 times (``CLIENT KILL
    TYPE pubsub``, as it does to a subscriber past its output buffer limit), with pings
    every millisecond so that a watchdog's ping is often in flight: each time they
    reconnect, and once stopped none of their connections is left on Redis (before, a
    watchdog outliving its listener pinged the closed pubsub, and redis-py opened a new
    connection for it that nobody closed)."""
    from redis.asyncio import Redis

    exchanges = [make_exchange(redis_broker, ping_interval=0.001) for _ in range(4)]
    for exchange in exchanges:
        Server(TABLE, exchange=exchange)  # type: ignore[arg-type]
        await exchange.start()
    raw: Any = Redis.from_url(redis_broker.url)
    try:
        for n in range(400):
            for exchange in exchanges:
                await exchange.wait_connected(WAIT)
            await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await asyncio.sleep(0.001 * (n % 7))  # the kill meets the watchdogs anywhere
        for exchange in exchanges:
            await exchange.wait_connected(WAIT)
    finally:
        for exchange in exchanges:
            await asyncio.wait_for(exchange.stop(), WAIT)
        await raw.aclose()
    assert await redis_broker.clients() == 0
    assert not [t for t in asyncio.all_tasks() if "_watch" in repr(t.get_coro())]


async def test_a_server_that_starts_learns_the_cluster_at_once_not_at_the_next_beat(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    """A server starting next to one with members asks for everyone's snapshot as soon as
    its broker is connected: it sees the members within a round trip or two, not when the
    other server's next beat happens to come (up to ``beat``, 2 s). The newcomer starts
    right after a beat of the other, the worst moment."""
    old = server_on(broker)
    url = await serve(old, path="/old")
    for name in ("ann", "ben"):
        await peers.connect(url, name, rooms=["lobby"], at="old")
    beat = asyncio.Event()
    async with RawClient(broker) as raw:
        await raw.subscribe(
            exchange_of(old).side_channel("presence"),
            lambda data: beat.set() if b'"t": "b"' in data else None,
        )
        await asyncio.wait_for(beat.wait(), 2 * old.presence.beat + WAIT)
        new = server_on(broker)
        await serve(new, path="/new")
        await exchange_of(new).wait_connected(WAIT)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await eventually(
            lambda: _true(new.presence.count("default", "lobby") == 2),
            "the newcomer sees ann and ben",
            every=0.01,
        )
        took = loop.time() - started
    assert took < old.presence.beat / 4, took


# -- audiences ------------------------------------------------------------------------------------


async def test_a_broadcast_excluding_many_rooms_does_not_block_the_servers(
    redis_broker: Broker, serve: Serve, peers: Peers
) -> None:
    """A broadcast from the broker excluding 300,000 rooms (what fits in a Redis message;
    another server's, or a foreign publisher's), to a server with 100 connections: the
    receiving server does not spend a pass over the excluded rooms per connection (30
    million room look-ups, seconds of a blocked event loop), and its clients get it."""
    server = server_on(redis_broker)
    url = await serve(server)
    receivers = [await peers.connect(url, f"c{n}") for n in range(100)]
    skipped = await peers.connect(url, "skipped", rooms=["r7"])
    data = json.dumps({"r": [], "x": [], "xr": [f"r{n}" for n in range(300_000)]}).encode()
    token = "neffos(0xforeign())wsmvc:m:" + base64.urlsafe_b64encode(data).decode()
    lag = LoopLag()
    async with RawClient(redis_broker) as raw, lag:
        payload = f"{token};default;;chat;0;0;many".encode()
        await raw.publish(exchange_of(server).namespace_channel("default"), payload)
        for receiver in receivers:
            assert (await receiver.next()).text == "many"
        await server.broadcast(chat("after"))
        assert [m.text for m in await skipped.until("after")] == []
    assert lag.worst < 1.0, f"the event loop was blocked for {lag.worst:.2f}s"


class LoopLag:
    """The longest the event loop went without running a task that asked for 10 ms, in
    this process's CPU time: what the loop itself did meanwhile (a host busy with other
    processes stretches the wall-clock gaps without any of our code blocking)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.ensure_future(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            before = time.process_time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.process_time() - before)


async def test_two_servers_given_the_same_server_id_are_told_in_the_log(
    broker: Broker, serve: Serve, peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    """Two servers configured with the same ``server_id`` (a copied setting): each takes
    the other's broadcasts for the echo of its own and drops them, which nothing could
    tell. Presence sees the other process's epoch under its own id and logs an error."""
    caplog.set_level(logging.ERROR, logger="wsmvc.presence")
    a = server_on(broker, server_id="twin")
    b = server_on(broker, server_id="twin")
    await serve(a, path="/a")
    peer = await peers.connect(await serve(b, path="/b"), "p", at="b")
    await peer.ns.join_room("lobby", timeout=WAIT)

    async def told() -> bool:
        return any("another server uses this server's id" in r.getMessage() for r in caplog.records)

    await eventually(told, "the duplicate id logged", timeout=2 * a.presence.beat + WAIT)


async def test_a_stopped_presence_no_longer_follows_the_cluster(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    """Between ``presence.stop()`` (the goodbye) and the exchange's stop, the broker still
    delivers: the stopped presence answers no snapshot request (after its goodbye, that
    brought its members back on the others, as ghosts), calls no ``on_change`` callback
    (the application is shutting down), and keeps no frozen view of the other servers."""
    stopping, other, watcher = server_on(broker), server_on(broker), server_on(broker)
    url_other = await serve(other, path="/other")
    url_stopping = await serve(stopping, path="/stopping")
    await serve(watcher, path="/watcher")
    await peers.connect(url_other, "ann", rooms=["lobby"], at="other")
    await peers.connect(url_stopping, "cat", rooms=["lobby"], at="stopping")
    await eventually(lambda: _true(watcher.presence.count("default", "lobby") == 2), "both")
    await eventually(lambda: _true(stopping.presence.count("default", "lobby") == 2), "both")
    heard: list[Change] = []
    stopping.presence.on_change(heard.append)
    await stopping.presence.stop()  # cat is still connected: the server keeps running
    assert [m.server for m in stopping.presence.members("default")] == [exchange_of(stopping).id]
    await eventually(lambda: _true(watcher.presence.count("default", "lobby") == 1), "bye")
    await peers.connect(url_other, "ben", rooms=["lobby"], at="other")
    late = server_on(broker)  # asks everyone for their snapshot as it starts
    await serve(late, path="/late")
    await eventually(lambda: _true(late.presence.count("default", "lobby") == 2), "ann, ben")
    await exchange_of(stopping).flush(WAIT)
    await exchange_of(watcher).flush(WAIT)
    assert heard == []
    for server in (late, watcher):
        names = [m.conn_id for m in server.presence.members("default", "lobby")]
        assert sorted(names) == sorted([peers.id("ann"), peers.id("ben")]), names
