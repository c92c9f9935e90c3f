"""The neffos wire protocol: messages, their encoding, tokens and reserved names.

Pure: no I/O, no asyncio. Everything here follows ``neffos-protocol.md`` §2 and §8.
A frame is ``token;namespace;room;event;isError;isNoOp;body``: seven fields, split at
most six times, ``;`` escaped only inside namespace, room and event.
"""

from __future__ import annotations

import itertools
import time
from typing import Final

import attrs

from .errors import ProtocolError

__all__ = [
    "ACK_OK",
    "ACK_REFUSED",
    "ACK_REQUEST",
    "ERR_BAD_NAMESPACE",
    "ERR_BAD_ROOM",
    "ERR_INVALID_PAYLOAD",
    "ERR_WRITE_CLOSED",
    "ON_ANY_EVENT",
    "ON_NAMESPACE_CONNECT",
    "ON_NAMESPACE_CONNECTED",
    "ON_NAMESPACE_DISCONNECT",
    "ON_NATIVE_MESSAGE",
    "ON_ROOM_JOIN",
    "ON_ROOM_JOINED",
    "ON_ROOM_LEAVE",
    "ON_ROOM_LEFT",
    "SYSTEM_EVENTS",
    "Message",
    "decode",
    "encode",
    "encode_answer",
    "encode_empty_reply",
    "encode_event",
    "exceeds",
    "is_reply_token",
    "is_text",
    "new_client_token",
    "new_token",
    "shorten",
]

# Reserved event names (spec 2.9).
ON_NAMESPACE_CONNECT: Final = "_OnNamespaceConnect"
ON_NAMESPACE_CONNECTED: Final = "_OnNamespaceConnected"
ON_NAMESPACE_DISCONNECT: Final = "_OnNamespaceDisconnect"
ON_ROOM_JOIN: Final = "_OnRoomJoin"
ON_ROOM_JOINED: Final = "_OnRoomJoined"
ON_ROOM_LEAVE: Final = "_OnRoomLeave"
ON_ROOM_LEFT: Final = "_OnRoomLeft"
ON_ANY_EVENT: Final = "_OnAnyEvent"
ON_NATIVE_MESSAGE: Final = "_OnNativeMessage"

SYSTEM_EVENTS: Final = frozenset(
    {
        ON_NAMESPACE_CONNECT,
        ON_NAMESPACE_CONNECTED,
        ON_NAMESPACE_DISCONNECT,
        ON_ROOM_JOIN,
        ON_ROOM_JOINED,
        ON_ROOM_LEAVE,
        ON_ROOM_LEFT,
    }
)

# Known error texts; Go clients compare errors by these exact strings (spec 16.28).
ERR_BAD_NAMESPACE: Final = "bad namespace"
ERR_BAD_ROOM: Final = "bad room"
ERR_WRITE_CLOSED: Final = "write closed"
ERR_INVALID_PAYLOAD: Final = "invalid payload"

# Handshake frames (spec 3).
ACK_REQUEST: Final = "M"
ACK_OK: Final = "A"
ACK_REFUSED: Final = "H"

_ESCAPED: Final = "@%!semicolon@%!"
_EXCLUDE_MARKER_PREFIX: Final = "neffos(0x"


@attrs.define(slots=True, eq=True, repr=True)
class Message:
    """One neffos message.

    ``body`` is raw bytes; ``err`` is the error text (empty: no error). ``binary`` says the
    message travels in a binary frame; ``native`` that it is a raw frame without envelope.
    ``forced`` and ``local`` are never on the wire: they tell a handler that the event was
    fired by the library itself (a close, a forced room leave) rather than by the peer.
    ``marker`` holds an exchange's excluded-sender marker, ``from_exchange`` that the token
    came marked by an exchange (spec 8.1); neither is ever written to a client.
    """

    namespace: str = ""
    room: str = ""
    event: str = ""
    body: bytes = b""
    err: str = ""
    token: str = ""
    binary: bool = False
    native: bool = False
    noop: bool = False
    forced: bool = False
    local: bool = False
    from_exchange: bool = False
    marker: str = ""

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode()


def _escape(name: str) -> str:
    return name.replace(";", _ESCAPED)


def _unescape(name: str) -> str:
    return name.replace(_ESCAPED, ";")


def _join(
    token: str, namespace: str, room: str, event: str, err: str, body: bytes, noop: bool
) -> bytes:
    head = f"{token};{namespace};{room};{event};"
    if head.count(";") != 4:  # a name contains ";" (the token never does)
        head = f"{token};{_escape(namespace)};{_escape(room)};{_escape(event)};"
    if err:
        # An error text may quote what a peer sent (a lone surrogate from JSON, a header):
        # replaced, so the answer stays a text frame and goes out.
        return (head + ("1;1;" if noop else "1;0;") + err).encode(errors="replace")
    return (head + ("0;1;" if noop else "0;0;")).encode() + body


def encode(msg: Message) -> bytes:
    """Serialise ``msg`` to the bytes of one frame (spec 2.2)."""
    if msg.native and not msg.token:
        return msg.body
    return _join(
        msg.marker or msg.token, msg.namespace, msg.room, msg.event, msg.err, msg.body, msg.noop
    )


