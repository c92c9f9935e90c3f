"""The pure neffos envelope codec (wsmvc.protocol) against neffos-protocol.md §2, §8, §9, §15, §16.

Every §15 vector that is about encoding or decoding is its own test case (ids name the vector
number). Decoding is checked by comparing the whole ``Message`` (every field, local-only ones
included), and where the vector is something a sender writes, ``encode`` (or the reply helpers)
must give back exactly the same bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from wsmvc import Message, ProtocolError
from wsmvc.protocol import (
    ON_NATIVE_MESSAGE,
    decode,
    encode,
    encode_answer,
    encode_empty_reply,
    is_reply_token,
    new_client_token,
    new_token,
)

ESC = "@%!semicolon@%!"  # spec 2.3: the escape of ";" inside namespace, room and event

# -------------------------------------------------------------------------------------------
# §15 vectors
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vector:
    """One §15 frame: its payload, frame type and the message it decodes to.

    ``encodes``: ``encode(expected)`` must give ``frame`` back byte for byte (the vector is
    something a sender writes with the envelope encoder). Empty replies and frames whose
    fields cannot be produced by ``encode`` (e.g. an isError field other than 0/1) set it
    to ``False`` and are checked otherwise.
    """

    id: str
    frame: bytes
    expected: Message
    binary: bool = False
    encodes: bool = True
    allow_native: bool = False
    exchange: bool = False  # a payload from an exchange (its token forms are read)


def _m(**kw: object) -> Message:
    return Message(**kw)  # type: ignore[arg-type]


VECTORS: list[Vector] = [
    Vector(
        "v04-connect-request",
        b"$1795678450690943437;default;;_OnNamespaceConnect;0;0;",
        _m(token="$1795678450690943437", namespace="default", event="_OnNamespaceConnect"),
    ),
    Vector(
        "v05-empty-reply-decodes-to-token-only",
        b"$1795678450690943437;;;;;;",
        _m(token="$1795678450690943437"),
        encodes=False,
    ),
    Vector(
        "v06-bad-namespace-error",
        b"$1795678456144428478;onlyclient;;_OnNamespaceConnect;1;0;bad namespace",
        _m(
            token="$1795678456144428478",
            namespace="onlyclient",
            event="_OnNamespaceConnect",
            err="bad namespace",
        ),
    ),
    Vector(
        "v07-connect-denied-by-handler",
        b"$1795678456264933370;deny;;_OnNamespaceConnect;1;0;denied by server",
        _m(
            token="$1795678456264933370",
            namespace="deny",
            event="_OnNamespaceConnect",
            err="denied by server",
        ),
    ),
    Vector(
        "v08-server-initiated-connect",
        b"1795678458730662800;default;;_OnNamespaceConnect;0;0;",
        _m(token="1795678458730662800", namespace="default", event="_OnNamespaceConnect"),
    ),
    Vector(
        "v09-client-accepts-server-connect",
        b"1795678458730662800;;;;;;",
        _m(token="1795678458730662800"),
        encodes=False,
    ),
    Vector(
        "v10-disconnect-request",
        b"$1795678452678654349;default;;_OnNamespaceDisconnect;0;0;",
        _m(token="$1795678452678654349", namespace="default", event="_OnNamespaceDisconnect"),
    ),
    Vector(
        "v11-server-initiated-disconnect",
        b"1795678459333182122;default;;_OnNamespaceDisconnect;0;0;",
        _m(token="1795678459333182122", namespace="default", event="_OnNamespaceDisconnect"),
    ),
    Vector(
        "v12-join-request",
        b"$1795678452076166785;default;room1;_OnRoomJoin;0;0;",
        _m(
            token="$1795678452076166785",
            namespace="default",
            room="room1",
            event="_OnRoomJoin",
        ),
    ),
    Vector(
        "v13-join-rejected",
        b"$1795678456682161251;default;vip;_OnRoomJoin;1;0;vip only",
        _m(
            token="$1795678456682161251",
            namespace="default",
            room="vip",
            event="_OnRoomJoin",
            err="vip only",
        ),
    ),
    Vector(
        "v14-leave-request",
        b"$1795678452437519006;default;room1;_OnRoomLeave;0;0;",
        _m(
            token="$1795678452437519006",
            namespace="default",
            room="room1",
            event="_OnRoomLeave",
        ),
    ),
    Vector(
        "v15-leave-refused",
        b"$1795678456923235771;default;sticky;_OnRoomLeave;1;0;cannot leave",
        _m(
            token="$1795678456923235771",
            namespace="default",
            room="sticky",
            event="_OnRoomLeave",
            err="cannot leave",
        ),
    ),
    Vector(
        "v16-server-initiated-join",
        b"1795678458851100351;default;room9;_OnRoomJoin;0;0;",
        _m(token="1795678458851100351", namespace="default", room="room9", event="_OnRoomJoin"),
    ),
    Vector(
        "v17-room-emit",
        b";default;room1;chat;0;0;to room",
        _m(namespace="default", room="room1", event="chat", body=b"to room"),
    ),
    Vector(
        "v18-plain-emit",
        b";default;;chat;0;0;text",
        _m(namespace="default", event="chat", body=b"text"),
    ),
    Vector(
        "v19-body-keeps-separators",
        b";default;;chat;0;0;hello; world\nline2;;",
        _m(namespace="default", event="chat", body=b"hello; world\nline2;;"),
    ),
    Vector(
        "v20-empty-body",
        b";default;;chat;0;0;",
        _m(namespace="default", event="chat"),
    ),
    Vector(
        "v21-error-message",
        b";default;;chat;1;0;error message",
        _m(namespace="default", event="chat", err="error message"),
    ),
    Vector(
        "v22-error-text-keeps-separators-empty-namespace",
        b";;;chat;1;0;an error message with many ; delimeters; like that;",
        _m(event="chat", err="an error message with many ; delimeters; like that;"),
    ),
    Vector(
        "v23-body-keeps-separators",
        b";default;;chat;0;0;a body with many ; delimeters; like that;",
        _m(namespace="default", event="chat", body=b"a body with many ; delimeters; like that;"),
    ),
    Vector(
        "v24-escaped-namespace-and-room",
        b";contains@%!semicolon@%!semi;@%!semicolon@%!this@%!semicolon@%!for sure"
        b"@%!semicolon@%!;thatdoesnot;0;0;",
        _m(namespace="contains;semi", room=";this;for sure;", event="thatdoesnot"),
    ),
    Vector(
        "v25-noop-flag-on-ordinary-event",
        b"1;default;;chat;0;1;body",
        _m(token="1", namespace="default", event="chat", noop=True, body=b"body"),
    ),
    Vector(
        "v26-token-zero-with-room",
        b"0;default;room1;_OnNamespaceConnect;0;0;",
        _m(token="0", namespace="default", room="room1", event="_OnNamespaceConnect"),
    ),
    Vector(
        "v27-connect-without-token",
        b";default;;_OnNamespaceConnect;0;0;some id",
        _m(namespace="default", event="_OnNamespaceConnect", body=b"some id"),
    ),
    Vector(
        "v28-client-ask",
        b"$1795678451172823685;default;;ping;0;0;p",
        _m(token="$1795678451172823685", namespace="default", event="ping", body=b"p"),
    ),
    Vector(
        "v28-reply-body-with-separator",
        b"$1795678451172823685;default;;ping;0;0;PONG;x",
        _m(token="$1795678451172823685", namespace="default", event="ping", body=b"PONG;x"),
    ),
    Vector(
        "v29-ask-answered-with-error",
        b"$1795678451293494398;default;;fail;1;0;custom; error\nline2",
        _m(
            token="$1795678451293494398",
            namespace="default",
            event="fail",
            err="custom; error\nline2",
        ),
    ),
    Vector(
        "v30-error-for-plain-emit",
        b";default;;fail;1;0;custom; error\nline2",
        _m(namespace="default", event="fail", err="custom; error\nline2"),
    ),
    Vector(
        "v31-server-ask",
        b"1795678458971525543;default;;question;0;0;q?",
        _m(token="1795678458971525543", namespace="default", event="question", body=b"q?"),
    ),
    Vector(
        "v31-client-answer",
        b"1795678458971525543;default;;question;0;0;answer",
        _m(token="1795678458971525543", namespace="default", event="question", body=b"answer"),
    ),
    Vector(
        "v32-neffos-js-node-token",
        b"$352000000000432135791;default;;ping;0;0;p",
        _m(token="$352000000000432135791", namespace="default", event="ping", body=b"p"),
    ),
    Vector(
        "v33-browser-token-with-dot",
        b"$123.456;default;;ping;0;0;x",
        _m(token="$123.456", namespace="default", event="ping", body=b"x"),
    ),
    Vector(
        "v34-binary-body",
        b";default;;chat;0;0;\x00\xff;a",
        _m(namespace="default", event="chat", body=b"\x00\xff;a", binary=True),
        binary=True,
    ),
    Vector(
        "v35-binary-ask",
        b"$21;default;;ping;0;0;\x00\x01",
        _m(token="$21", namespace="default", event="ping", body=b"\x00\x01", binary=True),
        binary=True,
    ),
    Vector(
        "v35-binary-reply",
        b"$21;default;;ping;0;0;pong",
        _m(token="$21", namespace="default", event="ping", body=b"pong", binary=True),
        binary=True,
    ),
    Vector(
        "v35-binary-error",
        b"$22;default;;fail;1;0;boom",
        _m(token="$22", namespace="default", event="fail", err="boom", binary=True),
        binary=True,
    ),
    Vector(
        "v36-binary-body-separator-and-high-bytes",
        b";default;;frombin;0;0;\x00\x01;\xfe",
        _m(namespace="default", event="frombin", body=b"\x00\x01;\xfe", binary=True),
        binary=True,
    ),
    Vector(
        "v37-native-frame",
        b"hello",
        _m(event=ON_NATIVE_MESSAGE, body=b"hello", native=True),
        allow_native=True,
    ),
    Vector(
        "v38-native-frame-mixed-mode",
        b"plain text",
        _m(event=ON_NATIVE_MESSAGE, body=b"plain text", native=True),
        allow_native=True,
    ),
    Vector(
        "v39-native-payload-with-six-separators-is-an-envelope",
        b"x;y;z;w;v;u;t",
        _m(token="x", namespace="y", room="z", event="w", body=b"t"),
        encodes=False,  # fields 5 and 6 are "v" and "u": not something encode writes
        allow_native=True,
    ),
    Vector(
        "v42-error-flag-with-empty-text-is-no-error",
        b";n;;e;1;0;",
        _m(namespace="n", event="e"),
        encodes=False,  # encode writes 0 for "no error"
    ),
    Vector(
        "v43-body-is-everything-after-sixth-separator",
        b"1;2;3;4;5;6;7;8;9",
        _m(token="1", namespace="2", room="3", event="4", body=b"7;8;9"),
        encodes=False,  # flags "5" and "6" both read as false
    ),
    Vector(
        "v44-body-never-unescaped",
        b";a@%!semicolon@%!b;;e;0;0;x@%!semicolon@%!y",
        _m(namespace="a;b", event="e", body=b"x@%!semicolon@%!y"),
    ),
    Vector(
        "v45-escaped-namespace-room-event",
        b";my@%!semicolon@%!ns;r@%!semicolon@%!1;ev@%!semicolon@%!1;0;0;b;o;d;y",
        _m(namespace="my;ns", room="r;1", event="ev;1", body=b"b;o;d;y"),
    ),
    Vector(
        "v47-exchange-marker-is-not-a-token",
        b"neffos(0x39d5565e-d552-43f5-bc45-7c4cdbefbc21(alice0xc00012e600));default;;chat;0;0;"
        b"hi from alice",
        _m(
            marker="neffos(0x39d5565e-d552-43f5-bc45-7c4cdbefbc21(alice0xc00012e600))",
            namespace="default",
            event="chat",
            body=b"hi from alice",
        ),
        exchange=True,
    ),
    Vector(
        "v48-direct-payload",
        b";default;;chat;0;0;direct to bob",
        _m(namespace="default", event="chat", body=b"direct to bob"),
    ),
    Vector(
        "v49-mangled-exchange-token-is-a-plain-token",
        b"R795678597771630724;default;;question;0;0;how are you?",
        _m(
            token="R795678597771630724",
            namespace="default",
            event="question",
            body=b"how are you?",
        ),
    ),
    Vector(
        "v50-room-payload",
        b";default;r;chat;0;0;room r only",
        _m(namespace="default", room="r", event="chat", body=b"room r only"),
    ),
    Vector(
        "v51-exchange-flagged-token",
        b"$!123;default;;ping;0;0;x",
        _m(token="$123", from_exchange=True, namespace="default", event="ping", body=b"x"),
        encodes=False,  # the "!" is never written back (from_exchange is local only)
        exchange=True,
    ),
]


def _decode_vector(v: Vector) -> Message:
    if v.binary:
        return decode(v.frame, binary=True, allow_native=v.allow_native, exchange=v.exchange)
    return decode(v.frame.decode(), allow_native=v.allow_native, exchange=v.exchange)


@pytest.mark.parametrize("v", VECTORS, ids=[v.id for v in VECTORS])
def test_vector_decodes(v: Vector) -> None:
    assert _decode_vector(v) == v.expected


@pytest.mark.parametrize(
    "v", [v for v in VECTORS if v.encodes], ids=[v.id for v in VECTORS if v.encodes]
)
def test_vector_encodes_to_exact_bytes(v: Vector) -> None:
    assert encode(v.expected) == v.frame


@pytest.mark.parametrize(
    "v",
    [v for v in VECTORS if not v.binary],
    ids=[v.id for v in VECTORS if not v.binary],
)
def test_text_vector_decodes_the_same_from_bytes(v: Vector) -> None:
    """Spec 2.4: splitting the bytes or the decoded text gives the same result."""
    assert decode(v.frame, allow_native=v.allow_native, exchange=v.exchange) == v.expected


# -- vectors that are answers to a request (§15 "answer ..." columns) -------------------------


@pytest.mark.parametrize(
    ("token", "frame"),
    [
        pytest.param("$1795678450690943437", b"$1795678450690943437;;;;;;", id="v05-empty-reply"),
        pytest.param(
            "1795678458730662800", b"1795678458730662800;;;;;;", id="v09-client-empty-reply"
        ),
        pytest.param(
            "$1795678452678654349", b"$1795678452678654349;;;;;;", id="v10-disconnect-answer"
        ),
        pytest.param(
            "1795678459333182122", b"1795678459333182122;;;;;;", id="v11-disconnect-answer"
        ),
        pytest.param("$1795678452076166785", b"$1795678452076166785;;;;;;", id="v12-join-answer"),
        pytest.param("$1795678452437519006", b"$1795678452437519006;;;;;;", id="v14-leave-answer"),
        pytest.param(
            "1795678458851100351", b"1795678458851100351;;;;;;", id="v16-client-join-answer"
        ),
    ],
)
def test_vector_empty_reply(token: str, frame: bytes) -> None:
    """Spec 2.6: ``<token>;;;;;;`` with *empty* flag fields, not ``0``."""
    assert encode_empty_reply(token) == frame
    assert decode(frame.decode()) == Message(token=token)


@pytest.mark.parametrize(
    ("request_frame", "binary", "body", "err", "answer"),
    [
        pytest.param(
            b"$1795678450690943437;onlyclient;;_OnNamespaceConnect;0;0;",
            False,
            b"",
            "bad namespace",
            b"$1795678450690943437;onlyclient;;_OnNamespaceConnect;1;0;bad namespace",
            id="v06-bad-namespace-answer",
        ),
        pytest.param(
            b"$1795678456264933370;deny;;_OnNamespaceConnect;0;0;",
            False,
            b"",
            "denied by server",
            b"$1795678456264933370;deny;;_OnNamespaceConnect;1;0;denied by server",
            id="v07-connect-denied-answer",
        ),
        pytest.param(
            b"$1795678456682161251;default;vip;_OnRoomJoin;0;0;",
            False,
            b"",
            "vip only",
            b"$1795678456682161251;default;vip;_OnRoomJoin;1;0;vip only",
            id="v13-join-rejected-answer",
        ),
        pytest.param(
            b"$1795678456923235771;default;sticky;_OnRoomLeave;0;0;",
            False,
            b"",
            "cannot leave",
            b"$1795678456923235771;default;sticky;_OnRoomLeave;1;0;cannot leave",
            id="v15-leave-refused-answer",
        ),
        pytest.param(
            b"$1795678451172823685;default;;ping;0;0;p",
            False,
            b"PONG;x",
            "",
            b"$1795678451172823685;default;;ping;0;0;PONG;x",
            id="v28-reply-answer",
        ),
        pytest.param(
            b"$1795678451293494398;default;;fail;0;0;",
            False,
            b"",
            "custom; error\nline2",
            b"$1795678451293494398;default;;fail;1;0;custom; error\nline2",
            id="v29-error-answer-to-ask",
        ),
        pytest.param(
            b";default;;fail;0;0;x",
            False,
            b"",
            "custom; error\nline2",
            b";default;;fail;1;0;custom; error\nline2",
            id="v30-error-answer-to-emit",
        ),
        pytest.param(
            b"1795678458971525543;default;;question;0;0;q?",
            False,
            b"answer",
            "",
            b"1795678458971525543;default;;question;0;0;answer",
            id="v31-client-reply-to-server-ask",
        ),
        pytest.param(
            b"$123.456;default;;ping;0;0;x",
            False,
            b"pong",
            "",
            b"$123.456;default;;ping;0;0;pong",
            id="v33-browser-token-echoed-verbatim",
        ),
        pytest.param(
            b"$21;default;;ping;0;0;\x00\x01",
            True,
            b"pong",
            "",
            b"$21;default;;ping;0;0;pong",
            id="v35-binary-reply-answer",
        ),
        pytest.param(
            b"$22;default;;fail;0;0;\x00\x01",
            True,
            b"",
            "boom",
            b"$22;default;;fail;1;0;boom",
            id="v35-binary-error-answer",
        ),
        pytest.param(
            b"1;default;;chat;0;1;body",
            False,
            b"ok",
            "",
            b"1;default;;chat;0;0;ok",
            id="v25-answer-writes-noop-0",
        ),
        pytest.param(
            b";my@%!semicolon@%!ns;r@%!semicolon@%!1;ev@%!semicolon@%!1;0;0;b;o;d;y",
            False,
            b"re;ply",
            "",
            b";my@%!semicolon@%!ns;r@%!semicolon@%!1;ev@%!semicolon@%!1;0;0;re;ply",
            id="v45-answer-re-escapes-names",
        ),
    ],
)
def test_vector_answer(
    request_frame: bytes, binary: bool, body: bytes, err: str, answer: bytes
) -> None:
    """An answer keeps the request's token, namespace, room and event (spec 7.2)."""
    req = decode(request_frame, binary=binary)
    assert req.binary is binary
    assert encode_answer(req, body=body, err=err) == answer


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param("M", id="v01-ack-request-is-not-an-envelope"),
        pytest.param("Aconn1", id="v02-ack-is-not-an-envelope"),
        pytest.param("Hnot allowed; go away", id="v03-ack-refused-is-not-an-envelope"),
        pytest.param("default;chat;", id="v40-two-separators-invalid"),
        pytest.param("$42;;;;;", id="v41-five-separators-invalid"),
        pytest.param("M", id="v46-second-M-invalid"),
    ],
)
def test_vector_invalid(frame: str) -> None:
    with pytest.raises(ProtocolError):
        decode(frame)
    with pytest.raises(ProtocolError):
        decode(frame.encode(), binary=True)


