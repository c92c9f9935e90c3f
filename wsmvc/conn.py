"""One websocket connection (:class:`Conn`), its namespaces (:class:`NSConn`) and rooms.

The same machinery serves both ends: the server wraps each accepted websocket in a
``Conn``, and :func:`wsmvc.client.dial` wraps the client's. Everything follows
``neffos-protocol.md`` §4 to §11.

Reading and ordering: one task reads frames and runs their handlers inline, one message
at a time, in arrival order, with no task or queue per message. Replies to this side's
own asks are matched by token as frames arrive. When a handler awaits an ask (which
needs the reader), a relief reader takes over reading: replies resolve at once, other
messages wait in a backlog that the handling task works through before it stops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType
from aiohttp.client_ws import ClientWebSocketResponse
from aiohttp.web_ws import WebSocketResponse

from .bodies import encode_body
from .errors import AskTimeout, ConnectionClosed, EventError, ProtocolError
from .handlers import HandlerTable, Reply
from .nsconn import NSConn, Registry, Room, as_body, system_event
from .protocol import (
    ACK_OK,
    ERR_BAD_NAMESPACE,
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_NATIVE_MESSAGE,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    Message,
    decode,
    encode,
    encode_answer,
    encode_empty_reply,
    new_client_token,
    new_token,
)
from .writer import Writer

if TYPE_CHECKING:
    from aiohttp import web

    from .server import Server

__all__ = ["Conn", "NSConn", "Room"]

log = logging.getLogger("wsmvc")

GENERIC_ERROR = "internal server error"
LEAVE_ALL_ERROR = "leaveAll is not supported by the protocol: leave each room with room.leave()"

_EXEMPT_NS = frozenset({ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT})
_EXEMPT_ROOM = frozenset({ON_ROOM_JOIN, ON_ROOM_LEFT})
# Events the dispatcher treats specially (everything else goes to its handler).
_SYSTEM_REQUESTS = frozenset(
    {ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT, ON_ROOM_JOIN, ON_ROOM_LEAVE, ON_ROOM_LEFT}
)
_CLOSE_TYPES = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})


class Conn:
    """One websocket connection speaking neffos, on the server or the client side."""

    __slots__ = (
        "__weakref__",
        "_acked",
        "_allow_native",
        "_backlog",
        "_blocked",
        "_close_timeout",
        "_closed",
        "_debug_errors",
        "_finished",
        "_finished_event",
        "_handlers",
        "_handling",
        "_namespaces",
        "_native_only",
        "_on_reply",
        "_reader",
        "_registry",
        "_server",
        "_waiting",
        "_writer",
        "_ws",
        "ask_timeout",
        "close_code",
        "id",
        "is_client",
        "reconnect_tries",
        "request",
        "store",
    )

    def __init__(
        self,
        ws: WebSocketResponse | ClientWebSocketResponse,
        make_writer: Callable[[Callable[[], None]], Writer],
        handlers: HandlerTable,
        *,
        id: str = "",
        server: Server | None = None,
        request: web.Request | None = None,
        registry: Registry | None = None,
        is_client: bool = False,
        ask_timeout: float | None = 30.0,
        debug_errors: bool = False,
        close_timeout: float = 5.0,
    ) -> None:
        self.id = id
        self.request = request
        self.is_client = is_client
        self.reconnect_tries = 0
        self.store: dict[str, Any] = {}
        self.ask_timeout = ask_timeout
        self._server = server
        self._ws = ws
        self._writer = make_writer(self._overflow)
        self._handlers = handlers
        self._registry = registry
        self._debug_errors = debug_errors
        self._namespaces: dict[str, NSConn] = {}
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._on_reply: dict[str, Callable[[Message], None]] = {}
        self._native_only = handlers.native_only
        self._allow_native = handlers.accepts_native
        self._acked = self._native_only
        self._backlog: collections.deque[Message] = collections.deque()
        self._handling = False
        self._blocked = False
        self._reader: asyncio.Task[Any] | None = None
        self._closed = False
        self._finished = False
        self._finished_event: asyncio.Event | None = None
        self._close_timeout = close_timeout
        self.close_code: int | None = None
        if self._native_only:
            self._namespaces[""] = NSConn(self, "")

    # -- public surface -------------------------------------------------------------

    @property
    def server(self) -> Server:
        """The server this connection belongs to (server side only)."""
        if self._server is None:
            raise AttributeError("a client connection has no server")
        return self._server

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def was_reconnected(self) -> bool:
        """Whether the client says this connection replaces a lost one (neffos.js ``reconnect``)."""
        return self.reconnect_tries > 0

    @property
    def namespaces(self) -> dict[str, NSConn]:
        """The connected namespaces by name (read-only by convention)."""
        return self._namespaces

    def namespace(self, name: str) -> NSConn | None:
        """The connected namespace ``name``, or ``None``."""
        return self._namespaces.get(name)

    def write(self, msg: Message) -> bool:
        """Send ``msg`` if the write rules allow it (spec 4.1); ``False`` when they do not."""
        if self._closed:
            return False
        if msg.event not in _EXEMPT_NS:
            ns = self._namespaces.get(msg.namespace)
            if ns is None:
                return False
            if msg.room and msg.event not in _EXEMPT_ROOM and msg.room not in ns.rooms:
                return False
        if not self._acked:
            self._send_ack()
        return self._writer.write(encode(msg), msg.binary)

    def send_native(self, data: bytes | str) -> bool:
        """Send a raw frame without envelope (native messages, spec 9): text for ``str``."""
        if self._closed:
            return False
        if isinstance(data, str):
            return self._writer.write(data.encode(), False)
        return self._writer.write(data, True)

    async def connect(self, namespace: str, *, timeout: float | None = None) -> NSConn:
        """Connect ``namespace`` from this side (spec 5.1 on a client, 5.2 on a server)."""
        ns = self._namespaces.get(namespace)
        if ns is not None:
            return ns
        if not self._handlers.has_namespace(namespace):
            raise EventError(ERR_BAD_NAMESPACE)
        ns = NSConn(self, namespace)
        msg = Message(namespace=namespace, event=ON_NAMESPACE_CONNECT, local=True)
        await self._fire_hook(ns, msg, raise_error=True)

        def connected(reply: Message) -> None:
            # Now, not when connect() resumes: the peer may already be sending to it.
            if not reply.err and namespace not in self._namespaces:
                self._add_namespace(ns)

        await self.ask(msg, timeout=timeout, on_reply=connected)
        current = self._namespaces.get(namespace)
        if current is not ns:  # the peer connected it meanwhile, or it is gone again
            if current is None:
                raise ConnectionClosed("namespace disconnected before connect() returned")
            return current
        await self._fire_hook(ns, system_event(msg, ON_NAMESPACE_CONNECTED))
        return ns

    async def disconnect_all(self, *, timeout: float | None = None) -> None:
        """Disconnect every connected namespace, one after another."""
        for ns in list(self._namespaces.values()):
            await ns.disconnect(timeout=timeout)

    async def ask(
        self,
        msg: Message,
        *,
        timeout: float | None = None,
        on_reply: Callable[[Message], None] | None = None,
    ) -> Message:
        """Send ``msg`` as a request and wait for the answer with the same token (spec 8).

        ``timeout`` defaults to the connection's ``ask_timeout``. An error answer raises
        :class:`EventError`; a closed connection :class:`ConnectionClosed`; no answer in
        time :class:`AskTimeout`. ``on_reply(answer)`` runs the moment the answer is read,
        before any later frame is handled.
        """
        if self._closed:
            raise ConnectionClosed("connection closed")
        token = new_client_token() if self.is_client else new_token()
        msg.token = token
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        if on_reply is not None:
            self._on_reply[token] = on_reply
        try:
            if not self.write(msg):
                raise (
                    EventError(ERR_BAD_NAMESPACE)
                    if not self._closed
                    else ConnectionClosed("connection closed")
                )
            if self._blocked:
                self._start_relief_reader()
            wait = self.ask_timeout if timeout is None else timeout
            try:
                reply = await asyncio.wait_for(fut, wait) if wait else await fut
            except asyncio.TimeoutError:
                raise AskTimeout(f"no answer to {msg.event!r} within {wait}s") from None
        finally:
            self._waiting.pop(token, None)
            if on_reply is not None:
                self._on_reply.pop(token, None)
        if reply.err:
            raise EventError(reply.err)
        return reply

    async def close(self, code: int = WSCloseCode.OK, reason: str = "") -> None:
        """Close the connection, firing the local disconnect events (spec 11.2) once."""
        await self._shutdown(code, reason)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed and its disconnect events have run."""
        if self._finished:
            return
        if self._finished_event is None:
            self._finished_event = asyncio.Event()
        await self._finished_event.wait()

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        return f"<Conn {self.id!r} {side}{' closed' if self._closed else ''}>"

    # -- reading ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        me = asyncio.current_task()
        self._reader = me
        ws = self._ws
        allow_native = self._allow_native
        native_only = self._native_only
        waiting = self._waiting
        namespaces = self._namespaces
        lookup = self._handlers.lookup
        code: int | None = None
        reason = ""
        try:
            while self._reader is me:
                frame = await ws.receive()
                kind = frame.type
                if kind is WSMsgType.TEXT:
                    data: str | bytes = frame.data
                    binary = False
                elif kind is WSMsgType.BINARY:
                    data = frame.data
                    binary = True
                elif kind in _CLOSE_TYPES:
                    code = ws.close_code
                    break
                else:
                    continue
                if not data:
                    continue
                if native_only:
                    msg = Message(
                        event=ON_NATIVE_MESSAGE,
                        body=as_body(data),
                        native=True,
                        binary=binary,
                    )
                else:
                    if not self._acked:
                        if await self._handshake_frame(data, binary):
                            continue
                        break
                    try:
                        msg = decode(data, binary=binary, allow_native=allow_native)
                    except ProtocolError as exc:
                        log.debug("%r: ignoring frame: %s", self, exc)
                        continue
                    token = msg.token
                    if token and waiting:
                        fut = waiting.pop(token, None)
                        if fut is not None:
                            if self._on_reply and token in self._on_reply:
                                self._on_reply.pop(token)(msg)
                            if not fut.done():
                                fut.set_result(msg)
                            continue
                if self._handling:
                    self._backlog.append(msg)
                    continue
                # Fast path: an ordinary event of a connected namespace whose handler
                # finishes without awaiting is handled right here, without coroutines.
                ns = namespaces.get(msg.namespace)
                if ns is None or msg.event in _SYSTEM_REQUESTS:
                    await self._handle(msg)
                    continue
                handler = lookup(msg.namespace, msg.event)
                if handler is None:
                    self._unhandled(msg)
                    continue
                try:
                    result = handler(ns, msg)
                except Exception as exc:
                    self._answer_failure(msg, exc)
                    continue
                if hasattr(result, "__await__"):
                    await self._handle(msg, result)
                else:
                    self._answer_result(msg, result)
        except asyncio.TimeoutError:
            code, reason = WSCloseCode.OK, "read timeout"
        except (ConnectionError, asyncio.CancelledError) as exc:
            log.debug("%r: reader stopped: %r", self, exc)
        except Exception:
            log.exception("%r: reader failed", self)
            code, reason = WSCloseCode.INTERNAL_ERROR, "internal error"
        if self._reader is me:
            self._reader = None
            await self._shutdown(code if code is not None else WSCloseCode.ABNORMAL_CLOSURE, reason)

    async def _handle(self, msg: Message, pending: Awaitable[object] | None = None) -> None:
        """Handle ``msg`` (or finish its handler's ``pending`` result), then the backlog."""
        await self._serially(self._dispatch(msg) if pending is None else self._finish(msg, pending))

    async def _finish(self, msg: Message, pending: Awaitable[object]) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._answer_failure(msg, exc)
        else:
            self._answer_result(msg, result)

    async def _serially(self, first: Awaitable[None]) -> None:
        """Run ``first``, then every message that arrived meanwhile, in order, in this task.

        While it runs the reader is busy: new messages wait in the backlog, and an ask made
        meanwhile starts a relief reader.
        """
        me = self._reader
        self._handling = True
        self._blocked = True
        try:
            await first
            backlog = self._backlog
            while backlog and not self._closed:
                await self._dispatch(backlog.popleft())
        finally:
            self._handling = False
            if self._reader is me:
                self._blocked = False

    def _start_relief_reader(self) -> None:
        # The reader is stuck inside a handler that now waits on the network: hand
        # reading over to a new task so the awaited reply (and everything after it) is read.
        self._blocked = False
        task = asyncio.get_running_loop().create_task(self._read_loop())
        self._reader = task

    async def _handshake_frame(self, data: str | bytes, binary: bool) -> bool:
        """Handle a frame that arrived before the ack; ``False`` ends the connection."""
        if binary or not isinstance(data, str) or data[0] != "M":
            # Keep it until the ack (spec 3: frames before M are handled after A<id>).
            try:
                self._backlog.append(decode(data, binary=binary, allow_native=self._allow_native))
            except ProtocolError:
                pass
            return True
        server = self._server
        assert server is not None
        refused = False

        async def accept() -> None:
            nonlocal refused
            reason = await server._run_on_connect(self)
            if reason is not None and not self._acked:
                refused = True
                await self._refuse(reason)
            elif not self._acked:
                self._send_ack()

        await self._serially(accept())
        return not refused

    def _send_ack(self) -> None:
        self._acked = True
        self._writer.write((ACK_OK + self.id).encode(), False)
        if self._server is not None:
            self._server._connection_acked(self)

    async def _refuse(self, reason: str) -> None:
        self._writer.write(("H" + reason).encode(), False)
        self._closed = True
        self._writer.close()
        await self._close_ws(WSCloseCode.POLICY_VIOLATION, "")
        self._mark_closed()

    # -- dispatch (spec 4) ------------------------------------------------------------

    async def _dispatch(self, msg: Message) -> None:
        try:
            event = msg.event
            if event == ON_NAMESPACE_CONNECT:
                await self._reply_connect(msg)
                return
            if event == ON_NAMESPACE_DISCONNECT:
                await self._reply_disconnect(msg)
                return
            ns = self._namespaces.get(msg.namespace)
            if ns is None:
                # Go drops it, leaving a client's ask waiting forever: answer requests.
                if msg.token[:1] == "$" and not self.is_client:
                    self._write_raw(encode_answer(msg, err=ERR_BAD_NAMESPACE), msg.binary)
                return
            if event == ON_ROOM_JOIN:
                await self._reply_join(ns, msg)
            elif event == ON_ROOM_LEAVE:
                await self._reply_leave(ns, msg)
            elif event == ON_ROOM_LEFT and msg.token[:1] == "$" and not self.is_client:
                # neffos.js leaveAll() asks with _OnRoomLeft (spec 16.12); answering with an
                # error ends its promises and keeps both sides' rooms in agreement.
                log.warning("%r: %s", self, LEAVE_ALL_ERROR)
                self._answer(msg, err=LEAVE_ALL_ERROR)
            else:
                await self._fire_event(ns, msg)
        except Exception:
            log.exception("%r: failed to handle %r", self, msg)

    async def _fire_event(self, ns: NSConn, msg: Message) -> None:
        handler = self._handlers.lookup(msg.namespace, msg.event)
        if handler is None:
            self._unhandled(msg)
            return
        try:
            result = handler(ns, msg)
            if hasattr(result, "__await__"):
                result = await result
        except Exception as exc:
            self._answer_failure(msg, exc)
        else:
            self._answer_result(msg, result)

    def _unhandled(self, msg: Message) -> None:
        if msg.token[:1] == "$" and not self.is_client:
            self._answer(msg, err=f"unknown event {msg.event!r}")

    def _answer_result(self, msg: Message, result: object) -> None:
        """Answer ``msg`` with what its handler returned (spec 7.2)."""
        if result is None:
            return
        if isinstance(result, bytes):
            body = result
        elif isinstance(result, str):
            body = result.encode()
        elif isinstance(result, Reply):
            body = result.data
        else:
            try:
                body = encode_body(result)
            except Exception as exc:
                self._answer_failure(
                    msg,
                    TypeError(
                        f"handler for {msg.event!r} returned a {type(result).__name__}"
                        f" that cannot be sent: {exc}"
                    ),
                )
                return
        if msg.err:
            return  # never answer an error: two peers would bounce it forever (spec 7.3)
        if msg.native:
            self._writer.write(body, msg.binary)
        else:
            self._answer(msg, body=body)

    def _answer_failure(self, msg: Message, exc: Exception) -> None:
        if isinstance(exc, EventError):
            err = exc.text
        elif isinstance(exc, ConnectionClosed) and self._closed:
            log.debug("%r: handler for %r stopped: connection closed", self, msg.event)
            return
        else:
            log.error(
                "%r: handler for %r/%r failed",
                self,
                msg.namespace,
                msg.event,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            err = self._error_text(exc)
        if not msg.err and not msg.native:
            self._answer(msg, err=err)

    def _answer(self, msg: Message, body: bytes = b"", err: str = "") -> None:
        if self._can_write(msg.namespace, msg.room, msg.event):
            self._writer.write(encode_answer(msg, body, err), msg.binary)

    def _can_write(self, namespace: str, room: str, event: str) -> bool:
        if self._closed:
            return False
        if event in _EXEMPT_NS:
            return True
        ns = self._namespaces.get(namespace)
        if ns is None:
            return False
        return not room or event in _EXEMPT_ROOM or room in ns.rooms

    def _write_raw(self, data: bytes, binary: bool = False) -> None:
        if not self._closed:
            self._writer.write(data, binary)

    def _error_text(self, exc: BaseException) -> str:
        if self._debug_errors:
            return f"{type(exc).__name__}: {exc}"
        return GENERIC_ERROR

    async def _fire_hook(
        self, ns: NSConn, msg: Message, *, raise_error: bool = False
    ) -> str | None:
        """Run a system event's handler; return the error text that refuses it, if any."""
        handler = self._handlers.lookup(ns.namespace, msg.event)
        if handler is None:
            return None
        try:
            result = handler(ns, msg)
            if hasattr(result, "__await__"):
                await result
            return None
        except EventError as exc:
            text = exc.text
        except Exception as exc:
            log.exception("%r: %s handler of %r failed: %s", self, msg.event, ns.namespace, exc)
            text = self._error_text(exc)
        if raise_error:
            raise EventError(text)
        return text

    async def _reply_connect(self, msg: Message) -> None:
        if not msg.token or msg.noop:
            return
        if msg.namespace in self._namespaces:
            self._write_raw(encode_empty_reply(msg.token))
            return
        if not self._handlers.has_namespace(msg.namespace):
            self._write_raw(encode_answer(msg, err=ERR_BAD_NAMESPACE), msg.binary)
            return
        ns = NSConn(self, msg.namespace)
        refusal = await self._fire_hook(ns, msg)
        if refusal is not None:
            self._write_raw(encode_answer(msg, err=refusal), msg.binary)
            return
        if self._closed:
            return
        self._add_namespace(ns)
        self._write_raw(encode_empty_reply(msg.token))
        await self._fire_hook(ns, system_event(msg, ON_NAMESPACE_CONNECTED))

    async def _reply_disconnect(self, msg: Message) -> None:
        if not msg.token or msg.noop:
            return
        ns = self._namespaces.get(msg.namespace)
        if ns is None:
            self._write_raw(encode_empty_reply(msg.token))
            return
        if self.is_client:
            # A server-initiated disconnect cannot be refused (spec 5.4).
            await self._remove_namespace(ns, local=False, fire_disconnect=False)
            self._write_raw(encode_empty_reply(msg.token))
            await self._fire_hook(ns, msg)
            return
        refusal = await self._fire_hook(ns, msg)
        if refusal is not None:
            self._write_raw(encode_answer(msg, err=refusal), msg.binary)
            return
        await self._remove_namespace(ns, local=False, fire_disconnect=False)
        self._write_raw(encode_empty_reply(msg.token))

    async def _reply_join(self, ns: NSConn, msg: Message) -> None:
        if not msg.token or msg.noop:
            return
        if msg.room not in ns.rooms:
            refusal = await self._fire_hook(ns, msg)
            if refusal is not None:
                self._answer(msg, err=refusal)
                return
            ns._add_room(msg.room)
            await self._fire_hook(ns, system_event(msg, ON_ROOM_JOINED))
        self._write_raw(encode_empty_reply(msg.token))

    async def _reply_leave(self, ns: NSConn, msg: Message) -> None:
        if not msg.token or msg.noop:
            return
        if msg.room in ns.rooms:
            refusal = await self._fire_hook(ns, msg)
            if refusal is not None:
                self._answer(msg, err=refusal)
                return
            ns._remove_room(msg.room)
            await self._fire_hook(ns, system_event(msg, ON_ROOM_LEFT))
        self._write_raw(encode_empty_reply(msg.token))

    # -- membership ---------------------------------------------------------------------

    def _add_namespace(self, ns: NSConn) -> None:
        self._namespaces[ns.namespace] = ns
        if self._registry is not None:
            self._registry.namespace_added(ns)

    async def _remove_namespace(
        self, ns: NSConn, *, local: bool, forced: bool = False, fire_disconnect: bool = True
    ) -> None:
        """Force-leave the rooms of ``ns``, remove it, then fire its disconnect event."""
        for name in list(ns.rooms):
            leave = Message(
                namespace=ns.namespace, room=name, event=ON_ROOM_LEAVE, forced=True, local=local
            )
            await self._fire_hook(ns, leave)
            ns._remove_room(name)
            await self._fire_hook(ns, system_event(leave, ON_ROOM_LEFT, forced=True))
        if self._namespaces.get(ns.namespace) is ns:
            del self._namespaces[ns.namespace]
            if self._registry is not None:
                self._registry.namespace_removed(ns)
        if fire_disconnect:
            await self._fire_hook(
                ns,
                Message(
                    namespace=ns.namespace,
                    event=ON_NAMESPACE_DISCONNECT,
                    forced=forced,
                    local=local,
                ),
            )

    # -- closing (spec 11) ----------------------------------------------------------------

    def _overflow(self) -> None:
        log.warning("%r: send buffer limit exceeded, closing (1008)", self)
        asyncio.get_running_loop().create_task(
            self._shutdown(WSCloseCode.POLICY_VIOLATION, "send buffer limit exceeded")
        )

    async def _shutdown(self, code: int, reason: str) -> None:
        """The close sequence of spec 11.2, run once: no more writes, pending asks fail,
        the websocket closes, then rooms, namespaces and ``on_disconnect`` in that order."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed("connection closed"))
        self._waiting.clear()
        await self._close_ws(code, reason)
        for ns in list(self._namespaces.values()):
            await self._remove_namespace(ns, local=True, forced=True)
        self._namespaces.clear()
        if self._server is not None:
            await self._server._connection_closed(self)
        self._mark_closed()

    async def _close_ws(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws.closed:
            self.close_code = ws.close_code if ws.close_code is not None else code
            return
        self.close_code = code
        try:
            # Bounded: a peer that stopped reading would hold the close frame forever.
            await asyncio.wait_for(
                ws.close(code=code, message=reason.encode()), self._close_timeout + 1
            )
        except (asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
            log.debug("%r: close did not complete: %r", self, exc)
        transport = self.request.transport if self.request is not None else None
        if transport is not None and (not ws.closed or transport.get_write_buffer_size()):
            transport.abort()

    def _mark_closed(self) -> None:
        self._finished = True
        if self._finished_event is not None:
            self._finished_event.set()
