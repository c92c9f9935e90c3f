"""What a client controls, fuzzed through a real broker (issue 10 §3): its connection id,
its room names and the bodies it is sent.

Hypothesis draws names from an alphabet of what brokers and the neffos envelope treat
specially (``;`` ``.`` ``*`` ``>`` ``~`` ``@`` whitespace, newlines, non-ASCII) and bodies of
any bytes. Server B (in the test process) has the client with that id in that room, and a
bystander; server A sends through a real Redis or NATS: to the room, to the id, and to the
namespace. The client gets each exactly once, byte for byte; the bystander gets only the
namespace's; nothing crashes.
"""

from __future__ import annotations

import asyncio
import itertools

import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wsmvc
from wsmvc import Message, NSConn, Server

from ..conftest import Serve
from .conftest import WAIT, Broker, id_from_name, make_exchange, until_heard

SPECIAL = ";.*>~@ \t\n\r$#/\\\"'%é中\U0001f600"
names = st.text(
    alphabet=st.one_of(st.sampled_from(SPECIAL), st.characters(blacklist_categories=("Cs",))),
    min_size=1,
    max_size=24,
)
_fresh = itertools.count()


class Listener:
    """A client in namespace ``default`` recording every ``chat`` (body, binary)."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, bool]] = []
        self.probes: set[str] = set()
        self.arrived = asyncio.Event()
        self._probed = asyncio.Event()

    def handlers(self) -> dict[str, object]:
        def chat(ns: NSConn, msg: Message) -> None:
            self.got.append((msg.body, msg.binary))
            self.arrived.set()

        def probe(ns: NSConn, msg: Message) -> None:
            self.probes.add(msg.text)
            self._probed.set()

        return {"chat": chat, "probe": probe}

    async def heard(self, tokens: set[str], timeout: float) -> bool:
        try:
            while not self.probes & tokens:
                self._probed.clear()
                await asyncio.wait_for(self._probed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def label(self) -> str:
        return "listener"

    async def until(self, body: bytes) -> list[tuple[bytes, bool]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while (body, False) not in self.got:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
        before = self.got[: self.got.index((body, False))]
        del self.got[: self.got.index((body, False)) + 1]
        return before


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(conn_id=names, room=names, body=st.binary(max_size=300), text=names)
async def test_ids_rooms_and_bodies_a_client_controls_cross_the_broker_intact(
    broker: Broker, serve: Serve, conn_id: str, room: str, body: bytes, text: str
) -> None:
    table: dict[str, dict[str, object]] = {"default": {}}
    a = Server(table, exchange=make_exchange(broker))  # type: ignore[arg-type]
    b = Server(table, exchange=make_exchange(broker), id_generator=id_from_name)  # type: ignore[arg-type]
    n = next(_fresh)
    await serve(a, path=f"/a{n}")
    url_b = await serve(b, path=f"/b{n}")
    client, bystander = Listener(), Listener()
    conns = []
    try:
        for who, name in ((client, conn_id), (bystander, f"bystander-{n}")):
            url = yarl.URL(url_b).update_query({"X-Websocket-Header-X-Name": name})
            conn = await wsmvc.dial(str(url), {"default": who.handlers()}, timeout=WAIT)  # type: ignore[dict-item]
            conns.append(conn)
            assert conn.id == name
            ns = await conn.connect("default", timeout=WAIT)
            if who is client:
                await ns.join_room(room, timeout=WAIT)

        async def probe(token: str) -> None:
            msg = Message(namespace="default", event="probe", body=token.encode())
            await a.broadcast(msg, to=conn_id)

        await until_heard(probe, [client])  # type: ignore[list-item]
        sends = [
            Message(namespace="default", room=room, event="chat", body=body, binary=True),
            Message(namespace="default", event="chat", body=text.encode()),
        ]
        await a.broadcast(sends[0])
        await a.broadcast(sends[1], to=conn_id)
        await a.broadcast(Message(namespace="default", event="chat", body=b"everyone"))
        assert await client.until(b"everyone") == [(body, True), (text.encode(), False)]
        assert await bystander.until(b"everyone") == []
    finally:
        for conn in conns:
            await conn.close()
