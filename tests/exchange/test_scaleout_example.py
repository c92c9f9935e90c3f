"""examples/scaleout/app.py as its README runs it: two server processes, one broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import wsmvc
from wsmvc import Message, NSConn

from .conftest import REPO_ROOT, START_TIMEOUT, WAIT, Broker, LineReader, end_process, free_port

APP = REPO_ROOT / "examples" / "scaleout" / "app.py"


@pytest.fixture
def two_servers(broker: Broker, tmp_path: Path) -> Iterator[list[str]]:
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for n in range(2):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, str(APP), "--port", str(port), "--broker", broker.url],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=(tmp_path / f"server{n}.log").open("wb"),
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = LineReader(proc.stdout).readline(time.monotonic() + START_TIMEOUT)
            assert line == f"scale-out chat ready on ws://127.0.0.1:{port}/chat", line
            urls.append(f"ws://127.0.0.1:{port}/chat")
        yield urls
    finally:
        for proc in procs:
            assert end_process(proc) == 0


async def test_two_servers_chat_and_whisper_through_the_broker(two_servers: list[str]) -> None:
    heard: asyncio.Queue[Message] = asyncio.Queue()
    whispers: asyncio.Queue[Message] = asyncio.Queue()
    mine: asyncio.Queue[Message] = asyncio.Queue()

    def on_bob(ns: NSConn, msg: Message) -> None:
        (whispers if msg.event == "Whisper" else heard).put_nowait(msg)

    alice_events = {"Say": lambda ns, m: mine.put_nowait(m)}
    bob_events = {"Say": on_bob, "Whisper": on_bob}
    first, second = two_servers
    async with (
        await wsmvc.dial(first, {"chat": alice_events}, headers={"X-Name": "alice"}) as alice,
        await wsmvc.dial(second, {"chat": bob_events}, headers={"X-Name": "bob"}) as bob,
    ):
        said = await alice.connect("chat")
        await bob.connect("chat")
        # The servers subscribe in the background: say hello until bob, on the other
        # server, hears one (bounded), then check what the README promises.
        deadline = asyncio.get_running_loop().time() + 10
        while heard.empty():
            assert asyncio.get_running_loop().time() < deadline, "bob never heard alice"
            said.emit("Say", "hello from server 1")
            try:
                await asyncio.wait_for(heard.get(), 0.2)
                break
            except asyncio.TimeoutError:
                continue
        assert (await said.ask("Whisper", "bob:psst", timeout=WAIT)).text == "sent"
        assert (await asyncio.wait_for(whispers.get(), WAIT)).text == "alice:psst"
        assert mine.empty()  # the sender is excluded from its own Say
