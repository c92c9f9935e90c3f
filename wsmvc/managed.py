"""Providers whose objects must be awaited or closed: ``async def``, ``yield`` and context
managers.

injector calls providers synchronously and injects what they return, so an ``async def``
provider would inject a coroutine object, and a generator provider a generator. wsmvc
finds such providers in the root binder (:func:`adopt`) and binds the type they really
provide to a provider of its own:

* ``async def p(...) -> X``: ``X``, awaited.
* ``def p(...) -> Iterator[X]`` (or ``Generator[X, None, None]``) that ``yield``\\s once,
  or returns ``ContextManager[X]`` (``@contextmanager``): ``X``, the code after ``yield``
  (the ``__exit__``) runs when its scope ends.
* ``async def p(...) -> AsyncIterator[X]`` (``AsyncGenerator[X, None]``) or
  ``AsyncContextManager[X]`` (``@asynccontextmanager``): the same, awaited.

Sync ones are entered when first needed. Async ones are awaited ahead, in an async place:
application singletons at startup, the others when a namespace whose controller needs
them connects (:func:`resolve`); their sync provider then hands out the awaited value.
Objects with an exit must be ``@singleton`` (closed at application cleanup) or
``@connection_scope`` (closed when the connection ends); an unscoped one has no end to be
closed at, and is refused.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import injector

from .scopes import (
    ConnectionScope,
    Context,
    DependencyError,
    Exit,
    Lifetime,
    current,
    enter,
    leave,
    scope_of,
    type_name,
)

__all__ = ["Root", "Special", "adopt", "resolve"]

_SYNC_YIELD = (collections.abc.Iterator, collections.abc.Generator)
_ASYNC_YIELD = (collections.abc.AsyncIterator, collections.abc.AsyncGenerator)
_SYNC_CM = contextlib.AbstractContextManager
_ASYNC_CM = contextlib.AbstractAsyncContextManager


class Root:
    """The application's own objects from async providers, and the exits of its singletons."""

    def __init__(self) -> None:
        self.cache: dict[Any, Any] = {}
        self.exits: list[Exit] = []
        self.lock: asyncio.Lock | None = None  # made in the loop that first needs it


@attrs.frozen(eq=False)
class Special:
    """A provider of ``key`` that is async (``is_async``) or has an exit (``closes``).

    ``provider`` is the original (it returns the coroutine, generator or context manager),
    ``lifetime`` its scope (``None``: unscoped), ``name`` where it is declared."""

    key: Any
    provider: injector.Provider[Any]
    lifetime: Lifetime | None
    is_async: bool
    closes: bool
    name: str
    root: Root

    @property
    def label(self) -> str:
        """How it is described in errors: ``async provider AuthModule.user``..."""
        kind = "async provider" if self.is_async else "provider"
        return f"{kind} {self.name}"


def adopt(binder: injector.Binder, root: Root, specials: dict[Any, Special]) -> None:
    """Find the async and closing providers of ``binder`` not adopted yet, bind the type each
    provides to a provider of wsmvc's, and record them in ``specials`` (by that type).

    Raises :class:`DependencyError` for a closing provider without a scope to end with, an
    unsupported scope, or a type provided twice."""
    bindings: dict[Any, Any] = getattr(binder, "_bindings", {})
    for interface, binding in list(bindings.items()):
        provider = binding.provider
        if isinstance(provider, (_Awaited, _Entered)) or not isinstance(
            provider, injector.CallableProvider
        ):
            continue
        found = _classify(interface, provider)
        if found is None:
            continue
        key, is_async, closes = found
        name = _callable_name(provider)
        lifetime = _lifetime(binding.scope)
        if lifetime is None and not _unscoped(binding.scope):
            raise DependencyError(
                f"{name} provides {type_name(key)} in {type_name(binding.scope)}: async and"
                " closing providers must be @singleton, @connection_scope or unscoped"
            )
        if closes and lifetime is None:
            raise DependencyError(
                f"{name} provides {type_name(key)} with code to run after it (yield, or a"
                " context manager) but is unscoped, so nothing ends it: mark it @connection_scope"
                " (closed when the connection ends) or @singleton (closed at application cleanup)"
            )
        if key is not interface:
            other = bindings.get(key)
            if other is not None and not isinstance(other, injector.ImplicitBinding):
                if not isinstance(other.provider, (_Awaited, _Entered)):
                    raise DependencyError(
                        f"{type_name(key)} is bound twice: by {name} (which yields it) and by"
                        f" {other.provider!r}; remove one"
                    )
                continue  # adopted before
        special = Special(key, provider, lifetime, is_async, closes, name, root)
        specials[key] = special
        ours: injector.Provider[Any] = _Awaited(special) if is_async else _Entered(special)
        binder.bind(key, to=ours, scope=binding.scope)


def _classify(
    interface: Any, provider: injector.CallableProvider[Any]
) -> tuple[Any, bool, bool] | None:
    """``(provided type, is async, has an exit)`` of a special provider, else ``None``."""
    fn: Any = getattr(provider, "_callable", None)
    if fn is None:
        return None
    plain = inspect.unwrap(getattr(fn, "__func__", fn))
    origin = typing.get_origin(interface)
    args = typing.get_args(interface)
    if origin in _SYNC_YIELD and args and inspect.isgeneratorfunction(plain):
        return args[0], False, True
    if origin in _ASYNC_YIELD and args and inspect.isasyncgenfunction(plain):
        return args[0], True, True
    if origin is _SYNC_CM and args:
        return args[0], False, True
    if origin is _ASYNC_CM and args:
        return args[0], True, True
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(plain):
        return interface, True, False
    return None


