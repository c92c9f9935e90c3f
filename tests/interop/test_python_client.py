"""The Python client (``wsmvc.dial``) against the same examples/echo.py subprocess.

The same scenarios as test_neffos_js.py, so both clients are proven against one server.
Pushed messages are awaited through queues with a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping

import pytest
from interop_support import EchoServer

import wsmvc
from wsmvc import ConnectionClosed, EventError, Message, NSConn, Reply
from wsmvc.handlers import Handler
from wsmvc.protocol import SYSTEM_EVENTS

pytestmark = pytest.mark.interop

WAIT = 5.0
TRICKY_BODY = "hello; world\nline2;;"


class Inbox:
    """Records what the client's handlers receive, per event, to be awaited in order."""

    def __init__(self) -> None:
        self._queues: collections.defaultdict[str, asyncio.Queue[Message]] = (
            collections.defaultdict(asyncio.Queue)
        )

    def handler(self, event: str) -> Handler:
        def record(ns: NSConn, msg: Message) -> None:
            self._queues[event].put_nowait(msg)

        return record

    def events(self, *events: str, **extra: Handler) -> Mapping[str, Handler]:
        """Recording handlers for the system events and ``events``, plus ``extra``."""
        handlers = {event: self.handler(event) for event in (*SYSTEM_EVENTS, *events)}
        return {**handlers, **extra}

    async def next(self, event: str, timeout: float = WAIT) -> Message:
        return await asyncio.wait_for(self._queues[event].get(), timeout)

    def pending(self, event: str) -> list[Message]:
        """The messages of ``event`` received and not yet taken (without waiting)."""
        queue = self._queues[event]
        taken = [queue.get_nowait() for _ in range(queue.qsize())]
        for msg in taken:
            queue.put_nowait(msg)
        return taken


async def test_handshake_gives_each_connection_an_id(echo_server: EchoServer) -> None:
    async with (
        await wsmvc.dial(echo_server.url, {"default": {}}) as first,
        await wsmvc.dial(echo_server.url, {"default": {}}) as second,
    ):
        assert first.id
        assert second.id
        assert first.id != second.id
        assert first.was_reconnected is False


async def test_namespace_connect_accepted_and_refused(echo_server: EchoServer) -> None:
    inbox = Inbox()
    namespaces = {"default": inbox.events(), "forbidden": {}, "notonserver": {}}
    async with await wsmvc.dial(echo_server.url, namespaces) as conn:
        ns = await conn.connect("default")
        assert ns.namespace == "default"
        connected = await inbox.next("_OnNamespaceConnected")
        assert connected.namespace == "default"
        assert connected.local is True

        # Refused by the server's _OnNamespaceConnect handler: its text reaches the client.
        with pytest.raises(EventError) as refused:
            await conn.connect("forbidden", timeout=WAIT)
        assert refused.value.text == "forbidden namespace"
        # Declared by the client only: the server answers with the protocol's known error.
        with pytest.raises(EventError) as unknown:
            await conn.connect("notonserver", timeout=WAIT)
        assert unknown.value.text == "bad namespace"

        assert list(conn.namespaces) == ["default"]
        assert conn.namespace("forbidden") is None
        reply = await ns.ask("ask", "still here", timeout=WAIT)
        assert reply.text == "pong:still here"


async def test_chat_echoes_bodies_byte_for_byte(echo_server: EchoServer) -> None:
    bodies = [
        TRICKY_BODY.encode(),
        b"",
        "unicode: héllo ✓ 😀".encode(),
        b"the escape string @%!semicolon@%! is never unescaped in a body",
        b"a;b;c;d;e;f;g;h",
        b"crlf\r\nand\ttab",
    ]
    inbox = Inbox()
    async with await wsmvc.dial(echo_server.url, {"default": inbox.events("chat")}) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        for body in bodies:
            assert ns.emit("chat", body) is True
            echo = await inbox.next("chat")
            assert (echo.body, echo.room, echo.err, echo.binary) == (body, "", "", False)
        # A burst: every echo arrives, in order.
        burst = [f"burst {i};".encode() for i in range(500)]
        for body in burst:
            ns.emit("chat", body)
        assert [(await inbox.next("chat")).body for _ in burst] == burst


