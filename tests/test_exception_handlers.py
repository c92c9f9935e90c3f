"""Exception handlers by type, server-wide and per controller (issue 11).

A real server on loopback and real clients (``wsmvc.dial``; a raw client where the wire
matters): the handler decides the text a client gets, for event handlers (sync and async)
and for system-event hooks (a refused connect or join); the most specific type wins, a
controller's ``@catch`` beats the server's, ``None`` passes the decision on, a handler
that fails is logged and the generic text goes out, and an ``EventError`` keeps its text
unless a handler for ``EventError`` asks for it.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

import wsmvc
from wsmvc import EventError, Message, NSConn, Server, catch, controller, event
from wsmvc.dispatch import GENERIC_ERROR

from .wire_support import Serve, T, expect, ready


class Problem(Exception):
    """A domain error of the tests."""


class SmallProblem(Problem):
    """A more specific one."""


class Refusal(EventError):
    """An EventError subclass a handler may want to see."""


_clients: list[wsmvc.ClientConn] = []


async def connect(url: str, namespace: str = "default") -> NSConn:
    client = await wsmvc.dial(url, {namespace: {}}, timeout=T, ask_timeout=T)
    _clients.append(client)
    return await client.connect(namespace, timeout=T)


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


async def error_of(ns: NSConn, event: str, body: str = "") -> str:
    with pytest.raises(EventError) as raised:
        await ns.ask(event, body, timeout=T)
    return raised.value.text


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def raising(exc: BaseException) -> Any:
    def handler(ns: NSConn, msg: Message) -> None:
        raise exc

    return handler


def raising_later(exc: BaseException) -> Any:
    async def handler(ns: NSConn, msg: Message) -> None:
        await asyncio.sleep(0)
        raise exc

    return handler


# -- server-wide -----------------------------------------------------------------------------


async def test_the_handler_decides_the_text(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    def on_problem(exc: Exception, ns: NSConn | None, msg: Message) -> str:
        assert ns is not None and ns.namespace == "default"
        return f"problem with {msg.event}: {exc}"

    server = Server(
        {"default": {"sync": raising(Problem("no")), "async": raising_later(Problem("later"))}},
        exception_handlers={Problem: on_problem},
    )
    ns = await connect(await serve(server))
    assert await error_of(ns, "sync") == "problem with sync: no"
    assert await error_of(ns, "async") == "problem with async: later"
    assert errors_logged(caplog) == []  # the handler answered: wsmvc logs nothing


async def test_the_wire_is_an_ordinary_error_answer(serve: Serve) -> None:
    server = Server(
        {"default": {"boom": raising(Problem("x"))}},
        exception_handlers={Problem: lambda exc, ns, msg: "handled; with a ;"},
    )
    url = await serve(server)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ready(ws)
        await ws.send_str("$1;default;;boom;0;0;")
        await expect(ws, "$1;default;;boom;1;0;handled; with a ;")
        await ws.send_str(";default;;boom;0;0;")  # a plain emit gets it as an event
        await expect(ws, ";default;;boom;1;0;handled; with a ;")


async def test_the_most_specific_type_wins(serve: Serve) -> None:
    server = Server(
        {
            "default": {
                "small": raising(SmallProblem()),
                "big": raising(Problem()),
                "other": raising(KeyError("k")),
            }
        },
        exception_handlers={
            Exception: lambda exc, ns, msg: "anything",
            Problem: lambda exc, ns, msg: "a problem",
        },
    )

    @server.exception_handler(SmallProblem)
    def small(exc: Exception, ns: NSConn | None, msg: Message) -> str:
        return "a small problem"

    ns = await connect(await serve(server))
    assert await error_of(ns, "small") == "a small problem"
    assert await error_of(ns, "big") == "a problem"
    assert await error_of(ns, "other") == "anything"


async def test_async_handlers(serve: Serve) -> None:
    async def slow(exc: Exception, ns: NSConn | None, msg: Message) -> str:
        await asyncio.sleep(0)
        return f"slowly: {exc}"

    server = Server(
        {"default": {"sync": raising(Problem("a")), "async": raising_later(Problem("b"))}},
        exception_handlers={Problem: slow},
    )
    ns = await connect(await serve(server))
    assert await error_of(ns, "sync") == "slowly: a"
    assert await error_of(ns, "async") == "slowly: b"
    # Order is kept: one client's messages are still handled one at a time.
    replies = await asyncio.gather(*(error_of(ns, "sync") for _ in range(5)))
    assert replies == ["slowly: a"] * 5


async def test_none_leaves_it_to_the_default(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def count(exc: Exception, ns: NSConn | None, msg: Message) -> None:
        seen.append(type(exc).__name__)  # metrics, say; the default answers

    server = Server({"default": {"boom": raising(Problem())}}, exception_handlers={Problem: count})
    ns = await connect(await serve(server))
    assert await error_of(ns, "boom") == GENERIC_ERROR
    assert seen == ["Problem"]
    [logged] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info is not None and isinstance(logged.exc_info[1], Problem)


def broken_handler(exc: Exception, ns: NSConn | None, msg: Message) -> str:
    raise RuntimeError("handler broke")


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(broken_handler, id="raises"),
        pytest.param(lambda exc, ns, msg: 42, id="returns-an-int"),
        pytest.param(lambda exc, ns, msg: "", id="returns-empty"),
    ],
)
async def test_a_handler_that_fails_is_logged_and_the_generic_text_goes(
    serve: Serve, caplog: pytest.LogCaptureFixture, handler: Any
) -> None:
    server = Server(
        {"default": {"boom": raising(Problem("original")), "ping": lambda ns, msg: "pong"}},
        exception_handlers={Problem: handler},
    )
    ns = await connect(await serve(server))
    assert await error_of(ns, "boom") == GENERIC_ERROR
    messages = errors_logged(caplog)
    assert any("exception handler" in m and "failed" in m for m in messages), messages
    # and the original error, with its traceback, as without a handler
    assert any(
        r.exc_info is not None and isinstance(r.exc_info[1], Problem) for r in caplog.records
    )
    assert (await ns.ask("ping", timeout=T)).text == "pong"  # the connection stays up


async def test_a_handler_may_raise_EventError(serve: Serve) -> None:
    def refuse(exc: Exception, ns: NSConn | None, msg: Message) -> str:
        raise EventError(f"refused: {exc}")

    server = Server(
        {"default": {"boom": raising(Problem("x"))}}, exception_handlers={Problem: refuse}
    )
    ns = await connect(await serve(server))
    assert await error_of(ns, "boom") == "refused: x"


async def test_event_errors_keep_their_text(serve: Serve) -> None:
    """A handler for Exception does not see an EventError; one for EventError does."""
    server = Server(
        {"default": {"plain": raising(EventError("mine")), "refusal": raising(Refusal("no"))}},
        exception_handlers={Exception: lambda exc, ns, msg: "swallowed"},
    )
    ns = await connect(await serve(server))
    assert await error_of(ns, "plain") == "mine"
    assert await error_of(ns, "refusal") == "no"
    server.handlers.exception_handlers.add(Refusal, lambda exc, ns, msg: f"[{exc.text}]")
    assert await error_of(ns, "refusal") == "[no]"
    assert await error_of(ns, "plain") == "mine"


async def test_system_hooks_refuse_with_the_handlers_text(serve: Serve) -> None:
    def on_connect(ns: NSConn, msg: Message) -> None:
        request = ns.conn.request
        if request is not None and "stranger" in request.query:
            raise PermissionError("who?")

    async def on_join(ns: NSConn, msg: Message) -> None:
        raise PermissionError(f"not {msg.room}")

    async def explain(exc: Exception, ns: NSConn | None, msg: Message) -> str:
        return f"{msg.event} refused: {exc}"

    server = Server(
        {"default": {"_OnNamespaceConnect": on_connect, "_OnRoomJoin": on_join}},
        exception_handlers={PermissionError: explain},
    )
    url = await serve(server)
    stranger = await wsmvc.dial(url + "?stranger", {"default": {}}, timeout=T)
    _clients.append(stranger)
    with pytest.raises(EventError, match=r"^_OnNamespaceConnect refused: who\?$"):
        await stranger.connect("default", timeout=T)
    ns = await connect(url)
    with pytest.raises(EventError, match=r"^_OnRoomJoin refused: not vip$"):
        await ns.join_room("vip", timeout=T)
    assert list(ns.rooms) == []


async def test_a_value_that_cannot_be_sent(serve: Serve) -> None:
    """The answer's own failure (an object no codec writes) goes to the handlers too."""

    def unsendable(ns: NSConn, msg: Message) -> object:
        return object()

    server = Server(
        {"default": {"weird": unsendable}},
        exception_handlers={TypeError: lambda exc, ns, msg: "cannot answer that"},
    )
    ns = await connect(await serve(server))
    assert await error_of(ns, "weird") == "cannot answer that"


