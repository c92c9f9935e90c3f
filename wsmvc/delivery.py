"""Delivering one message to this process's matching connections: the broadcast's hot
path (``Server.deliver``). The message is encoded as an event once, framed (and deflated)
once, and the same bytes are written to every receiver (:class:`~wsmvc.framing.Payload`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .framing import Payload
from .protocol import ON_ROOM_JOIN, ON_ROOM_LEFT, Message, encode_event

if TYPE_CHECKING:
    from .conn import Conn
    from .nsconn import NSConn
    from .registry import Registry

__all__ = ["deliver", "submit_from_thread"]

T = TypeVar("T")


def deliver(
    registry: Registry,
    msg: Message,
    *,
    exclude: Conn | str | None,
    to: str | None,
    threshold: int,
    level: int,
) -> int:
    """Write ``msg`` to the connections of ``registry`` in its namespace (and room, unless
    it is a join or leave notice), or only to those with id ``to``; not to ``exclude`` (a
    connection, or every connection with that id). ``threshold`` (bytes) and ``level``:
    the deflate settings. Returns how many connections it was written to."""
    data = encode_event(msg)
    namespace, room = msg.namespace, msg.room
    check_room = bool(room) and msg.event != ON_ROOM_JOIN and msg.event != ON_ROOM_LEFT
    if to is not None:
        targets: Iterable[NSConn] = [
            ns for c in registry.by_id(to) if (ns := c.namespace(namespace))
        ]
    elif check_room:
        targets = registry.in_room(namespace, room)
        check_room = False
    else:
        targets = registry.in_namespace(namespace)
    exclude_id = exclude if isinstance(exclude, str) else None
    # Framed once, and deflated once, for every receiver (framing.Payload).
    payload = Payload(data, msg.binary, threshold=threshold, level=level)
    sent = 0
    for nsconn in tuple(targets):
        conn = nsconn.conn
        writer = conn.writer
        if conn is exclude or writer.closed or (exclude_id is not None and conn.id == exclude_id):
            continue
        if check_room and not nsconn.in_room(room):
            continue
        writer.write_payload(payload)
        sent += 1
    return sent


def submit_from_thread(
    loop: asyncio.AbstractEventLoop | None,
    make: Callable[[], Coroutine[Any, Any, T]],
    instead: str,
) -> concurrent.futures.Future[T]:
    """Run ``make()`` on ``loop`` from another thread; its future. Raises RuntimeError
    when ``loop`` is not running, and in ``loop``'s own thread (``await`` ``instead``
    there: waiting on the future would block the loop it waits for)."""
    if loop is None or loop.is_closed() or not loop.is_running():
        raise RuntimeError("the server's application is not running")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError(f"in the event loop's thread, await {instead} instead")
    return asyncio.run_coroutine_threadsafe(make(), loop)
