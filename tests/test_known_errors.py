"""neffos' known errors (``RegisterKnownError``) in wsmvc: ``@known_error`` classes (issue 11).

On the wire a known error is only its text, as every error answer (checked with a raw
client); the receiving side, a ``wsmvc.dial`` client or the server, makes the registered
class from that text, for asks and for refused connects, joins and leaves, so code can
``except`` it; a server raising one answers with its text, never the generic one.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

import wsmvc
from wsmvc import (
    BadNamespace,
    BadRoom,
    Conn,
    EventError,
    Message,
    NSConn,
    Server,
    known_error,
)
from wsmvc.errors import InvalidPayload, WriteClosed, known_errors
from wsmvc.protocol import ERR_BAD_NAMESPACE, ERR_BAD_ROOM, ERR_INVALID_PAYLOAD, ERR_WRITE_CLOSED

from .wire_support import Serve, T, expect, ready


@known_error
class RoomFull(EventError):
    """No seat left."""

    text = "room is full"


@known_error
class Banned(EventError):
    """This client may not come in."""

    text = "you are banned"


class Unregistered(EventError):
    """An ordinary EventError subclass: its text is not known."""


def server(**options: Any) -> Server:
    def join_game(ns: NSConn, msg: Message) -> None:
        raise RoomFull()

    def connect(ns: NSConn, msg: Message) -> None:
        request = ns.conn.request
        if request is not None and request.query.get("who") == "mallory":
            raise Banned()

    def room_join(ns: NSConn, msg: Message) -> None:
        if msg.room == "full":
            raise RoomFull()

    def shout(ns: NSConn, msg: Message) -> None:
        raise Unregistered("not known")

    def plain(ns: NSConn, msg: Message) -> None:
        raise EventError("room is full")  # the text makes it the known class anyway

    return Server(
        {
            "default": {
                "join-game": join_game,
                "_OnNamespaceConnect": connect,
                "_OnRoomJoin": room_join,
                "shout": shout,
                "plain": plain,
            }
        },
        **options,
    )


_clients: list[wsmvc.ClientConn] = []


async def dial(url: str, events: dict[str, Any] | None = None) -> wsmvc.ClientConn:
    client = await wsmvc.dial(url, {"default": events or {}}, timeout=T, ask_timeout=T)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


async def test_the_wire_carries_only_the_text(serve: Serve) -> None:
    url = await serve(server())
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$1;default;;join-game;0;0;")
        await expect(ws, "$1;default;;join-game;1;0;room is full")


async def test_an_ask_raises_the_registered_class(serve: Serve) -> None:
    url = await serve(server())
    client = await dial(url)
    ns = await client.connect("default", timeout=T)
    with pytest.raises(RoomFull) as raised:
        await ns.ask("join-game", timeout=T)
    assert raised.value.text == "room is full"
    assert isinstance(raised.value, EventError)  # `except EventError` still catches it
    # An EventError raised with a known text is that known error too.
    with pytest.raises(RoomFull):
        await ns.ask("plain", timeout=T)
    # An unregistered subclass's text arrives as a plain EventError.
    with pytest.raises(EventError) as plain:
        await ns.ask("shout", timeout=T)
    assert type(plain.value) is EventError
    assert plain.value.text == "not known"


async def test_refused_connects_joins_and_leaves(serve: Serve) -> None:
    url = await serve(server())
    mallory = await dial(url + "?who=mallory")
    with pytest.raises(Banned):
        await mallory.connect("default", timeout=T)
    client = await dial(url)
    ns = await client.connect("default", timeout=T)
    with pytest.raises(RoomFull):
        await ns.join_room("full", timeout=T)
    assert list(ns.rooms) == []
    await ns.join_room("lobby", timeout=T)
    # neffos' own known errors, raised locally and from the server's answers alike.
    with pytest.raises(BadRoom):
        await ns.leave_room("never-joined", timeout=T)
    with pytest.raises(BadNamespace):
        await client.connect("undeclared", timeout=T)


async def test_the_server_side_resolves_a_clients_answer(serve: Serve) -> None:
    """A server's ask answered with a known error by the client raises it on the server."""
    got: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def question(ns: NSConn, msg: Message) -> None:
        try:
            await ns.ask("question", timeout=T)
        except Exception as exc:
            got.set_result(exc)

    def refuse(ns: NSConn, msg: Message) -> None:
        raise Banned()

    url = await serve(Server({"default": {"start": question}}))
    client = await dial(url, {"question": refuse})
    ns = await client.connect("default", timeout=T)
    ns.emit("start")
    exc = await asyncio.wait_for(got, T)
    assert isinstance(exc, Banned) and exc.text == "you are banned"


