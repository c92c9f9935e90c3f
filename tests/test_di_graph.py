"""Issue 11, dependency injection checked before any client connects, and what it allows.

* The whole graph behind a controller is checked at ``prepare()`` (application startup): a
  longer-lived object never depends on a shorter-lived one (the chain is named), cycles, what
  ``ProviderOf`` points at, ``async`` providers where they cannot be awaited.
* ``async def`` providers are awaited (singletons at startup, the others when the namespace
  connects) instead of injecting a coroutine object.
* A handler parameter is the message, the body or a dependency (``Inject[X]``, or a context
  type), decided when the class is decorated.
* The built-ins: ``web.Request``, ``Headers``, ``ClientAddress``, the controller's logger.

Real servers on 127.0.0.1 and the Python client; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from injector import Binder, Inject, Injector, Module, ProviderOf, inject, provider, singleton

import wsmvc
from wsmvc import (
    ClientAddress,
    Conn,
    ControllerError,
    DependencyError,
    EventError,
    Headers,
    Message,
    NSConn,
    Server,
    connection_scope,
    controller,
    event,
)

from .conftest import Serve

T = 5.0  # seconds for anything that must happen


async def ask(url: str, namespace: str, event_name: str, **dial: object) -> str:
    """Connect ``namespace`` with a new client, ask ``event_name`` and return the answer."""
    async with await wsmvc.dial(url, {namespace: {}}, **dial) as conn:  # type: ignore[arg-type]
        ns = await conn.connect(namespace)
        return (await ns.ask(event_name, timeout=T)).text


# -------------------------------------------------------------------------------------------
# lifetimes: the "second client is told the first one's name"
# -------------------------------------------------------------------------------------------


class UserName(str):
    """The name the upgrade request carries."""


class NameModule(Module):
    @provider
    def name(self, request: web.Request) -> UserName:
        return UserName(request.headers.get("X-User", "nobody"))


@singleton
class Greeter:
    """A singleton that needs, through UserName, the request: one client's identity."""

    @inject
    def __init__(self, name: UserName) -> None:
        self.name = name


@controller(namespace="hello")
class Hello:
    greeter: Greeter

    @event
    def on_greet(self) -> str:
        return f"hello {self.greeter.name}"


CHAIN = (
    r"Hello\.greeter \(field: Greeter\): Greeter \(singleton\) -> UserName -> web\.Request"
    r" \(per connection\): a singleton cannot depend on a per-connection object .*; make"
    r" Greeter connection_scope or inject ProviderOf\[UserName\]"
)


def test_a_singleton_that_needs_the_request_through_a_class_is_refused() -> None:
    server = Server(modules=[NameModule()], controllers=[Hello])
    with pytest.raises(DependencyError, match=CHAIN):
        server.prepare()


async def test_such_a_server_does_not_start(serve: Serve) -> None:
    # Before issue 11 it started, built Greeter for the first client, and told the second
    # client the first one's name. Now the application's startup fails, naming the chain.
    with pytest.raises(DependencyError, match=CHAIN):
        await serve(Server(modules=[NameModule()], controllers=[Hello]))


@singleton
class LazyGreeter:
    """The fix the error suggests: ProviderOf, asked for each use."""

    @inject
    def __init__(self, name: ProviderOf[UserName]) -> None:
        self.name = name


@controller(namespace="lazy")
class LazyHello:
    greeter: LazyGreeter

    @event
    def on_greet(self) -> str:
        return f"hello {self.greeter.name.get()}"


async def test_with_provider_of_each_client_gets_its_own_name(serve: Serve) -> None:
    url = await serve(Server(modules=[NameModule()], controllers=[LazyHello]))
    assert await ask(url, "lazy", "OnGreet", headers={"X-User": "ann"}) == "hello ann"
    assert await ask(url, "lazy", "OnGreet", headers={"X-User": "bob"}) == "hello bob"


class Tenant:
    pass


class Audit:
    pass


