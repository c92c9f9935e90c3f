"""A Python neffos client on the same :class:`~wsmvc.Conn` machinery as the server.

:func:`dial` opens one connection (:class:`ClientConn`), which never reconnects; with
``reconnect=Backoff(...)`` it returns a :class:`~wsmvc.ReconnectingClient` instead, which
dials again after a loss and restores what the application connected and joined
(:mod:`wsmvc.reconnect`, ``docs/client-python.md``). Both open their connections with
:class:`Dialing`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, overload

import aiohttp
import attrs
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.client_ws import ClientWebSocketResponse

from .closing import CloseReason
from .conn import Conn
from .errors import ConnectionClosed, ProtocolError, Reject
from .handlers import HandlerTable, Namespaces
from .nsconn import Registry
from .protocol import ACK_OK, ACK_REFUSED, ACK_REQUEST
from .writer import QueuedWriter

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

__all__ = ["ClientConn", "Dialing", "dial"]


class ClientConn(Conn):
    """The client side of a connection; :meth:`close` also releases its HTTP session."""

    __slots__ = ("_session",)

    _session: aiohttp.ClientSession | None

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

    async def open(
        self,
        http: aiohttp.ClientSession,
        *,
        registry: Registry | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ClientConn:
        """Upgrade through ``http``, complete the neffos handshake and start serving the
        connection; returns it acknowledged (its ``_session`` is ``None``: the caller owns
        ``http``).

        ``registry`` is told of every change of namespace and room membership (a
        reconnecting client follows what its application keeps that way);
        ``extra_headers`` are sent beside :attr:`headers`. Raises what :func:`dial`
        raises; whatever fails, the websocket is closed.
        """
        headers: dict[str, str] | None = None
        if self.headers or extra_headers:
            headers = {**(self.headers or {}), **(extra_headers or {})}
        ws: ClientWebSocketResponse = await http.ws_connect(  # type: ignore[assignment]
            self.url,
            autoclose=False,  # the server's close is answered in order, by the connection
            headers=headers,
            compress=15 if self.compress else 0,
            # aiohttp refuses a message whose size reaches max_msg_size; ours is inclusive.
            max_msg_size=self.max_message_size + 1,
            heartbeat=self.heartbeat,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.timeout),
        )
        try:
            conn = self._conn_for(ws, registry)
            if self.handlers.native_only:  # no handshake (spec 9.1): open, in namespace ""
                conn.session.acknowledged()
                ns = conn.session.connect_started("")
                assert ns is not None  # a new session has no namespace
                conn.session.connect_finished(ns, True)
            else:
                conn.id = await self._handshake(ws)
                conn.session.acknowledged()
        except BaseException:
            if not ws.closed:
                await asyncio.shield(ws.close())
            raise
        asyncio.get_running_loop().create_task(conn.serve())  # Conn keeps it once it runs
        return conn

    def _conn_for(self, ws: ClientWebSocketResponse, registry: Registry | None) -> ClientConn:
        conn = ClientConn(
            ws,
            lambda on_overflow: QueuedWriter(ws, self.send_buffer_limit, on_overflow),
            self.handlers,
            registry=registry,
            is_client=True,
            ask_timeout=self.ask_timeout,
            close_timeout=self.timeout,
            max_queue=self.max_queue,
            max_queue_bytes=self.max_queue_bytes,
        )
        conn._session = None
        return conn

    async def _handshake(self, ws: ClientWebSocketResponse) -> str:
        """Send ``M``; the id of the server's ``A<id>``."""
        await ws.send_str(ACK_REQUEST)
        first = await ws.receive(timeout=self.timeout)
        if first.type is not WSMsgType.TEXT:
            raise ConnectionClosed(f"handshake failed: got {first.type.name}")
        data: str = first.data
        if data.startswith(ACK_REFUSED):
            raise Reject(data[1:])
        if not data.startswith(ACK_OK):
            raise ProtocolError(f"handshake failed: unexpected first frame {data[:40]!r}")
        return data[1:]


@overload
async def dial(
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
) -> ClientConn: ...


@overload
async def dial(
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
    on_lost: OnLost | None = None,
    on_retry: OnRetry | None = None,
    on_restored: OnRestored | None = None,
    on_restore_failed: OnRestoreFailed | None = None,
    on_gave_up: OnGaveUp | None = None,
) -> ReconnectingClient: ...


async def dial(
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
    on_lost: OnLost | None = None,
    on_retry: OnRetry | None = None,
    on_restored: OnRestored | None = None,
    on_restore_failed: OnRestoreFailed | None = None,
    on_gave_up: OnGaveUp | None = None,
) -> ClientConn | ReconnectingClient:
    """Connect to a neffos server at ``url`` and complete the handshake.

    ``namespaces`` maps namespace → event → handler for what the server sends (the same
    table the server uses). Returns the connection, acknowledged: call
    ``await conn.connect("namespace")`` next. ``timeout`` bounds the upgrade, the
    handshake and the close (seconds); ``ask_timeout`` is the default of asks;
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
    and restores the namespaces and rooms the application connected and joined through
    it, calling ``on_lost``, ``on_retry``, ``on_restored``, ``on_restore_failed`` and
    ``on_gave_up`` (sync or async; see :mod:`wsmvc.reconnect`). The first dial is not
    retried: it raises as above. The ``on_*`` callbacks without ``reconnect`` raise
    :class:`TypeError`.
    """
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
    events = (on_lost, on_retry, on_restored, on_restore_failed, on_gave_up)
    if reconnect is not None:
        from .reconnect import Events, ReconnectingClient

        return await ReconnectingClient.start(
            dialing, reconnect, session=session, events=Events(*events)
        )
    if any(event is not None for event in events):
        raise TypeError("on_lost, on_retry, on_restored... need reconnect=Backoff(...)")
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
