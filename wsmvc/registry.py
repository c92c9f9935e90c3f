"""Who is connected where: connections by id, namespace connections by namespace and room.

Kept in insertion order so broadcasts reach receivers in the order they connected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from .conn import Conn
    from .nsconn import NSConn

__all__ = ["Listener", "Registry"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class Listener(Protocol):
    """Told when the first connection of a namespace or id arrives and the last leaves."""

    def namespace_opened(self, namespace: str) -> None: ...
    def namespace_closed(self, namespace: str) -> None: ...
    def id_opened(self, conn_id: str) -> None: ...
    def id_closed(self, conn_id: str) -> None: ...


class Members(Protocol):
    """Told of every connection joining or leaving a namespace (room ``""``) or a room."""

    def joined(self, namespace: str, room: str, conn_id: str) -> None: ...
    def left(self, namespace: str, room: str, conn_id: str) -> None: ...


class Registry:
    """The server's index of acknowledged connections, namespaces and rooms."""

    __slots__ = ("_by_id", "_conns", "_listener", "_members", "_namespaces", "_rooms")

    def __init__(self, listener: Listener | None = None, members: Members | None = None) -> None:
        self._listener = listener
        self._members = members
        self._conns: dict[Conn, None] = {}
        self._by_id: dict[str, dict[Conn, None]] = {}
        self._namespaces: dict[str, dict[NSConn, None]] = {}
        self._rooms: dict[tuple[str, str], dict[NSConn, None]] = {}

    # -- updates (called by Conn) --------------------------------------------------------

    def conn_added(self, conn: Conn) -> None:
        self._conns[conn] = None
        same_id = self._by_id.setdefault(conn.id, {})
        same_id[conn] = None
        if len(same_id) == 1 and self._listener is not None:
            self._listener.id_opened(conn.id)

    def conn_removed(self, conn: Conn) -> None:
        self._conns.pop(conn, None)
        if _discard(self._by_id, conn.id, conn) and self._listener is not None:
            self._listener.id_closed(conn.id)

    def namespace_added(self, nsconn: NSConn) -> None:
        members = self._namespaces.setdefault(nsconn.namespace, {})
        if nsconn in members:
            return
        members[nsconn] = None
        if len(members) == 1 and self._listener is not None:
            self._listener.namespace_opened(nsconn.namespace)
        if self._members is not None:
            self._members.joined(nsconn.namespace, "", nsconn.conn.id)

    def namespace_removed(self, nsconn: NSConn) -> None:
        if nsconn not in self._namespaces.get(nsconn.namespace, {}):
            return
        if _discard(self._namespaces, nsconn.namespace, nsconn) and self._listener is not None:
            self._listener.namespace_closed(nsconn.namespace)
        if self._members is not None:
            self._members.left(nsconn.namespace, "", nsconn.conn.id)

    def room_added(self, nsconn: NSConn, room: str) -> None:
        members = self._rooms.setdefault((nsconn.namespace, room), {})
        if nsconn in members:
            return
        members[nsconn] = None
        if self._members is not None:
            self._members.joined(nsconn.namespace, room, nsconn.conn.id)

    def room_removed(self, nsconn: NSConn, room: str) -> None:
        if nsconn not in self._rooms.get((nsconn.namespace, room), {}):
            return
        _discard(self._rooms, (nsconn.namespace, room), nsconn)
        if self._members is not None:
            self._members.left(nsconn.namespace, room, nsconn.conn.id)

    # -- queries ---------------------------------------------------------------------------

    @property
    def connections(self) -> Iterable[Conn]:
        return self._conns.keys()

    def __contains__(self, conn: object) -> bool:
        return conn in self._conns

    def __len__(self) -> int:
        return len(self._conns)

    def by_id(self, conn_id: str) -> Iterable[Conn]:
        return self._by_id.get(conn_id, {}).keys()

    def in_namespace(self, namespace: str) -> Iterable[NSConn]:
        return self._namespaces.get(namespace, {}).keys()

    def in_room(self, namespace: str, room: str) -> Iterable[NSConn]:
        return self._rooms.get((namespace, room), {}).keys()

    def rooms(self, namespace: str) -> list[str]:
        return [room for (ns, room) in self._rooms if ns == namespace]


def _discard(index: dict[_K, dict[_V, None]], key: _K, member: _V) -> bool:
    """Remove ``member``; whether that emptied (and removed) ``key``."""
    members = index.get(key)
    if members is None or member not in members:
        return False
    del members[member]
    if members:
        return False
    del index[key]
    return True
