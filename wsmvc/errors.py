"""The exception hierarchy of wsmvc."""

from __future__ import annotations

__all__ = [
    "AskTimeout",
    "ConnectionClosed",
    "EventError",
    "ProtocolError",
    "Reject",
    "WsmvcError",
]


class WsmvcError(Exception):
    """Base class of every error wsmvc raises."""


class ProtocolError(WsmvcError):
    """A frame is not a valid neffos message."""


class EventError(WsmvcError):
    """Raise in a handler to answer the message with the error flag and this text.

    Raised by the client side too: a peer's error answer to ``ask()`` arrives as an
    ``EventError`` carrying the peer's text.
    """

    def __init__(self, text: str) -> None:
        if not text:
            # An empty error text reads as "no error" on the wire (spec 2.4 step 6).
            raise ValueError("EventError needs a non-empty text")
        super().__init__(text)
        self.text = text


class Reject(WsmvcError):
    """Raise in ``on_connect`` to refuse a connection: the client's dial fails with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionClosed(WsmvcError):
    """The connection closed before the operation could finish."""


class AskTimeout(WsmvcError, TimeoutError):
    """No answer to an ask arrived within its timeout."""
