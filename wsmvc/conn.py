"""One websocket connection speaking neffos: :class:`Conn`, the asyncio side of a session.

The protocol state lives in a :class:`~wsmvc.session.Session`; a ``Conn`` runs it over an
aiohttp websocket, on the server or the client side. One task serves the connection for
its whole life (aiohttp's request handler task, or the one :func:`~wsmvc.dial` starts): it
reads frames between handlers (:mod:`wsmvc.reading`), handles each message in arrival
order, inline, and once the connection closes, by whatever path, fires the disconnect
events: after the handler that was running, never inside it, once (``docs/lifecycle.md``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import WSCloseCode, WSMessage, WSMsgType

from .closing import CloseReason, Closing, Deferred, Detached
from .codecs import JSON, Codec
from .errors import (
    GENERIC_ERROR,
    AskTimeout,
    ConnectionClosed,
    EventError,
    NotConnected,
    NotJoined,
    ProtocolError,
)
from .handlers import HandlerTable
from .nschanges import NamespaceChanges, serve_as, serving
from .nsconn import DEFAULT, NSConn, Registry, Timeout, as_body, ask_timeout_text
from .opening import open_native, open_server_side
from .protocol import (
    ON_NATIVE_MESSAGE,
    Message,
    decode,
    encode,
    exceeds,
    is_text,
    new_client_token,
    new_token,
    shorten,
)
from .reading import Reader
from .session import Session
from .states import ConnState
from .tapped import dispatcher_for
from .writer import AnyWebSocket, Writer

if TYPE_CHECKING:
    from aiohttp import web

    from .recovery_hooks import RecoveryHooks
    from .server import Server

__all__ = ["Conn", "OnOpen", "serving"]

log = logging.getLogger("wsmvc")

OnOpen = Callable[["Conn"], Awaitable["str | None"]]
"""The server's ``on_connect`` runner: the reason that refuses the connection, or ``None``."""

_FAILED = CloseReason.INTERNAL_ERROR
_CLOSE_TYPES = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})


def _fail(waiter: asyncio.Future[Message], reason: str) -> None:
    if not waiter.done():
        waiter.set_exception(ConnectionClosed(reason))


