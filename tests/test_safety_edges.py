"""The safety edges of issue 11, against real servers on 127.0.0.1.

* Text frames are always valid UTF-8: whatever path writes bytes that are not (a handler's
  answer, ``emit``, ``Conn.write``, a broadcast, an ask), they go in a binary frame, which
  every neffos client takes as the same bytes; before, a client failed the connection
  (1007) and its ask never settled. A ``str`` a handler returns that cannot be UTF-8 (a
  lone surrogate, which ``json.loads`` makes) is a handler error, not a lost connection.
* ``max_message_size`` is exact, with and without permessage-deflate, for text (counted
  in UTF-8 bytes) and binary messages, compressed, stored or plain on a deflate connection.
* Nothing a client sends makes the server answer or log more than about what it sent:
  names in error texts and log lines are cut to 64 characters.
* What a client's requests make the server keep is bounded: room names, rooms per
  namespace connection, namespace names and namespaces per connection (dynamic namespaces
  let a client choose them), the connect payload (``max_name_size``, ``max_rooms``,
  ``max_namespaces``, ``max_connect_payload``), each refused with an error answer that says
  why.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import WSMsgType

import wsmvc
from wsmvc import ClientConn, EventError, Message, NSConn, Reply, Server
from wsmvc.limits import Limits

from .wire_support import (
    RawWS,
    Serve,
    T,
    barrier,
    expect,
    handshake,
    ready,
    recv,
    show,
)

NOT_UTF8 = b"\xff\xfe not utf-8 \x80"
ELLIPSIS = "…"


async def settle(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, T)


# -------------------------------------------------------------------------------------------
# text frames are valid UTF-8
# -------------------------------------------------------------------------------------------


class Sends:
    """A server whose events write ``NOT_UTF8`` (or a text body) by every path there is."""

    def __init__(self) -> None:
        self.server = Server(
            {
                "default": {
                    "fast": self.fast,
                    "slow": self.slow,
                    "reply": self.reply,
                    "utf8": self.utf8,
                    "echo": self.echo,
                    "emit": self.emit,
                    "emit_text": self.emit_text,
                    "room_emit": self.room_emit,
                    "conn_write": self.conn_write,
                    "broadcast": self.broadcast,
                    "broadcast_rooms": self.broadcast_rooms,
                    "ask_me": self.ask_me,
                    "surrogate": self.surrogate,
                    "surrogate_reply": self.surrogate_reply,
                }
            }
        )
        self.answers: asyncio.Queue[Message] = asyncio.Queue()

    @staticmethod
    def fast(ns: NSConn, msg: Message) -> bytes:
        return NOT_UTF8  # the dispatcher's inline path (a sync handler returning bytes)

    @staticmethod
    async def slow(ns: NSConn, msg: Message) -> bytes:
        await asyncio.sleep(0)
        return NOT_UTF8

    @staticmethod
    def reply(ns: NSConn, msg: Message) -> Reply:
        return Reply(NOT_UTF8)

    @staticmethod
    def utf8(ns: NSConn, msg: Message) -> bytes:
        return "héllo wörld €".encode()

    @staticmethod
    def echo(ns: NSConn, msg: Message) -> bytes:
        return msg.body

    @staticmethod
    def emit(ns: NSConn, msg: Message) -> None:
        ns.emit("data", NOT_UTF8)

    @staticmethod
    def emit_text(ns: NSConn, msg: Message) -> None:
        ns.emit("data", "héllo")

    @staticmethod
    async def room_emit(ns: NSConn, msg: Message) -> None:
        room = await ns.join_room("r")
        room.emit("data", NOT_UTF8)

    @staticmethod
    def conn_write(ns: NSConn, msg: Message) -> None:
        ns.conn.write(Message(namespace="default", event="data", body=NOT_UTF8))

    @staticmethod
    async def broadcast(ns: NSConn, msg: Message) -> None:
        await ns.server.broadcast(Message(namespace="default", event="data", body=NOT_UTF8))

    @staticmethod
    async def broadcast_rooms(ns: NSConn, msg: Message) -> None:
        await ns.join_room("a")
        await ns.server.broadcast(
            Message(namespace="default", event="data", body=NOT_UTF8), rooms=["a", "b"]
        )

    async def ask_me(self, ns: NSConn, msg: Message) -> str:
        answer = await ns.ask("question", NOT_UTF8)
        self.answers.put_nowait(answer)
        return "asked"

    @staticmethod
    def surrogate(ns: NSConn, msg: Message) -> str:
        return "bad \udc80 text"  # what json.loads('"\\udc80"') gives

    @staticmethod
    def surrogate_reply(ns: NSConn, msg: Message) -> Reply:
        return Reply("bad \ud800")


@pytest.fixture
async def sends(serve: Serve) -> AsyncIterator[tuple[Sends, str]]:
    s = Sends()
    yield s, await serve(s.server)


def envelope(token: str, event: str, body: bytes, room: str = "") -> bytes:
    return f"{token};default;{room};{event};0;0;".encode() + body


@pytest.mark.parametrize("event", ["fast", "slow", "reply"])
async def test_an_answer_of_bytes_that_are_not_utf8_goes_binary(
    sends: tuple[Sends, str], session: aiohttp.ClientSession, event: str
) -> None:
    """Before: a text frame with those bytes; aiohttp's (and every browser's) reader fails
    the connection with 1007 and the ask never settles."""
    _, url = sends
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(f"$1;default;;{event};0;0;")
        msg = await recv(ws)
        assert msg.type is WSMsgType.BINARY, show(msg)
        assert msg.data == envelope("$1", event, NOT_UTF8)
        await barrier(ws)  # the connection is fine


@pytest.mark.parametrize(
    ("event", "body"),
    [("utf8", "héllo wörld €"), ("echo", "ünïcode ✓ 日本")],
)
async def test_bytes_that_are_utf8_still_go_as_text(
    sends: tuple[Sends, str], session: aiohttp.ClientSession, event: str, body: str
) -> None:
    _, url = sends
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(f"$1;default;;{event};0;0;{body}")
        answer = "héllo wörld €" if event == "utf8" else body
        await expect(ws, f"$1;default;;{event};0;0;{answer}")


async def test_an_echo_of_a_binary_message_stays_binary(
    sends: tuple[Sends, str], session: aiohttp.ClientSession
) -> None:
    _, url = sends
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_bytes(envelope("$1", "echo", b"ok"))
        msg = await recv(ws)
        assert msg.type is WSMsgType.BINARY and msg.data == envelope("$1", "echo", b"ok")


@pytest.mark.parametrize(
    "event", ["emit", "room_emit", "conn_write", "broadcast", "broadcast_rooms"]
)
async def test_emits_writes_and_broadcasts_of_such_bytes_go_binary(
    sends: tuple[Sends, str], session: aiohttp.ClientSession, event: str
) -> None:
    _, url = sends
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(f";default;;{event};0;0;")
        room = {"room_emit": "r", "broadcast_rooms": "a"}.get(event, "")
        while True:
            msg = await recv(ws)
            if msg.type is WSMsgType.TEXT and "_OnRoomJoin;" in msg.data:
                await ws.send_str(msg.data.split(";", 1)[0] + ";;;;;;")  # agree to the join
                continue
            break
        assert msg.type is WSMsgType.BINARY, show(msg)
        assert msg.data == envelope("", "data", NOT_UTF8, room)
        await barrier(ws)


async def test_an_emit_of_text_stays_text(
    sends: tuple[Sends, str], session: aiohttp.ClientSession
) -> None:
    _, url = sends
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(";default;;emit_text;0;0;")
        await expect(ws, ";default;;data;0;0;héllo")


async def test_the_python_clients_ask_settles_with_the_bytes(sends: tuple[Sends, str]) -> None:
    _, url = sends
    async with await wsmvc.dial(url, {"default": {}}) as client:
        ns = await client.connect("default")
        for event in ("fast", "slow", "reply"):
            answer = await ns.ask(event, timeout=T)
            assert answer.body == NOT_UTF8 and answer.binary


async def test_a_server_ask_with_such_bytes_goes_binary_and_is_answered(
    sends: tuple[Sends, str],
) -> None:
    """``NSConn.ask`` (and so ``Server.ask``) with bytes that are not UTF-8: the client gets
    the question in a binary frame and its answer settles the server's ask."""
    s, url = sends
    questions: list[Message] = []

    def question(ns: NSConn, msg: Message) -> bytes:
        questions.append(msg)
        return b"\x80 an answer that is not utf-8 either"

    async with await wsmvc.dial(url, {"default": {"question": question}}) as client:
        ns = await client.connect("default")
        assert (await ns.ask("ask_me", timeout=T)).text == "asked"
        answer = await settle(s.answers.get())
    assert questions[0].body == NOT_UTF8 and questions[0].binary
    assert answer.body == b"\x80 an answer that is not utf-8 either" and answer.binary


