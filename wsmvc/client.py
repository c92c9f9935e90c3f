"""A Python neffos client on the same :class:`~wsmvc.Conn` machinery as the server.

:func:`dial` opens one connection (:class:`ClientConn`), which never reconnects; with
``reconnect=Backoff(...)`` it returns a :class:`~wsmvc.ReconnectingClient` instead, which
dials again after a loss and restores what the application connected and joined
(:mod:`wsmvc.reconnect`, ``docs/client-python.md``). Both open their connections with
:class:`Dialing`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import aiohttp
import attrs
import yarl
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.client_ws import ClientWebSocketResponse

from .awaitables import Later
from .client_recovery import ClientRecovery, Returned, query, read_recovery_frame
from .closing import CloseReason
from .conn import Conn
from .errors import ConnectionClosed, ProtocolError, Reject
from .handlers import HandlerTable, Namespaces
from .nsconn import Registry
from .protocol import ACK_OK, ACK_REFUSED, ACK_REQUEST
from .recorder import Recorder
from .recovery import Recovery
from .writer import QueuedWriter, Writer

if TYPE_CHECKING:
    from .backoff import Backoff
    from .reconnect import (
        OnGaveUp,
        OnLost,
        OnRestored,
        OnRestoreFailed,
        OnRetry,
        ReconnectingClient,
    )

__all__ = ["ClientConn", "Connecting", "Dialing", "dial"]

DEFAULT_RECOVERY = Recovery()
"""A reconnecting client's recovery bounds unless told otherwise: the server's defaults."""
DEFAULT_QUEUE_LIMIT = 256
"""Messages a reconnecting client keeps while it reconnects, unless told otherwise."""

OnKept = Callable[[Conn], None]
C = TypeVar("C", bound="ClientConn | ReconnectingClient")


class ClientConn(Conn):
    """The client side of a connection. The HTTP session :func:`dial` opened for it is
    released when the connection ends, whoever closed it (:meth:`close` waits for that)."""

    __slots__ = ("_session",)

    _session: aiohttp.ClientSession | None

    async def serve_and_release(self) -> None:
        """:meth:`serve`, then release the HTTP session :func:`dial` opened: a connection
        the server closed leaves no session for the application to close."""
        try:
            await self.serve()
        finally:
            if self._session is not None:
                await self._session.close()

    async def close(
        self, code: int = WSCloseCode.OK, reason: str = "", *, cause: CloseReason | None = None
    ) -> None:
        await super().close(code, reason, cause=cause)
        await self._transport_closed()  # the server's close frame, before the HTTP session goes
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> ClientConn:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@attrs.frozen(kw_only=True)
class Dialing:
    """Where and how to open a client connection: :func:`dial`'s arguments, kept so that a
    :class:`~wsmvc.ReconnectingClient` opens every connection of its life the same way.

    The fields are :func:`dial`'s keywords (seconds for the timeouts, bytes for the
    sizes); ``handlers`` is the table every connection shares.
    """

    url: str
    handlers: HandlerTable
    headers: Mapping[str, str] | None = None
    timeout: float = 10.0
    ask_timeout: float | None = 30.0
    compress: bool = False
    max_message_size: int = 4 << 20
    send_buffer_limit: int = 16 << 20
    max_queue: int = 64
    max_queue_bytes: int = 1 << 20
    heartbeat: float | None = None
    recovery: Recovery | None = None
    """Ask for recovery, and keep this much of the connection's frames (a reconnecting
    client's; ``None``: never ask)."""

    async def open(
        self,
        http: aiohttp.ClientSession,
        *,
        registry: Registry | None = None,
        extra_headers: Mapping[str, str] | None = None,
        on_lost: OnKept | None = None,
    ) -> ClientConn:
        """Upgrade through ``http``, complete the neffos handshake and start serving the
        connection; returns it acknowledged (its ``_session`` is ``None``: the caller owns
        ``http``).

        ``registry`` is told of every change of namespace and room membership (a
        reconnecting client follows what its application keeps that way);
        ``extra_headers`` are sent beside :attr:`headers`. With :attr:`recovery` the
        upgrade asks for recovery, and a connection the server offers it for is kept when
        lost (``on_lost(conn)`` runs then; :mod:`wsmvc.client_recovery`). Raises what
        :func:`dial` raises; whatever fails, the websocket is closed.
        """
        opened = await self._dial(http, None, 0, registry, extra_headers, on_lost)
        assert isinstance(opened, ClientConn)  # only a return can be recovered
        return opened

    async def come_back(
        self,
        http: aiohttp.ClientSession,
        key: str,
        received: int,
        *,
        registry: Registry | None = None,
        extra_headers: Mapping[str, str] | None = None,
        on_lost: OnKept | None = None,
    ) -> ClientConn | Returned:
        """Dial again for the kept connection of recovery ``key`` (``received``: the data
        frames it read): :class:`~wsmvc.client_recovery.Returned` when the server
        recovered it, else a new connection, as :meth:`open` returns it. Raises what
        :meth:`open` raises."""
        return await self._dial(http, key, received, registry, extra_headers, on_lost)

    def make_writer(self, ws: ClientWebSocketResponse) -> Callable[[Callable[[], None]], Writer]:
        """``make(on_overflow)``: the write path of a connection on ``ws``."""
        return lambda on_overflow: QueuedWriter(ws, self.send_buffer_limit, on_overflow)

    async def _dial(
        self,
        http: aiohttp.ClientSession,
        key: str | None,
        received: int,
        registry: Registry | None,
        extra_headers: Mapping[str, str] | None,
        on_lost: OnKept | None,
    ) -> ClientConn | Returned:
        headers: dict[str, str] | None = None
        if self.headers or extra_headers:
            headers = {**(self.headers or {}), **(extra_headers or {})}
        native = self.handlers.native_only
        url: str | yarl.URL = self.url
        if self.recovery is not None and not native:
            url = yarl.URL(self.url).update_query(query(key, received))
        ws: ClientWebSocketResponse = await http.ws_connect(  # type: ignore[assignment]
            url,
            autoclose=False,  # the server's close is answered in order, by the connection
            headers=headers,
            compress=15 if self.compress else 0,
            # aiohttp refuses a message whose size reaches max_msg_size; ours is inclusive.
            max_msg_size=self.max_message_size + 1,
            heartbeat=self.heartbeat,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.timeout),
        )
        try:
            if native:  # no handshake (spec 9.1): open, in namespace ""
                conn = self._conn_for(ws, registry, None, on_lost)
                conn.session.acknowledged()
                ns = conn.session.connect_started("")
                assert ns is not None  # a new session has no namespace
                conn.session.connect_finished(ns, True)
            else:
                conn_id, recovery = await self._handshake(ws, came_back=key is not None)
                if recovery is not None and recovery[1] is not None:
                    return Returned(ws, conn_id, recovery[0], recovery[1])
                conn = self._conn_for(ws, registry, recovery[0] if recovery else None, on_lost)
                conn.id = conn_id
                conn.session.acknowledged()
                if isinstance(conn.recovery, ClientRecovery):
                    conn.recovery.recorder.start()  # frames are numbered from A<id> on
        except BaseException:
            if not ws.closed:
                await asyncio.shield(ws.close())
            raise
        asyncio.get_running_loop().create_task(conn.serve_and_release())  # Conn keeps it
        return conn

    def _conn_for(
        self,
        ws: ClientWebSocketResponse,
        registry: Registry | None,
        key: str | None,
        on_lost: OnKept | None,
    ) -> ClientConn:
        """A connection on ``ws``; recoverable (its writes recorded) with a ``key``."""
        recorders: list[Recorder] = []
        plain = self.make_writer(ws)
        bounds = self.recovery

        def make(on_overflow: Callable[[], None]) -> Writer:
            if key is None or bounds is None:
                return plain(on_overflow)
            recorder = Recorder(plain(on_overflow), bounds)
            recorders.append(recorder)
            return recorder

        conn = ClientConn(
            ws,
            make,
            self.handlers,
            registry=registry,
            is_client=True,
            ask_timeout=self.ask_timeout,
            close_timeout=self.timeout,
            max_queue=self.max_queue,
            max_queue_bytes=self.max_queue_bytes,
        )
        conn._session = None
        if key is not None and bounds is not None and recorders:
            conn.recovery = ClientRecovery(conn, recorders[0], bounds, key, on_lost)
        return conn

    async def _handshake(
        self, ws: ClientWebSocketResponse, *, came_back: bool
    ) -> tuple[str, tuple[str, int | None] | None]:
        """Send ``M``; the id of the server's ``A<id>``, and what its recovery frame said
        before it (``(key, None)``: a new connection; ``(key, m)``: recovered, the server
        read ``m`` data frames of this side's; ``None``: no recovery frame)."""
        await ws.send_str(ACK_REQUEST)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        recovery: tuple[str, int | None] | None = None
        while True:
            first = await ws.receive(timeout=max(0.0, deadline - loop.time()))
            if first.type is not WSMsgType.TEXT:
                raise ConnectionClosed(f"handshake failed: got {first.type.name}")
            data: str = first.data
            if data.startswith(ACK_REFUSED):
                raise Reject(data[1:])
            if data.startswith(ACK_OK):
                return data[1:], recovery
            if recovery is None and self.recovery is not None:
                recovery = read_recovery_frame(data)
                if recovery is not None and (came_back or recovery[1] is None):
                    continue
            raise ProtocolError(f"handshake failed: unexpected first frame {data[:40]!r}")


