"""What the three benchmark servers share: the command line and the serve-until-SIGTERM loop."""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal

from aiohttp import web

READY = "READY"
BODY_MAX = 1 << 20


def parse_port(description: str) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    return int(parser.parse_args().port)


def raise_nofile_limit() -> None:
    """Allow as many open sockets as the hard limit permits (the connect scenario opens 2000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(app: web.Application, port: int, name: str) -> None:
    """Serve ``app`` on 127.0.0.1:``port``, print the ready line, stop on SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY} {name} 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def run(app: web.Application, port: int, name: str) -> None:
    raise_nofile_limit()
    asyncio.run(serve(app, port, name))
