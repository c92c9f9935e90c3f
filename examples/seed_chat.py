"""The Iris "Websocket Controller" example in Python: a chat on namespace ``default``.

    python examples/seed_chat.py --host 127.0.0.1 --port 8080

Clients (neffos.js in a browser or Node, the Go neffos client, ``wsmvc.dial``) connect to
``ws://HOST:PORT/websocket_endpoint`` and to namespace ``default``. Every ``OnChat`` a client
emits goes to every *other* client of the namespace. The controller gets a
``PrefixedLogger`` from an injector module (one instance for the whole server) and logs
each client's connect and disconnect on stdout, prefixed ``DEV``.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web
from injector import Module, provider, singleton

from wsmvc import Message, NSConn, Server, controller, event

PATH = "/websocket_endpoint"


class PrefixedLogger:
    """Prints lines with a prefix (Iris: ``prefixedLogger``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def log(self, text: str) -> None:
        print(self.prefix, text, flush=True)


class AppModule(Module):
    """The application's bindings: one ``PrefixedLogger`` for the whole server."""

    @singleton
    @provider
    def logger(self) -> PrefixedLogger:
        return PrefixedLogger("DEV")


@controller(namespace="default")
class WebsocketController:
    """A new instance for each client that connects to namespace ``default``."""

    conn: NSConn  # this client's namespace connection (Go: the embedded *neffos.NSConn)
    logger: PrefixedLogger  # from AppModule

    @event
    async def on_namespace_connected(self, msg: Message) -> None:
        self.logger.log(f"{self.conn.id} connected to {msg.namespace}")

    @event
    async def on_namespace_disconnect(self, msg: Message) -> None:
        self.logger.log(f"{self.conn.id} left")

    @event  # wire name "OnChat"
    async def on_chat(self, msg: Message) -> None:
        await self.conn.server.broadcast(msg, exclude=self.conn)


def make_app() -> web.Application:
    app = web.Application()
    server = Server(modules=[AppModule()], controllers=[WebsocketController])
    server.mount(app, PATH)  # GET upgrades, HEAD probes, 405 for the rest
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def ready(_banner: str) -> None:
        print(f"seed chat ready on ws://{args.host}:{args.port}{PATH}", flush=True)

    # run_app stops on SIGINT and SIGTERM: connections are closed (1001) and each client's
    # on_namespace_disconnect runs before the process exits.
    web.run_app(make_app(), host=args.host, port=args.port, print=ready)


if __name__ == "__main__":
    main()
