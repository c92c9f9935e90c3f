"""Every ```python block of ``docs/*.md`` runs, and does what the prose around it says.

The convention: each Python block is preceded by an HTML comment (invisible when the
markdown is rendered) saying how it is checked:

``<!-- test: run -->``
    the block runs without an exception.
``<!-- test: raises NAME: TEXT -->``
    running the block raises an exception of class ``NAME`` whose message contains ``TEXT``.
``<!-- test: serve CHECK -->``
    the block defines ``app``, an aiohttp application with a wsmvc server mounted. The test
    starts it on 127.0.0.1 (a free port) and awaits ``CHECKS["CHECK"](demo)`` below: real
    clients (``wsmvc.dial``) exchange messages with it and assert what the prose promises.
    An ERROR logged by the server fails the test unless the check expects it.
``<!-- test: client FN -->``
    the block defines ``async def FN(url=...)``, a client whose default URL's path is served
    by the nearest ``serve`` block above it in the same file. The test serves that block and
    awaits ``FN`` with the test server's URL; the snippet's own asserts are the check.
``<!-- test: pytest -->``
    the block is a test module (docs/testing.md): every ``async def test_*`` it defines is
    awaited in turn, with a timeout; the snippet's own asserts are the check.

The README's blocks are checked the same way as the guides'.

Each block runs as a fresh module (``wsmvc_docs_<file>_<line>``, never ``__main__``, so a
closing ``if __name__ == "__main__": web.run_app(app)`` is skipped), with the line numbers
of the markdown file, so a traceback points into the doc. A block without a marker, an
unknown marker, or a check that no block uses fails the suite. Nothing sleeps: every wait
is on a reply or an event, with a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import re
import sys
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import attrs
import pytest
from aiohttp import web

import wsmvc
from wsmvc import ClientConn, EventError, Message, NSConn
from wsmvc.handlers import Handler

DOCS = Path(__file__).resolve().parents[1] / "docs"
WAIT = 5.0  # seconds for one reply or pushed event
MODULE_PREFIX = "wsmvc_docs_"  # the modules blocks run as

FENCE_OPEN = re.compile(r"^```python\s*$")
FENCE_CLOSE = re.compile(r"^```\s*$")
MARKER = re.compile(r"^<!--\s*test:\s*(?P<spec>.*?)\s*-->\s*$")
RAISES = re.compile(r"^raises (?P<name>\w+): (?P<text>.+)$")
SERVE = re.compile(r"^serve (?P<check>\w+)$")
CLIENT = re.compile(r"^client (?P<fn>\w+)$")
README = DOCS.parent / "README.md"


# -- the blocks ---------------------------------------------------------------------------


@attrs.frozen
class Block:
    doc: Path
    line: int  # the line of the block's first code line in the doc (1-based)
    code: str
    spec: str | None  # the marker's text, None without a marker

    def __str__(self) -> str:
        return f"{self.doc.name}:{self.line}"

    def compile(self) -> types.CodeType:
        # Blank lines in front keep the doc's line numbers in tracebacks.
        return compile("\n" * (self.line - 1) + self.code, str(self.doc), "exec")


def blocks_of(doc: Path) -> Iterator[Block]:
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        if not FENCE_OPEN.match(lines[i]):
            i += 1
            continue
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        start = i + 1
        end = start
        while end < len(lines) and not FENCE_CLOSE.match(lines[end]):
            end += 1
        assert end < len(lines), f"{doc.name}:{i + 1}: the python block is never closed"
        code = "\n".join(lines[start:end]) + "\n"
        yield Block(doc, start + 1, code, marker.group("spec") if marker else None)
        i = end + 1


BLOCKS = [block for doc in [README, *sorted(DOCS.glob("*.md"))] for block in blocks_of(doc)]


def served_before(block: Block) -> Block:
    """The nearest ``serve`` block above ``block`` in its file."""
    above = [b for b in BLOCKS if b.doc == block.doc and b.line < block.line]
    for candidate in reversed(above):
        if candidate.spec and SERVE.match(candidate.spec):
            return candidate
    raise AssertionError(f"{block}: a client block needs a serve block above it")


@attrs.define
class Ran:
    """A block run as a module."""

    module: types.ModuleType
    error: BaseException | None


def run_block(block: Block) -> Ran:
    name = f"{MODULE_PREFIX}{block.doc.stem.replace('-', '_')}_{block.line}"
    module = types.ModuleType(name)
    module.__file__ = str(block.doc)
    # Registered while it runs: typing.get_type_hints looks classes' modules up there.
    sys.modules[name] = module
    try:
        exec(block.compile(), module.__dict__)
    except Exception as exc:
        return Ran(module, exc)
    return Ran(module, None)


@pytest.fixture(autouse=True)
def _forget_block_modules() -> Iterator[None]:
    yield
    for name in [n for n in sys.modules if n.startswith(MODULE_PREFIX)]:
        del sys.modules[name]


# -- what the serve checks use ------------------------------------------------------------


class Inbox:
    """Records what a client's handlers receive, per event, to be awaited in order."""

    def __init__(self) -> None:
        self._queues: collections.defaultdict[str, asyncio.Queue[Message]] = (
            collections.defaultdict(asyncio.Queue)
        )

    def handlers(self, *events: str, **answers: Callable[[Message], str]) -> dict[str, Handler]:
        """Recording handlers for ``events``; ``answers`` record and answer (a server's ask)."""

        def record(event: str, answer: Callable[[Message], str] | None) -> Handler:
            def handler(ns: NSConn, msg: Message) -> str | None:
                self._queues[event].put_nowait(msg)
                return answer(msg) if answer is not None else None

            return handler

        table = {event: record(event, None) for event in events}
        table.update({event: record(event, fn) for event, fn in answers.items()})
        return table

    async def next(self, event: str) -> Message:
        try:
            return await asyncio.wait_for(self._queues[event].get(), WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(f"the client got no {event!r} within {WAIT}s") from None

    def pending(self, event: str) -> int:
        return self._queues[event].qsize()


@attrs.define
class Demo:
    """A served block: its module, its address, and clients that are closed at the end."""

    module: types.ModuleType
    base: str
    capsys: pytest.CaptureFixture[str]
    caplog: pytest.LogCaptureFixture
    clients: list[ClientConn] = attrs.field(factory=list)
    errors_expected: bool = False

    def __getattr__(self, name: str) -> Any:
        """What the block defined: ``demo.server``, ``demo.injector``…"""
        try:
            return self.module.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None

    async def dial(
        self,
        path: str,
        namespaces: Mapping[str, Mapping[str, Handler]] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> ClientConn:
        conn = await wsmvc.dial(
            self.base + path, namespaces, headers=headers, timeout=WAIT, ask_timeout=WAIT
        )
        self.clients.append(conn)
        return conn

    async def connect(self, conn: ClientConn, namespace: str) -> NSConn:
        return await conn.connect(namespace, timeout=WAIT)

    def error_records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.levelno >= logging.ERROR]


async def ask_text(ns: NSConn, event: str, body: str = "") -> str:
    return (await ns.ask(event, body, timeout=WAIT)).text


async def ask_error(ns: NSConn, event: str, body: str = "") -> str:
    """The error text the server answers ``event`` with (failing if it answers normally)."""
    with pytest.raises(EventError) as refused:
        await ns.ask(event, body, timeout=WAIT)
    return refused.value.text


async def connect_error(demo: Demo, conn: ClientConn, namespace: str) -> str:
    with pytest.raises(EventError) as refused:
        await demo.connect(conn, namespace)
    assert conn.namespace(namespace) is None
    return refused.value.text


Check = Callable[[Demo], Awaitable[None]]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__] = fn
    return fn


