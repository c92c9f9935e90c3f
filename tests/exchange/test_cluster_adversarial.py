"""Trying to break the cluster features: presence, the broker's side channel, what other
(malicious, buggy or older) publishers put on the broker, the emitter.

Real ``redis-server`` / ``nats-server`` processes and real websocket clients; a raw broker
client plays the foreign publisher.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from wsmvc import Message, Server
from wsmvc.exchange.broker import BrokerExchange

from ..conftest import Serve
from .conftest import (
    WAIT,
    Broker,
    Peers,
    RedisBroker,
    id_from_name,
    make_exchange,
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
            await self._client.aclose()
        else:
            await self._client.close()

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
        if "lost its broker" in r.getMessage() or "encountered error" in r.getMessage()
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
    """Malformed presence messages (deep JSON, wrong types) and malformed markers from a
    buggy, malicious or older server: each is dropped (logged), the receiving server keeps
    its broker connection, and the broadcasts after them arrive, in order, at once."""
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
