"""The machinery of the conformance suite (``test_conformance.py`` runs it).

* :data:`SCENARIOS`: ``scenarios.json``, the scenarios written once as data;
* :data:`CLIENTS`: the clients, each a driver run as a child process;
* :func:`expectation`: what a step must observe for one client (its ``differs`` entry, if
  any, else the step's ``expect``);
* :func:`mismatches`: how an observation is compared with an expectation;
* :func:`run_scenario`: runs one driver, does what its ``harness`` lines ask (stop or
  start the server), compares each step's observation as it comes, and at the end the
  run's stray errors (none, unless the scenario's ``stray`` says otherwise for a client).

Nothing sleeps: every wait is a read of the driver's output (or its exit) with a deadline.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from tests.interop.interop_support import AppProcess, LineReader

HERE = Path(__file__).resolve().parent
DRIVERS = HERE / "drivers"
APP = HERE / "app.py"
READY_LINE = re.compile(r"^conformance app ready on (ws://\S+)")
SCENARIOS: dict[str, Any] = json.loads((HERE / "scenarios.json").read_text("utf-8"))
BY_NAME: dict[str, dict[str, Any]] = {s["name"]: s for s in SCENARIOS["scenarios"]}
SCENARIO_TIMEOUT = 60.0  # seconds for one driver run; each of its waits is bounded itself
EXIT_TIMEOUT = 15.0
OK_ANY: dict[str, Any] = {"ok": {"$any": True}}
BUILTIN_FLAG = "--experimental-websocket"  # Node 20's; Node 22 has WebSocket by default


@attrs.frozen
class Client:
    """One client under test: ``name`` (in test ids), its ``family`` (what ``differs``
    and ``xfail`` name, unless they name the client itself), how its driver is started."""

    name: str
    family: str
    script: str  # in drivers/
    node: bool  # a Node driver (else Python)
    env: Mapping[str, str] = attrs.field(factory=dict)
    builtin_websocket: bool = False  # Node's own WebSocket: --experimental-websocket on Node 20

    def argv(self, node: str | None) -> list[str]:
        """The command line of the driver (before its scenario and URL)."""
        if not self.node:
            return [sys.executable, "-u", str(DRIVERS / self.script)]
        assert node is not None
        flags = (builtin_flags(node) or []) if self.builtin_websocket else []
        return [node, *flags, str(DRIVERS / self.script)]


NEFFOS_JS = Client("neffos.js", "neffos.js", "neffos.mjs", node=True)
WSMVC_JS_WS = Client(
    "wsmvc.js-ws", "wsmvc.js", "wsmvcjs.mjs", node=True, env={"CONFORMANCE_WEBSOCKET": "ws"}
)
WSMVC_JS_BUILTIN = Client(
    "wsmvc.js-builtin",
    "wsmvc.js",
    "wsmvcjs.mjs",
    node=True,
    env={"CONFORMANCE_WEBSOCKET": "builtin"},
    builtin_websocket=True,
)
PYTHON = Client("python", "python", "python_driver.py", node=False)
ALL_CLIENTS = (NEFFOS_JS, WSMVC_JS_WS, WSMVC_JS_BUILTIN, PYTHON)
FAMILIES = frozenset(client.family for client in ALL_CLIENTS)


def _has_websocket(node: str, *flags: str) -> bool:
    check = "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
    done = subprocess.run([node, *flags, "-e", check], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@functools.cache
def builtin_flags(node: str) -> list[str] | None:
    """The flags that give ``node`` its own WebSocket; ``None`` if it has none (Node 18)."""
    if _has_websocket(node):
        return []
    if _has_websocket(node, BUILTIN_FLAG):
        return [BUILTIN_FLAG]
    return None


def clients() -> list[Client]:
    """The clients to run: all of them, but wsmvc.js on Node's own WebSocket only on a Node
    that has one (as tests/jsclient: then there is nothing to test, rather than a skip)."""
    node = shutil.which("node")
    if node is not None and builtin_flags(node) is None:
        return [client for client in ALL_CLIENTS if not client.builtin_websocket]
    return list(ALL_CLIENTS)


def for_client(table: Mapping[str, Any], client: Client) -> Any:
    """The entry of ``table`` for ``client``: its own name's, else its family's."""
    return table.get(client.name, table.get(client.family))


def expectation(step: Mapping[str, Any], client: Client) -> tuple[Any, str | None]:
    """What ``step`` must observe with ``client``, and why it differs (``None``: it does not)."""
    differs = for_client(step.get("differs", {}), client)
    if differs is not None:
        return differs["expect"], differs["why"]
    return step.get("expect", OK_ANY), None


def mismatches(expected: Any, observed: Any, path: str = "") -> list[str]:
    """How ``observed`` fails ``expected`` (empty: it matches).

    An object matches when each key of the expected one matches (other keys are not
    looked at); a list when it has as many items, each matching; anything else when it is
    equal, of the same JSON type. ``{"$re": pattern}`` matches a string that the regex
    matches whole; ``{"$any": true}`` matches anything.
    """
    where = path or "the observation"
    if isinstance(expected, dict) and set(expected) == {"$any"}:
        return []
    if isinstance(expected, dict) and set(expected) == {"$re"}:
        if isinstance(observed, str) and re.fullmatch(expected["$re"], observed, re.DOTALL):
            return []
        return [f"{where}: expected a string matching {expected['$re']!r}, got {observed!r}"]
    if isinstance(expected, dict):
        if not isinstance(observed, dict):
            return [f"{where}: expected an object, got {observed!r}"]
        found: list[str] = []
        for key, value in expected.items():
            if key not in observed:
                found.append(f"{path}.{key}: missing (got {observed!r})")
            else:
                found += mismatches(value, observed[key], f"{path}.{key}")
        return found
    if isinstance(expected, list):
        if not isinstance(observed, list) or len(observed) != len(expected):
            return [f"{where}: expected {len(expected)} item(s) {expected!r}, got {observed!r}"]
        found = []
        for i, (want, got) in enumerate(zip(expected, observed, strict=True)):
            found += mismatches(want, got, f"{path}[{i}]")
        return found
    if type(expected) is not type(observed) or expected != observed:
        return [f"{where}: expected {expected!r}, got {observed!r}"]
    return []


def describe(step: Mapping[str, Any]) -> str:
    """A step in one line, for messages."""
    details = {key: value for key, value in step.items() if key not in ("expect", "differs")}
    do = details.pop("do")
    return f"{do} " + ", ".join(f"{key}={value!r}" for key, value in details.items())


class Harness:
    """What a driver's ``harness`` lines ask of the test: stop or start the server."""

    def __init__(self, app: AppProcess) -> None:
        self.app = app

    def perform(self, step: Mapping[str, Any]) -> dict[str, Any]:
        """Do ``step``'s action; the outcome the driver reports as the step's observation:
        ``{"ok": None}``, or ``{"fail": "slow", ...}`` when the server took longer than the
        step's ``within_ms`` to stop (a stop that waits out a timeout)."""
        action = step["action"]
        began = time.monotonic()
        if action == "stop_server":
            self.app.stop()  # checks a clean exit and a log without errors
        elif action == "start_server":
            self.app.start(self.app.port)
        elif action == "restart_server":
            self.app.restart()
        else:
            raise AssertionError(f"unknown harness action {action!r}")
        took = time.monotonic() - began
        bound = step.get("within_ms")
        if bound is not None and took * 1000 > bound:
            text = f"{action} took {took:.2f} s, over its {bound / 1000} s"
            return {"fail": "slow", "text": text}
        return {"ok": None}


