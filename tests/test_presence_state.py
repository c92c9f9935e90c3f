"""The presence replica (wsmvc/presence_state.py), without sockets: unit cases, then a
Hypothesis state machine of three servers whose messages may be lost, whose servers may
die, and whose replicas must all agree on who is where once the cluster is quiet."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from wsmvc.presence_state import (
    Announce,
    Beat,
    Change,
    Member,
    Replica,
    SnapshotRequest,
)

TTL = 10.0


def test_two_tabs_of_one_id_are_one_member() -> None:
    a = Replica("A", TTL)
    first, changes = a.join("chat", "", "alice")
    assert first == Announce("A", 1, joined=(("chat", "", "alice"),))
    assert changes == [Change("joined", "alice", "chat", "", "A")]
    assert a.join("chat", "", "alice") == (None, [])  # the second tab: nothing new
    assert a.leave("chat", "", "alice") == (None, [])  # one tab left, one stays
    assert a.count("chat") == 1
    last, changes = a.leave("chat", "", "alice")
    assert last == Announce("A", 2, left=(("chat", "", "alice"),))
    assert changes == [Change("left", "alice", "chat", "", "A")]
    assert a.count("chat") == 0
    assert a.leave("chat", "", "alice") == (None, [])  # never joined: nothing


def test_announcements_in_order_replicate_and_a_gap_asks_for_the_snapshot() -> None:
    a, b = Replica("A", TTL), Replica("B", TTL)
    one, _ = a.join("chat", "", "alice")
    two, _ = a.join("chat", "lobby", "alice")
    three, _ = a.join("chat", "", "bob")
    assert one is not None and two is not None and three is not None
    changes, ask = b.receive(one, now=0)
    assert ask is None and changes == [Change("joined", "alice", "chat", "", "A")]
    changes, ask = b.receive(three, now=0)  # two was lost
    assert changes == [] and ask == SnapshotRequest("B", "A")
    assert b.receive(Beat("A", 3), now=0) == ([], None)  # asked already: not again at once
    changes, ask = b.receive(a.snapshot(), now=0)
    assert ask is None
    assert changes == [
        Change("joined", "bob", "chat", "", "A"),
        Change("joined", "alice", "chat", "lobby", "A"),
    ]
    assert b.members("chat") == [Member("alice", "A"), Member("bob", "A")]
    assert b.rooms_of("alice", "chat") == ["lobby"]
    assert b.receive(two, now=0) == ([], None)  # late and already in the snapshot


def test_a_silent_server_expires_and_a_restarted_one_does_not_bring_back_ghosts() -> None:
    a, b = Replica("A", TTL), Replica("B", TTL)
    ann, _ = a.join("chat", "", "alice")
    assert ann is not None
    b.receive(ann, now=0)
    assert b.expire(now=TTL) == []  # heard TTL seconds ago: still there
    assert b.expire(now=TTL + 0.1) == [Change("left", "alice", "chat", "", "A")]
    assert b.count("chat") == 0 and b.servers() == []
    restarted = Replica("A2", TTL)  # a new process: a new id, nothing of A's
    changes, ask = b.receive(restarted.beat(), now=TTL + 1)
    assert changes == [] and ask == SnapshotRequest("B", "A2")
    assert b.receive(restarted.snapshot(), now=TTL + 1) == ([], None)
    assert b.count("chat") == 0


def test_a_goodbye_removes_a_servers_members_at_once() -> None:
    a, b = Replica("A", TTL), Replica("B", TTL)
    for conn_id in ("alice", "bob"):
        ann, _ = a.join("chat", "", conn_id)
        assert ann is not None
        b.receive(ann, now=0)
    assert [c.kind for c in b.forget("A")] == ["left", "left"]
    assert b.count("chat") == 0


def test_a_snapshot_in_parts_counts_once_whole_and_a_lost_part_asks_again() -> None:
    a, b = Replica("A", TTL), Replica("B", TTL)
    for conn_id in ("alice", "bob", "carol", "dave", "erin"):
        a.join("chat", "lobby", conn_id)
    parts = a.snapshot_parts(len("alice") * 2, lambda key: len(key[2]))
    assert [(p.part, p.parts, [k[2] for k in p.members]) for p in parts] == [
        (0, 3, ["alice", "bob"]),
        (1, 3, ["carol", "dave"]),
        (2, 3, ["erin"]),
    ]
    assert b.receive(Beat("A", 5), now=0) == ([], SnapshotRequest("B", "A"))
    b.receive(parts[0], now=0)
    b.receive(parts[2], now=0)  # the middle part was lost
    assert b.count("chat", "lobby") == 0
    asked_again = b.receive(Beat("A", 5), now=TTL / 3 + 0.1)
    assert asked_again == ([], SnapshotRequest("B", "A"))
    for part in parts:
        changes, _ = b.receive(part, now=TTL / 3 + 0.2)
        assert (len(changes), b.count("chat", "lobby")) == ((5, 5) if part.part == 2 else (0, 0))
    huge = ("chat", "x" * 100, "frank")
    a.join(*huge)
    alone = a.snapshot_parts(20, lambda key: len(key[1]) + len(key[2]))
    assert [p.members for p in alone if huge in p.members] == [(huge,)]


def test_a_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Replica("A", 0)


Key = tuple[str, str, str]
SERVERS = ("A", "B", "C")


class Cluster(RuleBasedStateMachine):
    """Three replicas on a bus that keeps each sender's order per receiver and can lose
    messages; servers join and leave members, beat, die; a quiet period must leave every
    live replica with the live servers' members exactly."""

    @initialize()
    def start(self) -> None:
        self.now = 0.0
        self.replicas = {s: Replica(s, TTL) for s in SERVERS}
        self.alive = set(SERVERS)
        self.own: dict[str, collections.Counter[Key]] = {s: collections.Counter() for s in SERVERS}
        self.queues: dict[str, collections.deque[Any]] = {s: collections.deque() for s in SERVERS}

    def publish(self, sender: str, msg: Any) -> None:
        for receiver in SERVERS:
            if receiver != sender:
                self.queues[receiver].append(msg)

    def deliver_one(self, receiver: str) -> None:
        msg = self.queues[receiver].popleft()
        if receiver not in self.alive:
            return
        _, ask = self.replicas[receiver].receive(msg, self.now)
        if ask is not None and ask.of in self.alive:
            # Two members per part: a snapshot comes in parts, and a part can be lost.
            parts = self.replicas[ask.of].snapshot_parts(2, lambda key: 1)
            self.queues[receiver].extend(parts)

    @rule(
        server=st.sampled_from(SERVERS),
        ns=st.sampled_from(["chat", "news"]),
        room=st.sampled_from(["", "lobby", "ops"]),
        conn_id=st.sampled_from(["alice", "bob", "carol"]),
        joining=st.booleans(),
    )
    def change(self, server: str, ns: str, room: str, conn_id: str, joining: bool) -> None:
        if server not in self.alive:
            return
        key = (ns, room, conn_id)
        replica = self.replicas[server]
        if joining:
            ann, _ = replica.join(*key)
            self.own[server][key] += 1
        else:
            ann, _ = replica.leave(*key)
            if self.own[server][key]:
                self.own[server][key] -= 1
        if ann is not None:
            self.publish(server, ann)

    @rule(receiver=st.sampled_from(SERVERS))
    def deliver(self, receiver: str) -> None:
        if self.queues[receiver]:
            self.deliver_one(receiver)

    @rule(receiver=st.sampled_from(SERVERS))
    def lose(self, receiver: str) -> None:
        if self.queues[receiver]:
            self.queues[receiver].popleft()

    @rule(server=st.sampled_from(SERVERS))
    def beat(self, server: str) -> None:
        if server in self.alive:
            self.publish(server, self.replicas[server].beat())

    @precondition(lambda self: len(self.alive) > 1)
    @rule(server=st.sampled_from(SERVERS))
    def die(self, server: str) -> None:
        self.alive.discard(server)

    @rule(seconds=st.floats(min_value=0, max_value=3))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def quiet_period_converges(self) -> None:
        for _ in range(4):
            for server in sorted(self.alive):
                self.publish(server, self.replicas[server].beat())
            for receiver in SERVERS:
                while self.queues[receiver]:
                    self.deliver_one(receiver)
            self.now += TTL / 3 + 0.5
            for server in sorted(self.alive):
                self.replicas[server].expire(self.now)
        expected = sorted(
            (ns, room, conn_id, server)
            for server in self.alive
            for (ns, room, conn_id), n in self.own[server].items()
            if n > 0
        )
        for server in sorted(self.alive):
            replica = self.replicas[server]
            seen = sorted(
                (ns, room, m.conn_id, m.server)
                for ns in ("chat", "news")
                for room in ("", "lobby", "ops")
                for m in replica.members(ns, room)
            )
            assert seen == expected, (server, seen, expected)


Cluster.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_cluster_replicas_converge = Cluster.TestCase
