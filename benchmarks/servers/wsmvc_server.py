"""Benchmark server: wsmvc on aiohttp, neffos protocol at ``/ws``.

Namespace ``default``: event ``ask`` answers with the body; event ``fanout`` broadcasts
``chat`` with the body to every other connection of the namespace. ``--recovery``: with
``Server(recovery=Recovery())`` (the setup ``wsmvc-recovery``, whose clients ask for it).
"""

from __future__ import annotations

import sys

from _common import port_parser, run
from aiohttp import web

from wsmvc import Message, NSConn, Recovery, Server

# The defaults users get (deflate when offered); the recovery setup adds only recovery.
RECOVERY = "--recovery" in sys.argv
server = Server(allowed_origins="*", recovery=Recovery() if RECOVERY else None)


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
    parser = port_parser(__doc__.splitlines()[0])
    parser.add_argument("--recovery", action="store_true", help="Server(recovery=Recovery())")
    args = parser.parse_args()
    run(make_app(), args.port, "wsmvc-recovery" if args.recovery else "wsmvc")
