"""The wsmvc app that wsmvc.js (the JavaScript client) is tested against, in Node
(``tests/jsclient``) and in Chromium (``tests/browser/test_jsclient.py``).

    python tests/jsclient/app.py --host 127.0.0.1 --port 8080

prints ``jsclient app ready on http://HOST:PORT`` once it listens.

``/ws`` is a wsmvc server (so ``/ws/wsmvc.js`` is the client). Namespace ``default``:

* ``echo`` emits ``echo`` back with the body, into the room it came in (if any);
* ``ask`` answers ``pong:`` + body; ``askerr`` answers the error ``ask failed``;
  ``silent`` answers nothing (for timeouts);
* ``reverse`` answers the body reversed (binary in, binary out); ``nonutf8`` answers the
  bytes ``ff fe 00`` (not UTF-8: a binary frame); ``push_binary`` emits ``bin`` with the
  bytes ``00 01 3b fe`` in a binary frame;
* ``server_ask`` asks the client ``question`` with the body and answers
  ``client said:`` + its answer (``client refused:`` + the text of an error answer);
* ``to_room`` sends ``chat`` with the body to the others in the message's room;
* ``note`` records the body under the connection's ``?client=`` tag (``GET /notes``);
* ``server_join`` / ``server_leave`` join / leave the client to / from the room named in
  the body; ``server_connect`` connects the client to the namespace named in the body;
  ``server_disconnect`` disconnects this namespace;
* joining room ``vip`` is refused with ``vip only``.

Namespace ``other``: ``ask`` answers ``other:`` + body. Namespace ``forbidden``: connect
refused with ``forbidden namespace``. A connection whose upgrade carries ``X-Reject``
(a header, or its ``X-Websocket-Header-X-Reject`` query form) is refused with its value.

``/native`` is a native-only server: every frame comes back with ``echo:`` before it;
``/mixed`` does the same in namespace ``""``, beside namespace ``default`` (``ask``).

``/rws`` is the same server with connection state recovery (``Recovery(max_messages=
4000)``, docs/recovery.md), and ``/rws-short`` one whose window is 0.3 s; namespace
``default`` there also has ``slow`` (answers ``slow:`` + body once ``POST /unblock`` for
the client's tag). Upgrades of a held tag are refused on them too.

HTTP for the tests: ``GET /members?namespace=&room=`` (the ids in a room, JSON),
``GET /namespaces?id=`` (the namespaces of a connection id), ``GET /upgrade?id=`` (its
``X-Name`` header and reconnect count), ``POST /kick?id=&code=`` (close the connections
with that id), ``POST /hold?client=&how=`` and ``/release?client=`` (between the two,
upgrades of ``/ws?client=<tag>`` answer 503, or with ``how=reject`` are refused in the
handshake with ``held``), ``GET /notes?client=``, ``GET /page``
(the browser tests' page, which imports ``/ws/wsmvc.js``).

For recovery: ``POST /drop?id=&reset=`` (the network loses that connection: its TCP
connection is aborted server side, no close frame; ``reset=1``: with a TCP reset),
``POST /stream?id=&room=&count=&drop=`` (``count`` numbered ``n`` messages broadcast to
``room`` of ``default`` on ``/rws``, connection ``id`` dropped after the ``drop``-th;
answers once all went), ``GET /gone?id=&wait=`` (waits, at most ``wait`` seconds (5),
until that connection's disconnect events ran: ``true``, else ``false``),
``GET /recoverable?id=`` (whether the server keeps that connection for recovery when lost).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import socket
import struct

from aiohttp import web

from wsmvc import Conn, EventError, Message, NSConn, Recovery, Reject, Reply, Server

HELD: dict[str, str] = {}  # ?client= tag -> "503" or "reject": how its upgrades are refused
NOTES: collections.defaultdict[str, list[str]] = collections.defaultdict(list)
UPGRADES: dict[str, dict[str, object]] = {}  # connection id -> what its upgrade said
UNBLOCKED: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
GONE: set[str] = set()  # ids whose disconnect events ran (recovering servers)
GONE_CHANGED = asyncio.Event()

PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>wsmvc.js test page</title>
<script type="module">
  import * as wsmvc from "/ws/wsmvc.js";
  window.wsmvc = wsmvc;
  document.title = "ready";
</script>
</html>
"""


def client_tag(ns: NSConn) -> str:
    request = ns.conn.request
    return request.query.get("client", "") if request is not None else ""


