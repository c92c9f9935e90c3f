"""An application with the inspector (``wsmvc.inspector``), for the browser tests
(``tests/browser/test_inspector.py``), run as a child process.

    python tests/apps/inspector_app.py --host 127.0.0.1 --port 8080

prints ``inspector app ready on http://HOST:PORT`` once it listens.

* ``/ws``: the application's wsmvc server. Namespace ``chat``: ``say`` sends ``said`` with
  the body to the others in the message's room; ``lookup`` raises ``KeyError`` (which an
  exception handler answers with ``no such order``: an exception the inspector lists,
  and no ERROR in the log).
* ``/inspector/``: the inspector of that server (snapshots every 0.25 s), for requests
  with the cookie ``inspector=letmein`` only (others get 403).
* ``/client``: a page that imports ``/ws/wsmvc.js`` as ``window.wsmvc`` (its title
  becomes ``ready``), for a browser to play a user of the application.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from wsmvc import Message, NSConn, Server
from wsmvc.inspector import Inspector

COOKIE = "inspector"
SECRET = "letmein"

CLIENT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>loading</title></head><body>
<script type="module">
import * as wsmvc from "/ws/wsmvc.js";
window.wsmvc = wsmvc;
document.title = "ready";
</script></body></html>
"""


async def say(ns: NSConn, msg: Message) -> None:
    await ns.server.broadcast(
        Message(namespace=ns.namespace, room=msg.room, event="said", body=msg.body), exclude=ns
    )


def lookup(ns: NSConn, msg: Message) -> None:
    raise KeyError(f"no order {msg.text!r}")


def no_such_order(exc: Exception, ns: NSConn | None, msg: Message) -> str:
    return "no such order"


def is_operator(request: web.Request) -> bool:
    return request.cookies.get(COOKIE) == SECRET


async def client_page(request: web.Request) -> web.Response:
    return web.Response(text=CLIENT_PAGE, content_type="text/html")


def make_app() -> web.Application:
    app = web.Application()
    server = Server(
        {"chat": {"say": say, "lookup": lookup}},
        exception_handlers={KeyError: no_such_order},
    )
    server.mount(app, "/ws")
    Inspector(server, check=is_operator, interval=0.25).mount(app, "/inspector")
    app.router.add_get("/client", client_page)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ready = f"inspector app ready on http://{args.host}:{args.port}"
    web.run_app(
        make_app(), host=args.host, port=args.port, print=lambda _: print(ready, flush=True)
    )
