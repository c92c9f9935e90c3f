"""permessage-deflate on the server's default path (issue 9): every message compressed on its
own, a broadcast compressed once for all its receivers, small messages plain, and frames of
one connection in order across both kinds. Real aiohttp servers, raw socket clients that
show the bits on the wire (RSV1), aiohttp's and wsmvc's clients; on the default asyncio
loop and on uvloop."""

from __future__ import annotations

import asyncio
import os
import zlib
from typing import Any

import pytest

import wsmvc
from wsmvc import Message, NSConn, Server, framing

from .conftest import Serve
from .wire_support import RawWS, T

BIG = 4000  # bytes: above the default threshold, and compressible


# Every test here on both loops: uvloop's transports are not ``asyncio.Transport``
# subclasses, and that once sent every uvloop connection down the slow write path.
pytestmark = pytest.mark.both_loops


def text(i: int, size: int) -> str:
    """Message ``i``: ``size`` bytes of JSON-like text that deflate shrinks."""
    head = f'{{"n":{i},"text":"'
    return head + ("lorem ipsum " * (size // 12 + 1))[: size - len(head) - 2] + '"}'


async def raw_ready(raw: RawWS, room: str | None = None) -> None:
    """Handshake, connect ``default`` and join ``room`` on a raw client."""
    await raw.send("M")
    assert (await raw.recv_text()).startswith("A")
    await raw.send("$c;default;;_OnNamespaceConnect;0;0;")
    assert await raw.recv_text() == "$c;;;;;;"
    if room is not None:
        await raw.send(f"$j;default;{room};_OnRoomJoin;0;0;")
        assert await raw.recv_text() == "$j;;;;;;"


async def open_in_room(url: str, deflate: bool | str) -> RawWS:
    raw = await RawWS.open(url, deflate=deflate)
    await raw_ready(raw, "r")
    return raw


def room_server(**options: Any) -> tuple[Server, list[NSConn]]:
    joined: list[NSConn] = []
    server = Server({"default": {"_OnRoomJoined": lambda ns, msg: joined.append(ns)}}, **options)
    return server, joined


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate", "permessage-deflate; server_no_context_takeover"),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_no_context_takeover",
        ),
    ],
)
async def test_the_answer_declares_no_context_takeover(
    serve: Serve, offer: str, answer: str
) -> None:
    """RFC 7692 §7.1.1.1: the server says it compresses every message on its own, whether the
    client asked or not, and keeps the window the client allowed."""
    url = await serve(Server({"default": {}}))
    raw = await RawWS.open(url, deflate=offer)
    try:
        assert raw.headers["sec-websocket-extensions"] == answer
    finally:
        raw.abort()


@pytest.mark.parametrize("compress", [True, False])
async def test_no_offer_or_compress_off_means_no_extension(serve: Serve, compress: bool) -> None:
    url = await serve(Server({"default": {}}, compress=compress))
    plain = await RawWS.open(url)
    offered = await RawWS.open(url, deflate=True)
    try:
        assert "sec-websocket-extensions" not in plain.headers
        assert ("sec-websocket-extensions" in offered.headers) is compress
    finally:
        plain.abort()
        offered.abort()


async def test_a_room_of_compressing_and_plain_clients_gets_every_message_in_order(
    serve: Serve,
) -> None:
    """Small and big broadcasts interleaved, to a room where some clients negotiated deflate
    and some did not: each gets every message, in order, intact; the big ones arrive
    compressed (RSV1) exactly to those that negotiated it, the small ones never."""
    server, _ = room_server()
    url = await serve(server)
    clients = [await open_in_room(url, deflate=i % 2 == 0) for i in range(6)]
    try:
        sizes = [10, BIG, 300, BIG * 3, 700, 70_000, 5]
        for i, size in enumerate(sizes):
            await server.broadcast(
                Message(namespace="default", room="r", event="m", body=text(i, size).encode())
            )
        for index, raw in enumerate(clients):
            deflates = index % 2 == 0
            for i, size in enumerate(sizes):
                frame = await raw.recv_text()
                assert frame == f";default;r;m;0;0;{text(i, size)}", (index, i)
                assert raw.compressed is (deflates and size >= framing.DEFAULT_THRESHOLD), (
                    index,
                    i,
                )
    finally:
        for raw in clients:
            raw.abort()


