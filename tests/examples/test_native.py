"""examples/native: plain websocket clients, no neffos handshake, frames as messages.

The example runs as a child process; raw aiohttp websocket clients (no ``M``, no envelope)
and a raw Node ``ws`` client talk to it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType

from .conftest import Example, Node, StartExample

WAIT = 5.0


class Native:
    def __init__(self, app: Example, http: aiohttp.ClientSession) -> None:
        self.app = app
        self.http = http

    async def join(self, name: str) -> aiohttp.ClientWebSocketResponse[bool]:
        """A raw client named ``name``; its welcome frame is checked and taken."""
        ws = await self.http.ws_connect(f"{self.app.url}?name={name}")
        assert await text(ws) == f"welcome {name}"
        return ws


async def text(ws: aiohttp.ClientWebSocketResponse[bool]) -> str:
    data = await ws.receive_str(timeout=WAIT)
    assert isinstance(data, str)
    return data


@pytest.fixture
async def native(example: StartExample) -> AsyncIterator[Native]:
    app = example("native")
    async with aiohttp.ClientSession() as http:
        yield Native(app, http)


async def test_plain_clients_chat_without_any_handshake(native: Native) -> None:
    ann = await native.join("ann")  # the first frame is the server's: no M, no A<id>
    bob = await native.join("bob")
    assert await text(ann) == "+ bob"

    await bob.send_str("hi ann")
    assert await text(ann) == "bob: hi ann"
    # Not echoed to the sender: Bob's next frame is the answer to /who, which only he gets.
    await bob.send_str("/who")
    assert await text(bob) == "online: ann bob"
    await ann.send_str("/who")
    assert await text(ann) == "online: ann bob"

    # Frames are never parsed: what looks like neffos protocol is just text here.
    for frame in ["M", "$1;;;_OnNamespaceConnect;0;0;", ";;;chat;0;0;body;with;semicolons"]:
        await ann.send_str(frame)
        assert await text(bob) == f"ann: {frame}"

    await bob.close()
    assert await text(ann) == "- bob"
    await ann.send_str("/who")
    assert await text(ann) == "online: ann"
    await ann.close()


async def test_binary_frames_stay_binary(native: Native) -> None:
    ann = await native.join("ann")
    bob = await native.join("bob")
    assert await text(ann) == "+ bob"
    payload = bytes([0, 1, 59, 255])  # 59 is ";"
    await ann.send_bytes(payload)
    frame = await bob.receive(timeout=WAIT)
    assert (frame.type, frame.data) == (WSMsgType.BINARY, payload)
    await ann.close()
    await bob.close()


async def test_ids_come_from_the_name_parameter(native: Native) -> None:
    async with native.http.ws_connect(native.app.url) as guest:
        welcome = await text(guest)
        assert welcome.startswith("welcome guest-") and len(welcome) == len("welcome guest-0000")
    for bad in ["a%20b", "x" * 21, "semi;colon"]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await native.http.ws_connect(f"{native.app.url}?name={bad}")
        assert refused.value.status == 400, bad


async def test_the_page_uses_a_plain_websocket(native: Native) -> None:
    async with native.http.get(native.app.http + "/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "new WebSocket(" in page and "<script src" not in page  # no client library


@pytest.mark.interop  # Node + npm neffos.js/ws: run by tox -e interop
async def test_a_raw_node_ws_client(native: Native, node: Node) -> None:
    py = await native.join("py")
    scenario = node.start("native.mjs", native.app.url, "node")
    try:
        steps = await asyncio.to_thread(scenario.until, "ready")
        assert steps["welcome"] == {"frame": "welcome node"}
        assert await text(py) == "+ node"
        await py.send_str("hi node")
        frame = await py.receive(timeout=WAIT)
        assert (frame.type, frame.data) == (WSMsgType.BINARY, bytes([0, 1, 2, 255]))
        assert await text(py) == "- node"
        steps = await asyncio.to_thread(scenario.finish)
    finally:
        scenario.close()
    assert steps["text"] == {"frame": "py: hi node"}
    assert steps["who"] == {"frame": "online: py node"}
    assert steps["closed"] == {"code": 1000}
    await py.close()


async def test_sigterm_closes_plain_clients_with_1001(native: Native) -> None:
    ann = await native.join("ann")
    # Reading meanwhile, as a browser does: the client answers the server's close frame.
    closing = asyncio.ensure_future(ann.receive(timeout=WAIT))
    stdout = await asyncio.to_thread(native.app.stop, signal.SIGTERM)
    frame = await closing
    assert frame.type is WSMsgType.CLOSE
    assert ann.close_code == 1001
    assert stdout == ""
