"""The one close path of a connection (``neffos-protocol.md`` §11, ``docs/lifecycle.md``).

Whoever starts it (``close()``, the peer's close frame, a read timeout, the send-buffer
limit, shutdown, a cancellation), a close goes the same way, once: the session becomes
``CLOSING`` (pending asks fail at once), the connection leaves the server's registry, the
close frame is queued behind everything written before it, and the serving task is woken.
The serving task then ends the connection (:meth:`Closing.finish`): the disconnect events
still held back for namespaces this side disconnected, the close's own events, then
``on_disconnect``; only then do the callers of ``close()`` return.

Every close has a :class:`CloseReason` beside its code (``conn.close_reason``), set by
whoever started it, and is logged once, here, at that reason's level.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType

from .protocol import Message
from .states import ConnState

if TYPE_CHECKING:
    from .conn import Conn, OnOpen
    from .nsconn import NSConn, Registry

__all__ = ["CloseReason", "Closing", "Deferred", "Detached", "shut_down"]

log = logging.getLogger("wsmvc")

# RFC 6455 7.4.1: codes that say what happened but never go in a close frame.
_NOT_ON_THE_WIRE = frozenset({1005, WSCloseCode.ABNORMAL_CLOSURE, 1015})
_CUT = "wsmvc: a handler outlived its connection's close"


class CloseReason(enum.Enum):
    """Why a connection closed: ``conn.close_reason``, beside ``conn.close_code``.

    The value is the reason's text (``reason.text``); ``reason.level`` is the logging level
    its close is logged at. The names say who did what, the same on both sides: on a server
    ``CLIENT_CLOSED`` is the client's close frame and ``SERVER_CLOSED`` the application's
    ``conn.close()`` (the client was kicked); on a :func:`~wsmvc.dial` connection
    ``CLIENT_CLOSED`` is its own ``close()``, and the server's close frame says why the
    server closed when it carries one of these texts (as wsmvc servers send them).
    """

    CLIENT_CLOSED = "client closed"
    """The client closed the connection (its close frame; its code is ``close_code``)."""
    SERVER_CLOSED = "server closed"
    """The server application closed it: ``conn.close(code)``, the code it chose."""
    CONNECTION_LOST = "connection lost"
    """It ended without a close frame (1006): the peer vanished, the network broke."""
    SHUTDOWN = "server shutdown"
    """``server.close()`` (the application's shutdown): 1001."""
    CANCELLED = "cancelled"
    """The task serving it was cancelled (the event loop or aiohttp stopping): 1001."""
    READ_TIMEOUT = "read timeout"
    """Nothing arrived for ``read_timeout`` seconds: 1001."""
    HEARTBEAT_TIMEOUT = "keepalive ping timeout"
    """No pong came for the heartbeat's ping: 1006 here, 1011 on the wire."""
    SEND_BUFFER_OVERFLOW = "send buffer limit exceeded"
    """The peer stopped reading: more than ``send_buffer_limit`` bytes waited for it: 1008."""
    HANDSHAKE_TIMEOUT = "handshake timeout"
    """No neffos ``M`` within ``handshake_timeout`` seconds: 1008."""
    PROTOCOL_ERROR = "protocol error"
    """The peer broke the websocket protocol or a bound: an invalid frame (1002), text that
    is not UTF-8 (1007), a message over ``max_message_size`` (1009), too much before the
    handshake (1008)."""
    REFUSED = "refused"
    """``on_connect`` refused it (``Reject``: ``H<reason>``, then 1008)."""
    INTERNAL_ERROR = "internal server error"
    """wsmvc failed serving it (a bug; the traceback is logged): 1011. Its text is
    :data:`wsmvc.errors.GENERIC_ERROR`, the one text of every such failure."""
    MOVED = "moved to another server"
    """Kept for recovery, its client came back to another server of the cluster, which
    took it over (``docs/recovery.md``): nothing is sent; 1001."""
    NOT_RECOVERED = "not recovered"
    """A client came back with another server's recovery key and its connection could not
    be moved here (that server away, the move stopped: ``docs/recovery.md``): 1011 before
    ``A<id>``; its next try gets a new connection, or its connection back."""

    @property
    def text(self) -> str:
        """The reason in words (the value)."""
        return str(self.value)

    @property
    def level(self) -> int:
        """The logging level its close is logged at: DEBUG for the ends that are someone's
        intent, INFO for a peer gone quiet or missing, WARNING for a peer that misbehaves
        (or a bound the server may have set too low), ERROR for wsmvc's own failure."""
        return _LEVELS.get(self, logging.INFO)

    @classmethod
    def from_text(cls, text: str) -> CloseReason | None:
        """The reason whose text is ``text`` (what a wsmvc server puts in its close frame)."""
        return _BY_TEXT.get(text)


_LEVELS = {
    CloseReason.CLIENT_CLOSED: logging.DEBUG,
    CloseReason.SERVER_CLOSED: logging.DEBUG,
    CloseReason.SHUTDOWN: logging.DEBUG,
    CloseReason.CANCELLED: logging.DEBUG,
    CloseReason.SEND_BUFFER_OVERFLOW: logging.WARNING,
    CloseReason.PROTOCOL_ERROR: logging.WARNING,
    CloseReason.INTERNAL_ERROR: logging.ERROR,
}
_BY_TEXT = {reason.text: reason for reason in CloseReason}
_BY_TEXT["internal error"] = CloseReason.INTERNAL_ERROR  # what earlier wsmvc servers sent
# A server's close frame whose text names no reason (aiohttp's own, another server's): the
# codes that say one; any other is the application's close.
_BY_CODE: dict[int, CloseReason] = {
    WSCloseCode.PROTOCOL_ERROR: CloseReason.PROTOCOL_ERROR,
    WSCloseCode.INVALID_TEXT: CloseReason.PROTOCOL_ERROR,
    WSCloseCode.MESSAGE_TOO_BIG: CloseReason.PROTOCOL_ERROR,
    WSCloseCode.INTERNAL_ERROR: CloseReason.INTERNAL_ERROR,
}
_KICKED = CloseReason.SERVER_CLOSED

# Closes that may be a network's doing: with recovery on, the connection is kept instead.
_KEPT = frozenset({CloseReason.CONNECTION_LOST, CloseReason.HEARTBEAT_TIMEOUT})


def only_ours(task: asyncio.Task[Any] | None) -> bool:
    """A cancellation of ``task`` that wsmvc asked for (a wake-up, a cut) is being handled:
    consume it, and say whether it was the only one (on Python 3.10, which cannot count
    them: ``True``). Another cancellation asked meanwhile must then be re-raised."""
    if sys.version_info >= (3, 11) and task is not None:
        return task.uncancel() == 0
    return True


class Detached(Exception):
    """Internal: the websocket the serving task reads is gone, and its connection is kept
    for its client's return (:mod:`wsmvc.recovery`)."""


Events: TypeAlias = "list[tuple[NSConn, Message]]"
Deferred: TypeAlias = "tuple[NSConn, Events, asyncio.Future[None]]"
"""A namespace this side disconnected: its events for the serving task, and who waits."""


class Closing:
    """The close of one connection: started once by :meth:`request`, ended by the serving
    task with :meth:`finish`. ``code`` is the close code once closing (ours, or the
    peer's) and ``reason`` why; ``transport`` is dropped if the close cannot complete
    within ``timeout``."""

    __slots__ = (
        "_closer",
        "_conn",
        "_cut",
        "_grace",
        "_registry",
        "_transport",
        "_waiter",
        "code",
        "reason",
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
        self.reason: CloseReason | None = None
        self._closer: asyncio.Task[None] | None = None
        self._waiter: asyncio.Event | None = None  # made when someone waits
        self._grace: asyncio.TimerHandle | None = None  # cuts a handler that outlives it
        self._cut = False  # the serving task's cancellation is ours (see cut)

    def request(
        self, code: int, reason: str, urgent: bool, cause: CloseReason | None, detail: str = ""
    ) -> None:
        """Start closing, once (see the module docstring): with ``code`` and ``reason`` (the
        close frame's text), because of ``cause`` (``None``: this side's application closed
        it), logged with ``detail`` if any. ``urgent``: the close frame goes at once, ahead
        of what is still queued (a peer that stopped reading)."""
        conn = self._conn
        recovery = conn.recovery
        if recovery is not None and cause in _KEPT and recovery.lose(detail or cause.text):
            return
        if not conn.session.begin_close():
            return
        if recovery is not None:
            recovery.end()  # closed for good: a lost one's serving task stops waiting
        if cause is None:
            cause = CloseReason.CLIENT_CLOSED if conn.is_client else CloseReason.SERVER_CLOSED
        self.code = code
        self.reason = cause
        if log.isEnabledFor(cause.level):
            said = detail or (reason if reason != cause.text else "")
            log.log(
                cause.level,
                "%r: closing (%d, %s)%s",
                conn,
                code,  # %d: an IntEnum's %s is its name on Python 3.10
                cause.text,
                f": {said}" if said else "",
            )
        conn.writer.closed = True  # now, not when the closer task starts: broadcasts skip it
        if self._registry is not None:
            self._registry.conn_removed(conn)
        # First: the readers' cancellations are then delivered before the closer's first
        # step (callbacks run in order), so no read of ours is pending when it closes.
        conn.reader.halt()
        loop = asyncio.get_running_loop()
        self._closer = loop.create_task(self._close_transport(code, reason.encode()[:123], urgent))
        if conn.reader.task is not None:
            self._grace = loop.call_later(self.timeout, self._cut_handler)

    def _cut_handler(self) -> None:
        """``timeout`` seconds after the close began, the serving task still runs a handler
        (or ``on_connect``): cancel it, so the disconnect events run and the connection's
        task ends in a bounded time (aiohttp's shutdown would cancel the whole task later,
        and lose them)."""
        self._grace = None
        conn = self._conn
        task = conn.reader.task
        if task is None or task.done() or conn.reader.reading:
            return
        log.warning(
            "%r: a handler still ran %.1f s after the close began: cancelled "
            "(asyncio.shield() what must outlive its connection)",
            conn,
            self.timeout,
        )
        self._cut = True
        task.cancel(_CUT)

    def cut(self) -> bool:
        """Whether the cancellation the serving task handles is the cut of a handler that
        outlived the close (consumed then); any other cancellation is re-raised."""
        if not self._cut:
            return False
        self._cut = False
        return only_ours(self._conn.reader.task)

    def ended(self, frame: WSMessage, code: int | None) -> None:
        """The websocket ended: the peer's close frame, the connection broke, or aiohttp
        failed it (an invalid or oversized frame); ``code`` is aiohttp's ``close_code``."""
        recovery = self._conn.recovery
        if recovery is not None and recovery.stale():
            raise Detached  # the websocket its client came back from: the serving task moves on
        kind = frame.type
        detail = ""
        if kind is WSMsgType.CLOSE:
            code = frame.data or 1005  # a close frame without a status (aiohttp says 0)
            detail = frame.extra or ""
            cause = CloseReason.CLIENT_CLOSED
            if self._conn.is_client:
                cause = CloseReason.from_text(detail) or _BY_CODE.get(code, _KICKED)
        elif kind is WSMsgType.ERROR and isinstance(frame.data, WebSocketError):
            # aiohttp failed it (and sent the close frame): an invalid or oversized frame
            code, cause, detail = frame.data.code, CloseReason.PROTOCOL_ERROR, str(frame.data)
        else:
            # Gone without a close frame (aiohttp's code may say 1000 for the end of the
            # stream: it is not a clean close).
            code, cause = WSCloseCode.ABNORMAL_CLOSURE, CloseReason.CONNECTION_LOST
            detail = str(frame.data) if kind is WSMsgType.ERROR else ""
        self.request(code, "", False, cause, detail)
        if recovery is not None and recovery.lost:
            recovery.read_to_end()
            raise Detached

    def attach(self, transport: asyncio.Transport | None) -> None:
        """Recovery: the connection goes on over a new websocket, on ``transport``."""
        self._transport = transport

    def overflow(self) -> None:
        """The peer stopped reading: more than the send buffer limit waits for it."""
        reason = CloseReason.SEND_BUFFER_OVERFLOW
        self.request(WSCloseCode.POLICY_VIOLATION, reason.text, True, reason)

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
            if self.reason is CloseReason.SHUTDOWN:
                # aiohttp's shutdown stops reading its connections first (pre_shutdown):
                # the peer's close frame could never be read, and waiting for it held every
                # client for close_timeout. So the TCP connection closes once our close
                # frame is out (a callback: it runs once the close below wrote the frame).
                loop.call_soon(transport.close)
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
        if conn.recovery is not None:
            conn.recovery.end()  # it ends for good
        self.request(WSCloseCode.ABNORMAL_CLOSURE, "", False, CloseReason.CONNECTION_LOST)
        if self._grace is not None:  # the handler returned: the events are not cut
            self._grace.cancel()
            self._grace = None
        self.cut()  # a handler that swallowed the cut: its count of cancellations is undone
        interrupted: BaseException | None = None
        # The disconnect events still waiting for the serving task: the close fires them.
        deferred, conn._deferred = conn._deferred or [], None
        for _, events, done in deferred:
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
        if conn.recovery is not None:
            conn.recovery.finished()
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


async def shut_down(
    live: Collection[Conn], me: Conn | None, wait: float, upgrades: asyncio.Event | None
) -> None:
    """Close every connection of ``live`` with 1001 (:attr:`CloseReason.SHUTDOWN`) and wait
    at most ``wait`` seconds for their disconnect events; ``upgrades``, if given, is set
    once no upgrade is under way (those close themselves, and are waited for too). ``me``:
    the connection whose handler shuts down, if any: closed, but never waited for (its
    events run after that handler). Then waits, within the same ``wait``, until their
    serving tasks ended."""
    reason = CloseReason.SHUTDOWN
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    if me is not None:
        me.request_close(WSCloseCode.GOING_AWAY, reason.text, cause=reason)

    def closes() -> list[asyncio.Future[None]]:
        return [
            asyncio.ensure_future(c.close(WSCloseCode.GOING_AWAY, reason.text, cause=reason))
            for c in list(live)
            if c is not me and c.state is not ConnState.CLOSED
        ]

    waits: list[asyncio.Future[Any]] = list(closes())
    waiting = asyncio.ensure_future(upgrades.wait()) if upgrades is not None else None
    if waiting is not None:
        waits.append(waiting)
    if waits:
        try:
            await asyncio.wait(waits, timeout=wait)
        finally:
            if waiting is not None:
                waiting.cancel()
    late = closes()  # upgrades that finished meanwhile (they close themselves)
    if late:
        await asyncio.wait(late, timeout=wait)
    # Then the serving tasks themselves (the close handshake, the helper reader), within
    # the same bound: aiohttp's own shutdown then finds no handler running. It waits for
    # one with a timeout that races the handler's end (aiohttp then logs "Unhandled
    # exception ... InvalidStateError", and may cancel it).
    current = asyncio.current_task()
    tasks = {c.reader.task for c in list(live) if c is not me}
    running = [t for t in tasks if t is not None and t is not current and not t.done()]
    if running:
        await asyncio.wait(running, timeout=max(0.1, deadline - loop.time()))


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
