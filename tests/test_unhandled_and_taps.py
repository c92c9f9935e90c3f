"""Events users expect (issue 11): a warning for an event with no handler, once per
namespace and event and bounded; and taps, called for every event in and out.

Real servers on loopback, real clients (``wsmvc.dial``); "everything before was handled"
is an ask answered after it (one client's messages are handled in order), never a sleep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import wsmvc
from wsmvc import EventError, HandlerTable, Message, NSConn, Server
from wsmvc.dispatch import Dispatcher
from wsmvc.tapped import TappedDispatcher, TappedWriter
from wsmvc.taps import Tapped
from wsmvc.unhandled import UNHANDLED_WARNINGS

from .wire_support import Serve, T

_clients: list[wsmvc.ClientConn] = []


async def dial(url: str, namespaces: Any = None, **kwargs: Any) -> wsmvc.ClientConn:
    client = await wsmvc.dial(
        url,
        namespaces if namespaces is not None else {"default": {}, "other": {}},
        timeout=T,
        ask_timeout=T,
        **kwargs,
    )
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


def ping(ns: NSConn, msg: Message) -> str:
    return "pong"


async def handled(ns: NSConn) -> None:
    """Everything ``ns`` sent before was handled: the server answers in order."""
    assert (await ns.ask("ping", timeout=T)).text == "pong"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wsmvc" and r.levelno == logging.WARNING and "handler" in r.getMessage()
    ]


# -- events without a handler -----------------------------------------------------------------


async def test_a_warning_once_per_namespace_and_event(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server({"default": {"ping": ping}, "other": {"ping": ping}})
    url = await serve(server)
    client = await dial(url)
    default = await client.connect("default", timeout=T)
    other = await client.connect("other", timeout=T)
    for _ in range(3):
        default.emit("OnTypo")
    other.emit("OnTypo")  # another namespace: its own warning
    with pytest.raises(EventError, match="unknown event 'OnTypo'"):
        await default.ask("OnTypo", timeout=T)  # a request still gets its answer
    await handled(default)
    await handled(other)
    said = warnings_of(caplog)
    assert len(said) == 2, said
    assert "no handler for event 'OnTypo' in namespace 'default'" in said[0]
    assert "in namespace 'other'" in said[1]
    # Another client sending it again: still once per server.
    again = await (await dial(url)).connect("default", timeout=T)
    again.emit("OnTypo")
    await handled(again)
    assert len(warnings_of(caplog)) == 2


async def test_no_warning_when_on_any_event_handles_it_or_for_protocol_names(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(
        {"default": {"ping": ping}, "other": {"ping": ping, "_OnAnyEvent": lambda ns, m: None}}
    )
    client = await dial(await serve(server))
    default = await client.connect("default", timeout=T)
    other = await client.connect("other", timeout=T)
    other.emit("Anything")
    default.emit("_OnRoomJoined")  # a protocol name a peer may send: nothing to fix
    await handled(other)
    await handled(default)
    assert warnings_of(caplog) == []


async def test_the_warnings_are_bounded(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """A client sending made-up names: the first N warn, then one line, then silence; the
    server remembers hashes, not names, and quotes at most 64 characters of one."""
    server = Server({"default": {"ping": ping}})
    client = await dial(await serve(server))
    ns = await client.connect("default", timeout=T)
    huge = "x" * 200_000
    ns.emit(huge)
    for i in range(UNHANDLED_WARNINGS + 50):
        ns.emit(f"made-up-{i}")
    await handled(ns)
    said = warnings_of(caplog)
    assert len(said) == UNHANDLED_WARNINGS + 1, len(said)
    assert len(said[0]) < 500  # the 200 kB name, cut
    assert "no more such warnings" in said[-1]
    assert len(server.handlers.unhandled) == UNHANDLED_WARNINGS
    for i in range(1000):
        ns.emit(f"more-{i}")
    await handled(ns)
    assert len(warnings_of(caplog)) == UNHANDLED_WARNINGS + 1
    assert len(server.handlers.unhandled) == UNHANDLED_WARNINGS


# -- taps ------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Tapped] = []

    def __call__(self, tapped: Tapped) -> None:
        self.seen.append(tapped)

    def rows(self) -> list[tuple[str, str, str, str]]:
        return [(t.direction, t.message.event, t.outcome, t.message.text) for t in self.seen]

    def clear(self) -> None:
        self.seen.clear()


def app_server(recorder: Recorder, **options: Any) -> Server:
    async def slow(ns: NSConn, msg: Message) -> str:
        await asyncio.sleep(0)
        return "slow " + msg.text

    def fail(ns: NSConn, msg: Message) -> None:
        raise ValueError("boom")

    def shout(ns: NSConn, msg: Message) -> None:
        ns.emit("Shouted", msg.text.upper())

    async def fanout(ns: NSConn, msg: Message) -> None:
        await ns.server.broadcast(Message("default", event="News", body=msg.body))

    def join(ns: NSConn, msg: Message) -> None:
        if msg.room == "vip":
            raise EventError("no")

    return Server(
        {
            "default": {
                "ping": ping,
                "slow": slow,
                "fail": fail,
                "shout": shout,
                "fanout": fanout,
                "_OnRoomJoin": join,
            }
        },
        taps=[recorder],
        **options,
    )


async def test_every_event_in_and_out(serve: Serve) -> None:
    recorder = Recorder()
    server = app_server(recorder)
    url = await serve(server)
    client = await dial(url, {"default": {}})
    ns = await client.connect("default", timeout=T)
    [conn] = server.connections
    assert recorder.rows() == [("in", "_OnNamespaceConnect", "handled", "")]  # its reply: an ack
    recorder.clear()

    assert (await ns.ask("ping", "hi", timeout=T)).text == "pong"
    assert recorder.rows() == [("out", "ping", "sent", "pong"), ("in", "ping", "handled", "hi")]
    answer, request = recorder.seen
    assert answer.conn is request.conn is conn
    assert answer.message.token == request.message.token != ""
    assert request.duration is not None and request.duration >= 0
    assert answer.duration is None and answer.error is None
    recorder.clear()

    assert (await ns.ask("slow", "x", timeout=T)).text == "slow x"
    ns.emit("shout", "hey")
    with pytest.raises(EventError):
        await ns.ask("fail", timeout=T)
    ns.emit("Typo")
    with pytest.raises(EventError, match=r"^no$"):
        await ns.join_room("vip", timeout=T)
    await ns.join_room("lobby", timeout=T)
    await handled(ns)
    assert recorder.rows() == [
        ("out", "slow", "sent", "slow x"),
        ("in", "slow", "handled", "x"),
        ("out", "Shouted", "sent", "HEY"),
        ("in", "shout", "handled", "hey"),
        ("out", "fail", "sent", ""),
        ("in", "fail", "failed", ""),
        ("in", "Typo", "unhandled", ""),
        ("out", "_OnRoomJoin", "sent", ""),
        ("in", "_OnRoomJoin", "refused", ""),
        ("in", "_OnRoomJoin", "handled", ""),  # lobby: its acknowledgement is not tapped
        ("out", "ping", "sent", "pong"),
        ("in", "ping", "handled", ""),
    ]
    failed = recorder.seen[5]
    assert isinstance(failed.error, ValueError)
    assert recorder.seen[4].message.err == "internal server error"
    assert recorder.seen[7].message.err == "no"


async def test_asks_and_broadcasts_from_the_server_side(serve: Serve) -> None:
    recorder = Recorder()
    server = app_server(recorder)
    url = await serve(server)
    answers = {"default": {"question": lambda ns, msg: "42", "News": lambda ns, msg: None}}
    alice = await (await dial(url, answers)).connect("default", timeout=T)
    bob = await (await dial(url, answers)).connect("default", timeout=T)
    recorder.clear()
    alice.emit("fanout", "hello")
    await handled(alice)
    await handled(bob)
    news = [t for t in recorder.seen if t.message.event == "News"]
    assert sorted(t.conn.id for t in news) == sorted([alice.id, bob.id])  # one per receiver
    assert {(t.direction, t.message.text) for t in news} == {("out", "hello")}
    recorder.clear()
    [server_alice] = server.get_connections(alice.id)
    reply = await server_alice.namespace("default").ask("question", "?")  # type: ignore[union-attr]
    assert reply.text == "42"
    assert recorder.rows() == [("out", "question", "sent", "?")]  # the answer resolves the ask


async def test_a_failing_tap_is_logged_and_never_stops_delivery(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def broken(tapped: Tapped) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("tap broke")

    recorder = Recorder()
    server = Server({"default": {"ping": ping}}, taps=[broken, recorder])
    client = await dial(await serve(server), {"default": {}})
    ns = await client.connect("default", timeout=T)
    for _ in range(600):
        assert (await ns.ask("ping", timeout=T)).text == "pong"
    assert calls == len(recorder.seen) == 1 + 600 * 2  # the others still called
    logged = [r for r in caplog.records if "tap" in r.getMessage() and "failed" in r.getMessage()]
    # the first failure with its traceback, then every 1000th
    assert len(logged) == 2, [r.getMessage() for r in logged]
    assert logged[0].exc_info is not None and "(1 failure(s)" in logged[0].getMessage()
    assert "(1000 failure(s)" in logged[1].getMessage()


async def test_no_taps_no_cost(serve: Serve) -> None:
    """An untapped server's connections run the plain dispatcher and writer."""
    plain = Server({"default": {"ping": ping}})
    tapped = Server({"default": {"ping": ping}}, taps=[Recorder()])
    for server, kind in ((plain, Dispatcher), (tapped, TappedDispatcher)):
        client = await dial(await serve(server), {"default": {}})
        await client.connect("default", timeout=T)
        [conn] = server.connections
        assert type(conn.dispatcher) is kind
        assert isinstance(conn.writer, TappedWriter) is (kind is TappedDispatcher)


async def test_a_clients_taps(serve: Serve) -> None:
    """A client's handler table has taps too (what it sends, what the server pushes)."""
    recorder = Recorder()
    table = HandlerTable({"default": {"News": lambda ns, msg: None}})
    table.taps.add(recorder)
    server = app_server(Recorder())
    client = await dial(await serve(server), table)
    ns = await client.connect("default", timeout=T)
    ns.emit("fanout", "x")
    await handled(ns)
    rows = recorder.rows()
    assert ("out", "_OnNamespaceConnect", "sent", "") in rows
    assert ("out", "fanout", "sent", "x") in rows
    assert ("in", "News", "handled", "x") in rows


def test_taps_must_be_plain_functions() -> None:
    async def coroutine(tapped: Tapped) -> None: ...

    class AsyncCallable:
        async def __call__(self, tapped: Tapped) -> None: ...

    with pytest.raises(TypeError, match="is async"):
        Server(taps=[coroutine])
    with pytest.raises(TypeError, match="is async"):
        Server(taps=[AsyncCallable()])
    with pytest.raises(TypeError, match="function of one argument"):
        Server(taps=["print"])  # type: ignore[list-item]
