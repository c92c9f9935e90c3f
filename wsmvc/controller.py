"""Controllers: ``@controller`` classes whose ``@event`` methods handle one namespace.

A controller class is read once: its namespace, and a table of events (wire name →
method, with what each method takes). Registering it on a server compiles that table
into the server's handler table; a new instance is built for every namespace connection
(see :mod:`wsmvc.injection`) and lives as long as it.
"""

from __future__ import annotations

import inspect
import re
import typing
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import attrs
import injector

from .bodies import body_decoder, body_problem
from .codecs import JSON, Codec
from .errors import EventError, WsmvcError
from .handlers import Handler
from .injection import is_context_type
from .nsconn import NSConn
from .protocol import (
    ON_ANY_EVENT,
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_NATIVE_MESSAGE,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    SYSTEM_EVENTS,
    Message,
)

if TYPE_CHECKING:
    from .injection import Injection, Plan

__all__ = [
    "ControllerError",
    "ControllerHandle",
    "ControllerSpec",
    "ControllerWarning",
    "EventMethod",
    "controller",
    "event",
    "wire_name",
]

C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

# Method names that mean neffos' system events (design.md §3).
SYSTEM_METHODS: dict[str, str] = {
    "on_namespace_connect": ON_NAMESPACE_CONNECT,
    "on_namespace_connected": ON_NAMESPACE_CONNECTED,
    "on_namespace_disconnect": ON_NAMESPACE_DISCONNECT,
    "on_room_join": ON_ROOM_JOIN,
    "on_room_joined": ON_ROOM_JOINED,
    "on_room_leave": ON_ROOM_LEAVE,
    "on_room_left": ON_ROOM_LEFT,
    "on_any_event": ON_ANY_EVENT,
    "on_native_message": ON_NATIVE_MESSAGE,
}

_EVENT_MARK = "__wsmvc_event__"
_CATCH_MARK = "__wsmvc_catch__"  # an exception handler (wsmvc.errorhandling.catch)
_NAMESPACE_MARK = "__wsmvc_namespace__"
_SPEC = "__wsmvc_spec__"
_UNSET: Any = object()


class ControllerError(WsmvcError, TypeError):
    """A controller or one of its event methods is declared wrongly; the text says how to
    fix it. Raised when the controller is registered (a ``TypeError`` too)."""


class ControllerWarning(UserWarning):
    """A controller declaration that is probably a mistake (a method named like an event
    without ``@event``); warned once, when the class is read."""


# Injector's own marker of Inject[X] (typing.Annotated metadata), to tell dependencies.
_INJECT = typing.get_args(injector.Inject[int])[1]
# Method names that look like events: on_chat, OnChat.
_EVENT_LIKE = re.compile(r"on_[a-z0-9]|On[A-Z]")


def wire_name(method_name: str) -> str:
    """The neffos event name of a method: ``on_chat`` → ``OnChat``, system names mapped."""
    system = SYSTEM_METHODS.get(method_name)
    if system is not None:
        return system
    return "".join(part[:1].upper() + part[1:] for part in method_name.split("_") if part)


@overload
def event(fn: F, /) -> F: ...
@overload
def event(name: str | None = None, /) -> Callable[[F], F]: ...


def event(arg: Any = None, /) -> Any:
    """Mark a controller method as the handler of an event.

    ``@event`` names the event after the method (``on_chat`` → ``OnChat``);
    ``@event("chat")`` names it explicitly.
    """
    if callable(arg) or isinstance(arg, (staticmethod, classmethod)):
        return _mark(arg, None)
    if arg is not None and not isinstance(arg, str):
        raise ControllerError(
            f"@event takes an event name (a str) or decorates a method, not {arg!r}"
        )

    def decorate(fn: F) -> F:
        return typing.cast(F, _mark(fn, arg))

    return decorate


def _mark(fn: Any, name: str | None) -> Any:
    if isinstance(fn, (staticmethod, classmethod)):
        raise ControllerError(
            f"@event cannot decorate the {type(fn).__name__} {fn.__func__.__qualname__}:"
            " events are instance methods (def method(self, msg: Message))"
        )
    if not callable(fn):
        raise ControllerError(f"@event needs a method, got {fn!r}")
    if name == "":
        raise ControllerError(f"@event on {fn.__qualname__}: the event name is empty")
    setattr(fn, _EVENT_MARK, name)
    return fn


