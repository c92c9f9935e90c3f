"""Progress from a worker to one user's browser tabs: the websocket side.

    python examples/worker_progress/app.py --broker redis://127.0.0.1:6379/0 --port 8080

Clients connect to namespace ``jobs`` at ``/ws`` with their user name as the connection
id (``?user=alice``, or neffos.js' ``X-Websocket-Header-X-User`` header): every tab of
one user has the same id, so a message ``to="alice"`` reaches all of them, on whichever
server of the cluster each tab is. The server itself does nothing with jobs: a worker
process (``worker.py``) sends the progress through the broker with ``wsmvc.emitter``.
``--broker`` takes a ``redis://`` or ``nats://`` URL.
"""

from __future__ import annotations

import argparse
import logging
import uuid

from aiohttp import web

from wsmvc import Server, controller
from wsmvc.exchange import NatsExchange, RedisExchange
from wsmvc.exchange.broker import BrokerExchange

WS_PATH = "/ws"
NAMESPACE = "jobs"


@controller(namespace=NAMESPACE)
class Jobs:
    """Nothing to handle: tabs listen for ``Progress`` and ``Done``, and answer ``Seen?``
    (the worker's question to one tab) themselves."""


def user_id(request: web.Request) -> str:
    """The user's name from ``?user=`` (or the X-User header), else a random id."""
    return request.query.get("user") or request.headers.get("X-User") or str(uuid.uuid4())


def exchange_for(url: str) -> BrokerExchange:
    """The exchange for a ``redis://`` or ``nats://`` URL (the worker uses the same)."""
    if url.startswith("redis://"):
        return RedisExchange(url)
    if url.startswith("nats://"):
        return NatsExchange(url)
    raise SystemExit(f"--broker must be a redis:// or nats:// URL, not {url!r}")


def make_app(broker: str) -> web.Application:
    server = Server(controllers=[Jobs], exchange=exchange_for(broker), id_generator=user_id)
    app = web.Application()
    server.mount(app, WS_PATH)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="redis://... or nats://...")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ready = f"worker progress example ready on ws://{args.host}:{args.port}{WS_PATH}"
    web.run_app(
        make_app(args.broker),
        host=args.host,
        port=args.port,
        print=lambda _: print(ready, flush=True),
    )


if __name__ == "__main__":
    main()