# -- README.md ----------------------------------------------------------------------------


@check
async def readme(demo: Demo) -> None:
    alice_inbox, bob_inbox = Inbox(), Inbox()
    alice = await demo.dial("/echo", {"default": alice_inbox.handlers("OnChat")})
    bob = await demo.dial("/echo", {"default": bob_inbox.handlers("OnChat")})
    ns_alice = await demo.connect(alice, "default")
    ns_bob = await demo.connect(bob, "default")

    assert await ask_text(ns_alice, "ask", "hi") == "pong:hi"
    ns_alice.emit("OnChat", "hello")
    assert (await bob_inbox.next("OnChat")).text == "hello"
    # Not back to the sender: Bob's answer arrives, and nothing came before it.
    ns_bob.emit("OnChat", "hi alice")
    assert (await alice_inbox.next("OnChat")).text == "hi alice"
    assert alice_inbox.pending("OnChat") == 0
    with pytest.raises(EventError, match=r"^vip only$"):
        await ns_alice.join_room("vip", timeout=WAIT)
    assert (await ns_alice.join_room("lobby", timeout=WAIT)).name == "lobby"


# -- controllers.md -----------------------------------------------------------------------


@check
async def counter(demo: Demo) -> None:
    first = await demo.dial("/ws", {"chat": {}})
    second = await demo.dial("/ws", {"chat": {}})
    ns1 = await demo.connect(first, "chat")
    ns2 = await demo.connect(second, "chat")

    assert await ask_text(ns1, "OnSay", "hi") == f"{first.id} said 'hi' (1 so far)"
    assert await ask_text(ns1, "OnSay", "yo") == f"{first.id} said 'yo' (2 so far)"
    # Its own instance: the second client's count starts again.
    assert await ask_text(ns2, "OnSay", "hey") == f"{second.id} said 'hey' (1 so far)"


@check
async def answers(demo: Demo) -> None:
    inbox = Inbox()
    conn = await demo.dial("/api", {"api": inbox.handlers("OnPing", "OnQuiet")})
    ns = await demo.connect(conn, "api")

    assert await ask_text(ns, "OnPing") == "pong"
    assert await ask_text(ns, "stats") == '{"users":3,"rooms":1}'
    # After a plain emit, the answer comes back as the same event.
    ns.emit("OnPing")
    assert (await inbox.next("OnPing")).text == "pong"
    # None answers nothing: the server handles one client's messages in order, so when
    # the ask behind it is answered, an answer to OnQuiet would have arrived first.
    ns.emit("OnQuiet", "psst")
    assert await ask_text(ns, "OnPing") == "pong"
    assert inbox.pending("OnQuiet") == 0
    assert demo.capsys.readouterr().out == "got psst\n"

    assert await ask_text(ns, "OnDivide", "6/3") == "2.0"
    assert await ask_error(ns, "OnDivide", "1/0") == "cannot divide by zero"
    assert not demo.error_records()  # an EventError is an answer, not a failure
    demo.errors_expected = True
    assert await ask_error(ns, "OnDivide", "one/two") == "internal server error"
    [record] = demo.error_records()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    # The connection stays up.
    assert await ask_text(ns, "OnPing") == "pong"


@check
async def exceptions(demo: Demo) -> None:
    conn = await demo.dial("/ws", {"shop": {}})
    shop = await demo.connect(conn, "shop")
    assert await ask_text(shop, "OnBuy", "tea") == "bought tea"
    assert await ask_error(shop, "OnBuy", "unicorn") == "no unicorn left, sorry"
    with demo.caplog.at_level(logging.INFO, logger="shop"):
        assert await ask_error(shop, "OnBuy") == "invalid: buy what?"
    assert [r.getMessage() for r in demo.caplog.records if r.name == "shop"] == [
        f"{conn.id} sent an invalid OnBuy: buy what?"
    ]
    assert not demo.error_records()


