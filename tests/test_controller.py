"""Controllers: ``@controller`` classes, ``@event`` methods, their names, namespaces, system
events, replies, typed bodies and registration errors.

Everything behavioural runs a real server on loopback and talks to it with the Python client;
classes that are only inspected (wire names, the event table) are unit-tested. Server-side
observations go into a :class:`Journal` bound as a root singleton, so every controller instance
of a test writes to the same list. Nothing here sleeps: a test waits on the journal or uses an
ask as a barrier (one connection's messages are handled in arrival order, so once the server
answered an ask, everything it did for the earlier messages is done).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import attrs
import pytest
from injector import Binder, Module, provider, singleton

import wsmvc
from wsmvc import (
    ControllerError,
    ControllerWarning,
    DependencyError,
    EventError,
    Message,
    NSConn,
    Reply,
    Server,
    controller,
    event,
)
from wsmvc.controller import spec_of, wire_name

from .conftest import Serve

T = 5.0  # seconds to wait for something that must happen

Entry = tuple[Any, ...]


# -------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------


class Journal:
    """What the server-side controllers saw, in order; shared by every instance of a test."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.refuse: dict[str, str] = {}  # system event -> the error text to refuse it with
        self._changed = asyncio.Event()

    def add(self, *entry: Any) -> None:
        self.entries.append(entry)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[Entry]], bool]) -> None:
        async def loop() -> None:
            while not predicate(self.entries):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), T)

    async def wait_entry(self, *entry: Any) -> None:
        await self.wait_for(lambda entries: entry in entries)


def bind_journal(journal: Journal) -> Callable[[Binder], None]:
    def configure(binder: Binder) -> None:
        binder.bind(Journal, to=journal, scope=singleton)

    return configure


def inbox() -> tuple[asyncio.Queue[Message], Callable[[NSConn, Message], None]]:
    """A queue and a client handler that puts every message it gets into it."""
    got: asyncio.Queue[Message] = asyncio.Queue()
    return got, lambda ns, msg: got.put_nowait(msg)


# -------------------------------------------------------------------------------------------
# event names
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "wire"),
    [
        ("on_chat", "OnChat"),
        ("send_message", "SendMessage"),
        ("chat", "Chat"),
        ("on_namespace_connect", "_OnNamespaceConnect"),
        ("on_namespace_connected", "_OnNamespaceConnected"),
        ("on_namespace_disconnect", "_OnNamespaceDisconnect"),
        ("on_room_join", "_OnRoomJoin"),
        ("on_room_joined", "_OnRoomJoined"),
        ("on_room_leave", "_OnRoomLeave"),
        ("on_room_left", "_OnRoomLeft"),
        ("on_any_event", "_OnAnyEvent"),
        ("on_native_message", "_OnNativeMessage"),
    ],
)
def test_wire_name_of_a_method(method: str, wire: str) -> None:
    assert wire_name(method) == wire


class Naming:
    @event
    def on_chat(self, msg: Message) -> None: ...

    @event
    def send_message(self, msg: Message) -> None: ...

    @event("chat")
    def explicitly_named(self, msg: Message) -> None: ...

    @event
    def on_room_joined(self, msg: Message) -> None: ...

    @event
    def on_any_event(self, msg: Message) -> None: ...

    @event
    def on_native_message(self, msg: Message) -> None: ...

    def on_leave(self, msg: Message) -> None:
        """Not decorated: never an event, whatever its name."""

    def helper(self) -> None: ...


def test_the_event_table_has_the_decorated_methods_only() -> None:
    with pytest.warns(ControllerWarning, match=r"Naming\.on_leave is named like an event"):
        spec = spec_of(Naming)
    assert {wire: m.attr for wire, m in spec.events.items()} == {
        "OnChat": "on_chat",
        "SendMessage": "send_message",
        "chat": "explicitly_named",
        "_OnRoomJoined": "on_room_joined",
        "_OnAnyEvent": "on_any_event",
        "_OnNativeMessage": "on_native_message",
    }


class BaseEvents:
    @event
    def on_chat(self, msg: Message) -> str:
        return "base chat"

    @event
    def on_ping(self) -> str:
        return "base pong"

    @event("renamed")
    def custom(self) -> str:
        return "base custom"

    @event
    def where(self, ns: NSConn) -> str:
        return ns.namespace


with pytest.warns(ControllerWarning, match=r"Child\.on_ping is named like an event"):

    @controller(namespace="child")
    class Child(BaseEvents):
        def on_ping(self) -> str:  # overridden without @event: no longer an event
            return "child pong"

        @event
        def on_chat(self, msg: Message) -> str:  # overridden with @event: it handles it
            return "child chat"


def test_inheritance_in_the_event_table() -> None:
    events = spec_of(Child).events
    assert sorted(events) == ["OnChat", "Where", "renamed"]
    assert events["OnChat"].fn is Child.__dict__["on_chat"]
    assert events["renamed"].fn is BaseEvents.__dict__["custom"]


async def test_inherited_events_are_served_and_an_undecorated_override_is_not(
    serve: Serve,
) -> None:
    url = await serve(Server(controllers=[Child]))
    async with await wsmvc.dial(url, {"child": {}}) as conn:
        ns = await conn.connect("child")
        assert (await ns.ask("OnChat", timeout=T)).text == "child chat"
        assert (await ns.ask("renamed", timeout=T)).text == "base custom"
        assert (await ns.ask("Where", timeout=T)).text == "child"
        with pytest.raises(EventError, match=r"^unknown event 'OnPing'$"):
            await ns.ask("OnPing", timeout=T)
        # the method name of an explicitly named event is not a wire name
        with pytest.raises(EventError, match=r"^unknown event 'Custom'$"):
            await ns.ask("Custom", timeout=T)


