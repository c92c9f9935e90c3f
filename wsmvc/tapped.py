"""The tapped message path: a dispatcher and a writer that report what passes them to the
taps and meters (:mod:`wsmvc.taps`), used instead of the plain ones for the connections of
a handler table that has taps or meters.

What is reported is never parsed back when the sending code had it: the dispatcher's
answers are reported where it makes their frames (``Dispatcher._answer_frame``), with the
message they answer, and written straight to the connection's writer; a broadcast is
parsed once for all its receivers. Only the frames a connection writes itself (``emit``,
``ask``, system replies) go through :class:`TappedWriter`, which parses them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType

from .codecs import JSON, Codec
from .dispatch import Dispatcher
from .errors import ProtocolError
from .framing import Payload
from .protocol import Message, decode
from .taps import Meter, Outcome, Tapped, Taps

if TYPE_CHECKING:
    from .conn import Conn
    from .handlers import HandlerTable
    from .nsconn import NSConn
    from .states import Frame
    from .writer import Writer

__all__ = ["TappedDispatcher", "TappedWriter", "dispatcher_for"]

_clock = time.perf_counter


def dispatcher_for(
    conn: Conn,
    writer: Writer,
    handlers: HandlerTable,
    *,
    debug_errors: bool = False,
    codec: Codec = JSON,
) -> tuple[Writer, Dispatcher]:
    """The write path and dispatcher of a new connection: the plain ones, or, when
    ``handlers`` has taps or meters, ones that report what passes them (the dispatcher
    writes its answers to ``writer`` itself, the rest goes through the tapped writer)."""
    taps = handlers.taps
    if not taps:
        dispatcher = Dispatcher(
            conn.session, writer, handlers, owner=conn, debug_errors=debug_errors, codec=codec
        )
        return writer, dispatcher
    tapped = TappedWriter(writer, taps, conn, native=handlers.native_only)
    dispatcher = TappedDispatcher(
        conn.session, writer, handlers, owner=conn, debug_errors=debug_errors, codec=codec
    )
    dispatcher.tapped = tapped
    return tapped, dispatcher


class TappedDispatcher(Dispatcher):
    """A :class:`~wsmvc.dispatch.Dispatcher` that reports each message it handled, and
    each answer it wrote (with the message it answers: nothing is parsed)."""

    __slots__ = (
        "_answered",
        "_error",
        "_meter",
        "_outcome",
        "_quiet",
        "_session_answer",
        "_tapping",
        "_taps",
        "tapped",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        taps = self._handlers.taps
        self._taps: Taps = taps
        # Decided when the connection opens, as whether it is tapped at all.
        self._tapping = taps.taps
        self._meter: Meter | None = taps.meter
        self.tapped: Writer = self._writer
        """Where system replies and native answers go (parsed there): the connection's
        :class:`TappedWriter` (:func:`dispatcher_for` sets it); answers go to the writer."""
        self._session_answer = self._session.answer
        # The meter when there are meters and no taps (metrics): the common case, quickest.
        self._quiet = None if self._tapping else self._meter
        self._answer_frame = self._answering if self._quiet is None else self._answering_quietly
        self._outcome: Outcome = "handled"
        self._answered = -1  # the body bytes of the answer to the message being handled
        self._error: BaseException | None = None

    def handle(self, msg: Message) -> Awaitable[None] | None:
        """:meth:`Dispatcher.handle`, then the ``"in"`` report once ``msg`` was handled."""
        start = _clock()
        self._outcome = "handled"
        self._answered = -1
        try:
            pending = _handle(self, msg)
        except BaseException:
            self._report(msg, start)
            raise
        if pending is not None:
            return self._after(msg, start, pending)
        quiet = self._quiet
        if quiet is not None:  # meters only (metrics): _report() written out
            try:
                quiet.received(msg, self._outcome, _clock() - start, self._answered)
            except Exception:
                self._taps.failed(quiet, "received")
            return None
        self._report(msg, start)
        return None

    async def _after(self, msg: Message, start: float, pending: Awaitable[None]) -> None:
        try:
            await pending
        finally:
            self._report(msg, start)

    def _report(self, msg: Message, start: float) -> None:
        duration = _clock() - start
        meter = self._meter
        if meter is not None:
            try:
                meter.received(msg, self._outcome, duration, self._answered)
            except Exception:
                self._taps.failed(meter, "received")
        if self._tapping:
            self._tap(msg, duration)

    def _tap(self, msg: Message, duration: float) -> None:
        error, self._error = self._error, None  # no exception (and its frames) kept
        owner: Conn = self._owner  # type: ignore[assignment]
        self._taps.call(Tapped("in", owner, msg, self._outcome, duration, error))

    def _answering(self, msg: Message, body: bytes = b"", err: str = "") -> bytes | None:
        """The frame answering ``msg`` (the session's), reported as written: the
        dispatcher writes it right away (a writer closed meanwhile would drop it)."""
        data = self._session_answer(msg, body, err)
        if data is not None and msg.event:
            self._report_answer(msg, body, err)
        return data

    def _answering_quietly(self, msg: Message, body: bytes = b"", err: str = "") -> bytes | None:
        """:meth:`_answering` for meters only: the answer is reported with the message."""
        data = self._session_answer(msg, body, err)
        if data is not None and self._answered < 0 and msg.event:
            self._answered = len(body)
            return data
        if data is not None and msg.event:
            self._report_answer(msg, body, err)
        return data

    def _report_answer(self, msg: Message, body: bytes, err: str) -> None:
        meter = self._meter
        if meter is not None:
            if self._answered < 0:  # reported with the message, by handle()
                self._answered = len(body)
            else:  # a second answer (none in this version): on its own
                try:
                    meter.sent(msg.namespace, msg.event, len(body), False)
                except Exception:
                    self._taps.failed(meter, "sent")
        if self._tapping:
            binary = msg.binary
            answer = Message(msg.namespace, msg.room, msg.event, body, err, msg.token, binary)
            owner: Conn = self._owner  # type: ignore[assignment]
            self._taps.call(Tapped("out", owner, answer, "sent"))

    def _send(self, frame: Frame | None) -> None:
        """A system reply, or a native answer: through the tapped writer (parsed there)."""
        if frame is not None:
            self.tapped.write(*frame)

    def failed(
        self, msg: Message, exc: Exception, ns: NSConn | None = None
    ) -> Awaitable[None] | None:
        """:meth:`Dispatcher.failed`, noting the failure for the report (the dispatcher
        calls it only for the message being handled)."""
        self._outcome = "failed"
        if self._tapping:
            self._error = exc
        return super().failed(msg, exc, ns)

    def _unhandled(self, msg: Message) -> None:
        self._outcome = "unhandled"
        super()._unhandled(msg)

    async def fire(self, ns: NSConn, msg: Message) -> str | None:
        """:meth:`Dispatcher.fire`, noting a refusal of the request being handled (the
        peer's request has a token; the events that follow one, and those of a close,
        have none)."""
        refusal = await super().fire(ns, msg)
        if refusal is not None and msg.token:
            self._outcome = "refused"
        return refusal


_handle = Dispatcher.handle


class TappedWriter:
    """A connection's write path that reports each event it writes, and its close (see
    the module docstring); everything else is the wrapped writer's."""

    __slots__ = ("_conn", "_meter", "_native", "_tapping", "_taps", "_writer", "write_payload")

    def __init__(self, writer: Writer, taps: Taps, conn: Conn, *, native: bool) -> None:
        self._writer = writer
        self._taps = taps
        self._tapping = taps.taps
        self._meter: Meter | None = taps.meter
        self._conn = conn
        self._native = native  # a native-only connection: every frame is a native message
        # Meters count broadcasts per broadcast (wsmvc.Server.add_broadcast_hook): without
        # a tap, each receiver's copy goes straight to the wrapped writer.
        self.write_payload: Callable[[Payload], bool] = (
            self._write_payload if self._tapping else writer.write_payload
        )
        """Write one receiver's copy of a broadcast (then tap it, if there are taps)."""

    @property
    def closed(self) -> bool:
        """The wrapped writer's ``closed``."""
        return self._writer.closed

    @closed.setter
    def closed(self, value: bool) -> None:
        """Sets the wrapped writer's ``closed``."""
        self._writer.closed = value

    def write(self, data: bytes, binary: bool) -> bool:
        """Write one message (the wrapped writer), then report it if it is an event."""
        written = self._writer.write(data, binary)
        if written:
            self._sent(data, binary)
        return written

    def _write_payload(self, payload: Payload) -> bool:
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
        """A ping or a pong: the wrapped writer's, never reported."""
        return self._writer.control(opcode, payload)

    async def close(self, code: int, reason: bytes, *, urgent: bool = False) -> None:
        """The close frame (the wrapped writer's), the close reported to the meters first."""
        meter = self._meter
        if meter is not None:
            try:
                meter.closed(self._conn)
            except Exception:
                self._taps.failed(meter, "closed")
        await self._writer.close(code, reason, urgent=urgent)

    def _sent(self, data: bytes, binary: bool) -> None:
        msg = self._parse(data, binary)
        if msg is None or not msg.event:  # an empty reply's event is empty: an ack
            return
        meter = self._meter
        if meter is not None:
            token = msg.token
            ask = bool(token) and not self._conn.session.is_request(token)
            try:
                meter.sent(msg.namespace, msg.event, len(msg.body), ask)
            except Exception:
                self._taps.failed(meter, "sent")
            if ask:
                self._watch(meter, token, msg.namespace, msg.event)
        if self._tapping:
            self._taps.call(Tapped("out", self._conn, msg, "sent"))

    def _watch(self, meter: Meter, token: str, namespace: str, event: str) -> None:
        """Tell ``meter`` when the ask of ``token`` ends without an answer."""
        pending = self._conn.session.asks.get(token)
        if pending is None:
            return

        def ended(waiter: asyncio.Future[Message]) -> None:
            # Cancelled: the asker's wait ended (its timeout); a close or a disconnect
            # fails the waiter with ConnectionClosed instead, and an answer resolves it.
            if waiter.cancelled():
                try:
                    meter.unanswered(namespace, event)
                except Exception:
                    self._taps.failed(meter, "unanswered")

        pending[1].add_done_callback(ended)

    def _parse(self, data: bytes, binary: bool) -> Message | None:
        try:
            # A text frame's bytes are UTF-8: parsed as text, they parse in half the time.
            frame = data if binary else data.decode()
            return decode(frame, binary=binary, allow_native=self._native)
        except (ProtocolError, UnicodeDecodeError):
            return None  # the handshake's A<id> or H<reason>, a native frame: not an event


# The last broadcast payload a tapped writer parsed, and its message (see write_payload).
_parsed: tuple[object, Message | None] = (None, None)
