"""What the benchmark servers share: the command line and the serve-until-SIGTERM loop."""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

READY = "READY"
BODY_MAX = 1 << 20


def port_parser(description: str) -> argparse.ArgumentParser:
    """The command line every server takes (``--port``); servers with options add theirs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    return parser


def parse_port(description: str) -> int:
    return int(port_parser(description).parse_args().port)


def raise_nofile_limit() -> None:
    """Allow as many open sockets as the hard limit permits (the connect scenario opens 2000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(
    app: web.Application,
    port: int,
    name: str,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve ``app`` on 127.0.0.1:``port``, print the ready line, stop on SIGTERM or SIGINT.

    ``ready``, when given, is awaited after the app started and before the ready line (a
    server with a broker prints it only once it can deliver).
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    if ready is not None:
        await ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY} {name} 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def run(
    app: web.Application,
    port: int,
    name: str,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    raise_nofile_limit()
    asyncio.run(serve(app, port, name, ready))
