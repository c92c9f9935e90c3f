"""The token slot of a publication between servers (``neffos-protocol.md`` §12.3).

``neffos(0x<server>(<excluded>))`` is Go's own form, which every Go server strips;
``wsmvc:<flags>:<data>`` may follow it for what only wsmvc servers read: ``b`` the
message is binary; ``x`` an id is excluded (data: its UTF-8 in URL-safe base64); ``m`` a
broadcast to several rooms or with several exclusions (data: the JSON object ``{"r":
rooms, "x": excluded ids, "xr": excluded rooms}`` in URL-safe base64; a Go server, or a
wsmvc one before it, delivers such a message to the envelope's room, the first of them).
``:<seq>`` may end the wsmvc part: the publication's sequence number on its server, which
with the origin identifies it across the cluster (a connection moving between servers gets
each broadcast once: :mod:`wsmvc.handover`); ``wsmvc:::<seq>`` when nothing else is said.
``:<traceparent>`` may end it after that: the W3C trace context (``00-<trace id: 32 hex>-<span
id: 16 hex>-<flags: 2 hex>``) of the span that published it, written only by a server whose
tracing is on (:mod:`wsmvc.tracing`), so that the receiving servers' spans join the sender's
trace. Markers without it parse as before; a wsmvc server older than this field cannot read
a marker that has it (it logs that, and delivers without the wsmvc part).
"""

from __future__ import annotations

import base64
import json
import re

import attrs

__all__ = ["Marker", "check_server_id", "format_marker", "parse_marker"]

_TRACE = r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"  # W3C traceparent, version 00
_TRACEPARENT = re.compile(_TRACE)
_MARKER = re.compile(
    r"neffos\(0x(?P<origin>[^(]*)\((?P<identity>.*)\)\)"
    r"(?:wsmvc:(?P<flags>[a-z]*):(?P<exclude>[A-Za-z0-9_=-]*)(?::(?P<seq>[0-9]{1,20}))?"
    rf"(?::(?P<trace>{_TRACE}))?)?",
    re.DOTALL,
)

# A server id goes into markers, Redis channels and NATS subjects as it is: no `(`, no
# `.`/`*`/`>`/spaces (NATS tokens), short enough for a subject. Go uses a UUID.
_SERVER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_server_id(server_id: str) -> str:
    """``server_id`` itself if it is 1 to 64 ASCII letters, digits, ``-`` or ``_``.

    Raises ValueError otherwise (it is put into markers and broker subjects unescaped).
    """
    if not isinstance(server_id, str) or _SERVER_ID.fullmatch(server_id) is None:
        raise ValueError(
            f"server_id must be 1 to 64 ASCII letters, digits, '-' or '_', got {server_id!r}"
        )
    return server_id


@attrs.frozen
class Marker:
    """What the token slot of a publication says about it."""

    origin: str  # the publishing server's id
    identity: str = ""  # Go's excluded-connection identity, meaningful on the origin only
    exclude_id: str | None = None
    binary: bool = False
    many: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None = None
    """Several rooms, excluded ids, excluded rooms (the ``m`` flag), or ``None``."""
    seq: int | None = None
    """The publication's sequence number on its origin (``None``: not said, as Go)."""
    traceparent: str | None = None
    """The W3C ``traceparent`` of the publishing span (``None``: none, as Go), checked for
    its form only (lowercase hex fields of 2, 32, 16 and 2 digits)."""


def format_marker(marker: Marker) -> str:
    """The token slot's text for ``marker`` (see the module docstring). Raises ValueError
    for a ``traceparent`` not of the W3C form (it would make the marker unreadable)."""
    text = f"neffos(0x{marker.origin}({marker.identity}))"
    seq = "" if marker.seq is None else f":{marker.seq}"
    if marker.traceparent is not None:
        if _TRACEPARENT.fullmatch(marker.traceparent) is None:
            raise ValueError(f"not a W3C traceparent: {marker.traceparent!r}")
        seq += f":{marker.traceparent}"
    if marker.many is not None:
        rooms, ids, rooms_out = marker.many
        data = json.dumps({"r": rooms, "x": ids, "xr": rooms_out}, separators=(",", ":"))
        encoded = base64.urlsafe_b64encode(data.encode()).decode()
        text += f"wsmvc:{'b' if marker.binary else ''}m:{encoded}{seq}"
    elif marker.binary or marker.exclude_id is not None:
        flags = ("b" if marker.binary else "") + ("x" if marker.exclude_id is not None else "")
        excluded = base64.urlsafe_b64encode((marker.exclude_id or "").encode()).decode()
        text += f"wsmvc:{flags}:{excluded}{seq}"
    elif seq:
        text += f"wsmvc::{seq}"
    return text


def parse_marker(text: str) -> Marker | None:
    """What the token slot ``text`` says; ``None`` when it is not a marker we can read."""
    match = _MARKER.fullmatch(text)
    if match is None:
        return None
    flags = match["flags"] or ""
    exclude_id = None
    many = None
    try:
        if "m" in flags:
            data = json.loads(base64.urlsafe_b64decode(match["exclude"]))
            many = (_strings(data["r"]), _strings(data["x"]), _strings(data["xr"]))
        elif "x" in flags:
            exclude_id = base64.urlsafe_b64decode(match["exclude"]).decode()
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: deep JSON
        return None
    seq = int(match["seq"]) if match["seq"] is not None else None
    origin, identity = match["origin"], match["identity"]
    return Marker(origin, identity, exclude_id, "b" in flags, many, seq, match["trace"])


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("not a list of strings")
    return tuple(value)
