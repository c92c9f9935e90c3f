"""A chat server that shares its broadcasts with other instances through Redis or NATS.

    python examples/scaleout/app.py --port 8081 --broker redis://127.0.0.1:6379/0
    python examples/scaleout/app.py --port 8082 --broker redis://127.0.0.1:6379/0

Clients of either server (namespace ``chat``, at ``/chat``) see each other's ``Say``
messages, rooms included; ``Whisper`` with a body ``<id>:<text>`` reaches every tab of
the connection id ``<id>`` wherever it is connected (``to=``). Connection ids come from
the ``X-Name`` header (``?X-Websocket-Header-X-Name=alice`` in a browser).
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from wsmvc import EventError, Message, NSConn, Server, controller, event
from wsmvc.exchange import Exchange


@controller(namespace="chat")
class ChatController:
    conn: NSConn

    @event("Say")
    async def say(self, msg: Message) -> None:
        # To every client of the namespace (or of msg.room) on every server, but the sender.
        await self.conn.server.broadcast(msg, exclude=self.conn)

    @event("Whisper")
    async def whisper(self, msg: Message) -> str:
        target, sep, text = msg.text.partition(":")
        if not sep or not target:
            raise EventError("whisper as <id>:<text>")
        note = Message(namespace="chat", event="Whisper", body=f"{self.conn.id}:{text}".encode())
        await self.conn.server.broadcast(note, to=target)
        return "sent"


def make_exchange(broker: str) -> Exchange:
    if broker.startswith("redis://"):
        from wsmvc.exchange.redis import RedisExchange

        return RedisExchange(broker, prefix="scaleout")
    if broker.startswith("nats://"):
        from wsmvc.exchange.nats import NatsExchange

        return NatsExchange(broker)
    raise SystemExit(f"--broker must be a redis:// or nats:// URL, not {broker!r}")


def make_app(broker: str) -> web.Application:
    server = Server(
        controllers=[ChatController],
        exchange=make_exchange(broker),
        id_generator=lambda request: request.headers.get("X-Name") or "anonymous",
        allowed_origins="*",
    )
    app = web.Application()
    server.mount(app, "/chat")
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    web.run_app(
        make_app(args.broker),
        host=args.host,
        port=args.port,
        print=lambda _: print(
            f"scale-out chat ready on ws://{args.host}:{args.port}/chat", flush=True
        ),
    )
