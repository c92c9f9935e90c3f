"""The tapped message path: a dispatcher and a writer that report what passes them to the
taps (:mod:`wsmvc.taps`), used instead of the plain ones for the connections of a handler
table that has taps."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType

from .codecs import JSON, Codec
from .dispatch import Dispatcher
from .errors import ProtocolError
from .framing import Payload
from .protocol import Message, decode
from .taps import Outcome, Tapped, Taps

if TYPE_CHECKING:
    from .conn import Conn
    from .handlers import HandlerTable
    from .nsconn import NSConn
    from .writer import Writer

__all__ = ["TappedDispatcher", "TappedWriter", "dispatcher_for"]


def dispatcher_for(
    conn: Conn,
    writer: Writer,
    handlers: HandlerTable,
    *,
    debug_errors: bool = False,
    codec: Codec = JSON,
) -> tuple[Writer, Dispatcher]:
    """The write path and dispatcher of a new connection: the plain ones, or, when
    ``handlers`` has taps, ones that tap what passes them."""
    taps = handlers.taps
    if not taps:
        dispatcher = Dispatcher(
            conn.session, writer, handlers, owner=conn, debug_errors=debug_errors, codec=codec
        )
        return writer, dispatcher
    tapped = TappedWriter(writer, taps, conn, native=handlers.native_only)
    return tapped, TappedDispatcher(
        conn.session, tapped, handlers, owner=conn, debug_errors=debug_errors, codec=codec
    )


class TappedDispatcher(Dispatcher):
    """A :class:`~wsmvc.dispatch.Dispatcher` that reports each message it handled."""

    __slots__ = ("_current", "_error", "_outcome", "_taps")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._taps: Taps = self._handlers.taps
        self._current: Message | None = None
        self._outcome: Outcome = "handled"
        self._error: BaseException | None = None

    def handle(self, msg: Message) -> Awaitable[None] | None:
        """:meth:`Dispatcher.handle`, then the ``"in"`` tap once ``msg`` was handled."""
        start = time.perf_counter()
        self._current, self._outcome, self._error = msg, "handled", None
        try:
            pending = super().handle(msg)
        except BaseException:
            self._report(msg, start)
            raise
        if pending is None:
            self._report(msg, start)
            return None
        return self._after(msg, start, pending)

    async def _after(self, msg: Message, start: float, pending: Awaitable[None]) -> None:
        try:
            await pending
        finally:
            self._report(msg, start)

    def _report(self, msg: Message, start: float) -> None:
        outcome, error = self._outcome, self._error
        self._current = self._error = None  # no exception (and its frames) kept alive
        owner: Conn = self._owner  # type: ignore[assignment]
        self._taps.call(Tapped("in", owner, msg, outcome, time.perf_counter() - start, error))

    def failed(
        self, msg: Message, exc: Exception, ns: NSConn | None = None
    ) -> Awaitable[None] | None:
        """:meth:`Dispatcher.failed`, noting the failure for the tap."""
        if msg is self._current:
            self._outcome, self._error = "failed", exc
        return super().failed(msg, exc, ns)

    def _unhandled(self, msg: Message) -> None:
        if msg is self._current:
            self._outcome = "unhandled"
        super()._unhandled(msg)

    async def fire(self, ns: NSConn, msg: Message) -> str | None:
        """:meth:`Dispatcher.fire`, noting a refusal of the request being handled."""
        refusal = await super().fire(ns, msg)
        if refusal is not None and msg is self._current:
            self._outcome = "refused"
        return refusal


class TappedWriter:
    """A connection's write path that reports each event it writes (see the module
    docstring); everything else is the wrapped writer's."""

    __slots__ = ("_conn", "_native", "_taps", "_writer")

    def __init__(self, writer: Writer, taps: Taps, conn: Conn, *, native: bool) -> None:
        self._writer = writer
        self._taps = taps
        self._conn = conn
        self._native = native  # a native-only connection: every frame is a native message

    @property
    def closed(self) -> bool:
        """The wrapped writer's ``closed``."""
        return self._writer.closed

    @closed.setter
    def closed(self, value: bool) -> None:
        """Sets the wrapped writer's ``closed``."""
        self._writer.closed = value

    def write(self, data: bytes, binary: bool) -> bool:
        """Write one message (the wrapped writer), then tap it if it is an event."""
        written = self._writer.write(data, binary)
        if written:
            self._sent(data, binary)
        return written

    def write_payload(self, payload: Payload) -> bool:
        """Write one receiver's copy of a broadcast, then tap it."""
        written = self._writer.write_payload(payload)
        if written:
            global _parsed  # one entry: the broadcast being written
            # A broadcast writes one payload to its receivers one after another: parsed
            # once for all of them (measured: 8 µs a receiver for 64 KiB, otherwise).
            if _parsed[0] is not payload:
                _parsed = (payload, self._parse(payload.data, payload.binary))
            msg = _parsed[1]
            if msg is not None and msg.event:
                self._taps.call(Tapped("out", self._conn, msg, "sent"))
        return written

    def control(self, opcode: WSMsgType, payload: bytes) -> bool:
        """A ping or a pong: the wrapped writer's, never tapped."""
        return self._writer.control(opcode, payload)

    async def close(self, code: int, reason: bytes, *, urgent: bool = False) -> None:
        """The close frame: the wrapped writer's."""
        await self._writer.close(code, reason, urgent=urgent)

    def _sent(self, data: bytes, binary: bool) -> None:
        msg = self._parse(data, binary)
        if msg is not None and msg.event:  # an empty reply's event is empty: an ack
            self._taps.call(Tapped("out", self._conn, msg, "sent"))

    def _parse(self, data: bytes, binary: bool) -> Message | None:
        try:
            # A text frame's bytes are UTF-8: parsed as text, they parse in half the time.
            frame = data if binary else data.decode()
            return decode(frame, binary=binary, allow_native=self._native)
        except (ProtocolError, UnicodeDecodeError):
            return None  # the handshake's A<id> or H<reason>, a native frame: not an event


# The last broadcast payload a tapped writer parsed, and its message (see write_payload).
_parsed: tuple[object, Message | None] = (None, None)