with pytest.warns(ControllerWarning, match=r"WithUndecorated\.on_leave is named like an"):

    @controller(namespace="plain")
    class WithUndecorated:
        @event
        def on_chat(self, msg: Message) -> str:
            return "chat"

        def on_leave(self, msg: Message) -> str:
            return "should never be called"


async def test_undecorated_methods_are_never_events(serve: Serve) -> None:
    url = await serve(Server(controllers=[WithUndecorated]))
    async with await wsmvc.dial(url, {"plain": {}}) as conn:
        ns = await conn.connect("plain")
        with pytest.raises(EventError, match=r"^unknown event 'OnLeave'$"):
            await ns.ask("OnLeave", timeout=T)
        assert (await ns.ask("OnChat", timeout=T)).text == "chat"


# -------------------------------------------------------------------------------------------
# namespaces
# -------------------------------------------------------------------------------------------


@controller(namespace="by-decorator")
class ByDecorator(BaseEvents):
    pass


@controller
class ByAttribute(BaseEvents):
    namespace = "by-attribute"


@controller
class ByMethod(BaseEvents):
    def namespace(self) -> str:
        return "by-method"


@controller
class ByDefault(BaseEvents):
    pass


@controller(namespace="decorator-wins")
class DecoratorBeatsAttribute(BaseEvents):
    namespace = "attribute-loses"


class Undecorated(BaseEvents):
    namespace = "undecorated"


def test_namespace_sources() -> None:
    assert spec_of(ByDecorator).namespace == "by-decorator"
    assert spec_of(ByAttribute).namespace == "by-attribute"
    assert spec_of(ByMethod).namespace == "by-method"
    assert spec_of(ByDefault).namespace == ""
    assert spec_of(DecoratorBeatsAttribute).namespace == "decorator-wins"


@controller
class SubclassWithItsOwnAttribute(ByDecorator):
    namespace = "subclass"


def test_a_subclass_namespace_attribute_beats_the_inherited_decorator() -> None:
    """The base's ``@controller(namespace=...)`` names the base; a subclass that says
    ``namespace = "subclass"`` itself serves "subclass" (else both fight over one namespace)."""
    assert spec_of(ByDecorator).namespace == "by-decorator"
    assert spec_of(SubclassWithItsOwnAttribute).namespace == "subclass"


async def test_each_namespace_source_is_served(serve: Serve) -> None:
    server = Server(controllers=[ByDecorator, ByAttribute, ByMethod, ByDefault])
    handle = server.register(Undecorated)  # @controller is optional for register()
    assert handle.namespace == "undecorated"
    url = await serve(server)
    names = ["by-decorator", "by-attribute", "by-method", "", "undecorated"]
    async with await wsmvc.dial(url, {name: {} for name in names}) as conn:
        for name in names:
            ns = await conn.connect(name)
            assert (await ns.ask("Where", timeout=T)).text == name


async def test_set_namespace_moves_the_controller(serve: Serve) -> None:
    server = Server()
    handle = server.register(ByDecorator)
    assert handle.namespace == "by-decorator"
    assert handle.set_namespace("moved") is handle
    assert handle.namespace == "moved"
    url = await serve(server)
    async with await wsmvc.dial(url, {"by-decorator": {}, "moved": {}}) as conn:
        with pytest.raises(EventError, match=r"^bad namespace$"):
            await conn.connect("by-decorator")
        assert conn.namespace("by-decorator") is None
        ns = await conn.connect("moved")
        assert (await ns.ask("Where", timeout=T)).text == "moved"


async def test_register_with_a_namespace_overrides_the_class(serve: Serve) -> None:
    server = Server()
    assert server.register(ByAttribute, namespace="elsewhere").namespace == "elsewhere"
    url = await serve(server)
    async with await wsmvc.dial(url, {"by-attribute": {}, "elsewhere": {}}) as conn:
        with pytest.raises(EventError, match=r"^bad namespace$"):
            await conn.connect("by-attribute")
        ns = await conn.connect("elsewhere")
        assert (await ns.ask("Where", timeout=T)).text == "elsewhere"


async def test_set_namespace_onto_a_taken_namespace_fails_and_keeps_the_old_one(
    serve: Serve,
) -> None:
    server = Server(controllers=[ByDecorator])
    handle = server.register(ByAttribute)
    with pytest.raises(ControllerError, match=r"ByAttribute and ByDecorator both serve"):
        handle.set_namespace("by-decorator")
    assert handle.namespace == "by-attribute"
    url = await serve(server)
    async with await wsmvc.dial(url, {"by-attribute": {}, "by-decorator": {}}) as conn:
        ns = await conn.connect("by-attribute")
        assert (await ns.ask("Where", timeout=T)).text == "by-attribute"
        other = await conn.connect("by-decorator")
        assert (await other.ask("Where", timeout=T)).text == "by-decorator"


# -------------------------------------------------------------------------------------------
# system events: order and refusals
# -------------------------------------------------------------------------------------------


