"""A client that reconnects: :class:`ReconnectingClient`, paced by a :class:`Backoff`.

``await dial(url, namespaces, reconnect=Backoff())`` returns a :class:`ReconnectingClient`.
It owns one :class:`~wsmvc.ClientConn` at a time; when that connection is lost it dials
again, waiting :meth:`Backoff.delay` seconds before each attempt. A server with recovery
(``docs/recovery.md``) gives it the same connection back: nothing is lost either way, no
event but ``on_lost`` and ``on_restored`` (:mod:`wsmvc.client_recovery`). On a new
connection it restores what the application connected and joined *through the client*:
its namespaces in the order connected, each with the payload it was connected with, then
their rooms, one at a time, in the order joined. The handles the application holds
(:class:`ReconnectingNamespace`, :class:`ReconnectingRoom`) stay the same objects and
act on whichever connection is current; the handler table is shared by every connection,
so handlers keep firing.

Decisions (``docs/client-python.md`` tells them to users):

* **What is restored** is what the application itself connected and joined, and has not
  left since. A room or namespace removed while the connection is open, by the
  application or by the server (a kick), is forgotten: the server meant it. What the
  server connected or joined on its own (in ``on_connect``, say) is its to redo on the new
  connection. The close of a lost connection forgets nothing.
* **Refusals while restoring** (the server's error answer, a local hook's, no answer in
  ``timeout`` seconds) forget that namespace (with its rooms) or room, are reported
  (``on_restore_failed``, else a WARNING), and the rest is restored.
* **Recovery when the server offers it**: the client asks for it (``recovery``, on by
  default); a connection lost without a close frame is kept (its asks keep waiting, no
  forced event) until the client is back within the window, or the server says it is a
  new connection (then the kept one ends: its forced events, its asks fail), or the
  client's own ``window`` passed. Recovered, both sides send again what the other missed:
  exactly once, in order.
* **Down means queued, bounded**: while there is no open, restored connection, ``emit``
  and ``ask`` of the handles wait in the :class:`~wsmvc.handles.Outbox` (at most
  ``queue_limit``, 256, as wsmvc.js; each ask with its timeout from the call), sent in
  order once back. With recovery they are delivered exactly once; on a new connection,
  after the restore. ``queue_limit=0`` refuses them (:class:`~wsmvc.ConnectionClosed`).
  Without recovery, asks in flight when the connection is lost fail at that moment, and
  an emit written just before a loss nobody noticed yet may be lost with the connection.
* **A refusal stops reconnecting** for good: the server application's ``Reject``
  (``H<reason>``), and an HTTP upgrade answered 4xx, except 408 and 429 (RFC 9110: the
  same request gets the same answer; a 401 never heals by repetition). Network errors,
  timeouts and 5xx (a proxy in front of a restarting server) are retried. The client then
  closes, ``on_gave_up`` runs, and :attr:`ReconnectingClient.error` says why.
* **Every loss is retried** that this side did not ask for, whatever the close code (as
  neffos.js does): a server that wants a client gone for good refuses its reconnect, and
  ``on_lost`` may ``await client.close()`` for a code the application knows is final.
* **The first dial is not retried**: it raises as :func:`~wsmvc.dial` does, so a wrong URL
  or credential fails at once (python-socketio's default too).
* One ``aiohttp.ClientSession`` serves every connection (a load balancer's affinity
  cookie survives), and each reconnect's upgrade carries neffos.js' header
  ``X-Websocket-Reconnect: <attempt>`` (the server's ``conn.was_reconnected``).
* Only a connection that ends is noticed: pass ``heartbeat=`` to :func:`~wsmvc.dial` so a
  server that vanished without closing (a cable, a NAT that forgot) is noticed too.

The events run in the client's reconnect task, one at a time, in this order: the lost
connection's forced events (``_OnRoomLeave``/``_OnRoomLeft``, ``_OnNamespaceDisconnect``
with ``msg.forced``, in its serving task; for a connection kept for recovery, only once
it ends for good), then ``on_lost``; for each attempt ``on_retry`` before its wait; once
a connection is acknowledged, the restore (its local
``_OnNamespaceConnect``/``_OnNamespaceConnected``, ``_OnRoomJoin``/``_OnRoomJoined``
events, and ``on_restore_failed`` for what was refused; nothing when recovered), then
``on_restored``; or ``on_gave_up``. An event that raises is logged and the client
carries on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from collections.abc import Callable, Mapping
from typing import TypeAlias

import aiohttp
import attrs

from .backoff import Backoff
from .client import ClientConn, Dialing
from .client_recovery import ClientRecovery, Returned, end_kept, keep, kept_lost, until_lost
from .closing import CloseReason
from .conn import Conn, serving
from .errors import ConnectionClosed, Reject, WsmvcError
from .handles import Outbox, ReconnectingNamespace, Tracker
from .nsconn import DEFAULT, Timeout, as_body

__all__ = [
    "Events",
    "OnGaveUp",
    "OnLost",
    "OnRestoreFailed",
    "OnRestored",
    "OnRetry",
    "ReconnectingClient",
]

log = logging.getLogger("wsmvc")

RECONNECT_HEADER = "X-Websocket-Reconnect"  # neffos.js' count of tries (spec 1.4)


OnLost: TypeAlias = Callable[["ReconnectingClient", CloseReason], object]
"""``on_lost(client, reason)``: the connection was lost (``reason``: why it closed,
``client.close_code`` its code); its forced disconnect events ran, reconnecting starts.
May ``await client.close()`` to stop instead."""
OnRetry: TypeAlias = Callable[["ReconnectingClient", int, float, "Exception | None"], object]
"""``on_retry(client, attempt, delay, error)``: attempt ``attempt`` (1 for the first after
a loss) starts in ``delay`` seconds; ``error`` is why the previous one failed (``None``
before the first)."""
OnRestored: TypeAlias = Callable[["ReconnectingClient"], object]
"""``on_restored(client)``: the connection is back: recovered (``client.recovered``: the
same one, nothing lost), or a new one on which what could be restored is."""
OnRestoreFailed: TypeAlias = Callable[["ReconnectingClient", str, "str | None", Exception], object]
"""``on_restore_failed(client, namespace, room, error)``: restoring ``namespace`` (``room``
``None``) or one of its rooms failed with ``error`` (an :class:`~wsmvc.EventError` with
the refusal, or :class:`~wsmvc.AskTimeout`); it is no longer restored."""
OnGaveUp: TypeAlias = Callable[["ReconnectingClient", BaseException], object]
"""``on_gave_up(client, error)``: reconnecting stopped for good (``error``: the refusal,
or the last attempt's error once ``Backoff.attempts`` ran out); the client is closed."""


@attrs.frozen
class Events:
    """The callbacks of a :class:`ReconnectingClient`, each sync or async, or ``None``."""

    on_lost: OnLost | None = None
    on_retry: OnRetry | None = None
    on_restored: OnRestored | None = None
    on_restore_failed: OnRestoreFailed | None = None
    on_gave_up: OnGaveUp | None = None


def _final(error: Exception) -> bool:
    """Whether ``error``, from a dial, stops reconnecting (see the module docstring)."""
    if isinstance(error, Reject):
        return True
    if isinstance(error, aiohttp.WSServerHandshakeError):
        return 400 <= error.status < 500 and error.status not in (408, 429)
    return False


class ReconnectingClient:
    """A client connection that reconnects (see the module docstring); made by
    ``await dial(url, namespaces, reconnect=Backoff(...))``, closed by :meth:`close`
    (``async with`` works).

    ``connect(namespace)`` returns a :class:`ReconnectingNamespace`, the handle to emit,
    ask, join and leave through, which works across reconnects. ``conn`` is the current
    :class:`~wsmvc.ClientConn` (``None`` while reconnecting), ``id`` its id (the server
    gives each connection its own, unless its ``id_generator`` derives it from the
    request), ``reconnects`` how many times a connection was restored, ``recovered``
    whether the last time was a recovery (the same connection, nothing lost).
    """

    __slots__ = (
        "__weakref__",
        "_conn",
        "_current",
        "_dialing",
        "_done",
        "_error",
        "_events",
        "_http",
        "_last",
        "_namespaces",
        "_outbox",
        "_own_http",
        "_settled",
        "_stopping",
        "_task",
        "_tracker",
        "backoff",
        "reconnects",
        "recovered",
    )

    def __init__(
        self,
        dialing: Dialing,
        backoff: Backoff,
        http: aiohttp.ClientSession,
        own_http: bool,
        events: Events,
        queue_limit: int = 256,
    ) -> None:
        self.backoff = backoff
        self.reconnects = 0
        self.recovered = False
        self._outbox = Outbox(queue_limit)
        self._dialing = dialing
        self._http = http
        self._own_http = own_http
        self._events = events
        self._tracker = Tracker(self)
        self._conn: ClientConn | None = None  # open and restored: what the handles use
        self._current: ClientConn | None = None  # the connection the reconnect task holds
        self._last: ClientConn | None = None  # the last one published (id, close code)
        self._namespaces: dict[str, ReconnectingNamespace] = {}  # in the order connected
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # close() or giving up: for good
        self._error: BaseException | None = None
        self._settled = asyncio.Event()  # set while connected, and once stopped
        self._done = asyncio.Event()  # everything released

    @classmethod
    async def start(
        cls,
        dialing: Dialing,
        backoff: Backoff,
        *,
        session: aiohttp.ClientSession | None = None,
        events: Events | None = None,
        queue_limit: int = 256,
    ) -> ReconnectingClient:
        """Dial once (not retried: raises what :func:`~wsmvc.dial` raises) and start the
        reconnect task. ``session``: the HTTP session of every connection (default: one
        of the client's own, closed with it); ``queue_limit``: messages kept while
        reconnecting (:class:`~wsmvc.handles.Outbox`)."""
        own = session is None
        http = session if session is not None else aiohttp.ClientSession()
        client = cls(dialing, backoff, http, own, events or Events(), queue_limit)
        try:
            conn = await dialing.open(http, registry=client._tracker, on_lost=client._kept)
        except BaseException:
            if own:
                await http.close()
            raise
        keep(conn)
        client._publish(conn)
        client._task = asyncio.get_running_loop().create_task(client._run(conn))
        return client

    # -- what the application sees -----------------------------------------------------------

    @property
    def conn(self) -> ClientConn | None:
        """The open, restored connection; ``None`` while reconnecting and once closed."""
        return self._conn

    @property
    def id(self) -> str:
        """The id of the current connection (while reconnecting: of the lost one)."""
        last = self._last
        return last.id if last is not None else ""

    @property
    def connected(self) -> bool:
        """Whether a connection is open and restored (emits and asks can go)."""
        return self._conn is not None and not self._conn.closed

    @property
    def closed(self) -> bool:
        """Whether the client stopped for good (:meth:`close`, or it gave up)."""
        return self._stopping

    @property
    def reconnecting(self) -> bool:
        """Whether the connection is lost and the client is getting it back (what the
        handles send meanwhile waits: :class:`~wsmvc.handles.Outbox`)."""
        return not self._stopping and not self.connected

    @property
    def error(self) -> BaseException | None:
        """Why the client gave up reconnecting (the refusal, or the last attempt's
        error); ``None`` if it did not."""
        return self._error

    @property
    def close_code(self) -> int | None:
        """The close code of the last connection that ended (``None`` if none did; 1006
        while one is kept for recovery)."""
        last = self._last
        if last is None:
            return None
        if last.close_code is None and kept_lost(last):
            return 1006
        return last.close_code

    @property
    def namespaces(self) -> Mapping[str, ReconnectingNamespace]:
        """The namespaces restored after a loss, in the order connected (read-only)."""
        return types.MappingProxyType(self._namespaces)

    def namespace(self, name: str) -> ReconnectingNamespace | None:
        """The handle of namespace ``name`` if the application connected it (and has not
        disconnected it, nor did the server); ``None`` otherwise."""
        return self._namespaces.get(name)

    async def connect(
        self, namespace: str, *, payload: bytes | str = b"", timeout: Timeout = DEFAULT
    ) -> ReconnectingNamespace:
        """Connect ``namespace`` on the current connection (:meth:`wsmvc.Conn.connect`) and
        restore it, with this ``payload``, after every loss; returns its handle (the same
        one while it stays connected). Raises :class:`~wsmvc.ConnectionClosed` at once
        while reconnecting or closed, and what ``Conn.connect`` raises
        (:class:`~wsmvc.EventError`, :class:`~wsmvc.AskTimeout`); a connect that failed
        is not restored."""
        conn = self._live()
        handle = self._namespaces.get(namespace)
        ns = conn.namespace(namespace)
        if handle is not None and ns is not None and ns.connected:
            return handle
        ns = await conn.connect(namespace, timeout=timeout, payload=payload)
        if conn is not self._conn or not ns.connected:
            raise ConnectionClosed(f"{namespace!r} went away before connect() returned")
        handle = self._namespaces.get(namespace)
        if handle is None:
            handle = ReconnectingNamespace(self, namespace, as_body(payload))
            self._namespaces[namespace] = handle
        return handle

    async def wait_connected(self) -> None:
        """Return once a connection is open and restored (at once if it is). Raises
        :class:`~wsmvc.ConnectionClosed` once the client is closed or gave up. Bound it
        with ``asyncio.wait_for``; cancelling it does not disturb the client."""
        while not self.connected:
            if self._stopping:
                raise self._down()
            await self._settled.wait()

    async def wait_closed(self) -> None:
        """Return once the client stopped for good and released its connection and HTTP
        session (after :meth:`close`, or giving up)."""
        await self._done.wait()

    async def close(self) -> None:
        """Close the connection and stop reconnecting, for good; at once during a wait
        between attempts. Returns once everything is released, except when called from an
        event callback of this client or a handler of its connection: then it returns at
        once, and the client closes right after that callback or handler
        (:meth:`wait_closed`). Idempotent; never raises (but a cancellation)."""
        first = not self._stopping
        self._stopping = True
        self._settled.set()
        task = self._task
        if task is None or task.done():
            await self._release()
            return
        if task is asyncio.current_task():
            return  # an event callback: the task stops when it returns
        if first:
            task.cancel()
        current = self._current
        if current is not None and serving() is current:
            await current.close()  # starts it; its events wait for the running handler
            return
        await asyncio.wait([task])  # its cancellation is not the caller's

    async def __aenter__(self) -> ReconnectingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._stopping else "open" if self.connected else "reconnecting"
        return f"<ReconnectingClient {self.id!r} {state}>"

    def _live(self) -> ClientConn:
        """The current connection; :class:`~wsmvc.ConnectionClosed` when there is none."""
        conn = self._conn
        if conn is None or conn.closed or self._stopping:
            raise self._down()
        return conn

    def _down(self) -> ConnectionClosed:
        if self._error is not None:
            return ConnectionClosed(f"closed: gave up reconnecting ({self._error!r})")
        if self._stopping:
            return ConnectionClosed("closed")
        return ConnectionClosed("the connection was lost: reconnecting")

    # -- the reconnect task ---------------------------------------------------------------

    def _publish(self, conn: ClientConn) -> None:
        self._conn = self._current = self._last = conn
        self._settled.set()

    def _closing_began(self, conn: Conn) -> None:
        """A connection of ours began to close: the handles stop using it at once."""
        if conn is self._conn:
            self._conn = None
            if not self._stopping:
                self._settled.clear()

    def _kept(self, conn: Conn) -> None:
        """A connection of ours was lost and is kept for recovery: the handles stop using
        it at once (what they send waits in the outbox)."""
        self._closing_began(conn)

    def _forget(self, namespace: str) -> None:
        self._namespaces.pop(namespace, None)

    async def _run(self, conn: ClientConn) -> None:
        """The reconnect task: wait for the loss of ``conn``, reconnect, restore, again."""
        try:
            while not self._stopping:
                kept = await until_lost(conn)
                if self._stopping:
                    break
                if not kept:
                    await conn.close()  # its transport (the HTTP session is the client's)
                    self._current = None
                reason = conn.close_reason or CloseReason.CONNECTION_LOST
                log.info(
                    "%r: connection lost (%s, %s)%s: reconnecting",
                    self,
                    self.close_code,
                    reason.text,
                    ", kept for recovery" if kept else "",
                )
                await self._call("on_lost", self._events.on_lost, reason)
                restored = await self._reconnect(conn if kept else None)
                if restored is None:
                    break
                conn = restored
                self.reconnects += 1
                keep(conn)  # restored: a loss from now on is kept
                await self._outbox.flush(conn)  # what waited, before anything sent later
                if self._stopping or conn.closed or kept_lost(conn):
                    continue  # closed, or lost again meanwhile: the loop sees it
                self._publish(conn)
                log.info(
                    "%r: %s", self, "recovered" if self.recovered else "reconnected and restored"
                )
                await self._call("on_restored", self._events.on_restored)
        except Exception as exc:
            log.exception("%r: reconnecting failed; closed", self)
            self._error = self._error or exc
        finally:
            await self._release()

    async def _reconnect(self, kept: ClientConn | None) -> ClientConn | None:
        """Dial with backoff until a connection is back: ``kept`` (a connection kept for
        recovery) recovered, or a new one acknowledged and restored; ``None`` when stopped
        (closed, or given up)."""
        error: Exception | None = None
        attempt = 0
        limit = self.backoff.attempts
        while not self._stopping:
            if limit is not None and attempt >= limit:
                assert error is not None  # limit >= 1: an attempt failed
                await self._give_up(error, f"{limit} attempt(s) failed")
                return None
            delay = self.backoff.delay(attempt)
            attempt += 1
            await self._call("on_retry", self._events.on_retry, attempt, delay, error)
            if self._stopping:
                return None
            await asyncio.sleep(delay)
            try:
                opened = await self._dial(kept, attempt)
            except Exception as exc:
                if _final(exc):
                    await self._give_up(exc, "refused")
                    return None
                level = logging.DEBUG if isinstance(exc, _EXPECTED) else logging.WARNING
                log.log(level, "%r: attempt %d failed: %r", self, attempt, exc)
                error = exc
                continue
            if isinstance(opened, Returned):
                assert kept is not None and isinstance(kept.recovery, ClientRecovery)
                if kept.recovery.take(opened, self._dialing.make_writer(opened.ws)):
                    self.recovered = True
                    return kept
                await opened.ws.close()  # the server ends that connection for good
                error = ConnectionClosed("recovered, but not exactly: a new connection follows")
                continue  # and the kept one ends (take() ended it): a new one next
            conn = opened
            if kept is not None:
                await end_kept(kept, "the server gave a new connection")
                kept = None
            self._current = conn
            self.recovered = False
            try:
                await self._restore(conn)
            except ConnectionClosed as exc:
                log.debug("%r: lost again while restoring: %s", self, exc)
                await conn.close()
                self._current = None
                error = exc
                continue
            if self._stopping:  # closed by an event callback while restoring
                return None
            return conn
        return None

    async def _dial(self, kept: ClientConn | None, attempt: int) -> ClientConn | Returned:
        """One attempt: the return of ``kept`` while the server may still have it, else a
        new connection (which the server may offer recovery for)."""
        headers = {RECONNECT_HEADER: str(attempt)}
        recovery = kept.recovery if kept is not None else None
        if kept is not None and isinstance(recovery, ClientRecovery) and recovery.live:
            return await self._dialing.come_back(
                self._http,
                recovery.key,
                kept.received,
                registry=self._tracker,
                extra_headers=headers,
                on_lost=self._kept,
            )
        return await self._dialing.open(
            self._http, registry=self._tracker, extra_headers=headers, on_lost=self._kept
        )

    async def _restore(self, conn: ClientConn) -> None:
        """Restore on ``conn``, acknowledged and not yet in use, what the application
        connected and joined: each namespace in the order connected, with its payload,
        then its rooms, one at a time, in the order joined. What is refused (an
        :class:`~wsmvc.EventError`, or no answer within the dial's ``timeout``) is
        forgotten and reported, and the rest restored. Raises
        :class:`~wsmvc.ConnectionClosed` if ``conn`` closes meanwhile.

        Only for a new connection: a recovered one has them all (see :meth:`_reconnect`).
        """
        timeout = self._dialing.timeout
        for handle in list(self._namespaces.values()):
            if self._namespaces.get(handle.namespace) is not handle:
                continue  # forgotten meanwhile (the server disconnected it)
            try:
                ns = await conn.connect(handle.namespace, payload=handle.payload, timeout=timeout)
            except WsmvcError as exc:
                _still_open(conn, exc)
                self._forget(handle.namespace)
                await self._failed(handle.namespace, None, exc)
                continue
            for room in list(handle._rooms):
                if self._namespaces.get(handle.namespace) is not handle or not ns.connected:
                    break
                try:
                    await ns.join_room(room, timeout=timeout)
                except WsmvcError as exc:
                    _still_open(conn, exc)
                    if not ns.connected:
                        break  # the server disconnected the namespace meanwhile
                    handle._rooms.pop(room, None)
                    await self._failed(handle.namespace, room, exc)

    async def _failed(self, namespace: str, room: str | None, error: Exception) -> None:
        what = f"room {room!r} of {namespace!r}" if room is not None else repr(namespace)
        callback = self._events.on_restore_failed
        log.log(
            logging.WARNING if callback is None else logging.DEBUG,
            "%r: could not restore %s: %s",
            self,
            what,
            error,
        )
        await self._call("on_restore_failed", callback, namespace, room, error)

    async def _give_up(self, error: BaseException, why: str) -> None:
        self._error = error
        self._stopping = True
        self._settled.set()
        self._outbox.fail(self._down())
        log.warning("%r: gave up reconnecting (%s): %r", self, why, error)
        await self._call("on_gave_up", self._events.on_gave_up, error)

    async def _call(self, name: str, callback: Callable[..., object] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            result = callback(self, *args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%r: %s raised", self, name)

    async def _release(self) -> None:
        """Stop for good: close the connection held, then the HTTP session (once)."""
        self._stopping = True
        self._settled.set()
        self._outbox.fail(self._down())
        conn, self._current, self._conn = self._current, None, None
        try:
            if conn is not None:
                await conn.close()
        finally:
            if self._own_http and not self._http.closed:
                await self._http.close()
            self._done.set()


# What a failed attempt raises when the network or the server is down: logged at DEBUG.
_EXPECTED = (OSError, aiohttp.ClientError, asyncio.TimeoutError, WsmvcError)


def _still_open(conn: ClientConn, error: Exception) -> None:
    """Restoring failed with ``error``: raise :class:`~wsmvc.ConnectionClosed` if that
    is because ``conn`` closed (then nothing is forgotten)."""
    if conn.closed:
        raise ConnectionClosed("the connection closed while restoring") from error