class Connecting(Later[C], Generic[C]):
    """What :func:`dial` returns: ``await`` it for the connection, or use it with
    ``async with`` to have the connection closed at the end of the block::

        conn = await wsmvc.dial(url, handlers)       # close it yourself
        async with wsmvc.dial(url, handlers) as conn:  # closed on leaving the block
            ...

    (``async with await wsmvc.dial(...)``, the older form, works too.) Nothing is dialed
    until it is awaited or entered; the errors are :func:`dial`'s, raised there.
    """

    __slots__ = ("_conn",)

    def __init__(self, make: Callable[[], Any]) -> None:
        super().__init__(make)
        self._conn: C | None = None

    async def __aenter__(self) -> C:
        self._conn = await self
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


@overload
def dial(
    url: str,
    namespaces: Namespaces | HandlerTable | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
    timeout: float = 10.0,
    ask_timeout: float | None = 30.0,
    compress: bool = False,
    max_message_size: int = 4 << 20,
    send_buffer_limit: int = 16 << 20,
    max_queue: int = 64,
    max_queue_bytes: int = 1 << 20,
    heartbeat: float | None = None,
    reconnect: None = None,
) -> Connecting[ClientConn]: ...


@overload
def dial(
    url: str,
    namespaces: Namespaces | HandlerTable | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
    timeout: float = 10.0,
    ask_timeout: float | None = 30.0,
    compress: bool = False,
    max_message_size: int = 4 << 20,
    send_buffer_limit: int = 16 << 20,
    max_queue: int = 64,
    max_queue_bytes: int = 1 << 20,
    heartbeat: float | None = None,
    reconnect: Backoff,
    recovery: Recovery | None = DEFAULT_RECOVERY,
    queue_limit: int = DEFAULT_QUEUE_LIMIT,
    on_lost: OnLost | None = None,
    on_retry: OnRetry | None = None,
    on_restored: OnRestored | None = None,
    on_restore_failed: OnRestoreFailed | None = None,
    on_gave_up: OnGaveUp | None = None,
) -> Connecting[ReconnectingClient]: ...


