"""Cluster-wide presence (issue 10 §1) on real Redis and NATS.

Three servers share a broker; clients join namespaces and rooms on different servers. Every
server's ``presence`` converges to the same view (counts, members, rooms of an id), the
application hears each join and leave once per server, a server shut down cleanly takes its
members along at once, and a server killed with SIGKILL loses them within the documented
bound (``ttl`` + ``beat``).
"""

from __future__ import annotations

import asyncio
import json
import time

from wsmvc import Server
from wsmvc.presence import Change, Member
from wsmvc.testing import running

from ..conftest import Serve
from .conftest import (
    WAIT,
    Broker,
    Peer,
    Peers,
    StartCluster,
    eventually,
    id_from_name,
    make_exchange,
)


def cluster_of(broker: Broker, n: int) -> list[Server]:
    return [
        Server({"default": {}}, exchange=make_exchange(broker), id_generator=id_from_name)  # type: ignore[arg-type]
        for _ in range(n)
    ]


async def test_every_server_sees_the_whole_cluster(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    servers = cluster_of(broker, 3)
    urls = [await serve(s, path=f"/s{i}") for i, s in enumerate(servers)]
    heard: list[Change] = []
    servers[0].presence.on_change(heard.append)
    await peers.connect(urls[0], "alice", rooms=["lobby"], exact_id=True, at="s0")
    await peers.connect(urls[1], "bob", rooms=["lobby"], exact_id=True, at="s1")
    alice_tab2 = await peers.connect(urls[2], "alice", rooms=["ops"], exact_id=True, at="s2")
    ids = [s.exchange.id for s in servers]  # type: ignore[union-attr]

    async def converged() -> bool:
        return all(
            s.presence.count("default", "lobby") == 2
            and s.presence.count("default") == 2
            and s.presence.rooms_of("alice", "default") == ["lobby", "ops"]
            for s in servers
        )

    took = await eventually(converged, "every server sees alice (two servers) and bob")
    assert took < WAIT
    for s in servers:
        assert s.presence.members("default", "lobby") == sorted(
            [Member("alice", ids[0]), Member("bob", ids[1])]
        )
        assert s.presence.members("default") == sorted(
            [Member("alice", ids[0]), Member("alice", ids[2]), Member("bob", ids[1])]
        )
    # Leaving: alice's second tab goes; she is still in the namespace through the first.
    await alice_tab2.conn.close()

    async def tab_gone() -> bool:
        return all(s.presence.rooms_of("alice", "default") == ["lobby"] for s in servers)

    await eventually(tab_gone, "alice's second tab left everywhere")
    assert all(s.presence.count("default") == 2 for s in servers)
    joined = {(c.conn_id, c.room, c.server) for c in heard if c.kind == "joined"}
    assert {
        ("alice", "lobby", ids[0]),
        ("bob", "lobby", ids[1]),
        ("alice", "ops", ids[2]),
    } <= joined
    assert ("alice", "ops", ids[2]) in {
        (c.conn_id, c.room, c.server) for c in heard if c.kind == "left"
    }


async def test_a_server_shut_down_takes_its_members_along_at_once(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    stays, goes = cluster_of(broker, 2)
    await serve(stays, path="/stays")
    left = asyncio.Event()
    async with running(goes, path="/goes") as url:
        await peers.connect(url, "carol", rooms=["lobby"], exact_id=True, at="goes")
        await eventually(
            lambda: _true(stays.presence.count("default", "lobby") == 1),
            "carol seen from the other",
        )
        stays.presence.on_change(lambda c: left.set() if c.kind == "left" else None)
        started = time.monotonic()
    # clean shutdown: its clients closed, then a goodbye
    await asyncio.wait_for(left.wait(), WAIT)
    await eventually(
        lambda: _true(stays.presence.count("default", "lobby") == 0), "carol gone everywhere"
    )
    assert time.monotonic() - started < stays.presence.ttl


async def test_a_killed_server_loses_its_members_everywhere_and_a_restart_brings_no_ghosts(
    broker: Broker, start_cluster: StartCluster, peers: Peers
) -> None:
    cluster = start_cluster(broker, ["s1", "s2", "s3"])
    dave = await peers.connect(cluster["s2"], "dave", rooms=["lobby"])
    await peers.connect(cluster["s3"], "erin", rooms=["lobby"])
    watchers = [await peers.connect(cluster[name], "watcher") for name in ("s1", "s3")]

    async def lobby_counts(of: list[Peer]) -> list[int]:
        answers = [json.loads(await w.ask("presence", "lobby")) for w in of]
        return [int(a["count"]) for a in answers]

    async def counts_are(expected: int, of: list[Peer]) -> bool:
        return all(c == expected for c in await lobby_counts(of))

    await eventually(lambda: counts_are(2, watchers), f"{dave.label} and erin seen from s1, s3")
    cluster["s2"].kill()
    took = await eventually(lambda: counts_are(1, watchers), "s2's members expire", timeout=20)
    bound = float(json.loads(await watchers[0].ask("presence", "lobby"))["bound"])
    print(f"members of the killed server gone after {took:.1f}s (bound {bound:.0f}s)")
    assert took <= bound + 1.0, (took, bound)

    # The same server started again is a new member of the cluster: it learns erin from
    # the others, and nobody brings dave back (he would make the count 3, not 2).
    cluster["s2"].launch()
    cluster["s2"].wait_ready(time.monotonic() + WAIT)
    everyone = [*watchers, await peers.connect(cluster["s2"], "watcher")]
    await peers.connect(cluster["s2"], "frank", rooms=["lobby"])
    await eventually(lambda: counts_are(2, everyone), "erin and frank, everywhere")


async def test_more_members_than_one_broker_message_holds_reach_a_new_server(
    broker: Broker, serve: Serve, peers: Peers
) -> None:
    """A server whose members' snapshot is larger than NATS takes in one message (1 MiB):
    a server that starts later still learns all of them (the snapshot goes in parts)."""
    big, late = cluster_of(broker, 2)
    url = await serve(big, path="/big")
    rooms = [f"{n:03d}{'r' * 250}" for n in range(500)]  # 5,000 members: about 1.4 MB
    for n in range(10):
        peer = await peers.connect(url, f"user{n}", exact_id=True, at="big")
        await asyncio.gather(*(peer.ns.join_room(room, timeout=WAIT) for room in rooms))
    await serve(late, path="/late")

    async def all_seen() -> bool:
        return all(late.presence.count("default", room) == 10 for room in rooms)

    await eventually(all_seen, "every member of the big server, seen from the late one")
    assert late.presence.rooms_of("user7", "default") == sorted(rooms)


async def _true(value: bool) -> bool:
    return value


async def _eq(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]
