"""Dependency injection with the ``injector`` library, per connection.

The server owns one root :class:`injector.Injector`. Four types are bound to the
connection being served: :class:`aiohttp.web.Request` (the upgrade request),
:class:`~wsmvc.Conn`, :class:`~wsmvc.Server` and :class:`~wsmvc.NSConn`; user providers
may depend on them (for example the user a middleware stored on the request). A binding
in :data:`connection_scope` lives once per websocket connection, shared by its namespaces.

Each controller class gets a :class:`Plan` once, at registration: its injected fields
(annotated, no default, not ``ClassVar``) and its ``__init__`` parameters, each marked as
taken from the connection, a root singleton resolved once, or resolved per connection.
Creating a controller then costs a few attribute sets, not a child injector.
"""

from __future__ import annotations

import contextvars
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeAlias, TypeVar

import attrs
import injector
from aiohttp import web

from .conn import Conn
from .nsconn import NSConn

__all__ = [
    "ConnectionScope",
    "DependencyError",
    "Injection",
    "ModuleLike",
    "Plan",
    "connection_scope",
]

T = TypeVar("T")
ModuleLike: TypeAlias = (
    "injector.Module | type[injector.Module] | Callable[[injector.Binder], None]"
)

_SCOPE_CACHE = "wsmvc.connection_scope"  # key of the per-connection cache in Conn.store


@attrs.frozen
class _Context:
    conn: Conn
    nsconn: NSConn | None


_current: contextvars.ContextVar[_Context] = contextvars.ContextVar("wsmvc_connection")


class DependencyError(TypeError):
    """A controller dependency cannot be provided; the text names the class and the field."""


class ConnectionScope(injector.Scope):
    """One instance per websocket connection, shared by all its namespaces and controllers."""

    def get(self, key: type[T], provider: injector.Provider[T]) -> injector.Provider[T]:
        return _ConnectionScoped(key, provider)


connection_scope = injector.ScopeDecorator(ConnectionScope)


class _ConnectionScoped(injector.Provider[T]):
    def __init__(self, key: type[T], provider: injector.Provider[T]) -> None:
        self._key = key
        self._provider = provider

    def get(self, inj: injector.Injector) -> T:
        ctx = _current.get(None)
        if ctx is None:
            raise injector.UnsatisfiedRequirement(None, self._key)
        cache: dict[Any, Any] = ctx.conn.store.setdefault(_SCOPE_CACHE, {})
        if self._key not in cache:
            cache[self._key] = self._provider.get(inj)
        return typing.cast(T, cache[self._key])


class _FromContext(injector.Provider[Any]):
    def __init__(self, pick: Callable[[_Context], Any], name: str) -> None:
        self._pick = pick
        self._name = name

    def get(self, inj: injector.Injector) -> Any:
        ctx = _current.get(None)
        if ctx is None:
            raise LookupError(f"{self._name} is only available while serving a connection")
        value = self._pick(ctx)
        if value is None:
            raise LookupError(f"{self._name} is not available here")
        return value


# How each context type is taken from the connection being served.
_CONTEXT: dict[Any, Callable[[_Context], Any]] = {
    NSConn: lambda ctx: ctx.nsconn,
    Conn: lambda ctx: ctx.conn,
    web.Request: lambda ctx: ctx.conn.request,
    web.BaseRequest: lambda ctx: ctx.conn.request,
}


@attrs.frozen
class _Dep:
    name: str
    kind: Any
    # "context": taken from the connection; "singleton": resolved once; "connection": once
    # per connection (connection_scope); "inject": asked of the injector every time.
    how: str
    where: str  # "field" or "parameter", for messages


@attrs.define
class Plan:
    """How to build one controller class: what to inject where."""

    cls: type
    fields: tuple[_Dep, ...]
    params: tuple[_Dep, ...]
    singletons: dict[str, Any] = attrs.field(factory=dict)
    ready: bool = False

    def describe(self, dep: _Dep) -> str:
        return f"{self.cls.__qualname__}.{dep.name} ({dep.where}: {_type_name(dep.kind)})"


