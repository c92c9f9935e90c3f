"""The one close path of a connection (``neffos-protocol.md`` §11, ``docs/lifecycle.md``).

Whoever starts it (``close()``, the peer's close frame, a read timeout, the send-buffer
limit, shutdown, a cancellation), a close goes the same way, once: the session becomes
``CLOSING`` (pending asks fail at once), the connection leaves the server's registry, the
close frame is queued behind everything written before it, and the serving task is woken.
The serving task then ends the connection (:meth:`Closing.finish`): the disconnect events
still held back for namespaces this side disconnected, the close's own events, then
``on_disconnect``; only then do the callers of ``close()`` return.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

from aiohttp import WSCloseCode, WSMessage, WSMsgType

from .protocol import Message
from .states import ConnState

if TYPE_CHECKING:
    from .conn import Conn, OnOpen
    from .nsconn import NSConn, Registry

__all__ = ["Closing", "Deferred"]

log = logging.getLogger("wsmvc")

# RFC 6455 7.4.1: codes that say what happened but never go in a close frame.
_NOT_ON_THE_WIRE = frozenset({1005, WSCloseCode.ABNORMAL_CLOSURE, 1015})

Events: TypeAlias = "list[tuple[NSConn, Message]]"
Deferred: TypeAlias = "tuple[NSConn, Events, asyncio.Future[None]]"
"""A namespace this side disconnected: its events for the serving task, and who waits."""


class Closing:
    """The close of one connection: started once by :meth:`request`, ended by the serving
    task with :meth:`finish`. ``code`` is the close code once closing (ours, or the
    peer's); ``transport`` is dropped if the close cannot complete within ``timeout``."""

    __slots__ = (
        "_closer",
        "_conn",
        "_registry",
        "_transport",
        "_waiter",
        "code",
        "timeout",
    )

    def __init__(
        self,
        conn: Conn,
        *,
        registry: Registry | None,
        transport: asyncio.Transport | None,
        timeout: float,
    ) -> None:
        self._conn = conn
        self._registry = registry
        self._transport = transport
        self.timeout = timeout
        self.code: int | None = None
        self._closer: asyncio.Task[None] | None = None
        self._waiter: asyncio.Event | None = None  # made when someone waits

    def request(self, code: int, reason: str, urgent: bool) -> None:
        """Start closing, once (see the module docstring). ``urgent``: the close frame goes
        at once, ahead of what is still queued (a peer that stopped reading)."""
        conn = self._conn
        if not conn.session.begin_close():
            return
        self.code = code
        conn.writer.closed = True  # now, not when the closer task starts: broadcasts skip it
        if self._registry is not None:
            self._registry.conn_removed(conn)
        # First: the readers' cancellations are then delivered before the closer's first
        # step (callbacks run in order), so no read of ours is pending when it closes.
        conn.reader.halt()
        self._closer = asyncio.get_running_loop().create_task(
            self._close_transport(code, reason.encode()[:123], urgent)
        )

    def ended(self, frame: WSMessage, code: int | None) -> None:
        """The websocket ended: the peer's close frame, the connection broke, or aiohttp
        failed it (an invalid or oversized frame: logged); ``code`` is aiohttp's
        ``close_code``."""
        if code is None:
            code = WSCloseCode.ABNORMAL_CLOSURE
        elif not code:
            code = 1005  # a close frame without a status (aiohttp says 0)
        if frame.type is WSMsgType.ERROR:
            log.info("%r: closing (%s): %s", self._conn, code, frame.data)
        self.request(code, "", False)

    async def _close_transport(self, code: int, reason: bytes, urgent: bool) -> None:
        if code in _NOT_ON_THE_WIRE:
            # An abnormal end of ours says 1011 if the peer can still hear it; a peer's
            # close without a status is answered with 1000.
            if code == WSCloseCode.ABNORMAL_CLOSURE:
                code, urgent = WSCloseCode.INTERNAL_ERROR, True
            else:
                code = WSCloseCode.OK
        loop = asyncio.get_running_loop()
        transport = self._transport
        # Bounded: a peer that stopped reading would hold queued frames, and the close frame
        # after them, forever. Past the bound the transport is aborted, which ends every wait
        # inside aiohttp's close. A timer, not wait_for(): no second task for every
        # connection. A client's websocket does not expose its transport: wait_for there.
        closing = self._conn.writer.close(code, reason, urgent=urgent)
        abort = None
        if transport is not None:
            abort = loop.call_later(self.timeout + 1, transport.abort)
        else:
            closing = asyncio.wait_for(closing, self.timeout + 1)
        try:
            await closing
        except (asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
            log.debug("%r: close did not complete: %r", self._conn, exc)
            if transport is not None:
                transport.abort()
        finally:
            if abort is not None:
                abort.cancel()
        if transport is not None and transport.get_write_buffer_size():
            # Closed, with bytes still queued for a peer that may never read them.
            loop.call_later(self.timeout, transport.abort)

    # -- the end ------------------------------------------------------------------------------

    async def finish(self, on_close: OnOpen | None) -> None:
        """End the connection, in the serving task: the events held back, the close's,
        then ``on_close``; wake the callers of ``close()``; then wait (bounded) for the
        close handshake and the helper reader.

        These are the connection's cleanup: a cancellation (or another ``BaseException``)
        raised by one of them does not skip the others; the first is re-raised at the end.
        """
        conn = self._conn
        self.request(WSCloseCode.ABNORMAL_CLOSURE, "", False)
        interrupted: BaseException | None = None
        for _, events, done in conn.take_deferred():
            interrupted = interrupted or await self._fire_through(events)
            if not done.done():
                done.set_result(None)
        interrupted = interrupted or await self._fire_through(conn.session.closing_events())
        if on_close is not None:
            try:
                await on_close(conn)
            except BaseException as exc:  # on_close logs an Exception itself
                interrupted = interrupted or exc
        conn.session.finish()
        if self._waiter is not None:
            self._waiter.set()
        await self.transport_closed()
        await conn.reader.stop(self.timeout + 2)
        if interrupted is not None:
            raise interrupted

    async def _fire_through(self, events: Iterable[tuple[NSConn, Message]]) -> BaseException | None:
        """Fire ``events``, every one of them; the first BaseException a hook raised."""
        interrupted: BaseException | None = None
        for ns, msg in events:
            try:
                await self._conn.dispatcher.fire(ns, msg)
            except BaseException as exc:
                interrupted = interrupted or exc
        return interrupted

    async def transport_closed(self) -> None:
        """Wait (bounded by the close itself) until the close handshake ended."""
        closer = self._closer
        if closer is not None and not closer.done() and closer is not asyncio.current_task():
            # Bounded by the closer's own abort timer; shielded: a cancelled caller must not
            # cancel the close handshake.
            await asyncio.wait([closer])

    async def wait_closed(self, caller: Conn | None) -> None:
        """Wait until :meth:`finish` ran, as code running for ``caller`` (the connection whose
        handler, or a task started from it, runs the current code; ``None``: no handler).

        Not at all when the caller is this connection (its events wait for that handler);
        at most ``timeout`` seconds from a handler of another connection, and not at all
        when this connection's handler itself waits for the caller's (two handlers closing
        each other's connections would otherwise wait for each other forever).
        """
        conn = self._conn
        if caller is conn or conn.session.state is ConnState.CLOSED:
            return
        if self._waiter is None:
            self._waiter = asyncio.Event()
        if caller is None:
            await self._waiter.wait()
            return
        if _waits_for(conn, caller):
            return
        _waiting_for[caller] = conn
        try:
            await asyncio.wait_for(self._waiter.wait(), self.timeout)
        except asyncio.TimeoutError:
            log.debug("%r: closed from %r; its disconnect events still wait", conn, caller)
        finally:
            del _waiting_for[caller]


# Whose disconnect events a handler of a connection waits for in close().
_waiting_for: dict[Conn, Conn] = {}


def _waits_for(conn: Conn, other: Conn) -> bool:
    """Whether ``conn``'s handler waits, through close() calls, for ``other``'s."""
    seen: Conn | None = conn
    while seen is not None:
        if seen is other:
            return True
        seen = _waiting_for.get(seen)
    return False
