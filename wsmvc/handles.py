"""The handles of a :class:`~wsmvc.ReconnectingClient`: a namespace
(:class:`ReconnectingNamespace`) and a room (:class:`ReconnectingRoom`) that stay the same
objects across reconnects and act on whichever connection is current.

A handle is also the record of what the client restores: its namespace's connect
payload, and its rooms in the order joined (:mod:`wsmvc.reconnect`).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from .errors import BadNamespace, BadRoom, ConnectionClosed, WsmvcError
from .nsconn import DEFAULT, NSConn, Room, Timeout
from .protocol import Message

if TYPE_CHECKING:
    from .reconnect import ReconnectingClient

__all__ = ["ReconnectingNamespace", "ReconnectingRoom"]


class ReconnectingNamespace:
    """A namespace the application connected through a :class:`ReconnectingClient`: one
    object for as long as it stays connected, whichever connection is current.

    ``namespace`` is its name, ``payload`` the connect payload restored with it,
    ``nsconn`` the live :class:`~wsmvc.NSConn` (``None`` while reconnecting). Its methods
    raise :class:`~wsmvc.ConnectionClosed` while the client is reconnecting or closed,
    and :class:`~wsmvc.BadNamespace` once the namespace is no longer restored (the
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
        """Send ``event`` with ``body`` now (no queue: see the module docstring)."""
        ns = self._live()
        if not ns.emit(event, body):
            raise _unwritten(ns)

    def emit_binary(self, event: str, body: bytes | str = b"") -> None:
        """Like :meth:`emit`, in a binary frame."""
        ns = self._live()
        if not ns.emit_binary(event, body):
            raise _unwritten(ns)

    async def ask(
        self, event: str, body: bytes | str = b"", *, timeout: Timeout = DEFAULT
    ) -> Message:
        """Send ``event`` and wait for the answer (:meth:`wsmvc.NSConn.ask`); an ask in
        flight when the connection is lost fails with :class:`~wsmvc.ConnectionClosed`."""
        return await self._live().ask(event, body, timeout=timeout)

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
        and this handle raises :class:`~wsmvc.BadNamespace` from then on."""
        await self._live().disconnect(timeout=timeout)
        if self.client._namespaces.get(self.namespace) is self:
            self.client._forget(self.namespace)

    def _live(self) -> NSConn:
        client = self.client
        if client.closed:
            raise client._down()
        if not self.active:
            raise BadNamespace()
        conn = client._live()
        ns = conn.namespace(self.namespace)
        if ns is None or not ns.connected:
            raise BadNamespace()
        return ns

    def __repr__(self) -> str:
        return f"<ReconnectingNamespace {self.namespace!r} of {self.client!r}>"


def _unwritten(ns: NSConn) -> WsmvcError:
    return ConnectionClosed("connection closed") if ns.conn.closed else BadNamespace()


@attrs.frozen(repr=False)
class ReconnectingRoom:
    """A room joined through a :class:`ReconnectingNamespace`, rejoined after each loss
    until left. Raises as its namespace does, and :class:`~wsmvc.BadRoom` once it is no
    longer joined (left, or refused on a restore)."""

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
        """Send ``event`` into the room now (no queue)."""
        ns = self.ns._live()
        if not self.active or not ns.in_room(self.name):
            raise BadRoom()
        if not Room(ns, self.name).emit(event, body):
            raise _unwritten(ns)

    async def leave(self, *, timeout: Timeout = DEFAULT) -> None:
        """Leave the room (:meth:`ReconnectingNamespace.leave_room`)."""
        await self.ns.leave_room(self.name, timeout=timeout)

    def __repr__(self) -> str:
        return f"<ReconnectingRoom {self.name!r} of {self.ns!r}>"