class Conn(NamespaceChanges):
    """One websocket connection speaking neffos, on the server or the client side.

    Public: ``id``, ``request`` (the upgrade request, server side), ``store`` (a dict for the
    application), ``ask_timeout``, ``close_code``, ``reconnect_tries``. ``session`` and
    ``writer`` are the protocol state and the write path (used by the server's broadcast).
    """

    __slots__ = (
        "__weakref__",
        "_allow_native",
        "_closing",
        "_deferred",
        "_id",
        "_native_only",
        "_on_reply",
        "_opened",
        "_registry",
        "_server",
        "_ws",
        "ask_timeout",
        "close_timeout",
        "dispatcher",
        "handshake_timeout",
        "heard",
        "inflated_limit",
        "is_client",
        "reader",
        "received",
        "reconnect_tries",
        "recovery",
        "request",
        "session",
        "store",
        "writer",
    )

    def __init__(
        self,
        ws: AnyWebSocket,
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
        handshake_timeout: float | None = 10.0,
        max_queue: int = 64,
        max_queue_bytes: int = 1 << 20,
        codec: Codec = JSON,
    ) -> None:
        self._id = id
        self.request = request
        self.is_client = is_client
        self.reconnect_tries = 0
        self.store: dict[str, Any] = {}
        self.ask_timeout = ask_timeout
        self.close_timeout = close_timeout
        self.handshake_timeout = handshake_timeout
        self._server = server
        self._ws = ws
        self._registry = registry
        self.session: Session[NSConn, asyncio.Future[Message]] = Session(
            new_namespace=functools.partial(NSConn, self),
            declared=handlers,  # the names, and the names that fit its patterns
            fail_ask=_fail,
            members=registry,
            client=is_client,
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
        )
        transport = request.transport if request is not None else None
        self._closing = Closing(
            self,
            registry=registry,
            # Not isinstance(asyncio.Transport): uvloop's transports are not subclasses.
            transport=transport,
            timeout=close_timeout,
        )
        writer = make_writer(self._closing.overflow)
        self.writer, self.dispatcher = dispatcher_for(  # with taps: tapped ones
            self, writer, handlers, debug_errors=debug_errors, codec=codec
        )
        self._native_only = handlers.native_only
        self._allow_native = handlers.accepts_native
        # Made on first use (most connections never need them):
        self._on_reply: dict[str, Callable[[Message], None]] | None = None
        self.reader = Reader(ws, self.session, self)
        self.heard = True  # a frame came since the heartbeat last looked (wsmvc.keepalive)
        self.received = 0  # data frames read (wsmvc.recovery counts them)
        self.recovery: RecoveryHooks | None = None  # kept when lost (docs/recovery.md)
        self.inflated_limit = 0  # bytes a message may have, if aiohttp cannot check it exactly
        self._opened = False  # on_connect accepted the connection: on_disconnect will run
        # Namespaces this side disconnected whose events wait for the serving task (made on
        # first use).
        self._deferred: list[Deferred] | None = None

    # -- public surface -------------------------------------------------------------------

    @property
    def server(self) -> Server:
        """The server this connection belongs to (server side only)."""
        if self._server is None:
            raise AttributeError("a client connection has no server")
        return self._server

    @property
    def id(self) -> str:
        """The connection id: the server's ``id_generator`` chose it, the client learns it
        from the handshake (``A<id>``); ids need not be unique (spec 1.5)."""
        return self._id

    @id.setter
    def id(self, value: str) -> None:
        # The client was told its id in A<id>, and the registry indexes connections by it.
        if self.session.state is not ConnState.CONNECTING:
            raise AttributeError(
                "a connection's id is fixed once its handshake is done: choose it in the"
                " server's id_generator, or set conn.id in on_connect"
            )
        self._id = value

    @property
    def close_code(self) -> int | None:
        """The close code once closing: this side's, or the peer's (1005: it gave none;
        1006: the connection broke)."""
        return self._closing.code

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the connection is closing or closed (:class:`~wsmvc.CloseReason`), once it is."""
        return self._closing.reason

    @property
    def protocol(self) -> str | None:
        """The subprotocol the upgrade agreed on (``Server(protocols=...)``), or ``None``."""
        return getattr(self._ws, "ws_protocol", None) or getattr(self._ws, "protocol", None)

    @property
    def state(self) -> ConnState:
        """The connection state: :class:`~wsmvc.states.ConnState`."""
        return self.session.state

    @property
    def closed(self) -> bool:
        """Whether the connection is closing or closed: nothing more is sent."""
        state = self.session.state
        return state is ConnState.CLOSING or state is ConnState.CLOSED

    @property
    def was_reconnected(self) -> bool:
        """Whether the client says this connection replaces a lost one (neffos.js ``reconnect``)."""
        return self.reconnect_tries > 0

    @property
    def namespaces(self) -> Mapping[str, NSConn]:
        """The connected namespaces by name (a snapshot)."""
        return {name: ns for name, ns in self.session.namespaces.items() if ns.connected}

    def namespace(self, name: str) -> NSConn | None:
        """The connected namespace ``name``, or ``None``."""
        return self.session.namespace(name)

    def write(self, msg: Message) -> bool:
        """Send ``msg`` if the write rules allow it (spec 4.1); ``False`` when they do not.

        Writing during ``on_connect`` acknowledges the connection first (as Go does).
        """
        session = self.session
        self.acknowledge()
        if not session.can_write(msg.namespace, msg.room, msg.event):
            return False
        return self.writer.write(encode(msg), msg.binary or not is_text(msg.body))

    def send_native(self, data: bytes | str) -> bool:
        """Send a raw frame without envelope (native messages, spec 9): text for ``str``."""
        self.acknowledge()
        if not self.session.open:
            return False
        if isinstance(data, str):
            return self.writer.write(data.encode(), False)
        return self.writer.write(data, True)

    async def ask(
        self,
        msg: Message,
        *,
        timeout: Timeout = DEFAULT,
        on_reply: Callable[[Message], None] | None = None,
    ) -> Message:
        """Send ``msg`` as a request and wait for the answer with the same token (spec 8).

        ``msg`` itself is not changed (a copy gets the token). ``timeout``: seconds;
        ``None`` waits without limit, ``0`` fails at once, left out it is the connection's
        ``ask_timeout``. Raises :class:`~wsmvc.EventError` for an error answer (and,
        sending nothing, :class:`~wsmvc.NotConnected` when ``msg``'s namespace is not
        connected, :class:`~wsmvc.NotJoined` when its room is not joined),
        :class:`~wsmvc.ConnectionClosed` the moment the connection closes or the
        namespace is disconnected, :class:`~wsmvc.AskTimeout` when no answer came in time.
        ``on_reply(answer)`` runs the moment the answer is read, before any later frame.
        """
        self._ensure_open()
        session = self.session
        wait = self.ask_timeout if timeout is DEFAULT else timeout
        if wait is not None and wait <= 0:
            raise AskTimeout(f"no answer to {msg.event!r}: the timeout is {wait}s")
        if not session.can_write(msg.namespace, msg.room, msg.event):
            raise self._not_writable(msg)
        token = new_client_token() if self.is_client else new_token()
        request = attrs.evolve(msg, token=token, marker="")
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        session.ask_started(token, msg.namespace, waiter)
        if on_reply is not None:
            if self._on_reply is None:
                self._on_reply = {}
            self._on_reply[token] = on_reply
        inside = serving() is self
        try:
            self.writer.write(encode(request), request.binary or not is_text(request.body))
            self.reader.ensure_helper()
            try:
                reply = await (asyncio.wait_for(waiter, wait) if wait is not None else waiter)
            except asyncio.TimeoutError:
                raise AskTimeout(ask_timeout_text(session, msg, wait, inside)) from None
        finally:
            session.ask_ended(token)
            if self._on_reply is not None:
                self._on_reply.pop(token, None)
        if reply.err:
            raise EventError(reply.err)
        return reply

    async def close(
        self, code: int = WSCloseCode.OK, reason: str = "", *, cause: CloseReason | None = None
    ) -> None:
        """Close the connection (spec 11.2): the close frame goes after everything written
        before; pending asks fail; the disconnect events run once, in the serving task.
        ``cause`` is the ``close_reason`` (default: ``SERVER_CLOSED``, on a client
        ``CLIENT_CLOSED``).

        Returns once they ran: after the handler running then, which is cancelled if it
        still runs ``close_timeout`` seconds later. Called from a handler of this very
        connection (or a task it started) it returns at once: they run right after that
        handler. Called from a handler of another connection it waits at most
        ``close_timeout`` seconds for them, and not at all when that connection's handler
        waits for the caller's (two handlers closing each other's connections). Never raises.
        """
        self.request_close(code, reason, cause=cause)
        if self.reader.task is not None:  # else never served: nothing to wait for
            await self._closing.wait_closed(serving())

    async def wait_closed(self) -> None:
        """Wait until the connection is closed and its disconnect events have run."""
        await self._closing.wait_closed(None)

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        return f"<Conn {self.id!r} {side} {self.session.state.value}>"

    # -- serving ----------------------------------------------------------------------------

    async def serve(self, on_open: OnOpen | None = None, on_close: OnOpen | None = None) -> None:
        """Serve the connection until it is closed and its disconnect events ran.

        Server side: ``on_open(conn)`` runs when the client's ``M`` arrives (the server's
        ``on_connect``; a returned reason refuses with ``H<reason>``) and ``on_close(conn)``
        once the disconnect events ran, if ``on_open`` accepted. Cancellation closes the
        connection (1001), runs the disconnect events and is re-raised.
        """
        self.reader.task = asyncio.current_task()
        serve_as(self)
        try:
            if self.session.state is ConnState.CONNECTING:
                opening = open_native if self._native_only else open_server_side
                self._opened = await opening(self, on_open)
                if self.recovery is not None and self.session.open:
                    await self.recovery.opened()  # a connection moving in: wsmvc.handover
            while True:  # once per websocket: a recovered connection goes on over the next
                try:
                    # The loop of every message, in this frame rather than a coroutine of its
                    # own: one frame less to resume per frame read (measured: 2-4 % a message).
                    session = self.session
                    reader = self.reader
                    receive = self._ws.receive
                    read = self.read_frame
                    handle = self.dispatcher.handle
                    open_ = ConnState.OPEN
                    while session.state is open_:
                        # Here, not in Closing: every object this loop touches costs a cache
                        # miss per message with hundreds of connections (measured: 4 %).
                        deferred = self._deferred
                        if deferred:
                            _, events, done = deferred.pop(0)
                            await self.dispatcher.fire_all(events)
                            if not done.done():
                                done.set_result(None)
                            continue
                        if session.inbox:
                            msg = session.next_queued()
                            reader.taken()
                        elif reader.helper is not None:
                            await reader.wait_for_helper()
                            continue
                        else:
                            # reader.receive() written out: it runs for every message, and a
                            # coroutine less is measurably cheaper.
                            reader.reading = True
                            try:
                                frame = await receive()
                            except asyncio.CancelledError:
                                if not reader.woken():
                                    raise
                                continue
                            except asyncio.TimeoutError:
                                reader.timed_out("read timeout")
                                continue
                            finally:
                                reader.reading = False
                            msg = read(frame)
                            if session.state is not open_:
                                continue  # closing meanwhile: nothing more is handled
                        if msg is None:
                            continue
                        pending = handle(msg)
                        if pending is not None:
                            if session.asks:
                                reader.ensure_helper()  # this task is busy from here
                            await pending
                except Detached:  # the websocket is gone, the connection kept for recovery
                    if self.recovery is not None and await self.recovery.resumed():
                        continue
                break
        except asyncio.CancelledError:
            if not self._closing.cut():  # else a handler that outlived the close (logged)
                cause = CloseReason.CANCELLED
                self.request_close(WSCloseCode.GOING_AWAY, "", urgent=True, cause=cause)
                raise
        except Exception:
            log.exception("%r: serving failed", self)
            self.request_close(WSCloseCode.INTERNAL_ERROR, GENERIC_ERROR, cause=_FAILED)
        except BaseException:
            self.request_close(WSCloseCode.INTERNAL_ERROR, "", urgent=True, cause=_FAILED)
            raise
        finally:
            await self._closing.finish(on_close if self._opened else None)

    def acknowledge(self) -> None:
        """Server side, during the handshake: send ``A<id>`` and register the connection
        (once; nothing otherwise). The handshake does it after ``on_connect``; writing or
        asking inside ``on_connect`` does it first, as Go does."""
        if self.session.state is not ConnState.CONNECTING or self.is_client:
            return
        if self._native_only:  # no handshake, no A<id> (spec 9.1)
            self.session.acknowledged()
        else:
            recovery = self.recovery
            if recovery is not None:
                recovery.acknowledging()  # the recovery frame, right before A<id>
            self.writer.write(*self.session.accept(self.id))
            if recovery is not None:
                recovery.acknowledged()
        if self._registry is not None:
            self._registry.conn_added(self)

    def attach(
        self, ws: AnyWebSocket, request: web.Request | None, make_writer: Callable[..., Writer]
    ) -> Writer:
        """Recovery: go on over ``ws`` (``request``: its upgrade, server side; ``None`` on
        a client); its write path."""
        self._ws = ws
        if request is not None:
            self.request = request
        task, self.reader = self.reader.task, Reader(ws, self.session, self)
        self.reader.task = task
        self._closing.attach(request.transport if request is not None else None)
        return make_writer(self._closing.overflow)

    def _defer(self, deferred: Deferred) -> None:
        """Hold a disconnected namespace's events for the serving task."""
        if self._deferred is None:
            self._deferred = []
        self._deferred.append(deferred)

    def _not_writable(self, msg: Message) -> EventError:
        """The error of this side's own ask that the write rules refuse (an open connection)."""
        ns = self.session.namespace(msg.namespace)
        side = "the client" if self.is_client else f"connection {self.id!r}"
        if ns is None:
            return NotConnected(
                f"{side} is not connected to namespace {shorten(msg.namespace)!r}: connect it"
                f" first (await conn.connect({shorten(msg.namespace)!r})); nothing was sent"
            )
        return NotJoined(
            f"{side} has not joined room {shorten(msg.room)!r} of namespace"
            f" {shorten(msg.namespace)!r} (or is joining or leaving it); nothing was sent"
        )

    def _ensure_open(self) -> None:
        self.acknowledge()
        if not self.session.open:
            raise ConnectionClosed("connection closed")

    # -- reading ------------------------------------------------------------------------------

    def read_frame(self, frame: WSMessage) -> Message | None:
        """The message in a frame read from the websocket; ``None`` if there is none to
        handle (an answer to an ask, resolved here; a control frame; an invalid frame,
        ignored; the close, which starts closing)."""
        self.heard = True
        kind = frame.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            self.received += 1
            data: str | bytes = frame.data
            binary = kind is WSMsgType.BINARY
        elif kind in _CLOSE_TYPES:
            self._closing.ended(frame, self._ws.close_code)
            return None
        else:
            if kind is WSMsgType.PING:  # the server's autoping is off (wsmvc.keepalive)
                self.writer.control(WSMsgType.PONG, frame.data)
            return None
        if not data:
            return None
        limit = self.inflated_limit  # upgrade.size_limits; len * 4: UTF-8's widest
        if limit and len(data) * 4 > limit and exceeds(data, limit):
            cause = CloseReason.PROTOCOL_ERROR  # as when aiohttp's reader finds it
            self.request_close(WSCloseCode.MESSAGE_TOO_BIG, "message too big", cause=cause)
            return None
        if self._native_only:
            return Message(event=ON_NATIVE_MESSAGE, body=as_body(data), native=True, binary=binary)
        try:
            msg = decode(data, binary=binary, allow_native=self._allow_native)
        except ProtocolError as exc:
            log.debug("%r: ignoring frame: %s", self, exc)
            return None
        token = msg.token
        if token and self.session.asks:
            waiter = self.session.take_reply(token)
            if waiter is not None:
                callback = self._on_reply.pop(token, None) if self._on_reply else None
                if callback is not None:
                    callback(msg)
                if not waiter.done():
                    waiter.set_result(msg)
                return None
        return msg

    # -- closing (spec 11) ----------------------------------------------------------------------

    def request_close(
        self, code: int, reason: str = "", *, urgent: bool = False, cause: CloseReason | None = None
    ) -> None:
        """Start closing (once) without waiting, what :meth:`close` starts: nothing more is
        sent but the close frame, which goes after what was written before (``urgent``: at
        once, for a peer that stopped reading), pending asks fail, and the serving task is
        woken to fire the disconnect events (:mod:`wsmvc.closing`). ``cause``: see close()."""
        self._closing.request(code, reason, urgent, cause)

    async def _transport_closed(self) -> None:
        await self._closing.transport_closed()
