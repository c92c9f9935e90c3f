"""The real neffos.js client (npm neffos.js@0.1.34 on ws, in Node) against examples/echo.py.

Each test runs one scenario of ``js/scenario.mjs``, which reports what the JS code got back
(resolved values, rejection texts, handler calls), and asserts on that.
"""

from __future__ import annotations

import re

import pytest
from interop_support import EchoServer, NodeRunner

from wsmvc.dispatch import LEAVE_ALL_ERROR

pytestmark = pytest.mark.interop

TRICKY_BODY = "hello; world\nline2;;"
JS_TOKEN = r"\$\d+"  # neffos.js request tokens in Node: '$' and digits (spec 8.1)
SERVER_TOKEN = r"\d+"  # server request tokens: digits, never '$' (spec 8.3)
EMPTY_REPLY = JS_TOKEN + ";;;;;;"  # the bare acknowledgement of a request (spec 2.6)


def assert_frames(frames: list[str], *patterns: str) -> None:
    """The frames neffos.js received are exactly these, each matching its regex."""
    assert len(frames) == len(patterns), frames
    for frame, pattern in zip(frames, patterns, strict=True):
        assert re.fullmatch(pattern, frame, re.DOTALL), (frame, pattern)


def test_handshake_resolves_dial_with_a_server_id(js: NodeRunner, echo_server: EchoServer) -> None:
    dial = js.run("handshake", echo_server.url)["dial"]

    assert dial["acknowledged"] is True
    assert isinstance(dial["first"], str) and dial["first"]
    assert isinstance(dial["second"], str) and dial["second"]
    assert dial["first"] != dial["second"]
    assert dial["wasReconnected"] is False


def test_namespace_connect_accepted_and_refused(js: NodeRunner, echo_server: EchoServer) -> None:
    steps = js.run("connect", echo_server.url)

    default = steps["default"]
    assert default["outcome"] == {"resolved": {"NSConn": "default"}}
    assert default["connectedEvent"]["event"] == "_OnNamespaceConnected"
    assert default["connectedEvent"]["namespace"] == "default"
    assert default["connectedNamespaces"] == ["default"]
    assert_frames(default["frames"], EMPTY_REPLY)
    # Refused by the server's _OnNamespaceConnect handler: its text reaches connect().
    forbidden = steps["forbidden"]
    assert forbidden["outcome"] == {"rejected": "forbidden namespace"}
    assert forbidden["connected"] is False
    assert_frames(
        forbidden["frames"], JS_TOKEN + ";forbidden;;_OnNamespaceConnect;1;0;forbidden namespace"
    )
    # Declared by the client only: the server answers with the protocol's known error.
    unknown = steps["notonserver"]
    assert unknown["outcome"] == {"rejected": "bad namespace"}
    assert unknown["connected"] is False
    assert_frames(
        unknown["frames"], JS_TOKEN + ";notonserver;;_OnNamespaceConnect;1;0;bad namespace"
    )
    after = steps["after"]
    assert after["ask"] == "pong:still here"
    assert after["connectedEvents"] == ["default"]
    assert after["connectedNamespaces"] == ["default"]


def test_chat_echoes_bodies_byte_for_byte(js: NodeRunner, echo_server: EchoServer) -> None:
    bodies = [
        TRICKY_BODY,
        "",
        "unicode: héllo ✓ 😀",
        "the escape string @%!semicolon@%! is never unescaped in a body",
        "a;b;c;d;e;f;g;h",
        "crlf\r\nand\ttab",
    ]
    steps = js.run("chat", echo_server.url, *bodies)

    echoes = steps["chat"]["echoes"]
    assert echoes == [{"written": True, "body": b, "room": "", "err": None} for b in bodies]
    assert steps["burst"] == {"inOrder": True, "count": 500}


def test_rooms_join_emit_leave(js: NodeRunner, echo_server: EchoServer) -> None:
    names = ["room1", "semi;colon room"]  # ';' in a room name is escaped on the wire
    steps = js.run("rooms", echo_server.url, *names)

    for name in names:
        joined = steps[f"joined {name}"]
        assert joined["room"] == {"Room": name}
        assert joined["lookup"] == {"Room": name}
        assert joined["joinEvent"]["event"] == "_OnRoomJoin"
        assert joined["joinEvent"]["room"] == name
        assert joined["joinedEvent"]["event"] == "_OnRoomJoined"
        assert joined["joinedEvent"]["room"] == name
        assert joined["emitted"] is True
        assert joined["echo"] == {"body": f"to {name}", "room": name}
        assert_frames(joined["joinFrames"], EMPTY_REPLY)
        escaped = re.escape(name.replace(";", "@%!semicolon@%!"))
        assert_frames(joined["echoFrames"], f";default;{escaped};chat;0;0;to {re.escape(name)}")

        left = steps[f"left {name}"]
        assert left["result"] is None  # room.leave() resolves with no error
        assert left["leaveEvent"]["event"] == "_OnRoomLeave"
        assert left["leaveEvent"]["room"] == name
        assert left["leftEvent"]["event"] == "_OnRoomLeft"
        assert left["leftEvent"]["room"] == name
        assert left["lookup"] is None
        assert left["emitAfterLeave"] is False
        assert_frames(left["leaveFrames"], EMPTY_REPLY)
    assert steps["done"]["strayChats"] == []


