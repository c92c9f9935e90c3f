"""OpenTelemetry traces (wsmvc.tracing, issue 13): the spans a user would look at.

Real servers on loopback, the Python client (``wsmvc.dial``), the OpenTelemetry SDK with
its in-memory exporter behind a synchronous processor: a span is exported the moment it
ends. A handler's span ends before its answer is written, so once a client has the
answer to an ask, every span of the messages it sent before has ended (one connection's
messages are handled in order).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import wsmvc
from wsmvc import AskTimeout, Conn, EventError, Message, NSConn, Server, controller, event
from wsmvc.exchange import LocalExchange
from wsmvc.tracing import OpenTelemetryTracing

from .wire_support import Serve, T


class Spans:
    """A tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.app = self.provider.get_tracer("the application")

    def all(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.all()])
        return found[0]


@pytest.fixture
def spans() -> Iterator[Spans]:
    made = Spans()
    yield made
    made.provider.shutdown()


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert span.context is not None and parent.context is not None
    return (
        span.parent is not None
        and span.parent.span_id == parent.context.span_id
        and span.context.trace_id == parent.context.trace_id
    )


Dial = Callable[..., Awaitable[wsmvc.ClientConn]]


@pytest.fixture
async def dial() -> AsyncIterator[Dial]:
    clients: list[wsmvc.ClientConn] = []

    async def connect(url: str, namespaces: Any = None) -> wsmvc.ClientConn:
        client = await wsmvc.dial(url, namespaces or {"default": {}}, timeout=T, ask_timeout=T)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


def echo(ns: NSConn, msg: Message) -> bytes:
    return msg.body


def traced_server(spans: Spans, table: Any, **options: Any) -> Server:
    server = Server(table, **options)
    OpenTelemetryTracing(spans.provider).instrument(server)
    return server


# -- handlers ---------------------------------------------------------------------------------


async def test_an_event_span_is_current_in_its_handler(
    spans: Spans, serve: Serve, dial: Dial
) -> None:
    async def note(ns: NSConn, msg: Message) -> None:
        with spans.app.start_as_current_span("the application's own"):
            await asyncio.sleep(0)  # across an await too

    def sync_note(ns: NSConn, msg: Message) -> None:
        with spans.app.start_as_current_span("made in a sync handler"):
            pass

    server = traced_server(spans, {"default": {"note": note, "sync": sync_note, "echo": echo}})
    client = await dial(await serve(server))
    ns = await client.connect("default")
    await ns.join_room("lobby")
    ns.room("lobby").emit("note", "x")  # type: ignore[union-attr]
    ns.emit("sync", "yz")
    assert (await ns.ask("echo", "hello")).body == b"hello"

    handled = spans.one("default note")
    assert handled.kind is SpanKind.CONSUMER  # nobody waits for an answer
    assert handled.parent is None  # a trace of its own
    assert handled.status.status_code is StatusCode.UNSET
    assert dict(handled.attributes or {}) == {
        "messaging.system": "neffos",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "default",
        "messaging.neffos.event": "note",
        "messaging.neffos.room": "lobby",
        "messaging.neffos.connection.id": client.id,
        "messaging.message.body.size": 1,
        "messaging.neffos.outcome": "handled",
    }
    assert child_of(spans.one("the application's own"), handled)
    assert child_of(spans.one("made in a sync handler"), spans.one("default sync"))
    asked = spans.one("default echo")
    assert asked.kind is SpanKind.SERVER  # the client awaits the answer: its ask
    assert asked.attributes is not None
    assert asked.attributes["messaging.message.body.size"] == 5
    assert "messaging.neffos.room" not in asked.attributes
    assert len({s.context.trace_id for s in spans.all() if s.context}) == 3


