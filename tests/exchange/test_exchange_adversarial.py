"""Trying to break the broker exchanges, the Emitter and broadcast_threadsafe.

Real ``redis-server`` / ``nats-server`` processes, real websocket clients; a broker is
paused (SIGSTOP: a hung host) or killed in the middle of what is under test.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from typing import ClassVar

import pytest
import yarl
from aiohttp import web

import wsmvc
from wsmvc import ConnectionClosed, Message, Server
from wsmvc.emitter import Emitter
from wsmvc.exchange.broker import BrokerExchange
from wsmvc.exchange.nats import subject_token

from ..conftest import Serve
from .conftest import (
    WAIT,
    Broker,
    Countdown,
    Peer,
    Peers,
    eventually,
    id_from_name,
    make_exchange,
    until_heard,
)

TABLE: dict[str, dict[str, object]] = {"default": {}}


def chat(body: str, namespace: str = "default") -> Message:
    return Message(namespace=namespace, event="chat", body=body.encode())


async def app_subscriptions(broker: Broker) -> dict[str, int]:
    """The broker's own count of subscriptions, but wsmvc's own channels between servers
    (``neffos.__wsmvc__.*``): those of namespaces, ids and asks."""
    counts = await broker.subscriptions()
    return {k: v for k, v in counts.items() if not k.startswith("neffos.__wsmvc__.")}


def probe_to(server: Server, to: str | None = None) -> Callable[[str], object]:
    async def probe(token: str) -> None:
        msg = Message(namespace="default", event="probe", body=token.encode())
        await server.broadcast(msg, to=to)

    return probe


async def settled(broker: Broker, expected: dict[str, int], timeout: float = WAIT) -> None:
    """Poll the broker until its application subscriptions are ``expected``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (got := await app_subscriptions(broker)) != expected:
        if loop.time() > deadline:
            raise AssertionError(f"broker subscriptions {got}, expected {expected}")
        await asyncio.sleep(0.05)


# -- the Emitter against a hung or dead broker ----------------------------------------------


async def test_emitter_broadcast_to_a_hung_broker_fails_with_connection_closed(
    broker: Broker,
) -> None:
    """Emitter.broadcast documents ConnectionClosed when the broker gives no answer within
    the exchange's timeout."""
    emitter = Emitter(make_exchange(broker, timeout=0.5, reconnect_delay=(0.05, 0.1)))
    async with emitter:
        await emitter.broadcast(chat("before"))
        broker.pause()
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectionClosed):
                await emitter.broadcast(chat("while hung"))
            assert loop.time() - started < 2.0
        finally:
            broker.resume()


