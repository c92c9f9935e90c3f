"""A server for the memory-bound tests (``tests/test_bounds.py``), run as a child process.

    python tests/apps/flood.py --host 127.0.0.1 --port 8080

Namespace ``default`` with the server's default bounds: ``ask_me`` asks the client ``q``
(1 s timeout) and answers ``answered`` or ``timed out``; ``count`` counts the messages it
gets; ``total`` answers that count.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from wsmvc import AskTimeout, Message, NSConn, Server

counted = 0


async def ask_me(ns: NSConn, msg: Message) -> str:
    try:
        await ns.ask("q", timeout=1.0)
    except AskTimeout:
        return "timed out"
    return "answered"


def count(ns: NSConn, msg: Message) -> None:
    global counted
    counted += 1


def total(ns: NSConn, msg: Message) -> str:
    return str(counted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = web.Application()
    server = Server({"default": {"ask_me": ask_me, "count": count, "total": total}})
    server.mount(app, "/ws")
    ready = f"flood server ready on ws://{args.host}:{args.port}/ws"
    web.run_app(app, host=args.host, port=args.port, print=lambda _: print(ready, flush=True))


if __name__ == "__main__":
    main()
