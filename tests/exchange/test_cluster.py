"""Broadcasts and asks across real server processes sharing a real Redis or NATS.

Each test runs once per broker: three ``cluster_app.py`` processes (s1, s2, s3) share it and
Python clients connect to them. Before acting, a test has every server with clients
``sync`` (flush its exchange), so their subscriptions are in place, and probes them from
the acting server (``Peers.ready``; NATS needs that, see ``until_heard``). Each check ends with a
fence (``conftest.fence``): what a client got before the fence is everything it gets, so
"exactly once" and "not at all" are asserted without waiting for silence.
"""

from __future__ import annotations

import asyncio

import pytest

from wsmvc import EventError

from .conftest import Cluster, Peers, fence


async def test_namespace_broadcast_reaches_every_client_on_every_server_once(
    cluster: Cluster, peers: Peers
) -> None:
    alice = await peers.connect(cluster["s1"], "alice")
    carol = await peers.connect(cluster["s1"], "carol")
    bob = await peers.connect(cluster["s2"], "bob")
    dave = await peers.connect(cluster["s3"], "dave")
    await peers.ready(alice)

    assert await alice.ask("broadcast", "hello all") == "sent"

    msg = await bob.next()
    assert (msg.namespace, msg.room, msg.event, msg.body) == ("default", "", "chat", b"hello all")
    assert (msg.token, msg.err, msg.binary) == ("", "", False)
    assert await fence(alice, [alice, carol, bob, dave]) == {
        "alice@s1": ["hello all"],
        "carol@s1": ["hello all"],
        "bob@s2": [],
        "dave@s3": ["hello all"],
    }


async def test_room_broadcast_reaches_the_room_members_on_every_server_only(
    cluster: Cluster, peers: Peers
) -> None:
    sender = await peers.connect(cluster["s1"], "sender")
    ann = await peers.connect(cluster["s1"], "ann", rooms=["lobby"])
    ben = await peers.connect(cluster["s2"], "ben", rooms=["lobby"])
    cid = await peers.connect(cluster["s3"], "cid", rooms=["lobby", "other"])
    nora = await peers.connect(cluster["s2"], "nora")
    ned = await peers.connect(cluster["s3"], "ned", rooms=["other"])
    await peers.ready(sender)

    assert await sender.ask("broadcast_room", "lobby|in the lobby") == "sent"

    msg = await ben.next()
    assert (msg.room, msg.event, msg.body) == ("lobby", "chat", b"in the lobby")
    assert await fence(sender, [sender, ann, ben, cid, nora, ned]) == {
        "sender@s1": [],
        "ann@s1": ["in the lobby"],
        "ben@s2": [],
        "cid@s3": ["in the lobby"],
        "nora@s2": [],
        "ned@s3": [],
    }

    # A room name with ";" is escaped on the broker's payload too (spec 2.3).
    await nora.ns.join_room("a;b", timeout=5)
    assert await sender.ask("broadcast_room", "a;b|semicolons") == "sent"
    msg = await nora.next()
    assert (msg.room, msg.body) == ("a;b", b"semicolons")


async def test_to_reaches_every_connection_with_that_id_on_every_server_once(
    cluster: Cluster, peers: Peers
) -> None:
    alice = await peers.connect(cluster["s1"], "alice")
    bob_here = await peers.connect(cluster["s1"], "bob")
    bob_there = await peers.connect(cluster["s3"], "bob")  # ids need not be unique
    carol = await peers.connect(cluster["s2"], "carol")
    dave = await peers.connect(cluster["s3"], "dave")
    await peers.ready(alice)

    assert await alice.ask("broadcast_to", f"{bob_here.id}|just for bob") == "sent"
    assert await alice.ask("broadcast_to", f"{carol.id}|just for carol") == "sent"

    # The targets' messages come on their id's channel, the fence on the namespace's:
    # take them first (the order between two channels is another test's subject).
    assert [m.text for m in await asyncio.gather(bob_here.next(), bob_there.next())] == [
        "just for bob",
        "just for bob",
    ]
    assert (await carol.next()).text == "just for carol"
    assert await fence(alice, [alice, bob_here, bob_there, carol, dave]) == {
        "alice@s1": [],
        "bob@s1": [],
        "bob@s3": [],
        "carol@s2": [],
        "dave@s3": [],
    }


async def test_excluding_a_connection_skips_that_connection_only_across_servers(
    cluster: Cluster, peers: Peers
) -> None:
    alice = await peers.connect(cluster["s1"], "alice")
    alice_elsewhere = await peers.connect(cluster["s2"], "alice")  # same id, other connection
    carol = await peers.connect(cluster["s1"], "carol")
    bob = await peers.connect(cluster["s3"], "bob")
    await peers.ready(alice)

    assert await alice.ask("broadcast_others", "not back to me") == "sent"

    assert await fence(alice, [alice, alice_elsewhere, carol, bob]) == {
        "alice@s1": [],
        "alice@s2": ["not back to me"],
        "carol@s1": ["not back to me"],
        "bob@s3": ["not back to me"],
    }


