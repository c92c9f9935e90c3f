"""Exception handlers: what a peer is told when a handler raises, per exception type.

When an event handler or a system-event hook (``on_namespace_connect``, ``on_room_join``...)
raises, the dispatcher asks, in this order:

1. the controller serving the namespace: a method marked ``@catch(SomeError)`` on the
   controller instance's class (or a base class), the most specific type first;
2. the server: ``Server(exception_handlers={SomeError: fn})`` or
   ``@server.exception_handler(SomeError)``, the most specific type first.

A controller's handler wins over the server's, even a less specific one (as a Flask
blueprint's error handlers win over the app's). A handler returns the error text the peer
gets (a non-empty ``str``), raises :class:`~wsmvc.EventError` with it, or returns ``None``
to leave the decision to the next in line; with no decision the default applies: an
``EventError``'s own text, for anything else the generic text with the traceback logged.
Handlers may be ``async``. A handler that fails (raises, or returns something else) is
logged and the default applies. Handlers decide what to log: wsmvc logs nothing for an
error a handler answered.

An :class:`~wsmvc.EventError` (a known error included) carries its own text: handlers for
``Exception`` or ``WsmvcError`` do not see it, only one registered for ``EventError`` or a
subclass of it.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from .errors import EventError

if TYPE_CHECKING:
    from .nsconn import NSConn
    from .protocol import Message

__all__ = [
    "ExceptionHandler",
    "ExceptionHandlers",
    "Handling",
    "catch",
    "decide",
    "handlers_for",
    "text_of",
]

log = logging.getLogger("wsmvc")

ExceptionHandler: TypeAlias = Callable[..., "str | Awaitable[str | None] | None"]
"""``handler(exc, nsconn, msg)``, sync or async: the error text for ``exc``, raised while
handling ``msg`` in ``nsconn`` (``None`` when it has no namespace connection: a hook of a
connect that did not happen), or ``None`` to leave it to the next in line."""

Handling: TypeAlias = Callable[[BaseException, "NSConn | None", "Message"], object]
"""A handler found for an exception, ready to call with ``(exc, nsconn, msg)``."""

F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", bound=ExceptionHandler)

_CATCH_MARK = "__wsmvc_catch__"


def _check_types(types: Iterable[object], what: str) -> tuple[type[BaseException], ...]:
    checked = tuple(types)
    if not checked:
        raise TypeError(f"{what} needs at least one exception class")
    for kind in checked:
        if not isinstance(kind, type) or not issubclass(kind, Exception):
            raise TypeError(
                f"{what} takes exception classes (subclasses of Exception), not {kind!r}"
            )
    return checked  # type: ignore[return-value]


def _positional(fn: Callable[..., Any]) -> tuple[int, bool]:
    """How many positional parameters ``fn`` has, and whether it takes ``*args``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 3, True  # a builtin or C callable: trust it
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    count = sum(1 for p in params if p.kind in kinds)
    star = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    return count, star


class ExceptionHandlers:
    """The server-wide exception handlers, by exception type (see the module docstring).

    ``handlers``: a ``{ExceptionType: handler}`` mapping; more with :meth:`add`.
    """

    __slots__ = ("_by_type",)

    def __init__(self, handlers: Mapping[type[BaseException], ExceptionHandler] | None = None):
        self._by_type: dict[type[BaseException], ExceptionHandler] = {}
        self.update(handlers or {})

    def add(self, kind: type[BaseException], handler: ExceptionHandler) -> None:
        """Handle ``kind`` (and its subclasses without a handler of their own) with
        ``handler(exc, nsconn, msg)``; a later handler for the same type replaces it.

        Raises :class:`TypeError` now for what cannot work: a ``kind`` that is not an
        exception class, a ``handler`` that is not callable or cannot take three arguments.
        """
        (kind,) = _check_types([kind], "an exception handler")
        if not callable(handler):
            raise TypeError(
                f"the exception handler for {kind.__name__} is not callable: {handler!r}"
            )
        count, star = _positional(handler)
        if count != 3 and not (star and count <= 3):
            name = getattr(handler, "__qualname__", repr(handler))
            raise TypeError(
                f"exception handler {name} for {kind.__name__} takes {count} positional"
                " parameters; it is called as handler(exc, nsconn, msg)"
            )
        self._by_type[kind] = handler

    def update(self, handlers: Mapping[type[BaseException], ExceptionHandler]) -> None:
        """:meth:`add` each of ``handlers`` (``{ExceptionType: handler}``)."""
        for kind, handler in handlers.items():
            self.add(kind, handler)

    def register(self, *kinds: type[BaseException]) -> Callable[[H], H]:
        """Decorator form of :meth:`add`, for one or more exception types."""
        checked = _check_types(kinds, "an exception handler")

        def add(handler: H) -> H:
            for kind in checked:
                self.add(kind, handler)
            return handler

        return add

    def find(self, exc: BaseException) -> ExceptionHandler | None:
        """The handler for ``exc``: its class's, else its nearest base class's."""
        by_type = self._by_type
        if not by_type:
            return None
        for kind in _lineage(type(exc)):
            handler = by_type.get(kind)
            if handler is not None:
                return handler
        return None

    def __bool__(self) -> bool:
        return bool(self._by_type)

    def __len__(self) -> int:
        return len(self._by_type)