class ScenarioFailed(Exception):
    """A client did not behave as the scenario says; the text says where, and shows every
    step observed."""


class Run:
    """One driver's run: its transcript, and the failure (if any) with everything to read."""

    def __init__(self, scenario: Mapping[str, Any], client: Client) -> None:
        self.scenario = scenario
        self.client = client
        self.transcript: list[str] = []

    def fail(self, what: str, stderr: str) -> ScenarioFailed:
        name = f"{self.scenario['name']}-{self.client.name}"
        lines = "\n".join(self.transcript) or "(nothing)"
        return ScenarioFailed(
            f"{name}: {what}\n\nscenario: {self.scenario['proves']}\n\n"
            f"steps observed:\n{lines}\n\ndriver stderr:\n{stderr or '(empty)'}"
        )


def run_scenario(
    scenario: Mapping[str, Any],
    client: Client,
    url: str,
    node: str | None,
    harness: Harness,
    stderr_path: Path,
) -> None:
    """Run ``scenario`` with ``client``'s driver against ``url``, comparing each step's
    observation with its expectation as it comes; raises :class:`ScenarioFailed` at the
    first mismatch (the driver is killed), on a driver that fails, or one that overran."""
    steps = scenario["steps"]
    run = Run(scenario, client)
    env = {**os.environ, **client.env}
    with stderr_path.open("wb") as stderr_file:
        proc = subprocess.Popen(
            [*client.argv(node), scenario["name"], url],
            cwd=HERE,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
        )

    def stderr() -> str:
        return stderr_path.read_text("utf-8", errors="replace")

    assert proc.stdout is not None and proc.stdin is not None
    reader = LineReader(proc.stdout)
    deadline = time.monotonic() + SCENARIO_TIMEOUT
    seen = 0
    try:
        while True:
            try:
                line = reader.readline(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise run.fail(f"the driver overran {SCENARIO_TIMEOUT} s", stderr()) from None
            if line is None:
                proc.wait(EXIT_TIMEOUT)
                raise run.fail(
                    f"the driver ended (status {proc.returncode}) before its end line", stderr()
                )
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("end"):
                check_stray(run, record.get("stray"), stderr)
                break
            index = record["step"]
            step = steps[index]
            if "harness" in record:
                outcome = harness.perform(step)
                proc.stdin.write(json.dumps(outcome).encode() + b"\n")
                proc.stdin.flush()
                continue
            assert index == seen, f"step {index} reported, {seen} expected"
            seen += 1
            observed = record["observed"]
            expected, why = expectation(step, client)
            problems = mismatches(expected, observed)
            mark = "ok" if not problems else "XX"
            note = f"  [differs: {why}]" if why else ""
            run.transcript.append(
                f"{mark} {index:2} {describe(step)}: {json.dumps(observed, ensure_ascii=False)}"
                + note
            )
            if problems:
                what = (
                    f"step {index} ({describe(step)}) observed\n    "
                    f"{json.dumps(observed, ensure_ascii=False)}\nexpected\n    "
                    f"{json.dumps(expected, ensure_ascii=False)}\n" + "\n".join(problems)
                )
                raise run.fail(what, stderr())
        if seen != len(steps):
            raise run.fail(f"the driver reported {seen} of {len(steps)} steps", stderr())
        try:
            status = proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise run.fail(f"the driver did not exit within {EXIT_TIMEOUT} s", stderr()) from None
        if status != 0:
            raise run.fail(f"the driver exited with status {status}", stderr())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(EXIT_TIMEOUT)
        proc.stdout.close()
        proc.stdin.close()


def check_stray(run: Run, stray: Any, stderr: Callable[[], str]) -> None:
    """The errors that reached no caller during the run (a driver's end line) are those the
    scenario expects for this client: none, unless its ``stray`` says otherwise."""
    step = {"expect": [], **run.scenario.get("stray", {})}
    expected, why = expectation(step, run.client)
    problems = mismatches(expected, stray, ".stray")
    mark = "ok" if not problems else "XX"
    note = f"  [differs: {why}]" if why else ""
    run.transcript.append(f"{mark} end stray errors: {json.dumps(stray, ensure_ascii=False)}{note}")
    if problems:
        what = "stray errors (reaching no caller) " + "; ".join(problems)
        raise run.fail(what, stderr())


def conformance_app(log_dir: Path) -> AppProcess:
    """``app.py`` as a child process (not started)."""
    return AppProcess("conformance app", APP, log_dir, ready=READY_LINE)


def differences() -> list[str]:
    """Every place a client differs from a scenario's expectation, or is expected to fail:
    ``scenario / step: client: why`` (what ``python -m tests.conformance.conformance``
    prints)."""
    lines = []
    for scenario in SCENARIOS["scenarios"]:
        name = scenario["name"]
        for key, reason in scenario.get("xfail", {}).items():
            lines.append(f"{name}: {key}: XFAIL {reason}")
        for index, step in enumerate(scenario["steps"]):
            for key, entry in step.get("differs", {}).items():
                lines.append(f"{name} / {index} {describe(step)}: {key}: {entry['why']}")
        for key, entry in scenario.get("stray", {}).get("differs", {}).items():
            lines.append(f"{name} / stray errors: {key}: {entry['why']}")
    return lines


if __name__ == "__main__":
    print("\n".join(differences()))