@check
async def known_errors(demo: Demo) -> None:
    players = [await demo.dial("/ws", {"cards": {}, "poker": {}}) for _ in range(3)]
    tables = [await demo.connect(player, "cards") for player in players]
    await tables[0].join_room("table-1", timeout=WAIT)
    await tables[1].join_room("table-1", timeout=WAIT)
    with pytest.raises(demo.TableFull) as full:
        await tables[2].join_room("table-1", timeout=WAIT)
    assert full.value.text == "the table is full"
    assert isinstance(full.value, EventError)
    assert list(tables[2].rooms) == []
    # neffos' own known errors come back as their classes too (the server has no poker).
    with pytest.raises(wsmvc.BadNamespace):
        await players[2].connect("poker", timeout=WAIT)


@check
async def taps(demo: Demo) -> None:
    conn = await demo.dial("/ws", {"echo": {}})
    echo = await demo.connect(conn, "echo")
    with demo.caplog.at_level(logging.DEBUG, logger="wire"):
        assert await ask_text(echo, "OnEcho", "hi") == "hi"
        echo.emit("OnTypo")
        assert await ask_text(echo, "OnEcho", "again") == "again"  # OnTypo was handled before
    assert dict(demo.counts) == {
        ("in", "_OnNamespaceConnect", "handled"): 1,
        ("in", "OnEcho", "handled"): 2,
        ("out", "OnEcho", "sent"): 2,
        ("in", "OnTypo", "unhandled"): 1,
    }
    assert set(demo.slowest) == {"_OnNamespaceConnect", "OnEcho", "OnTypo"}
    lines = [r.getMessage() for r in demo.caplog.records if r.name == "wire"]
    assert f"{conn.id} in echo/OnEcho: handled" in lines
    assert f"{conn.id} out echo/OnEcho: sent" in lines
    [warning] = [r for r in demo.caplog.records if r.levelno == logging.WARNING]
    assert "no handler for event 'OnTypo' in namespace 'echo'" in warning.getMessage()


@check
async def dynamic(demo: Demo) -> None:
    chats: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def on_chat(ns: NSConn, msg: Message) -> None:
        chats.put_nowait((ns.namespace, msg.text))

    rooms = {name: {"OnChat": on_chat} for name in ("room-7", "room-8", "room-lobby")}
    alice = await demo.dial("/ws", rooms | {"room-x": {}, "hall-1": {}})
    bob = await demo.dial("/ws", rooms)
    seven = await demo.connect(alice, "room-7")
    bob_seven = await demo.connect(bob, "room-7")
    await demo.connect(bob, "room-8")
    assert await ask_text(seven, "OnWhich") == "room-7, number 7"
    lobby = await demo.connect(alice, "room-lobby")
    assert await ask_text(lobby, "OnWhich") == "the lobby"
    assert await connect_error(demo, alice, "room-x") == "rooms are numbered"
    assert await connect_error(demo, alice, "hall-1") == "bad namespace"
    seven.emit("OnChat", "hi 7")
    assert await asyncio.wait_for(chats.get(), WAIT) == ("room-7", "hi 7")  # bob's room-7
    assert await ask_text(bob_seven, "OnWhich") == "room-7, number 7"  # after the chat
    assert chats.empty()  # not bob's room-8, not alice herself


@check
async def typed(demo: Demo) -> None:
    conn = await demo.dial("/ws", {"chat": {}})
    ns = await demo.connect(conn, "chat")

    assert await ask_text(ns, "OnChat", '{"text": "hello", "priority": 9}') == (
        '{"length":5,"urgent":true}'
    )
    assert await ask_text(ns, "OnShout", "not json, just text") == "NOT JSON, JUST TEXT"
    # The table of error texts.
    assert await ask_error(ns, "OnChat", "hello") == (
        "body: invalid JSON (Expecting value: line 1 column 1 (char 0))"
    )
    assert await ask_error(ns, "OnChat", "{}") == "body.text: required field missing"
    assert await ask_error(ns, "OnChat", '{"text": "hi", "priority": "high"}') == (
        "body.priority: expected an integer"
    )
    assert await ask_error(ns, "OnChat", '{"priority": "high"}') == (
        "body.text: required field missing; body.priority: expected an integer"
    )
    # cattrs' leniency: unknown keys ignored, a number for a str arrives as its text.
    assert await ask_text(ns, "OnChat", '{"text": "hi", "mood": "happy"}') == (
        '{"length":2,"urgent":false}'
    )
    assert await ask_text(ns, "OnChat", '{"text": 12345}') == '{"length":5,"urgent":false}'
    # The connection stayed up, and the server logged nothing about the bad bodies.
    assert not conn.closed
    assert not [r for r in demo.caplog.records if r.name.startswith("wsmvc")]


@check
async def pydantic_bodies(demo: Demo) -> None:
    conn = await demo.dial("/ws", {"signup": {}})
    ns = await demo.connect(conn, "signup")
    assert await ask_text(ns, "OnSignup", '{"name": "Ada", "age": 36}') == (
        '{"greeting":"welcome, Ada","adult":true}'
    )
    assert await ask_error(ns, "OnSignup", '{"name": "Ada"}') == "body.age: Field required"
    assert await ask_error(ns, "OnSignup", '{"name": "Ada", "age": 9}') == (
        "body.age: Input should be greater than or equal to 13"
    )
    assert await ask_error(ns, "OnSignup", '{"name": "admin", "age": 30}') == (
        "body.name: Value error, that name is taken"
    )
    assert not conn.closed
    assert not demo.error_records()


@check
async def orjson_codec(demo: Demo) -> None:
    conn = await demo.dial("/ws", {"geo": {}})
    ns = await demo.connect(conn, "geo")
    assert await ask_text(ns, "OnCentre", '[{"x": 0, "y": 0}, {"x": 2, "y": 4}]') == (
        '{"x":1.0,"y":2.0}'
    )
    assert await ask_error(ns, "OnCentre", '[{"x": 0}]') == "body[0].y: required field missing"
    assert await ask_error(ns, "OnCentre", "[]") == "no points"
    assert (await ask_error(ns, "OnCentre", "[" * 2000 + "]" * 2000)).startswith(
        "body: invalid JSON ("
    )
    assert await ask_error(ns, "OnCentre", "[" * 65 + "]" * 65) == (
        "body: nested deeper than 64 levels"
    )
    assert not demo.error_records()


