"""OpenTelemetry traces of a wsmvc server (``pip install 'wsmvc[opentelemetry]'``).

::

    from wsmvc.tracing import OpenTelemetryTracing

    OpenTelemetryTracing().instrument(server)      # before the server starts

Only the OpenTelemetry *API* is used: spans go to the tracer provider the application set
up (``opentelemetry.trace.set_tracer_provider``, or ``tracer_provider=``); without an SDK
they record nothing. The spans follow the messaging semantic conventions
(``messaging.system`` ``"neffos"``); what each says, and what it costs: ``docs/tracing.md``.

* ``{namespace} {event}`` - each event a handler of the server handles (the handler-table
  entries are wrapped: a server not instrumented runs not one instruction more per
  message). CONSUMER; SERVER when the peer awaits the answer (its ask); INTERNAL for an
  event this side fired itself (``msg.local``: a ``join_room`` from the server), which is
  a child of the span current then. A peer's event starts a trace of its own (a websocket
  lives for hours: not a child of the upgrade request's span, which it links to when one
  is current, as opentelemetry-instrumentation-aiohttp-server makes). The span is current
  while the handler runs: the application's own spans there are its children.
* ``broadcast {namespace}`` - PRODUCER, for :meth:`Server.broadcast <wsmvc.Server.broadcast>`.
  With an exchange, its W3C trace context travels in the publication's marker
  (:mod:`wsmvc.exchange.markers`), so that:
* ``deliver {namespace}`` - CONSUMER, on a server delivering another server's broadcast,
  is a child of the sender's ``broadcast`` span (one trace across the cluster) and links
  to it (the conventions' link to the message's creation context).
* ``ask {namespace}`` - CLIENT, for an ask of the server's (``nsconn.ask``,
  :meth:`Server.ask <wsmvc.Server.ask>`, across servers too), with its timeout.

A dynamic namespace appears in span names as its pattern (``room-{id}``), never as the
names clients make up; the event of a ``_OnAnyEvent`` handler's span is ``_OnAnyEvent``
in its name and the real one in ``messaging.neffos.event``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar, cast

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.util.types import AttributeValue
except ImportError as exc:  # pragma: no cover - the extra is installed where tests run
    raise ImportError(
        "wsmvc.tracing needs the 'opentelemetry-api' package: pip install 'wsmvc[opentelemetry]'"
    ) from exc

from . import __version__
from .audience import Audience, Exclude
from .awaitables import Sent
from .conn import Conn
from .dynamic import NamespacePattern, is_pattern
from .errors import AskTimeout, ConnectionClosed, EventError
from .framing import Stamp
from .handlers import Handler
from .nsconn import DEFAULT, NSConn, Timeout
from .protocol import Message

if TYPE_CHECKING:
    from .sending import Sending
    from .server import Server

__all__ = ["SYSTEM", "OpenTelemetryTracing"]

SYSTEM = "neffos"
"""``messaging.system`` of every span: the protocol (a Go neffos server would say the same)."""

# Attribute names: the messaging conventions', then ours under messaging.neffos.*
_SYSTEM = "messaging.system"
_OPERATION = "messaging.operation.name"
_OPERATION_TYPE = "messaging.operation.type"
_DESTINATION = "messaging.destination.name"
_TEMPLATE = "messaging.destination.template"
_BODY_SIZE = "messaging.message.body.size"
_MESSAGE_ID = "messaging.message.id"
_ERROR_TYPE = "error.type"
EVENT = "messaging.neffos.event"
ROOM = "messaging.neffos.room"
ROOMS = "messaging.neffos.rooms"
CONNECTION_ID = "messaging.neffos.connection.id"
OUTCOME = "messaging.neffos.outcome"
DELIVERED = "messaging.neffos.delivered"
TIMEOUT = "messaging.neffos.ask.timeout"
REMOTE = "messaging.neffos.ask.remote"
ANSWER_SIZE = "messaging.neffos.answer.body.size"

_OPEN: contextvars.ContextVar[Span | None] = contextvars.ContextVar("wsmvc_open", default=None)
"""The broadcast or delivery span of the call under way (its hook and exchange add to it)."""
_ROOT = otel_context.Context()  # no parent: a trace of its own
_W3C = TraceContextTextMapPropagator()  # what fits a marker: traceparent alone
_TRACED = "__wsmvc_traced__"  # marks a wrapped handler (never wrapped twice)

T = TypeVar("T")
Attributes = dict[str, AttributeValue]


class OpenTelemetryTracing:
    """Traces of one or more wsmvc servers (see the module docstring).

    ``tracer_provider``: where spans go; ``None`` (default): the global one
    (``opentelemetry.trace.set_tracer_provider``, also when set after this is made).
    Importing :mod:`wsmvc.tracing` raises :class:`ImportError` naming the
    ``wsmvc[opentelemetry]`` extra when ``opentelemetry-api`` is missing.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)
        self._patterns: dict[str, NamespacePattern] = {}

    # -- wiring --------------------------------------------------------------------------

    def instrument(self, server: Server) -> Server:
        """Trace ``server`` (returns it): its handlers, registered now and later (wrapped:
        :meth:`wsmvc.handlers.HandlerTable.wrap`), its broadcasts and asks, and with an
        exchange what it publishes and receives through it. Call it before the server
        starts (else :class:`RuntimeError`: connections opened before would ask untraced);
        instrumenting a server twice raises :class:`ValueError`."""
        if server._tracing is not None:
            raise ValueError(f"{server!r} is already traced")
        if server._loop is not None:
            raise RuntimeError("instrument the server before it starts (app startup)")
        server._tracing = self
        server._conn_class = _TracedConn
        server.handlers.wrap(self._wrap)
        server.add_broadcast_hook(self._broadcasted)
        if server.exchange is not None:
            server.exchange.tracing = self
        return server

    # -- handlers ------------------------------------------------------------------------

    def _wrap(self, namespace: str, event: str, handler: Handler) -> Handler:
        """``handler`` (registered for ``event`` in ``namespace``) run in a span."""
        if getattr(handler, _TRACED, False):
            return handler
        tracer = self._tracer
        name = f"{namespace} {event}" if namespace else event
        template = namespace if is_pattern(namespace) else None
        # What samplers see (the conventions' attributes for sampling), made once; the
        # rest only for a span that records (a sampler may drop most).
        start: Attributes = {
            _SYSTEM: SYSTEM,
            _OPERATION: "process",
            _OPERATION_TYPE: "process",
            _DESTINATION: namespace,
        }
        if template is not None:
            start[_TEMPLATE] = template

        def traced(ns: NSConn, msg: Message) -> object:
            attributes = start if template is None else {**start, _DESTINATION: msg.namespace}
            if msg.local:  # fired by this side's code: part of what runs now
                span = tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
            else:
                upgrade = trace.get_current_span().get_span_context()
                token = msg.token
                span = tracer.start_span(
                    name,
                    _ROOT,
                    SpanKind.SERVER if token and token[0] == "$" else SpanKind.CONSUMER,
                    attributes,
                    (Link(upgrade),) if upgrade.is_valid else None,
                )
            if span.is_recording():
                more: Attributes = {
                    EVENT: msg.event,
                    CONNECTION_ID: ns.conn.id,
                    _BODY_SIZE: len(msg.body),
                }
                if msg.room:
                    more[ROOM] = msg.room
                span.set_attributes(more)
            attached = otel_context.attach(trace.set_span_in_context(span))
            try:
                result = handler(ns, msg)
            except BaseException as exc:
                _ended(span, exc)
                raise
            finally:
                otel_context.detach(attached)
            if result is not None and hasattr(result, "__await__"):
                return _finish(span, result)
            span.set_attribute(OUTCOME, "handled")
            span.end()
            return result

        traced.__wrapped__ = handler  # type: ignore[attr-defined]
        setattr(traced, _TRACED, True)
        return traced

    # -- broadcasts ----------------------------------------------------------------------

    def broadcast(
        self,
        sending: Sending,
        msg: Message,
        exclude: Exclude,
        to: str | None,
        rooms: Iterable[str] | None,
        exclude_rooms: Iterable[str] | None,
    ) -> Sent:
        """``server.broadcast(...)`` in a PRODUCER span (:meth:`wsmvc.Server.broadcast`
        calls it when the server is traced)."""
        server = cast("Server", sending)  # Sending is a part of Server
        attributes = self._attributes(server, msg, "broadcast", "send")
        if rooms is not None:
            rooms = tuple(rooms)  # read once: it may be an iterator
            attributes[ROOMS] = rooms
        if to is not None:
            attributes[CONNECTION_ID] = to
        span = self._tracer.start_span(
            f"broadcast {self._template(server, msg.namespace)}",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )
        return self._run(span, server._broadcast, msg, exclude, to, rooms, exclude_rooms)

    def _broadcasted(self, msg: Message, delivered: int, local: bool) -> None:
        """The servers' broadcast hook: how many of its connections one reached."""
        span = _OPEN.get()
        if span is not None:
            span.set_attribute(DELIVERED, delivered)

    def published(self, stamp: Stamp | None) -> str | None:
        """The exchange publishes the broadcast under way (:class:`~wsmvc.exchange.
        ExchangeTracing`): its ``messaging.message.id`` is ``<server id>:<sequence>``;
        returns the current span's W3C ``traceparent`` (``None`` without a valid span)."""
        span = _OPEN.get()
        if span is not None and stamp is not None:
            span.set_attribute(_MESSAGE_ID, f"{stamp[0]}:{stamp[1]}")
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        return carrier.get("traceparent")

    def deliver(
        self,
        server: Server,
        msg: Message,
        traceparent: str | None,
        *,
        exclude: str | None = None,
        to: str | None = None,
        audience: Audience | None = None,
        stamp: Stamp | None = None,
    ) -> int:
        """``server.deliver(...)`` of another server's broadcast in a CONSUMER span, whose
        parent (and link) is ``traceparent``'s span, the sender's ``broadcast``; a trace of
        its own without one (a Go server's, or an untraced one's). Returns the count."""
        parent = _ROOT
        links: tuple[Link, ...] = ()
        if traceparent is not None:
            parent = _W3C.extract({"traceparent": traceparent}, context=_ROOT)
            sender = trace.get_current_span(parent).get_span_context()
            links = (Link(sender),) if sender.is_valid else ()
        attributes = self._attributes(server, msg, "deliver", "process")
        if stamp is not None:
            attributes[_MESSAGE_ID] = f"{stamp[0]}:{stamp[1]}"
        if audience is not None and audience.rooms:
            attributes[ROOMS] = audience.rooms
        if to is not None:
            attributes[CONNECTION_ID] = to
        span = self._tracer.start_span(
            f"deliver {self._template(server, msg.namespace)}",
            parent,
            SpanKind.CONSUMER,
            attributes,
            links,
        )
        return self._run(
            span, server.deliver, msg, exclude=exclude, to=to, audience=audience, stamp=stamp
        )

    def _run(self, span: Span, call: Callable[..., T], *args: object, **kw: object) -> T:
        """``call(*args, **kw)`` with ``span`` current and open; ends it."""
        opened = _OPEN.set(span)
        attached = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = call(*args, **kw)
        except BaseException as exc:
            _ended(span, exc)
            raise
        finally:
            otel_context.detach(attached)
            _OPEN.reset(opened)
        span.end()
        return result

    # -- asks ----------------------------------------------------------------------------

    async def ask(self, sending: Sending, msg: Message, to: str, timeout: float | None) -> Message:
        """``server.exchange.ask(...)`` (a connection on another server) in a CLIENT span
        (:meth:`wsmvc.Server.ask` calls it when the server is traced)."""
        server = cast("Server", sending)  # Sending is a part of Server
        assert server.exchange is not None
        return await self._asking(
            server.exchange.ask(msg, to=to, timeout=timeout), server, msg, to, timeout, True
        )

    async def _asking(
        self,
        pending: Awaitable[Message],
        server: Server,
        msg: Message,
        conn_id: str,
        timeout: float | None,
        remote: bool,
    ) -> Message:
        attributes = self._attributes(server, msg, "ask", "send")
        attributes[CONNECTION_ID] = conn_id
        if timeout is not None:
            attributes[TIMEOUT] = float(timeout)
        if remote:
            attributes[REMOTE] = True
        span = self._tracer.start_span(
            f"ask {self._template(server, msg.namespace)}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        attached = otel_context.attach(trace.set_span_in_context(span))
        try:
            answer = await pending
        except BaseException as exc:
            _ended(span, exc, _ASK_OUTCOMES)
            raise
        finally:
            otel_context.detach(attached)
        span.set_attribute(ANSWER_SIZE, len(answer.body))
        span.set_attribute(OUTCOME, "answered")
        span.end()
        return answer

    # -- names ---------------------------------------------------------------------------

    def _attributes(self, server: Server, msg: Message, operation: str, kind: str) -> Attributes:
        namespace = msg.namespace
        attributes: Attributes = {
            _SYSTEM: SYSTEM,
            _OPERATION: operation,
            _OPERATION_TYPE: kind,
            _DESTINATION: namespace,
            EVENT: msg.event,
            _BODY_SIZE: len(msg.body),
        }
        template = self._template(server, namespace)
        if template != namespace:
            attributes[_TEMPLATE] = template
        if msg.room:
            attributes[ROOM] = msg.room
        return attributes

    def _template(self, server: Server, namespace: str) -> str:
        """The pattern serving ``namespace`` on ``server`` (``room-{id}``), else itself."""
        table = server.handlers
        if namespace in table.namespaces:
            return namespace
        for template in table.patterns:  # in the order the table tries them
            pattern = self._patterns.get(template)
            if pattern is None:
                pattern = self._patterns[template] = NamespacePattern(template)
            if pattern.match(namespace) is not None:
                return template
        return namespace


class _TracedConn(Conn):
    """A connection of a traced server: its asks in CLIENT spans."""

    __slots__ = ()

    async def ask(
        self,
        msg: Message,
        *,
        timeout: Timeout = DEFAULT,
        on_reply: Callable[[Message], None] | None = None,
    ) -> Message:
        """:meth:`Conn.ask <wsmvc.Conn.ask>` in an ``ask`` span."""
        server = self.server
        tracing = server._tracing
        assert tracing is not None
        wait = self.ask_timeout if timeout is DEFAULT else timeout
        pending = super().ask(msg, timeout=timeout, on_reply=on_reply)
        return await tracing._asking(pending, server, msg, self.id, wait, False)


_ASK_OUTCOMES: Mapping[type[BaseException], str] = {
    AskTimeout: "timeout",
    EventError: "error",
    ConnectionClosed: "closed",
}


async def _finish(span: Span, pending: Awaitable[T]) -> T:
    """Await a handler's coroutine with its span current; end the span."""
    attached = otel_context.attach(trace.set_span_in_context(span))
    try:
        result = await pending
    except BaseException as exc:
        _ended(span, exc)
        raise
    finally:
        otel_context.detach(attached)
    span.set_attribute(OUTCOME, "handled")
    span.end()
    return result


def _ended(
    span: Span, exc: BaseException, outcomes: Mapping[type[BaseException], str] | None = None
) -> None:
    """End ``span`` for ``exc``: a cancellation is no error (the connection closed under
    it); anything else is recorded, with ``error.type`` and the ERROR status."""
    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute(OUTCOME, "cancelled")
    else:
        outcome = "failed"
        for kind, name in (outcomes or {}).items():
            if isinstance(exc, kind):
                outcome = name
                break
        span.set_attribute(OUTCOME, outcome)
        span.set_attribute(_ERROR_TYPE, _qualified(type(exc)))
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    span.end()


def _qualified(kind: type[BaseException]) -> str:
    """``error.type``: the class's full name (``wsmvc.errors.AskTimeout``; a builtin's
    alone), as the SDK's ``exception.type``."""
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