def echo(ns: NSConn, msg: Message) -> None:
    room = ns.room(msg.room) if msg.room else None
    if room is not None:
        room.emit("echo", msg.body)
    else:
        ns.emit("echo", msg.body)


def ask(ns: NSConn, msg: Message) -> bytes:
    return b"pong:" + msg.body


def askerr(ns: NSConn, msg: Message) -> None:
    raise EventError("ask failed")


def silent(ns: NSConn, msg: Message) -> None:
    return None


def reverse(ns: NSConn, msg: Message) -> Reply:
    return Reply(msg.body[::-1])


def nonutf8(ns: NSConn, msg: Message) -> bytes:
    return b"\xff\xfe\x00"


def push_binary(ns: NSConn, msg: Message) -> None:
    ns.emit_binary("bin", b"\x00\x01;\xfe")


async def server_ask(ns: NSConn, msg: Message) -> bytes:
    try:
        answer = await ns.ask("question", msg.body, timeout=5)
    except EventError as exc:
        return b"client refused:" + exc.text.encode()
    return b"client said:" + answer.body


async def to_room(ns: NSConn, msg: Message) -> None:
    chat = Message(namespace=ns.namespace, room=msg.room, event="chat", body=msg.body)
    await ns.server.broadcast(chat, exclude=ns)


def note(ns: NSConn, msg: Message) -> None:
    NOTES[client_tag(ns)].append(msg.text)


async def server_join(ns: NSConn, msg: Message) -> bytes:
    await ns.join_room(msg.text, timeout=5)
    return b"joined:" + msg.body


async def server_leave(ns: NSConn, msg: Message) -> bytes:
    await ns.leave_room(msg.text, timeout=5)
    return b"left:" + msg.body


async def server_connect(ns: NSConn, msg: Message) -> bytes:
    await ns.conn.connect(msg.text, timeout=5)
    return b"connected:" + msg.body


async def server_disconnect(ns: NSConn, msg: Message) -> None:
    await ns.disconnect(timeout=5)


def on_room_join(ns: NSConn, msg: Message) -> None:
    if msg.room == "vip":
        raise EventError("vip only")


def other_ask(ns: NSConn, msg: Message) -> bytes:
    return b"other:" + msg.body


def refuse_forbidden(ns: NSConn, msg: Message) -> None:
    raise EventError("forbidden namespace")


def on_connect(conn: Conn) -> None:
    assert conn.request is not None
    headers = conn.request.headers
    if headers.get("X-Reject"):
        raise Reject(headers["X-Reject"])
    if HELD.get(conn.request.query.get("client", "")) == "reject":
        raise Reject("held")
    UPGRADES[conn.id] = {"name": headers.get("X-Name"), "reconnect": conn.reconnect_tries}


HANDLERS = {
    "default": {
        "echo": echo,
        "ask": ask,
        "askerr": askerr,
        "silent": silent,
        "reverse": reverse,
        "nonutf8": nonutf8,
        "push_binary": push_binary,
        "server_ask": server_ask,
        "to_room": to_room,
        "note": note,
        "server_join": server_join,
        "server_leave": server_leave,
        "server_connect": server_connect,
        "server_disconnect": server_disconnect,
        "_OnRoomJoin": on_room_join,
    },
    "other": {"ask": other_ask},
    "forbidden": {"_OnNamespaceConnect": refuse_forbidden},
}
server = Server(HANDLERS, on_connect=on_connect)


async def slow(ns: NSConn, msg: Message) -> bytes:
    await UNBLOCKED[client_tag(ns)].wait()
    return b"slow:" + msg.body


def gone(conn: Conn) -> None:
    GONE.add(conn.id)
    GONE_CHANGED.set()


RECOVERING = {**HANDLERS, "default": {**HANDLERS["default"], "slow": slow}}
recovering = Server(
    RECOVERING,
    on_connect=on_connect,
    on_disconnect=gone,
    recovery=Recovery(max_messages=4000),
    heartbeat=None,
)
recovering_short = Server(
    RECOVERING,
    on_connect=on_connect,
    on_disconnect=gone,
    recovery=Recovery(window=0.3),
    heartbeat=None,
)
SERVERS = (server, recovering, recovering_short)


def native_echo(ns: NSConn, msg: Message) -> None:
    ns.send_native(("echo:" + msg.text) if not msg.binary else b"echo:" + msg.body)