@check
async def msgpack_codec(demo: Demo) -> None:
    import msgpack

    conn = await demo.dial("/ws", {"telemetry": {}})
    await demo.connect(conn, "telemetry")
    body = msgpack.packb({"sensor": "s", "values": [1.5, 3.0]})
    request = Message(namespace="telemetry", event="OnReading", body=body, binary=True)
    answer = await conn.ask(request, timeout=WAIT)
    assert answer.binary  # msgpack is not UTF-8: a binary frame
    assert msgpack.unpackb(answer.body) == {"sensor": "s", "count": 2, "peak": 3.0}
    assert not demo.error_records()


@check
async def refusals(demo: Demo) -> None:
    stranger = await demo.dial("/ws", {"lobby": {}})
    assert await connect_error(demo, stranger, "lobby") == "who are you?"
    assert not stranger.closed  # the websocket stays open

    inbox = Inbox()
    member = await demo.dial("/ws?token=let-me-in", {"lobby": inbox.handlers()})
    ns = await demo.connect(member, "lobby")
    with pytest.raises(EventError) as refused:
        await ns.join_room("admin-room", timeout=WAIT)
    assert refused.value.text == "admins only"
    room = await ns.join_room("general", timeout=WAIT)
    assert room.name == "general"
    assert list(ns.rooms) == ["general"]
    assert await ask_text(ns, "Dance") == "no handler for Dance"


@check
async def namespaces(demo: Demo) -> None:
    conn = await demo.dial("/ws", {"rooms": {}, "v1": {}, "v2": {}})
    rooms = await demo.connect(conn, "rooms")
    assert await ask_text(rooms, "OnHello") == "hello from rooms"
    assert await connect_error(demo, conn, "v1") == "bad namespace"
    v2 = await demo.connect(conn, "v2")
    assert await ask_text(v2, "OnVersion") == "2.0"
    assert demo.handle.namespace == "v2"


@check
async def sending(demo: Demo) -> None:
    def player(answer: str) -> tuple[Inbox, dict[str, Mapping[str, Handler]]]:
        inbox = Inbox()
        events = inbox.handlers("OnWelcome", "OnNews", OnQuestion=lambda msg: answer)
        return inbox, {"quiz": events}

    alice_inbox, alice_events = player("4")
    bob_inbox, bob_events = player("5")
    alice = await demo.dial("/ws", alice_events)
    bob = await demo.dial("/ws", bob_events)
    alice_ns = await demo.connect(alice, "quiz")
    bob_ns = await demo.connect(bob, "quiz")
    assert (await alice_inbox.next("OnWelcome")).text == f"welcome, {alice.id}"
    assert (await bob_inbox.next("OnWelcome")).text == f"welcome, {bob.id}"

    assert await ask_text(alice_ns, "OnStart") == "4 is right"
    assert (await alice_inbox.next("OnQuestion")).text == "2 + 2 = ?"
    assert (await bob_inbox.next("OnNews")).text == "someone was right"
    # The broadcast was written before the answer: had it reached Alice, it would be here.
    assert alice_inbox.pending("OnNews") == 0

    assert await ask_text(bob_ns, "OnStart") == "5 is wrong"
    assert (await alice_inbox.next("OnNews")).text == "someone was wrong"
    assert bob_inbox.pending("OnNews") == 0


# -- dependency-injection.md --------------------------------------------------------------


@check
async def history(demo: Demo) -> None:
    first_inbox, second_inbox, third_inbox = Inbox(), Inbox(), Inbox()
    first = await demo.dial("/ws", {"chat": first_inbox.handlers("OnWelcome")})
    second = await demo.dial("/ws", {"chat": second_inbox.handlers("OnSay")})
    first_ns = await demo.connect(first, "chat")
    await demo.connect(second, "chat")
    assert (await first_inbox.next("OnWelcome")).text == "welcome; lately: "

    for line in "abcd":
        first_ns.emit("OnSay", line)
    # History.add runs before the broadcast: once "d" arrived, the history holds it.
    assert [(await second_inbox.next("OnSay")).text for _ in "abcd"] == list("abcd")

    third = await demo.dial("/ws", {"chat": third_inbox.handlers("OnWelcome")})
    await demo.connect(third, "chat")
    assert (await third_inbox.next("OnWelcome")).text == "welcome; lately: b | c | d"


@check
async def cart(demo: Demo) -> None:
    ann = await demo.dial("/ws", {"shop": {}, "checkout": {}}, headers={"X-User": "ann"})
    shop = await demo.connect(ann, "shop")
    assert await ask_text(shop, "OnAdd", "apple") == "1"
    assert await ask_text(shop, "OnAdd", "pear") == "2"
    checkout = await demo.connect(ann, "checkout")
    assert await ask_text(checkout, "OnTotal") == "ann buys apple, pear"

    guest = await demo.dial("/ws", {"shop": {}, "checkout": {}})
    assert await ask_text(await demo.connect(guest, "checkout"), "OnTotal") == (
        "guest buys nothing"
    )
    assert await ask_text(await demo.connect(guest, "shop"), "OnAdd", "fig") == "1"
    # Ann's cart did not change.
    assert await ask_text(checkout, "OnTotal") == "ann buys apple, pear"


@check
async def singletons(demo: Demo) -> None:
    assert demo.opened == ["database"]  # at startup, before any client
    first = await demo.dial("/ws", {"db": {}})
    second = await demo.dial("/ws", {"db": {}})
    assert await ask_text(await demo.connect(first, "db"), "OnQuery") == "query #1"
    assert await ask_text(await demo.connect(second, "db"), "OnQuery") == "query #2"
    assert demo.opened == ["database"]
    assert demo.injector.get(demo.Database).queries == 2