def test_v40_invalid_frame_is_native_when_native_allowed() -> None:
    assert decode("default;chat;", allow_native=True) == Message(
        event=ON_NATIVE_MESSAGE, body=b"default;chat;", native=True
    )


def test_v37_native_message_encodes_to_its_raw_body() -> None:
    assert encode(Message(event=ON_NATIVE_MESSAGE, body=b"hello", native=True)) == b"hello"


def test_v27_text_vector_token_empty() -> None:
    msg = decode(";default;;_OnNamespaceConnect;0;0;some id")
    assert msg.token == ""
    assert msg.text == "some id"


# -------------------------------------------------------------------------------------------
# Flags (spec 2.4 step 5, 16.3)
# -------------------------------------------------------------------------------------------

NOT_TRUE = ["0", "", "true", "True", "01", " 1", "1 ", "2", "yes", "11", "+1", "\u0661"]


@pytest.mark.parametrize("flag", NOT_TRUE)
def test_is_error_true_only_for_exactly_1(flag: str) -> None:
    msg = decode(f";default;;chat;{flag};0;text")
    assert msg.err == ""
    assert msg.body == b"text"


def test_is_error_1_makes_field_7_the_error() -> None:
    msg = decode(";default;;chat;1;0;text")
    assert msg.err == "text"
    assert msg.body == b""


