"""The states of a connection, of its namespaces and of their rooms, and the transitions
allowed between them: written down once, here (``design.md`` §6).

:class:`~wsmvc.session.Session` makes every transition, through these tables; one they do
not allow raises :class:`StateError`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, Protocol, TypeAlias, TypeVar

from .errors import WsmvcError
from .protocol import ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT, ON_ROOM_JOIN, ON_ROOM_LEFT

__all__ = [
    "CONN_TRANSITIONS",
    "EXEMPT_NS",
    "EXEMPT_ROOM",
    "IN_ROOM",
    "NAMESPACE_TRANSITIONS",
    "ROOM_TRANSITIONS",
    "WRITABLE_NS",
    "ConnState",
    "Frame",
    "Members",
    "Namespace",
    "NsState",
    "RoomState",
    "StateError",
]


class _State(enum.Enum):
    # Members are singletons compared by identity: hash them by identity too, in C. Enum's
    # own __hash__ is a Python function, and states are looked up for every message.
    __hash__ = object.__hash__


class ConnState(_State):
    """The life of one connection."""

    CONNECTING = "connecting"  # upgraded; the neffos handshake (M -> A<id>) is not done
    OPEN = "open"  # acknowledged: messages flow
    CLOSING = "closing"  # no more writes; asks failed; disconnect events still to run
    CLOSED = "closed"  # the disconnect events ran


class NsState(_State):
    """The life of one namespace of a connection."""

    DISCONNECTED = "disconnected"  # not in the session: never connected, or removed
    CONNECTING = "connecting"  # a connect is being decided: a hook runs or the peer answers
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"  # its _OnNamespaceDisconnect fired or is firing


class RoomState(_State):
    """The membership of one namespace connection in one room."""

    LEFT = "left"  # not a member: never joined, or left
    JOINING = "joining"  # a join is being decided: its _OnRoomJoin hook runs
    JOINED = "joined"
    LEAVING = "leaving"  # its _OnRoomLeave fired or is firing


CONN_TRANSITIONS: Final[Mapping[ConnState, frozenset[ConnState]]] = {
    ConnState.CONNECTING: frozenset({ConnState.OPEN, ConnState.CLOSING}),
    ConnState.OPEN: frozenset({ConnState.CLOSING}),
    ConnState.CLOSING: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}
NAMESPACE_TRANSITIONS: Final[Mapping[NsState, frozenset[NsState]]] = {
    NsState.DISCONNECTED: frozenset({NsState.CONNECTING}),
    NsState.CONNECTING: frozenset({NsState.CONNECTED, NsState.DISCONNECTED}),
    NsState.CONNECTED: frozenset({NsState.DISCONNECTING}),
    NsState.DISCONNECTING: frozenset({NsState.CONNECTED, NsState.DISCONNECTED}),
}
ROOM_TRANSITIONS: Final[Mapping[RoomState, frozenset[RoomState]]] = {
    RoomState.LEFT: frozenset({RoomState.JOINING}),
    RoomState.JOINING: frozenset({RoomState.JOINED, RoomState.LEFT}),
    RoomState.JOINED: frozenset({RoomState.LEAVING}),
    RoomState.LEAVING: frozenset({RoomState.JOINED, RoomState.LEFT}),
}

# Who may be written to (spec 4.1): a namespace whose disconnect is being decided is still
# connected, a room being left is still joined.
WRITABLE_NS: Final = frozenset({NsState.CONNECTED, NsState.DISCONNECTING})
IN_ROOM: Final = frozenset({RoomState.JOINED, RoomState.LEAVING})
EXEMPT_NS: Final = frozenset({ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT})
EXEMPT_ROOM: Final = frozenset({ON_ROOM_JOIN, ON_ROOM_LEFT})

Frame: TypeAlias = tuple[bytes, bool]
"""What to send: the payload of one frame, and whether it is a binary frame."""


class StateError(WsmvcError, AssertionError):
    """A transition the tables do not allow was attempted: a bug in wsmvc (an
    ``AssertionError`` too)."""


class Namespace:
    """The session's record of one namespace of the connection.

    :class:`~wsmvc.NSConn` extends it with what the application uses. ``room_states``
    holds the rooms that are not ``LEFT``; read it through :meth:`room_state`.
    """

    __slots__ = ("namespace", "room_states", "state")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.state = NsState.DISCONNECTED
        self.room_states: dict[str, RoomState] = {}

    def room_state(self, room: str) -> RoomState:
        return self.room_states.get(room, RoomState.LEFT)

    def in_room(self, room: str) -> bool:
        """Whether ``room`` is joined (``JOINED``, or ``LEAVING``: still joined until left)."""
        return self.room_states.get(room) in IN_ROOM

    def joined(self) -> list[str]:
        """The rooms joined (``JOINED`` or ``LEAVING``), in the order they were joined."""
        return [room for room, state in self.room_states.items() if state in IN_ROOM]


NS_contra = TypeVar("NS_contra", bound="Namespace", contravariant=True)


class Members(Protocol[NS_contra]):
    """Told of every change of namespace and room membership (the server's registry)."""

    def namespace_added(self, nsconn: NS_contra) -> None: ...
    def namespace_removed(self, nsconn: NS_contra) -> None: ...
    def room_added(self, nsconn: NS_contra, room: str) -> None: ...
    def room_removed(self, nsconn: NS_contra, room: str) -> None: ...