@pytest.mark.parametrize(
    ("configure", "chain"),
    [
        pytest.param(
            lambda b: b.bind(Audit, to=_audit_from(Conn), scope=singleton),
            r"Audit \(singleton\) -> Conn \(per connection\): a singleton cannot",
            id="module-binding-to-conn",
        ),
        pytest.param(
            lambda b: (
                b.bind(Tenant, scope=connection_scope),
                b.bind(Audit, to=_audit_from(Tenant), scope=singleton),
            ),
            r"Audit \(singleton\) -> Tenant \(connection_scope\): a singleton cannot depend"
            r" on a per-connection object",
            id="singleton-to-connection-scope",
        ),
        pytest.param(
            lambda b: b.bind(Audit, to=_audit_from(NSConn), scope=singleton),
            r"Audit \(singleton\) -> NSConn \(per namespace connection\): a singleton cannot"
            r" depend on a per-namespace-connection object .*; make Audit unscoped",
            id="singleton-to-nsconn",
        ),
        pytest.param(
            lambda b: b.bind(Audit, to=_audit_from(logging.Logger), scope=connection_scope),
            r"Audit \(connection_scope\) -> logging\.Logger \(per namespace connection\): a"
            r" per-connection object cannot depend on a per-namespace-connection object",
            id="connection-scope-to-logger",
        ),
        pytest.param(
            lambda b: b.bind(Audit, to=_audit_from(Headers), scope=singleton),
            r"Audit \(singleton\) -> Headers \(per connection\)",
            id="singleton-to-headers",
        ),
    ],
)
def test_lifetimes_through_module_bindings(configure: object, chain: str) -> None:
    @controller(namespace="x")
    class Uses:
        audit: Audit

    server = Server(modules=[configure], controllers=[Uses])  # type: ignore[list-item]
    with pytest.raises(DependencyError, match=r"Uses\.audit \(field: Audit\): " + chain):
        server.prepare()


def _audit_from(kind: type) -> object:
    """A provider function of Audit that needs ``kind`` (injected, per injector's rules)."""

    def make(dependency: object) -> Audit:
        return Audit()

    make.__annotations__ = {"dependency": kind, "return": Audit}
    return inject(make)


class Clock:
    pass


class ClockModule(Module):
    @singleton
    @provider
    def clock(self, name: UserName) -> Clock:
        return Clock()


def test_lifetimes_through_provider_methods_and_a_handler_parameter() -> None:
    @controller(namespace="x")
    class Uses:
        @event
        def on_time(self, clock: Inject[Clock]) -> str:
            return "now"

    server = Server(modules=[NameModule(), ClockModule()], controllers=[Uses])
    with pytest.raises(
        DependencyError,
        match=r"Uses\.on_time parameter 'clock' \(Clock\): Clock \(singleton\) -> UserName"
        r" -> web\.Request \(per connection\)",
    ):
        server.prepare()


@connection_scope
class Basket:
    @inject
    def __init__(self, conn: Conn, request: web.Request, server: Server) -> None:
        pass


@singleton
class Catalog:
    @inject
    def __init__(self, server: Server, injector: Injector) -> None:
        pass


def test_a_connection_scope_object_may_depend_on_the_connection_and_singletons() -> None:
    @controller(namespace="x")
    class Shop:
        basket: Basket
        catalog: Catalog

    Server(controllers=[Shop]).prepare()


class Egg:
    pass


class Hen:
    pass


@inject
def lay(hen: Hen) -> Egg:
    return Egg()


@inject
def hatch(egg: Egg) -> Hen:
    return Hen()


def test_a_circular_dependency_is_refused() -> None:
    def bind(binder: Binder) -> None:
        binder.bind(Egg, to=lay)
        binder.bind(Hen, to=hatch)

    @controller(namespace="x")
    class Farm:
        egg: Egg

    with pytest.raises(DependencyError, match=r"circular dependency: Egg -> Hen -> Egg"):
        Server(modules=[bind], controllers=[Farm]).prepare()


class Mailer:
    def __init__(self, host: str) -> None:  # not @inject: injector cannot build it
        self.host = host


def test_provider_of_something_nothing_can_provide_is_refused() -> None:
    @controller(namespace="x")
    class Mail:
        mailer: ProviderOf[Mailer]

    with pytest.raises(
        DependencyError,
        match=r"nothing can provide .*Mail\.mailer \(field: ProviderOf\[Mailer\]\):"
        r" ProviderOf\[Mailer\]: Mailer\.__init__ needs host but is not @inject",
    ):
        Server(controllers=[Mail]).prepare()


class Notifier:
    def __init__(self, url: str) -> None:
        self.url = url