# -- per controller --------------------------------------------------------------------------


@controller(namespace="shop")
class Shop:
    conn: NSConn

    def __init__(self) -> None:
        self.failures = 0

    @event
    def on_buy(self, msg: Message) -> str:
        if msg.text == "small":
            raise SmallProblem("out of stock")
        if msg.text == "key":
            raise KeyError("sku")
        raise Problem("closed")

    @event
    async def on_pay(self, msg: Message) -> str:
        await asyncio.sleep(0)
        raise Problem("card declined")

    @event
    async def on_room_join(self, msg: Message) -> None:
        raise Problem(f"{msg.room} is private")

    @catch(Problem)
    def problem(self, exc: Problem, msg: Message) -> str:
        self.failures += 1  # per-client state, on the controller
        return f"shop: {exc} ({msg.event}, failure {self.failures})"

    @catch(KeyError)
    async def missing_key(self, exc: KeyError) -> str | None:
        return None  # the server decides


def server_wide(exc: Exception, ns: NSConn | None, msg: Message) -> str:
    return f"server: {type(exc).__name__}"


async def test_a_controllers_handler_beats_the_servers(serve: Serve) -> None:
    server = Server(
        controllers=[Shop],
        exception_handlers={SmallProblem: server_wide, KeyError: server_wide},
    )
    ns = await connect(await serve(server), "shop")
    # Less specific (Problem) but the controller's: it wins over the server's SmallProblem.
    assert await error_of(ns, "OnBuy", "small") == "shop: out of stock (OnBuy, failure 1)"
    assert await error_of(ns, "OnBuy") == "shop: closed (OnBuy, failure 2)"
    assert await error_of(ns, "OnPay") == "shop: card declined (OnPay, failure 3)"
    # The controller's async handler returned None: the server's decides.
    assert await error_of(ns, "OnBuy", "key") == "server: KeyError"
    # Hooks too: the refused join.
    with pytest.raises(EventError, match=r"^shop: vip is private \(_OnRoomJoin, failure 4\)$"):
        await ns.join_room("vip", timeout=T)


