"""Benchmark server: a wsmvc controller in namespace ``di``, with or without dependencies.

``--deps``: the controller gets three root singletons (two fields and one ``__init__``
parameter, from an injector ``Module`` with ``@singleton @provider``) and one
``connection_scope`` dependency (an ``__init__`` parameter). Without it: the same controller
with no dependencies. A controller is built for every namespace connect, so the difference
of the two is what dependency injection costs per connect.
"""

from __future__ import annotations

from typing import Any

from _common import port_parser, run
from aiohttp import web
from injector import Module, provider, singleton

from wsmvc import Conn, Message, Server, connection_scope, controller, event

NAMESPACE = "di"


class Settings:
    def __init__(self) -> None:
        self.greeting = "hello"
        self.limit = 100


class Clock:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


class Metrics:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}


class Session:
    """Once per websocket connection, shared by its namespaces."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.data: dict[str, Any] = {}


class DepsModule(Module):
    @singleton
    @provider
    def settings(self) -> Settings:
        return Settings()

    @singleton
    @provider
    def clock(self, settings: Settings) -> Clock:
        return Clock(settings)

    @singleton
    @provider
    def metrics(self) -> Metrics:
        return Metrics()

    @connection_scope
    @provider
    def session(self, conn: Conn) -> Session:
        return Session(conn.id)


@controller(namespace=NAMESPACE)
class WithDeps:
    settings: Settings  # fields: root singletons
    clock: Clock

    def __init__(self, metrics: Metrics, session: Session) -> None:
        self.metrics = metrics  # a root singleton
        self.session = session  # once per connection

    @event
    def on_ask(self, msg: Message) -> bytes:
        return msg.body


@controller(namespace=NAMESPACE)
class NoDeps:
    @event
    def on_ask(self, msg: Message) -> bytes:
        return msg.body


def make_app(deps: bool) -> web.Application:
    server = Server(
        controllers=[WithDeps if deps else NoDeps],
        modules=[DepsModule()] if deps else [],
        allowed_origins="*",
        compress=False,
    )
    app = web.Application()
    server.mount(app, "/ws")
    return app


def main() -> None:
    parser = port_parser(__doc__.splitlines()[0])
    parser.add_argument("--deps", action="store_true", help="the controller with dependencies")
    args = parser.parse_args()
    run(make_app(args.deps), args.port, "wsmvc-di" if args.deps else "wsmvc-nodeps")


if __name__ == "__main__":
    main()
