"""Fixtures of the examples' tests: each example runs as a child process on a free port.

``example("auth", "--secret", "s")`` starts ``examples/auth/app.py`` on 127.0.0.1, waits
for its ready line and gives an :class:`Example`; at the end of the test it is stopped with
SIGTERM and must exit with status 0 having logged no error. The Node.js checks use the
neffos.js and ws packages installed for the interop suite (``tests/interop/node_modules``)
and are skipped, with the setup hint, when Node or those packages are missing.

Nothing sleeps: every wait is a read of a child's output (or its exit) with a deadline.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.interop_support import (
    NEFFOS_JS_VERSION,
    NODE_MODULES,
    REPO_ROOT,
    SETUP_HINT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    LineReader,
    NodeScenario,
    PortTaken,
    Steps,
    free_port,
    parse_steps,
    problem_lines,
)

EXAMPLES = REPO_ROOT / "examples"
JS_DIR = Path(__file__).resolve().parent / "js"
READY = re.compile(r" ready on (ws://(\S+?)(/\S*))$")
NODE_TIMEOUT = 45.0


class Example:
    """``examples/<name>/app.py`` as a child process: stdout read line by line, the log
    (stderr) in a file."""

    def __init__(self, name: str, args: tuple[str, ...], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self.url = ""  # the websocket URL of the ready line
        self.http = ""  # http://host:port
        self.ready_line = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: LineReader | None = None

    @property
    def app(self) -> Path:
        return EXAMPLES / self.name / "app.py"

    def start(self) -> None:
        failure = ""
        for _ in range(3):
            try:
                self._start_on(free_port())
                return
            except PortTaken as exc:
                failure = str(exc)
        raise RuntimeError(f"{self.name} did not start on a free port: {failure}")

    def _start_on(self, port: int) -> None:
        argv = [sys.executable, "-u", str(self.app), "--host", "127.0.0.1", "--port", str(port)]
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*argv, *self.args],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert proc.stdout is not None
        reader = LineReader(proc.stdout)
        try:
            line = reader.readline(START_TIMEOUT)
        except TimeoutError:
            _kill(proc)
            raise RuntimeError(
                f"{self.name} printed no ready line within {START_TIMEOUT}s; log:\n{self.log()}"
            ) from None
        if line is None:
            proc.wait(STOP_TIMEOUT)
            if "address already in use" in self.log().lower():
                raise PortTaken(f"port {port} is taken")
            raise RuntimeError(
                f"{self.name} exited with status {proc.returncode} before it was ready;"
                f" log:\n{self.log()}"
            )
        match = READY.search(line)
        if match is None:
            _kill(proc)
            raise AssertionError(f"{self.name}: unexpected first line {line!r}")
        self._proc = proc
        self._reader = reader
        self.ready_line = line
        self.url = match.group(1)
        self.http = "http://" + match.group(2)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> str:
        """Send ``sig``, wait for the exit, check status 0 and a log without errors; returns
        what the example printed on stdout after its ready line."""
        proc = self._proc
        assert proc is not None, "not running"
        self._proc = None
        proc.send_signal(sig)
        try:
            status = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise AssertionError(
                f"{self.name} did not exit within {STOP_TIMEOUT}s of {sig.name}; log:\n{self.log()}"
            ) from None
        rest: list[str] = []
        assert self._reader is not None
        while (line := self._reader.readline(STOP_TIMEOUT)) is not None:
            rest.append(line)
        assert proc.stdout is not None
        proc.stdout.close()
        log = self.log()
        assert status == 0, f"{self.name} exited with status {status} on {sig.name}; log:\n{log}"
        problems = problem_lines(log)
        assert not problems, f"{self.name} logged errors:\n" + "\n".join(problems)
        return "\n".join(rest)

    def kill(self) -> None:
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_command(self, *args: str) -> str:
        """Run the app once with ``args`` (not as a server); returns its stdout."""
        done = subprocess.run(
            [sys.executable, str(self.app), *args],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=True,
        )
        return done.stdout


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(STOP_TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()


StartExample = Callable[..., Example]


@pytest.fixture
def example(tmp_path: Path) -> Iterator[StartExample]:
    """``example(name, *args)`` starts ``examples/<name>/app.py``; stopped (and checked)
    with SIGTERM at the end of the test unless the test stopped it itself."""
    started: list[Example] = []

    def start(name: str, *args: str) -> Example:
        app = Example(name, args, tmp_path)
        app.start()
        started.append(app)
        return app

    yield start
    failures: list[str] = []
    for app in started:
        if app.running:
            try:
                app.stop()
            except AssertionError as exc:
                failures.append(str(exc))
    assert not failures, "\n".join(failures)


# -- Node.js ------------------------------------------------------------------------------


class Node:
    """Runs the scripts of ``tests/examples/js`` with the interop suite's node_modules."""

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def _argv(self, script: str, args: tuple[str, ...]) -> list[str]:
        return [self.executable, str(JS_DIR / script), *args]

    def run(self, script: str, *args: str) -> Steps:
        """Run ``script`` to its end; returns its steps (failing on a non-zero exit)."""
        try:
            done = subprocess.run(
                self._argv(script, args),
                cwd=JS_DIR,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=NODE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"node {script} {' '.join(args)} did not finish within {NODE_TIMEOUT}s\n"
                f"stdout:\n{exc.stdout!r}\nstderr:\n{exc.stderr!r}"
            ) from None
        if done.returncode != 0:
            raise AssertionError(
                f"node {script} {' '.join(args)} failed with status {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        steps = parse_steps(done.stdout.splitlines())
        assert "end" in steps, f"node {script} did not report its end:\n{done.stdout}"
        return steps

    def start(self, script: str, *args: str) -> NodeScenario:
        """Start ``script``; the test follows its steps with ``until`` and ``finish``."""
        return NodeScenario(
            subprocess.Popen(
                self._argv(script, args),
                cwd=JS_DIR,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
            script,
        )


@pytest.fixture(scope="session")
def node() -> Node:
    """Node.js with neffos.js and ws; skips the test when they are missing."""
    executable = shutil.which("node")
    if executable is None:
        pytest.skip(f"needs Node.js (`node` is not on PATH); then {SETUP_HINT}")
    package = NODE_MODULES / "neffos.js" / "package.json"
    if not package.exists() or not (NODE_MODULES / "ws").is_dir():
        pytest.skip(f"needs tests/interop/node_modules: {SETUP_HINT}")
    version: Any = json.loads(package.read_text())["version"]
    if version != NEFFOS_JS_VERSION:
        pytest.fail(f"tests/interop/node_modules has neffos.js {version}: {SETUP_HINT}")
    return Node(executable)
