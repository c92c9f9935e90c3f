"""Connection state recovery under faults: closes, cancellations, timeouts and hostile or
slow clients at every await of the recovery path (``docs/recovery.md``).

Real servers on 127.0.0.1, raw-socket clients (:class:`~tests.test_recovery.Recovering`,
or a bare :class:`RawWS` where the client must stop half-way). Every test runs on the
``app`` fixture, which checks after the server's shutdown what must hold whatever the test
did: every connection's disconnect events ran exactly once (``on_disconnect``, each
``_OnNamespaceDisconnect``, each room's ``_OnRoomLeft``), no key, kept connection, timer or
task is left, and nothing was logged at ERROR (nor aiohttp's unhandled exceptions).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

from wsmvc import Conn, Message, NSConn, Recovery, Server
from wsmvc.taps import Tapped

from .test_recovery import RECOVERY, Recovering
from .wire_support import RawWS, T

KEY = "wsmvc-recovery"
RECEIVED = "wsmvc-received"


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait (at most ``T`` seconds) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + T
    while not condition():
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.005)


class Ledger:
    """What the application saw: each disconnect event, by connection id."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.changed.set()

    def count(self, line: str) -> int:
        return self.lines.count(line)

    async def until(self, line: str) -> None:
        async def seen() -> None:
            while line not in self.lines:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(seen(), T)

    def of(self, conn_id: str) -> list[str]:
        return [line for line in self.lines if line.endswith(f" {conn_id}")]