@overload
def controller(cls: C, /) -> C: ...
@overload
def controller(*, namespace: str | None = None) -> Callable[[C], C]: ...


def controller(cls: Any = None, /, *, namespace: str | None = None) -> Any:
    """Mark a class as a controller of ``namespace`` and check its events now.

    Without ``namespace`` the class attribute ``namespace`` (a str, or a method returning
    one) decides, else ``""``.
    """

    def decorate(klass: C) -> C:
        if not isinstance(klass, type):
            raise ControllerError(f"@controller decorates a class, not {klass!r}")
        if namespace is not None:
            setattr(klass, _NAMESPACE_MARK, namespace)
        spec_of(klass)  # fail at decoration, not at the first message
        return klass

    return decorate(cls) if cls is not None else decorate


@attrs.frozen
class EventMethod:
    """One event of a controller: its wire name, the method and what it takes."""

    wire: str
    attr: str
    fn: Callable[..., Any]
    takes: tuple[str, ...]  # each "msg", "nsconn", "body" or "dep"
    body_type: Any = None
    deps: tuple[tuple[str, Any], ...] = ()  # (parameter, type) of each "dep", in order


@attrs.frozen
class ControllerSpec:
    """What a controller class declares: its namespace and events, read once."""

    cls: type
    namespace: str
    events: dict[str, EventMethod]

    def describe(self, namespace: str | None = None) -> str:
        """The event table, one ``namespace event -> method`` line each."""
        ns = self.namespace if namespace is None else namespace
        rows = (f"  {ns!r} {w} -> {m.attr}" for w, m in sorted(self.events.items()))
        return f"{self.cls.__qualname__}:\n" + "\n".join(rows)


def spec_of(cls: type) -> ControllerSpec:
    """The (cached) event table of controller class ``cls``; raises :class:`ControllerError`."""
    cached = cls.__dict__.get(_SPEC)
    if cached is not None and cached.cls is cls:  # attrs' slotted copy carries the old one
        return typing.cast(ControllerSpec, cached)
    spec = ControllerSpec(cls, _namespace_of(cls), _events_of(cls))
    setattr(cls, _SPEC, spec)
    return spec


def _namespace_of(cls: type) -> str:
    # The nearest class that says anything decides: its decorator, else its attribute.
    for klass in cls.__mro__:
        own = vars(klass)
        if _NAMESPACE_MARK in own:
            return str(own[_NAMESPACE_MARK])
        if "namespace" in own:
            return _namespace_attribute(cls, own["namespace"])
    return ""


def _namespace_attribute(cls: type, static: Any) -> str:
    if isinstance(static, str):
        return static
    if isinstance(static, (staticmethod, classmethod)):
        value = cls.namespace()  # type: ignore[attr-defined]
    elif inspect.isfunction(static):
        value = static(typing.cast(Any, cls).__new__(cls))
    else:
        raise ControllerError(
            f"{cls.__qualname__}.namespace must be a str or a method returning one, not {static!r}"
        )
    if not isinstance(value, str):
        raise ControllerError(f"{cls.__qualname__}.namespace() returned {value!r}, not a str")
    return value


def _events_of(cls: type) -> dict[str, EventMethod]:
    found: dict[str, tuple[str, Any]] = {}
    for klass in reversed(cls.__mro__):
        for attr, raw in vars(klass).items():
            fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
            if hasattr(fn, _EVENT_MARK) or attr in found:
                found[attr] = (attr, raw)
    events: dict[str, EventMethod] = {}
    for attr, raw in found.values():
        fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        if not hasattr(fn, _EVENT_MARK):
            continue  # overridden by an undecorated method: not an event any more
        where = f"{cls.__qualname__}.{attr}"
        if isinstance(raw, (staticmethod, classmethod)) or not inspect.isfunction(fn):
            raise ControllerError(
                f"{where}: an @event must be a plain method (def {attr}(self, ...))"
            )
        wire = getattr(fn, _EVENT_MARK) or wire_name(attr)
        if wire in events:
            raise ControllerError(
                f"{cls.__qualname__}: {events[wire].attr} and {attr} both handle event {wire!r};"
                " rename one or give it @event('another name')"
            )
        # on_any_event also receives system events (as in neffos): no typed body there.
        takes, body_type, deps = _arguments(
            fn, where, system=wire in SYSTEM_EVENTS or wire == ON_ANY_EVENT
        )
        events[wire] = EventMethod(wire, attr, fn, takes, body_type, deps)
    _warn_unmarked(cls)
    return events