class Injection:
    """The server's injector and the plans of its controllers."""

    def __init__(
        self,
        root: injector.Injector | None,
        modules: Iterable[
            injector.Module | type[injector.Module] | Callable[[injector.Binder], None]
        ],
        server_type: type,
    ) -> None:
        self.injector = root if root is not None else injector.Injector(list(modules))
        if root is not None:
            for module in modules:
                self.injector.binder.install(module)
        self._context = dict(_CONTEXT)
        self._context[server_type] = lambda ctx: ctx.conn.server
        binder = self.injector.binder
        for kind, pick in self._context.items():
            if not binder.has_explicit_binding_for(kind):
                binder.bind(kind, to=_FromContext(pick, _type_name(kind)))

    def plan(self, cls: type) -> Plan:
        """Read the injection points of ``cls``; raises :class:`DependencyError` on a bad one."""
        hints = _hints(cls, cls)
        init = cls.__init__  # type: ignore[misc]
        params: list[_Dep] = []
        param_names: set[str] = set()
        if init is not object.__init__:
            init_hints = _hints(init, cls)
            for p in list(inspect.signature(init).parameters.values())[1:]:
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                param_names.add(p.name)
                if p.default is not p.empty:
                    continue
                if p.name not in init_hints:
                    raise DependencyError(
                        f"{cls.__qualname__}.__init__ parameter {p.name!r} has no type annotation:"
                        " annotate it so it can be injected, or give it a default"
                    )
                params.append(self._dep(p.name, init_hints[p.name], "parameter"))
        fields = [
            self._dep(name, kind, "field")
            for name, kind in hints.items()
            if name not in param_names
            and typing.get_origin(kind) is not ClassVar
            and kind is not ClassVar
            and not _has_default(cls, name)
        ]
        return Plan(cls, tuple(fields), tuple(params))

    def _dep(self, name: str, kind: Any, where: str) -> _Dep:
        if kind in self._context:
            return _Dep(name, kind, "context", where)
        return _Dep(name, kind, "inject", where)

    def prepare(self, plan: Plan) -> None:
        """Check that every dependency can be provided and resolve the root singletons."""
        if plan.ready:
            return
        fields: list[_Dep] = []
        params: list[_Dep] = []
        for deps, out in ((plan.fields, fields), (plan.params, params)):
            for dep in deps:
                scope = self._scope(dep, plan) if dep.how == "inject" else None
                if scope is not None and issubclass(scope, injector.SingletonScope):
                    try:
                        plan.singletons[dep.name] = self.injector.get(dep.kind)
                    except Exception as exc:
                        raise DependencyError(
                            f"cannot provide {plan.describe(dep)}: {exc}"
                        ) from exc
                    dep = attrs.evolve(dep, how="singleton")
                elif scope is not None and issubclass(scope, ConnectionScope):
                    dep = attrs.evolve(dep, how="connection")
                out.append(dep)
        plan.fields, plan.params = tuple(fields), tuple(params)
        plan.ready = True

    def _scope(self, dep: _Dep, plan: Plan) -> type | None:
        """The scope ``dep`` is bound in; raises when nothing can provide it."""
        problem = self._unprovidable(dep.kind, set())
        if problem is not None:
            hint = " (a field that is state, not a dependency, needs a default)"
            raise DependencyError(
                f"nothing can provide {plan.describe(dep)}: {problem}"
                + (hint if dep.where == "field" else "")
            )
        binding, _ = self.injector.binder.get_binding(dep.kind)
        scope = binding.scope
        if isinstance(scope, injector.ScopeDecorator):
            scope = scope.scope
        return scope if isinstance(scope, type) else None

    def _unprovidable(self, kind: Any, seen: set[Any]) -> str | None:
        """Why ``kind`` cannot be provided, or ``None``; follows auto-bound classes."""
        if kind in self._context or kind in seen:
            return None
        seen.add(kind)
        binder = self.injector.binder
        explicit = binder.has_explicit_binding_for(kind)
        if not explicit and getattr(kind, "_is_protocol", False):
            return f"{_type_name(kind)} is a Protocol; bind an implementation in a module"
        try:
            binding, _ = binder.get_binding(kind)
        except (injector.UnsatisfiedRequirement, injector.UnknownProvider, TypeError):
            return f"bind {_type_name(kind)} in a module (binder.bind(...)) or add a @provider"
        if explicit or not isinstance(binding.provider, injector.ClassProvider):
            return None
        name = _type_name(kind)
        if kind in (str, bytes, int, float, bool):
            return f"{name} has no binding; bind a value for it in a module"
        if inspect.isabstract(kind):
            return f"{name} is abstract; bind an implementation in a module"
        try:
            needs = injector.get_bindings(kind.__init__)
        except Exception:
            return None
        if not needs and kind.__init__ is not object.__init__:
            required = [
                p.name
                for p in list(inspect.signature(kind.__init__).parameters.values())[1:]
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            if required:
                return (
                    f"{name}.__init__ needs {', '.join(required)} but is not @inject:"
                    " decorate it with @inject, or bind the class in a module"
                )
        for arg, arg_kind in needs.items():
            problem = self._unprovidable(arg_kind, seen)
            if problem is not None:
                return f"{name}.__init__ needs {arg}: {problem}"
        return None

    def create(self, plan: Plan, conn: Conn, nsconn: NSConn) -> Any:
        """A new instance of ``plan.cls`` for ``nsconn``: fields first, then ``__init__``."""
        ctx = _Context(conn, nsconn)
        token = _current.set(ctx)
        try:
            cls: Any = plan.cls
            obj = cls.__new__(cls)
            for dep in plan.fields:
                setattr(obj, dep.name, self._value(plan, dep, ctx))
            if plan.params:
                kwargs = {dep.name: self._value(plan, dep, ctx) for dep in plan.params}
                obj.__init__(**kwargs)
            elif plan.cls.__init__ is not object.__init__:  # type: ignore[misc]
                obj.__init__()
            return obj
        finally:
            _current.reset(token)

    def _value(self, plan: Plan, dep: _Dep, ctx: _Context) -> Any:
        how = dep.how
        if how == "singleton":
            return plan.singletons[dep.name]
        if how == "context":
            return self._context[dep.kind](ctx)
        if how == "connection":
            # Built once per connection: after the first namespace, a dict lookup.
            cache = ctx.conn.store.get(_SCOPE_CACHE)
            if cache is not None and dep.kind in cache:
                return cache[dep.kind]
        return self.injector.get(dep.kind)


def _hints(obj: Any, owner: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=False)
    except Exception as exc:
        raise DependencyError(
            f"cannot read the annotations of {owner.__qualname__}: {exc}"
        ) from exc


def _has_default(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if name in vars(klass):
            return not inspect.ismemberdescriptor(vars(klass)[name])
    return False


def _type_name(kind: Any) -> str:
    return getattr(kind, "__qualname__", None) or repr(kind)
