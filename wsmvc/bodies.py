"""Typed bodies: what a handler's body parameter and return value become on the wire.

``str`` and ``bytes`` bodies are the raw body (UTF-8 text or bytes), never decoded. Every
other type is the server's codec (:mod:`wsmvc.codecs`, JSON by default) of a value:

* **pydantic v2 models** (the ``pydantic`` extra) are validated by pydantic itself
  (``model_validate``) and written with ``model_dump(mode="json")``;
* **attrs classes, dataclasses**, ``dict``, ``list``, numbers, ``Optional``, ``Literal``,
  enums... are structured and unstructured by cattrs (the ``typed-bodies`` extra), with its
  JSON conventions (datetimes as ISO 8601 text, bytes as base85 text), whatever the codec.

A body that does not fit answers the message with a :class:`BodyError` naming each field:
``body.age: expected an integer; body.tags[2]: expected a string``. The text never holds
a traceback or the server's internals, and is bounded whatever the client sent (names are
cut, at most ten problems are listed). A body nested deeper than the codec's
``max_depth`` (default 64) is refused before it is typed.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import sys
import typing
from collections.abc import Callable
from typing import Any

import attrs

from .codecs import JSON, MAX_DEPTH, Codec, JsonCodec
from .errors import EventError

__all__ = [
    "BodyError",
    "body_decoder",
    "body_problem",
    "decode_body",
    "encode_body",
    "is_pydantic_model",
    "require_cattrs",
]

_converter: Any = None
_KINDS = {
    str: "a string",
    bytes: "bytes",
    list: "an array",
    tuple: "an array",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}
_MAX_PROBLEMS = 10  # listed in one error text
_MAX_PROBLEM = 200  # characters of one problem
_MAX_NAME = 32  # characters of a client-chosen key in a path


class BodyError(EventError):
    """A body does not fit the handler's declared type; the text names each field
    (``body.age: expected an integer``). Raise it in a validator to say it your way."""


def require_cattrs(owner: str) -> None:
    """Fail early, naming ``owner``, when typed bodies are used without cattrs."""
    if not _has_cattrs():
        raise TypeError(
            f"{owner} declares a typed body, which needs cattrs: pip install 'wsmvc[typed-bodies]'"
        )


def _has_cattrs() -> bool:
    try:
        import cattrs  # noqa: F401
    except ImportError:
        return False
    return True


def is_pydantic_model(kind: object) -> bool:
    """Whether ``kind`` is a pydantic (v2) model class. Never imports pydantic: a model
    cannot exist before it is imported."""
    pydantic = sys.modules.get("pydantic")
    return (
        pydantic is not None
        and isinstance(kind, type)
        and issubclass(kind, pydantic.BaseModel)
        and hasattr(kind, "model_validate")
    )


def _validation_error() -> type[Exception]:
    return sys.modules["pydantic"].ValidationError  # type: ignore[no-any-return]


def _json_converter() -> Any:
    global _converter
    if _converter is None:
        from cattrs.preconf.json import make_converter

        converter = make_converter()
        # pydantic models inside attrs classes, lists, dicts... are pydantic's to type.
        converter.register_structure_hook_func(
            is_pydantic_model, lambda value, kind: kind.model_validate(value)
        )
        converter.register_unstructure_hook_func(
            is_pydantic_model, lambda model: model.model_dump(mode="json")
        )
        converter.register_structure_hook(bool, _strict_bool)  # not bool("false") == True
        _strict_arrays(converter)
        _converter = converter
    return _converter


def _strict_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(f"expected true or false, not {type(value).__name__}")


def _strict_arrays(converter: Any) -> None:
    """Lists and ``tuple[X, ...]`` from arrays only: cattrs takes any iterable, so a string
    would arrive as its characters and an object as its keys."""
    try:
        from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
    except ImportError:  # cattrs < 24.1: lenient
        return
    import collections.abc

    lists = {list, collections.abc.Sequence, collections.abc.MutableSequence}

    def homogeneous_tuple(kind: Any) -> bool:
        args = typing.get_args(kind)
        return typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis

    def is_array(kind: Any) -> bool:
        origin = typing.get_origin(kind) or kind
        return (_hashable(origin) and origin in lists) or homogeneous_tuple(kind)

    def factory(kind: Any, converter: Any) -> Callable[[Any, Any], Any]:
        make = homogenous_tuple_structure_factory if homogeneous_tuple(kind) else None
        if make is None and typing.get_args(kind):
            make = list_structure_factory
        inner = make(kind, converter) if make is not None else lambda value, _: list(value)

        def structure(value: Any, _: Any) -> Any:
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"expected an array, not {type(value).__name__}")
            return inner(value, kind)

        return structure

    converter.register_structure_hook_factory(is_array, factory)


# -- which types are bodies -----------------------------------------------------------------

_SCALARS = frozenset({int, float, bool, str, bytes, type(None), datetime.datetime, datetime.date})
_CONTAINERS = frozenset(
    {
        list,
        tuple,
        set,
        frozenset,
        dict,
        *(
            getattr(typing, name)
            for name in ("List", "Tuple", "Set", "FrozenSet", "Dict", "Sequence", "Mapping")
        ),
    }
)
_ABSTRACT = ("Sequence", "MutableSequence", "Set", "MutableSet", "Mapping", "MutableMapping")
_USAGE = (
    "a body is str, bytes, a pydantic model, an attrs class, a dataclass, or an int, float,"
    " bool, None, enum, datetime, list, tuple, set, dict, Optional, Union or Literal of those"
)


def body_problem(kind: Any) -> str | None:
    """Why ``kind`` cannot be the type of a body, or ``None`` when it can.

    Usable at decoration time: it looks into attrs and dataclass fields, containers and
    unions (forward references it cannot resolve yet are taken on trust), and says when
    a library the type needs is missing (cattrs for everything but ``str``, ``bytes``
    and pydantic models). The text starts with the type's name, e.g. ``Service is not a
    body type: a body is str, bytes, a pydantic model, ...`` or, when the type is inside
    another, ``Service is not a body type (inside list[Service]): ...``.
    """
    if kind is str or kind is bytes or is_pydantic_model(kind):
        return None
    problem = _shape_problem(kind, kind, set())
    if problem is not None:
        return problem
    if not _has_cattrs():
        return f"{_type_name(kind)} as a body needs cattrs: pip install 'wsmvc[typed-bodies]'"
    return None


def _shape_problem(kind: Any, outer: Any, seen: set[Any]) -> str | None:
    if kind is Any or kind is None or isinstance(kind, (str, typing.ForwardRef)):
        return None  # forward references are trusted
    if _hashable(kind) and kind in _SCALARS:
        return None
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return None
    if is_pydantic_model(kind):
        return None
    supertype = getattr(kind, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return _shape_problem(supertype, outer, seen)
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return None
    if origin is typing.Annotated:
        return _shape_problem(typing.get_args(kind)[0], outer, seen)
    if origin is not None and _is_union(origin):
        return _first(_shape_problem(arg, outer, seen) for arg in typing.get_args(kind))
    if origin is not None and (origin in _CONTAINERS or _abstract_container(origin)):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        return _first(_shape_problem(arg, outer, seen) for arg in args)
    if (_hashable(kind) and kind in _CONTAINERS) or _abstract_container(kind):
        return None
    if isinstance(kind, type) and kind in seen:
        return None
    fields = _fields(kind)
    if fields is None:
        inside = "" if kind is outer else f" (inside {_type_name(outer)})"
        return f"{_type_name(kind)} is not a body type{inside}: {_USAGE}"
    seen.add(kind)
    return _first(_shape_problem(field, outer, seen) for field in fields)


def _hashable(kind: Any) -> bool:
    try:
        hash(kind)
    except TypeError:
        return False
    return True


def _is_union(origin: Any) -> bool:
    import types

    return origin is typing.Union or origin is getattr(types, "UnionType", None)


def _abstract_container(kind: Any) -> bool:
    import collections.abc

    return any(kind is getattr(collections.abc, name) for name in _ABSTRACT)


def _first(problems: typing.Iterable[str | None]) -> str | None:
    return next((p for p in problems if p is not None), None)


def _fields(kind: Any) -> list[Any] | None:
    """The field types of a structured class (attrs, dataclass, TypedDict, NamedTuple),
    ``None`` for any other type; fields whose annotations cannot be read yet are skipped."""
    if not isinstance(kind, type):
        return None
    if attrs.has(kind):
        names = [a.name for a in attrs.fields(kind) if a.init]
    elif dataclasses.is_dataclass(kind):
        names = [f.name for f in dataclasses.fields(kind) if f.init]
    elif typing.is_typeddict(kind) or (issubclass(kind, tuple) and hasattr(kind, "_fields")):
        names = None
    else:
        return None
    try:
        hints = typing.get_type_hints(kind, include_extras=True)
    except Exception:
        return []  # a forward reference not defined yet: trusted
    return [hints[n] for n in (hints if names is None else names) if n in hints]


def _type_name(kind: Any) -> str:
    """``list[Service]``, not ``list[__main__.Service]``."""
    args = typing.get_args(kind)
    origin = typing.get_origin(kind)
    if origin is not None and args:
        name = getattr(origin, "__qualname__", None) or repr(origin).replace("typing.", "")
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    if isinstance(kind, type):
        return kind.__qualname__
    return repr(kind).replace("typing.", "")


# -- decoding -------------------------------------------------------------------------------


def body_decoder(kind: Any, codec: Codec = JSON) -> Callable[[bytes], Any]:
    """A function from body bytes to a value of ``kind``, made once per handler.

    ``str``: the UTF-8 text; ``bytes``: the bytes as they are; any other type through
    ``codec`` (see the module docstring). The function raises :class:`BodyError` when
    the body does not fit. For a pydantic model, any other exception (a validator that
    raised neither ``ValueError`` nor ``AssertionError``) is a bug of the model, and
    goes up as it is; cattrs reports every failure inside a class as a body problem.
    """
    if kind is bytes:
        return _as_bytes
    if kind is str:
        return _as_text
    loads = _loader(codec)
    wants_object = attrs.has(kind) or dataclasses.is_dataclass(kind)
    if is_pydantic_model(kind):
        validate = kind.model_validate
        invalid = _validation_error()

        def decode_model(data: bytes) -> Any:
            raw = loads(data)
            if not isinstance(raw, dict):
                raise BodyError(f"body: expected an object, got {_kind_of(raw)}")
            try:
                return validate(raw)
            except invalid as exc:
                raise BodyError(_problems_text(_pydantic_problems(exc, "body"))) from None

        return decode_model
    converter = _json_converter()
    structure = converter.structure

    def decode(data: bytes) -> Any:
        raw = loads(data)
        if wants_object and not isinstance(raw, dict):
            raise BodyError(f"body: expected an object, got {_kind_of(raw)}")
        try:
            return structure(raw, kind)
        except RecursionError:
            raise BodyError("body: nested too deep") from None
        except Exception as exc:
            raise BodyError(_problems_text(_cattrs_problems(exc, "body", kind))) from None

    return decode


def decode_body(data: bytes, kind: Any, codec: Codec = JSON) -> Any:
    """The body ``data`` as a value of ``kind``; raises :class:`BodyError` when it does not
    fit. Handlers use :func:`body_decoder`, made once."""
    return body_decoder(kind, codec)(data)


def _as_bytes(data: bytes) -> bytes:
    return data


def _as_text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise BodyError("body: not UTF-8 text") from None


def _loader(codec: Codec) -> Callable[[bytes], Any]:
    """``codec.loads`` with its errors as :class:`BodyError` and the depth bounded."""
    loads, name = codec.loads, codec.name
    max_depth: int = getattr(codec, "max_depth", MAX_DEPTH)
    too_deep = f"body: nested deeper than {max_depth} levels"
    # JSON nests no deeper than its count of opening brackets: most bodies need no walk.
    count = isinstance(codec, JsonCodec)

    def load(data: bytes) -> Any:
        try:
            raw = loads(data)
        except RecursionError:
            raise BodyError(too_deep) from None
        except Exception as exc:
            why = _cut(str(exc) or type(exc).__name__, _MAX_PROBLEM)
            raise BodyError(f"body: invalid {name} ({why})") from None
        if count and data.count(b"[") + data.count(b"{") <= max_depth:
            return raw
        if _deeper_than(raw, max_depth):
            raise BodyError(too_deep)
        return raw

    return load


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest in ``value`` more than ``limit`` deep: level by level,
    without recursion (a value too deep for the stack is what it looks for)."""
    level = [value] if isinstance(value, (dict, list, tuple)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        inner: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            inner.extend(c for c in children if isinstance(c, (dict, list, tuple)))
        level = inner
    return False


def _kind_of(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    return _KINDS.get(type(value), "a value")


# -- error texts ----------------------------------------------------------------------------


def _cattrs_problems(exc: BaseException, path: str, kind: Any) -> list[tuple[str, str]]:
    from cattrs.errors import (
        AttributeValidationNote,
        ClassValidationError,
        ForbiddenExtraKeysError,
        IterableValidationError,
    )

    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        problems: list[tuple[str, str]] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            step = f".{note.name}" if isinstance(note, AttributeValidationNote) else None
            step = step or _key_step(getattr(note, "index", "?"))
            problems += _cattrs_problems(sub, path + step, note.type)
        for sub in without:
            problems += _cattrs_problems(sub, path, None)
        return problems
    if "pydantic" in sys.modules and isinstance(exc, _validation_error()):
        return _pydantic_problems(exc, path)
    if isinstance(exc, EventError):
        return [("", exc.text)]  # raised by the type's own code: its text as it is
    if isinstance(exc, ForbiddenExtraKeysError):
        names = ", ".join(_cut(repr(n), _MAX_NAME) for n in sorted(exc.extra_fields)[:5])
        return [(path, f"unexpected fields {names}")]
    if isinstance(exc, KeyError):
        return [(path, "required field missing")]
    if kind is not None:  # a leaf that did not convert (ValueError, TypeError, CattrsError...)
        return [(path, f"expected {_expected(kind)}")]
    return [(path, "invalid value")]  # e.g. an attrs validator: its text may hold the value


def _pydantic_problems(exc: Any, path: str) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors(include_url=False):  # loc and msg: never the input itself
        where = path + "".join(_key_step(step, field=True) for step in error["loc"])
        problems.append((where, str(error["msg"])))
    return problems


def _key_step(key: object, *, field: bool = False) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"[{key}]"
    if field and isinstance(key, str) and key.isidentifier() and len(key) <= _MAX_NAME:
        return f".{key}"
    return f"[{_cut(repr(key), _MAX_NAME)}]"


def _expected(kind: Any) -> str:
    origin = typing.get_origin(kind) or kind
    if origin is typing.Annotated:
        return _expected(typing.get_args(kind)[0])
    if _is_union(origin):
        return " or ".join(dict.fromkeys(_expected(a) for a in typing.get_args(kind)))
    if origin is typing.Literal:
        return "one of " + _cut(", ".join(repr(v) for v in typing.get_args(kind)), 80)
    if isinstance(origin, type) and issubclass(origin, enum.Enum):
        return "one of " + _cut(", ".join(repr(m.value) for m in origin), 80)
    if origin is int:
        return "an integer"
    if origin is float:
        return "a number"
    if origin is bool:
        return "true or false"
    if origin is datetime.datetime:
        return "a date and time (ISO 8601)"
    if origin is datetime.date:
        return "a date (ISO 8601)"
    if origin is bytes:
        return "bytes (base85 text)"
    if origin is dict or _fields(origin) is not None or _is_mapping(origin):
        return "an object"
    if origin in _CONTAINERS or _abstract_container(origin):
        return "an array"
    if origin is str:
        return "a string"
    if origin is type(None):
        return "null"
    return f"a {_type_name(origin)}"


def _is_mapping(kind: Any) -> bool:
    import collections.abc

    return kind is collections.abc.Mapping or kind is collections.abc.MutableMapping


def _problems_text(problems: list[tuple[str, str]]) -> str:
    if not problems:
        return "body: invalid value"
    lines = [
        _cut(f"{path}: {text}" if path else text, _MAX_PROBLEM)
        for path, text in problems[:_MAX_PROBLEMS]
    ]
    if len(problems) > _MAX_PROBLEMS:
        lines.append(f"and {len(problems) - _MAX_PROBLEMS} more")
    return "; ".join(lines)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- encoding -------------------------------------------------------------------------------


def encode_body(value: object, codec: Codec = JSON) -> bytes:
    """``value`` as a body: ``bytes`` and ``str`` (UTF-8) as they are; a pydantic model
    through ``model_dump(mode="json")``, anything else unstructured by cattrs (when
    installed), then ``codec.dumps``. Raises what those raise for a value they cannot
    write (``TypeError``, ``ValueError``...)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if is_pydantic_model(type(value)):
        return codec.dumps(value.model_dump(mode="json"))  # type: ignore[attr-defined]
    try:
        converter = _json_converter()
    except ImportError:
        return codec.dumps(value)
    return codec.dumps(converter.unstructure(value))