def _warn_unmarked(cls: type) -> None:
    """Warn (:class:`ControllerWarning`, at the method's line) about each method named like
    an event (``on_hello``, ``OnHello``, a system name) that is not an ``@event``."""
    names = {attr for klass in cls.__mro__ if klass is not object for attr in vars(klass)}
    for attr in sorted(names):
        if not (_EVENT_LIKE.match(attr) or attr in SYSTEM_METHODS):
            continue
        raw = inspect.getattr_static(cls, attr, None)  # the one in effect, not overridden
        if not inspect.isfunction(raw) or hasattr(raw, _EVENT_MARK) or hasattr(raw, _CATCH_MARK):
            continue
        code = raw.__code__
        warnings.warn_explicit(
            f"{cls.__qualname__}.{attr} is named like an event but has no @event, so"
            f" clients' {wire_name(attr)!r} events never reach it: decorate it with"
            " @event, or rename it (say with a leading underscore) if it is a helper",
            ControllerWarning,
            code.co_filename,
            code.co_firstlineno,
            module=raw.__module__,
        )


def _arguments(
    fn: Callable[..., Any], where: str, *, system: bool
) -> tuple[tuple[str, ...], Any, tuple[tuple[str, Any], ...]]:
    try:
        hints = typing.get_type_hints(fn)
        extras = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ControllerError(f"{where}: cannot read its annotations: {exc}") from exc
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise ControllerError(f"{where}: an event method takes self first")
    takes: list[str] = []
    body_type: Any = None
    deps: list[tuple[str, Any]] = []
    usage = "take (self), (self, msg: Message) or (self, body: SomeType)"
    for p in params[1:]:
        if p.kind not in positional:
            raise ControllerError(f"{where}: parameter {p.name!r} is not positional; {usage}")
        kind = hints.get(p.name, _UNSET)
        if kind is Message or (kind is _UNSET and p.name in ("msg", "message")):
            takes.append("msg")
        elif kind is NSConn:
            takes.append("nsconn")
        elif _INJECT in getattr(extras.get(p.name), "__metadata__", ()) or is_context_type(kind):
            takes.append("dep")  # Inject[Service], or Conn, Server, web.Request, Headers...
            deps.append((p.name, kind))
        elif kind is _UNSET:
            raise ControllerError(
                f"{where}: annotate parameter {p.name!r} (Message for the message, a type"
                " for a typed body, Inject[Type] for a dependency)"
            )
        elif (problem := body_problem(kind)) is not None:
            raise ControllerError(
                f"{where}: parameter {p.name!r} is the message, the body or a dependency,"
                f" and {_kind_name(kind)} can be none of them ({problem}). Annotate it"
                " Message for the message; a body type for the body; or"
                f" Inject[{_kind_name(kind)}] (from injector import Inject) for a"
                " dependency resolved for each message"
            )
        elif system:
            raise ControllerError(
                f"{where}: a system event gets the message, not a typed body; annotate"
                f" {p.name!r} as Message (or Inject[{_kind_name(kind)}] for a dependency)"
            )
        elif body_type is not None:
            raise ControllerError(f"{where}: only one parameter can be the typed body; {usage}")
        else:
            takes.append("body")
            body_type = kind
    return tuple(takes), body_type, tuple(deps)


def _kind_name(kind: Any) -> str:
    return str(getattr(kind, "__qualname__", None) or repr(kind).replace("typing.", ""))


def compile_handlers(
    spec: ControllerSpec, injection: Injection, plan: Plan, codec: Codec = JSON
) -> dict[str, Handler]:
    """The handler-table entries of a controller: one function per event, plus the connect
    hook that builds the controller instance for each namespace connection. Typed bodies
    are decoded with ``codec`` (the server's)."""
    handlers = {
        w: _handler(m, codec, _getters(m, injection, plan))
        for w, m in spec.events.items()
        if w != ON_NAMESPACE_CONNECT
    }
    handlers[ON_NAMESPACE_CONNECT] = _connect_hook(
        spec.events.get(ON_NAMESPACE_CONNECT), injection, plan
    )
    return handlers


def _getters(
    method: EventMethod, injection: Injection, plan: Plan
) -> list[Callable[[NSConn], Any]]:
    """What fills each dependency parameter of ``method`` (checked in ``prepare``)."""
    return [injection.getter(plan, method.attr, name, kind) for name, kind in method.deps]


