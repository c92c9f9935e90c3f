"""Helpers of the interop suite: the echo server as a subprocess, and the Node scenario runner.

Nothing here sleeps: every wait is a read of a child's output (or its exit) with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, NoReturn

INTEROP_DIR = Path(__file__).resolve().parent
REPO_ROOT = INTEROP_DIR.parents[1]
ECHO_APP = REPO_ROOT / "examples" / "echo.py"
SCENARIO_JS = INTEROP_DIR / "js" / "scenario.mjs"
NODE_MODULES = INTEROP_DIR / "node_modules"
NEFFOS_JS_VERSION = "0.1.34"
SETUP_HINT = "run `npm ci` in tests/interop, or `tox -e interop`"

READY_LINE = re.compile(r"echo server ready on (ws://\S+)")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
SCENARIO_TIMEOUT = 45.0
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


class EchoServer:
    """``examples/echo.py`` running as a child process on 127.0.0.1.

    :meth:`start` waits for its ready line; :meth:`stop` sends SIGTERM and checks that it
    exits with status 0 and logged no error; :meth:`restart` does both on the same port.
    The server's stderr (its log) goes to a file in ``log_dir``.
    """

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._runs = 0
        self.port = 0
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------

    def start(self, port: int | None = None) -> None:
        """Start on ``port``, or on a free random port (a few tries if one is taken)."""
        if port is not None:
            self._start_on(port)
            return
        failure: str = ""
        for _ in range(3):
            try:
                self._start_on(free_port())
                return
            except PortTaken as exc:
                failure = str(exc)
        raise RuntimeError(f"echo server did not start on a free port: {failure}")

    def _start_on(self, port: int) -> None:
        assert self._proc is None, "already running"
        self._runs += 1
        self._log_path = self._log_dir / f"echo-{port}-run{self._runs}.log"
        with self._log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-u", str(ECHO_APP), "--host", "127.0.0.1", "--port", str(port)],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert proc.stdout is not None
        reader = LineReader(proc.stdout)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = reader.readline(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                _terminate(proc)
                raise RuntimeError(
                    f"echo server printed no ready line within {START_TIMEOUT}s; "
                    f"log:\n{self.log_text()}"
                ) from None
            if line is None:
                proc.wait(STOP_TIMEOUT)
                log_text = self.log_text()
                if "address already in use" in log_text.lower():
                    raise PortTaken(f"port {port} is taken")
                raise RuntimeError(
                    f"echo server exited with status {proc.returncode} before it was ready; "
                    f"log:\n{log_text}"
                )
            match = READY_LINE.search(line)
            if match:
                break
        self._proc = proc
        self.port = port
        self.url = match.group(1)

    def stop(self) -> str:
        """SIGTERM the server, wait for it, check a clean exit; returns its log."""
        proc = self._proc
        assert proc is not None, "not running"
        self._proc = None
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _terminate(proc)
            raise AssertionError(
                f"echo server did not exit within {STOP_TIMEOUT}s of SIGTERM; "
                f"log:\n{self.log_text()}"
            ) from None
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        log_text = self.log_text()
        assert status == 0, f"echo server exited with status {status}; log:\n{log_text}"
        problems = problem_lines(log_text)
        assert not problems, "echo server logged errors:\n" + "\n".join(problems)
        return log_text

    def restart(self) -> None:
        """Stop (checking a clean exit) and start again on the same port."""
        port = self.port
        self.stop()
        self.start(port)

    def kill(self) -> None:
        """Stop without checks (cleanup after a failure)."""
        if self._proc is not None:
            _terminate(self._proc)
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None

    # -- the log ------------------------------------------------------------------------

    def log_text(self, offset: int = 0) -> str:
        """The log of the current (or last) run, from byte ``offset``."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with self._log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def log_size(self) -> int:
        if self._log_path is None or not self._log_path.exists():
            return 0
        return self._log_path.stat().st_size


class PortTaken(RuntimeError):
    """The server could not bind its port."""


def problem_lines(log_text: str) -> list[str]:
    """The lines of a server log that report an error or a traceback."""
    return [line for line in log_text.splitlines() if LOG_PROBLEM.match(line)]


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(STOP_TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()


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


class NodeRunner:
    """Runs ``js/scenario.mjs`` scenarios with one ``node`` executable."""

    def __init__(self, node: str) -> None:
        self.node = node

    def _argv(self, scenario: str, url: str, args: tuple[str, ...]) -> list[str]:
        return [self.node, str(SCENARIO_JS), scenario, url, *args]

    def run(self, scenario: str, url: str, *args: str, timeout: float = SCENARIO_TIMEOUT) -> Steps:
        """Run a scenario to its end; returns its steps (failing on a non-zero exit)."""
        try:
            done = subprocess.run(
                self._argv(scenario, url, args),
                cwd=INTEROP_DIR,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"node scenario {scenario!r} did not finish within {timeout}s\n"
                f"stdout:\n{_text(exc.stdout)}\nstderr:\n{_text(exc.stderr)}"
            ) from None
        if done.returncode != 0:
            raise AssertionError(
                f"node scenario {scenario!r} failed with status {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        steps = parse_steps(done.stdout.splitlines())
        assert "end" in steps, f"scenario {scenario!r} did not report its end:\n{done.stdout}"
        return steps

    def start(self, scenario: str, url: str, *args: str) -> NodeScenario:
        """Start a scenario whose progress the test follows step by step."""
        return NodeScenario(
            subprocess.Popen(
                self._argv(scenario, url, args),
                cwd=INTEROP_DIR,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
            scenario,
        )


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
        raise AssertionError(
            f"node scenario {self._name!r} {what}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )

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
