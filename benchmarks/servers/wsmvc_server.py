"""Benchmark server: wsmvc on aiohttp, neffos protocol at ``/ws``.

Namespace ``default``: event ``ask`` answers with the body; event ``fanout`` broadcasts
``chat`` with the body to every other connection of the namespace. ``--recovery``: with
``Server(recovery=Recovery())`` (the setup ``wsmvc-recovery``, whose clients ask for it).
``--metrics``: ``PrometheusMetrics().instrument(server)`` and ``/metrics`` served (the setup
``wsmvc-metrics``: the taps on, every message counted).
"""

from __future__ import annotations

import sys

from _common import port_parser, run
from aiohttp import web

from wsmvc import Message, NSConn, Server

# The defaults users get (deflate when offered); the recovery setup adds only recovery
# (imported only then: a --baseline copy of wsmvc may predate it).
RECOVERY = "--recovery" in sys.argv
METRICS = "--metrics" in sys.argv
if RECOVERY:
    from wsmvc import Recovery

    server = Server(allowed_origins="*", recovery=Recovery())
else:
    server = Server(allowed_origins="*")
if METRICS:
    from wsmvc.metrics import PrometheusMetrics

    metrics = PrometheusMetrics(events=["chat"])  # "chat": broadcast, with no handler here


@server.on("default", "ask")
def ask(ns: NSConn, msg: Message) -> bytes:
    return msg.body


@server.on("default", "fanout")
async def fanout(ns: NSConn, msg: Message) -> None:
    await ns.server.broadcast(Message(namespace="default", event="chat", body=msg.body), exclude=ns)


def make_app() -> web.Application:
    app = web.Application()
    if METRICS:
        metrics.instrument(server)  # after the handlers: their names are the labels
        app.router.add_get("/metrics", metrics.handler)
    server.mount(app, "/ws")
    return app


if __name__ == "__main__":
    parser = port_parser(__doc__.splitlines()[0])
    parser.add_argument("--recovery", action="store_true", help="Server(recovery=Recovery())")
    parser.add_argument("--metrics", action="store_true", help="PrometheusMetrics, /metrics")
    args = parser.parse_args()
    name = "wsmvc-recovery" if args.recovery else "wsmvc-metrics" if args.metrics else "wsmvc"
    run(make_app(), args.port, name)
