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
handlers, with the same effect).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType

if TYPE_CHECKING:
    from .conn import Conn

__all__ = ["Heartbeat"]

log = logging.getLogger("wsmvc")


class Heartbeat:
    """Pings the idle connections among ``conns()`` and closes the ones that do not answer,
    every ``period / 2`` seconds while there are connections (see the module docstring).

    :meth:`start` when a connection is added (it does nothing if the timer runs); the timer
    stops by itself when a sweep finds no connection, and with :meth:`stop`.
    """

    __slots__ = ("_conns", "_pinged", "_timer", "period")

    def __init__(self, period: float, conns: Callable[[], Collection[Conn]]) -> None:
        if period <= 0:
            raise ValueError(f"heartbeat must be a positive number of seconds, got {period!r}")
        self.period = period
        self._conns = conns
        self._pinged: set[Conn] = set()  # pinged by the last sweep and silent since
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Make sure the sweeps run (from the event loop's thread)."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.period / 2, self._sweep)

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
        for conn in conns:
            try:
                self._look_at(conn, conn in pinged)
            except Exception:  # one connection's failure must not stop the others' heartbeat
                log.exception("%r: heartbeat failed", conn)
        if conns:
            self.start()

    def _look_at(self, conn: Conn, was_pinged: bool) -> None:
        if conn.heard:
            conn.heard = False
            return
        if not conn.session.open:
            return
        if was_pinged and conn.reader.listening:
            log.info(
                "%r: closing (1006): no pong within %s seconds of a ping", conn, self.period / 2
            )
            conn.request_close(WSCloseCode.ABNORMAL_CLOSURE, "keepalive ping timeout", urgent=True)
        elif conn.writer.control(WSMsgType.PING, b""):
            self._pinged.add(conn)
