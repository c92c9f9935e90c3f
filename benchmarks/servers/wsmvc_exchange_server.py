"""Benchmark server: wsmvc with an exchange (Redis or NATS) or without one (in-process).

Namespace ``default``: ``fanout`` broadcasts ``chat`` with the body to every other connection
of the namespace, on this server and, through the exchange, on the others; ``probe``
answers with the body once the broker has every subscription asked of it so far
(``exchange.flush()``), so a client that got the answer knows that the connections that
arrived before it are reachable; ``watch`` makes the asking connection a watcher: from then on
every presence change of a room named ``watch*`` (on any server) is sent to it as ``chat``,
``<kind>:<room>:<count>``, with ``server.presence.count`` of that room at that moment (the
exchange-join scenario's convergence; nothing watches before, so the measured load runs
without a presence callback). The ready line comes once the broker is connected.
"""

from __future__ import annotations

from _common import port_parser, run
from aiohttp import web

from wsmvc import Message, NSConn, Server
from wsmvc.exchange.broker import BrokerExchange
from wsmvc.presence import Change

BROKER_TIMEOUT_S = 10.0
WATCHED = "watch"  # the prefix of the rooms whose presence changes a watcher is told of


def make_exchange(kind: str, url: str | None) -> BrokerExchange | None:
    if kind == "none":
        return None
    if url is None:
        raise SystemExit(f"--exchange {kind} needs --broker URL")
    if kind == "redis":
        from wsmvc.exchange.redis import RedisExchange

        return RedisExchange(url)
    from wsmvc.exchange.nats import NatsExchange

    return NatsExchange(url)


def make_server(exchange: BrokerExchange | None) -> Server:
    server = Server(allowed_origins="*", compress=False, exchange=exchange)

    @server.on("default", "fanout")
    async def fanout(ns: NSConn, msg: Message) -> None:
        await ns.server.broadcast(
            Message(namespace="default", event="chat", body=msg.body), exclude=ns
        )

    @server.on("default", "probe")
    async def probe(ns: NSConn, msg: Message) -> bytes:
        if exchange is not None:
            await exchange.flush(BROKER_TIMEOUT_S)
        return msg.body

    @server.on("default", "watch")
    async def watch(ns: NSConn, msg: Message) -> bytes:
        def tell(change: Change) -> None:
            if change.namespace == "default" and change.room.startswith(WATCHED):
                count = server.presence.count(change.namespace, change.room)
                ns.emit("chat", f"{change.kind}:{change.room}:{count}")

        server.presence.on_change(tell)
        return msg.body

    return server


def main() -> None:
    parser = port_parser(__doc__.splitlines()[0])
    parser.add_argument("--exchange", choices=("none", "redis", "nats"), default="none")
    parser.add_argument("--broker", help="redis://127.0.0.1:PORT/0 or nats://127.0.0.1:PORT")
    args = parser.parse_args()
    exchange = make_exchange(args.exchange, args.broker)
    app = web.Application()
    make_server(exchange).mount(app, "/ws")

    async def ready() -> None:
        if exchange is not None:
            await exchange.wait_connected(BROKER_TIMEOUT_S)
            await exchange.flush(BROKER_TIMEOUT_S)

    run(app, args.port, f"wsmvc-{args.exchange}", ready)


if __name__ == "__main__":
    main()