def _lifetime(scope: Any) -> Lifetime | None:
    if isinstance(scope, injector.ScopeDecorator):
        scope = scope.scope
    if isinstance(scope, type) and issubclass(scope, injector.SingletonScope):
        return Lifetime.APPLICATION
    if isinstance(scope, type) and issubclass(scope, ConnectionScope):
        return Lifetime.CONNECTION
    return None


def _unscoped(scope: Any) -> bool:
    if isinstance(scope, injector.ScopeDecorator):
        scope = scope.scope
    return scope is None or (isinstance(scope, type) and issubclass(scope, injector.NoScope))


def _callable_name(provider: injector.CallableProvider[Any]) -> str:
    fn: Any = getattr(provider, "_callable", provider)
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if owner is not None and not isinstance(owner, type):
        return f"{type(owner).__name__}.{getattr(fn, '__name__', name)}"
    return str(name)


def _exits_for(special: Special, ctx: Context | None) -> list[Exit]:
    if special.lifetime is Lifetime.APPLICATION:
        return special.root.exits
    if ctx is None:
        raise LookupError(f"{type_name(special.key)}: no connection is being served")
    return scope_of(ctx.conn).exits


class _Entered(injector.Provider[Any]):
    """``special``'s sync generator or context manager, entered; its exit goes to the scope."""

    def __init__(self, special: Special) -> None:
        self.special = special

    def get(self, inj: injector.Injector) -> Any:
        special = self.special
        exits = _exits_for(special, current())
        raw = special.provider.get(inj)
        if hasattr(raw, "__enter__") and hasattr(raw, "__exit__"):
            value = raw.__enter__()
            exits.append((_what(special), lambda: raw.__exit__(None, None, None)))
            return value
        if not inspect.isgenerator(raw):
            raise TypeError(f"{special.name} returned {raw!r}, not a generator or context manager")
        try:
            value = next(raw)
        except StopIteration:
            raise RuntimeError(f"{special.name} returned without yielding") from None
        exits.append((_what(special), lambda: _finish_generator(raw, special)))
        return value


def _what(special: Special) -> str:
    return f"{type_name(special.key)} (from {special.name})"


def _finish_generator(gen: Any, special: Special) -> None:
    try:
        next(gen)
    except StopIteration:
        return
    gen.close()
    raise RuntimeError(f"{special.name} yielded more than once")


class _Awaited(injector.Provider[Any]):
    """The value :func:`resolve` awaited for ``special`` (sync: injector cannot await)."""

    def __init__(self, special: Special) -> None:
        self.special = special

    def get(self, inj: injector.Injector) -> Any:
        special = self.special
        key = special.key
        if special.lifetime is Lifetime.APPLICATION:
            if key in special.root.cache:
                return special.root.cache[key]
            raise LookupError(
                f"{type_name(key)} comes from the {special.label}: it is awaited when the"
                " application starts (server.mount hooks it into on_startup), not before"
            )
        ctx = current()
        awaited = ctx.awaited if ctx is not None and special.lifetime is None else None
        if awaited is not None and key in awaited:
            return awaited[key]
        raise LookupError(
            f"{type_name(key)} comes from the {special.label}, which is awaited when a"
            " namespace whose controller needs it connects: inject it into the controller"
            " (a field, an __init__ or handler parameter) rather than getting it from"
            " ProviderOf or Injector.get, which cannot await"
        )


async def resolve(special: Special, inj: injector.Injector, ctx: Context | None) -> None:
    """Await ``special`` unless its scope has it already, and keep the value (and its exit)
    in that scope: the application's, ``ctx``'s connection, or ``ctx.awaited`` (unscoped)."""
    key = special.key
    lock: asyncio.Lock | None
    if special.lifetime is Lifetime.APPLICATION:
        root = special.root
        store, exits = root.cache, root.exits
        if root.lock is None:
            root.lock = asyncio.Lock()
        lock = root.lock
    elif ctx is None:
        raise LookupError(f"{type_name(key)}: no connection is being served")
    elif special.lifetime is Lifetime.CONNECTION:
        scope = scope_of(ctx.conn)
        store, exits = scope.cache, scope.exits
        if scope.lock is None:
            scope.lock = asyncio.Lock()
        lock = scope.lock
    else:
        assert ctx.awaited is not None
        store, exits, lock = ctx.awaited, [], None
    if key in store:
        return
    async with lock if lock is not None else contextlib.nullcontext():
        if key in store:
            return
        token = enter(ctx) if ctx is not None else None
        try:
            raw = special.provider.get(inj)
        finally:
            if token is not None:
                leave(token)
        value, close = await _enter(raw, special)
        store[key] = value
        if close is not None:
            exits.append((_what(special), close))


async def _enter(raw: Any, special: Special) -> tuple[Any, Callable[[], Awaitable[object]] | None]:
    if inspect.isawaitable(raw) and not special.closes:
        return await raw, None
    if hasattr(raw, "__aenter__") and hasattr(raw, "__aexit__"):
        value = await raw.__aenter__()
        return value, lambda: raw.__aexit__(None, None, None)
    if inspect.isasyncgen(raw):
        try:
            value = await raw.__anext__()
        except StopAsyncIteration:
            raise RuntimeError(f"{special.name} returned without yielding") from None

        async def finish() -> None:
            try:
                await raw.__anext__()
            except StopAsyncIteration:
                return
            await raw.aclose()
            raise RuntimeError(f"{special.name} yielded more than once")

        return value, finish
    if inspect.isawaitable(raw):
        return await raw, None
    raise TypeError(
        f"{special.name} returned {raw!r}, not an awaitable, async generator or async"
        " context manager"
    )
