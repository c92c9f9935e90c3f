"""Delivering one message to this process's matching connections: the broadcast's hot
path (``Server.deliver``). The message is encoded as an event once, framed (and deflated)
once, and the same bytes are written to every receiver (:class:`~wsmvc.framing.Payload`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .framing import Payload, Stamp
from .protocol import ON_ROOM_JOIN, ON_ROOM_LEFT, Message, encode_event

if TYPE_CHECKING:
    from .conn import Conn
    from .nsconn import NSConn
    from .registry import Registry

__all__ = ["deliver", "submit_from_thread", "targets_of"]

T = TypeVar("T")


def deliver(
    registry: Registry,
    msg: Message,
    *,
    exclude: Conn | str | None,
    to: str | None,
    threshold: int,
    level: int,
    stamp: Stamp | None = None,
) -> int:
    """Write ``msg`` to the connections of ``registry`` in its namespace (and room, unless
    it is a join or leave notice), or only to those with id ``to``; not to ``exclude`` (a
    connection, or every connection with that id). ``threshold`` (bytes) and ``level``:
    the deflate settings; ``stamp``: a cluster broadcast's (:class:`~wsmvc.framing.Payload`).
    Returns how many connections it was written to."""
    data = encode_event(msg)
    targets, room = targets_of(registry, msg, to)
    exclude_id = exclude if isinstance(exclude, str) else None
    # Framed once, and deflated once, for every receiver (framing.Payload).
    payload = Payload(data, msg.binary, threshold=threshold, level=level, stamp=stamp)
    sent = 0
    for nsconn in tuple(targets):
        conn = nsconn.conn
        writer = conn.writer
        if conn is exclude or writer.closed or (exclude_id is not None and conn.id == exclude_id):
            continue
        if room and not nsconn.in_room(room):
            continue
        writer.write_payload(payload)
        sent += 1
    return sent


def targets_of(registry: Registry, msg: Message, to: str | None) -> tuple[Iterable[NSConn], str]:
    """Who may get ``msg``: the namespace connections of id ``to``, else its room's members
    (unless it is a join or leave notice, which names a room but is for the namespace),
    else the namespace's; and the room each of them must still be checked to be in
    (``""``: none; only ``to=`` receivers are not picked by room)."""
    namespace, room = msg.namespace, msg.room
    in_room = bool(room) and msg.event != ON_ROOM_JOIN and msg.event != ON_ROOM_LEFT
    if to is not None:
        by_id = [ns for c in registry.by_id(to) if (ns := c.namespace(namespace))]
        return by_id, room if in_room else ""
    if in_room:
        return registry.in_room(namespace, room), ""
    return registry.in_namespace(namespace), ""


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
