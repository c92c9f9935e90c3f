"""wsmvc.testing: the helpers users write their own tests with."""

from __future__ import annotations

import pytest
from aiohttp import web

from wsmvc import Message, NSConn, Server, controller, event
from wsmvc.testing import Inbox, dial, running


@controller(namespace="default")
class Echo:
    conn: NSConn

    @event
    async def on_chat(self, msg: Message) -> None:
        await self.conn.server.broadcast(msg, exclude=self.conn)


async def test_running_serves_and_inbox_records_in_order() -> None:
    async with running(Server(controllers=[Echo])) as url:
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws")
        inbox = Inbox()
        async with (
            await dial(url, {"default": {}}) as alice,
            await dial(url, {"default": inbox.handlers("OnChat")}) as bob,
        ):
            ns = await alice.connect("default")
            await bob.connect("default")
            ns.emit("OnChat", "one")
            ns.emit("OnChat", "two")
            assert (await inbox.next("OnChat")).text == "one"
            assert (await inbox.next("OnChat")).text == "two"
            assert inbox.pending("OnChat") == 0


async def test_inbox_next_fails_clearly_when_nothing_comes() -> None:
    with pytest.raises(AssertionError, match=r"no 'OnChat' arrived within 0\.05s"):
        await Inbox().next("OnChat", timeout=0.05)


async def test_inbox_handlers_can_answer_a_server_ask_and_running_serves_an_app() -> None:
    server = Server({"default": {}})
    app = web.Application()
    server.mount(app, "/custom")
    async with running(app=app, path="/custom") as url:
        inbox = Inbox()
        async with await dial(url, {"default": inbox.handlers(Question=lambda m: "yes")}) as c:
            await c.connect("default")
            answer = await server.ask(Message(namespace="default", event="Question"), to=c.id)
            assert answer.text == "yes"
            assert (await inbox.next("Question")).event == "Question"
