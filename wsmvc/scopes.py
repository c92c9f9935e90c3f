"""How long injected objects live, and how they end.

Three lifetimes, longest first: the application (``@singleton``, :class:`~wsmvc.Server`),
a websocket connection (:data:`connection_scope`, ``web.Request``, :class:`~wsmvc.Conn`,
the headers, the client address) and a namespace connection (:class:`~wsmvc.NSConn`, the
controller's logger, and every unscoped binding, built anew for each controller).

The connection being served is known from a context variable: set while a controller is
built (with its namespace), else taken from :func:`wsmvc.conn.serving` — the connection
whose serving task (or a task it started) runs the current code — so ``ProviderOf[...]``
and an injected ``Injector`` reach connection-scoped objects from handlers too.

A connection's scope (:class:`ConnScope`, kept in ``conn.store``) caches its objects and
the exits of those that need closing (providers that ``yield`` or return a context
manager); :func:`run_exits` closes them in reverse order of creation, logging errors.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import injector

from .conn import Conn, serving
from .errors import WsmvcError
from .nsconn import NSConn

__all__ = [
    "CURRENT",
    "SCOPE_KEY",
    "ConnScope",
    "ConnectionScope",
    "Context",
    "DependencyError",
    "Exit",
    "Lifetime",
    "connection_scope",
    "current",
    "run_exits",
]

T = TypeVar("T")
log = logging.getLogger("wsmvc")

SCOPE_KEY = "wsmvc.connection_scope"
"""The key of a connection's :class:`ConnScope` in ``Conn.store``."""


class DependencyError(WsmvcError, TypeError):
    """A dependency cannot be provided, or not safely: the text names the class, the field
    or parameter, the chain of dependencies that leads to the problem, and the fix (a
    ``TypeError`` too)."""


class Lifetime(enum.IntEnum):
    """How long an object lives; a longer-lived object may not depend on a shorter-lived one."""

    NAMESPACE = 1  #: one namespace connection (one controller)
    CONNECTION = 2  #: one websocket connection
    APPLICATION = 3  #: the server's whole life

    @property
    def adjective(self) -> str:
        """``per namespace connection``, ``per connection`` or ``application-wide``."""
        return _ADJECTIVES[self]


_ADJECTIVES = {
    Lifetime.NAMESPACE: "per namespace connection",
    Lifetime.CONNECTION: "per connection",
    Lifetime.APPLICATION: "application-wide",
}


class Context:
    """What is being served: the connection, the namespace (``None`` outside a controller's
    construction and its handler parameters), the controller's logger, and the values of
    unscoped async providers awaited for this construction (``awaited``)."""

    __slots__ = ("awaited", "conn", "logger", "nsconn")

    def __init__(
        self,
        conn: Conn,
        nsconn: NSConn | None = None,
        logger: logging.Logger | None = None,
        awaited: dict[Any, Any] | None = None,
    ) -> None:
        self.conn = conn
        self.nsconn = nsconn
        self.logger = logger
        self.awaited = awaited


CURRENT: contextvars.ContextVar[Context] = contextvars.ContextVar("wsmvc_injection")
"""The context being built (set around a controller's construction and a handler's dependencies)."""


def current() -> Context | None:
    """The context being served: the one set while building, else the serving connection's."""
    ctx = CURRENT.get(None)
    if ctx is not None:
        return ctx
    conn = serving()
    return Context(conn) if conn is not None else None


def enter(ctx: Context) -> contextvars.Token[Context]:
    """Make ``ctx`` the current context until :func:`leave` with the returned token."""
    return CURRENT.set(ctx)


def leave(token: contextvars.Token[Context]) -> None:
    """Restore the context :func:`enter` replaced."""
    CURRENT.reset(token)


# -- the connection scope ------------------------------------------------------------------

Exit = tuple[str, Callable[[], "Awaitable[object] | object"]]
"""What closes one object: its name (for the log) and a call, sync or async."""


