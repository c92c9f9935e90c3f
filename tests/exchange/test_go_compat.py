"""Sharing a broker with Go neffos servers (v0.0.24), without Go: a raw Redis or NATS client
plays the Go server, with Go's channel names (spec §12.2) and payloads (§12.3). The wsmvc
server uses the prefix ``MyChatApp`` on Redis and the default ``neffos`` on NATS.

Compatible, and proved here:

* channels: ``<prefix>.<namespace>.`` and ``<prefix>.<id>.`` on Redis (Go PSUBSCRIBEs those
  names; wsmvc SUBSCRIBEs the same ones), ``neffos.<namespace>`` and ``neffos.<id>`` on NATS;
* a wsmvc broadcast is a neffos envelope whose token slot holds a marker starting with
  ``neffos(0x`` (which Go strips); excluding a connection writes Go's own form
  ``neffos(0x<server>(<id>0x<hex>))``; namespace, room, event and body as broadcast;
* a ``to=`` broadcast goes to the id's channel, not the namespace's;
* what a Go server publishes (to the namespace, to an id, with Go's exclusion marker)
  reaches wsmvc clients as a plain message: the marker never reaches a client;
* a wsmvc extra (exclusion by id, the binary flag) stays inside the marker, so a Go server
  still reads the rest of the envelope;
* an ask arriving through the broker with a Go ``Server.Ask`` token (``R...``) is answered by
  the wsmvc server owning the connection, on the token's channel (spec §12.5's intent).

Not compatible (by design, or Go's own limits; not tested):

* Go servers drop the wsmvc extras: their clients get an ``exclude=<id>`` broadcast anyway,
  and a binary broadcast as text (spec §12.3: Go loses both between Go servers too);
* ``server.ask(..., to=id)`` for a client of a Go server is never answered (Go does not
  forward asks) and times out; Go's own ``Server.Ask`` through a broker times out even
  between Go servers (§12.5), so whether it would take the answer above is unknown;
* NATS names Go cannot write (``""``, with ``.``, ``*``, ``>``, whitespace, non-ASCII):
  wsmvc escapes them (``~`` and base64, see wsmvc/exchange/nats.py), Go cannot use them;
* Redis: Go subscribes with patterns, so ``*``, ``?``, ``[`` in a Go-side namespace or id
  match other channels too; wsmvc matches names exactly.
"""

from __future__ import annotations

import abc
import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import yarl

from wsmvc import Conn, Message, Server
from wsmvc.exchange.broker import BrokerExchange

from ..conftest import Serve
from .conftest import WAIT, Broker, Peers, RedisBroker, id_from_name, make_exchange, until_heard

REDIS_PREFIX = "MyChatApp"


