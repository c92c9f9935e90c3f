"""Prometheus metrics (wsmvc.metrics, issue 13): what a user would check on a dashboard.

Real servers on loopback, real clients (``wsmvc.dial``, raw websockets where a client must
misbehave), a real ``redis-server`` for the exchange; ``/metrics`` scraped over HTTP and
read with prometheus-client's own parser. "Everything before was handled" is an ask
answered after it (one client's messages are handled in order); a close is waited for
through the server's own ``on_disconnect`` hook, ``conn.wait_closed()`` or the close
frame, all of which come after the close was counted.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import wsmvc
from wsmvc import AskTimeout, Conn, EventError, Message, NSConn, Reject, Server
from wsmvc.exchange import LocalExchange
from wsmvc.metrics import OTHER, PrometheusMetrics
from wsmvc.taps import Outcome, Tapped

from .exchange.conftest import WAIT, Broker, make_exchange, redis_broker
from .wire_support import RawWS, Serve, T, expect_close

__all__ = ["redis_broker"]  # the fixture, imported for the exchange test

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def echo(ns: NSConn, msg: Message) -> bytes:
    return msg.body


def boom(ns: NSConn, msg: Message) -> None:
    raise EventError("no")


class Setup:
    """A server instrumented with its own registry, served with ``/metrics`` beside it."""

    def __init__(self, serve: Serve, session: aiohttp.ClientSession, **options: Any) -> None:
        self.serve = serve
        self.session = session
        self.closed: asyncio.Queue[Conn] = asyncio.Queue()
        self.server = Server(
            {"default": {"echo": echo, "boom": boom}, "room-{id}": {"echo": echo}},
            on_disconnect=self.closed.put_nowait,
            **options,
        )
        self.metrics = PrometheusMetrics(registry=CollectorRegistry(), events=["chat", "question"])
        self.metrics.instrument(self.server)
        self.clients: list[wsmvc.ClientConn] = []

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics.handler)
        self.url = await self.serve(self.server, "/ws", app)
        self.metrics_url = self.url.replace("ws://", "http://").replace("/ws", "/metrics")

    async def dial(self, namespaces: Any = None) -> wsmvc.ClientConn:
        client = await wsmvc.dial(self.url, namespaces or {"default": {}}, timeout=T, ask_timeout=T)
        self.clients.append(client)
        return client

    async def scrape(self) -> tuple[str, Samples]:
        async with self.session.get(self.metrics_url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labs)[label] for (n, labs) in samples if n == name}


@pytest.fixture
async def setup(serve: Serve, session: aiohttp.ClientSession) -> AsyncIterator[Setup]:
    made = Setup(serve, session)
    await made.start()
    yield made
    for client in made.clients:
        await client.close()


DEFAULT = {"namespace": "default"}


# -- connections and their closes ------------------------------------------------------------


async def test_a_connection_opened_then_closed(setup: Setup) -> None:
    client = await setup.dial()
    ns = await client.connect("default")
    await ns.join_room("lobby")
    _, samples = await setup.scrape()
    assert value(samples, "wsmvc_connections_open") == 1
    assert value(samples, "wsmvc_namespace_connections", **DEFAULT) == 1
    assert value(samples, "wsmvc_namespace_rooms", **DEFAULT) == 1
    assert value(samples, "wsmvc_connections_closed_total", reason="client_closed") == 0

    await client.close()
    conn = await asyncio.wait_for(setup.closed.get(), T)
    assert conn.close_reason is wsmvc.CloseReason.CLIENT_CLOSED
    _, samples = await setup.scrape()
    assert value(samples, "wsmvc_connections_open") == 0
    assert value(samples, "wsmvc_namespace_connections", **DEFAULT) == 0
    assert value(samples, "wsmvc_connections_closed_total", reason="client_closed") == 1


async def test_a_kicked_client_is_counted_as_server_closed(setup: Setup) -> None:
    await (await setup.dial()).connect("default")
    (conn,) = setup.server.connections
    await conn.close()
    await asyncio.wait_for(setup.closed.get(), T)
    _, samples = await setup.scrape()
    assert value(samples, "wsmvc_connections_closed_total", reason="server_closed") == 1
    assert value(samples, "wsmvc_connections_closed_total", reason="client_closed") == 0


async def test_refused_and_never_opened_connections_are_counted(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Connections on_disconnect never hears of: one on_connect refused, one that never
    sent its ``M`` (the handshake timed out)."""
    refused: list[Conn] = []

    def on_connect(conn: Conn) -> None:
        if conn.request is not None and conn.request.query.get("who") == "mallory":
            refused.append(conn)
            raise Reject("not today")

    made = Setup(serve, session, on_connect=on_connect, handshake_timeout=0.2)
    await made.start()
    with pytest.raises(Reject):
        await wsmvc.dial(made.url + "?who=mallory", {"default": {}}, timeout=T)
    [conn] = refused
    await asyncio.wait_for(conn.wait_closed(), T)
    async with session.ws_connect(made.url) as silent:  # upgrades, never says M
        await expect_close(silent)
    _, samples = await made.scrape()
    assert value(samples, "wsmvc_connections_closed_total", reason="refused") == 1
    assert value(samples, "wsmvc_connections_closed_total", reason="handshake_timeout") == 1
    assert made.closed.empty()  # on_disconnect ran for neither


