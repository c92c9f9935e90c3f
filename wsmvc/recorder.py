"""The write path of a recoverable connection (:mod:`wsmvc.recovery`): the frames sent are
numbered, and the last ones kept (within the bounds of ``Recovery``) for a replay to the
client that comes back."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType

from .framing import Payload
from .writer import Writer

if TYPE_CHECKING:
    from .recovery import Recovery

__all__ = ["Recorder"]


class Recorder:
    """The write path of a recoverable connection: a :class:`~wsmvc.writer.Writer` that
    numbers the data frames it passes on to ``inner`` and keeps the last ones (within the
    bounds) for a replay; without ``inner`` (the connection is lost) it only keeps them.
    """

    __slots__ = (
        "_bytes",
        "_closed",
        "_lost_at",
        "_on_lost",
        "_ring",
        "bounds",
        "inner",
        "pending",
        "sent",
    )

    def __init__(self, inner: Writer, bounds: Recovery) -> None:
        self.inner: Writer | None = inner
        self.bounds = bounds
        self.sent = -1  # frames numbered so far; -1: not yet (before A<id>)
        self._ring: collections.deque[tuple[bytes, bool]] = collections.deque()
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
        if self.sent >= 0:
            self._keep(data, binary)
        inner = self.inner
        if inner is not None:
            inner.write(data, binary)  # lost on the way, it is replayed: kept all the same
        return True

    def write_payload(self, payload: Payload) -> bool:
        if self._closed:
            return False
        if self.sent >= 0:
            self._keep(payload.data, payload.binary)
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

    def _keep(self, data: bytes, binary: bool) -> None:
        self.sent += 1
        ring = self._ring
        ring.append((data, binary))
        self._bytes += len(data)
        bounds = self.bounds
        while len(ring) > bounds.max_messages or self._bytes > bounds.max_bytes:
            old, _ = ring.popleft()
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

    def since(self, received: int) -> list[tuple[bytes, bool]] | None:
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
