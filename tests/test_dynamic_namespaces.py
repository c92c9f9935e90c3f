"""Dynamic namespaces (issue 11): a controller or handlers for every namespace whose name
fits a pattern (``"room-{id}"``, ``"game-{n:\\d+}"``), the matched name and its parts
available as ``NSConn.namespace`` and ``NSConn.params``; exact names win over patterns,
the first pattern over later ones. Real server on loopback, real clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

import wsmvc
from wsmvc import EventError, HandlerTable, Message, NSConn, Server, controller, event
from wsmvc.dynamic import NamespacePattern, is_pattern

from .wire_support import Serve, T, expect, handshake

_clients: list[wsmvc.ClientConn] = []


async def dial(url: str, *namespaces: str, events: Any = None) -> wsmvc.ClientConn:
    table = {ns: dict(events or {}) for ns in namespaces}
    client = await wsmvc.dial(url, table, timeout=T, ask_timeout=T)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


@controller(namespace="room-{id}")
class Room:
    conn: NSConn

    def __init__(self) -> None:
        self.said: list[str] = []

    @event
    def on_namespace_connect(self, msg: Message) -> None:
        if self.conn.params["id"] == "closed":
            raise EventError(f"room {self.conn.params['id']} is closed")

    @event
    def on_where(self) -> str:
        return f"{self.conn.namespace} {dict(self.conn.params)}"

    @event
    async def on_say(self, msg: Message) -> None:
        self.said.append(msg.text)  # per client and room: a new instance each
        news = Message(self.conn.namespace, event="OnHeard", body=msg.body)
        await self.conn.server.broadcast(news, exclude=self.conn)

    @event
    def on_count(self) -> str:
        return str(len(self.said))


@controller(namespace="room-lobby")
class Lobby:
    @event
    def on_where(self) -> str:
        return "the lobby (exact)"


async def test_one_controller_for_every_matching_namespace(serve: Serve) -> None:
    server = Server(controllers=[Room])
    url = await serve(server)
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def on_heard(ns: NSConn, msg: Message) -> None:
        heard.put_nowait((ns.namespace, msg.text))

    alice = await dial(url, "room-7", "room-42", events={"OnHeard": on_heard})
    bob = await dial(url, "room-7", events={"OnHeard": on_heard})
    a7 = await alice.connect("room-7", timeout=T)
    a42 = await alice.connect("room-42", timeout=T)
    b7 = await bob.connect("room-7", timeout=T)
    assert (await a7.ask("OnWhere", timeout=T)).text == "room-7 {'id': '7'}"
    assert (await a42.ask("OnWhere", timeout=T)).text == "room-42 {'id': '42'}"
    # Each namespace connection has its own controller instance.
    a7.emit("OnSay", "hi seven")
    assert await asyncio.wait_for(heard.get(), T) == ("room-7", "hi seven")  # bob, in room-7
    assert (await a7.ask("OnCount", timeout=T)).text == "1"
    assert (await a42.ask("OnCount", timeout=T)).text == "0"
    assert (await b7.ask("OnCount", timeout=T)).text == "0"
    assert heard.empty()  # nothing leaked to room-42
    # The server side knows the concrete names: members, broadcasts, rooms are per name.
    assert sorted(ns.id for ns in server.namespace_members("room-7")) == sorted([alice.id, bob.id])
    assert [ns.params for ns in server.namespace_members("room-42")] == [{"id": "42"}]


async def test_hooks_see_the_params_and_may_refuse(serve: Serve) -> None:
    url = await serve(Server(controllers=[Room]))
    client = await dial(url, "room-closed", "room-open")
    with pytest.raises(EventError, match=r"^room closed is closed$"):
        await client.connect("room-closed", timeout=T)
    ns = await client.connect("room-open", timeout=T)
    assert ns.namespace == "room-open"


async def test_the_exact_name_wins_over_a_pattern(serve: Serve) -> None:
    server = Server(controllers=[Room, Lobby])
    url = await serve(server)
    client = await dial(url, "room-lobby", "room-1")
    lobby = await client.connect("room-lobby", timeout=T)
    one = await client.connect("room-1", timeout=T)
    assert (await lobby.ask("OnWhere", timeout=T)).text == "the lobby (exact)"
    assert (await one.ask("OnWhere", timeout=T)).text == "room-1 {'id': '1'}"
    [server_lobby] = server.namespace_members("room-lobby")
    assert server_lobby.params == {}
    [server_one] = server.namespace_members("room-1")
    assert server_one.params == {"id": "1"}


async def test_the_first_pattern_registered_wins(serve: Serve) -> None:
    def named(text: str) -> Any:
        return lambda ns, msg: f"{text} {dict(ns.params)}"

    table = HandlerTable()
    table.add("chat-{topic}", "which", named("chat"))
    table.add("{anything:.+}", "which", named("anything"))
    table.add("chat-news", "which", named("exact"))
    url = await serve(Server(table))
    client = await dial(url, "chat-python", "weather", "chat-news")
    python = await client.connect("chat-python", timeout=T)
    weather = await client.connect("weather", timeout=T)
    news = await client.connect("chat-news", timeout=T)
    assert (await python.ask("which", timeout=T)).text == "chat {'topic': 'python'}"
    assert (await weather.ask("which", timeout=T)).text == "anything {'anything': 'weather'}"
    assert (await news.ask("which", timeout=T)).text == "exact {}"
    assert table.patterns == ["chat-{topic}", "{anything:.+}"]


async def test_a_regex_placeholder_and_names_that_do_not_fit(serve: Serve) -> None:
    server = Server()

    @server.on(r"game-{n:\d+}", "which")
    def which(ns: NSConn, msg: Message) -> str:
        return ns.params["n"]

    url = await serve(server)
    client = await dial(url, "game-12", "game-x", "game-", "game-12/3")
    game = await client.connect("game-12", timeout=T)
    assert (await game.ask("which", timeout=T)).text == "12"
    for name in ("game-x", "game-", "game-12/3"):  # the whole name must fit
        with pytest.raises(wsmvc.BadNamespace):
            await client.connect(name, timeout=T)


async def test_on_the_wire(serve: Serve) -> None:
    """A neffos client sees ordinary namespaces: connect, the answers, bad namespace."""
    url = await serve(Server(controllers=[Room]))
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$1;room-9;;_OnNamespaceConnect;0;0;")
        await expect(ws, "$1;;;;;;")
        await ws.send_str("$2;room-9;;OnWhere;0;0;")
        await expect(ws, "$2;room-9;;OnWhere;0;0;room-9 {'id': '9'}")
        await ws.send_str("$3;hall-9;;_OnNamespaceConnect;0;0;")
        await expect(ws, "$3;hall-9;;_OnNamespaceConnect;1;0;bad namespace")
        await ws.send_str("$4;room-{id};;_OnNamespaceConnect;0;0;")  # the template itself
        await expect(ws, "$4;room-{id};;_OnNamespaceConnect;1;0;bad namespace")


async def test_long_names_are_matched_but_not_remembered(serve: Serve) -> None:
    # Unbounded names: by default max_name_size (256 bytes) refuses such a connect before
    # any pattern is asked (tests/test_safety_edges.py).
    server = Server(controllers=[Room], max_name_size=None)
    url = await serve(server)
    long_id = "x" * 100_000
    client = await dial(url, f"room-{long_id}", "nope-" + long_id)
    ns = await client.connect(f"room-{long_id}", timeout=T)
    assert ns.namespace == f"room-{long_id}"
    with pytest.raises(wsmvc.BadNamespace):
        await client.connect("nope-" + long_id, timeout=T)
    assert all(len(name) <= 256 for name in server.handlers._matched)


async def test_a_controller_moved_to_a_pattern(serve: Serve) -> None:
    server = Server()
    handle = server.register(Lobby)
    handle.set_namespace("hall-{n}")
    url = await serve(server)
    client = await dial(url, "room-lobby", "hall-3")
    with pytest.raises(wsmvc.BadNamespace):
        await client.connect("room-lobby", timeout=T)
    hall = await client.connect("hall-3", timeout=T)
    assert (await hall.ask("OnWhere", timeout=T)).text == "the lobby (exact)"


def test_patterns() -> None:
    assert is_pattern("room-{id}") and is_pattern(r"{n:\d{2}}")
    assert not is_pattern("room") and not is_pattern("{}") and not is_pattern("{1}")
    assert NamespacePattern("room-{id}").match("room-7") == {"id": "7"}
    assert NamespacePattern("room-{id}").match("room-7/x") is None  # {id}: no slash
    assert NamespacePattern("/chat/{id}").match("/chat/x") == {"id": "x"}  # Socket.IO style
    assert NamespacePattern(r"{a}-{b:\d{2}}").match("x-12") == {"a": "x", "b": "12"}
    assert NamespacePattern(r"{a}-{b:\d{2}}").match("x-123") is None
    assert NamespacePattern("a.b{c}").match("aXbc") is None  # the literal part is literal
    with pytest.raises(ValueError, match="appears twice"):
        NamespacePattern("{id}-{id}")
    with pytest.raises(ValueError, match="brace outside"):
        NamespacePattern("{id}}")
    with pytest.raises(ValueError, match="namespace pattern"):
        NamespacePattern("{id:(}")
    with pytest.raises(ValueError, match="appears twice"):
        Server({"{x}{x}": {}})
    # A brace that is not a placeholder keeps a name exact, as before.
    assert "{}" in HandlerTable({"{}": {}}) and HandlerTable({"{}": {}}).patterns == []


def test_native_only_is_not_confused_by_patterns() -> None:
    table = HandlerTable({"": {"_OnNativeMessage": lambda ns, msg: None}})
    assert table.native_only
    table.declare("room-{id}")
    assert not table.native_only
