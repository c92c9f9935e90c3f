"""The Python client against a real server on loopback: both ends of the same machinery."""

from __future__ import annotations

import asyncio
import gc

import pytest

import wsmvc
from wsmvc import EventError, Message, NSConn, Reject, Reply, Server

from .conftest import Serve


async def test_dial_connect_ask_and_close(serve: Serve) -> None:
    server = Server({"default": {"ask": lambda ns, msg: b"pong:" + msg.body}})
    url = await serve(server)
    conn = await wsmvc.dial(url, {"default": {}})
    assert conn.id
    ns = await conn.connect("default")
    reply = await ns.ask("ask", "hi", timeout=5)
    assert reply.body == b"pong:hi"
    assert [c.id for c in server.connections] == [conn.id]
    await conn.close()
    assert conn.closed
    with pytest.raises(wsmvc.ConnectionClosed):
        await ns.ask("ask", "again")


async def test_dial_refused_raises_reject_with_the_reason(serve: Serve) -> None:
    def on_connect(conn: wsmvc.Conn) -> None:
        raise Reject("not allowed; go away")

    url = await serve(Server({"default": {}}, on_connect=on_connect))
    with pytest.raises(Reject) as refused:
        await wsmvc.dial(url, {"default": {}})
    assert refused.value.reason == "not allowed; go away"


async def test_ask_timeout_when_the_server_does_not_answer(serve: Serve) -> None:
    url = await serve(Server({"default": {"silent": lambda ns, msg: None}}))
    async with await wsmvc.dial(url, {"default": {}}) as conn:
        ns = await conn.connect("default")
        with pytest.raises(wsmvc.AskTimeout):
            await ns.ask("silent", timeout=0.2)
        # The connection is still usable afterwards.
        with pytest.raises(EventError, match="unknown event 'nothing'"):
            await ns.ask("nothing", timeout=5)


async def test_server_initiated_connect_join_leave_disconnect(serve: Serve) -> None:
    """The server drives the client through every system request (spec 5.2, 5.4, 6.2, 6.4)."""
    seen: list[tuple[str, str, bool]] = []
    done = asyncio.Event()

    def record(ns: NSConn, msg: Message) -> None:
        seen.append((msg.event, msg.room, msg.forced))

    async def on_connect(conn: wsmvc.Conn) -> None:
        async def drive() -> None:
            ns = await conn.connect("news", timeout=5)
            await ns.join_room("sports", timeout=5)
            await ns.leave_room("sports", timeout=5)
            await ns.disconnect(timeout=5)
            done.set()

        asyncio.get_running_loop().create_task(drive())

    url = await serve(Server({"news": {}}, on_connect=on_connect))
    client_events = {
        name: record
        for name in (
            "_OnNamespaceConnect",
            "_OnNamespaceConnected",
            "_OnRoomJoin",
            "_OnRoomJoined",
            "_OnRoomLeave",
            "_OnRoomLeft",
            "_OnNamespaceDisconnect",
        )
    }
    async with await wsmvc.dial(url, {"news": client_events}) as conn:
        await asyncio.wait_for(done.wait(), 5)
        assert conn.namespace("news") is None
    assert [e for e, _, _ in seen] == [
        "_OnNamespaceConnect",
        "_OnNamespaceConnected",
        "_OnRoomJoin",
        "_OnRoomJoined",
        "_OnRoomLeave",
        "_OnRoomLeft",
        "_OnNamespaceDisconnect",
    ]


async def test_client_refuses_server_join(serve: Serve) -> None:
    outcome: asyncio.Future[tuple[str, list[str]]] = asyncio.get_running_loop().create_future()

    async def ask_join(ns: NSConn, msg: Message) -> None:
        try:
            await ns.join_room("vip", timeout=5)
            outcome.set_result(("joined", list(ns.rooms)))
        except EventError as exc:
            outcome.set_result((str(exc), list(ns.rooms)))

    def refuse(ns: NSConn, msg: Message) -> None:
        raise EventError("vip only")

    url = await serve(Server({"default": {"join_me": ask_join}}))
    async with await wsmvc.dial(url, {"default": {"_OnRoomJoin": refuse}}) as conn:
        ns = await conn.connect("default")
        ns.emit("join_me")
        assert await asyncio.wait_for(outcome, 5) == ("vip only", [])
        assert ns.rooms == {}


