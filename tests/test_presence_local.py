"""``server.presence`` without an exchange (issue 10 §1): one process, real clients.

With no broker the presence answers for this server: counts, members and rooms of an id
follow the clients' connects, joins, leaves and closes, and ``on_change`` hears each of
them once per connection id (a second tab of the same id is no change). Every wait is on
an event with a timeout: the changes come through a queue, and a connection's end through
``on_disconnect``, which runs after its disconnect events (so after its presence left).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

import wsmvc
from wsmvc import Conn, Server
from wsmvc.presence import Change, Member

from .conftest import Serve

WAIT = 5.0

_clients: list[wsmvc.ClientConn] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


def id_from_name(request: web.Request) -> str:
    return request.headers.get("X-Name") or str(uuid.uuid4())


async def dial(url: str, name: str) -> wsmvc.ClientConn:
    client = await wsmvc.dial(
        url, {"chat": {}}, headers={"X-Name": name}, timeout=WAIT, ask_timeout=WAIT
    )
    _clients.append(client)
    return client


class Heard:
    """The changes ``on_change`` reported, to be awaited in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Change] = asyncio.Queue()
        self.log: list[Change] = []  # every change, in the order heard

    def __call__(self, change: Change) -> None:
        self.log.append(change)
        self.queue.put_nowait(change)

    async def next(self) -> tuple[str, str, str]:
        """The next change as (kind, connection id, room)."""
        try:
            change = await asyncio.wait_for(self.queue.get(), WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(f"no presence change within {WAIT}s") from None
        assert change.namespace == "chat"
        return change.kind, change.conn_id, change.room

    async def several(self, n: int) -> set[tuple[str, str, str]]:
        return {await self.next() for _ in range(n)}

    def none_pending(self) -> bool:
        return self.queue.empty()


async def test_presence_without_an_exchange_follows_the_clients_of_this_server(
    serve: Serve,
) -> None:
    gone: asyncio.Queue[str] = asyncio.Queue()

    def on_disconnect(conn: Conn) -> None:
        gone.put_nowait(conn.id)

    server = Server({"chat": {}}, id_generator=id_from_name, on_disconnect=on_disconnect)
    url = await serve(server)
    heard, async_heard = Heard(), Heard()
    server.presence.on_change(heard)

    async def async_callback(change: Change) -> None:
        async_heard(change)

    server.presence.on_change(async_callback)
    presence = server.presence
    assert presence.count("chat") == 0 and presence.members("chat") == []

    alice = await (await dial(url, "alice")).connect("chat", timeout=WAIT)
    assert await heard.next() == ("joined", "alice", "")
    await alice.join_room("lobby", timeout=WAIT)
    assert await heard.next() == ("joined", "alice", "lobby")
    bob = await (await dial(url, "bob")).connect("chat", timeout=WAIT)
    await bob.join_room("lobby", timeout=WAIT)
    assert await heard.several(2) == {("joined", "bob", ""), ("joined", "bob", "lobby")}
    await alice.join_room("ops", timeout=WAIT)
    assert await heard.next() == ("joined", "alice", "ops")

    assert presence.count("chat") == 2
    assert presence.count("chat", "lobby") == 2
    assert presence.count("chat", "ops") == 1
    assert presence.count("chat", "nowhere") == 0
    assert presence.count("other") == 0
    [here] = {m.server for m in presence.members("chat")}
    assert presence.members("chat", "lobby") == [Member("alice", here), Member("bob", here)]
    assert presence.members("chat", "ops") == [Member("alice", here)]
    assert presence.rooms_of("alice", "chat") == ["lobby", "ops"]
    assert presence.rooms_of("bob", "chat") == ["lobby"]
    assert presence.rooms_of("nobody", "chat") == []
    # The same answers as the per-process API, which keeps working as it did.
    assert sorted(ns.conn.id for ns in server.room_members("chat", "lobby")) == ["alice", "bob"]

    # A second tab of alice: one member per id, so neither its connect and join nor its
    # close is a change (bob's join right after is the next change heard).
    tab2_client = await dial(url, "alice")
    tab2 = await tab2_client.connect("chat", timeout=WAIT)
    await tab2.join_room("lobby", timeout=WAIT)
    await bob.join_room("ops", timeout=WAIT)
    assert await heard.next() == ("joined", "bob", "ops")
    assert presence.count("chat", "lobby") == 2
    await tab2_client.close()
    assert await asyncio.wait_for(gone.get(), WAIT) == "alice"
    assert heard.none_pending()
    assert presence.rooms_of("alice", "chat") == ["lobby", "ops"]
    assert presence.count("chat") == 2

    # Leaving a room, then the namespace, then closing the websocket.
    await alice.leave_room("ops", timeout=WAIT)
    assert await heard.next() == ("left", "alice", "ops")
    assert presence.members("chat", "ops") == [Member("bob", here)]
    await bob.disconnect(timeout=WAIT)
    assert await heard.several(3) == {
        ("left", "bob", "lobby"),
        ("left", "bob", "ops"),
        ("left", "bob", ""),
    }
    assert presence.count("chat") == 1 and presence.rooms_of("bob", "chat") == []
    await alice.conn.close()
    assert await asyncio.wait_for(gone.get(), WAIT) == "alice"
    assert await heard.several(2) == {("left", "alice", "lobby"), ("left", "alice", "")}
    assert presence.count("chat") == 0
    assert presence.count("chat", "lobby") == 0
    assert presence.members("chat") == []
    assert presence.rooms_of("alice", "chat") == []

    # An async callback (run as a task) heard the same twelve changes, in the same order.
    assert len(heard.log) == 12
    for _ in heard.log:
        await async_heard.next()
    assert async_heard.log == heard.log
    assert async_heard.none_pending()


async def test_on_change_unsubscribes(serve: Serve) -> None:
    server = Server({"chat": {}}, id_generator=id_from_name)
    url = await serve(server)
    kept, dropped = Heard(), Heard()
    server.presence.on_change(kept)
    unsubscribe = server.presence.on_change(dropped)
    carol = await (await dial(url, "carol")).connect("chat", timeout=WAIT)
    assert await dropped.next() == ("joined", "carol", "")
    assert await kept.next() == ("joined", "carol", "")
    unsubscribe()
    unsubscribe()  # twice: nothing more
    await carol.join_room("lobby", timeout=WAIT)
    # Both callbacks are called in the join itself: had the dropped one still been
    # subscribed, it would have heard the join by now.
    assert await kept.next() == ("joined", "carol", "lobby")
    assert dropped.none_pending()