@pytest.mark.parametrize("flag", NOT_TRUE)
def test_is_noop_true_only_for_exactly_1(flag: str) -> None:
    assert decode(f"$1;default;;_OnNamespaceConnect;0;{flag};").noop is False


def test_is_noop_1() -> None:
    assert decode("$1;default;;_OnNamespaceConnect;0;1;").noop is True


@pytest.mark.parametrize("binary", [False, True])
def test_is_error_with_empty_text_is_no_error(binary: bool) -> None:
    """Spec 2.4 step 6 / 16.4: the flag is lost when field 7 is empty."""
    msg = decode(b";n;;e;1;0;", binary=binary) if binary else decode(";n;;e;1;0;")
    assert msg.err == ""
    assert msg.body == b""


def test_encode_writes_flags_as_0_and_1() -> None:
    assert encode(Message(namespace="n", event="e")) == b";n;;e;0;0;"
    assert encode(Message(namespace="n", event="e", err="x")) == b";n;;e;1;0;x"
    assert encode(Message(namespace="n", event="e", noop=True)) == b";n;;e;0;1;"


def test_encode_error_replaces_body() -> None:
    """Spec 2.2 step 3: with an error, field 7 is the error text (the body is not sent)."""
    assert encode(Message(namespace="n", event="e", body=b"ignored", err="oops")) == (
        b";n;;e;1;0;oops"
    )


