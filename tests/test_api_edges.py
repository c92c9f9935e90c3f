"""Issue 13's API rough edges, as a user meets them, against real servers on loopback.

* ``server.broadcast()`` sends during the call: a forgotten ``await`` loses nothing and
  warns of nothing, ``await server.broadcast()`` still works.
* ``dial()`` works as ``await dial()`` and as ``async with dial()`` (reconnecting too).
* One name for a reply's bytes: ``Reply.body``; ``Reply.data`` warns.
* Every exception of wsmvc is a ``WsmvcError`` and keeps its old built-in base.
* The exchanges take typed keywords (and ``client_options``), not ``**kwargs: Any``.
* ``ask()`` never changes the caller's ``Message``.
* One generic error text, wherever a failure is told to a peer.
* A side's own mistakes say so ("not connected", "not in your handler table") before
  anything is sent, while the wire keeps neffos' ``bad namespace``.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import itertools
import pkgutil
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import attrs
import pytest

import wsmvc
from wsmvc import (
    Backoff,
    BadNamespace,
    BadRoom,
    ClientConn,
    EventError,
    Message,
    NotConnected,
    NotInHandlerTable,
    NotJoined,
    NSConn,
    ReconnectingClient,
    Reject,
    Reply,
    Server,
    WsmvcError,
)
from wsmvc.client import Connecting
from wsmvc.emitter import Emitter
from wsmvc.errors import GENERIC_ERROR
from wsmvc.exchange.nats import NatsExchange
from wsmvc.exchange.redis import RedisExchange

from .conftest import Serve

WAIT = 5.0  # seconds for anything that should happen at once


@pytest.fixture
def unawaited() -> Iterator[list[warnings.WarningMessage]]:
    """The "never awaited" warnings raised while the test runs (garbage collected first)."""
    gc.collect()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield seen
        gc.collect()
    del seen[:]  # (the assertions are the test's; this only ends the recording)


def never_awaited(seen: list[warnings.WarningMessage]) -> list[str]:
    gc.collect()
    return [str(w.message) for w in seen if "never awaited" in str(w.message)]


class Listener:
    """A client connected to ``default`` that records the ``heard`` events it gets."""

    def __init__(self) -> None:
        self.heard: asyncio.Queue[bytes] = asyncio.Queue()
        self.handlers = {"default": {"heard": self.on_heard}}

    def on_heard(self, ns: NSConn, msg: Message) -> None:
        self.heard.put_nowait(msg.body)

    async def next(self) -> bytes:
        return await asyncio.wait_for(self.heard.get(), WAIT)

    async def next_but_probes(self) -> bytes:
        """The next body that is not a late probe (see :func:`probe`)."""
        while (body := await self.next()).startswith(b"probe"):
            pass
        return body


# -- broadcast sends in the caller's step ---------------------------------------------------


async def test_a_broadcast_without_await_is_delivered_and_warns_of_nothing(
    serve: Serve, unawaited: list[warnings.WarningMessage]
) -> None:
    def shout(ns: NSConn, msg: Message) -> bytes:
        ns.server.broadcast(Message("default", event="heard", body=b"1:" + msg.body))  # no await
        ns.broadcast_others("heard", b"2:" + msg.body)  # no await either
        return b"shouted"

    server = Server({"default": {"shout": shout}})
    url = await serve(server)
    listener = Listener()
    async with wsmvc.dial(url, listener.handlers) as other, wsmvc.dial(url, {"default": {}}) as me:
        await other.connect("default")
        ns = await me.connect("default")
        assert (await ns.ask("shout", "hi", timeout=WAIT)).body == b"shouted"
        assert await listener.next() == b"1:hi"
        assert await listener.next() == b"2:hi"

        # Outside a handler: sent before broadcast() returns (the receiver's queue has it).
        sent = server.broadcast(Message("default", event="heard", body=b"3"))
        assert await listener.next() == b"3"
        assert await sent is None  # awaiting the result is allowed, any number of times
        assert await sent is None
        # The forms older code uses keep working.
        assert await server.broadcast(Message("default", event="heard", body=b"4")) is None
        await asyncio.create_task(server.broadcast(Message("default", event="heard", body=b"5")))
        await asyncio.gather(server.broadcast(Message("default", event="heard", body=b"6")))
        assert [await listener.next() for _ in range(3)] == [b"4", b"5", b"6"]
    assert never_awaited(unawaited) == []


async def test_a_controller_broadcast_without_await_reaches_the_others(serve: Serve) -> None:
    @wsmvc.controller(namespace="default")
    class Chat:
        conn: NSConn

        @wsmvc.event
        def on_chat(self, msg: Message) -> None:
            self.conn.server.broadcast(msg, exclude=self.conn)

    url = await serve(Server(controllers=[Chat]))
    listener = Listener()
    handlers = {"default": {"OnChat": lambda ns, msg: listener.heard.put_nowait(msg.body)}}
    async with wsmvc.dial(url, handlers) as other, wsmvc.dial(url, {"default": {}}) as me:
        await other.connect("default")
        ns = await me.connect("default")
        assert ns.emit("OnChat", "hello")
        assert await listener.next() == b"hello"


async def test_broadcast_threadsafe_still_sends_from_another_thread(serve: Serve) -> None:
    server = Server({"default": {}})
    url = await serve(server)
    listener = Listener()
    async with wsmvc.dial(url, listener.handlers) as conn:
        await conn.connect("default")
        msg = Message("default", event="heard", body=b"from a thread")
        future = await asyncio.to_thread(server.broadcast_threadsafe, msg)
        assert await listener.next() == b"from a thread"
        assert future.result(WAIT) is None


# -- dial(): await it, or async with it ------------------------------------------------------


async def test_dial_is_awaited_or_entered(serve: Serve) -> None:
    server = Server({"default": {"ask": lambda ns, msg: b"pong:" + msg.body}})
    url = await serve(server)

    async with wsmvc.dial(url, {"default": {}}) as conn:
        assert isinstance(conn, ClientConn)
        ns = await conn.connect("default")
        assert (await ns.ask("ask", "a", timeout=WAIT)).body == b"pong:a"
    assert conn.closed
    assert conn._session is None or conn._session.closed  # dial's own HTTP session released

    conn = await wsmvc.dial(url, {"default": {}})  # the plain form
    assert not conn.closed
    await conn.close()

    async with await wsmvc.dial(url, {"default": {}}) as conn:  # the older form
        assert not conn.closed
    assert conn.closed

    conn = await asyncio.wait_for(wsmvc.dial(url, {"default": {}}), WAIT)
    await conn.close()
    conn = await asyncio.create_task(wsmvc.dial(url, {"default": {}}))
    await conn.close()


async def test_async_with_dial_closes_even_when_the_block_raises(serve: Serve) -> None:
    url = await serve(Server({"default": {}}))
    dialing = wsmvc.dial(url, {"default": {}})
    assert isinstance(dialing, Connecting)
    with pytest.raises(KeyError):
        async with dialing as conn:
            raise KeyError("boom")
    assert conn.closed


async def test_a_dial_never_awaited_dials_nothing_and_warns_of_nothing(
    serve: Serve, unawaited: list[warnings.WarningMessage]
) -> None:
    server = Server({"default": {}})
    url = await serve(server)
    wsmvc.dial(url, {"default": {}})
    async with wsmvc.dial(url, {"default": {}}) as conn:  # one that is used: the only one
        assert [c.id for c in server.connections] == [conn.id]
    assert never_awaited(unawaited) == []


async def test_dial_errors_are_raised_where_it_is_awaited(serve: Serve) -> None:
    url = await serve(Server({"default": {}}, on_connect=lambda conn: reject("no")))
    with pytest.raises(Reject, match="no"):
        async with wsmvc.dial(url, {"default": {}}):
            pytest.fail("entered a refused connection")
    dialing = wsmvc.dial(url, {"default": {}}, queue_limit=3)  # needs reconnect=: at await
    with pytest.raises(TypeError, match="need reconnect"):
        await dialing


def reject(reason: str) -> None:
    raise Reject(reason)


async def test_a_reconnecting_client_is_entered_too(serve: Serve) -> None:
    server = Server({"default": {"ask": lambda ns, msg: b"pong:" + msg.body}})
    url = await serve(server)
    backoff = Backoff(initial=0.02, maximum=0.1)
    async with wsmvc.dial(url, {"default": {}}, reconnect=backoff) as client:
        assert isinstance(client, ReconnectingClient)
        ns = await client.connect("default")
        assert (await ns.ask("ask", "r", timeout=WAIT)).body == b"pong:r"
    assert client.closed
    client = await wsmvc.dial(url, {"default": {}}, reconnect=backoff)  # the plain form
    assert isinstance(client, ReconnectingClient)
    await client.close()


# -- one name for a reply's bytes ------------------------------------------------------------


async def test_a_replys_bytes_are_its_body_and_data_is_deprecated(serve: Serve) -> None:
    assert Reply("héllo").body == "héllo".encode()
    assert Reply(b"\xff").body == b"\xff"
    with pytest.warns(DeprecationWarning, match=r"Reply\.data is deprecated: use Reply\.body"):
        assert Reply("x").data == b"x"

    url = await serve(Server({"default": {"r": lambda ns, msg: Reply("re:" + msg.text)}}))
    async with wsmvc.dial(url, {"default": {}}) as conn:
        ns = await conn.connect("default")
        answer = await ns.ask("r", "ü", timeout=WAIT)
        assert answer.body == "re:ü".encode()
        assert answer.text == "re:ü"


# -- one base class --------------------------------------------------------------------------

INTERNAL = {"wsmvc.closing.Detached", "wsmvc.depgraph.Problem"}  # never reach an application


def wsmvc_exceptions() -> Iterator[type[BaseException]]:
    root = Path(wsmvc.__file__).parent
    for info in pkgutil.walk_packages([str(root)], "wsmvc."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and not issubclass(value, Warning)
                and value.__module__ == module.__name__
            ):
                yield value


def test_every_wsmvc_exception_is_a_wsmvc_error_and_keeps_its_old_base() -> None:
    found = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in wsmvc_exceptions()}
    assert "wsmvc.controller.ControllerError" in found
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, WsmvcError))
    assert outside == sorted(INTERNAL)
    for name in wsmvc.__all__:
        value = getattr(wsmvc, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, Warning) or issubclass(value, WsmvcError), name
    # What code caught before still catches them.
    from wsmvc.controller import DependencyFailure
    from wsmvc.states import StateError

    assert issubclass(wsmvc.ControllerError, TypeError)
    assert issubclass(wsmvc.DependencyError, TypeError)
    assert issubclass(DependencyFailure, RuntimeError)
    assert issubclass(StateError, AssertionError)
    assert issubclass(wsmvc.AskTimeout, TimeoutError)
    assert issubclass(wsmvc.BodyError, EventError)


def test_a_controller_error_is_caught_as_a_wsmvc_error() -> None:
    with pytest.raises(WsmvcError, match="annotate"):

        @wsmvc.controller(namespace="x")
        class Broken:
            @wsmvc.event
            def on_chat(self, msg: Message, extra) -> None:  # type: ignore[no-untyped-def]
                pass

        Server(controllers=[Broken])


# -- typed keywords on the exchanges ---------------------------------------------------------


@pytest.mark.parametrize("cls", [RedisExchange, NatsExchange])
def test_the_exchanges_take_typed_keywords_only(cls: type[RedisExchange | NatsExchange]) -> None:
    params = inspect.signature(cls.__init__).parameters
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params.values())
    hints = typing.get_type_hints(cls.__init__)
    assert set(params) - {"self"} == set(hints) - {"return"}
    assert {"timeout", "ping_interval", "max_pending", "server_id", "client_options"} <= set(params)
    with pytest.raises(TypeError, match="bogus"):
        cls(bogus=1)  # type: ignore[call-arg]
    taken = "retry" if cls is RedisExchange else "allow_reconnect"
    with pytest.raises(ValueError, match=f"client_options cannot set {taken}"):
        cls(client_options={taken: None})
    exchange = cls(timeout=1.5, server_id="s-1", client_options={"x": 1})
    assert (exchange.timeout, exchange.id, exchange.client_options) == (1.5, "s-1", {"x": 1})


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_client_options_reach_the_broker_client_and_an_emitter_broadcast_needs_no_await(
    serve: Serve, tmp_path: Path, kind: str, unawaited: list[warnings.WarningMessage]
) -> None:
    from .exchange.conftest import running_broker

    with running_broker(kind, tmp_path) as broker:
        server_exchange: RedisExchange | NatsExchange
        if kind == "redis":
            server_exchange = RedisExchange(broker.url, timeout=2.0)
            exchange = RedisExchange(broker.url, client_options={"health_check_interval": 7})
        else:
            server_exchange = NatsExchange(broker.url, timeout=2.0)
            exchange = NatsExchange(broker.url, client_options={"drain_timeout": 7})
        server = Server({"default": {}}, exchange=server_exchange)
        url = await serve(server)
        await server_exchange.wait_connected(WAIT)
        listener = Listener()
        async with Emitter(exchange) as emitter, wsmvc.dial(url, listener.handlers) as conn:
            if kind == "redis":
                kwargs = exchange._publisher.connection_pool.connection_kwargs
                assert kwargs["health_check_interval"] == 7
            else:
                assert exchange._nc.options["drain_timeout"] == 7
            await conn.connect("default")
            await probe(emitter, listener)  # the server hears the namespace's channel
            # Handed to the exchange in the call: delivered though never awaited.
            emitter.broadcast(Message("default", event="heard", body=b"fire and forget"))
            assert await listener.next_but_probes() == b"fire and forget"
            await emitter.broadcast(Message("default", event="heard", body=b"awaited"))
            assert await listener.next_but_probes() == b"awaited"
    assert never_awaited(unawaited) == []


async def probe(emitter: Emitter, listener: Listener) -> None:
    """Broadcast probes until the listener hears one (as tests/exchange's until_heard:
    nothing announces that a NATS subscription hears another connection's publications)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    for n in itertools.count():
        assert loop.time() < deadline, "no probe arrived"
        await emitter.broadcast(Message("default", event="heard", body=b"probe %d" % n))
        try:
            heard = await asyncio.wait_for(listener.heard.get(), 0.1)
        except asyncio.TimeoutError:
            continue
        assert heard.startswith(b"probe")
        return


# -- ask() leaves the caller's Message alone -------------------------------------------------


async def test_ask_does_not_change_the_callers_message(serve: Serve) -> None:
    server = Server(
        {"default": {"ask": lambda ns, msg: b"pong:" + msg.body}}, id_generator=lambda r: "al"
    )
    url = await serve(server)
    handlers = {"default": {"q": lambda ns, msg: b"client:" + msg.body}}
    async with wsmvc.dial(url, handlers) as conn:
        await conn.connect("default")
        mine = Message(namespace="default", event="ask", body=b"x")
        before = attrs.evolve(mine)
        assert (await conn.ask(mine, timeout=WAIT)).body == b"pong:x"
        assert mine == before and mine.token == ""

        theirs = Message(namespace="default", event="q", body=b"y")
        before = attrs.evolve(theirs)
        assert (await server.ask(theirs, to="al", timeout=WAIT)).body == b"client:y"
        assert theirs == before

        shared = Message(namespace="default", event="ask", body=b"z")  # asked twice at once
        answers = await asyncio.gather(conn.ask(shared), conn.ask(shared))
        assert [a.body for a in answers] == [b"pong:z", b"pong:z"]
        assert answers[0].token != answers[1].token
        assert shared.token == ""


# -- one generic error text ------------------------------------------------------------------


async def test_every_failure_is_told_with_the_one_generic_text(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    from wsmvc import dispatch

    assert dispatch.GENERIC_ERROR is GENERIC_ERROR == "internal server error"

    def broken(ns: NSConn, msg: Message) -> bytes:
        raise ValueError("a bug")

    def on_connect(conn: wsmvc.Conn) -> None:
        raise ValueError("a bug in on_connect")

    def ids(request: object) -> str:
        raise ValueError("a bug in id_generator")

    handler_url = await serve(Server({"default": {"broken": broken}}))
    async with wsmvc.dial(handler_url, {"default": {}}) as conn:
        ns = await conn.connect("default")
        with pytest.raises(EventError) as raised:
            await ns.ask("broken", timeout=WAIT)
        assert raised.value.text == GENERIC_ERROR

    refusing_url = await serve(Server({"default": {}}, on_connect=on_connect), path="/refusing")
    with pytest.raises(Reject) as refused:
        await wsmvc.dial(refusing_url, {"default": {}})
    assert refused.value.reason == GENERIC_ERROR

    ids_url = await serve(Server({"default": {}}, id_generator=ids), path="/ids")
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with session.get(ids_url.replace("ws://", "http://"), headers=upgrade) as response:
        assert response.status == 500
        assert (await response.text()).strip() == GENERIC_ERROR


# -- this side's own mistakes ----------------------------------------------------------------


async def test_the_clients_own_mistakes_say_so_and_send_nothing(serve: Serve) -> None:
    requests: list[str] = []

    def record(ns: NSConn, msg: Message) -> None:
        requests.append(f"{msg.namespace}/{msg.event}")

    served = {"default": {"_OnNamespaceConnect": record}, "other": {"_OnNamespaceConnect": record}}
    url = await serve(Server(served))
    async with wsmvc.dial(url, {"default": {}}) as conn:
        with pytest.raises(NotInHandlerTable) as undeclared:
            await conn.connect("other")  # the server has it; this client's table does not
        assert str(undeclared.value).startswith(
            "namespace 'other' is not in your handler table: declare it in dial(url,"
        )
        assert isinstance(undeclared.value, BadNamespace)  # what older code catches
        assert undeclared.value.text == "bad namespace"

        with pytest.raises(NotConnected, match="the client is not connected to namespace 'oth"):
            await conn.ask(Message(namespace="other", event="x"))

        ns = await conn.connect("default")
        with pytest.raises(NotJoined, match="room 'r' of namespace 'default' is not joined"):
            await ns.leave_room("r")
        with pytest.raises(NotJoined, match="has not joined room 'r'"):
            await conn.ask(Message(namespace="default", room="r", event="x"))
        await ns.disconnect()
        with pytest.raises(NotConnected, match="not connected to namespace 'default'") as gone:
            await ns.ask("x")
        assert isinstance(gone.value, BadNamespace) and gone.value.text == "bad namespace"
        with pytest.raises(NotConnected, match="'default' is not connected"):
            await ns.disconnect()
        with pytest.raises(wsmvc.ConnectionClosed, match="disconnected: no room of 'default'"):
            await ns.join_room("r")  # (a ConnectionClosed, as before: nothing was sent)
        assert ns.emit("x") is False  # emit's answer is unchanged: False, nothing sent
    assert requests == ["default/_OnNamespaceConnect"]  # only the real connect was sent


async def test_a_reconnecting_clients_handles_say_not_connected(serve: Serve) -> None:
    url = await serve(Server({"default": {}}))
    backoff = Backoff(initial=0.02, maximum=0.1)
    async with wsmvc.dial(url, {"default": {}}, reconnect=backoff) as client:
        with pytest.raises(NotInHandlerTable, match="not in your handler table"):
            await client.connect("nope")
        ns = await client.connect("default")
        room = await ns.join_room("r")
        await room.leave()
        with pytest.raises(NotJoined, match="room 'r' of namespace 'default' is not joined"):
            room.emit("x")
        await ns.disconnect()
        with pytest.raises(NotConnected, match="namespace 'default' is not connected") as gone:
            ns.emit("x")
        assert isinstance(gone.value, BadNamespace)
        with pytest.raises(BadNamespace, match="connect it again"):
            await ns.ask("x")


async def test_a_servers_own_mistake_escaping_a_handler_is_bad_namespace_on_the_wire(
    serve: Serve,
) -> None:
    """A handler's ask on a namespace its client has not connected raises NotConnected in
    the handler; escaping it, the client is told neffos' text, as before."""
    seen: list[str] = []

    async def relay(ns: NSConn, msg: Message) -> bytes:
        try:
            await ns.conn.ask(Message(namespace="other", event="x"))
        except NotConnected as exc:
            seen.append(str(exc))
            raise
        return b"unreachable"

    server = Server({"default": {"relay": relay}})
    url = await serve(server)
    async with wsmvc.dial(url, {"default": {}, "other": {}}) as conn:
        ns = await conn.connect("default")
        with pytest.raises(BadNamespace) as answered:
            await ns.ask("relay", timeout=WAIT)
        assert str(answered.value) == "bad namespace"  # the wire's text, from the server
        assert not isinstance(answered.value, NotConnected)
        assert seen == [
            f"connection {conn.id!r} is not connected to namespace 'other': connect it first"
            " (await conn.connect('other')); nothing was sent"
        ]
        with pytest.raises(NotInHandlerTable, match="'nowhere' is not in this server's handler"):
            await server.connections[0].connect("nowhere")


def test_own_mistakes_are_known_errors_subclasses_not_registered() -> None:
    assert issubclass(NotJoined, BadRoom)
    assert type(EventError("bad namespace")) is BadNamespace  # the registry is unchanged
    assert type(EventError("bad room")) is BadRoom
    assert str(NotConnected()) == "bad namespace"  # without a detail: the known text
