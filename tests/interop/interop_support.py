"""Helpers of the interop suite, also used by the examples' tests (``tests/examples``): an
example app as a child process (the echo server among them), and the Node.js script runner.

Nothing here sleeps: every wait is a read of a child's output (or its exit) with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

INTEROP_DIR = Path(__file__).resolve().parent
REPO_ROOT = INTEROP_DIR.parents[1]
ECHO_APP = REPO_ROOT / "examples" / "echo.py"
JS_DIR = INTEROP_DIR / "js"
SCENARIO_JS = "scenario.mjs"  # in JS_DIR
NODE_MODULES = INTEROP_DIR / "node_modules"
NEFFOS_JS_VERSION = "0.1.34"
SETUP_HINT = "run `npm ci` in tests/interop, or `tox -e interop`"

READY_LINE = re.compile(r"echo server ready on (ws://\S+)")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
SCENARIO_TIMEOUT = 45.0
LINE_TIMEOUT = 10.0
# Lines of the server's log that mean something went wrong inside the server.
LOG_PROBLEM = re.compile(r"^(ERROR|CRITICAL) |^Traceback ", re.MULTILINE)

Steps = dict[str, dict[str, Any]]


class LineReader:
    """Reads lines from a child's pipe with a deadline (``select`` on the raw descriptor)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self.eof = False

    def readline(self, timeout: float) -> str | None:
        """The next line without its newline; ``None`` at end of file.

        Raises :class:`TimeoutError` when no complete line arrives within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if self.eof:
                if not self._buffer:
                    return None
                rest, self._buffer = self._buffer, b""
                return rest.decode()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within {timeout}s")
            readable, _, _ = select.select([self._fd], [], [], remaining)
            if readable:
                chunk = os.read(self._fd, 65536)
                if chunk:
                    self._buffer += chunk
                else:
                    self.eof = True
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PortTaken(RuntimeError):
    """The app could not bind its port."""


def problem_lines(log_text: str) -> list[str]:
    """The lines of a server log that report an error or a traceback."""
    return [line for line in log_text.splitlines() if LOG_PROBLEM.match(line)]


class AppProcess:
    """A Python app (an example) as a child process on 127.0.0.1, started as
    ``python -u <app> --host 127.0.0.1 --port <port> <args>`` (with ``env`` as its
    environment if given, else this one): its stdout is read line by line, its stderr (its
    log) goes to a file in ``log_dir``, one for each run.

    :meth:`start` waits for the ready line (any line ``ready`` finds, its group 1 being the
    URL; subclasses may be stricter, see :meth:`_is_ready_line`); :meth:`stop` sends a
    signal and checks that the app exits with status 0 and logged no error; :meth:`restart`
    does both on the same port.
    """

    def __init__(
        self,
        name: str,
        app: Path,
        log_dir: Path,
        *,
        ready: re.Pattern[str],
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name  # in messages and in the names of the log files
        self.app = app
        self.args = args
        self.env = env
        self.ready = ready
        self._log_dir = log_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: LineReader | None = None
        self._runs = 0
        self.log_path: Path | None = None
        self.port = 0
        self.url = ""  # from the ready line
        self.ready_line = ""
        self.lines: list[str] = []  # stdout after the ready line, as read so far
        self.returncode: int | None = None  # the exit status of the last run stopped

    # -- lifecycle --------------------------------------------------------------------

    def start(self, port: int | None = None) -> None:
        """Start on ``port``, or on a free random port (a few tries if one is taken)."""
        if port is not None:
            self._start_on(port)
            return
        failure = ""
        for _ in range(3):
            try:
                self._start_on(free_port())
                return
            except PortTaken as exc:
                failure = str(exc)
        raise RuntimeError(f"{self.name} did not start on a free port: {failure}")

    def _start_on(self, port: int) -> None:
        assert self._proc is None, "already running"
        self._runs += 1
        log_name = f"{self.name}-{port}-run{self._runs}.log".replace(" ", "-")
        self.log_path = self._log_dir / log_name
        argv = [sys.executable, "-u", str(self.app), "--host", "127.0.0.1", "--port", str(port)]
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*argv, *self.args],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert proc.stdout is not None
        reader = LineReader(proc.stdout)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    line = reader.readline(max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise RuntimeError(
                        f"{self.name} printed no ready line within {START_TIMEOUT}s; "
                        f"log:\n{self.log()}"
                    ) from None
                if line is None:
                    proc.wait(STOP_TIMEOUT)
                    if "address already in use" in self.log().lower():
                        raise PortTaken(f"port {port} is taken")
                    raise RuntimeError(
                        f"{self.name} exited with status {proc.returncode} before it was ready;"
                        f" log:\n{self.log()}"
                    )
                if self._is_ready_line(line, port):
                    break
        except BaseException:
            _end(proc)
            raise
        self._proc, self._reader = proc, reader
        self.port, self.ready_line, self.lines = port, line, []

    def _is_ready_line(self, line: str, port: int) -> bool:
        """Whether ``line``, printed before the app was ready, is its ready line (then it
        takes the URL from it); raises for a line the app must not print instead."""
        match = self.ready.search(line)
        if match is None:
            return False
        self.url = match.group(1)
        return True

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> str:
        """Send ``sig``, read stdout to its end and wait for the exit; checks status 0 and a
        log without errors. Returns what the app printed after its ready line."""
        proc, reader = self._proc, self._reader
        assert proc is not None and reader is not None, "not running"
        self._proc = self._reader = None
        proc.send_signal(sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        try:
            while (line := reader.readline(max(0.0, deadline - time.monotonic()))) is not None:
                self.lines.append(line)
            status = self.returncode = proc.wait(STOP_TIMEOUT)
        except (TimeoutError, subprocess.TimeoutExpired):
            raise AssertionError(
                f"{self.name} did not exit within {STOP_TIMEOUT}s of {sig.name}; log:\n{self.log()}"
            ) from None
        finally:
            _end(proc)
        log = self.log()
        assert status == 0, f"{self.name} exited with status {status} on {sig.name}; log:\n{log}"
        problems = problem_lines(log)
        assert not problems, f"{self.name} logged errors:\n" + "\n".join(problems)
        return "\n".join(self.lines)

    def restart(self) -> None:
        """Stop (checking a clean exit) and start again on the same port."""
        port = self.port
        self.stop()
        self.start(port)

    def kill(self) -> None:
        """Stop without checks (cleanup after a failure)."""
        if self._proc is not None:
            _end(self._proc)
            self._proc = self._reader = None

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int:
        """The process id of the running app."""
        assert self._proc is not None, "not running"
        return self._proc.pid

    # -- its output -------------------------------------------------------------------

    def wait_for_line(self, expected: str, timeout: float = LINE_TIMEOUT) -> None:
        """Read stdout until the line ``expected`` has been printed (it may already have been)."""
        assert self._reader is not None, "not running"
        deadline = time.monotonic() + timeout
        while expected not in self.lines:
            try:
                line = self._reader.readline(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(
                    f"{self.name} did not print {expected!r} within {timeout}s;"
                    f" stdout so far: {self.lines}\nlog:\n{self.log()}"
                ) from None
            if line is None:
                raise AssertionError(
                    f"{self.name} ended its stdout without printing {expected!r}: {self.lines}"
                )
            self.lines.append(line)

    def log(self, offset: int = 0) -> str:
        """The log of the current (or last) run, from byte ``offset``."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def log_size(self) -> int:
        if self.log_path is None or not self.log_path.exists():
            return 0
        return self.log_path.stat().st_size


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` unless it has exited, reap it and close its stdout."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(STOP_TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()


class EchoServer(AppProcess):
    """``examples/echo.py`` running as a child process on 127.0.0.1."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__("echo server", ECHO_APP, log_dir, ready=READY_LINE)


# -- Node ---------------------------------------------------------------------------------


def parse_steps(lines: list[str]) -> Steps:
    """The JSON lines of a scenario, by step name."""
    steps: Steps = {}
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        step = record.pop("step")
        assert step not in steps, f"step {step!r} reported twice"
        steps[step] = record
    return steps


def require_node(needs: str) -> str:
    """The ``node`` executable, with neffos.js and ws in ``tests/interop/node_modules``.

    Skips the test when they are missing (``needs`` starts the message: who needs them),
    and fails it when neffos.js is not the pinned version.
    """
    executable = shutil.which("node")
    if executable is None:
        pytest.skip(f"{needs} Node.js (`node` is not on PATH); then {SETUP_HINT}")
    package = NODE_MODULES / "neffos.js" / "package.json"
    if not package.exists() or not (NODE_MODULES / "ws").is_dir():
        pytest.skip(f"{needs} tests/interop/node_modules: {SETUP_HINT}")
    version = json.loads(package.read_text())["version"]
    if version != NEFFOS_JS_VERSION:
        pytest.fail(
            f"tests/interop/node_modules has neffos.js {version}, the suite pins "
            f"{NEFFOS_JS_VERSION}: {SETUP_HINT}"
        )
    return executable


class NodeScripts:
    """Runs the Node.js scripts of ``js_dir`` (in that directory) with one ``node``
    executable. A script reports its steps as JSON lines (``{"step": ...}``), ``end`` last."""

    def __init__(self, node: str, js_dir: Path = JS_DIR) -> None:
        self.node = node
        self.js_dir = js_dir

    def _argv(self, script: str, args: tuple[str, ...]) -> list[str]:
        return [self.node, str(self.js_dir / script), *args]

    def run(self, script: str, *args: str, timeout: float = SCENARIO_TIMEOUT) -> Steps:
        """Run ``script`` to its end; returns its steps (failing on a non-zero exit)."""
        what = _describe(script, args)
        try:
            done = subprocess.run(
                self._argv(script, args),
                cwd=self.js_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"node {what} did not finish within {timeout}s\n"
                f"stdout:\n{_text(exc.stdout)}\nstderr:\n{_text(exc.stderr)}"
            ) from None
        if done.returncode != 0:
            raise AssertionError(
                f"node {what} failed with status {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        steps = parse_steps(done.stdout.splitlines())
        assert "end" in steps, f"node {what} did not report its end:\n{done.stdout}"
        return steps

    def start(self, script: str, *args: str) -> NodeScenario:
        """Start ``script``; the test follows its steps with ``until`` and ``finish``."""
        return NodeScenario(
            subprocess.Popen(
                self._argv(script, args),
                cwd=self.js_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
            _describe(script, args),
        )


class NodeRunner:
    """Runs the scenarios of ``js/scenario.mjs``: ``run(scenario, url, *args)``."""

    def __init__(self, node: str) -> None:
        self.scripts = NodeScripts(node)

    def run(self, scenario: str, url: str, *args: str, timeout: float = SCENARIO_TIMEOUT) -> Steps:
        """Run a scenario to its end; returns its steps (failing on a non-zero exit)."""
        return self.scripts.run(SCENARIO_JS, scenario, url, *args, timeout=timeout)

    def start(self, scenario: str, url: str, *args: str) -> NodeScenario:
        """Start a scenario whose progress the test follows step by step."""
        return self.scripts.start(SCENARIO_JS, scenario, url, *args)


class NodeScenario:
    """A running scenario: read its steps as they come, then wait for its exit."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str) -> None:
        assert proc.stdout is not None
        self._proc = proc
        self._name = name
        self._reader = LineReader(proc.stdout)
        self._lines: list[str] = []

    def until(self, step: str, timeout: float = SCENARIO_TIMEOUT) -> Steps:
        """Read lines until ``step`` is reported; returns every step so far."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._reader.readline(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self._fail(f"did not report step {step!r} within {timeout}s")
            if line is None:
                self._fail(f"ended before reporting step {step!r}")
            self._lines.append(line)
            if line.strip() and json.loads(line).get("step") == step:
                return parse_steps(self._lines)

    def finish(self, timeout: float = SCENARIO_TIMEOUT) -> Steps:
        """Read to the end, wait for a zero exit status; returns every step."""
        steps = self.until("end", timeout)
        try:
            status = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._fail(f"did not exit within {timeout}s after its end")
        if status != 0:
            self._fail(f"exited with status {status}")
        self.close()
        return steps

    def _fail(self, what: str) -> NoReturn:
        self.kill()
        stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        stdout = "\n".join(self._lines)
        raise AssertionError(f"node {self._name} {what}\nstdout:\n{stdout}\nstderr:\n{stderr}")

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(STOP_TIMEOUT)

    def close(self) -> None:
        self.kill()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _describe(script: str, args: tuple[str, ...]) -> str:
    """A script's command line, for messages."""
    return " ".join((script, *args))