@controller(namespace="life")
class Lifecycle:
    """Records every system event (wire name, room, forced) and refuses on demand."""

    journal: Journal

    def __init__(self) -> None:
        self.journal.add("init")

    def _note(self, msg: Message) -> None:
        self.journal.add(msg.event, msg.room, msg.forced)
        text = self.journal.refuse.get(msg.event)
        if text is not None:
            raise EventError(text)

    @event
    def on_namespace_connect(self, msg: Message) -> None:
        self._note(msg)

    @event
    async def on_namespace_connected(self, msg: Message) -> None:
        self._note(msg)

    @event
    def on_room_join(self, msg: Message) -> None:
        self._note(msg)

    @event
    async def on_room_joined(self, msg: Message) -> None:
        self._note(msg)

    @event
    async def on_room_leave(self, msg: Message) -> None:
        self._note(msg)

    @event
    def on_room_left(self, msg: Message) -> None:
        self._note(msg)

    @event
    async def on_namespace_disconnect(self, msg: Message) -> None:
        self._note(msg)

    @event
    def ping(self) -> str:
        return "pong"


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
async def life_url(serve: Serve, journal: Journal) -> str:
    server = Server(
        controllers=[Lifecycle],
        modules=[bind_journal(journal)],
        on_disconnect=lambda conn: journal.add("server.on_disconnect"),
    )
    return await serve(server)


async def test_connect_order(life_url: str, journal: Journal) -> None:
    async with await wsmvc.dial(life_url, {"life": {}}) as conn:
        ns = await conn.connect("life")
        assert (await ns.ask("Ping", timeout=T)).text == "pong"  # barrier
        assert journal.entries == [
            ("init",),
            ("_OnNamespaceConnect", "", False),
            ("_OnNamespaceConnected", "", False),
        ]


async def test_join_and_leave_order(life_url: str, journal: Journal) -> None:
    async with await wsmvc.dial(life_url, {"life": {}}) as conn:
        ns = await conn.connect("life")
        await ns.ask("Ping", timeout=T)
        journal.entries.clear()
        room = await ns.join_room("r")
        assert journal.entries == [("_OnRoomJoin", "r", False), ("_OnRoomJoined", "r", False)]
        journal.entries.clear()
        await room.leave()
        assert journal.entries == [("_OnRoomLeave", "r", False), ("_OnRoomLeft", "r", False)]
        assert ns.rooms == {}


async def test_client_disconnect_order_leaves_rooms_after_the_disconnect_event(
    life_url: str, journal: Journal
) -> None:
    async with await wsmvc.dial(life_url, {"life": {}}) as conn:
        ns = await conn.connect("life")
        await ns.join_room("r")
        journal.entries.clear()
        await ns.disconnect()
        assert journal.entries == [
            ("_OnNamespaceDisconnect", "", False),
            ("_OnRoomLeave", "r", True),
            ("_OnRoomLeft", "r", True),
        ]
        assert conn.namespace("life") is None


async def test_close_order_and_close_cannot_be_refused(life_url: str, journal: Journal) -> None:
    conn = await wsmvc.dial(life_url, {"life": {}})
    ns = await conn.connect("life")
    await ns.join_room("r")
    journal.entries.clear()
    journal.refuse = {"_OnRoomLeave": "stay", "_OnNamespaceDisconnect": "stay"}
    await conn.close()
    await journal.wait_entry("server.on_disconnect")
    assert journal.entries == [
        ("_OnRoomLeave", "r", True),
        ("_OnRoomLeft", "r", True),
        ("_OnNamespaceDisconnect", "", True),
        ("server.on_disconnect",),
    ]


async def test_refused_connect(life_url: str, journal: Journal) -> None:
    journal.refuse["_OnNamespaceConnect"] = "members only"
    async with await wsmvc.dial(life_url, {"life": {}}) as conn:
        with pytest.raises(EventError, match=r"^members only$"):
            await conn.connect("life")
        assert conn.namespace("life") is None
        assert journal.entries == [("init",), ("_OnNamespaceConnect", "", False)]
        # The connection is fine: the next try is accepted.
        del journal.refuse["_OnNamespaceConnect"]
        ns = await conn.connect("life")
        assert (await ns.ask("Ping", timeout=T)).text == "pong"


async def test_refused_connect_is_not_a_member(serve: Serve, journal: Journal) -> None:
    server = Server(controllers=[Lifecycle], modules=[bind_journal(journal)])
    url = await serve(server)
    journal.refuse["_OnNamespaceConnect"] = "no"
    async with await wsmvc.dial(url, {"life": {}}) as conn:
        with pytest.raises(EventError, match=r"^no$"):
            await conn.connect("life")
        assert server.namespace_members("life") == []


async def test_refused_join(serve: Serve, journal: Journal) -> None:
    server = Server(controllers=[Lifecycle], modules=[bind_journal(journal)])
    url = await serve(server)
    journal.refuse["_OnRoomJoin"] = "vip only"
    async with await wsmvc.dial(url, {"life": {}}) as conn:
        ns = await conn.connect("life")
        with pytest.raises(EventError, match=r"^vip only$"):
            await ns.join_room("vip")
        assert ns.rooms == {}
        assert server.room_members("life", "vip") == []
        assert ("_OnRoomJoined", "vip", False) not in journal.entries


async def test_refused_leave_keeps_the_room(serve: Serve, journal: Journal) -> None:
    server = Server(controllers=[Lifecycle], modules=[bind_journal(journal)])
    url = await serve(server)
    async with await wsmvc.dial(url, {"life": {}}) as conn:
        ns = await conn.connect("life")
        room = await ns.join_room("r")
        journal.refuse["_OnRoomLeave"] = "you stay"
        with pytest.raises(EventError, match=r"^you stay$"):
            await room.leave()
        assert list(ns.rooms) == ["r"]
        assert [m.id for m in server.room_members("life", "r")] == [conn.id]
        assert ("_OnRoomLeft", "r", False) not in journal.entries