def test_ask_answers_and_errors(js: NodeRunner, echo_server: EchoServer) -> None:
    steps = js.run("ask", echo_server.url, TRICKY_BODY)

    answer = steps["ask"]["resolved"]
    assert answer["body"] == "pong:" + TRICKY_BODY
    assert answer["event"] == "ask"
    assert answer["namespace"] == "default"
    assert answer["err"] is None
    assert steps["askerr"] == {"rejected": "ask failed"}
    assert steps["unknown"] == {"rejected": "unknown event 'no such event'"}
    assert steps["concurrent"]["bodies"] == [f"pong:n{i}" for i in range(25)]


def test_server_asks_the_client(js: NodeRunner, echo_server: EchoServer) -> None:
    steps = js.run("server_ask", echo_server.url, "what is 6*7?")

    result = steps["server_ask"]
    assert result["outcome"]["resolved"]["body"] == "client said:answer to what is 6*7?"
    question = result["question"]
    assert question["event"] == "question"
    assert question["namespace"] == "default"
    assert question["body"] == "what is 6*7?"
    # A server request token never starts with '$' (spec 8.3), so neffos.js handles it
    # as an event and its reply() answers the server.
    assert re.fullmatch(SERVER_TOKEN, question["token"])
    assert_frames(
        result["frames"],
        SERVER_TOKEN + r";default;;question;0;0;what is 6\*7\?",
        JS_TOKEN + r";default;;server_ask;0;0;client said:answer to what is 6\*7\?",
    )
    # The client's handler returned an Error: its text fails the server's ask, and the
    # handler that asked passes it on to the JS ask.
    assert steps["refused"] == {"rejected": "I will not answer refuse this"}
    # Asks inside handlers do not block the connection, and messages stay in order.
    concurrent = steps["concurrent"]
    assert concurrent["bodies"] == [f"client said:answer to q{i}" for i in range(4)] + [
        "pong:behind"
    ]
    assert concurrent["order"] == [f"server_ask q{i}" for i in range(4)] + ["ask"]


def test_server_joins_the_client_to_a_room(js: NodeRunner, echo_server: EchoServer) -> None:
    steps = js.run("server_join", echo_server.url, "lobby")

    joined = steps["server_join"]
    assert joined["outcome"]["resolved"]["body"] == "joined:lobby"
    assert joined["joinEvent"]["event"] == "_OnRoomJoin"
    assert joined["joinEvent"]["room"] == "lobby"
    assert joined["joinEvent"]["isLocal"] is False
    assert joined["joinedEvent"]["event"] == "_OnRoomJoined"
    assert joined["joinedEvent"]["room"] == "lobby"
    assert joined["lookup"] == {"Room": "lobby"}
    assert_frames(
        joined["frames"],
        SERVER_TOKEN + ";default;lobby;_OnRoomJoin;0;0;",
        JS_TOKEN + ";default;;server_join;0;0;joined:lobby",
    )
    assert steps["room_emit"] == {
        "emitted": True,
        "echo": {"body": "in the room the server chose", "room": "lobby"},
    }


def test_server_join_refused_by_the_client(js: NodeRunner, echo_server: EchoServer) -> None:
    """The JS ``_OnRoomJoin`` handler refuses a server-initiated join (spec 6.2): the
    server's join fails with the client's text, which the asking handler passes on."""
    result = js.run("server_join_refused", echo_server.url, "vip")["server_join_refused"]

    assert result["outcome"] == {"rejected": "no thanks, not vip"}
    assert result["joinEvent"]["room"] == "vip"
    assert result["joinEvent"]["isLocal"] is False
    assert result["joinedEvents"] == []
    assert result["lookup"] is None


def test_server_connects_the_client_to_a_namespace(js: NodeRunner, echo_server: EchoServer) -> None:
    result = js.run("server_connect", echo_server.url, "default2")["server_connect"]

    assert result["outcome"]["resolved"]["body"] == "connected:default2"
    assert result["connected"] is True
    assert [e["namespace"] for e in result["connectedEvents"]] == ["default2"]
    assert result["connectedNamespaces"] == ["default", "default2"]


