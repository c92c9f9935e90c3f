"""The handler table: functions per namespace and event (neffos' ``Namespaces``/``Events``).

A handler is ``handler(nsconn, msg)``, sync or async. What it returns answers the message:
``None`` sends nothing; ``str``, ``bytes`` or :class:`Reply` send that body back with the
message's token, namespace, room and event. Raising :class:`~wsmvc.EventError` answers with
the error flag. Controllers compile into this table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from .errorhandling import ExceptionHandlers
from .protocol import (
    ON_ANY_EVENT,
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_NATIVE_MESSAGE,
    Message,
)
from .taps import Taps
from .unhandled import Unhandled

if TYPE_CHECKING:
    from .nsconn import NSConn

__all__ = ["Events", "Handler", "HandlerTable", "Namespaces", "Reply"]


@attrs.frozen(slots=True)
class Reply:
    """A handler result: answer the incoming message with ``body``."""

    body: bytes | str = b""

    @property
    def data(self) -> bytes:
        """The body as bytes."""
        return self.body.encode() if isinstance(self.body, str) else self.body


Handler: TypeAlias = Callable[["NSConn", Message], "Awaitable[object] | object"]
Events: TypeAlias = Mapping[str, Handler]
Namespaces: TypeAlias = Mapping[str, Events]


class HandlerTable:
    """Namespaces → events → handlers, with the lookups the dispatcher needs.

    Build it with :meth:`on` or from a ``{namespace: {event: handler}}`` mapping.
    ``exception_handlers`` are the table's own (:mod:`wsmvc.errorhandling`): what a peer
    is told when one of its handlers raises; ``taps`` see every event in and out of the
    connections it serves (:mod:`wsmvc.taps`); ``unhandled`` warns of events without a
    handler (:mod:`wsmvc.unhandled`).
    """

    __slots__ = ("_modes", "_table", "exception_handlers", "taps", "unhandled")

    def __init__(self, namespaces: Namespaces | None = None) -> None:
        self._table: dict[str, dict[str, Handler]] = {}
        self._modes: tuple[bool, bool] | None = None  # (native_only, accepts_native), cached
        self.exception_handlers = ExceptionHandlers()
        self.taps = Taps()
        self.unhandled = Unhandled()
        for ns, events in (namespaces or {}).items():
            self.declare(ns)
            for event, fn in events.items():
                self.add(ns, event, fn)

    def add(self, namespace: str, event: str, handler: Handler) -> None:
        """Register ``handler`` for ``event`` in ``namespace``; a later one replaces it."""
        if not callable(handler):
            raise TypeError(f"handler for {namespace!r}/{event!r} is not callable: {handler!r}")
        self._table.setdefault(namespace, {})[event] = handler
        self._modes = None

    def declare(self, namespace: str) -> None:
        """Declare ``namespace`` with no events yet (clients may still connect it)."""
        self._table.setdefault(namespace, {})
        self._modes = None

    def set_events(self, namespace: str, events: Events) -> None:
        """Make ``events`` the whole event table of ``namespace``."""
        self._table[namespace] = {}
        self._modes = None
        for event, fn in events.items():
            self.add(namespace, event, fn)

    def remove_namespace(self, namespace: str) -> None:
        """Forget ``namespace`` and its events."""
        self._table.pop(namespace, None)
        self._modes = None

    def on(self, namespace: str, event: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def register(fn: Handler) -> Handler:
            self.add(namespace, event, fn)
            return fn

        return register

    def has_namespace(self, namespace: str) -> bool:
        return namespace in self._table

    def events(self, namespace: str) -> Mapping[str, Handler]:
        """The events of ``namespace`` (empty when it is not declared)."""
        return self._table.get(namespace, _EMPTY)

    def lookup(self, namespace: str, event: str) -> Handler | None:
        """The handler for ``event``, else the namespace's ``_OnAnyEvent``, else ``None``."""
        events = self._table.get(namespace)
        if events is None:
            return None
        return events.get(event) or events.get(ON_ANY_EVENT)

    @property
    def namespaces(self) -> Mapping[str, Mapping[str, Handler]]:
        return self._table

    @property
    def native_only(self) -> bool:
        """Only namespace ``""``, handling only ``_OnNativeMessage`` (spec 9.1).

        Its connect and disconnect hooks may exist too (a controller's do): they run when
        the websocket opens and closes, as no client sends a namespace request here.
        """
        return (self._modes or self._compute_modes())[0]

    @property
    def accepts_native(self) -> bool:
        """Namespace ``""`` handles native frames (mixed mode, spec 9.2)."""
        return (self._modes or self._compute_modes())[1]

    def _compute_modes(self) -> tuple[bool, bool]:
        # Asked for every connection: computed once per change of the table.
        native = self._table.get("", _EMPTY)
        accepts = ON_NATIVE_MESSAGE in native
        only = list(self._table) == [""] and accepts and set(native) <= _NATIVE_ONLY_EVENTS
        self._modes = (only, accepts)
        return self._modes


_EMPTY: Mapping[str, Any] = {}
_NATIVE_ONLY_EVENTS = frozenset(
    {ON_NATIVE_MESSAGE, ON_NAMESPACE_CONNECT, ON_NAMESPACE_CONNECTED, ON_NAMESPACE_DISCONNECT}
)