native = Server({"": {"_OnNativeMessage": native_echo}})
# Mixed mode: native messages in namespace "" beside a namespace of envelopes.
mixed = Server({"": {"_OnNativeMessage": native_echo}, "default": {"ask": ask}})


@web.middleware
async def hold_gate(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Upgrades of a held ``?client=`` tag answer 503 (a server that is down, for them)."""
    held = HELD.get(request.query.get("client", "")) == "503"
    if held and request.path in ("/ws", "/rws", "/rws-short"):
        return web.Response(status=503, text="held\n")
    return await handler(request)


async def members(request: web.Request) -> web.Response:
    namespace, room = request.query["namespace"], request.query["room"]
    ids = [ns.id for each in SERVERS for ns in each.room_members(namespace, room)]
    return web.json_response(ids)


async def namespaces(request: web.Request) -> web.Response:
    conns = connections(request.query["id"])
    return web.json_response(sorted({name for conn in conns for name in conn.namespaces}))


async def upgrade(request: web.Request) -> web.Response:
    return web.json_response(UPGRADES.get(request.query["id"]))


def connections(conn_id: str) -> list[Conn]:
    return [conn for each in SERVERS for conn in each.get_connections(conn_id)]


async def kick(request: web.Request) -> web.Response:
    conns = connections(request.query["id"])
    code = int(request.query.get("code", "4000"))
    for conn in conns:
        await conn.close(code, "kicked")
    return web.json_response(len(conns))


async def hold(request: web.Request) -> web.Response:
    HELD[request.query["client"]] = request.query.get("how", "503")
    return web.json_response(True)


async def release(request: web.Request) -> web.Response:
    HELD.pop(request.query["client"], None)
    return web.json_response(True)


def drop_conn(conn: Conn, reset: bool) -> None:
    """The network loses ``conn``: its TCP connection is aborted (``reset``: with a RST)."""
    transport = conn.request.transport if conn.request is not None else None
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def drop(request: web.Request) -> web.Response:
    conns = connections(request.query["id"])
    for conn in conns:
        drop_conn(conn, request.query.get("reset") == "1")
    return web.json_response(len(conns))


async def stream(request: web.Request) -> web.Response:
    room, count = request.query["room"], int(request.query["count"])
    drop_at = int(request.query.get("drop", "0"))
    for n in range(1, count + 1):
        await recovering.broadcast(
            Message(namespace="default", room=room, event="n", body=b"%d" % n)
        )
        if n % 20 == 0:
            await asyncio.sleep(0)  # the client reads some meanwhile
        if n == drop_at:
            for conn in recovering.get_connections(request.query["id"]):
                drop_conn(conn, request.query.get("reset") == "1")
    return web.json_response(count)


async def gone_(request: web.Request) -> web.Response:
    conn_id = request.query["id"]

    async def until_gone() -> None:
        while conn_id not in GONE:
            GONE_CHANGED.clear()
            await GONE_CHANGED.wait()

    try:
        await asyncio.wait_for(until_gone(), float(request.query.get("wait", "5")))
    except asyncio.TimeoutError:
        return web.json_response(False)
    return web.json_response(True)


async def recoverable(request: web.Request) -> web.Response:
    return web.json_response(any(c.recovery is not None for c in connections(request.query["id"])))


async def unblock(request: web.Request) -> web.Response:
    UNBLOCKED[request.query["client"]].set()
    return web.json_response(True)


async def notes(request: web.Request) -> web.Response:
    return web.json_response(NOTES[request.query["client"]])


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


def make_app() -> web.Application:
    app = web.Application(middlewares=[hold_gate])
    server.mount(app, "/ws")
    native.mount(app, "/native")
    mixed.mount(app, "/mixed")
    recovering.mount(app, "/rws")
    recovering_short.mount(app, "/rws-short")
    app.router.add_get("/members", members)
    app.router.add_get("/namespaces", namespaces)
    app.router.add_get("/upgrade", upgrade)
    app.router.add_post("/kick", kick)
    app.router.add_post("/hold", hold)
    app.router.add_post("/release", release)
    app.router.add_get("/notes", notes)
    app.router.add_post("/drop", drop)
    app.router.add_post("/stream", stream)
    app.router.add_get("/gone", gone_)
    app.router.add_get("/recoverable", recoverable)
    app.router.add_post("/unblock", unblock)
    app.router.add_get("/page", page)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ready = f"jsclient app ready on http://{args.host}:{args.port}"
    web.run_app(
        make_app(), host=args.host, port=args.port, print=lambda _: print(ready, flush=True)
    )