@check
async def failing(demo: Demo) -> None:
    demo.errors_expected = True
    conn = await demo.dial("/ws", {"news": {}, "premium": {}})
    assert await connect_error(demo, conn, "news") == "internal server error"
    expected = (
        f"cannot create News for connection {conn.id!r} in namespace 'news':"
        " ConnectionError: feed service unavailable"
    )
    [record] = demo.error_records()
    assert record.exc_info is not None
    failure = record.exc_info[1]
    assert type(failure).__name__ == "DependencyFailure"
    assert str(failure) == expected
    assert demo.caplog.text.rstrip().endswith("DependencyFailure: " + expected)

    # A provider's EventError refuses with its text, and is no failure: nothing logged.
    demo.caplog.clear()
    assert await connect_error(demo, conn, "premium") == "subscribers only"
    assert not demo.caplog.records
    # The websocket stayed up; a subscriber gets in.
    assert not conn.closed
    zoe = await demo.dial("/ws", {"premium": {}}, headers={"X-Subscriber": "zoe"})
    assert await ask_text(await demo.connect(zoe, "premium"), "OnHello") == "hello, zoe"

    # With debug_errors, the client gets the failure's text.
    demo.server.debug_errors = True
    debug = await demo.dial("/ws", {"news": {}})
    assert await connect_error(demo, debug, "news") == "DependencyFailure: " + expected.replace(
        repr(conn.id), repr(debug.id)
    )


@check
async def notes(demo: Demo) -> None:
    first = await demo.connect(await demo.dial("/ws", {"notes": {}}), "notes")
    assert await ask_text(first, "OnDraft", "a") == "1 draft(s)"
    assert await ask_text(first, "OnDraft", "b") == "2 draft(s)"
    second = await demo.connect(await demo.dial("/ws", {"notes": {}}), "notes")
    assert await ask_text(second, "OnDraft", "c") == "1 draft(s)"  # its own Drafts
    logger = f"{demo.Notes.__module__}.Notes"
    with demo.caplog.at_level(logging.WARNING, logger=logger):
        assert await ask_error(second, "OnDraft", "d") == "slow down"  # the address's 4th
    assert [(r.name, r.getMessage()) for r in demo.caplog.records if r.name == logger] == [
        (logger, "127.0.0.1 sends too many drafts")
    ]


@check
async def greeter(demo: Demo) -> None:
    ann = await demo.dial("/ws", {"hello": {}}, headers={"X-User": "ann"})
    bob = await demo.dial("/ws", {"hello": {}}, headers={"X-User": "bob"})
    assert await ask_text(await demo.connect(ann, "hello"), "OnGreet") == "hello ann"
    assert await ask_text(await demo.connect(bob, "hello"), "OnGreet") == "hello bob"


@check
async def pool(demo: Demo) -> None:
    the_pool = demo.server.injector.get(demo.Pool)  # awaited at startup
    client = await demo.dial("/ws", {"orders": {}})
    orders = await demo.connect(client, "orders")
    assert the_pool.lent == 1
    assert await ask_text(orders, "OnOrder", "apple") == "ordered"
    (member,) = demo.server.namespace_members("orders")
    await client.close()
    await asyncio.wait_for(member.conn.wait_closed(), WAIT)  # its objects closed too
    assert the_pool.log == ["insert apple", "insert goodbye"]
    assert the_pool.lent == 0


# -- the test -----------------------------------------------------------------------------


@pytest.fixture
async def started() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"ws://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


def test_docs_have_python_blocks() -> None:
    assert {block.doc.name for block in BLOCKS} >= {"controllers.md", "dependency-injection.md"}


def test_every_check_is_used() -> None:
    used = {m.group("check") for b in BLOCKS if b.spec and (m := SERVE.match(b.spec))}
    assert set(CHECKS) - used == set()


@pytest.mark.parametrize("block", BLOCKS, ids=str)
async def test_block(
    block: Block,
    started: Callable[[web.Application], Awaitable[str]],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert block.spec is not None, (
        f"{block}: put a marker before the block: <!-- test: run | raises NAME: TEXT |"
        " serve CHECK | client FN | pytest --> (see tests/test_docs.py)"
    )
    ran = run_block(block)
    if block.spec == "run":
        if ran.error is not None:
            raise ran.error
        return
    if block.spec == "pytest":
        if ran.error is not None:
            raise ran.error
        tests = [
            fn
            for name, fn in ran.module.__dict__.items()
            if name.startswith("test_") and inspect.iscoroutinefunction(fn)
        ]
        assert tests, f"{block}: a pytest block defines async test_* functions"
        for test in tests:
            await asyncio.wait_for(test(), WAIT * 2)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        return
    raises = RAISES.match(block.spec)
    if raises is not None:
        assert ran.error is not None, f"{block} ran without raising {raises.group('name')}"
        assert type(ran.error).__name__ == raises.group("name"), repr(ran.error)
        assert raises.group("text") in str(ran.error)
        return
    client = CLIENT.match(block.spec)
    if client is not None:
        if ran.error is not None:
            raise ran.error
        server = run_block(served_before(block))
        if server.error is not None:
            raise server.error
        base = await started(server.module.__dict__["app"])
        talk = ran.module.__dict__[client.group("fn")]
        default = inspect.signature(talk).parameters["url"].default
        await asyncio.wait_for(talk(base + urlsplit(default).path), WAIT * 2)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        return
    serve = SERVE.match(block.spec)
    assert serve is not None, f"{block}: unknown marker {block.spec!r}"
    assert serve.group("check") in CHECKS, f"{block}: no check named {serve.group('check')!r}"
    if ran.error is not None:
        raise ran.error
    app = ran.module.__dict__.get("app")
    assert isinstance(app, web.Application), f"{block}: a served block defines `app`"

    demo = Demo(ran.module, await started(app), capsys, caplog)
    try:
        await CHECKS[serve.group("check")](demo)
    finally:
        for client in demo.clients:
            await client.close()
    if not demo.errors_expected:
        assert not demo.error_records(), caplog.text


# == The guides: getting-started, rooms-and-broadcast, ask-reply, deploying, coming-from-* ==
#
# (docs/testing.md has `pytest` blocks only: their own test functions are the check.)


def http_url(demo: Demo, path: str) -> str:
    return "http" + demo.base[len("ws") :] + path


async def post(demo: Demo, path: str, body: str = "") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(http_url(demo, path), data=body.encode()) as response,
    ):
        return response.status, await response.text()