def test_local_only_flags_are_never_written() -> None:
    """Spec 2.5: forced, local, from_exchange do not appear on the wire."""
    plain = Message(token="$1", namespace="n", room="r", event="e", body=b"b")
    flagged = attrs.evolve(plain, forced=True, local=True, from_exchange=True)
    assert encode(flagged) == encode(plain) == b"$1;n;r;e;0;0;b"


# -------------------------------------------------------------------------------------------
# Empty reply (spec 2.6)
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["$1", "1795678458730662800", "$123.456", "#5"])
def test_empty_reply(token: str) -> None:
    data = encode_empty_reply(token)
    assert data == token.encode() + b";;;;;;"
    assert decode(data.decode()) == Message(token=token)


# -------------------------------------------------------------------------------------------
# Escaping (spec 2.3, 16.2)
# -------------------------------------------------------------------------------------------


def test_escaping_in_namespace_room_event_only() -> None:
    msg = Message(token="$1", namespace="a;b", room=";r;", event="e;;", body=b"b;o;d;y", err="")
    data = encode(msg)
    assert data == (
        b"$1;a"
        + ESC.encode()
        + b"b;"
        + ESC.encode()
        + b"r"
        + ESC.encode()
        + b";e"
        + ESC.encode() * 2
        + b";0;0;b;o;d;y"
    )
    assert decode(data.decode()) == msg


