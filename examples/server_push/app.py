"""Server push: the server sends to clients from outside any event handler.

    python examples/server_push/app.py --host 127.0.0.1 --port 8080 --interval-ms 1000

Clients connect to namespace ``live`` at ``/ws``.

* A background task, started with the application and cancelled when it stops, broadcasts
  ``Tick`` every ``--interval-ms`` milliseconds to every connected client: a JSON body
  ``{"n": <count>, "time": <ISO 8601, UTC>}``. Clients that joined the room ``slow`` also
  get ``SlowTick`` on every tenth tick (a room broadcast).
* ``POST /ask/<id>`` asks the connection ``<id>`` the question ``Question`` with the request
  body, and answers the HTTP request with the client's reply: 200 and the answer, 404 when
  no such client is connected, 502 with the client's error text (or when it leaves first),
  504 when it does not answer within ``--ask-timeout`` seconds.
* ``POST /notify`` broadcasts ``Notice`` with the request body to every client (``?room=``
  to one room); it answers how many clients of this process it reached.
* ``GET /clients`` lists the connected ids (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from wsmvc import AskTimeout, ConnectionClosed, EventError, Message, Server, controller

WS_PATH = "/ws"
NAMESPACE = "live"
SERVER = web.AppKey("server", Server)
INTERVAL = web.AppKey("interval", float)
ASK_TIMEOUT = web.AppKey("ask_timeout", float)

log = logging.getLogger("server-push")


@controller(namespace=NAMESPACE)
class Live:
    """Nothing to handle: clients only listen (and answer the server's questions).

    Clients may join and leave rooms (``slow``) freely; no handler is needed for that.
    """


# -- pushing from a background task -------------------------------------------------------


async def tick_forever(server: Server, interval: float) -> None:
    """Broadcast a Tick every ``interval`` seconds, on a steady schedule."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while True:
        n += 1
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        body = json.dumps({"n": n, "time": now}).encode()
        # broadcast() never waits for slow clients: it queues the same bytes for each one.
        await server.broadcast(Message(namespace=NAMESPACE, event="Tick", body=body))
        if n % 10 == 0:
            slow = Message(namespace=NAMESPACE, room="slow", event="SlowTick", body=body)
            await server.broadcast(slow)
        # Sleep until the next slot (not `interval` after this one: no drift).
        await asyncio.sleep(max(0.0, start + n * interval - loop.time()))


async def ticker(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the ticker runs from startup until the application stops."""
    task = asyncio.create_task(tick_forever(app[SERVER], app[INTERVAL]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# -- pushing from HTTP endpoints ----------------------------------------------------------


async def ask_client(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    conn_id = request.match_info["id"]
    if not any(conn.namespace(NAMESPACE) for conn in server.get_connections(conn_id)):
        return web.Response(status=404, text=f"no client {conn_id!r} is connected\n")
    question = Message(namespace=NAMESPACE, event="Question", body=await request.read())
    try:
        answer = await server.ask(question, to=conn_id, timeout=request.app[ASK_TIMEOUT])
    except AskTimeout:
        return web.Response(status=504, text=f"{conn_id} did not answer in time\n")
    except ConnectionClosed:
        return web.Response(status=502, text=f"{conn_id} left before answering\n")
    except EventError as exc:
        return web.Response(status=502, text=f"{conn_id} answered with an error: {exc.text}\n")
    return web.Response(body=answer.body, content_type="text/plain")


async def notify(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    room = request.query.get("room", "")
    msg = Message(namespace=NAMESPACE, room=room, event="Notice", body=await request.read())
    reached = server.deliver(msg)  # this process only; broadcast() also feeds an exchange
    return web.json_response({"reached": reached})


async def clients(request: web.Request) -> web.Response:
    members = request.app[SERVER].namespace_members(NAMESPACE)
    return web.json_response(sorted(ns.id for ns in members))


def make_app(*, interval: float, ask_timeout: float) -> web.Application:
    server = Server(controllers=[Live])
    app = web.Application()
    app[SERVER] = server
    app[INTERVAL] = interval
    app[ASK_TIMEOUT] = ask_timeout
    server.mount(app, WS_PATH)
    app.router.add_post("/ask/{id}", ask_client)
    app.router.add_post("/notify", notify)
    app.router.add_get("/clients", clients)
    app.cleanup_ctx.append(ticker)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--interval-ms", type=float, default=1000.0, help="milliseconds between two ticks"
    )
    parser.add_argument(
        "--ask-timeout", type=float, default=5.0, help="seconds POST /ask waits for the client"
    )
    args = parser.parse_args()
    if args.interval_ms <= 0:
        parser.error("--interval-ms must be positive")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = make_app(interval=args.interval_ms / 1000, ask_timeout=args.ask_timeout)
    ready = f"server push example ready on ws://{args.host}:{args.port}{WS_PATH}"
    # run_app stops on SIGINT and SIGTERM: every websocket is closed with 1001, then the
    # ticker is stopped.
    web.run_app(app, host=args.host, port=args.port, print=lambda _: print(ready, flush=True))


if __name__ == "__main__":
    main()
