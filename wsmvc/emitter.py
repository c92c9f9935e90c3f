"""Sending to a cluster's clients from a process that serves none (issue 10 §2).

A worker, a cron job or a script reaches the clients of wsmvc servers through the same
broker and settings as the servers' exchange: it publishes what a server's ``broadcast``
publishes, and asks a connection the way one server asks a connection on another (the
server that has the connection forwards the ask and publishes the answer). No websocket
server, no aiohttp application::

    import asyncio
    from wsmvc import Message
    from wsmvc.emitter import Emitter
    from wsmvc.exchange import RedisExchange

    async def main() -> None:
        async with Emitter(RedisExchange("redis://127.0.0.1:6379/0")) as emitter:
            progress = Message(namespace="jobs", event="progress", body=b"42")
            await emitter.broadcast(progress, to="alice")

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

from .audience import audience_of
from .awaitables import Later
from .errors import ConnectionClosed
from .exchange.broker import BrokerExchange
from .protocol import Message

__all__ = ["Emitter"]


class Emitter:
    """Broadcasts to, and asks, the clients of the servers that share ``exchange``'s broker
    and prefix (a :class:`~wsmvc.exchange.RedisExchange` or
    :class:`~wsmvc.exchange.NatsExchange` of this emitter's own, not a server's).

    ``connect_timeout`` (seconds): how long :meth:`start` waits for the broker (raises
    ``TimeoutError`` past it). Use it as an async context manager, or call :meth:`start`
    and :meth:`stop`.
    """

    def __init__(self, exchange: BrokerExchange, *, connect_timeout: float = 10.0) -> None:
        if exchange.server is not None:
            raise ValueError("this exchange serves a server: give the emitter one of its own")
        self.exchange = exchange
        self.connect_timeout = connect_timeout

    async def start(self) -> None:
        """Connect to the broker; returns once connected."""
        await self.exchange.start()
        await self.exchange.wait_connected(self.connect_timeout)

    async def stop(self) -> None:
        """Send what is still queued (within the exchange's ``timeout``), then disconnect."""
        await self.exchange.stop()

    async def __aenter__(self) -> Emitter:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def broadcast(
        self,
        msg: Message,
        *,
        to: str | None = None,
        exclude: str | Iterable[str] | None = None,
        rooms: Iterable[str] | None = None,
        exclude_rooms: Iterable[str] | None = None,
    ) -> Later[None]:
        """Send ``msg`` to the connections of its namespace (and room, if set) on every
        server, as ``Server.broadcast`` does; ``to``: only connections with that id;
        ``exclude``: not those with that id (or these ids); ``rooms``: the members of
        these rooms, each once; ``exclude_rooms``: not their members.

        The broadcast is handed to the exchange during the call, so it goes out even if
        the result is never awaited; awaiting it returns once the broker has it (one round
        trip, shared by concurrent calls). Raises :class:`~wsmvc.ConnectionClosed` in the
        call when the broker cannot take it (not connected, larger than the broker takes,
        ``max_pending`` broadcasts waiting for it already) and, awaited, when the broker
        gave no answer within the exchange's ``timeout``; ValueError/TypeError as
        ``Server.broadcast`` for what cannot be an audience."""
        audience = audience_of(
            msg, exclude=exclude, to=to, rooms=rooms, exclude_rooms=exclude_rooms
        )
        if not self.exchange.connected:
            raise ConnectionClosed("the emitter is not connected to its broker")
        if audience is not None:
            queued = self.exchange.offer(msg, to=to, audience=audience)
        else:
            queued = self.exchange.offer(msg, exclude_id=exclude, to=to)  # type: ignore[arg-type]
        if not queued:
            # A server still delivers such a broadcast to its own connections; an emitter
            # has none, so nobody would get it.
            raise ConnectionClosed(
                "the broker cannot take this broadcast now: larger than it takes, or"
                f" {self.exchange.max_pending} broadcasts wait for it already (max_pending)"
            )
        return Later(self._flushed)

    async def _flushed(self) -> None:
        """Wait until the broker has what was handed to the exchange."""
        try:
            await self.exchange.flush(self.exchange.timeout)
        except asyncio.TimeoutError:
            raise ConnectionClosed(
                f"the broker did not answer within {self.exchange.timeout}s"
            ) from None

    async def ask(self, msg: Message, *, to: str, timeout: float | None = 30.0) -> Message:
        """Ask the connection with id ``to`` (on whichever server has it, in ``msg``'s
        namespace) and return its answer. ``timeout``: seconds (``None``: no limit).

        Raises :class:`~wsmvc.AskTimeout` without an answer in time (also when no server
        has that connection), :class:`~wsmvc.EventError` with the client's error, and
        :class:`~wsmvc.ConnectionClosed` when not connected."""
        return await self.exchange.ask(msg, to=to, timeout=timeout)
