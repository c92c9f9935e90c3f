"""Issue 11, the connection scope for the whole life of a connection, and its end.

Connection-scoped objects from providers that ``yield`` (sync and async) or return a context
manager are closed when the connection ends: after its handlers and disconnect events (which
may still use them) and after ``on_disconnect``, newest first, each one even when another
fails (the failure is logged). That holds when the client closes, when it vanishes, and when
the server shuts down, also while a handler is in flight. Singletons from such providers are
closed at application cleanup, after the connections.

Real servers on 127.0.0.1 and the Python client; every wait is on an event, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from injector import Inject, Injector, Module, provider, singleton

import wsmvc
from wsmvc import (
    ClientConn,
    Conn,
    Message,
    NSConn,
    Reject,
    Server,
    connection_scope,
    controller,
    event,
)

T = 5.0  # seconds for anything that must happen


class Journal:
    """What happened, in order, on both sides; tests wait for a line to appear."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()

    async def reached(self, line: str) -> None:
        async def wait() -> None:
            while line not in self.lines:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), T)

    def after(self, line: str) -> list[str]:
        """The lines from ``line`` on."""
        return self.lines[self.lines.index(line) :]


class Resource:
    """Something a provider opens and closes; using it once closed raises."""

    def __init__(self, name: str, journal: Journal) -> None:
        self.name = name
        self.closed = False
        self._journal = journal
        journal(f"open {name}")

    def close(self) -> None:
        self.closed = True
        self._journal(f"close {self.name}")

    def use(self) -> str:
        if self.closed:
            raise RuntimeError(f"{self.name} used after it was closed")
        return self.name


class A(Resource): ...


class B(Resource): ...


class C(Resource): ...


class D(Resource): ...


class Pool(Resource): ...


class Late(Resource): ...


def resources(journal: Journal, *, failing: str = "") -> Module:
    """A (sync generator), B (sync context manager, needs A), C (async generator, needs B)
    and D (async context manager, needs C), all connection-scoped; Pool, a singleton async
    generator; Late, connection-scoped, made on demand. ``failing`` names one whose closing
    raises."""

    def closing(res: Resource) -> None:
        res.close()
        if res.name == failing:
            raise RuntimeError(f"{res.name} failed to close")

    class Resources(Module):
        @connection_scope
        @provider
        def a(self, conn: Conn) -> Iterator[A]:
            res = A("A", journal)
            yield res
            closing(res)

        @connection_scope
        @provider
        @contextlib.contextmanager
        def b(self, a: A) -> Iterator[B]:
            res = B("B", journal)
            try:
                yield res
            finally:
                closing(res)

        @connection_scope
        @provider
        async def c(self, b: B) -> AsyncIterator[C]:
            res = C("C", journal)
            yield res
            await asyncio.sleep(0)  # an async close: flushing, returning to a pool...
            closing(res)

        @connection_scope
        @provider
        @contextlib.asynccontextmanager
        async def d(self, c: C) -> AsyncIterator[D]:
            res = D("D", journal)
            try:
                yield res
            finally:
                closing(res)

        @connection_scope
        @provider
        def late(self) -> Iterator[Late]:
            res = Late("Late", journal)
            yield res
            closing(res)

        @singleton
        @provider
        async def pool(self) -> AsyncIterator[Pool]:
            res = Pool("Pool", journal)
            yield res
            closing(res)

    return Resources()


def make_controller(journal: Journal, release: asyncio.Event) -> type:
    @controller(namespace="res")
    class Uses:
        d: D
        pool: Pool

        @event
        def on_namespace_disconnect(self, msg: Message, a: Inject[A]) -> None:
            journal(f"disconnect event uses {a.use()}, {self.d.use()}")

        @event
        async def on_work(self, ns: NSConn) -> str:
            journal("handler waits")
            try:
                await ns.ask("Question", timeout=T)  # the client never answers in time
            except wsmvc.ConnectionClosed:
                journal("handler sees the connection gone")
            await release.wait()
            journal(f"handler still uses {self.d.use()}")
            return "done"

        @event
        def on_ping(self) -> str:
            return "pong"

        @event
        async def on_outlive(self, injector: Inject[Injector]) -> None:
            async def later() -> None:  # a task that outlives its connection
                await release.wait()
                try:
                    injector.get(Late)
                except LookupError as exc:
                    journal(f"late: {exc}")

            asyncio.get_running_loop().create_task(later())

    return Uses


class Setup:
    """A server with the resources, on its own runner (so a test can shut it down), and a
    client whose ``Question`` handler waits for ``client_release``."""

    def __init__(self, *, failing: str = "", on_connect: Any = None) -> None:
        self.journal = Journal()
        self.release = asyncio.Event()  # lets the server's handler go on
        self.client_release = asyncio.Event()  # lets the client answer (late)
        journal = self.journal
        self.server = Server(
            modules=[resources(journal, failing=failing)],
            controllers=[make_controller(journal, self.release)],
            on_connect=on_connect,
            on_disconnect=lambda conn: journal("on_disconnect"),
        )
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        self.server.mount(app, "/ws")
        self.runner = web.AppRunner(app, shutdown_timeout=T)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"ws://127.0.0.1:{self.runner.addresses[0][1]}/ws"

    async def dial(self, url: str) -> ClientConn:
        journal = self.journal

        async def question(ns: NSConn, msg: Message) -> str:
            journal("client asked")
            await self.client_release.wait()
            return "too late"

        return await wsmvc.dial(url, {"res": {"Question": question}})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def setups() -> AsyncIterator[Callable[..., Setup]]:
    made: list[Setup] = []

    def make(**kwargs: Any) -> Setup:
        made.append(Setup(**kwargs))
        return made[-1]

    yield make
    for setup in made:
        setup.release.set()
        setup.client_release.set()
        await setup.stop()


