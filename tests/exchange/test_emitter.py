"""Sending to clients from outside the websocket servers (issue 10 §2).

* ``wsmvc.emitter.Emitter``, run in a separate Python process with ``asyncio.run`` (no
  aiohttp application, no websocket server), reaches the clients of two server processes
  sharing a real Redis or NATS: the namespace, a room, one id, everyone but one id, and an
  ask of one client answered across the cluster.
* ``Server.broadcast_threadsafe`` from threads of the server's own process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from wsmvc import Message, Server
from wsmvc.emitter import Emitter

from ..conftest import Serve
from .conftest import WAIT, Broker, Peers, StartCluster, id_from_name, make_exchange

EMITTER_SCRIPT = """
import asyncio, sys
from wsmvc import Message
from wsmvc.emitter import Emitter
from wsmvc.exchange import NatsExchange, RedisExchange

url, alice, bob, carol = sys.argv[1:5]
exchange = RedisExchange(url) if url.startswith("redis") else NatsExchange(url)

def chat(body, room=""):
    return Message(namespace="default", room=room, event="chat", body=body.encode())

async def main():
    async with Emitter(exchange) as emitter:
        await emitter.broadcast(chat("everyone"))
        await emitter.broadcast(chat("room r", room="r"))
        await emitter.broadcast(chat("only carol"), to=carol)
        await emitter.broadcast(chat("all but bob"), exclude=bob)
        question = Message(namespace="default", event="question", body=b"from a worker")
        answer = await emitter.ask(question, to=alice, timeout=5)
        print("answer:", answer.text, flush=True)
        await emitter.broadcast(chat("end"))

asyncio.run(main())
"""


async def test_an_emitter_in_another_process_reaches_every_server(
    broker: Broker, start_cluster: StartCluster, peers: Peers, tmp_path: Path
) -> None:
    cluster = start_cluster(broker, ["s1", "s2"])
    alice = await peers.connect(cluster["s1"], "alice", rooms=["r"])
    bob = await peers.connect(cluster["s2"], "bob", rooms=["r"])
    carol = await peers.connect(cluster["s2"], "carol")
    await peers.ready(alice)
    script = tmp_path / "emit.py"
    script.write_text(EMITTER_SCRIPT)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), broker.url, alice.id, bob.id, carol.id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"answer: {alice.label} heard from a worker"
    got = {p.label: [m.text for m in await p.until("end")] for p in (alice, bob, carol)}
    assert got == {
        alice.label: ["everyone", "room r", "all but bob"],
        bob.label: ["everyone", "room r"],
        carol.label: ["everyone", "only carol", "all but bob"],
    }


async def test_an_emitter_refuses_a_servers_exchange_and_needs_its_broker(
    broker: Broker,
) -> None:
    exchange = make_exchange(broker)
    Server({"default": {}}, exchange=exchange)
    with pytest.raises(ValueError, match="of its own"):
        Emitter(exchange)
    broker.stop()
    emitter = Emitter(make_exchange(broker, timeout=0.5), connect_timeout=1.0)
    with pytest.raises(asyncio.TimeoutError):
        await emitter.start()
    await emitter.stop()


async def test_broadcast_threadsafe_from_worker_threads(serve: Serve, peers: Peers) -> None:
    """Eight threads (a sync framework's requests) broadcast 25 messages each; the client
    gets all 200, each thread's in its order."""
    server = Server({"default": {}}, id_generator=id_from_name)
    url = await serve(server)
    alice = await peers.connect(url, "alice")

    def worker(n: int) -> None:
        for i in range(25):
            msg = Message(namespace="default", event="chat", body=f"{n}:{i}".encode())
            server.broadcast_threadsafe(msg).result(WAIT)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    await asyncio.gather(*(asyncio.to_thread(t.join, WAIT) for t in threads))
    texts = await alice.texts(200)
    for n in range(8):
        assert [t for t in texts if t.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(25)]


async def test_broadcast_threadsafe_refuses_the_loops_own_thread_and_a_server_not_started(
    serve: Serve,
) -> None:
    msg = Message(namespace="default", event="chat")
    idle = Server({"default": {}})
    with pytest.raises(RuntimeError, match="not running"):
        idle.broadcast_threadsafe(msg)
    server = Server({"default": {}})
    await serve(server)
    with pytest.raises(RuntimeError, match=r"await server\.broadcast"):
        server.broadcast_threadsafe(msg)
