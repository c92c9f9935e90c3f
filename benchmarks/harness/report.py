"""Medians over repetitions and the markdown tables, with ratios against each scenario's
baseline (raw aiohttp; the controller without dependencies; the in-process server), the
paired costs (dependency injection; a broker's extra server CPU), and the working tree
against a baseline revision of wsmvc (before/after)."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .cases import (
    EXCHANGE_SCENARIOS,
    IN_PROCESS,
    NO_DEPS,
    RAW,
    SCENARIO_SERVERS,
    SOCKETIO,
    WITH_DEPS,
    WITH_YIELD,
    WSMVC,
    Case,
    ServerSpec,
)

Metrics = dict[str, float | None]
Row = tuple[Case, ServerSpec, Metrics]
Results = list[tuple[Case, ServerSpec, list[Metrics]]]

# What a scenario's throughput and latency columns are called.
TITLES = {
    "echo": ("echo-ask", "C", "round trips/s", "ask→reply"),
    "broadcast": ("broadcast", "N", "deliveries/s", "send→last receiver"),
    "connect": ("connect", "conns", "connections/s", "set-up"),
    "di-connect": ("di-connect", "C", "namespace connects/s", "connect+disconnect"),
    "exchange-broadcast": ("exchange-broadcast", "N", "deliveries/s", "send→last receiver"),
    "exchange-join": ("exchange-join", "C", "join+leave/s", "join+leave"),
    "exchange-connect": ("exchange-connect", "C", "connections/s", "set-up"),
}
# How the ratio columns name the baseline, the first setup of the scenario.
BASE_NAMES = {RAW: "raw", NO_DEPS: "no deps", IN_PROCESS: "in-process"}
# The targets for dependency injection.
DI_TARGET_US = 20.0  # DI cost per namespace connect, below
DI_TARGET_RATE = 0.85  # namespace connects/s with dependencies ÷ without, at least
TEARDOWN_TARGET_US = 5.0  # issue 11: a yield provider's teardown per namespace connect, below
# Before/after: the metrics compared (and whether higher is better), and the bound.
COMPARED = (
    ("rate", True),
    ("p50_ms", False),
    ("p99_ms", False),
    ("server_us_per_op", False),
    ("kib_per_conn", False),
)
TOLERANCE = 0.05  # no scenario more than 5 % worse than the baseline revision


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


def scenario_table(
    scenario: str,
    rows: list[Row],
    di_cost: dict[tuple[str, str], DiCost] | None = None,
    extra: dict[tuple[str, str], float] | None = None,
) -> str:
    """One row per case and server, ratios against the baseline setup of the same case.

    ``di_cost``: for di-connect, the paired DI cost per case and setup with dependencies
    (:func:`paired_di_cost`). ``extra``: the exchange scenarios' paired extra server µs per
    operation over the in-process server, per case and setup (:func:`paired_extra`).
    """
    title, param, rate_name, latency_name = TITLES[scenario]
    op = rows[0][0].op
    baseline = SCENARIO_SERVERS[scenario][0]
    vs = f"vs {BASE_NAMES.get(baseline, baseline.name)}"
    memory = scenario == "connect"
    exchange = scenario in EXCHANGE_SCENARIOS
    converge = any("converge_p50_ms" in m for _, _, m in rows)
    header = [param, "server", rate_name, vs, f"{latency_name} p50 ms"]
    header += [vs] if exchange else []
    header += ["p99 ms", f"server µs/{op}", vs]
    header += ["KiB/idle conn", vs] if memory else []
    header += [f"DI µs/{op}"] if di_cost is not None else []
    header += [f"extra µs/{op}", f"broker µs/{op}"] if exchange else []
    header += ["join→presence p50 ms", "p99 ms"] if converge else []
    header += ["server CPU", "loadgen CPU"]
    base = {case.key: m for case, server, m in rows if server is baseline}
    lines = []
    for case, server, m in rows:
        b = base.get(case.key, {})
        cells = [
            case.label,
            server.name,
            num(m["rate"], 0),
            ratio(m["rate"], b.get("rate")),
            num(m["p50_ms"], 3),
        ]
        if exchange:
            cells += [ratio(m["p50_ms"], b.get("p50_ms"))]
        cells += [
            num(m["p99_ms"], 3),
            num(m["server_us_per_op"]),
            ratio(m["server_us_per_op"], b.get("server_us_per_op")),
        ]
        if memory:
            cells += [num(m["kib_per_conn"]), ratio(m["kib_per_conn"], b.get("kib_per_conn"))]
        if di_cost is not None:
            cost = di_cost.get((case.key, server.name))
            cells += [f"{cost.us:+.1f}" if cost is not None else "-"]
        if exchange:
            more = (extra or {}).get((case.key, server.name))
            cells += ["-" if more is None else f"{more:+.1f}"]
            cells += [num(m.get("broker_us_per_op"), 2)]
        if converge:
            cells += [num(m.get("converge_p50_ms"), 3), num(m.get("converge_p99_ms"), 3)]
        cells += [f"{num(m['server_cpu_pct'], 0)}%", f"{num(m['loadgen_cpu_pct'], 0)}%"]
        if m.get("errors"):
            cells[1] += f" ({m['errors']:.0f} errors)"
        lines.append(cells)
    return f"### {title}\n\n" + table(header, lines)


@dataclass(frozen=True)
class DiCost:
    """di-connect, medians over the repetitions of each one's two setups side by side."""

    us: float  # server µs per namespace connect, with dependencies - without
    rate: float  # namespace connects/s, with ÷ without, as measured
    cpu_rate: float  # server µs without ÷ with: the connects/s ratio of a saturated server


