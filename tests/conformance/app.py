"""The wsmvc app every client of the conformance suite talks to (``tests/conformance``).

    python tests/conformance/app.py --host 127.0.0.1 --port 8080

prints ``conformance app ready on ws://HOST:PORT/ws`` once it listens. One wsmvc server at
``/ws``; what each event does is what the scenarios (``scenarios.json``) count on:

Namespace ``default``:

* ``echo`` emits ``echoed`` back to the sender with the same body, in a binary frame if
  the message came in one, and into the message's room when the sender is in it;
* ``ask`` answers ``pong:`` + body (binary in, binary out); ``reverse`` answers the body
  back to front; ``askerr`` answers with the error :data:`ASK_ERROR`; ``silent`` answers
  nothing; ``sync`` answers ``sync`` (a barrier: the server handles a connection's
  messages in order, so whatever it sent that connection before is already there);
* ``server_ask`` asks the client ``question`` with the body and answers ``client said:`` +
  the client's answer, or ``client refused:`` + the text of its error answer;
  ``server_ask_nobody`` asks the client ``nobody`` (which no client handles) and answers
  the same way, or ``no answer`` when none came within :data:`NOBODY_TIMEOUT` seconds;
* ``to_room`` sends ``chat`` with the body to the other members of the message's room;
  ``to_others`` sends ``chat`` to every other connection of the namespace;
* ``push_binary`` emits ``bin`` with the bytes :data:`PUSHED_BYTES` (a binary frame);
* ``server_disconnect`` disconnects the sender from the namespace (server-initiated);
  ``server_connect`` connects it to the namespace named in the body, ``server_join`` joins
  it to the room named in the body (both answer what they did);
* ``kick`` closes the sender's connection with code :data:`KICK_CODE`;
* ``écho;✓`` (a name with a ';', escaped on the wire, and UTF-8) answers ``pong:`` + body;
* joining room ``vip`` is refused with ``vip only``; ``doom`` makes every later join of
  the room named in the body fail with ``room <name> is closed`` (a restore refused; the
  scenarios that use it have a server of their own).

Namespace ``other``: ``ask`` answers ``other:`` + body; ``server_disconnect`` as in
``default``. Namespace ``ns;✓`` (a ';' in a namespace name): ``ask`` answers ``ns:`` +
body. Namespace ``forbidden``: every
connect refused with ``forbidden namespace``. Any other namespace: the protocol's ``bad
namespace``. An upgrade whose URL has ``?reject=<reason>`` is refused in the handshake
(``on_connect`` raises ``Reject(reason)``); one with ``?refuse_reconnect=<reason>`` is
refused so when it says it reconnects (``X-Websocket-Reconnect``, a reconnecting client's).
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from wsmvc import AskTimeout, Conn, EventError, Message, NSConn, Reject, Reply, Server

ASK_ERROR = "ask failed; the reason\non two lines"
NOBODY_TIMEOUT = 0.5  # seconds the server waits for the answer to "nobody"
PUSHED_BYTES = b"\x00\x01;\xfe\xff"
KICK_CODE = 4001
DOOMED: set[str] = set()  # rooms whose joins are refused from now on (doom)


def echo(ns: NSConn, msg: Message) -> None:
    room = msg.room if msg.room and ns.room(msg.room) is not None else ""
    ns.conn.write(
        Message(namespace=ns.namespace, room=room, event="echoed", body=msg.body, binary=msg.binary)
    )


def ask(ns: NSConn, msg: Message) -> Reply:
    return Reply(b"pong:" + msg.body)


def reverse(ns: NSConn, msg: Message) -> Reply:
    return Reply(msg.body[::-1])


def askerr(ns: NSConn, msg: Message) -> None:
    raise EventError(ASK_ERROR)


def silent(ns: NSConn, msg: Message) -> None:
    return None


def sync(ns: NSConn, msg: Message) -> Reply:
    return Reply(b"sync")


async def server_ask(ns: NSConn, msg: Message) -> Reply:
    try:
        answer = await ns.ask("question", msg.body, timeout=5)
    except EventError as exc:
        return Reply(b"client refused:" + exc.text.encode())
    return Reply(b"client said:" + answer.body)


async def server_ask_nobody(ns: NSConn, msg: Message) -> Reply:
    try:
        answer = await ns.ask("nobody", msg.body, timeout=NOBODY_TIMEOUT)
    except EventError as exc:
        return Reply(b"client refused:" + exc.text.encode())
    except AskTimeout:
        return Reply(b"no answer")
    return Reply(b"client said:" + answer.body)


async def to_room(ns: NSConn, msg: Message) -> None:
    chat = Message(namespace=ns.namespace, room=msg.room, event="chat", body=msg.body)
    await ns.server.broadcast(chat, exclude=ns)


async def to_others(ns: NSConn, msg: Message) -> None:
    await ns.broadcast_others("chat", msg.body)


def push_binary(ns: NSConn, msg: Message) -> None:
    ns.emit_binary("bin", PUSHED_BYTES)


async def server_disconnect(ns: NSConn, msg: Message) -> None:
    await ns.disconnect(timeout=5)


async def server_connect(ns: NSConn, msg: Message) -> Reply:
    await ns.conn.connect(msg.text, timeout=5)
    return Reply(b"connected:" + msg.body)


async def server_join(ns: NSConn, msg: Message) -> Reply:
    await ns.join_room(msg.text, timeout=5)
    return Reply(b"joined:" + msg.body)


async def kick(ns: NSConn, msg: Message) -> None:
    await ns.conn.close(KICK_CODE, "kicked")


def other_ask(ns: NSConn, msg: Message) -> Reply:
    return Reply(b"other:" + msg.body)


def doom(ns: NSConn, msg: Message) -> None:
    DOOMED.add(msg.text)


def semicolon_ask(ns: NSConn, msg: Message) -> Reply:
    return Reply(b"ns:" + msg.body)


def on_room_join(ns: NSConn, msg: Message) -> None:
    if msg.room == "vip":
        raise EventError("vip only")
    if msg.room in DOOMED:
        raise EventError(f"room {msg.room} is closed")


def refuse_forbidden(ns: NSConn, msg: Message) -> None:
    raise EventError("forbidden namespace")


def on_connect(conn: Conn) -> None:
    assert conn.request is not None
    query = conn.request.query
    reason = query.get("reject")
    if reason:
        raise Reject(reason)
    reason = query.get("refuse_reconnect")
    if reason and conn.was_reconnected:
        raise Reject(reason)


server = Server(
    {
        "default": {
            "echo": echo,
            "ask": ask,
            "reverse": reverse,
            "askerr": askerr,
            "silent": silent,
            "sync": sync,
            "server_ask": server_ask,
            "server_ask_nobody": server_ask_nobody,
            "to_room": to_room,
            "to_others": to_others,
            "push_binary": push_binary,
            "server_disconnect": server_disconnect,
            "server_connect": server_connect,
            "server_join": server_join,
            "kick": kick,
            "doom": doom,
            "écho;✓": ask,
            "_OnRoomJoin": on_room_join,
        },
        "other": {"ask": other_ask, "server_disconnect": server_disconnect},
        "ns;✓": {"ask": semicolon_ask},
        "forbidden": {"_OnNamespaceConnect": refuse_forbidden},
    },
    on_connect=on_connect,
)


def make_app() -> web.Application:
    app = web.Application()
    server.mount(app, "/ws")
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ready = f"conformance app ready on ws://{args.host}:{args.port}/ws"
    # run_app stops on SIGINT and SIGTERM: every websocket is closed with 1001 first.
    web.run_app(
        make_app(), host=args.host, port=args.port, print=lambda _: print(ready, flush=True)
    )
