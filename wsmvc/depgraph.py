"""The dependency graph of a controller, checked before any client connects.

From each injection point of a controller (a field, an ``__init__`` parameter, a handler
parameter) the graph follows what injector would build: a class's ``@inject``
``__init__``, a module's ``@provider`` method or bound callable, ``ProviderOf[X]``'s ``X``
(lazily). It finds, with the chain of dependencies that leads there:

* what nothing can provide (a ``Protocol`` or abstract class nobody bound, a ``str`` nobody
  bound, a class whose constructor needs arguments but is not ``@inject``);
* a circular dependency;
* a longer-lived object that depends on a shorter-lived one (a ``@singleton`` that needs
  ``web.Request``, even through unscoped classes in between: it would keep the first
  client's request for every later client);
* an unscoped ``async`` provider reached where it cannot be awaited first (see
  :mod:`wsmvc.managed`).

It also lists, deepest first, the async providers to await and the singletons to build.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import attrs
import injector

from .managed import Special, _Awaited, _Entered
from .scopes import ConnectionScope, Lifetime, type_name

__all__ = ["Graph", "Problem", "Reach"]

_SCALARS = (str, bytes, int, float, bool)


class Problem(Exception):
    """A problem in the graph; its text starts with the chain, the caller adds the root."""


@attrs.frozen
class Node:
    """One injection key: its own lifetime (``None``: unscoped, built for whoever asks),
    ``label`` for chains, what it depends on (``edges``: parameter name, key, whether the
    parameter has a default), ``lazy`` (the ``X`` of ``ProviderOf[X]``), why it cannot be
    provided (``problem``), its async or closing provider, and ``owner`` (who takes the
    parameters)."""

    key: Any
    lifetime: Lifetime | None
    label: str
    edges: tuple[tuple[str, Any, bool], ...] = ()
    lazy: Any = None
    problem: str | None = None
    special: Special | None = None
    owner: str = ""


@attrs.define
class Reach:
    """What one controller reaches: async providers to await and singletons, deepest first
    (each singleton with whether it needs an async provider)."""

    awaits: list[Special] = attrs.field(factory=list)
    singletons: list[tuple[Any, bool]] = attrs.field(factory=list)
    seen: set[tuple[Any, str]] = attrs.field(factory=set)
    reaches_async: dict[Any, bool] = attrs.field(factory=dict)


class Graph:
    """The graph of ``binder``'s bindings; ``context`` maps the types the connection provides
    to their lifetime and display name; ``specials`` are the adopted async/closing providers."""

    def __init__(
        self,
        binder: injector.Binder,
        context: Mapping[Any, tuple[Lifetime, str]],
        specials: Mapping[Any, Special],
    ) -> None:
        self._binder = binder
        self._context = context
        self._specials = specials
        self._nodes: dict[Any, Node] = {}
        self._needs: dict[Any, tuple[Lifetime, list[Any]] | None] = {}

    def name(self, key: Any) -> str:
        """How ``key`` is written in messages."""
        known = self._context.get(key)
        return known[1] if known is not None else type_name(key)

    def node(self, key: Any) -> Node:
        """The node of ``key`` (made once per graph)."""
        found = self._nodes.get(key)
        if found is None:
            found = self._nodes[key] = self._make(key)
        return found

    def _make(self, key: Any) -> Node:
        known = self._context.get(key)
        if known is not None:
            return Node(key, known[0], known[0].adjective)
        if getattr(key, "__origin__", None) is injector.ProviderOf:
            return Node(key, None, "", lazy=key.__args__[0])
        binder = self._binder
        explicit = binder.has_explicit_binding_for(key)
        name = type_name(key)
        if not explicit and getattr(key, "_is_protocol", False):
            return Node(
                key, None, "", problem=f"{name} is a Protocol; bind an implementation in a module"
            )
        try:
            binding, _ = binder.get_binding(key)
        except (injector.UnsatisfiedRequirement, injector.UnknownProvider, TypeError):
            return Node(
                key,
                None,
                "",
                problem=f"bind {name} in a module (binder.bind(...)) or add a @provider",
            )
        lifetime, label = _scope(binding.scope)
        provider = binding.provider
        special = None
        if isinstance(provider, (_Awaited, _Entered)):
            special = provider.special
            provider = special.provider
            label = f"{label}, {'async' if special.is_async else 'closing'}".lstrip(", ")
        if isinstance(provider, injector.ClassProvider):
            cls: Any = provider._cls
            problem = _class_problem(cls, key, explicit)
            edges = () if problem else _edges(cls.__init__)
            return Node(
                key, lifetime, label, edges, None, problem, special, f"{type_name(cls)}.__init__"
            )
        if isinstance(provider, injector.CallableProvider):
            fn: Any = getattr(provider, "_callable", None)
            edges = _edges(fn) if fn is not None else ()
            owner = special.name if special is not None else _owner(fn)
            return Node(key, lifetime, label, edges, None, None, special, owner)
        return Node(key, lifetime, label)

    # -- what nothing can provide -------------------------------------------------------------

    def problem(self, key: Any, seen: set[Any] | None = None) -> str | None:
        """Why ``key`` cannot be provided, following what it needs; ``None`` when it can."""
        seen = set() if seen is None else seen
        if key in seen:
            return None
        seen.add(key)
        node = self.node(key)
        if node.problem is not None:
            return node.problem
        for arg, dep, has_default in node.edges:
            problem = self.problem(dep, seen)
            if problem is not None and not has_default:
                return f"{node.owner} needs {arg}: {problem}"
        if node.lazy is not None:
            problem = self.problem(node.lazy, seen)
            if problem is not None:
                return f"{self.name(key)}: {problem}"
        return None

    # -- lifetimes, cycles, async ---------------------------------------------------------------

    def visit(self, key: Any, reach: Reach, mode: str, path: tuple[Any, ...] = ()) -> bool:
        """Check ``key`` and what it needs; fill ``reach``. ``mode``: ``"build"`` while the
        path from the controller's field or ``__init__`` parameter crossed unscoped keys
        only (an unscoped async provider can be awaited first), else ``"message"`` (a
        handler parameter) or ``"later"`` (behind a scoped key or ``ProviderOf``). Returns
        whether ``key`` needs an async provider (to build it). Raises :class:`Problem`."""
        if key in path:
            cycle = [*path[path.index(key) :], key]
            raise Problem("circular dependency: " + " -> ".join(self.name(k) for k in cycle))
        node = self.node(key)
        special = node.special
        if special is not None and special.is_async and node.lifetime is None and mode != "build":
            where = "a handler parameter" if mode == "message" and not path else "here"
            chain = " -> ".join(
                [*(self.name(k) for k in path), f"{self.name(key)} (async, unscoped)"]
            )
            raise Problem(
                f"{chain}: {self.name(key)} comes from the {special.label}, which is unscoped:"
                " it is awaited once for each controller, when its namespace connects, so it"
                f" can be injected into the controller's fields and __init__ but not {where};"
                " mark it @connection_scope (awaited once per connection) to use it here"
            )
        if (key, mode) in reach.seen:
            return reach.reaches_async.get(key, False)
        reach.seen.add((key, mode))
        if node.lifetime is not None and key not in self._context:
            self._check_lifetime(node)
        inner = mode if node.lifetime is None else "later"
        needs_async = False
        for _, dep, _ in node.edges:
            needs_async = self.visit(dep, reach, inner, (*path, key)) or needs_async
        if node.lazy is not None:
            self.visit(node.lazy, reach, "later")
        if special is not None and special.is_async:
            needs_async = True
            if special not in reach.awaits:
                reach.awaits.append(special)
        singleton = node.lifetime is Lifetime.APPLICATION and key not in self._context
        if singleton and (key, needs_async) not in reach.singletons:
            reach.singletons.append((key, needs_async))
        reach.reaches_async[key] = needs_async or reach.reaches_async.get(key, False)
        return needs_async

    def _check_lifetime(self, node: Node) -> None:
        assert node.lifetime is not None
        need = self._need(node.key, ())
        if need is None or need[0] >= node.lifetime:
            return
        lifetime, chain = need
        first, last = chain[0], chain[-1]
        text = " -> ".join(
            [
                f"{self.name(node.key)} ({node.label})",
                *(self.name(k) for k in chain[:-1]),
                f"{self.name(last)} ({self.node(last).label})",
            ]
        )
        holder = self.name(node.key)
        what = "a singleton" if node.lifetime is Lifetime.APPLICATION else "a per-connection object"
        shorter = (
            "per-connection" if lifetime is Lifetime.CONNECTION else "per-namespace-connection"
        )
        if lifetime is Lifetime.CONNECTION:
            fix = f"make {holder} connection_scope or inject ProviderOf[{self.name(first)}]"
        else:
            fix = f"make {holder} unscoped (one per controller)"
        raise Problem(
            f"{text}: {what} cannot depend on a {shorter} object"
            f" (it would keep the first one for every later client); {fix}"
        )

    def _need(self, key: Any, stack: tuple[Any, ...]) -> tuple[Lifetime, list[Any]] | None:
        """The shortest lifetime ``key`` needs through unscoped keys, and the chain to it."""
        if key in self._needs:
            return self._needs[key]
        best: tuple[Lifetime, list[Any]] | None = None
        for _, dep, _ in self.node(key).edges:
            if dep in stack or dep == key:
                continue
            node = self.node(dep)
            if node.lifetime is not None:
                found: tuple[Lifetime, list[Any]] | None = (node.lifetime, [dep])
            else:
                sub = self._need(dep, (*stack, key))
                found = (sub[0], [dep, *sub[1]]) if sub is not None else None
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        if not stack:
            self._needs[key] = best
        return best


def _scope(scope: Any) -> tuple[Lifetime | None, str]:
    if isinstance(scope, injector.ScopeDecorator):
        scope = scope.scope
    if not isinstance(scope, type):
        return None, ""
    if issubclass(scope, injector.SingletonScope):
        return Lifetime.APPLICATION, "singleton"
    if issubclass(scope, ConnectionScope):
        return Lifetime.CONNECTION, "connection_scope"
    if issubclass(scope, injector.ThreadLocalScope):
        return Lifetime.APPLICATION, "threadlocal"
    return None, ""  # unscoped, or a scope of the application's own: not checked


def _class_problem(cls: Any, key: Any, explicit: bool) -> str | None:
    name = type_name(cls)
    if cls in _SCALARS and not explicit and cls is key:
        return f"{name} has no binding; bind a value for it in a module"
    if inspect.isabstract(cls):
        return f"{name} is abstract; bind an implementation in a module"
    init = getattr(cls, "__init__", object.__init__)
    if init is object.__init__:
        return None
    try:
        needs = injector.get_bindings(init)
        params = list(inspect.signature(init).parameters.values())[1:]
    except Exception:
        return None
    required = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in needs
    ]
    if required and not needs:
        return (
            f"{name}.__init__ needs {', '.join(required)} but is not @inject:"
            " decorate it with @inject, or bind the class in a module"
        )
    return None


def _edges(fn: Any) -> tuple[tuple[str, Any, bool], ...]:
    try:
        needs = injector.get_bindings(fn)
    except Exception:
        return ()
    if not needs:
        return ()
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    return tuple(
        (arg, kind, arg in params and params[arg].default is not params[arg].empty)
        for arg, kind in needs.items()
    )


def _owner(fn: Any) -> str:
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", None) or repr(fn)
    if owner is not None and not isinstance(owner, type):
        return f"{type(owner).__name__}.{name}"
    return str(getattr(fn, "__qualname__", name))