def test_error_text_is_not_escaped() -> None:
    assert encode(Message(namespace="n", event="e", err="a;b")) == b";n;;e;1;0;a;b"


def test_body_with_escape_literal_is_not_unescaped() -> None:
    data = f";n;;e;0;0;{ESC}".encode()
    assert decode(data.decode()).body == ESC.encode()
    assert encode(Message(namespace="n", event="e", body=ESC.encode())) == data


def test_error_text_with_escape_literal_is_not_unescaped() -> None:
    assert decode(f";n;;e;1;0;x{ESC}y").err == f"x{ESC}y"


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "a\\b", "50%", "é/ü:x y", "\t", "@%!", "@"])
def test_other_characters_pass_through_unescaped(name: str) -> None:
    msg = Message(namespace=name, room=name, event=name, body=b"x")
    data = encode(msg)
    assert data == f";{name};{name};{name};0;0;x".encode()
    assert decode(data.decode()) == msg


def test_name_with_escape_literal_becomes_semicolon() -> None:
    """A name literally containing the escape string is not round-trip safe (spec 2.3)."""
    msg = decode(f";x{ESC}y;;e;0;0;")
    assert msg.namespace == "x;y"


def test_escaping_is_not_injective() -> None:
    """Beyond the spec's literal-escape case: ``@%!semicolon;`` and ``;semicolon@%!`` encode to
    the same bytes, because the escape of ``;`` overlaps with the neighbouring text."""
    a = encode(Message(namespace="@%!semicolon;", event="e"))
    b = encode(Message(namespace=";semicolon@%!", event="e"))
    assert a == b
    assert decode(a.decode()).namespace == ";semicolon@%!"


