"""The server's sending API: ask one client, broadcast to many (this process and, with an
exchange, every server), from the event loop or another thread. A mixin of
:class:`~wsmvc.Server`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeAlias

from .audience import Audience, Exclude, audience_of, deliver_to_audience
from .awaitables import SENT, Sent
from .conn import Conn
from .delivery import deliver, submit_from_thread
from .errors import EventError
from .framing import Stamp
from .nsconn import DEFAULT, NSConn, Timeout
from .protocol import ERR_BAD_NAMESPACE, Message

if TYPE_CHECKING:
    from .exchange import Exchange
    from .registry import Registry
    from .tracing import OpenTelemetryTracing

__all__ = ["BroadcastHook", "Sending"]

log = logging.getLogger("wsmvc")

BroadcastHook: TypeAlias = Callable[[Message, int, bool], object]
"""``hook(msg, delivered, local)``, called after each broadcast this server delivered:
``msg`` as given, ``delivered`` the connections of this process it was written to,
``local`` ``True`` for this server's own :meth:`~Sending.broadcast` (handed to the
exchange too, if there is one), ``False`` for :meth:`~Sending.deliver` (a broadcast of
another server, from the exchange). Synchronous; its return value is ignored."""


class Sending:
    """:meth:`ask`, :meth:`broadcast`, :meth:`broadcast_threadsafe` and :meth:`deliver`."""

    __slots__ = ()

    _broadcast_hooks: tuple[BroadcastHook, ...] = ()  # the instance's own once one is added
    _tracing: OpenTelemetryTracing | None = None  # the server's own once traced (wsmvc.tracing)

    if TYPE_CHECKING:  # what the methods use of the Server they are part of
        exchange: Exchange | None
        ask_timeout: float | None
        compress_threshold: int
        compress_level: int
        _registry: Registry
        _loop: asyncio.AbstractEventLoop | None

    async def ask(self, msg: Message, *, to: str, timeout: Timeout = DEFAULT) -> Message:
        """Ask the connection with id ``to`` (connected to ``msg.namespace``) and return its answer.

        ``timeout``: seconds; ``None`` waits without limit, ``0`` fails at once, left out
        it is ``ask_timeout``. Raises :class:`~wsmvc.EventError` with ``bad namespace`` when
        no such connection is connected here (nor, with an exchange, anywhere), or the
        client's error text; :class:`~wsmvc.AskTimeout`; :class:`~wsmvc.ConnectionClosed`
        when the connection closes or leaves the namespace before answering.
        """
        for conn in self._registry.by_id(to):
            if conn.namespace(msg.namespace) is not None:
                return await conn.ask(msg, timeout=timeout)
        if self.exchange is not None:
            wait = self.ask_timeout if timeout is DEFAULT else timeout
            if self._tracing is not None:
                return await self._tracing.ask(self, msg, to, wait)
            return await self.exchange.ask(msg, to=to, timeout=wait)
        raise EventError(ERR_BAD_NAMESPACE)

    def broadcast(
        self,
        msg: Message,
        *,
        exclude: Exclude = None,
        to: str | None = None,
        rooms: Iterable[str] | None = None,
        exclude_rooms: Iterable[str] | None = None,
    ) -> Sent:
        """Send ``msg`` to every connection of its namespace (and room, if set), during
        the call: ``server.broadcast(msg)`` is enough, and ``await server.broadcast(msg)``
        (older code's form) works too, returning at once (:data:`~wsmvc.awaitables.SENT`:
        no "never awaited" warning either way). Nothing waits for slow receivers: each
        one's copy is queued on its connection.

        ``exclude`` skips a connection (a :class:`Conn` or :class:`NSConn`), every
        connection with an id (a ``str``), or several of those (a list or set); ``to``
        delivers only to connections with that id. ``rooms`` (instead of ``msg.room``):
        the members of each of these rooms get it once, with the room set to the first
        of them they are in; ``exclude_rooms`` skips the members of these rooms. The
        message is encoded once (per room), and each receiver gets the same bytes, in
        order. With an ``exchange``, the matching connections of the other servers get it
        too (a Go neffos server there delivers a several-rooms broadcast to the first).
        Raises ValueError for ``rooms`` with ``to`` or ``msg.room``, TypeError for what
        cannot be excluded (see :mod:`wsmvc.audience`).
        """
        if self._tracing is not None:  # the same, in a span
            return self._tracing.broadcast(self, msg, exclude, to, rooms, exclude_rooms)
        return self._broadcast(msg, exclude, to, rooms, exclude_rooms)

    def _broadcast(
        self,
        msg: Message,
        exclude: Exclude,
        to: str | None,
        rooms: Iterable[str] | None,
        exclude_rooms: Iterable[str] | None,
    ) -> Sent:
        audience = audience_of(
            msg, exclude=exclude, to=to, rooms=rooms, exclude_rooms=exclude_rooms
        )
        exchange = self.exchange
        # The same stamp here and on every other server: a connection moving between
        # servers gets each broadcast once (wsmvc.handover).
        stamp = exchange.stamp() if exchange is not None else None
        if audience is not None:
            delivered = self._deliver(msg, to=to, audience=audience, stamp=stamp)
            if self._broadcast_hooks:
                self._broadcasted(msg, delivered, True)
            if exchange is not None:
                exchange.publish(msg, to=to, audience=audience.remote(), stamp=stamp)
            return SENT
        delivered = self._deliver(msg, exclude=exclude, to=to, stamp=stamp)  # type: ignore[arg-type]
        if self._broadcast_hooks:
            self._broadcasted(msg, delivered, True)
        if exchange is not None:
            conn = exclude.conn if isinstance(exclude, NSConn) else exclude
            exchange.publish(
                msg,
                exclude_conn=conn if isinstance(conn, Conn) else None,
                exclude_id=conn if isinstance(conn, str) else None,
                to=to,
                stamp=stamp,
            )
        return SENT

    def broadcast_threadsafe(
        self,
        msg: Message,
        *,
        exclude: str | Iterable[str] | None = None,
        to: str | None = None,
        rooms: Iterable[str] | None = None,
        exclude_rooms: Iterable[str] | None = None,
    ) -> concurrent.futures.Future[None]:
        """:meth:`broadcast` from another thread of this process (a sync web framework's
        request, a thread pool): scheduled on the server's event loop; the returned
        future's ``result(timeout)`` waits until it was sent (and raises what it raised).

        Raises :class:`RuntimeError` before the application started (no loop yet) and
        when called from the event loop's own thread (call ``broadcast()`` there: waiting
        on the future would block the loop it waits for).
        """

        async def send() -> None:  # on the loop's thread
            self.broadcast(msg, exclude=exclude, to=to, rooms=rooms, exclude_rooms=exclude_rooms)

        return submit_from_thread(self._loop, send, "server.broadcast()")

    def deliver(
        self,
        msg: Message,
        *,
        exclude: Conn | NSConn | str | None = None,
        to: str | None = None,
        audience: Audience | None = None,
        stamp: Stamp | None = None,
    ) -> int:
        """Deliver ``msg`` to the matching connections of this process; returns the count.
        ``audience``: several rooms or exclusions (:mod:`wsmvc.audience`); ``stamp``: a
        cluster broadcast's ``(origin server id, sequence)`` (:mod:`wsmvc.handover`).

        What goes out is ``msg`` as an event: never its token nor an exchange marker.
        Reported to the broadcast hooks (:meth:`add_broadcast_hook`) as not ``local``.
        """
        delivered = self._deliver(msg, exclude=exclude, to=to, audience=audience, stamp=stamp)
        if self._broadcast_hooks:
            self._broadcasted(msg, delivered, False)
        return delivered

    def add_broadcast_hook(self, hook: BroadcastHook) -> BroadcastHook:
        """Call ``hook(msg, delivered, local)`` after each broadcast this server delivers
        (:data:`BroadcastHook`; for metrics: one call per broadcast, not per receiver);
        returns it. A hook that raises is logged and never stops a broadcast."""
        # The server's own attribute (a Server has a __dict__), shadowing the class's ().
        self._broadcast_hooks = (*self._broadcast_hooks, hook)  # type: ignore[misc]
        return hook

    def _broadcasted(self, msg: Message, delivered: int, local: bool) -> None:
        for hook in self._broadcast_hooks:
            try:
                hook(msg, delivered, local)
            except Exception:
                log.exception("broadcast hook %r failed", hook)

    def _deliver(
        self,
        msg: Message,
        *,
        exclude: Conn | NSConn | str | None = None,
        to: str | None = None,
        audience: Audience | None = None,
        stamp: Stamp | None = None,
    ) -> int:
        if audience is not None:
            return deliver_to_audience(
                self._registry,
                msg,
                audience,
                to=to,
                threshold=self.compress_threshold,
                level=self.compress_level,
                stamp=stamp,
            )
        if isinstance(exclude, NSConn):
            exclude = exclude.conn
        return deliver(
            self._registry,
            msg,
            exclude=exclude,
            to=to,
            threshold=self.compress_threshold,
            level=self.compress_level,
            stamp=stamp,
        )