def dial(
    url: str,
    namespaces: Namespaces | HandlerTable | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
    timeout: float = 10.0,
    ask_timeout: float | None = 30.0,
    compress: bool = False,
    max_message_size: int = 4 << 20,
    send_buffer_limit: int = 16 << 20,
    max_queue: int = 64,
    max_queue_bytes: int = 1 << 20,
    heartbeat: float | None = None,
    reconnect: Backoff | None = None,
    recovery: Recovery | None = DEFAULT_RECOVERY,
    queue_limit: int = DEFAULT_QUEUE_LIMIT,
    on_lost: OnLost | None = None,
    on_retry: OnRetry | None = None,
    on_restored: OnRestored | None = None,
    on_restore_failed: OnRestoreFailed | None = None,
    on_gave_up: OnGaveUp | None = None,
) -> Connecting[ClientConn] | Connecting[ReconnectingClient]:
    """Connect to a neffos server at ``url`` and complete the handshake.

    ``namespaces`` maps namespace → event → handler for what the server sends (the same
    table the server uses). ``await dial(...)`` is the connection, acknowledged: call
    ``await conn.connect("namespace")`` next; ``async with dial(...) as conn:`` closes it
    when the block ends (:class:`Connecting`). Nothing happens until one of the two: the
    arguments are checked then, and the errors below raised there.

    ``timeout`` bounds the upgrade, the handshake and the close (seconds);
    ``ask_timeout`` is the default of asks;
    ``max_queue``/``max_queue_bytes`` bound what is kept unhandled while an ask waits
    (see :class:`~wsmvc.Server`); ``heartbeat`` (seconds, off by default) pings the
    server and closes a connection whose pong does not come within half of it. Raises
    :class:`~wsmvc.Reject` with the server's reason when the server refuses the
    connection, :class:`~wsmvc.ConnectionClosed` when it closes during the handshake,
    :class:`~wsmvc.ProtocolError` when its first frame is not neffos', and aiohttp's
    :class:`~aiohttp.WSServerHandshakeError` (with ``.status``) when the HTTP upgrade is
    refused (401, 403, 503...), :class:`OSError` when nothing listens.

    Without ``reconnect`` the connection is a :class:`ClientConn`, which never
    reconnects. With ``reconnect=Backoff(...)`` (:class:`~wsmvc.Backoff`) it is a
    :class:`~wsmvc.ReconnectingClient`: after a loss it dials again with that backoff
    and gets the same connection back from a server with recovery (``recovery``, a
    :class:`~wsmvc.Recovery`: how long it waits for that and how much of its own frames
    it keeps meanwhile; ``None``: never ask, docs/recovery.md), or restores on a new
    connection the namespaces and rooms the application connected and joined through
    it; while it reconnects, emits and asks wait (at most ``queue_limit`` messages;
    ``0`` refuses them). It calls ``on_lost``, ``on_retry``, ``on_restored``,
    ``on_restore_failed`` and ``on_gave_up`` (sync or async; see :mod:`wsmvc.reconnect`).
    The first dial is not retried: it raises as above. ``recovery``, ``queue_limit`` and
    the ``on_*`` callbacks without ``reconnect`` raise :class:`TypeError`, as does a
    ``queue_limit`` that is not a whole number (:class:`ValueError` below 0).
    """
    return Connecting(
        lambda: _dial(
            url,
            namespaces,
            headers=headers,
            session=session,
            timeout=timeout,
            ask_timeout=ask_timeout,
            compress=compress,
            max_message_size=max_message_size,
            send_buffer_limit=send_buffer_limit,
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
            heartbeat=heartbeat,
            reconnect=reconnect,
            recovery=recovery,
            queue_limit=queue_limit,
            events=(on_lost, on_retry, on_restored, on_restore_failed, on_gave_up),
        )
    )


