"""What a client can make the server hold, and for how long (issue 8: bounded input).

Before its ``M``, and while a handler of its connection awaits an ask of it, a client's
messages wait for their turn; ``max_queue`` (messages) and ``max_queue_bytes`` bound them:
past the bound a connection that has not sent ``M`` is closed (1008), and one whose
handler awaits an ask stops being read until it caught up (TCP pushes back). A connection
that does not send ``M`` within ``handshake_timeout`` is closed.

The memory tests flood a server running as its own process (``tests/apps/flood.py``) with
150 messages of 1 MiB each and read the growth of its peak resident memory (``VmHWM``)
from ``/proc``: without the bound it would grow by the whole 150 MiB.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType

from wsmvc import Server

from .interop.interop_support import REPO_ROOT, AppProcess
from .wire_support import RawWS, Serve, T, expect, expect_close, handshake, show

MIB = 1 << 20
FLOOD = 150  # messages of 1 MiB
BOUND = 16 * MIB  # allowed growth of the peak memory: the queue (1 MiB), one message in
# aiohttp's reader (1 MiB), the copies a message makes while it is handled, and slack


class FloodServer(AppProcess):
    def __init__(self, log_dir: Path) -> None:
        super().__init__(
            "flood server",
            REPO_ROOT / "tests" / "apps" / "flood.py",
            log_dir,
            ready=re.compile(r"flood server ready on (ws://\S+)"),
        )

    def peak_memory(self) -> int:
        """The process's peak resident memory so far (``VmHWM``), in bytes."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
        assert match, status
        return int(match[1]) * 1024


@pytest.fixture
def flood_server(tmp_path: Path) -> Iterator[FloodServer]:
    server = FloodServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def one_mib_message(event: str) -> bytes:
    """A binary frame of exactly 1 MiB of payload (the default ``max_message_size``)."""
    head = f";default;;{event};0;0;".encode()
    return RawWS.frame(head + b"x" * (MIB - len(head)))


async def opened(url: str) -> RawWS:
    raw = await RawWS.open(url)
    await raw.send("M")
    assert (await raw.recv_text()).startswith("A")
    await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
    assert await raw.recv_text() == "$c;;;;;;"
    return raw


async def test_a_flood_while_a_handler_awaits_an_ask_is_held_to_the_bound(
    flood_server: FloodServer,
) -> None:
    """Case 6: 150 x 1 MiB while the server's handler waits for this client's answer (which
    never comes): the server stops reading at the bound, its ask times out, then it reads
    and handles every message, in order; its peak memory grows by far less than 150 MiB."""
    raw = await opened(flood_server.url)
    warm = await opened(flood_server.url)  # the same path once, so the baseline includes it
    await warm.send(";default;;count;0;0;")
    await warm.send("$t;default;;total;0;0;")
    assert await warm.recv_text() == "$t;default;;total;0;0;1"
    warm.abort()
    before = flood_server.peak_memory()
    try:
        await raw.send("$a;default;;ask_me;0;0;")
        assert re.fullmatch(r"[0-9]+;default;;q;0;0;", await raw.recv_text())
        frame = one_mib_message("count")

        async def flood() -> None:
            for _ in range(FLOOD):
                await raw.send_raw(frame)

        flooding = asyncio.create_task(flood())
        # The ask times out (1 s) with the flood stuck behind the bound, then all is read.
        assert await asyncio.wait_for(raw.recv_text(), 30) == "$a;default;;ask_me;0;0;timed out"
        await asyncio.wait_for(flooding, 60)
        await raw.send("$t;default;;total;0;0;")
        assert await asyncio.wait_for(raw.recv_text(), 30) == f"$t;default;;total;0;0;{FLOOD + 1}"
    finally:
        raw.abort()
    growth = flood_server.peak_memory() - before
    assert growth < BOUND, f"peak memory grew by {growth / MIB:.1f} MiB"


async def test_a_flood_before_the_handshake_is_closed_at_the_bound(
    flood_server: FloodServer,
) -> None:
    """Case 6 before ``M``: the server keeps at most the bound of early messages, then
    closes the connection with 1008; its memory stays within the bound and it goes on
    serving others."""
    before = flood_server.peak_memory()
    raw = await RawWS.open(flood_server.url)
    frame = one_mib_message("count")

    async def flood() -> None:
        try:
            for _ in range(FLOOD):
                await raw.send_raw(frame)
        except OSError:
            pass  # the server closed the connection

    flooding = asyncio.create_task(flood())
    try:
        code = await asyncio.wait_for(raw.close_code(), 30)
        assert code == 1008
    finally:
        flooding.cancel()  # the client gives up (a reply to the close would interleave)
        await asyncio.gather(flooding, return_exceptions=True)
        raw.abort()
    growth = flood_server.peak_memory() - before
    assert growth < BOUND, f"peak memory grew by {growth / MIB:.1f} MiB"
    other = await opened(flood_server.url)
    await other.send("$t;default;;total;0;0;")
    assert await other.recv_text() == "$t;default;;total;0;0;0"  # nothing of the flood ran
    other.abort()


@pytest.mark.parametrize("early", [64, 65])
async def test_the_count_of_messages_before_the_handshake_is_bounded(
    serve: Serve, session: aiohttp.ClientSession, early: int
) -> None:
    """``max_queue`` (64): that many small messages before ``M`` are handled after the ack;
    one more closes the connection with 1008, without an ack."""
    url = await serve(Server({"default": {"ping": lambda ns, msg: "pong"}}))
    async with session.ws_connect(url) as ws:
        for i in range(early):
            await ws.send_str(f"$c{i};default;;_OnNamespaceConnect;0;0;")
        await ws.send_str("M")
        if early > 64:
            msg = await expect_close(ws)
            assert msg.type is WSMsgType.CLOSE and msg.data == 1008, show(msg)
            return
        assert (await ws.receive_str(timeout=T)).startswith("A")
        await expect(ws, "$c0;;;;;;", *(f"$c{i};;;;;;" for i in range(1, early)))


@pytest.mark.parametrize("chatty", [False, True], ids=["silent", "never-sends-M"])
async def test_a_client_that_does_not_complete_the_handshake_is_closed(
    serve: Serve, session: aiohttp.ClientSession, chatty: bool
) -> None:
    """``handshake_timeout``: closed with 1008 once it passed, whether the client sends
    nothing or keeps sending frames other than ``M``."""
    url = await serve(Server({"default": {}}, handshake_timeout=0.3))
    async with session.ws_connect(url) as ws:
        if chatty:
            for i in range(5):
                await ws.send_str(f";default;;chat;0;0;{i}")
        msg = await expect_close(ws)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008, show(msg)
        assert msg.extra == "handshake timeout"


async def test_the_handshake_deadline_does_not_touch_an_open_connection(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    url = await serve(Server({"default": {"ping": lambda ns, msg: "pong"}}, handshake_timeout=0.3))
    async with session.ws_connect(url) as ws:
        await handshake(ws)
        done, _ = await asyncio.wait([asyncio.ensure_future(ws.receive())], timeout=0.6)
        assert not done  # twice the deadline: still open, nothing sent


def test_the_handshake_timeout_defaults_to_ten_seconds() -> None:
    assert Server({"default": {}}).handshake_timeout == 10.0