# -------------------------------------------------------------------------------------------
# Binary frames (spec 2.8)
# -------------------------------------------------------------------------------------------


def test_binary_frame_sets_binary_flag() -> None:
    assert decode(b";default;;chat;0;0;x", binary=True).binary is True
    assert decode(";default;;chat;0;0;x").binary is False
    assert decode(b";default;;chat;0;0;x").binary is False


def test_binary_body_is_raw_bytes() -> None:
    body = bytes(range(256)) + b";;;" + ESC.encode()
    msg = decode(b";default;;chat;0;0;" + body, binary=True)
    assert msg.body == body
    assert encode(msg) == b";default;;chat;0;0;" + body


def test_binary_header_must_be_utf8() -> None:
    with pytest.raises(ProtocolError):
        decode(b";def\xffault;;chat;0;0;x", binary=True)


def test_binary_utf8_header_fields() -> None:
    frame = ";n\u00e4me;\u03c1;\u00e9;0;0;".encode() + b"\xff"
    msg = decode(frame, binary=True)
    assert (msg.namespace, msg.room, msg.event) == ("n\u00e4me", "\u03c1", "\u00e9")
    assert msg.body == b"\xff"


def test_binary_error_text() -> None:
    msg = decode(b"$22;default;;fail;1;0;boom", binary=True)
    assert msg.err == "boom"
    assert msg.body == b""
    assert msg.binary is True


def test_binary_error_text_not_utf8_does_not_raise() -> None:
    msg = decode(b";default;;fail;1;0;\xff\xfe", binary=True)
    assert msg.err  # some text; the flag is kept
    assert msg.body == b""


def test_binary_native_frame() -> None:
    msg = decode(b"\x00\x01\xff", binary=True, allow_native=True)
    assert msg == Message(event=ON_NATIVE_MESSAGE, body=b"\x00\x01\xff", native=True, binary=True)


# -------------------------------------------------------------------------------------------
# Exchange token forms (spec 2.4 step 9, 8.1, vectors 47 and 51)
# -------------------------------------------------------------------------------------------


def test_marker_is_moved_out_of_token() -> None:
    msg = decode("neffos(0xabc(alice0x1));default;;chat;0;0;hi", exchange=True)
    assert msg.marker == "neffos(0xabc(alice0x1))"
    assert msg.token == ""
    assert msg.from_exchange is False


@pytest.mark.parametrize("token", ["neffos(0xabc(alice0x1))", "$!123", "1!795"])
def test_a_peers_token_is_opaque(token: str) -> None:
    """Exchange token forms mean something only on what comes from an exchange: a client
    cannot plant a marker (it would reach others when its message is re-broadcast)."""
    msg = decode(f"{token};default;;chat;0;0;hi")
    assert (msg.token, msg.marker, msg.from_exchange) == (token, "", False)


def test_marker_written_in_token_slot() -> None:
    msg = Message(marker="neffos(0xabc(alice0x1))", namespace="default", event="chat")
    assert encode(msg) == b"neffos(0xabc(alice0x1));default;;chat;0;0;"


