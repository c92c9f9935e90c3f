"""Connection state recovery (``docs/recovery.md``): a client whose connection is lost and
that comes back within ``window`` seconds gets the same connection back: its id, its
namespaces and rooms (its controllers, its ``store``), and every message the server sent it
meanwhile, in order, exactly once. No disconnect event fires for a recovered loss.

Only wsmvc clients ask for it; a neffos client (neffos.js, Go) never sees any of it. The
wire contract, beside the neffos handshake:

* The upgrade URL's query says ``wsmvc-recovery=1`` on a first connection. The server
  answers ``M`` with the *recovery frame*, then ``A<id>``: the recovery frame is the
  message of event ``_wsmvcRecovery`` (namespace ``""``) whose body is a key, a secret of
  32 URL-safe characters. A client whose first frame is ``A<id>`` talks to a server
  without recovery (nothing to wait for).
* Both sides count the data frames (text and binary) they send and read after ``A<id>``,
  over the whole life of the connection (across recoveries).
* To come back, the client dials with ``wsmvc-recovery=<key>&wsmvc-received=<n>``, ``n``
  the data frames it read. If the server still has the connection, and every frame after
  the ``n``-th, it answers a recovery frame ``<new key> <m>``, ``m`` the data frames it
  read from the client (the client sends its own after the ``m``-th again), then
  ``A<same id>``, then the frames after the ``n``-th, then what comes next. Otherwise it
  is a new connection: a recovery frame with a key alone, then ``A<id>``. Each key serves
  once.

A connection counts as lost (and kept) when it ends without a close frame (the network,
a killed client) or its heartbeat gets no pong; a close frame from the client, a close by
the server, a send buffer overflow or a read timeout end it for good.

Bounds, per kept connection: ``max_messages`` frames and ``max_bytes`` bytes of them, kept
while it is connected too (what the network lost is among the last ones sent); past them
during the wait the connection is given up at once (its disconnect events run).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs
from aiohttp import WSMessage, WSMsgType, web

from .closing import CloseReason, Detached
from .protocol import ACK_OK, Message, encode
from .recorder import Recorder
from .writer import Writer

if TYPE_CHECKING:
    from .conn import Conn

__all__ = [
    "QUERY_KEY",
    "QUERY_RECEIVED",
    "RECOVERY_EVENT",
    "Attachment",
    "MakeWriter",
    "Recorder",
    "Recoverable",
    "Recoveries",
    "Recovery",
]

log = logging.getLogger("wsmvc")

QUERY_KEY: Final = "wsmvc-recovery"
QUERY_RECEIVED: Final = "wsmvc-received"
RECOVERY_EVENT: Final = "_wsmvcRecovery"
# A server id (with an exchange, so that another server knows whose it is), then the secret.
_KEY = re.compile(r"(?:[A-Za-z0-9_-]{1,64}\.)?[A-Za-z0-9_-]{16,128}")
_COUNT = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() takes "²" (int() refuses it)

MakeWriter = Callable[[Callable[[], None]], Writer]
# What may come instead of M: the end of the websocket (a close frame, a broken frame, gone).
_ENDS = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})


@attrs.frozen
class Recovery:
    """``Server(recovery=Recovery(...))``: keep lost connections for their clients' return.

    * ``window`` - seconds a lost connection is kept (default 120, as Socket.IO's
      ``maxDisconnectionDuration``); past it its disconnect events run.
    * ``max_messages`` - frames kept per connection for replay (default 1000).
    * ``max_bytes`` - bytes of them (default 1 MiB). So recovery costs up to this much memory
      per connection, connected or not (docs/recovery.md#bounds).

    Raises ValueError for a bound that is not positive.
    """

    window: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    max_messages: int = attrs.field(default=1000, validator=attrs.validators.gt(0))
    max_bytes: int = attrs.field(default=1 << 20, validator=attrs.validators.gt(0))


def new_key() -> str:
    """A recovery key: 192 random bits, 32 URL-safe characters."""
    return secrets.token_urlsafe(24)


def recovery_frame(key: str, received: int | None = None) -> bytes:
    """The recovery frame's text: ``key`` (a new connection) or ``key received``."""
    body = key if received is None else f"{key} {received}"
    return encode(Message(event=RECOVERY_EVENT, body=body.encode()))


def requested(request: web.BaseRequest) -> tuple[str | None, int | None]:
    """What the upgrade asks: ``(None, None)`` nothing; ``("", None)`` recovery for a new
    connection; ``(key, n)`` to recover the connection of ``key``, ``n`` frames read."""
    asked = request.query.get(QUERY_KEY)
    if asked is None:
        return None, None
    received = request.query.get(QUERY_RECEIVED, "")
    if _KEY.fullmatch(asked) is None or _COUNT.fullmatch(received) is None:
        return "", None
    return asked, int(received)


class Recoverable:
    """One connection's recovery: its key, its :class:`Recorder`, and the wait for the
    websocket its client comes back with. Transitions: connected -> lost (:meth:`lose`)
    -> connected (:meth:`resumed`), or over (:meth:`end`: the window passed, the
    connection closed for good, too much to keep)."""

    __slots__ = (
        "_aside",
        "_conn",
        "_current",
        "_drained",
        "_expiry",
        "_offered",
        "_stale",
        "_table",
        "_wake",
        "key",
        "lost",
        "moved_from",
        "over",
        "recorder",
    )

    def __init__(self, conn: Conn, recorder: Recorder, table: Recoveries) -> None:
        self._conn = conn
        self.recorder = recorder
        self._table = table
        self.key = ""  # set once the recovery frame goes out
        self.lost = False
        self.moved_from: str | None = None
        """The id of the server this connection moved here from, if it did."""
        self.over = False
        self._expiry: asyncio.TimerHandle | None = None
        self._offered: Attachment | None = None  # a websocket the client came back with
        self._wake: asyncio.Future[None] | None = None  # the serving task waits for one
        self._current: Attachment | None = None  # the websocket the connection is on
        # A return taken while the serving task runs a handler (see _may_take_aside):
        self._drained = False  # the websocket that is gone was read to its end
        self._aside: asyncio.Task[None] | None = None  # the task taking it
        self._stale = False  # the serving task's next read is of the websocket that is gone

    @property
    def conn(self) -> Conn:
        """The connection."""
        return self._conn

    async def opened(self) -> None:
        """Nothing to do (:class:`~wsmvc.recovery_hooks.RecoveryHooks`)."""

    @property
    def settled(self) -> bool:
        """Whether the connection is kept and its old websocket was read to its end (the
        count of the client's frames read is final)."""
        return self.lost and not self.over and (self._wake is not None or self._drained)

    @property
    def window(self) -> float:
        """Seconds a lost connection is kept."""
        return self.recorder.bounds.window

    def acknowledging(self) -> None:
        """``A<id>`` goes out next: the recovery frame first (so a client knows before its
        ``A<id>`` whether it is recoverable, and a client that sees ``A<id>`` first knows
        it is not)."""
        self.key = self._table.enrol(self)
        inner = self.recorder.inner
        if inner is not None:
            inner.write(recovery_frame(self.key), False)

    def acknowledged(self) -> None:
        """``A<id>`` went out: frames are numbered from now on."""
        self.recorder.start()
        self._conn.received = 0

    def lose(self, why: str) -> bool:
        """The connection's websocket is gone (``why``): keep the connection for ``window``
        seconds, unless its recovery is over (or never began). Whether it is kept."""
        if self.over or not self.key:
            return False
        if self.lost:
            return True
        self.lost = True
        conn = self._conn
        log.info("%r: connection lost (%s): kept %ss for its client", conn, why, self.window)
        self.recorder.lose(lambda: self.end("too much to keep for it"))
        request = conn.request
        transport = request.transport if request is not None else None
        if transport is not None:
            transport.abort()
        # What reads it reads on, to its end (its frames still count): the serving task
        # (woken), or a helper reading for a handler's ask; then nothing reads it again.
        conn.reader.wake()
        if self._current is not None:
            self._current.done.set()  # its request handler returns
            self._current = None
        if self._expiry is None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(self.window, self.end, "not back in time")
        return True

    def end(self, why: str = "", *, cause: CloseReason = CloseReason.CONNECTION_LOST) -> None:
        """No recovery any more: a lost connection closes for good (its events run), its
        ``close_reason`` ``cause``."""
        if self.over:
            return
        self.over = True
        self._table.remove(self)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.lost and why:
            done = "handed over" if cause is CloseReason.MOVED else "not recovered"
            log.info("%r: %s: %s", self._conn, done, why)
        offered, self._offered = self._offered, None
        if offered is not None:
            offered.refuse()  # served as a new connection
        self._wakeup()
        if self.lost and not self._conn.closed:
            # The serving task closes it as soon as it sees its websocket gone.
            code = 1001 if cause is CloseReason.MOVED else 1006
            self._conn.request_close(code, "", cause=cause)

    def finished(self) -> None:
        """The connection ended: the request handler of its websocket may return."""
        self.end()
        if self._current is not None:
            self._current.done.set()
            self._current = None

    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def resumed(self) -> bool:
        """In the serving task, once its websocket is gone: wait for the client's next one
        (``True``: the connection goes on over it) or the end (``False``)."""
        while not self.over:
            if not self.lost:  # taken while its handler ran (_take_aside)
                self._conn.reader.taken()  # what its helper queued meanwhile is handled now
                return True
            offered, self._offered = self._offered, None
            if offered is None:
                self._wake = asyncio.get_running_loop().create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
                continue
            if await self._take(offered):
                return True
        return False

    def offer(self, attachment: Attachment) -> bool:
        """A client came back with this connection's key: take over (the old websocket, if
        the server did not see it go yet, is dropped now). ``False`` when over."""
        if self.over:
            return False
        self._table.remove(self)  # each key serves once
        self.lose("its client came back on another connection")
        if self._offered is not None:
            self._offered.refuse()
        self._offered = attachment
        self._wakeup()
        self._may_take_aside()
        return True

    def read_to_end(self) -> None:
        """The websocket that is gone was read to its end (every frame of it counted)."""
        if self._current is not None:
            return  # a return is being taken: this was the serving task's last read of it
        self._drained = True
        self._stop_reading()
        if asyncio.current_task() is not self._conn.reader.task:
            self._may_take_aside()  # its helper read it: the serving task runs a handler

    def _may_take_aside(self) -> None:
        """A returning websocket is offered while the serving task runs a handler, which
        may well wait for that very client (an ask, a namespace or room change of it):
        once the websocket that is gone was read to its end (so the count of frames read
        is final), another task takes the return over as the serving task would; the
        handler's asks get their answers on it (a helper reads), and the serving task goes
        on over it once the handler returned (:meth:`stale`)."""
        if self._offered is None or self._wake is not None or self._aside is not None:
            return
        if self.over or not self.lost or not self._drained:
            return
        attachment, self._offered = self._offered, None
        self._aside = asyncio.get_running_loop().create_task(self._take_aside(attachment))

    async def _take_aside(self, attachment: Attachment) -> None:
        try:
            if await self._take(attachment):
                if self._wake is not None:
                    self._wakeup()  # the handler returned meanwhile: resumed() goes on
                else:
                    self._stale = True
                self._conn.reader.ensure_helper()  # the handler's asks get their answers
        finally:
            self._aside = None

    def stale(self) -> bool:
        """Whether the serving task reads, one last time, the websocket its client came
        back from while it ran a handler (consumed): it then goes on over the new one."""
        if not self._stale or asyncio.current_task() is not self._conn.reader.task:
            return False
        self._stale = False
        return True

    def withdraw(self, attachment: Attachment) -> None:
        """``attachment``'s request handler is gone before the serving task took it (it was
        cancelled): the key opened nothing, it serves again."""
        if self._offered is attachment:
            self._offered = None
            self._table.restore(self)

    async def _take(self, attachment: Attachment) -> bool:
        """Go on over ``attachment``'s websocket: its ``M``, then the recovery frame,
        ``A<id>`` and the replay. ``False`` when it cannot be: the connection ended (and
        that websocket got its close frame), or the websocket is dropped and the connection
        stays kept, its key serving again (no ``M`` came: nothing, a message, gone again).
        """
        conn = self._conn
        if self.recorder.since(attachment.received) is None:
            attachment.refuse()  # served as a new connection
            self.end("the messages it missed are no longer all kept")
            return False
        if attachment.taken.done():  # its request handler was cancelled meanwhile
            self._table.restore(self)
            return False
        inner = conn.attach(attachment.ws, attachment.request, attachment.make_writer)
        self._current = attachment
        self.recorder.pending = inner  # a close while its M is awaited goes there
        attachment.taken.set_result(True)
        frame = await self._handshake(attachment.ws, inner)
        if frame is not None and frame.type in _ENDS:
            try:
                conn.read_frame(frame)  # a close frame or a broken frame: closed for good
            except Detached:
                pass  # gone again
        if self.over:
            return False
        if frame is None or frame.type is not WSMsgType.TEXT or frame.data[:1] != "M":
            gone = frame is not None and frame.type in _ENDS
            why = "and is gone again" if gone else "and sent no M"
            self._dropped(attachment, why)
            return False
        # Now, not before M: what was sent while waiting for it is kept, and goes too.
        replay = self.recorder.since(attachment.received)
        if replay is None:
            self.end("the messages it missed are no longer all kept")
            return False
        self.lost = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._drained = False
        self.key = self._table.enrol(self)
        inner.write(recovery_frame(self.key, conn.received), False)
        inner.write((ACK_OK + conn.id).encode(errors="replace"), False)
        for data, binary, _ in replay:
            inner.write(data, binary)
        self.recorder.resume(inner)
        log.info("%r: recovered, %d messages replayed", conn, len(replay))
        return True

    async def _handshake(self, ws: web.WebSocketResponse, inner: Writer) -> WSMessage | None:
        """The first frame from ``ws`` but pings and pongs, within the handshake timeout;
        ``None`` past it, or once the connection is over (its close wakes this wait as it
        wakes the serving task's reads)."""
        conn = self._conn
        reader = conn.reader
        loop = asyncio.get_running_loop()
        timeout = conn.handshake_timeout
        deadline = None if timeout is None else loop.time() + timeout
        # The task waiting here is the one a close wakes (_take_aside's, or the serving one).
        serving, reader.task = reader.task, asyncio.current_task()
        try:
            while not self.over:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return None
                reader.reading = True
                try:
                    frame = await ws.receive(left)
                except asyncio.CancelledError:
                    if not reader.woken():
                        raise
                    continue
                except asyncio.TimeoutError:
                    return None
                finally:
                    reader.reading = False
                if frame.type is WSMsgType.PING:
                    inner.control(WSMsgType.PONG, frame.data)
                elif frame.type is not WSMsgType.PONG:
                    return frame
            return None
        finally:
            reader.task = serving

    def _dropped(self, attachment: Attachment, why: str) -> None:
        """The websocket a client came back with failed before the replay: drop it; the
        connection stays kept (for what is left of its window), its key serving again."""
        log.info("%r: its client came back %s: still kept", self._conn, why)
        self._current = None
        self.recorder.pending = None
        transport = attachment.request.transport
        if transport is not None:
            transport.abort()
        self._conn.reader.halt()
        self._stop_reading()
        attachment.done.set()
        self._table.restore(self)

    def _stop_reading(self) -> None:
        """Nothing reads the connection's websocket any more (it ended, or it is dropped):
        an ask made while the connection is kept starts no helper reader on it (aiohttp
        fails the fifth read of a closed websocket, which would break the kept connection).
        The serving task, if it did not see it end, reads it once more (its own reader)."""
        self._conn.reader.gone = True


class Attachment:
    """A websocket a client came back with (its request handler waits on it)."""

    __slots__ = ("done", "make_writer", "received", "request", "taken", "ws")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        make_writer: MakeWriter,
        received: int,
    ) -> None:
        self.ws = ws
        self.request = request
        self.make_writer = make_writer
        self.received = received
        # True: the connection goes on over it; False: serve it as a new connection.
        self.taken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.done = asyncio.Event()  # the connection is done with this websocket

    def refuse(self) -> None:
        if not self.taken.done():
            self.taken.set_result(False)


