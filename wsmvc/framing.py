"""permessage-deflate for what a server sends (RFC 7692), one message at a time.

No context is taken over from one message to the next (RFC 7692 §7.1.1.1,
``server_no_context_takeover``, which the server declares in its handshake answer, §7.1.1.1
allows it even when the client did not ask). So:

- a broadcast is compressed once, and the same frame bytes go to every receiver that
  negotiated deflate (:class:`Payload` keeps them);
- no connection keeps a zlib compressor between messages (each holds about 256 KiB);
- the frames of one connection can be written synchronously, in order, compressed or not:
  RSV1 says per frame whether it is (§6), so a message below the threshold, or one that
  deflate would make larger, goes out plain.

Incoming compressed frames are aiohttp's: its reader inflates them with the parameters it
negotiated.
"""

from __future__ import annotations

import re
import struct
import zlib

from .protocol import is_text

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_THRESHOLD",
    "Payload",
    "Stamp",
    "declare_no_context_takeover",
    "deflate",
    "frame",
]

DEFAULT_THRESHOLD = 512
"""Bytes: smaller messages are sent uncompressed (see docs/deploying.md for the measurement)."""
DEFAULT_LEVEL = 1
"""zlib level. Measured on 64 KiB of chat-like JSON: level 1 takes 385 µs and keeps 26 % of
the bytes, zlib's default 6 takes 1418 µs (3.7x) for 20 %; compression runs on the event
loop, so the cheaper level is the default."""

Stamp = tuple[str, int]
"""A cluster broadcast's identity: the id of the server that published it and its
sequence number there (:mod:`wsmvc.exchange.markers`)."""

OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80
_RSV1 = 0x40
_HEAD_SHORT = struct.Struct("!BB")
_HEAD_MEDIUM = struct.Struct("!BBH")
_HEAD_LONG = struct.Struct("!BBQ")
_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1: what a sync flush ends with, not sent
_MIN_WBITS = 9  # zlib refuses a raw deflate window of 8 bits


def frame(payload: bytes, opcode: int, *, compressed: bool = False) -> bytes:
    """One unmasked, unfragmented websocket frame (RFC 6455 §5.2), as a server sends it;
    ``compressed`` sets RSV1 (RFC 7692 §6: the payload is deflated)."""
    n = len(payload)
    first = _FIN | opcode | (_RSV1 if compressed else 0)
    if n < 126:
        return _HEAD_SHORT.pack(first, n) + payload
    if n < 65536:
        return _HEAD_MEDIUM.pack(first, 126, n) + payload
    return _HEAD_LONG.pack(first, 127, n) + payload


def deflate(payload: bytes, wbits: int = 15, level: int = DEFAULT_LEVEL) -> bytes:
    """``payload`` compressed on its own (RFC 7692 §7.2.1: raw DEFLATE, sync-flushed,
    without the final ``00 00 ff ff``).

    ``wbits`` (9-15) is the largest LZ77 window the peer accepts (its
    ``server_max_window_bits``); the window used is no larger than the payload needs, which
    makes zlib's set-up (its hash table and window) smaller for small messages and changes
    nothing else: no match can reach further back than the message's start.
    """
    bits = max(_MIN_WBITS, min(wbits, len(payload).bit_length()))
    # memLevel follows the window: a hash table larger than the window only costs set-up.
    compressor = zlib.compressobj(level, zlib.DEFLATED, -bits, max(1, min(9, bits - 6)))
    out = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(_TAIL) else out


class Payload:
    """One outgoing message's payload, framed on demand and at most once per form: plain,
    and deflated once per window size. A broadcast hands the same :class:`Payload` to every
    receiver, which so share the bytes.

    ``threshold`` (bytes): smaller payloads are never deflated; ``level``: zlib's 0-9.
    A payload that is not UTF-8 goes binary whatever ``binary`` says: a text frame must be
    (a browser fails the connection otherwise); ``checked``: the caller made sure.
    ``stamp``: a cluster broadcast's ``(origin server id, sequence)``, which a connection
    moving to another server is deduplicated by (:mod:`wsmvc.handover`); ``None`` else.
    """

    __slots__ = ("_deflated", "_plain", "binary", "data", "level", "stamp", "threshold")

    def __init__(
        self,
        data: bytes,
        binary: bool,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        level: int = DEFAULT_LEVEL,
        checked: bool = False,
        stamp: Stamp | None = None,
    ) -> None:
        self.data = data
        self.stamp = stamp
        self.binary = binary or not (checked or is_text(data))  # once for every receiver
        self.threshold = threshold
        self.level = level
        self._plain: bytes | None = None
        self._deflated: dict[int, bytes] | None = None

    def plain(self) -> bytes:
        """The uncompressed frame."""
        if self._plain is None:
            self._plain = frame(self.data, OP_BINARY if self.binary else OP_TEXT)
        return self._plain

    def for_peer(self, wbits: int) -> bytes:
        """The frame for a peer that negotiated deflate with ``server_max_window_bits`` =
        ``wbits`` (0: no deflate): deflated when the payload reaches the threshold and
        deflate makes it smaller, plain otherwise."""
        if not wbits or len(self.data) < self.threshold:
            return self.plain()
        if self._deflated is None:
            self._deflated = {}
        framed = self._deflated.get(wbits)
        if framed is None:
            packed = deflate(self.data, wbits, self.level)
            if len(packed) >= len(self.data):
                framed = self.plain()
            else:
                opcode = OP_BINARY if self.binary else OP_TEXT
                framed = frame(packed, opcode, compressed=True)
            self._deflated[wbits] = framed
        return framed


_NO_TAKEOVER = re.compile(r";\s*server_no_context_takeover\b", re.IGNORECASE)


def declare_no_context_takeover(extensions: str) -> str:
    """The ``Sec-WebSocket-Extensions`` answer with ``server_no_context_takeover`` added to
    its ``permessage-deflate`` (once)."""
    if not extensions.lower().startswith("permessage-deflate") or _NO_TAKEOVER.search(extensions):
        return extensions
    return f"{extensions}; server_no_context_takeover"