async def test_emitter_ask_while_the_broker_dies_times_out_and_the_emitter_recovers(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    """An ask in flight when the broker is killed ends at its timeout (the answer cannot
    come); once the broker is back the same emitter asks and broadcasts again."""
    server = Server(TABLE, exchange=make_exchange(broker), id_generator=id_from_name)  # type: ignore[arg-type]
    url = await serve(server)
    alice = await peers.connect(url, "alice")
    emitter = Emitter(make_exchange(broker, timeout=0.5, reconnect_delay=(0.05, 0.2)))
    async with emitter:

        async def probe(token: str) -> None:
            msg = Message(namespace="default", event="probe", body=token.encode())
            await emitter.broadcast(msg, to=alice.id)

        await until_heard(probe, [alice])
        question = Message(namespace="default", event="silence")
        ask = asyncio.ensure_future(emitter.ask(question, to=alice.id, timeout=1.0))
        await asyncio.sleep(0.1)  # the request is out; "silence" never answers
        broker.kill()
        with pytest.raises(wsmvc.AskTimeout):
            await asyncio.wait_for(ask, WAIT)
        broker.restart()
        await emitter.exchange.wait_connected(WAIT * 2)
        answer = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT * 2
        while answer is None:
            assert loop.time() < deadline, "no answer after the broker came back"
            try:
                answer = await emitter.ask(
                    Message(namespace="default", event="question", body=b"again"),
                    to=alice.id,
                    timeout=0.3,
                )
            except (wsmvc.AskTimeout, ConnectionClosed):
                continue
        assert answer.text == f"{alice.label} heard again"


async def test_emitter_stopped_twice_at_once_refuses_then_restarts(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    """stop() twice at once is fine; a stopped emitter refuses with ConnectionClosed;
    started again it reaches clients again; once stopped the broker has no connection
    of it."""
    server = Server(TABLE, exchange=make_exchange(broker), id_generator=id_from_name)  # type: ignore[arg-type]
    url = await serve(server)
    alice = await peers.connect(url, "alice")
    emitter = Emitter(make_exchange(broker))
    await emitter.start()

    async def probe(token: str) -> None:
        await emitter.broadcast(Message(namespace="default", event="probe", body=token.encode()))

    await until_heard(probe, [alice])
    for n in range(20):
        await emitter.broadcast(chat(f"{n}"))
    results = await asyncio.wait_for(
        asyncio.gather(emitter.stop(), emitter.stop(), return_exceptions=True), WAIT
    )
    assert results == [None, None]
    assert await alice.texts(20) == [f"{n}" for n in range(20)]
    with pytest.raises(ConnectionClosed):
        await emitter.broadcast(chat("after stop"))
    with pytest.raises(ConnectionClosed):
        await emitter.ask(Message(namespace="default", event="question"), to=alice.id)
    await asyncio.wait_for(emitter.stop(), WAIT)  # a third time: nothing to do

    async with emitter:
        await until_heard(probe, [alice])
        await emitter.broadcast(chat("second life"))
        assert [m.text for m in await alice.until("second life")] == []
    # By name, not by count: the server's own connections may come and go meanwhile.
    mine = f"wsmvc-{emitter.exchange.id}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3 * WAIT  # the broker's own view of closes lags under load
    while [n for n in await broker.client_names() if n.startswith(mine)]:
        names = await broker.client_names()
        assert loop.time() < deadline, f"the emitter's broker connections outlived stop(): {names}"
        await asyncio.sleep(0.05)


async def stop_right_after_broadcasts(broker: Broker, serve: Serve, peers: Peers) -> None:
    """A server broadcasts and, a moment later (one turn of the loop: the pump has taken
    the publications), its exchange stops: stop() returns, and the remote client got them."""
    b = Server(TABLE, exchange=make_exchange(broker), id_generator=id_from_name)  # type: ignore[arg-type]
    remote = await peers.connect(await serve(b, path="/b"), "remote", at="B")
    exchange = make_exchange(broker)
    a = Server(TABLE, exchange=exchange)  # type: ignore[arg-type]
    await serve(a, path="/a")
    await until_heard(probe_to(a, remote.id), [remote])
    for n in range(20):
        await a.broadcast(chat(f"{n}"))
    await asyncio.sleep(0)  # the pump takes the batch
    await asyncio.wait_for(exchange.stop(), WAIT)
    assert await remote.texts(20) == [f"{n}" for n in range(20)]


async def test_stop_right_after_broadcasts(broker: Broker, serve: Serve, peers: Peers) -> None:
    """Regression: at 49bcd69 this hung forever on Redis (redis-py swallowed the pump's
    cancellation mid-publish and the pump looped on; stop() waited in gather())."""
    await stop_right_after_broadcasts(broker, serve, peers)


# -- hold_id: handshakes while the broker hangs ------------------------------------------------


async def test_hundreds_of_handshakes_while_the_broker_hangs_finish_and_leave_nothing(
    broker: Broker, serve: Serve
) -> None:
    """200 clients connect at once while the broker is paused: each handshake waits for
    the broker at most about ``timeout``, then completes. Once they left and the broker is
    back, it counts no subscription of theirs, and a new client gets what is sent to it."""
    exchange = make_exchange(broker, timeout=1.0, reconnect_delay=(0.05, 0.2))
    disconnects = Countdown()
    server = Server(TABLE, exchange=exchange, id_generator=id_from_name, on_disconnect=disconnects)  # type: ignore[arg-type]
    url = await serve(server)
    await exchange.flush(WAIT)
    other = make_exchange(broker)
    sender = Server(TABLE, exchange=other)  # type: ignore[arg-type]
    await serve(sender, path="/sender")
    await other.flush(WAIT)
    loop = asyncio.get_running_loop()
    broker.pause()
    try:
        started = loop.time()
        dialed = await asyncio.wait_for(
            asyncio.gather(
                *(
                    wsmvc.dial(f"{url}?X-Websocket-Header-X-Name=hang-{n}", {"default": {}})
                    for n in range(200)
                )
            ),
            WAIT,
        )
        took = loop.time() - started
        assert sorted(c.id for c in dialed) == sorted(f"hang-{n}" for n in range(200))
        assert took < 3.0, f"handshakes took {took:.1f}s with timeout 1s"
        await asyncio.gather(*(c.close() for c in dialed))
        await disconnects.reached(200)
    finally:
        broker.resume()
    await exchange.wait_connected(WAIT * 2)
    await exchange.flush(WAIT)
    await settled(broker, {})
    peer = Peer("late", "late")
    peer.conn = await wsmvc.dial(
        f"{url}?X-Websocket-Header-X-Name=late", {"default": peer.handlers()}, timeout=WAIT
    )
    try:
        peer.ns = await peer.conn.connect("default", timeout=WAIT)
        await until_heard(probe_to(sender, "late"), [peer])
    finally:
        await peer.conn.close()


async def test_a_handshake_cancelled_while_hold_id_waits_leaks_no_subscription(
    broker: Broker,
) -> None:
    """aiohttp's ``handler_cancellation=True`` cancels a handler when its client goes away.
    A client that vanishes while its handshake waits for a hung broker: once the broker
    is back, no subscription of its id remains."""
    from ..wire_support import RawWS

    exchange = make_exchange(broker, timeout=1.5, reconnect_delay=(0.05, 0.2))
    connects = Countdown()
    disconnects = Countdown()
    server = Server(
        TABLE,  # type: ignore[arg-type]
        exchange=exchange,
        id_generator=lambda _: "vanishing",
        on_connect=connects,
        on_disconnect=disconnects,
    )
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"
        await exchange.flush(WAIT)
        broker.pause()
        try:
            raw = await RawWS.open(url)
            await raw.send_raw(RawWS.frame(b"M", 0x1))
            await connects.reached(1)  # on_connect ran: hold_id waits for the broker now
            raw.sock.close()
            await asyncio.sleep(0.3)  # the server notices the client is gone
        finally:
            broker.resume()
        await exchange.wait_connected(WAIT * 2)
        await exchange.flush(WAIT)
        await settled(broker, {}, timeout=2.0)
    finally:
        await runner.cleanup()


# -- state an await changes: the resubscription after a reconnect ------------------------------


def gated_exchange(broker: Broker, **options: object) -> BrokerExchange:
    """The broker's exchange, where one chosen subscribe or unsubscribe is slow (waits
    for the test): a slow broker link, to hold the reconnection at a chosen await."""
    base = type(make_exchange(broker))

    class Gated(base):  # type: ignore[valid-type,misc]
        gates: ClassVar[dict[tuple[str, str], tuple[asyncio.Event, asyncio.Event]]] = {}

        def arm(self, op: str, channel: str) -> tuple[asyncio.Event, asyncio.Event]:
            gate = self.gates[(op, channel)] = (asyncio.Event(), asyncio.Event())
            return gate

        async def _gate(self, op: str, channel: str) -> None:
            gate = self.gates.pop((op, channel), None)
            if gate is not None:
                gate[0].set()
                await gate[1].wait()

        async def _subscribe(self, channel: str) -> None:
            await self._gate("sub", channel)
            await super()._subscribe(channel)

        async def _unsubscribe(self, channel: str) -> None:
            await self._gate("unsub", channel)
            await super()._unsubscribe(channel)

    return Gated(broker.url, **options)  # type: ignore[no-any-return]


async def test_an_id_that_returns_while_the_reconnection_drops_it_is_reachable(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    exchange = gated_exchange(broker, timeout=1.0, reconnect_delay=(0.05, 0.1))
    disconnects = Countdown()
    b = Server(TABLE, exchange=exchange, id_generator=id_from_name, on_disconnect=disconnects)  # type: ignore[arg-type]
    url_b = await serve(b, path="/b")
    a = Server(TABLE, exchange=make_exchange(broker, reconnect_delay=(0.05, 0.1)))  # type: ignore[arg-type]
    await serve(a, path="/a")
    x = await peers.connect(url_b, "x", exact_id=True, at="B")
    await peers.connect(url_b, "keep", exact_id=True, at="B")
    await until_heard(probe_to(a, "x"), [x])

    broker.kill()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while exchange.connected:
        assert loop.time() < deadline, "the exchange did not notice the broker died"
        await asyncio.sleep(0.02)
    held_keep = exchange.arm("sub", exchange.id_channel("keep"))  # type: ignore[attr-defined]
    held_x = exchange.arm("unsub", exchange.id_channel("x"))  # type: ignore[attr-defined]
    broker.restart()
    await asyncio.wait_for(held_keep[0].wait(), WAIT)  # x is subscribed again, keep waits
    await x.conn.close()  # x leaves meanwhile
    await disconnects.reached(1)
    held_keep[1].set()
    await asyncio.wait_for(held_x[0].wait(), WAIT)  # the reconnection drops x's channel
    x_again = await peers.connect(url_b, "x", exact_id=True, at="B")  # and x returns
    held_x[1].set()
    await exchange.wait_connected(WAIT)
    await exchange.flush(WAIT)
    await until_heard(probe_to(a, "x"), [x_again])


# -- a hung broker under load --------------------------------------------------------------------


async def hung_under_load(broker: Broker) -> None:
    """``timeout`` bounds a publication: past it the broker counts as lost. A server that
    publishes ~40 MB while its broker hangs notices within a few timeouts, not only when
    its pings go unanswered (NATS: 3 x ping_interval)."""
    exchange = make_exchange(broker, timeout=0.5, ping_interval=5.0, max_pending=100_000)
    Server(TABLE, exchange=exchange)  # type: ignore[arg-type]
    await exchange.start()
    try:
        await exchange.wait_connected(WAIT)
        await exchange.flush(WAIT)
        broker.pause()
        try:
            body = b"x" * 8192
            loop = asyncio.get_running_loop()
            started = loop.time()
            for _ in range(5000):
                exchange.publish(Message(namespace="default", event="chat", body=body))

            async def given_up() -> bool:
                return not exchange.connected

            # Well under the 15 s its pings would take (3 x ping_interval), with room for
            # a loaded CI host to push 40 MB through a filling socket.
            took = await eventually(given_up, "the hung broker given up (timeout 0.5s)", 10.0)
            assert loop.time() - started < 10.0, took
        finally:
            broker.resume()
    finally:
        await asyncio.wait_for(exchange.stop(), WAIT)


async def test_a_hung_redis_under_publishing_load_is_given_up_within_about_timeout(
    redis_broker: Broker,
) -> None:
    await hung_under_load(redis_broker)


async def test_a_hung_nats_under_publishing_load_is_given_up_within_about_timeout(
    nats_broker: Broker,
) -> None:
    await hung_under_load(nats_broker)


async def test_100k_broadcasts_while_redis_hangs_stay_within_max_pending(
    redis_broker: Broker, serve: Serve, peers: Peers
) -> None:
    """What waits for a hung Redis is bounded by max_pending: the rest is dropped and
    counted, and once it answers again the remote client gets at most what was kept,
    in order."""
    exchange = make_exchange(redis_broker, timeout=3.0, max_pending=1000)
    a = Server(TABLE, exchange=exchange)  # type: ignore[arg-type]
    b = Server(TABLE, exchange=make_exchange(redis_broker), id_generator=id_from_name)  # type: ignore[arg-type]
    await serve(a, path="/a")
    remote = await peers.connect(await serve(b, path="/b"), "remote", at="B")
    await until_heard(probe_to(a, remote.id), [remote])
    redis_broker.pause()
    try:
        for n in range(100_000):
            await a.broadcast(chat(str(n)))
        assert exchange.dropped >= 100_000 - 1000  # queued and in flight: 1000 at most
    finally:
        redis_broker.resume()
    await exchange.flush(WAIT)
    await a.broadcast(chat("end"))
    got = [int(m.text) for m in await remote.until("end", timeout=WAIT)]
    assert got == sorted(got)
    assert len(got) <= 1000


# -- broadcast_threadsafe around shutdown ------------------------------------------------------


async def test_broadcast_threadsafe_during_shutdown_never_hangs(serve: Serve) -> None:
    """A thread broadcasts while the server shuts down: every future it gets completes (or
    the call refuses); none is left pending."""
    server = Server(TABLE)
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stop = threading.Event()
    outcomes: list[str] = []

    def worker() -> None:
        for n in itertools.count():
            if stop.is_set() and n > 50:
                return
            try:
                future = server.broadcast_threadsafe(chat(str(n)))
            except RuntimeError:
                outcomes.append("refused")
                continue
            try:
                future.result(WAIT)
                outcomes.append("sent")
            except Exception as exc:  # the outcome, whatever it is, but in time
                outcomes.append(type(exc).__name__)

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.sleep(0.05)
    await runner.cleanup()
    stop.set()
    await asyncio.to_thread(thread.join, WAIT * 3)
    assert not thread.is_alive()
    assert "TimeoutError" not in outcomes
    assert "sent" in outcomes


def test_broadcast_threadsafe_after_the_servers_loop_stopped_does_not_hang() -> None:
    """The server ran on a loop of its own thread (a sync app), which has stopped: a
    broadcast from another thread must fail (RuntimeError), not wait forever."""
    server = Server(TABLE)
    loop = asyncio.new_event_loop()
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app)
    try:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(runner.cleanup())
        # The loop is idle now (not running, not closed), as after run_until_complete.
        outcome: list[BaseException | None] = []

        def worker() -> None:
            try:
                server.broadcast_threadsafe(chat("late")).result(1.0)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(WAIT)
        assert len(outcome) == 1
        assert isinstance(outcome[0], RuntimeError), repr(outcome[0])
    finally:
        loop.close()


# -- names -----------------------------------------------------------------------------------------


def test_subject_token_is_injective_on_names_built_to_collide() -> None:
    import base64

    def escaped(name: str) -> str:
        return "~" + base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")

    seeds = ["", "a", "~", "~~", "a.b", "*", ">", "x y", "é", "\n", ";", "A", "AA", "AAA"]
    names = set(seeds)
    for seed in seeds:  # a name that is another name's escape, and escapes of escapes
        names |= {escaped(seed), escaped(escaped(seed)), escaped(seed) + "=", escaped(seed)[1:]}
    tokens = {}
    for name in names:
        token = subject_token(name)
        assert token not in tokens, (name, tokens.get(token))
        tokens[token] = name
        assert token and all(0x21 <= ord(c) <= 0x7E and c not in ".*>" for c in token)


ODD_IDS = ["~", "~~", "~YQ", "a", "semi;colon", "new\nline", " lead", "trail ", "\u2028", "日本"]


async def test_odd_ids_get_only_their_own_messages_and_exclusion_works(
    broker: Broker, serve: Serve
) -> None:
    """``~YQ`` is how NATS writes ``a``: both connected, each gets only its own; ids with
    the neffos separator, newlines, edge whitespace and non-ASCII too; ``exclude=`` skips
    exactly that id on the other server."""
    a = Server(TABLE, exchange=make_exchange(broker))  # type: ignore[arg-type]
    b = Server(TABLE, exchange=make_exchange(broker), id_generator=lambda r: r.query["id"])  # type: ignore[arg-type]
    await serve(a, path="/a")
    url_b = await serve(b, path="/b")
    clients = []
    try:
        for name in ODD_IDS:
            peer = Peer(name, repr(name))
            dial_url = str(yarl.URL(url_b).update_query({"id": name}))
            peer.conn = await wsmvc.dial(dial_url, {"default": peer.handlers()}, timeout=WAIT)
            clients.append(peer)
            assert peer.conn.id == name
            peer.ns = await peer.conn.connect("default", timeout=WAIT)
        for peer in clients:
            await until_heard(probe_to(a, peer.id), [peer])
        for peer in clients:
            await a.broadcast(chat(f"to {peer.id!r}"), to=peer.id)
        await a.broadcast(chat("not to ~"), exclude="~")
        await a.broadcast(chat("end"))
        for peer in clients:
            got = [m.text for m in await peer.until("end")]
            expected = [f"to {peer.id!r}"] + ([] if peer.id == "~" else ["not to ~"])
            assert got == expected, peer.id
    finally:
        await asyncio.gather(*(p.conn.close() for p in clients))


async def test_stop_is_bounded_when_a_task_swallows_its_cancellation(
    redis_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A task of the exchange's that swallows its cancellation (as a client library's
    wait_for can, or a hung broker's call): stop() still returns, within timeout + 1 s,
    and says which task it left to finish."""
    exchange = make_exchange(redis_broker, timeout=0.5)
    Server(TABLE, exchange=exchange)  # type: ignore[arg-type]
    await exchange.start()
    await exchange.wait_connected(WAIT)
    release, started = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # swallowed

    task = asyncio.ensure_future(stubborn())
    exchange._forwards.add(task)  # one of the tasks stop() ends (a forwarded ask's)
    await asyncio.wait_for(started.wait(), WAIT)  # running: a task cancelled before it runs ends
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(exchange.stop(), WAIT)
    assert loop.time() - started < 0.5 + 1.0 + 1.0
    assert "did not end at stop()" in caplog.text
    assert not exchange.connected
    release.set()
    await asyncio.wait_for(task, WAIT)
