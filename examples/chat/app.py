"""The chat app: rooms, live online counts and typing notices, with wsmvc.js in the browser.

    python examples/chat/app.py --host 127.0.0.1 --port 8080 [--redis redis://127.0.0.1:6379/0]

Open http://127.0.0.1:8080, pick a name and chat. The page (``static/``) imports wsmvc.js,
the JavaScript client this server serves at ``/chat/wsmvc.js`` (``Server.mount``), so it
needs nothing from the internet, and talks to the controller below at ``/chat``, namespace
``chat``:

* the page joins and leaves rooms with ``nsConn.joinRoom`` and ``room.leave()``;
* it asks ``OnSay`` in a room: the answer is ``sent``, or the error text it shows;
* it emits ``OnTyping`` in a room while its user types.

In a room, the server sends ``OnChat`` (``{"from", "text", "at"}``) to every member,
``OnTyping`` (the typist's name) to the other members, and ``OnPresence``
(``{"count", "names", "rev"}``) to every member whenever someone joins or leaves.

Who is online comes from ``server.presence``, wsmvc's cluster-wide presence: every server
hears every join and leave (``presence.on_change``), its own and the other servers', and
sends the room's snapshot to its own members of that room (``server.deliver``).

The name comes from the ``X-Name`` header (the client's ``headers`` dial option; browsers
send it as ``?X-Websocket-Header-X-Name=...``) and is the connection id. ``--redis URL``
(or ``WSMVC_REDIS``) shares messages and presence with other instances through Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import re
import time
from pathlib import Path

from aiohttp import web

from wsmvc import EventError, Message, NSConn, Server, controller, event
from wsmvc.exchange import Exchange
from wsmvc.presence import Change

NAMESPACE = "chat"
PATH = "/chat"
STATIC = Path(__file__).resolve().parent / "static"
MAX_NAME = 24
MAX_ROOM = 32
MAX_MESSAGE = 500
ROOM_NAME = re.compile(rf"[\w-]{{1,{MAX_ROOM}}}")

log = logging.getLogger("chat")

# The rev of every OnPresence this process sends, one counter for all rooms. A page hears
# one server only (each server sends to its own members), and this server writes its
# snapshots in the order it numbers them, so the revs a page gets grow and it can drop one
# that arrives late. A restarted server starts again at 1: the page resets on reconnecting.
REVISIONS = itertools.count(1)


def name_of(request: web.Request) -> str:
    """The connection id: the name the page sent in the ``X-Name`` header."""
    return request.headers.get("X-Name", "").strip()


def presence_of(server: Server, room: str) -> Message:
    """The ``OnPresence`` message of ``room`` now: its distinct names on every server
    (two tabs of ``alice``, on one server or two, count once) and the next rev."""
    names = sorted({member.conn_id for member in server.presence.members(NAMESPACE, room)})
    body = {"count": len(names), "names": names, "rev": next(REVISIONS)}
    return Message(
        namespace=NAMESPACE, room=room, event="OnPresence", body=json.dumps(body).encode()
    )


def tell_the_rooms(server: Server) -> None:
    """Send a room's snapshot to this server's members of it whenever someone joins or
    leaves it, on any server: every server hears every change (a server that stopped or
    died shows as its members leaving), so each tells its own pages. ``server.deliver``
    sends to this process only; ``broadcast`` would reach the other servers too, which
    send their own.

    Changes that come together (a server gone with all its members, a newcomer learning
    the cluster) make one snapshot per room: the rooms are sent at the loop's next turn.
    """
    changed_rooms: dict[str, None] = {}  # in the order they changed

    def send() -> None:
        rooms = list(changed_rooms)
        changed_rooms.clear()
        for room in rooms:
            server.deliver(presence_of(server, room))

    def changed(change: Change) -> None:
        if change.namespace != NAMESPACE or not change.room:
            return
        if not changed_rooms:
            asyncio.get_running_loop().call_soon(send)
        changed_rooms[change.room] = None

    server.presence.on_change(changed)


@controller(namespace=NAMESPACE)
class ChatController:
    """One instance per browser tab connected to namespace ``chat``."""

    conn: NSConn

    @event
    def on_namespace_connect(self, msg: Message) -> None:
        # Checked here rather than in Server(on_connect=...), where wsmvc.js' dial would
        # reject with the reason: the page runs on neffos.js too, and neffos.js 0.1.34 with
        # its `reconnect` option redials a refused handshake forever (a refused namespace not).
        name = self.conn.id
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise EventError(f"pick a name of 1 to {MAX_NAME} characters")

    @event
    def on_namespace_connected(self, msg: Message) -> None:
        again = " again" if self.conn.conn.was_reconnected else ""
        log.info("%s connected%s", self.conn.id, again)

    @event
    def on_namespace_disconnect(self, msg: Message) -> None:
        log.info("%s disconnected", self.conn.id)

    @event
    def on_room_join(self, msg: Message) -> None:
        if not ROOM_NAME.fullmatch(msg.room):
            raise EventError(f"room names are 1 to {MAX_ROOM} letters, digits, - or _")

    @event
    def on_room_joined(self, msg: Message) -> None:
        log.info("%s joined #%s", self.conn.id, msg.room)
        # The room heard of the join from server.presence (tell_the_rooms). But a second tab
        # of a name already in the room changes nobody's presence, so no change comes for
        # it: the joining tab gets the room's snapshot here, whichever tab it is.
        room = self.conn.room(msg.room)
        if room is not None:
            snapshot = presence_of(self.conn.server, msg.room)
            room.emit(snapshot.event, snapshot.body)

    @event
    def on_room_left(self, msg: Message) -> None:
        # Also when the tab closes or the server stops: neffos leaves the rooms first.
        log.info("%s left #%s", self.conn.id, msg.room)

    @event
    async def on_say(self, msg: Message) -> str:
        if msg.room not in self.conn.rooms:
            raise EventError("join a room first")
        text = msg.text.strip()
        if not text:
            raise EventError("the message is empty")
        if len(text) > MAX_MESSAGE:
            raise EventError(
                f"the message is too long: {len(text)} characters, at most {MAX_MESSAGE}"
            )
        line = {"from": self.conn.id, "text": text, "at": int(time.time() * 1000)}
        chat = Message(
            namespace=NAMESPACE, room=msg.room, event="OnChat", body=json.dumps(line).encode()
        )
        await self.conn.server.broadcast(chat)  # the sender's tabs too: one order for all
        return "sent"

    @event
    async def on_typing(self, msg: Message) -> None:
        if msg.room not in self.conn.rooms:
            return
        notice = Message(
            namespace=NAMESPACE, room=msg.room, event="OnTyping", body=self.conn.id.encode()
        )
        # exclude= an id: none of the typist's own tabs, on any server.
        await self.conn.server.broadcast(notice, exclude=self.conn.id)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def make_app(redis_url: str | None = None) -> web.Application:
    exchange: Exchange | None = None
    if redis_url:
        from wsmvc.exchange.redis import RedisExchange

        exchange = RedisExchange(redis_url, prefix="wsmvc-chat")
    server = Server(controllers=[ChatController], exchange=exchange, id_generator=name_of)
    tell_the_rooms(server)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    server.mount(app, PATH)  # same origin as the page: the default allowed_origins fits
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--redis",
        default=os.environ.get("WSMVC_REDIS") or None,
        metavar="URL",
        help="share rooms with other instances through Redis (default: $WSMVC_REDIS)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def ready(_banner: str) -> None:
        via = f" (rooms shared through {args.redis})" if args.redis else ""
        print(f"chat ready on http://{args.host}:{args.port}/{via}", flush=True)

    # run_app stops on SIGINT and SIGTERM: every connection is closed (1001) and leaves its
    # rooms, so with --redis the pages of the other servers see the counts drop at once (a
    # killed server's members leave the others' presence within 8 seconds).
    web.run_app(make_app(args.redis), host=args.host, port=args.port, print=ready, access_log=None)


if __name__ == "__main__":
    main()
