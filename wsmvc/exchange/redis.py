"""Scale-out through Redis pub/sub (``pip install 'wsmvc[redis]'``).

Channels follow neffos' Redis exchange (spec §12.2): ``<prefix>.<namespace>.`` for a
namespace, ``<prefix>.<connection id>.`` for one connection, and the token itself for
the answer to a cross-server ask. Go servers subscribe with patterns; wsmvc subscribes
to exact channels, so ``*`` or ``?`` in a name is just a character here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from ..protocol import new_token
from . import client_options_of
from .broker import BrokerExchange

__all__ = ["RedisExchange"]

OWN_OPTIONS: Final = frozenset(
    {"socket_timeout", "socket_connect_timeout", "socket_keepalive", "retry", "client_name"}
)
"""``Redis.from_url`` keywords the exchange sets itself (``client_options`` may not)."""


class RedisExchange(BrokerExchange):
    """Share broadcasts through Redis at ``url`` (``redis://host:port/db``).

    ``prefix`` is neffos' ``channel`` argument (default ``"neffos"``); servers share
    broadcasts when they use the same one. ``timeout`` bounds connecting and publishing;
    the subscriber connection blocks on reads (redis-py 8 would otherwise time it out)
    and is checked with a PING every ``ping_interval`` seconds instead. ``timeout``,
    ``ping_interval``, ``reconnect_delay``, ``server_id`` and ``max_pending`` are every
    broker exchange's (:class:`~wsmvc.exchange.broker.BrokerExchange`).

    ``client_options``: more keywords for redis-py's ``Redis.from_url`` of both of its
    connections (``{"ssl_ca_certs": ..., "health_check_interval": 30}``); the ones the
    exchange sets itself (:data:`OWN_OPTIONS`: the timeouts, ``retry``, ``client_name``)
    raise :class:`ValueError`. Raises :class:`ImportError` without redis-py.
    """

    requires = ("redis", "redis")

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "neffos",
        timeout: float = 5.0,
        ping_interval: float = 5.0,
        reconnect_delay: tuple[float, float] = (0.05, 2.0),
        server_id: str | None = None,
        max_pending: int = 10_000,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        options = client_options_of(client_options, OWN_OPTIONS)
        super().__init__(
            timeout=timeout,
            ping_interval=ping_interval,
            reconnect_delay=reconnect_delay,
            server_id=server_id,
            max_pending=max_pending,
        )
        self.url = url
        self.prefix = prefix
        self.client_options = options
        self._publisher: Any = None
        self._subscriber: Any = None
        self._pubsub: Any = None
        self._pongs: dict[bytes, asyncio.Future[None]] = {}
        self._heard = 0.0  # when the subscriber connection last read something (loop time)
        self._listening: Any = None  # the pubsub _listen() reads, while it does

    def namespace_channel(self, namespace: str) -> str:
        return f"{self.prefix}.{namespace}."

    def id_channel(self, conn_id: str) -> str:
        return f"{self.prefix}.{conn_id}."

    def __repr__(self) -> str:
        return f"<RedisExchange {self.url} prefix={self.prefix!r}>"

    async def _connect(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries: redis-py would reconnect behind our back (a PUBLISH sent again after
        # a timeout is a duplicate; a pub/sub connection reopened by a late ping is never
        # closed). A failure gives the broker up instead, and _run() reconnects.
        self._publisher = Redis.from_url(
            self.url,
            **self.client_options,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=f"wsmvc-{self.id}",  # CLIENT LIST tells which server it is
        )
        self._subscriber = Redis.from_url(
            self.url,
            **self.client_options,
            socket_timeout=None,  # a pub/sub reader waits as long as there is nothing to read
            socket_connect_timeout=self.timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            client_name=f"wsmvc-{self.id}-sub",
        )
        await asyncio.wait_for(self._publisher.ping(), self.timeout)
        self._pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
        # A channel of our own, so the connection is in subscriber mode from the start
        # (PING answers then arrive as pub/sub messages).
        await self._pubsub.subscribe(f"{self.prefix}.__wsmvc__.{self.id}")

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        pubsub = self._listening = self._pubsub
        self._heard = loop.time()
        watchdog = loop.create_task(self._watch(pubsub))
        try:
            while not self._stopping:  # also if redis-py swallowed this task's cancellation
                # Blocking reads (timeout=None): with a timeout, redis-py wraps every read
                # in a timeout context, a third of the reading cost under load (measured);
                # _watch checks that the connection still answers instead.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                self._heard = loop.time()
                if message is None:
                    continue
                if message["type"] == "pong":
                    waiter = self._pongs.pop(message["data"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                elif message["type"] in ("message", "pmessage"):
                    channel = message["channel"]
                    self._received(
                        channel.decode() if isinstance(channel, bytes) else channel,
                        message["data"],
                    )
        finally:
            # The watchdog ends before the connection is closed: a ping on a closed pubsub
            # makes redis-py open a new connection, which nobody would close.
            self._listening = None
            watchdog.cancel()
            await asyncio.wait({watchdog}, timeout=self.timeout)

    async def _watch(self, pubsub: Any) -> None:
        """Ping a quiet subscriber connection every ``ping_interval``; past three intervals
        without a word from Redis, give the broker up (the listener is cancelled). Ends
        with its listener, also if a cancellation was swallowed (Python 3.10-3.11's
        wait_for() does when the ping completes at that moment)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval)
            if self._listening is not pubsub:
                return
            silent = loop.time() - self._heard
            if silent > 3 * self.ping_interval:
                self._lost(f"no answer from Redis for {silent:.1f}s")
                return
            if silent > self.ping_interval:
                try:
                    await asyncio.wait_for(_ping(pubsub), self.timeout)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._lost(f"a ping to Redis failed: {str(exc) or type(exc).__name__}")
                    return

    async def _disconnect(self) -> None:
        for closing in (self._pubsub, self._subscriber, self._publisher):
            if closing is None:
                continue
            try:
                await asyncio.wait_for(closing.aclose(), self.timeout)
            except Exception:
                pass
        self._pubsub = self._subscriber = self._publisher = None

    async def _subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)

    async def _unsubscribe(self, channel: str) -> None:
        await self._pubsub.unsubscribe(channel)

    async def _publish(self, channel: str, payload: bytes) -> None:
        await self._publisher.publish(channel, payload)

    async def _publish_many(self, items: list[tuple[str, bytes]]) -> None:
        if len(items) == 1:
            await self._publish(*items[0])
            return
        async with self._publisher.pipeline(transaction=False) as pipe:
            for channel, payload in items:
                pipe.publish(channel, payload)
            await pipe.execute()

    async def _roundtrip(self) -> None:
        # A PING on the subscriber connection is answered after its earlier SUBSCRIBEs.
        key = new_token().encode()
        answered = self._pongs[key] = asyncio.get_running_loop().create_future()
        try:
            await _ping(self._pubsub, key)
            await answered
        finally:
            self._pongs.pop(key, None)


async def _ping(pubsub: Any, data: bytes = b"") -> None:
    """Send PING on the subscriber connection itself; the listener reads the pong.

    Not ``pubsub.ping()``: redis-py then reads a health-check answer itself when the pubsub
    is not subscribed at that moment (a second reader of the connection: "readuntil() called
    while another coroutine is already waiting"), and opens a new connection when the old
    one is gone, which nobody would close.
    """
    connection = pubsub.connection
    if connection is None or not connection.is_connected:
        raise ConnectionError("the subscriber connection is closed")
    await connection.send_command("PING", *((data,) if data else ()))
