"""Every connection id and namespace works across servers, on both brokers (issue 10 §3).

Two servers in the test process share a real ``redis-server`` or ``nats-server``. Ids and
namespaces that NATS reads differently (``*`` and ``>`` are wildcards, ``.`` separates
tokens, whitespace is invalid) or that are empty used to be put into subjects as they
were: an id ``*`` received every broadcast twice, ``to="x y"`` never arrived. Now each
message arrives once, where it was sent; an id too long for the brokers is refused when
the client connects. Also here: the exchange's life (start, stop) and the cross-server
asks' channels.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator

import pytest

import wsmvc
from wsmvc import ConnectionClosed, Message, NSConn, Reject, Server
from wsmvc.exchange import NatsExchange, RedisExchange
from wsmvc.exchange import asks as asks_module
from wsmvc.exchange import broker as broker_module
from wsmvc.exchange.broker import MAX_ID_BYTES
from wsmvc.server import IdGenerator

from ..conftest import Serve
from ..wire_support import RawWS
from .conftest import WAIT, Broker, Peer, Peers, id_from_name, make_exchange, until_heard

TRICKY_IDS = ["*", ">", "x y", "a.b", "a.*.>", "neffos.x", "é ü", "~", "~fg", "_", "$SYS", "tab\t"]
TRICKY_NAMESPACES = ["*", ">", "a.b", "x y", "", "_", "~", "é"]


def chat(namespace: str, body: str) -> Message:
    return Message(namespace=namespace, event="chat", body=body.encode())


async def two_servers(
    broker: Broker, serve: Serve, namespaces: list[str], ids: IdGenerator = id_from_name
) -> tuple[Server, str]:
    """Server A (returned, to broadcast from) and the URL of server B (its connection ids
    from ``ids``), sharing ``broker``."""
    table: dict[str, dict[str, object]] = {ns: {} for ns in namespaces}
    a = Server(table, exchange=make_exchange(broker))  # type: ignore[arg-type]
    b = Server(table, exchange=make_exchange(broker), id_generator=ids)  # type: ignore[arg-type]
    await serve(a, path="/a")
    url_b = await serve(b, path="/b")
    for server in (a, b):  # both connected, or what B's clients get is not what is tested
        await server.exchange.flush(WAIT)  # type: ignore[union-attr]
    return a, url_b


async def test_every_id_gets_its_own_messages_once(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    a, url_b = await two_servers(broker, serve, ["default"])
    clients = [await peers.connect(url_b, name, exact_id=True, at="B") for name in TRICKY_IDS]
    assert [p.id for p in clients] == TRICKY_IDS
    for peer in clients:

        async def probe(token: str, peer: Peer = peer) -> None:
            await a.broadcast(
                Message(namespace="default", event="probe", body=token.encode()), to=peer.id
            )

        await until_heard(probe, [peer])
    for peer in clients:
        await a.broadcast(chat("default", f"to {peer.id}"), to=peer.id)
    await a.broadcast(chat("default", "all"))
    await a.broadcast(chat("default", "end"))
    for peer in clients:
        before_all = [m.text for m in await peer.until("all")]
        assert before_all == [f"to {peer.id}"], (peer.id, before_all)
        assert [m.text for m in await peer.until("end")] == [], peer.id


async def test_every_namespace_gets_its_own_broadcasts_once(broker: Broker, serve: Serve) -> None:
    a, url_b = await two_servers(broker, serve, TRICKY_NAMESPACES)
    heard: dict[str, list[str]] = defaultdict(list)
    arrived = asyncio.Event()

    def recorder(namespace: str) -> dict[str, object]:
        def on_chat(ns: NSConn, msg: Message) -> None:
            assert ns.namespace == namespace == msg.namespace
            heard[namespace].append(msg.text)
            arrived.set()

        return {"chat": on_chat}

    handlers = {ns: recorder(ns) for ns in TRICKY_NAMESPACES}
    async with await wsmvc.dial(url_b, handlers, timeout=WAIT) as client:  # type: ignore[arg-type]
        for ns in TRICKY_NAMESPACES:
            await client.connect(ns, timeout=WAIT)
        await ready(a, heard, arrived)
        heard.clear()
        for ns in TRICKY_NAMESPACES:
            await a.broadcast(chat(ns, f"in {ns!r}"))
        for ns in TRICKY_NAMESPACES:
            await a.broadcast(chat(ns, "end"))
        await until(arrived, lambda: all(heard[ns][-1:] == ["end"] for ns in TRICKY_NAMESPACES))
        assert {ns: heard[ns] for ns in TRICKY_NAMESPACES} == {
            ns: [f"in {ns!r}", "end"] for ns in TRICKY_NAMESPACES
        }


async def ready(a: Server, heard: dict[str, list[str]], arrived: asyncio.Event) -> None:
    """Broadcast probes in every namespace from ``a`` until each namespace heard one (on
    NATS a fresh subscription may miss what is published right after, see until_heard)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not all(any(t.startswith("probe") for t in heard[ns]) for ns in TRICKY_NAMESPACES):
        assert loop.time() < deadline, f"probes did not arrive: {dict(heard)}"
        for ns in TRICKY_NAMESPACES:
            await a.broadcast(chat(ns, "probe"))
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), 0.1)
        except asyncio.TimeoutError:
            pass


