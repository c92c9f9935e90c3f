"""Asks across servers (``neffos-protocol.md`` §12.5, done as intended): a mixin of
:class:`~wsmvc.exchange.broker.BrokerExchange`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import attrs

from ..errors import AskTimeout, ConnectionClosed, EventError
from ..protocol import Message, encode, encode_answer, new_token

if TYPE_CHECKING:
    from ..server import Server
    from .outbox import Outbox

__all__ = ["CrossServerAsks"]

log = logging.getLogger("wsmvc.exchange")

MAX_ID_BYTES = 1024
_UNSENT = "the answer did not go out to the asking server"


class CrossServerAsks:
    """``ask()`` a connection on another server, and answer other servers' asks of ours."""

    __slots__ = ()

    if TYPE_CHECKING:  # what the methods use of the exchange they are part of
        id: str
        timeout: float
        server: Server | None
        _connected: bool
        _outbox: Outbox
        _ask_channels: dict[str, asyncio.Future[Message]]
        _forwards: set[asyncio.Task[None]]

        def id_channel(self, conn_id: str) -> str: ...

    async def ask(self, msg: Message, *, to: str, timeout: float | None) -> Message:
        if not self._connected:
            raise ConnectionClosed("the exchange is not connected")
        # The answer's channel: unique across the cluster (a counter alone is unique only
        # in this process), and still a reply token (spec 8.1: not starting with "$").
        token = f"{new_token()}{self.id}"
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._ask_channels[token] = waiter
        self._outbox.put("sub", token)
        request = attrs.evolve(msg, token=token, marker="", binary=False)
        try:
            if not self._outbox.put("pub", self.id_channel(to), encode(request)):
                raise ConnectionClosed("the question did not go out to the other servers")
            reply = await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise AskTimeout(f"no answer to {msg.event!r} from {to!r} within {timeout}s") from None
        finally:
            del self._ask_channels[token]
            self._outbox.put("unsub", token)
        if reply.err:
            raise EventError(reply.err)
        return reply

    def _forward_ask(self, request: Message, conn_id: str) -> None:
        server = self.server
        assert server is not None
        if not any(c.namespace(request.namespace) for c in server.get_connections(conn_id)):
            return  # not ours (perhaps our own request): the owner answers
        if len(request.token.encode()) > MAX_ID_BYTES:  # ours are ~50: a foreign publisher's
            # Its answer's channel: NATS closes a connection publishing to a subject past
            # its 4 KiB control line, and this one's broadcasts would be dropped meanwhile.
            log.warning("%s: not asking %.80r, the answer channel is too long", self, conn_id)
            return

        async def forward() -> None:
            local = attrs.evolve(request, token="", from_exchange=False)
            try:
                answer = await server.ask(local, to=conn_id, timeout=self.timeout * 6)
                reply = encode_answer(request, body=answer.body)
            except EventError as exc:
                reply = encode_answer(request, err=exc.text)
            except (AskTimeout, ConnectionClosed):
                return  # the asker times out too
            if not self._outbox.put("pub", request.token, reply):  # too large, say
                self._outbox.put("pub", request.token, encode_answer(request, err=_UNSENT))

        task = asyncio.get_running_loop().create_task(forward())
        self._forwards.add(task)
        task.add_done_callback(self._forwards.discard)