async def handshake_status(demo: Demo, path: str, headers: Mapping[str, str]) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await demo.dial(path, {}, headers=headers)
    return refused.value.status


# -- getting-started.md -------------------------------------------------------------------


@check
async def getting_started(demo: Demo) -> None:
    ann_inbox, bob_inbox = Inbox(), Inbox()
    ann = await demo.dial("/chat", {"chat": ann_inbox.handlers("OnWelcome", "OnSay")})
    bob = await demo.dial("/chat", {"chat": bob_inbox.handlers("OnWelcome", "OnSay")})
    ann_chat = await demo.connect(ann, "chat")
    bob_chat = await demo.connect(bob, "chat")
    assert (await ann_inbox.next("OnWelcome")).text == f"welcome, {ann.id}"
    assert (await bob_inbox.next("OnWelcome")).text == f"welcome, {bob.id}"

    assert await ask_text(ann_chat, "OnName", "ann") == "you are ann"
    ann_chat.emit("OnSay", "hello")
    assert (await bob_inbox.next("OnSay")).text == "ann: hello"
    bob_chat.emit("OnSay", "hi")  # Bob never said his name
    assert (await ann_inbox.next("OnSay")).text == "anonymous: hi"
    assert ann_inbox.pending("OnSay") == 0  # her own "hello" would have come first


# -- rooms-and-broadcast.md ---------------------------------------------------------------


@check
async def rooms_both_ways(demo: Demo) -> None:
    inbox = Inbox()
    conn = await demo.dial("/ws", {"game": inbox.handlers("_OnRoomJoined", "_OnRoomLeft")})
    game = await demo.connect(conn, "game")
    with pytest.raises(EventError, match=r"^wait to be matched$"):
        await game.join_room("match-1", timeout=WAIT)
    assert list(game.rooms) == []

    assert await ask_text(game, "OnQueue") == "match-1 has 1 player(s)"
    assert (await inbox.next("_OnRoomJoined")).room == "match-1"  # the client's handler ran
    assert list(game.rooms) == ["match-1"]

    other = await demo.connect(await demo.dial("/ws", {"game": {}}), "game")
    await other.join_room("lobby", timeout=WAIT)  # any other room: the client joins itself
    assert await ask_text(other, "OnQueue") == "match-1 has 2 player(s)"
    assert await ask_text(game, "OnRooms") == "lobby, match-1"

    assert await ask_text(game, "OnForfeit") == "rooms: none"
    assert (await inbox.next("_OnRoomLeft")).room == "match-1"
    assert list(game.rooms) == []
    assert await ask_text(other, "OnForfeit") == "rooms: lobby"
    assert await ask_text(other, "OnRooms") == "lobby"


@check
async def several_rooms(demo: Demo) -> None:
    inboxes = {name: Inbox() for name in ("ann", "bob", "cid", "dot")}
    rooms = {"ann": ["red", "blue"], "bob": ["blue"], "cid": ["red", "muted"], "dot": []}
    ns = {}
    for name, inbox in inboxes.items():
        conn = await demo.dial(f"/ws?user={name}", {"alerts": inbox.handlers("OnAlert")})
        ns[name] = await demo.connect(conn, "alerts")
        for room in rooms[name]:
            await ns[name].join_room(room, timeout=WAIT)
    ns["ann"].emit("OnAlert", "first")
    got = await inboxes["bob"].next("OnAlert")
    assert (got.text, got.room) == ("first", "blue")
    ns["dot"].emit("OnAlert", "fence")  # Dot is in no room: only the room members get it
    assert (await inboxes["ann"].next("OnAlert")).text == "fence"  # not "first"
    assert (await inboxes["bob"].next("OnAlert")).text == "fence"  # once, not twice
    assert inboxes["cid"].pending("OnAlert") == 0 and inboxes["dot"].pending("OnAlert") == 0


@check
async def broadcast_forms(demo: Demo) -> None:
    events = ("OnPost", "OnWhisper", "OnNotMe", "OnAnnounce")
    ann_inbox, bob1_inbox, bob2_inbox = Inbox(), Inbox(), Inbox()
    ann = await demo.connect(
        await demo.dial("/ws?user=ann", {"news": ann_inbox.handlers(*events)}), "news"
    )
    bob1 = await demo.connect(
        await demo.dial("/ws?user=bob", {"news": bob1_inbox.handlers(*events)}), "news"
    )
    await demo.connect(  # Bob's second tab
        await demo.dial("/ws?user=bob", {"news": bob2_inbox.handlers(*events)}), "news"
    )

    # The namespace, then a room, then the namespace again.
    sports = await ann.join_room("sports", timeout=WAIT)
    await bob1.join_room("sports", timeout=WAIT)
    ann.emit("OnPost", "hello")
    sports.emit("OnPost", "goal")
    bob1.emit("OnPost", "hey")
    got = [await bob1_inbox.next("OnPost") for _ in "ab"]
    assert [(msg.text, msg.room) for msg in got] == [("hello", ""), ("goal", "sports")]
    assert [(await bob2_inbox.next("OnPost")).text for _ in "ab"] == ["hello", "hey"]
    first = await ann_inbox.next("OnPost")
    assert (first.text, first.room) == ("hey", "")  # her own two never came back

    # to= reaches both tabs of Bob; exclude="bob" none of them.
    assert await ask_text(ann, "OnWhisper", "bob:hi") == "sent"
    assert (await bob1_inbox.next("OnWhisper")).text == "ann: hi"
    assert (await bob2_inbox.next("OnWhisper")).text == "ann: hi"
    assert bob1_inbox.pending("OnPost") == 0  # his own "hey" would have come before
    bob1.emit("OnNotMe", "psst")
    assert (await ann_inbox.next("OnNotMe")).text == "psst"

    # From an HTTP handler, outside any websocket event: all three.
    assert await post(demo, "/announce", "news!") == (200, "3 listening\n")
    for inbox in (ann_inbox, bob1_inbox, bob2_inbox):
        assert (await inbox.next("OnAnnounce")).text == "news!"
        assert inbox.pending("OnNotMe") == 0  # Bob's tabs got no OnNotMe before it
    assert ann_inbox.pending("OnWhisper") == 0


