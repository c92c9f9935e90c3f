"""Cluster-wide presence as a replicated state, without I/O (issue 10 §1, the core).

Every server keeps a replica of who is where in the whole cluster: its own members, counted
per connection (two tabs of one id are one member), and what the other servers announced.
Servers exchange four kinds of messages through the broker, which the wiring (not this
module) publishes and delivers:

* :class:`Announce` - a server's own changes, numbered (``seq`` +1 per announcement);
* :class:`Beat` - every few seconds: "I am alive, my last announcement is ``seq``";
* :class:`SnapshotRequest` - "tell me all your members" (a newcomer, or a gap was seen);
* :class:`Snapshot` - a server's whole membership at ``seq``, in one part or several
  consecutive ones (a broker limits a message's size: NATS to 1 MiB by default).

A receiver applies announcements in order; a gap (a lost message, a receiver that started
late) makes it ask for the sender's snapshot, and ignore that sender's announcements until
the snapshot arrives. A server not heard from for ``ttl`` seconds is gone (killed,
partitioned): its members leave every replica. Every message carries the sender's ``epoch``,
new with each process: a server restarted under the same id (a fixed ``server_id``) is a new
epoch, whose first message makes its predecessor's members leave (its numbering starts
again, so its messages could not be told from old ones otherwise).

Queries (:meth:`Replica.members`, :meth:`Replica.count`, :meth:`Replica.rooms_of`) read the
replica: synchronous and cluster-wide, as fresh as the broker's latency. Every method that
changes the replica returns the :class:`Change` list the application is told about.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import attrs

__all__ = [
    "Announce",
    "Beat",
    "Change",
    "Member",
    "Replica",
    "Snapshot",
    "SnapshotRequest",
]

Key = tuple[str, str, str]  # namespace, room ("" = the namespace itself), connection id
Update = tuple["Announce | None", "list[Change]"]


@attrs.frozen(order=True)
class Member:
    """One connection id in a namespace or room, on one server."""

    conn_id: str
    server: str


@attrs.frozen
class Change:
    """A member joined or left (``kind``: ``"joined"`` or ``"left"``) a room, or the
    namespace itself when ``room`` is ``""``."""

    kind: str
    conn_id: str
    namespace: str
    room: str
    server: str


@attrs.frozen
class Announce:
    server: str
    seq: int
    joined: tuple[Key, ...] = ()
    left: tuple[Key, ...] = ()
    epoch: str = ""


@attrs.frozen
class Beat:
    server: str
    seq: int
    epoch: str = ""


@attrs.frozen
class SnapshotRequest:
    server: str  # who asks
    of: str  # whose snapshot ("" = everyone's)


@attrs.frozen
class Snapshot:
    """Part ``part`` (from 0) of ``parts`` of ``server``'s members at ``seq``; the parts
    of one snapshot are published one after the other."""

    server: str
    seq: int
    members: tuple[Key, ...]
    part: int = 0
    parts: int = 1
    epoch: str = ""


@attrs.define
class _Remote:
    seq: int  # the last announcement applied; -1 until a snapshot arrived
    seen: float  # when it was last heard from (the replica's clock)
    members: set[Key] = attrs.field(factory=set)
    asked: float | None = None  # when its snapshot was last asked for, until it arrives
    # The snapshot being received in parts: its seq, the last part, the members so far.
    partial: tuple[int, int, list[Key]] | None = None
    epoch: str = ""  # the process whose numbering ``seq`` follows


class Replica:
    """One server's view of the cluster's presence (see the module docstring).

    ``server``: this server's id; ``ttl``: seconds after which a silent server is gone;
    ``epoch``: this process's, in every message (see the module docstring). Times
    (``now``) are the caller's monotonic clock, in seconds.
    """

    def __init__(self, server: str, ttl: float, epoch: str = "") -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive seconds, got {ttl!r}")
        self.server = server
        self.ttl = ttl
        self.epoch = epoch
        self._seq = 0
        self._own: collections.Counter[Key] = collections.Counter()
        self._remote: dict[str, _Remote] = {}
        # namespace -> room -> conn id -> servers: what queries read.
        self._index: dict[str, dict[str, dict[str, set[str]]]] = {}

    # -- this server's members -------------------------------------------------------------

    def join(self, namespace: str, room: str, conn_id: str) -> Update:
        """A connection of this server joined ``room`` (``""``: the namespace). The
        announcement to publish (``None`` when another connection of that id is there
        already) and the changes."""
        key = (namespace, room, conn_id)
        self._own[key] += 1
        if self._own[key] > 1:
            return None, []
        self._seq += 1
        change = self._add(self.server, key)
        return Announce(self.server, self._seq, joined=(key,), epoch=self.epoch), [change]

    def leave(
        self, namespace: str, room: str, conn_id: str
    ) -> tuple[Announce | None, list[Change]]:
        """A connection of this server left ``room``; like :meth:`join`. Leaving what was
        not joined changes nothing."""
        key = (namespace, room, conn_id)
        if self._own[key] == 0:
            return None, []
        self._own[key] -= 1
        if self._own[key]:
            return None, []
        del self._own[key]
        self._seq += 1
        change = self._remove(self.server, key)
        return Announce(self.server, self._seq, left=(key,), epoch=self.epoch), [change]

    def beat(self) -> Beat:
        return Beat(self.server, self._seq, self.epoch)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.server, self._seq, tuple(sorted(self._own)), epoch=self.epoch)

    def snapshot_parts(self, budget: int, size: Callable[[Key], int]) -> list[Snapshot]:
        """This server's snapshot in parts whose members' ``size`` add up to ``budget`` at
        most (a member larger than that goes alone in its part)."""
        chunks: list[list[Key]] = [[]]
        used = 0
        for key in sorted(self._own):
            cost = size(key)
            if chunks[-1] and used + cost > budget:
                chunks.append([])
                used = 0
            chunks[-1].append(key)
            used += cost
        n = len(chunks)
        return [
            Snapshot(self.server, self._seq, tuple(c), i, n, self.epoch)
            for i, c in enumerate(chunks)
        ]

    # -- the other servers --------------------------------------------------------------------

    def receive(
        self, msg: Announce | Beat | Snapshot, now: float
    ) -> tuple[list[Change], SnapshotRequest | None]:
        """Apply another server's message: the changes, and a request to publish when this
        replica missed something of that server."""
        if msg.server == self.server:
            return [], None
        gone: list[Change] = []
        remote = self._remote.get(msg.server)
        if remote is not None and remote.epoch != msg.epoch:
            gone = self.forget(msg.server)  # restarted under its id: the old process is gone
            remote = None
        if remote is None:
            remote = self._remote[msg.server] = _Remote(seq=-1, seen=now, epoch=msg.epoch)
        remote.seen = now
        changes, ask = self._receive(remote, msg, now)
        return gone + changes, ask

    def _receive(
        self, remote: _Remote, msg: Announce | Beat | Snapshot, now: float
    ) -> tuple[list[Change], SnapshotRequest | None]:
        if isinstance(msg, Snapshot):
            whole = self._assemble(remote, msg)
            return ([] if whole is None else self._apply_snapshot(msg.server, remote, whole)), None
        if isinstance(msg, Announce) and remote.seq < 0 and msg.seq == 1:
            remote.seq = 0  # its first announcement: nothing came before it
        if isinstance(msg, Announce) and msg.seq == remote.seq + 1 and remote.seq >= 0:
            remote.seq = msg.seq
            changes = [
                self._add(msg.server, key) for key in msg.joined if key not in remote.members
            ]
            for key in msg.joined:
                remote.members.add(key)
            changes += [self._remove(msg.server, key) for key in msg.left if key in remote.members]
            remote.members.difference_update(msg.left)
            return changes, None
        if msg.seq > remote.seq or remote.seq < 0:
            # Missed something: ask for the whole (again only if no answer came meanwhile).
            if remote.asked is None or now - remote.asked > self.ttl / 3:
                remote.asked = now
                return [], SnapshotRequest(self.server, msg.server)
            return [], None
        return [], None  # already applied (or older)

    def expire(self, now: float) -> list[Change]:
        """Forget the servers not heard from for ``ttl`` seconds: their members leave."""
        changes: list[Change] = []
        for server, remote in list(self._remote.items()):
            if now - remote.seen > self.ttl:
                changes += [self._remove(server, key) for key in sorted(remote.members)]
                del self._remote[server]
        return changes

    def forget(self, server: str) -> list[Change]:
        """``server`` said goodbye (a clean shutdown): its members leave at once."""
        remote = self._remote.pop(server, None)
        if remote is None:
            return []
        return [self._remove(server, key) for key in sorted(remote.members)]

    @staticmethod
    def _assemble(remote: _Remote, part: Snapshot) -> Snapshot | None:
        """The whole snapshot once its last part arrived after all the others, in order;
        a part out of turn (one was lost) drops what was gathered: it is asked again."""
        gathered, remote.partial = remote.partial, None
        if part.part == 0:
            gathered = (part.seq, 0, [])
        elif gathered is None or gathered[:2] != (part.seq, part.part - 1):
            return None
        members = gathered[2]
        members.extend(part.members)
        if part.part + 1 >= part.parts:
            return Snapshot(part.server, part.seq, tuple(members))
        remote.partial = (part.seq, part.part, members)
        return None

    def _apply_snapshot(self, server: str, remote: _Remote, snap: Snapshot) -> list[Change]:
        if 0 <= snap.seq < remote.seq:
            return []  # older than what was applied since
        remote.asked = None
        new = set(snap.members)
        changes = [self._remove(server, key) for key in sorted(remote.members - new)]
        changes += [self._add(server, key) for key in sorted(new - remote.members)]
        remote.members = new
        remote.seq = snap.seq
        return changes

    # -- the index ------------------------------------------------------------------------------

    def _add(self, server: str, key: Key) -> Change:
        namespace, room, conn_id = key
        rooms = self._index.setdefault(namespace, {})
        rooms.setdefault(room, {}).setdefault(conn_id, set()).add(server)
        return Change("joined", conn_id, namespace, room, server)

    def _remove(self, server: str, key: Key) -> Change:
        namespace, room, conn_id = key
        rooms = self._index.get(namespace, {})
        ids = rooms.get(room, {})
        servers = ids.get(conn_id, set())
        servers.discard(server)
        if not servers:
            ids.pop(conn_id, None)
            if not ids:
                rooms.pop(room, None)
                if not rooms:
                    self._index.pop(namespace, None)
        return Change("left", conn_id, namespace, room, server)

    # -- queries ----------------------------------------------------------------------------------

    def members(self, namespace: str, room: str = "") -> list[Member]:
        """Who is in ``room`` of ``namespace`` (``""``: connected to the namespace), on
        every server: one :class:`Member` per connection id and server."""
        ids = self._index.get(namespace, {}).get(room, {})
        return sorted(Member(i, s) for i, servers in ids.items() for s in servers)

    def count(self, namespace: str, room: str = "") -> int:
        """How many distinct connection ids are in ``room`` (``""``: the namespace), in the
        whole cluster (a user with tabs on two servers counts once)."""
        return len(self._index.get(namespace, {}).get(room, {}))

    def rooms_of(self, conn_id: str, namespace: str) -> list[str]:
        """The rooms of ``namespace`` that connection id ``conn_id`` is in, anywhere."""
        rooms = self._index.get(namespace, {})
        return sorted(r for r, ids in rooms.items() if r and conn_id in ids)

    def servers(self) -> list[str]:
        """The other servers this replica knows of."""
        return sorted(self._remote)
