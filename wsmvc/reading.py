"""Who reads a connection's websocket, and when.

The serving task of a connection (:class:`~wsmvc.conn.Conn`) reads its frames itself,
between handlers: one task switch per message, as in a bare aiohttp handler. Two things
need more:

* an ask waits for its answer while the serving task is busy (a handler awaiting
  ``ns.ask(...)``): then a helper task reads. It resolves answers at once and queues the
  other messages in the session for their turn; past the session's bound (``max_queue``
  messages or ``max_queue_bytes``) it stops reading until the serving task caught up,
  and TCP pushes back on the peer. It ends as soon as no ask waits;
* the connection starts closing (from another task, the peer, a limit) while the serving
  task waits for a frame: :meth:`Reader.wake` ends that wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMessage

from .closing import CloseReason, Detached, only_ours
from .protocol import Message
from .session import Session
from .writer import AnyWebSocket

__all__ = ["Reader", "frame_size"]

log = logging.getLogger("wsmvc")

_WAKE = "wsmvc: wake the serving task"
_READ_TIMEOUT = CloseReason.READ_TIMEOUT


def frame_size(frame: WSMessage) -> int:
    """The size of a data frame's payload (characters of a text frame, bytes of a binary)."""
    data = frame.data
    return len(data) if isinstance(data, (str, bytes)) else 0


class Owner(Protocol):
    """The connection a :class:`Reader` reads for."""

    def read_frame(self, frame: WSMessage) -> Message | None:
        """The message in ``frame`` to handle (``None``: nothing to handle)."""

    def request_close(
        self, code: int, reason: str = "", *, cause: CloseReason | None = None
    ) -> None:
        """Start closing the connection."""


