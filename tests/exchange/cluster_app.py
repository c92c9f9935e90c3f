"""One server of a test cluster: a wsmvc server whose exchange is a real Redis or NATS.

Run as a process (the tests start two or three of them on one broker)::

    python tests/exchange/cluster_app.py --port 0 --broker redis://127.0.0.1:6379/0 --name s1

``--server-id`` gives the exchange a fixed ``server_id`` (default: a random one).

``--port 0`` picks a free port. Once the exchange is connected it prints
``cluster <name> ready on ws://127.0.0.1:<port>/ws`` on stdout; it logs to stderr and
exits with status 0 on SIGTERM or SIGINT.

The connection id is the ``X-Name`` header (or the query parameter
``X-Websocket-Header-X-Name=alice``), else a UUID. Namespace ``default`` has the events a
test client uses to make this server act (each answers an ask once done):

``broadcast`` body                 to the whole namespace
``broadcast_room`` ``room|body``   to the members of a room
``broadcast_to`` ``id|body``       ``to=id``
``broadcast_others`` body          excluding the caller's connection
``broadcast_except`` ``id|body``   excluding every connection with that id
``broadcast_binary`` raw bytes     to the namespace, in a binary frame
``ask_client`` ``id|event|body``   ``server.ask(..., to=id)``; answers ``answer:<reply>``,
                                   or the error text the asked client answered
``wait_disconnected`` id           answers once a connection with that id has closed here
``sync``                           answers after ``await exchange.flush()``
``probe`` ``id|token``             broadcasts the event ``probe`` with body token, ``to=id``
                                   (or to the namespace when id is empty)
``status``                         ``{"name", "connected", "dropped"}`` as JSON
``presence`` room                  ``{"count", "bound"}``: the room's members cluster-wide,
                                   and how long a killed server's members may linger

Broadcasts use the event ``chat``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import uuid

from aiohttp import web

from wsmvc import AskTimeout, Conn, ConnectionClosed, EventError, Message, NSConn, Server
from wsmvc.exchange.broker import BrokerExchange
from wsmvc.exchange.nats import NatsExchange
from wsmvc.exchange.redis import RedisExchange

NAMESPACE = "default"
EVENT = "chat"
ASK_TIMEOUT = 5.0


def make_exchange(url: str, prefix: str, server_id: str | None = None) -> BrokerExchange:
    if url.startswith("redis://"):
        return RedisExchange(url, prefix=prefix, server_id=server_id)
    if url.startswith("nats://"):
        return NatsExchange(url, prefix=prefix, server_id=server_id)
    raise SystemExit(f"--broker must be a redis:// or nats:// URL, not {url!r}")


def connection_id(request: web.Request) -> str:
    return request.headers.get("X-Name") or str(uuid.uuid4())


def split(body: bytes, parts: int) -> list[str]:
    fields = body.decode().split("|", parts - 1)
    if len(fields) != parts:
        raise EventError(f"expected {parts} fields separated by '|'")
    return fields


def build(name: str, exchange: BrokerExchange) -> Server:
    disconnected: dict[str, asyncio.Event] = {}

    def closed_event(conn_id: str) -> asyncio.Event:
        return disconnected.setdefault(conn_id, asyncio.Event())

    def on_disconnect(conn: Conn) -> None:
        closed_event(conn.id).set()

    server = Server(exchange=exchange, id_generator=connection_id, on_disconnect=on_disconnect)

    def chat(body: bytes, room: str = "", binary: bool = False) -> Message:
        return Message(namespace=NAMESPACE, room=room, event=EVENT, body=body, binary=binary)

    def done(msg: Message) -> str | None:
        # Answer asks only: a plain emit gets nothing back.
        return "sent" if msg.token else None

    @server.on(NAMESPACE, "broadcast")
    async def broadcast(ns: NSConn, msg: Message) -> str | None:
        await server.broadcast(chat(msg.body))
        return done(msg)

    @server.on(NAMESPACE, "broadcast_room")
    async def broadcast_room(ns: NSConn, msg: Message) -> str | None:
        room, body = split(msg.body, 2)
        await server.broadcast(chat(body.encode(), room=room))
        return done(msg)

    @server.on(NAMESPACE, "broadcast_to")
    async def broadcast_to(ns: NSConn, msg: Message) -> str | None:
        to, body = split(msg.body, 2)
        await server.broadcast(chat(body.encode()), to=to)
        return done(msg)

    @server.on(NAMESPACE, "broadcast_others")
    async def broadcast_others(ns: NSConn, msg: Message) -> str | None:
        await server.broadcast(chat(msg.body), exclude=ns)
        return done(msg)

    @server.on(NAMESPACE, "broadcast_except")
    async def broadcast_except(ns: NSConn, msg: Message) -> str | None:
        excluded, body = split(msg.body, 2)
        await server.broadcast(chat(body.encode()), exclude=excluded)
        return done(msg)

    @server.on(NAMESPACE, "broadcast_binary")
    async def broadcast_binary(ns: NSConn, msg: Message) -> str | None:
        await server.broadcast(chat(msg.body, binary=True))
        return done(msg)

    @server.on(NAMESPACE, "ask_client")
    async def ask_client(ns: NSConn, msg: Message) -> bytes:
        to, event, body = split(msg.body, 3)
        question = Message(namespace=NAMESPACE, event=event, body=body.encode())
        try:
            reply = await server.ask(question, to=to, timeout=ASK_TIMEOUT)
        except (AskTimeout, ConnectionClosed) as exc:
            raise EventError(f"{type(exc).__name__}: {exc}") from None
        return b"answer:" + reply.body

    @server.on(NAMESPACE, "wait_disconnected")
    async def wait_disconnected(ns: NSConn, msg: Message) -> str:
        await asyncio.wait_for(closed_event(msg.text).wait(), ASK_TIMEOUT)
        return "disconnected"

    @server.on(NAMESPACE, "sync")
    async def sync(ns: NSConn, msg: Message) -> str:
        await exchange.flush(ASK_TIMEOUT)
        return "synced"

    @server.on(NAMESPACE, "probe")
    async def probe(ns: NSConn, msg: Message) -> str:
        to, token = split(msg.body, 2)
        probe = Message(namespace=NAMESPACE, event="probe", body=token.encode())
        await server.broadcast(probe, to=to or None)
        return "sent"

    @server.on(NAMESPACE, "presence")
    def presence(ns: NSConn, msg: Message) -> str:
        room = msg.body.decode()
        bound = server.presence.ttl + server.presence.beat
        return json.dumps({"count": server.presence.count(NAMESPACE, room), "bound": bound})

    @server.on(NAMESPACE, "status")
    def status(ns: NSConn, msg: Message) -> str:
        state = {"name": name, "connected": exchange.connected, "dropped": exchange.dropped}
        return json.dumps(state)

    return server


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--broker", required=True, help="redis://host:port/db or nats://host:port")
    parser.add_argument("--name", required=True)
    parser.add_argument("--prefix", default="neffos")
    parser.add_argument("--server-id", default=None, help="the exchange's server_id")
    args = parser.parse_args()

    exchange = make_exchange(args.broker, args.prefix, args.server_id)
    server = build(args.name, exchange)
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app, shutdown_timeout=5)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = runner.addresses[0][1]
        await exchange.wait_connected(15)
        print(f"cluster {args.name} ready on ws://127.0.0.1:{port}/ws", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(main())
