"""Cluster-wide presence: who is in which namespace and room, on every server (issue 10 §1).

``server.presence`` answers for the whole cluster when the server has a broker exchange
(:class:`~wsmvc.exchange.RedisExchange`, :class:`~wsmvc.exchange.NatsExchange`), and for
this process otherwise (also with :class:`~wsmvc.exchange.LocalExchange`, which has no
side channel for the replicas)::

    server.presence.count("chat", "lobby")       # distinct connection ids, all servers
    server.presence.members("chat", "lobby")     # [Member(conn_id, server), ...]
    server.presence.rooms_of("alice", "chat")    # alice's rooms, wherever her tabs are
    server.presence.on_change(callback)          # Change(kind, conn_id, namespace, room, server)

Each server keeps a replica (:mod:`wsmvc.presence_state`) fed through one channel of the
exchange's broker (``<prefix>.__wsmvc__.presence``, JSON): its own changes as numbered
announcements, a beat every ``beat`` seconds, snapshots when a replica missed something,
and a goodbye on a clean shutdown. A server silent for ``ttl`` seconds (killed, cut off) is
gone: its members leave every replica, as ``left`` changes. So queries are synchronous reads
of local memory, as fresh as the broker's latency, and cost nothing per message; a join or
leave costs one small publication.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .presence_state import Announce, Beat, Change, Member, Replica, Snapshot

if TYPE_CHECKING:
    from .exchange.broker import BrokerExchange

__all__ = ["Change", "Member", "Presence"]

log = logging.getLogger("wsmvc.presence")

OnChange = Callable[[Change], "Awaitable[None] | None"]

SNAPSHOT_BYTES = 64 * 1024
"""Members per snapshot part, in bytes of their JSON: well under any broker's limit (NATS:
1 MiB by default), so a server with many members still sends its snapshot. A member whose
names alone take more (possible with the server's name limits off) is left out of the
cluster's presence, logged."""


class Presence:
    """Who is where (see the module docstring). ``exchange``: the server's broker exchange,
    or ``None`` (this process only). ``beat`` (seconds, default 2): how often this server
    says it is alive; ``ttl`` (seconds, default 3 beats): silence after which a server is
    gone, so a killed server's members leave within ``ttl`` + ``beat`` seconds.
    """

    def __init__(
        self, exchange: BrokerExchange | None, *, beat: float = 2.0, ttl: float | None = None
    ) -> None:
        if beat <= 0:
            raise ValueError(f"beat must be positive seconds, got {beat!r}")
        self.beat = beat
        self.ttl = 3 * beat if ttl is None else ttl
        self._exchange = exchange
        server = exchange.id if exchange is not None else "local"
        self._replica = Replica(server, self.ttl, uuid.uuid4().hex[:16])
        self._callbacks: list[OnChange] = []
        self._channel = exchange.side_channel("presence") if exchange is not None else ""
        # Every message starts with its sender: Redis echoes our own, skipped unparsed.
        self._own = json.dumps({"s": self._replica.server})[:-1].encode() + b","
        self._own_epoch = json.dumps({"e": self._replica.epoch})[1:-1].encode()
        self._twin_seen = False
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._met = False  # whether the cluster was asked for its snapshots

    # -- queries -------------------------------------------------------------------------------

    def members(self, namespace: str, room: str = "") -> list[Member]:
        """The members of ``room`` of ``namespace`` (``""``: of the namespace): one per
        connection id and server."""
        return self._replica.members(namespace, room)

    def count(self, namespace: str, room: str = "") -> int:
        """Distinct connection ids in ``room`` (``""``: the namespace), cluster-wide."""
        return self._replica.count(namespace, room)

    def rooms_of(self, conn_id: str, namespace: str) -> list[str]:
        """The rooms of ``namespace`` that ``conn_id`` is in, on any server."""
        return self._replica.rooms_of(conn_id, namespace)

    def on_change(self, callback: OnChange) -> Callable[[], None]:
        """Call ``callback(change)`` (sync, or async: run as a task) for every join and
        leave, on any server; returns a function that unsubscribes it.

        A member is a connection id on one server: a second connection with the same id
        on the same server (another tab) joining the same room is no change, nor is one
        of the two leaving. A sync callback runs inside the join or leave itself, so what
        it sends reaches the joining client before the answer to its join."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    # -- this server's changes (the registry calls these) -----------------------------------------

    def joined(self, namespace: str, room: str, conn_id: str) -> None:
        if self._exchange is not None and _too_large((namespace, room, conn_id)):
            # Its announcement, and the snapshot part holding it, could be more than the
            # broker carries (NATS: 1 MiB); lost, they would leave the other servers asking
            # for this server's snapshot forever, deaf to its other members meanwhile.
            log.warning(
                "presence leaves out %.80r in room %.80r of %.80r: more than %d bytes as JSON",
                conn_id,
                room,
                namespace,
                SNAPSHOT_BYTES,
            )
            return  # and left() finds nothing to remove
        announce, changes = self._replica.join(namespace, room, conn_id)
        self._publish(announce)
        self._tell(changes)

    def left(self, namespace: str, room: str, conn_id: str) -> None:
        announce, changes = self._replica.leave(namespace, room, conn_id)
        self._publish(announce)
        self._tell(changes)

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen to the other servers and start beating (the server's startup does it)."""
        if self._exchange is None or self._timer is not None:
            return
        self._exchange.side_subscribe(self._channel, self._received, self._connected)
        self._timer = asyncio.get_running_loop().create_task(self._beating())
        if self._exchange.connected:
            self._connected()

    def _connected(self) -> None:
        """The broker is (re)connected: the first time, ask for everyone's snapshot (rather
        than learn each server at its next beat); every time, beat at once, so the others
        see at once which of our announcements they missed (and ask for our snapshot)."""
        if self._timer is None:
            return
        if not self._met:
            self._met = True
            self._send({"s": self._replica.server, "t": "r", "o": ""})
        self._send_beat()

    async def stop(self) -> None:
        """Say goodbye (the others drop this server's members at once) and stop. Async
        ``on_change`` callbacks still running get the exchange's ``timeout`` to finish,
        then are cancelled: a stuck one never holds up the server's shutdown. From then
        on the other servers are not followed: their members are forgotten (no callback),
        and what the broker still delivers is ignored."""
        timer, self._timer = self._timer, None
        if timer is None or self._exchange is None:
            return
        timer.cancel()
        self._send({"s": self._replica.server, "t": "g"})
        for server in self._replica.servers():
            self._replica.forget(server)
        self._met = False  # started again, it asks for everyone's snapshot again
        await asyncio.gather(timer, return_exceptions=True)
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=self._exchange.timeout)
            if late:
                log.warning("cancelling %d presence callbacks still running at stop", len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=self._exchange.timeout)

    async def _beating(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.beat)
            self._send_beat()
            self._tell(self._replica.expire(loop.time()))

    def _send_beat(self) -> None:
        beat = self._replica.beat()
        self._send({"s": beat.server, "t": "b", "q": beat.seq, "e": beat.epoch})

    # -- the wire ------------------------------------------------------------------------------

    def _publish(self, announce: Announce | None) -> None:
        if announce is not None and self._timer is not None:
            self._send(
                {
                    "s": announce.server,
                    "t": "a",
                    "q": announce.seq,
                    "j": announce.joined,
                    "l": announce.left,
                    "e": announce.epoch,
                }
            )

    def _send(self, body: dict[str, Any]) -> None:
        assert self._exchange is not None
        if self._exchange.connected:
            self._exchange.side_publish(self._channel, json.dumps(body).encode())

    def _received(self, payload: bytes) -> None:
        if self._timer is None:
            return  # stopped: after the goodbye, no snapshot that would bring us back
        if payload.startswith(self._own):
            if b'"e": "' in payload and self._own_epoch not in payload:
                self._twin()  # our server id, another process's epoch
            return
        try:
            body = json.loads(payload)
            kind, server, msg = _parse(body)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            # Another publisher's (a buggy or newer server's): this message only is lost.
            log.warning("ignoring a presence message that is not one (%s): %.80r", exc, payload)
            return
        if server == self._replica.server:
            if msg is not None and msg.epoch not in ("", self._replica.epoch):
                self._twin()  # NATS: our own never come back
            return
        now = asyncio.get_running_loop().time()
        if kind == "r":
            if body["o"] in ("", self._replica.server):
                for snap in self._replica.snapshot_parts(SNAPSHOT_BYTES, _json_size):
                    part = {"p": snap.part, "n": snap.parts, "m": snap.members, "e": snap.epoch}
                    self._send({"s": snap.server, "t": "s", "q": snap.seq, **part})
            return
        if kind == "g":
            self._tell(self._replica.forget(server))
            return
        if msg is None:
            return  # a kind of a later version
        changes, ask = self._replica.receive(msg, now)
        if ask is not None:
            self._send({"s": ask.server, "t": "r", "o": ask.of})
        self._tell(changes)

    def _twin(self) -> None:
        if not self._twin_seen:
            self._twin_seen = True
            log.error(
                "another server uses this server's id %r: each takes the other's broadcasts"
                " for its own echo and drops them; give every server its own server_id",
                self._replica.server,
            )

    # -- telling the application ---------------------------------------------------------------

    def _tell(self, changes: list[Change]) -> None:
        for change in changes:
            for callback in list(self._callbacks):
                try:
                    result = callback(change)
                    if inspect.isawaitable(result):
                        task = asyncio.ensure_future(result)
                        self._tasks.add(task)
                        task.add_done_callback(self._finished)
                except Exception:
                    log.exception("presence callback %r failed for %s", callback, change)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("presence callback failed", exc_info=task.exception())


