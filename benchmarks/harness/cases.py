"""What is measured: the servers, the scenario cases, and the metrics of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procfs import Sample

SERVERS_DIR = Path(__file__).resolve().parent.parent / "servers"
SCENARIOS = ("echo", "broadcast", "connect")


@dataclass(frozen=True)
class ServerSpec:
    name: str
    script: str
    proto: str  # what the load generator speaks to it: "neffos" or "socketio"

    @property
    def path(self) -> Path:
        return SERVERS_DIR / self.script

    def url(self, port: int) -> str:
        if self.proto == "socketio":
            return f"http://127.0.0.1:{port}"
        return f"ws://127.0.0.1:{port}/ws"


RAW = ServerSpec("raw-aiohttp", "raw_aiohttp_server.py", "neffos")
WSMVC = ServerSpec("wsmvc", "wsmvc_server.py", "neffos")
SOCKETIO = ServerSpec("python-socketio", "socketio_server.py", "socketio")
SERVERS = (RAW, WSMVC, SOCKETIO)


@dataclass(frozen=True)
class Case:
    scenario: str
    label: str  # the parameter, as shown in the tables: "C=16", "N=1000", "2000"
    op: str  # what one operation is: "round trip", "delivery", "connection"
    config: dict[str, Any] = field(hash=False)
    timeout_s: float = 120.0

    @property
    def key(self) -> str:
        return f"{self.scenario} {self.label}"


def make_cases(scenarios: list[str], quick: bool, warmup: float, duration: float) -> list[Case]:
    """The cases of the chosen scenarios; ``quick`` shrinks them to a smoke test."""
    timing = {"warmup": warmup, "duration": duration}
    timeout = 60 + 2 * (warmup + duration)
    cases: list[Case] = []
    if "echo" in scenarios:
        for conns in (1, 16, 256):
            cases.append(
                Case("echo", f"C={conns}", "round trip", {"conns": conns, **timing}, timeout)
            )
    if "broadcast" in scenarios:
        for receivers in (100, 1000):
            cases.append(
                Case(
                    "broadcast",
                    f"N={receivers}",
                    "delivery",
                    {"receivers": receivers, **timing},
                    timeout,
                )
            )
    if "connect" in scenarios:
        conns = 500 if quick else 2000
        cases.append(
            Case(
                "connect",
                str(conns),
                "connection",
                {"conns": conns, "warmConns": 20, "settleMs": 1000},
                180.0,
            )
        )
    return cases


def loadgen_config(case: Case, server: ServerSpec, port: int) -> dict[str, Any]:
    return {
        "scenario": case.scenario,
        "proto": server.proto,
        "url": server.url(port),
        **case.config,
    }


def metrics(
    case: Case, result: dict[str, Any], marks: dict[str, tuple[Sample, Sample]]
) -> dict[str, float | None]:
    """The numbers of one run, from the load generator's result and the marks' samples."""
    (server0, loadgen0), (server1, _) = marks["start"], marks["stop"]
    # How busy each side was while the load ran: for connect, the dialling only (not the
    # idle settle time after it, which the CPU per connection does include).
    busy_server, busy_loadgen = marks.get("connected", marks["stop"])
    wall = busy_server.wall_s - server0.wall_s
    ops = result["ops"]
    out: dict[str, float | None] = {
        "rate": result["rate"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "server_us_per_op": (server1.cpu_s - server0.cpu_s) / ops * 1e6 if ops else None,
        "server_cpu_pct": 100 * (busy_server.cpu_s - server0.cpu_s) / wall,
        "loadgen_cpu_pct": 100 * (busy_loadgen.cpu_s - loadgen0.cpu_s) / wall,
        "errors": result["errors"],
        "ops": ops,
    }
    if case.scenario == "connect":
        out["kib_per_conn"] = (server1.rss_kib - server0.rss_kib) / ops
        out["rss_before_kib"] = server0.rss_kib
        out["rss_after_kib"] = server1.rss_kib
    return out
