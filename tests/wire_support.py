"""Helpers for tests that speak the wire protocol by hand (a raw client of the server).

``recv``/``expect``/``barrier`` read what a raw aiohttp client websocket gets, exactly;
``RawWS`` is a websocket client on a plain socket for clients that must misbehave below
the websocket layer (stop reading, vanish without a close frame). "The server sent
nothing" is checked with a *barrier*: a connect request to an undeclared namespace, which
the server always answers (``bad namespace``) in arrival order, so anything the server
would have sent for the frames before it arrives before the barrier's answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast
from urllib.parse import urlsplit

from aiohttp import ClientWebSocketResponse, WSMessage, WSMsgType

from wsmvc import Conn, EventError, Message, NSConn, Server
from wsmvc.protocol import SYSTEM_EVENTS

Serve = Callable[..., Awaitable[str]]
WS: TypeAlias = "ClientWebSocketResponse[bool]"

T = 5.0  # seconds to wait for a frame that must come
PROBE_NS = "__barrier__"  # never declared by any server below


async def recv(ws: WS) -> WSMessage:
    # the session decodes text frames (aiohttp's default), so this is a plain WSMessage
    return cast(WSMessage, await ws.receive(timeout=T))


def show(msg: WSMessage) -> str:
    """A frame, for an assertion message."""
    return f"{msg.type.name} {msg.data!r}"


async def recv_text(ws: WS) -> str:
    msg = await recv(ws)
    assert msg.type is WSMsgType.TEXT, f"expected a text frame, got {show(msg)}"
    assert isinstance(msg.data, str)
    return msg.data


async def recv_binary(ws: WS) -> bytes:
    msg = await recv(ws)
    assert msg.type is WSMsgType.BINARY, f"expected a binary frame, got {show(msg)}"
    assert isinstance(msg.data, bytes)
    return msg.data


async def expect(ws: WS, *frames: str) -> None:
    """The next frames are exactly these text frames, in this order."""
    for frame in frames:
        got = await recv_text(ws)
        assert got == frame, f"expected {frame!r}, got {got!r}"


async def expect_close(ws: WS) -> WSMessage:
    """The next thing is the end of the connection (a close frame or the socket closing)."""
    msg = await recv(ws)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), show(msg)
    return msg


_probe_tokens = itertools.count()


async def barrier(ws: WS) -> None:
    """Assert that the server sent nothing for the frames sent before this call."""
    token = f"$barrier{next(_probe_tokens)}"
    await ws.send_str(f"{token};{PROBE_NS};;_OnNamespaceConnect;0;0;")
    msg = await recv(ws)
    assert msg.type is WSMsgType.TEXT and msg.data == (
        f"{token};{PROBE_NS};;_OnNamespaceConnect;1;0;bad namespace"
    ), f"expected nothing before the barrier's answer, got {show(msg)}"


async def handshake(ws: WS) -> str:
    await ws.send_str("M")
    ack = await recv_text(ws)
    assert ack.startswith("A"), ack
    return ack[1:]


async def connect_ns(ws: WS, ns: str = "default", token: str = "$connect") -> None:
    await ws.send_str(f"{token};{ns};;_OnNamespaceConnect;0;0;")
    await expect(ws, f"{token};;;;;;")


async def join(ws: WS, room: str, ns: str = "default", token: str = "$join") -> None:
    await ws.send_str(f"{token};{ns};{room};_OnRoomJoin;0;0;")
    await expect(ws, f"{token};;;;;;")


async def ready(ws: WS, *rooms: str) -> str:
    """Handshake, connect ``default`` and join ``rooms``; returns the connection id."""
    conn_id = await handshake(ws)
    await connect_ns(ws)
    for room in rooms:
        await join(ws, room, token=f"$join-{room}")
    return conn_id


Call = tuple[str, str, bool, bool]  # event, room, forced, local


class Recorder:
    """A handler that records ``(event, room, forced, local)`` of every call."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: list[Message] = []

    def __call__(self, nsconn: NSConn, msg: Message) -> None:
        self.calls.append((msg.event, msg.room, msg.forced, msg.local))
        self.messages.append(msg)

    def events(self) -> list[str]:
        return [c[0] for c in self.calls]

    def system(self) -> dict[str, Any]:
        return dict.fromkeys(SYSTEM_EVENTS, self)


