"""Shared fixtures: real aiohttp servers on 127.0.0.1, random ports."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from wsmvc import Server

Serve = Callable[..., Awaitable[str]]

if os.environ.get("WSMVC_TEST_LOOP") == "uvloop":  # tox -e uvloop: every test on uvloop

    @pytest.fixture(scope="session")
    def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
        import uvloop

        return uvloop.EventLoopPolicy()

    @pytest.fixture(autouse=True)
    async def _on_the_policys_loop(event_loop_policy: asyncio.AbstractEventLoopPolicy) -> None:
        """Fail rather than pass on another loop if the policy stops being honoured (a
        module may choose its own policy: tests/test_deflate.py runs on both)."""
        wanted = type(event_loop_policy).__module__.split(".")[0]
        assert type(asyncio.get_running_loop()).__module__.split(".")[0] == wanted


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
