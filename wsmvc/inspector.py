"""The inspector: a page that shows a server's connections live, and can disconnect one.

Opt-in and protected by a check the application supplies (``docs/inspector.md``)::

    from wsmvc.inspector import Inspector

    server = Server(controllers=[Chat])
    server.mount(app, "/ws")
    Inspector(server, check=is_admin).mount(app, "/inspector")   # before the app starts

``/inspector/`` is then a page (HTML, CSS and JavaScript shipped in the package: no CDN,
no build step, nothing from the internet) that lists the connections (id, address,
namespaces, rooms, messages in and out), the namespaces, the rooms and their members, the
message rates and the last exceptions handlers raised, updated every ``interval`` seconds
over wsmvc itself, with a button that disconnects a connection.

How it is built, and why:

* **Its own sub-application and its own :class:`~wsmvc.Server`.** :meth:`Inspector.mount`
  adds an aiohttp sub-application at the path: the page, its two files, and a websocket
  endpoint (``<path>/ws``, its client ``<path>/ws/wsmvc.js``) served by a server of the
  inspector's own, in the namespace :data:`NAMESPACE`. So the inspector's connections are
  never in the watched server's registry, broadcasts, hooks, taps or metrics, and the
  application's ``on_connect``, ``id_generator`` or origins never see them. (A keyword
  of ``Server.mount`` would have tied the page to every endpoint and its options.)
* **One check for everything under the path.** The sub-application's middleware calls
  ``check(request)`` for every request, the page's and the websocket upgrade's: anything
  but ``True`` answers ``403`` and no data. The websocket is same-origin only (as every
  wsmvc server by default), so another site cannot open it with an operator's cookies.
* **Counting through a tap.** The constructor adds a tap (:mod:`wsmvc.taps`) to the
  watched server: connections opened before are not counted (make the inspector before the
  app starts). It costs what any tap costs (about 2.5 µs a message); while no inspector
  page is open it counts only totals and handler exceptions.
* **Bounded and rate-limited.** One task, running only while a page is open, reads the
  registry once per ``interval`` (default 1 s) and sends each page one snapshot, capped by
  :class:`~wsmvc.inspector_survey.Limits` (the first 100 connections of those matching the
  page's filter, the 100 largest rooms...) with the totals beside. A page's request (a
  new filter, a disconnect) brings the next snapshot sooner, but never less than a tenth
  of ``interval`` after the last.

The wire (namespace :data:`NAMESPACE`): the server emits ``snapshot`` (a JSON object, see
:func:`~wsmvc.inspector_survey.survey` and :func:`~wsmvc.inspector_survey.connection_list`
for its fields); a page asks ``filter`` (body: the text) and ``disconnect`` (body: a
connection id; answered ``{"closed": n}``, or the error ``no connection with id ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

from aiohttp import WSCloseCode, hdrs, web
from aiohttp.typedefs import Handler as WebHandler

from .errors import EventError
from .inspector_survey import Limits, Rates, Watch, connection_list, survey
from .nsconn import NSConn
from .protocol import ON_NAMESPACE_CONNECTED, ON_NAMESPACE_DISCONNECT, Message, shorten
from .server import Server

__all__ = ["KICKED", "NAMESPACE", "Check", "Inspector", "loopback_only"]

log = logging.getLogger("wsmvc")

NAMESPACE: Final = "_wsmvcInspector"
"""The namespace of the inspector's own websocket endpoint."""
KICKED: Final = "disconnected from the inspector"
"""The text of the close frame (code 1008) a connection gets when it is disconnected."""

Check: TypeAlias = Callable[[web.Request], "bool | Awaitable[bool]"]
"""``check(request)``, sync or async: ``True`` lets the request in, ``False`` answers 403.
It may raise an :class:`aiohttp.web.HTTPException` (a redirect to a login page); any other
exception, or a result that is not a bool, is logged and refused (403)."""

