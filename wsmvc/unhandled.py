"""Events that arrive with no handler: one warning per namespace and event, bounded.

neffos drops such an event silently (a request gets wsmvc's ``unknown event`` answer), so a
client and a server that disagree on a name fail without a word. The handler table warns
the first time each namespace and event arrives without a handler (DEBUG for every later
one), and remembers only ``limit`` of them: a client can send a million made-up names, so
past the limit one summary line says that warnings stopped, and the memory stays put (each
remembered pair costs an int: its hash, not the name, which may be a megabyte).
"""

from __future__ import annotations

import logging

from .protocol import SYSTEM_EVENTS, shorten

__all__ = ["UNHANDLED_WARNINGS", "Unhandled"]

log = logging.getLogger("wsmvc")

UNHANDLED_WARNINGS = 100
"""How many distinct (namespace, event) pairs without a handler a server warns about."""


class Unhandled:
    """Warns once per (namespace, event) that arrived with no handler, for at most ``limit``
    distinct pairs; then one line says the warnings stopped (see the module docstring)."""

    __slots__ = ("_seen", "limit", "stopped")

    def __init__(self, limit: int = UNHANDLED_WARNINGS) -> None:
        self.limit = limit
        self._seen: set[int] = set()
        self.stopped = False  # the limit was reached: no more warnings

    def arrived(self, owner: object, namespace: str, event: str) -> None:
        """``event`` of ``namespace`` came to ``owner`` (a connection) and nothing handles it."""
        if event in SYSTEM_EVENTS:
            return  # the protocol's own names: a peer may send them, nothing to fix here
        key = hash((namespace, event))
        if key in self._seen or self.stopped:
            return
        if len(self._seen) >= self.limit:
            self.stopped = True
            log.warning(
                "%d events without a handler were warned about; no more such warnings (a"
                " client sending made-up event names?); every one still shows at DEBUG",
                self.limit,
            )
            return
        self._seen.add(key)
        log.warning(
            "%s: no handler for event %r in namespace %r: it is dropped (a request gets"
            " 'unknown event'); handle it with @event, server.on() or on_any_event (said once"
            " per namespace and event)",
            owner,
            shorten(event),
            shorten(namespace),
        )

    def __len__(self) -> int:
        return len(self._seen)