async def test_catch_is_inherited_and_overridden(serve: Serve) -> None:
    @controller(namespace="base")
    class Base:
        @event
        def on_go(self) -> None:
            raise SmallProblem("x")

        @catch(Problem)
        def problem(self, exc: Exception) -> str:
            return "base"

    @controller(namespace="child")
    class Child(Base):
        @catch(SmallProblem)
        def small(self, exc: Exception) -> str:
            return "child"

    @controller(namespace="override")
    class Override(Base):
        def problem(self, exc: Exception) -> str:  # no @catch: not a handler any more
            return "never"

    server = Server(controllers=[Base, Child, Override])
    url = await serve(server)
    assert await error_of(await connect(url, "base"), "OnGo") == "base"
    assert await error_of(await connect(url, "child"), "OnGo") == "child"
    assert await error_of(await connect(url, "override"), "OnGo") == GENERIC_ERROR


def test_a_catch_method_named_like_an_event_is_not_warned_about() -> None:
    """``on_error`` is a natural name for an exception handler: no ControllerWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @controller(namespace="quiet")
        class Quiet:
            @event
            def on_go(self) -> None: ...

            @catch(ValueError)
            def on_error(self, exc: Exception) -> str:
                return "x"

    assert Quiet.__name__ == "Quiet"


# -- mistakes, at registration ----------------------------------------------------------------


def test_registration_mistakes() -> None:
    with pytest.raises(TypeError, match="exception classes"):
        Server(exception_handlers={"ValueError": server_wide})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="called as handler\\(exc, nsconn, msg\\)"):
        Server(exception_handlers={ValueError: lambda exc: "x"})
    with pytest.raises(TypeError, match="not callable"):
        Server(exception_handlers={ValueError: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="at least one exception class"):
        Server().exception_handler()
    with pytest.raises(TypeError, match="exception classes"):
        catch(int)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes \(self, exc\) or \(self, exc, msg\)"):

        class Wrong:
            @catch(ValueError)
            def handler(self, exc: Exception, msg: Message, extra: int) -> str:
                return ""