async def test_refused_disconnect_keeps_the_namespace(serve: Serve, journal: Journal) -> None:
    server = Server(controllers=[Lifecycle], modules=[bind_journal(journal)])
    url = await serve(server)
    async with await wsmvc.dial(url, {"life": {}}) as conn:
        ns = await conn.connect("life")
        await ns.join_room("r")
        journal.refuse["_OnNamespaceDisconnect"] = "not yet"
        with pytest.raises(EventError, match=r"^not yet$"):
            await ns.disconnect()
        assert conn.namespace("life") is ns
        assert (await ns.ask("Ping", timeout=T)).text == "pong"
        assert [m.id for m in server.namespace_members("life")] == [conn.id]
        assert [m.id for m in server.room_members("life", "r")] == [conn.id]
        # Allowed again, it disconnects.
        del journal.refuse["_OnNamespaceDisconnect"]
        await ns.disconnect()
        assert server.namespace_members("life") == []


@controller(namespace="crashy")
class CrashingConnect:
    @event
    def on_namespace_connect(self, msg: Message) -> None:
        raise RuntimeError("database on fire")


async def test_connect_hook_crash_refuses_with_a_generic_text(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(controllers=[CrashingConnect, Lifecycle], modules=[bind_journal(Journal())])
    url = await serve(server)
    with caplog.at_level(logging.ERROR, logger="wsmvc"):
        async with await wsmvc.dial(url, {"crashy": {}, "life": {}}) as conn:
            with pytest.raises(EventError, match=r"^internal server error$"):
                await conn.connect("crashy")
            assert conn.namespace("crashy") is None
            ns = await conn.connect("life")  # the connection still works
            assert (await ns.ask("Ping", timeout=T)).text == "pong"
    assert "database on fire" in caplog.text


@controller(namespace="welcome")
class Welcome:
    ns: NSConn

    @event
    def on_namespace_connected(self, msg: Message) -> None:
        self.ns.emit("Welcome", "hello " + self.ns.id)

    @event
    def ping(self) -> str:
        return "pong"


async def test_an_emit_from_on_namespace_connected_reaches_the_client(serve: Serve) -> None:
    """The server writes the connect reply, then runs on_namespace_connected (spec 5.1), so a
    welcome it emits arrives right after the reply and must reach the client's handler."""
    url = await serve(Server(controllers=[Welcome]))
    got, record = inbox()
    async with await wsmvc.dial(url, {"welcome": {"Welcome": record}}) as conn:
        ns = await conn.connect("welcome")
        assert (await ns.ask("Ping", timeout=T)).text == "pong"  # barrier
        assert not got.empty(), "the welcome emitted in on_namespace_connected was lost"
        msg = got.get_nowait()
        assert msg.text == "hello " + conn.id


@controller(namespace="grumpy")
class GrumpyConnected:
    @event
    async def on_namespace_connected(self, msg: Message) -> None:
        raise EventError("too late to refuse")

    @event
    def ping(self) -> str:
        return "pong"


async def test_an_error_in_on_namespace_connected_does_not_undo_the_connect(
    serve: Serve,
) -> None:
    server = Server(controllers=[GrumpyConnected])
    url = await serve(server)
    async with await wsmvc.dial(url, {"grumpy": {}}) as conn:
        ns = await conn.connect("grumpy")
        assert (await ns.ask("Ping", timeout=T)).text == "pong"
        assert [m.id for m in server.namespace_members("grumpy")] == [conn.id]


# -------------------------------------------------------------------------------------------
# replies and errors
# -------------------------------------------------------------------------------------------


@attrs.define
class Point:
    x: int
    y: int


@controller(namespace="replies")
class Replies:
    @event
    def nothing(self, msg: Message) -> None:
        return None

    @event
    async def nothing_async(self, msg: Message) -> None:
        return None

    @event
    def text(self, msg: Message) -> str:
        return "text:" + msg.text

    @event
    async def text_async(self, msg: Message) -> str:
        return "text:" + msg.text

    @event
    def raw(self, message) -> bytes:  # type: ignore[no-untyped-def]  # unannotated "message"
        return b"raw:" + message.body

    @event
    async def raw_async(self, msg) -> bytes:  # type: ignore[no-untyped-def]  # unannotated "msg"
        return b"raw:" + msg.body

    @event
    def reply(self, msg: Message) -> Reply:
        return Reply(b"reply:" + msg.body)

    @event
    async def reply_async(self, msg: Message) -> Reply:
        return Reply("reply:" + msg.text)

    @event
    def mapping(self) -> dict[str, object]:
        return {"a": 1, "b": [True, None], "c": "x"}

    @event
    async def point(self) -> Point:
        return Point(3, 4)

    @event
    def points(self) -> list[Point]:
        return [Point(1, 2), Point(3, 4)]

    @event
    def refuse(self) -> None:
        raise EventError("not today")

    @event
    async def refuse_async(self) -> None:
        raise EventError("not today either")

    @event
    def crash(self) -> None:
        raise ValueError("secret detail")

    @event
    async def crash_async(self) -> None:
        raise ValueError("secret detail")

    @event
    def unsendable(self) -> object:
        return object()

    @event
    def ping(self) -> str:
        return "pong"


@pytest.fixture
async def replies_url(serve: Serve) -> str:
    return await serve(Server(controllers=[Replies]))


@pytest.mark.parametrize(
    ("ev", "body", "answer"),
    [
        ("Text", "hi", b"text:hi"),
        ("TextAsync", "hi", b"text:hi"),
        ("Raw", "hi", b"raw:hi"),
        ("RawAsync", "hi", b"raw:hi"),
        ("Reply", "hi", b"reply:hi"),
        ("ReplyAsync", "hi", b"reply:hi"),
    ],
)
async def test_str_bytes_and_reply_answer_with_the_body(
    replies_url: str, ev: str, body: str, answer: bytes
) -> None:
    async with await wsmvc.dial(replies_url, {"replies": {}}) as conn:
        ns = await conn.connect("replies")
        reply = await ns.ask(ev, body, timeout=T)
        assert reply.body == answer
        assert reply.err == ""
        assert reply.event == ev
        assert reply.namespace == "replies"


@pytest.mark.parametrize(
    ("ev", "decoded"),
    [
        ("Mapping", {"a": 1, "b": [True, None], "c": "x"}),
        ("Point", {"x": 3, "y": 4}),
        ("Points", [{"x": 1, "y": 2}, {"x": 3, "y": 4}]),
    ],
)
async def test_other_values_answer_as_json(replies_url: str, ev: str, decoded: object) -> None:
    async with await wsmvc.dial(replies_url, {"replies": {}}) as conn:
        ns = await conn.connect("replies")
        assert json.loads((await ns.ask(ev, timeout=T)).body) == decoded


@pytest.mark.parametrize("ev", ["Nothing", "NothingAsync"])
async def test_none_sends_nothing(replies_url: str, ev: str) -> None:
    got, record = inbox()
    async with await wsmvc.dial(replies_url, {"replies": {ev: record}}) as conn:
        ns = await conn.connect("replies")
        ns.emit(ev, "hello")
        # Barrier: any answer to the emit would have been read before this reply.
        assert (await ns.ask("Ping", timeout=T)).text == "pong"
        assert got.empty()


async def test_a_returned_value_answers_a_plain_emit_as_an_event(replies_url: str) -> None:
    got, record = inbox()
    async with await wsmvc.dial(replies_url, {"replies": {"Text": record}}) as conn:
        ns = await conn.connect("replies")
        ns.emit("Text", "hi")
        msg = await asyncio.wait_for(got.get(), T)
        assert (msg.event, msg.body, msg.err) == ("Text", b"text:hi", "")


@pytest.mark.parametrize(
    ("ev", "text"), [("Refuse", "not today"), ("RefuseAsync", "not today either")]
)
async def test_event_error_answers_with_its_text(replies_url: str, ev: str, text: str) -> None:
    async with await wsmvc.dial(replies_url, {"replies": {}}) as conn:
        ns = await conn.connect("replies")
        with pytest.raises(EventError) as raised:
            await ns.ask(ev, timeout=T)
        assert raised.value.text == text
        assert (await ns.ask("Ping", timeout=T)).text == "pong"


@pytest.mark.parametrize("ev", ["Crash", "CrashAsync"])
async def test_other_exceptions_are_logged_and_answered_generically(
    replies_url: str, ev: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="wsmvc"):
        async with await wsmvc.dial(replies_url, {"replies": {}}) as conn:
            ns = await conn.connect("replies")
            with pytest.raises(EventError) as raised:
                await ns.ask(ev, timeout=T)
            assert raised.value.text == "internal server error"
            assert (await ns.ask("Ping", timeout=T)).text == "pong"
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], ValueError)
    assert "secret detail" in caplog.text


