"""Prometheus metrics for a wsmvc server (``pip install wsmvc[prometheus]``).

::

    metrics = PrometheusMetrics()            # registers itself in prometheus_client.REGISTRY
    metrics.instrument(server)               # before the server starts
    app.router.add_get("/metrics", metrics.handler)

What is measured and what it costs: ``docs/metrics.md``. In short:

* **Per message, plain integers.** :meth:`PrometheusMetrics.instrument` adds a meter
  (:class:`wsmvc.taps.Meter`: no record per message, answers never parsed back) that finds
  the message's statistics record (two dictionary lookups) and adds to its integer fields:
  no lock, no prometheus-client object per message. The records become metric families
  when Prometheus scrapes (this object is a prometheus-client *collector*).
* **Per broadcast, not per receiver**: a broadcast hook of the server
  (:meth:`wsmvc.Server.add_broadcast_hook`) counts it and its deliveries at once.
* **At scrape time, from the server's own registry**: the open connections, the
  connections and rooms of each namespace, the exchange's state. No cost per message.
* **Closes by reason**: the meter hears every connection's close, refused ones and
  handshake timeouts included (``conn.close_reason``); no user hook is wrapped.
* **Bounded cardinality**: namespace and event names come from clients. Only declared ones
  become label values (namespaces with handlers, a dynamic namespace as its pattern
  ``room-{id}``, the events with handlers, neffos' system events, and ``events=``); the
  rest is counted under :data:`OTHER`.
"""

from __future__ import annotations

import bisect
import enum
import importlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .closing import CloseReason
from .dynamic import NamespacePattern
from .protocol import SYSTEM_EVENTS, Message

if TYPE_CHECKING:
    # Optional (the extra): where it is missing (tox's type env), these are Any.
    from prometheus_client.metrics_core import Metric  # type: ignore[import-not-found,unused-ignore]
    from prometheus_client.registry import CollectorRegistry  # type: ignore[import-not-found,unused-ignore]

    from .conn import Conn
    from .server import Server
    from .taps import Outcome

__all__ = ["DEFAULT_BUCKETS", "OTHER", "PrometheusMetrics"]

