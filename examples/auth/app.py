"""Authenticated websockets: a token checked before the upgrade, one connection id per user.

    python examples/auth/app.py --host 127.0.0.1 --port 8080
    python examples/auth/app.py --issue-token alice --groups staff   # prints a token

* An aiohttp middleware checks ``Authorization: Bearer <token>`` before the websocket
  handler runs, so a client without a valid token never gets a websocket: 401. Browsers
  cannot set headers on a ``WebSocket``; neffos.js sends its ``headers`` option as the query
  parameter ``X-Websocket-Header-Authorization`` instead. wsmvc turns such parameters into
  headers, but only inside its own handler, after the middlewares: so the middleware reads
  the query parameter itself.
* The connection id is the user's name (``id_generator`` reads what the middleware stored on
  the request), so every tab of one user shares one id and
  ``server.broadcast(msg, to="bob")`` reaches all of Bob's tabs.
* Rooms: joining ``staff`` needs the ``staff`` group (``on_room_join`` refuses with an
  ``EventError``); other rooms are open.

Namespace ``app``: ``Whoami`` answers the user's name and groups; ``Tell`` with a body
``<user>:<text>`` sends ``Told`` (``<sender>: <text>``) to every tab of ``<user>``;
``Say`` inside a joined room sends ``Said`` (``<sender>: <text>``) to the room's other
members.

Tokens are ``<payload>.<signature>`` (URL-safe base64), the payload being
``<user>|<group>,<group>`` and the signature its HMAC-SHA256 with the server's secret
(``--secret``, or the ``AUTH_EXAMPLE_SECRET`` environment variable).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable

import attrs
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from injector import Module, provider

from wsmvc import EventError, Message, NSConn, Server, controller, event

WS_PATH = "/ws"
NAMESPACE = "app"
QUERY_AUTHORIZATION = "x-websocket-header-authorization"  # neffos.js in a browser
USER_KEY = "user"  # where the middleware stores the User on the request
SECRET_KEY = web.AppKey("secret", bytes)
RESTRICTED_ROOMS = {"staff": "staff"}  # room -> the group it needs
DEFAULT_SECRET = "change-me"

log = logging.getLogger("auth-example")


# -- tokens -------------------------------------------------------------------------------


@attrs.frozen
class User:
    name: str
    groups: frozenset[str] = frozenset()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


def issue_token(secret: bytes, user: User) -> str:
    payload = f"{user.name}|{','.join(sorted(user.groups))}".encode()
    return f"{_b64(payload)}.{_b64(_sign(secret, payload))}"


def verify_token(secret: bytes, token: str) -> User | None:
    """The user a token was issued to, or ``None`` when it is malformed or forged."""
    encoded, dot, signature = token.partition(".")
    if not dot:
        return None
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
        name, bar, groups = payload.decode().partition("|")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not bar or not name or not hmac.compare_digest(mac, _sign(secret, payload)):
        return None
    return User(name, frozenset(g for g in groups.split(",") if g))


# -- the check before the upgrade ---------------------------------------------------------


def bearer_token(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, from the header or, as neffos.js
    sends it from a browser, from the ``X-Websocket-Header-Authorization`` query parameter."""
    value = request.headers.get("Authorization")
    if value is None:
        # Case-insensitive, like wsmvc's own conversion (which runs after middlewares).
        value = next(
            (v for k, v in request.query.items() if k.lower() == QUERY_AUTHORIZATION), None
        )
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@web.middleware
async def require_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # Only the upgrade (GET) is guarded: neffos.js probes the endpoint with HEAD, without
    # headers, before it reconnects, and any answer will do there.
    if request.path == WS_PATH and request.method == "GET":
        token = bearer_token(request)
        user = verify_token(request.app[SECRET_KEY], token) if token else None
        if user is None:
            log.info("refused %s: %s token", request.remote, "bad" if token else "no")
            raise web.HTTPUnauthorized(
                text="a valid bearer token is required\n",
                headers={"WWW-Authenticate": 'Bearer realm="wsmvc"'},
            )
        request[USER_KEY] = user
    return await handler(request)