async def test_a_value_that_cannot_be_sent_is_an_internal_error(
    replies_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="wsmvc"):
        async with await wsmvc.dial(replies_url, {"replies": {}}) as conn:
            ns = await conn.connect("replies")
            with pytest.raises(EventError, match=r"^internal server error$"):
                await ns.ask("Unsendable", timeout=T)
    assert "Unsendable" in caplog.text


async def test_debug_errors_sends_the_exception_text(serve: Serve) -> None:
    url = await serve(Server(controllers=[Replies], debug_errors=True))
    async with await wsmvc.dial(url, {"replies": {}}) as conn:
        ns = await conn.connect("replies")
        for ev in ("Crash", "CrashAsync"):
            with pytest.raises(EventError) as raised:
                await ns.ask(ev, timeout=T)
            assert raised.value.text == "ValueError: secret detail"


@controller(namespace="any")
class CatchAll:
    @event
    def on_chat(self, msg: Message) -> str:
        return "chat"

    @event
    async def on_any_event(self, msg: Message) -> str | None:
        if msg.event.startswith("_"):
            return None
        return f"any:{msg.event}:{msg.text}"


async def test_on_any_event_receives_unknown_events(serve: Serve) -> None:
    url = await serve(Server(controllers=[CatchAll]))
    async with await wsmvc.dial(url, {"any": {}}) as conn:
        ns = await conn.connect("any")
        assert (await ns.ask("Whatever", "x", timeout=T)).text == "any:Whatever:x"
        assert (await ns.ask("OnChat", "x", timeout=T)).text == "chat"


@controller
class Native:
    @event
    def on_native_message(self, msg: Message) -> bytes:
        return b"native:" + msg.body

    @event
    def ping(self) -> str:
        return "pong"


async def test_on_native_message_in_mixed_mode(serve: Serve) -> None:
    url = await serve(Server(controllers=[Native]))
    got, record = inbox()
    async with await wsmvc.dial(url, {"": {"_OnNativeMessage": record, "Ping": record}}) as conn:
        ns = await conn.connect("")
        assert (await ns.ask("Ping", timeout=T)).text == "pong"
        conn.send_native("raw frame")
        msg = await asyncio.wait_for(got.get(), T)
        assert msg.native
        assert msg.body == b"native:raw frame"


# -------------------------------------------------------------------------------------------
# typed bodies
# -------------------------------------------------------------------------------------------


@attrs.define
class ChatLine:
    text: str
    count: int = 1


@attrs.define
class Ack:
    text: str
    total: int


