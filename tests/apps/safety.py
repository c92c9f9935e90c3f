"""A server for the neffos.js safety tests (``tests/interop/test_safety_js.py``), run as a
child process.

    python tests/apps/safety.py --host 127.0.0.1 --port 8080

Namespace ``default``: ``bytes`` answers with bytes that are not UTF-8 (the server sends
them in a binary frame), ``emit`` pushes such bytes as the event ``data``, ``text``
answers ``still here``; ``unknown`` has no handler (an error answer quotes its name cut
short); rooms are bounded to 2 per namespace.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from wsmvc import Message, NSConn, Server

NOT_UTF8 = b"\xff\xfe\x00 not utf-8 \x80"


def answer_bytes(ns: NSConn, msg: Message) -> bytes:
    return NOT_UTF8


def emit_bytes(ns: NSConn, msg: Message) -> None:
    ns.emit("data", NOT_UTF8)


def text(ns: NSConn, msg: Message) -> str:
    return "still here"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = web.Application()
    server = Server(
        {"default": {"bytes": answer_bytes, "emit": emit_bytes, "text": text}},
        allowed_origins="*",
        max_rooms=2,
    )
    server.mount(app, "/ws")
    ready = f"safety server ready on ws://{args.host}:{args.port}/ws"
    web.run_app(app, host=args.host, port=args.port, print=lambda _: print(ready, flush=True))


if __name__ == "__main__":
    main()