def user_id(request: web.Request) -> str:
    """The connection id: the name of the user the middleware let in."""
    user: User = request[USER_KEY]
    return user.name


class AuthModule(Module):
    @provider
    def user(self, request: web.Request) -> User:
        # The upgrade request is injectable; the middleware left the user on it.
        found: User = request[USER_KEY]
        return found


# -- the controller -----------------------------------------------------------------------


@controller(namespace=NAMESPACE)
class AppController:
    conn: NSConn
    user: User

    @event
    def on_whoami(self) -> str:
        groups = ",".join(sorted(self.user.groups))
        return f"{self.user.name} [{groups}]"

    @event
    async def on_tell(self, msg: Message) -> str:
        target, sep, text = msg.text.partition(":")
        if not sep or not target:
            raise EventError("tell as <user>:<text>")
        tabs = len(self.conn.server.get_connections(target))
        if not tabs:
            raise EventError(f"{target} is not online")
        told = Message(namespace=NAMESPACE, event="Told", body=f"{self.user.name}: {text}".encode())
        await self.conn.server.broadcast(told, to=target)  # every tab of that user
        return f"told {target} ({tabs} tab{'s' if tabs > 1 else ''})"

    @event
    async def on_say(self, msg: Message) -> None:
        # Room membership is not checked on input (neffos never does): a client refused by
        # on_room_join could still send a message tagged with that room. Check it here.
        if not msg.room or self.conn.room(msg.room) is None:
            raise EventError("join the room first")
        said = Message(
            namespace=NAMESPACE,
            room=msg.room,
            event="Said",
            body=f"{self.user.name}: {msg.text}".encode(),
        )
        await self.conn.server.broadcast(said, exclude=self.conn)

    @event
    def on_room_join(self, msg: Message) -> None:
        needed = RESTRICTED_ROOMS.get(msg.room)
        if needed is not None and needed not in self.user.groups:
            raise EventError(f"room {msg.room!r} is for {needed} only")


def make_app(secret: bytes, allowed_origins: list[str] | None = None) -> web.Application:
    server = Server(
        controllers=[AppController],
        modules=[AuthModule()],
        id_generator=user_id,
        allowed_origins=allowed_origins or None,
    )
    app = web.Application(middlewares=[require_token])
    app[SECRET_KEY] = secret
    server.mount(app, WS_PATH)
    return app


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Logs the path without the query string: browsers send the token in it."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3fs',
            request.remote,
            request.method,
            request.path,
            response.status,
            time,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--secret",
        default=os.environ.get("AUTH_EXAMPLE_SECRET", DEFAULT_SECRET),
        help="the HMAC secret tokens are signed with (env AUTH_EXAMPLE_SECRET)",
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        help="a browser origin allowed to connect, e.g. http://localhost:3000 (repeatable;"
        " default: same origin only)",
    )
    parser.add_argument("--issue-token", metavar="USER", help="print a token for USER and exit")
    parser.add_argument("--groups", default="", help="with --issue-token: comma-separated groups")
    args = parser.parse_args()
    secret = args.secret.encode()
    if args.issue_token:
        groups = frozenset(g for g in args.groups.split(",") if g)
        print(issue_token(secret, User(args.issue_token, groups)))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.secret == DEFAULT_SECRET:
        log.warning("signing tokens with the default secret: set --secret for real use")
    ready = f"auth example ready on ws://{args.host}:{args.port}{WS_PATH}"
    # run_app stops on SIGINT and SIGTERM: every websocket is closed with 1001 first.
    web.run_app(
        make_app(secret, args.allowed_origin),
        host=args.host,
        port=args.port,
        access_log_class=PathOnlyAccessLogger,  # no query strings (tokens) in the log
        print=lambda _: print(ready, flush=True),
    )


if __name__ == "__main__":
    main()
