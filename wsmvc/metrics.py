"""Prometheus metrics for a wsmvc server (``pip install wsmvc[prometheus]``).

::

    metrics = PrometheusMetrics()            # registers itself in prometheus_client.REGISTRY
    metrics.instrument(server)               # before the server starts
    app.router.add_get("/metrics", metrics.handler)

What is measured and what it costs: ``docs/metrics.md``. In short:

* **Per message, plain integers.** :meth:`PrometheusMetrics.instrument` adds a tap
  (:mod:`wsmvc.taps`) that finds the message's statistics record (two dictionary lookups)
  and adds to its integer fields: no lock, no prometheus-client object per message. The
  records are turned into metric families when Prometheus scrapes (this object is a
  prometheus-client *collector*).
* **At scrape time, from the server's own registry**: the open connections, the
  connections and rooms of each namespace, the exchange's state. No cost per message.
* **Closes by reason**: counted when a connection ends, from ``conn.close_reason``, by
  wrapping the server's ``on_disconnect`` hook (the user's hook still runs, after).
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
from .protocol import SYSTEM_EVENTS

if TYPE_CHECKING:
    # Optional (the extra): where it is missing (tox's type env), these are Any.
    from prometheus_client.metrics_core import Metric  # type: ignore[import-not-found,unused-ignore]
    from prometheus_client.registry import CollectorRegistry  # type: ignore[import-not-found,unused-ignore]

    from .conn import Conn
    from .handlers import HandlerTable
    from .server import Server
    from .taps import Tapped

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

_OUTCOMES = ("handled", "failed", "unhandled", "refused")
_CACHED_NAMESPACES = 1024  # concrete namespace names whose labels are remembered
_CACHED_EVENTS = 64  # undeclared event names remembered per namespace, at most
_CACHED_NAME = 64  # characters of a name that may be remembered


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
    the tap, read by :meth:`PrometheusMetrics.collect`."""

    __slots__ = (
        "asks_in",
        "asks_out",
        "buckets",
        "bytes_in",
        "bytes_out",
        "duration",
        "event",
        "namespace",
        "received",
        "sent",
    )

    def __init__(self, namespace: str, event: str, buckets: int) -> None:
        self.namespace = namespace
        self.event = event
        self.received = dict.fromkeys(_OUTCOMES, 0)  # outcome -> messages
        self.sent = 0
        self.bytes_in = 0  # body bytes
        self.bytes_out = 0
        self.asks_in = 0  # the peer's asks (requests awaiting an answer), system events apart
        self.asks_out = 0  # this server's asks
        self.buckets = [0] * (buckets + 1)  # non-cumulative; the last one is +Inf
        self.duration = 0.0  # seconds, the sum of the histogram