async def test_a_client_that_stops_reading_is_counted_as_a_send_buffer_overflow(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    made = Setup(serve, session, send_buffer_limit=64 * 1024, heartbeat=None)
    await made.start()
    stalled = await RawWS.open(made.url, rcvbuf=4096)
    try:
        await stalled.send("M")
        conn_id = (await stalled.recv_text())[1:]
        await stalled.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await stalled.recv_text() == "$c;;;;;;"
        [conn] = made.server.get_connections(conn_id)
        sent = 0
        while not conn.closed and sent < 4000:
            conn.write(Message("default", event="chat", body=os.urandom(16 * 1024), binary=True))
            sent += 1
            await asyncio.sleep(0)  # a later loop step: the unread bytes are the peer's doing
        assert conn.closed, sent
        assert await asyncio.wait_for(made.closed.get(), T) is conn
    finally:
        stalled.abort()
    _, samples = await made.scrape()
    assert value(samples, "wsmvc_connections_closed_total", reason="send_buffer_overflow") == 1
    assert value(samples, "wsmvc_messages_sent_total", **DEFAULT, event="chat") == sent


# -- messages, asks, broadcasts ------------------------------------------------------------------


async def test_messages_outcomes_bytes_asks_and_durations(setup: Setup) -> None:
    client = await setup.dial()
    ns = await client.connect("default")
    for _ in range(3):
        assert (await ns.ask("echo", "hello", timeout=T)).body == b"hello"
    with pytest.raises(EventError):
        await ns.ask("boom", timeout=T)
    _, samples = await setup.scrape()
    echo_in = {**DEFAULT, "event": "echo"}
    assert value(samples, "wsmvc_messages_received_total", **echo_in, outcome="handled") == 3
    assert value(samples, "wsmvc_messages_sent_total", **echo_in) == 3  # the answers
    assert value(samples, "wsmvc_asks_received_total", **echo_in) == 3
    boom_in = {**DEFAULT, "event": "boom"}
    assert value(samples, "wsmvc_messages_received_total", **boom_in, outcome="failed") == 1
    assert value(samples, "wsmvc_messages_sent_total", **boom_in) == 1  # the error answer
    assert value(samples, "wsmvc_handler_duration_seconds_count", **echo_in) == 3
    assert value(samples, "wsmvc_handler_duration_seconds_bucket", **echo_in, le="+Inf") == 3
    assert 0 < value(samples, "wsmvc_handler_duration_seconds_sum", **echo_in) < T
    # 3 bodies of 5 bytes each way (the connect request has none, an error answer neither)
    assert value(samples, "wsmvc_body_bytes_received_total", **DEFAULT) == 15
    assert value(samples, "wsmvc_body_bytes_sent_total", **DEFAULT) == 15
    connects = {**DEFAULT, "event": "_OnNamespaceConnect", "outcome": "handled"}
    assert value(samples, "wsmvc_messages_received_total", **connects) == 1
    assert value(samples, "wsmvc_asks_received_total", **DEFAULT, event="_OnNamespaceConnect") == 0


async def test_server_asks_answered_refused_and_timed_out(setup: Setup) -> None:
    release = asyncio.Event()

    async def question(ns: NSConn, msg: Message) -> str:
        if msg.text == "wait":
            await release.wait()  # past the server's timeout
        return "42"

    client = await setup.dial({"default": {"question": question}})
    await client.connect("default")
    nsconn = setup.server.connections[0].namespace("default")
    assert nsconn is not None
    assert (await nsconn.ask("question", "now", timeout=T)).text == "42"
    with pytest.raises(EventError):  # the Python client answers an event it has no handler for
        await nsconn.ask("nothing-here", timeout=T)
    with pytest.raises(AskTimeout):
        await nsconn.ask("question", "wait", timeout=0.05)
    release.set()
    _, samples = await setup.scrape()
    asked = {**DEFAULT, "event": "question"}  # labelled: PrometheusMetrics(events=)
    assert value(samples, "wsmvc_asks_sent_total", **asked) == 2
    assert value(samples, "wsmvc_ask_timeouts_total", **asked) == 1
    assert value(samples, "wsmvc_messages_sent_total", **asked) == 2
    assert value(samples, "wsmvc_asks_sent_total", **DEFAULT, event=OTHER) == 1
    assert value(samples, "wsmvc_ask_timeouts_total", **DEFAULT, event=OTHER) == 0


async def test_broadcasts_are_counted_once_and_their_deliveries_per_receiver(
    setup: Setup,
) -> None:
    got: asyncio.Queue[Message] = asyncio.Queue()
    for _ in range(2):
        client = await setup.dial({"default": {"chat": lambda ns, m: got.put_nowait(m)}})
        await client.connect("default")
    setup.server.broadcast(Message(namespace="default", event="chat", body=b"hi"))
    setup.server.broadcast(Message(namespace="default", event="chat", room="empty", body=b"x"))
    for _ in range(2):
        assert (await asyncio.wait_for(got.get(), T)).body == b"hi"
    _, samples = await setup.scrape()
    chat = {**DEFAULT, "event": "chat"}
    assert value(samples, "wsmvc_broadcasts_total", **chat) == 2
    assert value(samples, "wsmvc_broadcast_deliveries_total", **chat) == 2
    assert value(samples, "wsmvc_messages_sent_total", **chat) == 2
    assert value(samples, "wsmvc_body_bytes_sent_total", **DEFAULT) == 4


async def test_unknown_names_stay_under_one_label(setup: Setup) -> None:
    """10,000 distinct event names a client made up: one series, a small exposition."""
    client = await setup.dial()
    ns = await client.connect("default")
    for i in range(10_000):
        ns.emit(f"made-up-{i}", b"x")
    ns.emit("x" * 1000, b"")  # a long name is never remembered
    assert (await ns.ask("echo", "sync", timeout=T)).body == b"sync"
    # The names are not kept either: the label cache (cleared at each scrape) holds the
    # declared names seen and a few short undeclared ones.
    (meter,) = setup.metrics._meters
    assert len(meter._cache["default"]) <= 64 + 2
    assert "x" * 1000 not in meter._cache["default"]
    text, samples = await setup.scrape()
    unknown = {**DEFAULT, "event": OTHER, "outcome": "unhandled"}
    assert value(samples, "wsmvc_messages_received_total", **unknown) == 10_001
    events = names(samples, "wsmvc_messages_received_total", "event")
    assert events == {"_OnNamespaceConnect", "echo", OTHER}
    assert "made-up" not in text
    assert len(text) < 20_000, len(text)


async def test_unknown_namespaces_and_dynamic_ones(setup: Setup) -> None:
    client = await setup.dial({"room-7": {}, "room-8": {}})
    for name in ("room-7", "room-8"):
        ns = await client.connect(name)
        assert (await ns.ask("echo", "x", timeout=T)).body == b"x"
    with pytest.raises(EventError):
        await client.connect("nowhere")
    _, samples = await setup.scrape()
    assert value(samples, "wsmvc_namespace_connections", namespace="room-{id}") == 2
    handled = {"namespace": "room-{id}", "event": "echo", "outcome": "handled"}
    assert value(samples, "wsmvc_messages_received_total", **handled) == 2
    namespaces = names(samples, "wsmvc_messages_received_total", "namespace")
    assert namespaces <= {"default", "room-{id}", OTHER}
    assert "nowhere" not in namespaces


# -- the exchange --------------------------------------------------------------------------------


async def test_broadcasts_through_a_local_exchange(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    first = LocalExchange()
    a = Setup(serve, session, exchange=first)
    b = Setup(serve, session, exchange=LocalExchange(first))
    await a.start()
    await b.start()
    got: asyncio.Queue[Message] = asyncio.Queue()
    client = await b.dial({"default": {"chat": lambda ns, m: got.put_nowait(m)}})
    await client.connect("default")
    a.server.broadcast(Message(namespace="default", event="chat", body=b"from a"))
    assert (await asyncio.wait_for(got.get(), T)).body == b"from a"
    chat = {**DEFAULT, "event": "chat"}
    _, on_a = await a.scrape()
    assert value(on_a, "wsmvc_exchange_connected") == 1
    assert value(on_a, "wsmvc_broadcasts_total", **chat) == 1
    assert value(on_a, "wsmvc_exchange_published_total", **chat) == 1
    assert value(on_a, "wsmvc_broadcast_deliveries_total", **chat) == 0
    _, on_b = await b.scrape()
    assert value(on_b, "wsmvc_broadcasts_total", **chat) == 0
    assert value(on_b, "wsmvc_exchange_received_total", **chat) == 1
    assert value(on_b, "wsmvc_broadcast_deliveries_total", **chat) == 1
    for made in (a, b):
        for client in made.clients:
            await client.close()


async def test_a_redis_exchange_that_lags_then_drops(
    redis_broker: Broker, serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Redis hangs (SIGSTOP): one publication waits for it, the next ones queue up to
    ``max_pending`` (100, the one in flight included), the rest are dropped."""
    exchange = make_exchange(redis_broker, max_pending=100)
    made = Setup(serve, session, exchange=exchange)
    await made.start()
    await exchange.flush(WAIT)  # connected, subscriptions done: nothing under way
    redis_broker.pause()
    try:
        for n in range(300):
            made.server.broadcast(Message(namespace="default", event="chat", body=b"%d" % n))
        _, samples = await made.scrape()
    finally:
        redis_broker.resume()
    assert value(samples, "wsmvc_exchange_connected") == 1  # nothing has timed out yet
    assert value(samples, "wsmvc_exchange_published_total", **DEFAULT, event="chat") == 300
    assert value(samples, "wsmvc_exchange_pending_broadcasts") == 100
    assert value(samples, "wsmvc_exchange_dropped_broadcasts") == 200
    assert value(samples, "wsmvc_exchange_dropped_total") == 200
    await exchange.flush(WAIT)
    _, samples = await made.scrape()
    assert value(samples, "wsmvc_exchange_pending_broadcasts") == 0
    assert value(samples, "wsmvc_exchange_dropped_total") == 200


async def test_without_an_exchange_no_exchange_metrics(setup: Setup) -> None:
    text, _ = await setup.scrape()
    assert "wsmvc_exchange" not in text


# -- the meter and taps ----------------------------------------------------------------------------


class Meter:
    """A meter recording what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def received(self, msg: Message, outcome: Outcome, duration: float, answer: int) -> None:
        self.calls.append(("received", msg.event, outcome, answer))

    def sent(self, namespace: str, event: str, size: int, ask: bool) -> None:
        self.calls.append(("sent", event, size, ask))

    def unanswered(self, namespace: str, event: str) -> None:
        self.calls.append(("unanswered", event))

    def closed(self, conn: Conn) -> None:
        self.calls.append(("closed", conn.close_reason))


class Broken(Meter):
    def received(self, msg: Message, outcome: Outcome, duration: float, answer: int) -> None:
        raise RuntimeError("meter broke")


async def test_meters_beside_taps(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """What a meter is told, with a tap beside it that still gets the answers as messages
    (made by the dispatcher, not parsed back), and a broken meter that stops nothing."""
    tapped: list[Tapped] = []
    closed = asyncio.Event()
    server = Server(
        {"default": {"echo": echo, "boom": boom}},
        taps=[tapped.append],
        on_disconnect=lambda conn: closed.set(),
    )
    meter = server.handlers.taps.add_meter(Meter())
    server.handlers.taps.add_meter(Broken())
    with pytest.raises(ValueError, match="already a meter"):
        server.handlers.taps.add_meter(meter)
    client = await wsmvc.dial(await serve(server), {"default": {}}, timeout=T)
    ns = await client.connect("default", timeout=T)
    assert (await ns.ask("echo", "hey", timeout=T)).text == "hey"
    with pytest.raises(EventError, match=r"^no$"):
        await ns.ask("boom", timeout=T)
    ns.emit("echo", "no answer asked")  # the handler's return value still answers it
    assert (await ns.ask("echo", "sync", timeout=T)).text == "sync"
    with pytest.raises(EventError):
        await server.connections[0].namespace("default").ask("x", timeout=T)  # type: ignore[union-attr]
    await client.close()
    await asyncio.wait_for(closed.wait(), T)
    assert isinstance(meter, Meter)
    assert meter.calls == [
        ("received", "_OnNamespaceConnect", "handled", -1),  # its reply: an ack, no event
        ("received", "echo", "handled", 3),
        ("received", "boom", "failed", 0),
        ("received", "echo", "handled", 15),
        ("received", "echo", "handled", 4),
        ("sent", "x", 0, True),  # the client's error answer resolves it: not a message
        ("closed", wsmvc.CloseReason.CLIENT_CLOSED),
    ]
    answers = [
        (t.message.event, t.message.text, t.message.err) for t in tapped if t.direction == "out"
    ]
    assert answers == [
        ("echo", "hey", ""),
        ("boom", "", "no"),
        ("echo", "no answer asked", ""),
        ("echo", "sync", ""),
        ("x", "", ""),
    ]
    echoed = next(t for t in tapped if t.direction == "out")
    asked = next(t for t in tapped if t.direction == "in" and t.message.event == "echo")
    assert echoed.message.token == asked.message.token != ""
    logged = [r for r in caplog.records if "meter" in r.getMessage()]
    assert len(logged) == 1 and "(1 failure(s)" in logged[0].getMessage(), logged


def test_the_default_registry_and_instrumenting_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    import prometheus_client

    # The process's default registry, standing in for prometheus_client.REGISTRY (which
    # a docs example may have registered into already).
    default = CollectorRegistry()
    monkeypatch.setattr(prometheus_client, "REGISTRY", default)
    metrics = PrometheusMetrics()
    assert metrics.registry is default
    assert b"wsmvc_connections_open 0.0" in prometheus_client.generate_latest(default)
    server = Server({"default": {"echo": echo}})
    metrics.instrument(server)
    with pytest.raises(ValueError, match="already instrumented"):
        metrics.instrument(server)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusMetrics()  # one collector of these names per registry


def test_a_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"wsmvc\[prometheus\]"):
        PrometheusMetrics(registry=None)


def test_the_meter_costs_little() -> None:
    """The per-message work: a ceiling that only a lock or an allocation per message
    would break (typically about 0.5 µs a round trip; a shared host, so the bound is
    loose)."""
    server = Server({"default": {"echo": echo}})
    PrometheusMetrics(registry=None).instrument(server)
    (meter,) = server.handlers.taps.meters
    request = Message("default", "", "echo", b"x", token="$1")
    received: Callable[..., None] = meter.received
    best = float("inf")
    for _ in range(5):
        start = time.thread_time()
        for _ in range(10_000):
            received(request, "handled", 1e-5, 1)
        best = min(best, (time.thread_time() - start) / 10_000)
    assert best < 5e-6, best


def test_describe_and_collect_without_a_server() -> None:
    """A collector without a server gives every family (describe) and their values, zero
    or none (collect); the exchange's only where a server has an exchange."""
    metrics = PrometheusMetrics(registry=None)
    described = {family.name for family in metrics.describe()}
    collected = {family.name for family in metrics.collect()}
    assert "wsmvc_ask_timeouts" in described and "wsmvc_ask_timeouts" in collected
    assert "wsmvc_exchange_published" in described - collected
