"""LocalExchange: two servers of one process linked without a broker.

``a = LocalExchange()`` for the first server, ``LocalExchange(a)`` for the second; both serve
real websockets on loopback and Python clients connect to each. Delivery to the other server
happens inside ``broadcast``, so a final broadcast fences each check.
"""

from __future__ import annotations

import pytest

from wsmvc import EventError, Message, Server
from wsmvc.exchange import LocalExchange

from ..conftest import Serve
from .conftest import WAIT, Peers, id_from_name


class Pair:
    def __init__(self, s1: Server, url1: str, s2: Server, url2: str) -> None:
        self.s1, self.url1, self.s2, self.url2 = s1, url1, s2, url2


@pytest.fixture
async def pair(serve: Serve) -> Pair:
    first = LocalExchange()
    s1 = Server({"default": {}}, exchange=first, id_generator=id_from_name)
    s2 = Server({"default": {}}, exchange=LocalExchange(first), id_generator=id_from_name)
    return Pair(s1, await serve(s1), s2, await serve(s2))


def chat(body: bytes, room: str = "", binary: bool = False) -> Message:
    return Message(namespace="default", room=room, event="chat", body=body, binary=binary)


async def test_linked_servers_share_every_broadcast_form(pair: Pair, peers: Peers) -> None:
    alice = await peers.connect(pair.url1, "alice", rooms=["lobby"], at="s1")
    carol = await peers.connect(pair.url1, "carol", at="s1")
    bob = await peers.connect(pair.url2, "bob", rooms=["lobby"], at="s2")
    alice_elsewhere = await peers.connect(pair.url2, "alice", at="s2")
    dave = await peers.connect(pair.url2, "dave", at="s2")
    [alice_conn] = pair.s1.get_connections(alice.id)

    await pair.s1.broadcast(chat(b"all"))
    await pair.s1.broadcast(chat(b"lobby", room="lobby"))
    await pair.s1.broadcast(chat(b"to bob"), to=bob.id)
    await pair.s1.broadcast(chat(b"not alice's connection"), exclude=alice_conn)
    await pair.s1.broadcast(chat(b"not bob"), exclude=bob.id)
    await pair.s1.broadcast(chat(b"binary", binary=True))
    await pair.s2.broadcast(chat(b"from s2 to alice"), to=alice.id)
    await pair.s1.broadcast(chat(b"end"))

    got = {
        p.label: [(m.text, m.room, m.binary) for m in await p.until("end")]
        for p in (alice, carol, bob, alice_elsewhere, dave)
    }
    everyone = ("all", "", False)
    binary = ("binary", "", True)
    others = ("not alice's connection", "", False)
    not_bob = ("not bob", "", False)
    assert got == {
        "alice@s1": [
            everyone,
            ("lobby", "lobby", False),
            not_bob,
            binary,
            ("from s2 to alice", "", False),
        ],
        "carol@s1": [everyone, others, not_bob, binary],
        "bob@s2": [everyone, ("lobby", "lobby", False), ("to bob", "", False), others, binary],
        "alice@s2": [everyone, others, not_bob, binary, ("from s2 to alice", "", False)],
        "dave@s2": [everyone, others, not_bob, binary],
    }


async def test_linked_servers_ask_each_others_clients(pair: Pair, peers: Peers) -> None:
    bob = await peers.connect(pair.url2, "bob", at="s2")

    reply = await pair.s1.ask(
        Message(namespace="default", event="question", body=b"hi?"), to=bob.id, timeout=WAIT
    )
    assert reply.body == b"bob@s2 heard hi?"

    with pytest.raises(EventError) as refused:
        await pair.s1.ask(Message(namespace="default", event="refuse"), to=bob.id, timeout=WAIT)
    assert refused.value.text == "bob@s2 refuses"

    with pytest.raises(EventError) as nobody:
        await pair.s1.ask(Message(namespace="default", event="question"), to="nobody", timeout=WAIT)
    assert nobody.value.text == "bad namespace"