def revision_suffix(name: str) -> str:
    """``"@<rev>"`` for a setup run on a baseline revision's copy of wsmvc, else ``""``."""
    return name[name.index("@") :] if "@" in name else ""


def paired_di_cost(results: Results) -> dict[tuple[str, str], DiCost]:
    """Per di-connect case and setup with dependencies, the DI cost from each repetition's
    pair of measurements: the setup against the one without dependencies on the same copy of
    wsmvc (``wsmvc-di@<rev>`` against ``wsmvc-nodeps@<rev>``)."""
    runs: dict[tuple[str, str], list[Metrics]] = {
        (case.key, spec.name): ms for case, spec, ms in results if case.scenario == "di-connect"
    }
    out: dict[tuple[str, str], DiCost] = {}
    for (key, name), deps in runs.items():
        plain = runs.get((key, NO_DEPS.name + revision_suffix(name)))
        if name == NO_DEPS.name + revision_suffix(name) or not plain or not deps:
            continue
        costs: list[float] = []
        rates: list[float] = []
        cpu_rates: list[float] = []
        for a, b in zip(plain, deps, strict=True):
            ua, ub, ra, rb = a["server_us_per_op"], b["server_us_per_op"], a["rate"], b["rate"]
            if ua is not None and ub:
                costs.append(ub - ua)
                cpu_rates.append(ua / ub)
            if ra and rb is not None:
                rates.append(rb / ra)
        if costs and rates:
            out[(key, name)] = DiCost(
                statistics.median(costs), statistics.median(rates), statistics.median(cpu_rates)
            )
    return out


