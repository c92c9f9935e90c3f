"""What the benchmark servers share: the command line and the serve-until-SIGTERM loop."""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

READY = "READY"
WSMVC_FROM = " wsmvc="  # ends the ready line of a server that imported wsmvc: where from
BODY_MAX = 1 << 20


LOOPS = ("asyncio", "uvloop")


def port_parser(description: str) -> argparse.ArgumentParser:
    """The command line every server takes (``--port``, ``--loop``); servers with options
    add theirs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="the event loop")
    return parser


def chosen_loop() -> str:
    """The ``--loop`` of this server's command line (every script's parser has it)."""
    loop_parser = argparse.ArgumentParser(add_help=False)
    loop_parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    return str(loop_parser.parse_known_args()[0].loop)


def parse_port(description: str) -> int:
    return int(port_parser(description).parse_args().port)


def raise_nofile_limit() -> None:
    """Allow as many open sockets as the hard limit permits (the connect scenario opens 2000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wsmvc_origin() -> str:
    """The end of the ready line: the directory wsmvc was imported from, if it was (the
    runner checks it is the copy it meant to measure)."""
    module = sys.modules.get("wsmvc")
    if module is None or module.__file__ is None:
        return ""
    return f"{WSMVC_FROM}{Path(module.__file__).resolve().parent}"


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
    print(f"{READY} {name} 127.0.0.1:{port}{wsmvc_origin()}", flush=True)
    await stop.wait()
    await runner.cleanup()


def run(
    app: web.Application,
    port: int,
    name: str,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    raise_nofile_limit()
    if chosen_loop() == "uvloop":
        import uvloop  # only where asked for: the default loop needs nothing extra

        uvloop.run(serve(app, port, f"{name} (uvloop)", ready))
    else:
        asyncio.run(serve(app, port, name, ready))
