"""Dependency injection into controllers: the root injector, singletons resolved once, the
connection scope, the context types (request, Conn, Server, NSConn), field and constructor
injection, attrs/dataclass controllers, and the errors for what nothing can provide.

Real servers on loopback with the Python client. What the server built is read back from the
server's own view (``server.namespace_members(ns)[i].controller``) or through an event.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import pytest
from aiohttp import web
from injector import Binder, Injector, Module, inject, provider, singleton

import wsmvc
from wsmvc import (
    Conn,
    DependencyError,
    EventError,
    Message,
    NSConn,
    Server,
    connection_scope,
    controller,
    event,
)

from .conftest import Serve

T = 5.0  # seconds to wait for an answer that must come


# -------------------------------------------------------------------------------------------
# dependencies
# -------------------------------------------------------------------------------------------


@attrs.frozen
class Settings:
    prefix: str


class SettingsModule(Module):
    """Provides one ``Settings`` per injector and counts how often it was built."""

    def __init__(self, prefix: str = "DEV") -> None:
        self.prefix = prefix
        self.built: list[Settings] = []

    @singleton
    @provider
    def settings(self) -> Settings:
        made = Settings(self.prefix)
        self.built.append(made)
        return made


@connection_scope
class Session:
    """One per websocket connection; built with the connection it belongs to."""

    @inject
    def __init__(self, conn: Conn) -> None:
        self.conn_id = conn.id


@singleton
class Registry:
    """A root singleton that (wrongly) wants a per-connection value."""

    @inject
    def __init__(self, session: Session) -> None:
        self.session = session


@attrs.frozen
class User:
    name: str
    agent: str


class UserModule(Module):
    @provider
    def user(self, request: web.Request) -> User:
        return User(request[USER], request.headers.get("User-Agent-Label", ""))


@attrs.frozen
class Where:
    conn: Conn
    ns: NSConn
    server: Server


class WhereModule(Module):
    @provider
    def where(self, conn: Conn, ns: NSConn, server: Server) -> Where:
        return Where(conn, ns, server)


class Quota:
    pass


class Tally:
    """Counts constructions; bound to one instance per test."""

    def __init__(self) -> None:
        self.count = 0


@singleton
class Clock:
    @inject
    def __init__(self, tally: Tally) -> None:
        tally.count += 1


class Cart:
    pass


USER = web.RequestKey("user", str)


class QuotaModule(Module):
    @provider
    def quota(self, request: web.Request) -> Quota:
        if request.headers.get("X-Quota") == "broken":
            raise RuntimeError("quota service down")
        return Quota()


class Storage(abc.ABC):
    @abc.abstractmethod
    def save(self, data: bytes) -> None: ...


class Notifier(Protocol):
    def notify(self, text: str) -> None: ...


class Archive:
    @inject
    def __init__(self, storage: Storage) -> None:
        self.storage = storage


# -------------------------------------------------------------------------------------------
# controllers
# -------------------------------------------------------------------------------------------


@controller(namespace="app")
class App:
    settings: Settings

    @event
    def prefix(self) -> str:
        return self.settings.prefix


@controller(namespace="a")
class SessionA:
    session: Session

    @event
    def session_id(self) -> str:
        return str(id(self.session))


@controller(namespace="b")
class SessionB:
    session: Session

    @event
    def session_id(self) -> str:
        return str(id(self.session))


@controller(namespace="greeter")
class Greeter:
    settings: Settings

    def __init__(self) -> None:
        # the injected field is already set when __init__ runs
        self.greeting = f"{self.settings.prefix}: hello"

    @event
    def greet(self) -> str:
        return self.greeting


@controller(namespace="ctor")
class Constructed:
    def __init__(self, settings: Settings, ns: NSConn, label: str = "default label") -> None:
        self.settings = settings
        self.ns = ns
        self.label = label

    @event
    def describe(self) -> str:
        return f"{self.settings.prefix}/{self.ns.namespace}/{self.label}"


@controller(namespace="attrs")
@attrs.define
class AttrsController:
    settings: Settings
    ns: NSConn
    hits: int = 0

    @event
    def hit(self) -> str:
        self.hits += 1
        return f"{self.settings.prefix}/{self.ns.namespace}/{self.hits}"


@controller(namespace="dataclass")
@dataclasses.dataclass
class DataclassController:
    settings: Settings
    ns: NSConn
    hits: int = 0

    @event
    def hit(self) -> str:
        self.hits += 1
        return f"{self.settings.prefix}/{self.ns.namespace}/{self.hits}"


@controller(namespace="who")
class WhoAmI:
    user: User

    @event
    def whoami(self) -> str:
        return f"{self.user.name}/{self.user.agent}"


@controller(namespace="context")
class Context:
    request: web.Request
    conn: Conn
    server: Server
    ns: NSConn
    where: Where

    @event
    def ping(self) -> str:
        return "pong"


@controller(namespace="metered")
class Metered:
    quota: Quota

    @event
    def ping(self) -> str:
        return "pong"


@controller(namespace="free")
class Free:
    @event
    def ping(self) -> str:
        return "pong"


def members(server: Server, namespace: str) -> list[object]:
    """The controller instances the server built for ``namespace``, in connect order."""
    return [m.controller for m in server.namespace_members(namespace)]


# -------------------------------------------------------------------------------------------
# singletons
# -------------------------------------------------------------------------------------------


async def test_singletons_are_resolved_once_at_startup_and_shared(serve: Serve) -> None:
    module = SettingsModule()
    server = Server(modules=[module], controllers=[App, Greeter])
    assert module.built == []
    url = await serve(server)
    assert len(module.built) == 1  # resolved at startup, before any client
    async with (
        await wsmvc.dial(url, {"app": {}, "greeter": {}}) as first,
        await wsmvc.dial(url, {"app": {}}) as second,
    ):
        a = await first.connect("app")
        b = await second.connect("app")
        assert (await a.ask("Prefix", timeout=T)).text == "DEV"
        assert (await b.ask("Prefix", timeout=T)).text == "DEV"
        one, two = members(server, "app")
        assert isinstance(one, App)
        assert isinstance(two, App)
        assert one is not two
        assert one.settings is two.settings is module.built[0]
        await first.connect("greeter")
        (greeter,) = members(server, "greeter")
        assert isinstance(greeter, Greeter)
        assert greeter.settings is module.built[0]
        await a.disconnect()
        a = await first.connect("app")
        assert (await a.ask("Prefix", timeout=T)).text == "DEV"
    assert len(module.built) == 1
    server.prepare()  # again: nothing is rebuilt
    assert len(module.built) == 1


async def test_a_singleton_class_is_shared_too(serve: Serve) -> None:
    tally = Tally()

    @controller(namespace="clock")
    class UsesClock:
        def __init__(self, clock: Clock) -> None:
            self.clock = clock

    server = Server(modules=[lambda binder: binder.bind(Tally, to=tally)], controllers=[UsesClock])
    url = await serve(server)
    assert tally.count == 1
    async with (
        await wsmvc.dial(url, {"clock": {}}) as first,
        await wsmvc.dial(url, {"clock": {}}) as second,
    ):
        await first.connect("clock")
        await second.connect("clock")
        one, two = members(server, "clock")
        assert isinstance(one, UsesClock)
        assert isinstance(two, UsesClock)
        assert one.clock is two.clock
    assert tally.count == 1


# -------------------------------------------------------------------------------------------
# connection scope
# -------------------------------------------------------------------------------------------


async def test_connection_scope_is_shared_by_namespaces_and_distinct_between_connections(
    serve: Serve,
) -> None:
    server = Server(controllers=[SessionA, SessionB])
    url = await serve(server)
    client = {"a": {}, "b": {}}
    async with (
        await wsmvc.dial(url, client) as first,
        await wsmvc.dial(url, client) as second,
    ):
        first_a = await first.connect("a")
        first_b = await first.connect("b")
        second_a = await second.connect("a")
        one = (await first_a.ask("SessionId", timeout=T)).text
        assert (await first_b.ask("SessionId", timeout=T)).text == one
        assert (await second_a.ask("SessionId", timeout=T)).text != one

        conn = server.get_connections(first.id)[0]
        ctrl_a, ctrl_b = conn.namespaces["a"].controller, conn.namespaces["b"].controller
        assert isinstance(ctrl_a, SessionA)
        assert isinstance(ctrl_b, SessionB)
        assert ctrl_a.session is ctrl_b.session
        assert ctrl_a.session.conn_id == first.id
        other = server.get_connections(second.id)[0].namespaces["a"].controller
        assert isinstance(other, SessionA)
        assert other.session is not ctrl_a.session
        assert other.session.conn_id == second.id

        # Reconnecting a namespace gives a new controller, but the same session.
        await first_a.disconnect()
        first_a = await first.connect("a")
        again = conn.namespaces["a"].controller
        assert isinstance(again, SessionA)
        assert again is not ctrl_a
        assert again.session is ctrl_b.session


async def test_an_unscoped_dependency_is_new_for_every_controller(serve: Serve) -> None:
    @controller(namespace="a")
    class ShopA:
        cart: Cart

    @controller(namespace="b")
    class ShopB:
        cart: Cart

    server = Server(controllers=[ShopA, ShopB])
    url = await serve(server)
    async with await wsmvc.dial(url, {"a": {}, "b": {}}) as conn:
        await conn.connect("a")
        await conn.connect("b")
        namespaces = server.get_connections(conn.id)[0].namespaces
        assert isinstance(namespaces["a"].controller.cart, Cart)
        assert namespaces["a"].controller.cart is not namespaces["b"].controller.cart


async def test_connection_scope_binding_in_a_module(serve: Serve) -> None:
    @controller(namespace="a")
    class ShopA:
        cart: Cart

    @controller(namespace="b")
    class ShopB:
        cart: Cart

    def configure(binder: Binder) -> None:
        binder.bind(Cart, scope=connection_scope)

    server = Server(modules=[configure], controllers=[ShopA, ShopB])
    url = await serve(server)
    async with (
        await wsmvc.dial(url, {"a": {}, "b": {}}) as first,
        await wsmvc.dial(url, {"a": {}, "b": {}}) as second,
    ):
        for conn in (first, second):
            await conn.connect("a")
            await conn.connect("b")
        carts = [
            (ns["a"].controller.cart, ns["b"].controller.cart)
            for ns in (server.get_connections(c.id)[0].namespaces for c in (first, second))
        ]
        assert carts[0][0] is carts[0][1]
        assert carts[1][0] is carts[1][1]
        assert carts[0][0] is not carts[1][0]


# -------------------------------------------------------------------------------------------
# how controllers are built
# -------------------------------------------------------------------------------------------


async def test_fields_are_set_before_init_runs(serve: Serve) -> None:
    url = await serve(Server(modules=[SettingsModule("PROD")], controllers=[Greeter]))
    async with await wsmvc.dial(url, {"greeter": {}}) as conn:
        ns = await conn.connect("greeter")
        assert (await ns.ask("Greet", timeout=T)).text == "PROD: hello"


async def test_constructor_injection_keeps_defaults(serve: Serve) -> None:
    url = await serve(Server(modules=[SettingsModule()], controllers=[Constructed]))
    async with await wsmvc.dial(url, {"ctor": {}}) as conn:
        ns = await conn.connect("ctor")
        assert (await ns.ask("Describe", timeout=T)).text == "DEV/ctor/default label"


@pytest.mark.parametrize("cls", [AttrsController, DataclassController])
async def test_attrs_and_dataclass_controllers(serve: Serve, cls: type) -> None:
    namespace = "attrs" if cls is AttrsController else "dataclass"
    url = await serve(Server(modules=[SettingsModule()], controllers=[cls]))
    async with (
        await wsmvc.dial(url, {namespace: {}}) as first,
        await wsmvc.dial(url, {namespace: {}}) as second,
    ):
        a = await first.connect(namespace)
        b = await second.connect(namespace)
        assert (await a.ask("Hit", timeout=T)).text == f"DEV/{namespace}/1"
        assert (await a.ask("Hit", timeout=T)).text == f"DEV/{namespace}/2"
        assert (await b.ask("Hit", timeout=T)).text == f"DEV/{namespace}/1"


async def test_context_types_are_injected(serve: Serve) -> None:
    server = Server(modules=[WhereModule()], controllers=[Context])
    url = await serve(server)
    async with await wsmvc.dial(url, {"context": {}}, headers={"X-Trace": "t-1"}) as conn:
        ns = await conn.connect("context")
        await ns.ask("Ping", timeout=T)
        (nsconn,) = server.namespace_members("context")
        ctrl = nsconn.controller
        assert isinstance(ctrl, Context)
        assert ctrl.ns is nsconn
        assert ctrl.conn is nsconn.conn
        assert ctrl.conn.id == conn.id
        assert ctrl.server is server
        assert isinstance(ctrl.request, web.Request)
        assert ctrl.request.headers["X-Trace"] == "t-1"
        # ...and into user providers as well
        assert ctrl.where.conn is nsconn.conn
        assert ctrl.where.ns is nsconn
        assert ctrl.where.server is server


async def test_a_provider_reads_the_upgrade_request(serve: Serve) -> None:
    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request[USER] = request.headers.get("X-User", "anonymous")
        return await handler(request)

    app = web.Application(middlewares=[authenticate])
    url = await serve(Server(modules=[UserModule()], controllers=[WhoAmI]), app=app)
    async with (
        await wsmvc.dial(url, {"who": {}}, headers={"X-User": "alice"}) as alice,
        await wsmvc.dial(url, {"who": {}}, headers={"User-Agent-Label": "cli"}) as anonymous,
        # browsers cannot set headers: neffos.js sends them as X-Websocket-Header-* query
        await wsmvc.dial(
            url + "?X-Websocket-Header-User-Agent-Label=browser",
            {"who": {}},
            headers={"X-User": "bob"},
        ) as bob,
    ):
        assert (await (await alice.connect("who")).ask("Whoami", timeout=T)).text == "alice/"
        assert (await (await anonymous.connect("who")).ask("Whoami", timeout=T)).text == (
            "anonymous/cli"
        )
        assert (await (await bob.connect("who")).ask("Whoami", timeout=T)).text == "bob/browser"


async def test_the_users_own_injector_is_used(serve: Serve) -> None:
    def configure(binder: Binder) -> None:
        binder.bind(Settings, to=Settings("FROM-USER"))

    root = Injector([configure])
    server = Server(injector=root, controllers=[App])
    assert server.injector is root
    url = await serve(server)
    async with await wsmvc.dial(url, {"app": {}}) as conn:
        ns = await conn.connect("app")
        assert (await ns.ask("Prefix", timeout=T)).text == "FROM-USER"


async def test_modules_are_installed_into_the_users_injector(serve: Serve) -> None:
    root = Injector()
    module = SettingsModule("EXTRA")
    server = Server(injector=root, modules=[module], controllers=[App])
    assert server.injector is root
    url = await serve(server)
    assert root.get(Settings) is module.built[0]
    async with await wsmvc.dial(url, {"app": {}}) as conn:
        ns = await conn.connect("app")
        assert (await ns.ask("Prefix", timeout=T)).text == "EXTRA"
    assert len(module.built) == 1


# -------------------------------------------------------------------------------------------
# what cannot be provided
# -------------------------------------------------------------------------------------------


def test_an_abstract_field_fails_at_prepare() -> None:
    @controller(namespace="x")
    class NeedsStorage:
        storage: Storage

    server = Server(controllers=[NeedsStorage])  # registering is fine...
    with pytest.raises(DependencyError, match=r"NeedsStorage\.storage .*Storage is abstract"):
        server.prepare()  # ...resolving is not


def test_an_unbound_str_fails_at_prepare() -> None:
    @controller(namespace="x")
    class NeedsName:
        name: str

    with pytest.raises(DependencyError, match=r"NeedsName\.name .*str has no binding"):
        Server(controllers=[NeedsName]).prepare()


def test_a_protocol_fails_at_prepare() -> None:
    @controller(namespace="x")
    class NotifierField:
        notifier: Notifier

    @controller(namespace="y")
    class NotifierParameter:
        def __init__(self, notifier: Notifier) -> None:
            self.notifier = notifier

    with pytest.raises(
        DependencyError,
        match=r"NotifierField\.notifier \(field: Notifier\): Notifier is a Protocol; bind an",
    ):
        Server(controllers=[NotifierField]).prepare()
    with pytest.raises(
        DependencyError, match=r"NotifierParameter\.notifier \(parameter: Notifier\)"
    ):
        Server(controllers=[NotifierParameter]).prepare()


def test_a_missing_dependency_of_a_dependency_fails_at_prepare() -> None:
    @controller(namespace="x")
    class NeedsArchive:
        archive: Archive

    with pytest.raises(
        DependencyError, match=r"NeedsArchive\.archive .*Archive\.__init__ needs storage"
    ):
        Server(controllers=[NeedsArchive]).prepare()


def test_a_singleton_needing_a_connection_scoped_value_fails_at_prepare() -> None:
    @controller(namespace="x")
    class NeedsRegistry:
        registry: Registry

    with pytest.raises(
        DependencyError,
        match=r"NeedsRegistry\.registry \(field: Registry\): Registry \(singleton\) -> Session"
        r" \(connection_scope\): a singleton cannot depend on a per-connection object",
    ):
        Server(controllers=[NeedsRegistry]).prepare()


def test_a_bound_dependency_makes_it_fine() -> None:
    class DiskStorage(Storage):
        def save(self, data: bytes) -> None: ...

    @controller(namespace="x")
    class NeedsStorage:
        storage: Storage

    def configure(binder: Binder) -> None:
        binder.bind(Storage, to=DiskStorage)

    Server(modules=[configure], controllers=[NeedsStorage]).prepare()


def test_a_bound_protocol_makes_it_fine() -> None:
    # The error for an unbound Protocol says "bind an implementation in a module"; once
    # bound (injector itself then resolves it), prepare() must accept it.
    class EmailNotifier:
        def notify(self, text: str) -> None: ...

    @controller(namespace="x")
    class NeedsNotifier:
        notifier: Notifier

    def configure(binder: Binder) -> None:
        binder.bind(Notifier, to=EmailNotifier)

    server = Server(modules=[configure], controllers=[NeedsNotifier])
    assert isinstance(server.injector.get(Notifier), EmailNotifier)
    server.prepare()


async def test_a_failing_provider_refuses_only_that_namespace(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(modules=[QuotaModule()], controllers=[Metered, Free])
    url = await serve(server)
    client = {"metered": {}, "free": {}}
    with caplog.at_level(logging.ERROR, logger="wsmvc"):
        async with (
            await wsmvc.dial(url, client, headers={"X-Quota": "broken"}) as broken,
            await wsmvc.dial(url, client) as fine,
        ):
            with pytest.raises(EventError) as refused:
                await broken.connect("metered")
            assert refused.value.text == "internal server error"
            assert broken.namespace("metered") is None
            # the same connection can still use another namespace
            free = await broken.connect("free")
            assert (await free.ask("Ping", timeout=T)).text == "pong"
            # and other clients are not affected
            metered = await fine.connect("metered")
            assert (await metered.ask("Ping", timeout=T)).text == "pong"
            assert [m.id for m in server.namespace_members("metered")] == [fine.id]
            assert not broken.closed
    assert "Metered" in caplog.text
    assert "quota service down" in caplog.text


async def test_a_failing_provider_with_debug_errors_names_the_class(serve: Serve) -> None:
    server = Server(modules=[QuotaModule()], controllers=[Metered], debug_errors=True)
    url = await serve(server)
    async with await wsmvc.dial(url, {"metered": {}}, headers={"X-Quota": "broken"}) as conn:
        with pytest.raises(EventError, match=r"Metered.*quota service down"):
            await conn.connect("metered")


def test_a_context_type_is_not_available_outside_a_connection() -> None:
    server = Server(controllers=[Context])
    with pytest.raises(LookupError, match=r"^NSConn is only available while serving a connection"):
        server.injector.get(NSConn)


async def test_message_and_nsconn_parameters_next_to_injected_fields(serve: Serve) -> None:
    @controller(namespace="mixed")
    class Mixed:
        settings: Settings

        @event
        def echo(self, msg: Message, ns: NSConn) -> str:
            return f"{self.settings.prefix}:{ns.namespace}:{msg.text}"

    url = await serve(Server(modules=[SettingsModule()], controllers=[Mixed]))
    async with await wsmvc.dial(url, {"mixed": {}}) as conn:
        ns = await conn.connect("mixed")
        assert (await ns.ask("Echo", "hi", timeout=T)).text == "DEV:mixed:hi"


class NeedsHost:
    def __init__(self, host: str) -> None:  # not @inject: injector would call NeedsHost()
        self.host = host


class UsesNeedsHost:
    mailer: NeedsHost


def test_a_constructor_without_inject_is_reported_at_prepare() -> None:
    server = Server()
    server.register(controller(namespace="mail")(UsesNeedsHost))
    with pytest.raises(
        DependencyError,
        match=r"UsesNeedsHost\.mailer \(field: NeedsHost\): NeedsHost\.__init__ needs host but"
        r" is not @inject",
    ):
        server.prepare()