def di_repetitions_table(results: Results) -> str:
    """di-connect, each repetition of each case: the server µs per namespace connect of every
    setup of the working tree that ran (they took turns in one run), and each setup against
    the one before it (with dependencies - without; the yield provider - the plain one), as
    a difference and a ratio; a last row per case with the medians of those. Then the yield
    provider's cost against issue 11's target."""
    runs: dict[tuple[str, str], list[Metrics]] = {
        (case.key, spec.name): ms
        for case, spec, ms in results
        if case.scenario == "di-connect" and ms
    }
    cases = list(dict.fromkeys(c for c, _, _ in results if c.scenario == "di-connect"))
    specs = [
        s for s in SCENARIO_SERVERS["di-connect"] if all((c.key, s.name) in runs for c in cases)
    ]
    if not cases or len(specs) < 2:
        return ""
    header = ["case", "rep", *(f"{s.name} µs" for s in specs)]
    for before, after in itertools.pairwise(specs):
        header += [f"{after.name} - {before.name}", "÷"]
    lines: list[list[str]] = []
    teardown: list[str] = []
    for case in cases:
        series = [runs[(case.key, s.name)] for s in specs]
        diffs: list[list[float]] = [[] for _ in specs[1:]]
        ratios: list[list[float]] = [[] for _ in specs[1:]]
        for rep, ms in enumerate(zip(*series, strict=True), start=1):
            us = [m["server_us_per_op"] for m in ms]
            cells = [case.label, str(rep), *(num(u) for u in us)]
            for i, (a, b) in enumerate(itertools.pairwise(us)):
                if a is None or b is None or not a:
                    cells += ["-", "-"]
                    continue
                diffs[i].append(b - a)
                ratios[i].append(b / a)
                cells += [f"{b - a:+.1f}", f"{b / a:.3f}x"]
            lines.append(cells)
        cells = [case.label, "median", *(num(median(ms)["server_us_per_op"]) for ms in series)]
        for d, r in zip(diffs, ratios, strict=True):
            if d:
                cells += [f"{statistics.median(d):+.1f}", f"{statistics.median(r):.3f}x"]
            else:
                cells += ["-", "-"]
        lines.append(cells)
        if WITH_DEPS in specs and WITH_YIELD in specs:
            i = specs.index(WITH_YIELD) - 1
            if specs[i] is WITH_DEPS and diffs[i]:
                cost = statistics.median(diffs[i])
                met = "met" if cost < TEARDOWN_TARGET_US else "missed"
                teardown.append(f"{case.label}: {cost:+.1f} µs, {met}")
    text = "### di-connect, each repetition (server µs per namespace connect)\n\n"
    text += table(header, lines)
    if teardown:
        text += (
            f"\n\nA yield provider in the connection scope ({WITH_YIELD.name} -"
            f" {WITH_DEPS.name}), median of the repetitions' differences (target"
            f" < {TEARDOWN_TARGET_US:g} µs): " + "; ".join(teardown)
        )
    return text


def paired_extra(results: Results) -> dict[tuple[str, str], float]:
    """Per exchange case and broker setup, the server µs per operation over the in-process
    server's: the median over the repetitions of each one's difference (in a repetition the
    setups run one after the other, seconds apart, so a difference sees the same host)."""
    runs: dict[tuple[str, str], list[Metrics]] = {
        (case.key, spec.name): ms for case, spec, ms in results
    }
    out: dict[tuple[str, str], float] = {}
    for case, spec, ms in results:
        base = runs.get((case.key, IN_PROCESS.name))
        if case.scenario not in EXCHANGE_SCENARIOS or spec is IN_PROCESS or not base:
            continue
        diffs = [
            a - b
            for n, o in zip(ms, base, strict=True)
            if (a := n.get("server_us_per_op")) is not None
            and (b := o.get("server_us_per_op")) is not None
        ]
        if diffs:
            out[(case.key, spec.name)] = statistics.median(diffs)
    return out