async def test_server_ask_of_such_bytes_reaches_the_client_in_binary(serve: Serve) -> None:
    server = Server({"default": {}})
    url = await serve(server)
    got: list[Message] = []

    def question(ns: NSConn, msg: Message) -> bytes:
        got.append(msg)
        return msg.body

    async with await wsmvc.dial(url, {"default": {"question": question}}) as client:
        await client.connect("default")
        answer = await server.ask(
            Message(namespace="default", event="question", body=NOT_UTF8), to=client.id
        )
    assert got[0].binary and answer.body == NOT_UTF8


@pytest.mark.parametrize("event", ["surrogate", "surrogate_reply"])
async def test_a_str_that_cannot_be_utf8_is_a_handler_error_not_a_lost_connection(
    sends: tuple[Sends, str],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    event: str,
) -> None:
    """Before: ``UnicodeEncodeError`` escaped the dispatcher and closed the connection
    with 1011; now the author sees it logged and the client gets an error answer."""
    _, url = sends
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str(f"$1;default;;{event};0;0;")
        await expect(ws, f"$1;default;;{event};1;0;internal server error")
        await barrier(ws)
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and isinstance(record.exc_info[1], UnicodeEncodeError)


async def test_a_native_answer_of_such_bytes_goes_binary(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    url = await serve(Server({"": {"_OnNativeMessage": lambda ns, msg: NOT_UTF8}}))
    async with session.ws_connect(url) as ws:
        await ws.send_str("hello")
        msg = await recv(ws)
        assert msg.type is WSMsgType.BINARY and msg.data == NOT_UTF8, show(msg)


async def raw_upgrade(url: str, header: bytes) -> RawWS:
    """A raw client whose upgrade request carries ``header`` as raw bytes (a header value
    that is not UTF-8: aiohttp hands such bytes on as lone surrogates)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    raw = RawWS(sock)
    await raw.loop.sock_connect(sock, (parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    ).encode()
    await raw.loop.sock_sendall(sock, request + header + b"\r\n\r\n")
    while b"\r\n\r\n" not in raw.buf:
        await raw._fill()
    head, _, rest = bytes(raw.buf).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"101", head
    raw.buf = bytearray(rest)
    return raw


async def test_an_id_from_a_header_that_is_not_utf8_still_acknowledges(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """``id_generator`` taking the id from a header (as neffos' examples do): before, bytes
    that are not UTF-8 there made ``A<id>`` fail to encode, and the connection died with
    1011 and a traceback. The ``A`` frame is valid text now (those characters replaced by ``?``)."""
    server = Server(
        {"default": {"ping": lambda ns, msg: "pong"}},
        id_generator=lambda request: request.headers.get("X-Username", "anon"),
    )
    url = await serve(server)
    raw = await raw_upgrade(url, b"X-Username: \xff\xfeann")
    try:
        await raw.send("M")
        assert await settle(raw.recv_text()) == "A??ann"
        await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await settle(raw.recv_text()) == "$c;;;;;;"
        await raw.send("$1;default;;ping;0;0;")
        assert await settle(raw.recv_text()) == "$1;default;;ping;0;0;pong"
    finally:
        raw.abort()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_refusal_quoting_such_a_header_still_goes_out(serve: Serve) -> None:
    def on_connect(conn: wsmvc.Conn) -> None:
        assert conn.request is not None
        raise wsmvc.Reject(f"who is {conn.request.headers['X-Username']}?")

    url = await serve(Server({"default": {}}, on_connect=on_connect))
    raw = await raw_upgrade(url, b"X-Username: \xffann")
    try:
        await raw.send("M")
        assert await settle(raw.recv_text()) == "Hwho is ?ann?"
        assert await settle(raw.close_code()) == 1008
    finally:
        raw.abort()


async def test_an_error_text_quoting_a_lone_surrogate_still_goes_out(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A handler refusing with what the client sent (``json.loads`` turns ``\\udc80``
    into a lone surrogate): before, the answer failed to encode and the connection died."""

    def greet(ns: NSConn, msg: Message) -> str:
        name = json.loads(msg.body)["name"]
        raise EventError(f"no such user: {name}")

    url = await serve(Server({"default": {"greet": greet}}))
    async with session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str('$1;default;;greet;0;0;{"name": "ann\\udc80"}')
        await expect(ws, "$1;default;;greet;1;0;no such user: ann?")
        await barrier(ws)


# -------------------------------------------------------------------------------------------
# max_message_size, exact
# -------------------------------------------------------------------------------------------

MAX = 1000
HEAD = "$1;default;;ping;0;0;"


def sized(kind: str, size: int) -> bytes:
    """A ``ping`` request of exactly ``size`` bytes: ASCII text, text of 2- and 3-byte
    characters (so the count of bytes is not the count of characters), random bytes."""
    room = size - len(HEAD)
    if kind == "ascii":
        body = b"x" * room
    elif kind == "multibyte":
        chars = "é€" * (room // 5)
        body = chars.encode()
        body += b"x" * (room - len(body))
    else:
        body = os.urandom(room)
    data = HEAD.encode() + body
    assert len(data) == size
    return data


def client_frame(payload: bytes, opcode: int, *, compressed: bool) -> bytes:
    """A masked (key 0) client frame, RSV1 set when ``compressed``."""
    first = 0x80 | (0x40 if compressed else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def deflated(data: bytes, level: int) -> bytes:
    """``data`` as permessage-deflate sends it; level 0: stored, a little *larger*."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# how the client sends: no deflate; deflate negotiated but this frame plain; deflated;
# deflate's stored blocks (what a compressor does with data it cannot shrink)
WAYS = ["plain", "deflate-uncompressed", "deflated", "deflate-stored"]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("kind", ["ascii", "multibyte", "binary"])
@pytest.mark.parametrize("over", [0, 1], ids=["exactly", "one-more"])
async def test_max_message_size_is_exact_however_the_message_comes(
    serve: Serve, way: str, kind: str, over: int
) -> None:
    """Exactly ``max_message_size`` bytes are accepted, one more closes with 1009.
    Before: with deflate, 1001 bytes passed a limit of 1000, and a message of 1000 bytes
    that deflate could not shrink was refused."""
    url = await serve(Server({"default": {"ping": lambda ns, msg: "pong"}}, max_message_size=MAX))
    raw = await RawWS.open(url, deflate=way != "plain")
    assert ("sec-websocket-extensions" in raw.headers) is (way != "plain")
    try:
        await raw.send("M")
        assert (await raw.recv_text()).startswith("A")
        await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await raw.recv_text() == "$c;;;;;;"
        data = sized(kind, MAX + over)
        opcode = 0x2 if kind == "binary" else 0x1
        if way in ("plain", "deflate-uncompressed"):
            await raw.send_raw(client_frame(data, opcode, compressed=False))
        else:
            packed = deflated(data, 0 if way == "deflate-stored" else 1)
            if way == "deflate-stored":
                assert len(packed) > len(data)
            await raw.send_raw(client_frame(packed, opcode, compressed=True))
        if over:
            assert await settle(raw.close_code()) == 1009
        else:
            op, answer = await settle(raw.recv())
            assert answer == (HEAD + "pong").encode()
            assert op == opcode
    finally:
        raw.abort()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "deflate"])
@pytest.mark.parametrize("over", [0, 1], ids=["exactly", "one-more"])
async def test_max_message_size_through_aiohttps_own_client(
    serve: Serve, session: aiohttp.ClientSession, compress: bool, over: int
) -> None:
    """The same with a real client that compresses every message (as browsers do)."""
    url = await serve(Server({"default": {"ping": lambda ns, msg: "pong"}}, max_message_size=MAX))
    async with session.ws_connect(url, compress=15 if compress else 0) as ws:
        assert bool(ws.compress) is compress
        await ready(ws)
        await ws.send_bytes(sized("binary", MAX + over))
        msg = await recv(ws)
        if over:
            assert msg.type is WSMsgType.CLOSE and msg.data == 1009, show(msg)
        else:
            assert msg.type is WSMsgType.BINARY and msg.data == (HEAD + "pong").encode()


async def test_the_default_max_message_size_is_exact_with_deflate(serve: Serve) -> None:
    """1 MiB of random bytes, stored by deflate (so its frame is larger than 1 MiB)."""
    url = await serve(Server({"default": {"ping": lambda ns, msg: "pong"}}))
    for over in (0, 1):
        raw = await RawWS.open(url, deflate=True)
        try:
            await raw.send("M")
            assert (await raw.recv_text()).startswith("A")
            await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
            assert await raw.recv_text() == "$c;;;;;;"
            data = HEAD.encode() + os.urandom((1 << 20) + over - len(HEAD))
            await raw.send_raw(client_frame(deflated(data, 0), 0x2, compressed=True))
            if over:
                assert await settle(raw.close_code()) == 1009
            else:
                assert (await settle(raw.recv()))[1] == (HEAD + "pong").encode()
        finally:
            raw.abort()


# -------------------------------------------------------------------------------------------
# no amplification: names in error texts and log lines
# -------------------------------------------------------------------------------------------


def short(name: str) -> str:
    return name if len(name) <= 64 else name[:64] + ELLIPSIS


@pytest.mark.parametrize(
    "name",
    [
        "e" * 64,
        "e" * 65,
        "x" * ((1 << 20) - 200),
        "ü" * 300_000,  # 600 KB of UTF-8
        'quote\' and "double" ' * 5000,
    ],
    ids=["64", "65", "1MB", "multibyte", "quotes"],
)
async def test_an_unknown_events_error_answer_quotes_its_name_cut_short(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """Before: a 1 MB event name got a 2 MB answer (the name in the envelope, and again in
    the error text). The envelope still names the event (it is the same message), the text
    quotes at most 64 characters of it, and the log line too."""
    caplog.set_level(logging.DEBUG, logger="wsmvc")
    url = await serve(Server({"default": {}}))
    async with session.ws_connect(url, max_msg_size=4 << 20) as ws:
        await ready(ws)
        await ws.send_str(f"$1;default;;{name};0;0;")
        answer = await recv(ws)
        assert answer.type is WSMsgType.TEXT, show(answer)
        assert answer.data == f"$1;default;;{name};1;0;unknown event {short(name)!r}"
        assert len(answer.data.encode()) < len(name.encode()) + 200
    assert all(len(r.getMessage()) < 500 for r in caplog.records), max(
        len(r.getMessage()) for r in caplog.records
    )


async def test_a_failing_handler_for_a_long_event_logs_it_cut_short(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """``_OnAnyEvent`` takes any name: its failure is logged with the name cut short, and
    with ``debug_errors`` the text of an unsendable return value too."""

    def any_event(ns: NSConn, msg: Message) -> object:
        if msg.event.startswith("fail"):
            raise RuntimeError("boom")
        return object()  # cannot be sent

    url = await serve(Server({"default": {"_OnAnyEvent": any_event}}, debug_errors=True))
    name = "fail" + "y" * 500_000
    other = "send" + "z" * 500_000
    async with session.ws_connect(url, max_msg_size=4 << 20) as ws:
        await ready(ws)
        await ws.send_str(f"$1;default;;{name};0;0;")
        await expect(ws, f"$1;default;;{name};1;0;RuntimeError: boom")
        await ws.send_str(f"$2;default;;{other};0;0;")
        answer = await recv(ws)
        assert answer.type is WSMsgType.TEXT
        text = answer.data.split(";", 6)[6]
        assert text.startswith(f"TypeError: handler for {short(other)!r} returned a object")
        assert len(text) < 300
    assert all(len(r.getMessage()) < 500 for r in caplog.records)


# -------------------------------------------------------------------------------------------
# bounded rooms and connect payloads
# -------------------------------------------------------------------------------------------


def join_answer(token: str, room: str, text: str | None) -> str:
    return f"{token};;;;;;" if text is None else f"{token};default;{room};_OnRoomJoin;1;0;{text}"


@pytest.mark.parametrize(
    ("room", "refused"),
    [
        ("r" * 256, False),
        ("r" * 257, True),
        ("é" * 128, False),  # 256 bytes
        ("é" * 129, True),  # 258 bytes in 129 characters
        ("€" * 85 + "x", False),  # 256 bytes
        ("€" * 86, True),  # 258 bytes
        ("r" * ((1 << 20) - 100), True),
    ],
    ids=["256", "257", "2-byte-256", "2-byte-258", "3-byte-256", "3-byte-258", "1MB"],
)
async def test_a_room_name_longer_than_max_name_size_bytes_is_refused(
    serve: Serve, session: aiohttp.ClientSession, room: str, refused: bool
) -> None:
    server = Server({"default": {}})
    url = await serve(server)
    async with session.ws_connect(url, max_msg_size=4 << 20) as ws:
        await ready(ws)
        await ws.send_str(f"$j;default;{room};_OnRoomJoin;0;0;")
        size = len(room.encode())
        text = f"room name too long: {size} bytes, at most 256" if refused else None
        await expect(ws, join_answer("$j", room, text))
        assert server.rooms("default") == ([] if refused else [room])
        await barrier(ws)


async def test_the_rooms_one_connection_may_join_are_bounded_per_namespace(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    joined: list[str] = []
    server = Server(
        {
            "default": {"_OnRoomJoined": lambda ns, msg: joined.append(msg.room)},
            "other": {},
        },
        max_rooms=3,
    )
    url = await serve(server)
    refusal = "too many rooms: at most 3 per namespace"
    async with session.ws_connect(url) as ws:
        await ready(ws, "a", "b", "c")
        await ws.send_str("$d;default;d;_OnRoomJoin;0;0;")
        await expect(ws, join_answer("$d", "d", refusal))
        await ws.send_str("$c;default;c;_OnRoomJoin;0;0;")  # joined already: fine
        await expect(ws, "$c;;;;;;")
        await ws.send_str("$l;default;a;_OnRoomLeave;0;0;")
        await expect(ws, "$l;;;;;;")
        await ws.send_str("$d2;default;d;_OnRoomJoin;0;0;")  # room again after a leave
        await expect(ws, "$d2;;;;;;")
        # Another namespace of the same connection has its own count.
        await ws.send_str("$o;other;;_OnNamespaceConnect;0;0;")
        await expect(ws, "$o;;;;;;")
        for room in "wxy":
            await ws.send_str(f"$o{room};other;{room};_OnRoomJoin;0;0;")
            await expect(ws, f"$o{room};;;;;;")
        await ws.send_str("$oz;other;z;_OnRoomJoin;0;0;")
        await expect(ws, "$oz;other;z;_OnRoomJoin;1;0;" + refusal)
    assert joined == ["a", "b", "c", "d"]


async def test_the_servers_own_joins_are_not_bounded(serve: Serve) -> None:
    """The bound is on what a client asks for; the application's joins are its own."""
    joined = asyncio.Event()

    async def on_connected(ns: NSConn, msg: Message) -> None:
        for room in ("a", "b", "c"):
            await ns.join_room(room)
        joined.set()

    server = Server({"default": {"_OnNamespaceConnected": on_connected}}, max_rooms=2)
    url = await serve(server)
    async with await wsmvc.dial(url, {"default": {}}) as client:
        ns = await client.connect("default")
        await settle(joined.wait())
        assert sorted(ns.rooms) == ["a", "b", "c"]
        with pytest.raises(EventError, match=r"^too many rooms: at most 2 per namespace$"):
            await ns.join_room("d", timeout=T)
        assert sorted(ns.rooms) == ["a", "b", "c"]


async def test_fifty_rooms_of_a_megabyte_pin_nothing(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """The issue's case: 50 joins with names of 1 MB each made one connection pin 51 MiB.
    Each is refused now, and the server keeps none of the names."""
    server = Server({"default": {}}, max_message_size=2 << 20)
    url = await serve(server)
    async with session.ws_connect(url, max_msg_size=4 << 20) as ws:
        await ready(ws)
        for i in range(50):
            room = f"{i:02d}" + "r" * (1 << 20)
            await ws.send_str(f"$j{i};default;{room};_OnRoomJoin;0;0;")
            answer = await recv(ws)
            text = f"room name too long: {len(room)} bytes, at most 256"
            assert answer.data.endswith(f"_OnRoomJoin;1;0;{text}"), answer.data[-100:]
        (conn,) = server.connections
        assert conn.namespace("default") is not None
        assert dict(conn.namespace("default").rooms) == {}  # type: ignore[union-attr]
        assert server.rooms("default") == []


@pytest.mark.parametrize(
    ("name", "refused"),
    [("room-" + "n" * 251, False), ("room-" + "n" * 252, True), ("room-" + "ü" * 126, True)],
    ids=["256", "257", "2-byte-257"],
)
async def test_a_dynamic_namespace_name_longer_than_max_name_size_is_refused(
    serve: Serve, session: aiohttp.ClientSession, name: str, refused: bool
) -> None:
    """A pattern (``room-{id}``) lets the client choose the name, and its length."""
    server = Server({"room-{id}": {}})
    url = await serve(server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str(f"$c;{name};;_OnNamespaceConnect;0;0;")
        size = len(name.encode())
        text = f"namespace name too long: {size} bytes, at most 256"
        await expect(ws, f"$c;{name};;_OnNamespaceConnect;1;0;{text}" if refused else "$c;;;;;;")
        members = [ns.namespace for ns in server.namespace_members(name)]
        assert members == ([] if refused else [name])


async def test_the_namespaces_one_connection_may_connect_are_bounded(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    connected: list[str] = []
    server = Server(
        {
            "room-{id}": {"_OnNamespaceConnected": lambda ns, msg: connected.append(ns.namespace)},
            "default": {},
        },
        max_namespaces=3,
    )
    url = await serve(server)
    refusal = "too many namespaces: at most 3 per connection"
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        for name in ("room-1", "room-2", "default"):
            await ws.send_str(f"$c-{name};{name};;_OnNamespaceConnect;0;0;")
            await expect(ws, f"$c-{name};;;;;;")
        await ws.send_str("$c4;room-4;;_OnNamespaceConnect;0;0;")
        await expect(ws, f"$c4;room-4;;_OnNamespaceConnect;1;0;{refusal}")
        await ws.send_str("$c1;room-1;;_OnNamespaceConnect;0;0;")  # connected already: fine
        await expect(ws, "$c1;;;;;;")
        await ws.send_str("$d;room-2;;_OnNamespaceDisconnect;0;0;")
        await expect(ws, "$d;;;;;;")
        await ws.send_str("$c5;room-5;;_OnNamespaceConnect;0;0;")  # room for one again
        await expect(ws, "$c5;;;;;;")
    assert connected == ["room-1", "room-2", "room-5"]


async def test_the_servers_own_connects_are_not_bounded(serve: Serve) -> None:
    done = asyncio.Event()

    async def on_connect(conn: wsmvc.Conn) -> None:
        for name in ("a", "b", "c"):
            await conn.connect(name)
        done.set()

    server = Server({"a": {}, "b": {}, "c": {}, "d": {}}, on_connect=on_connect, max_namespaces=2)
    url = await serve(server)
    async with await wsmvc.dial(url, {"a": {}, "b": {}, "c": {}, "d": {}}) as client:
        await settle(done.wait())
        assert sorted(client.namespaces) == ["a", "b", "c"]
        with pytest.raises(EventError, match=r"^too many namespaces: at most 2 per connection$"):
            await client.connect("d", timeout=T)


async def test_unbounded_when_told(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = Server({"default": {}}, max_rooms=None, max_name_size=None)
    url = await serve(server)
    room = "r" * 10_000
    async with session.ws_connect(url) as ws:
        await ready(ws, room, *map(str, range(1100)))
        assert len(server.rooms("default")) == 1101


@pytest.mark.parametrize(
    "options",
    [
        {"max_rooms": 0},
        {"max_rooms": -1},
        {"max_name_size": "256"},
        {"max_namespaces": 0},
        {"max_connect_payload": 1.5},
        {"max_rooms": True},
    ],
)
def test_the_bounds_are_checked_when_the_server_is_made(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be a positive int or None"):
        Server({"default": {}}, **options)


def test_the_bounds_default_to_what_the_docs_say() -> None:
    assert Server({"default": {}}).limits == Limits(1000, 256, 8192, 100)


# -- the connect payload -------------------------------------------------------------------


class Payloads:
    def __init__(self, **options: Any) -> None:
        self.seen: list[bytes] = []
        self.server = Server(
            {
                "default": {
                    "_OnNamespaceConnect": self.on_connect,
                    "whoami": lambda ns, msg: ns.connect_payload,
                },
            },
            **options,
        )

    def on_connect(self, ns: NSConn, msg: Message) -> None:
        self.seen.append(ns.connect_payload)
        if ns.connect_payload == b"refuse me":
            raise EventError("refused")


async def test_the_connect_payload_is_readable_after_connect(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    p = Payloads()
    url = await serve(p.server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str('$c;default;;_OnNamespaceConnect;0;0;{"token": "t0k;en"}')
        await expect(ws, "$c;;;;;;")
        await ws.send_str("$w;default;;whoami;0;0;")
        await expect(ws, '$w;default;;whoami;0;0;{"token": "t0k;en"}')
        # A duplicate connect changes nothing.
        await ws.send_str("$c2;default;;_OnNamespaceConnect;0;0;other")
        await expect(ws, "$c2;;;;;;")
        await ws.send_str("$w2;default;;whoami;0;0;")
        await expect(ws, '$w2;default;;whoami;0;0;{"token": "t0k;en"}')
        # Disconnected and connected again, with another payload (or none).
        await ws.send_str("$d;default;;_OnNamespaceDisconnect;0;0;")
        await expect(ws, "$d;;;;;;")
        await ws.send_str("$c3;default;;_OnNamespaceConnect;0;0;")
        await expect(ws, "$c3;;;;;;")
        await ws.send_str("$w3;default;;whoami;0;0;")
        await expect(ws, "$w3;default;;whoami;0;0;")
    assert p.seen == [b'{"token": "t0k;en"}', b""]


async def test_a_refused_connect_keeps_nothing(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    p = Payloads()
    url = await serve(p.server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;refuse me")
        await expect(ws, "$c;default;;_OnNamespaceConnect;1;0;refused")
        await ws.send_str("$c2;default;;_OnNamespaceConnect;0;0;second")
        await expect(ws, "$c2;;;;;;")
        await ws.send_str("$w;default;;whoami;0;0;")
        await expect(ws, "$w;default;;whoami;0;0;second")


@pytest.mark.parametrize(("size", "refused"), [(8192, False), (8193, True), (1 << 20, True)])
async def test_a_connect_payload_past_max_connect_payload_is_refused(
    serve: Serve, session: aiohttp.ClientSession, size: int, refused: bool
) -> None:
    p = Payloads(max_message_size=2 << 20)
    url = await serve(p.server)
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;" + "p" * size)
        if refused:
            text = f"connect payload too large: {size} bytes, at most 8192"
            await expect(ws, f"$c;default;;_OnNamespaceConnect;1;0;{text}")
            assert p.seen == []  # the hook never ran
        else:
            await expect(ws, "$c;;;;;;")
            assert p.seen == [b"p" * size]
        await barrier(ws)


async def test_the_python_client_sends_a_connect_payload(serve: Serve) -> None:
    p = Payloads()
    url = await serve(p.server)
    async with await wsmvc.dial(url, {"default": {}}) as client:
        ns = await client.connect("default", payload="token:abc")
        assert (await ns.ask("whoami", timeout=T)).text == "token:abc"
        assert ns.connect_payload == b""  # this side connected it: nothing from the peer
    assert p.seen == [b"token:abc"]


async def test_a_server_connect_with_a_payload_reaches_the_client(serve: Serve) -> None:
    connected: asyncio.Queue[NSConn] = asyncio.Queue()

    async def on_connect(conn: wsmvc.Conn) -> None:
        await conn.connect("default", payload=b"\x00welcome")

    server = Server({"default": {}}, on_connect=on_connect)
    url = await serve(server)
    client: ClientConn = await wsmvc.dial(
        url, {"default": {"_OnNamespaceConnected": lambda ns, msg: connected.put_nowait(ns)}}
    )
    async with client:
        ns = await settle(connected.get())
        assert ns.connect_payload == b"\x00welcome"


async def test_a_controller_reads_the_connect_payload(serve: Serve) -> None:
    @wsmvc.controller(namespace="default")
    class Chat:
        conn: NSConn

        @wsmvc.event
        def on_whoami(self, msg: Message) -> bytes:
            return b"you are " + self.conn.connect_payload

    url = await serve(Server(controllers=[Chat]))
    async with await wsmvc.dial(url, {"default": {}}) as client:
        ns = await client.connect("default", payload="ann")
        assert (await ns.ask("OnWhoami", timeout=T)).text == "you are ann"
