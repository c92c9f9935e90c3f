"""Benchmark wsmvc against raw aiohttp and python-socketio, side by side, in one run.

    npm ci --prefix benchmarks/loadgen
    python benchmarks/run.py                 # every scenario, 3 repetitions
    python benchmarks/run.py --quick         # smoke test: short runs, 1 repetition
    python benchmarks/run.py --scenario echo --reps 5 --json out.json
    python benchmarks/run.py --scenario di-connect --scenario exchange-broadcast
    python benchmarks/run.py --scenario exchange-join --scenario exchange-connect --reps 5
    python benchmarks/run.py --baseline ca897bc --server wsmvc --scenario echo --reps 5

Each server runs pinned to CPU 0, the Node load generator to CPU 1. Every run gets a fresh
server process (or two, and a fresh broker, for the exchange scenarios), warmed with one TCP
connect-and-close before anything is measured. The setups of a scenario take turns
(A B C A B C ...) and the tables show the median of the repetitions. See README.md for what
each number means. With ``--baseline REV`` the ``wsmvc`` setup's server also runs on
that revision's wsmvc (exported with ``git archive``), as one more setup taking its turns,
and before/after tables compare the two.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.cases import (
    BASELINE_SCENARIOS,
    EXCHANGE_SCENARIOS,
    SCENARIOS,
    SERVERS,
    WSMVC,
    Case,
    ServerSpec,
    baseline_spec,
    loadgen_config,
    make_cases,
    metrics,
    scenario_servers,
    sliced_metrics,
)
from harness.processes import (
    BenchError,
    BrokerProcess,
    ProcessGroup,
    ServerProcess,
    broker_binary,
    raise_nofile_limit,
    run_loadgen,
    wsmvc_dir,
)
from harness.procfs import Sample
from harness.report import (
    Metrics,
    Results,
    as_json,
    before_after,
    changes_json,
    paired_extra,
    report,
)

REPO = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per case (default 3)")
    parser.add_argument("--quick", action="store_true", help="short runs, 1 repetition")
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all"
    )
    parser.add_argument(
        "--server", action="append", choices=[s.name for s in SERVERS], help="default: all"
    )
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 4)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per run (default 1)")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="both",
        help="echo, broadcast and connect with every server on the default asyncio loop,"
        " on uvloop, or both (default both)",
    )
    parser.add_argument(
        "--deflate",
        choices=("off", "on", "both"),
        default="both",
        help="echo, broadcast and connect with the load generator offering permessage-deflate"
        " (as browsers do), without, or both (default both)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the wsmvc setup on this git revision's wsmvc/, and compare (before/after)",
    )
    args = parser.parse_args()
    if args.baseline and args.server and WSMVC.name not in args.server:
        parser.error(f"--baseline runs next to the {WSMVC.name} setup: add --server {WSMVC.name}")
    if args.baseline and args.scenario and not set(args.scenario) & set(BASELINE_SCENARIOS):
        parser.error(f"--baseline applies to the scenarios {', '.join(BASELINE_SCENARIOS)}")
    if args.quick:
        args.reps = 1
    args.duration = args.duration or (1.0 if args.quick else 4.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    return args


def run_once(case: Case, spec: ServerSpec) -> Metrics:
    """One measured run of ``case`` against fresh ``spec`` server processes (and broker)."""
    with contextlib.ExitStack() as stack:  # closed in reverse: the servers, then the broker
        broker = stack.enter_context(BrokerProcess(spec.broker)) if spec.broker else None
        args = (*spec.args, "--broker", broker.url) if broker is not None else spec.args
        if case.config.get("loop") == "uvloop":
            args = (*args, "--loop", "uvloop")
        servers = [
            stack.enter_context(ServerProcess(spec.path, args, spec.pythonpath))
            for _ in range(spec.processes)
        ]

        def stderr() -> str:
            return "\n".join(s.stderr() for s in servers).strip()

        broker_marks: dict[str, Sample] = {}

        def on_mark(name: str) -> None:
            if broker is not None:
                broker_marks[name] = broker.sample()

        try:
            result, marks = run_loadgen(
                loadgen_config(case, spec, [s.port for s in servers]),
                ProcessGroup(servers),
                case.timeout_s,
                on_mark,
            )
        except BenchError as exc:
            raise BenchError(f"{exc}\n--- server stderr ---\n{stderr()}") from exc
        if any(s.proc.poll() is not None for s in servers):
            raise BenchError(f"server exited during the run:\n{stderr()}")
        if broker is not None and broker.proc.poll() is not None:
            raise BenchError(f"broker exited during the run:\n{broker.output()}")
        noise = stderr()
    if noise:
        print(f"  ! {spec.name} wrote to stderr:\n{noise[-2000:]}", file=sys.stderr)
    return metrics(case, result, marks, broker_marks or None)


def run_together(case: Case, specs: list[ServerSpec]) -> list[Metrics]:
    """One load generator run of ``case`` against fresh servers of every spec, which take
    turns in slices (``Case.together``); the metrics of each spec, in order."""
    if any(spec.processes != 1 or spec.broker for spec in specs):
        raise BenchError(f"{case.key}: setups that take turns must be single processes")
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(ServerProcess(spec.path, spec.args, spec.pythonpath))
            for spec in specs
        ]

        def stderr() -> str:
            return "\n".join(s.stderr() for s in servers).strip()

        server_marks: dict[str, list[Sample]] = {}

        def on_mark(name: str) -> None:
            server_marks[name] = [s.sample() for s in servers]

        try:
            result, marks = run_loadgen(
                loadgen_config(case, specs[0], [s.port for s in servers]),
                ProcessGroup(servers),
                case.timeout_s,
                on_mark,
            )
        except BenchError as exc:
            raise BenchError(f"{exc}\n--- server stderr ---\n{stderr()}") from exc
        if any(s.proc.poll() is not None for s in servers):
            raise BenchError(f"server exited during the run:\n{stderr()}")
        noise = stderr()
    if noise:
        print(f"  ! {case.key} servers wrote to stderr:\n{noise[-2000:]}", file=sys.stderr)
    return sliced_metrics(case, result, marks, server_marks)


def describe(m: Metrics, case: Case) -> str:
    us = m["server_us_per_op"]
    text = f"{m['rate']:,.0f}/s, {us:.1f} µs/{case.op}" if us is not None else "no ops"
    if "kib_per_conn" in m and m["kib_per_conn"] is not None:
        text += f", {m['kib_per_conn']:.1f} KiB/conn"
    if m.get("broker_us_per_op") is not None:
        text += f", broker {m['broker_us_per_op']:.2f} µs/{case.op}"
    if m.get("converge_p50_ms") is not None:
        text += f", join→presence p50 {m['converge_p50_ms']:.3f} ms"
    return (
        text + f", server CPU {m['server_cpu_pct']:.0f}%, loadgen CPU {m['loadgen_cpu_pct']:.0f}%"
    )


def git(*args: str) -> str:
    """A git command's output, run in the benchmarks directory; empty on failure."""
    here = str(Path(__file__).resolve().parent)
    done = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def export_baseline(rev: str, into: Path) -> tuple[ServerSpec, str]:
    """The baseline setup, ``wsmvc@<rev>``: ``rev``'s wsmvc/ exported into ``into`` with
    ``git archive <rev> wsmvc | tar -x -C <into>``; and the full commit id of ``rev``."""
    commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if not commit:
        raise BenchError(f"--baseline {rev}: not a commit of this repository")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "wsmvc"], capture_output=True
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev} wsmvc failed: {archive.stderr.decode().strip()}")
    untar = subprocess.run(
        ["tar", "-x", "-C", str(into)], input=archive.stdout, capture_output=True
    )
    if untar.returncode != 0:
        raise BenchError(f"tar -x of {rev}'s wsmvc failed: {untar.stderr.decode().strip()}")
    return baseline_spec(git("rev-parse", "--short", commit), into), commit


