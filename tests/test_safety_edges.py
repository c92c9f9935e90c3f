"""The safety edges of issue 11, against real servers on 127.0.0.1.

* Text frames are always valid UTF-8: whatever path writes bytes that are not (a handler's
  answer, ``emit``, ``Conn.write``, a broadcast, an ask), they go in a binary frame, which
  every neffos client takes as the same bytes; before, a client failed the connection
  (1007) and its ask never settled. A ``str`` a handler returns that cannot be UTF-8 (a
  lone surrogate, which ``json.loads`` makes) is a handler error, not a lost connection.
* Nothing a client sends makes the server answer or log more than about what it sent:
  names in error texts and log lines are cut to 64 characters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

import wsmvc
from wsmvc import Message, NSConn, Reply, Server

from .wire_support import (
    Serve,
    T,
    barrier,
    expect,
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