class App:
    """A recovering server on 127.0.0.1 and what its application saw."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.conns: list[Conn] = []  # every connection on_connect accepted
        self.gate = asyncio.Event()  # the handler `slow` waits for it
        self.started = asyncio.Event()  # `slow` runs
        self.server: Server | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.ids = 0
        self.joined: collections.Counter[str] = collections.Counter()  # conn id: rooms joined
        self.expected_errors: list[str] = []  # ERROR records the test causes on purpose

    def make(
        self,
        *,
        window: float = 60.0,
        max_messages: int = 1000,
        max_bytes: int = 1 << 20,
        table: dict[str, Any] | None = None,
        **options: Any,
    ) -> Server:
        ledger = self.ledger

        def on_connect(conn: Conn) -> None:
            self.conns.append(conn)

        def on_disconnect(conn: Conn) -> None:
            ledger(f"on_disconnect {conn.id}")

        def left(ns: NSConn, msg: Message) -> None:
            ledger(f"left {msg.room} {ns.conn.id}")

        def joined(ns: NSConn, msg: Message) -> None:
            self.joined[ns.conn.id] += 1

        def gone(ns: NSConn, msg: Message) -> None:
            ledger(f"ns-disconnect {ns.namespace} {ns.conn.id}")

        def echo(ns: NSConn, msg: Message) -> bytes:
            return b"echo:" + msg.body

        async def slow(ns: NSConn, msg: Message) -> bytes:
            self.started.set()
            await self.gate.wait()
            if msg.body == b"raise":
                raise ValueError("slow failed")
            if msg.body == b"close":
                await ns.conn.close(4000, "kicked")
            return b"slow done"

        events = {
            "_OnRoomJoined": joined,
            "_OnRoomLeft": left,
            "_OnNamespaceDisconnect": gone,
            "echo": echo,
            "slow": slow,
        }

        def next_id(request: web.Request) -> str:
            self.ids += 1
            return f"c{self.ids}"

        options.setdefault("heartbeat", None)
        self.server = Server(
            table if table is not None else {"default": events},
            recovery=Recovery(window=window, max_messages=max_messages, max_bytes=max_bytes),
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            id_generator=next_id,
            **options,
        )
        return self.server

    async def start(self, server: Server | None = None, **runner: Any) -> str:
        server = server if server is not None else self.make()
        self.server = server
        app = web.Application()
        server.mount(app, "/ws")
        self.runner = web.AppRunner(app, shutdown_timeout=5, **runner)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"ws://127.0.0.1:{self.runner.addresses[0][1]}/ws"
        return self.url

    def conn(self, conn_id: str) -> Conn:
        [conn] = [c for c in self.conns if c.id == conn_id]
        return conn

    async def kept(self, conn_id: str) -> Conn:
        """The server saw the connection go and keeps it."""
        conn = self.conn(conn_id)
        await until(lambda: conn.recovery is not None and conn.recovery.lost, "kept")
        return conn

    async def client(self, *rooms: str) -> Recovering:
        """A new recovering client, connected to ``default`` and in ``rooms``."""
        client = await Recovering.dial(self.url)
        assert await client.ask("$c;default;;_OnNamespaceConnect;0;0;") == "$c;;;;;;"
        for room in rooms:
            assert await client.ask(f"$j;default;{room};_OnRoomJoin;0;0;") == "$j;;;;;;"
        return client

    async def lost(self, *rooms: str) -> tuple[Recovering, Conn]:
        """A client that joined ``rooms`` and vanished, and its kept connection."""
        client = await self.client(*rooms)
        client.vanish()
        return client, await self.kept(client.id)

    async def upgrade_back(self, key: str, received: int | str) -> RawWS:
        """A websocket back with ``key``, upgraded, its ``M`` not sent."""
        return await RawWS.open(f"{self.url}?{urlencode({KEY: key, RECEIVED: received})}")

    async def taking(self, conn: Conn, key: str) -> None:
        """Wait until ``conn``'s serving task took the websocket that came back with
        ``key`` (it waits for that websocket's ``M``)."""
        await until(
            lambda: conn.request is not None and conn.request.query.get(KEY) == key, "taken"
        )

    def recoverable_keys(self) -> dict[str, Any]:
        assert self.server is not None and self.server._recoveries is not None
        return self.server._recoveries._by_key

    async def shut_down(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


async def finish_back(raw: RawWS, base: int) -> Recovering:
    """Send ``M`` on a websocket that came back; the client it is then."""
    return await Recovering.handshake(raw, base)


def answer_close(raw: RawWS) -> asyncio.Task[int]:
    """Read ``raw`` until the server's close frame and answer it (as a client does, so
    the server's close handshake ends at once); the task's result is the code."""

    async def answer() -> int:
        code = await raw.close_code()
        await raw.send(code.to_bytes(2, "big"), 0x8)
        return code

    return asyncio.ensure_future(answer())


def numbered(n: int, room: str = "r") -> Message:
    return Message(namespace="default", room=room, event="n", body=str(n).encode())


def frames(numbers: range | list[int], room: str = "r") -> list[str]:
    return [f";default;{room};n;0;0;{n}" for n in numbers]


@pytest.fixture
async def app(caplog: pytest.LogCaptureFixture) -> AsyncIterator[App]:
    """A recovering server (started by the test: ``await app.start(app.make(...))``); once
    the test is over and the server shut down, the invariants of the module docstring."""
    caplog.set_level(logging.DEBUG)
    app = App()
    try:
        yield app
    finally:
        await app.shut_down()
    server = app.server
    if server is None:
        return
    assert server.connections == []
    assert server._live == set()
    assert app.recoverable_keys() == {}
    for conn in app.conns:
        recovery = conn.recovery
        assert recovery is None or (recovery.over and recovery._expiry is None), conn
        assert app.ledger.count(f"on_disconnect {conn.id}") == 1, (conn, app.ledger.lines)
        for line in set(app.ledger.of(conn.id)):
            assert app.ledger.count(line) == 1, (line, app.ledger.lines)
        assert (
            len([x for x in app.ledger.of(conn.id) if x.startswith("left ")])
            == (app.joined[conn.id])
        ), (conn, app.ledger.lines)
    current = asyncio.current_task()
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert left == [], left
    bad = [
        r
        for r in caplog.records
        if (r.levelno >= logging.ERROR or "Unhandled exception" in r.getMessage())
        and not any(part in r.getMessage() for part in app.expected_errors)
    ]
    assert bad == [], [r.getMessage() for r in bad]


# -- the baseline: the fixture's checks hold for a plain recovery -----------------------------


async def test_a_plain_recovery_then_shutdown_leaves_nothing(app: App) -> None:
    await app.start(app.make())
    client, _conn = await app.lost("r")
    await app.server.broadcast(numbered(1))  # type: ignore[union-attr]
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    assert back.id == client.id
    assert await back.next() == frames([1])[0]
    assert app.ledger.lines == []
    back.raw.sock.close()


# -- the websocket a client comes back with: its M, or not ------------------------------------


async def test_messages_sent_while_the_client_is_coming_back_are_not_lost(app: App) -> None:
    """Broadcasts while the server waits for the returning client's ``M``: kept, and sent
    after the replay, once, in order."""
    await app.start(app.make())
    server = app.server
    assert server is not None
    client = await app.client("r")
    await server.broadcast(numbered(1))
    assert await client.next() == frames([1])[0]
    client.vanish()
    conn = await app.kept(client.id)
    await server.broadcast(numbered(2))
    raw = await app.upgrade_back(client.key, client.read)
    await app.taking(conn, client.key)
    await server.broadcast(numbered(3))
    back = await finish_back(raw, client.read)
    assert back.id == client.id
    assert [await back.next() for _ in range(2)] == frames([2, 3])
    await server.broadcast(numbered(4))
    assert await back.next() == frames([4])[0]
    assert await back.ask("$e;default;;echo;0;0;x") == "$e;default;;echo;0;0;echo:x"
    back.raw.sock.close()


async def test_shutdown_while_a_client_comes_back_is_prompt(app: App) -> None:
    """``server.close()`` while the server waits for a returning client's ``M``: the
    connection ends at once (its events, once), and that websocket gets 1001; no handler
    is cut (no WARNING), nothing waits for the handshake timeout."""
    await app.start(app.make(handshake_timeout=60, close_timeout=3))
    server = app.server
    assert server is not None
    client, conn = await app.lost("r")
    raw = await app.upgrade_back(client.key, client.read)
    await app.taking(conn, client.key)
    code = answer_close(raw)
    await asyncio.wait_for(server.close(), 1.5)
    assert app.ledger.of(client.id) == [
        f"left r {client.id}",
        f"ns-disconnect default {client.id}",
        f"on_disconnect {client.id}",
    ]
    assert await code == 1001
    raw.sock.close()


async def test_a_kick_while_a_client_comes_back_is_prompt(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """``conn.close()`` by the application then: the same, with its code."""
    await app.start(app.make(handshake_timeout=60, close_timeout=3))
    client, conn = await app.lost("r")
    raw = await app.upgrade_back(client.key, client.read)
    await app.taking(conn, client.key)
    await asyncio.wait_for(conn.close(4001, "kicked"), 1.5)
    assert app.ledger.count(f"on_disconnect {client.id}") == 1
    assert await raw.close_code() == 4001
    raw.sock.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_window_ending_while_a_client_comes_back(app: App) -> None:
    """The window ends while the server waits for the returning client's ``M``: the
    connection ends then (not at the handshake timeout), that websocket is closed (1011:
    dial again), and the client's next dial gets a new connection."""
    await app.start(app.make(window=0.5, handshake_timeout=60))
    client, conn = await app.lost("r")
    raw = await app.upgrade_back(client.key, client.read)
    await app.taking(conn, client.key)
    await app.ledger.until(f"on_disconnect {client.id}")
    assert await raw.close_code() == 1011
    raw.sock.close()
    again = await Recovering.dial(app.url, client.key, client.read)
    assert again.server_read is None and again.id != client.id
    again.raw.sock.close()


@pytest.mark.parametrize("how", ["silent", "vanish", "data", "binary", "ping-then-vanish"])
async def test_a_return_without_its_handshake_leaves_the_connection_kept(
    app: App, how: str
) -> None:
    """The websocket a client came back with gives no ``M`` (nothing within the handshake
    timeout, gone again, a message instead): it is dropped, the connection stays kept with
    the same key (the key opened nothing), and the client's next return recovers it, with
    every message and the server's count exact."""
    await app.start(app.make(handshake_timeout=0.3))
    server = app.server
    assert server is not None
    client = await app.client("r")
    await client.raw.send("$e;default;;echo;0;0;a")  # the server reads 3 frames
    assert await client.next() == "$e;default;;echo;0;0;echo:a"
    client.vanish()
    conn = await app.kept(client.id)
    await server.broadcast(numbered(1))
    raw = await app.upgrade_back(client.key, client.read)
    await app.taking(conn, client.key)
    await server.broadcast(numbered(2))  # while its M is awaited
    if how == "vanish":
        raw.abort()
    elif how == "data":
        await raw.send("$e;default;;echo;0;0;b")
    elif how == "binary":
        await raw.send(b"\x00\x01")
    elif how == "ping-then-vanish":
        await raw.send(b"", 0x9)
        assert await raw.recv() == (0xA, b"")
        raw.abort()
    if how != "vanish" and how != "ping-then-vanish":
        with pytest.raises((EOFError, ConnectionError)):
            await raw.recv()  # dropped
        raw.sock.close()
    await until(lambda: conn.recovery is not None and conn.recovery._current is None, "drop")
    await server.broadcast(numbered(3))
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    assert (back.id, back.server_read) == (client.id, 3)
    assert [await back.next() for _ in range(3)] == frames([1, 2, 3])
    assert app.ledger.lines == []
    back.raw.sock.close()


async def test_a_close_frame_instead_of_the_handshake_ends_the_connection(app: App) -> None:
    """A client that comes back and closes (a close frame) left: the events run at once,
    its close is answered on that websocket."""
    await app.start(app.make(handshake_timeout=60))
    client, conn = await app.lost("r")
    raw = await app.upgrade_back(client.key, client.read)
    await app.taking(conn, client.key)
    await raw.send(b"\x0f\xa1", 0x8)  # 4001
    await app.ledger.until(f"on_disconnect {client.id}")
    assert await raw.close_code() == 4001
    raw.sock.close()
    again = await Recovering.dial(app.url, client.key, client.read)
    assert again.server_read is None
    again.raw.sock.close()


async def test_a_broken_frame_instead_of_the_handshake_ends_the_connection(app: App) -> None:
    """Text that is not UTF-8 in place of ``M``: a protocol error, which ends a connection
    for good (1007 on that websocket), never a kept one's state replayed to it."""
    await app.start(app.make(handshake_timeout=60))
    client, conn = await app.lost("r")
    raw = await app.upgrade_back(client.key, client.read)
    await app.taking(conn, client.key)
    await raw.send(b"M\xff\xfe", 0x1)
    await app.ledger.until(f"on_disconnect {client.id}")
    assert await raw.close_code() == 1007
    raw.sock.close()


# -- keys and counts ------------------------------------------------------------------------


async def test_two_clients_back_with_the_same_key_at_once(app: App) -> None:
    """Two returns with one key at the same time: one recovers, the other is a new
    connection; the kept one's messages go to the first only, once."""
    await app.start(app.make())
    server = app.server
    assert server is not None
    client, _conn = await app.lost("r")
    await server.broadcast(numbered(1))
    first, second = await asyncio.gather(
        Recovering.dial(app.url, client.key, client.read, base=client.read),
        Recovering.dial(app.url, client.key, client.read, base=client.read),
    )
    [back] = [c for c in (first, second) if c.server_read is not None]
    [other] = [c for c in (first, second) if c.server_read is None]
    assert back.id == client.id and other.id != client.id
    assert await back.next() == frames([1])[0]
    assert await other.ask("$c;default;;_OnNamespaceConnect;0;0;") == "$c;;;;;;"
    assert app.ledger.lines == []
    back.raw.sock.close()
    other.raw.sock.close()


@pytest.mark.parametrize(
    "received",
    ["-1", "\u00b2", "\u0661", "9" * 19, "1e3", "", " 1", "0x1"],
)
async def test_a_malformed_count_opens_a_new_connection_and_keeps_the_old(
    app: App, received: str
) -> None:
    """A count that is not a plain decimal number (negative, a superscript, Arabic-Indic
    digits, 19 digits...): a new connection; the kept one is untouched and recoverable."""
    await app.start(app.make())
    client, _conn = await app.lost("r")
    raw = await app.upgrade_back(client.key, received)
    await raw.send("M")
    frame = await raw.recv_text()
    assert frame.startswith(f";;;{RECOVERY};0;0;") and " " not in frame
    assert (await raw.recv_text()).startswith("A")
    raw.sock.close()
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    assert back.id == client.id
    back.raw.sock.close()


@pytest.mark.parametrize("delta", [1, 1000, 10**17])
async def test_a_count_above_what_was_sent_gives_a_new_connection(app: App, delta: int) -> None:
    """A client claiming more frames than the server sent: no recovery can be exact; a new
    connection, and the kept one ends (its events run)."""
    await app.start(app.make())
    client, _conn = await app.lost("r")
    again = await Recovering.dial(app.url, client.key, client.read + delta)
    assert again.server_read is None and again.id != client.id
    await app.ledger.until(f"on_disconnect {client.id}")
    again.raw.sock.close()


async def test_a_count_below_what_is_still_kept_gives_a_new_connection(app: App) -> None:
    """The client read fewer than the server still keeps (the oldest fell out of
    ``max_messages`` while it was connected): a new connection, never a partial replay."""
    await app.start(app.make(max_messages=3))
    server = app.server
    assert server is not None
    client = await app.client("r")
    for n in range(1, 11):
        await server.broadcast(numbered(n))
    assert [await client.next() for _ in range(10)] == frames(range(1, 11))
    client.vanish()
    await app.kept(client.id)
    again = await Recovering.dial(app.url, client.key, client.read - 4)
    assert again.server_read is None and again.id != client.id
    await app.ledger.until(f"on_disconnect {client.id}")
    again.raw.sock.close()


async def test_an_unknown_key_of_the_right_form_opens_a_new_connection(app: App) -> None:
    await app.start(app.make())
    client, _conn = await app.lost("r")
    forged = client.key[:-1] + ("A" if client.key[-1] != "A" else "B")
    again = await Recovering.dial(app.url, forged, client.read)
    assert again.server_read is None and again.id != client.id
    again.raw.sock.close()
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    assert back.id == client.id  # the forgery did not consume the key
    back.raw.sock.close()


async def test_repeated_query_parameters_use_the_first(app: App) -> None:
    await app.start(app.make())
    client, _conn = await app.lost("r")
    query = f"{KEY}={client.key}&{KEY}=1&{RECEIVED}={client.read}&{RECEIVED}=999"
    raw = await RawWS.open(f"{app.url}?{query}")
    back = await finish_back(raw, client.read)
    assert back.id == client.id
    raw.sock.close()


# -- a return while the serving task is busy (a handler runs) -------------------------------


def request_task(key: str) -> asyncio.Task[Any]:
    """The task of the request that came back with ``key`` (aiohttp's handler task)."""
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        while coro is not None and hasattr(coro, "cr_frame"):
            if coro.cr_code is Server.handle.__code__:
                request = coro.cr_frame.f_locals.get("request")
                if request is not None and request.query.get(KEY) == key:
                    return task
            coro = coro.cr_await
    raise AssertionError(f"no request came back with {key}")


async def busy(app: App) -> tuple[Recovering, Conn]:
    """A client whose handler `slow` runs (waiting for the gate) when it vanishes: the
    server does not see it go (nothing reads while a handler runs, no heartbeat)."""
    client = await app.client("r")
    await client.raw.send("$s;default;;slow;0;0;")
    await asyncio.wait_for(app.started.wait(), T)
    client.vanish()
    return client, app.conn(client.id)


async def test_a_cancelled_return_leaves_the_key_serving(app: App) -> None:
    """The request handler of a returning websocket is cancelled while it waits for the
    busy serving task (aiohttp's shutdown, its handler_cancellation): nothing fails later,
    the key serves again, and the next return recovers, the handler's answer replayed."""
    await app.start(app.make())
    client, conn = await busy(app)
    raw = await app.upgrade_back(client.key, client.read)
    await until(lambda: conn.recovery is not None and conn.recovery._offered is not None, "offer")
    task = request_task(client.key)
    task.cancel()
    with pytest.raises(EOFError):
        await raw.recv()
    raw.sock.close()
    app.gate.set()  # the handler returns: the serving task sees the loss, waits for a return
    await until(lambda: conn.recovery is not None and conn.recovery._wake is not None, "waits")
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    assert back.id == client.id
    assert await back.next() == "$s;default;;slow;0;0;slow done"
    assert app.ledger.lines == []
    back.raw.sock.close()


@pytest.mark.parametrize("body", ["", "raise"])
async def test_a_return_while_a_handler_runs_gets_its_answer_after_the_replay(
    app: App, body: str
) -> None:
    """A client back while a handler of its connection still runs: its ``A<id>`` comes
    once the handler returned, then the handler's answer (or its error), once."""
    await app.start(app.make())
    app.expected_errors.append("handler for 'default'/'slow' failed")
    client = await app.client("r")
    await client.raw.send(f"$s;default;;slow;0;0;{body}")
    await asyncio.wait_for(app.started.wait(), T)
    client.vanish()
    dialing = asyncio.ensure_future(
        Recovering.dial(app.url, client.key, client.read, base=client.read)
    )
    conn = app.conn(client.id)
    await until(lambda: conn.recovery is not None and conn.recovery._offered is not None, "offer")
    await app.server.broadcast(numbered(1))  # type: ignore[union-attr]
    app.gate.set()
    back = await asyncio.wait_for(dialing, T)
    assert (back.id, back.server_read) == (client.id, 3)
    answer = "slow done" if not body else "internal server error"
    got = [await back.next() for _ in range(2)]
    assert got == [frames([1])[0], f"$s;default;;slow;{int(bool(body))};0;{answer}"]
    assert app.ledger.lines == []
    back.raw.sock.close()


async def test_the_window_ending_while_a_return_waits_for_a_busy_handler(app: App) -> None:
    """The client came back while a handler (not waiting for it) runs, and the window ends
    first: that return is served as a new connection at once; the old connection's events
    run after its handler (cut at ``close_timeout``), once."""
    await app.start(app.make(window=0.3, close_timeout=0.3))
    client, _conn = await busy(app)
    again = await asyncio.wait_for(Recovering.dial(app.url, client.key, client.read), T)
    assert again.server_read is None and again.id != client.id
    await app.ledger.until(f"on_disconnect {client.id}")
    assert app.ledger.count(f"on_disconnect {client.id}") == 1
    again.raw.sock.close()


async def test_a_handler_that_closes_while_its_client_comes_back(app: App) -> None:
    """The handler running when the client comes back closes the connection: the
    connection ends (its events, once) and the returning client gets a new one."""
    await app.start(app.make())
    client = await app.client("r")
    await client.raw.send("$s;default;;slow;0;0;close")
    await asyncio.wait_for(app.started.wait(), T)
    client.vanish()
    dialing = asyncio.ensure_future(Recovering.dial(app.url, client.key, client.read))
    conn = app.conn(client.id)
    await until(lambda: conn.recovery is not None and conn.recovery._offered is not None, "offer")
    app.gate.set()
    again = await asyncio.wait_for(dialing, T)
    assert again.server_read is None and again.id != client.id
    await app.ledger.until(f"on_disconnect {client.id}")
    again.raw.sock.close()


async def test_too_much_while_a_client_comes_back_gives_the_connection_up(app: App) -> None:
    """Past ``max_messages`` while the returning client's ``M`` is awaited: given up then,
    and that websocket closed (1011), not a partial replay."""
    await app.start(app.make(max_messages=5, handshake_timeout=60))
    client, conn = await app.lost("r")
    raw = await app.upgrade_back(client.key, client.read)
    await app.taking(conn, client.key)
    for n in range(6):
        await app.server.broadcast(numbered(n))  # type: ignore[union-attr]
    await app.ledger.until(f"on_disconnect {client.id}")
    assert await raw.close_code() == 1011
    raw.sock.close()


# -- the application acting on a kept connection ---------------------------------------------


async def test_a_kick_of_a_kept_connection(app: App) -> None:
    """``conn.close()`` of a kept connection: its events run at once, once; its key opens
    a new connection."""
    await app.start(app.make())
    client, conn = await app.lost("r")
    await asyncio.wait_for(conn.close(4002, "gone"), T)
    assert app.ledger.of(client.id) == [
        f"left r {client.id}",
        f"ns-disconnect default {client.id}",
        f"on_disconnect {client.id}",
    ]
    again = await Recovering.dial(app.url, client.key, client.read)
    assert again.server_read is None
    again.raw.sock.close()


async def test_an_ask_of_a_kept_connection_fails_when_its_window_ends(app: App) -> None:
    """An ask waiting for a kept connection's client fails the moment the window ends,
    not at its own timeout."""
    await app.start(app.make(window=0.3))
    client, conn = await app.lost("r")
    ns = conn.namespace("default")
    assert ns is not None
    from wsmvc import ConnectionClosed

    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ns.ask("q", b"?", timeout=60), T)
    await app.ledger.until(f"on_disconnect {client.id}")


async def test_a_namespace_disconnected_by_the_server_while_kept(app: App) -> None:
    """``ns.disconnect()`` while the client is away waits for its return (with its
    timeout); the client comes back, agrees: the namespace's events run once, and once
    more nothing when the connection later ends."""
    await app.start(app.make())
    client, conn = await app.lost("r")
    ns = conn.namespace("default")
    assert ns is not None
    disconnecting = asyncio.ensure_future(ns.disconnect(timeout=T))
    await asyncio.sleep(0)  # its request is written (kept)
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    request = await back.next()
    token = request.split(";", 1)[0]
    assert request == f"{token};default;;_OnNamespaceDisconnect;0;0;"
    await back.raw.send(f"{token};;;;;;")
    await asyncio.wait_for(disconnecting, T)
    assert app.ledger.of(client.id) == [
        f"left r {client.id}",
        f"ns-disconnect default {client.id}",
    ]
    back.vanish()
    await app.kept(client.id)
    await asyncio.wait_for(conn.close(), T)
    assert app.ledger.count(f"ns-disconnect default {client.id}") == 1


async def test_a_namespace_disconnected_while_kept_and_never_back(app: App) -> None:
    """The same, the client never back: the window's end ends it; the disconnect returns;
    every event runs once."""
    await app.start(app.make(window=0.3))
    client, conn = await app.lost("r")
    ns = conn.namespace("default")
    assert ns is not None
    await asyncio.wait_for(ns.disconnect(timeout=60), T)
    await app.ledger.until(f"on_disconnect {client.id}")


async def test_a_room_left_by_the_server_while_kept(app: App) -> None:
    await app.start(app.make())
    client, conn = await app.lost("r", "s")
    ns = conn.namespace("default")
    assert ns is not None
    leaving = asyncio.ensure_future(ns.leave_room("r", timeout=T))
    await asyncio.sleep(0)
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    request = await back.next()
    token = request.split(";", 1)[0]
    assert request == f"{token};default;r;_OnRoomLeave;0;0;"
    await back.raw.send(f"{token};;;;;;")
    await asyncio.wait_for(leaving, T)
    assert app.ledger.of(client.id) == [f"left r {client.id}"]
    await app.server.broadcast(numbered(1, room="s"))  # type: ignore[union-attr]
    assert await back.next() == frames([1], room="s")[0]
    back.raw.sock.close()


async def test_broadcasts_to_a_kept_id_through_an_exchange(app: App) -> None:
    """With an exchange (LocalExchange: two servers of one process) broadcasts and ``to=``
    messages from the other server reach the kept connection once it is back."""
    from wsmvc.exchange import LocalExchange as Local

    group = Local()
    await app.start(app.make(exchange=group))
    other = Server({"default": {}}, exchange=Local(group))
    other_app = web.Application()
    other.mount(other_app, "/ws")
    runner = web.AppRunner(other_app)
    await runner.setup()
    try:
        client, _conn = await app.lost("r")
        await other.broadcast(numbered(1))
        await other.broadcast(Message(namespace="default", event="to", body=b"x"), to=client.id)
        await app.server.broadcast(numbered(2))  # type: ignore[union-attr]
        back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
        got = [await back.next() for _ in range(3)]
        assert got == [frames([1])[0], ";default;;to;0;0;x", frames([2])[0]]
        back.raw.sock.close()
    finally:
        await runner.cleanup()


async def test_taps_see_each_message_once_across_a_recovery(app: App) -> None:
    """With taps, a replayed message is not tapped again (it was when first sent), and the
    recovery's own frames are not events."""
    seen: list[tuple[str, str]] = []

    def tap(t: Tapped) -> None:
        seen.append((t.direction, t.message.event))

    await app.start(app.make(taps=[tap]))
    client, _conn = await app.lost("r")
    for n in range(3):
        await app.server.broadcast(numbered(n))  # type: ignore[union-attr]
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    assert [await back.next() for _ in range(3)] == frames(range(3))
    assert await back.ask("$e;default;;echo;0;0;x") == "$e;default;;echo;0;0;echo:x"
    assert [e for d, e in seen if d == "out" and e == "n"] == ["n", "n", "n"]
    assert ("in", "echo") in seen and ("out", "echo") in seen
    assert not [e for _, e in seen if e == RECOVERY]
    back.raw.sock.close()


async def test_one_message_over_max_bytes_while_away_gives_it_up(app: App) -> None:
    await app.start(app.make(max_bytes=1000))
    client, _conn = await app.lost("r")
    big = Message(namespace="default", room="r", event="big", body=b"x" * 2000)
    await app.server.broadcast(big)  # type: ignore[union-attr]
    await app.ledger.until(f"on_disconnect {client.id}")
    again = await Recovering.dial(app.url, client.key, client.read)
    assert again.server_read is None
    again.raw.sock.close()


async def test_one_message_over_max_bytes_read_before_the_loss(app: App) -> None:
    """A message over ``max_bytes`` is not kept, but one the client read needs no replay."""
    await app.start(app.make(max_bytes=1000))
    client = await app.client("r")
    big = Message(namespace="default", room="r", event="big", body=b"x" * 2000)
    await app.server.broadcast(big)  # type: ignore[union-attr]
    assert (await client.next()).startswith(";default;r;big;")
    client.vanish()
    await app.kept(client.id)
    await app.server.broadcast(numbered(1))  # type: ignore[union-attr]
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    assert back.id == client.id
    assert await back.next() == frames([1])[0]
    back.raw.sock.close()


async def test_a_native_only_server_ignores_recovery(app: App) -> None:
    """A native-only server (``_OnNativeMessage`` alone) has no handshake: no recovery
    frame, and a lost connection ends at once."""
    got: list[bytes] = []

    def native(ns: NSConn, msg: Message) -> None:
        got.append(msg.body)
        ns.conn.send_native("echo:" + msg.body.decode())

    await app.start(app.make(table={"": {"_OnNativeMessage": native}}))
    raw = await RawWS.open(f"{app.url}?{KEY}=1")
    await raw.send("hi")
    assert await raw.recv_text() == "echo:hi"
    [conn] = app.conns
    raw.abort()
    await app.ledger.until(f"on_disconnect {conn.id}")
    assert conn.recovery is not None and not conn.recovery.lost


async def test_the_heartbeat_leaves_kept_and_returning_connections_alone(app: App) -> None:
    """With a heartbeat, a kept connection and one whose client is coming back (no M yet)
    are neither pinged into errors nor closed by it; the window ends them."""
    await app.start(app.make(window=1.0, heartbeat=0.1, handshake_timeout=60))
    first, _conn1 = await app.lost("r")
    second, conn2 = await app.lost("r")
    raw = await app.upgrade_back(second.key, second.read)
    await app.taking(conn2, second.key)
    await app.ledger.until(f"on_disconnect {first.id}")
    await app.ledger.until(f"on_disconnect {second.id}")
    assert await raw.close_code() == 1011
    raw.sock.close()


# -- bounds and leftovers --------------------------------------------------------------------


async def test_many_losses_and_returns_keep_one_key_and_a_bounded_ring(app: App) -> None:
    await app.start(app.make(max_messages=8))
    server = app.server
    assert server is not None
    client = await app.client("r")
    conn = app.conn(client.id)
    n = 0
    for _ in range(30):
        client.vanish()
        await app.kept(client.id)
        for _ in range(5):
            n += 1
            await server.broadcast(numbered(n))
        client = await Recovering.dial(app.url, client.key, client.read, base=client.read)
        assert [await client.next() for _ in range(5)] == frames(range(n - 4, n + 1))
        assert len(app.recoverable_keys()) == 1
        assert conn.recovery is not None and len(conn.recovery.recorder._ring) <= 8
    assert app.ledger.lines == []
    assert len(server.connections) == 1
    client.raw.sock.close()


async def test_shutdown_with_connections_in_every_recovery_state(app: App) -> None:
    """Connected, kept, coming back (no M yet), offered while the serving task is busy:
    ``server.close()`` ends them all, each one's events once, and leaves nothing (the
    fixture checks)."""
    await app.start(app.make(handshake_timeout=60))
    connected = await app.client("r")
    kept, _ = await app.lost("r")
    coming, conn = await app.lost("r")
    raw = await app.upgrade_back(coming.key, coming.read)
    await app.taking(conn, coming.key)
    stuck, stuck_conn = await busy(app)
    raw2 = await app.upgrade_back(stuck.key, stuck.read)
    await until(lambda: stuck_conn.recovery is not None and stuck_conn.recovery._offered, "offer")
    app.gate.set()  # the handler returns while the server closes
    codes = [answer_close(r) for r in (raw, connected.raw, raw2)]
    await asyncio.wait_for(app.server.close(), 1.5)  # type: ignore[union-attr]
    for c in (connected, kept, coming, stuck):
        assert app.ledger.count(f"on_disconnect {c.id}") == 1
    assert [await code for code in codes] == [1001, 1001, 1001]
    for r in (raw, raw2, connected.raw):
        r.sock.close()


async def test_asks_of_a_kept_connection_read_nothing_from_its_dead_websocket(app: App) -> None:
    """Each ask of a kept connection's client waits for its return; none of them may read
    the websocket that is gone (aiohttp raises on the 5th read of a closed one, which
    would break the connection), and one asked after its return gets its answer."""
    from wsmvc import AskTimeout

    await app.start(app.make())
    client, conn = await app.lost("r")
    ns = conn.namespace("default")
    assert ns is not None
    for _ in range(8):
        with pytest.raises(AskTimeout):
            await ns.ask("q", b"?", timeout=0.02)
    assert conn.recovery is not None and conn.recovery.lost and not conn.closed
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    questions = [await back.next() for _ in range(8)]
    assert all(q.endswith(";default;;q;0;0;?") for q in questions)
    asking = asyncio.ensure_future(ns.ask("q", b"!", timeout=T))
    question = await back.next()
    token = question.split(";", 1)[0]
    await back.raw.send(f"{token};default;;q;0;0;yes")
    assert (await asyncio.wait_for(asking, T)).body == b"yes"
    back.raw.sock.close()


def confirming(app: App, outcome: list[str]) -> Server:
    """A server whose handler `confirm` asks its own client `sure?` and answers with
    what it heard."""
    from wsmvc import AskTimeout

    async def confirm(ns: NSConn, msg: Message) -> bytes:
        try:
            answer = await ns.ask("sure?", b"", timeout=T)
        except AskTimeout:
            outcome.append("timed out")
            return b"unconfirmed"
        outcome.append(answer.body.decode())
        return b"confirmed"

    server = app.make()
    server.on("default", "confirm")(confirm)
    return server


@pytest.mark.parametrize("how", ["vanish", "early", "fail-first"])
async def test_a_return_while_a_handler_awaits_an_ask_of_its_own_client(app: App, how: str) -> None:
    """A handler awaits an ask of its own client when the connection is lost; the client
    comes back (after the server saw it go; before; after a first return that failed):
    the return is taken while the handler still runs, the question is replayed, its
    answer reaches the handler, whose own answer follows; then the connection goes on."""
    outcome: list[str] = []
    await app.start(confirming(app, outcome))
    client = await app.client("r")
    await client.raw.send("$k;default;;confirm;0;0;")
    question = await client.next()
    token = question.split(";", 1)[0]
    assert question == f"{token};default;;sure?;0;0;"
    conn = app.conn(client.id)
    if how != "early":
        client.vanish()  # the helper reading for the ask sees it gone
        await app.kept(client.id)
    if how == "fail-first":
        raw = await app.upgrade_back(client.key, client.read - 1)
        await app.taking(conn, client.key)
        raw.abort()
        await until(functools.partial(app.recoverable_keys().__contains__, client.key), "drop")
    back = await Recovering.dial(app.url, client.key, client.read - 1, base=client.read - 1)
    assert back.id == client.id and back.server_read == 3 and outcome == []
    assert await back.next() == question
    await back.raw.send(f"{token};default;;sure?;0;0;yes")
    assert await back.next() == "$k;default;;confirm;0;0;confirmed"
    assert outcome == ["yes"]
    assert await back.ask("$e;default;;echo;0;0;x") == "$e;default;;echo;0;0;echo:x"
    await app.server.broadcast(numbered(1))  # type: ignore[union-attr]
    assert await back.next() == frames([1])[0]
    assert app.ledger.lines == []
    if how == "early":
        client.raw.sock.close()
    back.vanish()  # and once more, now that the serving task is free
    await app.kept(client.id)
    again = await Recovering.dial(app.url, back.key, back.read, base=back.read)
    assert again.id == client.id and again.server_read == 5
    again.raw.sock.close()


async def test_a_handler_that_returns_while_its_client_is_being_taken_back(app: App) -> None:
    """The return is being taken aside (its ``M`` awaited) when the handler gives up its
    ask and returns: the serving task waits for that return, then goes on over it; a
    second loss and return work as any."""
    outcome: list[str] = []

    async def confirm(ns: NSConn, msg: Message) -> bytes:
        from wsmvc import AskTimeout

        try:
            await ns.ask("sure?", b"", timeout=0.3)
        except AskTimeout:
            outcome.append("timed out")
            return b"unconfirmed"
        return b"confirmed"

    server = app.make(handshake_timeout=60)
    server.on("default", "confirm")(confirm)
    await app.start(server)
    client = await app.client("r")
    await client.raw.send("$k;default;;confirm;0;0;")
    question = await client.next()
    client.vanish()
    conn = await app.kept(client.id)
    raw = await app.upgrade_back(client.key, client.read - 1)
    await app.taking(conn, client.key)
    await until(lambda: outcome == ["timed out"], "the ask timed out")
    await until(lambda: conn.recovery is not None and conn.recovery._wake is not None, "waits")
    back = await finish_back(raw, client.read - 1)
    assert back.id == client.id and back.server_read == 3
    assert [await back.next() for _ in range(2)] == [
        question,
        "$k;default;;confirm;0;0;unconfirmed",
    ]
    assert await back.ask("$e;default;;echo;0;0;x") == "$e;default;;echo;0;0;echo:x"
    await back.raw.send("$k2;default;;confirm;0;0;")  # its asks are read as before
    question = await back.next()
    await back.raw.send(question.replace(";0;0;", ";0;0;yes"))
    assert await back.next() == "$k2;default;;confirm;0;0;confirmed"
    back.vanish()
    await app.kept(client.id)
    await app.server.broadcast(numbered(1))  # type: ignore[union-attr]
    again = await Recovering.dial(app.url, back.key, back.read, base=back.read)
    assert again.id == client.id and again.server_read == 6
    assert await again.next() == frames([1])[0]
    again.raw.sock.close()


async def test_a_handler_asking_its_client_after_it_came_back(app: App) -> None:
    """The client vanishes, unseen, while a handler runs (nothing reads), and comes back;
    then the handler asks it something: its return is taken then (the ask reads the old
    websocket to its end first), and the answer reaches the handler."""
    outcome: list[str] = []

    async def late(ns: NSConn, msg: Message) -> bytes:
        await app.gate.wait()
        answer = await ns.ask("sure?", b"", timeout=T)
        outcome.append(answer.body.decode())
        return b"done"

    server = app.make()
    server.on("default", "late")(late)
    await app.start(server)
    client = await app.client("r")
    await client.raw.send("$t;default;;late;0;0;")
    client.vanish()
    conn = app.conn(client.id)
    dialing = asyncio.ensure_future(
        Recovering.dial(app.url, client.key, client.read, base=client.read)
    )
    await until(lambda: conn.recovery is not None and conn.recovery._offered is not None, "offer")
    app.gate.set()
    back = await asyncio.wait_for(dialing, T)
    assert back.id == client.id and back.server_read == 3
    question = await back.next()
    token = question.split(";", 1)[0]
    assert question == f"{token};default;;sure?;0;0;"
    await back.raw.send(f"{token};default;;sure?;0;0;yes")
    assert await back.next() == "$t;default;;late;0;0;done"
    assert outcome == ["yes"]
    assert await back.ask("$e;default;;echo;0;0;x") == "$e;default;;echo;0;0;echo:x"
    back.raw.sock.close()


async def test_a_handler_disconnecting_its_own_namespace_while_its_client_is_away(
    app: App,
) -> None:
    """The same with ``ns.disconnect()`` of the handler's own namespace: the client comes
    back, agrees, and the namespace's events run once, after the handler."""
    done = asyncio.Event()

    async def leave(ns: NSConn, msg: Message) -> None:
        await app.gate.wait()
        await ns.disconnect(timeout=T)
        done.set()

    server = app.make()
    server.on("default", "leave")(leave)
    await app.start(server)
    client = await app.client("r")
    await client.raw.send("$l;default;;leave;0;0;")
    client.vanish()
    app.gate.set()  # the disconnect's ask is written (kept), its helper sees the loss
    await app.kept(client.id)
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    request = await back.next()
    token = request.split(";", 1)[0]
    assert request == f"{token};default;;_OnNamespaceDisconnect;0;0;"
    await back.raw.send(f"{token};;;;;;")
    await asyncio.wait_for(done.wait(), T)
    await app.ledger.until(f"ns-disconnect default {client.id}")
    assert app.ledger.of(client.id) == [f"left r {client.id}", f"ns-disconnect default {client.id}"]
    back.raw.sock.close()


async def test_with_aiohttp_handler_cancellation_a_loss_is_not_recoverable(app: App) -> None:
    """aiohttp's ``handler_cancellation=True`` cancels a request's handler when its TCP
    connection is lost, and that handler is the connection's serving task: the connection
    ends at once (docs/recovery.md says so), cleanly, and its key opens a new one."""
    await app.start(app.make(), handler_cancellation=True)
    client = await app.client("r")
    client.vanish()
    await app.ledger.until(f"on_disconnect {client.id}")
    again = await Recovering.dial(app.url, client.key, client.read)
    assert again.server_read is None
    again.raw.sock.close()


# -- many at once ------------------------------------------------------------------------------


async def test_many_clients_losing_and_returning_during_a_stream_each_get_it_all(
    app: App,
) -> None:
    """20 clients in one room while 600 numbered messages stream to it; each vanishes and
    comes back (or fails a return first, or comes back before the server saw it go) at
    its own moments. Each reads every number once, in order, across its recoveries; no
    disconnect event runs; what the server keeps stays within its bounds."""
    import random

    # A return's M must come within handshake_timeout: 0.5 s dropped returns on a loaded
    # CI host (the "sent no M" path, tested on its own above), so a roomy one here.
    await app.start(app.make(max_messages=700, handshake_timeout=5.0))
    server = app.server
    assert server is not None
    total = 600
    rng = random.Random(1234)
    clients = [await app.client("r") for _ in range(20)]
    streamed = asyncio.Event()
    returns: collections.Counter[str] = collections.Counter()

    async def stream() -> None:
        for n in range(1, total + 1):
            await server.broadcast(numbered(n))
            if n % 20 == 0:
                await asyncio.sleep(0.001)
        streamed.set()

    async def life(client: Recovering, seed: int) -> list[int]:
        rng = random.Random(seed)
        got: list[int] = []
        while len(got) < total:
            frame = await client.next()
            got.append(int(frame.rsplit(";", 1)[1]))
            if rng.random() < 0.01:
                how = rng.choice(["vanish", "early", "fail-first"])
                if how != "early":
                    client.vanish()
                    await app.kept(client.id)
                if how == "fail-first":
                    conn = app.conn(client.id)
                    raw = await app.upgrade_back(client.key, client.read)
                    await app.taking(conn, client.key)
                    raw.abort()
                    await until(
                        functools.partial(app.recoverable_keys().__contains__, client.key),
                        "dropped",
                    )
                old = client
                client = await Recovering.dial(app.url, old.key, old.read, base=old.read)
                assert client.id == old.id and client.server_read == 2
                if how == "early":
                    old.raw.sock.close()
                returns[how] += 1
        client.raw.sock.close()
        return got

    streaming = asyncio.ensure_future(stream())
    results = await asyncio.wait_for(
        asyncio.gather(*(life(c, rng.randrange(1 << 30)) for c in clients)), 30
    )
    await streaming
    for got in results:
        assert got == list(range(1, total + 1))
    assert min(returns.values()) >= 10 and len(returns) == 3, returns
    assert app.ledger.lines == []
    for conn in app.conns:
        assert conn.recovery is not None and len(conn.recovery.recorder._ring) <= 700


async def test_what_clients_send_across_losses_is_handled_once_in_order(app: App) -> None:
    """10 clients each send 200 requests without waiting, losing the connection at random
    (gone, or coming back while the old one still looks alive, whose unread bytes the
    server then drops); each sends again what the server's count says it did not read.
    Every request is answered once, in order: the server's count is exact."""
    import random

    await app.start(app.make(max_messages=1000))
    rng = random.Random(99)
    total = 200
    returns = [0]

    async def life(seed: int) -> list[str]:
        rng = random.Random(seed)
        client = await app.client()
        log: list[str] = []  # every frame sent after A, as the server numbers them
        log.extend(["$c;default;;_OnNamespaceConnect;0;0;"])
        answers: list[str] = []
        sending = 0
        while len(answers) < total:
            if sending < total and rng.random() < 0.7:
                frame = f"$e{sending};default;;echo;0;0;{sending}"
                log.append(frame)
                await client.raw.send(frame)
                sending += 1
                continue
            if sending > len(answers):
                answers.append((await client.next()).rsplit(";", 1)[1])
            if rng.random() < 0.03:
                old = client
                if rng.random() < 0.5:
                    old.vanish()
                    await app.kept(old.id)
                client = await Recovering.dial(app.url, old.key, old.read, base=old.read)
                assert client.id == old.id and client.server_read is not None
                old.raw.sock.close()
                returns[0] += 1
                for frame in log[client.server_read :]:
                    await client.raw.send(frame)
        client.raw.sock.close()
        return answers

    results = await asyncio.wait_for(
        asyncio.gather(*(life(rng.randrange(1 << 30)) for _ in range(10))), 30
    )
    for answers in results:
        assert answers == [f"echo:{n}" for n in range(total)]
    assert returns[0] >= 20, returns
    assert app.ledger.lines == []


async def test_binary_and_native_frames_are_replayed_as_they_were(app: App) -> None:
    """A binary message (a body that is not UTF-8) and a native frame sent while away come
    back as binary frames, byte for byte, counted like the others."""
    server = app.make()
    await app.start(server)
    client, conn = await app.lost("r")
    raw_body = bytes(range(256))
    await server.broadcast(Message(namespace="default", room="r", event="b", body=raw_body))
    assert conn.send_native(b"\x00native\xff")
    back = await Recovering.dial(app.url, client.key, client.read, base=client.read)
    first = await back.raw.recv()
    second = await back.raw.recv()
    assert first[0] == 0x2 and first[1].endswith(raw_body)
    assert second == (0x2, b"\x00native\xff")
    await server.broadcast(numbered(1))
    assert await back.next() == frames([1])[0]
    back.raw.sock.close()
