"""Benchmark server: wsmvc on aiohttp, neffos protocol at ``/ws``.

Namespace ``default``: event ``ask`` answers with the body; event ``fanout`` broadcasts
``chat`` with the body to every other connection of the namespace.
"""

from __future__ import annotations

from _common import parse_port, run
from aiohttp import web

from wsmvc import Message, NSConn, Server

server = Server(allowed_origins="*")  # the defaults users get (deflate when offered)


@server.on("default", "ask")
def ask(ns: NSConn, msg: Message) -> bytes:
    return msg.body


@server.on("default", "fanout")
async def fanout(ns: NSConn, msg: Message) -> None:
    await ns.server.broadcast(Message(namespace="default", event="chat", body=msg.body), exclude=ns)


def make_app() -> web.Application:
    app = web.Application()
    server.mount(app, "/ws")
    return app


if __name__ == "__main__":
    run(make_app(), parse_port(__doc__.splitlines()[0]), "wsmvc")