class Recoveries:
    """A server's recoverable connections by key."""

    __slots__ = ("_by_key", "bounds", "server_id")

    def __init__(self, bounds: Recovery) -> None:
        self.bounds = bounds
        self._by_key: dict[str, Recoverable] = {}
        self.server_id = ""
        """What keys start with (and a dot): the server's id in a cluster, else nothing."""

    def enrol(self, recoverable: Recoverable) -> str:
        """A new key for ``recoverable``."""
        key = f"{self.server_id}.{new_key()}" if self.server_id else new_key()
        self._by_key[key] = recoverable
        return key

    def restore(self, recoverable: Recoverable) -> None:
        """``recoverable``'s key opened nothing: it serves again (unless it is over)."""
        if not recoverable.over and recoverable.key:
            self._by_key[recoverable.key] = recoverable

    def remove(self, recoverable: Recoverable) -> None:
        if self._by_key.get(recoverable.key) is recoverable:
            del self._by_key[recoverable.key]

    def get(self, key: str) -> Recoverable | None:
        return self._by_key.get(key)

    async def come_back(
        self,
        key: str,
        received: int,
        ws: web.WebSocketResponse,
        request: web.Request,
        make_writer: MakeWriter,
    ) -> Attachment | None:
        """A client back with its recovery ``key``: the attachment its connection took
        over (its request handler then waits for ``done``), or ``None``: serve it as a
        new connection."""
        recoverable = self._by_key.get(key)
        if recoverable is None:
            return None
        back = Attachment(ws, request, make_writer, received)
        if not recoverable.offer(back):
            return None
        try:
            taken = await back.taken
        except asyncio.CancelledError:
            recoverable.withdraw(back)  # not taken: its key serves again
            raise
        return back if taken else None

    def recorder(self, make_writer: MakeWriter, made: list[Recorder]) -> MakeWriter:
        """``make_writer`` whose writers are :class:`Recorder` s (appended to ``made``)."""

        def make(on_overflow: Callable[[], None]) -> Writer:
            recorder = Recorder(make_writer(on_overflow), self.bounds)
            made.append(recorder)
            return recorder

        return make
