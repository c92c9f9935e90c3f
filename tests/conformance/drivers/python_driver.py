"""The conformance driver of the Python client (``wsmvc.dial``):

    python tests/conformance/drivers/python_driver.py <scenario> <ws-url>

It does what ``common.mjs`` does for the Node drivers, with the same steps and the same
observations (one JSON line per step, ``{"step": i, "observed": {...}}``, then
``{"end": true}``; a ``harness`` step prints ``{"step": i, "harness": action}`` and waits
for a line on stdin, the harness's outcome, which it reports as the step's observation; the
end line lists the run's stray errors, ``{"end": true, "stray":
[...]}``: what reached asyncio's exception handler, and the ERROR records of wsmvc's
loggers, which in an application are lost errors). A dial step without ``reconnect`` dials
the plain client
(:class:`~wsmvc.ClientConn`), one with ``reconnect`` the reconnecting one
(``dial(..., reconnect=Backoff(...))``, a :class:`~wsmvc.ReconnectingClient`), whose
handles (:class:`~wsmvc.ReconnectingNamespace`, :class:`~wsmvc.ReconnectingRoom`) the
steps then use, as an application would.

Nothing sleeps: every wait is on an event or a future, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import wsmvc
from wsmvc import (
    AskTimeout,
    Backoff,
    ClientConn,
    ConnectionClosed,
    EventError,
    Message,
    NSConn,
    ReconnectingClient,
    ReconnectingNamespace,
    Reject,
    Reply,
)
from wsmvc.handlers import Handler
from wsmvc.nsconn import DEFAULT, Timeout

DATA = json.loads((Path(__file__).resolve().parents[1] / "scenarios.json").read_text("utf-8"))
WAIT = 5.0  # seconds: one awaited event, one request (a request's own timeout aside)
HARNESS_WAIT = 60.0  # the harness stopping or starting the server
RESTORE_WAIT = 20.0  # a reconnect, server restart included
QUICK_RECONNECT = Backoff(initial=0.02, maximum=0.2)

Observation = dict[str, Any]


def report(record: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def body_of(spec: str | Mapping[str, list[int]] | None) -> str | bytes:
    """A step's body: a string, or bytes for ``{"bytes": [...]}``."""
    if isinstance(spec, Mapping):
        return bytes(spec["bytes"])
    return spec or ""


def view(msg: Message) -> Observation:
    """What a handler got, or an ask resolved with (the fields the scenarios look at)."""
    body: Any = {"bytes": list(msg.body)} if msg.binary else msg.body.decode()
    return {
        "event": msg.event,
        "ns": msg.namespace,
        "room": msg.room,
        "body": body,
        "binary": msg.binary,
        "forced": msg.forced,
        "local": msg.local,
    }