async def test_rooms_join_emit_leave(echo_server: EchoServer) -> None:
    inbox = Inbox()
    async with await wsmvc.dial(echo_server.url, {"default": inbox.events("chat")}) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        for name in ["room1", "semi;colon room"]:  # ';' in a room name is escaped on the wire
            room = await ns.join_room(name, timeout=WAIT)
            assert room.name == name
            assert ns.room(name) == room  # rooms are values: (namespace connection, name)
            assert (await inbox.next("_OnRoomJoin")).room == name
            assert (await inbox.next("_OnRoomJoined")).room == name

            assert room.emit("chat", f"to {name}") is True
            echo = await inbox.next("chat")
            assert (echo.text, echo.room) == (f"to {name}", name)

            await room.leave(timeout=WAIT)
            assert (await inbox.next("_OnRoomLeave")).room == name
            assert (await inbox.next("_OnRoomLeft")).room == name
            assert ns.room(name) is None
            assert room.emit("chat", "too late") is False
        # Nothing was echoed for the emits after the leaves: an ask is answered after them.
        await ns.ask("ask", "sync", timeout=WAIT)
        assert inbox.pending("chat") == []


async def test_ask_answers_and_errors(echo_server: EchoServer) -> None:
    async with await wsmvc.dial(echo_server.url, {"default": {}}) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        reply = await ns.ask("ask", TRICKY_BODY, timeout=WAIT)
        assert reply.text == "pong:" + TRICKY_BODY
        assert (reply.namespace, reply.event, reply.err) == ("default", "ask", "")

        with pytest.raises(EventError) as failed:
            await ns.ask("askerr", TRICKY_BODY, timeout=WAIT)
        assert failed.value.text == "ask failed"
        # No handler on the server: wsmvc answers the ask with an error.
        with pytest.raises(EventError) as unknown:
            await ns.ask("no such event", TRICKY_BODY, timeout=WAIT)
        assert unknown.value.text == "unknown event 'no such event'"

        # Many asks in flight at once: each answer reaches the ask with its token.
        replies = await asyncio.gather(*(ns.ask("ask", f"n{i}", timeout=WAIT) for i in range(25)))
        assert [r.text for r in replies] == [f"pong:n{i}" for i in range(25)]


async def test_server_asks_the_client(echo_server: EchoServer) -> None:
    questions: list[Message] = []

    def question(ns: NSConn, msg: Message) -> Reply:
        questions.append(msg)
        if msg.text.startswith("refuse"):
            raise EventError(f"I will not answer {msg.text}")
        return Reply(b"answer to " + msg.body)

    async with await wsmvc.dial(echo_server.url, {"default": {"question": question}}) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        reply = await ns.ask("server_ask", "what is 6*7?", timeout=WAIT)
        assert reply.text == "client said:answer to what is 6*7?"
        asked = questions[0]
        assert (asked.namespace, asked.event, asked.text) == ("default", "question", "what is 6*7?")
        assert asked.token
        assert not asked.token.startswith("$")  # a server request token (spec 8.3)

        # The client's handler refuses: its text fails the server's ask and the asking handler.
        with pytest.raises(EventError) as refused:
            await ns.ask("server_ask", "refuse this", timeout=WAIT)
        assert refused.value.text == "I will not answer refuse this"

        # Several at once, and a plain ask behind them: handled in order, none blocked.
        order: list[str] = []

        async def ask(event: str, body: str) -> str:
            reply = await ns.ask(event, body, timeout=WAIT)
            order.append(body)
            return reply.text

        bodies = [f"q{i}" for i in range(4)]
        answers = await asyncio.gather(
            *(ask("server_ask", body) for body in bodies), ask("ask", "behind")
        )
        assert answers == [f"client said:answer to {b}" for b in bodies] + ["pong:behind"]
        assert order == [*bodies, "behind"]


async def test_server_joins_the_client_to_a_room(echo_server: EchoServer) -> None:
    inbox = Inbox()
    async with await wsmvc.dial(echo_server.url, {"default": inbox.events("chat")}) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        reply = await ns.ask("server_join", "lobby", timeout=WAIT)
        assert reply.text == "joined:lobby"

        join = await inbox.next("_OnRoomJoin")
        assert (join.room, join.local) == ("lobby", False)
        assert (await inbox.next("_OnRoomJoined")).room == "lobby"
        room = ns.room("lobby")
        assert room is not None
        assert room.emit("chat", "in the room the server chose") is True
        echo = await inbox.next("chat")
        assert (echo.text, echo.room) == ("in the room the server chose", "lobby")


async def test_server_join_refused_by_the_client(echo_server: EchoServer) -> None:
    """The client's ``_OnRoomJoin`` refuses a server-initiated join (spec 6.2): the
    server's join fails with the client's text, which the asking handler passes on."""
    joins: list[Message] = []

    def on_join(ns: NSConn, msg: Message) -> None:
        joins.append(msg)
        raise EventError(f"no thanks, not {msg.room}")

    inbox = Inbox()
    events = inbox.events(_OnRoomJoin=on_join)
    async with await wsmvc.dial(echo_server.url, {"default": events}) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        with pytest.raises(EventError) as refused:
            await ns.ask("server_join", "vip", timeout=WAIT)
        assert refused.value.text == "no thanks, not vip"
        assert [(m.room, m.local) for m in joins] == [("vip", False)]
        assert inbox.pending("_OnRoomJoined") == []
        assert ns.room("vip") is None


