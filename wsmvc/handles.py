"""The handles of a :class:`~wsmvc.ReconnectingClient`: a namespace
(:class:`ReconnectingNamespace`) and a room (:class:`ReconnectingRoom`) that stay the same
objects across reconnects and act on whichever connection is current; and the
:class:`Outbox`, where their emits and asks wait while the client reconnects.

A handle is also the record of what the client restores: its namespace's connect
payload, and its rooms in the order joined (:mod:`wsmvc.reconnect`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs

from .errors import AskTimeout, ConnectionClosed, NotConnected, NotJoined, WsmvcError
from .nsconn import DEFAULT, NSConn, Room, Timeout, as_body
from .protocol import Message

if TYPE_CHECKING:
    from .conn import Conn
    from .reconnect import ReconnectingClient

__all__ = ["Outbox", "ReconnectingNamespace", "ReconnectingRoom", "Tracker"]

log = logging.getLogger("wsmvc")


class _Waiting:
    """One message in an :class:`Outbox`: an emit (no ``answer``) or an ask."""

    __slots__ = ("answer", "deadline", "msg", "task", "timeout", "timer")

    def __init__(self, msg: Message, answer: asyncio.Future[Message] | None) -> None:
        self.msg = msg
        self.answer = answer
        self.timeout: float | None = None  # an ask's, seconds
        self.deadline: float | None = None  # the loop time it ends
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[Message] | None = None  # the ask, once sent

    def expire(self) -> None:
        """The ask's timeout passed while it waited for the reconnect."""
        if self.answer is not None and not self.answer.done():
            text = f"no answer to {self.msg.event!r} within {self.timeout}s (it waited to be sent)"
            self.answer.set_exception(AskTimeout(text))

    def fail(self, error: BaseException) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)


