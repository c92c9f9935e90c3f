"""Connection state recovery on the client side (``docs/recovery.md``, "Clients").

A :class:`~wsmvc.ReconnectingClient` asks for recovery in its upgrade's query
(``wsmvc-recovery=1``); a server that offers it answers a *recovery frame* with a key
before ``A<id>``. From ``A<id>`` on, the connection's writes go through a
:class:`~wsmvc.recorder.Recorder` (numbered, the last ones kept within the bounds of a
:class:`~wsmvc.Recovery`) and its reads are counted (``conn.received``).

When such a connection's websocket is lost (no close frame: the network, a dead server
process) the :class:`~wsmvc.ClientConn` is **kept** (:class:`ClientRecovery`): no
forced events, its asks keep waiting within their timeouts, its serving task waits for a
new websocket. The reconnect loop dials with ``wsmvc-recovery=<key>&wsmvc-received=<n>``:

* the server answers ``<new key> <m>`` (:class:`Returned`): recovered, the websocket goes
  to the same connection (:meth:`ClientRecovery.take`), whose frames after the ``m``-th
  are sent again, then everything goes on;
* anything else is a new connection: the kept one ends for good (its forced events run,
  its asks fail), and the client restores namespaces and rooms on the new one.

The kept connection also ends for good when the client's own ``window`` (seconds) passes,
or when more than its bounds were written to it since the loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from aiohttp.client_ws import ClientWebSocketResponse

from .closing import CloseReason
from .errors import ProtocolError
from .protocol import decode
from .recorder import Recorder
from .recovery import QUERY_KEY, QUERY_RECEIVED, RECOVERY_EVENT, Recovery

if TYPE_CHECKING:
    from .conn import Conn
    from .writer import Writer

__all__ = [
    "ClientRecovery",
    "Returned",
    "end_kept",
    "keep",
    "kept_lost",
    "query",
    "read_recovery_frame",
    "until_lost",
]

log = logging.getLogger("wsmvc")

MakeWriter = Callable[[Callable[[], None]], "Writer"]


def query(key: str | None, received: int) -> dict[str, str]:
    """The upgrade's query: recovery for a new connection (``key`` ``None``), or the
    return of the connection of ``key``, ``received`` data frames read."""
    if key is None:
        return {QUERY_KEY: "1"}
    return {QUERY_KEY: key, QUERY_RECEIVED: str(received)}


def read_recovery_frame(data: str) -> tuple[str, int | None] | None:
    """The key and the server's count (``None``: a new connection) of a recovery frame;
    ``None`` when ``data`` is not one. Raises :class:`~wsmvc.ProtocolError` for a recovery
    frame whose body is neither ``key`` nor ``key count``."""
    try:
        msg = decode(data)
    except ProtocolError:
        return None
    if msg.event != RECOVERY_EVENT or msg.namespace or msg.token:
        return None
    words = msg.body.decode(errors="replace").split(" ")
    if len(words) == 1 and words[0]:
        return words[0], None
    if len(words) == 2 and words[0] and words[1].isascii() and words[1].isdigit():
        return words[0], int(words[1])
    raise ProtocolError(f"a recovery frame with an unexpected body {msg.body[:60]!r}")


@attrs.frozen
class Returned:
    """A websocket whose server recovered the connection it was dialed for: ``id`` is
    the connection's (the same), ``key`` the key of the next return, ``server_read`` the
    data frames the server read of the client's."""

    ws: ClientWebSocketResponse
    id: str
    key: str
    server_read: int


