"""Medians over repetitions and the markdown tables, with ratios against raw aiohttp."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .cases import RAW, SOCKETIO, WSMVC, Case, ServerSpec

Metrics = dict[str, float | None]
Row = tuple[Case, ServerSpec, Metrics]

# What a scenario's throughput and latency columns are called.
TITLES = {
    "echo": ("echo-ask", "C", "round trips/s", "ask→reply"),
    "broadcast": ("broadcast", "N", "deliveries/s", "send→last receiver"),
    "connect": ("connect", "conns", "connections/s", "set-up"),
}


def median(runs: Sequence[Metrics]) -> Metrics:
    """The median of every metric over the repetitions of one case on one server."""
    keys = runs[0].keys()
    out: Metrics = {}
    for key in keys:
        values = [v for run in runs if (v := run.get(key)) is not None]
        out[key] = statistics.median(values) if values else None
    return out


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def scenario_table(scenario: str, rows: list[Row]) -> str:
    """One row per case and server, ratios against raw aiohttp of the same case."""
    title, param, rate_name, latency_name = TITLES[scenario]
    op = rows[0][0].op
    memory = scenario == "connect"
    header = [
        param,
        "server",
        rate_name,
        "vs raw",
        f"{latency_name} p50 ms",
        "p99 ms",
        f"server µs/{op}",
        "vs raw",
    ]
    header += ["KiB/idle conn", "vs raw"] if memory else []
    header += ["server CPU", "loadgen CPU"]
    base = {case.key: m for case, server, m in rows if server is RAW}
    lines = []
    for case, server, m in rows:
        b = base.get(case.key, {})
        cells = [
            case.label,
            server.name,
            num(m["rate"], 0),
            ratio(m["rate"], b.get("rate")),
            num(m["p50_ms"], 3),
            num(m["p99_ms"], 3),
            num(m["server_us_per_op"]),
            ratio(m["server_us_per_op"], b.get("server_us_per_op")),
        ]
        if memory:
            cells += [num(m["kib_per_conn"]), ratio(m["kib_per_conn"], b.get("kib_per_conn"))]
        cells += [f"{num(m['server_cpu_pct'], 0)}%", f"{num(m['loadgen_cpu_pct'], 0)}%"]
        if m.get("errors"):
            cells[1] += f" ({m['errors']:.0f} errors)"
        lines.append(cells)
    return f"### {title}\n\n" + table(header, lines)


def versus_table(rows: list[Row]) -> str:
    """wsmvc against python-socketio, case by case."""
    by: dict[tuple[str, str], Metrics] = {(c.key, s.name): m for c, s, m in rows}
    lines = []
    for case in dict.fromkeys(c for c, _, _ in rows):
        w, s = by.get((case.key, WSMVC.name)), by.get((case.key, SOCKETIO.name))
        if w is None or s is None:
            continue
        lines.append(
            [
                case.key,
                ratio(w.get("rate"), s.get("rate")),
                ratio(s.get("server_us_per_op"), w.get("server_us_per_op")),
                ratio(s.get("kib_per_conn"), w.get("kib_per_conn")),
            ]
        )
    header = [
        "case",
        "throughput wsmvc ÷ socketio",
        "server CPU/op socketio ÷ wsmvc",
        "memory/conn socketio ÷ wsmvc",
    ]
    return "### wsmvc vs python-socketio (higher = wsmvc better)\n\n" + table(header, lines)


def report(results: list[tuple[Case, ServerSpec, list[Metrics]]]) -> tuple[str, list[Row]]:
    """The markdown report and the median rows it was made from."""
    rows: list[Row] = [(case, server, median(runs)) for case, server, runs in results if runs]
    parts = []
    for scenario in TITLES:
        mine = [r for r in rows if r[0].scenario == scenario]
        if mine:
            parts.append(scenario_table(scenario, mine))
    parts.append(versus_table(rows))
    return "\n\n".join(parts) + "\n", rows


def as_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [{"case": c.key, "server": s.name, **m} for c, s, m in rows]
