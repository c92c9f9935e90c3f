"""What OpenTelemetry tracing (wsmvc.tracing) costs an echo, in-process, over loopback.

    python benchmarks/tracing_cost.py [--reps 9] [--n 2000]

One server and one Python client (``wsmvc.dial``) in this process; the client asks
``echo`` ``--n`` times, one after another (each a round trip: the server's handler span,
the client's ask). Three setups take turns, ``--reps`` times, each timed with the
process's CPU clock (client and server both) after a garbage collection:

* ``off`` - the server not traced;
* ``api`` - traced, with the API's no-op provider (the extra installed, no SDK set up);
* ``unsampled`` - traced, with the SDK and a sampler that records nothing (``ALWAYS_OFF``:
  what the spans a ratio sampler drops cost);
* ``sdk`` - traced, with the SDK recording every span (``TracerProvider``, the default
  sampler, a ``BatchSpanProcessor`` with an exporter that drops what it gets: the SDK's
  own work, not an exporter's).

Printed: the medians of µs of CPU per round trip, and each traced setup's median
difference with ``off`` of the same turn; for scale, what the SDK takes for a bare span.
Then the one change a server not traced has on a broadcast (the test of
``server._tracing``), timed on a server without connections.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import timeit
from collections.abc import Sequence

from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import wsmvc
from wsmvc import Message, NSConn, Server
from wsmvc.tracing import OpenTelemetryTracing

SETUPS = ("off", "api", "unsampled", "sdk")


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def echo(ns: NSConn, msg: Message) -> bytes:
    return msg.body


async def one_turn(
    setup: str, n: int, provider: TracerProvider, unsampled: TracerProvider
) -> float:
    """µs of CPU per round trip for ``n`` echoes with ``setup``."""
    server = Server({"default": {"echo": echo}}, heartbeat=None)
    if setup == "api":
        OpenTelemetryTracing(trace.NoOpTracerProvider()).instrument(server)
    elif setup == "unsampled":
        OpenTelemetryTracing(unsampled).instrument(server)
    elif setup == "sdk":
        OpenTelemetryTracing(provider).instrument(server)
    app = web.Application()
    server.mount(app, "/ws")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with wsmvc.dial(f"ws://127.0.0.1:{port}/ws", {"default": {}}) as client:
            ns = await client.connect("default")
            for _ in range(200):  # warm up
                await ns.ask("echo", "hello")
            provider.force_flush()
            gc.collect()
            start = time.process_time()
            for _ in range(n):
                await ns.ask("echo", "hello")
            used = time.process_time() - start
    finally:
        await runner.cleanup()
    provider.force_flush()
    return used / n * 1e6


async def main(reps: int, n: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    unsampled = TracerProvider(sampler=ALWAYS_OFF)
    turns: dict[str, list[float]] = {s: [] for s in SETUPS}
    for _ in range(reps):
        for setup in SETUPS:
            turns[setup].append(await one_turn(setup, n, provider, unsampled))
    provider.shutdown()
    print(f"echo round trips, µs of CPU each (client and server), {reps} turns of {n}")
    print(f"{'setup':>9} {'median':>8} {'- off':>8}  (quartiles of the difference)")
    for setup in SETUPS:
        diffs = [t - o for t, o in zip(turns[setup], turns["off"], strict=True)]
        q = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [diffs[0]] * 3
        print(
            f"{setup:>9} {statistics.median(turns[setup]):8.1f} {statistics.median(diffs):8.1f}"
            f"  ({q[0]:.1f} .. {q[2]:.1f})"
        )

    tracer = TracerProvider().get_tracer("bare")
    bare = min(timeit.repeat(lambda: tracer.start_span("x").end(), number=20_000, repeat=7))
    print(f"for scale: an SDK span alone (start, end; no attributes) {bare / 20_000 * 1e6:.1f} µs")

    server = Server({"default": {}})
    msg = Message(namespace="default", event="chat", body=b"x")
    calls = 200_000
    public = min(timeit.repeat(lambda: server.broadcast(msg), number=calls, repeat=7))
    inner = min(
        timeit.repeat(
            lambda: server._broadcast(msg, None, None, None, None), number=calls, repeat=7
        )
    )
    print(
        f"broadcast, not traced, no receivers: {public / calls * 1e9:.0f} ns through"
        f" broadcast(), {inner / calls * 1e9:.0f} ns for its body alone"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.reps, args.n))