class Outbox:
    """What a :class:`~wsmvc.ReconnectingClient`'s handles send while it reconnects: at
    most ``limit`` messages (emits, and asks, each with its timeout counted from the
    call), sent in order once the connection is back (recovered: after the frames the
    recovery sends again; new: after the restore), before anything sent later. An emit
    past the limit, or any with ``limit`` 0, raises :class:`~wsmvc.ConnectionClosed`.
    """

    __slots__ = ("_waiting", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: collections.deque[_Waiting] = collections.deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def _room(self, down: Callable[[], ConnectionClosed]) -> None:
        if not self.limit:
            raise down()
        if len(self._waiting) >= self.limit:
            raise ConnectionClosed(f"reconnecting, and {self.limit} messages wait already")

    def emit(self, msg: Message, down: Callable[[], ConnectionClosed]) -> None:
        """Keep ``msg`` for the connection to come; raises ``down()`` with ``limit`` 0, and
        :class:`~wsmvc.ConnectionClosed` when ``limit`` messages wait already."""
        self._room(down)
        self._waiting.append(_Waiting(msg, None))

    async def ask(
        self, msg: Message, timeout: float | None, down: Callable[[], ConnectionClosed]
    ) -> Message:
        """Ask ``msg`` on the connection to come; its answer. ``timeout`` (seconds, from
        now; ``None``: no limit) covers the wait to be sent and the answer. Raises as
        :meth:`emit` and as :meth:`wsmvc.Conn.ask`, :class:`~wsmvc.AskTimeout` included."""
        if timeout is not None and timeout <= 0:
            raise AskTimeout(f"no answer to {msg.event!r}: the timeout is {timeout}s")
        self._room(down)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(msg, loop.create_future())
        assert waiting.answer is not None
        if timeout is not None:
            waiting.timeout = timeout
            waiting.deadline = loop.time() + timeout
            waiting.timer = loop.call_later(timeout, waiting.expire)
        self._waiting.append(waiting)
        try:
            return await waiting.answer
        finally:
            if waiting.timer is not None:
                waiting.timer.cancel()
            if waiting.task is not None:
                waiting.task.cancel()  # the asker gave up (a no-op once answered)
            elif waiting in self._waiting:
                self._waiting.remove(waiting)  # never sent

    async def flush(self, conn: Conn) -> None:
        """Send what waits on ``conn``, in order (what came meanwhile too); what ``conn``
        no longer allows (a namespace or room not restored) is refused: an ask with the
        error :meth:`wsmvc.Conn.ask` raises, an emit dropped (logged)."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            waiting = self._waiting.popleft()
            msg, answer = waiting.msg, waiting.answer
            if answer is None:
                if not conn.write(msg):
                    why = "its namespace or room is gone"
                    log.info("%r: %r not sent after the reconnect: %s", conn, msg.event, why)
                continue
            if answer.done():
                continue  # timed out or given up meanwhile
            if waiting.timer is not None:
                waiting.timer.cancel()
            left = None if waiting.deadline is None else waiting.deadline - loop.time()
            if left is not None and left <= 0:
                waiting.expire()
                continue
            task = waiting.task = loop.create_task(conn.ask(msg, timeout=left))
            task.add_done_callback(functools.partial(_settle, answer))
            # Its first step writes the question (Conn.ask writes before its first await):
            # it runs before this task goes on, so the frames keep their order.
            await asyncio.sleep(0)

    def fail(self, error: BaseException) -> None:
        """The client stopped: every ask waiting fails with ``error``; emits are dropped."""
        waiting, self._waiting = self._waiting, collections.deque()
        for each in waiting:
            each.fail(error)


def _settle(answer: asyncio.Future[Message], done: asyncio.Task[Message]) -> None:
    if answer.done():
        return
    if done.cancelled():
        answer.cancel()
    elif (error := done.exception()) is not None:
        answer.set_exception(error)
    else:
        answer.set_result(done.result())


class ReconnectingNamespace:
    """A namespace the application connected through a :class:`ReconnectingClient`: one
    object for as long as it stays connected, whichever connection is current.

    ``namespace`` is its name, ``payload`` the connect payload restored with it,
    ``nsconn`` the live :class:`~wsmvc.NSConn` (``None`` while reconnecting). While the
    client reconnects, :meth:`emit` and :meth:`ask` wait (:class:`Outbox`) and the
    namespace and room changes raise :class:`~wsmvc.ConnectionClosed`; all raise it once
    the client is closed, and :class:`~wsmvc.NotConnected` (a
    :class:`~wsmvc.BadNamespace`) once the namespace is no longer restored (the
    application or the server disconnected it, or the server refused it on a restore).
    """

    __slots__ = ("_rooms", "client", "namespace", "payload")

    def __init__(self, client: ReconnectingClient, namespace: str, payload: bytes) -> None:
        self.client = client
        self.namespace = namespace
        self.payload = payload
        self._rooms: dict[str, ReconnectingRoom] = {}  # restored after a loss, in this order

    @property
    def active(self) -> bool:
        """Whether the client still restores this namespace."""
        return self.client._namespaces.get(self.namespace) is self and not self.client.closed

    @property
    def nsconn(self) -> NSConn | None:
        """The namespace on the current connection; ``None`` while reconnecting."""
        conn = self.client.conn
        if conn is None or conn.closed or not self.active:
            return None
        ns = conn.namespace(self.namespace)
        return ns if ns is not None and ns.connected else None

    @property
    def connected(self) -> bool:
        """Whether the namespace is connected on an open connection now."""
        return self.nsconn is not None

    @property
    def id(self) -> str:
        """The client's current connection id."""
        return self.client.id

    @property
    def rooms(self) -> Mapping[str, ReconnectingRoom]:
        """The rooms joined through this handle, restored in this order (read-only)."""
        return types.MappingProxyType(self._rooms)

    def room(self, name: str) -> ReconnectingRoom | None:
        """The handle of room ``name`` if joined through this handle, else ``None``."""
        return self._rooms.get(name)

    def emit(self, event: str, body: bytes | str = b"") -> None:
        """Send ``event`` with ``body``: now, or once the connection is back while the
        client reconnects (:class:`Outbox`). Raises :class:`~wsmvc.ConnectionClosed` once
        the client is closed, or while reconnecting with its queue full (or
        ``queue_limit=0``), :class:`~wsmvc.NotConnected` as the class says."""
        self._send(Message(namespace=self.namespace, event=event, body=as_body(body)))

    def emit_binary(self, event: str, body: bytes | str = b"") -> None:
        """Like :meth:`emit`, in a binary frame."""
        msg = Message(namespace=self.namespace, event=event, body=as_body(body), binary=True)
        self._send(msg)

    async def ask(
        self, event: str, body: bytes | str = b"", *, timeout: Timeout = DEFAULT
    ) -> Message:
        """Send ``event`` and wait for the answer (:meth:`wsmvc.NSConn.ask`); while the
        client reconnects it waits to be sent (:class:`Outbox`), its ``timeout`` counted
        from now. An ask in flight when the connection is lost keeps waiting if the
        server keeps the connection for recovery, else fails with
        :class:`~wsmvc.ConnectionClosed`."""
        client = self.client
        if self._queueing():
            wait = client._dialing.ask_timeout if timeout is DEFAULT else timeout
            msg = Message(namespace=self.namespace, event=event, body=as_body(body))
            return await client._outbox.ask(msg, wait, client._down)
        return await self._live().ask(event, body, timeout=timeout)

    def _queueing(self) -> bool:
        """Whether what is sent now waits for the reconnect (raises when it cannot)."""
        client = self.client
        if client.closed:
            raise client._down()
        if not self.active:
            raise self._not_connected()
        return client.reconnecting

    def _send(self, msg: Message) -> None:
        client = self.client
        if self._queueing():
            client._outbox.emit(msg, client._down)
            return
        ns = self._live()
        if not ns.conn.write(msg):
            raise _unwritten(ns)

    async def join_room(self, name: str, *, timeout: Timeout = DEFAULT) -> ReconnectingRoom:
        """Join room ``name`` (:meth:`wsmvc.NSConn.join_room`) and rejoin it after every
        loss; returns its handle. A join that failed is not restored."""
        ns = self._live()
        await ns.join_room(name, timeout=timeout)
        if not ns.in_room(name) or not self.active or ns.conn is not self.client.conn:
            raise ConnectionClosed(f"room {name!r} went away before join_room() returned")
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = ReconnectingRoom(self, name)
        return room

    async def leave_room(self, name: str, *, timeout: Timeout = DEFAULT) -> None:
        """Leave room ``name`` (:meth:`wsmvc.NSConn.leave_room`); it is not rejoined."""
        await self._live().leave_room(name, timeout=timeout)
        self._rooms.pop(name, None)

    async def disconnect(self, *, timeout: Timeout = DEFAULT) -> None:
        """Disconnect the namespace (:meth:`wsmvc.NSConn.disconnect`); it is not restored,
        and this handle raises :class:`~wsmvc.NotConnected` from then on."""
        await self._live().disconnect(timeout=timeout)
        if self.client._namespaces.get(self.namespace) is self:
            self.client._forget(self.namespace)

    def _live(self) -> NSConn:
        client = self.client
        if client.closed:
            raise client._down()
        if not self.active:
            raise self._not_connected()
        conn = client._live()
        ns = conn.namespace(self.namespace)
        if ns is None or not ns.connected:
            raise self._not_connected()
        return ns

    def _not_connected(self) -> NotConnected:
        return NotConnected(
            f"namespace {self.namespace!r} is not connected (disconnected, or refused on a"
            " restore): connect it again (await client.connect(...)); nothing was sent"
        )

    def __repr__(self) -> str:
        return f"<ReconnectingNamespace {self.namespace!r} of {self.client!r}>"


def _unwritten(ns: NSConn, room: str = "") -> WsmvcError:
    if ns.conn.closed:
        return ConnectionClosed("connection closed")
    if room and ns.connected:
        return _not_joined(ns.namespace, room)
    return NotConnected(f"namespace {ns.namespace!r} is not connected; nothing was sent")


def _not_joined(namespace: str, room: str) -> NotJoined:
    return NotJoined(
        f"room {room!r} of namespace {namespace!r} is not joined (left, or refused on a"
        " restore): join it again (await ns.join_room(...)); nothing was sent"
    )


@attrs.frozen(repr=False)
class ReconnectingRoom:
    """A room joined through a :class:`ReconnectingNamespace`, rejoined after each loss
    until left. Raises as its namespace does, and :class:`~wsmvc.NotJoined` (a
    :class:`~wsmvc.BadRoom`) once it is no longer joined (left, or refused on a restore)."""

    ns: ReconnectingNamespace
    name: str

    @property
    def active(self) -> bool:
        """Whether the client still rejoins this room."""
        return self.ns.active and self.ns._rooms.get(self.name) is self

    @property
    def room(self) -> Room | None:
        """The room on the current connection; ``None`` while reconnecting."""
        ns = self.ns.nsconn
        return ns.room(self.name) if ns is not None and self.active else None

    def emit(self, event: str, body: bytes | str = b"") -> None:
        """Send ``event`` into the room (now, or once back: as
        :meth:`ReconnectingNamespace.emit`); :class:`~wsmvc.NotJoined` once left."""
        queueing = self.ns._queueing()
        if not self.active:
            raise _not_joined(self.ns.namespace, self.name)
        if queueing:
            ns_name, client = self.ns.namespace, self.ns.client
            msg = Message(namespace=ns_name, room=self.name, event=event, body=as_body(body))
            client._outbox.emit(msg, client._down)
            return
        ns = self.ns._live()
        if not ns.in_room(self.name):
            raise _not_joined(self.ns.namespace, self.name)
        if not Room(ns, self.name).emit(event, body):
            raise _unwritten(ns, self.name)

    async def leave(self, *, timeout: Timeout = DEFAULT) -> None:
        """Leave the room (:meth:`ReconnectingNamespace.leave_room`)."""
        await self.ns.leave_room(self.name, timeout=timeout)

    def __repr__(self) -> str:
        return f"<ReconnectingRoom {self.name!r} of {self.ns!r}>"


class Tracker:
    """The membership hooks of a reconnecting client's connections (their ``registry``):
    a namespace or room removed while its connection is open, by the application or the
    server, is no longer restored; the close of a connection forgets nothing."""

    __slots__ = ("_client",)

    def __init__(self, client: ReconnectingClient) -> None:
        self._client = client

    def conn_added(self, conn: Conn) -> None:
        pass  # a client's connection is never added (that is a server's registry)

    def conn_removed(self, conn: Conn) -> None:
        self._client._closing_began(conn)

    def namespace_added(self, nsconn: NSConn) -> None:
        pass

    def room_added(self, nsconn: NSConn, room: str) -> None:
        pass

    def namespace_removed(self, nsconn: NSConn) -> None:
        if not nsconn.conn.closed:
            self._client._forget(nsconn.namespace)

    def room_removed(self, nsconn: NSConn, room: str) -> None:
        handle = self._client._namespaces.get(nsconn.namespace)
        if handle is not None and not nsconn.conn.closed:
            handle._rooms.pop(room, None)
