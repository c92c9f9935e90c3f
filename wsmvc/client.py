"""A Python neffos client on the same :class:`~wsmvc.Conn` machinery as the server."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.client_ws import ClientWebSocketResponse

from .closing import CloseReason
from .conn import Conn
from .errors import ConnectionClosed, ProtocolError, Reject
from .handlers import HandlerTable, Namespaces
from .protocol import ACK_OK, ACK_REFUSED, ACK_REQUEST
from .writer import QueuedWriter

__all__ = ["ClientConn", "dial"]


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
) -> ClientConn:
    """Connect to a neffos server at ``url`` and complete the handshake.

    ``namespaces`` maps namespace → event → handler for what the server sends (the same
    table the server uses). Returns the connection, acknowledged: call
    ``await conn.connect("namespace")`` next. ``timeout`` bounds the upgrade, the
    handshake and the close (seconds); ``ask_timeout`` is the default of asks;
    ``max_queue``/``max_queue_bytes`` bound what is kept unhandled while an ask waits
    (see :class:`~wsmvc.Server`). Raises :class:`~wsmvc.Reject` with the server's reason
    when the server refuses the connection, :class:`~wsmvc.ConnectionClosed` when it
    closes during the handshake, and aiohttp's :class:`~aiohttp.WSServerHandshakeError`
    (with ``.status``) when the HTTP upgrade is refused (401, 403, 503...).
    """
    handlers = namespaces if isinstance(namespaces, HandlerTable) else HandlerTable(namespaces)
    own = session is None
    http = session if session is not None else aiohttp.ClientSession()
    try:
        ws: ClientWebSocketResponse = await http.ws_connect(  # type: ignore[assignment]
            url,
            autoclose=False,  # the server's close is answered in order, by the connection
            headers=headers,
            compress=15 if compress else 0,
            # aiohttp refuses a message whose size reaches max_msg_size; ours is inclusive.
            max_msg_size=max_message_size + 1,
            heartbeat=heartbeat,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
        )
        conn = ClientConn(
            ws,
            lambda on_overflow: QueuedWriter(ws, send_buffer_limit, on_overflow),
            handlers,
            is_client=True,
            ask_timeout=ask_timeout,
            close_timeout=timeout,
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
        )
        conn._session = http if own else None
        if handlers.native_only:  # no handshake (spec 9.1): open, in namespace ""
            conn.session.acknowledged()
            ns = conn.session.connect_started("")
            assert ns is not None  # a new session has no namespace
            conn.session.connect_finished(ns, True)
        else:
            await ws.send_str(ACK_REQUEST)
            first = await ws.receive(timeout=timeout)
            if first.type is not WSMsgType.TEXT:
                await ws.close()
                raise ConnectionClosed(f"handshake failed: got {first.type.name}")
            data: str = first.data
            if data.startswith(ACK_REFUSED):
                await ws.close()
                raise Reject(data[1:])
            if not data.startswith(ACK_OK):
                await ws.close()
                raise ProtocolError(f"handshake failed: unexpected first frame {data[:40]!r}")
            conn.id = data[1:]
            conn.session.acknowledged()
        asyncio.get_running_loop().create_task(conn.serve())  # Conn keeps it once it runs
        return conn
    except BaseException:
        if own:
            await http.close()
        raise
