"""A connection's own namespace changes (``neffos-protocol.md`` §5): connect and disconnect
a namespace from this side, as :class:`~wsmvc.Conn` methods (a mixin of it)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .errors import ConnectionClosed, EventError, NotConnected, NotInHandlerTable
from .nsconn import DEFAULT, NSConn, Timeout, as_body
from .protocol import (
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    Message,
    shorten,
)
from .states import NsState, StateError

if TYPE_CHECKING:
    from .closing import Deferred
    from .conn import Conn
    from .dispatch import Dispatcher
    from .session import Session

__all__ = ["NamespaceChanges", "serve_as", "serving"]

# The connection whose serving task (or a task started from it: a handler's gather,
# wait_for or create_task) runs the current code. Such code cannot wait for that
# connection's disconnect events: they run after the handler.
_serving = contextvars.ContextVar["Conn | None"]("wsmvc_serving", default=None)


def serving() -> Conn | None:
    """The connection whose handler (or a task it started) runs the current code, if any."""
    return _serving.get()


def serve_as(conn: Conn) -> None:
    """Mark the current task (and the tasks it starts) as ``conn``'s serving task."""
    _serving.set(conn)


class NamespaceChanges:
    """``connect()``, ``disconnect_namespace()`` and ``disconnect_all()`` of a connection."""

    __slots__ = ()

    if TYPE_CHECKING:  # what the methods use of the Conn they are part of
        session: Session[NSConn, asyncio.Future[Message]]
        dispatcher: Dispatcher
        is_client: bool
        _deferred: list[Deferred] | None

        @property
        def closed(self) -> bool: ...
        @property
        def namespaces(self) -> Mapping[str, NSConn]: ...
        def _ensure_open(self) -> None: ...
        def _defer(self, deferred: Deferred) -> None: ...
        async def wait_closed(self) -> None: ...
        async def ask(
            self,
            msg: Message,
            *,
            timeout: Timeout = DEFAULT,
            on_reply: Callable[[Message], None] | None = None,
        ) -> Message: ...

    async def connect(
        self, namespace: str, *, timeout: Timeout = DEFAULT, payload: bytes | str = b""
    ) -> NSConn:
        """Connect ``namespace`` from this side (spec 5.1 on a client, 5.2 on a server).

        Fires the local ``_OnNamespaceConnect`` (which may refuse), asks the peer, then
        fires ``_OnNamespaceConnected``. Returns the namespace (at once when connected
        already; a connect under way is shared). Raises :class:`~wsmvc.EventError` (the
        refusal, the peer's ``bad namespace``), :class:`~wsmvc.NotInHandlerTable` (sending
        nothing) when ``namespace`` is not in this side's own handler table,
        :class:`~wsmvc.AskTimeout` and
        :class:`~wsmvc.ConnectionClosed`. ``payload``: the connect's body, which the
        peer's hook gets and keeps (:attr:`NSConn.connect_payload`): a token, the user.
        """
        session = self.session
        while True:
            ns = session.namespaces.get(namespace)
            if ns is not None and session.connected(ns):
                return ns
            if not session.declares(namespace):
                raise self._not_declared(namespace)
            under_way = self.dispatcher.under_way(namespace)  # the peer's, or another task's
            if under_way is None:
                break
            await asyncio.shield(under_way)
        with self.dispatcher.deciding(namespace):
            return await self._connect(namespace, timeout, as_body(payload))

    async def _connect(self, namespace: str, timeout: Timeout, payload: bytes) -> NSConn:
        self._ensure_open()
        session = self.session
        ns = session.connect_started(namespace)
        if ns is None:
            raise StateError(f"{namespace!r} has a record but no change under way")

        def answered(reply: Message) -> None:
            # Now, not when connect() resumes: the peer may be sending to it already.
            session.connect_finished(ns, not reply.err)

        try:
            local = Message(namespace=namespace, event=ON_NAMESPACE_CONNECT, local=True)
            refusal = await self.dispatcher.fire(ns, local)
            if refusal is not None:
                raise EventError(refusal)
            if ns.state is not NsState.CONNECTING:
                raise ConnectionClosed("connection closed before connect() finished")
            await self.ask(
                Message(namespace=namespace, event=ON_NAMESPACE_CONNECT, body=payload),
                timeout=timeout,
                on_reply=answered,
            )
        finally:
            session.connect_finished(ns, False)  # refused, failed, cancelled: no namespace
        if not session.connected(ns):
            # Disconnected (by the peer, or the close) before connect() resumed: its
            # _OnNamespaceConnected would come after its _OnNamespaceDisconnect.
            raise ConnectionClosed(f"{ns!r} went away before connect() returned")
        await self.dispatcher.fire(ns, Message(namespace, event=ON_NAMESPACE_CONNECTED, local=True))
        return ns

    async def disconnect_namespace(self, ns: NSConn, *, timeout: Timeout = DEFAULT) -> None:
        """Ask the peer to disconnect ``ns`` (spec 5.3 on a client, 5.4 on a server).

        Once the peer agreed, ``ns`` leaves its rooms and is removed; its disconnect events
        (``_OnRoomLeave``/``_OnRoomLeft`` forced, then ``_OnNamespaceDisconnect``) run in the
        connection's serving task, after the handler running there. Called from another
        task this returns once they ran; called from a handler of this connection it
        returns at once and they run right after that handler. Raises
        :class:`~wsmvc.EventError` (``bad namespace`` when not connected, or the peer's
        refusal), :class:`~wsmvc.NotConnected` (sending nothing) when ``ns`` is not
        connected, and :class:`~wsmvc.AskTimeout`.
        """
        if self.session.namespace(ns.namespace) is not ns:
            raise NotConnected(
                f"namespace {shorten(ns.namespace)!r} is not connected (disconnected"
                " already?): nothing to disconnect"
            )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def agreed(reply: Message) -> None:
            if not reply.err:  # removed now; its events run in the serving task
                self._defer((ns, self.session.disconnected(ns, local=True), done))

        inside = serving() is self
        try:
            await self.ask(
                Message(namespace=ns.namespace, event=ON_NAMESPACE_DISCONNECT),
                timeout=timeout,
                on_reply=agreed,
            )
        except ConnectionClosed:
            # Gone anyway: the connection closes (its close fires the events), or another
            # disconnect of it was agreed first (wait for its events), or the peer's own.
            if inside:
                return
            if self.closed:
                await self.wait_closed()
                return
            first = next((d for n, _, d in self._deferred or () if n is ns), None)
            if first is None:
                return  # the peer's own disconnect: its events ran in the serving task
            done = first
        if not inside:
            await asyncio.shield(done)

    def _not_declared(self, namespace: str) -> NotInHandlerTable:
        name = shorten(namespace)
        if self.is_client:
            return NotInHandlerTable(
                f"namespace {name!r} is not in your handler table: declare it in"
                f" dial(url, {{{name!r}: {{...}}}}) (an empty {{}} if it has no events);"
                " nothing was sent"
            )
        return NotInHandlerTable(
            f"namespace {name!r} is not in this server's handler table: register a"
            " controller or handlers for it before connecting clients to it; nothing was sent"
        )

    async def disconnect_all(self, *, timeout: Timeout = DEFAULT) -> None:
        """Disconnect every connected namespace, one after another."""
        for ns in list(self.namespaces.values()):
            if ns.connected:
                await self.disconnect_namespace(ns, timeout=timeout)
