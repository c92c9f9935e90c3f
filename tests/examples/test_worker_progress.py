"""examples/worker_progress: a worker process pushes a job's progress to one user's tabs.

Two servers of the example share a real Redis or NATS; alice has a tab on each, bob one.
``worker.py`` runs as its own process (``asyncio.run``, no web server): alice's tabs get
every step in order and ``Done``, bob gets nothing, and the worker printed the answer one
of alice's tabs gave to its question.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import wsmvc
from wsmvc import Message, NSConn
from wsmvc.testing import Inbox

from ..exchange.conftest import BROKER_KINDS, Broker, running_broker
from .conftest import EXAMPLES, StartExample

WAIT = 5.0
STEPS = 5


@pytest.fixture(params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    with running_broker(request.param, tmp_path) as running:
        yield running


async def tab(url: str, user: str, inbox: Inbox) -> NSConn:
    def seen(ns: NSConn, msg: Message) -> str:
        return f"{user} is watching"

    events = {**inbox.handlers("Progress", "Done"), "Seen?": seen}
    conn = await wsmvc.dial(f"{url}?user={user}", {"jobs": events}, timeout=WAIT)
    return await conn.connect("jobs", timeout=WAIT)


async def test_the_worker_reaches_every_tab_of_one_user(
    broker: Broker, example: StartExample
) -> None:
    one = example("worker_progress", "--broker", broker.url)
    two = example("worker_progress", "--broker", broker.url)
    alice_one, alice_two, bob = Inbox(), Inbox(), Inbox()
    tabs = [
        await tab(one.url, "alice", alice_one),
        await tab(two.url, "alice", alice_two),
        await tab(two.url, "bob", bob),
    ]
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                str(EXAMPLES / "worker_progress" / "worker.py"),
                "--broker",
                broker.url,
                "--user",
                "alice",
                "--steps",
                str(STEPS),
                "--delay",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "alice answered: alice is watching"
        for inbox in (alice_one, alice_two):
            progress = [json.loads((await inbox.next("Progress")).body) for _ in range(STEPS)]
            assert [p["step"] for p in progress] == list(range(1, STEPS + 1))
            await inbox.next("Done")
        # bob's tab is on the same server as alice's second, which had all of it by now.
        assert (bob.pending("Progress"), bob.pending("Done")) == (0, 0)
    finally:
        for ns in tabs:
            await ns.conn.close()
