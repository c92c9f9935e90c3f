"""The way out to the broker: publications and subscription changes, in order, by one task.

A :class:`BrokerExchange <wsmvc.exchange.broker.BrokerExchange>` puts every operation here
(``pub``, ``sub``, ``unsub``, and the marks of :meth:`Outbox.flush`); :meth:`Outbox.run`
sends them one after the other, consecutive publications as one batch. Publications are
bounded: at most ``max_pending`` queued or in the batch being sent, none while the broker
is away; the others are dropped and counted in :attr:`Outbox.dropped`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from ..errors import ConnectionClosed
from ..protocol import new_token

__all__ = ["Outbox", "Send"]

log = logging.getLogger("wsmvc.exchange")

Send = Callable[[str, str, "list[tuple[str, bytes]]"], Awaitable[bool]]
"""``send(op, channel, batch)``: perform one operation (``batch``: the ``(channel, payload)``
publications of a ``pub``, in order); whether it went out. It handles its own failures."""


class Outbox:
    """Operations for the broker, sent in order (see the module docstring).

    ``send`` performs one operation; ``roundtrip`` returns once the broker processed what
    was sent before (it raises when the broker does not answer); ``connected`` tells
    whether the broker is there now; ``lost(reason)`` gives the broker up; ``limit()`` is
    the largest payload the broker takes now (bytes; ``None``: no limit known). ``owner``
    (the exchange) names it in the log.
    """

    def __init__(
        self,
        *,
        send: Send,
        roundtrip: Callable[[], Awaitable[None]],
        connected: Callable[[], bool],
        lost: Callable[[str], None],
        limit: Callable[[], int | None],
        max_pending: int,
        owner: object,
    ) -> None:
        self._send = send
        self._roundtrip = roundtrip
        self._connected = connected
        self._lost = lost
        self._limit = limit
        self.max_pending = max_pending
        self._owner = owner
        self.dropped = 0  # publications dropped (the broker away, or too many waiting)
        self._queue: collections.deque[tuple[str, str, bytes]] = collections.deque()
        self._pending = 0  # publications queued or in the batch being sent
        self._flushes: dict[str, asyncio.Future[None]] = {}
        self._wake: asyncio.Event | None = None
        self._stopping = False

    def __len__(self) -> int:
        """Operations waiting to be sent."""
        return len(self._queue)

    def put(self, op: str, channel: str, payload: bytes = b"") -> bool:
        """Queue ``op`` (``pub``, ``sub``, ``unsub``, or :meth:`flush`'s mark) on ``channel``;
        whether it was queued.
        A publication is dropped and counted instead while the broker is away or
        ``max_pending`` wait already, and dropped and logged (an error) when it is larger
        than the broker takes: sending it would cost the connection (NATS closes it)."""
        if op == "pub":
            if not self._connected():  # the broker is away (or the exchange stopped)
                self.dropped += 1
                return False
            limit = self._limit()
            if limit is not None and len(payload) > limit:
                log.error(
                    "%s: not sent to the other servers: %d bytes on %.80r, the broker takes"
                    " %d at most",
                    self._owner,
                    len(payload),
                    channel,
                    limit,
                )
                return False
            if self._pending >= self.max_pending:
                if not self.dropped:
                    log.warning(
                        "%s: %d broadcasts wait for the broker; dropping more (counted)",
                        self._owner,
                        self._pending,
                    )
                self.dropped += 1
                return False
            self._pending += 1
        self._queue.append((op, channel, payload))
        if self._wake is not None:
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        """Publications queued or in the batch being sent."""
        return self._pending

    async def flush(self, timeout: float | None) -> None:
        """Return once the broker has processed every operation put before (one round trip
        after them). Raises ConnectionClosed when it does not answer, TimeoutError past
        ``timeout`` seconds."""
        key = new_token()
        done = self._flushes[key] = asyncio.get_running_loop().create_future()
        self.put("flush", key)
        try:
            await asyncio.wait_for(done, timeout)
        finally:
            self._flushes.pop(key, None)

    async def run(self, timeout: float) -> None:
        """Send until :meth:`stop`; ``timeout``: seconds a round trip may take."""
        wake = self._wake = asyncio.Event()
        self._stopping = False
        if self._queue:
            wake.set()
        flushes: list[str] = []  # flush() keys whose operations before were sent
        # Ends with stop()'s flag too: Python 3.10-3.11's wait_for() (in _flushed) can
        # swallow the cancellation that arrives as its round trip completes.
        while not self._stopping:
            await wake.wait()
            wake.clear()
            sent = 0
            while self._queue:
                op, channel, payload = self._queue.popleft()
                if op == "flush":
                    flushes.append(channel)
                elif self._connected():
                    await self._send_one(op, channel, payload)
                else:
                    # Subscriptions are redone from the exchange's channel sets on reconnect.
                    self._count_unsent(op, 1)
                sent += 1
                # One round trip answers every flush() queued meanwhile (each connection's
                # handshake asks for one), at least every 64 operations under load.
                if flushes and (not self._queue or sent >= 64):
                    await self._flushed(flushes, timeout)
                    flushes, sent = [], 0

    def stop(self) -> None:
        """Make :meth:`run` return (cancel its task too, then :meth:`close`)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    def close(self, error: Exception) -> None:
        """Once :meth:`run` has returned: fail every :meth:`flush` with ``error`` and
        forget what was not sent."""
        for waiter in self._flushes.values():
            if not waiter.done():
                waiter.set_exception(error)
        if self._queue:
            log.debug("%s: %d operations left unsent at stop", self._owner, len(self._queue))
            self._queue.clear()
            self._pending = 0

    async def _send_one(self, op: str, channel: str, payload: bytes) -> None:
        batch = [(channel, payload)]
        if op == "pub":
            while self._queue and self._queue[0][0] == "pub":
                batch.append(self._queue.popleft()[1:])
        try:
            sent = await self._send(op, channel, batch)
        finally:  # counted until sent: queue and batch hold max_pending at most
            self._pending -= len(batch) if op == "pub" else 0
        if not sent:
            self.dropped += len(batch) if op == "pub" else 0

    def _count_unsent(self, op: str, n: int) -> None:
        if op == "pub":
            self._pending -= n
            self.dropped += n

    async def _flushed(self, keys: list[str], timeout: float) -> None:
        waiters = [w for w in map(self._flushes.get, keys) if w is not None and not w.done()]
        if not waiters:
            return
        try:
            if not self._connected():
                raise ConnectionError("not connected")
            await asyncio.wait_for(self._roundtrip(), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = (
                f"no answer within {timeout}s"
                if isinstance(exc, asyncio.TimeoutError)
                else str(exc) or type(exc).__name__
            )
            for done in waiters:
                if not done.done():
                    done.set_exception(ConnectionClosed(f"the broker did not answer: {reason}"))
            self._lost(f"the broker did not answer a round trip: {reason}")
        else:
            for done in waiters:
                if not done.done():
                    done.set_result(None)
