"""The harness of the adversarial tests of recovery across servers
(``test_recovery_across_adversarial*.py``): servers in this process on a real Redis or NATS
behind a TCP balancer (:class:`Router`, test_recovery_across's :class:`Balancer` that can
refuse), hooks that stop a move where a test wants it (:class:`Gate`, :func:`wrap`), and raw
returns with a key (:func:`raw_return`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

import wsmvc
from wsmvc import CloseReason, Message, NSConn, Server
from wsmvc.handover import Handover
from wsmvc.protocol import decode
from wsmvc.recovery import RECOVERY_EVENT

from ..test_reconnect import FAST, Log, T, client_table
from .conftest import Broker, make_exchange
from .test_recovery_across import ROOMY, Balancer, confirmed, serving


class Router(Balancer):
    """A :class:`Balancer` that refuses new connections while its target is 0."""

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.target:
            writer.transport.abort()
            return
        await super()._pipe(reader, writer)


class Gate:
    """A hook that, once :attr:`armed`, says it was reached and waits to be opened."""

    def __init__(self) -> None:
        self.armed = False
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self) -> None:
        if self.armed:
            self.armed = False
            self.reached.set()
            await self.opened.wait()

    async def wait_reached(self) -> None:
        await asyncio.wait_for(self.reached.wait(), T)


class Node:
    """One server of the cluster with what the test watches on it."""

    def __init__(self, name: str, broker: Broker, timeout: float, **options: Any) -> None:
        self.name = name
        self.gone: list[tuple[str, CloseReason | None]] = []  # on_disconnect
        self.changed = asyncio.Event()
        self.connect_gate = Gate()  # in its _OnNamespaceConnect
        self.port = 0
        events: dict[str, Any] = {
            "_OnNamespaceConnect": self._on_connect,
            "echo": lambda ns, msg: msg.body,
        }
        events.update(options.pop("events", {}))
        self.server = Server(
            {"chat": events},
            recovery=options.pop("recovery", ROOMY),
            heartbeat=None,
            on_disconnect=self._on_disconnect,
            exchange=make_exchange(broker, server_id=f"server-{name}", timeout=timeout),
            **options,
        )

    async def _on_connect(self, ns: NSConn, msg: Message) -> None:
        await self.connect_gate()

    def _on_disconnect(self, conn: wsmvc.Conn) -> None:
        self.gone.append((conn.id, conn.close_reason))
        self.changed.set()

    async def until_gone(self, conn_id: str, timeout: float = T) -> CloseReason | None:
        """The close reason of ``conn_id``'s disconnect events here, once they ran."""

        async def wait() -> CloseReason | None:
            while True:
                for gone_id, reason in self.gone:
                    if gone_id == conn_id:
                        return reason
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{conn_id} not gone from {self.name} in {timeout}s") from None

    @property
    def handover(self) -> Handover:
        handover = self.server._handover
        assert handover is not None
        return handover

    def ids(self) -> list[str]:
        return [c.id for c in self.server.connections]


class Cluster:
    """Servers by name behind one balancer."""

    def __init__(self, nodes: dict[str, Node], balancer: Balancer) -> None:
        self.nodes = nodes
        self.balancer = balancer
        self.url = f"ws://127.0.0.1:{balancer.port}/ws"

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def route(self, name: str) -> None:
        """New TCP connections go to ``name`` from now on (``nowhere``: refused)."""
        self.balancer.target = self.nodes[name].port if name in self.nodes else 0

    async def dial(self, log: Log, **extra: Any) -> wsmvc.ReconnectingClient:
        client = await wsmvc.dial(
            self.url, client_table(log, "chat", **extra), reconnect=FAST, **log.events()
        )
        assert isinstance(client, wsmvc.ReconnectingClient)
        return client


@contextlib.asynccontextmanager
async def cluster_of(
    broker: Broker, names: str = "ab", *, timeout: float = 5.0, **options: Any
) -> AsyncIterator[Cluster]:
    """Servers ``names`` (one letter each) on ``broker``, serving, behind a :class:`Router`
    that sends new connections to the first; ``options`` go to each :class:`Node`."""
    nodes = {name: Node(name, broker, timeout, **dict(options)) for name in names}
    balancer = Router()
    await balancer.start()
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes.values():
            node.port = await stack.enter_async_context(serving(node.server))
        for node in nodes.values():
            await confirmed(node.server)
        cluster = Cluster(nodes, balancer)
        cluster.route(names[0])
        try:
            yield cluster
        finally:
            await balancer.close()


Wrapped = Callable[..., Awaitable[Any]]


def wrap(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    node: Node,
    around: Callable[[Wrapped, tuple[Any, ...]], Awaitable[Any]],
) -> None:
    """``Handover.<name>`` of ``node`` goes through ``around(original, args)``."""
    original = getattr(Handover, name)

    async def patched(self: Handover, *args: Any) -> Any:
        bound = functools.partial(original, self)
        if self is node.handover:
            return await around(bound, args)
        return await bound(*args)

    monkeypatch.setattr(Handover, name, patched)


async def joined_client(
    cluster: Cluster, log: Log
) -> tuple[wsmvc.ReconnectingClient, wsmvc.ReconnectingNamespace]:
    """A client in room ``r`` of ``chat``, every server's subscriptions confirmed; ``log``
    cleared."""
    client = await cluster.dial(log)
    chat = await client.connect("chat")
    await chat.join_room("r")
    for node in cluster.nodes.values():
        await confirmed(node.server)
    log.entries.clear()
    return client, chat


async def raw_return(
    session: aiohttp.ClientSession, port: int, key: str, received: int
) -> tuple[str, str]:
    """A websocket coming back with ``key`` straight to ``port``: ``("recovered", id)``,
    ``("new", id)`` or ``("closed", code)``. It stays open (recovered or new) until
    ``session`` closes."""
    url = f"ws://127.0.0.1:{port}/ws?wsmvc-recovery={key}&wsmvc-received={received}"
    ws = await session.ws_connect(url, autoping=True)
    await ws.send_str("M")
    recovered: bool | None = None
    while True:
        frame = await ws.receive(T)
        if frame.type is not aiohttp.WSMsgType.TEXT:
            return "closed", str(ws.close_code)
        text = frame.data
        if text.startswith("A") and recovered is not None:
            return ("recovered" if recovered else "new"), text[1:]
        msg = decode(text.encode())
        if msg.event == RECOVERY_EVENT:
            recovered = b" " in msg.body