def ping(nsconn: NSConn, msg: Message) -> str:
    return "pong"


def fail(nsconn: NSConn, msg: Message) -> None:
    raise EventError("boom")


def make_server(rec: Recorder | None = None, **options: Any) -> Server:
    events: dict[str, Any] = {"ping": ping, "fail": fail}
    if rec is not None:
        events |= rec.system()
    return Server({"default": events, "other": {"ping": ping}}, **options)


def conn_by_id(server: Server, conn_id: str) -> Conn:
    (conn,) = [c for c in server.connections if c.id == conn_id]
    return conn


def http_url(url: str) -> str:
    return "http://" + url.removeprefix("ws://")


class RawWS:
    """A websocket client on a plain socket: reads only when asked to, can vanish abruptly.

    The kernel buffers only what ``SO_RCVBUF`` allows; nothing reads the socket behind the
    test's back, so a client that does not call :meth:`recv` is an honestly stalled reader.
    """

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.loop = asyncio.get_running_loop()
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self.headers: dict[str, str] = {}  # the server's handshake answer, lower-case names
        self.compressed = False  # whether the last frame read was (RSV1)

    @classmethod
    async def open(
        cls, url: str, *, rcvbuf: int | None = None, deflate: bool | str = False
    ) -> RawWS:
        """Open and upgrade; ``deflate``: offer permessage-deflate (a string: that offer)."""
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        self = cls(sock)
        await self.loop.sock_connect(sock, (parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if deflate:
            offer = deflate if isinstance(deflate, str) else "permessage-deflate"
            lines.append(f"Sec-WebSocket-Extensions: {offer}")
        await self.loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        status, *header_lines = head.decode("latin-1").split("\r\n")
        assert status.split(" ")[1] == "101", status
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        accept = base64.b64encode(hashlib.sha1((key + cls.GUID).encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == accept
        self.headers = headers
        return self

    async def _fill(self) -> None:
        data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), T)
        if not data:
            raise EOFError("server closed the socket")
        self.buf += data

    async def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    @staticmethod
    def frame(payload: bytes, opcode: int = 0x2) -> bytes:
        """A whole client frame, masked with the key 0 (so built without touching the
        payload: fast for big ones; servers accept any key)."""
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        return head + b"\0\0\0\0" + payload

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (frames made by :meth:`frame`)."""
        await self.loop.sock_sendall(self.sock, data)

    async def send(self, payload: str | bytes, opcode: int | None = None) -> None:
        if isinstance(payload, str):
            data, op = payload.encode(), 0x1 if opcode is None else opcode
        else:
            data, op = payload, 0x2 if opcode is None else opcode
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x80 | op, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | op, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | op, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        await self.loop.sock_sendall(self.sock, head + mask + masked)

    async def recv(self) -> tuple[int, bytes]:
        """The next frame as ``(opcode, payload)``, inflated if it was compressed (RSV1)."""
        b0, b1 = await self._take(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self._take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self._take(8))
        assert not b1 & 0x80, "a server must not mask"
        assert b0 & 0x80, "the server does not fragment"
        payload = await self._take(n)
        self.compressed = bool(b0 & 0x40)
        if b0 & 0x40:  # permessage-deflate (RFC 7692 §7.2.2)
            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
        return b0 & 0x0F, payload

    async def recv_text(self) -> str:
        op, data = await self.recv()
        assert op == 0x1, (op, data)
        return data.decode()

    async def close_code(self) -> int:
        """Read (and drop) frames until the close frame; its status code."""
        while True:
            op, data = await self.recv()
            if op == 0x8:
                return int(struct.unpack("!H", data[:2])[0])

    def abort(self) -> None:
        """Vanish: close the TCP connection without a websocket close frame."""
        self.sock.close()