def di_targets_table(di_cost: dict[tuple[str, str], DiCost]) -> str:
    """The DI cost and the throughput ratios against the issue's targets."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    lines = [
        [
            f"{key} {name}",
            f"{cost.us:+.1f} µs",
            verdict(cost.us < DI_TARGET_US),
            f"{cost.rate:.2f}x",
            verdict(cost.rate >= DI_TARGET_RATE),
            f"{cost.cpu_rate:.2f}x",
            verdict(cost.cpu_rate >= DI_TARGET_RATE),
        ]
        for (key, name), cost in di_cost.items()
    ]
    header = [
        "case and setup",
        f"DI cost per connect (target < {DI_TARGET_US:g} µs)",
        "",
        f"connects/s with ÷ without, measured (target ≥ {DI_TARGET_RATE:.2f}x)",
        "",
        "same, server-bound: µs without ÷ with",
        "",
    ]
    return "### di-connect targets (medians over the repetitions of each one's pair)\n\n" + table(
        header, lines
    )


def versus_table(rows: list[Row]) -> str:
    """wsmvc against python-socketio, case by case."""
    by: dict[tuple[str, str], Metrics] = {(c.key, s.name): m for c, s, m in rows}
    lines = []
    for case in dict.fromkeys(c for c, _, _ in rows):
        w, s = by.get((case.key, WSMVC.name)), by.get((case.key, SOCKETIO.name))
        if w is None or s is None or case.scenario not in ("echo", "broadcast", "connect"):
            continue
        lines.append(
            [
                case.key,
                ratio(w.get("rate"), s.get("rate")),
                ratio(s.get("server_us_per_op"), w.get("server_us_per_op")),
                ratio(s.get("kib_per_conn"), w.get("kib_per_conn")),
            ]
        )
    if not lines:
        return ""
    header = [
        "case",
        "throughput wsmvc ÷ socketio",
        "server CPU/op socketio ÷ wsmvc",
        "memory/conn socketio ÷ wsmvc",
    ]
    return "### wsmvc vs python-socketio (higher = wsmvc better)\n\n" + table(header, lines)


def metric_name(case: Case, key: str) -> str:
    """A metric's name as the scenario tables head its column."""
    _, _, rate_name, latency_name = TITLES[case.scenario]
    names = {
        "rate": rate_name,
        "p50_ms": f"{latency_name} p50 ms",
        "p99_ms": f"{latency_name} p99 ms",
        "server_us_per_op": f"server µs/{case.op}",
        "kib_per_conn": "KiB/idle conn",
    }
    return names[key]


@dataclass(frozen=True)
class Change:
    """One metric of one case: the working tree (``wsmvc``) against the baseline revision."""

    case: Case
    key: str
    higher_is_better: bool
    before: float | None  # the baseline's median over the repetitions
    now: float | None  # the working tree's
    ratio: float | None  # now ÷ before: the median of the repetitions' ratios
    setup: str = ""  # di-connect: which of its setups (both ran on both revisions)
    diff: float | None = None  # now - before: the median of the repetitions' differences

    @property
    def verdict(self) -> str:
        """The verdict: "worse" beyond the bound (a rate below 0.95x, a cost above 1.05x),
        "better" beyond it the other way, "ok" within it."""
        if self.ratio is None:
            return "-"
        # In whole percent, as the table shows the ratio: 0.9499 is "0.95x", and ok.
        percent, bound = round(self.ratio * 100), round(TOLERANCE * 100)
        gain = percent - 100 if self.higher_is_better else 100 - percent
        if gain < -bound:
            return "worse"
        return "better" if gain > bound else "ok"


def paired_ratio(now: Sequence[Metrics], before: Sequence[Metrics], key: str) -> float | None:
    """The median over the repetitions of now ÷ before: each repetition's two runs were one
    after the other, so the ratio of a pair sees the same host."""
    ratios = [
        a / b
        for n, o in zip(now, before, strict=True)
        if (a := n.get(key)) is not None and (b := o.get(key))
    ]
    return statistics.median(ratios) if ratios else None


def paired_diff(now: Sequence[Metrics], before: Sequence[Metrics], key: str) -> float | None:
    """The median over the repetitions of now - before (paired as in :func:`paired_ratio`)."""
    diffs = [
        a - b
        for n, o in zip(now, before, strict=True)
        if (a := n.get(key)) is not None and (b := o.get(key)) is not None
    ]
    return statistics.median(diffs) if diffs else None


def before_after(results: Results, baseline: ServerSpec) -> list[Change]:
    """Every compared metric of every case that ran both ``wsmvc`` and ``baseline`` (for
    di-connect: each of its setups on both revisions)."""
    runs: dict[tuple[str, str], list[Metrics]] = {
        (case.key, spec.name): ms for case, spec, ms in results if ms
    }
    suffix = "@" + baseline.name.split("@", 1)[1]
    out: list[Change] = []
    for case in dict.fromkeys(c for c, _, _ in results):
        pairs = [(WSMVC.name, baseline.name, "")]
        if case.scenario == "di-connect":
            pairs = [(s.name, s.name + suffix, s.name) for s in (NO_DEPS, WITH_DEPS)]
        for now_name, before_name, setup in pairs:
            now, before = runs.get((case.key, now_name)), runs.get((case.key, before_name))
            if not now or not before:
                continue
            now_m, before_m = median(now), median(before)
            out += [
                Change(
                    case,
                    key,
                    higher,
                    before_m[key],
                    now_m[key],
                    paired_ratio(now, before, key),
                    setup,
                    paired_diff(now, before, key),
                )
                for key, higher in COMPARED
                if key in now_m and key in before_m
            ]
    return out


