"""Taps: a function called for every event a connection receives or sends (logging, metrics).

``Server(taps=[fn])`` (or ``table.taps.add(fn)`` on a :class:`~wsmvc.HandlerTable`, a
client's too) calls ``fn(tapped)`` with a :class:`Tapped` record:

* ``"in"``: once a message the peer sent was handled (its handler returned, or its answer
  went out), with the outcome and how long it took (``duration``, seconds: the handler's
  run, including what it awaited);
* ``"out"``: for each event written to the peer: emits, asks (this side's requests,
  connects, joins and leaves included), answers and errors, each receiver's copy of a
  broadcast (one ``Message`` shared by the receivers of one broadcast: read it, never
  change it). Acknowledgements (the empty replies to requests, ``A<id>``) and pings are not
  events and are not tapped; native frames are, on a native-only server.

A tap is a plain function called in the connection's task: keep it quick, and hand slow
work (a network write) to a queue or a task. One that raises is logged (the first failure
with its traceback, then every 1000th) and never stops delivery nor the other taps.

Cost: whether a connection is tapped is decided when it opens, and an untapped one runs
the plain :class:`~wsmvc.dispatch.Dispatcher` and writer (:mod:`wsmvc.tapped` has the
tapped ones): with no tap, the message path has not one instruction more. So register
taps before the server starts: a connection opened before a tap was added is not tapped.
With a tap, an echoed message costs about 2.5 µs more (its two records, the answer parsed
back from the frame written; a tap that does nothing, CPython 3.11), against some 10-30 µs
for the round trip itself.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeAlias

from .protocol import Message

if TYPE_CHECKING:
    from .conn import Conn

__all__ = ["Outcome", "Tap", "Tapped", "Taps"]

log = logging.getLogger("wsmvc")

Outcome: TypeAlias = Literal["handled", "failed", "unhandled", "refused", "sent"]
"""What became of a tapped message: for ``"in"``, ``handled`` (its handler returned, or
the request was carried out), ``failed`` (it raised: ``error``; the peer got an error
answer), ``unhandled`` (no handler), ``refused`` (a hook refused the request); ``"out"``
messages are ``sent``."""


class Tapped(NamedTuple):
    """One message passing a tap (see the module docstring); a named tuple, made for every
    message of a tapped connection, so it costs little (a tenth of a microsecond)."""

    direction: Literal["in", "out"]
    """``"in"``: the peer sent it; ``"out"``: this side sent it."""
    conn: Conn
    """The connection (its ``id``, ``request``, ``store``...)."""
    message: Message
    """The message: its ``namespace``, ``room``, ``event``, ``body``, ``err``, ``token``."""
    outcome: Outcome
    """See :data:`Outcome`."""
    duration: float | None = None
    """``"in"``: seconds from its arrival at the handler to the end of its handling."""
    error: BaseException | None = None
    """``"in"``, ``failed``: what the handler raised."""


Tap: TypeAlias = Callable[[Tapped], object]
"""A tap: ``tap(tapped)``, synchronous; its return value is ignored."""


class Taps:
    """The taps of a handler table, in the order added."""

    __slots__ = ("_failures", "_taps")

    def __init__(self, taps: Iterable[Tap] = ()) -> None:
        self._taps: list[Tap] = []
        self._failures: dict[int, int] = {}  # id(tap) -> failures so far
        self.extend(taps)

    def add(self, tap: Tap) -> Tap:
        """Call ``tap`` for the events of every connection opened from now on; returns it
        (so it works as a decorator). Raises :class:`TypeError` for what is not a plain
        callable (an ``async def`` would only make coroutines nobody awaits)."""
        if not callable(tap):
            raise TypeError(f"a tap is a function of one argument, not {tap!r}")
        method = vars(type(tap)).get("__call__")  # a callable object's own method
        if inspect.iscoroutinefunction(tap) or inspect.iscoroutinefunction(method):
            raise TypeError(
                f"tap {getattr(tap, '__qualname__', tap)!r} is async: taps are called on the"
                " message path and not awaited; make it a plain function that hands slow work"
                " to a queue or a task"
            )
        self._taps.append(tap)
        return tap

    def extend(self, taps: Iterable[Tap]) -> None:
        """:meth:`add` each of ``taps``."""
        for tap in taps:
            self.add(tap)

    def __bool__(self) -> bool:
        return bool(self._taps)

    def __len__(self) -> int:
        return len(self._taps)

    def __iter__(self) -> Iterator[Tap]:
        return iter(self._taps)

    def call(self, tapped: Tapped) -> None:
        """Call every tap with ``tapped``; a tap that raises is logged and skipped."""
        for tap in self._taps:
            try:
                tap(tapped)
            except Exception:
                failures = self._failures.get(id(tap), 0) + 1
                self._failures[id(tap)] = failures
                if failures == 1 or failures % 1000 == 0:
                    log.exception(
                        "tap %s failed on %s %r (%d failure(s) so far; logged on the first"
                        " and every 1000th)",
                        getattr(tap, "__qualname__", repr(tap)),
                        tapped.direction,
                        tapped.message.event[:64],
                        failures,
                    )