async def test_excluding_an_id_skips_every_connection_with_it_on_every_server(
    cluster: Cluster, peers: Peers
) -> None:
    alice = await peers.connect(cluster["s1"], "alice")
    bobs = [await peers.connect(cluster[s], "bob") for s in ("s1", "s2", "s3")]
    carol = await peers.connect(cluster["s2"], "carol")
    await peers.ready(alice)

    assert await alice.ask("broadcast_except", f"{bobs[0].id}|all but bob") == "sent"

    assert await fence(alice, [alice, *bobs, carol]) == {
        "alice@s1": ["all but bob"],
        "bob@s1": [],
        "bob@s2": [],
        "bob@s3": [],
        "carol@s2": ["all but bob"],
    }


async def test_binary_broadcast_arrives_binary_with_the_same_bytes_on_every_server(
    cluster: Cluster, peers: Peers
) -> None:
    alice = await peers.connect(cluster["s1"], "alice")
    bob = await peers.connect(cluster["s2"], "bob")
    carol = await peers.connect(cluster["s3"], "carol")
    await peers.ready(alice)
    body = bytes(range(256))  # NUL, ";", newlines, bytes that are not UTF-8

    assert await alice.ask("broadcast_binary", body, binary=True) == "sent"

    for peer in (alice, bob, carol):
        msg = await peer.next()
        assert (msg.event, msg.binary, msg.body) == ("chat", True, body), peer.label
    assert await fence(alice, [alice, bob, carol]) == {
        "alice@s1": [],
        "bob@s2": [],
        "carol@s3": [],
    }


async def test_server_ask_is_answered_by_a_client_on_another_server(
    cluster: Cluster, peers: Peers
) -> None:
    alice = await peers.connect(cluster["s1"], "alice")
    bob = await peers.connect(cluster["s2"], "bob")
    carol = await peers.connect(cluster["s1"], "carol")
    await peers.ready(alice)

    answer = await alice.ask("ask_client", f"{bob.id}|question|how are you?")
    assert answer == "answer:bob@s2 heard how are you?"
    # The same call for a client of the asking server itself.
    answer = await alice.ask("ask_client", f"{carol.id}|question|and you?")
    assert answer == "answer:carol@s1 heard and you?"


async def test_server_ask_across_servers_carries_the_clients_error_answer(
    cluster: Cluster, peers: Peers
) -> None:
    alice = await peers.connect(cluster["s1"], "alice")
    bob = await peers.connect(cluster["s3"], "bob")
    await peers.ready(alice)

    with pytest.raises(EventError) as refused:
        await alice.ask("ask_client", f"{bob.id}|refuse|now?")
    assert refused.value.text == "bob@s3 refuses"
    # The exchange is still fine afterwards.
    assert await alice.ask("ask_client", f"{bob.id}|question|later?") == (
        "answer:bob@s3 heard later?"
    )


async def test_500_broadcasts_from_one_sender_arrive_in_order_on_every_server(
    cluster: Cluster, peers: Peers
) -> None:
    sender = await peers.connect(cluster["s1"], "sender")
    receivers = [
        sender,
        await peers.connect(cluster["s1"], "r1"),
        await peers.connect(cluster["s2"], "r2"),
        await peers.connect(cluster["s3"], "r3"),
    ]
    await peers.ready(sender)
    numbers = [str(n) for n in range(1, 501)]

    for n in numbers:
        sender.emit("broadcast", n)

    got = await asyncio.gather(*(r.texts(len(numbers), timeout=20) for r in receivers))
    for receiver, texts in zip(receivers, got, strict=True):
        assert texts == numbers, receiver.label
    assert await fence(sender, receivers) == {r.label: [] for r in receivers}


async def test_namespace_and_to_broadcasts_from_one_server_keep_their_order(
    cluster: Cluster, peers: Peers
) -> None:
    """Two channels (the namespace's and bob's), one sender: bob gets them in send order."""
    sender = await peers.connect(cluster["s1"], "sender")
    bob = await peers.connect(cluster["s2"], "bob")
    await peers.ready(sender)
    sent = []

    for n in range(1, 101):
        sender.emit("broadcast", f"all {n}")
        sender.emit("broadcast_to", f"{bob.id}|bob {n}")
        sent += [f"all {n}", f"bob {n}"]

    assert await bob.texts(len(sent), timeout=20) == sent
    assert await fence(sender, [bob]) == {"bob@s2": []}
