"""The exception hierarchy of wsmvc, and neffos' known errors.

Every exception wsmvc raises for the application to see is a :class:`WsmvcError`; each
keeps the built-in base it had before there was one (``ControllerError`` is still a
``TypeError``, ``AskTimeout`` a ``TimeoutError``), so ``except WsmvcError`` catches all of
wsmvc's and older ``except TypeError`` code goes on working::

    WsmvcError
    ├── ProtocolError              a frame is not a valid neffos message
    ├── EventError                 an error answer (the peer's text, or this side's refusal)
    │   ├── BadNamespace           "bad namespace" (a known error)
    │   │   ├── NotConnected       this side used a namespace it has not connected
    │   │   └── NotInHandlerTable  this side connected a namespace its table lacks
    │   ├── BadRoom                "bad room" (a known error)
    │   │   └── NotJoined          this side used a room it has not joined
    │   │   (the three: OwnMistake, raised before anything is sent)
    │   ├── WriteClosed, InvalidPayload, BodyError, your known errors
    ├── Reject                     on_connect refused the connection
    ├── ConnectionClosed           the connection closed before the operation finished
    ├── AskTimeout                 (also TimeoutError) no answer in time
    ├── ControllerError            (also TypeError) a controller is declared wrongly
    ├── DependencyError            (also TypeError) a dependency cannot be provided
    ├── DependencyFailure          (also RuntimeError) a provider raised for a connection
    └── StateError                 (also AssertionError) a bug in wsmvc

:data:`GENERIC_ERROR` is the one text a peer is told of a failure that is not an
:class:`EventError` (a handler's bug, an ``on_connect`` that raised); the traceback stays
in the server's log.

A *known error* (neffos' ``RegisterKnownError``) is an :class:`EventError` subclass with a
fixed text that both sides register: on the wire it is its text, as any error answer, and
the receiving side turns that text back into the same class, so code can ``except`` it
(Go: ``errors.Is``). neffos' own four are registered here: :class:`BadNamespace`,
:class:`BadRoom`, :class:`WriteClosed`, :class:`InvalidPayload`.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Final, TypeVar

__all__ = [
    "GENERIC_ERROR",
    "AskTimeout",
    "BadNamespace",
    "BadRoom",
    "ConnectionClosed",
    "EventError",
    "InvalidPayload",
    "NotConnected",
    "NotInHandlerTable",
    "NotJoined",
    "OwnMistake",
    "ProtocolError",
    "Reject",
    "WriteClosed",
    "WsmvcError",
    "known_error",
    "known_errors",
]

GENERIC_ERROR: Final = "internal server error"
"""What a peer is told of an exception that is not an :class:`EventError`: an error answer
to its message, the reason of a refused handshake, the close reason of 1011, the body of
an HTTP 500 (``Server(debug_errors=True)`` sends ``TypeName: message`` instead, where the
exception is at hand)."""


class WsmvcError(Exception):
    """Base class of every exception wsmvc raises for the application (see the tree in
    :mod:`wsmvc.errors`)."""


class ProtocolError(WsmvcError):
    """A frame is not a valid neffos message."""


class EventError(WsmvcError):
    """Raise in a handler to answer the message with the error flag and this text.

    Raised by the client side too: a peer's error answer to ``ask()`` (or to a connect,
    join or leave) arrives as an ``EventError`` carrying the peer's text. When that text is
    a known error's (:func:`known_error`), ``EventError(text)`` makes an instance of the
    registered class instead (neffos' ``resolveError``): ``except RoomFull`` works on the
    receiving side, and ``except EventError`` still does. A known error class may be
    raised without arguments: its text is its class attribute ``text``.
    """

    text: str

    def __new__(cls, *args: Any, **kwargs: Any) -> EventError:
        if cls is EventError and len(args) == 1 and not kwargs and isinstance(args[0], str):
            known = _KNOWN.get(args[0])
            if known is not None:
                return super().__new__(known)  # then known.__init__(text) runs
        return super().__new__(cls)

    def __init__(self, text: str | None = None) -> None:
        if text is None:
            text = getattr(type(self), "text", None)
        if not text or not isinstance(text, str):
            # An empty error text reads as "no error" on the wire (spec 2.4 step 6).
            raise ValueError(f"{type(self).__name__} needs a non-empty text")
        super().__init__(text)
        self.text = text


E = TypeVar("E", bound=type[EventError])
_KNOWN: dict[str, type[EventError]] = {}


def known_error(cls: E) -> E:
    """Class decorator: register an :class:`EventError` subclass as a known error.

    The class says its text in a class attribute ``text``; raising it (``raise
    RoomFull()``) answers with that text, and wherever that text arrives as an error (an
    ask's answer, a refused connect, join or leave, on the client or the server),
    ``EventError(text)`` is an instance of this class. Both sides register the same class
    (share the module). The wire is unchanged: just the text, so Go and neffos.js peers
    see a plain error (Go maps it to its own ``RegisterKnownError`` value of that text).

    Raises :class:`TypeError` for a class that is not an ``EventError`` subclass, has no
    ``text`` of its own, or cannot be made with no arguments; :class:`ValueError` when
    another class already holds that text (a class re-created under the same module and
    name, as a reload does, replaces the old one).
    """
    if not isinstance(cls, type) or not issubclass(cls, EventError) or cls is EventError:
        raise TypeError(f"known_error registers EventError subclasses, not {cls!r}")
    text = vars(cls).get("text")
    if not isinstance(text, str) or not text:
        raise TypeError(
            f"{cls.__qualname__} needs a text of its own: a class attribute"
            " text = '...' (the error text on the wire)"
        )
    held = _KNOWN.get(text)
    if held is not None and held is not cls and _name(held) != _name(cls):
        raise ValueError(f"{text!r} is already the text of the known error {_name(held)}")
    try:
        made = cls()
    except Exception as exc:
        raise TypeError(
            f"{cls.__qualname__}() must work without arguments (the receiving side makes it"
            f" from the text): {type(exc).__name__}: {exc}"
        ) from exc
    if made.text != text:
        raise TypeError(f"{cls.__qualname__}() has the text {made.text!r}, not {text!r}")
    _KNOWN[text] = cls
    return cls


def known_errors() -> Mapping[str, type[EventError]]:
    """The known errors by text (a read-only view)."""
    return types.MappingProxyType(_KNOWN)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# neffos' own known errors (spec 2.4 step 7, 16.28): Go compares them by these texts.


@known_error
class BadNamespace(EventError):
    """The namespace is not served, or not connected (neffos ``ErrBadNamespace``)."""

    text = "bad namespace"


@known_error
class BadRoom(EventError):
    """The room is not joined, or is being joined or left (neffos ``ErrBadRoom``)."""

    text = "bad room"


@known_error
class WriteClosed(EventError):
    """The connection could not write (neffos ``ErrWrite``)."""

    text = "write closed"


@known_error
class InvalidPayload(EventError):
    """The payload could not be read (neffos ``ErrInvalidPayload``)."""

    text = "invalid payload"


class OwnMistake(EventError):
    """Base of the errors a side raises for its own misuse, before anything is sent
    (:class:`NotConnected`, :class:`NotInHandlerTable`, :class:`NotJoined`).

    ``str()`` says what was wrong and what to do; :attr:`text` stays the known error's
    (``"bad namespace"``, ``"bad room"``): what ``except BadNamespace`` and code comparing
    texts expect, and what a peer is told should the error escape a handler.
    """

    def __init__(self, detail: str | None = None) -> None:
        super().__init__()  # the known error's class text
        if detail:
            self.args = (detail,)


class NotConnected(OwnMistake, BadNamespace):
    """This side asked, emitted or disconnected on a namespace it has not connected, or
    that was disconnected meanwhile (the client's mistake, not the server's ``bad
    namespace``)."""


class NotInHandlerTable(OwnMistake, BadNamespace):
    """This side connected a namespace that is not in its own handler table (a client's
    ``dial(url, {namespace: {...}})``; a server's controllers and handlers)."""


class NotJoined(OwnMistake, BadRoom):
    """This side left a room it has not joined (or one being joined or left), or asked
    in one."""


class Reject(WsmvcError):
    """Raise in ``on_connect`` to refuse a connection: the client's dial fails with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionClosed(WsmvcError):
    """The connection closed before the operation could finish."""


class AskTimeout(WsmvcError, TimeoutError):
    """No answer to an ask arrived within its timeout."""
