"""What the Redis and NATS exchanges share: payloads, ordering, reconnection, asks.

Payloads are neffos envelopes (spec §12.3) whose token slot carries a marker
(:mod:`wsmvc.exchange.markers`); a server skips what it published itself. One task
connects, listens, reconnects with backoff and resubscribes; another sends publications
and subscription changes in order. While the broker is away, local delivery goes on and
publications are dropped (and counted).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ..audience import Audience
from ..errors import ConnectionClosed, ProtocolError
from ..framing import Stamp
from ..protocol import Message, decode, encode, is_reply_token
from . import Exchange
from .asks import MAX_ID_BYTES, CrossServerAsks
from .markers import Marker, check_server_id, format_marker, parse_marker
from .outbox import Outbox

if TYPE_CHECKING:
    from ..conn import Conn

__all__ = ["MAX_ID_BYTES", "BrokerExchange"]

"""Longest connection id (UTF-8 bytes) on either broker: NATS control lines end at 4 KiB."""

log = logging.getLogger("wsmvc.exchange")
_STOPPED = "the exchange stopped"


class BrokerExchange(CrossServerAsks, Exchange):
    """An exchange through a message broker; subclasses speak to one broker.

    Keywords (all backends): ``timeout`` - seconds for connecting, a publication and a
    round trip (default 5); past it the broker counts as lost: ``connected`` turns false,
    the log says why, and the exchange reconnects with backoff. ``ping_interval`` - seconds
    between liveness checks of an idle connection (default 5). ``reconnect_delay`` -
    ``(first, longest)`` seconds between attempts, doubling, with jitter (default 0.05, 2).
    ``server_id`` - this server's id in markers and channel names: 1 to 64 ASCII letters,
    digits, ``-`` or ``_`` (default: a random UUID; ValueError otherwise). ``max_pending`` -
    broadcasts queued or being sent (default 10,000); while the broker does not keep up, later
    ones are dropped and counted in ``dropped`` rather than queued without bound.
    Raises ImportError (with the ``pip`` command) without the backend's client library.
    """

    prefix: str = "neffos"
    requires: tuple[str, str] = ("", "")
    """The client library a backend imports (module, ``pip`` extra of wsmvc)."""
    interest_grace: float = 0.0
    """Seconds after :meth:`flush` during which another connection's publication may still
    miss a subscription it confirmed (NATS, nats-server#5677): :meth:`settle` waits it out."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        ping_interval: float = 5.0,
        reconnect_delay: tuple[float, float] = (0.05, 2.0),
        server_id: str | None = None,
        max_pending: int = 10_000,
    ) -> None:
        import importlib
        import uuid

        module, extra = self.requires
        if module:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ImportError(
                    f"{type(self).__name__} needs the {module!r} package:"
                    f" pip install 'wsmvc[{extra}]'"
                ) from exc
        self.id = uuid.uuid4().hex if server_id is None else check_server_id(server_id)
        self._own_marker = f"neffos(0x{self.id}(".encode()
        # Publications are numbered from the start time in nanoseconds: a server restarted
        # under the same server_id never reuses a number of its previous run.
        self._seq = time.time_ns()
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.reconnect_delay = reconnect_delay
        self._outbox = Outbox(
            send=self._send,
            roundtrip=self._roundtrip,
            connected=lambda: self._connected,
            lost=self._lost,
            limit=self._payload_limit,
            max_pending=max_pending,
            owner=self,
        )
        self._dropped_before = 0  # dropped before the last reset of the outbox's count
        self._connected = False
        self._connected_event: asyncio.Event | None = None
        self._namespace_channels: dict[str, str] = {}  # channel -> namespace
        self._id_channels: dict[str, str] = {}  # channel -> connection id
        self._ask_channels: dict[str, asyncio.Future[Message]] = {}
        self._wanted: dict[str, int] = {}  # subscribed channel -> how many reasons
        self._listener: asyncio.Task[None] | None = None  # _listen(), while connected
        self._lost_reason = ""
        self._runner: asyncio.Task[None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = False
        self._forwards: set[asyncio.Task[None]] = set()
        self._side: dict[str, Callable[[bytes], None]] = {}  # wsmvc's own channels
        self._side_connected: dict[str, Callable[[], None]] = {}

    # -- what a backend implements ------------------------------------------------------

    @abc.abstractmethod
    def namespace_channel(self, namespace: str) -> str: ...

    @abc.abstractmethod
    def id_channel(self, conn_id: str) -> str: ...

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Open the broker connections; raise if the broker cannot be reached."""

    @abc.abstractmethod
    async def _listen(self) -> None:
        """Deliver messages to :meth:`_received` until the connection fails (then raise)."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close the broker connections; never raises."""

    @abc.abstractmethod
    async def _subscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def _unsubscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def _publish(self, channel: str, payload: bytes) -> None: ...

    async def _publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """Publish several in order; a backend may send them in one round trip."""
        for channel, payload in items:
            await self._publish(channel, payload)

    def _payload_limit(self) -> int | None:
        """The largest payload the broker takes now, in bytes (``None``: no limit known)."""
        return None

    @abc.abstractmethod
    async def _roundtrip(self) -> None:
        """Return once the broker has processed everything sent before."""

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def dropped(self) -> int:
        """Broadcasts dropped since the broker was last (re)connected: it was away, or
        ``max_pending`` waited for it already."""
        return self._outbox.dropped

    @property
    def max_pending(self) -> int:
        return self._outbox.max_pending

    @property
    def dropped_total(self) -> int:
        """Broadcasts dropped since :meth:`start`: ``dropped`` restarts at 0 with each
        (re)connection, this never does (for a Prometheus counter)."""
        return self._dropped_before + self._outbox.dropped

    @property
    def pending(self) -> int:
        """Broadcasts queued for the broker or being sent now (``max_pending`` at most):
        how far publishing lags behind the broadcasts."""
        return self._outbox.pending

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the broker is connected and every subscription is in place.

        Raises :class:`RuntimeError` before :meth:`start`, :class:`~wsmvc.ConnectionClosed`
        once stopped (also when :meth:`stop` ends the wait), ``TimeoutError`` past
        ``timeout`` seconds."""
        if self._connected:
            return
        self._check_started()
        if self._stopped:
            raise ConnectionClosed(_STOPPED)
        if self._connected_event is None:
            self._connected_event = asyncio.Event()
        await asyncio.wait_for(self._connected_event.wait(), timeout)
        if not self._connected:  # woken by stop()
            raise ConnectionClosed(_STOPPED)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the broker has everything asked of this exchange so far: the
        subscriptions of the connections that arrived, and the broadcasts published
        (another connection's publications may still miss those for :attr:`interest_grace`).
        """
        await self.wait_connected(timeout)  # RuntimeError before start()
        await self._outbox.flush(timeout)

    async def settle(self, timeout: float | None = None) -> None:
        """:meth:`flush`, then :attr:`interest_grace`: from now on what any connection
        publishes reaches the subscriptions asked for so far. Raises what flush raises."""
        await self.flush(timeout)
        await asyncio.sleep(self.interest_grace)

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._stopping = self._stopped = False
        loop = asyncio.get_running_loop()
        self._runner = loop.create_task(self._run())
        self._pump = loop.create_task(self._outbox.run(self.timeout))

    async def stop(self) -> None:
        # What the server's shutdown published (its connections' last events) goes out
        # first, within the timeout.
        if self._connected and self._outbox:
            try:
                await self.flush(self.timeout)
            except Exception as exc:
                log.warning("%s: stopping with broadcasts unsent: %s", self, exc)
        self._stopping = True
        self._outbox.stop()
        tasks = [t for t in (self._runner, self._pump, *self._forwards) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a client library that swallows a cancellation cannot hang it
            _, stuck = await asyncio.wait(tasks, timeout=self.timeout + 1.0)
            for task in stuck:
                log.warning("%s: %r did not end at stop(); left to finish", self, task)
                task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved
        self._runner = self._pump = None
        self._stopped = True
        self._set_connected(False)
        event, self._connected_event = self._connected_event, None
        if event is not None:
            event.set()  # wakes wait_connected() and flush(), which fail
        for waiter in self._ask_channels.values():
            if not waiter.done():
                waiter.set_exception(ConnectionClosed(_STOPPED))
        self._outbox.close(ConnectionClosed(_STOPPED))
        await self._disconnect()

    def _check_started(self) -> None:
        if self._pump is None and not self._stopped:
            raise RuntimeError(
                f"{self} is not started: the server's application starts it"
                " (app startup), or call start()"
            )

    def id_problem(self, conn_id: str) -> str | None:
        if len(conn_id.encode()) > MAX_ID_BYTES:
            return f"connection id longer than {MAX_ID_BYTES} bytes"
        return None

    def _set_connected(self, value: bool) -> None:
        self._connected = value
        if self._connected_event is None:
            self._connected_event = asyncio.Event()
        if value:
            self._connected_event.set()
        else:
            self._connected_event.clear()

    async def _run(self) -> None:
        low, high = self.reconnect_delay
        delay = low
        while not self._stopping:
            try:
                await self._connect()
                await self._resubscribe()
                self._set_connected(True)
                log.info("%s connected (server %s)", self, self.id)
                if self._outbox.dropped:
                    log.warning("%s dropped %d broadcasts while away", self, self.dropped)
                    self._dropped_before += self._outbox.dropped
                    self._outbox.dropped = 0
                for connected in list(self._side_connected.values()):
                    try:
                        connected()
                    except Exception:
                        log.exception("%s: a side channel's connected callback failed", self)
                delay = low
                await self._listen_until_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                was = self._connected or bool(self._lost_reason)
                self._set_connected(False)
                log.warning(
                    "%s %s: %s; retrying in %.2fs",
                    self,
                    "lost its broker" if was else "cannot reach its broker",
                    str(exc) or type(exc).__name__,
                    delay,
                )
                self._lost_reason = ""  # the next failures are attempts to reach it again
            await self._disconnect()
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, high)

    async def _listen_until_lost(self) -> None:
        """:meth:`_listen` until it fails or :meth:`_lost` gives up: ConnectionError(why).
        The listener has ended on return (no connection of its outlives :meth:`stop`)."""
        self._lost_reason = ""
        listener = self._listener = asyncio.get_running_loop().create_task(self._listen())
        try:
            await asyncio.wait({listener})
        finally:
            self._listener = None
            listener.cancel()
            await asyncio.wait({listener}, timeout=self.timeout)  # if swallowed: _stopping
        if listener.cancelled():
            raise ConnectionError(self._lost_reason or "listening stopped")
        listener.result()
        raise ConnectionError("the broker closed the connection")

    def _lost(self, reason: str) -> None:
        """The broker stopped answering: ``connected`` is false now (publications dropped,
        counted), and the runner reconnects."""
        if not self._connected:
            return
        self._set_connected(False)
        self._lost_reason = reason
        if self._listener is not None:
            self._listener.cancel()

    def _channels(self) -> list[str]:
        return [*self._wanted, *self._ask_channels]

    async def _resubscribe(self) -> None:
        # Connections come and go while this awaits: repeat until nothing is missing or
        # extra; nothing awaits between that check and the caller marking it connected.
        done: dict[str, None] = {}  # subscribed, in order
        while True:
            wanted = dict.fromkeys(self._channels())
            missing = [c for c in wanted if c not in done]
            extra = [c for c in done if c not in wanted]
            if not missing and not extra:
                return
            for channel in missing:
                await self._subscribe(channel)
                done[channel] = None
            for channel in extra:
                if channel not in self._wanted and channel not in self._ask_channels:
                    await self._unsubscribe(channel)
                    del done[channel]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    # -- subscriptions follow the connections -----------------------------------------------

    def namespace_opened(self, namespace: str) -> None:
        channel = self.namespace_channel(namespace)
        self._namespace_channels[channel] = namespace
        self._want(channel)

    def namespace_closed(self, namespace: str) -> None:
        channel = self.namespace_channel(namespace)
        if self._namespace_channels.pop(channel, None) is not None:
            self._unwant(channel)

    def id_opened(self, conn_id: str) -> None:
        channel = self.id_channel(conn_id)
        self._id_channels[channel] = conn_id
        self._want(channel)

    def id_closed(self, conn_id: str) -> None:
        channel = self.id_channel(conn_id)
        if self._id_channels.pop(channel, None) is not None:
            self._unwant(channel)

    # A connection id may name the same channel as a namespace (Redis "<p>.x." serves
    # both): subscribe on the first reason, unsubscribe when the last one is gone.
    def _want(self, channel: str) -> None:
        self._wanted[channel] = self._wanted.get(channel, 0) + 1
        if self._wanted[channel] == 1:
            self._outbox.put("sub", channel)

    def _unwant(self, channel: str) -> None:
        left = self._wanted.get(channel, 0) - 1
        if left > 0:
            self._wanted[channel] = left
            return
        self._wanted.pop(channel, None)
        self._outbox.put("unsub", channel)

    # -- sending, in order ------------------------------------------------------------------

    async def _send(self, op: str, channel: str, batch: list[tuple[str, bytes]]) -> bool:
        """One operation of the outbox (see :data:`~wsmvc.exchange.outbox.Send`)."""
        try:
            if op == "pub":
                await self._publish_many(batch)
            elif op == "sub":
                await self._subscribe(channel)
            else:
                await self._unsubscribe(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"{op} {channel} failed: {str(exc) or type(exc).__name__}"
            if self._refused(exc):  # this operation only: the connection is fine
                log.error("%s: %s", self, reason)
            else:
                self._lost(reason)
            return False
        return True

    def _refused(self, exc: Exception) -> bool:
        """Whether the broker refused one operation (a bad channel, say), not the connection."""
        return False

    async def hold_id(self, conn_id: str) -> Callable[[], None]:
        """Subscribe ``conn_id``'s channel and wait (at most ``timeout``, only while
        connected) until the broker has it, so that a message sent to the id right after
        ``A<id>`` arrives (as in Go). Returns the release, for once it is registered."""
        channel = self.id_channel(conn_id)
        self._want(channel)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._unwant(channel)

        if self._connected:
            try:
                await self.settle(self.timeout)
            except (ConnectionClosed, asyncio.TimeoutError) as exc:
                log.debug("%s: %s not confirmed before its ack: %s", self, conn_id, exc)
            except BaseException:  # the handshake was cancelled: nothing will release it
                release()
                raise
        return release

    def side_channel(self, name: str) -> str:
        """``<prefix>.__wsmvc__.<name>``, for wsmvc's own traffic between servers: never a
        namespace's or id's channel (NATS: three tokens, names make two; Redis: no end dot)."""
        return f"{self.prefix}.__wsmvc__.{name}"

    def side_subscribe(
        self,
        channel: str,
        deliver: Callable[[bytes], None],
        connected: Callable[[], None] | None = None,
    ) -> None:
        """Hand every payload on ``channel`` (from every server) to ``deliver``; call
        ``connected()`` each time the broker is (re)connected, the channel subscribed."""
        self._side[channel] = deliver
        if connected is not None:
            self._side_connected[channel] = connected
        self._want(channel)

    def side_publish(self, channel: str, payload: bytes) -> bool:
        """Publish ``payload`` on ``channel`` in order with broadcasts (or drop, counted);
        whether it was queued."""
        return self._outbox.put("pub", channel, payload)

    def stamp(self) -> Stamp:
        """The next publication's ``(server id, sequence number)``."""
        self._seq += 1
        return self.id, self._seq

    def publish(
        self,
        msg: Message,
        *,
        exclude_conn: Conn | None = None,
        exclude_id: str | None = None,
        to: str | None = None,
        audience: Audience | None = None,
        stamp: Stamp | None = None,
    ) -> None:
        self.offer(
            msg,
            exclude_conn=exclude_conn,
            exclude_id=exclude_id,
            to=to,
            audience=audience,
            stamp=stamp,
        )

    def offer(
        self,
        msg: Message,
        *,
        exclude_conn: Conn | None = None,
        exclude_id: str | None = None,
        to: str | None = None,
        audience: Audience | None = None,
        stamp: Stamp | None = None,
    ) -> bool:
        """:meth:`publish`, saying whether the broadcast was queued: ``False`` when it was
        dropped (the broker away, or ``max_pending`` wait already: counted in ``dropped``)
        or is larger than the broker takes (logged). Without a ``stamp`` it takes the next."""
        if not self._connected:
            self._check_started()  # else dropped (counted) by the outbox
        identity = f"{exclude_conn.id}0x{id(exclude_conn):x}" if exclude_conn is not None else ""
        room, many = msg.room, None
        if audience is not None:
            # Go servers (and older wsmvc ones) deliver to the envelope's room: the first.
            room = audience.rooms[0] if audience.rooms else room
            many = (audience.rooms, tuple(sorted(audience.exclude_ids)), audience.exclude_rooms)
        seq = (stamp if stamp is not None else self.stamp())[1]
        traced = self.tracing.published((self.id, seq)) if self.tracing is not None else None
        marker = format_marker(Marker(self.id, identity, exclude_id, msg.binary, many, seq, traced))
        payload = encode(attrs.evolve(msg, room=room, token="", marker=marker, binary=False))
        channel = self.id_channel(to) if to is not None else self.namespace_channel(msg.namespace)
        return self._outbox.put("pub", channel, payload)

    # -- receiving --------------------------------------------------------------------------

    def _received(self, channel: str, payload: bytes) -> None:
        """One payload from the broker on ``channel``. Whatever another publisher put there
        (a buggy, malicious or newer server) costs that payload only: an exception here
        would end the broker connection's reader (Redis: a reconnection, broadcasts
        dropped; NATS: a reader gone while the connection looks alive)."""
        try:
            self._receive(channel, payload)
        except Exception:
            log.exception(
                "%s: dropped a payload on %.80r that failed: %.80r", self, channel, payload
            )

    def _receive(self, channel: str, payload: bytes) -> None:
        side = self._side.get(channel)
        if side is not None:
            side(payload)
            return
        if payload.startswith(self._own_marker):
            return  # ours: delivered locally when it was published
        try:
            msg = decode(payload, exchange=True)
        except ProtocolError:
            log.debug("%s: ignoring a payload that is not a neffos message on %s", self, channel)
            return
        waiter = self._ask_channels.get(channel)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(msg)
            return
        server = self.server
        if server is None:
            return
        exclude_id: str | None = None
        audience: Audience | None = None
        stamp: Stamp | None = None
        traced: str | None = None  # the sender's traceparent (wsmvc.tracing)
        if msg.marker:
            marker = parse_marker(msg.marker)
            if marker is None:
                log.warning(
                    "%s: a marker it cannot read on %.80r: %.80r", self, channel, msg.marker
                )
            else:
                if marker.origin == self.id:
                    return  # ours: delivered locally when it was published
                exclude_id, traced = marker.exclude_id, marker.traceparent
                msg.binary = marker.binary
                if marker.seq is not None:
                    stamp = (marker.origin, marker.seq)
                if marker.many is not None:
                    rooms, ids, rooms_out = marker.many
                    audience = Audience(rooms, frozenset(), frozenset(ids), rooms_out)
            msg.marker = ""
        conn_id = self._id_channels.get(channel)
        if conn_id is not None and msg.namespace != self._namespace_channels.get(channel):
            if msg.token and is_reply_token(msg.token):
                self._forward_ask(msg, conn_id)
                return
        elif channel in self._namespace_channels:
            conn_id = None
        else:
            return
        if self.tracing is not None:
            self.tracing.deliver(
                server, msg, traced, exclude=exclude_id, to=conn_id, audience=audience, stamp=stamp
            )
        else:
            server.deliver(msg, exclude=exclude_id, to=conn_id, audience=audience, stamp=stamp)
