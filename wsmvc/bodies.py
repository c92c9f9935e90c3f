"""Typed bodies: JSON in and out, structured with cattrs (the ``typed`` extra).

``str`` and ``bytes`` bodies are the raw body (text or bytes), never JSON. Every other
type — attrs classes, dataclasses, ``dict``, ``list``, numbers, ``Optional``… — is the
JSON encoding of the value, structured on the way in and unstructured on the way out.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import attrs

from .errors import EventError

__all__ = ["BodyError", "decode_body", "encode_body", "require_cattrs"]

_converter: Any = None
_JSON_KINDS = {
    str: "a string",
    list: "an array",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


class BodyError(EventError):
    """A body does not fit the handler's declared type; the text names the field."""


def require_cattrs(owner: str) -> None:
    """Fail early, naming ``owner``, when typed bodies are used without cattrs."""
    try:
        import cattrs  # noqa: F401
    except ImportError:
        raise TypeError(
            f"{owner} declares a typed body, which needs cattrs: pip install 'wsmvc[typed]'"
        ) from None


def _json() -> Any:
    global _converter
    if _converter is None:
        from cattrs.preconf.json import make_converter

        _converter = make_converter()
    return _converter


def decode_body(data: bytes, kind: Any) -> Any:
    """The body ``data`` as a value of ``kind``; raises :class:`BodyError` when it does not fit."""
    if kind is bytes:
        return data
    if kind is str:
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise BodyError("body: not UTF-8 text") from None
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise BodyError(f"body: invalid JSON ({exc})") from None
    if not isinstance(raw, dict) and (attrs.has(kind) or dataclasses.is_dataclass(kind)):
        raise BodyError(
            f"body: expected a JSON object, got {_JSON_KINDS.get(type(raw), 'a value')}"
        )
    converter = _json()
    try:
        return converter.structure(raw, kind)
    except Exception as exc:
        from cattrs import transform_error

        raise BodyError("; ".join(transform_error(exc, path="body"))) from None


def encode_body(value: object) -> bytes:
    """``value`` as a body: ``bytes`` and ``str`` as they are, anything else as JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    try:
        converter = _json()
    except ImportError:
        return json.dumps(value, separators=(",", ":")).encode()
    return converter.dumps(value, separators=(",", ":")).encode()  # type: ignore[no-any-return]
