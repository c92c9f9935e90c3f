"""The server's heartbeat: one timer for all its connections, not one per connection.

Every ``heartbeat / 2`` seconds a sweep looks at each open connection:

* a frame came since the last sweep (any frame: a message, a pong, a ping): alive, nothing
  to do;
* nothing came: it gets a ping (an empty PING frame, RFC 6455 §5.5.2, through the
  connection's ordered write path);
* nothing came since the previous sweep's ping either: no pong within ``heartbeat / 2``
  seconds, so the peer is gone; the connection is closed (1006 for this side, 1011 with
  ``keepalive ping timeout`` on the wire, as the ``websockets`` library says it) and the
  reason is logged.

So an idle peer is pinged every ``heartbeat`` seconds, and a silent one is closed between
``heartbeat`` and ``1.5 * heartbeat`` seconds after its last frame: the bound of aiohttp's
own heartbeat. Why not aiohttp's: it reschedules a callback for every chunk of data a
connection receives (``loop.call_soon`` per read), measured at 13-20 % of the server's CPU
per echo round trip; here the read path pays one attribute store per frame
(``Conn.heard``), and the server answers pings itself (``autoping=False``), in order with
its other frames.

A connection whose serving task is inside a handler (no reader running) cannot read the
pong: it is still pinged (the traffic keeps proxies from closing it) but not closed for a
missing pong; it is judged again once it reads (Go neffos reads in the loop that runs its
handlers, with the same effect). Its transport is looked at instead: one the peer reset or
shut down (so closed, or closing) closes the connection as lost, and the handler still
running ``close_timeout`` seconds later is cancelled (:mod:`wsmvc.closing`).

``Conn.heard`` counts whole frames read, so two live peers could look silent: one whose
pong is in its socket but not read yet (the event loop was busy, and the sweep runs before
the serving task), and one sending a single large frame slowly (no pong fits inside it).
So before closing, the sweep asks the kernel when the socket last received data (Linux:
``TCP_INFO``'s ``tcpi_last_data_recv``): bytes within the last ``heartbeat / 2`` seconds
mean a live peer, judged again at the next sweep. And a sweep that runs more than
``heartbeat / 4`` late (the loop was blocked) closes nobody: it could not tell.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType

from .closing import CloseReason
from .states import ConnState

if TYPE_CHECKING:
    from .conn import Conn

__all__ = ["Heartbeat"]

log = logging.getLogger("wsmvc")

# Linux's struct tcp_info: tcpi_last_data_recv, milliseconds, a u32 after 8 bytes of u8
# fields and 11 u32 (include/uapi/linux/tcp.h; stable ABI since 2.6).
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_LAST_DATA_RECV = struct.Struct("=I")
_LAST_DATA_RECV_AT = 52


def ms_since_data(conn: Conn) -> int | None:
    """Milliseconds since the kernel last received data on ``conn``'s socket, read or not;
    ``None`` where the platform does not say (or the connection has no socket)."""
    request = conn.request
    transport = request.transport if request is not None else None
    sock = transport.get_extra_info("socket") if transport is not None else None
    if _TCP_INFO is None or sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _LAST_DATA_RECV_AT + 4)
    except OSError:
        return None
    if len(info) < _LAST_DATA_RECV_AT + 4:
        return None
    return int(_LAST_DATA_RECV.unpack_from(info, _LAST_DATA_RECV_AT)[0])


def _transport_gone(conn: Conn) -> bool:
    """Whether ``conn``'s transport is closed or closing (the peer reset or shut down its
    end, or a write failed); ``False`` where there is none to look at (a client)."""
    request = conn.request
    if request is None:
        return False
    transport = request.transport
    return transport is None or transport.is_closing()


class Heartbeat:
    """Pings the idle connections among ``conns()`` and closes the ones that do not answer,
    every ``period / 2`` seconds while there are connections (see the module docstring).

    :meth:`start` when a connection is added (it does nothing if the timer runs); the timer
    stops by itself when a sweep finds no connection, and with :meth:`stop`.
    """

    __slots__ = ("_conns", "_due", "_pinged", "_timer", "period")

    def __init__(self, period: float, conns: Callable[[], Collection[Conn]]) -> None:
        if period <= 0:
            raise ValueError(f"heartbeat must be a positive number of seconds, got {period!r}")
        self.period = period
        self._conns = conns
        self._pinged: set[Conn] = set()  # pinged by the last sweep and silent since
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop time the next sweep is meant for

    def start(self) -> None:
        """Make sure the sweeps run (from the event loop's thread)."""
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._due = loop.time() + self.period / 2
            self._timer = loop.call_at(self._due, self._sweep)

    def stop(self) -> None:
        """No more sweeps (until the next :meth:`start`)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pinged.clear()

    def _sweep(self) -> None:
        self._timer = None
        conns = tuple(self._conns())  # a close during the sweep may change the collection
        pinged, self._pinged = self._pinged, set()
        # Late: the loop was blocked, pongs may wait unread. No verdicts this time.
        judge = asyncio.get_running_loop().time() - self._due < self.period / 4
        for conn in conns:
            try:
                self._look_at(conn, conn in pinged, judge)
            except Exception:  # one connection's failure must not stop the others' heartbeat
                log.exception("%r: heartbeat failed", conn)
        if conns:
            self.start()

    def _look_at(self, conn: Conn, was_pinged: bool, judge: bool) -> None:
        if conn.heard:
            conn.heard = False
            return
        state = conn.session.state
        if state is not ConnState.OPEN and state is not ConnState.CONNECTING:
            return  # closing: its own close path has it (a connection before M is pinged)
        if was_pinged and conn.reader.listening:
            quiet = ms_since_data(conn) if judge else 0
            if quiet is not None and quiet < self.period * 500:
                self._pinged.add(conn)  # bytes came (a frame under way, a pong unread)
                return
            log.debug("%r: no pong within %s seconds of a ping", conn, self.period / 2)
            reason = CloseReason.HEARTBEAT_TIMEOUT  # logged at INFO by the close
            conn.request_close(WSCloseCode.ABNORMAL_CLOSURE, reason.text, urgent=True, cause=reason)
        elif not conn.reader.listening and _transport_gone(conn):
            # Inside a handler (nothing reads the pong), but the peer's TCP end is gone: the
            # close cuts that handler after close_timeout (wsmvc.closing), and the
            # connection leaves the registry now rather than when the handler returns.
            log.debug("%r: the connection was lost while a handler ran", conn)
            reason = CloseReason.CONNECTION_LOST
            conn.request_close(WSCloseCode.ABNORMAL_CLOSURE, "", urgent=True, cause=reason)
        elif conn.writer.control(WSMsgType.PING, b""):
            self._pinged.add(conn)