def verdict_line(title: str, changes: list[Change], baseline: ServerSpec) -> str:
    """Whether a scenario stayed within the bound of the baseline on every metric."""
    bound = f"{TOLERANCE:.0%}".replace("%", " %")
    worse = [c for c in changes if c.verdict == "worse"]
    missing = [c for c in changes if c.ratio is None]
    if worse:
        line = f"**{title}: more than {bound} worse** than {baseline.name}: " + ", ".join(
            f"{c.case.label} {metric_name(c.case, c.key)} {c.ratio:.2f}x" for c in worse
        )
    else:
        line = f"**{title}: within {bound}** of {baseline.name} on every metric"
    if missing:
        line += "; not measured: " + ", ".join(
            f"{c.case.label} {metric_name(c.case, c.key)}" for c in missing
        )
    return line


def before_after_tables(changes: list[Change], baseline: ServerSpec) -> str:
    """Per scenario, the working tree against the baseline, and a verdict line."""
    parts = []
    for scenario in TITLES:
        mine = [c for c in changes if c.case.scenario == scenario]
        if not mine:
            continue
        title, param, _, _ = TITLES[scenario]
        now_name = "now" if scenario == "di-connect" else WSMVC.name
        header = [param, "metric", "better", baseline.name, now_name, "now ÷ before"]
        header += ["now - before", ""]
        lines = [
            [
                f"{c.case.label} {c.setup}".strip(),
                metric_name(c.case, c.key),
                "higher" if c.higher_is_better else "lower",
                num(c.before, 3 if c.key.endswith("_ms") else 1),
                num(c.now, 3 if c.key.endswith("_ms") else 1),
                "-" if c.ratio is None else f"{c.ratio:.2f}x",
                "-" if c.diff is None else f"{c.diff:+.{3 if c.key.endswith('_ms') else 1}f}",
                c.verdict,
            ]
            for c in mine
        ]
        parts.append(
            f"### {title}: {now_name} vs {baseline.name} (before)\n\n"
            + table(header, lines)
            + "\n\n"
            + verdict_line(title, mine, baseline)
        )
    return "\n\n".join(parts)


def report(results: Results, baseline: ServerSpec | None = None) -> tuple[str, list[Row]]:
    """The markdown report and the median rows it was made from; with ``baseline`` (another
    revision of wsmvc), the before/after tables too."""
    rows: list[Row] = [(case, server, median(runs)) for case, server, runs in results if runs]
    di_cost = paired_di_cost(results)
    extra = paired_extra(results)
    parts = []
    for scenario in TITLES:
        mine = [r for r in rows if r[0].scenario == scenario]
        if not mine:
            continue
        di = di_cost if scenario == "di-connect" else None
        parts.append(scenario_table(scenario, mine, di, extra))
        if scenario == "di-connect" and di_cost:
            parts.append(di_targets_table(di_cost))
        if scenario == "di-connect":
            parts.append(di_repetitions_table(results))
    parts.append(versus_table(rows))
    if baseline is not None:
        parts.append(before_after_tables(before_after(results, baseline), baseline))
    return "\n\n".join(p for p in parts if p) + "\n", rows


def as_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [{"case": c.key, "server": s.name, **m} for c, s, m in rows]


def changes_json(changes: list[Change]) -> list[dict[str, Any]]:
    return [
        {
            "case": c.case.key,
            "setup": c.setup or WSMVC.name,
            "metric": c.key,
            "higher_is_better": c.higher_is_better,
            "before": c.before,
            "now": c.now,
            "ratio": c.ratio,
            "diff": c.diff,
            "verdict": c.verdict,
        }
        for c in changes
    ]