OTHER = "<other>"
"""The label value of every namespace or event name that was not declared."""

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the handler duration histogram: most handlers take tens of
microseconds, some await a database or the client (an ask): 100 µs to 10 s, then +Inf."""

_OUTCOMES = ("failed", "unhandled", "refused")  # "handled" apart: the common one
_CACHED_NAMESPACES = 1024  # concrete namespace names whose labels are remembered
_CACHED_EVENTS = 64  # undeclared event names remembered per namespace, at most
_CACHED_NAME = 64  # characters of a name that may be remembered
_SYSTEM = SYSTEM_EVENTS
_place = bisect.bisect_left


class _Default(enum.Enum):
    REGISTRY = "prometheus_client.REGISTRY"


def _prometheus() -> Any:
    """The ``prometheus_client`` module, or an ImportError naming the extra."""
    try:
        return importlib.import_module("prometheus_client")
    except ImportError as exc:
        raise ImportError(
            "wsmvc.metrics needs the prometheus-client package: pip install 'wsmvc[prometheus]'"
        ) from exc


class _Stats:
    """The counts of one (namespace label, event label) pair: plain integers, updated by
    the meters, read by :meth:`PrometheusMetrics.collect`."""

    __slots__ = (
        "ask",
        "ask_timeouts",
        "asks_in",
        "asks_out",
        "broadcasts",
        "buckets",
        "bytes_in",
        "bytes_out",
        "deliveries",
        "duration",
        "event",
        "namespace",
        "published",
        "received",
        "remote",
        "sent",
    )

    def __init__(self, namespace: str, event: str, buckets: int) -> None:
        self.namespace = namespace
        self.event = event
        # Whether a request of this record is counted as an ask: never for system
        # events (connects, joins, leaves); for <other>, maybe_ask() looks.
        self.ask = event not in _SYSTEM and event != OTHER
        self.received = dict.fromkeys(_OUTCOMES, 0)  # the other outcomes -> messages
        self.sent = 0  # events written, broadcast deliveries included
        self.bytes_in = 0  # body bytes
        self.bytes_out = 0
        self.asks_in = 0  # the peer's asks (requests awaiting an answer), system events apart
        self.asks_out = 0  # this server's asks
        self.ask_timeouts = 0  # ... that got no answer in time
        self.broadcasts = 0  # this server's broadcast() calls
        self.deliveries = 0  # receivers' copies of broadcasts written here
        self.published = 0  # this server's broadcasts handed to its exchange
        self.remote = 0  # other servers' broadcasts delivered here (from the exchange)
        self.buckets = [0] * (buckets + 1)  # non-cumulative; the last one is +Inf
        self.duration = 0.0  # seconds, the sum of the histogram

    def maybe_ask(self, event: str) -> bool:
        """Whether a request for ``event``, counted here, is an ask (see :attr:`ask`):
        an ``<other>`` record may count system events too."""
        return self.event == OTHER and event not in _SYSTEM


class _Meter:
    """One server's meter (:class:`wsmvc.taps.Meter`) and broadcast hook: maps its
    namespace and event names to label values through a bounded cache (cleared at every
    scrape, so handlers added later are seen) and counts into the shared records."""

    __slots__ = (
        "_bounds",
        "_cache",
        "_closed",
        "_events",
        "_first",
        "_metrics",
        "_patterns",
        "server",
    )

    def __init__(self, metrics: PrometheusMetrics, server: Server) -> None:
        self._metrics = metrics
        self.server = server
        self._events = metrics.events
        self._bounds = metrics._bounds
        self._first = self._bounds[0]  # most durations fall below it: no bisect then
        self._closed = metrics._closed
        self._cache: dict[str, dict[str, _Stats]] = {}
        self._patterns: dict[str, NamespacePattern] = {}  # compiled, by template

    def __repr__(self) -> str:
        return f"<PrometheusMetrics meter of {self.server!r}>"

    # -- the Meter protocol (wsmvc.taps) ------------------------------------------------

    def received(self, msg: Message, outcome: Outcome, duration: float, answer: int) -> None:
        """Count a handled message of a peer's, and its answer (see
        :class:`wsmvc.taps.Meter`)."""
        # Every message runs this: subscripts rather than calls, the common cases first.
        try:
            stats = self._cache[msg.namespace][msg.event]
        except KeyError:
            stats = self._resolve(msg.namespace, msg.event)
        if outcome != "handled":  # handled: the histogram's count less the others
            stats.received[outcome] += 1
        stats.bytes_in += len(msg.body)
        if duration <= self._first:
            stats.buckets[0] += 1
        else:
            stats.buckets[_place(self._bounds, duration)] += 1
        stats.duration += duration
        # A client's ask (an <other> record may hide a system event: looked up then).
        token = msg.token
        if token and token[0] == "$" and (stats.ask or stats.maybe_ask(msg.event)):
            stats.asks_in += 1
        if answer >= 0:
            stats.sent += 1
            stats.bytes_out += answer

    def sent(self, namespace: str, event: str, size: int, ask: bool) -> None:
        """Count an event written (see :class:`wsmvc.taps.Meter`)."""
        try:
            stats = self._cache[namespace][event]
        except KeyError:
            stats = self._resolve(namespace, event)
        stats.sent += 1
        stats.bytes_out += size
        if ask and (stats.ask or stats.maybe_ask(event)):
            stats.asks_out += 1

    def unanswered(self, namespace: str, event: str) -> None:
        """Count an ask of this server's that got no answer in time."""
        if event not in _SYSTEM:
            self.stats(namespace, event).ask_timeouts += 1

    def closed(self, conn: Conn) -> None:
        """Count a connection's close by its reason."""
        reason = conn.close_reason
        if reason is not None:
            self._closed[reason] += 1

    # -- the broadcast hook (wsmvc.Server.add_broadcast_hook) ----------------------------------

    def broadcasted(self, msg: Message, delivered: int, local: bool) -> None:
        """Count a broadcast and its deliveries (see :data:`wsmvc.sending.BroadcastHook`)."""
        stats = self.stats(msg.namespace, msg.event)
        stats.sent += delivered
        stats.deliveries += delivered
        stats.bytes_out += delivered * len(msg.body)
        if not local:
            stats.remote += 1
            return
        stats.broadcasts += 1
        if self.server.exchange is not None:
            stats.published += 1

    # -- labels ---------------------------------------------------------------------------

    def clear(self) -> None:
        self._cache = {}
        self._patterns = {}

    def stats(self, namespace: str, event: str) -> _Stats:
        """The record of ``event`` in ``namespace``."""
        events = self._cache.get(namespace)
        if events is not None:
            found = events.get(event)
            if found is not None:
                return found
        return self._resolve(namespace, event)

    def _resolve(self, namespace: str, event: str) -> _Stats:
        table = self.server.handlers
        declared = table.events_of(namespace)
        if namespace in table.namespaces:
            ns_label = namespace
        elif declared or namespace in table:
            ns_label = self._pattern_of(namespace)
        else:
            ns_label = OTHER
        known = event in declared or event in _SYSTEM or event in self._events
        ev_label = event if known and ns_label != OTHER else OTHER
        stats = self._metrics._record(ns_label, ev_label)
        # Remembered: declared names, and a few short undeclared ones (an event the server
        # broadcasts without a handler): never what could make a client's names pile up.
        if ns_label == namespace or (ns_label != OTHER and len(namespace) <= _CACHED_NAME):
            cache = self._cache
            events = cache.get(namespace)
            if events is None:
                if len(cache) >= _CACHED_NAMESPACES:
                    cache.clear()
                events = cache[namespace] = {}
            if known or (len(events) < _CACHED_EVENTS and len(event) <= _CACHED_NAME):
                events[event] = stats
        return stats

    def _pattern_of(self, namespace: str) -> str:
        compiled = self._patterns
        for template in self.server.handlers.patterns:
            pattern = compiled.get(template)
            if pattern is None:
                pattern = compiled[template] = NamespacePattern(template)
            if pattern.match(namespace) is not None:
                return template
        return OTHER

    def label(self, namespace: str) -> str:
        """The label value of a connected namespace (scrape time)."""
        return self.stats(namespace, "").namespace


