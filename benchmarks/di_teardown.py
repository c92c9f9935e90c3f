"""Dependency injection per new connection, in-process: no sockets, so no handshake noise.

    python benchmarks/di_teardown.py [--reps 41] [--conns 1000]

What di-connect's ``C=64 closing`` case measures through websockets (a connection per
namespace connect), without the websockets: the three controllers of
``servers/wsmvc_di_server.py`` (``wsmvc-nodeps``, ``wsmvc-di``, ``wsmvc-di-yield``), each
built the way a namespace connect builds it (``Injection.create``) for ``--conns`` fresh
connections, whose connection scopes are then ended the way a closing connection ends
them (``Injection.end``: the yield provider's code after its ``yield`` runs there). The
connections are stand-ins with what the injection reads (``id``, ``store``), so only the
injection is timed. The three setups take turns, ``--reps`` times; each turn is timed with
the process's CPU clock, after a garbage collection. The table gives the medians of µs per
connection (building, ending, both) and each setup against the one before it, the median
of the turns' differences and their quartiles. It uses wsmvc's internals (the server's
``Injection``), as a benchmark of them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "servers"))

import wsmvc_di_server as di

import wsmvc
from wsmvc import Server

SETUPS = ("wsmvc-nodeps", "wsmvc-di", "wsmvc-di-yield")


class StandInConn:
    """What the injection reads of a connection."""

    def __init__(self, n: int) -> None:
        self.id = f"conn-{n}"
        self.store: dict[Any, Any] = {}
        self.request = None


class StandInNs:
    def __init__(self, conn: StandInConn) -> None:
        self.conn = conn
        self.namespace = di.NAMESPACE


async def injection_of(setup: str) -> tuple[Any, Any]:
    """The server's injection and the controller's plan, prepared and started as a
    mounted server's are."""
    if setup == "wsmvc-nodeps":
        server = Server(allowed_origins="*")
        handle = server.register(di.NoDeps)
    else:
        closing = setup == "wsmvc-di-yield"
        session = di.ClosingSessionModule() if closing else di.SessionModule()
        server = Server(modules=[di.SingletonsModule(), session], allowed_origins="*")
        handle = server.register(di.WithDeps)
    injection = server._injection  # what is measured
    injection.prepare(handle.plan)
    await injection.start()
    return injection, handle.plan


async def turn(injection: Any, plan: Any, conns: int) -> tuple[float, float]:
    """µs per connection: building its controller, ending its scope."""
    stand_ins = [StandInConn(n) for n in range(conns)]
    gc.collect()
    t0 = time.process_time()
    for conn in stand_ins:
        injection.create(plan, conn, StandInNs(conn))
    t1 = time.process_time()
    for conn in stand_ins:
        await injection.end(conn)
    t2 = time.process_time()
    return (t1 - t0) / conns * 1e6, (t2 - t1) / conns * 1e6


def parts(runs: list[tuple[float, float]]) -> tuple[list[float], list[float], list[float]]:
    """The turns' building, ending and both, each a list."""
    return [b for b, _ in runs], [e for _, e in runs], [b + e for b, e in runs]


def quartiles(values: list[float]) -> str:
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:+.1f} .. {q3:+.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=41, help="turns of each setup (default 41)")
    parser.add_argument("--conns", type=int, default=1000, help="connections per turn")
    args = parser.parse_args()
    injections = {setup: await injection_of(setup) for setup in SETUPS}
    for setup in SETUPS:  # warm-up
        await turn(*injections[setup], args.conns)
    runs: dict[str, list[tuple[float, float]]] = {setup: [] for setup in SETUPS}
    for rep in range(args.reps):
        order = SETUPS if rep % 2 == 0 else SETUPS[::-1]
        for setup in order:
            runs[setup].append(await turn(*injections[setup], args.conns))
    print(f"wsmvc from {Path(wsmvc.__file__).parent}; {args.reps} turns of {args.conns}\n")
    header = ["setup", "build µs/conn", "end µs/conn", "both"]
    header += ["vs the one before: build", "end", "both", "both, quartiles"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for i, setup in enumerate(SETUPS):
        mine = runs[setup]
        cells = [setup]
        cells += [f"{statistics.median(part):.2f}" for part in parts(mine)]
        if i:
            pairs = list(zip(parts(mine), parts(runs[SETUPS[i - 1]]), strict=True))
            diffs = [[a - b for a, b in zip(now, before, strict=True)] for now, before in pairs]
            cells += [f"{statistics.median(d):+.2f}" for d in diffs]
            cells.append(quartiles(diffs[2]))
        else:
            cells += ["-"] * 4
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    asyncio.run(main())