@pytest.mark.parametrize(
    ("namespace", "error"),
    [("nowhere", "bad namespace"), ("forbidden", "forbidden namespace")],
)
def test_server_connect_refused_on_the_server_side(
    js: NodeRunner, echo_server: EchoServer, namespace: str, error: str
) -> None:
    """The server cannot connect a namespace it does not declare (``bad namespace``), nor
    one whose ``_OnNamespaceConnect`` refuses (spec 5.2 steps 1-2): the ask fails with that
    text, nothing reaches the client, and the client stays in ``default`` only."""
    result = js.run("server_connect", echo_server.url, namespace)["server_connect"]

    assert result["outcome"] == {"rejected": error}
    assert result["connected"] is False
    assert result["connectedEvents"] == []
    assert result["connectedNamespaces"] == ["default"]


def test_binary_message_comes_back_reversed(js: NodeRunner, echo_server: EchoServer) -> None:
    """Binary in, binary out (spec 2.8). neffos.js quirk, documented (spec 2.4): an error
    answer to a binary ask arrives binary too, and neffos.js makes its error out of the
    ArrayBuffer, so the JS code sees ``[object ArrayBuffer]`` instead of the text (the Go
    server does the same)."""
    sent = [0, 1, 2, 255, 59, 10, 97]  # NUL, a non-UTF-8 byte, ';' and LF in the body
    steps = js.run("binary", echo_server.url, *map(str, sent))

    result = steps["binary"]
    reversed_bytes = sent[::-1]
    assert result["written"] is True
    answer = result["answer"]
    assert answer["event"] == "binary"
    assert answer["body"] == {"ArrayBuffer": reversed_bytes}
    assert answer["binary"] is True
    # One binary frame on the wire: the envelope header, then the raw body (spec 2.8).
    assert result["frames"] == [{"ArrayBuffer": [*b";default;;binary;0;0;", *reversed_bytes]}]
    asked = steps["binary_ask"]["resolved"]
    assert asked["body"] == {"ArrayBuffer": reversed_bytes}
    assert asked["binary"] is True
    assert asked["token"].startswith("$")
    assert steps["binary_askerr"] == {"rejected": "[object ArrayBuffer]"}