class GoServer(abc.ABC):
    """A raw broker client standing in for a Go neffos server."""

    @abc.abstractmethod
    def channel(self, name: str) -> str:
        """Go's channel for a namespace or a connection id."""

    @abc.abstractmethod
    async def subscribe(self, channel: str, *, pattern: bool = True) -> None:
        """Subscribe like Go (Redis: PSUBSCRIBE, or SUBSCRIBE for an ask's token); returns
        once the broker has it."""

    @abc.abstractmethod
    async def _take(self, channel: str, timeout: float) -> bytes:
        """The next payload on ``channel``; :class:`asyncio.TimeoutError` if none comes."""

    async def next(self, channel: str, timeout: float = WAIT) -> bytes:
        """The next payload published on ``channel``, probes skipped."""
        while is_probe(payload := await self._take(channel, timeout)):
            pass
        return payload

    async def hears(self, channel: str, send_probe: Callable[[], Awaitable[object]]) -> None:
        """Probe until a probe from ``send_probe`` arrives on ``channel`` (see
        ``conftest.until_heard``: on NATS a new subscription can miss a publication from
        another connection for a moment)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while loop.time() < deadline:
            await send_probe()
            try:
                payload = await self._take(channel, 0.1)
            except asyncio.TimeoutError:
                continue
            assert is_probe(payload), f"expected a probe on {channel}: {payload!r}"
            return
        raise AssertionError(f"no probe reached the subscriber of {channel} within {WAIT}s")

    @abc.abstractmethod
    async def publish(self, channel: str, payload: bytes) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class GoOnRedis(GoServer):
    """Go's Redis exchange: PSUBSCRIBE ``<prefix>.<name>.``, PUBLISH."""

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self._client = Redis.from_url(url)
        self._pubsub = self._client.pubsub()
        self._received: dict[str, asyncio.Queue[bytes]] = {}
        self._confirmed: set[tuple[str, str]] = set()

    def channel(self, name: str) -> str:
        return f"{REDIS_PREFIX}.{name}."

    async def subscribe(self, channel: str, *, pattern: bool = True) -> None:
        self._received[channel] = asyncio.Queue()
        kind = "psubscribe" if pattern else "subscribe"
        await (self._pubsub.psubscribe if pattern else self._pubsub.subscribe)(channel)
        await self._read_until(lambda: (kind, channel) in self._confirmed, WAIT)

    async def _take(self, channel: str, timeout: float) -> bytes:
        queue = self._received[channel]
        await self._read_until(lambda: not queue.empty(), timeout)
        return queue.get_nowait()

    async def _read_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Read the subscriber connection, sorting what comes, until ``done()``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"nothing from Redis within {timeout}s")
            message = await self._pubsub.get_message(timeout=remaining)
            if message is None:
                continue
            kind = message["type"]
            key = message["pattern"] if kind == "pmessage" else message["channel"]
            key = key.decode() if isinstance(key, bytes) else str(key)
            if kind in ("message", "pmessage"):
                self._received[key].put_nowait(message["data"])
            else:
                self._confirmed.add((kind, key))

    async def publish(self, channel: str, payload: bytes) -> None:
        await self._client.publish(channel, payload)

    async def close(self) -> None:
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._client.aclose()


class GoOnNats(GoServer):
    """Go's NATS exchange: subjects ``neffos.<name>``."""

    def __init__(self, nc: Any) -> None:
        self._nc = nc
        self._received: dict[str, asyncio.Queue[bytes]] = {}

    @classmethod
    async def connect(cls, url: str) -> GoOnNats:
        import nats

        return cls(await nats.connect(url, allow_reconnect=False))

    def channel(self, name: str) -> str:
        return f"neffos.{name}"

    async def subscribe(self, channel: str, *, pattern: bool = True) -> None:
        queue = self._received[channel] = asyncio.Queue()

        async def received(msg: Any) -> None:
            queue.put_nowait(msg.data)

        await self._nc.subscribe(channel, cb=received)
        await self._nc.flush(timeout=WAIT)

    async def _take(self, channel: str, timeout: float) -> bytes:
        return await asyncio.wait_for(self._received[channel].get(), timeout)

    async def publish(self, channel: str, payload: bytes) -> None:
        await self._nc.publish(channel, payload)
        await self._nc.flush(timeout=WAIT)

    async def close(self) -> None:
        await self._nc.close()


@pytest.fixture
async def go(broker: Broker) -> AsyncIterator[GoServer]:
    server: GoServer
    if isinstance(broker, RedisBroker):
        server = GoOnRedis(broker.url)
    else:
        server = await GoOnNats.connect(broker.url)
    try:
        yield server
    finally:
        await server.close()


class Wsmvc:
    """The wsmvc server on the shared broker, served in the test process."""

    def __init__(self, server: Server, exchange: BrokerExchange, url: str) -> None:
        self.server = server
        self.exchange = exchange
        self.url = url

    async def broadcast(
        self,
        body: bytes,
        *,
        room: str = "",
        binary: bool = False,
        exclude: Conn | str | None = None,
        to: str | None = None,
    ) -> None:
        msg = Message(namespace="default", room=room, event="chat", body=body, binary=binary)
        await self.server.broadcast(msg, exclude=exclude, to=to)

    async def probe(self, to: str | None = None) -> None:
        """A broadcast of the event ``probe`` (raw subscribers skip it)."""
        await self.server.broadcast(Message(namespace="default", event="probe"), to=to)


