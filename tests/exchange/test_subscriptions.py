"""Subscriptions follow the connections, as the broker itself counts them.

The servers run in the test process (``serve``) so that a thousand connections are quick;
the broker is a real ``redis-server`` (``PUBSUB CHANNELS`` / ``NUMSUB`` / ``NUMPAT``) or
``nats-server`` (its monitoring endpoint ``/connz?subs=1``). Channel names are written
here from the spec (§12.2), not taken from wsmvc.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
import yarl
from aiohttp import web

import wsmvc
from wsmvc import Message, Server
from wsmvc.exchange.broker import BrokerExchange

from ..conftest import Serve
from .conftest import (
    WAIT,
    Broker,
    Countdown,
    Peers,
    RedisBroker,
    eventually,
    id_from_name,
    make_exchange,
    until_heard,
)


def channel(broker: Broker, name: str) -> str:
    """The channel of a namespace or connection id: ``neffos.<name>.`` (Redis) or
    ``neffos.<name>`` (NATS)."""
    return f"neffos.{name}." if isinstance(broker, RedisBroker) else f"neffos.{name}"


def own_channels(broker: Broker, exchange: BrokerExchange) -> dict[str, int]:
    """What a wsmvc server subscribes to for itself: presence, and on Redis one channel
    more, which keeps the subscriber connection in pub/sub mode."""
    presence = {"neffos.__wsmvc__.presence": 1}  # the servers' presence (wsmvc/presence.py)
    if isinstance(broker, RedisBroker):
        return {f"neffos.__wsmvc__.{exchange.id}": 1, **presence}
    return presence


def probe_from(server: Server, to: str | None = None) -> Callable[[str], Awaitable[None]]:
    """Probes for ``until_heard``: broadcasts of the event ``probe`` from ``server``."""

    async def probe(token: str) -> None:
        msg = Message(namespace="default", event="probe", body=token.encode())
        await server.broadcast(msg, to=to)

    return probe


def named(url: str, name: str) -> str:
    return str(yarl.URL(url).update_query({"X-Websocket-Header-X-Name": name}))


async def test_subscriptions_follow_connections_and_1000_leave_nothing_behind(
    broker: Broker, serve: Serve
) -> None:
    exchange = make_exchange(broker)
    disconnects = Countdown()
    server = Server(
        {"default": {}, "other": {}},
        exchange=exchange,
        id_generator=id_from_name,
        on_disconnect=disconnects,
    )
    url = await serve(server)
    await exchange.flush(WAIT)
    own = own_channels(broker, exchange)
    assert await broker.subscriptions() == own
    handlers: wsmvc.handlers.Namespaces = {"default": {}, "other": {}}

    async with aiohttp.ClientSession() as session:
        # Three connections: one channel per id, one per namespace in use.
        conns = [
            await wsmvc.dial(named(url, f"user{i}"), handlers, session=session) for i in range(3)
        ]
        for conn in conns:
            await conn.connect("default")
        other = await conns[0].connect("other")
        await exchange.flush(WAIT)
        live = {
            channel(broker, "default"): 1,
            channel(broker, "other"): 1,
            **{channel(broker, f"user{i}"): 1 for i in range(3)},
        }
        assert await broker.subscriptions() == {**own, **live}

        # The last connection of a namespace disconnects it: its channel goes.
        await other.disconnect()
        await exchange.flush(WAIT)
        del live[channel(broker, "other")]
        assert await broker.subscriptions() == {**own, **live}

        for conn in conns:
            await conn.close()
        await disconnects.reached(3)
        await exchange.flush(WAIT)
        assert await broker.subscriptions() == own

        # A thousand more come and go, 25 at a time, joining rooms and namespaces.
        gate = asyncio.Semaphore(25)

        async def come_and_go(i: int) -> None:
            async with gate:
                conn = await wsmvc.dial(named(url, f"visitor{i}"), handlers, session=session)
                ns = await conn.connect("default")
                if i % 4 == 0:
                    await ns.join_room("lobby")
                if i % 3 == 0:
                    await (await conn.connect("other")).disconnect()
                elif i % 5 == 0:
                    await conn.connect("other")  # left connected: the close cleans it up
                await conn.close()

        await asyncio.gather(*(come_and_go(i) for i in range(1000)))
        await disconnects.reached(1003, timeout=30)

    await exchange.flush(WAIT)
    assert server.connections == []
    assert await broker.subscriptions() == own


async def test_a_connection_whose_id_is_the_namespace_name_leaves_the_namespace_subscribed(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    """neffos names both channels ``<prefix>.<name>.``, so a connection with id ``default``
    shares its channel with namespace ``default``. When it leaves, the namespace's other
    connections on that server must still get broadcasts from other servers (in Go each
    connection has its own subscriptions, so they do)."""
    publisher = make_exchange(broker)
    server1 = Server({"default": {}}, exchange=publisher, id_generator=id_from_name)
    await serve(server1)
    exchange = make_exchange(broker)
    disconnects = Countdown()
    server2 = Server(
        {"default": {}}, exchange=exchange, id_generator=id_from_name, on_disconnect=disconnects
    )
    url2 = await serve(server2)
    bob = await peers.connect(url2, "bob", at="s2")
    namesake = await peers.connect(url2, "default", exact_id=True, at="s2")
    await exchange.flush(WAIT)
    await publisher.flush(WAIT)
    await until_heard(probe_from(server1), [bob, namesake])

    await server1.broadcast(Message(namespace="default", event="chat", body=b"one"))
    assert [(await p.next()).text for p in (bob, namesake)] == ["one", "one"]

    await namesake.conn.close()
    await disconnects.reached(1)
    await exchange.flush(WAIT)
    subscribed = await broker.subscriptions()
    await server1.broadcast(Message(namespace="default", event="chat", body=b"two"))

    try:
        got = (await bob.next(timeout=2)).text
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the broker's subscriptions: {subscribed}") from None
    assert got == "two"


async def test_the_exchange_starts_and_stops_with_the_app(broker: Broker) -> None:
    exchange = make_exchange(broker)
    app = web.Application()
    Server({"default": {}}, exchange=exchange).mount(app, "/ws")
    runner = web.AppRunner(app)
    try:
        assert not exchange.connected
        await runner.setup()
        await exchange.wait_connected(WAIT)
        await exchange.flush(WAIT)
        assert await broker.subscriptions() == own_channels(broker, exchange)
        assert await broker.clients() >= 1
    finally:
        await runner.cleanup()
    assert not exchange.connected

    async def gone() -> bool:  # the broker's own view catches up with the close
        return await broker.subscriptions() == {} and await broker.clients() == 0

    await eventually(gone, "the broker sees no subscription and no client left", WAIT)


async def test_asks_across_servers_leave_no_token_channel_behind(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    asking = make_exchange(broker)
    server1 = Server({"default": {}}, exchange=asking, id_generator=id_from_name)
    await serve(server1)
    owning = make_exchange(broker)
    url2 = await serve(Server({"default": {}}, exchange=owning, id_generator=id_from_name))
    bob = await peers.connect(url2, "bob", at="s2")
    await owning.flush(WAIT)
    await asking.wait_connected(WAIT)
    await until_heard(probe_from(server1, to=bob.id), [bob])

    def question(event: str) -> Message:
        return Message(namespace="default", event=event, body=b"well?")

    reply = await server1.ask(question("question"), to=bob.id, timeout=WAIT)
    assert reply.body == b"bob@s2 heard well?"
    with pytest.raises(wsmvc.EventError, match=r"^bob@s2 refuses$"):
        await server1.ask(question("refuse"), to=bob.id, timeout=WAIT)
    with pytest.raises(wsmvc.EventError, match=r"^unknown event 'nobody'$"):
        await server1.ask(question("nobody"), to=bob.id, timeout=WAIT)  # no handler at bob's
    with pytest.raises(wsmvc.AskTimeout):  # bob's handler answers nothing
        await server1.ask(question("silence"), to=bob.id, timeout=0.3)

    await asking.flush(WAIT)
    await owning.flush(WAIT)
    expected = collections.Counter(own_channels(broker, asking))
    expected.update(own_channels(broker, owning))  # presence: one subscription each
    expected.update({channel(broker, "default"): 1, channel(broker, bob.id): 1})
    assert await broker.subscriptions() == dict(expected)