async def test_server_connects_the_client_to_a_namespace(echo_server: EchoServer) -> None:
    inbox = Inbox()
    namespaces = {"default": {}, "default2": inbox.events()}
    async with await wsmvc.dial(echo_server.url, namespaces) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        reply = await ns.ask("server_connect", "default2", timeout=WAIT)
        assert reply.text == "connected:default2"
        assert (await inbox.next("_OnNamespaceConnected")).namespace == "default2"
        assert list(conn.namespaces) == ["default", "default2"]


@pytest.mark.parametrize(
    ("namespace", "error"),
    [("nowhere", "bad namespace"), ("forbidden", "forbidden namespace")],
)
async def test_server_connect_refused_on_the_server_side(
    echo_server: EchoServer, namespace: str, error: str
) -> None:
    """A server-initiated connect to a namespace the server does not declare, or whose
    ``_OnNamespaceConnect`` refuses, fails on the server (spec 5.2): the ask fails with
    that text and nothing reaches the client."""
    inbox = Inbox()
    namespaces = {"default": {}, namespace: inbox.events()}
    async with await wsmvc.dial(echo_server.url, namespaces) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        with pytest.raises(EventError) as refused:
            await ns.ask("server_connect", namespace, timeout=WAIT)
        assert refused.value.text == error
        assert list(conn.namespaces) == ["default"]
        assert inbox.pending("_OnNamespaceConnect") == []
        assert inbox.pending("_OnNamespaceConnected") == []


async def test_binary_message_comes_back_reversed(echo_server: EchoServer) -> None:
    sent = bytes([0, 1, 2, 255, 59, 10, 97])  # NUL, a non-UTF-8 byte, ';' and LF
    inbox = Inbox()
    async with await wsmvc.dial(echo_server.url, {"default": inbox.events("binary")}) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        assert ns.emit_binary("binary", sent) is True
        answer = await inbox.next("binary")
        assert (answer.body, answer.binary, answer.room) == (sent[::-1], True, "")

        # A binary ask is answered in a binary frame; so is an error (spec 2.8), whose
        # text the Python client reads as text (unlike neffos.js).
        def binary_ask(event: str) -> Message:
            return Message(namespace="default", event=event, body=sent, binary=True)

        reply = await conn.ask(binary_ask("binary"), timeout=WAIT)
        assert (reply.body, reply.binary) == (sent[::-1], True)
        with pytest.raises(EventError) as failed:
            await conn.ask(binary_ask("askerr"), timeout=WAIT)
        assert failed.value.text == "ask failed"


async def test_broadcast_reaches_the_other_clients_only(echo_server: EchoServer) -> None:
    """Every other connection of the namespace, with and without permessage-deflate."""
    sender_inbox, plain_inbox, deflate_inbox = Inbox(), Inbox(), Inbox()
    url = echo_server.url
    async with (
        await wsmvc.dial(url, {"default": sender_inbox.events("chat")}, compress=True) as sender,
        await wsmvc.dial(url, {"default": plain_inbox.events("chat")}) as plain,
        await wsmvc.dial(url, {"default": deflate_inbox.events("chat")}, compress=True) as deflate,
    ):
        sender_ns = await sender.connect("default", timeout=WAIT)
        await plain.connect("default", timeout=WAIT)
        await deflate.connect("default", timeout=WAIT)
        assert sender_ns.emit("broadcast", TRICKY_BODY) is True
        for inbox in (plain_inbox, deflate_inbox):
            received = await inbox.next("chat")
            assert (received.namespace, received.room, received.text) == (
                "default",
                "",
                TRICKY_BODY,
            )
        # The sender is answered in order: after this ask, a copy to it would have arrived.
        await sender_ns.ask("ask", "sync", timeout=WAIT)
        assert sender_inbox.pending("chat") == []


