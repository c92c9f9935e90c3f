"""Native websocket messages: plain ``WebSocket`` clients, no neffos.js, no handshake.

    python examples/native/app.py --host 127.0.0.1 --port 8080

Then open http://127.0.0.1:8080/ in two browser tabs (a page with a plain ``WebSocket``),
or connect any websocket client to ``ws://127.0.0.1:8080/ws?name=ann``.

The server's only controller serves namespace ``""`` with ``on_native_message`` (and the
connect/disconnect hooks), so wsmvc runs in native-only mode (neffos-protocol.md §9.1):
every frame a client sends is a message as it is, text or binary; there is no ``M``/``A``
handshake and no envelope either way. A tiny chat:

* on connect the client gets ``welcome <id>``, everyone else ``+ <id>``;
* a text frame goes to everyone else as ``<id>: <text>``; ``/who`` is answered to the
  sender only with ``online: <id> <id> ...``;
* a binary frame goes to everyone else unchanged, in a binary frame;
* on disconnect everyone else gets ``- <id>``.

The id is the ``name`` query parameter (letters, digits, ``-`` and ``_``, up to 20;
anything else is refused with 400), or ``guest-`` and four hex digits.
"""

from __future__ import annotations

import argparse
import logging
import re
import secrets
from pathlib import Path

from aiohttp import web

from wsmvc import Conn, Message, NSConn, Server, controller, event

WS_PATH = "/ws"
PAGE = Path(__file__).with_name("index.html")
NAME = re.compile(r"[A-Za-z0-9_-]{1,20}")


def name_from_query(request: web.Request) -> str:
    """The connection id; an HTTP error here refuses the upgrade with that status."""
    name = request.query.get("name")
    if name is None:
        return f"guest-{secrets.token_hex(2)}"
    if not NAME.fullmatch(name):
        raise web.HTTPBadRequest(text="name: 1 to 20 letters, digits, '-' or '_'\n")
    return name


def native(body: str | bytes) -> Message:
    """A message written as a raw frame (no envelope): text for ``str``, binary for bytes."""
    if isinstance(body, str):
        return Message(event="_OnNativeMessage", body=body.encode(), native=True)
    return Message(event="_OnNativeMessage", body=body, native=True, binary=True)


@controller  # namespace "": with only on_native_message (+ hooks), no neffos handshake
class NativeChat:
    conn: NSConn  # namespace "" of this client
    websocket: Conn  # the client's websocket, for raw writes

    @event
    async def on_namespace_connected(self, msg: Message) -> None:
        self.websocket.send_native(f"welcome {self.conn.id}")
        await self.conn.server.broadcast(native(f"+ {self.conn.id}"), exclude=self.conn)

    @event
    async def on_native_message(self, msg: Message) -> str | None:
        if msg.binary:
            await self.conn.server.broadcast(native(msg.body), exclude=self.conn)
            return None
        if msg.text == "/who":
            members = self.conn.server.namespace_members("")
            return "online: " + " ".join(ns.id for ns in members)  # to the sender only
        await self.conn.server.broadcast(native(f"{self.conn.id}: {msg.text}"), exclude=self.conn)
        return None

    @event
    async def on_namespace_disconnect(self, msg: Message) -> None:
        # The websocket is closed already: this tells the others.
        await self.conn.server.broadcast(native(f"- {self.conn.id}"), exclude=self.conn)


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE)


def make_app() -> web.Application:
    # Same-origin browsers only (the default): the page below is served by this app.
    server = Server(controllers=[NativeChat], id_generator=name_from_query)
    app = web.Application()
    server.mount(app, WS_PATH)
    app.router.add_get("/", page)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = make_app()
    ready = f"native example ready on ws://{args.host}:{args.port}{WS_PATH}"
    # run_app stops on SIGINT and SIGTERM: every websocket is closed with 1001 first.
    web.run_app(app, host=args.host, port=args.port, print=lambda _: print(ready, flush=True))


if __name__ == "__main__":
    main()
