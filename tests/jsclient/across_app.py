"""Two wsmvc servers of one cluster behind a TCP balancer, for wsmvc.js moving across
servers (``across.test.mjs``; docs/recovery.md, "Across servers").

    python tests/jsclient/across_app.py --host 127.0.0.1 --port 8080 --broker nats://...

prints ``across app ready on http://HOST:PORT`` once it listens. Servers ``a`` and ``b``
(recovery on, ``Recovery(max_messages=4000)``) share the broker at ``--broker`` (``redis://``
or ``nats://``), each on a port of its own; the balancer, a TCP proxy on a third port, sends
each new connection to the server it routes to (``a`` first) and can reset the connections
through it (no close frame). Namespace ``default``: ``ask`` answers ``pong:`` + body and
the server's name; ``note`` records the body (``GET /notes``).

HTTP on ``--port``: ``GET /info`` (the balancer's websocket URL; new connections go to a
again), ``POST /stream?room=&
count=&kill=`` (servers a and b broadcast ``n`` with 1..count to the room, odd numbers from
a and even ones from b, yielding as they go; after ``kill`` the balancer routes to b and
resets every connection through it), ``GET /where?id=`` (how many connections of that id
each server has), ``GET /gone?id=&server=`` (the close reason of that id's disconnect
events there, waited for up to 5 s; ``null`` if they did not run), ``GET /notes?id=``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from wsmvc import Conn, Message, NSConn, Recovery, Server
from wsmvc.exchange import NatsExchange, RedisExchange
from wsmvc.exchange.broker import BrokerExchange

WAIT = 5.0


class Balancer:
    """A TCP proxy on loopback: each new connection goes to ``target`` (a port) at the time
    it arrives; :meth:`kill` resets the connections open through it."""

    def __init__(self) -> None:
        self.target = 0
        self.port = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None

    async def start(self, host: str) -> None:
        self._server = await asyncio.start_server(self._pipe, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.append(pair)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        if pair in self._pairs:
            self._pairs.remove(pair)

    def kill(self) -> None:
        """Reset every connection through it (RST, no close frame), both sides."""
        for pair in self._pairs:
            for writer in pair:
                with contextlib.suppress(OSError):
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
        self._pairs.clear()

    async def close(self) -> None:
        self.kill()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Node:
    """One server of the cluster, and what the tests ask of it."""

    def __init__(self, name: str, broker: str) -> None:
        self.name = name
        self.gone: dict[str, str | None] = {}  # id -> close reason, once its events ran
        self.changed = asyncio.Event()
        self.notes: dict[str, list[str]] = {}
        exchange: BrokerExchange = (
            RedisExchange(broker, server_id=f"server-{name}")
            if broker.startswith("redis")
            else NatsExchange(broker, server_id=f"server-{name}")
        )
        events = {"ask": self._ask, "note": self._note}
        self.server = Server(
            {"default": events},
            recovery=Recovery(max_messages=4000),
            exchange=exchange,
            on_disconnect=self._gone,
        )
        self.port = 0

    def _ask(self, ns: NSConn, msg: Message) -> bytes:
        return b"pong:" + msg.body + b" from " + self.name.encode()

    def _note(self, ns: NSConn, msg: Message) -> None:
        self.notes.setdefault(ns.conn.id, []).append(msg.text)

    def _gone(self, conn: Conn) -> None:
        reason = conn.close_reason
        self.gone[conn.id] = reason.value if reason is not None else None
        self.changed.set()

    async def wait_gone(self, conn_id: str) -> str | None:
        async def wait() -> str | None:
            while conn_id not in self.gone:
                self.changed.clear()
                await self.changed.wait()
            return self.gone[conn_id]

        try:
            return await asyncio.wait_for(wait(), WAIT)
        except asyncio.TimeoutError:
            return None


@contextlib.asynccontextmanager
async def serving(node: Node, host: str) -> AsyncIterator[None]:
    app = web.Application()
    node.server.mount(app, "/ws")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    node.port = runner.addresses[0][1]
    try:
        yield
    finally:
        await runner.cleanup()


def make_app(host: str, broker: str) -> web.Application:
    nodes = {name: Node(name, broker) for name in ("a", "b")}
    balancer = Balancer()
    stack = contextlib.AsyncExitStack()

    async def start(app: web.Application) -> None:
        for node in nodes.values():
            await stack.enter_async_context(serving(node, host))
        for node in nodes.values():
            exchange = node.server.exchange
            assert isinstance(exchange, BrokerExchange)
            await exchange.flush(WAIT)  # subscribed: the servers can ask each other
        await balancer.start(host)
        balancer.target = nodes["a"].port

    async def stop(app: web.Application) -> None:
        await balancer.close()
        await stack.aclose()

    async def info(request: web.Request) -> web.Response:
        balancer.target = nodes["a"].port  # each test starts on a
        return web.json_response({"ws": f"ws://{host}:{balancer.port}/ws"})

    async def stream(request: web.Request) -> web.Response:
        room = request.query["room"]
        count, kill = int(request.query["count"]), int(request.query["kill"])
        for node in nodes.values():  # the room's subscriptions are in place on both
            exchange = node.server.exchange
            assert isinstance(exchange, BrokerExchange)
            await exchange.settle(WAIT)
        for n in range(1, count + 1):
            sender = nodes["a"] if n % 2 else nodes["b"]
            await sender.server.broadcast(
                Message(namespace="default", room=room, event="n", body=str(n).encode())
            )
            if n == kill:
                balancer.target = nodes["b"].port
                balancer.kill()
            if n % 20 == 0:
                await asyncio.sleep(0)
        return web.json_response({"sent": count})

    async def where(request: web.Request) -> web.Response:
        conn_id = request.query["id"]
        return web.json_response(
            {name: len(node.server.get_connections(conn_id)) for name, node in nodes.items()}
        )

    async def gone(request: web.Request) -> web.Response:
        node = nodes[request.query["server"]]
        return web.json_response(await node.wait_gone(request.query["id"]))

    async def notes(request: web.Request) -> web.Response:
        conn_id = request.query["id"]
        found: dict[str, Any] = {name: node.notes.get(conn_id, []) for name, node in nodes.items()}
        return web.json_response(found)

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/info", info)
    app.router.add_post("/stream", stream)
    app.router.add_get("/where", where)
    app.router.add_get("/gone", gone)
    app.router.add_get("/notes", notes)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--broker", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ready = f"across app ready on http://{args.host}:{args.port}"
    web.run_app(
        make_app(args.host, args.broker),
        host=args.host,
        port=args.port,
        print=lambda _: print(ready, flush=True),
    )
