"""Who is online in each room: the counts the chat page shows.

A :class:`Snapshot` is the list of distinct names in one room (two tabs of ``alice``
count once) and a revision number that grows with every change, so a page can drop a
snapshot that arrives after a newer one.

* :class:`LocalPresence` - one server: the room's members are ``server.room_members``.
* :class:`RedisPresence` - several servers sharing a Redis: each server writes the names
  of its own members to a sorted set per room (``<prefix>:room:<room>``), with a score
  that expires them if the server dies without cleaning up, and reads every server's
  names back in the same transaction. The counts are then right across servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from typing import Any

import attrs
from aiohttp import web

from wsmvc import Message, Server

__all__ = ["LocalPresence", "Presence", "RedisPresence", "Snapshot", "local_names"]

log = logging.getLogger("chat")


@attrs.frozen
class Snapshot:
    room: str
    names: tuple[str, ...]
    rev: int

    def message(self, namespace: str) -> Message:
        """The ``OnPresence`` message that tells the room's members about this snapshot."""
        body = {"count": len(self.names), "names": list(self.names), "rev": self.rev}
        return Message(
            namespace=namespace,
            room=self.room,
            event="OnPresence",
            body=json.dumps(body).encode(),
        )


def local_names(server: Server, namespace: str, room: str) -> set[str]:
    """The names (connection ids) in ``room`` on this server, closing connections left out."""
    return {m.id for m in server.room_members(namespace, room) if not m.conn.closed}


class Presence:
    """What the chat controller needs: a fresh snapshot after a member joined or left."""

    async def update(self, room: str) -> Snapshot | None:
        """The room's snapshot now (``None``: no answer right now, try again later)."""
        raise NotImplementedError

    async def start(self, app: web.Application) -> None:
        """Runs when the application starts."""

    async def stop(self, app: web.Application) -> None:
        """Runs when the application has stopped serving."""


class LocalPresence(Presence):
    """Counts the members of this server alone (``server.room_members``)."""

    def __init__(self, server: Server, namespace: str) -> None:
        self.server = server
        self.namespace = namespace
        self._revs = itertools.count(1)

    async def update(self, room: str) -> Snapshot:
        names = local_names(self.server, self.namespace, room)
        return Snapshot(room, tuple(sorted(names)), next(self._revs))


class RedisPresence(Presence):
    """Counts the members of every server that shares the Redis at ``url``.

    Each server refreshes its own entries every ``ttl / 3`` seconds; the entries of a
    server that stopped without cleaning up (killed, host lost) expire after ``ttl``
    seconds, and the next refresh of a server with members in that room tells them.
    """

    def __init__(
        self,
        server: Server,
        namespace: str,
        url: str,
        *,
        prefix: str = "wsmvc-chat",
        ttl: float = 30.0,
    ) -> None:
        self.server = server
        self.namespace = namespace
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.server_id = uuid.uuid4().hex
        self._redis: Any = None
        self._lock = asyncio.Lock()  # one transaction at a time keeps _mine in step with Redis
        self._mine: dict[str, set[str]] = {}  # room -> the names this server wrote there
        self._seen: dict[str, tuple[str, ...]] = {}  # room -> the names of its last snapshot
        self._refresher: asyncio.Task[None] | None = None

    async def update(self, room: str) -> Snapshot | None:
        async with self._lock:
            names = local_names(self.server, self.namespace, room)
            try:
                members, rev = await self._write(room, names)
            except Exception as exc:  # Redis unreachable: keep serving, the refresher retries
                log.warning("room counts of #%s not updated: %s", room, exc)
                return None
            if names:
                self._mine[room] = names
            else:
                self._mine.pop(room, None)
        everyone = tuple(sorted({m.partition("|")[2] for m in members}))
        self._seen[room] = everyone
        return Snapshot(room, everyone, rev)

    async def _write(self, room: str, names: set[str]) -> tuple[list[str], int]:
        key = f"{self.prefix}:room:{room}"
        now = time.time()
        gone = self._mine.get(room, set()) - names
        async with self._redis.pipeline(transaction=True) as tx:
            if gone:
                tx.zrem(key, *(f"{self.server_id}|{n}" for n in gone))
            if names:
                tx.zadd(key, {f"{self.server_id}|{n}": now + self.ttl for n in names})
            tx.zremrangebyscore(key, "-inf", now)  # other servers' expired entries
            tx.expire(key, int(self.ttl * 2))
            tx.zrange(key, 0, -1)
            tx.incr(f"{self.prefix}:rev:{room}")
            results = await tx.execute()
        members = [m.decode() if isinstance(m, bytes) else m for m in results[-2]]
        return members, int(results[-1])

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            for room in set(self.server.rooms(self.namespace)) | set(self._mine):
                before = self._seen.get(room)
                snapshot = await self.update(room)
                if snapshot is not None and snapshot.names != before:
                    await self.server.broadcast(snapshot.message(self.namespace))

    async def start(self, app: web.Application) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def stop(self, app: web.Application) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        # Normally empty by now: every member's leave already removed its name.
        for room in list(self._mine):
            with contextlib.suppress(Exception):
                await self._write(room, set())
        if self._redis is not None:
            await self._redis.aclose()