async def test_handler_asking_the_client_gets_its_reply_and_order_is_kept(serve: Serve) -> None:
    """A handler awaiting a server->client ask must not block on its own reader (spec 8.5)."""
    order: list[str] = []

    async def interview(ns: NSConn, msg: Message) -> bytes:
        answer = await ns.ask("question", msg.body, timeout=5)
        order.append("interview:" + msg.text)
        return b"heard " + answer.body

    def note(ns: NSConn, msg: Message) -> None:
        order.append("note:" + msg.text)

    url = await serve(Server({"default": {"interview": interview, "note": note}}))
    client = {"default": {"question": lambda ns, msg: Reply(b"answer " + msg.body)}}
    async with await wsmvc.dial(url, client) as conn:
        ns = await conn.connect("default")
        pending = asyncio.ensure_future(ns.ask("interview", "1", timeout=5))
        await asyncio.sleep(0)  # one loop step: the ask task writes its request first
        ns.emit("note", "a")
        ns.emit("note", "b")
        assert (await pending).body == b"heard answer 1"
        done = await ns.ask("interview", "2", timeout=5)
        assert done.body == b"heard answer 2"
    assert order == ["interview:1", "note:a", "note:b", "interview:2"]


async def test_native_only_server_with_python_client(serve: Serve) -> None:
    """Exactly one namespace "" with only _OnNativeMessage: no handshake, raw frames."""

    def echo(ns: NSConn, msg: Message) -> bytes:
        return b"echo:" + msg.body

    url = await serve(Server({"": {"_OnNativeMessage": echo}}))
    got: asyncio.Queue[Message] = asyncio.Queue()
    async with await wsmvc.dial(
        url, {"": {"_OnNativeMessage": lambda ns, m: got.put_nowait(m)}}
    ) as conn:
        conn.send_native("hello;with;semicolons;;;;;;")
        msg = await asyncio.wait_for(got.get(), 5)
        assert msg.body == b"echo:hello;with;semicolons;;;;;;"
        assert msg.native


async def test_binary_in_binary_out(serve: Serve) -> None:
    url = await serve(Server({"default": {"rev": lambda ns, msg: Reply(msg.body[::-1])}}))
    got: asyncio.Queue[Message] = asyncio.Queue()
    async with await wsmvc.dial(url, {"default": {"rev": lambda ns, m: got.put_nowait(m)}}) as c:
        ns = await c.connect("default")
        ns.emit_binary("rev", b"\x00\xff;a")
        msg = await asyncio.wait_for(got.get(), 5)
        assert msg.binary
        assert msg.body == b"a;\xff\x00"


async def test_server_close_fires_client_forced_events(serve: Serve) -> None:
    server = Server({"default": {}})
    url = await serve(server)
    seen: list[tuple[str, bool]] = []

    def record(ns: NSConn, msg: Message) -> None:
        seen.append((msg.event, msg.forced))

    events = {"_OnRoomLeft": record, "_OnNamespaceDisconnect": record}
    conn = await wsmvc.dial(url, {"default": events})
    ns = await conn.connect("default")
    await ns.join_room("r")
    await server.close()
    await asyncio.wait_for(conn.wait_closed(), 5)
    assert conn.close_code == 1001
    assert seen == [("_OnRoomLeft", True), ("_OnNamespaceDisconnect", True)]
    await conn.close()