# -- ask-reply.md -------------------------------------------------------------------------


@check
async def ask_server(demo: Demo) -> None:
    inbox = Inbox()
    conn = await demo.dial("/ws", {"shop": inbox.handlers("OnLog")})
    shop = await demo.connect(conn, "shop")
    assert await ask_text(shop, "OnPrice", "apple") == "0.50"
    assert await ask_error(shop, "OnPrice", "pear") == "no pear here"
    shop.emit("OnLog", "just saying")
    assert await ask_text(shop, "OnPrice", "apple") == "0.50"
    assert inbox.pending("OnLog") == 0  # None answered nothing
    assert demo.capsys.readouterr().out == "client says: just saying\n"
    with pytest.raises(wsmvc.AskTimeout):
        await shop.ask("OnLog", "anyone?", timeout=0.2)


@check
async def ask_client(demo: Demo) -> None:
    def contestant(answer: Callable[[Message], str]) -> dict[str, Mapping[str, Handler]]:
        def question(ns: NSConn, msg: Message) -> str:
            assert msg.text == "2 + 2 = ?"
            return answer(msg)

        return {"quiz": {"OnQuestion": question, "OnPoke": lambda ns, msg: f"poked {msg.text}"}}

    def refuse(msg: Message) -> str:
        raise EventError("no maths today")

    right = await demo.connect(await demo.dial("/ws", contestant(lambda msg: "4")), "quiz")
    wrong = await demo.connect(await demo.dial("/ws", contestant(lambda msg: "5")), "quiz")
    grump = await demo.connect(await demo.dial("/ws", contestant(refuse)), "quiz")
    assert await ask_text(right, "OnStart") == "right"
    assert await ask_text(wrong, "OnStart") == "wrong"
    # The client's error, not caught by the handler, answers OnStart with the same text.
    assert await ask_error(grump, "OnStart") == "no maths today"

    assert await post(demo, f"/poke/{right.id}", "hello") == (200, "poked hello")
    assert await post(demo, "/poke/nobody", "hello") == (502, "bad namespace")


# -- lifecycle.md -------------------------------------------------------------------------


async def logged(log: list[str], line: str) -> None:
    """Wait (checking every 10 ms, at most WAIT seconds) until ``line`` is in ``log``."""
    for _ in range(int(WAIT * 100)):
        if line in log:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{line!r} never logged: {log}")


@check
async def lifecycle(demo: Demo) -> None:
    log: list[str] = demo.log
    conn = await demo.dial("/ws", {"game": {}})
    game = await demo.connect(conn, "game")
    # The Python client's ask fails the moment its namespace is gone (neffos.js: the
    # server's "bad namespace" answer); either way at once, not at the ask's timeout.
    with pytest.raises(wsmvc.ConnectionClosed):
        await asyncio.wait_for(game.ask("OnKick", timeout=60), WAIT)
    await logged(log, "disconnect event, forced=False")
    assert log == ["kick returns", "disconnect event, forced=False"]

    game = await demo.connect(conn, "game")
    game.emit("OnQuit")
    await asyncio.wait_for(conn.wait_closed(), WAIT)
    assert conn.close_code == 4000
    await logged(log, "on_disconnect")
    assert log[2:] == ["after close, emit: False", "disconnect event, forced=True", "on_disconnect"]


@check
async def close_reasons(demo: Demo) -> None:
    log: list[str] = demo.log
    alice = await demo.dial("/ws", {"chat": {}})
    await demo.connect(alice, "chat")
    await alice.close()
    await logged(log, "gone: CLIENT_CLOSED (1000)")
    assert log == ["left chat: client closed", "gone: CLIENT_CLOSED (1000)"]

    bob = await demo.dial("/ws", {"chat": {}})
    chat = await demo.connect(bob, "chat")
    chat.emit("OnBan")
    await logged(log, "gone: SERVER_CLOSED (4003)")
    assert log[2:] == ["left chat: server closed", "gone: SERVER_CLOSED (4003)"]
    # The client knows it was closed by the server, with the code it chose.
    await asyncio.wait_for(bob.wait_closed(), WAIT)
    assert (bob.close_reason, bob.close_code) == (wsmvc.CloseReason.SERVER_CLOSED, 4003)
    assert dict(demo.closes) == {
        wsmvc.CloseReason.CLIENT_CLOSED: 1,
        wsmvc.CloseReason.SERVER_CLOSED: 1,
    }


# -- deploying.md -------------------------------------------------------------------------


