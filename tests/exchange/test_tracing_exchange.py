"""One trace across servers (wsmvc.tracing, issue 13): a broadcast from server A shows up in
server B's trace, through a real Redis and a real NATS.

Two servers in this process, each with its own exchange to the broker; the SDK's in-memory
exporter behind a synchronous processor. B's delivery span ends in the step that writes the
message to B's client, so once that client has the message, the span is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import wsmvc
from wsmvc import Message, NSConn, Server
from wsmvc.exchange.broker import BrokerExchange
from wsmvc.exchange.markers import Marker, format_marker, parse_marker
from wsmvc.tracing import OpenTelemetryTracing

from ..conftest import Serve
from .conftest import WAIT, Broker, id_from_name, make_exchange

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # the W3C example

# -- the marker ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "marker",
    [
        Marker("s1", traceparent=TRACE),
        Marker("s1", seq=7, traceparent=TRACE),
        Marker("s1", "ann0xc0ffee", binary=True, seq=8, traceparent=TRACE),
        Marker("s1", exclude_id="bob", seq=9, traceparent=TRACE),
        Marker("s1", exclude_id="bob", traceparent=TRACE),
        Marker("s1", many=(("red", "blue"), ("bob",), ("green",)), seq=10, traceparent=TRACE),
    ],
)
def test_a_marker_carries_a_traceparent(marker: Marker) -> None:
    text = format_marker(marker)
    assert text.endswith(f":{TRACE}")
    assert ";" not in text  # it stays in the token slot
    assert parse_marker(text) == marker


@pytest.mark.parametrize(
    ("text", "marker"),
    [  # as servers before the field wrote them
        ("neffos(0xs1())", Marker("s1")),
        ("neffos(0xs1(ann0x1))", Marker("s1", "ann0x1")),
        ("neffos(0xs1())wsmvc:::42", Marker("s1", seq=42)),
        ("neffos(0xs1())wsmvc:b:", Marker("s1", binary=True)),
        ("neffos(0xs1())wsmvc:x:Ym9i:5", Marker("s1", exclude_id="bob", seq=5)),
        (
            "neffos(0xs1())wsmvc:m:eyJyIjpbInJlZCJdLCJ4IjpbXSwieHIiOltdfQ==:6",
            Marker("s1", many=(("red",), (), ()), seq=6),
        ),
    ],
)
def test_markers_without_a_traceparent_parse_as_before(text: str, marker: Marker) -> None:
    assert parse_marker(text) == marker
    assert format_marker(marker) == text


def test_a_traceparent_not_of_the_w3c_form_is_refused() -> None:
    for bad in [TRACE.upper(), TRACE[:-1], TRACE + "-x", "00-abc-def-01"]:
        with pytest.raises(ValueError, match="not a W3C traceparent"):
            format_marker(Marker("s1", seq=1, traceparent=bad))
        assert parse_marker(f"neffos(0xs1())wsmvc:::1:{bad}") is None


# -- two servers, one broker ----------------------------------------------------------------------


class Spans:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def one(self, name: str) -> ReadableSpan:
        found = [s for s in self.exporter.get_finished_spans() if s.name == name]
        assert len(found) == 1, (name, [s.name for s in self.exporter.get_finished_spans()])
        return found[0]


@pytest.fixture
def spans() -> Iterator[Spans]:
    made = Spans()
    yield made
    made.provider.shutdown()


def shout(ns: NSConn, msg: Message) -> bytes:
    """Broadcast ``chat`` to the namespace, excluding the ids the body names."""
    ns.conn.server.broadcast(
        Message(namespace="default", event="chat", body=msg.body),
        exclude=msg.text.split() or None,
    )
    return b"sent"


class Listener:
    """A client named ``name`` whose ``chat`` events queue up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.heard: asyncio.Queue[Message] = asyncio.Queue()
        self.client: wsmvc.ClientConn | None = None

    async def connect(self, url: str, **handlers: Any) -> None:
        table = {"default": {"chat": lambda ns, msg: self.heard.put_nowait(msg), **handlers}}
        self.client = await wsmvc.dial(
            f"{url}?X-Websocket-Header-X-Name={self.name}", table, timeout=WAIT
        )
        await self.client.connect("default")

    async def until(self, body: str) -> list[str]:
        """The bodies heard, up to the first ``body``."""
        got: list[str] = []
        while not got or got[-1] != body:
            got.append((await asyncio.wait_for(self.heard.get(), WAIT)).text)
        return got