@pytest.mark.parametrize("how", ["server close", "kicked", "server gone"])
async def test_a_connection_the_server_ended_releases_its_http_session(
    serve: Serve, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """The application never calls ``close()`` on a connection the server ended: the HTTP
    session dial() opened is released all the same (no "Unclosed client session" when
    it is collected)."""
    server = Server({"default": {}})
    url = await serve(server)
    conn = await wsmvc.dial(url, {"default": {}})
    await conn.connect("default")
    if how == "kicked":
        [theirs] = server.connections
        await theirs.close()
    elif how == "server gone":
        [theirs] = server.connections
        theirs.request_close(1011, urgent=True)
    else:
        await server.close()
    await asyncio.wait_for(conn.wait_closed(), 5)
    task = conn.reader.task
    assert task is not None
    await asyncio.wait_for(asyncio.wait([task]), 5)  # the serving task released it last
    del conn, task
    gc.collect()
    unclosed = [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]
    assert unclosed == []


async def test_on_connect_may_connect_the_client_before_answering(serve: Serve) -> None:
    """Go lets OnConnect call conn.Connect: the ack goes out early, then the connect request."""
    connected: list[str] = []

    async def on_connect(conn: wsmvc.Conn) -> None:
        ns = await conn.connect("news", timeout=5)
        ns.emit("welcome", "hello " + conn.id)

    url = await serve(Server({"news": {}}, on_connect=on_connect))
    got: asyncio.Queue[Message] = asyncio.Queue()
    client = {
        "news": {
            "_OnNamespaceConnected": lambda ns, m: connected.append(m.namespace),
            "welcome": lambda ns, m: got.put_nowait(m),
        }
    }
    async with await wsmvc.dial(url, client) as conn:
        welcome = await asyncio.wait_for(got.get(), 5)
        assert welcome.text == "hello " + conn.id
        assert connected == ["news"]
        assert conn.namespace("news") is not None


async def test_server_ask_reaches_the_connection_by_id(serve: Serve) -> None:
    server = Server({"default": {}}, id_generator=lambda request: "alice")
    url = await serve(server)
    client = {"default": {"question": lambda ns, m: "alice says " + m.text}}
    async with await wsmvc.dial(url, client) as conn:
        await conn.connect("default")
        answer = await server.ask(
            Message(namespace="default", event="question", body=b"hi"), to="alice", timeout=5
        )
        assert answer.text == "alice says hi"
        with pytest.raises(EventError, match="bad namespace"):
            await server.ask(Message(namespace="default", event="question"), to="bob")


async def test_a_burst_to_a_reading_deflate_client_is_delivered_not_dropped(serve: Serve) -> None:
    """A compressed connection must not be closed for a burst it is reading as it comes."""
    server = Server({"default": {}}, send_buffer_limit=64 << 10)
    url = await serve(server)
    got: asyncio.Queue[Message] = asyncio.Queue()
    client = {"default": {"chunk": lambda ns, m: got.put_nowait(m)}}
    async with await wsmvc.dial(url, client, compress=True) as conn:
        await conn.connect("default")
        for i in range(40):  # 40 x 16 KiB in one step: ten times the limit
            await server.broadcast(
                Message(namespace="default", event="chunk", body=b"%04d" % i + bytes(16 << 10))
            )
        bodies = [(await asyncio.wait_for(got.get(), 5)).body[:4] for _ in range(40)]
        assert bodies == [b"%04d" % i for i in range(40)]
        assert not conn.closed


async def test_the_clients_max_message_size_is_exact(serve: Serve) -> None:
    """``max_message_size`` bytes arrive; one byte more closes the connection with 1009."""
    server = Server({"default": {}})
    url = await serve(server)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    frame_head = len(";default;;e;0;0;")
    conn = await wsmvc.dial(
        url,
        {"default": {"e": lambda ns, msg: got.put_nowait(msg.body)}},
        max_message_size=frame_head + 100,
    )
    try:
        await conn.connect("default")
        await server.broadcast(Message(namespace="default", event="e", body=b"x" * 100))
        assert await asyncio.wait_for(got.get(), 5) == b"x" * 100
        await server.broadcast(Message(namespace="default", event="e", body=b"x" * 101))
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert conn.close_code == 1009
        assert got.empty()
    finally:
        await conn.close()
