"""Shared fixtures: real aiohttp servers on 127.0.0.1, random ports."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
import pytest
from aiohttp import web

from wsmvc import Server

from .noskip import pytest_runtest_makereport  # noqa: F401  (CI=true: a skip fails)

Serve = Callable[..., Awaitable[str]]


def _new_uvloop() -> asyncio.AbstractEventLoop:
    import uvloop

    return uvloop.new_event_loop()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": _new_uvloop,
}
DEFAULT_LOOP = os.environ.get("WSMVC_TEST_LOOP", "asyncio")  # tox -e uvloop: "uvloop"
if DEFAULT_LOOP not in LOOPS:
    raise RuntimeError(f"WSMVC_TEST_LOOP={DEFAULT_LOOP!r}: expected one of {sorted(LOOPS)}")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loops an async test runs on: the one ``WSMVC_TEST_LOOP`` names, or both
    for tests marked ``both_loops`` (each then runs twice, ``[asyncio]`` and ``[uvloop]``)."""
    if item.get_closest_marker("both_loops") is not None:
        return dict(LOOPS)
    return {DEFAULT_LOOP: LOOPS[DEFAULT_LOOP]}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("asyncio") is not None and isinstance(item, pytest.Function):
            item.fixturenames.append("_on_the_chosen_loop")


@pytest.fixture
async def _on_the_chosen_loop(request: pytest.FixtureRequest) -> None:
    """Fail, rather than pass on another loop, if the choice above stops being honoured
    (asked for by every async test; a sync test's async fixtures have a loop of their own)."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    chosen = [name for name, factory in LOOPS.items() if any(p is factory for p in params)]
    wanted = chosen[0] if chosen else DEFAULT_LOOP
    running = type(asyncio.get_running_loop()).__module__.split(".")[0]
    assert running == wanted, (running, wanted)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``url = await serve(server, path="/ws")``: mount ``server`` on a fresh app and start it.

    Returns the websocket URL (``ws://127.0.0.1:<port><path>``). Everything started is
    cleaned up (graceful shutdown included) when the test ends.
    """
    runners: list[web.AppRunner] = []

    async def start(server: Server, path: str = "/ws", app: web.Application | None = None) -> str:
        app = app if app is not None else web.Application()
        server.mount(app, path)
        runner = web.AppRunner(app, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"ws://127.0.0.1:{port}{path}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session, closed after the test."""
    async with aiohttp.ClientSession() as s:
        yield s
