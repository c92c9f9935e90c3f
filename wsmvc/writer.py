"""The write path of one websocket: ordered, synchronous to call, bounded in memory.

Server connections write whole websocket frames straight to the transport (one ``write``
per frame, built by :mod:`wsmvc.framing`), compressed or not: permessage-deflate without
context takeover compresses each message on its own, so a broadcast frames (and deflates)
its payload once and hands the same bytes to every receiver. Client connections (which
must mask) go through aiohttp's own writer from a queue that one task drains in order.
Either way a peer that stops reading cannot make the server buffer more than ``limit``
bytes: past it, ``on_overflow`` is called once.

The close frame takes the same path (:meth:`Writer.close`): it goes out after every frame
written before it, compressed or not, on every Python; only a close for a peer that stopped
reading (``urgent``) skips what is still queued for it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Protocol

from aiohttp import WSMsgType
from aiohttp.client_ws import ClientWebSocketResponse
from aiohttp.web_ws import WebSocketResponse

from .framing import DEFAULT_LEVEL, DEFAULT_THRESHOLD, OP_BINARY, OP_TEXT, Payload, frame

AnyWebSocket = WebSocketResponse | ClientWebSocketResponse

__all__ = ["DirectWriter", "QueuedWriter", "Writer", "writer_factory"]

log = logging.getLogger("wsmvc")


class Writer(Protocol):
    """What a connection needs from its write path."""

    def write(self, data: bytes, binary: bool) -> bool:
        """Queue one message; ``False`` once the writer is closed."""

    def write_payload(self, payload: Payload) -> bool:
        """Write one message of a broadcast: on a server connection, the frame bytes
        ``payload`` built for this peer's compression (shared with every peer alike)."""

    def control(self, opcode: WSMsgType, payload: bytes) -> bool:
        """Queue a ping or a pong (``payload``: at most 125 bytes, RFC 6455 §5.5) in order
        with the messages; ``False`` once the writer is closed."""

    closed: bool

    async def close(self, code: int, reason: bytes, *, urgent: bool = False) -> None:
        """Refuse every later write, send the close frame after everything written before
        (``urgent``: at once, dropping what is still queued) and wait for the peer's close
        frame (aiohttp's close timeout). Raises what aiohttp's ``close`` raises."""


class DirectWriter:
    """Frames written to the transport in the caller's step; no task, no await.

    ``deflate``: the ``server_max_window_bits`` (9-15) of the permessage-deflate this peer
    negotiated, 0 without. Messages of ``threshold`` bytes or more are then deflated (zlib
    ``level``), each on its own (:mod:`wsmvc.framing`); smaller ones go plain.
    """

    __slots__ = (
        "_burst",
        "_level",
        "_limit",
        "_on_overflow",
        "_threshold",
        "_transport",
        "_ws",
        "closed",
        "deflate",
    )

    def __init__(
        self,
        ws: WebSocketResponse,
        transport: asyncio.Transport,
        limit: int,
        on_overflow: Callable[[], None],
        *,
        deflate: int = 0,
        threshold: int = DEFAULT_THRESHOLD,
        level: int = DEFAULT_LEVEL,
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._limit = limit
        self._on_overflow = on_overflow
        self.deflate = deflate
        self._threshold = threshold
        self._level = level
        self._burst = False  # the limit was crossed in the current loop step
        self.closed = False

    def write(self, data: bytes, binary: bool) -> bool:
        if self.closed:
            return False
        if not self.deflate or len(data) < self._threshold:
            return self._write_frame(frame(data, OP_BINARY if binary else OP_TEXT))
        payload = Payload(data, binary, threshold=self._threshold, level=self._level, checked=True)
        return self._write_frame(payload.for_peer(self.deflate))

    def write_payload(self, payload: Payload) -> bool:
        if self.closed:
            return False
        return self._write_frame(payload.for_peer(self.deflate))

    def control(self, opcode: WSMsgType, payload: bytes) -> bool:
        if self.closed:
            return False
        return self._write_frame(frame(payload, opcode))

    def _write_frame(self, framed: bytes) -> bool:
        # Its callers checked `closed` before building the frame.
        t = self._transport
        if t.is_closing():
            self.closed = True
            return False
        t.write(framed)
        size = t.get_write_buffer_size()
        if size > self._limit:
            self._over_limit(size - len(framed))
        return True

    def _over_limit(self, before: int) -> None:
        """The transport buffers more than the limit. A burst written in one loop step is
        the application's doing and goes out as the peer reads; a peer whose buffer is
        still past the limit when a later step writes is not reading: overflow. (The
        queued writer's rule too; checked only past the limit, nothing on the hot path.)"""
        if self._burst:
            return  # the same step's burst
        if before > self._limit:
            self.closed = True
            self._on_overflow()
            return
        self._burst = True
        asyncio.get_running_loop().call_soon(self._step_ended)

    def _step_ended(self) -> None:
        self._burst = False

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
        return self._enqueue(WSMsgType.BINARY if binary else WSMsgType.TEXT, data)

    def control(self, opcode: WSMsgType, payload: bytes) -> bool:
        return self._enqueue(opcode, payload)

    def _enqueue(self, opcode: WSMsgType, payload: bytes) -> bool:
        # Every frame this writer sends: one queue, one order.
        if self.closed or self._ws.closed:
            return False
        if self._queued - self._fresh > self._limit:
            self.closed = True
            self._queue.clear()
            self._on_overflow()
            return True
        self._queue.append((payload, opcode))
        self._queued += len(payload)
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._drain())
        if not self._fresh:
            loop.call_soon(self._age)
        self._fresh += len(payload)
        return True

    def _age(self) -> None:
        # Runs after the drain task's next step: what it could not send is now old.
        self._fresh = 0

    def write_payload(self, payload: Payload) -> bool:
        return self.write(payload.data, payload.binary)

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


def writer_factory(
    ws: WebSocketResponse,
    transport: asyncio.Transport | None,
    limit: int,
    *,
    deflate: int,
    threshold: int,
    level: int,
) -> Callable[[Callable[[], None]], Writer]:
    """``make(on_overflow)`` for a server connection: the direct writer on ``transport``
    (``deflate``: the negotiated window bits, 0 without permessage-deflate), the queued
    one when aiohttp gives none."""

    def make(on_overflow: Callable[[], None]) -> Writer:
        # Any transport aiohttp gives (asyncio's, uvloop's: not an asyncio.Transport
        # subclass, an isinstance check sent every uvloop connection the slow way).
        if transport is not None:
            return DirectWriter(
                ws,
                transport,
                limit,
                on_overflow,
                deflate=deflate,
                threshold=threshold,
                level=level,
            )
        return QueuedWriter(ws, limit, on_overflow)

    return make