class StrayErrors(logging.Handler):
    """Collects the errors of a run that reached no caller (reported at its end)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(f"logged by {record.name}: {record.getMessage()}")

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        self.texts.append(f"{context['message']}: {error!r}" if error else context["message"])


class Inbox:
    """The handler calls of one connection, in arrival order."""

    def __init__(self) -> None:
        self._items: list[Observation] = []
        self._changed = asyncio.Event()

    def push(self, item: Observation) -> None:
        self._items.append(item)
        self._changed.set()

    async def next(self, event: str) -> Observation:
        """The next not yet taken call of ``event`` (waits up to :data:`WAIT`)."""

        async def find() -> Observation:
            while True:
                for i, item in enumerate(self._items):
                    if item["event"] == event:
                        return self._items.pop(i)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), WAIT)

    def pending(self, event: str) -> list[Observation]:
        """The calls of ``event`` not yet taken, taken now (no wait)."""
        taken = [item for item in self._items if item["event"] == event]
        self._items = [item for item in self._items if item["event"] != event]
        return taken


def handler_table(inbox: Inbox, answers: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """Recording handlers for every namespace and recorded event; ``answers`` (of namespace
    ``default``) record and answer: ``{"reply": prefix}`` or ``{"error": text}``."""

    def record(ns: NSConn, msg: Message) -> None:
        inbox.push(view(msg))

    def answering(spec: Mapping[str, str]) -> Handler:
        def answer(ns: NSConn, msg: Message) -> Reply:
            inbox.push(view(msg))
            if "reply" in spec:
                return Reply(spec["reply"].encode() + msg.body)
            raise EventError(spec["error"])

        return answer

    table: dict[str, Any] = {}
    for namespace in DATA["namespaces"]:
        events: dict[str, Handler] = {event: record for event in DATA["recorded_events"]}
        if namespace == "default":
            events.update({event: answering(spec) for event, spec in answers.items()})
        table[namespace] = events
    return table


class Client(Protocol):
    """What the steps call: one adapter per kind of Python client."""

    inbox: Inbox

    def id(self) -> str: ...
    def was_reconnected(self) -> bool: ...
    async def connect(self, namespace: str) -> None: ...
    async def disconnect(self, namespace: str) -> None: ...
    async def join(self, namespace: str, room: str) -> None: ...
    async def leave(self, namespace: str, room: str) -> None: ...
    async def leave_all(self, namespace: str) -> None: ...
    def emit(self, namespace: str, room: str, event: str, body: str | bytes) -> bool: ...
    async def ask(
        self, namespace: str, event: str, body: str | bytes, timeout: float | None
    ) -> Observation: ...
    def state(self) -> Observation: ...
    async def closed(self) -> Observation: ...
    async def restored(self) -> Observation: ...
    async def close(self) -> None: ...


def state_of(conn: ClientConn | None, closed: bool) -> Observation:
    """The namespaces and rooms of ``conn`` (sorted, rooms as ``namespace/room``)."""
    namespaces = dict(conn.namespaces) if conn is not None else {}
    rooms = [f"{name}/{room}" for name, ns in namespaces.items() for room in ns.rooms]
    return {"closed": closed, "namespaces": sorted(namespaces), "rooms": sorted(rooms)}


def request(namespace: str, event: str, body: str | bytes) -> Message:
    """An ask's message: bytes in a binary frame."""
    binary = isinstance(body, bytes)
    data = body if isinstance(body, bytes) else body.encode()
    return Message(namespace=namespace, event=event, body=data, binary=binary)


class PlainClient:
    """``wsmvc.dial(url, namespaces)``: a :class:`~wsmvc.ClientConn`, which never reconnects."""

    def __init__(self, conn: ClientConn, inbox: Inbox) -> None:
        self.conn = conn
        self.inbox = inbox
        self.handles: dict[str, NSConn] = {}  # the NSConn each connect returned

    def _ns(self, namespace: str) -> NSConn | None:
        return self.handles.get(namespace) or self.conn.namespace(namespace)

    def id(self) -> str:
        return self.conn.id

    def was_reconnected(self) -> bool:
        return False

    async def connect(self, namespace: str) -> None:
        self.handles[namespace] = await self.conn.connect(namespace)

    async def disconnect(self, namespace: str) -> None:
        ns = self._ns(namespace)
        assert ns is not None, f"no handle of {namespace!r}"
        await ns.disconnect()

    async def join(self, namespace: str, room: str) -> None:
        ns = self._ns(namespace)
        assert ns is not None, f"no handle of {namespace!r}"
        await ns.join_room(room)

    async def leave(self, namespace: str, room: str) -> None:
        ns = self._ns(namespace)
        assert ns is not None, f"no handle of {namespace!r}"
        await ns.leave_room(room)

    async def leave_all(self, namespace: str) -> None:
        ns = self._ns(namespace)
        assert ns is not None, f"no handle of {namespace!r}"
        await ns.leave_all()

    def emit(self, namespace: str, room: str, event: str, body: str | bytes) -> bool:
        ns = self._ns(namespace)
        if ns is None:
            return False
        if room:
            joined = ns.room(room)
            if joined is None:
                return False
            if not isinstance(body, bytes):
                return joined.emit(event, body)
            msg = request(namespace, event, body)
            msg.room = room
            return self.conn.write(msg)
        return ns.emit_binary(event, body) if isinstance(body, bytes) else ns.emit(event, body)

    async def ask(
        self, namespace: str, event: str, body: str | bytes, timeout: float | None
    ) -> Observation:
        ns = self._ns(namespace)
        limit = _timeout(timeout)
        if ns is not None and not isinstance(body, bytes):
            return view(await ns.ask(event, body, timeout=limit))
        return view(await self.conn.ask(request(namespace, event, body), timeout=limit))

    def state(self) -> Observation:
        return state_of(self.conn, self.conn.closed)

    async def closed(self) -> Observation:
        await self.conn.wait_closed()
        return {"code": self.conn.close_code, "error": None}

    async def restored(self) -> Observation:
        await asyncio.Event().wait()  # never: the driver's deadline reports it pending
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.conn.close()