class Reader:
    """Reads one websocket for its connection ``owner`` (see the module docstring).

    The owner, not two of its bound methods: every connection has a reader, and each
    object kept per connection is work for the garbage collector (measured on connect).
    """

    __slots__ = (
        "_owner",
        "_session",
        "_waking",
        "_ws",
        "drained",
        "gone",
        "helper",
        "reading",
        "task",
        "wakeup",
    )

    def __init__(
        self,
        ws: AnyWebSocket,
        session: Session[Any, Any],
        owner: Owner,
    ) -> None:
        self._ws = ws
        self._session = session
        self._owner = owner
        self.task: asyncio.Task[Any] | None = None  # the serving task
        self.helper: asyncio.Task[None] | None = None
        self.reading = False  # the serving task waits in ws.receive()
        # The websocket was read to its end and its connection is kept for recovery: no
        # helper reads it again (aiohttp fails the fifth read of a closed websocket); the
        # answers to asks made meanwhile come on the next websocket (a new Reader).
        self.gone = False
        self._waking = False  # a cancellation of that wait is ours (see wake)
        # Made with the first helper (most connections never need one):
        self.wakeup: asyncio.Event | None = None  # the helper read something, or it ended
        self.drained: asyncio.Event | None = None  # the queue has room: the helper may read

    @property
    def listening(self) -> bool:
        """Whether a frame arriving now is read soon: the serving task waits for one, or
        the helper reads (with room to queue it)."""
        return self.reading or (self.helper is not None and not self._session.inbox_full)

    async def receive(self, timeout: float | None, timeout_reason: str) -> WSMessage | None:
        """The next frame, read by the serving task; ``None`` when woken, or after
        ``timeout`` seconds (aiohttp's ``receive_timeout`` if ``None``), which closes the
        connection: 1001 with ``timeout_reason`` once open, 1008 during the handshake."""
        self.reading = True
        try:
            return await self._ws.receive(timeout)
        except asyncio.CancelledError:
            if not self.woken():
                raise
            return None
        except asyncio.TimeoutError:
            self.timed_out(timeout_reason)
            return None
        finally:
            self.reading = False

    def timed_out(self, reason: str) -> None:
        """Nothing came in time: close, 1001 once open (RFC 6455's "going away": the server
        gives the connection up; 1000 would say its purpose was fulfilled), 1008 during the
        handshake."""
        if self._session.open:
            self._owner.request_close(WSCloseCode.GOING_AWAY, reason, cause=_READ_TIMEOUT)
        else:
            cause = CloseReason.HANDSHAKE_TIMEOUT
            self._owner.request_close(WSCloseCode.POLICY_VIOLATION, reason, cause=cause)

    def wake(self) -> None:
        """Make the serving task look at the session again: it may wait for a frame.

        A dedicated reading task would not need this, at the price of a second task switch
        for every message; instead the serving task reads itself, and this cancels that
        wait (aiohttp's ``receive()`` consumes nothing when cancelled).
        """
        if self.wakeup is not None and self.drained is not None:
            self.wakeup.set()
            self.drained.set()
        task = self.task
        if self.reading and task is not None and task is not asyncio.current_task():
            self._waking = True
            task.cancel(_WAKE)

    def halt(self) -> None:
        """The connection is closing: end every read of ours, the serving task's and the
        helper's. Call it before aiohttp's ``close()`` can run: while another task waits in
        ``receive()``, that close does not wait for the peer's close frame (a client would
        return from ``close()`` before the server saw it).

        Not on a client: aiohttp's client marks its connection aborted (1006) when a
        ``receive()`` is cancelled, and its ``close()`` then skips the close handshake. Its
        ``close()`` wakes a pending ``receive()`` itself (with a ``CLOSING`` message), so
        there the read ends when the close frame goes out.
        """
        if self._session.client:
            if self.wakeup is not None and self.drained is not None:
                self.wakeup.set()
                self.drained.set()
            return
        self.wake()
        helper = self.helper
        if helper is not None and helper is not asyncio.current_task():
            helper.cancel()

    def woken(self) -> bool:
        """Whether the cancellation being handled is a wake-up (it is consumed then)."""
        if not self._waking:
            return False
        self._waking = False
        return only_ours(self.task)

    def ensure_helper(self) -> None:
        """An ask waits: start the helper unless the serving task is reading anyway."""
        if self.helper is None and not self.reading and self._session.open and not self.gone:
            if self.wakeup is None:
                self.wakeup = asyncio.Event()
                self.drained = asyncio.Event()
            self.helper = asyncio.get_running_loop().create_task(self._help())

    async def wait_for_helper(self) -> None:
        """The serving task has nothing to handle and the helper reads: wait for news."""
        wakeup = self.wakeup
        assert wakeup is not None
        wakeup.clear()
        if self.helper is not None and not self._session.inbox:
            await wakeup.wait()

    def taken(self) -> None:
        """The serving task took a queued message: the helper may read again."""
        drained = self.drained
        if self.helper is not None and drained is not None and not self._session.inbox_full:
            drained.set()

    async def _help(self) -> None:
        session = self._session
        wakeup, drained = self.wakeup, self.drained
        assert wakeup is not None and drained is not None
        try:
            while session.asks and session.open:
                if session.inbox_full:
                    drained.clear()
                    await drained.wait()  # TCP pushes back meanwhile
                    continue
                frame = await self._ws.receive()
                msg = self._owner.read_frame(frame)
                if msg is not None and session.open:
                    session.queue(msg, frame_size(frame))
                wakeup.set()
        except asyncio.TimeoutError:
            self.timed_out(_READ_TIMEOUT.text)
        except Detached:
            pass  # the connection is kept: the serving task waits for its next websocket
        except Exception:
            log.exception("reading failed")
            cause = CloseReason.INTERNAL_ERROR
            self._owner.request_close(WSCloseCode.INTERNAL_ERROR, cause.text, cause=cause)
        finally:
            self.helper = None
            wakeup.set()

    async def stop(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the helper to end: the connection closed."""
        helper = self.helper
        if helper is not None and helper is not asyncio.current_task():
            await asyncio.wait([helper], timeout=timeout)
