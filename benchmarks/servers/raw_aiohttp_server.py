"""Benchmark server: the neffos subset the benchmarks use, by hand on a raw aiohttp websocket.

``--compress``: accept permessage-deflate as aiohttp does it (a compressor per connection,
every message compressed for each receiver); off by default.

The limit of the stack: ``M`` gets ``A<id>``; an envelope is split on ``;`` six times;
a namespace connect gets the empty reply; ``ask`` is answered by echoing the envelope
(same token, namespace, room, event; the body as the reply); ``fanout`` sends ``chat``
with the body to every other connection of the namespace, one ``send_str`` each.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from _common import port_parser, run
from aiohttp import WSCloseCode, WSMsgType, web

CONNECT = "_OnNamespaceConnect"
DISCONNECT = "_OnNamespaceDisconnect"

COMPRESS = False  # --compress: accept permessage-deflate (aiohttp's own, per connection)

members: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)
live: set[web.WebSocketResponse] = set()


async def handle(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=COMPRESS)
    await ws.prepare(request)
    joined: set[str] = set()
    acked = False
    live.add(ws)
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            data: str = msg.data
            if not acked:
                if data[:1] == "M":
                    acked = True
                    await ws.send_str("A" + str(uuid.uuid4()))
                continue
            await on_envelope(ws, data, joined)
    finally:
        live.discard(ws)
        for ns in joined:
            members[ns].discard(ws)
    return ws


async def on_envelope(ws: web.WebSocketResponse, data: str, joined: set[str]) -> None:
    parts = data.split(";", 6)
    if len(parts) != 7:
        return
    token, ns, _room, event, _is_error, _no_op, body = parts
    if event == CONNECT:
        joined.add(ns)
        members[ns].add(ws)
        await ws.send_str(token + ";;;;;;")
    elif event == DISCONNECT:
        joined.discard(ns)
        members[ns].discard(ws)
        await ws.send_str(token + ";;;;;;")
    elif ns not in joined:
        return
    elif event == "ask":
        await ws.send_str(data)  # the echo of the envelope, body included, is the reply
    elif event == "fanout":
        frame = ";" + ns + ";;chat;0;0;" + body
        for other in tuple(members[ns]):
            if other is not ws and not other.closed:
                await other.send_str(frame)


async def close_all(app: web.Application) -> None:
    for ws in tuple(live):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", handle)
    app.on_shutdown.append(close_all)
    return app


if __name__ == "__main__":
    parser = port_parser(__doc__.splitlines()[0])
    parser.add_argument("--compress", action="store_true", help="accept permessage-deflate")
    args = parser.parse_args()
    COMPRESS = args.compress
    run(make_app(), args.port, "raw-aiohttp-deflate" if COMPRESS else "raw-aiohttp")