def test_a_handler_dependency_nothing_can_provide_is_refused_at_prepare() -> None:
    @controller(namespace="x")
    class Alerts:
        @event
        def on_alert(self, msg: Message, notifier: Inject[Notifier]) -> None: ...

    server = Server(controllers=[Alerts])  # registering reads annotations only
    with pytest.raises(
        DependencyError,
        match=r"nothing can provide .*Alerts\.on_alert parameter 'notifier' \(Notifier\):"
        r" Notifier\.__init__ needs url but is not @inject",
    ):
        server.prepare()


# -------------------------------------------------------------------------------------------
# async providers
# -------------------------------------------------------------------------------------------


class Profile:
    def __init__(self, name: str) -> None:
        self.name = name


class Quota:
    def __init__(self, left: int) -> None:
        self.left = left


class Pool:
    def __init__(self) -> None:
        self.opened = True


class Counters:
    def __init__(self) -> None:
        self.profiles = 0
        self.quotas = 0
        self.pools = 0


def async_module(counters: Counters) -> Module:
    class AsyncModule(Module):
        @connection_scope
        @provider
        async def profile(self, headers: Headers) -> Profile:
            await asyncio.sleep(0)  # a real await: a database, an HTTP call...
            counters.profiles += 1
            name = headers.get("X-User", "anon")
            if name == "broken":
                raise ConnectionError("profile service down")
            return Profile(name)

        @provider
        async def quota(self, profile: Profile) -> Quota:
            await asyncio.sleep(0)
            counters.quotas += 1
            return Quota(10 * counters.quotas)

        @singleton
        @provider
        async def pool(self) -> Pool:
            await asyncio.sleep(0)
            counters.pools += 1
            return Pool()

    return AsyncModule()


@controller(namespace="a")
class ProfileA:
    profile: Profile
    quota: Quota  # unscoped async: awaited for each controller

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @event
    def on_who(self) -> str:
        return f"{self.profile.name}:{self.quota.left}:{self.pool.opened}"

    @event
    def on_same(self, profile: Inject[Profile]) -> str:
        return str(profile is self.profile)


@controller(namespace="b")
class ProfileB:
    profile: Profile

    @event
    def on_who(self) -> str:
        return self.profile.name


async def test_async_providers_are_awaited_in_their_scope(serve: Serve) -> None:
    counters = Counters()
    server = Server(modules=[async_module(counters)], controllers=[ProfileA, ProfileB])
    url = await serve(server)
    assert counters.pools == 1  # the async singleton: awaited at startup
    assert counters.profiles == 0
    client = {"a": {}, "b": {}}
    async with (
        await wsmvc.dial(url, client, headers={"X-User": "ann"}) as ann,
        await wsmvc.dial(url, client, headers={"X-User": "bob"}) as bob,
    ):
        ann_a = await ann.connect("a")
        assert (await ann_a.ask("OnWho", timeout=T)).text == "ann:10:True"
        assert (await (await ann.connect("b")).ask("OnWho", timeout=T)).text == "ann"
        assert (await ann_a.ask("OnSame", timeout=T)).text == "True"
        assert counters.profiles == 1  # once per connection, shared by its namespaces
        bob_a = await bob.connect("a")
        assert (await bob_a.ask("OnWho", timeout=T)).text == "bob:20:True"
        assert counters.profiles == 2
        await ann_a.disconnect()
        ann_a = await ann.connect("a")
        assert (await ann_a.ask("OnWho", timeout=T)).text == "ann:30:True"  # a new Quota
    assert (counters.profiles, counters.quotas, counters.pools) == (2, 3, 1)


