"""Scale-out through NATS (``pip install 'wsmvc[nats]'``).

Subjects follow neffos' NATS exchange (spec §12.2): ``<prefix>.<namespace>`` and
``<prefix>.<connection id>``, prefix ``neffos`` by default, and the token itself for the
answer to a cross-server ask. Go puts the name into the subject as it is, which breaks for
names NATS reads differently: ``.`` splits a subject into tokens, ``*`` and ``>`` are
wildcards (an id ``*`` would receive every namespace's broadcasts), whitespace is invalid,
and ``""`` gives the invalid subject ``neffos.``. wsmvc keeps Go's subject for every name
made of printable ASCII without those, and writes any other as ``~`` followed by its UTF-8
in unpadded URL-safe base64 (``""`` is ``~``): one subject per name, never another name's
(Go servers can share only the names they can write).
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from . import client_options_of
from .broker import BrokerExchange

__all__ = ["NatsExchange", "subject_token"]

OWN_OPTIONS: Final = frozenset(
    {
        "servers",
        "connect_timeout",
        "allow_reconnect",
        "max_reconnect_attempts",
        "reconnect_time_wait",
        "ping_interval",
        "flush_timeout",
        "max_outstanding_pings",
        "no_echo",
        "name",
        "closed_cb",
        "disconnected_cb",
        "error_cb",
    }
)
"""nats-py ``connect()`` keywords the exchange sets itself (``client_options`` may not)."""

_SLOW_PENDING = 1 << 20  # bytes waiting in nats-py's buffer: half its default limit
# Seconds: nats-server can still miss, for about a millisecond after the round trip that
# confirmed a subscription, what another connection publishes to it (nats-server#5677;
# reproduced with nats-py alone). BrokerExchange.settle() waits it out (hold_id too, so a
# to=<id> message sent right after the ack arrives).
_INTEREST_GRACE = 0.005

# What a NATS subject token may hold as it is: printable ASCII but the separator, the
# wildcards and our escape mark.
_PLAIN = re.compile(r"[\x21-\x7e]+")
_SPECIAL = frozenset(".*>~")


def subject_token(name: str) -> str:
    """``name`` as one NATS subject token: itself when NATS reads it as a plain token (Go
    neffos' subject), else ``~`` and its UTF-8 in unpadded URL-safe base64."""
    if _PLAIN.fullmatch(name) and _SPECIAL.isdisjoint(name):
        return name
    return "~" + base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


class NatsExchange(BrokerExchange):
    """Share broadcasts through the NATS server at ``url`` (``nats://host:port``).

    One NATS connection per server (Go opens one per websocket connection), with echo
    off: a server does not hear its own publications. ``prefix`` starts every subject
    (neffos' default ``"neffos"``); ``timeout``, ``ping_interval``, ``reconnect_delay``,
    ``server_id`` and ``max_pending`` are every broker exchange's
    (:class:`~wsmvc.exchange.broker.BrokerExchange`).

    ``client_options``: more keywords for nats-py's ``connect()`` (credentials, TLS:
    ``{"user_credentials": "app.creds"}``, ``{"tls": ssl_context}``); the ones the exchange
    sets itself (:data:`OWN_OPTIONS`: timeouts, reconnecting, callbacks, ``name``) raise
    :class:`ValueError`. Raises :class:`ImportError` without nats-py.
    """

    requires = ("nats", "nats")
    interest_grace = _INTEREST_GRACE

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
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
        self._nc: Any = None
        self._subs: dict[str, Any] = {}
        self._closed: asyncio.Event | None = None
        self._last_error: Exception | None = None

    def namespace_channel(self, namespace: str) -> str:
        return f"{self.prefix}.{subject_token(namespace)}"

    def id_channel(self, conn_id: str) -> str:
        return f"{self.prefix}.{subject_token(conn_id)}"

    def __repr__(self) -> str:
        return f"<NatsExchange {self.url} prefix={self.prefix!r}>"

    async def _connect(self) -> None:
        from nats.aio.client import Client

        closed = self._closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        async def on_error(exc: Exception) -> None:
            if not closed.is_set():
                self._last_error = exc

        self._last_error = None
        # Ours before it connects: nats-py leaves the socket of an attempt that fails
        # (no INFO from a hung server within the timeout) open, and _disconnect closes it.
        nc: Any = Client()  # untyped, as nats.connect(): nats-py types timeouts as int
        self._nc = nc
        await nc.connect(
            self.url,
            **self.client_options,
            connect_timeout=self.timeout,
            # We reconnect and resubscribe ourselves, with our backoff: nats-py must give
            # up at once (with 0 attempts it would retry every 2 s inside connect()).
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            ping_interval=self.ping_interval,
            # A publication waits at most this long when nats-py's buffer is full (a hung
            # server): then it fails, and the exchange gives the broker up.
            flush_timeout=self.timeout,
            max_outstanding_pings=3,
            no_echo=True,
            name=f"wsmvc-{self.id}",  # so the broker's monitoring tells which server it is
            closed_cb=on_closed,
            disconnected_cb=on_closed,
            error_cb=on_error,
        )
        self._subs = {}

    async def _listen(self) -> None:
        assert self._closed is not None
        await self._closed.wait()
        raise ConnectionError(str(self._last_error or "connection to NATS closed"))

    async def _disconnect(self) -> None:
        nc, self._nc = self._nc, None
        self._subs = {}
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), self.timeout)
            except Exception:
                pass
        if nc is not None:
            # nats-py's close() first writes what it still buffers (a hung server never
            # takes it); a socket left open stays on the broker, subscriptions and all,
            # until garbage collected. The broker is given up: cut what is left.
            _abort(nc)

    async def _subscribe(self, channel: str) -> None:
        if channel in self._subs:
            return
        sub = await self._nc.subscribe(channel, pending_bytes_limit=0)
        if isinstance(getattr(sub, "_pending_queue", None), asyncio.Queue):
            # nats-py's reader puts each message into its subscription's queue, in arrival
            # order. Callback subscriptions then run one task per subscription, which loses
            # the order between subjects (a namespace broadcast and a `to=` one from the
            # same sender); taking the messages straight from the reader keeps it.
            sub._pending_queue = _Inline(self._received)
        else:  # pragma: no cover - a nats-py without that queue: order per subject only
            await sub.unsubscribe()

            async def on_message(msg: Any) -> None:
                self._received(msg.subject, msg.data)

            sub = await self._nc.subscribe(channel, cb=on_message)
        self._subs[channel] = sub

    async def _unsubscribe(self, channel: str) -> None:
        sub = self._subs.pop(channel, None)
        if sub is not None:
            await sub.unsubscribe()

    async def _publish(self, channel: str, payload: bytes) -> None:
        nc = self._nc
        if nc.pending_data_size > _SLOW_PENDING:
            # nats-py waits without a bound once its 2 MiB buffer is full (a hung server):
            # past half of it, make sure the server still answers, within timeout.
            await nc.flush(timeout=self.timeout)
        await nc.publish(channel, payload)

    def _payload_limit(self) -> int | None:
        nc = self._nc
        return None if nc is None else int(nc.max_payload)  # the server's, from its INFO

    def _refused(self, exc: Exception) -> bool:
        import nats.errors

        return isinstance(exc, nats.errors.BadSubjectError)

    async def _roundtrip(self) -> None:
        await self._nc.flush(timeout=self.timeout)


def _abort(nc: Any) -> None:
    """Close the socket of nats-py client ``nc`` now, dropping what it buffers."""
    transport = getattr(nc, "_transport", None)
    for name in ("_io_writer", "_bare_io_writer"):  # with TLS: also the TCP one below
        writer = getattr(transport, name, None)
        sock = getattr(writer, "transport", None)
        if sock is not None:
            sock.abort()


class _Inline:
    """Stands in for a subscription's queue: hands each message on as it is read."""

    def __init__(self, deliver: Callable[[str, bytes], None]) -> None:
        self._deliver = deliver

    def put_nowait(self, msg: Any) -> None:
        self._deliver(msg.subject, msg.data)

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def task_done(self) -> None:
        pass