OPENED = ["open Pool", "open A", "open B", "open C", "open D"]
CLOSED = ["close D", "close C", "close B", "close A"]


async def test_closed_newest_first_after_the_disconnect_events_and_on_disconnect(
    setups: Callable[..., Setup],
) -> None:
    setup = setups()
    url = await setup.start()
    assert setup.journal.lines == ["open Pool"]  # the async singleton: at startup
    async with await setup.dial(url) as conn:
        await conn.connect("res")
        assert setup.journal.lines == OPENED
        (member,) = setup.server.namespace_members("res")
    await asyncio.wait_for(member.conn.wait_closed(), T)  # closed means cleaned up too
    assert setup.journal.after("open D")[1:] == [
        "disconnect event uses A, D",
        "on_disconnect",
        *CLOSED,
    ]
    await setup.stop()
    assert setup.journal.lines[-1] == "close Pool"  # at application cleanup


async def test_a_failing_close_is_logged_and_the_others_still_close(
    setups: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    setup = setups(failing="C")
    url = await setup.start()
    with caplog.at_level(logging.ERROR, logger="wsmvc"):
        async with await setup.dial(url) as conn:
            await conn.connect("res")
        await setup.journal.reached("close A")
        assert setup.journal.after("on_disconnect")[1:] == CLOSED
        failures = [r for r in caplog.records if "closing" in r.getMessage()]
        assert len(failures) == 1
        # the server goes on serving
        async with await setup.dial(url) as again:
            await again.connect("res")
    assert "closing C (from Resources.c) failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert "C failed to close" in str(failures[0].exc_info[1])


async def in_flight(setup: Setup, url: str) -> ClientConn:
    """A client whose server-side handler is waiting on it (an ask the client holds)."""
    conn = await setup.dial(url)
    ns = await conn.connect("res")
    ns.emit("OnWork")
    await setup.journal.reached("client asked")
    return conn


async def finish_in_flight(setup: Setup) -> None:
    """Once the server's handler saw the connection go: let both sides' handlers end."""
    await setup.journal.reached("handler sees the connection gone")
    assert "close D" not in setup.journal.lines  # not while the handler may use it
    setup.release.set()
    setup.client_release.set()
    await setup.journal.reached("close A")
    assert setup.journal.after("handler sees the connection gone")[1:] == [
        "handler still uses D",
        "disconnect event uses A, D",
        "on_disconnect",
        *CLOSED,
    ]


async def test_closed_after_a_handler_in_flight_when_the_client_closes(
    setups: Callable[..., Setup],
) -> None:
    setup = setups()
    url = await setup.start()
    conn = await in_flight(setup, url)
    closing = asyncio.get_running_loop().create_task(conn.close())
    await finish_in_flight(setup)
    await asyncio.wait_for(closing, T)


async def test_closed_after_a_handler_in_flight_when_the_client_vanishes(
    setups: Callable[..., Setup],
) -> None:
    setup = setups()
    url = await setup.start()
    conn = await in_flight(setup, url)
    conn._ws._writer.transport.abort()  # type: ignore[attr-defined]  # no close frame: gone
    await finish_in_flight(setup)
    await asyncio.wait_for(conn.wait_closed(), T)
    await conn.close()  # its HTTP session


async def test_closed_after_a_handler_in_flight_when_the_server_shuts_down(
    setups: Callable[..., Setup],
) -> None:
    setup = setups()
    url = await setup.start()
    conn = await in_flight(setup, url)
    stopping = asyncio.get_running_loop().create_task(setup.stop())  # aiohttp's shutdown
    await finish_in_flight(setup)
    await asyncio.wait_for(stopping, T)
    # the connections' objects first, then the application's
    assert setup.journal.after("close A") == ["close A", "close Pool"]
    await asyncio.wait_for(conn.wait_closed(), T)
    assert conn.close_code == 1001
    await conn.close()  # its HTTP session


async def test_a_task_outliving_its_connection_cannot_make_new_ones(
    setups: Callable[..., Setup],
) -> None:
    setup = setups()
    url = await setup.start()
    async with await setup.dial(url) as conn:
        ns = await conn.connect("res")
        ns.emit("OnOutlive")
        await ns.ask("OnPing", timeout=T)  # a barrier: OnOutlive was handled
    await setup.journal.reached("close A")
    setup.release.set()
    line = await _line_starting(setup.journal, "late: ")
    assert "has ended and its connection-scoped objects are closed" in line
    assert "open Late" not in setup.journal.lines


async def _line_starting(journal: Journal, prefix: str) -> str:
    async def wait() -> str:
        while True:
            found = [line for line in journal.lines if line.startswith(prefix)]
            if found:
                return found[0]
            journal._changed.clear()
            await journal._changed.wait()

    return await asyncio.wait_for(wait(), T)


async def test_objects_made_for_a_refused_connection_are_closed_too(
    setups: Callable[..., Setup],
) -> None:
    def on_connect(conn: Conn) -> None:
        conn.server.injector.get(A)  # say, an audit record opened in the hook
        raise Reject("not today")

    setup = setups(on_connect=on_connect)
    url = await setup.start()
    with pytest.raises(Reject, match="not today"):
        await setup.dial(url)
    await setup.journal.reached("close A")
    assert setup.journal.lines == ["open Pool", "open A", "close A"]
