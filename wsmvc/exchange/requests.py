"""Requests from one server to another of the cluster, through the broker: what moves a
kept connection from the server that kept it to the one its client came back to
(:mod:`wsmvc.handover`).

Each server listens on its side channel ``requests.<server id>``. A publication there is
four lines and a body::

    <kind>\\n<asking server id>\\n<request id>\\n<index>\\n<body>

``q`` a request (the body is the question); ``p`` a part of the answer, or the last piece
of one: a part larger than the broker takes in one message (NATS: ``max_payload``) goes out
in pieces, ``c`` each but the last; ``e`` the answer's end. ``index`` counts an answer's
publications from 0 (``e``'s: how many went before it). They go out in order, after every
broadcast published before them (the exchange's ordered outbox), and a broker delivers
one publisher's messages in order, so an answer is complete when its end arrives with
every publication before it. An answer that cannot go out whole (the broker away) ends
with ``x`` instead, and the asker gets an error.

Whoever can publish on the broker can send anything there: request ids are random (an
answer cannot be forged blindly), an answer counts only from the server asked and up to
``max_answer`` bytes, and a request that cannot be read gets ``x`` (logged, no traceback).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConnectionClosed

if TYPE_CHECKING:
    from .broker import BrokerExchange

__all__ = ["RequestFailed", "ServerRequests"]

log = logging.getLogger("wsmvc.exchange")

Handler = Callable[[bytes], list[bytes]]
"""Answers a request's body with the answer's parts (synchronously: nothing the answer
reads can change before it is all queued)."""

_HEADER = re.compile(rb"([qpcex])\n([A-Za-z0-9_-]{1,64})\n([0-9]{1,18})\n([0-9]{1,9})\n")


class RequestFailed(ConnectionClosed):
    """A request to another server got no whole answer in time."""


class _Waiting:
    """A request waiting for its answer from ``server``."""

    __slots__ = ("count", "parts", "pieces", "server", "size", "waiter")

    def __init__(self, server: str) -> None:
        self.server = server
        self.waiter: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self.parts: list[bytes] = []
        self.pieces: list[bytes] = []  # of the part being received
        self.count = 0  # publications received
        self.size = 0


class ServerRequests:
    """Request/reply between the servers of a cluster over ``exchange``'s side channels.

    ``handle(body)`` answers this server's requests (raising ``ValueError``, ``KeyError``
    or ``TypeError`` for one it cannot read). Start it once the exchange started
    (:meth:`start`); :meth:`request` asks another server, whose answer is at most
    ``max_answer`` bytes.
    """

    __slots__ = ("_exchange", "_handle", "_max_answer", "_waiting")

    def __init__(self, exchange: BrokerExchange, handle: Handler, max_answer: int) -> None:
        self._exchange = exchange
        self._handle = handle
        self._max_answer = max_answer
        self._waiting: dict[int, _Waiting] = {}

    def _channel(self, server_id: str) -> str:
        return self._exchange.side_channel(f"requests.{server_id}")

    def start(self) -> None:
        """Listen for requests (and answers) on this server's channel."""
        self._exchange.side_subscribe(self._channel(self._exchange.id), self._received)

    def stop(self) -> None:
        """Fail what waits for an answer."""
        for waiting in self._waiting.values():
            if not waiting.waiter.done():
                waiting.waiter.set_exception(RequestFailed("the exchange stopped"))

    async def request(self, server_id: str, body: bytes, timeout: float) -> list[bytes]:
        """Ask the server ``server_id``; the parts of its answer.

        Raises :class:`RequestFailed` when the request cannot go out, no whole answer
        comes within ``timeout`` seconds, or the answer could not be sent whole.
        """
        rid = secrets.randbits(59)  # 18 digits at most; not guessed by another publisher
        while rid in self._waiting:
            rid = secrets.randbits(59)
        waiting = self._waiting[rid] = _Waiting(server_id)
        try:
            head = f"q\n{self._exchange.id}\n{rid}\n0\n".encode()
            if not self._exchange.side_publish(self._channel(server_id), head + body):
                raise RequestFailed(f"the request to server {server_id} did not go out")
            return await asyncio.wait_for(waiting.waiter, timeout)
        except asyncio.TimeoutError:
            raise RequestFailed(f"no answer from server {server_id} within {timeout}s") from None
        finally:
            del self._waiting[rid]

    def _received(self, payload: bytes) -> None:
        match = _HEADER.match(payload)
        if match is None:
            log.warning("%s: a server request it cannot read: %.80r", self._exchange, payload)
            return
        kind, sender, rid, index = match.groups()
        body = payload[match.end() :]
        if kind == b"q":
            self._answer(sender.decode(), rid.decode(), body)
            return
        waiting = self._waiting.get(int(rid))
        if waiting is None or waiting.waiter.done() or sender.decode() != waiting.server:
            return  # given up meanwhile, or not from the server asked
        waiter = waiting.waiter
        waiting.size += len(body)
        if waiting.size > self._max_answer:
            waiter.set_exception(RequestFailed(f"an answer of more than {self._max_answer} bytes"))
        elif kind in (b"p", b"c"):
            if int(index) != waiting.count:  # one went missing: the end will not match
                waiter.set_exception(RequestFailed("a part of the answer went missing"))
                return
            waiting.count += 1
            waiting.pieces.append(body)
            if kind == b"p":
                waiting.parts.append(b"".join(waiting.pieces))
                waiting.pieces.clear()
        elif kind == b"e" and int(index) == waiting.count and not waiting.pieces:
            waiter.set_result(waiting.parts)
        else:
            waiter.set_exception(RequestFailed(f"server {waiting.server} could not answer"))

    def _answer(self, asker: str, rid: str, body: bytes) -> None:
        try:
            parts = self._handle(body)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "%s: a request from server %.64s it cannot read (%s): %.80r",
                self._exchange,
                asker,
                type(exc).__name__,
                body,
            )
            parts = None
        except Exception:
            log.exception("%s: failed answering server %s", self._exchange, asker)
            parts = None
        channel = self._channel(asker)
        publish = self._exchange.side_publish
        if parts is not None:
            head = f"\n{self._exchange.id}\n{rid}\n"
            limit = self._exchange._payload_limit()
            # Room for the header (its index: 9 digits at most) and a margin.
            size = max(limit - len(head) - 64, 1024) if limit is not None else None
            publications = [piece for part in parts for piece in _pieces(part, size)]
            for index, (kind, piece) in enumerate(publications):
                if not publish(channel, f"{kind}{head}{index}\n".encode() + piece):
                    break
            else:
                publish(channel, f"e{head}{len(publications)}\n".encode())
                return
        publish(channel, f"x\n{self._exchange.id}\n{rid}\n0\n".encode())


def _pieces(part: bytes, size: int | None) -> list[tuple[str, bytes]]:
    """``part`` as publications of ``size`` bytes at most: ``c`` each but the last, ``p``."""
    if size is None or len(part) <= size:
        return [("p", part)]
    cuts = [part[at : at + size] for at in range(0, len(part), size)]
    return [("c", piece) for piece in cuts[:-1]] + [("p", cuts[-1])]
