"""Helpers for testing a wsmvc application: a real server on loopback and real clients.

::

    async def test_chat() -> None:
        async with running(Server(controllers=[Chat])) as url:
            inbox = Inbox()
            async with await dial(url, {"default": inbox.handlers("OnChat")}) as alice:
                ns = await alice.connect("default")
                ...
                msg = await inbox.next("OnChat")

Nothing is mocked: the server listens on 127.0.0.1 on a free port, and the clients speak
the neffos protocol over real websockets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .client import dial
from .handlers import Handler
from .nsconn import NSConn
from .protocol import Message
from .server import Server

__all__ = ["Inbox", "dial", "running"]


@contextlib.asynccontextmanager
async def running(
    server: Server | None = None, *, path: str = "/ws", app: web.Application | None = None
) -> AsyncIterator[str]:
    """Serve on a free loopback port; yields the websocket URL of ``path``.

    ``running(server)`` mounts ``server`` at ``path`` of ``app`` (a new one by default);
    ``running(app=app, path=...)`` serves an application that mounted its server already.
    Everything shuts down gracefully afterwards.
    """
    if server is None and app is None:
        raise TypeError("running() needs a server or an app")
    app = app if app is not None else web.Application()
    if server is not None:
        server.mount(app, path)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"ws://{host}:{port}{path}"
    finally:
        await runner.cleanup()


class Inbox:
    """Records what a client's handlers receive, so a test can await it in order.

    ``inbox.handlers("OnChat", "OnJoin")`` gives handlers for a client's namespace;
    ``await inbox.next("OnChat")`` returns the next such message or fails after
    ``timeout`` seconds.
    """

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._queues: collections.defaultdict[str, asyncio.Queue[Message]] = (
            collections.defaultdict(asyncio.Queue)
        )

    def handlers(self, *events: str, **answers: Callable[[Message], object]) -> dict[str, Handler]:
        """Handlers that record ``events``; ``answers`` record and answer (a server's ask):
        ``inbox.handlers("OnChat", Question=lambda msg: "yes")``."""

        def recorder(answer: Callable[[Message], object] | None) -> Handler:
            def record(ns: NSConn, msg: Message) -> object:
                self._queues[msg.event].put_nowait(msg)
                return answer(msg) if answer is not None else None

            return record

        table = dict.fromkeys(events, recorder(None))
        table.update({event: recorder(answer) for event, answer in answers.items()})
        return table

    async def next(self, event: str, timeout: float | None = None) -> Message:
        """The next ``event`` received; ``AssertionError`` if none arrives in time."""
        wait = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(self._queues[event].get(), wait)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {event!r} arrived within {wait}s") from None

    def pending(self, event: str) -> int:
        """How many ``event`` messages arrived and were not taken yet."""
        return self._queues[event].qsize()