async def test_an_async_provider_that_fails_refuses_the_namespace_only(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(modules=[async_module(Counters())], controllers=[ProfileA, ProfileB])
    url = await serve(server)
    with caplog.at_level(logging.ERROR, logger="wsmvc"):
        async with await wsmvc.dial(url, {"b": {}}, headers={"X-User": "broken"}) as conn:
            with pytest.raises(EventError, match=r"^internal server error$"):
                await conn.connect("b")
            assert not conn.closed
    assert "profile service down" in caplog.text
    assert "cannot create ProfileB" in caplog.text


def test_an_unscoped_async_provider_in_a_handler_parameter_is_refused() -> None:
    @controller(namespace="x")
    class PerMessage:
        @event
        def on_quota(self, quota: Inject[Quota]) -> str:
            return str(quota.left)

    server = Server(modules=[async_module(Counters())], controllers=[PerMessage])
    with pytest.raises(
        DependencyError,
        match=r"PerMessage\.on_quota parameter 'quota' \(Quota\): Quota \(async, unscoped\):"
        r" Quota comes from the async provider AsyncModule\.quota, which is unscoped: .*"
        r" mark it @connection_scope",
    ):
        server.prepare()


def test_an_unscoped_async_provider_behind_provider_of_is_refused() -> None:
    @controller(namespace="x")
    class Later:
        quotas: ProviderOf[Quota]

    with pytest.raises(DependencyError, match=r"Later\.quotas .*Quota \(async, unscoped\)"):
        Server(modules=[async_module(Counters())], controllers=[Later]).prepare()


class Handle:
    pass


class Files(Module):
    @provider
    def handle(self) -> Iterator[Handle]:
        yield Handle()


class AsyncFiles(Module):
    @connection_scope
    @provider
    async def handle(self) -> AsyncIterator[Handle]:
        yield Handle()

    def configure(self, binder: Binder) -> None:
        binder.bind(Handle, to=Handle())


def test_an_unscoped_closing_provider_is_refused() -> None:
    @controller(namespace="x")
    class Reader:
        handle: Handle

    with pytest.raises(
        DependencyError,
        match=r"Files\.handle provides Handle with code to run after it .* but is unscoped,"
        r" so nothing ends it: mark it @connection_scope",
    ):
        Server(modules=[Files()], controllers=[Reader]).prepare()


def test_a_type_provided_twice_is_refused() -> None:
    @controller(namespace="x")
    class Reader:
        handle: Handle

    with pytest.raises(DependencyError, match=r"Handle is bound twice: by AsyncFiles\.handle"):
        Server(modules=[AsyncFiles()], controllers=[Reader]).prepare()


# -------------------------------------------------------------------------------------------
# handler parameters: the message, the body, or a dependency
# -------------------------------------------------------------------------------------------


class Service:
    """A plain class: it cannot be a body."""

    def __init__(self) -> None:
        self.calls = 0


def test_a_service_class_parameter_is_refused_at_decoration() -> None:
    with pytest.raises(
        ControllerError,
        match=r"Bad\.on_chat: parameter 'svc' is the message, the body or a dependency, and"
        r" Service can be none of them \(Service is not a body type.*\)\. Annotate it Message"
        r" for the message; a body type for the body; or Inject\[Service\] \(from injector"
        r" import Inject\) for a dependency",
    ):

        @controller(namespace="x")
        class Bad:
            @event
            def on_chat(self, msg: Message, svc: Service) -> None: ...


@singleton
class Hits:
    def __init__(self) -> None:
        self.count = 0


@connection_scope
class Visit:
    def __init__(self) -> None:
        self.count = 0


@controller(namespace="deps")
class Deps:
    @event
    def on_count(
        self,
        text: str,
        hits: Inject[Hits],
        visit: Inject[Visit],
        fresh: Inject[Service],
        ns: NSConn,
    ) -> str:
        hits.count += 1
        visit.count += 1
        fresh.calls += 1
        return f"{text}:{hits.count}:{visit.count}:{fresh.calls}:{ns.namespace}"


async def test_inject_parameters_follow_their_scope(serve: Serve) -> None:
    url = await serve(Server(controllers=[Deps]))
    async with (
        await wsmvc.dial(url, {"deps": {}}) as first,
        await wsmvc.dial(url, {"deps": {}}) as second,
    ):
        one = await first.connect("deps")
        two = await second.connect("deps")
        # a singleton, one per connection, a new one per message
        assert (await one.ask("OnCount", "a", timeout=T)).text == "a:1:1:1:deps"
        assert (await one.ask("OnCount", "b", timeout=T)).text == "b:2:2:1:deps"
        assert (await two.ask("OnCount", "c", timeout=T)).text == "c:3:1:1:deps"


@connection_scope
class Cart:
    def __init__(self) -> None:
        self.items: list[str] = []


@controller(namespace="shop")
class Shop:
    cart: Cart

    @event
    def on_reach(self, injector: Inject[Injector], carts: Inject[ProviderOf[Cart]]) -> str:
        # inside a handler: the same connection-scoped object as the controller's field
        return f"{injector.get(Cart) is self.cart}/{carts.get() is self.cart}"

    @event
    async def on_later(self, injector: Inject[Injector]) -> str:
        async def elsewhere() -> bool:  # a task started by the handler: same connection
            return injector.get(Cart) is self.cart

        return str(await asyncio.create_task(elsewhere()))


async def test_provider_of_and_the_injector_reach_the_connection_scope_from_handlers(
    serve: Serve,
) -> None:
    server = Server(controllers=[Shop])
    url = await serve(server)
    async with (
        await wsmvc.dial(url, {"shop": {}}) as first,
        await wsmvc.dial(url, {"shop": {}}) as second,
    ):
        one = await first.connect("shop")
        two = await second.connect("shop")
        assert (await one.ask("OnReach", timeout=T)).text == "True/True"
        assert (await two.ask("OnReach", timeout=T)).text == "True/True"
        assert (await one.ask("OnLater", timeout=T)).text == "True"
        carts = [m.controller.cart for m in server.namespace_members("shop")]
        assert carts[0] is not carts[1]
    with pytest.raises(LookupError, match=r"Cart is connection_scope: it exists only while"):
        server.injector.get(Cart)  # outside any connection


async def test_dependencies_in_system_event_handlers(serve: Serve) -> None:
    @controller(namespace="gate")
    class Gate:
        @event
        def on_namespace_connect(self, msg: Message, headers: Headers) -> None:
            if headers.get("X-Key") != "open":
                raise EventError("closed")

        @event
        def on_enter(self, hits: Inject[Hits]) -> str:
            hits.count += 1
            return str(hits.count)

    url = await serve(Server(controllers=[Gate]))
    async with await wsmvc.dial(url, {"gate": {}}) as conn:
        with pytest.raises(EventError, match=r"^closed$"):
            await conn.connect("gate")
    assert await ask(url, "gate", "OnEnter", headers={"X-Key": "open"}) == "1"


# -------------------------------------------------------------------------------------------
# built-ins: the request, its headers, the client's address, the controller's logger
# -------------------------------------------------------------------------------------------


class Origin:
    """A user class built from the built-ins."""

    @inject
    def __init__(self, address: ClientAddress, headers: Headers) -> None:
        self.text = f"{address}|{headers.get('X-Trace')}"


@controller(namespace="builtins")
class BuiltIns:
    request: web.Request
    headers: Headers
    address: ClientAddress
    log: logging.Logger
    origin: Origin

    @event
    def on_fields(self) -> str:
        return "|".join(
            [
                self.request.headers["X-Trace"],
                self.headers["x-trace"],  # case-insensitive
                self.address,
                self.log.name,
                self.origin.text,
            ]
        )

    @event
    def on_params(
        self, request: web.Request, headers: Headers, address: ClientAddress, log: logging.Logger
    ) -> str:
        log.info("params asked")
        same = request is self.request and log is self.log
        return f"{same}|{headers['X-Trace']}|{address}"


async def test_built_ins_in_fields_providers_and_handler_parameters(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve(Server(controllers=[BuiltIns]))
    name = f"{__name__}.BuiltIns"
    async with await wsmvc.dial(url, {"builtins": {}}, headers={"X-Trace": "t-7"}) as conn:
        ns = await conn.connect("builtins")
        assert (await ns.ask("OnFields", timeout=T)).text == (
            f"t-7|t-7|127.0.0.1|{name}|127.0.0.1|t-7"
        )
        with caplog.at_level(logging.INFO, logger=name):
            assert (await ns.ask("OnParams", timeout=T)).text == "True|t-7|127.0.0.1"
    assert [(r.name, r.getMessage()) for r in caplog.records if r.name == name] == [
        (name, "params asked")
    ]


SERVER = web.AppKey("server", Server)


@controller(namespace="which")
class Which:
    server: Server

    @event
    def on_port(self, request: web.Request) -> str:
        return str(self.server is request.app[SERVER])


async def test_two_servers_sharing_an_injector_each_inject_themselves(serve: Serve) -> None:
    root = Injector()
    urls = []
    for _ in range(2):
        server = Server(injector=root, controllers=[Which])
        app = web.Application()
        app[SERVER] = server  # what each connection's request can tell apart
        urls.append(await serve(server, app=app))
    for url in urls:
        assert await ask(url, "which", "OnPort") == "True"
