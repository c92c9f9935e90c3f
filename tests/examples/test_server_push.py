"""examples/server_push: a background ticker, HTTP-triggered asks and notices.

The example runs as a child process with a 20 ms tick; Python clients (``wsmvc.dial``) and
neffos.js from Node listen to it and answer its questions. Every wait is for a message or a
reply, with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

import wsmvc
from wsmvc import ClientConn, EventError, Message, NSConn
from wsmvc.testing import Inbox

from .conftest import Example, Node, StartExample

WAIT = 5.0
ASK_TIMEOUT = 1.0  # seconds the example waits for an answer (the 504 test waits this long)

Answer = Callable[[NSConn, Message], Any]


class Push:
    def __init__(self, app: Example, http: aiohttp.ClientSession) -> None:
        self.app = app
        self.http = http
        self.clients: list[ClientConn] = []

    async def client(self, inbox: Inbox, answer: Answer | None = None) -> NSConn:
        events: dict[str, Any] = inbox.handlers("Tick", "SlowTick", "Notice")
        if answer is not None:
            events["Question"] = answer
        conn = await wsmvc.dial(self.app.url, {"live": events}, timeout=WAIT, ask_timeout=WAIT)
        self.clients.append(conn)
        return await conn.connect("live", timeout=WAIT)

    async def post(self, path: str, body: str = "") -> tuple[int, str]:
        async with self.http.post(self.app.http + path, data=body.encode()) as response:
            return response.status, await response.text()

    async def get_json(self, path: str) -> Any:
        async with self.http.get(self.app.http + path) as response:
            assert response.status == 200
            return await response.json()


@pytest.fixture
async def push(example: StartExample) -> AsyncIterator[Push]:
    app = example("server_push", "--interval-ms", "20", "--ask-timeout", str(ASK_TIMEOUT))
    async with aiohttp.ClientSession() as http:
        demo = Push(app, http)
        try:
            yield demo
        finally:
            for conn in demo.clients:
                await conn.close()


async def ticks(inbox: Inbox, count: int, event: str = "Tick") -> list[dict[str, Any]]:
    return [json.loads((await inbox.next(event)).body) for _ in range(count)]


async def test_every_client_gets_every_tick_in_order(push: Push) -> None:
    first, second = Inbox(), Inbox()
    await push.client(first)
    await push.client(second)
    for inbox in (first, second):
        got = await ticks(inbox, 5)
        numbers = [tick["n"] for tick in got]
        assert numbers == list(range(numbers[0], numbers[0] + 5))  # none lost, none reordered
        assert all(tick["time"].endswith("+00:00") for tick in got)
    # Both hear the same clock: from a tick both will get on, they get the same ones.
    heads = [(await ticks(inbox, 1))[0] for inbox in (first, second)]
    target = max(tick["n"] for tick in heads)
    for inbox, head in zip((first, second), heads, strict=True):
        tick = head
        while tick["n"] < target:
            tick = (await ticks(inbox, 1))[0]
        assert tick["n"] == target
    assert [tick["n"] for tick in await ticks(first, 3)] == [
        tick["n"] for tick in await ticks(second, 3)
    ]


async def test_room_broadcasts_reach_the_room_only(push: Push) -> None:
    member, outsider = Inbox(), Inbox()
    ns = await push.client(member)
    await push.client(outsider)
    await ns.join_room("slow", timeout=WAIT)
    slow = (await ticks(member, 1, "SlowTick"))[0]
    assert slow["n"] % 10 == 0
    # The ticker sends SlowTick n right after Tick n: once the outsider has Tick n + 1, a
    # SlowTick meant for it would have arrived.
    while (await ticks(outsider, 1))[0]["n"] <= slow["n"]:
        pass
    assert outsider.pending("SlowTick") == 0


async def test_post_ask_returns_the_clients_answer(push: Push) -> None:
    def thoughtful(ns: NSConn, msg: Message) -> str:
        return f"{ns.id} says 4 to {msg.text!r}"

    ns = await push.client(Inbox(), thoughtful)
    assert await push.post(f"/ask/{ns.id}", "2+2?") == (200, f"{ns.id} says 4 to '2+2?'")
    assert await push.post("/ask/nobody", "hello?") == (404, "no client 'nobody' is connected\n")


async def test_post_ask_reports_errors_and_silence(push: Push) -> None:
    def grumpy(ns: NSConn, msg: Message) -> None:
        raise EventError("ask me later")

    def silent(ns: NSConn, msg: Message) -> None:
        return None  # answers nothing: the server's ask times out

    grump = await push.client(Inbox(), grumpy)
    quiet = await push.client(Inbox(), silent)
    assert await push.post(f"/ask/{grump.id}", "now?") == (
        502,
        f"{grump.id} answered with an error: ask me later\n",
    )
    assert await push.post(f"/ask/{quiet.id}", "anyone?") == (
        504,
        f"{quiet.id} did not answer in time\n",
    )


async def test_post_notify_and_get_clients(push: Push) -> None:
    member, outsider = Inbox(), Inbox()
    ns = await push.client(member)
    other = await push.client(outsider)
    assert sorted(await push.get_json("/clients")) == sorted([ns.id, other.id])
    await ns.join_room("slow", timeout=WAIT)

    assert await push.post("/notify?room=slow", "slow ones only") == (200, '{"reached": 1}')
    assert await push.post("/notify", "everyone") == (200, '{"reached": 2}')
    assert [(await member.next("Notice")).text for _ in range(2)] == ["slow ones only", "everyone"]
    assert (await outsider.next("Notice")).text == "everyone"
    assert outsider.pending("Notice") == 0


@pytest.mark.interop  # Node + npm neffos.js/ws: run by tox -e interop
async def test_neffos_js_hears_ticks_and_answers_asks(push: Push, node: Node) -> None:
    scenario = node.start("server_push.mjs", push.app.url)
    try:
        steps = await asyncio.to_thread(scenario.until, "ready")
        numbers = steps["ticks"]["n"]
        assert numbers == list(range(numbers[0], numbers[0] + 3))
        js_id = steps["ready"]["id"]
        assert js_id in await push.get_json("/clients")
        assert await push.post(f"/ask/{js_id}", "are you there?") == (
            200,
            "node heard: are you there?",
        )
        assert await push.post("/notify", "bye") == (200, '{"reached": 1}')
        steps = await asyncio.to_thread(scenario.finish)
    finally:
        scenario.close()
    assert steps["question"] == {"body": "are you there?"}
    assert steps["notice"] == {"body": "bye"}


async def test_sigterm_closes_clients_with_1001_and_stops_the_ticker(push: Push) -> None:
    inbox = Inbox()
    ns = await push.client(inbox)
    await ticks(inbox, 1)
    stdout = await asyncio.to_thread(push.app.stop, signal.SIGTERM)  # exit 0, no error logged
    await asyncio.wait_for(ns.conn.wait_closed(), WAIT)
    assert ns.conn.close_code == 1001
    assert stdout == ""
