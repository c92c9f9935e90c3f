"""Dependency injection with the ``injector`` library, per connection.

The server owns one root :class:`injector.Injector`. Some types come from the connection
being served (:func:`is_context_type`): :class:`aiohttp.web.Request` (the upgrade request),
:data:`Headers`, :data:`ClientAddress`, :class:`~wsmvc.Conn`, :class:`~wsmvc.Server`,
:class:`~wsmvc.NSConn` and a :class:`logging.Logger` named after the controller; user
providers may depend on them. A binding in :data:`connection_scope` lives once per
websocket connection, shared by its namespaces, and is closed when the connection ends
(:mod:`wsmvc.scopes`); ``async`` and ``yield`` providers are awaited and closed by wsmvc
(:mod:`wsmvc.managed`).

Each controller class gets a :class:`Plan` at registration: its injected fields (annotated,
no default, not ``ClassVar``), its ``__init__`` parameters and its handlers' dependency
parameters. :meth:`Injection.prepare` checks the whole graph behind them
(:mod:`wsmvc.depgraph`), resolves the root singletons once and marks each dependency as
taken from the connection, a singleton, once per connection, or resolved each time.
Creating a controller then costs a few attribute sets, not a child injector.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, NewType, TypeAlias

import attrs
import injector
from aiohttp import web
from multidict import CIMultiDictProxy

from .conn import Conn
from .depgraph import Graph, Problem, Reach
from .managed import Root, Special, adopt, resolve
from .nsconn import NSConn
from .scopes import (
    CURRENT,
    SCOPE_KEY,
    ConnectionScope,
    Context,
    DependencyError,
    Lifetime,
    cached,
    connection_scope,
    current,
    end_connection,
    enter,
    leave,
    run_exits,
    type_name,
)

__all__ = [
    "ClientAddress",
    "ConnectionScope",
    "DependencyError",
    "Headers",
    "Injection",
    "ModuleLike",
    "Plan",
    "connection_scope",
    "is_context_type",
]

ModuleLike: TypeAlias = (
    "injector.Module | type[injector.Module] | Callable[[injector.Binder], None]"
)

Headers = NewType("Headers", CIMultiDictProxy[str])
"""Injectable: the headers of the websocket's upgrade request (case-insensitive, read-only),
including what neffos.js clients send as ``X-Websocket-Header-*`` query parameters."""

ClientAddress = NewType("ClientAddress", str)
"""Injectable: the client's IP address, as aiohttp's ``request.remote`` says (behind a
reverse proxy, what a forwarding middleware set; ``""`` when unknown)."""

_Pick = Callable[[Conn, "NSConn | None", "logging.Logger | None"], Any]


def _request(conn: Conn) -> web.Request:
    if conn.request is None:
        raise LookupError("a client connection has no upgrade request")
    return conn.request


def _need(value: Any, name: str) -> Any:
    if value is None:
        raise LookupError(
            f"{name} is injected into a controller (its fields, __init__ and handler"
            " parameters) and what is built for it; elsewhere use the controller's own"
        )
    return value


# Each type the connection provides: how to take it, how long it lives, how it is named.
_CONTEXT: dict[Any, tuple[_Pick, Lifetime, str]] = {
    NSConn: (lambda c, ns, lg: _need(ns, "NSConn"), Lifetime.NAMESPACE, "NSConn"),
    logging.Logger: (lambda c, ns, lg: _need(lg, "Logger"), Lifetime.NAMESPACE, "logging.Logger"),
    Conn: (lambda c, ns, lg: c, Lifetime.CONNECTION, "Conn"),
    web.Request: (lambda c, ns, lg: _request(c), Lifetime.CONNECTION, "web.Request"),
    web.BaseRequest: (lambda c, ns, lg: _request(c), Lifetime.CONNECTION, "web.BaseRequest"),
    Headers: (lambda c, ns, lg: _request(c).headers, Lifetime.CONNECTION, "Headers"),
    ClientAddress: (
        lambda c, ns, lg: _request(c).remote or "",
        Lifetime.CONNECTION,
        "ClientAddress",
    ),
}


def is_context_type(kind: Any) -> bool:
    """Whether ``kind`` is injected from the connection being served, by its type alone:
    ``NSConn``, ``Conn``, ``Server``, ``web.Request``, ``Headers``, ``ClientAddress``,
    ``logging.Logger``."""
    if kind in _CONTEXT:
        return True
    from .server import Server

    return kind is Server


class _FromContext(injector.Provider[Any]):
    """A type taken from the connection being served; ``outside``: what to give when none
    is (the Server at startup: a singleton may depend on it)."""

    def __init__(self, pick: _Pick, name: str, outside: Any = None) -> None:
        self._pick = pick
        self._name = name
        self._outside = outside

    def get(self, inj: injector.Injector) -> Any:
        ctx = current()
        if ctx is None:
            if self._outside is not None:
                return self._outside
            raise LookupError(f"{self._name} is only available while serving a connection")
        return self._pick(ctx.conn, ctx.nsconn, ctx.logger)


@attrs.frozen
class _Dep:
    name: str
    kind: Any
    # "context": taken from the connection; "singleton": resolved once; "connection": once
    # per connection (connection_scope); "inject": asked of the injector every time.
    how: str
    where: str  # "field", "parameter" or "handler", for messages
    method: str = ""  # the handler's method, for "handler"

    @property
    def slot(self) -> str:
        return f"{self.method}.{self.name}" if self.method else self.name


@attrs.define
class Plan:
    """How to build one controller class and feed its handlers: what to inject where.

    ``fields`` and ``params`` (``__init__``) are filled in that order; ``handler_deps`` are
    the dependency parameters of event methods, by ``(method, parameter)``; ``awaits`` the
    async providers to await before building (deepest first); ``logger`` the controller's
    ``logging.Logger`` (named ``module.QualName``)."""

    cls: type
    fields: tuple[_Dep, ...]
    params: tuple[_Dep, ...]
    logger: logging.Logger
    handler_deps: dict[tuple[str, str], _Dep] = attrs.field(factory=dict)
    singletons: dict[str, Any] = attrs.field(factory=dict)
    awaits: tuple[Special, ...] = ()
    ready: bool = False

    def describe(self, dep: _Dep) -> str:
        """``Cls.name (field: Type)``, or ``Cls.method parameter 'name' (Type)``."""
        cls, kind = self.cls.__qualname__, type_name(dep.kind)
        if dep.where == "handler":
            return f"{cls}.{dep.method} parameter {dep.name!r} ({kind})"
        return f"{cls}.{dep.name} ({dep.where}: {kind})"


class Injection:
    """The server's injector, the plans of its controllers, and the application's objects
    from async and closing providers (:meth:`start`, :meth:`close`)."""

    def __init__(
        self,
        root: injector.Injector | None,
        modules: Iterable[ModuleLike],
        server: object,
    ) -> None:
        self.injector = root if root is not None else injector.Injector(list(modules))
        if root is not None:
            for module in modules:
                self.injector.binder.install(module)
        from .server import Server  # the Server being built: its module is loaded

        self._context: dict[Any, _Pick] = {k: v[0] for k, v in _CONTEXT.items()}
        self._lifetimes = {k: (v[1], v[2]) for k, v in _CONTEXT.items()}
        for kind in {Server, type(server)}:
            self._context[kind] = lambda c, ns, lg: c.server
            self._lifetimes[kind] = (Lifetime.APPLICATION, "Server")
        binder = self.injector.binder
        for kind, pick in self._context.items():
            if not binder.has_explicit_binding_for(kind):
                name = self._lifetimes[kind][1]
                binder.bind(kind, to=_FromContext(pick, name, server if name == "Server" else None))
        self._root = Root()
        self._specials: dict[Any, Special] = {}
        self._app_awaits: list[Special] = []  # async singletons, deepest first
        self._late: list[Any] = []  # singletons that need an async one: built at start()

    # -- registration -------------------------------------------------------------------------

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
        logger = logging.getLogger(f"{cls.__module__}.{cls.__qualname__}")
        return Plan(cls, tuple(fields), tuple(params), logger)

    def _dep(self, name: str, kind: Any, where: str, method: str = "") -> _Dep:
        return _Dep(name, kind, "context" if kind in self._context else "inject", where, method)

    def getter(self, plan: Plan, method: str, name: str, kind: Any) -> Callable[[NSConn], Any]:
        """What fills handler ``method``'s dependency parameter ``name`` (of type ``kind``)
        for a message of a namespace connection; ``plan`` checks it in :meth:`prepare`."""
        dep = plan.handler_deps.setdefault((method, name), self._dep(name, kind, "handler", method))
        pick = self._context.get(kind)
        logger = plan.logger
        if pick is not None:
            return lambda ns: pick(ns.conn, ns, logger)
        key = (method, name)
        singletons = plan.singletons
        slot = dep.slot

        def get(ns: NSConn) -> Any:
            how = plan.handler_deps[key].how
            if how == "singleton" and slot in singletons:
                return singletons[slot]
            if how == "connection":
                objects = cached(ns.conn)
                if objects is not None and kind in objects:
                    return objects[kind]
            token = enter(Context(ns.conn, ns, logger))
            try:
                return self.injector.get(kind)
            finally:
                leave(token)

        return get

    # -- startup ------------------------------------------------------------------------------

    def prepare(self, plan: Plan) -> None:
        """Check every dependency of ``plan`` and the graph behind it, and resolve the root
        singletons (those needing an async provider: in :meth:`start`). Raises
        :class:`DependencyError` naming the class, the field or parameter, and the chain."""
        if plan.ready:
            return
        adopt(self.injector.binder, self._root, self._specials)
        graph = Graph(self.injector.binder, self._lifetimes, self._specials)
        reach = Reach()
        deps: dict[str, list[_Dep]] = {"fields": [], "params": [], "handlers": []}
        roots = [
            *(("fields", d) for d in plan.fields),
            *(("params", d) for d in plan.params),
            *(("handlers", d) for d in plan.handler_deps.values()),
        ]
        for group, dep in roots:
            if dep.how == "inject":
                dep = self._check(plan, dep, graph, reach)
            deps[group].append(dep)
        plan.fields, plan.params = tuple(deps["fields"]), tuple(deps["params"])
        plan.handler_deps = {(d.method, d.name): d for d in deps["handlers"]}
        plan.awaits = tuple(reach.awaits)
        for special in reach.awaits:
            if special.lifetime is Lifetime.APPLICATION and special not in self._app_awaits:
                self._app_awaits.append(special)
        plan.ready = True

    def _check(self, plan: Plan, dep: _Dep, graph: Graph, reach: Reach) -> _Dep:
        problem = graph.problem(dep.kind)
        if problem is not None:
            hint = " (a field that is state, not a dependency, needs a default)"
            raise DependencyError(
                f"nothing can provide {plan.describe(dep)}: {problem}"
                + (hint if dep.where == "field" else "")
            )
        singletons = len(reach.singletons)
        try:
            graph.visit(dep.kind, reach, "message" if dep.where == "handler" else "build")
        except Problem as exc:
            raise DependencyError(f"{plan.describe(dep)}: {exc}") from None
        for key, needs_async in reach.singletons[singletons:]:
            if needs_async:
                if key not in self._late:
                    self._late.append(key)
                continue
            try:
                self.injector.get(key)
            except Exception as exc:
                raise DependencyError(f"cannot provide {plan.describe(dep)}: {exc}") from exc
        lifetime = graph.node(dep.kind).lifetime
        if lifetime is Lifetime.APPLICATION:
            if not reach.reaches_async.get(dep.kind, False):
                plan.singletons[dep.slot] = self.injector.get(dep.kind)  # built above
            return attrs.evolve(dep, how="singleton")
        if lifetime is Lifetime.CONNECTION:
            return attrs.evolve(dep, how="connection")
        return dep

    def mount(self, app: web.Application) -> None:
        """Run :meth:`start` at ``app``'s startup and :meth:`close` at its cleanup (each
        after the server's own hooks, appended before)."""

        async def start(app: web.Application) -> None:
            await self.start()

        async def close(app: web.Application) -> None:
            await self.close()

        app.on_startup.append(start)
        app.on_cleanup.append(close)

    async def start(self) -> None:
        """Await the async singletons and build the singletons that need them (at
        application startup, after :meth:`prepare`); raises what their providers raise."""
        for special in self._app_awaits:
            await resolve(special, self.injector, None)
        for key in self._late:
            self.injector.get(key)

    async def close(self) -> None:
        """Close the singletons that need closing (``yield`` and context-manager providers),
        newest first, logging errors (at application cleanup)."""
        exits, self._root.exits = self._root.exits, []
        await run_exits(exits, "application")

    # -- per connection -----------------------------------------------------------------------

    def create(
        self, plan: Plan, conn: Conn, nsconn: NSConn, awaited: dict[Any, Any] | None = None
    ) -> Any:
        """A new instance of ``plan.cls`` for ``nsconn``: fields first, then ``__init__``.
        ``awaited``: what :meth:`await_for` awaited for it."""
        ctx = Context(conn, nsconn, plan.logger, awaited)
        token = CURRENT.set(ctx)
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
            CURRENT.reset(token)

    def must_await(self, plan: Plan, conn: Conn) -> bool:
        """Whether building ``plan``'s controller for ``conn`` must await async providers
        first (not when their values are kept already: the application's, the connection's)."""
        root = self._root.cache
        if any(s.lifetime is Lifetime.APPLICATION and s.key in root for s in plan.awaits):
            plan.awaits = tuple(s for s in plan.awaits if s.key not in root)  # for good
        objects = cached(conn)
        for special in plan.awaits:
            lifetime = special.lifetime
            if lifetime is None or lifetime is Lifetime.APPLICATION:
                return True
            if objects is None or special.key not in objects:
                return True
        return False

    async def await_for(self, plan: Plan, conn: Conn, nsconn: NSConn) -> dict[Any, Any]:
        """Await the async providers ``plan`` needs, deepest first, each once in its scope;
        returns the unscoped ones' values, for :meth:`create`."""
        ctx = Context(conn, nsconn, plan.logger, {})
        for special in plan.awaits:
            await resolve(special, self.injector, ctx)
        assert ctx.awaited is not None
        return ctx.awaited

    def end(self, conn: Conn) -> Awaitable[None]:
        """Close ``conn``'s connection-scoped objects, newest first (errors are logged), and
        refuse new ones; once, after its disconnect events and ``on_disconnect``."""
        return end_connection(conn)

    def _value(self, plan: Plan, dep: _Dep, ctx: Context) -> Any:
        how = dep.how
        if how == "singleton":
            found = plan.singletons.get(dep.slot, _MISSING)
            if found is not _MISSING:
                return found
        elif how == "context":
            return self._context[dep.kind](ctx.conn, ctx.nsconn, ctx.logger)
        elif how == "connection":
            # Built once per connection: after the first namespace, a dict lookup.
            scope = ctx.conn.store.get(SCOPE_KEY)
            if scope is not None and dep.kind in scope.cache:
                return scope.cache[dep.kind]
        return self.injector.get(dep.kind)


_MISSING: Any = object()


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
