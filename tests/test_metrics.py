"""Prometheus metrics (wsmvc.metrics, issue 13): what a user would check on a dashboard.

Real servers on loopback, real clients (``wsmvc.dial``), ``/metrics`` scraped over HTTP and
read with prometheus-client's own parser. "Everything before was handled" is an ask answered
after it (one client's messages are handled in order); a close is waited for through the
server's own ``on_disconnect`` hook, which the metrics run before.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import wsmvc
from wsmvc import Conn, EventError, Message, NSConn, Server
from wsmvc.exchange import LocalExchange
from wsmvc.metrics import OTHER, PrometheusMetrics

from .wire_support import Serve, T

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
        self.metrics = PrometheusMetrics(registry=CollectorRegistry(), events=["chat"])
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


async def test_a_connection_opened_then_closed(setup: Setup) -> None:
    client = await setup.dial()
    ns = await client.connect("default")
    await ns.join_room("lobby")
    _, samples = await setup.scrape()
    assert value(samples, "wsmvc_connections_open") == 1
    assert value(samples, "wsmvc_namespace_connections", namespace="default") == 1
    assert value(samples, "wsmvc_namespace_rooms", namespace="default") == 1
    assert value(samples, "wsmvc_connections_closed_total", reason="client_closed") == 0

    await client.close()
    conn = await asyncio.wait_for(setup.closed.get(), T)  # the user's hook, after the count
    assert conn.close_reason is wsmvc.CloseReason.CLIENT_CLOSED
    _, samples = await setup.scrape()
    assert value(samples, "wsmvc_connections_open") == 0
    assert value(samples, "wsmvc_namespace_connections", namespace="default") == 0
    assert value(samples, "wsmvc_connections_closed_total", reason="client_closed") == 1


async def test_a_kicked_client_is_counted_as_server_closed(setup: Setup) -> None:
    await (await setup.dial()).connect("default")
    (conn,) = setup.server.connections
    await conn.close()
    await asyncio.wait_for(setup.closed.get(), T)
    _, samples = await setup.scrape()
    assert value(samples, "wsmvc_connections_closed_total", reason="server_closed") == 1
    assert value(samples, "wsmvc_connections_closed_total", reason="client_closed") == 0


async def test_messages_outcomes_bytes_asks_and_durations(setup: Setup) -> None:
    client = await setup.dial()
    ns = await client.connect("default")
    for _ in range(3):
        assert (await ns.ask("echo", "hello", timeout=T)).body == b"hello"
    with pytest.raises(EventError):
        await ns.ask("boom", timeout=T)
    _, samples = await setup.scrape()
    echo_in = {"namespace": "default", "event": "echo"}
    assert value(samples, "wsmvc_messages_received_total", **echo_in, outcome="handled") == 3
    assert value(samples, "wsmvc_messages_sent_total", **echo_in) == 3  # the answers
    assert value(samples, "wsmvc_asks_received_total", **echo_in) == 3
    failed = {"namespace": "default", "event": "boom", "outcome": "failed"}
    assert value(samples, "wsmvc_messages_received_total", **failed) == 1
    assert value(samples, "wsmvc_handler_duration_seconds_count", **echo_in) == 3
    assert value(samples, "wsmvc_handler_duration_seconds_bucket", **echo_in, le="+Inf") == 3
    assert 0 < value(samples, "wsmvc_handler_duration_seconds_sum", **echo_in) < T
    # 3 bodies of 5 bytes each way (the connect request has none)
    assert value(samples, "wsmvc_body_bytes_received_total", namespace="default") == 15
    assert value(samples, "wsmvc_body_bytes_sent_total", namespace="default") == 15
    connects = {"namespace": "default", "event": "_OnNamespaceConnect", "outcome": "handled"}
    assert value(samples, "wsmvc_messages_received_total", **connects) == 1


async def test_server_asks_and_broadcasts_are_sent_messages(setup: Setup) -> None:
    got: asyncio.Queue[Message] = asyncio.Queue()
    for _ in range(2):
        client = await setup.dial({"default": {"chat": lambda ns, m: got.put_nowait(m)}})
        await client.connect("default")
    await setup.server.broadcast(Message(namespace="default", event="chat", body=b"hi"))
    for _ in range(2):
        assert (await asyncio.wait_for(got.get(), T)).body == b"hi"
    conn = setup.server.connections[0]
    nsconn = conn.namespace("default")
    assert nsconn is not None
    with pytest.raises(EventError):  # the Python client answers unknown events so
        await nsconn.ask("nothing-here", timeout=T)
    _, samples = await setup.scrape()
    chat = {"namespace": "default", "event": "chat"}  # labelled: PrometheusMetrics(events=)
    assert value(samples, "wsmvc_messages_sent_total", **chat) == 2
    asked = {"namespace": "default", "event": OTHER}
    assert value(samples, "wsmvc_asks_sent_total", **asked) == 1


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
    ((_, labels),) = setup.metrics._servers
    assert len(labels._cache["default"]) <= 64 + 2
    assert "x" * 1000 not in labels._cache["default"]
    text, samples = await setup.scrape()
    unknown = {"namespace": "default", "event": OTHER, "outcome": "unhandled"}
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


async def test_exchange_state_at_scrape_time(serve: Serve, session: aiohttp.ClientSession) -> None:
    made = Setup(serve, session, exchange=LocalExchange())
    await made.start()
    _, samples = await made.scrape()
    assert value(samples, "wsmvc_exchange_connected") == 1


async def test_without_an_exchange_no_exchange_metrics(setup: Setup) -> None:
    text, _ = await setup.scrape()
    assert "wsmvc_exchange" not in text


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


def test_the_tap_costs_little() -> None:
    """The per-message work: a ceiling that only a lock or an allocation per message
    would break (typically well under 1 µs; a shared host, so the bound is loose)."""
    import time

    from wsmvc.taps import Tapped

    server = Server({"default": {"echo": echo}})
    metrics = PrometheusMetrics(registry=None)
    metrics.instrument(server)
    (tap,) = list(server.handlers.taps)
    conn: Any = object()
    tapped_in = Tapped(
        "in", conn, Message("default", "", "echo", b"x", token="$1"), "handled", 1e-5
    )
    tapped_out = Tapped("out", conn, Message("default", "", "echo", b"x", token="$1"), "sent")
    call: Callable[[Tapped], object] = tap
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10_000):
            call(tapped_in)
            call(tapped_out)
        best = min(best, (time.perf_counter() - start) / 20_000)
    assert best < 5e-6, best