def environment(baseline: ServerSpec | None = None, baseline_commit: str = "") -> dict[str, str]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    commit = git("rev-parse", "--short", "HEAD") or "no git"
    if git("status", "--porcelain", "--", "../wsmvc"):
        commit += " + uncommitted changes"
    # The servers import wsmvc the way this process does (PYTHONPATH may point elsewhere);
    # each server's ready line says where it imported wsmvc from, and the runner checks it.
    where = wsmvc_dir()
    if where != REPO / "wsmvc":
        commit = f"imported from {where}"
    elif baseline is not None:
        commit += f", imported from {where}"
    env = {
        "cpu": f"{cpu} ({os.cpu_count()} CPUs)",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "wsmvc": f"{importlib.metadata.version('wsmvc')} ({commit})",
    }
    if baseline is not None:
        env[baseline.name] = (
            f"{baseline_commit[:12]} (git archive export, imported from "
            f"{wsmvc_dir(baseline.pythonpath)})"
        )
    return env | {
        "python": platform.python_version(),
        "node": node,
        "aiohttp": importlib.metadata.version("aiohttp"),
        "python-socketio": importlib.metadata.version("python-socketio"),
        "injector": importlib.metadata.version("injector"),
    }


def broker_versions(scenarios: list[str]) -> dict[str, str]:
    """The versions of the brokers and their Python clients, when a scenario uses them."""
    if not set(scenarios) & set(EXCHANGE_SCENARIOS):
        return {}
    out: dict[str, str] = {}
    for name in ("redis", "nats-py"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    for kind in ("redis", "nats"):
        try:
            done = subprocess.run(
                [broker_binary(kind), "--version"], capture_output=True, text=True
            )
        except OSError:
            out[f"{kind} server"] = "not found"
            continue
        out[f"{kind} server"] = done.stdout.strip().split(" sha=")[0]
    return out


def run_cases(cases: list[Case], args: argparse.Namespace, baseline: ServerSpec | None) -> Results:
    """Every case, its setups taking turns, ``args.reps`` times; the runs of each setup."""
    results: Results = []
    for case in cases:
        servers = [
            s
            for s in scenario_servers(case.scenario, baseline, bool(case.config.get("deflate")))
            if not args.server or s.name in args.server or s is baseline
        ]
        runs: dict[str, list[Metrics]] = {s.name: [] for s in servers}
        for rep in range(1, args.reps + 1):
            done: Iterable[tuple[ServerSpec, Metrics]]
            if case.together:  # all setups in one run, taking turns in slices
                done = zip(servers, run_together(case, servers), strict=True)
            else:  # interleaved: A B C A B C ... (lazily: each run is printed when done)
                done = ((spec, run_once(case, spec)) for spec in servers)
            for spec, m in done:
                runs[spec.name].append(m)
                print(
                    f"{case.key} {spec.name} rep {rep}/{args.reps}: {describe(m, case)}",
                    file=sys.stderr,
                    flush=True,
                )
        results += [(case, spec, runs[spec.name]) for spec in servers]
    return results


def main() -> int:
    args = parse_args()
    raise_nofile_limit()
    scenarios = args.scenario or list(SCENARIOS)
    deflate = {"off": (False,), "on": (True,), "both": (False, True)}[args.deflate]
    loops = {"asyncio": ("asyncio",), "uvloop": ("uvloop",), "both": ("asyncio", "uvloop")}
    cases = make_cases(scenarios, args.quick, args.warmup, args.duration, deflate, loops[args.loop])
    baseline: ServerSpec | None = None
    commit = ""
    with contextlib.ExitStack() as stack:  # the baseline's export: removed after the runs
        if args.baseline:
            export = stack.enter_context(tempfile.TemporaryDirectory(prefix="wsmvc-baseline-"))
            baseline, commit = export_baseline(args.baseline, Path(export))
        # before the runs: the load average and the wsmvc commit(s) measured
        env = environment(baseline, commit) | broker_versions(scenarios)
        results = run_cases(cases, args, baseline)
    text, rows = report(results, baseline)
    print(
        f"\n## Results ({args.reps} repetitions, medians; warm-up {args.warmup:g} s, "
        f"measured {args.duration:g} s per run)\n"
    )
    print("; ".join(f"{k} {v}" for k, v in env.items()) + "\n")
    print(text)
    if args.json:
        runs_json: list[dict[str, Any]] = [
            {"case": c.key, "server": s.name, "rep": i + 1, **m}
            for c, s, ms in results
            for i, m in enumerate(ms)
        ]
        doc: dict[str, Any] = {
            "environment": env,
            "reps": args.reps,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "medians": as_json(rows),
            "exchange_extra_us_per_op": [
                {"case": key, "server": name, "extra_us": us}
                for (key, name), us in paired_extra(results).items()
            ],
            "runs": runs_json,
        }
        if baseline is not None:
            doc["before_after"] = {
                "baseline": baseline.name,
                "commit": commit,
                "changes": changes_json(before_after(results, baseline)),
            }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
