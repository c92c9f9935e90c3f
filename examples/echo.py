"""The interop app: a neffos echo server at path ``/echo``, written as controllers.

    python examples/echo.py --host 127.0.0.1 --port 8080

Namespace ``default``: every connect allowed; rooms may be joined and left freely; event
``chat`` emits ``chat`` back to the sender with the same body (into the same room when it
came in one); event ``ask`` replies ``pong:`` + body; event ``askerr`` fails with the error
text ``ask failed``. Namespace ``forbidden``: connect refused with ``forbidden namespace``.
Namespace ``default2``: declared with no events, so the server can connect a client to it
(``server_connect``). Any other namespace: the protocol's ``bad namespace``.

Test hooks (used by the interop tests): event ``server_ask`` makes the server ask the
client ``question`` with the same body and answer the original ask with the client's reply;
``server_join`` makes the server join the client to the room named in the body;
``server_connect`` connects the client to the namespace named in the body;
``binary`` answers with the body reversed, in a binary frame; ``broadcast`` sends ``chat``
with the body to every other connection of the namespace; ``kick`` disconnects the client's
namespace and then tries to answer (the client's ask ends with ``bad namespace``);
``three_then_close`` emits ``chat`` three times (bodies ``0``, ``1``, ``2``) and closes the
connection with 4002. A client whose upgrade request carries ``X-Reject: <reason>`` is
refused with that reason.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from wsmvc import Conn, EventError, Message, NSConn, Reject, Reply, Server, controller, event


@controller(namespace="default")
class EchoController:
    """One instance per client connected to ``default``."""

    conn: NSConn  # this namespace of the client's connection
    websocket: Conn  # the client's whole websocket connection

    @event("chat")
    def chat(self, msg: Message) -> None:
        if msg.room:
            room = self.conn.room(msg.room)
            if room is not None:
                room.emit("chat", msg.body)
                return
        self.conn.emit("chat", msg.body)

    @event("ask")
    def ask(self, msg: Message) -> bytes:
        return b"pong:" + msg.body

    @event("askerr")
    def askerr(self, msg: Message) -> None:
        raise EventError("ask failed")

    @event("binary")
    def binary(self, msg: Message) -> Reply:
        # The answer to a binary message goes out in a binary frame.
        return Reply(msg.body[::-1])

    @event("server_ask")
    async def server_ask(self, msg: Message) -> bytes:
        answer = await self.conn.ask("question", msg.body, timeout=5)
        return b"client said:" + answer.body

    @event("server_join")
    async def server_join(self, msg: Message) -> bytes:
        await self.conn.join_room(msg.text, timeout=5)
        return b"joined:" + msg.body

    @event("server_connect")
    async def server_connect(self, msg: Message) -> bytes:
        await self.websocket.connect(msg.text, timeout=5)
        return b"connected:" + msg.body

    @event("broadcast")
    async def broadcast(self, msg: Message) -> None:
        chat = Message(namespace="default", event="chat", body=msg.body)
        await self.conn.server.broadcast(chat, exclude=self.conn)

    @event("kick")
    async def kick(self, msg: Message) -> bytes:
        await self.conn.disconnect(timeout=5)
        return b"you are out"  # the namespace is gone: the client gets "bad namespace"

    @event("three_then_close")
    async def three_then_close(self, msg: Message) -> None:
        for i in range(3):
            self.conn.emit("chat", str(i))
        await self.websocket.close(4002, "three then close")


@controller(namespace="forbidden")
class ForbiddenController:
    """Refuses every connect: the client's ``connect()`` fails with this text."""

    @event
    def on_namespace_connect(self, msg: Message) -> None:
        raise EventError("forbidden namespace")


@controller(namespace="default2")
class SecondController:
    """No events: the namespace only exists, so ``server_connect`` can connect a client to it."""


def refuse_on_request(conn: Conn) -> None:
    """Refuse a client that asks for it with an ``X-Reject`` header (the interop tests)."""
    assert conn.request is not None
    reason = conn.request.headers.get("X-Reject")
    if reason:
        raise Reject(reason)


server = Server(
    allowed_origins="*",
    controllers=[EchoController, ForbiddenController, SecondController],
    on_connect=refuse_on_request,
)


def make_app() -> web.Application:
    app = web.Application()
    server.mount(app, "/echo")
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = make_app()
    ready = f"echo server ready on ws://{args.host}:{args.port}/echo"
    # run_app stops on SIGINT and SIGTERM: every websocket is closed with 1001 first.
    web.run_app(app, host=args.host, port=args.port, print=lambda _: print(ready, flush=True))