def _json_size(key: tuple[str, str, str]) -> int:
    return len(json.dumps(key)) + 2  # and the separator after it


def _too_large(key: tuple[str, str, str]) -> bool:
    """Whether ``key`` takes more than SNAPSHOT_BYTES as JSON. A character takes 12 bytes
    at most there (an escaped surrogate pair), the brackets, quotes and separators 16: a
    join with short names is not encoded once more just to be measured."""
    if 12 * sum(map(len, key)) + 16 <= SNAPSHOT_BYTES:
        return False
    return _json_size(key) > SNAPSHOT_BYTES


def _parse(body: Any) -> tuple[str, str, Announce | Beat | Snapshot | None]:
    """The kind, the sender and the message (``None`` for ``r``, ``g`` and unknown kinds) of
    a presence message; ValueError, KeyError or TypeError when it is not one."""
    if not isinstance(body, dict):
        raise TypeError("not a JSON object")
    kind, server = body["t"], _text(body["s"])
    epoch = _text(body.get("e", ""))  # "": a server of a version without epochs
    if kind == "a":
        joined, left = _keys(body["j"]), _keys(body["l"])
        return kind, server, Announce(server, _int(body["q"]), joined, left, epoch)
    if kind == "b":
        return kind, server, Beat(server, _int(body["q"]), epoch)
    if kind == "s":
        part, parts = _int(body["p"]), _int(body["n"])
        if not 0 <= part < parts:
            raise ValueError(f"part {part} of {parts}")
        members = _keys(body["m"])
        return kind, server, Snapshot(server, _int(body["q"]), members, part, parts, epoch)
    if kind == "r":
        _text(body["o"])
    return kind, server, None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r:.40}")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"not an integer: {value!r:.40}")
    return value


def _keys(rows: Any) -> tuple[tuple[str, str, str], ...]:
    if not isinstance(rows, list):
        raise TypeError(f"not a list of members: {rows!r:.40}")
    keys = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 3:
            raise TypeError(f"not a member: {row!r:.40}")
        keys.append((_text(row[0]), _text(row[1]), _text(row[2])))
    return tuple(keys)
