"""What a peer's requests may make this side keep: rooms, names, namespaces, payloads.

:class:`Limits` is a pure value the session consults before it accepts a peer's namespace
connect or room join (issue 11: no amplification a client controls).
"""

from __future__ import annotations

from typing import Final

import attrs

from .protocol import exceeds

__all__ = ["NO_LIMITS", "Limits"]


def _bound(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"{attribute.name} must be a positive int or None, not {value!r}")


@attrs.frozen
class Limits:
    """What a peer's requests may make this side keep for as long as a namespace stays
    connected (``None``: no bound); a request past one is refused with an error answer
    saying which, and the connection stays up. This side's own joins and connects are
    never refused, but they count.

    ``max_rooms``: rooms per namespace connection; ``max_name_size``: bytes (UTF-8) of a
    room name, and of a namespace name (one a pattern matches can be anything);
    ``max_connect_payload``: bytes of a namespace connect's body
    (:attr:`~wsmvc.NSConn.connect_payload`); ``max_namespaces``: namespaces connected per
    connection (dynamic namespaces let a client name any number).
    """

    max_rooms: int | None = attrs.field(default=None, validator=_bound)
    max_name_size: int | None = attrs.field(default=None, validator=_bound)
    max_connect_payload: int | None = attrs.field(default=None, validator=_bound)
    max_namespaces: int | None = attrs.field(default=None, validator=_bound)

    def join_refusal(self, joined: int, room: str) -> str | None:
        """Why a peer that joined ``joined`` rooms of a namespace may not join ``room``."""
        limit = self.max_name_size
        if limit is not None and exceeds(room, limit):
            return f"room name too long: {len(room.encode())} bytes, at most {limit}"
        if self.max_rooms is not None and joined >= self.max_rooms:
            return f"too many rooms: at most {self.max_rooms} per namespace"
        return None

    def connect_refusal(self, connected: int, name: str, body: bytes) -> str | None:
        """Why a peer with ``connected`` namespaces may not connect ``name`` with ``body``."""
        limit = self.max_name_size
        if limit is not None and exceeds(name, limit):
            return f"namespace name too long: {len(name.encode())} bytes, at most {limit}"
        if self.max_namespaces is not None and connected >= self.max_namespaces:
            return f"too many namespaces: at most {self.max_namespaces} per connection"
        limit = self.max_connect_payload
        if limit is not None and len(body) > limit:
            return f"connect payload too large: {len(body)} bytes, at most {limit}"
        return None


NO_LIMITS: Final = Limits()
"""No bound: a session's own until a server sets its keywords' (a client's stays so)."""
