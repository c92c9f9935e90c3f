"""wsmvc's JavaScript client, served next to each endpoint (``docs/client-js.md``).

:meth:`Server.mount(app, "/chat") <wsmvc.Server.mount>` also answers ``GET`` and
``HEAD`` on ``/chat/wsmvc.js`` (the client: one ES module, ``wsmvc/static/wsmvc.js``) and
``/chat/wsmvc.d.ts`` (its TypeScript declarations); mounted on ``"/"``, they are
``/wsmvc.js`` and ``/wsmvc.d.ts``. A page needs no build step and no CDN::

    <script type="module">
      import { dial } from "/chat/wsmvc.js";
    </script>

Caching: ``Cache-Control: no-cache`` with a strong ``ETag`` (a hash of the content). The
browser keeps its copy but asks at each page load; while the file is the same the answer
is a bodiless ``304``. ``max-age`` would spare that request, but for up to its lifetime a
page could run the old client against an upgraded server; the client and the server
speak one protocol, so they change together. The file is sent gzipped to clients that
accept it (compressed once, when first asked for; ``Vary: Accept-Encoding``), and with
``Access-Control-Allow-Origin: *``: it is public code, and a page of another origin may
load it as a module (which needs CORS).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, NamedTuple

from aiohttp import hdrs, web

__all__ = ["CLIENT_FILES", "client_paths", "serve_client"]

STATIC: Final = Path(__file__).resolve().parent / "static"

# File name -> its Content-Type.
CLIENT_FILES: Final = {
    "wsmvc.js": "text/javascript; charset=utf-8",
    "wsmvc.d.ts": "application/typescript; charset=utf-8",
}
CACHE_CONTROL: Final = "no-cache"


class Asset(NamedTuple):
    """One served file: its bytes, gzipped too, and their entity tags (quoted)."""

    body: bytes
    gzipped: bytes
    etag: str  # of the identity encoding
    gzip_etag: str  # of the gzip encoding: another representation, another tag


@functools.cache
def asset(name: str) -> Asset:
    """The file ``name`` of ``wsmvc/static``, read and compressed once.

    Raises :class:`KeyError` for a name not in :data:`CLIENT_FILES`, and
    :class:`FileNotFoundError` when the package was installed without its static files.
    """
    if name not in CLIENT_FILES:
        raise KeyError(name)
    body = (STATIC / name).read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:32]
    gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    return Asset(body, gzipped, f'"{digest}"', f'"{digest}-gz"')


def client_paths(mount_path: str) -> dict[str, str]:
    """The routes of the client files for an endpoint at ``mount_path``: route -> file name
    (``"/ws"`` -> ``/ws/wsmvc.js``...; ``"/"`` -> ``/wsmvc.js``...)."""
    base = mount_path.rstrip("/")
    return {f"{base}/{name}": name for name in CLIENT_FILES}


def serve_client(app: web.Application, mount_path: str) -> None:
    """Add the ``GET``/``HEAD`` routes of the client files next to ``mount_path``."""
    for route, name in client_paths(mount_path).items():
        app.router.add_get(route, _handler(name))


def _handler(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return respond(request, name)

    serve.__name__ = serve.__qualname__ = f"serve_{name.replace('.', '_')}"
    return serve


def respond(request: web.Request, name: str) -> web.Response:
    """The answer to ``request`` for the client file ``name``: the file (gzipped if the
    client accepts it), or ``304 Not Modified`` when ``If-None-Match`` names it."""
    file = asset(name)
    gzipped = _accepts_gzip(request)
    etag = file.gzip_etag if gzipped else file.etag
    headers = {
        hdrs.ETAG: etag,
        hdrs.CACHE_CONTROL: CACHE_CONTROL,
        hdrs.VARY: hdrs.ACCEPT_ENCODING,
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: "*",
        hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
    }
    if _not_modified(request, file):
        return web.Response(status=304, headers=headers)
    headers[hdrs.CONTENT_TYPE] = CLIENT_FILES[name]
    if gzipped:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
        return web.Response(body=file.gzipped, headers=headers)
    return web.Response(body=file.body, headers=headers)


def _accepts_gzip(request: web.Request) -> bool:
    """Whether ``Accept-Encoding`` lists gzip with a non-zero weight."""
    for coding in request.headers.get(hdrs.ACCEPT_ENCODING, "").split(","):
        token, _, params = coding.strip().partition(";")
        if token.strip().lower() not in ("gzip", "x-gzip"):
            continue
        weight = params.strip().lower().removeprefix("q=").strip() if params else "1"
        try:
            return float(weight) > 0
        except ValueError:
            return True
    return False


def _not_modified(request: web.Request, file: Asset) -> bool:
    """Whether ``If-None-Match`` names a tag of ``file`` (either encoding, compared weakly
    as RFC 9110 says), or is ``*``."""
    tags = request.if_none_match  # aiohttp stops at the first malformed tag
    if not tags:
        return False
    ours = {file.etag.strip('"'), file.gzip_etag.strip('"')}
    return any(tag.value == "*" or tag.value in ours for tag in tags)