async def test_disconnect_and_close(echo_server: EchoServer) -> None:
    inbox = Inbox()
    conn = await wsmvc.dial(echo_server.url, {"default": inbox.events("chat")})
    try:
        ns = await conn.connect("default", timeout=WAIT)
        await ns.join_room("before-disconnect", timeout=WAIT)
        await ns.disconnect(timeout=WAIT)
        left = await inbox.next("_OnRoomLeft")
        assert (left.room, left.forced) == ("before-disconnect", True)
        disconnected = await inbox.next("_OnNamespaceDisconnect")
        assert (disconnected.namespace, disconnected.local) == ("default", True)
        assert disconnected.forced is False
        assert conn.namespace("default") is None
        assert ns.emit("chat", "nobody listens") is False

        # The namespace can be connected again on the same connection.
        ns = await conn.connect("default", timeout=WAIT)
        assert (await ns.ask("ask", "again", timeout=WAIT)).text == "pong:again"
    finally:
        await conn.close()

    assert conn.closed
    forced = await inbox.next("_OnNamespaceDisconnect")
    assert (forced.forced, forced.local) == (True, True)
    with pytest.raises(ConnectionClosed):
        await ns.ask("ask", "closed", timeout=WAIT)
    assert ns.emit("chat", "closed") is False


async def test_leave_all_leaves_every_room(echo_server: EchoServer) -> None:
    """The Python client's ``leave_all`` sends a real leave per room (unlike neffos.js,
    see test_neffos_js.py): the rooms are left on both sides."""
    names = ["alpha", "beta"]
    inbox = Inbox()
    async with await wsmvc.dial(echo_server.url, {"default": inbox.events("chat")}) as conn:
        ns = await conn.connect("default", timeout=WAIT)
        rooms = [await ns.join_room(name, timeout=WAIT) for name in names]
        await ns.leave_all(timeout=WAIT)
        assert ns.rooms == {}
        assert [(await inbox.next("_OnRoomLeft")).room for _ in names] == names
        assert [room.emit("chat", "gone") for room in rooms] == [False, False]
        # The server left too: a join from the server side asks the client again.
        assert (await ns.ask("server_join", "alpha", timeout=WAIT)).text == "joined:alpha"
        server_joins = [m.room for m in inbox.pending("_OnRoomJoin") if not m.local]
        assert server_joins == ["alpha"]


async def test_server_restart_closes_the_client_and_a_new_dial_works(
    own_echo_server: EchoServer,
) -> None:
    """The Python client does not reconnect by itself (neffos.js does, with ``reconnect``):
    on a server restart the connection closes with 1001 and fires the forced disconnect
    events, pending asks fail, and a new dial to the restarted server works."""
    inbox = Inbox()
    conn = await wsmvc.dial(own_echo_server.url, {"default": inbox.events("chat")})
    try:
        ns = await conn.connect("default", timeout=WAIT)
        await ns.join_room("r1", timeout=WAIT)
        assert (await ns.ask("ask", "before", timeout=WAIT)).text == "pong:before"
        first_id = conn.id

        # The blocking restart runs in a thread so the client keeps reading meanwhile.
        await asyncio.to_thread(own_echo_server.restart)
        await asyncio.wait_for(conn.wait_closed(), WAIT)
        assert conn.closed
        assert conn.close_code == 1001  # the server's shutdown: going away
        left = await inbox.next("_OnRoomLeft")
        assert (left.room, left.forced) == ("r1", True)
        disconnected = await inbox.next("_OnNamespaceDisconnect")
        assert (disconnected.forced, disconnected.local) == (True, True)
        with pytest.raises(ConnectionClosed):
            await ns.ask("ask", "after", timeout=WAIT)
    finally:
        await conn.close()

    async with await wsmvc.dial(own_echo_server.url, {"default": {}}) as again:
        assert again.id and again.id != first_id
        ns = await again.connect("default", timeout=WAIT)
        assert (await ns.ask("ask", "after", timeout=WAIT)).text == "pong:after"


@pytest.mark.parametrize("compress", [True, False])
async def test_permessage_deflate(echo_server: EchoServer, compress: bool) -> None:
    size = 200_000
    text = ("neffos; over deflate\n" * (size // 21 + 1))[:size]
    data = bytes((i * 7) % 256 for i in range(size))
    inbox = Inbox()
    async with await wsmvc.dial(
        echo_server.url, {"default": inbox.events("chat", "binary")}, compress=compress
    ) as conn:
        # What the websocket negotiated: the server's window bits, 0 without the extension.
        negotiated = conn._ws.compress
        assert bool(negotiated) is compress
        ns = await conn.connect("default", timeout=WAIT)
        assert (await ns.ask("ask", text, timeout=WAIT)).text == "pong:" + text
        ns.emit("chat", text)
        assert (await inbox.next("chat")).text == text
        ns.emit_binary("binary", data)
        assert (await inbox.next("binary")).body == data[::-1]
        assert (await ns.ask("ask", "small", timeout=WAIT)).text == "pong:small"