async def until(arrived: asyncio.Event, done: object) -> None:
    assert callable(done)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not done():
        arrived.clear()
        await asyncio.wait_for(arrived.wait(), deadline - loop.time())


async def test_an_id_too_long_for_the_brokers_is_refused_at_connect(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    _, url_b = await two_servers(broker, serve, ["default"])
    longest = "x" * MAX_ID_BYTES
    peer = await peers.connect(url_b, longest, exact_id=True, at="B")
    assert peer.id == longest
    with pytest.raises(Reject, match=f"longer than {MAX_ID_BYTES} bytes"):
        await peers.connect(url_b, longest + "x", exact_id=True, at="B")


async def test_asks_across_servers_with_the_same_counter_get_their_own_answers(
    broker: Broker, serve: Serve, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers whose token counters give the same value at once (their clocks agree)
    still ask on different channels: each gets its own client's answer. Server ids chosen
    by the application (the longest allowed, and one with every kind of character) work."""
    table: dict[str, dict[str, object]] = {"default": {}}
    ex_one = make_exchange(broker, server_id="s" * 64)
    ex_two = make_exchange(broker, server_id="Srv-2_b")
    one = Server(table, exchange=ex_one, id_generator=id_from_name)  # type: ignore[arg-type]
    two = Server(table, exchange=ex_two, id_generator=id_from_name)  # type: ignore[arg-type]
    url_one = await serve(one, path="/one")
    url_two = await serve(two, path="/two")
    on_one = await peers.connect(url_one, "on-one", at="one")
    on_two = await peers.connect(url_two, "on-two", at="two")
    monkeypatch.setattr(asks_module, "new_token", lambda: "42")
    question = Message(namespace="default", event="question")
    for asker, target in ((one, on_two), (two, on_one)):

        async def probe(token: str, asker: Server = asker, target: Peer = target) -> None:
            await asker.broadcast(
                Message(namespace="default", event="probe", body=token.encode()), to=target.id
            )

        await until_heard(probe, [target])
    answers = await asyncio.gather(
        one.ask(attrs_evolve(question, b"from one"), to=on_two.id, timeout=WAIT),
        two.ask(attrs_evolve(question, b"from two"), to=on_one.id, timeout=WAIT),
    )
    assert [m.text for m in answers] == [
        f"{on_two.label} heard from one",
        f"{on_one.label} heard from two",
    ]


@pytest.mark.parametrize(
    "server_id", ["", "a b", "a.b", "*", ">", "x(y", "s" * 65, "é", "tab\t", "a/b"]
)
@pytest.mark.parametrize("kind", [RedisExchange, NatsExchange])
def test_a_server_id_the_brokers_cannot_carry_is_refused_at_construction(
    kind: type[broker_module.BrokerExchange], server_id: str
) -> None:
    with pytest.raises(ValueError, match="server_id must be 1 to 64 ASCII letters"):
        kind("unused://", server_id=server_id)  # type: ignore[call-arg]


def attrs_evolve(msg: Message, body: bytes) -> Message:
    return Message(namespace=msg.namespace, event=msg.event, body=body)


@pytest.fixture
def exchange_of(broker: Broker) -> Iterator[wsmvc.exchange.broker.BrokerExchange]:
    yield make_exchange(broker)


async def test_publish_before_start_is_an_error(exchange_of: broker_module.BrokerExchange) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        exchange_of.publish(chat("default", "lost"))
    with pytest.raises(RuntimeError, match="not started"):
        await exchange_of.flush(WAIT)


async def test_stop_fails_what_waits(broker: Broker, serve: Serve, peers: Peers) -> None:
    """An ask across servers whose answer cannot come any more, and a flush waiting for
    a broker, end with ConnectionClosed when the exchange stops, not at their timeouts."""
    table: dict[str, dict[str, object]] = {"default": {}}
    exchange = make_exchange(broker)
    a = Server(table, exchange=exchange)  # type: ignore[arg-type]
    b = Server(table, exchange=make_exchange(broker), id_generator=id_from_name)  # type: ignore[arg-type]
    await serve(a, path="/a")
    url_b = await serve(b, path="/b")
    target = await peers.connect(url_b, "silent", at="B")

    async def probe(token: str) -> None:
        await a.broadcast(
            Message(namespace="default", event="probe", body=token.encode()), to=target.id
        )

    await until_heard(probe, [target])
    ask = asyncio.ensure_future(
        a.ask(Message(namespace="default", event="silence"), to=target.id, timeout=60)
    )
    await asyncio.sleep(0.2)  # the request is out; the answer never comes ("silence")
    assert not ask.done()
    await exchange.stop()
    with pytest.raises(ConnectionClosed, match="stopped"):
        await asyncio.wait_for(ask, WAIT)
    with pytest.raises(ConnectionClosed, match="stopped"):
        await exchange.flush(WAIT)
    exchange.publish(chat("default", "after stop"))  # dropped, counted, not queued
    assert exchange.dropped >= 1


@pytest.mark.parametrize(
    ("cls", "module", "extra"),
    [("RedisExchange", "redis", "redis"), ("NatsExchange", "nats", "nats")],
)
def test_a_missing_client_library_fails_at_construction_with_the_install_command(
    cls: str, module: str, extra: str
) -> None:
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        f"from wsmvc.exchange import {cls}\n"
        f"try:\n    {cls}()\nexcept ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{cls} needs the {module!r} package: pip install 'wsmvc[{extra}]'"


def test_the_broker_exchanges_import_lazily() -> None:
    code = (
        "import sys, wsmvc.exchange\n"
        "assert 'redis' not in sys.modules and 'nats' not in sys.modules\n"
        "from wsmvc.exchange import NatsExchange, RedisExchange\n"
        "print(NatsExchange.__module__, RedisExchange.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["wsmvc.exchange.nats", "wsmvc.exchange.redis"]


async def test_a_message_sent_right_after_the_ack_arrives(broker: Broker, serve: Serve) -> None:
    """The id's channel is subscribed and confirmed by the broker before ``A<id>``: a
    broadcast ``to=`` the id from another server, sent as soon as the client has its ack
    and its namespace (asked for in the same write as ``M``), is delivered. Without the
    confirmation the broker could get the publication before the subscription."""
    numbers = itertools.count()
    a, url_b = await two_servers(broker, serve, ["default"], lambda _: f"early-{next(numbers)}")
    await a.exchange.flush(WAIT)  # type: ignore[union-attr]
    for n in range(30):
        raw = await RawWS.open(url_b)
        try:
            await raw.send_raw(
                RawWS.frame(b"M", 0x1) + RawWS.frame(b"$c;default;;_OnNamespaceConnect;0;0;", 0x1)
            )
            assert await raw.recv_text() == f"Aearly-{n}"
            assert await raw.recv_text() == "$c;;;;;;"
            await a.broadcast(chat("default", f"hello {n}"), to=f"early-{n}")
            assert await raw.recv_text() == f";default;;chat;0;0;hello {n}"
        finally:
            raw.sock.close()


async def test_a_channel_the_broker_refuses_fails_that_message_only(
    nats_broker: Broker, serve: Serve, peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    """A cross-server ask whose token is no valid NATS subject (published straight to the
    broker, as a foreign server could): its answer cannot be published. That one answer
    is dropped and logged as an error; the connection to NATS stays up."""
    import nats

    a, url_b = await two_servers(nats_broker, serve, ["default"])
    target = await peers.connect(url_b, "target", exact_id=True, at="B")

    async def probe(token: str) -> None:
        msg = Message(namespace="default", event="probe", body=token.encode())
        await a.broadcast(msg, to=target.id)

    await until_heard(probe, [target])
    caplog.set_level(logging.INFO, logger="wsmvc.exchange")
    foreign = await nats.connect(nats_broker.url)
    try:
        await foreign.publish("neffos.target", b"bad token;default;;question;0;0;hi")
        await foreign.flush()
    finally:
        await foreign.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not any("bad token failed" in r.getMessage() for r in caplog.records):
        assert loop.time() < deadline, caplog.text
        await asyncio.sleep(0.01)
    assert not any("lost its broker" in r.getMessage() for r in caplog.records), caplog.text
    await until_heard(probe, [target])  # still flowing
