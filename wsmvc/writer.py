"""The write path of one websocket: ordered, synchronous to call, bounded in memory.

Server connections without compression write whole websocket frames straight to the
transport (one ``write`` per frame, the header built here), so a broadcast can frame its
payload once and hand the same bytes to every receiver. Connections that compress, and
client connections (which must mask), go through aiohttp's own writer from a queue that
one task drains in order. Either way a peer that stops reading cannot make the server
buffer more than ``limit`` bytes: past it, ``on_overflow`` is called once.

The close frame takes the same path (:meth:`Writer.close`): it goes out after every frame
written before it, compressed or not, on every Python; only a close for a peer that stopped
reading (``urgent``) skips what is still queued for it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from collections.abc import Callable
from typing import Protocol

from aiohttp import WSMsgType
from aiohttp.client_ws import ClientWebSocketResponse
from aiohttp.web_ws import WebSocketResponse

AnyWebSocket = WebSocketResponse | ClientWebSocketResponse

__all__ = ["DirectWriter", "QueuedWriter", "Writer", "frame"]

log = logging.getLogger("wsmvc")

OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80
_HEAD_SHORT = struct.Struct("!BB")
_HEAD_MEDIUM = struct.Struct("!BBH")
_HEAD_LONG = struct.Struct("!BBQ")


def frame(payload: bytes, opcode: int) -> bytes:
    """One unmasked, unfragmented websocket frame (RFC 6455 §5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return _HEAD_SHORT.pack(_FIN | opcode, n) + payload
    if n < 65536:
        return _HEAD_MEDIUM.pack(_FIN | opcode, 126, n) + payload
    return _HEAD_LONG.pack(_FIN | opcode, 127, n) + payload


class Writer(Protocol):
    """What a connection needs from its write path."""

    direct: bool

    def write(self, data: bytes, binary: bool) -> bool:
        """Queue one message; ``False`` once the writer is closed."""

    def write_frame(self, framed: bytes) -> bool:
        """Write a frame built by :func:`frame` (direct writers only)."""

    closed: bool

    async def close(self, code: int, reason: bytes, *, urgent: bool = False) -> None:
        """Refuse every later write, send the close frame after everything written before
        (``urgent``: at once, dropping what is still queued) and wait for the peer's close
        frame (aiohttp's close timeout). Raises what aiohttp's ``close`` raises."""


class DirectWriter:
    """Frames written to the transport in the caller's step; no task, no await."""

    __slots__ = ("_limit", "_on_overflow", "_transport", "_ws", "closed")
    direct = True

    def __init__(
        self,
        ws: WebSocketResponse,
        transport: asyncio.Transport,
        limit: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._limit = limit
        self._on_overflow = on_overflow
        self.closed = False

    def write(self, data: bytes, binary: bool) -> bool:
        if self.closed:
            return False
        return self.write_frame(frame(data, OP_BINARY if binary else OP_TEXT))

    def write_frame(self, framed: bytes) -> bool:
        if self.closed:
            return False
        t = self._transport
        if t.is_closing():
            self.closed = True
            return False
        t.write(framed)
        if t.get_write_buffer_size() > self._limit:
            self.closed = True
            self._on_overflow()
        return True

    async def close(self, code: int, reason: bytes, *, urgent: bool = False) -> None:
        self.closed = True
        # Every frame is in the transport already: the close frame goes after them. Not
        # drained: the wait for the peer's close frame is what is bounded.
        await self._ws.close(code=code, message=reason, drain=False)


class QueuedWriter:
    """Messages sent through aiohttp's writer (compression, masking) by one task, in order.

    Only bytes that are still queued one loop iteration after they were written count
    against the limit: a burst written in one step is the application's doing and is sent
    as soon as the drain task runs, while bytes that outlive an iteration mean the peer is
    not reading.
    """

    __slots__ = (
        "_fresh",
        "_limit",
        "_on_overflow",
        "_queue",
        "_queued",
        "_task",
        "_ws",
        "closed",
    )
    direct = False

    def __init__(self, ws: AnyWebSocket, limit: int, on_overflow: Callable[[], None]) -> None:
        self._ws = ws
        self._limit = limit
        self._on_overflow = on_overflow
        self._queue: collections.deque[tuple[bytes, WSMsgType]] = collections.deque()
        self._queued = 0
        self._fresh = 0
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def write(self, data: bytes, binary: bool) -> bool:
        if self.closed or self._ws.closed:
            return False
        if self._queued - self._fresh > self._limit:
            self.closed = True
            self._queue.clear()
            self._on_overflow()
            return True
        self._queue.append((data, WSMsgType.BINARY if binary else WSMsgType.TEXT))
        self._queued += len(data)
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._drain())
        if not self._fresh:
            loop.call_soon(self._age)
        self._fresh += len(data)
        return True

    def _age(self) -> None:
        # Runs after the drain task's next step: what it could not send is now old.
        self._fresh = 0

    def write_frame(self, framed: bytes) -> bool:
        raise TypeError("QueuedWriter cannot write pre-built frames")

    async def _drain(self) -> None:
        try:
            while self._queue:
                data, opcode = self._queue.popleft()
                self._queued -= len(data)
                await self._ws.send_frame(data, opcode)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("write failed, connection closing: %s", exc)
            self.closed = True
            self._queue.clear()
        finally:
            self._task = None

    async def close(self, code: int, reason: bytes, *, urgent: bool = False) -> None:
        self.closed = True
        task = self._task
        if urgent:
            self._queue.clear()  # the peer stopped reading: what is queued would never go
        elif task is not None:
            await asyncio.shield(task)  # the frames written before the close go first
        ws = self._ws
        if isinstance(ws, WebSocketResponse):
            await ws.close(code=code, message=reason, drain=False)
        else:
            await ws.close(code=code, message=reason)
