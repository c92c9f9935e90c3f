"""Benchmark server: python-socketio (AsyncServer, aiohttp mode), default settings.

Event ``ask`` acknowledges with the data it got; event ``fanout`` emits ``chat`` with the
data to every other client (``skip_sid``).
"""

from __future__ import annotations

from typing import Any

import socketio
from _common import parse_port, run
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
    return True


@sio.event
async def ask(sid: str, data: Any) -> Any:
    return data


@sio.event
async def fanout(sid: str, data: Any) -> None:
    await sio.emit("chat", data, skip_sid=sid)


async def close_all(app: web.Application) -> None:
    await sio.shutdown()


def make_app() -> web.Application:
    app = web.Application()
    sio.attach(app)
    app.on_shutdown.append(close_all)
    return app


if __name__ == "__main__":
    run(make_app(), parse_port(__doc__.splitlines()[0]), "python-socketio")