@check
async def deploying(demo: Demo) -> None:
    site = {"Origin": "https://chat.example.com"}
    ann = await demo.dial("/ws", {"chat": {}}, headers=site)
    inbox = Inbox()
    bob = await demo.dial("/ws", {"chat": inbox.handlers("OnSay")})  # no Origin: not a browser
    (await demo.connect(ann, "chat")).emit("OnSay", "hi")
    await demo.connect(bob, "chat")
    assert await handshake_status(demo, "/ws", {"Origin": "https://evil.example"}) == 403
    assert "not in allowed_origins" in demo.caplog.text

    async with aiohttp.ClientSession() as http, http.get(http_url(demo, "/healthz")) as health:
        assert await health.json() == {"connections": 2}

    # What SIGTERM does through app.on_shutdown: 1001 for everyone, disconnect events run.
    await demo.server.close()
    for conn in (ann, bob):
        await asyncio.wait_for(conn.wait_closed(), WAIT)
        assert conn.close_code == 1001
    out = demo.capsys.readouterr().out
    assert f"{ann.id} left (forced=True)" in out and f"{bob.id} left (forced=True)" in out
    assert await handshake_status(demo, "/ws", site) == 503


@check
async def origins_behind_proxy(demo: Demo) -> None:
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.com"}
    page = await demo.dial(
        "/ws", {"chat": {}}, headers={**proxy, "Origin": "https://chat.example.com"}
    )
    await demo.connect(page, "chat")
    for origin in ("http://chat.example.com", "https://evil.example"):
        assert await handshake_status(demo, "/ws", {**proxy, "Origin": origin}) == 403


@check
async def token_auth(demo: Demo) -> None:
    def offering(token: str) -> dict[str, str]:  # what a browser's protocols become
        return {"Sec-WebSocket-Protocol": f"access_token, {token}"}

    ann = await demo.dial("/ws", {"chat": {}}, headers=offering("s3cret-ann"))
    assert await ask_text(await demo.connect(ann, "chat"), "OnWhoami") == "ann"
    for token in ("wrong", ""):
        with pytest.raises(wsmvc.Reject, match=r"^not signed in$"):
            await demo.dial("/ws", {"chat": {}}, headers=offering(token))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            demo.base + "/ws", protocols=["access_token", "s3cret-ann"]
        ) as ws:
            assert ws.protocol == "access_token"  # agreed; the token is never echoed
            # (it never sends neffos' M: no on_connect, so no on_disconnect either)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(demo.base + "/ws", protocols=["graphql-ws"])
        assert refused.value.status == 400
    await ann.close()
    server = demo.server
    await server.close()
    out = demo.capsys.readouterr().out.splitlines()
    assert sorted(out) == ["gone: a refused client", "gone: a refused client", "gone: ann"]


@check
async def limits(demo: Demo) -> None:
    conn = await demo.dial("/ws", {"game": {}})
    game = await demo.connect(conn, "game")
    for i in range(20):
        await game.join_room(f"table-{i}", timeout=WAIT)
    with pytest.raises(EventError, match=r"^too many rooms: at most 20 per namespace$"):
        await game.join_room("table-20", timeout=WAIT)
    await game.leave_room("table-0", timeout=WAIT)
    with pytest.raises(EventError, match=r"^room name too long: 65 bytes, at most 64$"):
        await game.join_room("t" * 65, timeout=WAIT)
    other = await demo.dial("/ws", {"game": {}})
    with pytest.raises(EventError, match=r"^connect payload too large: 1025 bytes, at most 1024$"):
        await other.connect("game", payload="p" * 1025, timeout=WAIT)


# -- coming-from-neffos.md ----------------------------------------------------------------


@check
async def from_neffos(demo: Demo) -> None:
    with pytest.raises(wsmvc.Reject, match=r"^who are you\?$"):
        await demo.dial("/echo", {"default": {}})
    alice_inbox, bob_inbox = Inbox(), Inbox()
    alice = await demo.dial(
        "/echo", {"default": alice_inbox.handlers("OnChat")}, headers={"X-Username": "alice"}
    )
    bob = await demo.dial(
        "/echo",
        {"default": bob_inbox.handlers("OnChat", "OnWhisper")},
        headers={"X-Username": "bob"},
    )
    assert (alice.id, bob.id) == ("alice", "bob")
    alice_ns = await demo.connect(alice, "default")
    await demo.connect(bob, "default")
    assert demo.capsys.readouterr().out == "alice connected\nbob connected\n"

    alice_ns.emit("OnChat", "hi all")
    assert (await bob_inbox.next("OnChat")).text == "hi all"
    assert await ask_text(alice_ns, "OnWhisper", "bob:psst") == "sent"
    assert (await bob_inbox.next("OnWhisper")).text == "alice: psst"
    assert alice_inbox.pending("OnChat") == 0


# -- coming-from-python-socketio.md -------------------------------------------------------


@check
async def from_socketio(demo: Demo) -> None:
    stranger = await demo.dial("/ws", {"chat": {}})
    assert await connect_error(demo, stranger, "chat") == "unauthorized"

    ann_inbox, bob_inbox, carl_inbox = Inbox(), Inbox(), Inbox()
    ann = await demo.connect(
        await demo.dial("/ws?token=s3cret", {"chat": ann_inbox.handlers("message")}), "chat"
    )
    bob = await demo.connect(
        await demo.dial("/ws?token=s3cret", {"chat": bob_inbox.handlers("message")}), "chat"
    )
    carl = await demo.connect(
        await demo.dial("/ws?token=s3cret", {"chat": carl_inbox.handlers("message")}), "chat"
    )
    assert await ask_text(ann, "join", "lobby") == "joined lobby"
    assert list(ann.rooms) == ["lobby"]  # the server's join reached the client
    assert await ask_text(bob, "join", "lobby") == "joined lobby"

    ann.emit("message", '{"room": "lobby", "text": "hi"}')
    relayed = await bob_inbox.next("message")
    assert (relayed.room, relayed.text) == ("lobby", "hi")
    # Written to every receiver at once: had Carl been one, it would precede his answer.
    assert await ask_error(carl, "message", '{"room": "lobby", "text": "me too"}') == (
        "join lobby first"
    )
    assert carl_inbox.pending("message") == 0
    assert await ask_text(ann, "whoami") == ann.conn.id
    assert ann_inbox.pending("message") == 0
