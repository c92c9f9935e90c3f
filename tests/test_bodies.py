"""Typed bodies end to end: attrs classes, dataclasses and pydantic models in and out, the
field errors a client sees, the JSON, orjson and msgpack codecs, and deep nesting refused.

Every behaviour runs a real server on loopback and talks to it with the Python client
(``wsmvc.dial``); :func:`body_problem` and the codec check are unit-tested. Nothing sleeps:
each wait is on a reply, with a timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

import attrs
import msgpack
import orjson
import pydantic
import pytest

import wsmvc
from wsmvc import EventError, Message, NSConn, Server, controller, event
from wsmvc.bodies import BodyError, body_problem, decode_body, encode_body
from wsmvc.codecs import JSON, JsonCodec

from .conftest import Serve

T = 5.0  # seconds to wait for a reply


# -- the body types ---------------------------------------------------------------------------


@attrs.define
class Point:
    x: int
    y: int = 0


@attrs.define
class Shape:
    name: str
    points: list[Point]
    closed: bool = False


@dataclasses.dataclass
class Person:
    name: str
    age: int
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Greeting:
    text: str
    at: datetime.date


class Signup(pydantic.BaseModel):
    name: str = pydantic.Field(min_length=1)
    age: int = pydantic.Field(ge=0)
    plan: Literal["free", "pro"] = "free"
    friends: list[str] = []

    @pydantic.field_validator("name")
    @classmethod
    def not_admin(cls, name: str) -> str:
        if name == "admin":
            raise ValueError("that name is taken")
        return name


class Account(pydantic.BaseModel):
    id: int
    name: str
    plan: str
    created: datetime.datetime


WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5)


@controller(namespace="bodies")
class Bodies:
    @event
    def on_shape(self, shape: Shape) -> dict[str, Any]:
        return {"name": shape.name, "corners": len(shape.points), "closed": shape.closed}

    @event
    def on_person(self, person: Person) -> Greeting:
        return Greeting(f"hello {person.name} ({person.age})", datetime.date(2026, 5, 1))

    @event
    async def on_signup(self, signup: Signup) -> Account:
        return Account(id=7, name=signup.name, plan=signup.plan, created=WHEN)

    @event
    def on_accounts(self, count: int) -> list[Account]:
        return [Account(id=i, name=f"n{i}", plan="free", created=WHEN) for i in range(count)]

    @event
    def on_nested(self, value: list[Any]) -> int:
        return len(value)

    @event
    def on_counts(self, counts: dict[str, int]) -> list[int]:
        return sorted(counts.values())

    @event
    def on_text(self, text: str) -> str:
        return text.upper()

    @event
    def on_raw(self, data: bytes) -> bytes:
        return data[::-1]

    @event
    def on_message(self, msg: Message) -> str:
        return f"{msg.event}:{msg.text}"


async def ask_json(ns: NSConn, ev: str, value: Any) -> Any:
    reply = await ns.ask(ev, json.dumps(value), timeout=T)
    assert not reply.binary
    return json.loads(reply.body)


async def ask_error(ns: NSConn, ev: str, body: bytes | str, *, binary: bool = False) -> str:
    with pytest.raises(EventError) as raised:
        await ns.conn.ask(
            Message(namespace=ns.namespace, event=ev, body=_bytes(body), binary=binary),
            timeout=T,
        )
    return raised.value.text


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


@pytest.fixture
async def bodies(serve: Serve) -> AsyncIterator[NSConn]:
    url = await serve(Server(controllers=[Bodies]))
    async with await wsmvc.dial(url, {"bodies": {}}) as conn:
        yield await conn.connect("bodies")


# -- attrs classes and dataclasses (cattrs) ------------------------------------------------------


async def test_attrs_and_dataclass_bodies_in_and_out(bodies: NSConn) -> None:
    shape = {"name": "tri", "points": [{"x": 0}, {"x": 1, "y": 1}, {"x": 2}], "closed": True}
    assert await ask_json(bodies, "OnShape", shape) == {
        "name": "tri",
        "corners": 3,
        "closed": True,
    }
    assert await ask_json(bodies, "OnPerson", {"name": "Ada", "age": 36}) == {
        "text": "hello Ada (36)",
        "at": "2026-05-01",
    }


@pytest.mark.parametrize(
    ("ev", "body", "error"),
    [
        ("OnPerson", {"name": "Ada", "age": "old"}, "body.age: expected an integer"),
        ("OnPerson", {"age": 3}, "body.name: required field missing"),
        ("OnPerson", {"name": "Ada", "age": 3, "tags": 5}, "body.tags: expected an array"),
        (
            "OnShape",
            {"name": "x", "points": [{"x": 1}, {"y": 2}, {"x": "far"}]},
            "body.points[1].x: required field missing; body.points[2].x: expected an integer",
        ),
        (
            "OnShape",
            {"name": "x", "points": [], "closed": "no"},
            "body.closed: expected true or false",
        ),
        ("OnCounts", {"a": 1, "b": "two"}, "body['b']: expected an integer"),
        ("OnPerson", [1, 2], "body: expected an object, got an array"),
        ("OnPerson", "Ada", "body: expected an object, got a string"),
        ("OnNested", {"a": 1}, "body: expected an array"),
        ("OnPerson", {"name": "Ada", "age": 3, "tags": "abc"}, "body.tags: expected an array"),
    ],
)
async def test_cattrs_field_errors_reach_the_client(
    bodies: NSConn, caplog: pytest.LogCaptureFixture, ev: str, body: Any, error: str
) -> None:
    assert await ask_error(bodies, ev, json.dumps(body)) == error
    assert await ask_json(bodies, "OnPerson", {"name": "Bo", "age": 1}) == {
        "text": "hello Bo (1)",
        "at": "2026-05-01",
    }
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_invalid_json_is_a_body_error(bodies: NSConn) -> None:
    assert await ask_error(bodies, "OnPerson", "{nope") == (
        "body: invalid JSON (Expecting property name enclosed in double quotes:"
        " line 1 column 2 (char 1))"
    )


# -- pydantic models ------------------------------------------------------------------------------


async def test_pydantic_model_in_and_out(bodies: NSConn) -> None:
    assert await ask_json(bodies, "OnSignup", {"name": "Ada", "age": 36, "plan": "pro"}) == {
        "id": 7,
        "name": "Ada",
        "plan": "pro",
        "created": "2026-01-02T03:04:05",
    }
    # a list of models, through cattrs (which hands each model to pydantic)
    assert await ask_json(bodies, "OnAccounts", 2) == [
        {"id": 0, "name": "n0", "plan": "free", "created": "2026-01-02T03:04:05"},
        {"id": 1, "name": "n1", "plan": "free", "created": "2026-01-02T03:04:05"},
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"name": "Ada", "age": "old"},
            "body.age: Input should be a valid integer, unable to parse string as an integer",
        ),
        ({"name": "Ada"}, "body.age: Field required"),
        ({"name": "Ada", "age": -1}, "body.age: Input should be greater than or equal to 0"),
        ({"name": "admin", "age": 1}, "body.name: Value error, that name is taken"),
        (
            {"name": "Ada", "age": 1, "plan": "gold", "friends": ["x", 2]},
            "body.plan: Input should be 'free' or 'pro'; body.friends[1]: Input should be a"
            " valid string",
        ),
        ([1], "body: expected an object, got an array"),
    ],
)
async def test_pydantic_field_errors_reach_the_client(
    bodies: NSConn, caplog: pytest.LogCaptureFixture, body: Any, error: str
) -> None:
    assert await ask_error(bodies, "OnSignup", json.dumps(body)) == error
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- raw bodies stay raw --------------------------------------------------------------------------


async def test_str_bytes_and_message_bodies_are_not_decoded(bodies: NSConn) -> None:
    assert (
        await bodies.ask("OnText", '{"not": "decoded"}', timeout=T)
    ).text == '{"NOT": "DECODED"}'
    raw = Message(namespace="bodies", event="OnRaw", body=b"\x00\xff[[[", binary=True)
    assert (await bodies.conn.ask(raw, timeout=T)).body == b"[[[\xff\x00"
    assert (await bodies.ask("OnMessage", "[" * 10_000, timeout=T)).text == (
        "OnMessage:" + "[" * 10_000
    )


# -- deep nesting ---------------------------------------------------------------------------------


async def test_deep_nesting_is_refused_and_the_server_keeps_serving(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve(Server(controllers=[Bodies]))
    async with (
        await wsmvc.dial(url, {"bodies": {}}) as attacker,
        await wsmvc.dial(url, {"bodies": {}}) as other,
    ):
        bad = await attacker.connect("bodies")
        good = await other.connect("bodies")
        deep = "[" * 100_000 + "]" * 100_000
        too_deep = "body: nested deeper than 64 levels"
        attack = asyncio.gather(*(ask_error(bad, "OnNested", deep) for _ in range(5)))
        served = asyncio.gather(*(ask_json(good, "OnCounts", {"a": i}) for i in range(5)))
        assert await attack == [too_deep] * 5
        assert await served == [[i] for i in range(5)]
        # just past the bound (json.loads manages it) and past it inside a model
        assert await ask_error(bad, "OnNested", "[" * 65 + "]" * 65) == too_deep
        assert await ask_json(bad, "OnNested", json.loads("[" * 64 + "]" * 64)) == 1
        points = '{"x": 1, "y": 2, "z": ' + "[" * 70 + "]" * 70 + "}"
        assert await ask_error(bad, "OnShape", f'{{"name": "x", "points": [{points}]}}') == too_deep
        # the attacker's connection is still up too
        assert await ask_json(bad, "OnCounts", {"b": 3}) == [3]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_depth_bound_is_the_codecs() -> None:
    shallow = JsonCodec(max_depth=2)
    assert decode_body(b"[[1]]", list[Any], shallow) == [[1]]
    with pytest.raises(BodyError, match=r"^body: nested deeper than 2 levels$"):
        decode_body(b"[[[1]]]", list[Any], shallow)
    with pytest.raises(BodyError, match=r"^body: nested deeper than 2 levels$"):
        decode_body(b'{"a": {"b": [1]}}', dict[str, Any], shallow)
    # brackets inside strings do not count
    assert decode_body(b'["[[[[", "{{{{"]', list[str], shallow) == ["[[[[", "{{{{"]
    with pytest.raises(ValueError):
        JsonCodec(max_depth=0)


# -- bounded error texts ----------------------------------------------------------------------


async def test_an_error_text_is_bounded_whatever_the_client_sends(bodies: NSConn) -> None:
    key = "k" * 1_000_000
    text = await ask_error(bodies, "OnCounts", json.dumps({key: "x"}))
    assert text == "body['kkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…]: expected an integer"
    many = {f"key{i}": "x" for i in range(1000)}
    text = await ask_error(bodies, "OnCounts", json.dumps(many))
    assert text.endswith("; and 990 more")
    assert text.count("expected an integer") == 10
    assert len(text) < 1000


# -- codecs -----------------------------------------------------------------------------------


class OrjsonCodec:
    name = "JSON"
    binary = False

    def loads(self, data: bytes) -> Any:
        return orjson.loads(data)

    def dumps(self, value: Any) -> bytes:
        return orjson.dumps(value)


class MsgpackCodec:
    name = "msgpack"
    binary = True

    def loads(self, data: bytes) -> Any:
        return msgpack.unpackb(data)

    def dumps(self, value: Any) -> bytes:
        return msgpack.packb(value)  # type: ignore[no-any-return]


async def test_orjson_codec_end_to_end(serve: Serve) -> None:
    url = await serve(Server(controllers=[Bodies], codec=OrjsonCodec()))
    async with await wsmvc.dial(url, {"bodies": {}}) as conn:
        ns = await conn.connect("bodies")
        assert await ask_json(ns, "OnSignup", {"name": "Ada", "age": 3}) == {
            "id": 7,
            "name": "Ada",
            "plan": "free",
            "created": "2026-01-02T03:04:05",
        }
        assert await ask_json(ns, "OnPerson", {"name": "Bo", "age": 1}) == {
            "text": "hello Bo (1)",
            "at": "2026-05-01",
        }
        assert await ask_error(ns, "OnPerson", '{"name": "Bo"}') == (
            "body.age: required field missing"
        )
        assert (await ask_error(ns, "OnPerson", "{nope")).startswith("body: invalid JSON (")
        # orjson's own depth limit (1024) answers first; ours is checked after it
        deep = "[" * 100_000 + "]" * 100_000
        assert (await ask_error(ns, "OnNested", deep)).startswith("body: invalid JSON (")
        assert await ask_error(ns, "OnNested", "[" * 65 + "]" * 65) == (
            "body: nested deeper than 64 levels"
        )


async def ask_msgpack(ns: NSConn, ev: str, value: Any) -> Any:
    reply = await ns.conn.ask(
        Message(namespace=ns.namespace, event=ev, body=msgpack.packb(value), binary=True),
        timeout=T,
    )
    assert reply.binary  # msgpack is not UTF-8: a text frame would fail the connection
    return msgpack.unpackb(reply.body)


async def test_msgpack_codec_end_to_end_in_binary_frames(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve(Server(controllers=[Bodies], codec=MsgpackCodec()))
    async with await wsmvc.dial(url, {"bodies": {}}) as conn:
        ns = await conn.connect("bodies")
        assert await ask_msgpack(ns, "OnSignup", {"name": "Ada", "age": 3, "plan": "pro"}) == {
            "id": 7,
            "name": "Ada",
            "plan": "pro",
            "created": "2026-01-02T03:04:05",
        }
        assert await ask_msgpack(ns, "OnShape", {"name": "sq", "points": [{"x": 1}] * 4}) == {
            "name": "sq",
            "corners": 4,
            "closed": False,
        }
        assert await ask_msgpack(ns, "OnAccounts", 1) == [
            {"id": 0, "name": "n0", "plan": "free", "created": "2026-01-02T03:04:05"}
        ]
        # a typed answer goes binary even to a text request (msgpack's 1 is UTF-8 text)
        reply = await ns.ask("OnAccounts", msgpack.packb(1).decode(), timeout=T)
        assert reply.binary and len(msgpack.unpackb(reply.body)) == 1
        # field errors, bad msgpack, deep nesting
        assert await ask_error(ns, "OnSignup", msgpack.packb({"age": 1}), binary=True) == (
            "body.name: Field required"
        )
        bad = await ask_error(ns, "OnPerson", b"\xc1", binary=True)  # 0xc1: never used
        assert bad.startswith("body: invalid msgpack (")
        deep = b"\x91" * 100_000 + b"\x90"  # 100,000 nested one-element arrays
        assert (await ask_error(ns, "OnNested", deep, binary=True)).startswith(
            "body: invalid msgpack ("
        )
        nested: list[Any] = []
        for _ in range(70):
            nested = [nested]
        assert await ask_error(ns, "OnNested", msgpack.packb(nested), binary=True) == (
            "body: nested deeper than 64 levels"
        )
        # str and bytes answers are not the codec's: they keep the request's frame type
        text = await ns.ask("OnText", "plain", timeout=T)
        assert (text.text, text.binary) == ("PLAIN", False)
        assert await ask_msgpack(ns, "OnCounts", {"z": 9}) == [9]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class Counting:
    """A JSON codec that counts its calls."""

    name = "JSON"
    binary = False

    def __init__(self) -> None:
        self.calls = 0

    def loads(self, data: bytes) -> Any:
        self.calls += 1
        return json.loads(data)

    def dumps(self, value: Any) -> bytes:
        self.calls += 1
        return json.dumps(value).encode()


async def test_raw_bodies_and_answers_never_meet_the_codec(serve: Serve) -> None:
    codec = Counting()
    url = await serve(Server(controllers=[Bodies], codec=codec))
    async with await wsmvc.dial(url, {"bodies": {}}) as conn:
        ns = await conn.connect("bodies")
        assert (await ns.ask("OnText", "a", timeout=T)).text == "A"
        assert (await ns.ask("OnRaw", b"ab", timeout=T)).body == b"ba"
        assert (await ns.ask("OnMessage", "m", timeout=T)).text == "OnMessage:m"
        assert codec.calls == 0
        assert await ask_json(ns, "OnCounts", {"a": 1}) == [1]
        assert codec.calls == 2  # loads the body, dumps the answer


async def test_plain_handlers_answer_with_the_servers_codec(serve: Serve) -> None:
    server = Server(codec=MsgpackCodec())

    @server.on("plain", "Stats")
    def stats(ns: NSConn, msg: Message) -> dict[str, int]:
        return {"length": len(msg.body)}

    url = await serve(server)
    async with await wsmvc.dial(url, {"plain": {}}) as conn:
        ns = await conn.connect("plain")
        reply = await ns.ask("Stats", "abc", timeout=T)
        assert reply.binary and msgpack.unpackb(reply.body) == {"length": 3}


def test_a_codec_is_checked_when_the_server_is_made() -> None:
    with pytest.raises(TypeError, match=r"is not a wsmvc.codecs.Codec: it needs loads, dumps"):
        Server(codec=object())  # type: ignore[arg-type]

    class NoFlag:
        name = "x"

        def loads(self, data: bytes) -> Any: ...
        def dumps(self, value: Any) -> bytes: ...

    with pytest.raises(TypeError, match=r"it needs binary \(a bool\)"):
        Server(codec=NoFlag())  # type: ignore[arg-type]
    assert Server().codec is JSON


# -- which types are bodies -------------------------------------------------------------------


class Service:
    """Not a body: a dependency, say."""


@attrs.define
class HoldsService:
    service: Service


def test_body_problem() -> None:
    for kind in (
        str,
        bytes,
        int,
        Point,
        Shape,
        Person,
        Signup,
        list[Account],
        dict[str, int],
        Point | None,
        Literal["a", "b"],
        tuple[int, ...],
        Any,
    ):
        assert body_problem(kind) is None, kind
    assert body_problem(Service) == (
        "Service is not a body type: a body is str, bytes, a pydantic model, an attrs class,"
        " a dataclass, or an int, float, bool, None, enum, datetime, list, tuple, set, dict,"
        " Optional, Union or Literal of those"
    )
    assert (problem := body_problem(list[Service])) is not None
    assert problem.startswith("Service is not a body type (inside list[Service]): ")
    assert (problem := body_problem(HoldsService)) is not None
    assert problem.startswith("Service is not a body type (inside HoldsService): ")
    assert body_problem(object) is not None


def test_encode_body() -> None:
    assert encode_body(b"\xff") == b"\xff"
    assert encode_body("é") == "é".encode()
    assert encode_body(Point(1)) == b'{"x":1,"y":0}'
    assert encode_body(Account(id=1, name="a", plan="p", created=WHEN), MsgpackCodec()) == (
        msgpack.packb({"id": 1, "name": "a", "plan": "p", "created": "2026-01-02T03:04:05"})
    )


class Fragile(pydantic.BaseModel):
    name: str

    @pydantic.field_validator("name")
    @classmethod
    def crash(cls, name: str) -> str:
        if name == "boom":
            raise KeyError("a bug in the validator")
        return name


@attrs.define
class Checked:
    name: str = attrs.field()

    @name.validator
    def _short(self, attribute: Any, value: str) -> None:
        if len(value) > 3:
            raise BodyError(f"body.name: at most 3 characters, not {len(value)}")


@controller(namespace="validators")
class Validators:
    @event
    def on_fragile(self, value: Fragile) -> str:
        return value.name

    @event
    def on_checked(self, value: Checked) -> str:
        return value.name


async def test_a_crashing_validator_is_a_bug_and_a_body_error_is_an_answer(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve(Server(controllers=[Validators]))
    async with await wsmvc.dial(url, {"validators": {}}) as conn:
        ns = await conn.connect("validators")
        assert await ask_error(ns, "OnChecked", '{"name": "long"}') == (
            "body.name: at most 3 characters, not 4"
        )
        assert (await ns.ask("OnChecked", '{"name": "ok"}', timeout=T)).text == "ok"
        assert not caplog.records
        assert await ask_error(ns, "OnFragile", '{"name": "boom"}') == "internal server error"
        [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)
        assert (await ns.ask("OnFragile", '{"name": "fine"}', timeout=T)).text == "fine"
