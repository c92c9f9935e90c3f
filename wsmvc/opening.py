"""How a server connection opens (``neffos-protocol.md`` §3 and §9.1).

The client's ``M`` is awaited for ``handshake_timeout`` seconds (past it: 1008), and what it
sends before is kept for after the ack, within the session's bound (past it: 1008). Then
``on_open`` (the server's ``on_connect``) decides: ``A<id>``, or ``H<reason>`` and the close.
A native-only connection has no handshake: ``on_open`` decides, then namespace ``""``
connects through its hooks. Either way the result says whether ``on_open`` accepted the
connection: then ``on_disconnect`` runs once it closes, whatever happened in between.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType

from .protocol import ON_NAMESPACE_CONNECT, ON_NAMESPACE_CONNECTED, Message
from .reading import frame_size
from .states import ConnState

if TYPE_CHECKING:
    from .conn import Conn, OnOpen

__all__ = ["open_native", "open_server_side"]

log = logging.getLogger("wsmvc")


async def open_server_side(conn: Conn, on_open: OnOpen | None) -> bool:
    """Run the neffos handshake of ``conn``; whether ``on_open`` accepted it."""
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
                log.warning("%r: too much sent before the handshake, closing (1008)", conn)
                conn.request_close(WSCloseCode.POLICY_VIOLATION, "too much before the handshake")
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
            conn.request_close(WSCloseCode.POLICY_VIOLATION)
    elif refusal is not None and session.open:
        # Acknowledged early by a write in on_connect: no H any more, close instead.
        conn.request_close(WSCloseCode.POLICY_VIOLATION, refusal)
    return refusal is None


async def open_native(conn: Conn, on_open: OnOpen | None) -> bool:
    """Open a native-only connection (no handshake) into namespace ``""``; whether
    ``on_open`` accepted it."""
    refusal = await on_open(conn) if on_open is not None else None
    if refusal is not None:
        _refuse_native(conn, refusal)
        return False
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
        log.info("refused native connection %r: %s", conn, reason)
        conn.request_close(WSCloseCode.POLICY_VIOLATION, reason)