@controller(namespace="typed")
class Typed:
    @event
    async def send_line(self, line: ChatLine) -> Ack:
        return Ack(line.text.upper(), line.count * 2)

    @event
    def tally(self, counts: dict[str, int]) -> list[int]:
        return sorted(counts.values())

    @event
    def shout(self, text: str) -> str:
        return text.upper()

    @event
    def reverse(self, data: bytes) -> bytes:
        return data[::-1]

    @event
    def with_context(self, ns: NSConn, line: ChatLine, msg: Message) -> dict[str, str]:
        return {"namespace": ns.namespace, "event": msg.event, "text": line.text}


@pytest.fixture
async def typed_ns(serve: Serve) -> AsyncIterator[NSConn]:
    url = await serve(Server(controllers=[Typed]))
    async with await wsmvc.dial(url, {"typed": {}}) as conn:
        yield await conn.connect("typed")


async def test_attrs_body_in_and_out(typed_ns: NSConn) -> None:
    reply = await typed_ns.ask("SendLine", '{"text": "hi", "count": 2}', timeout=T)
    assert json.loads(reply.body) == {"text": "HI", "total": 4}
    reply = await typed_ns.ask("SendLine", '{"text": "defaults"}', timeout=T)
    assert json.loads(reply.body) == {"text": "DEFAULTS", "total": 2}


async def test_dict_body_and_list_answer(typed_ns: NSConn) -> None:
    reply = await typed_ns.ask("Tally", '{"a": 3, "b": 1, "c": 2}', timeout=T)
    assert json.loads(reply.body) == [1, 2, 3]


async def test_str_and_bytes_bodies_are_raw(typed_ns: NSConn) -> None:
    assert (await typed_ns.ask("Shout", 'not "json" at all', timeout=T)).text == 'NOT "JSON" AT ALL'
    assert (await typed_ns.ask("Reverse", b"abc;def", timeout=T)).body == b"fed;cba"


async def test_typed_body_next_to_message_and_nsconn(typed_ns: NSConn) -> None:
    reply = await typed_ns.ask("WithContext", '{"text": "hi"}', timeout=T)
    assert json.loads(reply.body) == {"namespace": "typed", "event": "WithContext", "text": "hi"}


@pytest.mark.parametrize(
    ("ev", "body", "error"),
    [
        ("SendLine", '{"text": "hi", "count": "many"}', "body.count: expected an integer"),
        ("SendLine", '{"count": 1}', "body.text: required field missing"),
        ("Tally", '{"a": "x"}', "body['a']: expected an integer"),
        ("WithContext", "{}", "body.text: required field missing"),
        ("SendLine", '"hello"', "body: expected an object, got a string"),
        ("SendLine", "[]", "body: expected an object, got an array"),
        ("SendLine", "null", "body: expected an object, got null"),
    ],
)
async def test_a_body_that_does_not_fit_names_the_field(
    typed_ns: NSConn, ev: str, body: str, error: str
) -> None:
    with pytest.raises(EventError) as raised:
        await typed_ns.ask(ev, body, timeout=T)
    assert raised.value.text == error
    # the connection stays up and usable
    reply = await typed_ns.ask("SendLine", '{"text": "ok"}', timeout=T)
    assert json.loads(reply.body) == {"text": "OK", "total": 2}


async def test_bad_json_is_an_error_and_the_connection_stays_usable(typed_ns: NSConn) -> None:
    with pytest.raises(EventError, match=r"^body: invalid JSON \(") as raised:
        await typed_ns.ask("SendLine", "{not json", timeout=T)
    assert raised.value.text.startswith("body: invalid JSON")
    reply = await typed_ns.ask("SendLine", '{"text": "still here"}', timeout=T)
    assert json.loads(reply.body)["text"] == "STILL HERE"


# -------------------------------------------------------------------------------------------
# one instance per namespace connection
# -------------------------------------------------------------------------------------------


@controller(namespace="counter")
class Counter:
    def __init__(self) -> None:
        self.hits = 0

    @event
    def hit(self) -> str:
        self.hits += 1
        return str(self.hits)


async def test_state_on_self_is_per_client(serve: Serve) -> None:
    url = await serve(Server(controllers=[Counter]))
    async with (
        await wsmvc.dial(url, {"counter": {}}) as first,
        await wsmvc.dial(url, {"counter": {}}) as second,
    ):
        a = await first.connect("counter")
        b = await second.connect("counter")
        assert [(await a.ask("Hit", timeout=T)).text for _ in range(3)] == ["1", "2", "3"]
        assert (await b.ask("Hit", timeout=T)).text == "1"
        assert (await a.ask("Hit", timeout=T)).text == "4"


async def test_reconnecting_the_namespace_gets_a_fresh_instance(serve: Serve) -> None:
    server = Server(controllers=[Counter])
    url = await serve(server)
    async with await wsmvc.dial(url, {"counter": {}}) as conn:
        ns = await conn.connect("counter")
        await ns.ask("Hit", timeout=T)
        assert (await ns.ask("Hit", timeout=T)).text == "2"
        before = server.namespace_members("counter")[0].controller
        assert isinstance(before, Counter)
        await ns.disconnect()
        ns = await conn.connect("counter")
        assert (await ns.ask("Hit", timeout=T)).text == "1"
        after = server.namespace_members("counter")[0].controller
        assert isinstance(after, Counter)
        assert after is not before


# -------------------------------------------------------------------------------------------
# sending from a controller (the design's seed example)
# -------------------------------------------------------------------------------------------


class PrefixedLogger:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lines: list[str] = []

    def log(self, text: str) -> None:
        self.lines.append(f"{self.prefix} {text}")


