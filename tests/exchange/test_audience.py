"""Broadcasts to several rooms at once, excluding several connections, ids or rooms.

The same scenario runs on one server, on two linked by ``LocalExchange``, and on two
sharing a real Redis or NATS: clients in overlapping rooms on both servers; each gets a
several-rooms broadcast once, with the room set to the first of the rooms it is in, and
nobody excluded gets it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wsmvc import Message, Server
from wsmvc.emitter import Emitter
from wsmvc.exchange import Exchange, LocalExchange

from ..conftest import Serve
from .conftest import Broker, Peer, Peers, id_from_name, make_exchange, running_broker, until_heard


class Setup:
    def __init__(self, sender: Server, url_a: str, url_b: str, broker_kind: str) -> None:
        self.sender, self.url_a, self.url_b, self.broker_kind = sender, url_a, url_b, broker_kind


@pytest.fixture(params=["one server", "local", "redis", "nats"])
async def setup(
    request: pytest.FixtureRequest, serve: Serve, tmp_path: Path
) -> AsyncIterator[Setup]:
    kind = request.param
    table: dict[str, dict[str, object]] = {"default": {}}
    with contextlib.ExitStack() as stack:
        if kind == "one server":
            server = Server(table, id_generator=id_from_name)  # type: ignore[arg-type]
            url = await serve(server)
            yield Setup(server, url, url, "")
            return
        broker = stack.enter_context(running_broker(kind, tmp_path)) if kind != "local" else None
        ex_a: Exchange = make_exchange(broker) if broker else LocalExchange()
        ex_b: Exchange = make_exchange(broker) if broker else LocalExchange(ex_a)  # type: ignore[arg-type]
        a = Server(table, exchange=ex_a, id_generator=id_from_name)  # type: ignore[arg-type]
        b = Server(table, exchange=ex_b, id_generator=id_from_name)  # type: ignore[arg-type]
        yield Setup(a, await serve(a, path="/a"), await serve(b, path="/b"), kind)


def chat(body: str, room: str = "") -> Message:
    return Message(namespace="default", room=room, event="chat", body=body.encode())


async def reachable(setup: Setup, peers: list[Peer]) -> None:
    async def probe(token: str) -> None:
        await setup.sender.broadcast(
            Message(namespace="default", event="probe", body=token.encode())
        )

    await until_heard(probe, peers)


async def test_several_rooms_once_each_and_several_exclusions(setup: Setup, peers: Peers) -> None:
    a, b = setup.url_a, setup.url_b
    ann = await peers.connect(a, "ann", rooms=["red", "blue"], exact_id=True, at="A")
    ben = await peers.connect(b, "ben", rooms=["blue"], exact_id=True, at="B")
    cid = await peers.connect(b, "cid", rooms=["green"], exact_id=True, at="B")
    dot = await peers.connect(b, "dot", rooms=["red", "green"], exact_id=True, at="B")
    eve = await peers.connect(a, "eve", exact_id=True, at="A")
    everyone = [ann, ben, cid, dot, eve]
    await reachable(setup, everyone)
    [ann_conn] = setup.sender.get_connections("ann")
    send = setup.sender.broadcast

    await send(chat("red or blue"), rooms=["red", "blue"])
    await send(chat("blue or red"), rooms=["blue", "red", "blue"])
    await send(chat("red or blue, not green"), rooms=["red", "blue"], exclude_rooms=["green"])
    await send(chat("nobody of red"), exclude_rooms=["red"])
    await send(chat("not ann's tab, not cid"), exclude=[ann_conn, "cid"])
    await send(chat("not ben nor dot"), exclude={"ben", "dot"})
    await send(chat("green but not dot", room="green"), exclude=["dot"])
    await send(chat("end"))

    got = {p.id: [(m.text, m.room) for m in await p.until("end")] for p in everyone}
    assert got == {
        "ann": [
            ("red or blue", "red"),
            ("blue or red", "blue"),
            ("red or blue, not green", "red"),
            ("not ben nor dot", ""),
        ],
        "ben": [
            ("red or blue", "blue"),
            ("blue or red", "blue"),
            ("red or blue, not green", "blue"),
            ("nobody of red", ""),
            ("not ann's tab, not cid", ""),
        ],
        "cid": [("nobody of red", ""), ("not ben nor dot", ""), ("green but not dot", "green")],
        "dot": [
            ("red or blue", "red"),
            ("blue or red", "red"),
            ("not ann's tab, not cid", ""),
        ],
        "eve": [("nobody of red", ""), ("not ann's tab, not cid", ""), ("not ben nor dot", "")],
    }


async def test_what_cannot_be_an_audience_is_refused(setup: Setup) -> None:
    send = setup.sender.broadcast
    with pytest.raises(ValueError, match="rooms= and to= cannot be combined"):
        await send(chat("x"), rooms=["red"], to="ann")
    with pytest.raises(ValueError, match=r"msg\.room or in rooms="):
        await send(chat("x", room="red"), rooms=["blue"])
    with pytest.raises(ValueError, match="rooms= is empty"):
        await send(chat("x"), rooms=[])
    with pytest.raises(TypeError, match="not one str"):
        await send(chat("x"), rooms="red")
    with pytest.raises(TypeError, match="cannot exclude 42"):
        await send(chat("x"), exclude=["ann", 42])  # type: ignore[list-item]


async def test_an_emitter_reaches_several_rooms_and_excludes_several_ids(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    table: dict[str, dict[str, object]] = {"default": {}}
    a = Server(table, exchange=make_exchange(broker), id_generator=id_from_name)  # type: ignore[arg-type]
    b = Server(table, exchange=make_exchange(broker), id_generator=id_from_name)  # type: ignore[arg-type]
    setup = Setup(a, await serve(a, path="/a"), await serve(b, path="/b"), broker.kind)
    ann = await peers.connect(setup.url_a, "ann", rooms=["red"], exact_id=True, at="A")
    ben = await peers.connect(setup.url_b, "ben", rooms=["blue"], exact_id=True, at="B")
    cid = await peers.connect(setup.url_b, "cid", rooms=["blue", "red"], exact_id=True, at="B")
    await reachable(setup, [ann, ben, cid])
    async with Emitter(make_exchange(broker)) as emitter:
        await emitter.broadcast(chat("red or blue"), rooms=["red", "blue"], exclude=["ben"])
        await emitter.broadcast(chat("not red"), exclude_rooms=["red"])
        await emitter.broadcast(chat("end"))
    got = {p.id: [(m.text, m.room) for m in await p.until("end")] for p in (ann, ben, cid)}
    assert got == {
        "ann": [("red or blue", "red")],
        "ben": [("not red", "")],
        "cid": [("red or blue", "red")],
    }
