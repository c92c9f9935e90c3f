"""Trying to break the heartbeat (wsmvc.keepalive) and the server's own pongs.

Real servers on 127.0.0.1, real clients: ``RawWS`` (a websocket on a plain socket, which
reads only when told to and answers nothing by itself) or aiohttp's. Every test runs on
both event loops.
"""

from __future__ import annotations

import asyncio
import random
import struct
import threading
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from wsmvc import Conn, Message, NSConn, Server

from .wire_support import RawWS, Serve, T, conn_by_id, make_server, ping, ready, show

pytestmark = pytest.mark.both_loops

BEAT = 0.2  # seconds
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def close_frame(code: int = 1000, reason: bytes = b"") -> bytes:
    return RawWS.frame(struct.pack("!H", code) + reason, OP_CLOSE)


async def raw_ready(url: str, *, deflate: bool = False) -> tuple[RawWS, str]:
    """A :class:`RawWS` after the neffos handshake, connected to ``default``; its id."""
    raw = await RawWS.open(url, deflate=deflate)
    await raw.send("M")
    ack = await raw.recv_text()
    assert ack.startswith("A"), ack
    await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
    assert await raw.recv_text() == "$c;;;;;;"
    return raw, ack[1:]


async def read_to_the_end(raw: RawWS) -> list[tuple[int, bytes]]:
    """Every frame until the server closes the socket (the close frame included)."""
    frames: list[tuple[int, bytes]] = []
    while True:
        try:
            frames.append(await raw.recv())
        except (EOFError, ConnectionError):
            return frames