@pytest.mark.parametrize(
    ("token", "expected", "flagged"),
    [
        ("$!123", "$123", True),
        ("1!795", "1795", True),
        ("x!", "x!", False),  # length 2: not flagged
        ("!12", "!12", False),  # "!" first, not second
        ("$1!2", "$1!2", False),
        ("R795678597771630724", "R795678597771630724", False),
    ],
)
def test_exchange_flagged_token(token: str, expected: str, flagged: bool) -> None:
    msg = decode(f"{token};default;;ping;0;0;", exchange=True)
    assert msg.token == expected
    assert msg.from_exchange is flagged
    assert msg.marker == ""


# -------------------------------------------------------------------------------------------
# Native decoding (spec 9)
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["hello", "M", "a;b;c;d;e", '{"json": 1}'])
def test_native_only_when_allowed(frame: str) -> None:
    with pytest.raises(ProtocolError):
        decode(frame)
    msg = decode(frame, allow_native=True)
    assert msg == Message(event=ON_NATIVE_MESSAGE, body=frame.encode(), native=True)


@pytest.mark.parametrize("data", ["", b""])
@pytest.mark.parametrize("allow_native", [False, True])
def test_empty_frame_is_invalid(data: str | bytes, allow_native: bool) -> None:
    with pytest.raises(ProtocolError):
        decode(data, allow_native=allow_native)


def test_native_with_token_encodes_as_envelope() -> None:
    """Spec 9.2: a native message with a token is a normal envelope."""
    msg = Message(token="$1", event=ON_NATIVE_MESSAGE, body=b"x", native=True)
    assert encode(msg) == b"$1;;;_OnNativeMessage;0;0;x"


# -------------------------------------------------------------------------------------------
# Tokens (spec 8)
# -------------------------------------------------------------------------------------------


def test_new_token_digits_only_and_unique() -> None:
    tokens = [new_token() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9]+", t) for t in tokens)
    assert not any(t.startswith("$") for t in tokens)
    assert len(set(tokens)) == len(tokens)
    assert all(is_reply_token(t) for t in tokens[:10])


def test_new_client_token_starts_with_dollar_and_unique() -> None:
    tokens = [new_client_token() for _ in range(20_000)]
    assert all(re.fullmatch(r"\$[0-9]+", t) for t in tokens)
    assert len(set(tokens)) == len(tokens)
    assert not any(is_reply_token(t) for t in tokens[:10])


def test_server_and_client_tokens_never_collide() -> None:
    server = {new_token() for _ in range(1000)}
    client = {new_client_token()[1:] for _ in range(1000)}
    assert len(server) == 1000
    assert not server & {"$" + t for t in client}


@pytest.mark.parametrize(
    ("token", "is_reply"),
    [("", False), ("$1", False), ("$123.456", False), ("123", True), ("#5", True), ("R7", True)],
)
def test_is_reply_token(token: str, is_reply: bool) -> None:
    """Spec 8.1: on the server any non-empty token not starting with ``$`` may be a reply."""
    assert is_reply_token(token) is is_reply


def test_tokens_survive_round_trip() -> None:
    for token in (new_token(), new_client_token(), "$123.456", "#5"):
        msg = Message(token=token, namespace="n", event="e")
        assert decode(encode(msg).decode()).token == token


# -------------------------------------------------------------------------------------------
# Property tests
# -------------------------------------------------------------------------------------------

# Every character a websocket text frame can carry (no lone surrogates), with the characters
# and fragments that matter to the envelope (separator, escape pieces) made frequent.
_wire_char = st.one_of(
    st.sampled_from(list(";@%!semicolon$#\n\r\x00")),
    st.characters(codec="utf-8"),
)
_wire_text = st.lists(
    st.one_of(_wire_char, st.sampled_from([";", ESC, "@%!semicolon", "semicolon@%!", "@%!"])),
    max_size=30,
).map("".join)


def _survives_escaping(name: str) -> bool:
    """Whether spec 2.3's escape-then-unescape gives ``name`` back (see the tests above)."""
    return name.replace(";", ESC).replace(ESC, ";") == name


_names = _wire_text.filter(_survives_escaping)


def _carriable_token(token: str) -> bool:
    return (
        ";" not in token
        and not token.startswith("neffos(0x")
        and not (len(token) > 2 and token[1] == "!")
    )


_tokens = st.one_of(
    st.just(""),
    st.sampled_from(["$1795678451172823685", "1795678458971525543", "$123.456", "#5", "0"]),
    _wire_text.filter(_carriable_token),
)
_markers = st.text(_wire_char.filter(lambda c: c != ";"), max_size=30).map(
    lambda s: "neffos(0x" + s
)


