"""A namespace of a connection (:class:`NSConn`) and its rooms (:class:`Room`)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias

import attrs

from .errors import ConnectionClosed, EventError, NotConnected, NotJoined
from .protocol import (
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    Message,
    shorten,
)
from .states import Namespace, NsState, RoomState

if TYPE_CHECKING:
    from .awaitables import Sent
    from .conn import Conn
    from .server import Server
    from .session import Session

__all__ = ["DEFAULT", "NSConn", "Registry", "Room", "Timeout", "as_body", "ask_timeout_text"]


class _Default(enum.Enum):
    TIMEOUT = "the connection's ask_timeout"


DEFAULT: Final = _Default.TIMEOUT
"""The default of every ``timeout=`` of an ask: the connection's ``ask_timeout``."""

Timeout: TypeAlias = "float | Literal[_Default.TIMEOUT] | None"
"""Seconds to wait for the peer's answer; ``None``: no limit; ``0``: fail at once;
:data:`DEFAULT` (left out): the connection's ``ask_timeout``."""


class Registry(Protocol):
    """What a connection tells its server about who is connected where."""

    def conn_added(self, conn: Conn) -> None: ...
    def conn_removed(self, conn: Conn) -> None: ...
    def namespace_added(self, nsconn: NSConn) -> None: ...
    def namespace_removed(self, nsconn: NSConn) -> None: ...
    def room_added(self, nsconn: NSConn, room: str) -> None: ...
    def room_removed(self, nsconn: NSConn, room: str) -> None: ...


def as_body(body: bytes | str) -> bytes:
    """A body as bytes (a ``str`` as UTF-8)."""
    return body.encode() if isinstance(body, str) else body


def ask_timeout_text(
    session: Session[NSConn, Any], msg: Message, wait: float | None, inside: bool
) -> str:
    """The text of an ask's :class:`~wsmvc.AskTimeout` (``inside``: asked from a handler of
    the asked connection, whose peer may be waiting for that handler itself)."""
    text = f"no answer to {shorten(msg.event)!r} within {wait}s"
    if inside:
        waiting = sum(1 for m in session.queued() if session.is_request(m.token))
        if waiting:
            text += (
                f"; meanwhile the peer sent {waiting} request(s) of its own, which wait for"
                " this handler to return: a peer that asks back before it answers cannot"
                " answer an ask made inside a handler of its own connection"
            )
    return text


@attrs.frozen(slots=True, repr=False)
class Room:
    """A room joined by one namespace connection (equal to any other for the same room)."""

    nsconn: NSConn
    name: str

    def emit(self, event: str, body: bytes | str = b"") -> bool:
        """Send ``event`` into this room (the peer sees the room name on the message);
        ``False`` when the write rules refuse it (the room or namespace was left)."""
        return self.nsconn.conn.write(
            Message(
                namespace=self.nsconn.namespace, room=self.name, event=event, body=as_body(body)
            )
        )

    async def leave(self, *, timeout: Timeout = DEFAULT) -> None:
        """Ask the peer to leave this room, then fire the local leave events
        (:meth:`NSConn.leave_room`)."""
        await self.nsconn.leave_room(self.name, timeout=timeout)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} of {self.nsconn!r}>"


class RoomsView(Mapping[str, Room]):
    """The rooms a namespace connection has joined, by name, in the order joined (read-only)."""

    __slots__ = ("_ns",)

    def __init__(self, ns: NSConn) -> None:
        self._ns = ns

    def __getitem__(self, name: str) -> Room:
        if not self._ns.in_room(name):
            raise KeyError(name)
        return Room(self._ns, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ns.joined())

    def __len__(self) -> int:
        return len(self._ns.joined())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._ns.in_room(name)

    def __repr__(self) -> str:
        return f"RoomsView({self._ns.joined()!r})"