class Cluster:
    def __init__(self, broker: Broker, serve: Serve, spans: Spans) -> None:
        self.broker, self.serve, self.spans = broker, serve, spans
        self.listeners: list[Listener] = []

    async def server(self, name: str, *, traced: bool) -> tuple[Server, BrokerExchange, str]:
        exchange = make_exchange(self.broker)
        server = Server({"default": {"shout": shout}}, exchange=exchange, id_generator=id_from_name)
        if traced:
            OpenTelemetryTracing(self.spans.provider).instrument(server)
        url = await self.serve(server, path=f"/{name}")
        return server, exchange, url

    async def listener(self, url: str, name: str, **handlers: Any) -> Listener:
        listener = Listener(name)
        self.listeners.append(listener)
        await listener.connect(url, **handlers)
        return listener

    async def reached(self, sender: Server, listeners: list[Listener], by_id: bool = False) -> None:
        """Probe until each listener heard ``sender``'s broadcasts (to the namespace, or to
        its id): on NATS a subscription just confirmed may miss the first ones (see
        ``until_heard`` in conftest). Then a last one that every probe came before, and
        the spans of all that are forgotten."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        waiting = listeners
        while waiting:
            assert loop.time() < deadline, f"no probe reached {[w.name for w in waiting]}"
            for to in [w.name for w in waiting] if by_id else [None]:
                sender.broadcast(Message(namespace="default", event="chat", body=b"probe"), to=to)
            missed = []
            for listener in waiting:
                try:
                    await asyncio.wait_for(listener.heard.get(), 0.2)
                except asyncio.TimeoutError:
                    missed.append(listener)
            waiting = missed
        for to in [w.name for w in listeners] if by_id else [None]:
            sender.broadcast(Message(namespace="default", event="chat", body=b"ready"), to=to)
        for listener in listeners:
            await listener.until("ready")
        self.spans.exporter.clear()


@pytest.fixture
async def cluster(broker: Broker, serve: Serve, spans: Spans) -> AsyncIterator[Cluster]:
    made = Cluster(broker, serve, spans)
    yield made
    for listener in made.listeners:
        if listener.client is not None:
            await listener.client.close()


async def test_a_broadcast_from_a_continues_its_trace_on_b(cluster: Cluster, spans: Spans) -> None:
    a, exchange_a, url_a = await cluster.server("a", traced=True)
    _, _, url_b = await cluster.server("b", traced=True)
    ann = await cluster.listener(url_a, "ann")
    bob = await cluster.listener(url_b, "bob")
    await cluster.reached(a, [ann, bob])
    assert ann.client is not None
    shouter = ann.client.namespace("default")
    assert shouter is not None

    assert (await shouter.ask("shout", "")).body == b"sent"
    assert await bob.until("") == [""]

    handled = spans.one("default shout")
    broadcast = spans.one("broadcast default")
    delivered = spans.one("deliver default")
    assert handled.parent is None
    assert broadcast.kind is SpanKind.PRODUCER and delivered.kind is SpanKind.CONSUMER
    assert handled.context is not None and broadcast.context is not None
    assert delivered.context is not None and delivered.parent is not None
    trace_id = handled.context.trace_id
    assert broadcast.context.trace_id == delivered.context.trace_id == trace_id
    assert broadcast.parent is not None and broadcast.parent.span_id == handled.context.span_id
    assert delivered.parent.span_id == broadcast.context.span_id
    assert delivered.parent.is_remote
    [link] = delivered.links
    assert link.context.span_id == broadcast.context.span_id
    assert broadcast.attributes is not None and delivered.attributes is not None
    message_id = broadcast.attributes["messaging.message.id"]
    assert isinstance(message_id, str) and message_id.startswith(f"{exchange_a.id}:")
    assert delivered.attributes["messaging.message.id"] == message_id
    assert delivered.attributes["messaging.neffos.delivered"] == 1
    assert delivered.attributes["messaging.destination.name"] == "default"


@pytest.mark.parametrize("traced", ["sender only", "receiver only"])
async def test_a_cluster_half_traced_still_excludes(
    cluster: Cluster, spans: Spans, traced: str
) -> None:
    """A receiver not traced reads the wsmvc part of a marker with a traceparent (an
    exclusion by id); a traced receiver of an untraced sender starts a trace of its own."""
    a, _, url_a = await cluster.server("a", traced=traced == "sender only")
    _, _, url_b = await cluster.server("b", traced=traced == "receiver only")
    ann = await cluster.listener(url_a, "ann")
    bob = await cluster.listener(url_b, "bob")
    cid = await cluster.listener(url_b, "cid")
    await cluster.reached(a, [ann, bob, cid])
    assert ann.client is not None
    shouter = ann.client.namespace("default")
    assert shouter is not None

    assert (await shouter.ask("shout", "bob")).body == b"sent"
    assert (await shouter.ask("shout", "")).body == b"sent"
    assert await cid.until("") == ["bob", ""]
    assert await bob.until("") == [""]  # not the one excluding bob

    if traced == "receiver only":
        first, second = [
            s for s in spans.exporter.get_finished_spans() if s.name == "deliver default"
        ]
        for span in (first, second):
            assert span.parent is None and not span.links
    else:
        assert not [s for s in spans.exporter.get_finished_spans() if s.name.startswith("deliver")]


async def test_an_ask_across_servers_is_a_client_span(cluster: Cluster, spans: Spans) -> None:
    a, _, _ = await cluster.server("a", traced=True)
    _, _, url_b = await cluster.server("b", traced=True)
    bob = await cluster.listener(url_b, "bob", quiz=lambda ns, msg: "4")
    await cluster.reached(a, [bob], by_id=True)

    answer = await a.ask(Message(namespace="default", event="quiz"), to="bob", timeout=WAIT)
    assert answer.body == b"4"
    asked, forwarded = sorted(
        (s for s in spans.exporter.get_finished_spans() if s.name == "ask default"),
        key=lambda s: s.start_time or 0,
    )
    assert asked.attributes is not None and forwarded.attributes is not None
    assert asked.attributes["messaging.neffos.ask.remote"] is True
    assert asked.attributes["messaging.neffos.connection.id"] == "bob"
    assert asked.attributes["messaging.neffos.outcome"] == "answered"
    assert asked.kind is SpanKind.CLIENT
    # B asks bob for A: its own span (an ask's request has no room for a trace context)
    assert "messaging.neffos.ask.remote" not in forwarded.attributes
    assert forwarded.attributes["messaging.neffos.outcome"] == "answered"