def _handler(
    method: EventMethod, codec: Codec = JSON, getters: list[Callable[[NSConn], Any]] | None = None
) -> Handler:
    fn, takes, body_type = method.fn, method.takes, method.body_type
    if getters:
        return _with_deps(method, body_decoder(body_type, codec) if body_type else bytes, getters)
    if takes == ("msg",):
        return lambda ns, msg: fn(ns.controller, msg)
    if takes == ():
        return lambda ns, msg: fn(ns.controller)
    decode = body_decoder(body_type, codec) if "body" in takes else bytes  # made once
    if takes == ("body",):
        return lambda ns, msg: fn(ns.controller, decode(msg.body))

    def handler(ns: NSConn, msg: Message) -> Any:
        args = [msg if t == "msg" else ns if t == "nsconn" else decode(msg.body) for t in takes]
        return fn(ns.controller, *args)

    return handler


def _with_deps(
    method: EventMethod, decode: Callable[[bytes], Any], getters: list[Callable[[NSConn], Any]]
) -> Handler:
    fn = method.fn
    parts: list[Callable[[NSConn, Message], Any]] = []
    deps = iter(getters)
    for t in method.takes:
        if t == "msg":
            parts.append(lambda ns, msg: msg)
        elif t == "nsconn":
            parts.append(lambda ns, msg: ns)
        elif t == "body":
            parts.append(lambda ns, msg: decode(msg.body))
        else:
            get = next(deps)
            parts.append(lambda ns, msg, get=get: get(ns))  # type: ignore[misc]

    def handler(ns: NSConn, msg: Message) -> Any:
        return fn(ns.controller, *[part(ns, msg) for part in parts])

    return handler


def _connect_hook(user: EventMethod | None, injection: Injection, plan: Plan) -> Handler:
    call = _handler(user, JSON, _getters(user, injection, plan)) if user is not None else None

    def build(ns: NSConn, awaited: dict[Any, Any] | None) -> None:
        try:
            ns.controller = injection.create(plan, ns.conn, ns, awaited)
        except EventError:
            raise  # a provider refusing with its own text
        except Exception as exc:
            raise _failure(ns, exc) from exc

    async def connect_after_awaiting(ns: NSConn, msg: Message) -> Any:
        try:
            awaited = await injection.await_for(plan, ns.conn, ns)
        except EventError:
            raise
        except Exception as exc:
            raise _failure(ns, exc) from exc
        build(ns, awaited)
        result = call(ns, msg) if call is not None else None
        return await result if inspect.isawaitable(result) else result

    def connect(ns: NSConn, msg: Message) -> Any:
        if plan.awaits and injection.must_await(plan, ns.conn):
            return connect_after_awaiting(ns, msg)  # async providers: the connect waits
        try:  # build(ns, None), written out: it runs for every namespace connect
            ns.controller = injection.create(plan, ns.conn, ns)
        except EventError:
            raise
        except Exception as exc:
            raise _failure(ns, exc) from exc
        return call(ns, msg) if call is not None else None

    def _failure(ns: NSConn, exc: Exception) -> DependencyFailure:
        return DependencyFailure(
            f"cannot create {plan.cls.__qualname__} for connection {ns.conn.id!r}"
            f" in namespace {ns.namespace!r}: {type(exc).__name__}: {exc}"
        )

    return connect


class ControllerHandle:
    """A registered controller; :meth:`set_namespace` moves it to another namespace."""

    def __init__(
        self,
        spec: ControllerSpec,
        plan: Plan,
        move: Callable[[ControllerHandle, str], None],
    ) -> None:
        self.spec = spec
        self.plan = plan
        self.namespace = spec.namespace
        self._move = move

    @property
    def cls(self) -> type:
        return self.spec.cls

    def set_namespace(self, namespace: str) -> ControllerHandle:
        """Serve ``namespace`` instead (neffos' ``SetNamespace``); returns the handle."""
        if namespace != self.namespace:
            self._move(self, namespace)
        return self

    def __repr__(self) -> str:
        return f"<ControllerHandle {self.cls.__qualname__} on {self.namespace!r}>"


class DependencyFailure(WsmvcError, RuntimeError):
    """Building a controller for a connection failed (a provider raised; it is the
    ``__cause__``). A ``RuntimeError`` too."""
