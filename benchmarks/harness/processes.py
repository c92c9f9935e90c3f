"""Starting a pinned server, warming it, and driving the pinned load generator over stdio."""

from __future__ import annotations

import contextlib
import json
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .procfs import Sample, sample

BENCH_DIR = Path(__file__).resolve().parent.parent
LOADGEN = BENCH_DIR / "loadgen" / "loadgen.js"
SERVER_CPU = "0"
LOADGEN_CPU = "1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class BenchError(RuntimeError):
    """A run that could not be measured (a process failed, hung or answered wrongly)."""


def raise_nofile_limit() -> None:
    """Let this process and its children open as many sockets as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_line(stream: IO[str], deadline: float, what: str) -> str:
    """One line from a child's stdout, or BenchError when ``deadline`` passes first."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
        raise BenchError(f"timed out waiting for {what}")
    return stream.readline()


class ServerProcess:
    """A benchmark server on CPU 0: started, waited for and warmed on enter, stopped on exit."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.port = free_port()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> ServerProcess:
        with self._stack as stack:
            self.log = stack.enter_context(tempfile.TemporaryFile("w+"))
            self.proc = stack.enter_context(
                subprocess.Popen(
                    [
                        "taskset",
                        "-c",
                        SERVER_CPU,
                        sys.executable,
                        str(self.script),
                        "--port",
                        str(self.port),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=self.log,
                    text=True,
                )
            )
            stack.callback(self.stop)
            self.pid = self.proc.pid  # taskset execs the interpreter: same pid
            assert self.proc.stdout is not None
            deadline = time.monotonic() + READY_TIMEOUT_S
            line = read_line(self.proc.stdout, deadline, "the ready line")
            if not line.startswith("READY"):
                raise BenchError(f"{self.script.name} did not start: {line!r} {self.stderr()}")
            self.warm()
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def warm(self) -> None:
        """One TCP connect and close before anything is measured.

        An asyncio server that has never read an EOF on a socket pays about 2.2 times the CPU
        per message until its first disconnect (a glibc malloc effect); this takes it out.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=5):
            pass
        time.sleep(0.2)

    def sample(self) -> Sample:
        return sample(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        self.log.seek(0)
        return self.log.read()


def run_loadgen(
    config: dict[str, Any], server: ServerProcess, timeout_s: float
) -> tuple[dict[str, Any], dict[str, tuple[Sample, Sample]]]:
    """Run the load generator on CPU 1 against ``server``.

    Returns its result and, for every mark it reached, a (server, load generator) sample
    taken while the load was quiescent.
    """
    if not (LOADGEN.parent / "node_modules").is_dir():
        raise BenchError("no node_modules: run `npm ci --prefix benchmarks/loadgen` first")
    deadline = time.monotonic() + timeout_s
    marks: dict[str, tuple[Sample, Sample]] = {}
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            ["taskset", "-c", LOADGEN_CPU, "node", str(LOADGEN), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None
        try:
            while True:
                line = read_line(proc.stdout, deadline, "the load generator").rstrip("\n")
                if line.startswith("MARK "):
                    marks[line[5:]] = (server.sample(), sample(proc.pid))
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                elif line.startswith("RESULT "):
                    return json.loads(line[7:]), marks
                elif not line:
                    errors.seek(0)
                    raise BenchError(f"load generator failed: {errors.read().strip()}")
        finally:
            if proc.poll() is None:
                proc.kill()