class NSConn(Namespace):
    """One namespace of a connection: emit, ask, rooms, disconnect.

    ``state`` is its :class:`~wsmvc.states.NsState`; an ``NSConn`` whose namespace was
    disconnected stays ``DISCONNECTED`` (a new connect makes a new ``NSConn``).
    """

    __slots__ = ("__weakref__", "conn", "connect_payload", "controller", "store")

    def __init__(self, conn: Conn, namespace: str) -> None:
        super().__init__(namespace)
        self.conn = conn
        self.controller: Any = None  # the controller instance serving this namespace
        self.store: dict[str, Any] = {}
        self.connect_payload = b""
        """The body the peer sent with its connect of this namespace (``b""``: none, or
        this side connected it): set before ``_OnNamespaceConnect`` runs, kept while the
        namespace is connected. A server bounds it (``max_connect_payload``)."""

    @property
    def id(self) -> str:
        """The connection id."""
        return self.conn.id

    @property
    def params(self) -> Mapping[str, str]:
        """What the placeholders of a dynamic namespace's pattern matched in its name
        (``room-{id}`` connected as ``room-7``: ``{"id": "7"}``); empty for a namespace
        registered by its exact name (:mod:`wsmvc.dynamic`)."""
        return self.conn.dispatcher.handlers.params(self.namespace)

    @property
    def server(self) -> Server:
        """The server of this connection (server side only)."""
        return self.conn.server

    @property
    def connected(self) -> bool:
        """Whether the namespace is connected (its disconnect may be under way)."""
        return self.state is NsState.CONNECTED or self.state is NsState.DISCONNECTING

    @property
    def rooms(self) -> Mapping[str, Room]:
        """The joined rooms by name (a live read-only view)."""
        return RoomsView(self)

    def room(self, name: str) -> Room | None:
        """The joined room ``name``, or ``None``."""
        return Room(self, name) if self.in_room(name) else None

    def emit(self, event: str, body: bytes | str = b"") -> bool:
        """Send ``event`` with ``body``; ``False`` if the connection cannot write it."""
        return self.conn.write(Message(namespace=self.namespace, event=event, body=as_body(body)))

    def emit_binary(self, event: str, body: bytes | str = b"") -> bool:
        """Like :meth:`emit`, in a binary frame."""
        return self.conn.write(
            Message(namespace=self.namespace, event=event, body=as_body(body), binary=True)
        )

    def send_native(self, data: bytes | str) -> bool:
        """Send a raw frame without envelope (native messages): text for ``str``."""
        return self.conn.send_native(data)

    async def ask(
        self, event: str, body: bytes | str = b"", *, timeout: Timeout = DEFAULT
    ) -> Message:
        """Send ``event`` and wait for the peer's answer (spec 8.2, 8.3).

        Raises :class:`~wsmvc.EventError` with the peer's error text (and, sending nothing,
        :class:`~wsmvc.NotConnected`, a ``bad namespace``, when this namespace is not
        connected), :class:`~wsmvc.AskTimeout` when no answer
        came within ``timeout`` seconds (:data:`Timeout`), and
        :class:`~wsmvc.ConnectionClosed` the moment the connection closes or this
        namespace is disconnected.
        """
        return await self.conn.ask(
            Message(namespace=self.namespace, event=event, body=as_body(body)), timeout=timeout
        )

    async def join_room(self, name: str, *, timeout: Timeout = DEFAULT) -> Room:
        """Join room ``name`` from this side (spec 6.2; 6.1 on a client).

        The local ``_OnRoomJoin`` runs first and may refuse (nothing is sent then), then the
        peer is asked, then ``_OnRoomJoined`` fires; so the two sides never disagree about
        a refused join (Go asks first, and a local refusal leaves the peer joined). Returns
        the room, at once if joined already. Raises :class:`~wsmvc.EventError` (the local
        refusal, the peer's; :class:`~wsmvc.NotJoined`, a ``bad room``, while the room is
        being joined or left here),
        :class:`~wsmvc.AskTimeout`, and :class:`~wsmvc.ConnectionClosed` if the connection
        or the namespace goes away meanwhile.
        """
        if self.in_room(name):
            return Room(self, name)
        if not self.connected or self.conn.closed:
            raise self._gone(started=False)
        session = self.conn.session
        joined = await self._change_room(
            name, ON_ROOM_JOIN, session.join_started, session.join_finished, timeout
        )
        if not joined or self.room_state(name) is not RoomState.JOINED or self.conn.closed:
            # Gone before join_room() resumed (a forced leave, the close): its _OnRoomJoined
            # would come after its _OnRoomLeave.
            raise self._gone()
        await self.conn.dispatcher.fire(
            self, Message(self.namespace, name, ON_ROOM_JOINED, local=True)
        )
        return Room(self, name)

    async def leave_room(self, name: str, *, timeout: Timeout = DEFAULT) -> None:
        """Leave room ``name`` from this side (spec 6.4; 6.3 on a client).

        The local ``_OnRoomLeave`` runs first and may refuse (nothing is sent then), then the
        peer is asked, then ``_OnRoomLeft`` fires. Raises :class:`~wsmvc.EventError` (the
        local refusal; the peer's; :class:`~wsmvc.NotJoined`, a ``bad room``, sending
        nothing, if it is not joined, or is being joined or left;
        :class:`~wsmvc.NotConnected` if the namespace is not connected),
        :class:`~wsmvc.AskTimeout` (the room stays joined here) and
        :class:`~wsmvc.ConnectionClosed` (the close leaves the room, with its events).
        """
        session = self.conn.session
        if await self._change_room(
            name, ON_ROOM_LEAVE, session.leave_started, session.leave_finished, timeout
        ):
            await self.conn.dispatcher.fire(
                self, Message(self.namespace, name, ON_ROOM_LEFT, local=True)
            )

    async def _change_room(
        self,
        name: str,
        event: str,
        started: Callable[[NSConn, str], bool],
        finished: Callable[[NSConn, str, bool], bool],
        timeout: Timeout,
    ) -> bool:
        """This side's join or leave of ``name``: the local hook, then the peer. Whether
        the room changed by it (``False``: the close, or the namespace's removal, took it
        meanwhile, with its own events).

        The room stays ``JOINING``/``LEAVING`` until this task resumes with the answer, so
        nothing else changes it in between (the peer's own requests for it get ``bad
        room``) and its follow-up event is this change's."""
        if not started(self, name):
            raise self._unchangeable(name, event)
        conn = self.conn
        changing = self.room_state(name)
        agreed = False
        try:
            refusal = await conn.dispatcher.fire(
                self, Message(self.namespace, name, event, local=True)
            )
            if refusal is not None:
                raise EventError(refusal)
            if self.room_state(name) is not changing:
                return False  # taken meanwhile
            await conn.ask(
                Message(namespace=self.namespace, room=name, event=event), timeout=timeout
            )
            agreed = True
        finally:
            changed = finished(self, name, agreed)  # refused, failed, cancelled: no change
        return changed

    async def leave_all(self, *, timeout: Timeout = DEFAULT) -> None:
        """Leave every joined room, one after another."""
        for name in self.joined():
            if self.in_room(name):
                await self.leave_room(name, timeout=timeout)

    async def disconnect(self, *, timeout: Timeout = DEFAULT) -> None:
        """Ask the peer to disconnect this namespace (spec 5.3, 5.4); see
        :meth:`Conn.disconnect_namespace`."""
        await self.conn.disconnect_namespace(self, timeout=timeout)

    def broadcast_others(self, event: str, body: bytes | str = b"") -> Sent:
        """Broadcast ``event`` to every other connection of this namespace (server side),
        during the call, as :meth:`Server.broadcast <wsmvc.Server.broadcast>`: awaiting
        the result is allowed, and needless."""
        msg = Message(namespace=self.namespace, event=event, body=as_body(body))
        return self.server.broadcast(msg, exclude=self)

    def _unchangeable(self, name: str, event: str) -> EventError:
        """This side's join or leave of ``name`` that cannot start (sending nothing)."""
        where = f"namespace {shorten(self.namespace)!r}"
        if not self.connected:
            return NotConnected(f"{where} is not connected: no room of it can change")
        room = f"room {shorten(name)!r} of {where}"
        if event == ON_ROOM_LEAVE and not self.in_room(name):
            return NotJoined(f"{room} is not joined (or is being joined): nothing to leave")
        return NotJoined(f"{room} is being joined or left already: wait for that to finish")

    def _gone(self, *, started: bool = True) -> ConnectionClosed:
        what = "connection closed" if self.conn.closed else "namespace disconnected"
        if not started:  # (a ConnectionClosed, as it always was; nothing was sent)
            return ConnectionClosed(f"{what}: no room of {shorten(self.namespace)!r} can change")
        return ConnectionClosed(f"{what} before the room change finished")

    def __repr__(self) -> str:
        return f"<NSConn {self.conn.id!r} {self.namespace!r} {self.state.value}>"
