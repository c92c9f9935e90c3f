"""A namespace of a connection (:class:`NSConn`) and its rooms (:class:`Room`)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import EventError
from .protocol import (
    ERR_BAD_NAMESPACE,
    ERR_BAD_ROOM,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    Message,
)

if TYPE_CHECKING:
    from .conn import Conn
    from .server import Server

__all__ = ["NSConn", "Registry", "Room", "as_body", "system_event"]


class Registry(Protocol):
    """What a connection tells its server about namespace and room membership."""

    def namespace_added(self, nsconn: NSConn) -> None: ...
    def namespace_removed(self, nsconn: NSConn) -> None: ...
    def room_added(self, nsconn: NSConn, room: str) -> None: ...
    def room_removed(self, nsconn: NSConn, room: str) -> None: ...


def as_body(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


class Room:
    """A room joined by one namespace connection."""

    __slots__ = ("name", "nsconn")

    def __init__(self, nsconn: NSConn, name: str) -> None:
        self.nsconn = nsconn
        self.name = name

    def emit(self, event: str, body: bytes | str = b"") -> bool:
        """Send ``event`` into this room (the peer sees the room name on the message)."""
        return self.nsconn.conn.write(
            Message(
                namespace=self.nsconn.namespace, room=self.name, event=event, body=as_body(body)
            )
        )

    async def leave(self, *, timeout: float | None = None) -> None:
        """Ask the peer to leave this room, then fire the local leave events."""
        await self.nsconn.leave_room(self.name, timeout=timeout)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} of {self.nsconn!r}>"


class NSConn:
    """One namespace of a connection: emit, ask, rooms, disconnect."""

    __slots__ = ("__weakref__", "conn", "controller", "namespace", "rooms", "store")

    def __init__(self, conn: Conn, namespace: str) -> None:
        self.conn = conn
        self.namespace = namespace
        self.controller: Any = None  # the controller instance serving this namespace
        self.rooms: dict[str, Room] = {}
        self.store: dict[str, Any] = {}

    @property
    def id(self) -> str:
        """The connection id."""
        return self.conn.id

    @property
    def server(self) -> Server:
        """The server of this connection (server side only)."""
        return self.conn.server

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
        self, event: str, body: bytes | str = b"", *, timeout: float | None = None
    ) -> Message:
        """Send ``event`` and wait for the peer's answer; raises :class:`EventError` on an error."""
        return await self.conn.ask(
            Message(namespace=self.namespace, event=event, body=as_body(body)), timeout=timeout
        )

    def room(self, name: str) -> Room | None:
        """The joined room ``name``, or ``None``."""
        return self.rooms.get(name)

    async def join_room(self, name: str, *, timeout: float | None = None) -> Room:
        """Ask the peer to join room ``name`` (spec 6.2); returns the joined room."""
        room = self.rooms.get(name)
        if room is not None:
            return room
        msg = Message(namespace=self.namespace, room=name, event=ON_ROOM_JOIN)
        await self.conn.ask(msg, timeout=timeout)
        msg.local = True
        await self.conn._fire_hook(self, msg, raise_error=True)
        self._add_room(name)
        await self.conn._fire_hook(self, system_event(msg, ON_ROOM_JOINED))
        return self.rooms[name]

    async def leave_room(self, name: str, *, timeout: float | None = None) -> None:
        """Ask the peer to leave room ``name`` (spec 6.4)."""
        if name not in self.rooms:
            raise EventError(ERR_BAD_ROOM)
        msg = Message(namespace=self.namespace, room=name, event=ON_ROOM_LEAVE)
        await self.conn.ask(msg, timeout=timeout)
        msg.local = True
        await self.conn._fire_hook(self, msg, raise_error=True)
        self._remove_room(name)
        await self.conn._fire_hook(self, system_event(msg, ON_ROOM_LEFT))

    async def leave_all(self, *, timeout: float | None = None) -> None:
        """Leave every joined room, one after another."""
        for name in list(self.rooms):
            await self.leave_room(name, timeout=timeout)

    async def disconnect(self, *, timeout: float | None = None) -> None:
        """Ask the peer to disconnect this namespace (spec 5.3/5.4), then clean up locally."""
        if self.conn.namespace(self.namespace) is not self:
            raise EventError(ERR_BAD_NAMESPACE)
        msg = Message(namespace=self.namespace, event=ON_NAMESPACE_DISCONNECT)
        await self.conn.ask(msg, timeout=timeout)
        await self.conn._remove_namespace(self, local=True)

    def broadcast_others(self, event: str, body: bytes | str = b"") -> Awaitable[None]:
        """Broadcast ``event`` to every other connection of this namespace (server side)."""
        msg = Message(namespace=self.namespace, event=event, body=as_body(body))
        return self.server.broadcast(msg, exclude=self)

    def _add_room(self, name: str) -> None:
        self.rooms[name] = Room(self, name)
        if self.conn._registry is not None:
            self.conn._registry.room_added(self, name)

    def _remove_room(self, name: str) -> None:
        if self.rooms.pop(name, None) is not None and self.conn._registry is not None:
            self.conn._registry.room_removed(self, name)

    def __repr__(self) -> str:
        return f"<NSConn {self.conn.id!r} {self.namespace!r}>"


def system_event(msg: Message, event: str, *, forced: bool = False) -> Message:
    return Message(
        namespace=msg.namespace, room=msg.room, event=event, forced=forced, local=msg.local
    )