def _lineage(kind: type[BaseException]) -> tuple[type, ...]:
    """The classes whose handlers apply to ``kind``, most specific first: its MRO, cut
    after ``EventError`` for an ``EventError`` (which carries its own text)."""
    mro = kind.__mro__
    if issubclass(kind, EventError):
        return mro[: mro.index(EventError) + 1]
    return mro


def catch(*kinds: type[BaseException]) -> Callable[[F], F]:
    """Mark a controller method as the handler of ``kinds`` raised by this controller's
    event methods and hooks: ``def on_error(self, exc)`` or ``(self, exc, msg)``, sync or
    async, returning the error text (or ``None``: the server's handlers decide).

    Raises :class:`TypeError` at decoration for something that is not an exception class
    or a method that cannot take ``(self, exc)`` or ``(self, exc, msg)``.
    """
    checked = _check_types(kinds, "@catch")

    def mark(fn: F) -> F:
        if isinstance(fn, (staticmethod, classmethod)) or not inspect.isfunction(fn):
            raise TypeError(f"@catch decorates a method (def handler(self, exc, msg)), not {fn!r}")
        count, star = _positional(fn)
        if count not in (2, 3) and not star:
            raise TypeError(
                f"@catch on {fn.__qualname__}: it takes {count} positional parameters;"
                " an exception handler method takes (self, exc) or (self, exc, msg)"
            )
        setattr(fn, _CATCH_MARK, getattr(fn, _CATCH_MARK, ()) + checked)
        return fn

    return mark


# The @catch methods of each controller class: exception type -> (method, takes msg).
_Catches: TypeAlias = "dict[type[BaseException], tuple[Callable[..., Any], bool]]"
_by_class: weakref.WeakKeyDictionary[type, _Catches] = weakref.WeakKeyDictionary()


def _catches(cls: type) -> _Catches:
    found = _by_class.get(cls)
    if found is None:
        found = {}
        attrs: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):  # a subclass's method overrides its base's
            attrs.update(vars(klass))
        for raw in attrs.values():
            kinds = getattr(raw, _CATCH_MARK, None) if inspect.isfunction(raw) else None
            if kinds:
                count, star = _positional(raw)
                for kind in kinds:
                    found[kind] = (raw, count >= 3 or star)
        _by_class[cls] = found
    return found


_NONE: tuple[Handling, ...] = ()


def handlers_for(
    server_wide: ExceptionHandlers, ns: NSConn | None, exc: BaseException
) -> tuple[Handling, ...]:
    """The handlers that may decide the text of ``exc`` raised in ``ns``, in turn: the
    controller's ``@catch`` method for it, then the server's (each the most specific)."""
    found: list[Handling] = []
    controller = ns.controller if ns is not None else None
    if controller is not None:
        catches = _catches(type(controller))
        if catches:
            for kind in _lineage(type(exc)):
                caught = catches.get(kind)
                if caught is not None:
                    found.append(_bound(controller, *caught))
                    break
    if server_wide:
        handler = server_wide.find(exc)
        if handler is not None:
            found.append(handler)
    return tuple(found) if found else _NONE


def _bound(controller: object, method: Callable[..., Any], takes_msg: bool) -> Handling:
    if takes_msg:
        return lambda exc, ns, msg: method(controller, exc, msg)
    return lambda exc, ns, msg: method(controller, exc)


def decide(
    handlers: tuple[Handling, ...],
    exc: BaseException,
    ns: NSConn | None,
    msg: Message,
    default: Callable[[], str],
) -> str | Awaitable[str]:
    """The error text of ``exc``: the first handler's decision, else ``default()``; an
    awaitable of it once a handler is async (see the module docstring)."""
    for index, handler in enumerate(handlers):
        try:
            result = handler(exc, ns, msg)
            if inspect.isawaitable(result):
                return _decide_later(handlers, index, result, exc, ns, msg, default)
            text = text_of(result)
        except EventError as decided:
            return decided.text
        except Exception:
            _failed(handler, exc)
            return default()
        if text is not None:
            return text
    return default()


async def _decide_later(
    handlers: tuple[Handling, ...],
    index: int,
    result: object,
    exc: BaseException,
    ns: NSConn | None,
    msg: Message,
    default: Callable[[], str],
) -> str:
    for handler in handlers[index:]:
        try:
            if result is None:
                result = handler(exc, ns, msg)
            if inspect.isawaitable(result):
                result = await result
            text = text_of(result)
        except EventError as decided:
            return decided.text
        except Exception:
            _failed(handler, exc)
            return default()
        if text is not None:
            return text
        result = None
    return default()


def _failed(handler: Handling, exc: BaseException) -> None:
    name = getattr(handler, "__qualname__", repr(handler))
    log.exception("the exception handler %s for %s failed", name, type(exc).__name__)


def text_of(result: object) -> str | None:
    """The error text an exception handler returned (``None``: no decision); raises
    :class:`TypeError` for anything else."""
    if result is None or (isinstance(result, str) and result):
        return result
    raise TypeError(
        f"an exception handler returned {result!r}: it returns the error text (a non-empty"
        " str), raises EventError, or returns None"
    )
