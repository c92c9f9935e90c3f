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
With a tap, an echoed message costs about 2 µs more (its two records and the answer's
``Message``; a tap that does nothing, CPython 3.11: 24 % more instructions for the
server's round trip). An answer is handed to the ``"out"`` tap as the dispatcher made
it; only what a connection writes itself (``emit``, ``ask``, system replies) is parsed
back from the frame written, and a broadcast once for all its receivers.

**Meters** (:class:`Meter`, ``taps.add_meter(meter)``) are the allocation-free sibling of
taps, for metrics (:class:`wsmvc.metrics.PrometheusMetrics` is one): plain method calls
with the fields they count, no record per message, plus what a tap never sees (a
connection's close, an ask that got no answer). A connection with meters and no taps is
tapped too: the Prometheus metrics' meter adds 0.8 µs (11 % of the instructions) to an
echo round trip (``docs/metrics.md``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol, TypeAlias

from .protocol import Message

if TYPE_CHECKING:
    from .conn import Conn

__all__ = ["Meter", "Outcome", "Tap", "Tapped", "Taps"]

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


class Meter(Protocol):
    """What a tapped connection reports to a meter (see the module docstring): each method
    is called in the connection's task, synchronously, and must be quick; one that raises
    is logged like a failing tap and skipped.

    Which messages are reported is what taps see: ``received`` for each message the peer
    sent, once handled; ``sent`` for each event written (acknowledgements and pings are
    not events), except the receivers' copies of a broadcast, which the server reports per
    broadcast (:meth:`wsmvc.Server.add_broadcast_hook`)."""

    def received(self, msg: Message, outcome: Outcome, duration: float, answer: int) -> None:
        """The peer's ``msg`` was handled: ``outcome`` (:data:`Outcome`), ``duration``
        seconds from its arrival at the handler to the end of its handling; ``answer``:
        the bytes of the body (0 for an error) of the answer written to it, if one was
        (its namespace and event are ``msg``'s; it is not reported to :meth:`sent`),
        else -1."""

    def sent(self, namespace: str, event: str, size: int, ask: bool) -> None:
        """An event was written: ``size`` bytes of body; ``ask``: it is this side's
        request (it awaits an answer; system requests, such as a namespace connect,
        included); emits and system replies are not."""

    def unanswered(self, namespace: str, event: str) -> None:
        """An ask of this side ended without an answer: its timeout passed (or the code
        awaiting it was cancelled). Not called for an ask that failed because its
        connection closed or its namespace was disconnected."""

    def closed(self, conn: Conn) -> None:
        """``conn`` is closing (its close frame is being written), whatever opened or
        refused it: ``conn.close_reason`` says why. Once per connection."""


class Taps:
    """The taps and meters of a handler table, in the order added. ``len()`` and
    iteration give the taps; :attr:`meters` the meters."""

    __slots__ = ("_failures", "_taps", "meter", "meters")

    def __init__(self, taps: Iterable[Tap] = ()) -> None:
        self._taps: list[Tap] = []
        self._failures: dict[int, int] = {}  # id(tap) -> failures so far
        self.meters: tuple[Meter, ...] = ()
        """The meters, in the order added (:meth:`add_meter`)."""
        self.meter: Meter | None = None
        """What a connection reports to: ``None`` without meters, the meter when there is
        one, an object that reports to each of them when there are several."""
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

    def add_meter(self, meter: Meter) -> Meter:
        """Report to ``meter`` (a :class:`Meter`) what every connection opened from now on
        does; returns it. Raises :class:`ValueError` if it was added already."""
        if any(known is meter for known in self.meters):
            raise ValueError(f"{meter!r} is already a meter of these taps")
        self.meters = (*self.meters, meter)
        self.meter = meter if len(self.meters) == 1 else _Meters(self.meters, self)
        return meter

    @property
    def taps(self) -> bool:
        """Whether there is a tap (meters apart)."""
        return bool(self._taps)

    def __bool__(self) -> bool:
        """Whether there is a tap or a meter: a connection opened now is tapped."""
        return bool(self._taps or self.meters)

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

    def failed(self, meter: Meter, what: str) -> None:
        """Log that ``meter`` raised in its method ``what`` (call it in an ``except``
        block): the first failure with its traceback, then every 1000th."""
        failures = self._failures.get(id(meter), 0) + 1
        self._failures[id(meter)] = failures
        if failures == 1 or failures % 1000 == 0:
            log.exception(
                "meter %r failed in %s (%d failure(s) so far; logged on the first and every"
                " 1000th)",
                meter,
                what,
                failures,
            )


class _Meters:
    """Several meters as one (a connection reports to one object); one that raises is
    logged (:meth:`Taps.failed`) and the others are still called."""

    __slots__ = ("_meters", "_taps")

    def __init__(self, meters: tuple[Meter, ...], taps: Taps) -> None:
        self._meters = meters
        self._taps = taps

    def received(self, msg: Message, outcome: Outcome, duration: float, answer: int) -> None:
        for meter in self._meters:
            try:
                meter.received(msg, outcome, duration, answer)
            except Exception:
                self._taps.failed(meter, "received")

    def sent(self, namespace: str, event: str, size: int, ask: bool) -> None:
        for meter in self._meters:
            try:
                meter.sent(namespace, event, size, ask)
            except Exception:
                self._taps.failed(meter, "sent")

    def unanswered(self, namespace: str, event: str) -> None:
        for meter in self._meters:
            try:
                meter.unanswered(namespace, event)
            except Exception:
                self._taps.failed(meter, "unanswered")

    def closed(self, conn: Conn) -> None:
        for meter in self._meters:
            try:
                meter.closed(conn)
            except Exception:
                self._taps.failed(meter, "closed")
