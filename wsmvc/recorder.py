"""The write path of a recoverable connection (:mod:`wsmvc.recovery`): the frames sent are
numbered, and the last ones kept (within the bounds of ``Recovery``) for a replay to the
client that comes back."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType

from .framing import Payload, Stamp
from .writer import Writer

if TYPE_CHECKING:
    from .recovery import Recovery

__all__ = ["Frame", "Recorder"]

Frame = tuple[bytes, bool, "Stamp | None"]
"""A data frame kept for a replay: its payload, whether binary, and a cluster broadcast's
stamp (:class:`~wsmvc.framing.Payload`)."""


class Recorder:
    """The write path of a recoverable connection: a :class:`~wsmvc.writer.Writer` that
    numbers the data frames it passes on to ``inner`` and keeps the last ones (within the
    bounds) for a replay; without ``inner`` (the connection is lost) it only keeps them.
    While :meth:`hold` ing (a connection moving in from another server) it neither
    numbers nor sends them, until :meth:`release`.
    """

    __slots__ = (
        "_bytes",
        "_closed",
        "_held",
        "_held_bytes",
        "_lost_at",
        "_on_lost",
        "_ring",
        "bounds",
        "inner",
        "overflowed",
        "pending",
        "sent",
    )

    def __init__(self, inner: Writer, bounds: Recovery) -> None:
        self.inner: Writer | None = inner
        self.bounds = bounds
        self.sent = -1  # frames numbered so far; -1: not yet (before A<id>)
        self._ring: collections.deque[Frame] = collections.deque()
        self._held: list[Frame] | None = None
        self._held_bytes = 0
        self.overflowed = False  # more was written while held than the bounds keep
        self._bytes = 0
        self._closed = False
        self._lost_at = 0  # `sent` when the connection was lost
        self._on_lost: Callable[[], None] | None = None
        # The write path of a websocket being taken over (its client's M awaited): no data
        # goes there before the replay, but a close does (the connection ends meanwhile).
        self.pending: Writer | None = None

    @property
    def closed(self) -> bool:
        inner = self.inner
        return self._closed or (inner is not None and inner.closed and self.sent < 0)

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value
        if self.inner is not None:
            self.inner.closed = value

    def start(self) -> None:
        """Number the frames from now on (``A<id>`` went out)."""
        self.sent = 0

    def write(self, data: bytes, binary: bool) -> bool:
        if self._closed:
            return False
        if self._held is not None:
            self._hold((data, binary, None))
            return True
        if self.sent >= 0:
            self._keep((data, binary, None))
        inner = self.inner
        if inner is not None:
            inner.write(data, binary)  # lost on the way, it is replayed: kept all the same
        return True

    def write_payload(self, payload: Payload) -> bool:
        if self._closed:
            return False
        if self._held is not None:
            self._hold((payload.data, payload.binary, payload.stamp))
            return True
        if self.sent >= 0:
            self._keep((payload.data, payload.binary, payload.stamp))
        inner = self.inner
        if inner is not None:
            inner.write_payload(payload)
        return True

    def control(self, opcode: WSMsgType, payload: bytes) -> bool:
        inner = self.inner
        return inner.control(opcode, payload) if inner is not None and not self._closed else False

    async def close(self, code: int, reason: bytes, *, urgent: bool = False) -> None:
        self._closed = True
        target = self.inner if self.inner is not None else self.pending
        if target is not None:
            await target.close(code, reason, urgent=urgent)

    def _keep(self, frame: Frame) -> None:
        self.sent += 1
        ring = self._ring
        ring.append(frame)
        self._bytes += len(frame[0])
        bounds = self.bounds
        while len(ring) > bounds.max_messages or self._bytes > bounds.max_bytes:
            old = ring.popleft()[0]
            self._bytes -= len(old)
            if self.inner is None and self.sent - len(ring) > self._lost_at:
                # A frame sent since the loss is gone: this connection cannot be recovered.
                on_lost, self._on_lost = self._on_lost, None
                if on_lost is not None:
                    on_lost()

    def lose(self, on_overflow: Callable[[], None]) -> None:
        """The connection is lost: keep what comes; ``on_overflow()`` once a frame sent
        from now on falls out of the bounds (lost again before it resumed: from the first
        loss on, whose frames the client still needs)."""
        if self.inner is not None:
            self._lost_at = self.sent
        self.inner = self.pending = None
        self._on_lost = on_overflow

    def since(self, received: int) -> list[Frame] | None:
        """The frames after the ``received``-th; ``None`` when some are no longer kept (or
        ``received`` is more than were sent)."""
        first = self.sent - len(self._ring)  # frames before the oldest one kept
        if not first <= received <= self.sent:
            return None
        return list(self._ring)[received - first :]

    def resume(self, inner: Writer) -> None:
        """Write through ``inner`` from now on."""
        self.inner = inner
        self.pending = None
        self._on_lost = None

    # -- a connection moving in from another server (wsmvc.handover) -------------------------

    def hold(self) -> None:
        """Keep what is written from now on aside, unnumbered and unsent, until
        :meth:`release` (control frames and the close still go out); within the bounds:
        past them, :attr:`overflowed` and nothing more is kept."""
        self._held = []
        self._held_bytes = 0
        self.overflowed = False

    def _hold(self, frame: Frame) -> None:
        held = self._held
        assert held is not None
        self._held_bytes += len(frame[0])
        bounds = self.bounds
        if len(held) >= bounds.max_messages or self._held_bytes > bounds.max_bytes:
            self.overflowed = True
        if not self.overflowed:
            held.append(frame)

    @property
    def held(self) -> int:
        """How many frames are held."""
        return len(self._held or ())

    def release(self, first: list[bytes], count: int, replay: list[Frame]) -> None:
        """Send ``first`` (text frames that are not counted: the recovery frame and
        ``A<id>``), then, numbered from ``count`` on (what the client read before), the
        ``replay`` and what was held but for the broadcasts whose stamps the replay has
        (they reached the client's other server too); then write through."""
        held, self._held = self._held or [], None
        inner = self.inner
        if self._closed or inner is None:
            return
        for data in first:
            inner.write(data, False)
        self.sent = count
        replayed = {frame[2] for frame in replay if frame[2] is not None}
        for frame in replay:
            self._keep(frame)
            inner.write(frame[0], frame[1])
        for frame in held:
            if frame[2] is None or frame[2] not in replayed:
                self._keep(frame)
                inner.write(frame[0], frame[1])
