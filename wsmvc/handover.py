"""Recovery across servers (``docs/recovery.md``, "Across servers"): a client whose
connection was kept by server A comes back to server B of the same cluster (a load
balancer without sticky sessions, A restarting behind it). B takes the connection over:
the same id, namespaces and rooms, and every message it missed, in order, exactly once.

Recovery keys carry their server's id (``<server id>.<secret>``). B, given a key of A's:

1. asks A to *describe* it (the exchange's :class:`~wsmvc.exchange.requests.ServerRequests`):
   A reserves the kept connection (its key serves no one else) and answers its id, its
   namespaces (with their connect payloads) and rooms;
2. opens a connection with that id as a new one (``on_connect``, then each namespace's
   and room's hooks, as the client's own requests would run them: per-process state
   follows the connection), while everything written to it is held, not sent; its
   broadcasts start arriving once the broker confirmed its subscriptions;
3. asks A to *take* it: A answers the frames the client did not read (but its own asks
   in flight, which fail as the connection ends there), and how many of the client's own
   it read, and closes its kept connection (close reason ``MOVED``: its disconnect events
   run there, nothing is sent);
4. sends the recovery frame, ``A<id>``, A's frames, then what it held but the broadcasts
   A's frames have too (a broadcast carries the same stamp on every server:
   :class:`~wsmvc.framing.Payload`), then goes on as any connection.

A broadcast published before B subscribed reached A before A got the take (the broker
delivers one server's subscriptions in the order it processed the publications), so none
falls between the two. A connection that cannot move (A unreachable or gone, a hook on B
refusing, its missed frames no longer all kept, more held by B than the bounds keep) is
closed by B before ``A<id>``: the client's next try gets a new connection (A ends the kept
one: B tells it so, again until it answers).

B tells A whatever happens once it asked: each move has a *lease* (B's, in each of its
requests), and A's reservation answers only to it. A move B does not take to its end
before the take (B closing, the request or the serving task cancelled, the client gone
before the take, the broker not confirming B's subscriptions) gives the connection back:
A serves its key again, so the client's next try, to any server, gets it back. A client
that comes back once more while a move waits (its try there gone, or given up) takes the
connection over: the latest move's describe, or A's own return, ends the reservation, and
the earlier move's take gets nothing.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

import attrs

from .closing import CloseReason
from .errors import ConnectionClosed
from .exchange.requests import RequestFailed, ServerRequests
from .protocol import (
    ACK_OK,
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    Message,
)
from .recorder import Frame, Recorder
from .recovery import Recoverable, Recoveries, recovery_frame

if TYPE_CHECKING:
    from .conn import Conn
    from .exchange.broker import BrokerExchange

__all__ = ["Described", "Handover", "MovingIn"]

log = logging.getLogger("wsmvc")

_RESERVED = 60.0  # seconds a described connection waits for its take before serving again
# Seconds between describes while the owner drops the old websocket (within the timeout).
_RETRIES = (0.01, 0.05, 0.1, 0.2, 0.2, 0.2, 0.2)  # then every 0.5 s
_TELL_AGAIN = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)  # an abandon, unanswered


@attrs.frozen
class Described:
    """A kept connection as its server describes it: its id, and its namespaces with their
    connect payloads and rooms; ``lease``, what this server's take or abandon of it says
    (a later move's are not this one's)."""

    id: str
    namespaces: tuple[tuple[str, bytes, tuple[str, ...]], ...]
    lease: str = ""


class _Reserved:
    """A kept connection described to another server, waiting for its take or abandon
    (those of ``lease`` only)."""

    __slots__ = ("lease", "recoverable", "timer")

    def __init__(self, recoverable: Recoverable, lease: str, timer: asyncio.TimerHandle) -> None:
        self.recoverable = recoverable
        self.lease = lease
        self.timer = timer


class Handover:
    """A server's side of moving connections: it answers other servers' requests for the
    connections it keeps, and asks for those its clients bring back from elsewhere."""

    __slots__ = ("_exchange", "_recoveries", "_requests", "_reserved", "_spent", "_telling")

    def __init__(self, exchange: BrokerExchange, recoveries: Recoveries) -> None:
        self._exchange = exchange
        self._recoveries = recoveries
        bounds = recoveries.bounds
        # A take's answer: the kept frames, each with a line of its own before it; a
        # describe's: the connect payloads of its namespaces (each up to a message's size).
        most = max(2 * bounds.max_bytes + bounds.max_messages * 128, 64 << 20)
        self._requests = ServerRequests(exchange, self._answer, most)
        self._reserved: dict[str, _Reserved] = {}
        self._telling: set[asyncio.Task[None]] = set()  # abandons on their way
        self._spent: dict[str, float] = {}  # leases whose reservation ended -> when

    @property
    def server_id(self) -> str:
        """This server's id, which its recovery keys start with."""
        return self._exchange.id

    def owner(self, key: str) -> str | None:
        """The id of the other server that issued ``key``, if another did."""
        owner, dot, _ = key.rpartition(".")
        return owner if dot and owner != self._exchange.id else None

    def start(self) -> None:
        self._requests.start()

    def stop(self) -> None:
        self._requests.stop()
        for task in self._telling:
            task.cancel()
        for reserved in self._reserved.values():
            reserved.timer.cancel()
            self._recoveries.restore(reserved.recoverable)
        self._reserved.clear()

    # -- the returning side (B) ---------------------------------------------------------------

    async def describe(self, owner: str, key: str) -> Described | None:
        """Ask ``owner`` for its kept connection of ``key``; ``None`` when it has none
        (or cannot be asked). Cancelled, it tells ``owner`` the key serves again."""
        lease = secrets.token_urlsafe(12)
        request = {"op": "describe", "key": key, "lease": lease}
        loop = asyncio.get_running_loop()
        until = loop.time() + self._timeout
        try:
            answer = await self._ask(owner, request)
            # The owner drops the old websocket meanwhile; a handler of the connection may
            # still run there (its answer goes with the connection): asked again, within
            # the exchange's timeout.
            for pause in itertools.chain(_RETRIES, itertools.repeat(0.5)):
                if answer is None or not answer.get("retry") or loop.time() + pause > until:
                    break
                await asyncio.sleep(pause)
                answer = await self._ask(owner, request)
        except asyncio.CancelledError:
            self.abandon(owner, key, lease, end=False)
            raise
        if answer is None or answer.get("retry"):
            # No answer in time (the broker or the owner slow, away): the client gets a new
            # connection here, so the owner, if it got the question after all, ends its own.
            self.abandon(owner, key, lease, end=True)
            return None
        if "id" not in answer:
            return None
        try:
            namespaces = tuple(
                (str(name), base64.b64decode(payload), tuple(str(room) for room in rooms))
                for name, payload, rooms in answer["namespaces"]
            )
            return Described(str(answer["id"]), namespaces, lease)
        except (TypeError, ValueError):
            log.warning("handover: server %s described %.80r", owner, answer)
            self.abandon(owner, key, lease, end=False)
            return None

    async def take(
        self, owner: str, key: str, lease: str, received: int
    ) -> tuple[int, list[Frame]] | None:
        """Ask ``owner`` for the frames after the ``received``-th, and its count of the
        client's frames read; it closes its kept connection. ``None``: not to be had."""
        request = {"op": "take", "key": key, "lease": lease, "received": received}
        try:
            parts = await self._requests.request(owner, _json(request), self._timeout)
            head = json.loads(parts[0])
            if "read" not in head or len(parts) != 1 + head["frames"]:
                return None
            return int(head["read"]), [_frame(part) for part in parts[1:]]
        except (RequestFailed, ValueError, KeyError, TypeError, IndexError) as exc:
            log.info("handover: no take from server %s: %s", owner, exc)
            return None

    def abandon(self, owner: str, key: str, lease: str, *, end: bool) -> None:
        """Tell ``owner`` the connection of ``key`` does not move here (``end``: its client
        gets a new connection, close it; else its key serves again). A later move's lease
        is not ``lease``: it is not affected. Told again until ``owner`` answers (the
        broker may be away), for as long as it would keep the connection reserved."""
        body = _json({"op": "abandon", "key": key, "lease": lease, "end": end})
        task = asyncio.get_running_loop().create_task(self._tell(owner, body))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def _tell(self, owner: str, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RESERVED
        for pause in _TELL_AGAIN:
            try:
                await self._exchange.wait_connected(max(0.0, deadline - loop.time()))
                await self._requests.request(owner, body, self._timeout)
                return
            except (RequestFailed, asyncio.TimeoutError) as exc:
                if loop.time() + pause >= deadline:
                    log.info("handover: server %s not told %.80r: %s", owner, body, exc)
                    return
            except ConnectionClosed:
                return  # the exchange stopped
            await asyncio.sleep(pause)

    async def confirmed(self, conn: Conn) -> bool:
        """Whether the broker confirmed this server's subscriptions (``conn``'s among
        them) within the exchange's timeout."""
        exchange = self._exchange
        try:
            await exchange.settle(exchange.timeout)
        except (asyncio.TimeoutError, ConnectionClosed, RuntimeError) as exc:
            log.info("%r: the exchange did not confirm its subscriptions: %s", conn, exc)
            return False
        return True

    @property
    def _timeout(self) -> float:
        return self._exchange.timeout

    async def _ask(self, owner: str, request: dict[str, Any]) -> dict[str, Any] | None:
        try:
            parts = await self._requests.request(owner, _json(request), self._timeout)
            answer = json.loads(parts[0]) if parts else None
        except (RequestFailed, ValueError) as exc:
            log.info("handover: server %s did not answer %s: %s", owner, request["op"], exc)
            return None
        return answer if isinstance(answer, dict) else None

    # -- the keeping side (A) -------------------------------------------------------------------

    def _answer(self, body: bytes) -> list[bytes]:
        """Another server's request (ValueError, KeyError, TypeError: not one)."""
        request = json.loads(body)
        op, key, lease = request["op"], str(request["key"]), str(request["lease"])
        if op == "describe":
            return [_json(self._describe(key, lease))]
        if op == "take":
            return self._take(key, lease, int(request["received"]))
        if op != "abandon":
            raise ValueError(f"no request {op!r}")
        self._abandoned(key, lease, bool(request.get("end")))
        return [b"{}"]

    def _abandoned(self, key: str, lease: str, end: bool) -> None:
        """The move of ``lease`` stops short of its take (``end``: its client was given a
        new connection)."""
        why = "its client was given a new connection elsewhere"
        reserved = self._reserved.get(key)
        if reserved is None:
            # Never reserved for it (its describe got no answer in time, or only "retry"):
            # still kept here, for a client that has a new connection now. A move whose
            # reservation ended (taken back, taken over) decides nothing any more.
            recoverable = self._recoveries.get(key) if end and lease not in self._spent else None
            if recoverable is not None:
                recoverable.end(why)
            return
        if reserved.lease != lease:
            return  # a later move's: not this one's to decide
        self._unreserve(key)
        if end:
            reserved.recoverable.end(why)
        else:
            self._recoveries.restore(reserved.recoverable)

    def _describe(self, key: str, lease: str) -> dict[str, Any]:
        reserved = self._unreserve(key)
        if reserved is not None:
            # Described to a move that is not over, and asked again: its client came back
            # once more (the last try gone, or given up): the latest move takes it over.
            recoverable = reserved.recoverable
            if recoverable.over:
                return {}
        else:
            found = self._recoveries.get(key)
            if found is None or found.over:
                return {}
            recoverable = found
            if not recoverable.settled:
                # Its client is back elsewhere before this server saw the old websocket go:
                # drop it now; asked again once it was read to its end (the count is final).
                recoverable.lose("its client came back to another server")
                return {"retry": True}
            self._recoveries.remove(recoverable)  # each key serves once
        timer = asyncio.get_running_loop().call_later(_RESERVED, self._expired, key)
        self._reserved[key] = _Reserved(recoverable, lease, timer)
        conn = recoverable.conn
        namespaces = [
            [name, base64.b64encode(ns.connect_payload).decode(), sorted(ns.rooms)]
            for name, ns in conn.namespaces.items()
            if ns.connected
        ]
        return {"id": conn.id, "namespaces": namespaces}

    def reclaim(self, key: str) -> None:
        """A client back here with ``key`` while another server moves its connection (its
        try there is gone, or given up): the key serves here again; that move's take
        gets nothing."""
        reserved = self._unreserve(key)
        if reserved is not None:
            self._recoveries.restore(reserved.recoverable)

    def _unreserve(self, key: str) -> _Reserved | None:
        """End the reservation of ``key``, if any; its lease is spent."""
        reserved = self._reserved.pop(key, None)
        if reserved is None:
            return None
        reserved.timer.cancel()
        now = asyncio.get_running_loop().time()
        spent = self._spent
        spent[reserved.lease] = now
        while spent and next(iter(spent.values())) < now - _RESERVED:
            del spent[next(iter(spent))]
        return reserved

    def _expired(self, key: str) -> None:
        reserved = self._unreserve(key)
        if reserved is not None:
            self._recoveries.restore(reserved.recoverable)

    def _take(self, key: str, lease: str, received: int) -> list[bytes]:
        reserved = self._reserved.get(key)
        if reserved is None or reserved.lease != lease:
            return [b"{}"]
        self._unreserve(key)
        recoverable = reserved.recoverable
        frames = recoverable.recorder.since(received) if not recoverable.over else None
        if frames is None:
            recoverable.end("the messages it missed are no longer all kept")
            return [b"{}"]
        conn = recoverable.conn
        read = conn.received
        asks = conn.session.asks
        if asks:
            # This server's asks of it (a room join or leave, a namespace disconnect, an
            # ask) fail as it ends here: the client, which has not read them, does not see
            # them either (else it would join or leave what the other server does not).
            frames = [frame for frame in frames if _token(frame) not in asks]
        # In this step, with the answer: nothing written to it from now on is missed (the
        # other server has held its broadcasts since before it asked).
        recoverable.end("its client came back to another server", cause=CloseReason.MOVED)
        head = _json({"read": read, "frames": len(frames)})
        return [head, *(_part(frame) for frame in frames)]


class MovingIn(Recoverable):
    """The recovery of a connection moving in from another server (see the module
    docstring): held from ``A<id>`` on until :meth:`opened` took it over."""

    __slots__ = ("_described", "_handover", "_key", "_owner", "_received", "_taken")

    def __init__(
        self,
        conn: Conn,
        recorder: Recorder,
        table: Recoveries,
        handover: Handover,
        owner: str,
        key: str,
        received: int,
        described: Described,
    ) -> None:
        super().__init__(conn, recorder, table)
        self.moved_from = owner
        self._handover = handover
        self._owner = owner
        self._key = key
        self._received = received
        self._described = described
        self._taken = False

    def acknowledging(self) -> None:
        self.recorder.hold()  # A<id> too: it goes after the recovery frame

    def acknowledged(self) -> None:
        self.recorder.hold()  # drops the held A<id> (release sends its own)

    async def opened(self) -> None:
        """Restore the namespaces and rooms, take the connection over from its server and
        send what the client missed; or close it (1011) when it cannot move."""
        conn = self.conn
        refusal = await self._restore()
        handover = self._handover
        lease = self._described.lease
        if refusal is not None:
            log.info("%r: not moved here, a hook refused: %s", conn, refusal)
            self._taken = True
            handover.abandon(self._owner, self._key, lease, end=True)
            conn.request_close(1011, "recovery refused", urgent=True, cause=CloseReason.REFUSED)
            return
        # Taken only for a client still there, with the broadcasts since held here: else
        # its server keeps it, the key serving again (its next try, anywhere, gets it back).
        if not (self._staying() and await handover.confirmed(conn) and self._staying()):
            if self.recorder.overflowed and not self._taken:
                # More was written to it here than the bounds keep (its hooks' own
                # messages, say): its next try would do the same; it gets a new one.
                self._taken = True
                handover.abandon(self._owner, self._key, lease, end=True)
            self._give_back()
            self._not_recovered()
            return
        self._taken = True
        taken = await handover.take(self._owner, self._key, lease, self._received)
        if taken is None:
            # Its server may not have had the take (the broker slow or away): it must not
            # keep the connection for a client whose next try gets a new one.
            handover.abandon(self._owner, self._key, lease, end=True)
        if taken is None or not self._staying():
            self._not_recovered()
            return
        read, frames = taken
        self.key = self._table.enrol(self)
        first = [recovery_frame(self.key, read), (ACK_OK + conn.id).encode(errors="replace")]
        self.recorder.release(first, self._received, frames)
        conn.received = read
        log.info(
            "%r: moved here from server %s, %d messages replayed", conn, self._owner, len(frames)
        )

    def _staying(self) -> bool:
        """Whether the connection can still be taken over here: open, its client's
        websocket not gone (aiohttp saw it end), no more held than the bounds keep."""
        return not (self.conn.closed or self._gone() or self.recorder.overflowed)

    def _gone(self) -> bool:
        """Whether the client's websocket is gone (aiohttp saw its TCP connection end)."""
        request = self.conn.request
        transport = request.transport if request is not None else None
        return transport is None or transport.is_closing()

    def _not_recovered(self) -> None:
        """Close it before ``A<id>`` (1011): the client's next try gets a new connection,
        or its connection back from its server when it was given back."""
        gone = self._gone()
        cause = CloseReason.CONNECTION_LOST if gone else CloseReason.NOT_RECOVERED
        self.conn.request_close(1011, cause.text, urgent=True, cause=cause)

    def _give_back(self) -> None:
        """Not taken: its server serves the key again."""
        if not self._taken:
            self._taken = True
            self._handover.abandon(self._owner, self._key, self._described.lease, end=False)

    async def _restore(self) -> str | None:
        """The namespaces and rooms of the connection, each through its hooks; the first
        refusal, if any (none once the connection is closing: a close is no refusal)."""
        conn = self.conn
        session = conn.session
        fire = conn.dispatcher.fire

        def refused(what: str, refusal: str | None = None) -> str | None:
            return None if conn.closed else refusal or what

        for name, payload, rooms in self._described.namespaces:
            if conn.closed:
                return None
            ns = session.connect_started(name) if session.declares(name) else None
            if ns is None:
                return f"namespace {name[:64]!r}"
            ns.connect_payload = payload
            refusal = await fire(
                ns, Message(namespace=name, event=ON_NAMESPACE_CONNECT, body=payload)
            )
            if not session.connect_finished(ns, refusal is None):
                return refused(f"namespace {name[:64]!r}", refusal)
            await fire(ns, Message(namespace=name, event=ON_NAMESPACE_CONNECTED))
            for room in rooms:
                if not session.join_started(ns, room):
                    return refused(f"room {room[:64]!r}")
                refusal = await fire(ns, Message(namespace=name, room=room, event=ON_ROOM_JOIN))
                if not session.join_finished(ns, room, refusal is None):
                    return refused(f"room {room[:64]!r}", refusal)
                await fire(ns, Message(namespace=name, room=room, event=ON_ROOM_JOINED))
        return None

    def finished(self) -> None:
        if self.conn.close_reason is CloseReason.REFUSED and not self._taken:
            # on_connect refused the client here: its server does not keep it for it.
            self._taken = True
            self._handover.abandon(self._owner, self._key, self._described.lease, end=True)
        self._give_back()  # gone before its M, cancelled
        super().finished()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _part(frame: Frame) -> bytes:
    """A kept frame as a part of a take's answer: ``b``/``t``, the stamp, a newline, then
    the frame's payload."""
    data, binary, stamp = frame
    mark = f"{stamp[0]}:{stamp[1]}" if stamp is not None else ""
    return f"{'b' if binary else 't'}{mark}\n".encode() + data


def _token(frame: Frame) -> str:
    """The token of a kept frame's message (``""`` for none)."""
    token, semicolon, _ = frame[0].partition(b";")
    return token.decode(errors="replace") if semicolon else ""


def _frame(part: bytes) -> Frame:
    head, _, data = part.partition(b"\n")
    kind, mark = head[:1], head[1:].decode()
    if kind not in (b"b", b"t"):
        raise ValueError(f"a frame part of kind {kind!r}")
    origin, _, seq = mark.rpartition(":")
    return data, kind == b"b", (origin, int(seq)) if mark else None
