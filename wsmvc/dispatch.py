"""Handling one message of a connection (``neffos-protocol.md`` §4 to §7).

:class:`Dispatcher` runs the handler of an event and answers with what it returned or
raised, and carries out the system requests (namespace connect and disconnect, room join
and leave) the peer sends: the :class:`~wsmvc.session.Session` decides and changes state,
the dispatcher runs the hooks in between and writes what the session says to send. It is
called by the connection's serving task only, one message at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable, Iterator
from typing import TYPE_CHECKING

from .bodies import encode_body
from .codecs import JSON, Codec
from .errorhandling import decide, handlers_for
from .errors import GENERIC_ERROR, ConnectionClosed, EventError
from .handlers import HandlerTable, Reply
from .protocol import (
    ERR_BAD_NAMESPACE,
    ON_ANY_EVENT,
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    Message,
    is_text,
    shorten,
)
from .session import Session
from .states import WRITABLE_NS, Frame, Namespace, NsState

if TYPE_CHECKING:
    from .nsconn import NSConn
    from .writer import Writer

__all__ = ["GENERIC_ERROR", "LEAVE_ALL_ERROR", "Dispatcher", "system_event"]

log = logging.getLogger("wsmvc")

LEAVE_ALL_ERROR = "leaveAll is not supported by the protocol: leave each room with room.leave()"

# Events the dispatcher treats itself (everything else goes to its handler).
_SYSTEM_REQUESTS = frozenset(
    {ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT, ON_ROOM_JOIN, ON_ROOM_LEAVE}
)


def _text_body(msg: Message, body: bytes) -> bool:
    """Whether ``body`` may go in a text frame: UTF-8 (spec 2.7). The body of a text
    message received (an echo) is, and needs no look; bytes that are not go binary."""
    return body is msg.body or is_text(body)


def system_event(msg: Message, event: str, *, forced: bool = False) -> Message:
    """The follow-up event ``event`` (``_OnRoomJoined`` after ``_OnRoomJoin``...) of ``msg``."""
    return Message(
        namespace=msg.namespace, room=msg.room, event=event, forced=forced, local=msg.local
    )


class Dispatcher:
    """Handles the messages of one connection (see the module docstring).

    ``session`` is the connection's session, ``write(data, binary)`` its write path,
    ``handlers`` the handler table, ``owner`` the connection (named in log lines).
    ``debug_errors``: send exception texts to the peer. ``codec``: how a returned value that
    is not ``bytes``, ``str`` or a :class:`~wsmvc.Reply` is written (:mod:`wsmvc.codecs`).
    """

    __slots__ = (
        "_answer_frame",
        "_client",
        "_codec",
        "_connecting",
        "_debug_errors",
        "_errors",
        "_handlers",
        "_namespaces",
        "_owner",
        "_session",
        "_table",
        "_writer",
    )

    def __init__(
        self,
        session: Session[NSConn, asyncio.Future[Message]],
        writer: Writer,
        handlers: HandlerTable,
        *,
        owner: object,
        debug_errors: bool = False,
        codec: Codec = JSON,
    ) -> None:
        self._session = session
        # session.answer, the frame of every answer: a tapped dispatcher reports them here
        self._answer_frame = session.answer
        self._namespaces = session.namespaces
        self._connecting: dict[str, asyncio.Future[None]] | None = None  # made on first use
        self._writer = writer  # not its bound write(): one object less per connection
        self._handlers = handlers
        self._errors = handlers.exception_handlers
        self._table = handlers.namespaces
        self._client = session.client
        self._debug_errors = debug_errors
        self._codec = codec
        self._owner = owner

    @property
    def handlers(self) -> HandlerTable:
        """The handler table this connection is served by."""
        return self._handlers

    def handle(self, msg: Message) -> Awaitable[None] | None:
        """Handle ``msg``: right here when its handler does not need to await, else the
        rest of the work, to be awaited before the next message."""
        # The hot path of every message: one dict lookup, one handler call, no coroutine
        # unless the handler is one.
        ns = self._namespaces.get(msg.namespace)
        event = msg.event
        if ns is None or ns.state not in WRITABLE_NS or event in _SYSTEM_REQUESTS:
            return self._system(msg)
        if event == ON_ROOM_LEFT and self._leave_all(msg):
            return None
        events = self._table.get(msg.namespace)  # HandlerTable.lookup, written out
        if events is None:  # a dynamic namespace: its pattern's events
            events = self._handlers.events_of(msg.namespace)
        handler = events.get(event) or events.get(ON_ANY_EVENT)
        if handler is None:
            self._unhandled(msg)
            return None
        try:
            result = handler(ns, msg)
        except Exception as exc:
            return self.failed(msg, exc, ns)
        if result is None:
            return None
        if type(result) is bytes and not msg.native:
            # answered() for the common answer (bytes), written out: a call less per message.
            data = self._answer_frame(msg, result)
            if data is not None:
                # UTF-8 goes as text: an echo's body came in a text frame; else look
                # (ASCII first, without a call).
                text = result is msg.body or result.isascii() or is_text(result)
                self._writer.write(data, msg.binary or not text)
            return None
        if hasattr(result, "__await__"):
            return self._finish(msg, result, ns)
        return self.answered(msg, result)

    async def _finish(self, msg: Message, pending: Awaitable[object], ns: NSConn) -> None:
        try:
            result = await pending
        except Exception as exc:
            rest = self.failed(msg, exc, ns)
        else:
            rest = self.answered(msg, result)
        if rest is not None:  # an async exception handler decides
            await rest

    def _send(self, frame: Frame | None) -> None:
        if frame is not None:
            self._writer.write(*frame)

    # -- answers (spec 7.2) ----------------------------------------------------------------

    def answered(self, msg: Message, result: object) -> Awaitable[None] | None:
        """Answer ``msg`` with what its handler returned: nothing for ``None``. What is left
        to await, if anything: an async exception handler deciding a failure's text."""
        if result is None:
            return None
        binary = msg.binary
        if isinstance(result, bytes):
            body = result
        elif isinstance(result, Reply):
            body = result.body
        elif isinstance(result, str):
            try:
                body = result.encode()
            except UnicodeEncodeError as exc:  # a lone surrogate (json.loads makes them)
                return self.failed(msg, exc)
        else:
            try:
                body = encode_body(result, self._codec)
                binary = binary or self._codec.binary  # not UTF-8: never in a text frame
            except Exception as exc:
                return self.failed(
                    msg,
                    TypeError(
                        f"handler for {shorten(msg.event)!r} returned a {type(result).__name__}"
                        f" that cannot be sent: {exc}"
                    ),
                )
        if not binary and type(result) is not str and not _text_body(msg, body):
            binary = True  # bytes that are not UTF-8 never go in a text frame
        if msg.native:
            if not msg.err and self._session.open:
                self._send((body, binary))  # a frame of its own: no envelope, no answer
            return None
        data = self._answer_frame(msg, body)
        if data is not None:
            self._writer.write(data, binary)
        return None

    def failed(
        self, msg: Message, exc: Exception, ns: NSConn | None = None
    ) -> Awaitable[None] | None:
        """Answer ``msg`` with the error its handler raised in ``ns`` (default: ``msg``'s
        namespace): the text an exception handler decides (:mod:`wsmvc.errorhandling`),
        else an EventError's own, else the generic one, logged. What is left to await, if
        anything: an async exception handler."""
        if isinstance(exc, ConnectionClosed) and not self._session.open:
            log.debug("%s: handler for %r stopped: %s", self._owner, shorten(msg.event), exc)
            return None
        if ns is None:
            ns = self._namespaces.get(msg.namespace)
        handlers = handlers_for(self._errors, ns, exc)
        if not handlers:
            self._answer_error(msg, self._default_text(msg, exc, ns, hook=False))
            return None
        text = decide(handlers, exc, ns, msg, lambda: self._default_text(msg, exc, ns, False))
        if isinstance(text, str):
            self._answer_error(msg, text)
            return None
        return self._answer_error_later(msg, text)

    async def _answer_error_later(self, msg: Message, text: Awaitable[str]) -> None:
        self._answer_error(msg, await text)

    def _answer_error(self, msg: Message, text: str) -> None:
        if not msg.native:
            self._answer(msg, err=text)

    def _default_text(self, msg: Message, exc: BaseException, ns: NSConn | None, hook: bool) -> str:
        """The text of ``exc`` when no exception handler decided: an EventError's own,
        else :meth:`error_text`, the traceback logged."""
        if isinstance(exc, EventError):
            return exc.text
        if hook:
            where = f"{msg.event} handler of {shorten(ns.namespace if ns else msg.namespace)!r}"
        else:
            where = f"handler for {shorten(msg.namespace)!r}/{shorten(msg.event)!r}"
        log.error("%s: %s failed", self._owner, where, exc_info=(type(exc), exc, exc.__traceback__))
        return self.error_text(exc)

    def _unhandled(self, msg: Message) -> None:
        log.debug(
            "%s: no handler for %r in %r", self._owner, shorten(msg.event), shorten(msg.namespace)
        )
        self._handlers.unhandled.arrived(self._owner, msg.namespace, msg.event)
        if self._session.is_request(msg.token):
            self._answer(msg, err=f"unknown event {shorten(msg.event)!r}")

    def _answer(self, msg: Message, body: bytes = b"", err: str = "") -> None:
        data = self._answer_frame(msg, body, err)
        if data is not None:
            self._writer.write(data, msg.binary)

    def error_text(self, exc: BaseException) -> str:
        """What the peer is told of an exception: a generic text unless ``debug_errors``."""
        if self._debug_errors:
            return f"{type(exc).__name__}: {exc}"
        return GENERIC_ERROR

    # -- hooks -------------------------------------------------------------------------------

    async def fire(self, ns: NSConn, msg: Message) -> str | None:
        """Run the handler of a system event; the text that refuses it, if it raised."""
        handler = self._handlers.lookup(ns.namespace, msg.event)
        if handler is None:
            return None
        try:
            result = handler(ns, msg)
            if hasattr(result, "__await__"):
                await result
            return None
        except Exception as exc:
            if isinstance(exc, ConnectionClosed):
                # An ask of the hook's: the peer went away meanwhile, nothing to report.
                log.debug("%s: %s handler of %r: %s", self._owner, msg.event, ns.namespace, exc)
                return str(exc)
            failure = exc  # `exc` is unbound once the except block ends
        handlers = handlers_for(self._errors, ns, failure)
        if not handlers:
            return self._default_text(msg, failure, ns, hook=True)
        text = decide(
            handlers, failure, ns, msg, lambda: self._default_text(msg, failure, ns, True)
        )
        return text if isinstance(text, str) else await text

    async def fire_all(self, events: Iterable[tuple[NSConn, Message]]) -> None:
        """Fire ``events`` one after another (forced events: refusals are ignored)."""
        for ns, msg in events:
            await self.fire(ns, msg)

    # -- connects under way ----------------------------------------------------------------------

    @contextlib.contextmanager
    def deciding(self, namespace: str) -> Iterator[None]:
        """Mark a change of ``namespace`` under way (a connect, the peer's or this side's, or
        the peer's disconnect) while the block runs: :meth:`under_way` gives others
        something to wait for."""
        if self._connecting is None:
            self._connecting = {}
        done = asyncio.get_running_loop().create_future()
        self._connecting[namespace] = done
        try:
            yield
        finally:
            del self._connecting[namespace]
            done.set_result(None)

    def under_way(self, namespace: str) -> asyncio.Future[None] | None:
        """Done once the change of ``namespace`` under way is decided (``None``: none)."""
        return self._connecting.get(namespace) if self._connecting else None

    # -- system requests from the peer ---------------------------------------------------------

    async def _system(self, msg: Message) -> None:
        event = msg.event
        try:
            if event in (ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT):
                # This side's own change of that namespace, if one is under way, is decided
                # first: the peer's request is then answered from where it left things.
                while (under_way := self.under_way(msg.namespace)) is not None:
                    await asyncio.shield(under_way)
                if event == ON_NAMESPACE_CONNECT:
                    await self._reply_connect(msg)
                else:
                    await self._reply_disconnect(msg)
            elif event == ON_ROOM_JOIN:
                await self._reply_join(msg)
            elif event == ON_ROOM_LEAVE:
                await self._reply_leave(msg)
            else:
                # Not connected: Go drops it, leaving a peer's ask waiting forever, so a
                # request is answered.
                self._answer(msg, err=ERR_BAD_NAMESPACE)
        except Exception:
            log.exception("%s: failed to handle %r", self._owner, msg)

    def _leave_all(self, msg: Message) -> bool:
        """neffos.js ``leaveAll()`` asks with ``_OnRoomLeft`` (spec 16.12): answering with an
        error ends its promises and keeps both sides' rooms in agreement. Whether ``msg``
        was such a request (otherwise ``_OnRoomLeft`` is an ordinary event)."""
        if self._client or not self._session.is_request(msg.token):
            return False
        log.warning("%s: %s", self._owner, LEAVE_ALL_ERROR)
        self._answer(msg, err=LEAVE_ALL_ERROR)
        return True

    async def _reply_connect(self, msg: Message) -> None:
        session = self._session
        ns = session.connect_requested(msg)
        if not isinstance(ns, Namespace):
            self._send(ns)
            return
        ns.connect_payload = msg.body
        with self.deciding(ns.namespace):
            refusal = await self.fire(ns, msg)
            self._send(session.connect_decided(ns, msg, refusal))
        if refusal is None and ns.state is NsState.CONNECTED:
            await self.fire(ns, system_event(msg, ON_NAMESPACE_CONNECTED))

    async def _reply_disconnect(self, msg: Message) -> None:
        session = self._session
        ns = session.disconnect_requested(msg)
        if not isinstance(ns, Namespace):
            self._send(ns)
            return
        with self.deciding(ns.namespace):
            await self._disconnect(ns, msg)

    async def _disconnect(self, ns: NSConn, msg: Message) -> None:
        session = self._session
        if self._client:
            # A server's disconnect cannot be refused (spec 5.4): leave, answer, then tell.
            await self.fire_all(session.forced_leaves(ns, local=False))
            session.remove(ns)
            self._send(session.empty_reply(msg))
            await self.fire(ns, msg)
            return
        refusal = await self.fire(ns, msg)
        if refusal is not None:
            self._send(session.disconnect_refused(ns, msg, refusal))
            return
        await self.fire_all(session.forced_leaves(ns, local=False))
        session.remove(ns)
        self._send(session.empty_reply(msg))

    async def _reply_join(self, msg: Message) -> None:
        session = self._session
        ns = session.join_requested(msg)
        if not isinstance(ns, Namespace):
            self._send(ns)
            return
        refusal = await self.fire(ns, msg)
        reply, joined = session.join_decided(ns, msg, refusal)
        if joined:
            await self.fire(ns, system_event(msg, ON_ROOM_JOINED))  # before the reply (6.1)
        self._send(reply)

    async def _reply_leave(self, msg: Message) -> None:
        session = self._session
        ns = session.leave_requested(msg)
        if not isinstance(ns, Namespace):
            self._send(ns)
            return
        refusal = await self.fire(ns, msg)
        reply, left = session.leave_decided(ns, msg, refusal)
        if left:
            await self.fire(ns, system_event(msg, ON_ROOM_LEFT))
        self._send(reply)
