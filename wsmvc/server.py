"""The neffos server on aiohttp: upgrade, handshake, registry, broadcast, shutdown."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Literal, TypeAlias, TypeVar

from aiohttp import WSCloseCode, web
from injector import Injector

from .clientjs import serve_client
from .closing import shut_down
from .codecs import JSON, Codec, checked_codec
from .conn import Conn, serving
from .controller import ControllerError, ControllerHandle, compile_handlers, spec_of
from .errorhandling import ExceptionHandler
from .errors import GENERIC_ERROR
from .exchange import Exchange
from .exchange.broker import BrokerExchange
from .framing import DEFAULT_LEVEL, DEFAULT_THRESHOLD
from .handlers import Handler, HandlerTable, Namespaces
from .handover import Described, Handover, MovingIn
from .injection import Injection, ModuleLike
from .keepalive import Heartbeat
from .limits import Limits
from .nsconn import NSConn
from .opening import ConnHook, call_on_connect, call_on_disconnect
from .presence import Presence
from .recovery import Attachment, MakeWriter, Recorder, Recoverable, Recoveries, Recovery, requested
from .registry import Registry
from .sending import Sending
from .taps import Tap
from .upgrade import (
    Upgrade,
    declare_no_context_takeover_on,
    default_id_generator,
    reconnect_tries,
    size_limits,
    with_query_headers,
)
from .writer import writer_factory

__all__ = ["Server", "with_query_headers"]

log = logging.getLogger("wsmvc")

IdGenerator: TypeAlias = Callable[[web.Request], "str | Awaitable[str]"]
EH = TypeVar("EH", bound=ExceptionHandler)


class Server(Sending):
    """A neffos server: mount it on an aiohttp app with :meth:`mount`.

    Every option is keyword-only:

    * ``namespaces`` - a ``{namespace: {event: handler}}`` mapping or a
      :class:`~wsmvc.handlers.HandlerTable`; more handlers can be added with :meth:`on`.
    * ``controllers`` - ``@controller`` classes to serve (more with :meth:`register`).
    * ``modules`` / ``injector`` - the ``injector`` modules controllers' dependencies come
      from, or a ready root :class:`injector.Injector` (the modules are installed into it).
    * ``id_generator(request)`` - sync or async; returns the connection id. Default: a UUID4.
    * ``on_connect(conn)`` / ``on_disconnect(conn)`` - hooks, sync or async. Raising
      :class:`~wsmvc.Reject` in ``on_connect`` refuses the client with ``H<reason>``.
      ``fire_disconnect_always``: ``on_disconnect`` also for those it refused (not by default).
    * ``allowed_origins`` - ``None`` (default): browsers from the same origin (scheme, host,
      port) only; ``"*"``: any; or origins like ``"https://a.example"`` (else ValueError);
      others get 403; no ``Origin`` (not a browser): allowed. ``trust_forwarded``: the own
      origin from ``X-Forwarded-Proto``/``-Host`` (a proxy's; ``docs/deploying.md#origins``).
    * ``protocols`` - subprotocols served (``conn.protocol``: the agreed one); offering only
      others: 400. ``query_headers``: the ``X-Websocket-Header-<Name>`` names that become
      headers (default ``None``: any a page may set, :class:`~wsmvc.upgrade.QueryHeaders`).
    * ``max_rooms`` / ``max_namespaces`` / ``max_name_size`` / ``max_connect_payload`` -
      rooms a client may join per namespace (default 1000), namespaces per connection (100),
      bytes of a room or namespace name (256) and of a connect's body (8 KiB): past one,
      an error answer says which (``None``: unbounded; ``docs/deploying.md``).
    * ``max_message_size`` - larger incoming messages close the connection with 1009
      (default 1 MiB).
    * ``heartbeat`` - seconds: a connection that received nothing for this long is pinged;
      one that does not answer within half of it is closed (1006 here, 1011 on the wire,
      logged at INFO). Default 20: a vanished client is found within 30 s, and proxies'
      idle timeouts (60 s) never fire. ``None``: no pings (0 or less raises ValueError).
      Cost and details: ``docs/deploying.md#timeouts-and-the-heartbeat``, :mod:`wsmvc.keepalive`.
    * ``read_timeout`` - close a connection that sends nothing for this many seconds (1001,
      ``CloseReason.READ_TIMEOUT``; default ``None``: never). Why any connection closed:
      ``conn.close_reason`` (``docs/lifecycle.md#why-it-closed``).
    * ``handshake_timeout`` - seconds a client has, once upgraded, to send neffos' ``M``;
      past it the connection is closed with 1008 (default 10; ``None``: no limit).
    * ``send_buffer_limit`` - bytes the server may buffer for one peer; a peer that stops
      reading is closed with 1008 past it, so it never delays others (default 4 MiB; why:
      ``docs/deploying.md#memory-bounds``).
    * ``max_queue`` / ``max_queue_bytes`` - messages (default 64) and bytes of them (default
      1 MiB) a connection keeps while they wait their turn: before ``M`` past it the
      connection is closed with 1008; during an ask the server stops reading it (TCP
      backpressure). So a client can make the server hold about ``max_queue_bytes`` plus
      three times ``max_message_size`` (``docs/deploying.md#memory-bounds``).
    * ``ask_timeout`` - default timeout of ``ask`` calls, seconds (default 30; ``None``: none).
    * ``compress`` - accept permessage-deflate when the client offers it (default ``True``:
      every browser does; RFC 7692). Each message is compressed on its own
      (``server_no_context_takeover``), a broadcast once for all its receivers, and no
      connection keeps a compressor (``docs/deploying.md#compression``).
    * ``compress_threshold`` - bytes: smaller messages go uncompressed (default 512;
      deflate makes small messages larger and costs CPU for nothing).
    * ``compress_level`` - zlib level 0-9 for what is compressed (default 1: 3.7x less CPU
      than zlib's default 6 for about 30 % more bytes, measured on 64 KiB of JSON).
    * ``debug_errors`` - send handler exception texts to clients (default ``False``: a
      generic text, the traceback only in the log).
    * ``exception_handlers`` - ``{ExceptionType: fn}``: ``fn(exc, nsconn, msg)``, sync or
      async, returns the text a client gets when a handler or hook raises that type (the
      most specific wins; a controller's ``@catch`` methods first; ``None``: the default).
      Default: none; more with :meth:`exception_handler`; bad entries: TypeError. See
      :mod:`wsmvc.errorhandling`, ``docs/controllers.md#exception-handlers``.
    * ``taps`` - ``tap(tapped)`` is called for every event a connection gets (once handled)
      or sends, for logs and metrics (:mod:`wsmvc.taps`); no tap (the default): no cost.
      Add them before clients connect; an ``async def`` is a TypeError.
    * ``close_timeout`` - seconds a close may take (default 5): the frames still queued for
      the peer, then its close frame, past which the TCP connection is dropped; and the
      handler running when it began, cancelled past it (``docs/lifecycle.md#closing``).
    * ``exchange`` - shares broadcasts with other servers: a
      :class:`~wsmvc.exchange.redis.RedisExchange`, a :class:`~wsmvc.exchange.nats.NatsExchange`
      or a :class:`~wsmvc.exchange.LocalExchange`; ``None`` (default): this process only.
    * ``codec`` - the wire format of typed bodies and typed return values (default JSON;
      msgpack, orjson...: :mod:`wsmvc.codecs`, ``docs/controllers.md#typed-bodies``).
    * ``recovery`` - a :class:`~wsmvc.Recovery`: a wsmvc client whose connection is lost
      gets it back (id, rooms, missed messages) within its window (``docs/recovery.md``);
      ``None`` (default): a lost connection ends at once.
    """

    _conn_class: type[Conn] = Conn  # a traced server's asks are spans (wsmvc.tracing)

    def __init__(
        self,
        namespaces: Namespaces | HandlerTable | None = None,
        *,
        controllers: Iterable[type] = (),
        modules: Iterable[ModuleLike] = (),
        injector: Injector | None = None,
        exchange: Exchange | None = None,
        id_generator: IdGenerator = default_id_generator,
        on_connect: ConnHook | None = None,
        on_disconnect: ConnHook | None = None,
        allowed_origins: Iterable[str] | Literal["*"] | None = None,
        max_message_size: int = 1 << 20,
        heartbeat: float | None = 20.0,
        read_timeout: float | None = None,
        handshake_timeout: float | None = 10.0,
        send_buffer_limit: int = 4 << 20,
        max_queue: int = 64,
        max_queue_bytes: int = 1 << 20,
        ask_timeout: float | None = 30.0,
        compress: bool = True,
        compress_threshold: int = DEFAULT_THRESHOLD,
        compress_level: int = DEFAULT_LEVEL,
        debug_errors: bool = False,
        exception_handlers: Mapping[type[BaseException], ExceptionHandler] | None = None,
        taps: Iterable[Tap] = (),
        close_timeout: float = 5.0,
        codec: Codec = JSON,
        protocols: Iterable[str] = (),
        fire_disconnect_always: bool = False,
        trust_forwarded: bool = False,
        query_headers: Iterable[str] | None = None,
        max_rooms: int | None = 1000,
        max_name_size: int | None = 256,
        max_connect_payload: int | None = 8 << 10,
        max_namespaces: int | None = 100,
        recovery: Recovery | None = None,
    ) -> None:
        self.handlers = (
            namespaces if isinstance(namespaces, HandlerTable) else HandlerTable(namespaces)
        )
        self.id_generator = id_generator
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.fire_disconnect_always = fire_disconnect_always
        self._upgrade = Upgrade(allowed_origins, trust_forwarded, query_headers, protocols)
        self.limits = Limits(max_rooms, max_name_size, max_connect_payload, max_namespaces)
        """What a client's requests may make the server keep (``max_rooms``...)."""
        self.max_message_size = max_message_size
        self.heartbeat = heartbeat
        self.read_timeout = read_timeout
        self.handshake_timeout = handshake_timeout
        self.send_buffer_limit = send_buffer_limit
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.ask_timeout = ask_timeout
        self.compress = compress
        self.compress_threshold = compress_threshold
        self.compress_level = compress_level
        self.debug_errors = debug_errors
        self.handlers.exception_handlers.update(exception_handlers or {})
        self.handlers.taps.extend(taps)
        self.close_timeout = close_timeout
        self.codec = checked_codec(codec)  # before the controllers compile with it
        self.exchange = exchange
        self.recovery = recovery
        self._recoveries = Recoveries(recovery) if recovery is not None else None
        if exchange is not None:
            exchange.attach(self)
        # Recovery across servers (wsmvc.handover): with a broker, keys name their server.
        self._handover: Handover | None = None
        if self._recoveries is not None and isinstance(exchange, BrokerExchange):
            self._handover = Handover(exchange, self._recoveries)
            self._recoveries.server_id = exchange.id
        self.presence = Presence(exchange if isinstance(exchange, BrokerExchange) else None)
        """Who is where: the cluster with a broker exchange, else this process."""
        self._registry = Registry(exchange, self.presence)
        self._live: set[Conn] = set()
        live = self._live
        self._heartbeat = Heartbeat(heartbeat, lambda: live) if heartbeat is not None else None
        self._upgrading = 0  # requests before their Conn exists
        self._upgrades_done: asyncio.Event | None = None  # made by close() if it must wait
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the app's, once it started
        self._injection = Injection(injector, modules, self)
        self._controllers: dict[type, ControllerHandle] = {}
        self._prepared = False
        for cls in controllers:
            self.register(cls)

    @property
    def injector(self) -> Injector:
        """The root injector controllers are built with."""
        return self._injection.injector

    # -- handlers ------------------------------------------------------------------------

    def exception_handler(self, *kinds: type[Exception]) -> Callable[[EH], EH]:
        """Decorator: ``fn(exc, nsconn, msg)`` decides what a client is told when a handler
        or hook raises one of ``kinds`` (see ``exception_handlers``)."""
        return self.handlers.exception_handlers.register(*kinds)

    def on(self, namespace: str, event: str) -> Callable[[Handler], Handler]:
        """Decorator: register a handler for ``event`` in ``namespace``."""
        owner = self._owner(namespace)
        if owner is not None:
            raise ControllerError(
                f"namespace {namespace!r} is served by the controller {owner.cls.__qualname__};"
                " add the event to the controller instead"
            )
        return self.handlers.on(namespace, event)

    def register(self, cls: type, *, namespace: str | None = None) -> ControllerHandle:
        """Serve a controller class; returns a handle (``set_namespace`` moves it).

        Raises :class:`~wsmvc.controller.ControllerError` (bad event methods, a namespace
        already served) or :class:`~wsmvc.injection.DependencyError` (a dependency
        annotation that cannot work) right away.
        """
        if not isinstance(cls, type):
            raise ControllerError(f"register() takes a controller class, not {cls!r}")
        if cls in self._controllers:
            raise ControllerError(f"{cls.__qualname__} is already registered")
        spec = spec_of(cls)
        handle = ControllerHandle(spec, self._injection.plan(cls), self._move_controller)
        self._install(handle, spec.namespace if namespace is None else namespace)
        self._controllers[cls] = handle
        self._prepared = False
        return handle

    def _owner(self, namespace: str) -> ControllerHandle | None:
        for handle in self._controllers.values():
            if handle.namespace == namespace:
                return handle
        return None

    def _install(self, handle: ControllerHandle, namespace: str) -> None:
        owner = self._owner(namespace)
        if owner is not None and owner is not handle:
            raise ControllerError(
                f"{handle.cls.__qualname__} and {owner.cls.__qualname__} both serve namespace"
                f" {namespace!r}; give one another namespace (set_namespace)"
            )
        if owner is None and self.handlers.events(namespace):
            raise ControllerError(
                f"namespace {namespace!r} already has handlers (server.on); serve it with"
                f" {handle.cls.__qualname__} alone"
            )
        self.handlers.set_events(
            namespace, compile_handlers(handle.spec, self._injection, handle.plan, self.codec)
        )
        handle.namespace = namespace

    def _move_controller(self, handle: ControllerHandle, namespace: str) -> None:
        old = handle.namespace
        self._install(handle, namespace)  # raises, changing nothing, if it cannot move
        self.handlers.remove_namespace(old)

    def prepare(self) -> None:
        """Check every controller's dependencies and resolve root singletons (once).

        Runs at application startup when mounted; raises
        :class:`~wsmvc.injection.DependencyError` naming the class and the field or
        parameter nothing can provide.
        """
        if self._prepared:
            return
        for handle in self._controllers.values():
            self._injection.prepare(handle.plan)
        self._prepared = True
        if log.isEnabledFor(logging.DEBUG):
            for handle in self._controllers.values():
                log.debug("controller %s", handle.spec.describe(handle.namespace))

    # -- aiohttp wiring ----------------------------------------------------------------

    def mount(self, app: web.Application, path: str) -> None:
        """Serve neffos at ``path`` of ``app`` and close every connection on shutdown."""
        app.router.add_route("*", path, self.handle)
        serve_client(app, path)  # <path>/wsmvc.js, the JavaScript client: clientjs.py
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        self._injection.mount(app)  # after those: async singletons, then closing singletons
        app.on_response_prepare.append(declare_no_context_takeover_on)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler: GET upgrades, HEAD answers, other methods get 405."""
        if request.method == "HEAD":
            # neffos.js probes with HEAD before it reconnects; any answer will do.
            return web.Response(status=204)
        if request.method != "GET":
            return web.Response(
                status=405,
                text="Method Not Allowed\n",
                headers={"Allow": "GET", "X-Content-Type-Options": "nosniff"},
            )
        if self._closing:
            return web.Response(status=503, text="server is shutting down\n")
        if not self._prepared:
            self.prepare()
        refused = self._upgrade.refusal(request)  # the origin, the subprotocols
        if refused is not None:
            return refused
        if request.headers.get("Upgrade", "").lower() != "websocket":
            # prepare() checks the rest of the handshake (aiohttp answers 400 itself).
            return web.Response(status=400, text="expected a websocket upgrade\n")
        limit, inflated = size_limits(request.headers, self.max_message_size, self.compress)
        ws = web.WebSocketResponse(
            # The peer's close is answered through the connection's ordered write path,
            # after what was written before it (aiohttp's own answer would overtake it).
            autoclose=False,
            timeout=self.close_timeout,
            receive_timeout=self.read_timeout,
            # Pings and pongs are wsmvc.keepalive's: one timer for every connection, not
            # aiohttp's callback per chunk read.
            heartbeat=None,
            autoping=False,
            compress=self.compress,
            protocols=self._upgrade.protocols,
            max_msg_size=limit,  # aiohttp's limit is not ours: see upgrade.size_limits
        )
        request = self._upgrade.prepare(request)
        key, received = requested(request) if self._recoveries is not None else (None, None)
        # Until its Conn exists, shutdown knows this request by a count: it waits for it to
        # reach 0, and the request closes itself with 1001 once it sees the server closing.
        self._upgrading += 1
        try:
            try:
                conn_id = self.id_generator(request)
                if inspect.isawaitable(conn_id):
                    conn_id = await conn_id
            except web.HTTPException:
                raise
            except Exception:
                log.exception("id_generator failed; refusing the upgrade")
                return web.Response(status=500, text=f"{GENERIC_ERROR}\n")
            await ws.prepare(request)
            if self._closing:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                return ws
            # A client back with its recovery key: its connection's serving task takes over.
            back = await self._come_back(ws, request, key, received) if key else None
            if back is None:
                moving = await self._moving_in(key, received)
                if self._closing:
                    if moving is not None and self._handover is not None:
                        self._handover.abandon(*moving[:2], moving[3].lease, end=False)
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                    return ws
                conn_id = moving[3].id if moving is not None else conn_id
                conn = self._new_conn(ws, request, str(conn_id), key is not None, moving)
                conn.inflated_limit = inflated
                self._live.add(conn)
                if self._heartbeat is not None:
                    self._heartbeat.start()
        finally:
            self._upgrading -= 1
            if not self._upgrading and self._upgrades_done is not None:
                self._upgrades_done.set()
        if back is not None:
            await back.done.wait()
            return ws
        try:
            await conn.serve(self._run_on_connect, self._run_on_disconnect)
        finally:
            self._live.discard(conn)
            await self._injection.end(conn)  # refused or never opened: ended here (once)
        return ws

    def _make_writer(self, ws: web.WebSocketResponse, request: web.Request) -> MakeWriter:
        # ws.compress: the negotiated server_max_window_bits (aiohttp), False without deflate.
        return writer_factory(
            ws,
            request.transport,
            self.send_buffer_limit,
            deflate=int(ws.compress) if ws.compress else 0,
            threshold=self.compress_threshold,
            level=self.compress_level,
        )

    async def _come_back(
        self, ws: web.WebSocketResponse, request: web.Request, key: str, received: int | None
    ) -> Attachment | None:
        """A client coming back with its recovery ``key``: the attachment its connection
        took over, or ``None`` (serve it as a new connection)."""
        if self._recoveries is None or received is None:
            return None
        if self._handover is not None:
            self._handover.reclaim(key)  # another server's move of it stops there
        make_writer = self._make_writer(ws, request)
        return await self._recoveries.come_back(key, received, ws, request, make_writer)

    async def _moving_in(
        self, key: str | None, received: int | None
    ) -> tuple[str, str, int, Described] | None:
        """A client back with another server's recovery key: that server's id, the key,
        the client's count and the connection as that server described it; else ``None``."""
        handover = self._handover
        owner = handover.owner(key) if handover is not None and key else None
        if handover is None or owner is None or key is None or received is None:
            return None
        described = await handover.describe(owner, key)
        return (owner, key, received, described) if described is not None else None

    def _new_conn(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        conn_id: str,
        recover: bool,
        moving: tuple[str, str, int, Described] | None = None,
    ) -> Conn:
        make_writer = self._make_writer(ws, request)
        recorders: list[Recorder] = []
        if recover and self._recoveries is not None:
            make_writer = self._recoveries.recorder(make_writer, recorders)
        conn = self._conn_class(
            ws,
            make_writer,
            self.handlers,
            id=conn_id,
            server=self,
            request=request,
            registry=self._registry,
            ask_timeout=self.ask_timeout,
            debug_errors=self.debug_errors,
            close_timeout=self.close_timeout,
            handshake_timeout=self.handshake_timeout,
            max_queue=self.max_queue,
            max_queue_bytes=self.max_queue_bytes,
            codec=self.codec,
        )
        conn.reconnect_tries = reconnect_tries(request)
        conn.session.limits = self.limits
        if recorders and self._recoveries is not None:
            if moving is not None and self._handover is not None:
                conn.recovery = MovingIn(
                    conn, recorders[0], self._recoveries, self._handover, *moving
                )
            else:
                conn.recovery = Recoverable(conn, recorders[0], self._recoveries)
        return conn

    async def _run_on_connect(self, conn: Conn) -> str | None:
        """Run ``on_connect``; the refusal reason, or ``None`` to accept. An id that the
        exchange cannot carry to the other servers is refused too (the client's dial
        fails with the reason, rather than its messages getting lost)."""
        refusal = await call_on_connect(self.on_connect, conn, debug_errors=self.debug_errors)
        exchange = self.exchange
        if refusal is None and exchange is not None:
            refusal = exchange.id_problem(conn.id)
            if refusal is not None:
                log.warning("refused %r: %s", conn, refusal)
            else:
                # The id's channel before A<id>: the acknowledgement follows this return in
                # the same step and registers the id itself, then the hold is released.
                release = await exchange.hold_id(conn.id)
                asyncio.get_running_loop().call_soon(release)
        return refusal

    async def _run_on_disconnect(self, conn: Conn) -> None:
        await call_on_disconnect(self.on_disconnect, conn)
        await self._injection.end(conn)  # so close() and wait_closed() wait for it too

    async def _on_startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self.prepare()
        if self.exchange is not None:
            await self.exchange.start()
        if self._handover is not None:
            self._handover.start()
        await self.presence.start()

    async def _on_cleanup(self, app: web.Application) -> None:
        self._loop = None  # broadcast_threadsafe() from now on: RuntimeError
        await self.presence.stop()
        if self._handover is not None:
            self._handover.stop()
        if self.exchange is not None:
            await self.exchange.stop()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop accepting and close every connection with 1001, firing disconnect events.

        Connections still in their upgrade (``id_generator``) close with 1001 as soon as
        it returns. Returns once every connection's events ran and its close handshake
        ended (a peer that never answers the close frame: given up after
        ``close_timeout`` + 1 s), waiting at most ``close_timeout`` + 2 seconds, and never
        for the connection whose handler calls it (its events run after that handler).
        """
        self._closing = True
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._upgrading and self._upgrades_done is None:
            self._upgrades_done = asyncio.Event()
        upgrades = self._upgrades_done if self._upgrading else None
        await shut_down(self._live, serving(), self.close_timeout + 2, upgrades)

    # -- inspection --------------------------------------------------------------------

    @property
    def connections(self) -> list[Conn]:
        """Every acknowledged connection."""
        return list(self._registry.connections)

    def get_connections(self, conn_id: str) -> list[Conn]:
        """The connections whose id is ``conn_id`` (ids need not be unique)."""
        return list(self._registry.by_id(conn_id))

    def namespace_members(self, namespace: str) -> list[NSConn]:
        """The connections connected to ``namespace``."""
        return list(self._registry.in_namespace(namespace))

    def room_members(self, namespace: str, room: str) -> list[NSConn]:
        """The connections that joined ``room`` of ``namespace`` on this server."""
        return list(self._registry.in_room(namespace, room))

    def rooms(self, namespace: str) -> list[str]:
        """The rooms of ``namespace`` with at least one member on this server."""
        return self._registry.rooms(namespace)
