"""What is measured: the servers, the scenario cases, and the metrics of one run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .procfs import Sample

SERVERS_DIR = Path(__file__).resolve().parent.parent / "servers"
DI_CONNS = 64  # di-connect: websockets connecting and disconnecting a namespace in parallel
DI_SLICE_S = 0.5  # di-connect: how long one server is loaded before the other takes its turn
DI_SETTLE_MS = 100  # di-connect closing: rest before each mark, for the servers' teardowns
EXCHANGE_CONNS = 64  # exchange-join and exchange-connect: clients in closed loops
CONVERGE_SAMPLES = 200  # exchange-join: joins timed until the other server's presence has them
SCENARIOS = (
    "echo",
    "broadcast",
    "connect",
    "di-connect",
    "exchange-broadcast",
    "exchange-join",
    "exchange-connect",
)
# The scenarios comparing one server without exchange to two sharing a broker.
EXCHANGE_SCENARIOS = ("exchange-broadcast", "exchange-join", "exchange-connect")
# Where a baseline revision can run: next to wsmvc, or (di-connect) each setup on both copies.
BASELINE_SCENARIOS = ("echo", "broadcast", "connect", "di-connect")


@dataclass(frozen=True)
class ServerSpec:
    """One setup under test: a server script (run ``processes`` times) and maybe a broker."""

    name: str
    script: str
    proto: str  # what the load generator speaks to it: "neffos" or "socketio"
    args: tuple[str, ...] = ()  # extra command line of the script
    processes: int = 1  # server processes; the load generator spreads its clients over them
    broker: str | None = None  # "redis" or "nats": started per run, URL given as --broker
    pythonpath: Path | None = None  # first on the servers' PYTHONPATH: another copy of wsmvc
    query: str = ""  # the websocket URL's query (what the clients ask for)
    on_baselines: bool = True  # --baseline runs it on the baseline's copy too (di-connect)

    @property
    def path(self) -> Path:
        return SERVERS_DIR / self.script

    def url(self, port: int) -> str:
        if self.proto == "socketio":
            return f"http://127.0.0.1:{port}"
        return f"ws://127.0.0.1:{port}/ws" + (f"?{self.query}" if self.query else "")


RAW = ServerSpec("raw-aiohttp", "raw_aiohttp_server.py", "neffos")
RAW_DEFLATE = ServerSpec("raw-aiohttp-deflate", "raw_aiohttp_server.py", "neffos", ("--compress",))
WSMVC = ServerSpec("wsmvc", "wsmvc_server.py", "neffos")
# The same server with connection state recovery on, and clients that ask for it: the cost
# of numbering and keeping every message (docs/recovery.md).
WSMVC_RECOVERY = ServerSpec(
    "wsmvc-recovery", "wsmvc_server.py", "neffos", ("--recovery",), query="wsmvc-recovery=1"
)
# The same server with Prometheus metrics (wsmvc.metrics): a tap on every message.
WSMVC_METRICS = ServerSpec("wsmvc-metrics", "wsmvc_server.py", "neffos", ("--metrics",))
SOCKETIO = ServerSpec("python-socketio", "socketio_server.py", "socketio")
# di-connect: the same controller without and with dependencies, and with the
# connection-scoped one from a provider that yields it (closed when the connection ends:
# not on a copy of wsmvc from before issue 11, which would inject the generator itself).
NO_DEPS = ServerSpec("wsmvc-nodeps", "wsmvc_di_server.py", "neffos")
WITH_DEPS = ServerSpec("wsmvc-di", "wsmvc_di_server.py", "neffos", ("--deps",))
WITH_YIELD = ServerSpec(
    "wsmvc-di-yield", "wsmvc_di_server.py", "neffos", ("--deps", "--yield"), on_baselines=False
)
# exchange-*: one server, or two sharing a broker.
IN_PROCESS = ServerSpec("wsmvc-inprocess", "wsmvc_exchange_server.py", "neffos")
REDIS = ServerSpec(
    "wsmvc-redis", "wsmvc_exchange_server.py", "neffos", ("--exchange", "redis"), 2, "redis"
)
NATS = ServerSpec(
    "wsmvc-nats", "wsmvc_exchange_server.py", "neffos", ("--exchange", "nats"), 2, "nats"
)

# The setups each scenario compares; the first one is the baseline of its ratios.
SCENARIO_SERVERS: dict[str, tuple[ServerSpec, ...]] = {
    "echo": (RAW, WSMVC, WSMVC_RECOVERY, WSMVC_METRICS, SOCKETIO),
    "broadcast": (RAW, WSMVC, WSMVC_RECOVERY, WSMVC_METRICS, SOCKETIO),
    "connect": (RAW, WSMVC, SOCKETIO),
    "di-connect": (NO_DEPS, WITH_DEPS, WITH_YIELD),
    "exchange-broadcast": (IN_PROCESS, REDIS, NATS),
    "exchange-join": (IN_PROCESS, REDIS, NATS),
    "exchange-connect": (IN_PROCESS, REDIS, NATS),
}
SERVERS = tuple(
    dict.fromkeys([*(s for specs in SCENARIO_SERVERS.values() for s in specs), RAW_DEFLATE])
)


def baseline_spec(label: str, export: Path) -> ServerSpec:
    """The ``wsmvc`` setup's server on another copy of wsmvc: ``export/wsmvc`` (a revision
    exported with ``git archive``), named ``wsmvc@<label>``."""
    return replace(WSMVC, name=f"wsmvc@{label}", pythonpath=export)


def on_baseline(spec: ServerSpec, baseline: ServerSpec) -> ServerSpec:
    """``spec``'s server on ``baseline``'s copy of wsmvc, named ``<name>@<label>``."""
    label = baseline.name.split("@", 1)[1]
    return replace(spec, name=f"{spec.name}@{label}", pythonpath=baseline.pythonpath)


def scenario_servers(
    scenario: str, baseline: ServerSpec | None = None, deflate: bool = False
) -> tuple[ServerSpec, ...]:
    """The setups of ``scenario``; ``baseline`` right after ``wsmvc`` where it applies, so the
    two take their turns one after the other in every repetition (di-connect, which has no
    ``wsmvc`` setup: each of its setups that can, on the baseline's copy too, all taking
    turns in one run). ``deflate`` (the load generator offers permessage-deflate): raw aiohttp with
    compression too, right after raw."""
    specs = SCENARIO_SERVERS[scenario]
    if deflate and RAW in specs:
        after = specs.index(RAW) + 1
        specs = (*specs[:after], RAW_DEFLATE, *specs[after:])
    if baseline is None or scenario not in BASELINE_SCENARIOS:
        return specs
    if WSMVC not in specs:
        return (*specs, *(on_baseline(spec, baseline) for spec in specs if spec.on_baselines))
    after = specs.index(WSMVC) + 1
    return (*specs[:after], baseline, *specs[after:])


@dataclass(frozen=True)
class Case:
    scenario: str
    label: str  # the parameter, as shown in the tables: "C=16", "N=1000", "2000"
    op: str  # what one operation is: "round trip", "delivery", "connection", ...
    config: dict[str, Any] = field(hash=False)
    timeout_s: float = 120.0
    # The setups run side by side in one load generator run, taking turns in short slices
    # (instead of one run each): for differences smaller than the host's drift between runs.
    together: bool = False

    @property
    def key(self) -> str:
        return f"{self.scenario} {self.label}"


def make_cases(
    scenarios: list[str],
    quick: bool,
    warmup: float,
    duration: float,
    deflate: tuple[bool, ...] = (False,),
    loops: tuple[str, ...] = ("asyncio",),
) -> list[Case]:
    """The cases of the chosen scenarios; ``quick`` shrinks them to a smoke test.
    ``deflate``: echo, broadcast and connect without and/or with permessage-deflate offered
    by the load generator (label suffix `` deflate``). ``loops``: those three on the default
    asyncio loop and/or uvloop (every server started with ``--loop uvloop``, suffix
    `` uvloop``)."""
    timing = {"warmup": warmup, "duration": duration}
    timeout = 60 + 2 * (warmup + duration)
    cases: list[Case] = []
    for loop, z in ((loop, z) for loop in loops for z in deflate):
        suffix = (" deflate" if z else "") + (" uvloop" if loop == "uvloop" else "")
        extra: dict[str, Any] = {"deflate": True} if z else {}
        if loop == "uvloop":
            extra["loop"] = "uvloop"
        if "echo" in scenarios:
            for conns in (1, 16, 256):
                config = {"conns": conns, **timing, **extra}
                cases.append(Case("echo", f"C={conns}{suffix}", "round trip", config, timeout))
        if "broadcast" in scenarios:
            for receivers in (100, 1000):
                config = {"receivers": receivers, **timing, **extra}
                cases.append(
                    Case("broadcast", f"N={receivers}{suffix}", "delivery", config, timeout)
                )
            # Large messages to fewer readers (issue 9): 64 KiB of chat-like JSON to 50.
            config = {"receivers": 50, "bodyBytes": 64 * 1024, **timing, **extra}
            cases.append(Case("broadcast", f"N=50 64KiB{suffix}", "delivery", config, timeout))
        if "connect" in scenarios:
            conns = 500 if quick else 2000
            config = {"conns": conns, "warmConns": 20, "settleMs": 1000, **extra}
            cases.append(Case("connect", f"{conns}{suffix}", "connection", config, 180.0))
    if "di-connect" in scenarios:
        slices = max(2, round(duration / DI_SLICE_S))
        config = {"conns": DI_CONNS, "namespace": "di", "slices": slices, **timing}
        # Up to five setups take turns (three, and two on a baseline's copy).
        together_s = 5 * (warmup + duration)
        cases.append(
            Case(
                "di-connect",
                f"C={DI_CONNS}",
                "namespace connect",
                config,
                60 + 2 * together_s,
                together=True,
            )
        )
        # Each websocket connects the namespace once and closes: the connection scope
        # ends (and a yield provider's teardown runs) once per namespace connect.
        settle_s = 5 * slices * DI_SETTLE_MS / 1000
        cases.append(
            Case(
                "di-connect",
                f"C={DI_CONNS} closing",
                "namespace connect",
                {**config, "closeConns": True, "settleMs": DI_SETTLE_MS},
                60 + 2 * (together_s + settle_s),
                together=True,
            )
        )
    if "exchange-broadcast" in scenarios:
        for receivers in (100,) if quick else (100, 1000):
            cases.append(
                Case(
                    "exchange-broadcast",
                    f"N={receivers}",
                    "delivery",
                    {"receivers": receivers, "probe": True, **timing},
                    timeout,
                )
            )
    if "exchange-join" in scenarios:
        samples = 50 if quick else CONVERGE_SAMPLES
        config = {"conns": EXCHANGE_CONNS, "probe": True, "convergeSamples": samples, **timing}
        cases.append(
            Case("exchange-join", f"C={EXCHANGE_CONNS}", "join+leave", config, timeout + 30)
        )
    if "exchange-connect" in scenarios:
        settle = {"settleMs": 500}
        config = {"conns": EXCHANGE_CONNS, "probe": True, **settle, **timing}
        cases.append(
            Case("exchange-connect", f"C={EXCHANGE_CONNS}", "connection", config, timeout + 10)
        )
        if not quick:  # the handshake alone: the id's channel without the namespace's work
            config = {**config, "namespace": None}
            label = f"C={EXCHANGE_CONNS} no namespace"
            cases.append(Case("exchange-connect", label, "connection", config, timeout + 10))
    return cases


def loadgen_config(case: Case, server: ServerSpec, ports: list[int]) -> dict[str, Any]:
    """What the load generator gets: ``url`` is the first server (the broadcast sender's),
    ``urls`` every server process (receivers are spread over them in turn)."""
    urls = [server.url(port) for port in ports]
    return {
        "scenario": case.scenario,
        "proto": server.proto,
        "url": urls[0],
        "urls": urls,
        **case.config,
    }


def metrics(
    case: Case,
    result: dict[str, Any],
    marks: dict[str, tuple[Sample, Sample]],
    broker_marks: dict[str, Sample] | None = None,
) -> dict[str, float | None]:
    """The numbers of one run, from the load generator's result and the marks' samples
    (the server side summed over its processes; the broker's apart, when there is one)."""
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
    if broker_marks:
        broker0, broker1 = broker_marks["start"], broker_marks["stop"]
        out["broker_us_per_op"] = (broker1.cpu_s - broker0.cpu_s) / ops * 1e6 if ops else None
    if "converge_p50_ms" in result:  # exchange-join: measured after the last mark
        out["converge_p50_ms"] = result["converge_p50_ms"]
        out["converge_p99_ms"] = result["converge_p99_ms"]
    if case.scenario == "connect":
        out["kib_per_conn"] = (server1.rss_kib - server0.rss_kib) / ops
        out["rss_before_kib"] = server0.rss_kib
        out["rss_after_kib"] = server1.rss_kib
    return out


def sliced_metrics(
    case: Case,
    result: dict[str, Any],
    marks: dict[str, tuple[Sample, Sample]],
    server_marks: dict[str, list[Sample]],
) -> list[dict[str, float | None]]:
    """The numbers of each setup of a run in which they took turns (``Case.together``).

    Each setup's CPU time, the load generator's and the wall time are summed over the slices
    in which it was the one loaded: ``server_marks[name][t]`` is server ``t`` at mark ``name``.
    """
    out: list[dict[str, float | None]] = []
    for t, target in enumerate(result["targets"]):
        server_cpu = loadgen_cpu = wall = 0.0
        for piece in result["slices"]:
            if piece["target"] != t:
                continue
            before, after = server_marks[piece["from"]][t], server_marks[piece["to"]][t]
            server_cpu += after.cpu_s - before.cpu_s
            wall += after.wall_s - before.wall_s
            loadgen_cpu += marks[piece["to"]][1].cpu_s - marks[piece["from"]][1].cpu_s
        ops = target["ops"]
        out.append(
            {
                "rate": target["rate"],
                "p50_ms": target["p50_ms"],
                "p99_ms": target["p99_ms"],
                "server_us_per_op": server_cpu / ops * 1e6 if ops else None,
                "server_cpu_pct": 100 * server_cpu / wall if wall else None,
                "loadgen_cpu_pct": 100 * loadgen_cpu / wall if wall else None,
                "errors": target["errors"],
                "ops": ops,
            }
        )
    return out
