"""What the inspector page shows (:mod:`wsmvc.inspector`), gathered from a watched server.

:class:`Watch` is a tap (:mod:`wsmvc.taps`) on the watched server: it counts the messages
in and out (always: two integer additions a message), and while an inspector is open also
per namespace and per connection, and keeps the last handler exceptions in a ring.
:func:`survey` reads the server's registry once (one pass over its connections) and
returns the parts of a snapshot every inspector shares; :func:`connection_list` the
bounded list of connections one inspector asked for (its filter).

Every part is bounded (:class:`Limits`): however many connections, rooms and members the
server has, a snapshot lists at most ``connections`` connections, ``rooms`` rooms,
``members`` ids per room (and rooms per connection), ``namespaces`` namespaces, each with
the total beside it; names that clients choose (rooms) are cut to 64 characters (ids are
never cut: they are what a disconnect names). So a snapshot's size does not grow with the
server: about 6 KB for 20 connections and 10 rooms of 5 listed members, at most some
150 KB with the defaults, uuid ids and short room names (a few hundred with the longest).
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from .errors import EventError
from .protocol import shorten

if TYPE_CHECKING:
    from .conn import Conn
    from .server import Server
    from .taps import Tapped

__all__ = ["OTHER", "Limits", "Rates", "Watch", "connection_list", "survey"]

OTHER = "<other>"
"""The namespace name rates are counted under past :data:`_RATE_NAMES` names."""

_RATE_NAMES = 256  # namespace names whose rates are kept apart (they may come from clients)
_TEXT = 500  # characters of an exception's text kept
_USER_AGENT = 160  # characters of a User-Agent shown


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive int, not {value!r}")


@attrs.frozen
class Limits:
    """How much one snapshot lists (each a positive int; ``ValueError`` otherwise)."""

    connections: int = attrs.field(default=100, validator=_positive)
    """Connections listed (the first ones, in the order they connected)."""
    rooms: int = attrs.field(default=100, validator=_positive)
    """Rooms listed, across namespaces, the most populated first."""
    members: int = attrs.field(default=20, validator=_positive)
    """Member ids listed per room, and rooms (and namespaces) listed per connection."""
    namespaces: int = attrs.field(default=100, validator=_positive)
    """Namespaces listed (by name)."""
    errors: int = attrs.field(default=50, validator=_positive)
    """Handler exceptions kept (the most recent ones)."""


class Watch:
    """The counters the inspector reads: a tap (call :meth:`tap` for each
    :class:`~wsmvc.taps.Tapped`) and the last handler exceptions.

    ``total_in`` / ``total_out``: messages since the watch began (a broadcast counts once
    per receiver). ``error_answers``: handlers that raised :class:`~wsmvc.EventError` (a
    deliberate error answer). ``errors``: the last ``limits.errors`` other exceptions a
    handler raised (what wsmvc logs), newest last, each a JSON-ready dict. Per namespace
    and per connection counts are kept only while :attr:`watching` (an inspector is open).
    """

    __slots__ = (
        "error_answers",
        "errors",
        "per_conn",
        "per_ns",
        "total_in",
        "total_out",
        "watching",
    )

    def __init__(self, max_errors: int) -> None:
        self.watching = False
        self.total_in = 0
        self.total_out = 0
        self.error_answers = 0
        self.errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_errors)
        self.per_conn: dict[Conn, list[int]] = {}  # [in, out] since watching began
        self.per_ns: dict[str, list[int]] = {}  # [in, out] since watching began

    def tap(self, tapped: Tapped) -> None:
        """Count ``tapped`` (a tap: quick, never raises for a well-formed record)."""
        out = tapped.direction == "out"
        if out:
            self.total_out += 1
        else:
            self.total_in += 1
            if tapped.outcome == "failed" and tapped.error is not None:
                self._failed(tapped, tapped.error)
        if not self.watching:
            return
        counts = self.per_conn.get(tapped.conn)
        if counts is None:
            counts = self.per_conn[tapped.conn] = [0, 0]
        counts[out] += 1
        name = tapped.message.namespace
        counts = self.per_ns.get(name)
        if counts is None:
            if len(self.per_ns) >= _RATE_NAMES:
                name = OTHER
            counts = self.per_ns.setdefault(name, [0, 0])
        counts[out] += 1

    def _failed(self, tapped: Tapped, error: BaseException) -> None:
        if isinstance(error, EventError):
            self.error_answers += 1
            return
        msg = tapped.message
        self.errors.append(
            {
                "time": time.time(),
                "id": tapped.conn.id,
                "namespace": msg.namespace,
                "room": msg.room,
                "event": msg.event,
                "type": type(error).__qualname__,
                "text": str(error)[:_TEXT],
            }
        )

    def start(self) -> None:
        """Begin counting per namespace and per connection (an inspector opened)."""
        self.watching = True

    def stop(self) -> None:
        """Stop it and forget those counts (the last inspector closed)."""
        self.watching = False
        self.per_conn.clear()
        self.per_ns.clear()

    def prune(self, live: Iterable[Conn]) -> None:
        """Forget the counts of connections not in ``live`` (they closed)."""
        keep = set(live)
        for conn in [conn for conn in self.per_conn if conn not in keep]:
            del self.per_conn[conn]


class Rates:
    """Messages per second between two looks at a :class:`Watch`."""

    __slots__ = ("_at", "_ns", "_totals")

    def __init__(self, watch: Watch) -> None:
        self._at = time.monotonic()
        self._totals = (watch.total_in, watch.total_out)
        self._ns = {name: (c[0], c[1]) for name, c in watch.per_ns.items()}

    def measure(self, watch: Watch) -> dict[str, Any]:
        """``{"in": float, "out": float, "namespaces": {name: {"in", "out"}}}``, messages
        per second since the previous call (the first: since this object was made from
        ``watch``)."""
        now = time.monotonic()
        elapsed = max(now - self._at, 1e-6)
        totals = (watch.total_in, watch.total_out)
        was_in, was_out = self._totals
        per_ns = {name: (c[0], c[1]) for name, c in watch.per_ns.items()}
        namespaces = {}
        for name, (got, sent) in per_ns.items():
            before_in, before_out = self._ns.get(name, (0, 0))
            namespaces[name] = {
                "in": max(got - before_in, 0) / elapsed,
                "out": max(sent - before_out, 0) / elapsed,
            }
        self._at, self._totals, self._ns = now, totals, per_ns
        return {
            "in": max(totals[0] - was_in, 0) / elapsed,
            "out": max(totals[1] - was_out, 0) / elapsed,
            "namespaces": namespaces,
        }


def survey(server: Server, limits: Limits, watch: Watch, rates: Rates) -> dict[str, Any]:
    """The shared part of a snapshot: namespaces, rooms, rates, totals, errors (one pass
    over ``server.connections``; the counts of connections that closed are pruned).

    Shape (JSON-ready; times are Unix seconds)::

        {"time": float, "rates": {...} (Rates.measure),
         "totals": {"connections": int, "in": int, "out": int, "errorAnswers": int},
         "namespaces": {"total": int, "items": [{"name", "connections", "rooms"}]},
         "rooms": {"total": int, "items": [{"namespace", "name", "count", "members": [id]}]},
         "errors": [{"time", "id", "namespace", "room", "event", "type", "text"}]}

    ``errors`` newest first; ``rooms`` the most populated first.
    """
    conns = server.connections
    if watch.watching:
        watch.prune(conns)
    per_ns: dict[str, list[int]] = {}  # name -> [connections, rooms]
    rooms: dict[tuple[str, str], tuple[list[int], list[str]]] = {}
    cap = limits.members
    for conn in conns:
        for name, nsconn in conn.namespaces.items():
            counts = per_ns.get(name)
            if counts is None:
                counts = per_ns[name] = [0, 0]
            counts[0] += 1
            for room in nsconn.rooms:
                entry = rooms.get((name, room))
                if entry is None:
                    entry = rooms[name, room] = ([0], [])
                    counts[1] += 1
                entry[0][0] += 1
                if len(entry[1]) < cap:
                    entry[1].append(conn.id)
    top = sorted(rooms.items(), key=lambda item: (-item[1][0][0], item[0]))[: limits.rooms]
    names = sorted(per_ns)[: limits.namespaces]
    return {
        "time": time.time(),
        "rates": rates.measure(watch),
        "totals": {
            "connections": len(conns),
            "in": watch.total_in,
            "out": watch.total_out,
            "errorAnswers": watch.error_answers,
        },
        "namespaces": {
            "total": len(per_ns),
            "items": [
                {"name": shorten(name), "connections": per_ns[name][0], "rooms": per_ns[name][1]}
                for name in names
            ],
        },
        "rooms": {
            "total": len(rooms),
            "items": [
                {
                    "namespace": shorten(ns),
                    "name": shorten(room),
                    "count": count[0],
                    "members": members,
                }
                for (ns, room), (count, members) in top
            ],
        },
        "errors": list(reversed(watch.errors)),
    }


def connection_list(
    server: Server, limits: Limits, watch: Watch, needle: str = ""
) -> dict[str, Any]:
    """The connections one inspector sees: those whose id, address, namespace or room
    names contain ``needle`` (case-insensitive; ``""``: every one), the first
    ``limits.connections`` listed.

    Shape: ``{"total": int, "matched": int, "filter": str, "items": [{"id", "address",
    "userAgent", "namespaces": [{"name", "rooms": [str], "roomCount"}], "in", "out"}]}``;
    ``in``/``out`` count messages since the inspector began watching.
    """
    conns = server.connections
    folded = needle.casefold()
    items: list[dict[str, Any]] = []
    matched = 0
    for conn in conns:
        if folded and not _matches(conn, folded):
            continue
        matched += 1
        if len(items) < limits.connections:
            items.append(_describe(conn, watch, limits.members))
    return {"total": len(conns), "matched": matched, "filter": needle, "items": items}


def _address(conn: Conn) -> str:
    request = conn.request
    return (request.remote or "") if request is not None else ""


def _matches(conn: Conn, needle: str) -> bool:
    if needle in conn.id.casefold() or needle in _address(conn).casefold():
        return True
    for name, nsconn in conn.namespaces.items():
        if needle in name.casefold() or any(needle in room.casefold() for room in nsconn.rooms):
            return True
    return False


def _describe(conn: Conn, watch: Watch, cap: int) -> dict[str, Any]:
    request = conn.request
    agent = request.headers.get("User-Agent", "") if request is not None else ""
    counts = watch.per_conn.get(conn, (0, 0))
    namespaces = []
    budget = cap  # rooms listed, across its namespaces
    for name, nsconn in conn.namespaces.items():
        rooms = nsconn.rooms
        listed = [shorten(room) for room in itertools.islice(rooms, budget)]
        budget -= len(listed)
        namespaces.append({"name": shorten(name), "rooms": listed, "roomCount": len(rooms)})
        if len(namespaces) >= cap:
            break
    return {
        "id": conn.id,
        "address": _address(conn),
        "userAgent": agent[:_USER_AGENT],
        "namespaces": namespaces,
        "namespaceCount": len(conn.namespaces),
        "in": counts[0],
        "out": counts[1],
    }