async def test_an_error_for_a_plain_emit_can_be_resolved(serve: Serve) -> None:
    """A plain emit's error arrives as ``msg.err`` (a text, as in neffos); ``EventError``
    of it is the known class."""
    errors: asyncio.Queue[str] = asyncio.Queue()

    def on_answer(ns: NSConn, msg: Message) -> None:
        errors.put_nowait(msg.err)

    url = await serve(server())
    client = await dial(url, {"join-game": on_answer})
    ns = await client.connect("default", timeout=T)
    ns.emit("join-game")
    text = await asyncio.wait_for(errors.get(), T)
    assert isinstance(EventError(text), RoomFull)


async def test_a_known_error_is_never_the_generic_text(serve: Serve) -> None:
    """Not even with a server-wide exception handler for every Exception."""

    def everything(exc: Exception, ns: NSConn | None, msg: Message) -> str:
        return "handled"

    url = await serve(server(exception_handlers={Exception: everything}))
    client = await dial(url)
    ns = await client.connect("default", timeout=T)
    with pytest.raises(RoomFull):
        await ns.ask("join-game", timeout=T)


# -- registration ---------------------------------------------------------------------------


def test_neffos_own_known_errors() -> None:
    assert known_errors()[ERR_BAD_NAMESPACE] is BadNamespace
    assert known_errors()[ERR_BAD_ROOM] is BadRoom
    assert known_errors()[ERR_WRITE_CLOSED] is WriteClosed
    assert known_errors()[ERR_INVALID_PAYLOAD] is InvalidPayload
    assert type(EventError("bad namespace")) is BadNamespace
    assert BadNamespace().text == "bad namespace"


def test_a_known_error_is_an_ordinary_exception() -> None:
    again = pickle.loads(pickle.dumps(RoomFull()))
    assert type(again) is RoomFull and again.text == "room is full"
    assert str(RoomFull()) == "room is full"
    assert RoomFull("room 7 is full").text == "room 7 is full"  # not the known text any more
    assert type(EventError("room 7 is full")) is EventError


def test_registration_mistakes() -> None:
    with pytest.raises(TypeError, match="EventError subclasses"):
        known_error(ValueError)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="EventError subclasses"):
        known_error(EventError)

    class NoText(EventError):
        pass

    with pytest.raises(TypeError, match="needs a text of its own"):
        known_error(NoText)

    class Needy(EventError):
        text = "needy"

        def __init__(self, who: str) -> None:
            super().__init__(f"{who} is needy")

    with pytest.raises(TypeError, match="must work without arguments"):
        known_error(Needy)

    class Impostor(EventError):
        text = "room is full"

    with pytest.raises(ValueError, match="already the text of the known error"):
        known_error(Impostor)
    assert known_errors()["room is full"] is RoomFull


def test_a_reloaded_module_replaces_its_class() -> None:
    namespace: dict[str, Any] = {"__name__": "reloaded_module"}
    code = (
        "from wsmvc import EventError, known_error\n"
        "@known_error\n"
        "class Gone(EventError):\n"
        "    text = 'gone away'\n"
    )
    exec(code, namespace)
    first = namespace["Gone"]
    exec(code, namespace)  # the same module and name again, as importlib.reload does
    assert known_errors()["gone away"] is namespace["Gone"] is not first


async def test_local_refusals_too(serve: Serve) -> None:
    """A local hook's refusal (this side's own connect) is the known class as well."""

    def local_refusal(ns: NSConn, msg: Message) -> None:
        if msg.local:
            raise Banned()

    url = await serve(server())
    client = await wsmvc.dial(
        url, {"default": {"_OnNamespaceConnect": local_refusal}}, timeout=T, ask_timeout=T
    )
    _clients.append(client)
    with pytest.raises(Banned):
        await client.connect("default", timeout=T)
    assert isinstance(client, Conn)