class ClientRecovery:
    """The recovery of one client connection (:class:`~wsmvc.recovery_hooks.RecoveryHooks`):
    its key, its :class:`~wsmvc.recorder.Recorder`, and the wait of its serving task for
    the websocket the reconnect loop comes back with (:meth:`take`).

    ``on_lost(conn)`` runs, once per loss, the moment the connection is kept (the
    reconnecting client stops using it and starts dialing). ``bounds.window`` is how many
    seconds it is kept: past it, it ends for good (its forced events run). Nothing is
    kept until ``keeping`` is set (a new connection is restored first: lost meanwhile, it
    ends, and the client dials a new one).
    """

    __slots__ = (
        "_conn",
        "_expiry",
        "_on_lost",
        "_stale",
        "_wake",
        "bounds",
        "keeping",
        "key",
        "lost",
        "lost_event",
        "over",
        "recorder",
    )

    def __init__(
        self,
        conn: Conn,
        recorder: Recorder,
        bounds: Recovery,
        key: str,
        on_lost: Callable[[Conn], None] | None = None,
    ) -> None:
        self._conn = conn
        self.recorder = recorder
        self.bounds = bounds
        self.key = key
        self._on_lost = on_lost
        self.keeping = False
        self.lost = False
        self.over = False
        self.lost_event = asyncio.Event()  # set while kept
        self._expiry: asyncio.TimerHandle | None = None
        self._wake: asyncio.Future[None] | None = None  # the serving task waits in resumed()
        self._stale = False  # the serving task's next read is of the websocket that is gone

    @property
    def live(self) -> bool:
        """Whether the connection is kept and can still be recovered."""
        return self.lost and not self.over

    def acknowledging(self) -> None:
        pass  # a server's hook (the client reads the recovery frame in its handshake)

    async def opened(self) -> None:
        """Nothing to do (:class:`~wsmvc.recovery_hooks.RecoveryHooks`)."""

    def acknowledged(self) -> None:
        pass  # the client's Recorder starts numbering in the handshake

    def lose(self, why: str) -> bool:
        """The websocket is gone without a close frame (``why``): keep the connection for
        ``window`` seconds. ``False`` once the recovery is over, or before ``keeping``."""
        if self.over or not self.keeping:
            return False
        if self.lost:
            return True
        self.lost = True
        conn = self._conn
        log.info("%r: connection lost (%s): kept %ss for recovery", conn, why, self.bounds.window)
        self.recorder.lose(lambda: self.end("more was written to it than recovery keeps"))
        conn.reader.wake()
        self._expiry = asyncio.get_running_loop().call_later(
            self.bounds.window, self.end, "not back in time"
        )
        self.lost_event.set()
        if self._on_lost is not None:
            self._on_lost(conn)
        return True

    def read_to_end(self) -> None:
        """The lost websocket was read to its end (``conn.received`` is final): nothing
        reads it again."""
        self._conn.reader.gone = True

    def end(self, why: str = "") -> None:
        """No recovery any more: a kept connection closes for good (1006, its forced
        events run in its serving task)."""
        if self.over:
            return
        self.over = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.lost and why:
            log.info("%r: not recovered: %s", self._conn, why)
        self._wakeup()
        if self.lost and not self._conn.closed:
            self._conn.request_close(1006, "", cause=CloseReason.CONNECTION_LOST)

    def finished(self) -> None:
        self.end()

    def stale(self) -> bool:
        """Whether the serving task reads, one last time, the websocket lost while it ran a
        handler (consumed): it then goes on over the new one."""
        if not self._stale or asyncio.current_task() is not self._conn.reader.task:
            return False
        self._stale = False
        return True

    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def resumed(self) -> bool:
        """In the serving task, once its websocket is gone: wait until the reconnect loop
        took a new one (``True``) or the recovery is over (``False``)."""
        while not self.over:
            if not self.lost:
                self._conn.reader.taken()  # what a helper queued meanwhile is handled now
                return True
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        return False

    def take(self, returned: Returned, make_writer: MakeWriter) -> bool:
        """The server recovered the connection on ``returned.ws``: go on over it, after
        sending again this side's frames after the server's count. ``False`` (and the
        connection ends for good; the caller closes the websocket) when that cannot be
        exact: the recovery is over, the id differs, or those frames are no longer all
        kept."""
        conn = self._conn
        if self.over or not self.lost:
            return False
        if returned.id != conn.id:
            self.end(f"the server recovered another connection ({returned.id!r})")
            return False
        again = self.recorder.since(returned.server_read)
        if again is None:
            self.end("the frames the server missed are no longer all kept")
            return False
        inner = conn.attach(returned.ws, None, make_writer)
        for data, binary, _ in again:
            inner.write(data, binary)
        self.recorder.resume(inner)
        self.key = returned.key
        self.lost = False
        self.lost_event.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._wake is not None:
            self._wakeup()  # the serving task goes on over the new websocket
        else:
            self._stale = True  # it runs a handler: its next read is of the lost websocket
            if conn.session.asks:
                conn.reader.ensure_helper()  # that handler's asks get their answers
        log.info("%r: recovered, %d frames sent again", conn, len(again))
        return True


def keep(conn: Conn) -> None:
    """``conn`` is in use (published, restored): a loss of it from now on is kept."""
    if isinstance(conn.recovery, ClientRecovery):
        conn.recovery.keeping = True


def kept_lost(conn: Conn) -> bool:
    """Whether ``conn`` is lost and kept (or ending, its recovery over meanwhile)."""
    return isinstance(conn.recovery, ClientRecovery) and conn.recovery.lost


async def until_lost(conn: Conn) -> bool:
    """Wait until ``conn`` is lost: ``True`` when it is kept for recovery, ``False`` when
    it closed (its disconnect events ran, or run now)."""
    recovery = conn.recovery
    if not isinstance(recovery, ClientRecovery):
        await conn.wait_closed()
        return False
    closed = asyncio.ensure_future(conn.wait_closed())
    kept = asyncio.ensure_future(recovery.lost_event.wait())
    try:
        await asyncio.wait([closed, kept], return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        kept.cancel()
    return recovery.live


async def end_kept(conn: Conn, why: str) -> None:
    """``conn``, kept, will not be recovered (``why``): it ends for good (its forced
    events run, its asks fail); returns once they ran."""
    if isinstance(conn.recovery, ClientRecovery):
        conn.recovery.end(why)
    await conn.close()
