"""Codecs: how typed bodies travel as bytes. JSON by default; msgpack, orjson... pluggable.

A codec only turns body bytes into *plain data* — ``dict`` (string keys), ``list``,
``str``, ``int``, ``float``, ``bool``, ``None``: what JSON can say — and plain data back
into bytes. Making typed values of that data (attrs classes, dataclasses, pydantic models)
is :mod:`wsmvc.bodies`' job, the same for every codec. A server uses one codec
(``Server(codec=...)``) for every typed parameter and every typed return value; ``str``
and ``bytes`` bodies never go through it.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

__all__ = ["JSON", "MAX_DEPTH", "Codec", "JsonCodec", "checked_codec"]

MAX_DEPTH = 64
"""Containers (objects, arrays) a decoded body may nest, unless its codec's ``max_depth``
says otherwise. Deeper bodies are refused with ``body: nested deeper than 64 levels``."""


class Codec(Protocol):
    """The wire format of typed bodies; give one to ``Server(codec=...)``.

    * ``name`` - what the format is called in error texts: a body it cannot read is
      answered ``body: invalid <name> (<the exception's text>)``.
    * ``binary`` - its bytes are not UTF-8 text: answers encoded with it go in binary
      frames (a text frame must be valid UTF-8).
    * ``loads(data)`` - the plain value of the body bytes ``data``; raises any
      ``Exception`` (``ValueError``...) for bytes that are not in the format. A
      ``RecursionError`` reads as a body nested too deep.
    * ``dumps(value)`` - the bytes of a plain value (what ``loads`` returns); raises
      ``TypeError``/``ValueError`` for what it cannot write (the handler's author gets it
      in the log, the client a generic error).

    A codec may also have ``max_depth`` (an ``int``, default :data:`MAX_DEPTH`): how deep
    a body may nest, checked on what ``loads`` returned.
    """

    @property
    def name(self) -> str: ...

    @property
    def binary(self) -> bool: ...

    def loads(self, data: bytes, /) -> Any: ...

    def dumps(self, value: Any, /) -> bytes: ...


class JsonCodec:
    """JSON with the standard library: the default codec (:data:`JSON`).

    Writes compact JSON (no spaces) with non-ASCII characters escaped, as
    ``json.dumps`` does. ``max_depth``: containers a body may nest (default
    :data:`MAX_DEPTH`).
    """

    name = "JSON"
    binary = False

    def __init__(self, *, max_depth: int = MAX_DEPTH) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be 1 or more, not {max_depth!r}")
        self.max_depth = max_depth

    def loads(self, data: bytes, /) -> Any:
        """The value of JSON ``data``; raises ``ValueError`` when it is not JSON."""
        return json.loads(data)

    def dumps(self, value: Any, /) -> bytes:
        """``value`` as compact JSON bytes; raises ``TypeError`` for what JSON cannot say."""
        return json.dumps(value, separators=(",", ":")).encode()

    def __repr__(self) -> str:
        return f"JsonCodec(max_depth={self.max_depth})"


JSON = JsonCodec()
"""The default codec."""


def checked_codec(codec: Codec) -> Codec:
    """``codec`` itself once it has what :class:`Codec` needs; raises ``TypeError`` naming
    what is missing (at server construction, not at the first message)."""
    missing = [m for m in ("loads", "dumps") if not callable(getattr(codec, m, None))]
    if not isinstance(getattr(codec, "name", None), str):
        missing.append("name (a str)")
    if not isinstance(getattr(codec, "binary", None), bool):
        missing.append("binary (a bool)")
    depth = getattr(codec, "max_depth", MAX_DEPTH)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        missing.append("max_depth as an int of 1 or more")
    if missing:
        raise TypeError(
            f"codec {codec!r} is not a wsmvc.codecs.Codec: it needs {', '.join(missing)}"
        )
    return codec