class AppModule(Module):
    def __init__(self) -> None:
        self.made: list[PrefixedLogger] = []

    @singleton
    @provider
    def logger(self) -> PrefixedLogger:
        self.made.append(PrefixedLogger("DEV"))
        return self.made[-1]


@controller(namespace="default")
class WebsocketController:
    conn: NSConn
    logger: PrefixedLogger

    @event
    async def on_namespace_connected(self, msg: Message) -> None:
        self.logger.log(f"{self.conn.id} connected to {msg.namespace}")

    @event
    async def on_namespace_disconnect(self, msg: Message) -> None:
        self.logger.log(f"{self.conn.id} left")

    @event
    async def on_chat(self, msg: Message) -> None:
        await self.conn.server.broadcast(msg, exclude=self.conn)

    @event
    async def interview(self, msg: Message) -> str:
        answer = await self.conn.ask("Question", msg.body, timeout=T)
        return "heard " + answer.text


async def test_the_seed_example_broadcasts_to_the_others(serve: Serve) -> None:
    module = AppModule()
    url = await serve(Server(modules=[module], controllers=[WebsocketController]))
    alice_got, alice_record = inbox()
    bob_got, bob_record = inbox()
    async with (
        await wsmvc.dial(url, {"default": {"OnChat": alice_record}}) as alice,
        await wsmvc.dial(url, {"default": {"OnChat": bob_record}}) as bob,
    ):
        a = await alice.connect("default")
        b = await bob.connect("default")
        a.emit("OnChat", "hi all")
        msg = await asyncio.wait_for(bob_got.get(), T)
        assert (msg.namespace, msg.event, msg.text) == ("default", "OnChat", "hi all")
        # Barrier on alice's connection: a copy for her would have come before this answer.
        with pytest.raises(EventError, match=r"^unknown event 'Nothing'$"):
            await a.ask("Nothing", timeout=T)
        assert alice_got.empty()
        await b.disconnect()
        (logger,) = module.made
        assert logger.lines == [
            f"DEV {alice.id} connected to default",
            f"DEV {bob.id} connected to default",
            f"DEV {bob.id} left",
        ]


async def test_a_controller_can_ask_the_client_inside_a_handler(serve: Serve) -> None:
    url = await serve(Server(modules=[AppModule()], controllers=[WebsocketController]))
    client = {"default": {"Question": lambda ns, msg: "answer to " + msg.text}}
    async with await wsmvc.dial(url, client) as conn:
        ns = await conn.connect("default")
        reply = await ns.ask("Interview", "why", timeout=T)
        assert reply.text == "heard answer to why"


# -------------------------------------------------------------------------------------------
# registration errors
# -------------------------------------------------------------------------------------------


def test_unannotated_parameter_is_refused_at_decoration() -> None:
    with pytest.raises(ControllerError, match=r"Bad\.on_chat: annotate parameter 'who'"):

        @controller
        class Bad:
            @event
            def on_chat(self, who) -> None: ...  # type: ignore[no-untyped-def]


def test_two_typed_bodies_are_refused() -> None:
    with pytest.raises(ControllerError, match=r"Bad\.on_chat: only one parameter can be"):

        @controller
        class Bad:
            @event
            def on_chat(self, line: ChatLine, other: Ack) -> None: ...


def test_a_system_event_cannot_take_a_typed_body() -> None:
    with pytest.raises(ControllerError, match=r"Bad\.on_room_join: a system event gets the"):

        @controller
        class Bad:
            @event
            def on_room_join(self, line: ChatLine) -> None: ...


def test_keyword_only_parameters_are_refused() -> None:
    with pytest.raises(ControllerError, match=r"Bad\.on_chat: parameter 'msg' is not positional"):

        @controller
        class Bad:
            @event
            def on_chat(self, *, msg: Message) -> None: ...


def test_an_event_without_self_is_refused() -> None:
    with pytest.raises(ControllerError, match=r"Bad\.on_chat: an event method takes self first"):

        @controller
        class Bad:
            @event
            def on_chat() -> None: ...  # type: ignore[misc]


def test_duplicate_wire_names_are_refused() -> None:
    with pytest.raises(ControllerError, match=r"Bad: on_chat and chat both handle event 'OnChat'"):

        @controller
        class Bad:
            @event
            def on_chat(self, msg: Message) -> None: ...

            @event("OnChat")
            def chat(self, msg: Message) -> None: ...


def test_register_checks_an_undecorated_class_too() -> None:
    class Bad:
        @event
        def on_chat(self, who) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(ControllerError, match=r"Bad\.on_chat: annotate parameter 'who'"):
        Server(controllers=[Bad])


@pytest.mark.parametrize("kind", [staticmethod, classmethod])
def test_event_on_a_static_or_class_method_is_refused(kind: Any) -> None:
    with pytest.raises(ControllerError, match=rf"cannot decorate the {kind.__name__} .*Bad\.m"):

        class Bad:
            @event
            @kind
            def m(*args: Any) -> None: ...

    with pytest.raises(ControllerError, match=r"Bad\.m: an @event must be a plain method"):

        @controller
        class Bad:
            @kind
            @event
            def m(*args: Any) -> None: ...


def test_event_on_something_not_callable_is_refused() -> None:
    with pytest.raises(ControllerError, match=r"@event takes an event name .* not 42"):
        event(42)  # type: ignore[call-overload]
    with pytest.raises(ControllerError, match=r"@event needs a method, got 42"):
        event("name")(42)
    with pytest.raises(ControllerError, match=r"the event name is empty"):

        class Bad:
            @event("")
            def on_chat(self, msg: Message) -> None: ...


def test_controller_decorates_classes_only() -> None:
    def not_a_class() -> None: ...

    with pytest.raises(ControllerError, match=r"@controller decorates a class"):
        controller(not_a_class)  # type: ignore[call-overload]