def encode_event(msg: Message) -> bytes:
    """``msg`` as an event for other receivers (a broadcast): without its token or marker,
    which belong to the connection it came from."""
    if msg.native:
        return msg.body
    return _join("", msg.namespace, msg.room, msg.event, msg.err, msg.body, msg.noop)


def encode_answer(msg: Message, body: bytes = b"", err: str = "") -> bytes:
    """The answer to ``msg``: its token, namespace, room and event with a new body or error."""
    return _join(msg.token, msg.namespace, msg.room, msg.event, err, body, False)


def encode_empty_reply(token: str) -> bytes:
    """The bare acknowledgement ``<token>;;;;;;`` of a system request (spec 2.6)."""
    return token.encode() + b";;;;;;"


def decode(
    data: bytes | str, *, binary: bool = False, allow_native: bool = False, exchange: bool = False
) -> Message:
    """Parse one frame (spec 2.4).

    ``data`` is the payload of a text frame (``str``) or of a binary frame (``bytes``).
    With ``allow_native`` a frame that is not an envelope becomes a native message on
    namespace ``""``; otherwise it raises :class:`ProtocolError`, as does an empty frame.
    ``exchange``: the payload came from an exchange, whose token forms (an excluded-sender
    marker, a ``!`` mark, spec 2.4 step 9) are read; a peer's token is always opaque.
    """
    if not data:
        raise ProtocolError("empty frame")
    if isinstance(data, str):
        parts = data.split(";", 6)
        try:
            if len(parts) != 7:
                if allow_native:
                    return Message("", "", ON_NATIVE_MESSAGE, data.encode(), native=True)
                raise ProtocolError("not a neffos message: fewer than six separators")
            token, ns, room, event, is_err, noop, rest = parts
            if is_err == "1" and rest:
                err, payload = rest, b""
            else:
                err, payload = "", rest.encode()
        except UnicodeEncodeError:  # lone surrogates: never from a real text frame
            raise ProtocolError("text is not valid Unicode") from None
    else:
        raw = data.split(b";", 6)
        if len(raw) != 7:
            if allow_native:
                return Message("", "", ON_NATIVE_MESSAGE, bytes(data), native=True, binary=binary)
            raise ProtocolError("not a neffos message: fewer than six separators")
        try:
            token, ns, room, event, is_err, noop = (p.decode() for p in raw[:6])
        except UnicodeDecodeError:
            raise ProtocolError("header fields are not UTF-8") from None
        payload = raw[6]
        if is_err == "1" and payload:
            err, payload = payload.decode(errors="replace"), b""
        else:
            err = ""
    if "@" in ns:
        ns = _unescape(ns)
    if "@" in room:
        room = _unescape(room)
    if "@" in event:
        event = _unescape(event)
    if exchange and token and (token[1:2] == "!" or token[:1] == "n"):
        return _exchange_token(
            Message(ns, room, event, payload, err, "", binary, False, noop == "1"), token
        )
    return Message(ns, room, event, payload, err, token, binary, False, noop == "1")


def _exchange_token(msg: Message, token: str) -> Message:
    """Apply the token forms of an exchange (spec 2.4 step 9) to ``msg``."""
    if token.startswith(_EXCLUDE_MARKER_PREFIX):
        msg.marker = token
    elif len(token) > 2 and token[1] == "!":
        msg.token = token[0] + token[2:]
        msg.from_exchange = True
    else:
        msg.token = token
    return msg


def is_text(data: bytes) -> bool:
    """Whether ``data`` may go in a text frame: valid UTF-8 (spec 2.7; a browser fails the
    connection, 1007, on a text frame that is not). ASCII is checked first, in C, fast."""
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def exceeds(data: str | bytes, limit: int) -> bool:
    """Whether ``data`` is more than ``limit`` bytes (a ``str`` as UTF-8, encoded only when
    its length cannot tell)."""
    n = len(data)
    if n > limit:
        return True
    if isinstance(data, bytes) or n * 4 <= limit or data.isascii():
        return False
    return len(data.encode()) > limit


SHORT_NAME: Final = 64
"""Characters of a peer's name that an error text or a log line quotes (:func:`shorten`)."""


def shorten(name: str, limit: int = SHORT_NAME) -> str:
    """``name`` cut to ``limit`` characters with an ellipsis: for error texts and log lines
    that quote a name a peer chose, which may be as long as a whole message."""
    return name if len(name) <= limit else name[:limit] + "…"


def is_reply_token(token: str) -> bool:
    """Whether a token received by a server answers one of its own asks (spec 8.1).

    Client requests start with ``$``; everything else non-empty may be a reply.
    """
    return bool(token) and token[0] != "$"


# Digits only, never starting with "$", unique within the process: a counter that starts
# at the current time in nanoseconds, so tokens also look like Go's.
_token_counter = itertools.count(time.time_ns())


def new_token() -> str:
    """A fresh token for a server-initiated request (spec 8.3)."""
    return str(next(_token_counter))


def new_client_token() -> str:
    """A fresh token for a client-initiated request: ``$`` and digits, like the Go client."""
    return "$" + str(next(_token_counter))
