"""Connect/disconnect churn: what a server's memory keeps after many short connections.

Each cycle is a whole short neffos session: upgrade (offering permessage-deflate or not),
``M``, connect ``default``, one ask, close. 16 clients cycle concurrently; the server's
RSS is read after a warm-up of 1,000 cycles and after each of ``--rounds`` rounds of
``--cycles`` more. A server that keeps something per past connection (or fragments its
heap, as a zlib compressor per connection did: issue 9's +84 MB for 20,000 cycles) grows
in every round; one that does not levels off after its first.

    python benchmarks/churn.py [--cycles 20000] [--rounds 3]

The clients are aiohttp's (with deflate they compress every message, as browsers do); the
servers are the benchmark servers of ``benchmarks/servers``, on CPU 0 as in ``run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

import aiohttp
from harness.cases import SERVERS
from harness.processes import ServerProcess, raise_nofile_limit

WORKERS = 16
WARMUP = 1000
CASES = (  # (server, client offers deflate)
    ("raw-aiohttp", False),
    ("raw-aiohttp-deflate", True),
    ("wsmvc", False),
    ("wsmvc", True),
)


async def cycle(session: aiohttp.ClientSession, url: str, deflate: bool) -> None:
    async with session.ws_connect(url, compress=15 if deflate else 0) as ws:
        await ws.send_str("M")
        ack = await ws.receive_str(timeout=10)
        assert ack.startswith("A"), ack
        await ws.send_str("$c;default;;_OnNamespaceConnect;0;0;")
        await ws.receive_str(timeout=10)
        await ws.send_str("$1;default;;ask;0;0;hello")
        reply = await ws.receive_str(timeout=10)
        assert reply.endswith("hello"), reply


async def churn(url: str, deflate: bool, cycles: int) -> float:
    """Run ``cycles`` cycles on ``WORKERS`` clients; cycles per second."""
    left = cycles

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await cycle(session, url, deflate)

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(WORKERS)))
    return cycles / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20000, help="cycles per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case")
    args = parser.parse_args()
    raise_nofile_limit()
    specs = {s.name: s for s in SERVERS}
    rows = []
    for name, deflate in CASES:
        spec = specs[name]
        with ServerProcess(spec.path, spec.args) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            asyncio.run(churn(url, deflate, WARMUP))
            rss = [server.sample().rss_kib / 1024]
            rates = []
            for _ in range(args.rounds):
                rates.append(asyncio.run(churn(url, deflate, args.cycles)))
                rss.append(server.sample().rss_kib / 1024)
        growth = [after - before for before, after in itertools.pairwise(rss)]
        rows.append((name, deflate, rss[0], growth, min(rates)))
        trace = " -> ".join(f"{r:.1f}" for r in rss)
        print(f"{name} deflate={deflate}: RSS {trace} MiB", flush=True)
    rounds = " | ".join(f"round {i + 1} MiB" for i in range(args.rounds))
    print(f"\nRSS growth per round of {args.cycles:,} cycles:\n")
    print(f"| server | client offers deflate | RSS after warm-up MiB | {rounds} | cycles/s |")
    print("|---|---|---|" + "---|" * args.rounds + "---|")
    for name, deflate, start, growth, rate in rows:
        cells = " | ".join(f"{g:+.1f}" for g in growth)
        print(f"| {name} | {'yes' if deflate else 'no'} | {start:.1f} | {cells} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