@pytest.fixture
async def wsmvc_server(broker: Broker, serve: Serve) -> Wsmvc:
    prefix = REDIS_PREFIX if isinstance(broker, RedisBroker) else "neffos"
    exchange = make_exchange(broker, prefix=prefix)
    server = Server({"default": {}}, exchange=exchange, id_generator=id_from_name)
    url = await serve(server)
    await exchange.wait_connected(WAIT)
    return Wsmvc(server, exchange, url)


def is_probe(payload: bytes) -> bool:
    fields = payload.split(b";", 6)
    return len(fields) == 7 and fields[3] == b"probe"


def go_probe(token: str) -> bytes:
    """What a Go server would publish for a broadcast of the event ``probe``."""
    return f";default;;probe;0;0;{token}".encode()


def envelope(payload: bytes) -> tuple[bytes, bytes]:
    """(token slot, the rest) of a neffos envelope, the way Go splits it."""
    fields = payload.split(b";", 6)
    assert len(fields) == 7, f"not a neffos envelope: {payload!r}"
    return fields[0], payload[len(fields[0]) + 1 :]


async def test_go_server_sees_wsmvc_broadcasts_as_envelopes_with_a_marker_on_the_namespace_channel(
    wsmvc_server: Wsmvc, go: GoServer, peers: Peers
) -> None:
    alice = await peers.connect(wsmvc_server.url, "alice")
    [alice_conn] = wsmvc_server.server.get_connections(alice.id)
    await go.subscribe(go.channel("default"))
    await go.hears(go.channel("default"), wsmvc_server.probe)

    await wsmvc_server.broadcast(b"hi")
    await wsmvc_server.broadcast(b"room only", room="lobby")
    await wsmvc_server.broadcast(b"hi from alice", exclude=alice_conn)

    marker, rest = envelope(await go.next(go.channel("default")))
    assert marker.startswith(b"neffos(0x")
    assert rest == b"default;;chat;0;0;hi"
    marker, rest = envelope(await go.next(go.channel("default")))
    assert marker.startswith(b"neffos(0x")
    assert rest == b"default;lobby;chat;0;0;room only"
    marker, rest = envelope(await go.next(go.channel("default")))
    # Go's own form, then the wsmvc part Go strips with it (the publication's number).
    go_form = rb"neffos\(0x[^();]+\(" + alice.id.encode() + rb"0x[0-9a-f]+\)\)"
    assert re.fullmatch(go_form + rb"(wsmvc:::[0-9]+)", marker)
    assert rest == b"default;;chat;0;0;hi from alice"


async def test_go_server_sees_a_to_broadcast_on_the_connection_channel_only(
    wsmvc_server: Wsmvc, go: GoServer
) -> None:
    await go.subscribe(go.channel("bob"))
    await go.subscribe(go.channel("default"))
    await go.hears(go.channel("bob"), lambda: wsmvc_server.probe(to="bob"))
    await go.hears(go.channel("default"), wsmvc_server.probe)

    await wsmvc_server.broadcast(b"direct to bob", to="bob")
    await wsmvc_server.broadcast(b"to everyone")

    assert envelope(await go.next(go.channel("bob")))[1] == b"default;;chat;0;0;direct to bob"
    # The first thing on the namespace channel is the broadcast that came after.
    assert envelope(await go.next(go.channel("default")))[1] == b"default;;chat;0;0;to everyone"


async def test_wsmvc_clients_get_what_a_go_server_publishes(
    wsmvc_server: Wsmvc, go: GoServer, peers: Peers
) -> None:
    alice = await peers.connect(wsmvc_server.url, "alice")
    bob = await peers.connect(wsmvc_server.url, "bob")
    await wsmvc_server.exchange.flush(WAIT)
    await until_heard(lambda t: go.publish(go.channel(bob.id), go_probe(t)), [bob])
    await until_heard(lambda t: go.publish(go.channel("default"), go_probe(t)), [alice, bob])

    await go.publish(go.channel(bob.id), b";default;;chat;0;0;direct to bob")
    msg = await bob.next()
    assert (msg.namespace, msg.room, msg.event, msg.body) == (
        "default",
        "",
        "chat",
        b"direct to bob",
    )
    assert (msg.token, msg.err, msg.binary) == ("", "", False)

    await go.publish(go.channel("default"), b";default;;chat;0;0;from go")
    await go.publish(go.channel("default"), b";default;;chat;0;0;end")
    assert [m.text for m in await alice.until("end")] == ["from go"]
    assert [m.text for m in await bob.until("end")] == ["from go"]