@pytest.mark.parametrize("size", ["small", "large"])
def test_broadcast_reaches_the_other_clients_only(
    js: NodeRunner, echo_server: EchoServer, size: str
) -> None:
    """``broadcast`` reaches every other connection of the namespace, with and without
    permessage-deflate: framed once for plain receivers and, large, deflated once for the
    compressing ones, whose ``ws`` inflates it (small messages go plain to everyone)."""
    body = TRICKY_BODY if size == "small" else TRICKY_BODY * (8192 // len(TRICKY_BODY) + 1)
    result = js.run("broadcast", echo_server.url, body)["broadcast"]

    assert result["written"] is True
    assert result["extensions"] == ["permessage-deflate", "", "permessage-deflate"]
    for received in result["received"]:
        assert received["event"] == "chat"
        assert received["namespace"] == "default"
        assert received["room"] == ""
        assert received["body"] == body
        assert received["token"] == ""
    assert result["senderChats"] == []
    assert len(set(result["ids"])) == 3


def test_disconnect_and_close(js: NodeRunner, echo_server: EchoServer) -> None:
    steps = js.run("disconnect", echo_server.url)

    disconnect = steps["disconnect"]
    assert disconnect["outcome"] == {"resolved": None}  # nsConn.disconnect(): no error
    assert disconnect["roomLeftEvent"]["room"] == "before-disconnect"
    assert disconnect["roomLeftEvent"]["isForced"] is True
    event = disconnect["disconnectEvent"]
    assert event["event"] == "_OnNamespaceDisconnect"
    assert event["namespace"] == "default"
    assert event["isLocal"] is True
    assert event["isForced"] is False
    assert disconnect["connected"] is False
    assert disconnect["emitAfterDisconnect"] is False
    assert steps["reconnected_namespace"]["ask"] == "pong:again"

    close = steps["close"]
    assert close["closed"]["wasClean"] is True
    assert close["isClosed"] is True
    assert close["forcedDisconnectEvent"]["event"] == "_OnNamespaceDisconnect"
    assert close["forcedDisconnectEvent"]["isForced"] is True
    assert close["askAfterClose"] == {"rejected": "use of closed connection"}
    assert close["emitAfterClose"] is False


def test_leave_all_is_answered_with_an_error_and_rooms_stay_joined(
    js: NodeRunner, echo_server: EchoServer
) -> None:
    """neffos.js ``nsConn.leaveAll()`` is broken (spec 16.12): it sends one ``_OnRoomLeft``
    request per room instead of ``_OnRoomLeave``, swallows every answer and resolves with
    ``null`` at once. The Go server never answers those requests; wsmvc answers each one
    with an error (``LEAVE_ALL_ERROR``), so the client's pending asks end, and it leaves no
    room on either side: the rooms stay joined on the client and on the server (a room
    emit comes back in the room), and no leave handler fires. Apps should call
    ``room.leave()`` per room instead.
    """
    names = ["alpha", "beta"]
    result = js.run("leave_all", echo_server.url, *names)["leave_all"]

    assert result["outcome"] == {"resolved": None}
    assert result["joinedBefore"] == names
    assert result["joinedAfter"] == names
    assert result["leaveEvents"] == []
    assert_frames(
        result["framesAfterLeaveAll"],
        *(
            f"{JS_TOKEN};default;{name};_OnRoomLeft;1;0;{re.escape(LEAVE_ALL_ERROR)}"
            for name in names
        ),
        JS_TOKEN + ";default;;ask;0;0;pong:sync",
    )
    assert result["echoes"] == [
        {"emitted": True, "body": f"still in {name}", "room": name} for name in names
    ]


def test_reconnect_after_server_restart(js: NodeRunner, own_echo_server: EchoServer) -> None:
    """neffos.js ``reconnect`` option: the server stops (SIGTERM), a new one starts on the
    same port, neffos.js probes with HEAD, dials again and reconnects the namespace and
    its room by itself; the app meets the new NSConn in ``_OnNamespaceConnected``."""
    scenario = js.start("reconnect", own_echo_server.url, "r1")
    try:
        before = scenario.until("ready_for_restart")["ready_for_restart"]
        assert before["ask"] == "pong:before"
        own_echo_server.restart()
        steps = scenario.finish()
    finally:
        scenario.close()

    lost = steps["lost"]
    assert lost["disconnectEvent"]["event"] == "_OnNamespaceDisconnect"
    assert lost["disconnectEvent"]["isForced"] is True
    assert lost["isClosed"] is True
    back = steps["reconnected"]
    assert back["connectedEvent"]["namespace"] == "default"
    assert back["rejoinedEvent"]["room"] == "r1"
    assert back["sameConnObject"] is False
    assert back["newId"] and back["newId"] != before["id"]
    assert back["wasReconnected"] is True
    assert back["reconnectTries"] >= 1
    assert back["ask"] == "pong:after"
    assert back["emitted"] is True
    assert back["echo"] == {"body": "back in the room", "room": "r1"}


@pytest.mark.parametrize(("mode", "extensions"), [("on", "permessage-deflate"), ("off", "")])
def test_permessage_deflate(
    js: NodeRunner, echo_server: EchoServer, mode: str, extensions: str
) -> None:
    """neffos.js hands its dial options to ``new WebSocket(url, options)`` of ``ws``, so
    ``perMessageDeflate`` switches compression; large text and binary messages round-trip
    either way."""
    size = 200_000
    result = js.run("deflate", echo_server.url, mode, str(size))["deflate"]

    assert result["extensions"] == extensions
    assert result["askLength"] == len("pong:") + size
    assert result["askOk"] is True
    assert result["chatOk"] is True
    assert result["binaryOk"] is True
    assert result["small"] == "pong:small"


@pytest.mark.parametrize(("mode", "extensions"), [("on", "permessage-deflate"), ("off", "")])
def test_refusal_kick_and_close_keep_their_order(
    js: NodeRunner, echo_server: EchoServer, mode: str, extensions: str
) -> None:
    """Issue 8, cases 4 and 5, as neffos.js sees them, compressed or not: ``dial()``
    rejects with the server's reason (``H<reason>`` came before the close); an ask whose
    handler disconnected the namespace rejects with ``bad namespace`` at once (neffos.js
    has no ask timeout: it would hang); three messages sent before a close all arrive
    before it."""
    steps = js.run("lifecycle", echo_server.url, mode)

    assert steps["refused"]["outcome"] == {"rejected": "not today"}
    kick = steps["kick"]
    assert kick["outcome"] == {"rejected": "bad namespace"}
    assert kick["disconnectEvent"]["event"] == "_OnNamespaceDisconnect"
    assert kick["connected"] is False
    closing = steps["three_then_close"]
    assert closing["closed"] == {"code": 4002, "reason": "three then close"}
    assert closing["chatsBeforeClose"] == ["0", "1", "2"]
    assert closing["extensions"] == extensions