_STATIC: Final = Path(__file__).resolve().parent / "static"
_FILES: Final = {
    "inspector.html": "text/html; charset=utf-8",
    "inspector.js": "text/javascript; charset=utf-8",
    "inspector.css": "text/css; charset=utf-8",
}
_HEADERS: Final = {
    hdrs.CACHE_CONTROL: "no-cache",
    hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Nothing but the page's own files and its own websocket; no inline script or style.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
_MAX_FILTER: Final = 200  # characters of a page's filter


def loopback_only(request: web.Request) -> bool:
    """A :data:`Check` for development: requests from this machine (127.0.0.1, ::1) only,
    and none that came through a proxy (a ``Forwarded`` or ``X-Forwarded-For`` header),
    since behind a reverse proxy on the same host every request comes from loopback.
    In production, check the operator (a session, a role) instead."""
    if hdrs.FORWARDED in request.headers or hdrs.X_FORWARDED_FOR in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


@functools.cache
def _file(name: str) -> bytes:
    """The bytes of the static file ``name`` (read once)."""
    return (_STATIC / name).read_bytes()


class Inspector:
    """The inspector page of ``server``; serve it with :meth:`mount`.

    * ``check`` - a :data:`Check`, required: who may see the page and use its websocket.
      (:func:`loopback_only` for development.)
    * ``interval`` - seconds between snapshots (default 1.0; > 0, else ValueError).
    * ``max_connections`` / ``max_rooms`` / ``max_members`` / ``max_namespaces`` /
      ``max_errors`` - what a snapshot lists at most (defaults 100 / 100 / 20 / 100 / 50;
      :class:`~wsmvc.inspector_survey.Limits`; below 1: ValueError).
    * ``allowed_origins`` / ``trust_forwarded`` - for the inspector's websocket, as
      :class:`~wsmvc.Server`'s (default: same origin only).

    Make it before clients connect: it counts messages with a tap, and a connection opened
    before a tap was added is not tapped (its messages are not counted; it is listed).
    """

    def __init__(
        self,
        server: Server,
        *,
        check: Check,
        interval: float = 1.0,
        max_connections: int = 100,
        max_rooms: int = 100,
        max_members: int = 20,
        max_namespaces: int = 100,
        max_errors: int = 50,
        allowed_origins: Iterable[str] | Literal["*"] | None = None,
        trust_forwarded: bool = False,
    ) -> None:
        if not isinstance(server, Server):
            raise TypeError(f"Inspector watches a wsmvc Server, not {server!r}")
        if not callable(check):
            raise TypeError(f"check must be a function of the request, not {check!r}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, not {interval!r}")
        self.server = server
        """The watched server."""
        self.check = check
        """Who may see the page and use its websocket (see :data:`Check`)."""
        self.interval = float(interval)
        """Seconds between snapshots."""
        self.limits = Limits(max_connections, max_rooms, max_members, max_namespaces, max_errors)
        """What a snapshot lists at most."""
        self._watch = Watch(max_errors)
        self._rates = Rates(self._watch)
        server.handlers.taps.add(self._watch.tap)
        if server.connections:
            log.warning(
                "Inspector made while %d connection(s) are open: their messages are not"
                " counted (make it before the app starts)",
                len(server.connections),
            )
        self._own = Server(
            {
                NAMESPACE: {
                    ON_NAMESPACE_CONNECTED: self._opened,
                    ON_NAMESPACE_DISCONNECT: self._closed,
                    "filter": self._filter,
                    "disconnect": self._disconnect,
                }
            },
            allowed_origins=allowed_origins,
            trust_forwarded=trust_forwarded,
            max_rooms=1,  # a page joins none
            max_namespaces=1,
        )
        self._pages: dict[NSConn, str] = {}  # open pages -> their filter
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._path: str | None = None

    @property
    def path(self) -> str | None:
        """Where it is mounted (``"/inspector"``), ``None`` before :meth:`mount`."""
        return self._path

    @property
    def pages(self) -> int:
        """How many inspector pages (websocket connections) are open."""
        return len(self._pages)

    # -- aiohttp wiring ----------------------------------------------------------------

    def mount(self, app: web.Application, path: str = "/inspector") -> None:
        """Serve the inspector under ``path`` of ``app`` (a sub-application): the page at
        ``<path>/`` (``<path>`` redirects there), its websocket at ``<path>/ws``, every
        request checked. Raises ``ValueError`` for a path that is not below ``/``, and
        ``RuntimeError`` when mounted already or when ``app`` has started."""
        prefix = path.rstrip("/")
        if not prefix.startswith("/"):
            raise ValueError(
                f"mount the inspector on a path of its own, like '/inspector', not {path!r}"
            )
        if self._path is not None:
            raise RuntimeError(f"the inspector is mounted already, at {self._path!r}")
        sub = web.Application(middlewares=[self._guard])
        sub.router.add_get("", self._redirect)
        sub.router.add_get("/", self._serve("inspector.html"))
        sub.router.add_get("/inspector.js", self._serve("inspector.js"))
        sub.router.add_get("/inspector.css", self._serve("inspector.css"))
        self._own.mount(sub, "/ws")
        sub.on_cleanup.append(self._on_cleanup)
        app.add_subapp(prefix, sub)
        self._path = prefix

    @web.middleware
    async def _guard(self, request: web.Request, handler: WebHandler) -> web.StreamResponse:
        if not await self._allowed(request):
            return web.Response(
                status=403,
                text="403: Forbidden\n",
                headers={hdrs.CACHE_CONTROL: "no-store", hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff"},
            )
        return await handler(request)

    async def _allowed(self, request: web.Request) -> bool:
        try:
            result = self.check(request)
            if inspect.isawaitable(result):
                result = await result
        except web.HTTPException:
            raise
        except Exception:
            log.exception(
                "inspector: the check failed on %s %s; refused", request.method, request.path
            )
            return False
        if not isinstance(result, bool):
            log.error(
                "inspector: the check returned %r, not a bool, on %s; refused",
                result,
                request.path,
            )
            return False
        return result

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        url = request.rel_url
        raise web.HTTPFound(url.with_path(url.path + "/").with_query(url.query))

    def _serve(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            headers = {**_HEADERS, hdrs.CONTENT_TYPE: _FILES[name]}
            return web.Response(body=_file(name), headers=headers)

        return serve

    async def _on_cleanup(self, app: web.Application) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the inspector's namespace -----------------------------------------------------

    def _opened(self, ns: NSConn, msg: Message) -> None:
        self._pages[ns] = ""
        log.info("inspector: page %s opened by %s", ns.id, _who(ns))
        self._watch.start()
        if self._task is None:
            self._rates = Rates(self._watch)
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            self._wake.set()

    def _closed(self, ns: NSConn, msg: Message) -> None:
        self._pages.pop(ns, None)
        self._wake.set()  # the loop ends once no page is left

    def _filter(self, ns: NSConn, msg: Message) -> str:
        if ns not in self._pages:
            raise EventError("not an open inspector page")
        self._pages[ns] = _text(msg)[:_MAX_FILTER]
        self._wake.set()
        return "ok"

    async def _disconnect(self, ns: NSConn, msg: Message) -> str:
        conn_id = _text(msg)
        targets = self.server.get_connections(conn_id)
        if not targets:
            raise EventError(f"no connection with id {shorten(conn_id)!r} on this server")
        log.info("inspector: %s disconnected connection %r", _who(ns), conn_id)
        await asyncio.gather(
            *(conn.close(WSCloseCode.POLICY_VIOLATION, KICKED) for conn in targets)
        )
        self._wake.set()
        return json.dumps({"closed": len(targets)})

    # -- the snapshots -----------------------------------------------------------------

    async def _run(self) -> None:
        """Send snapshots while a page is open: every ``interval`` seconds, or a tenth of
        it after the last when a page asked for something."""
        gap = self.interval / 10
        try:
            while self._pages:
                self._wake.clear()
                self._push()
                await asyncio.sleep(gap)
                if self._pages and not self._wake.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.interval - gap)
        finally:
            self._task = None
            self._watch.stop()

    def _push(self) -> None:
        """One snapshot to each open page (built once per distinct filter)."""
        try:
            shared = survey(self.server, self.limits, self._watch, self._rates)
            shared["interval"] = self.interval
            shared["pages"] = len(self._pages)
            bodies: dict[str, str] = {}
            for ns, needle in list(self._pages.items()):
                body = bodies.get(needle)
                if body is None:
                    listed = connection_list(self.server, self.limits, self._watch, needle)
                    body = bodies[needle] = _json({**shared, "connections": listed})
                ns.emit("snapshot", body)
        except Exception:
            log.exception("inspector: a snapshot failed")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _text(msg: Message) -> str:
    return msg.body.decode("utf-8", "replace")


def _who(ns: NSConn) -> str:
    request = ns.conn.request
    return (request.remote or "?") if request is not None else "?"
