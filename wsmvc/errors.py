"""The exception hierarchy of wsmvc, and neffos' known errors.

A *known error* (neffos' ``RegisterKnownError``) is an :class:`EventError` subclass with a
fixed text that both sides register: on the wire it is its text, as any error answer, and
the receiving side turns that text back into the same class, so code can ``except`` it
(Go: ``errors.Is``). neffos' own four are registered here: :class:`BadNamespace`,
:class:`BadRoom`, :class:`WriteClosed`, :class:`InvalidPayload`.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "AskTimeout",
    "BadNamespace",
    "BadRoom",
    "ConnectionClosed",
    "EventError",
    "InvalidPayload",
    "ProtocolError",
    "Reject",
    "WriteClosed",
    "WsmvcError",
    "known_error",
    "known_errors",
]


class WsmvcError(Exception):
    """Base class of every error wsmvc raises."""


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


class Reject(WsmvcError):
    """Raise in ``on_connect`` to refuse a connection: the client's dial fails with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionClosed(WsmvcError):
    """The connection closed before the operation could finish."""


class AskTimeout(WsmvcError, TimeoutError):
    """No answer to an ask arrived within its timeout."""