async def _dial(
    url: str,
    namespaces: Namespaces | HandlerTable | None,
    *,
    headers: Mapping[str, str] | None,
    session: aiohttp.ClientSession | None,
    timeout: float,
    ask_timeout: float | None,
    compress: bool,
    max_message_size: int,
    send_buffer_limit: int,
    max_queue: int,
    max_queue_bytes: int,
    heartbeat: float | None,
    reconnect: Backoff | None,
    recovery: Recovery | None,
    queue_limit: int,
    events: tuple[
        OnLost | None,
        OnRetry | None,
        OnRestored | None,
        OnRestoreFailed | None,
        OnGaveUp | None,
    ],
) -> ClientConn | ReconnectingClient:
    """:func:`dial`'s work, once awaited."""
    handlers = namespaces if isinstance(namespaces, HandlerTable) else HandlerTable(namespaces)
    dialing = Dialing(
        url=url,
        handlers=handlers,
        headers=headers,
        timeout=timeout,
        ask_timeout=ask_timeout,
        compress=compress,
        max_message_size=max_message_size,
        send_buffer_limit=send_buffer_limit,
        max_queue=max_queue,
        max_queue_bytes=max_queue_bytes,
        heartbeat=heartbeat,
    )
    if reconnect is not None:
        from .reconnect import Events, ReconnectingClient

        if isinstance(queue_limit, bool) or not isinstance(queue_limit, int):
            raise TypeError(f"queue_limit is a whole number of messages, not {queue_limit!r}")
        if queue_limit < 0:
            raise ValueError(f"queue_limit must be 0 or more, not {queue_limit}")
        return await ReconnectingClient.start(
            attrs.evolve(dialing, recovery=recovery),
            reconnect,
            session=session,
            events=Events(*events),
            queue_limit=queue_limit,
        )
    extras = recovery is not DEFAULT_RECOVERY or queue_limit != DEFAULT_QUEUE_LIMIT
    if extras or any(event is not None for event in events):
        raise TypeError(
            "recovery, queue_limit, on_lost, on_retry, on_restored... need reconnect=Backoff(...)"
        )
    own = session is None
    http = session if session is not None else aiohttp.ClientSession()
    try:
        conn = await dialing.open(http)
    except BaseException:
        if own:
            await http.close()
        raise
    conn._session = http if own else None
    return conn
