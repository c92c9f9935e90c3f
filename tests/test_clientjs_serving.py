"""``Server.mount`` serves wsmvc.js (the JavaScript client) and its declarations beside
the endpoint (``wsmvc/clientjs.py``), against real servers on 127.0.0.1.

What a browser sees: the module's Content-Type (a module script with another type is
refused), an ETag of the content with ``Cache-Control: no-cache`` (so each page load asks,
and gets a bodiless 304 while the file is the same), gzip when accepted, CORS for pages of
other origins; HEAD answered; and the websocket path itself still upgrades.
"""

from __future__ import annotations

import gzip
import hashlib

import aiohttp
import pytest
from aiohttp import web

from wsmvc import Message, NSConn, Server, dial
from wsmvc.clientjs import STATIC, client_paths

from .wire_support import Serve, http_url

JS_TYPE = "text/javascript; charset=utf-8"
NO_GZIP = {"Accept-Encoding": "identity"}


def echo_server() -> Server:
    def ask(ns: NSConn, msg: Message) -> bytes:
        return b"pong:" + msg.body

    return Server({"default": {"ask": ask}})


def content_etag(name: str, suffix: str = "") -> str:
    digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:32]
    return f'"{digest}{suffix}"'


@pytest.fixture
async def base(serve: Serve) -> str:
    """The HTTP URL of a server mounted at /ws."""
    return http_url(await serve(echo_server(), "/ws"))


async def test_the_client_is_served_beside_the_endpoint(
    base: str, session: aiohttp.ClientSession
) -> None:
    async with session.get(base + "/wsmvc.js", headers=NO_GZIP) as response:
        assert response.status == 200
        body = await response.read()
        headers = response.headers
    assert body == (STATIC / "wsmvc.js").read_bytes()
    assert body.startswith(b"/**\n * wsmvc.js: the JavaScript client of wsmvc")
    assert headers["Content-Type"] == JS_TYPE
    assert headers["ETag"] == content_etag("wsmvc.js")
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Length"] == str(len(body))
    assert "Content-Encoding" not in headers

    async with session.get(base + "/wsmvc.d.ts", headers=NO_GZIP) as response:
        assert response.status == 200
        assert await response.read() == (STATIC / "wsmvc.d.ts").read_bytes()
        assert response.headers["Content-Type"] == "application/typescript; charset=utf-8"
        assert response.headers["ETag"] == content_etag("wsmvc.d.ts")


async def test_if_none_match_gets_304_without_a_body(
    base: str, session: aiohttp.ClientSession
) -> None:
    etag = content_etag("wsmvc.js")
    for sent in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        async with session.get(
            base + "/wsmvc.js", headers={**NO_GZIP, "If-None-Match": sent}
        ) as response:
            assert response.status == 304, sent
            assert await response.read() == b""
            assert response.headers["ETag"] == etag
            assert response.headers["Cache-Control"] == "no-cache"
    for stale in ('"0123"', 'W/"0123"', content_etag("wsmvc.d.ts")):
        async with session.get(
            base + "/wsmvc.js", headers={**NO_GZIP, "If-None-Match": stale}
        ) as response:
            assert response.status == 200, stale
            assert len(await response.read()) > 10_000


async def test_gzip_when_accepted_with_its_own_etag(
    base: str, session: aiohttp.ClientSession
) -> None:
    plain = (STATIC / "wsmvc.js").read_bytes()
    async with session.get(
        base + "/wsmvc.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["ETag"] == content_etag("wsmvc.js", "-gz")
        compressed = await response.read()
    assert gzip.decompress(compressed) == plain
    assert len(compressed) < len(plain) / 3
    # Either tag revalidates: the content is the same.
    async with session.get(
        base + "/wsmvc.js",
        headers={"Accept-Encoding": "gzip", "If-None-Match": content_etag("wsmvc.js")},
    ) as response:
        assert response.status == 304
    for refused in ("gzip;q=0", "br, deflate"):
        async with session.get(
            base + "/wsmvc.js", headers={"Accept-Encoding": refused}, auto_decompress=False
        ) as response:
            assert "Content-Encoding" not in response.headers, refused
            assert await response.read() == plain


async def test_head_answers_the_headers_alone(base: str, session: aiohttp.ClientSession) -> None:
    async with session.head(base + "/wsmvc.js", headers=NO_GZIP) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == JS_TYPE
        assert response.headers["ETag"] == content_etag("wsmvc.js")
        assert response.headers["Content-Length"] == str(len((STATIC / "wsmvc.js").read_bytes()))
        assert await response.read() == b""


async def test_other_methods_and_names_are_not_served(
    base: str, session: aiohttp.ClientSession
) -> None:
    async with session.post(base + "/wsmvc.js") as response:
        assert response.status == 405
    for missing in ("/wsmvc.mjs", "/static/wsmvc.js", "/wsmvc.js/x"):
        async with session.get(base + missing) as response:
            assert response.status == 404, missing


async def test_the_endpoint_still_upgrades_and_answers_head(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    url = await serve(echo_server(), "/ws")
    async with await dial(url, {"default": {}}) as conn:
        ns = await conn.connect("default", timeout=5)
        assert (await ns.ask("ask", "hi", timeout=5)).body == b"pong:hi"
    async with session.head(http_url(url)) as response:
        assert response.status == 204  # neffos.js' reconnect probe, as before


@pytest.mark.parametrize(
    ("mount_path", "script"),
    [("/", "/wsmvc.js"), ("/chat/", "/chat/wsmvc.js"), ("/a/b", "/a/b/wsmvc.js")],
)
async def test_the_script_path_follows_the_mount_path(
    serve: Serve, session: aiohttp.ClientSession, mount_path: str, script: str
) -> None:
    assert client_paths(mount_path)[script] == "wsmvc.js"
    url = await serve(echo_server(), mount_path)
    root = http_url(url).removesuffix(mount_path)
    async with session.get(root + script) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == JS_TYPE
    async with await dial(url, {"default": {}}) as conn:
        await conn.connect("default", timeout=5)


async def test_two_servers_on_one_app_each_serve_it(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    app = web.Application()
    echo_server().mount(app, "/one")
    url = await serve(echo_server(), "/two", app)
    root = http_url(url).removesuffix("/two")
    for path in ("/one/wsmvc.js", "/two/wsmvc.js"):
        async with session.get(root + path) as response:
            assert response.status == 200, path