class ReconnectingAdapter:
    """``wsmvc.dial(url, namespaces, reconnect=Backoff(...))``: a
    :class:`~wsmvc.ReconnectingClient`; the steps use its handles."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.client: ReconnectingClient | None = None
        self.handles: dict[str, ReconnectingNamespace] = {}
        self.restorations: asyncio.Queue[None] = asyncio.Queue()
        self.failed: list[str] = []  # what on_restore_failed reported since the last restore
        self.last_id = ""

    @property
    def _client(self) -> ReconnectingClient:
        assert self.client is not None
        return self.client

    def _ns(self, namespace: str) -> ReconnectingNamespace | None:
        return self.handles.get(namespace) or self._client.namespace(namespace)

    def _handle(self, namespace: str) -> ReconnectingNamespace:
        handle = self._ns(namespace)
        assert handle is not None, f"no handle of {namespace!r}"
        return handle

    def id(self) -> str:
        return self._client.id

    def was_reconnected(self) -> bool:
        return self._client.reconnects > 0

    async def connect(self, namespace: str) -> None:
        self.handles[namespace] = await self._client.connect(namespace)

    async def disconnect(self, namespace: str) -> None:
        await self._handle(namespace).disconnect()

    async def join(self, namespace: str, room: str) -> None:
        await self._handle(namespace).join_room(room)

    async def leave(self, namespace: str, room: str) -> None:
        await self._handle(namespace).leave_room(room)

    async def leave_all(self, namespace: str) -> None:
        handle = self._handle(namespace)
        for room in list(handle.rooms):
            await handle.leave_room(room)

    def emit(self, namespace: str, room: str, event: str, body: str | bytes) -> bool:
        handle = self._ns(namespace)
        if handle is None:
            return False
        if room:
            joined = handle.room(room)
            if joined is None:
                return False
            if isinstance(body, bytes):
                live = joined.room
                if live is None:
                    raise ConnectionClosed("no live room: reconnecting")
                msg = request(namespace, event, body)
                msg.room = room
                return live.nsconn.conn.write(msg)
            joined.emit(event, body)  # raises when it cannot
            return True
        if isinstance(body, bytes):
            handle.emit_binary(event, body)
        else:
            handle.emit(event, body)
        return True

    async def ask(
        self, namespace: str, event: str, body: str | bytes, timeout: float | None
    ) -> Observation:
        handle = self._ns(namespace)
        limit = _timeout(timeout)
        if handle is not None and not isinstance(body, bytes):
            return view(await handle.ask(event, body, timeout=limit))
        conn = handle.nsconn.conn if handle is not None and handle.nsconn else self._client.conn
        if conn is None:
            raise ConnectionClosed("no live connection: reconnecting")
        return view(await conn.ask(request(namespace, event, body), timeout=limit))

    def state(self) -> Observation:
        return state_of(self._client.conn, self._client.closed)

    async def closed(self) -> Observation:
        """Once the client stopped for good: the last connection's close code, and why it
        gave up reconnecting (``None``: it did not)."""
        client = self._client
        await client.wait_closed()
        error = client.error
        text = error.reason if isinstance(error, Reject) else (str(error) if error else None)
        return {"code": client.close_code, "error": text}

    async def restored(self) -> Observation:
        await self.restorations.get()
        client = self._client
        new_id, self.last_id = client.id != self.last_id, client.id
        failed, self.failed = sorted(self.failed), []
        return {
            "reconnected": client.reconnects > 0,
            "new_id": new_id,
            "failed": failed,
            **self.state(),
        }

    async def close(self) -> None:
        await self._client.close()


async def dial(url: str, step: Mapping[str, Any]) -> Client:
    inbox = Inbox()
    handlers = handler_table(inbox, step.get("answers", {}))
    if not step.get("reconnect"):
        return PlainClient(await wsmvc.dial(url, handlers), inbox)
    adapter = ReconnectingAdapter(inbox)
    adapter.client = await wsmvc.dial(
        url,
        handlers,
        reconnect=QUICK_RECONNECT,
        on_restored=lambda client: adapter.restorations.put_nowait(None),
        on_restore_failed=lambda client, namespace, room, error: adapter.failed.append(
            namespace if room is None else f"{namespace}/{room}"
        ),
    )
    adapter.last_id = adapter.client.id
    return adapter


def classify(exc: BaseException) -> Observation:
    """An exception as an observation: its kind, and its text."""
    if isinstance(exc, Reject):
        return {"fail": "reject", "text": exc.reason}
    if isinstance(exc, AskTimeout):
        return {"fail": "timeout", "text": str(exc)}
    if isinstance(exc, ConnectionClosed):
        return {"fail": "closed", "text": str(exc)}
    if isinstance(exc, EventError):
        return {"fail": "event", "text": exc.text}
    return {"fail": "unexpected", "text": f"{type(exc).__name__}: {exc}"}


class Driver:
    """Performs one scenario's steps and reports what it observed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: dict[str, Client] = {}
        self.started: dict[str, asyncio.Future[Observation]] = {}  # ask_begin id -> the ask
        self.stray = StrayErrors()

    def client(self, step: Mapping[str, Any]) -> Client:
        return self.conns[step["conn"]]

    async def settle(self, action: Callable[[], Awaitable[Any]], wait: float = WAIT) -> Observation:
        """``{"ok": value}``, the failure, or ``{"pending": True}`` past ``wait`` seconds.

        (Not ``wait_for``: the client's own :class:`~wsmvc.AskTimeout` is a
        ``TimeoutError`` too, and must not read as the driver's deadline.)
        """
        try:
            task = asyncio.ensure_future(action())
        except Exception as exc:  # raised before it could be awaited (emit)
            return classify(exc)
        done, _ = await asyncio.wait({task}, timeout=wait)
        if not done:
            task.cancel()
            return {"pending": True}
        error = task.exception()
        return classify(error) if error is not None else {"ok": task.result()}

    async def perform(self, index: int, step: Mapping[str, Any]) -> Observation:
        do = step["do"]
        ns = step.get("ns", "default")
        if do == "dial":
            return await self.settle(lambda: self.dial(step))
        if do == "harness":
            report({"step": index, "harness": step["action"]})
            line = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), HARNESS_WAIT)
            if not line:
                raise RuntimeError("stdin closed while waiting for the harness")
            outcome: Observation = json.loads(line)
            return outcome
        if do == "ids_distinct":
            ids = [self.conns[name].id() for name in step["conns"]]
            return {"ok": len(set(ids)) == len(ids)}
        if do == "ask_end":
            asking = self.started[step["id"]]
            return await self.settle(lambda: asking, step.get("wait_ms", WAIT * 1000 + 1000) / 1000)
        client = self.client(step)
        if do == "connect":
            return await self.settle(lambda: client.connect(step["ns"]))
        if do == "disconnect":
            return await self.settle(lambda: client.disconnect(ns))
        if do == "join":
            return await self.settle(lambda: client.join(ns, step["room"]))
        if do == "leave":
            return await self.settle(lambda: client.leave(ns, step["room"]))
        if do == "leave_all":
            return await self.settle(lambda: client.leave_all(ns))
        if do == "emit":
            body = body_of(step["body"])
            return await self.settle(
                lambda: _now(client.emit(ns, step.get("room", ""), step["event"], body))
            )
        if do == "ask":
            timeout_ms = step.get("timeout_ms")
            timeout = timeout_ms / 1000 if timeout_ms is not None else None
            body = body_of(step["body"])
            return await self.settle(
                lambda: client.ask(ns, step["event"], body, timeout),
                (timeout if timeout is not None else WAIT) + 1.0,
            )
        if do == "ask_begin":
            body = body_of(step["body"])
            timeout_ms = step.get("timeout_ms")
            self.started[step["id"]] = asyncio.ensure_future(
                client.ask(ns, step["event"], body, timeout_ms / 1000 if timeout_ms else None)
            )
            return {"ok": None}
        if do == "ask_all":
            return await self.settle(
                lambda: asyncio.gather(
                    *(client.ask(ns, step["event"], body, None) for body in step["bodies"])
                )
            )
        if do == "sync":
            return await self.settle(lambda: client.ask("default", "sync", "", None))
        if do == "next_event":
            try:
                return {"ok": await client.inbox.next(step["event"])}
            except asyncio.TimeoutError:
                return {"timeout": f"event {step['event']}: nothing within {WAIT} s"}
        if do == "pending_events":
            return {"ok": client.inbox.pending(step["event"])}
        if do == "state":
            return {"ok": client.state()}
        if do == "closed":
            return await self.settle(client.closed)
        if do == "restored":
            return await self.settle(
                client.restored, step.get("wait_ms", RESTORE_WAIT * 1000) / 1000
            )
        if do == "close":
            return await self.settle(client.close)
        raise ValueError(f"unknown step {do!r}")

    async def dial(self, step: Mapping[str, Any]) -> Observation:
        url = self.url
        if "query" in step:
            url += "?" + urlencode(step["query"])
        client = await dial(url, step)
        self.conns[step["conn"]] = client
        return {"id": client.id(), "reconnected": client.was_reconnected()}

    async def run(self, scenario: Mapping[str, Any]) -> None:
        logging.getLogger("wsmvc").addHandler(self.stray)
        asyncio.get_running_loop().set_exception_handler(self.stray.loop_exception)
        for index, step in enumerate(scenario["steps"]):
            try:
                observed = await self.perform(index, step)
            except Exception as exc:
                observed = {"crash": f"{type(exc).__name__}: {exc}"}
            report({"step": index, "observed": observed})
        for client in self.conns.values():
            try:
                await asyncio.wait_for(client.close(), WAIT)
            except Exception as exc:
                print(f"closing failed: {exc!r}", file=sys.stderr)
        report({"end": True, "stray": self.stray.texts})


def _timeout(seconds: float | None) -> Timeout:
    """A step's ask timeout for the client: none given is the client's default."""
    return DEFAULT if seconds is None else seconds


async def _now(value: Any) -> Any:
    return value


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python_driver.py <scenario> <ws-url>")
    name, url = sys.argv[1:]
    scenario = next((s for s in DATA["scenarios"] if s["name"] == name), None)
    if scenario is None:
        sys.exit(f"no scenario {name!r}")
    asyncio.run(Driver(url).run(scenario))


if __name__ == "__main__":
    main()