class _Labels:
    """Maps one server's namespace and event names to label values, and remembers it
    (a bounded cache, cleared at every scrape so handlers added later are seen)."""

    __slots__ = ("_cache", "_events", "_metrics", "_patterns", "_table")

    def __init__(self, metrics: PrometheusMetrics, table: HandlerTable) -> None:
        self._metrics = metrics
        self._table = table
        self._events = metrics.events
        self._cache: dict[str, dict[str, _Stats]] = {}
        self._patterns: dict[str, NamespacePattern] = {}  # compiled, by template

    def clear(self) -> None:
        self._cache = {}
        self._patterns = {}

    def stats(self, namespace: str, event: str) -> _Stats:
        """The record of ``event`` in ``namespace`` (the fast path: two lookups)."""
        events = self._cache.get(namespace)
        if events is not None:
            found = events.get(event)
            if found is not None:
                return found
        return self._resolve(namespace, event)

    def _resolve(self, namespace: str, event: str) -> _Stats:
        table = self._table
        declared = table.events_of(namespace)
        if namespace in table.namespaces:
            ns_label = namespace
        elif declared or namespace in table:
            ns_label = self._pattern_of(namespace)
        else:
            ns_label = OTHER
        known = event in declared or event in SYSTEM_EVENTS or event in self._events
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
        for template in self._table.patterns:
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
    ``prometheus-client`` is missing.
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
        self._servers: list[tuple[Server, _Labels]] = []
        self.registry: CollectorRegistry | None = (
            self._prom.REGISTRY if registry is _Default.REGISTRY else registry
        )
        if self.registry is not None:
            self.registry.register(self)

    # -- wiring --------------------------------------------------------------------------

    def instrument(self, server: Server) -> Server:
        """Measure ``server`` (returns it): a tap for its messages, its closes counted from
        its ``on_disconnect`` hook (set that hook before; it still runs), its connections,
        rooms and exchange read at scrape time. Call it before the server starts: a
        connection opened before is not tapped (:mod:`wsmvc.taps`). Instrumenting a server
        twice raises :class:`ValueError`."""
        if any(known is server for known, _ in self._servers):
            raise ValueError(f"{server!r} is already instrumented by this PrometheusMetrics")
        labels = _Labels(self, server.handlers)
        server.handlers.taps.add(self._tap_for(labels))
        server.on_disconnect = self._counting_closes(server.on_disconnect)
        self._servers.append((server, labels))
        return server

    def _record(self, namespace: str, event: str) -> _Stats:
        key = (namespace, event)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = _Stats(namespace, event, len(self._bounds))
        return stats

    def _tap_for(self, labels: _Labels) -> Any:
        find = labels.stats
        bounds = self._bounds
        place = bisect.bisect_left
        system = SYSTEM_EVENTS

        def wsmvc_metrics_tap(tapped: Tapped) -> None:
            msg = tapped.message
            stats = find(msg.namespace, msg.event)
            token = msg.token
            if tapped.direction == "in":
                stats.received[tapped.outcome] += 1
                stats.bytes_in += len(msg.body)
                duration = tapped.duration
                if duration is not None:
                    stats.buckets[place(bounds, duration)] += 1
                    stats.duration += duration
                if token[:1] == "$" and msg.event not in system:
                    stats.asks_in += 1
            else:
                stats.sent += 1
                stats.bytes_out += len(msg.body)
                if token and token[0] != "$" and msg.event not in system:
                    stats.asks_out += 1

        return wsmvc_metrics_tap

    def _counting_closes(self, hook: Any) -> Any:
        closed = self._closed

        def count_close(conn: Conn) -> object:
            reason = conn.close_reason
            if reason is not None:
                closed[reason] += 1
            return hook(conn) if hook is not None else None

        return count_close

    # -- exposition ----------------------------------------------------------------------

    async def handler(self, request: web.Request) -> web.Response:
        """An aiohttp handler serving :attr:`registry` in the text format Prometheus asks
        for (OpenMetrics when its ``Accept`` header says so)."""
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
        gauge, counter, histogram = (
            core.GaugeMetricFamily,
            core.CounterMetricFamily,
            core.HistogramMetricFamily,
        )
        ns, nsev, nsevout = ["namespace"], ["namespace", "event"], ["namespace", "event", "outcome"]
        open_ = gauge("wsmvc_connections_open", "Acknowledged websocket connections open now.")
        per_ns = gauge(
            "wsmvc_namespace_connections", "Connections to each namespace now.", labels=ns
        )
        rooms = gauge(
            "wsmvc_namespace_rooms", "Rooms with at least one member, per namespace.", labels=ns
        )
        closed = counter(
            "wsmvc_connections_closed",
            "Connections ended, by why they closed (wsmvc.CloseReason).",
            labels=["reason"],
        )
        received = counter(
            "wsmvc_messages_received",
            "Messages received and handled, by what became of them.",
            labels=nsevout,
        )
        sent = counter(
            "wsmvc_messages_sent",
            "Events written to peers: emits, asks, answers, broadcast deliveries.",
            labels=nsev,
        )
        bytes_in = counter(
            "wsmvc_body_bytes_received", "Bytes of message bodies received.", labels=ns
        )
        bytes_out = counter("wsmvc_body_bytes_sent", "Bytes of message bodies sent.", labels=ns)
        asks_in = counter(
            "wsmvc_asks_received", "Asks from peers (requests awaiting an answer).", labels=nsev
        )
        asks_out = counter("wsmvc_asks_sent", "Asks this server sent to peers.", labels=nsev)
        durations = histogram(
            "wsmvc_handler_duration_seconds",
            "Time from a message reaching its handler to the end of its handling (seconds).",
            labels=nsev,
        )
        families = [open_, per_ns, rooms, closed, received, sent, bytes_in, bytes_out]
        families += [asks_in, asks_out, durations]
        if values:
            self._fill_server(open_, per_ns, rooms)
            for reason, count in list(self._closed.items()):
                closed.add_metric([reason.name.lower()], count)
            by_ns_in: dict[str, int] = {}
            by_ns_out: dict[str, int] = {}
            go = importlib.import_module("prometheus_client.utils").floatToGoString
            les = [*(go(b) for b in self._bounds), "+Inf"]
            for stats in list(self._stats.values()):
                labels = [stats.namespace, stats.event]
                for outcome, count in list(stats.received.items()):
                    if count:
                        received.add_metric([*labels, outcome], count)
                if stats.sent:
                    sent.add_metric(labels, stats.sent)
                if stats.asks_in:
                    asks_in.add_metric(labels, stats.asks_in)
                if stats.asks_out:
                    asks_out.add_metric(labels, stats.asks_out)
                by_ns_in[stats.namespace] = by_ns_in.get(stats.namespace, 0) + stats.bytes_in
                by_ns_out[stats.namespace] = by_ns_out.get(stats.namespace, 0) + stats.bytes_out
                counts = list(stats.buckets)
                if any(counts):
                    cumulative, total = [], 0
                    for le, count in zip(les, counts, strict=True):
                        total += count
                        cumulative.append((le, total))
                    durations.add_metric(labels, cumulative, stats.duration)
            for name, count in by_ns_in.items():
                bytes_in.add_metric([name], count)
            for name, count in by_ns_out.items():
                bytes_out.add_metric([name], count)
        families += self._exchange_families(gauge, values=values)
        yield from families

    def _fill_server(self, open_: Any, per_ns: Any, rooms: Any) -> None:
        """The scrape-time gauges, from each server's registry (public inspection only)."""
        total = 0
        conns_by: dict[str, int] = {}
        rooms_by: dict[str, int] = {}
        for server, labels in self._servers:
            labels.clear()  # handlers added since: seen from now on
            connections = server.connections
            total += len(connections)
            names: dict[str, str] = {}  # concrete namespace -> its label
            for conn in connections:
                for name in list(conn.namespaces):
                    label = names.get(name)
                    if label is None:
                        label = names[name] = labels.label(name)
                    conns_by[label] = conns_by.get(label, 0) + 1
            for name, label in names.items():
                rooms_by[label] = rooms_by.get(label, 0) + len(server.rooms(name))
        open_.add_metric([], total)
        for label, count in conns_by.items():
            per_ns.add_metric([label], count)
            rooms.add_metric([label], rooms_by.get(label, 0))

    def _exchange_families(self, gauge: Any, *, values: bool) -> list[Metric]:
        """``wsmvc_exchange_connected`` and ``wsmvc_exchange_dropped_broadcasts`` of the
        servers that have an exchange (nothing for those without)."""
        connected = gauge(
            "wsmvc_exchange_connected", "1 while broadcasts reach the other servers, else 0."
        )
        dropped = gauge(
            "wsmvc_exchange_dropped_broadcasts",
            "Broadcasts the exchange dropped since its broker last (re)connected.",
        )
        if not values:
            return [connected, dropped]
        any_exchange = any_dropped = False
        up = dropped_total = 0
        for server, _ in self._servers:
            exchange = server.exchange
            if exchange is None:
                continue
            any_exchange = True
            up += int(exchange.connected)
            count = getattr(exchange, "dropped", None)
            if isinstance(count, int):
                any_dropped = True
                dropped_total += count
        out: list[Metric] = []
        if any_exchange:
            connected.add_metric([], up)
            out.append(connected)
        if any_dropped:
            dropped.add_metric([], dropped_total)
            out.append(dropped)
        return out