async def test_a_go_exclusion_marker_is_stripped_and_never_reaches_a_client(
    wsmvc_server: Wsmvc, go: GoServer, peers: Peers
) -> None:
    """Go's identity only matches on the Go server that wrote it, so everyone here gets the
    message, alice included, without the marker: a raw websocket shows the exact frame."""
    alice_id = peers.id("alice")
    bob = await peers.connect(wsmvc_server.url, "bob")
    url = yarl.URL(wsmvc_server.url).update_query({"X-Websocket-Header-X-Name": alice_id})
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str("M")
        assert await ws.receive_str(timeout=WAIT) == f"A{alice_id}"
        await ws.send_str("$1;default;;_OnNamespaceConnect;0;0;")
        assert await ws.receive_str(timeout=WAIT) == "$1;;;;;;"
        await wsmvc_server.exchange.flush(WAIT)
        await until_heard(lambda t: go.publish(go.channel("default"), go_probe(t)), [bob])

        go_marker = f"neffos(0x{uuid.uuid4()}({alice_id}0xc00012e600))"
        await go.publish(go.channel("default"), f"{go_marker};default;;chat;0;0;hi".encode())

        text = str(await ws.receive_str(timeout=WAIT))
        while text.startswith(";default;;probe;"):
            text = str(await ws.receive_str(timeout=WAIT))
        assert text == ";default;;chat;0;0;hi"
    msg = await bob.next()
    assert (msg.token, msg.body) == ("", b"hi")


async def test_wsmvc_extras_ride_inside_the_marker_so_go_reads_the_rest_of_the_envelope(
    wsmvc_server: Wsmvc, go: GoServer
) -> None:
    await go.subscribe(go.channel("default"))
    await go.hears(go.channel("default"), wsmvc_server.probe)

    await wsmvc_server.broadcast(b"\x00\xff;binary", binary=True, exclude="carol")

    marker, rest = envelope(await go.next(go.channel("default")))
    assert marker.startswith(b"neffos(0x")
    assert rest == b"default;;chat;0;0;\x00\xff;binary"


async def test_a_several_rooms_broadcast_reaches_go_as_one_for_the_first_room(
    wsmvc_server: Wsmvc, go: GoServer
) -> None:
    """Go reads one room per envelope: it gets the first of ``rooms`` (its clients in the
    other rooms miss it, and it ignores the exclusions, which stay in the marker)."""
    await go.subscribe(go.channel("default"))
    await go.hears(go.channel("default"), wsmvc_server.probe)

    msg = Message(namespace="default", event="chat", body=b"red or blue")
    await wsmvc_server.server.broadcast(msg, rooms=["red", "blue"], exclude=["a", "b"])

    marker, rest = envelope(await go.next(go.channel("default")))
    assert marker.startswith(b"neffos(0x") and b"wsmvc:m:" in marker
    assert rest == b"default;red;chat;0;0;red or blue"


async def test_an_ask_from_the_broker_is_answered_on_its_token_channel(
    wsmvc_server: Wsmvc, go: GoServer, peers: Peers
) -> None:
    token = "R795678597771630724"  # what Go's Server.Ask sends through a broker (§12.5)
    # The answer's channel cannot be probed: subscribe first, the probes below take time.
    await go.subscribe(token, pattern=False)
    bob = await peers.connect(wsmvc_server.url, "bob", at="wsmvc")
    await wsmvc_server.exchange.flush(WAIT)
    await until_heard(lambda t: go.publish(go.channel(bob.id), go_probe(t)), [bob])

    await go.publish(go.channel(bob.id), f"{token};default;;question;0;0;how are you?".encode())

    answer = await go.next(token)
    assert answer == f"{token};default;;question;0;0;bob@wsmvc heard how are you?".encode()
