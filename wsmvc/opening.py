"""How a server connection opens (``neffos-protocol.md`` §3 and §9.1).

The client's ``M`` is awaited for ``handshake_timeout`` seconds (past it: 1008), and what it
sends before is kept for after the ack, within the session's bound (past it: 1008). Then
``on_open`` (the server's ``on_connect``) decides: ``A<id>``, or ``H<reason>`` and the close.
A native-only connection has no handshake: ``on_open`` decides, then namespace ``""``
connects through its hooks. Either way the result says whether ``on_disconnect`` runs
once the connection closes, whatever happened in between: when ``on_open`` accepted it,
or refused it on a server with ``fire_disconnect_always`` (neffos' ``FireDisconnectAlways``).
A client that never sent ``M`` never had ``on_connect`` run, nor has ``on_disconnect``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from aiohttp import WSCloseCode, WSMsgType

from .closing import CloseReason
from .errors import GENERIC_ERROR, ConnectionClosed, Reject
from .protocol import ON_NAMESPACE_CONNECT, ON_NAMESPACE_CONNECTED, Message
from .reading import frame_size
from .states import ConnState

if TYPE_CHECKING:
    from .conn import Conn, OnOpen

ConnHook: TypeAlias = Callable[["Conn"], "Awaitable[None] | None"]

__all__ = ["ConnHook", "call_on_connect", "call_on_disconnect", "open_native", "open_server_side"]

log = logging.getLogger("wsmvc")


async def open_server_side(conn: Conn, on_open: OnOpen | None) -> bool:
    """Run the neffos handshake of ``conn``; whether ``on_disconnect`` is to run."""
    session = conn.session
    timeout = conn.handshake_timeout
    # One timer for the whole wait (cheaper than a timeout on every receive); when it
    # fires, the reader closes the connection (1008) and wakes this task.
    timer = (
        None
        if timeout is None
        else asyncio.get_running_loop().call_later(
            timeout, conn.reader.timed_out, "handshake timeout"
        )
    )
    try:
        while session.state is ConnState.CONNECTING:
            frame = await conn.reader.receive(None, "handshake timeout")
            if frame is None:
                continue
            if frame.type is WSMsgType.TEXT and frame.data[:1] == "M":
                break
            msg = conn.read_frame(frame)
            if msg is not None and not session.queue(msg, frame_size(frame)):
                conn.request_close(  # logged at WARNING by the close
                    WSCloseCode.POLICY_VIOLATION,
                    "too much before the handshake",
                    cause=CloseReason.PROTOCOL_ERROR,
                )
        else:
            return False
    finally:
        if timer is not None:
            timer.cancel()
    return await _decide(conn, on_open)


async def _decide(conn: Conn, on_open: OnOpen | None) -> bool:
    refusal = await on_open(conn) if on_open is not None else None
    session = conn.session
    if session.state is ConnState.CONNECTING:
        if refusal is None:
            conn.acknowledge()
        else:
            conn.writer.write(*session.refuse(refusal))
            conn.request_close(WSCloseCode.POLICY_VIOLATION, cause=CloseReason.REFUSED)
    elif refusal is not None and session.open:
        # Acknowledged early by a write in on_connect: no H any more, close instead.
        conn.request_close(WSCloseCode.POLICY_VIOLATION, refusal, cause=CloseReason.REFUSED)
    return refusal is None or _always(conn)


def _always(conn: Conn) -> bool:
    """Whether ``on_disconnect`` runs for a connection ``on_connect`` refused."""
    server = conn._server
    return server is not None and server.fire_disconnect_always


async def open_native(conn: Conn, on_open: OnOpen | None) -> bool:
    """Open a native-only connection (no handshake) into namespace ``""``; whether
    ``on_disconnect`` is to run."""
    refusal = await on_open(conn) if on_open is not None else None
    if refusal is not None:
        _refuse_native(conn, refusal)
        return _always(conn)
    conn.acknowledge()  # registers it, once (a native connection sends no A<id>)
    session = conn.session
    if session.open and "" not in session.namespaces:
        ns = session.connect_started("")
        assert ns is not None  # just checked: nothing else connects ""
        refusal = await conn.dispatcher.fire(ns, Message(event=ON_NAMESPACE_CONNECT))
        if session.connect_finished(ns, refusal is None):
            await conn.dispatcher.fire(ns, Message(event=ON_NAMESPACE_CONNECTED))
        elif refusal is not None:
            _refuse_native(conn, refusal)
    return True


def _refuse_native(conn: Conn, reason: str) -> None:
    if not conn.closed:
        conn.request_close(WSCloseCode.POLICY_VIOLATION, reason, cause=CloseReason.REFUSED)


async def call_on_connect(hook: ConnHook | None, conn: Conn, *, debug_errors: bool) -> str | None:
    """Run the server's ``on_connect`` hook (sync or async): the refusal reason (from
    :class:`~wsmvc.Reject`, or a generic text for another exception, which is logged), or
    ``None`` to accept."""
    if hook is None:
        return None
    try:
        result = hook(conn)
        if inspect.isawaitable(result):
            await result
    except Reject as exc:
        return exc.reason
    except Exception as exc:
        if isinstance(exc, ConnectionClosed) and conn.closed:
            # The client went away while on_connect waited for it: not a refusal, so
            # on_disconnect balances it once the connection's events ran.
            log.debug("%r: closed during on_connect: %s", conn, exc)
            return None
        log.exception("on_connect failed for %r; refusing it", conn)
        return f"{type(exc).__name__}: {exc}" if debug_errors else GENERIC_ERROR
    return None


async def call_on_disconnect(hook: ConnHook | None, conn: Conn) -> None:
    """Run the server's ``on_disconnect`` hook (sync or async); an exception is logged."""
    if hook is None:
        return
    try:
        result = hook(conn)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("on_disconnect failed for %r", conn)