class ConnScope:
    """One connection's objects: ``cache`` (interface → object), the ``exits`` of those that
    need closing, in creation order, and whether the scope ended (``closed``)."""

    __slots__ = ("cache", "closed", "exits", "lock")

    def __init__(self) -> None:
        self.cache: dict[Any, Any] = {}
        self.exits: list[Exit] = []
        self.closed = False
        self.lock: asyncio.Lock | None = None  # made by the first async provider


def scope_of(conn: Conn) -> ConnScope:
    """``conn``'s scope, made on first use; raises :class:`LookupError` once it ended."""
    scope: ConnScope | None = conn.store.get(SCOPE_KEY)
    if scope is None:
        scope = conn.store[SCOPE_KEY] = ConnScope()
    if scope.closed:
        raise LookupError(
            f"{conn!r} has ended and its connection-scoped objects are closed: a task that"
            " outlives its connection cannot create new ones"
        )
    return scope


def cached(conn: Conn) -> dict[Any, Any] | None:
    """The objects ``conn``'s scope holds, or ``None`` when it has none yet (fast path)."""
    scope: ConnScope | None = conn.store.get(SCOPE_KEY)
    return scope.cache if scope is not None else None


async def end_connection(conn: Conn) -> None:
    """End ``conn``'s scope: close its objects (reverse order) and refuse new ones. Once."""
    scope: ConnScope | None = conn.store.get(SCOPE_KEY)
    if scope is None:
        scope = conn.store[SCOPE_KEY] = ConnScope()
    if scope.closed:
        return
    scope.closed = True
    exits, scope.exits = scope.exits, []
    try:
        await run_exits(exits, repr(conn))
    finally:
        scope.cache.clear()


async def run_exits(exits: list[Exit], owner: str) -> None:
    """Call ``exits`` newest first, each even when an earlier one failed: an ``Exception``
    is logged (with ``owner`` and the object's name), never raised; a cancellation (or
    another ``BaseException``) is re-raised once every exit ran."""
    interrupted: BaseException | None = None
    for name, close in reversed(exits):
        try:
            result = close()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s: closing %s failed", owner, name)
        except BaseException as exc:
            log.warning("%s: closing %s was interrupted: %r", owner, name, exc)
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted


class ConnectionScope(injector.Scope):
    """One instance per websocket connection, shared by all its namespaces and controllers."""

    def get(self, key: type[T], provider: injector.Provider[T]) -> injector.Provider[T]:
        """A provider of ``key`` that builds it once per connection (injector's Scope API);
        outside a connection it raises :class:`LookupError`."""
        return _ConnectionScoped(key, provider)


connection_scope = injector.ScopeDecorator(ConnectionScope)
connection_scope.__doc__ = """Scope decorator (and ``scope=`` of ``binder.bind``): one object
per websocket connection, shared by its namespaces and controllers, torn down (a ``yield``
provider's code after the ``yield``) when the connection ends. A singleton that depends on
one raises :class:`DependencyError` when the server starts."""


class _ConnectionScoped(injector.Provider[T]):
    def __init__(self, key: type[T], provider: injector.Provider[T]) -> None:
        self._key = key
        self._provider = provider

    def get(self, inj: injector.Injector) -> T:
        ctx = current()
        if ctx is None:
            raise LookupError(
                f"{type_name(self._key)} is connection_scope: it exists only while a"
                " connection is served (in a controller, a handler or a task it started)"
            )
        scope = ctx.conn.store.get(SCOPE_KEY)
        if scope is not None and self._key in scope.cache:
            return typing.cast(T, scope.cache[self._key])
        scope = scope_of(ctx.conn)
        value = self._provider.get(inj)
        scope.cache[self._key] = value
        return value


def type_name(kind: Any) -> str:
    """A short readable name of an injection key (a class, a NewType, a generic alias)."""
    origin = typing.get_origin(kind)
    if origin is not None and typing.get_args(kind):
        args = ", ".join(type_name(a) for a in typing.get_args(kind))
        return f"{type_name(origin)}[{args}]"
    name = getattr(kind, "__qualname__", None) or getattr(kind, "__name__", None)
    return str(name) if name else repr(kind)