@st.composite
def _messages(draw: st.DrawFn, body: st.SearchStrategy[bytes], binary: bool) -> Message:
    """Any message the envelope can carry (see the module docstring of the property tests)."""
    if draw(st.integers(0, 9)) == 0:
        token, marker = "", draw(_markers)
    else:
        token, marker = draw(_tokens), ""
    err = draw(st.one_of(st.just(""), st.text(_wire_char, min_size=1, max_size=40)))
    return Message(
        namespace=draw(_names),
        room=draw(_names),
        event=draw(_names),
        body=b"" if err else draw(body),
        err=err,
        token=token,
        marker=marker,
        noop=draw(st.booleans()),
        binary=binary,
    )


_text_bodies = _wire_text.map(str.encode)

# What the envelope cannot carry, so the strategies leave it out: names that change under
# escape+unescape (they contain the escape literal, or make it by overlap), an error with an
# empty text (reads back as no error), an error together with a body (the error replaces it),
# tokens containing ";" or starting with "neffos(0x" or with "!" as 2nd character, a marker
# together with a token, native messages (no envelope), the local-only flags forced, local
# and from_exchange, and (in text frames) bodies that are not UTF-8.


@settings(max_examples=400, suppress_health_check=[HealthCheck.filter_too_much])
@given(_messages(_text_bodies, binary=False))
def test_round_trip_text(msg: Message) -> None:
    data = encode(msg)
    assert isinstance(data, bytes)
    assert decode(data.decode("utf-8"), exchange=True) == msg
    assert decode(data, exchange=True) == msg
    assert decode(data).token == (msg.marker or msg.token)  # from a peer: opaque


@settings(max_examples=400, suppress_health_check=[HealthCheck.filter_too_much])
@given(_messages(st.binary(max_size=64), binary=True))
def test_round_trip_binary(msg: Message) -> None:
    assert decode(encode(msg), binary=True, exchange=True) == msg


@settings(max_examples=300)
@given(_wire_text)
def test_any_name_round_trips_as_spec_escaping_says(name: str) -> None:
    """For every name, what arrives is exactly unescape(escape(name)) of spec 2.3."""
    msg = decode(encode(Message(namespace=name, room=name, event=name)).decode())
    expected = name.replace(";", ESC).replace(ESC, ";")
    assert (msg.namespace, msg.room, msg.event) == (expected, expected, expected)


@settings(max_examples=300)
@given(_wire_text, st.binary(max_size=32))
def test_native_round_trip(body_text: str, raw: bytes) -> None:
    """A native message without token is its raw body; bodies that are not envelopes come back."""
    for data, binary in ((body_text.encode(), False), (raw, True)):
        assume(data and data.count(b";") < 6)
        msg = Message(event=ON_NATIVE_MESSAGE, body=data, native=True, binary=binary)
        wire = encode(msg)
        assert wire == data
        decoded = (
            decode(wire, binary=True, allow_native=True)
            if binary
            else decode(wire.decode(), allow_native=True)
        )
        assert decoded == msg


# Frames made of envelope-ish pieces reach the deep branches far more often than random bytes.
_pieces = st.sampled_from(
    [b";", b";;;;;;", b"1", b"0", b"$", b"$!", b"neffos(0x", b"@%!semicolon@%!", b"\xff", b"M"]
)
_frames = st.one_of(
    st.binary(max_size=80),
    st.lists(st.one_of(_pieces, st.binary(max_size=6)), max_size=20).map(b"".join),
)


@settings(max_examples=1000)
@given(_frames, st.booleans(), st.booleans())
def test_decode_bytes_raises_only_protocol_error(
    data: bytes, binary: bool, allow_native: bool
) -> None:
    try:
        msg = decode(data, binary=binary, allow_native=allow_native)
    except ProtocolError:
        return
    assert isinstance(msg, Message)
    assert msg.binary is binary
    assert isinstance(msg.body, bytes)


@settings(max_examples=1000)
@given(
    st.one_of(
        _wire_text,
        st.lists(st.one_of(_pieces.map(lambda b: b.decode("latin-1")), _wire_text)).map("".join),
    ),
    st.booleans(),
)
def test_decode_wire_text_raises_only_protocol_error(data: str, allow_native: bool) -> None:
    try:
        msg = decode(data, allow_native=allow_native)
    except ProtocolError:
        return
    assert isinstance(msg, Message)
    assert msg.binary is False


_any_char = st.one_of(
    st.sampled_from([";", "\ud800", "\udfff", "M"]), st.characters(exclude_categories=())
)


@settings(max_examples=500)
@given(st.lists(_any_char, max_size=40).map("".join), st.booleans())
def test_decode_any_str_raises_only_protocol_error(data: str, allow_native: bool) -> None:
    """Any Python ``str``, lone surrogates included (they cannot come from a websocket).

    (Built from a list of characters: ``st.text`` keeps surrogates out of its alphabet.)
    """
    try:
        decode(data, allow_native=allow_native)
    except ProtocolError:
        pass
