"""Who is connected where: connections by id, namespace connections by namespace and room.

Kept in insertion order so broadcasts reach receivers in the order they connected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .conn import Conn, NSConn

__all__ = ["Registry"]

_K = TypeVar("_K")


class Registry:
    """The server's index of acknowledged connections, namespaces and rooms."""

    __slots__ = ("_by_id", "_conns", "_namespaces", "_rooms")

    def __init__(self) -> None:
        self._conns: dict[Conn, None] = {}
        self._by_id: dict[str, dict[Conn, None]] = {}
        self._namespaces: dict[str, dict[NSConn, None]] = {}
        self._rooms: dict[tuple[str, str], dict[NSConn, None]] = {}

    # -- updates (called by Conn) --------------------------------------------------------

    def conn_added(self, conn: Conn) -> None:
        self._conns[conn] = None
        self._by_id.setdefault(conn.id, {})[conn] = None

    def conn_removed(self, conn: Conn) -> None:
        self._conns.pop(conn, None)
        same_id = self._by_id.get(conn.id)
        if same_id is not None:
            same_id.pop(conn, None)
            if not same_id:
                del self._by_id[conn.id]

    def namespace_added(self, nsconn: NSConn) -> None:
        self._namespaces.setdefault(nsconn.namespace, {})[nsconn] = None

    def namespace_removed(self, nsconn: NSConn) -> None:
        _discard(self._namespaces, nsconn.namespace, nsconn)

    def room_added(self, nsconn: NSConn, room: str) -> None:
        self._rooms.setdefault((nsconn.namespace, room), {})[nsconn] = None

    def room_removed(self, nsconn: NSConn, room: str) -> None:
        _discard(self._rooms, (nsconn.namespace, room), nsconn)

    # -- queries ---------------------------------------------------------------------------

    @property
    def connections(self) -> Iterable[Conn]:
        return self._conns.keys()

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


def _discard(index: dict[_K, dict[NSConn, None]], key: _K, nsconn: NSConn) -> None:
    members = index.get(key)
    if members is not None:
        members.pop(nsconn, None)
        if not members:
            del index[key]