def after_close(frames: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """What came after the (first) close frame: must be nothing."""
    ops = [op for op, _ in frames]
    assert OP_CLOSE in ops, frames
    return frames[ops.index(OP_CLOSE) + 1 :]


def close_of(frames: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    (data,) = [data for op, data in frames if op == OP_CLOSE]
    return struct.unpack("!H", data[:2])[0], data[2:]


class Disconnects:
    """``on_disconnect``: every call, by connection id, with the close code."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []
        self.changed = asyncio.Event()

    def __call__(self, conn: Conn) -> None:
        self.calls.append((conn.id, conn.close_code))
        self.changed.set()

    async def wait_for(self, ids: set[str] | int, timeout: float = T) -> None:
        """Until these ids (or this many calls) were seen."""

        def done() -> bool:
            if isinstance(ids, int):
                return len(self.calls) >= ids
            return ids <= {i for i, _ in self.calls}

        async def wait() -> None:
            while not done():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def codes(self) -> dict[str, int | None]:
        counts = Counter(i for i, _ in self.calls)
        assert all(n == 1 for n in counts.values()), f"disconnect fired twice: {counts}"
        return dict(self.calls)


# -- false positives: a live peer closed ----------------------------------------------------


async def test_a_pong_that_arrived_while_the_loop_was_busy_counts(serve: Serve) -> None:
    """Peer A answers the server's ping within milliseconds, but meanwhile a handler of
    another connection holds the event loop (synchronous work) for 0.75 of a period. The
    pong is in A's socket when the loop is free again: A must not be closed for it.

    A runs in a thread of its own (its own event loop), as a separate client process
    would: the server's busy loop must not hold up A's answer."""
    beat = 0.4
    blocking = threading.Event()

    def crunch(nsconn: NSConn, msg: Message) -> str:
        blocking.set()
        time.sleep(0.75 * beat)  # the application's synchronous work, on the loop
        return "crunched"

    disconnects = Disconnects()
    server = Server(
        {"default": {"crunch": crunch, "ping": ping}},
        heartbeat=beat,
        on_disconnect=disconnects,
        close_timeout=0.5,
    )
    url = await serve(server)
    loop = asyncio.get_running_loop()
    a_id: asyncio.Future[str] = loop.create_future()
    a_pinged: asyncio.Future[None] = loop.create_future()
    outcome: asyncio.Future[str] = loop.create_future()

    def report(fut: asyncio.Future[Any], value: Any) -> None:
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(value))

    finished = threading.Event()  # the test has looked: A may go

    async def peer_a() -> None:
        raw, conn_id = await raw_ready(url)
        report(a_id, conn_id)
        try:
            report(outcome, await talk(raw))
            await asyncio.to_thread(finished.wait, T)
        finally:
            raw.abort()

    async def talk(raw: RawWS) -> str:
        op, data = await raw.recv()
        assert op == OP_PING, (op, data)
        report(a_pinged, None)
        await asyncio.to_thread(blocking.wait, T)  # the server's loop is busy from now
        await raw.send_raw(RawWS.frame(data, OP_PONG))  # answered within milliseconds
        # Then keep answering, for two more periods; then ask something.
        deadline = time.monotonic() + 2 * beat
        asked = False
        while True:
            if not asked and time.monotonic() >= deadline:
                await raw.send("$a;default;;ping;0;0;")
                asked = True
            op, data = await raw.recv()
            if op == OP_CLOSE:
                return f"closed: {struct.unpack('!H', data[:2])[0]} {data[2:]!r}"
            if op == OP_PING:
                await raw.send_raw(RawWS.frame(data, OP_PONG))
                continue
            return data.decode()

    thread = threading.Thread(target=lambda: asyncio.run(peer_a()), daemon=True)
    thread.start()
    try:
        await asyncio.wait_for(a_id, T)
        b = await RawWS.open(url)
        await b.send("M")
        assert (await b.recv_text()).startswith("A")
        await b.send("$c;default;;_OnNamespaceConnect;0;0;")
        assert await b.recv_text() == "$c;;;;;;"
        await asyncio.wait_for(a_pinged, T)  # a sweep pinged A just now
        await b.send("$b;default;;crunch;0;0;")
        assert await asyncio.wait_for(outcome, T) == "$a;default;;ping;0;0;pong"
        # (B, which answers no ping, may be closed meanwhile: it is silent.)
        assert a_id.result() not in {i for i, _ in disconnects.calls}, disconnects.calls
        b.abort()
    finally:
        finished.set()
        await asyncio.to_thread(thread.join, T)


async def test_a_slow_upload_of_one_large_message_is_not_a_silent_peer(serve: Serve) -> None:
    """The client sends one 64 KiB message at a steady trickle for 8 heartbeat periods
    (browsers send a message as one frame: no pong fits in it until it ends)."""
    disconnects = Disconnects()
    server = make_server(heartbeat=BEAT, on_disconnect=disconnects, close_timeout=0.5)
    url = await serve(server)
    raw, _ = await raw_ready(url)
    payload = b"$up;default;;ping;0;0;" + b"x" * (64 * 1024)
    data = RawWS.frame(payload, OP_TEXT)
    chunks = 32
    size = -(-len(data) // chunks)
    sent_all = True
    for i in range(chunks):
        try:
            await raw.send_raw(data[i * size : (i + 1) * size])
        except ConnectionError:
            sent_all = False
            break
        await asyncio.sleep(8 * BEAT / chunks)  # the link's pace: bytes every 50 ms
    frames: list[tuple[int, bytes]] = []
    while not frames or frames[-1][0] == OP_PING:
        try:
            frames.append(await raw.recv())
            if frames[-1][0] == OP_PING:
                await raw.send_raw(RawWS.frame(frames[-1][1], OP_PONG))
        except (EOFError, ConnectionError):
            break
    op, got = frames[-1]
    assert disconnects.calls == []  # the server did not close it
    assert sent_all and (op, got) == (OP_TEXT, b"$up;default;;ping;0;0;pong"), frames
    raw.abort()


# -- the server's pongs -------------------------------------------------------------------


def big(nsconn: NSConn, msg: Message) -> str:
    return "y" * 4000  # past the compression threshold


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_pings_of_125_bytes_before_and_after_the_handshake(
    serve: Serve, deflate: bool
) -> None:
    """The largest control payload (RFC 6455 §5.5) is echoed byte for byte, also before
    neffos' ``M`` (the pongs come before ``A<id>``, in arrival order), never compressed
    (RFC 7692 §6.1: control frames are not), in order with compressed messages."""
    server = Server({"default": {"ping": ping, "big": big}}, heartbeat=None, close_timeout=0.5)
    url = await serve(server)
    raw = await RawWS.open(url, deflate=deflate)
    assert ("sec-websocket-extensions" in raw.headers) is deflate
    payloads = [bytes([i]) * 125 for i in range(3)]
    for p in payloads:
        await raw.send_raw(RawWS.frame(p, OP_PING))
    await raw.send("M")
    for p in payloads:
        assert await raw.recv() == (OP_PONG, p)
        assert not raw.compressed
    assert (await raw.recv_text()).startswith("A")
    await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
    assert await raw.recv_text() == "$c;;;;;;"
    # A ping between two messages: its pong goes between their answers.
    odd = bytes(range(125))
    await raw.send("$1;default;;big;0;0;")
    await raw.send_raw(RawWS.frame(odd, OP_PING))
    await raw.send("$2;default;;ping;0;0;")
    assert await raw.recv() == (OP_TEXT, b"$1;default;;big;0;0;" + b"y" * 4000)
    assert raw.compressed is deflate
    assert await raw.recv() == (OP_PONG, odd)
    assert not raw.compressed
    assert await raw.recv() == (OP_TEXT, b"$2;default;;ping;0;0;pong")
    raw.abort()


async def test_a_ping_over_125_bytes_is_a_protocol_error(serve: Serve) -> None:
    disconnects = Disconnects()
    server = make_server(heartbeat=BEAT, on_disconnect=disconnects, close_timeout=0.5)
    url = await serve(server)
    raw, conn_id = await raw_ready(url)
    await raw.send_raw(RawWS.frame(b"z" * 126, OP_PING))
    frames = await read_to_the_end(raw)
    assert [op for op, _ in frames] == [OP_CLOSE], frames  # no pong for it
    assert close_of(frames)[0] == 1002
    await disconnects.wait_for({conn_id})
    # Once (1006 for the server: this client never answered the close frame).
    assert list(disconnects.codes()) == [conn_id]


async def test_a_ping_during_a_handler_is_answered_after_it_in_order(serve: Serve) -> None:
    """No reader runs while a handler does: the ping waits, and its pong follows the
    handler's answer (arrival order), instead of being lost."""
    release = asyncio.Event()

    async def slow(nsconn: NSConn, msg: Message) -> str:
        await release.wait()
        return "done"

    server = Server({"default": {"slow": slow}}, heartbeat=None, close_timeout=0.5)
    url = await serve(server)
    raw, _ = await raw_ready(url)
    await raw.send("$s;default;;slow;0;0;")
    await raw.send_raw(RawWS.frame(b"p1", OP_PING))
    await asyncio.sleep(0.1)  # a bounded time in which no pong may come
    release.set()
    assert await raw.recv() == (OP_TEXT, b"$s;default;;slow;0;0;done")
    assert await raw.recv() == (OP_PONG, b"p1")
    raw.abort()


async def test_pings_while_a_handler_awaits_an_ask_are_answered_at_once(serve: Serve) -> None:
    """The helper reader answers pings during the ask, and the heartbeat's pings, which the
    client answers, keep the connection for many periods; then the ask is answered."""
    answers: list[str] = []
    disconnects = Disconnects()

    async def ask_back(nsconn: NSConn, msg: Message) -> str:
        reply = await nsconn.ask("question", timeout=T)
        answers.append(reply.text)
        return "thanks"

    server = Server(
        {"default": {"ask_back": ask_back}},
        heartbeat=BEAT,
        on_disconnect=disconnects,
        close_timeout=0.5,
    )
    url = await serve(server)
    raw, _ = await raw_ready(url)
    await raw.send("$q;default;;ask_back;0;0;")
    question = await raw.recv_text()
    token, _, rest = question.partition(";")
    assert rest == "default;;question;0;0;", question
    for i in range(3):
        payload = f"during the ask {i}".encode()
        await raw.send_raw(RawWS.frame(payload, OP_PING))
        assert await raw.recv() == (OP_PONG, payload)
    server_pings = 0
    while server_pings < 6:  # three periods
        op, data = await raw.recv()
        assert (op, data) == (OP_PING, b""), (op, data)
        server_pings += 1
        await raw.send_raw(RawWS.frame(data, OP_PONG))
    await raw.send(f"{token};default;;question;0;0;forty-two")
    assert await raw.recv() == (OP_TEXT, b"$q;default;;ask_back;0;0;thanks")
    assert answers == ["forty-two"]
    assert disconnects.calls == []
    raw.abort()


async def test_a_ping_flood_from_a_peer_that_does_not_read_ends_with_1008(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Every ping asks for a pong of the same size; a peer that floods pings and reads
    nothing is cut by the send-buffer limit, like any peer that stops reading, and the
    server's buffer for it stays near the limit."""
    limit = 64 * 1024
    disconnects = Disconnects()
    server = make_server(
        heartbeat=BEAT, on_disconnect=disconnects, send_buffer_limit=limit, close_timeout=0.5
    )
    url = await serve(server)
    raw = await RawWS.open(url, rcvbuf=4096)
    await raw.send("M")
    conn_id = (await raw.recv_text())[1:]
    conn = conn_by_id(server, conn_id)
    transport = conn.request.transport if conn.request is not None else None
    assert transport is not None
    batch = RawWS.frame(b"f" * 125, OP_PING) * 500  # 65 KB of pings
    sent, peak = 0, 0
    gone = asyncio.ensure_future(disconnects.wait_for({conn_id}, timeout=30))
    try:
        while not gone.done() and sent < 200 << 20:
            try:
                await asyncio.wait_for(raw.send_raw(batch), T)
            except ConnectionError:
                break
            sent += len(batch)
            peak = max(peak, transport.get_write_buffer_size())
        await gone
    finally:
        gone.cancel()
    assert disconnects.codes() == {conn_id: 1008}
    assert any("send buffer limit exceeded" in r.getMessage() for r in caplog.records)
    # A burst of one loop step may pass the limit (one read's worth of pongs), no more.
    assert peak < limit + 512 * 1024, peak
    raw.abort()


async def test_unsolicited_pongs_count_as_life_and_are_not_answered(serve: Serve) -> None:
    """A client that sends only unsolicited pongs (RFC 6455 §5.5.3: a unidirectional
    heartbeat) is never pinged, never closed, and gets nothing back for them."""
    disconnects = Disconnects()
    server = make_server(heartbeat=BEAT, on_disconnect=disconnects, close_timeout=0.5)
    url = await serve(server)
    raw, _ = await raw_ready(url)
    deadline = time.monotonic() + 6 * BEAT
    while time.monotonic() < deadline:
        await raw.send_raw(RawWS.frame(b"still here", OP_PONG))
        await asyncio.sleep(BEAT / 4)  # the client's pace, not a wait for a result
    await raw.send("$b;default;;ping;0;0;")
    # The first frame the server sent in all that time is the answer.
    assert await raw.recv() == (OP_TEXT, b"$b;default;;ping;0;0;pong")
    assert disconnects.calls == []
    raw.abort()


async def test_a_peer_that_only_answers_pings_stays(serve: Serve) -> None:
    disconnects = Disconnects()
    server = make_server(heartbeat=BEAT, on_disconnect=disconnects, close_timeout=0.5)
    url = await serve(server)
    raw, conn_id = await raw_ready(url)
    start = time.monotonic()
    pings = 0
    while pings < 8:
        op, data = await raw.recv()
        assert (op, data) == (OP_PING, b""), (op, data)
        pings += 1
        await raw.send_raw(RawWS.frame(data, OP_PONG))
    # An idle peer is pinged once a period, not once a sweep.
    assert time.monotonic() - start >= 7 * BEAT * 0.9
    assert not conn_by_id(server, conn_id).closed
    await raw.send("$x;default;;ping;0;0;")
    assert await raw.recv() == (OP_TEXT, b"$x;default;;ping;0;0;pong")
    assert disconnects.calls == []
    raw.abort()


async def test_without_heartbeat_a_silent_peer_stays_and_its_pings_are_answered(
    serve: Serve,
) -> None:
    disconnects = Disconnects()
    server = make_server(heartbeat=None, on_disconnect=disconnects, close_timeout=0.5)
    url = await serve(server)
    raw, _ = await raw_ready(url)
    await asyncio.sleep(4 * BEAT)  # silent, for what would be several deadlines
    await raw.send_raw(RawWS.frame(b"hello?", OP_PING))
    assert await raw.recv() == (OP_PONG, b"hello?")  # first frame: no ping came before
    await raw.send("$x;default;;ping;0;0;")
    assert await raw.recv() == (OP_TEXT, b"$x;default;;ping;0;0;pong")
    assert disconnects.calls == []
    raw.abort()


# -- closes ------------------------------------------------------------------------------


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_a_silent_peer_gets_pings_then_1011_and_nothing_after(
    serve: Serve, deflate: bool
) -> None:
    """Closed once: its namespace's disconnect event fires once, on_disconnect once (1006
    for the server's side), and the close frame is the last frame on the wire."""
    disconnected: list[str] = []

    def on_ns_disconnect(nsconn: NSConn, msg: Message) -> None:
        disconnected.append(nsconn.conn.id)

    disconnects = Disconnects()
    server = Server(
        {"default": {"ping": ping, "_OnNamespaceDisconnect": on_ns_disconnect}},
        heartbeat=BEAT,
        on_disconnect=disconnects,
        close_timeout=0.5,
    )
    url = await serve(server)
    raw, conn_id = await raw_ready(url, deflate=deflate)
    start = time.monotonic()
    await disconnects.wait_for({conn_id})
    assert BEAT <= time.monotonic() - start < 1.5 * BEAT + 0.5
    frames = await read_to_the_end(raw)
    assert after_close(frames) == []
    assert close_of(frames) == (1011, b"keepalive ping timeout")
    assert {f for f in frames if f[0] != OP_CLOSE} == {(OP_PING, b"")}, frames
    assert disconnects.codes() == {conn_id: 1006}
    assert disconnected == [conn_id]
    assert server.namespace_members("default") == []


async def test_closes_at_the_moment_of_a_sweep(serve: Serve) -> None:
    """Sixty clients each close the moment a ping arrives (before answering it, or right
    after, or followed by pings), or vanish then, or stay silent and close the moment
    the next sweep judges them: each connection ends once, with the client's code (1000)
    or as broken (1006), no pong answers a ping sent after a close frame, and no frame
    follows a close frame."""
    disconnects = Disconnects()
    server = make_server(heartbeat=BEAT, on_disconnect=disconnects, close_timeout=0.5)
    url = await serve(server)
    kinds = [
        "close",
        "pong-then-close",
        "vanish",
        "close-then-pong",
        "close-then-ping",
        "silent-close-at-deadline",
    ]

    async def client(kind: str) -> tuple[str, str, list[tuple[int, bytes]]]:
        raw, conn_id = await raw_ready(url)
        op, data = await raw.recv()
        assert (op, data) == (OP_PING, b"")
        if kind == "vanish":
            raw.abort()
            return kind, conn_id, []
        if kind == "silent-close-at-deadline":
            # No pong: the next sweep, half a period after this ping, judges it. Close then.
            await asyncio.sleep(BEAT / 2 + random.uniform(-0.02, 0.02))
            await raw.send_raw(close_frame())
        elif kind == "close-then-ping":
            await raw.send_raw(close_frame() + RawWS.frame(b"late", OP_PING) * 20)
        elif kind == "pong-then-close":
            await raw.send_raw(RawWS.frame(data, OP_PONG) + close_frame())
        elif kind == "close-then-pong":
            await raw.send_raw(close_frame() + RawWS.frame(data, OP_PONG))
        else:
            await raw.send_raw(close_frame())
        frames = await read_to_the_end(raw)
        raw.abort()
        return kind, conn_id, frames

    results = await asyncio.wait_for(
        asyncio.gather(*(client(kinds[i % len(kinds)]) for i in range(60))), 4 * T
    )
    ids = {conn_id for _, conn_id, _ in results}
    await disconnects.wait_for(ids)
    codes = disconnects.codes()
    for kind, conn_id, frames in results:
        if kind == "vanish":
            assert codes[conn_id] == 1006, (kind, codes[conn_id])
            continue
        assert after_close(frames) == [], (kind, frames)
        assert OP_PONG not in {op for op, _ in frames}, (kind, frames)
        if kind == "silent-close-at-deadline":  # whichever came first, once
            assert (codes[conn_id], close_of(frames)) in (
                (1000, (1000, b"")),
                (1006, (1011, b"keepalive ping timeout")),
            ), (kind, codes[conn_id], frames)
            continue
        assert codes[conn_id] == 1000, (kind, codes[conn_id])
        assert close_of(frames)[0] == 1000, (kind, frames)
    assert not server.connections


async def test_server_close_right_after_a_sweep(serve: Serve) -> None:
    """``server.close()`` the moment a sweep pinged everyone: each client gets 1001 after
    at most pings, nothing after it, and no ping comes once the server is closed."""
    disconnects = Disconnects()
    server = make_server(heartbeat=BEAT, on_disconnect=disconnects, close_timeout=0.5)
    url = await serve(server)
    raws = [await raw_ready(url) for _ in range(30)]
    # Wait for a sweep: the first client's ping. The others got theirs in the same step.
    op, _ = await raws[0][0].recv()
    assert op == OP_PING
    await asyncio.wait_for(server.close(), T)  # returns once each one's events ran

    async def finish(raw: RawWS) -> list[tuple[int, bytes]]:
        frames: list[tuple[int, bytes]] = []
        while True:
            op, data = await raw.recv()
            frames.append((op, data))
            if op == OP_CLOSE:
                break
        await raw.send_raw(close_frame())  # the close handshake, answered
        frames += await read_to_the_end(raw)
        return frames

    all_frames = await asyncio.gather(*(finish(raw) for raw, _ in raws))
    for frames in all_frames:
        assert after_close(frames) == [], frames
        assert close_of(frames) == (1001, b"server shutdown"), frames
        assert {op for op, _ in frames} <= {OP_PING, OP_CLOSE}, frames
    assert disconnects.codes() == dict.fromkeys((i for _, i in raws), 1001)


async def test_fixture_shutdown_during_sweeps_with_silent_and_answering_peers(
    serve: Serve,
) -> None:
    """The app's shutdown (what the ``serve`` fixture's cleanup runs) while the heartbeat
    is judging: every connection ends once, and nothing is sent after a close frame."""
    from aiohttp import web

    disconnects = Disconnects()
    server = make_server(heartbeat=BEAT, on_disconnect=disconnects, close_timeout=0.5)
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"
    try:
        raws = [await raw_ready(url) for _ in range(20)]

        async def answer(raw: RawWS, silent: bool) -> list[tuple[int, bytes]]:
            frames: list[tuple[int, bytes]] = []
            while True:
                try:
                    op, data = await raw.recv()
                except (EOFError, ConnectionError):
                    return frames
                frames.append((op, data))
                if op == OP_PING and not silent:
                    await raw.send_raw(RawWS.frame(data, OP_PONG))
                if op == OP_CLOSE:
                    await raw.send_raw(close_frame())

        readers = [
            asyncio.ensure_future(answer(raw, i % 2 == 0)) for i, (raw, _) in enumerate(raws)
        ]
        # The silent half is judged between BEAT and 1.5 BEAT: shut down in that window.
        await asyncio.sleep(BEAT + random.uniform(0, BEAT / 2))
    finally:
        await asyncio.wait_for(runner.cleanup(), 2 * T)
    all_frames = await asyncio.wait_for(asyncio.gather(*readers), T)
    ids = {i for _, i in raws}
    await disconnects.wait_for(ids)
    codes = disconnects.codes()
    for i, ((_, conn_id), frames) in enumerate(zip(raws, all_frames, strict=True)):
        assert after_close(frames) == [], frames
        code = close_of(frames)[0]
        if i % 2:  # answering: only the shutdown closes it
            assert (code, codes[conn_id]) == (1001, 1001), frames
        else:
            assert (code, codes[conn_id]) in ((1001, 1001), (1011, 1006)), frames


async def test_hundreds_of_connections_exactly_the_silent_ones_are_closed(
    serve: Serve,
) -> None:
    """200 aiohttp clients answer pings (autoping, reading all the time), 200 raw clients
    say nothing after connecting. The heartbeat closes exactly the silent ones, each
    once; the others are served after many periods."""
    beat = 0.5
    n = 200
    disconnects = Disconnects()
    server = make_server(heartbeat=beat, on_disconnect=disconnects, close_timeout=0.5)
    url = await serve(server)
    # No connector limit: aiohttp's default (100) would hold the 101st websocket back.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        inboxes: list[asyncio.Queue[aiohttp.WSMessage]] = []
        live: list[tuple[Any, str]] = []

        async def pump(ws: Any, inbox: asyncio.Queue[aiohttp.WSMessage]) -> None:
            async for msg in ws:  # autoping: each ping is answered by receive()
                inbox.put_nowait(msg)

        pumps = []
        silent: list[tuple[RawWS, str]] = []
        for _ in range(n):
            ws = await session.ws_connect(url)  # autoping on
            conn_id = await ready(ws)
            inbox: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
            inboxes.append(inbox)
            pumps.append(asyncio.ensure_future(pump(ws, inbox)))
            live.append((ws, conn_id))
            silent.append(await raw_ready(url))
        silent_ids = {i for _, i in silent}
        await disconnects.wait_for(silent_ids, timeout=2 * T)
        await asyncio.sleep(3 * beat)  # many more sweeps: nobody else may go
        codes = disconnects.codes()
        assert set(codes) == silent_ids
        assert set(codes.values()) == {1006}
        for k, (ws, _) in enumerate(live):
            await ws.send_str(f"$v{k};default;;ping;0;0;")
        for k, inbox in enumerate(inboxes):
            msg = await asyncio.wait_for(inbox.get(), T)
            assert (msg.type, msg.data) == (WSMsgType.TEXT, f"$v{k};default;;ping;0;0;pong"), show(
                msg
            )
        for raw, _ in silent:
            frames = await read_to_the_end(raw)
            assert after_close(frames) == []
            assert close_of(frames) == (1011, b"keepalive ping timeout")
        assert len(server.connections) == n
        for ws, _ in live:
            await ws.close()
        await asyncio.gather(*pumps)
    finally:
        await session.close()


async def test_pings_between_the_fragments_of_a_slow_message_keep_it_alive(
    serve: Serve,
) -> None:
    """A client that fragments a long upload (RFC 6455 §5.4) may answer pings between
    the fragments: it stays, and the pongs come before the message's answer."""
    disconnects = Disconnects()
    server = make_server(heartbeat=BEAT, on_disconnect=disconnects, close_timeout=0.5)
    url = await serve(server)
    raw, _ = await raw_ready(url)

    def fragment(payload: bytes, opcode: int, fin: bool) -> bytes:
        framed = bytearray(RawWS.frame(payload, opcode))
        if not fin:
            framed[0] &= 0x7F
        return bytes(framed)

    pings = asyncio.Queue[bytes]()

    async def read() -> tuple[int, bytes]:
        while True:
            op, data = await raw.recv()
            if op != OP_PING:
                return op, data
            pings.put_nowait(data)

    reading = asyncio.ensure_future(read())
    await raw.send_raw(fragment(b"$f;default;;ping;0;0;", OP_TEXT, fin=False))
    deadline = time.monotonic() + 6 * BEAT
    while time.monotonic() < deadline:
        await asyncio.sleep(BEAT / 8)  # the link's pace
        await raw.send_raw(fragment(b"x" * 100, 0x0, fin=False))
        while not pings.empty():
            await raw.send_raw(RawWS.frame(pings.get_nowait(), OP_PONG))
        await raw.send_raw(RawWS.frame(b"mine", OP_PING))
    await raw.send_raw(fragment(b"end", 0x0, fin=True))
    # The client's own pings come back as pongs, in order, before the answer.
    op, data = await asyncio.wait_for(reading, T)
    while op == OP_PONG:
        assert data == b"mine"
        op, data = await asyncio.wait_for(read(), T)
    assert (op, data) == (OP_TEXT, b"$f;default;;ping;0;0;pong")
    assert disconnects.calls == []
    raw.abort()


async def test_no_pong_after_the_servers_close_frame(serve: Serve) -> None:
    """The server closes (a handler's ``conn.close()``) while pings keep coming: pings read
    before the close are answered, none after; the close frame is the last frame."""
    disconnects = Disconnects()

    async def bye(nsconn: NSConn, msg: Message) -> None:
        await nsconn.conn.close(4000, "bye")

    server = Server(
        {"default": {"bye": bye}}, heartbeat=BEAT, on_disconnect=disconnects, close_timeout=0.5
    )
    url = await serve(server)
    raw, conn_id = await raw_ready(url)
    burst = b"".join(RawWS.frame(str(i).encode(), OP_PING) for i in range(20))
    await raw.send_raw(burst + RawWS.frame(b"$b;default;;bye;0;0;", OP_TEXT) + burst)
    frames = await read_to_the_end(raw)
    assert after_close(frames) == []
    assert close_of(frames) == (4000, b"bye")
    assert [d for op, d in frames if op == OP_PONG] == [str(i).encode() for i in range(20)]
    await disconnects.wait_for({conn_id})
    assert list(disconnects.codes()) == [conn_id]
