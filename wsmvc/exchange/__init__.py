"""Scale-out: how servers share broadcasts.

A server always delivers a broadcast to its own matching connections itself; an exchange
carries it to the other servers. :class:`LocalExchange` links servers of one process;
:class:`~wsmvc.exchange.redis.RedisExchange` and :class:`~wsmvc.exchange.nats.NatsExchange`
link processes and hosts through a broker, with neffos' channel names and payloads.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import EventError
from ..protocol import ERR_BAD_NAMESPACE, Message

if TYPE_CHECKING:
    from ..audience import Audience
    from ..conn import Conn
    from ..framing import Stamp
    from ..server import Server
    from .nats import NatsExchange
    from .redis import RedisExchange

__all__ = ["Exchange", "ExchangeTracing", "LocalExchange", "NatsExchange", "RedisExchange"]


def __getattr__(name: str) -> object:
    # The broker exchanges import their client library only when asked for.
    if name == "RedisExchange":
        from .redis import RedisExchange

        return RedisExchange
    if name == "NatsExchange":
        from .nats import NatsExchange

        return NatsExchange
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _nothing() -> None:
    pass


def client_options_of(options: Mapping[str, Any] | None, own: frozenset[str]) -> Mapping[str, Any]:
    """A broker exchange's ``client_options`` (its client library's keywords), as a copy.
    Raises ValueError for one of ``own``, the keywords the exchange sets itself."""
    taken = own.intersection(options or ())
    if taken:
        raise ValueError(
            f"client_options cannot set {', '.join(sorted(taken))}: the exchange sets"
            " them itself (see timeout= and ping_interval=)"
        )
    return dict(options or {})


class ExchangeTracing(Protocol):
    """What an exchange calls when its server's tracing is on (:mod:`wsmvc.tracing` sets
    :attr:`Exchange.tracing`; ``None``, the default, costs one test per broadcast)."""

    def published(self, stamp: Stamp | None) -> str | None:
        """A broadcast with ``stamp`` is being published (called in the publishing call,
        where its span is current): the W3C ``traceparent`` to carry with it, or ``None``."""

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
        """``server.deliver(...)`` for a broadcast of another server, traced: its span's
        parent is ``traceparent``'s (the sender's broadcast), if given. Returns the count."""


class Exchange(abc.ABC):
    """The interface a server uses to reach the other servers.

    The server calls :meth:`attach` once, :meth:`start` and :meth:`stop` with its
    application, the ``*_opened``/``*_closed`` methods when the first connection of a
    namespace or id arrives on it and when the last one leaves (so subscriptions follow
    the connections), and :meth:`publish` after delivering a broadcast locally.
    """

    server: Server | None = None
    tracing: ExchangeTracing | None = None
    """Set by :meth:`wsmvc.tracing.OpenTelemetryTracing.instrument` (see
    :class:`ExchangeTracing`)."""

    def attach(self, server: Server) -> None:
        """Bind this exchange to ``server`` (one exchange object per server)."""
        if self.server is not None and self.server is not server:
            raise RuntimeError("an exchange object serves one server; create one per server")
        self.server = server

    @property
    def connected(self) -> bool:
        """Whether broadcasts currently reach the other servers."""
        return True

    async def start(self) -> None:
        """Connect (in the background for brokers: a broker that is down is retried)."""

    async def stop(self) -> None:
        """Disconnect and release everything."""

    async def hold_id(self, conn_id: str) -> Callable[[], None]:
        """Before the handshake's ack: make messages to ``conn_id`` reach this server from
        now on; returns the release, called once the connection is registered (which
        keeps what it needs) or refused."""
        return _nothing

    def id_problem(self, conn_id: str) -> str | None:
        """Why this exchange cannot carry ``conn_id`` (the server then refuses the
        connection with that reason), or ``None``."""
        return None

    def namespace_opened(self, namespace: str) -> None:
        """The first connection of ``namespace`` arrived on this server."""

    def namespace_closed(self, namespace: str) -> None:
        """The last connection of ``namespace`` left this server."""

    def id_opened(self, conn_id: str) -> None:
        """The first connection with id ``conn_id`` arrived on this server."""

    def id_closed(self, conn_id: str) -> None:
        """The last connection with id ``conn_id`` left this server."""

    def stamp(self) -> Stamp | None:
        """The next broadcast's identity across the cluster, ``(server id, sequence)``,
        which every server delivers it with (:mod:`wsmvc.handover`); ``None``: none."""
        return None

    @abc.abstractmethod
    def publish(
        self,
        msg: Message,
        *,
        exclude_conn: Conn | None = None,
        exclude_id: str | None = None,
        to: str | None = None,
        audience: Audience | None = None,
        stamp: Stamp | None = None,
    ) -> None:
        """Send a broadcast (already delivered locally) to the other servers, in order.
        ``audience``: several rooms or exclusions (:mod:`wsmvc.audience`), without this
        server's connections; ``stamp``: what :meth:`stamp` gave for it."""

    @abc.abstractmethod
    async def ask(self, msg: Message, *, to: str, timeout: float | None) -> Message:
        """Ask the connection ``to`` on another server; its answer, or an error."""


class LocalExchange(Exchange):
    """Links several servers of one process: what one broadcasts, all of them deliver.

    ``a = LocalExchange()`` starts a group; ``LocalExchange(a)`` joins it. Give each server
    its own: ``Server(exchange=a)``, ``Server(exchange=LocalExchange(a))``.
    """

    def __init__(self, peer: LocalExchange | None = None) -> None:
        self._group: list[LocalExchange] = peer._group if peer is not None else []
        self._group.append(self)

    def _others(self) -> list[Server]:
        return [p.server for p in self._group if p is not self and p.server is not None]

    def publish(
        self,
        msg: Message,
        *,
        exclude_conn: Conn | None = None,
        exclude_id: str | None = None,
        to: str | None = None,
        audience: Audience | None = None,
        stamp: Stamp | None = None,
    ) -> None:
        traced = self.tracing.published(stamp) if self.tracing is not None else None
        for peer in self._group:
            server = peer.server
            if peer is self or server is None:
                continue
            if peer.tracing is not None:
                peer.tracing.deliver(
                    server, msg, traced, exclude=exclude_id, to=to, audience=audience, stamp=stamp
                )
            else:
                server.deliver(msg, exclude=exclude_id, to=to, audience=audience, stamp=stamp)

    async def ask(self, msg: Message, *, to: str, timeout: float | None) -> Message:
        for server in self._others():
            if any(c.namespace(msg.namespace) for c in server.get_connections(to)):
                return await server.ask(msg, to=to, timeout=timeout)
        raise EventError(ERR_BAD_NAMESPACE)