def test_a_namespace_that_is_not_a_str_is_refused() -> None:
    with pytest.raises(ControllerError, match=r"Bad\.namespace must be a str"):

        @controller
        class Bad:
            namespace = 42

    with pytest.raises(ControllerError, match=r"Bad2\.namespace\(\) returned 42, not a str"):

        @controller
        class Bad2:
            def namespace(self) -> int:
                return 42


def test_two_controllers_on_one_namespace_are_refused() -> None:
    @controller(namespace="shared")
    class First:
        pass

    @controller(namespace="shared")
    class Second:
        pass

    with pytest.raises(ControllerError, match=r"Second and .*First both serve namespace 'shared'"):
        Server(controllers=[First, Second])


def test_a_namespace_with_plain_handlers_cannot_get_a_controller() -> None:
    @controller(namespace="busy")
    class Late:
        pass

    with pytest.raises(ControllerError, match=r"namespace 'busy' already has handlers.*Late"):
        Server({"busy": {"OnChat": lambda ns, msg: None}}, controllers=[Late])

    server = Server(controllers=[Late])
    with pytest.raises(
        ControllerError, match=r"namespace 'busy' is served by the controller .*Late"
    ):
        server.on("busy", "OnChat")


def test_register_after_server_on_is_refused() -> None:
    @controller(namespace="busy")
    class Late:
        pass

    server = Server()
    server.on("busy", "OnChat")(lambda ns, msg: None)
    with pytest.raises(ControllerError, match=r"namespace 'busy' already has handlers.*Late"):
        server.register(Late)


def test_a_class_registers_once() -> None:
    server = Server(controllers=[Counter])
    with pytest.raises(ControllerError, match=r"Counter is already registered"):
        server.register(Counter)


def test_register_takes_a_class() -> None:
    with pytest.raises(ControllerError, match=r"register\(\) takes a controller class"):
        Server().register(Counter())  # type: ignore[arg-type]


def test_unannotated_init_parameter_is_refused_at_register() -> None:
    @controller(namespace="init")
    class NeedsSomething:
        def __init__(self, thing) -> None:  # type: ignore[no-untyped-def]
            self.thing = thing

    with pytest.raises(
        DependencyError, match=r"NeedsSomething\.__init__ parameter 'thing' has no type annotation"
    ):
        Server(controllers=[NeedsSomething])


class NativeLog:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.closed = asyncio.Event()


@controller(namespace="")
class NativeEcho:
    """A controller for plain websocket clients: no neffos handshake at all (spec 9.1)."""

    log: NativeLog

    def __init__(self) -> None:
        self.count = 0

    @event
    def on_namespace_connected(self, msg: Message) -> None:
        self.log.events.append("opened")

    @event
    def on_native_message(self, msg: Message) -> bytes:
        self.count += 1
        return b"%d:" % self.count + msg.body

    @event
    def on_namespace_disconnect(self, msg: Message) -> None:
        self.log.events.append(f"closed after {self.count}")
        self.log.closed.set()


async def test_a_native_only_controller_serves_plain_websockets(serve: Serve) -> None:
    shared = NativeLog()

    def configure(binder: Binder) -> None:
        binder.bind(NativeLog, to=shared)

    server = Server(controllers=[NativeEcho], modules=[configure])
    url = await serve(server)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str("hello")  # no "M" first: a plain WebSocket client
        assert (await ws.receive(timeout=5)).data == "1:hello"
        await ws.send_str("a;b;c")
        assert (await ws.receive(timeout=5)).data == "2:a;b;c"
    await asyncio.wait_for(shared.closed.wait(), 5)
    assert shared.events == ["opened", "closed after 2"]


# -------------------------------------------------------------------------------------------
# methods named like events without @event (issue 11)
# -------------------------------------------------------------------------------------------


def test_a_method_named_like_an_event_without_event_warns_once_at_its_line() -> None:
    with pytest.warns(ControllerWarning) as caught:

        @controller(namespace="quiet")
        class Forgot:
            @event
            def on_chat(self, msg: Message) -> None: ...

            def on_hello(self, msg: Message) -> None: ...

            def OnGoodbye(self) -> None: ...  # Go-style names too

            def on_namespace_connected(self, msg: Message) -> None: ...

            def _on_helper(self) -> None: ...  # private: fine

            def online(self) -> None: ...  # not on_*: fine

            def on_(self) -> None: ...  # nothing after on_: fine

        spec_of(Forgot)  # read again: cached, no second warning
        Server(controllers=[Forgot])  # registered: no second warning either

    texts = sorted(str(w.message) for w in caught)
    assert [t.split(" is named")[0].rsplit(".", 1)[1] for t in texts] == [
        "OnGoodbye",
        "on_hello",
        "on_namespace_connected",
    ]
    hello = next(w for w in caught if ".on_hello " in str(w.message))
    assert "clients' 'OnHello' events never reach it: decorate it with @event" in str(hello.message)
    assert hello.filename == __file__
    assert hello.lineno == Forgot.on_hello.__code__.co_firstlineno
    system = next(w for w in caught if "on_namespace_connected" in str(w.message))
    assert "'_OnNamespaceConnected'" in str(system.message)


def test_decorated_and_private_methods_do_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    @controller(namespace="fine")
    class Fine:
        @event
        def on_hello(self) -> None: ...

        @event("bye")
        def on_goodbye(self) -> None: ...

        def _on_internal(self) -> None: ...

        def send(self) -> None: ...

    assert [w for w in recwarn if issubclass(w.category, ControllerWarning)] == []