async def test_a_raising_handler_has_an_error_span(spans: Spans, serve: Serve, dial: Dial) -> None:
    def broken(ns: NSConn, msg: Message) -> None:
        raise ValueError("a bug")

    async def refusing(ns: NSConn, msg: Message) -> None:
        await asyncio.sleep(0)
        raise EventError("not you")

    server = traced_server(spans, {"default": {"broken": broken, "refusing": refusing}})
    ns = await (await dial(await serve(server))).connect("default")
    with pytest.raises(EventError, match="internal server error"):
        await ns.ask("broken")
    with pytest.raises(EventError, match="not you"):
        await ns.ask("refusing")

    for name, kind, text in [
        ("default broken", "ValueError", "ValueError: a bug"),
        ("default refusing", "wsmvc.errors.EventError", "EventError: not you"),
    ]:
        span = spans.one(name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == text
        assert span.attributes is not None
        assert span.attributes["messaging.neffos.outcome"] == "failed"
        assert span.attributes["error.type"] == kind
        [recorded] = span.events
        assert recorded.name == "exception"
        assert recorded.attributes is not None
        assert recorded.attributes["exception.type"] == kind


async def test_controllers_dynamic_namespaces_and_later_registrations(
    spans: Spans, serve: Serve, dial: Dial
) -> None:
    @controller(namespace="chat")
    class Chat:
        conn: NSConn

        @event
        async def on_hello(self, msg: Message) -> str:
            return f"hello {self.conn.id}"

    def shout(ns: NSConn, msg: Message) -> bytes:
        ns.conn.server.broadcast(Message(namespace=ns.namespace, event="chat"))
        return b"sent"

    server = traced_server(spans, {"room-{id}": {"echo": echo, "shout": shout}})
    server.register(Chat)  # after instrument(): traced too
    client = await dial(await serve(server), {"chat": {}, "room-7": {}})
    chat = await client.connect("chat")
    room = await client.connect("room-7")
    assert (await chat.ask("OnHello")).text == f"hello {client.id}"
    assert (await room.ask("echo", "x")).body == b"x"

    assert spans.one("chat OnHello").kind is SpanKind.SERVER
    connect = spans.one("chat _OnNamespaceConnect")  # the controller's made there
    assert connect.attributes is not None
    assert connect.attributes["messaging.neffos.outcome"] == "handled"
    dynamic = spans.one("room-{id} echo")  # the pattern, never a client's name
    assert dynamic.attributes is not None
    assert dynamic.attributes["messaging.destination.name"] == "room-7"
    assert dynamic.attributes["messaging.destination.template"] == "room-{id}"
    assert (await room.ask("shout")).body == b"sent"
    broadcast = spans.one("broadcast room-{id}")
    assert broadcast.attributes is not None
    assert broadcast.attributes["messaging.destination.name"] == "room-7"
    assert broadcast.attributes["messaging.destination.template"] == "room-{id}"


async def test_an_event_links_to_the_upgrade_requests_span(
    spans: Spans, serve: Serve, dial: Dial
) -> None:
    """As opentelemetry-instrumentation-aiohttp-server does: a span current around the
    request handler, which serves the websocket for its whole life."""

    @web.middleware
    async def traced_requests(request: web.Request, handler: Any) -> web.StreamResponse:
        with spans.app.start_as_current_span("GET /ws", kind=SpanKind.SERVER):
            response: web.StreamResponse = await handler(request)
            return response

    server = traced_server(spans, {"default": {"echo": echo}})
    url = await serve(server, app=web.Application(middlewares=[traced_requests]))
    client = await dial(url)
    ns = await client.connect("default")
    await ns.ask("echo", "x")
    await client.close()
    await client.wait_closed()
    await server.close()

    upgrade = spans.one("GET /ws")
    asked = spans.one("default echo")
    assert asked.parent is None
    assert asked.context is not None and upgrade.context is not None
    assert asked.context.trace_id != upgrade.context.trace_id
    [link] = asked.links
    assert link.context.span_id == upgrade.context.span_id


# -- broadcasts and asks ----------------------------------------------------------------------


async def test_a_broadcast_is_a_producer_span_in_its_handlers_trace(
    spans: Spans, serve: Serve, dial: Dial
) -> None:
    def shout(ns: NSConn, msg: Message) -> bytes:
        ns.conn.server.broadcast(
            Message(namespace="default", event="chat", body=msg.body),
            rooms=iter(["red", "blue"]),  # read once, by the span and the broadcast
        )
        return b"sent"

    server = traced_server(spans, {"default": {"shout": shout}})
    url = await serve(server)
    heard: asyncio.Queue[Message] = asyncio.Queue()
    listener = await dial(url, {"default": {"chat": lambda ns, msg: heard.put_nowait(msg)}})
    await (await listener.connect("default")).join_room("blue")
    shouter = await (await dial(url)).connect("default")
    assert (await shouter.ask("shout", "hi")).body == b"sent"
    assert (await asyncio.wait_for(heard.get(), T)).room == "blue"

    broadcast = spans.one("broadcast default")
    assert broadcast.kind is SpanKind.PRODUCER
    assert child_of(broadcast, spans.one("default shout"))
    assert dict(broadcast.attributes or {}) == {
        "messaging.system": "neffos",
        "messaging.operation.name": "broadcast",
        "messaging.operation.type": "send",
        "messaging.destination.name": "default",
        "messaging.neffos.event": "chat",
        "messaging.neffos.rooms": ("red", "blue"),
        "messaging.message.body.size": 2,
        "messaging.neffos.delivered": 1,
    }


async def test_a_servers_asks_are_client_spans_with_their_timeout(
    spans: Spans, serve: Serve, dial: Dial
) -> None:
    async def question(ns: NSConn, msg: Message) -> bytes:
        answer = await ns.ask("quiz", "2+2?", timeout=T)
        try:
            await ns.ask("mute", timeout=0.2)  # the client never answers it
        except AskTimeout:
            return answer.body
        raise AssertionError("answered")

    async def via_server(ns: NSConn, msg: Message) -> bytes:
        server = ns.conn.server
        answer = await server.ask(Message(namespace="default", event="quiz"), to=ns.conn.id)
        return answer.body

    server = traced_server(
        spans, {"default": {"question": question, "via": via_server}}, ask_timeout=T
    )
    client = await dial(
        await serve(server),
        {"default": {"quiz": lambda ns, msg: "4", "mute": lambda ns, msg: None}},
    )
    ns = await client.connect("default")
    assert (await ns.ask("question")).body == b"4"
    assert (await ns.ask("via")).body == b"4"

    answered, timed_out, via = spans.named("ask default")
    for span in (answered, timed_out):
        assert span.kind is SpanKind.CLIENT
        assert child_of(span, spans.one("default question"))
    assert dict(answered.attributes or {}) == {
        "messaging.system": "neffos",
        "messaging.operation.name": "ask",
        "messaging.operation.type": "send",
        "messaging.destination.name": "default",
        "messaging.neffos.event": "quiz",
        "messaging.message.body.size": 4,
        "messaging.neffos.connection.id": client.id,
        "messaging.neffos.ask.timeout": T,
        "messaging.neffos.answer.body.size": 1,
        "messaging.neffos.outcome": "answered",
    }
    assert timed_out.attributes is not None
    assert timed_out.attributes["messaging.neffos.ask.timeout"] == 0.2
    assert timed_out.attributes["messaging.neffos.outcome"] == "timeout"
    assert timed_out.attributes["error.type"] == "wsmvc.errors.AskTimeout"
    assert timed_out.status.status_code is StatusCode.ERROR
    assert child_of(via, spans.one("default via"))  # server.ask: one span, not two
    assert via.attributes is not None and via.attributes["messaging.neffos.ask.timeout"] == T


async def test_a_broadcast_through_a_local_exchange_continues_the_trace(
    spans: Spans, serve: Serve, dial: Dial
) -> None:
    def shout(ns: NSConn, msg: Message) -> None:
        ns.conn.server.broadcast(Message(namespace="default", event="chat", body=msg.body))

    table = {"default": {"shout": shout}}
    a = traced_server(spans, table, exchange=LocalExchange())
    assert a.exchange is not None
    b = traced_server(spans, table, exchange=LocalExchange(a.exchange))  # type: ignore[arg-type]
    heard: asyncio.Queue[Message] = asyncio.Queue()
    listener = await dial(
        await serve(b, path="/b"), {"default": {"chat": lambda ns, msg: heard.put_nowait(msg)}}
    )
    await listener.connect("default")
    ns = await (await dial(await serve(a, path="/a"))).connect("default")
    ns.emit("shout", "hi")
    assert (await asyncio.wait_for(heard.get(), T)).body == b"hi"

    broadcast = spans.one("broadcast default")
    delivered = spans.one("deliver default")
    assert delivered.kind is SpanKind.CONSUMER
    assert child_of(delivered, broadcast)
    assert [link.context.span_id for link in delivered.links] == [broadcast.context.span_id]  # type: ignore[union-attr]
    assert delivered.attributes is not None
    assert delivered.attributes["messaging.neffos.delivered"] == 1
    assert delivered.attributes["messaging.operation.type"] == "process"
    assert broadcast.attributes is not None
    assert broadcast.attributes["messaging.neffos.delivered"] == 1  # the shouter, on A


# -- the cost of not tracing, and misuse ----------------------------------------------------------


def test_a_server_not_traced_has_nothing_in_its_way() -> None:
    exchange = LocalExchange()
    server = Server({"default": {"echo": echo}}, exchange=exchange)
    assert server.handlers.events("default")["echo"] is echo
    assert server._tracing is None and server._conn_class is Conn
    assert exchange.tracing is None


def test_instrumenting_twice_or_late_is_refused(spans: Spans) -> None:
    server = traced_server(spans, {"default": {"echo": echo}})
    with pytest.raises(ValueError, match="already traced"):
        OpenTelemetryTracing(spans.provider).instrument(server)
    wrapped = server.handlers.events("default")["echo"]
    assert wrapped is not echo and wrapped.__wrapped__ is echo  # type: ignore[attr-defined]


async def test_instrumenting_a_running_server_is_refused(spans: Spans, serve: Serve) -> None:
    server = Server({"default": {"echo": echo}})
    await serve(server)
    with pytest.raises(RuntimeError, match="before it starts"):
        OpenTelemetryTracing(spans.provider).instrument(server)


async def test_with_the_api_alone_nothing_is_recorded_and_all_works(
    serve: Serve, dial: Dial
) -> None:
    """No SDK configured (the global provider of this process is the API's default):
    spans are non-recording, handlers and broadcasts behave as without tracing."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    assert not isinstance(provider, TracerProvider)  # nobody set an SDK globally
    server = Server({"default": {"echo": echo}})
    OpenTelemetryTracing().instrument(server)
    ns = await (await dial(await serve(server))).connect("default")
    assert (await ns.ask("echo", "x")).body == b"x"
    server.broadcast(Message(namespace="default", event="chat"))