class PrometheusMetrics:
    """Prometheus metrics of one or more wsmvc servers; a prometheus-client collector.

    * ``registry`` - where it registers itself (default ``prometheus_client.REGISTRY``,
      which ``prometheus_client.start_http_server`` and most integrations serve); ``None``:
      nowhere (register it yourself, or use :meth:`collect`).
    * ``events`` - event names to label besides the declared ones: the events your server
      emits or broadcasts that have no handler on it (``"chat"``). Other names undeclared
      in their namespace are counted as :data:`OTHER`.
    * ``buckets`` - upper bounds, seconds, of ``wsmvc_handler_duration_seconds``
      (default :data:`DEFAULT_BUCKETS`).

    Raises :class:`ImportError` naming the ``wsmvc[prometheus]`` extra when
    ``prometheus-client`` is missing, :class:`ValueError` for ``buckets`` without a
    finite bound.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | _Default | None = _Default.REGISTRY,
        events: Iterable[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self._prom = _prometheus()
        self.events = frozenset(events)
        bounds = sorted(float(b) for b in buckets if b != float("inf"))
        if not bounds:
            raise ValueError("buckets: give at least one finite upper bound, in seconds")
        self._bounds = bounds
        self._stats: dict[tuple[str, str], _Stats] = {}
        self._closed: dict[CloseReason, int] = dict.fromkeys(CloseReason, 0)
        self._meters: list[_Meter] = []
        self.registry: CollectorRegistry | None = (
            self._prom.REGISTRY if registry is _Default.REGISTRY else registry
        )
        if self.registry is not None:
            self.registry.register(self)

    # -- wiring --------------------------------------------------------------------------

    def instrument(self, server: Server) -> Server:
        """Measure ``server`` (returns it): a meter for its connections' messages, asks
        and closes (:meth:`wsmvc.taps.Taps.add_meter`), a broadcast hook
        (:meth:`wsmvc.Server.add_broadcast_hook`), its connections, rooms and exchange read
        at scrape time. Call it before the server starts: a connection opened before is not
        metered (:mod:`wsmvc.taps`). Instrumenting a server twice raises
        :class:`ValueError`."""
        if any(meter.server is server for meter in self._meters):
            raise ValueError(f"{server!r} is already instrumented by this PrometheusMetrics")
        meter = _Meter(self, server)
        server.handlers.taps.add_meter(meter)
        server.add_broadcast_hook(meter.broadcasted)
        self._meters.append(meter)
        return server

    def _record(self, namespace: str, event: str) -> _Stats:
        key = (namespace, event)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = _Stats(namespace, event, len(self._bounds))
        return stats

    # -- exposition ----------------------------------------------------------------------

    async def handler(self, request: web.Request) -> web.Response:
        """An aiohttp handler serving :attr:`registry` in the text format Prometheus asks
        for (OpenMetrics when its ``Accept`` header says so); 404 without a registry."""
        if self.registry is None:
            raise web.HTTPNotFound(text="these metrics are not in a registry\n")
        exposition = importlib.import_module("prometheus_client.exposition")
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        body: bytes = encoder(self.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    def describe(self) -> Iterator[Metric]:
        """The metric families, without values (prometheus-client's collector protocol)."""
        return self._families(values=False)

    def collect(self) -> Iterator[Metric]:
        """Every metric family with its values (called by prometheus-client per scrape)."""
        return self._families(values=True)

    def _families(self, *, values: bool) -> Iterator[Metric]:
        core = importlib.import_module("prometheus_client.metrics_core")
        gauge, counter = core.GaugeMetricFamily, core.CounterMetricFamily
        ns, nsev = ["namespace"], ["namespace", "event"]
        open_ = gauge("wsmvc_connections_open", "Acknowledged websocket connections open now.")
        per_ns = gauge(
            "wsmvc_namespace_connections", "Connections to each namespace now.", labels=ns
        )
        rooms = gauge(
            "wsmvc_namespace_rooms", "Rooms with at least one member, per namespace.", labels=ns
        )
        closed = counter(
            "wsmvc_connections_closed",
            "Connections ended, by why they closed (wsmvc.CloseReason), refused ones included.",
            labels=["reason"],
        )
        received = counter(
            "wsmvc_messages_received",
            "Messages received and handled, by what became of them.",
            labels=[*nsev, "outcome"],
        )
        # (name, help, labels, the _Stats field): the counters read from the records
        counted = [
            (
                "messages_sent",
                "Events written to peers: emits, asks, answers, broadcast deliveries.",
                nsev,
                "sent",
            ),
            ("body_bytes_received", "Bytes of message bodies received.", ns, "bytes_in"),
            ("body_bytes_sent", "Bytes of message bodies sent.", ns, "bytes_out"),
            ("asks_received", "Asks from peers (requests awaiting an answer).", nsev, "asks_in"),
            ("asks_sent", "Asks this server sent to peers.", nsev, "asks_out"),
            (
                "ask_timeouts",
                "Asks this server sent that got no answer in time.",
                nsev,
                "ask_timeouts",
            ),
            ("broadcasts", "broadcast() calls of this server.", nsev, "broadcasts"),
            (
                "broadcast_deliveries",
                "Receivers' copies of broadcasts written here.",
                nsev,
                "deliveries",
            ),
            (
                "exchange_published",
                "This server's broadcasts handed to its exchange.",
                nsev,
                "published",
            ),
            ("exchange_received", "Other servers' broadcasts delivered here.", nsev, "remote"),
        ]
        families = [open_, per_ns, rooms, closed, received]
        fields = []
        exchange = any(meter.server.exchange is not None for meter in self._meters)
        for name, text, labels, field in counted:
            if values and not exchange and name.startswith("exchange_"):
                continue  # no exchange, no exchange metrics
            family = counter(f"wsmvc_{name}", text, labels=labels)
            families.append(family)
            fields.append((family, labels is ns, field))
        durations = core.HistogramMetricFamily(
            "wsmvc_handler_duration_seconds",
            "Time from a message reaching its handler to the end of its handling (seconds).",
            labels=nsev,
        )
        families.append(durations)
        if values:
            self._fill_server(open_, per_ns, rooms)
            for reason, count in list(self._closed.items()):
                closed.add_metric([reason.name.lower()], count)
            self._fill_records(received, fields, durations)
        families += self._exchange_families(gauge, counter, values=values)
        yield from families

    def _fill_records(
        self, received: Any, fields: list[tuple[Any, bool, str]], durations: Any
    ) -> None:
        """The counters and the histogram, from the records."""
        go = importlib.import_module("prometheus_client.utils").floatToGoString
        les = [*(go(b) for b in self._bounds), "+Inf"]
        by_ns: dict[tuple[str, str], int] = {}  # (field, namespace) -> sum
        for stats in list(self._stats.values()):
            labels = [stats.namespace, stats.event]
            handled = sum(stats.buckets) - sum(stats.received.values())
            for outcome, count in [("handled", handled), *stats.received.items()]:
                if count:
                    received.add_metric([*labels, outcome], count)
            for family, per_namespace, field in fields:
                count = getattr(stats, field)
                if per_namespace:
                    key = (field, stats.namespace)
                    by_ns[key] = by_ns.get(key, 0) + count
                elif count:
                    family.add_metric(labels, count)
            counts = list(stats.buckets)
            if any(counts):
                cumulative, total = [], 0
                for le, count in zip(les, counts, strict=True):
                    total += count
                    cumulative.append((le, total))
                durations.add_metric(labels, cumulative, stats.duration)
        for family, per_namespace, field in fields:
            if per_namespace:
                for (name, namespace), count in by_ns.items():
                    if name == field:
                        family.add_metric([namespace], count)

    def _fill_server(self, open_: Any, per_ns: Any, rooms: Any) -> None:
        """The scrape-time gauges, from each server's registry (public inspection only)."""
        total = 0
        conns_by: dict[str, int] = {}
        rooms_by: dict[str, int] = {}
        for meter in self._meters:
            meter.clear()  # handlers added since: seen from now on
            server = meter.server
            connections = server.connections
            total += len(connections)
            names: dict[str, str] = {}  # concrete namespace -> its label
            for conn in connections:
                for name in list(conn.namespaces):
                    label = names.get(name)
                    if label is None:
                        label = names[name] = meter.label(name)
                    conns_by[label] = conns_by.get(label, 0) + 1
            for name, label in names.items():
                rooms_by[label] = rooms_by.get(label, 0) + len(server.rooms(name))
        open_.add_metric([], total)
        for label, count in conns_by.items():
            per_ns.add_metric([label], count)
            rooms.add_metric([label], rooms_by.get(label, 0))

    def _exchange_families(self, gauge: Any, counter: Any, *, values: bool) -> list[Metric]:
        """The exchange's state, read at scrape time from the servers that have one
        (nothing for those without): connected, and with a broker its dropped and pending
        broadcasts."""
        connected = gauge(
            "wsmvc_exchange_connected", "1 while broadcasts reach the other servers, else 0."
        )
        dropped = gauge(
            "wsmvc_exchange_dropped_broadcasts",
            "Broadcasts the exchange dropped since its broker last (re)connected.",
        )
        dropped_total = counter(
            "wsmvc_exchange_dropped",
            "Broadcasts the exchange dropped (its broker away, or max_pending waiting).",
        )
        pending = gauge(
            "wsmvc_exchange_pending_broadcasts",
            "Broadcasts queued for the broker or being sent: how far publishing lags.",
        )
        if not values:
            return [connected, dropped, dropped_total, pending]
        sums: dict[str, int] = {}
        up, any_exchange = 0, False
        for meter in self._meters:
            exchange = meter.server.exchange
            if exchange is None:
                continue
            any_exchange = True
            up += int(exchange.connected)
            for name in ("dropped", "dropped_total", "pending"):
                count = getattr(exchange, name, None)
                if isinstance(count, int):
                    sums[name] = sums.get(name, 0) + count
        out: list[Metric] = []
        if any_exchange:
            connected.add_metric([], up)
            out.append(connected)
        for name, family in (
            ("dropped", dropped),
            ("dropped_total", dropped_total),
            ("pending", pending),
        ):
            if name in sums:
                family.add_metric([], sums[name])
                out.append(family)
        return out
