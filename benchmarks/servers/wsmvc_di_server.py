"""Benchmark server: a wsmvc controller in namespace ``di``, with or without dependencies.

``--deps``: the controller gets three root singletons (two fields and one ``__init__``
parameter, from an injector ``Module`` with ``@singleton @provider``) and one
``connection_scope`` dependency (an ``__init__`` parameter). Without it: the same controller
with no dependencies. A controller is built for every namespace connect, so the difference
of the two is what dependency injection costs per connect. ``--yield`` (with ``--deps``):
the connection-scoped dependency comes from a generator provider that ``yield``s it, and
whose code after the ``yield`` runs when the connection ends (the teardown).
"""

from __future__ import annotations

from collections.abc import Iterator
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
        self.open = True

    def close(self) -> None:
        self.open = False
        self.data.clear()


class SingletonsModule(Module):
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


class SessionModule(Module):
    @connection_scope
    @provider
    def session(self, conn: Conn) -> Session:
        return Session(conn.id)


class ClosingSessionModule(Module):
    """The same session, closed when its connection ends (after its disconnect events)."""

    @connection_scope
    @provider
    def session(self, conn: Conn) -> Iterator[Session]:
        session = Session(conn.id)
        yield session
        session.close()


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


def make_app(deps: bool, closing: bool = False) -> web.Application:
    session = ClosingSessionModule() if closing else SessionModule()
    server = Server(
        controllers=[WithDeps if deps else NoDeps],
        modules=[SingletonsModule(), session] if deps else [],
        allowed_origins="*",
        compress=False,
    )
    app = web.Application()
    server.mount(app, "/ws")
    return app


def main() -> None:
    parser = port_parser(__doc__.splitlines()[0])
    parser.add_argument("--deps", action="store_true", help="the controller with dependencies")
    parser.add_argument(
        "--yield",
        dest="closing",
        action="store_true",
        help="with --deps: the connection-scoped dependency from a provider that yields it",
    )
    args = parser.parse_args()
    if args.closing and not args.deps:
        parser.error("--yield needs --deps")
    name = "wsmvc-di-yield" if args.closing else "wsmvc-di" if args.deps else "wsmvc-nodeps"
    run(make_app(args.deps, args.closing), args.port, name)


if __name__ == "__main__":
    main()
