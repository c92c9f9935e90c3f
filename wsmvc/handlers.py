"""The handler table: functions per namespace and event (neffos' ``Namespaces``/``Events``).

A handler is ``handler(nsconn, msg)``, sync or async. What it returns answers the message:
``None`` sends nothing; ``str``, ``bytes`` or :class:`Reply` send that body back with the
message's token, namespace, room and event. Raising :class:`~wsmvc.EventError` answers with
the error flag. Controllers compile into this table.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from .dynamic import NamespacePattern, is_pattern
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

__all__ = ["Events", "Handler", "HandlerTable", "Namespaces", "Reply", "Wrap"]


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


@attrs.frozen(slots=True)
class Reply:
    """A handler result: answer the incoming message with ``body``.

    ``body`` is the reply's bytes, as :attr:`Message.body <wsmvc.Message.body>` is a
    message's: a ``str`` given is kept as its UTF-8 (``Reply("hi").body == b"hi"``).
    Raises :class:`UnicodeEncodeError` for a ``str`` that has no UTF-8 (a lone surrogate,
    as ``json.loads`` can make): raised in a handler, the peer gets the generic error.
    """

    body: bytes = attrs.field(default=b"", converter=_as_bytes)

    @property
    def data(self) -> bytes:
        """Deprecated: the same bytes as :attr:`body` (one name for a reply's bytes)."""
        warnings.warn(
            "Reply.data is deprecated: use Reply.body (bytes, as Message.body)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.body


Handler: TypeAlias = Callable[["NSConn", Message], "Awaitable[object] | object"]
Wrap: TypeAlias = Callable[[str, str, Handler], Handler]
"""``wrap(namespace, event, handler)``: the handler to register instead (one that calls
``handler``), with the namespace (a name or a pattern) and event it is registered for."""
Events: TypeAlias = Mapping[str, Handler]
Namespaces: TypeAlias = Mapping[str, Events]


class HandlerTable:
    """Namespaces → events → handlers, with the lookups the dispatcher needs.

    Build it with :meth:`on` or from a ``{namespace: {event: handler}}`` mapping. A
    namespace written as a pattern, ``"room-{id}"``, serves every namespace whose name fits
    it (:mod:`wsmvc.dynamic`); an exact name wins over patterns, the first pattern
    registered over later ones.
    ``exception_handlers`` are the table's own (:mod:`wsmvc.errorhandling`): what a peer
    is told when one of its handlers raises; ``taps`` see every event in and out of the
    connections it serves (:mod:`wsmvc.taps`); ``unhandled`` warns of events without a
    handler (:mod:`wsmvc.unhandled`).
    """

    __slots__ = (
        "_matched",
        "_modes",
        "_patterns",
        "_table",
        "_wraps",
        "exception_handlers",
        "taps",
        "unhandled",
    )

    def __init__(self, namespaces: Namespaces | None = None) -> None:
        self._table: dict[str, dict[str, Handler]] = {}  # exact names
        # Patterns by their template, in the order registered: the first match wins.
        self._patterns: dict[str, tuple[NamespacePattern, dict[str, Handler]]] = {}
        self._matched: dict[str, _Match | None] = {}  # names matched lately (bounded)
        self._modes: tuple[bool, bool] | None = None  # (native_only, accepts_native), cached
        self._wraps: tuple[Wrap, ...] = ()
        self.exception_handlers = ExceptionHandlers()
        self.taps = Taps()
        self.unhandled = Unhandled()
        for ns, events in (namespaces or {}).items():
            self.declare(ns)
            for event, fn in events.items():
                self.add(ns, event, fn)

    def add(self, namespace: str, event: str, handler: Handler) -> None:
        """Register ``handler`` for ``event`` in ``namespace`` (a name or a pattern); a
        later one replaces it. Raises :class:`TypeError` for a handler that is not
        callable, :class:`ValueError` for a pattern that cannot work."""
        if not callable(handler):
            raise TypeError(f"handler for {namespace!r}/{event!r} is not callable: {handler!r}")
        for wrap in self._wraps:
            handler = wrap(namespace, event, handler)
        self._declared(namespace)[event] = handler

    def wrap(self, wrap: Wrap) -> None:
        """Register every handler through ``wrap`` (:data:`Wrap`): those registered
        already (replaced in place) and those to come; wraps added later wrap earlier
        ones'. For instrumentation (:mod:`wsmvc.tracing`): a table never wrapped costs
        nothing more per message. Handlers are looked up per message, so connections open
        already call the wrapped ones from their next message on; :meth:`events` and
        :meth:`lookup` return the wrapped ones."""
        self._wraps = (*self._wraps, wrap)
        tables = [(ns, self._table[ns]) for ns in self._table]
        tables += [(template, events) for template, (_, events) in self._patterns.items()]
        for namespace, events in tables:
            for event, handler in list(events.items()):
                events[event] = wrap(namespace, event, handler)

    def declare(self, namespace: str) -> None:
        """Declare ``namespace`` (a name or a pattern) with no events yet (clients may
        still connect it)."""
        self._declared(namespace)

    def _declared(self, namespace: str) -> dict[str, Handler]:
        self._modes = None
        if not is_pattern(namespace):
            return self._table.setdefault(namespace, {})
        entry = self._patterns.get(namespace)
        if entry is None:
            entry = self._patterns[namespace] = (NamespacePattern(namespace), {})
            self._matched.clear()
        return entry[1]

    def set_events(self, namespace: str, events: Events) -> None:
        """Make ``events`` the whole event table of ``namespace`` (a name or a pattern)."""
        if is_pattern(namespace):
            pattern = self._patterns.get(namespace, (NamespacePattern(namespace), {}))[0]
            self._patterns[namespace] = (pattern, {})  # in its place, if it was there
            self._matched.clear()
        else:
            self._table[namespace] = {}
        self._modes = None
        for event, fn in events.items():
            self.add(namespace, event, fn)

    def remove_namespace(self, namespace: str) -> None:
        """Forget ``namespace`` (a name or a pattern) and its events."""
        self._table.pop(namespace, None)
        if self._patterns.pop(namespace, None) is not None:
            self._matched.clear()
        self._modes = None

    def on(self, namespace: str, event: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def register(fn: Handler) -> Handler:
            self.add(namespace, event, fn)
            return fn

        return register

    def has_namespace(self, namespace: str) -> bool:
        """Whether ``namespace`` (a name or a pattern) was registered, as written."""
        return namespace in self._table or namespace in self._patterns

    def events(self, namespace: str) -> Mapping[str, Handler]:
        """The events registered for ``namespace`` as written (a name, or a pattern), empty
        when it is not declared; :meth:`events_of` finds a connected name's."""
        if namespace in self._patterns:
            return self._patterns[namespace][1]
        return self._table.get(namespace, _EMPTY)

    def lookup(self, namespace: str, event: str) -> Handler | None:
        """The handler for ``event`` in the namespace named ``namespace`` (its exact entry,
        else the first pattern it fits), else that namespace's ``_OnAnyEvent``, else
        ``None``."""
        events = self.events_of(namespace)
        return events.get(event) or events.get(ON_ANY_EVENT)

    def events_of(self, namespace: str) -> Mapping[str, Handler]:
        """The events serving the namespace named ``namespace``: its exact entry, else the
        first pattern's it fits, else none."""
        events = self._table.get(namespace)
        if events is not None:
            return events
        found = self._match(namespace)
        return found[0] if found is not None else _EMPTY

    def params(self, namespace: str) -> Mapping[str, str]:
        """What the placeholders of the pattern serving ``namespace`` matched
        (``room-{id}`` for ``room-7``: ``{"id": "7"}``); empty for an exact name."""
        if namespace in self._table:
            return _EMPTY
        found = self._match(namespace)
        return found[1] if found is not None else _EMPTY

    def __contains__(self, namespace: object) -> bool:
        """Whether a client may connect the namespace named ``namespace``."""
        if not isinstance(namespace, str):
            return False
        return namespace in self._table or self._match(namespace) is not None

    def _match(self, namespace: str) -> _Match | None:
        if not self._patterns:
            return None
        try:
            return self._matched[namespace]
        except KeyError:
            pass
        found: _Match | None = None
        for pattern, events in self._patterns.values():
            params = pattern.match(namespace)
            if params is not None:
                found = (events, params)
                break
        if len(namespace) <= _CACHED_NAME:  # a client's name may be a megabyte
            if len(self._matched) >= _CACHED_NAMES:
                self._matched.clear()
            self._matched[namespace] = found
        return found

    @property
    def patterns(self) -> list[str]:
        """The namespace patterns, in the order they are tried."""
        return list(self._patterns)

    @property
    def namespaces(self) -> Mapping[str, Mapping[str, Handler]]:
        """The namespaces registered by exact name (the patterns: :attr:`patterns`)."""
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
        only = (
            not self._patterns
            and list(self._table) == [""]
            and accepts
            and set(native) <= _NATIVE_ONLY_EVENTS
        )
        self._modes = (only, accepts)
        return self._modes


_EMPTY: Mapping[str, Any] = {}
_Match: TypeAlias = "tuple[Mapping[str, Handler], Mapping[str, str]]"  # events, params
_CACHED_NAMES = 1024  # names whose match is remembered, at most
_CACHED_NAME = 256  # characters of a name that may be remembered
_NATIVE_ONLY_EVENTS = frozenset(
    {ON_NATIVE_MESSAGE, ON_NAMESPACE_CONNECT, ON_NAMESPACE_CONNECTED, ON_NAMESPACE_DISCONNECT}
)
