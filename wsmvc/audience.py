"""Broadcasts to several rooms at once, excluding several connections, ids or rooms.

``Server.broadcast(msg, rooms=[...], exclude=[...], exclude_rooms=[...])`` (as Socket.IO's
``to([...]).except([...])``): each connection gets the message once, however many of the
rooms it is in, with the message's room set to the first of ``rooms`` it is in. One room
and at most one exclusion take the plain path (:func:`wsmvc.delivery.deliver`); the rest
is an :class:`Audience`, which the exchange carries to the other servers in its marker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

import attrs

from .conn import Conn
from .delivery import targets_of
from .framing import Payload, Stamp
from .nsconn import NSConn
from .protocol import Message, encode_event

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["Audience", "Exclude", "audience_of", "deliver_to_audience"]

Exclude: TypeAlias = "Conn | NSConn | str | Iterable[Conn | NSConn | str] | None"
"""What ``exclude=`` takes: a connection, an id (every connection with it), or several."""


@attrs.frozen
class Audience:
    """Who a broadcast reaches, beyond one room and one exclusion.

    ``rooms``: the rooms of the message's namespace whose members get it (each once;
    ``()``: the message's own room, or the namespace); ``exclude_conns``: connections
    skipped (this server's only); ``exclude_ids``: ids skipped on every server;
    ``exclude_rooms``: members of these rooms are skipped, on every server.
    """

    rooms: tuple[str, ...] = ()
    exclude_conns: frozenset[Conn] = frozenset()
    exclude_ids: frozenset[str] = frozenset()
    exclude_rooms: tuple[str, ...] = ()

    def remote(self) -> Audience:
        """What the other servers need: the same without this server's connections."""
        return attrs.evolve(self, exclude_conns=frozenset())


def audience_of(
    msg: Message,
    *,
    exclude: object,
    to: str | None,
    rooms: Iterable[str] | None,
    exclude_rooms: Iterable[str] | None,
) -> Audience | None:
    """The :class:`Audience` of a broadcast, or ``None`` when the plain path serves it (no
    ``rooms``, no ``exclude_rooms``, at most one exclusion). Raises ValueError for
    ``rooms`` with ``to`` or with ``msg.room``, and TypeError for an exclusion that is
    not a connection or an id."""
    if rooms is None and exclude_rooms is None and not _several(exclude):
        return None
    room_list = tuple(dict.fromkeys(_names(rooms, "rooms"))) if rooms is not None else ()
    if room_list and to is not None:
        raise ValueError("broadcast(): rooms= and to= cannot be combined")
    if room_list and msg.room:
        raise ValueError("broadcast(): give the room in msg.room or in rooms=, not both")
    if rooms is not None and not room_list:
        raise ValueError("broadcast(): rooms= is empty (nobody would get the message)")
    conns: set[Conn] = set()
    ids: set[str] = set()
    for item in _excluded(exclude):
        if isinstance(item, str):
            ids.add(item)
        elif isinstance(item, NSConn):
            conns.add(item.conn)
        elif isinstance(item, Conn):
            conns.add(item)
        else:
            raise TypeError(f"broadcast(): cannot exclude {item!r}: a Conn, NSConn or id")
    excluded_rooms = tuple(dict.fromkeys(_names(exclude_rooms or (), "exclude_rooms")))
    return Audience(room_list, frozenset(conns), frozenset(ids), excluded_rooms)


def _several(exclude: object) -> bool:
    return exclude is not None and not isinstance(exclude, str) and isinstance(exclude, Iterable)


def _excluded(exclude: object) -> Iterable[object]:
    if exclude is None:
        return ()
    if _several(exclude):
        return exclude  # type: ignore[return-value]
    return (exclude,)


def _names(names: Iterable[str], what: str) -> list[str]:
    if isinstance(names, str):
        raise TypeError(f"broadcast(): {what}= takes a list of room names, not one str")
    out = list(names)
    for name in out:
        if not isinstance(name, str):
            raise TypeError(f"broadcast(): {what}= holds {name!r}, not a room name")
    return out


def deliver_to_audience(
    registry: Registry,
    msg: Message,
    audience: Audience,
    *,
    to: str | None,
    threshold: int,
    level: int,
    stamp: Stamp | None = None,
) -> int:
    """Write ``msg`` to ``audience`` among the connections of ``registry`` (only those with
    id ``to``, if given), each once; returns how many. Framed (and deflated) once per
    room it goes out with. ``stamp``: see :func:`wsmvc.delivery.deliver`."""
    namespace = msg.namespace
    skip_conns: frozenset[Conn] | set[Conn] = audience.exclude_conns
    skip_ids = audience.exclude_ids
    if audience.exclude_rooms:
        # The members of the excluded rooms, once: not every receiver against every room
        # (a list from another server can be long: 300,000 rooms x 100 receivers blocked
        # the event loop for 2 s).
        skip_conns = set(skip_conns)
        for room in audience.exclude_rooms:
            skip_conns.update(nsconn.conn for nsconn in registry.in_room(namespace, room))
    seen: set[Conn] = set()
    sent = 0
    check_room = ""  # the room a `to=` receiver must be in
    if audience.rooms:
        groups: list[tuple[str, Iterable[NSConn]]] = [
            (room, registry.in_room(namespace, room)) for room in audience.rooms
        ]
    else:
        targets, check_room = targets_of(registry, msg, to)
        groups = [(msg.room, targets)]
    for room, members in groups:
        payload: Payload | None = None
        for nsconn in tuple(members):
            conn = nsconn.conn
            if conn in seen:
                continue
            seen.add(conn)
            if (
                conn.writer.closed
                or conn in skip_conns
                or conn.id in skip_ids
                or (check_room and not nsconn.in_room(check_room))
            ):
                continue
            if payload is None:
                out = msg if room == msg.room else attrs.evolve(msg, room=room)
                data = encode_event(out)
                payload = Payload(data, msg.binary, threshold=threshold, level=level, stamp=stamp)
            conn.writer.write_payload(payload)
            sent += 1
    return sent