async def test_a_broadcast_is_compressed_once_for_all_its_receivers(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 receivers that negotiated deflate, one broadcast: zlib runs once (a spy on
    ``framing.deflate``: nothing on the wire can show how often the server compressed)."""
    calls: list[int] = []
    real = framing.deflate

    def counting(payload: bytes, wbits: int = 15, level: int = framing.DEFAULT_LEVEL) -> bytes:
        calls.append(len(payload))
        return real(payload, wbits, level)

    monkeypatch.setattr(framing, "deflate", counting)
    server, _ = room_server()
    url = await serve(server)
    clients = [await open_in_room(url, deflate=True) for _ in range(20)]
    try:
        body = text(0, BIG)
        await server.broadcast(
            Message(namespace="default", room="r", event="m", body=body.encode())
        )
        for raw in clients:
            assert await raw.recv_text() == f";default;r;m;0;0;{body}"
            assert raw.compressed
        assert len(calls) == 1
    finally:
        for raw in clients:
            raw.abort()


async def test_peers_with_different_windows_each_get_a_frame_they_can_inflate(
    serve: Serve,
) -> None:
    """One broadcast, receivers that allowed windows of 9, 12 and 15 bits: the server
    deflates once per window and each frame inflates with that window only."""
    server, _ = room_server()
    url = await serve(server)
    windows = [9, 12, 15]
    offers = [f"permessage-deflate; server_max_window_bits={w}" for w in windows]
    clients = [await open_in_room(url, deflate=offer) for offer in offers]
    for raw, bits in zip(clients, windows, strict=True):
        raw.inflater = zlib.decompressobj(-bits)  # what a peer with that window can hold
    try:
        body = text(1, 40_000)
        await server.broadcast(
            Message(namespace="default", room="r", event="m", body=body.encode())
        )
        for raw in clients:
            assert await raw.recv_text() == f";default;r;m;0;0;{body}"
            assert raw.compressed
    finally:
        for raw in clients:
            raw.abort()


async def test_answers_and_emits_to_one_client_are_compressed_and_in_order(
    serve: Serve,
) -> None:
    """Per-connection writes (an ask's answer, emits from a handler) take the same path:
    big ones compressed, small ones plain, all in the order written."""

    def burst(ns: NSConn, msg: Message) -> str:
        for i in range(5):
            ns.emit("part", text(i, BIG if i % 2 else 20))
        return text(99, BIG)

    url = await serve(Server({"default": {"burst": burst}}))
    raw = await RawWS.open(url, deflate=True)
    try:
        await raw_ready(raw)
        await raw.send("$7;default;;burst;0;0;")
        for i in range(5):
            assert await raw.recv_text() == f";default;;part;0;0;{text(i, BIG if i % 2 else 20)}"
            assert raw.compressed is bool(i % 2)
        assert await raw.recv_text() == f"$7;default;;burst;0;0;{text(99, BIG)}"
        assert raw.compressed
    finally:
        raw.abort()


async def test_incompressible_messages_go_plain(serve: Serve) -> None:
    """Random bytes: deflate would make them larger, so they go as they are (RSV1 clear)."""
    server, _ = room_server()
    url = await serve(server)
    raw = await open_in_room(url, deflate=True)
    try:
        body = os.urandom(3000)
        await server.broadcast(
            Message(namespace="default", room="r", event="m", body=body, binary=True)
        )
        op, data = await raw.recv()
        assert op == 0x2 and data == b";default;r;m;0;0;" + body
        assert not raw.compressed
    finally:
        raw.abort()


@pytest.mark.parametrize("threshold", [0, 100_000])
async def test_the_threshold_is_a_server_option(serve: Serve, threshold: int) -> None:
    server, _ = room_server(compress_threshold=threshold)
    url = await serve(server)
    raw = await open_in_room(url, deflate=True)
    try:
        await server.broadcast(
            Message(namespace="default", room="r", event="m", body=text(0, 200).encode())
        )
        assert await raw.recv_text() == f";default;r;m;0;0;{text(0, 200)}"
        assert raw.compressed is (threshold == 0)
    finally:
        raw.abort()


async def test_python_clients_with_and_without_compression_get_every_broadcast(
    serve: Serve,
) -> None:
    """wsmvc's own client (aiohttp underneath, inflating with context takeover) and a plain
    one, in one room, many messages of every size."""
    server = Server({"default": {}})
    url = await serve(server)
    got: dict[int, list[str]] = {0: [], 1: []}
    done = asyncio.Event()
    count = 40

    def recorder(k: int) -> Any:
        def on_m(ns: NSConn, msg: Message) -> None:
            got[k].append(msg.text)
            if all(len(v) == count for v in got.values()):
                done.set()

        return on_m

    clients = [
        await wsmvc.dial(url, {"default": {"m": recorder(k)}}, compress=k == 0) for k in (0, 1)
    ]
    try:
        for c in clients:
            ns = await c.connect("default", timeout=T)
            await ns.join_room("r", timeout=T)
        bodies = [text(i, (i * 997) % 9000 + 1) for i in range(count)]
        for body in bodies:
            await server.broadcast(
                Message(namespace="default", room="r", event="m", body=body.encode())
            )
        await asyncio.wait_for(done.wait(), T)
        assert got[0] == bodies and got[1] == bodies
    finally:
        for c in clients:
            await c.close()


def test_payload_frames_inflate_back_with_the_rfc_tail() -> None:
    """The deflated frame is the RFC 7692 §7.2.1 form: raw DEFLATE, sync-flushed, without
    the ``00 00 ff ff`` tail; a fresh inflater restores the payload once it is appended."""
    data = text(3, 5000).encode()
    payload = framing.Payload(data, binary=False)
    framed = payload.for_peer(15)
    assert framed[0] == 0x80 | 0x40 | 0x1  # FIN, RSV1, text
    assert framed[1] < 126  # 5000 repetitive bytes deflate to a short frame
    body = framed[2:]
    assert len(body) == framed[1]
    assert not body.endswith(b"\x00\x00\xff\xff")
    assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == data
    assert payload.for_peer(15) is framed  # computed once
    assert payload.for_peer(0) == framing.frame(data, framing.OP_TEXT)


async def test_fifty_reading_clients_get_every_large_broadcast(serve: Serve) -> None:
    """The case of issue 9: 64 KiB messages broadcast back to back to 50 clients that read,
    half of them compressing, with the default send-buffer limit. Every client gets every
    message, in order, and none is closed. The bytes are random: deflate cannot shrink them."""
    server = Server({"default": {}})
    url = await serve(server)
    count, readers = 32, 50
    got: dict[int, list[bytes]] = {k: [] for k in range(readers)}
    done = asyncio.Event()

    def recorder(k: int) -> Any:
        def on_m(ns: NSConn, msg: Message) -> None:
            got[k].append(msg.body[:4])
            if all(len(v) == count for v in got.values()):
                done.set()

        return on_m

    clients = [
        await wsmvc.dial(url, {"default": {"m": recorder(k)}}, compress=k % 2 == 0)
        for k in range(readers)
    ]
    try:
        for c in clients:
            await c.connect("default", timeout=T)
        blob = os.urandom(64 * 1024)
        for i in range(count):
            await server.broadcast(
                Message(namespace="default", event="m", body=b"%04d" % i + blob, binary=True)
            )
            await asyncio.sleep(0)  # one broadcast per loop step, as from 32 handler calls
        await asyncio.wait_for(done.wait(), T)
        assert all(not c.closed for c in clients)
        assert all(v == [b"%04d" % i for i in range(count)] for v in got.values())
    finally:
        for c in clients:
            await c.close()
