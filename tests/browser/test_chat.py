"""The chat example (examples/chat) in a real Chromium, on the client its server serves.

Each test opens the page in one browser context per person and checks what that person
sees: room lists, online counts, messages, typing notices, the server's error texts, the
connection status, and the page coming back by itself after the server restarted. A user
never sees what a server did not send; where a test says "bob never got it", it reads the
websocket frames bob's tab received, after a later message proves that anything earlier
would be there.

The page imports wsmvc.js from the chat server (``/chat/wsmvc.js``); every request for
anything else fails (conftest.py), as it would with no internet access. The last tests run
the same page on neffos.js instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from chat_support import (
    ARTIFACTS,
    CLIENT_PATH,
    NEFFOS_HINT,
    NEFFOS_JS,
    ChatApp,
    ChatPage,
    OpenPage,
    is_loopback,
    origin,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route, WebSocketRoute

try:
    from playwright.sync_api import expect
except ImportError:  # the fixtures skip the suite
    pass

pytestmark = pytest.mark.browser

AWAY = re.compile(r"\baway\b")
# ms: the server stopped and started again; wsmvc.js' attempts come 0.5, 1, 2, 4, 8 s apart
# at most (a little less: jitter), neffos.js (in the last test) probes every second.
RECONNECT_TIMEOUT = 20_000
# ms: a killed server's members leave the others' presence within ttl + one beat, 8 s
# (docs/scale-out.md, "Presence"); the rest is the page's margin.
KILLED_SERVER_GONE = 15_000


def login(open_page: OpenPage, app: ChatApp, *names: str) -> list[ChatPage]:
    """A tab of ``app`` for each name, each in the lobby."""
    pages = []
    for name in names:
        page = open_page(app)
        page.login(name)
        pages.append(page)
    return pages


def test_people_chat_in_rooms_and_see_who_is_online(open_page: OpenPage, chat_app: ChatApp) -> None:
    alice, bob, carol = login(open_page, chat_app, "alice", "bob", "carol")
    for page in (alice, bob, carol):
        expect(page.online).to_have_text("3 online")
        expect(page.names).to_have_text("alice, bob, carol")
        expect(page.room_count("lobby")).to_have_text("3")
    expect(alice.notices).to_have_text(["bob joined", "carol joined"])

    alice.join("python")
    carol.join("python")
    for page in (alice, carol):
        expect(page.rooms).to_have_text([re.compile(r"#lobby\s*3"), re.compile(r"#python\s*2")])
        expect(page.online).to_have_text("2 online")
        expect(page.names).to_have_text("alice, carol")
    expect(bob.rooms).to_have_text([re.compile(r"#lobby\s*3")])

    alice.say("anyone for a python meetup?")
    expect(carol.line("alice", "anyone for a python meetup?")).to_be_visible()
    carol.say("count me in")
    expect(alice.line("carol", "count me in")).to_be_visible()

    # In the lobby, which alice and carol are not looking at: an unread badge.
    bob.say("hello lobby")
    for page in (alice, carol):
        expect(page.unread("lobby")).to_have_text("1")
    alice.open("lobby")
    expect(alice.line("bob", "hello lobby")).to_be_visible()
    expect(alice.unread("lobby")).to_have_count(0)
    alice.say("hi bob, we are in #python")
    expect(bob.line("alice", "hi bob, we are in #python")).to_be_visible()
    # The server sent alice's lobby line after her python lines: bob, not in #python,
    # would have got those first.
    assert bob.received_text("hi bob, we are in #python")
    assert not bob.received_text("python meetup"), "a message of #python reached bob"
    assert not bob.received_text("count me in"), "a message of #python reached bob"
    expect(bob.lines).to_have_text([re.compile("hello lobby"), re.compile("hi bob")])

    bob.type("sounds fun")
    expect(alice.typing).to_have_text("bob is typing…")
    ARTIFACTS.mkdir(exist_ok=True)
    alice.page.screenshot(path=ARTIFACTS / "chat-conversation.png")


def test_typing_notice_goes_to_the_others_in_the_room(
    open_page: OpenPage, chat_app: ChatApp
) -> None:
    alice, bob, carol = login(open_page, chat_app, "alice", "bob", "carol")
    carol.join("python")  # carol is in the lobby too, but looks at #python

    alice.type("hel")
    expect(bob.typing).to_have_text("alice is typing…")
    expect(carol.typing).to_have_text("")
    expect(alice.typing).to_have_text("")  # not to herself
    carol.open("lobby")
    expect(carol.typing).to_have_text("alice is typing…")

    alice.say("hello")  # her line ends her notice at once
    for page in (bob, carol):
        expect(page.line("alice", "hello")).to_be_visible()
        expect(page.typing).to_have_text("")

    bob.type("hey")
    expect(alice.typing).to_have_text("bob is typing…")
    alice.type("oh")
    expect(bob.typing).to_have_text("alice is typing…")
    expect(carol.typing).to_have_text("bob and alice are typing…")


def test_the_server_refuses_empty_and_oversized_messages(
    open_page: OpenPage, chat_app: ChatApp
) -> None:
    alice, bob = login(open_page, chat_app, "alice", "bob")

    alice.send("   ")
    expect(alice.send_error).to_have_text("the message is empty")
    alice.send("x" * 501)
    expect(alice.send_error).to_have_text("the message is too long: 501 characters, at most 500")
    expect(alice.message_box).to_have_value("x" * 501)  # kept, to be shortened

    alice.say("y" * 500)
    expect(alice.send_error).to_have_text("")
    expect(bob.line("alice", "y" * 500)).to_be_visible()
    expect(bob.lines).to_have_count(1)  # the refused ones reached nobody
    expect(alice.lines).to_have_count(1)


def test_the_server_checks_names_and_room_names(open_page: OpenPage, chat_app: ChatApp) -> None:
    alice = open_page(chat_app)
    alice.enter("a-name-much-longer-than-24")
    expect(alice.page.locator("#login-error")).to_have_text("pick a name of 1 to 24 characters")
    expect(alice.status).to_have_text("offline")
    alice.login("alice")

    alice.page.get_by_label("Join a room").fill("no spaces")
    alice.page.get_by_role("button", name="Join", exact=True).click()
    expect(alice.page.locator("#join-error")).to_have_text(
        "room names are 1 to 32 letters, digits, - or _"
    )
    expect(alice.rooms).to_have_count(1)
    alice.join("fine-name_2")
    expect(alice.page.locator("#join-error")).to_have_text("")


def test_counts_drop_when_a_page_closes_or_leaves(open_page: OpenPage, chat_app: ChatApp) -> None:
    alice, bob, carol = login(open_page, chat_app, "alice", "bob", "carol")
    for page in (alice, bob, carol):
        expect(page.online).to_have_text("3 online")

    carol.page.context.close()  # the tab is gone: its connection closes
    for page in (alice, bob):
        expect(page.online).to_have_text("2 online")
        expect(page.names).to_have_text("alice, bob")
    expect(alice.notices.last).to_have_text("carol left")

    bob.leave()
    expect(bob.rooms).to_have_count(0)
    expect(bob.page.get_by_text("You are in no room.")).to_be_visible()
    expect(alice.online).to_have_text("1 online")
    expect(alice.room_count("lobby")).to_have_text("1")
    expect(alice.notices.last).to_have_text("bob left")

    bob.join("lobby")
    expect(alice.online).to_have_text("2 online")
    expect(bob.online).to_have_text("2 online")


def test_a_second_tab_of_a_name_sees_who_is_online_and_counts_once(
    open_page: OpenPage, chat_app: ChatApp
) -> None:
    """A second tab of alice joining the lobby changes nobody's presence (alice is there
    already), yet it is shown who is online like any tab; one of her two tabs leaving
    leaves her online."""
    alice, bob = login(open_page, chat_app, "alice", "bob")
    (alice_again,) = login(open_page, chat_app, "alice")
    for page in (alice, bob, alice_again):
        expect(page.online).to_have_text("2 online")
        expect(page.names).to_have_text("alice, bob")

    alice.leave()
    expect(alice.page.get_by_text("You are in no room.")).to_be_visible()
    # Any count alice's leave changed goes out before the server reads bob's line, which
    # is sent after it: once the line is shown, such a count would be too.
    bob.say("still there, alice?")
    for page in (bob, alice_again):
        expect(page.line("bob", "still there, alice?")).to_be_visible()
        expect(page.online).to_have_text("2 online")
        expect(page.names).to_have_text("alice, bob")
    alice_again.page.context.close()
    expect(bob.online).to_have_text("1 online")
    expect(bob.notices.last).to_have_text("alice left")


def test_pages_reconnect_by_themselves_after_a_server_restart(
    open_page: OpenPage, chat_app: ChatApp
) -> None:
    alice, bob, carol = login(open_page, chat_app, "alice", "bob", "carol")
    alice.join("python")
    bob.join("python")
    alice.say("before the restart")
    expect(bob.line("alice", "before the restart")).to_be_visible()
    for page in (alice, bob):
        expect(page.room_count("lobby")).to_have_text("3")
        expect(page.room_count("python")).to_have_text("2")

    port = chat_app.port
    assert chat_app.stop() == 0
    for page in (alice, bob, carol):
        expect(page.status).to_have_text("reconnecting…")
        expect(page.room_item("lobby")).to_have_class(AWAY)
    expect(alice.online).to_have_text("reconnecting…")
    alice.send("sent while the server was away")  # waits in the client, in the box too
    expect(alice.message_box).to_have_value("sent while the server was away")

    chat_app.start(port)
    for page in (alice, bob, carol):
        expect(page.status).to_have_text("online", timeout=RECONNECT_TIMEOUT)
        expect(page.room_item("lobby")).not_to_have_class(AWAY)
        expect(page.room_count("lobby")).to_have_text("3")
    for page in (alice, bob):
        expect(page.room_item("python")).not_to_have_class(AWAY)
        expect(page.room_count("python")).to_have_text("2")
        expect(page.title).to_have_text("#python")
        expect(page.online).to_have_text("2 online")
    expect(carol.rooms).to_have_count(1)

    # Same rooms, same conversation on the page, and talking works again. What alice sent
    # while away went once her rooms were back (bob's page may not have been back yet).
    expect(alice.line("alice", "sent while the server was away")).to_be_visible()
    expect(alice.message_box).to_have_value("")
    expect(bob.line("alice", "before the restart")).to_be_visible()
    alice.say("after the restart")
    expect(bob.line("alice", "after the restart")).to_be_visible()
    carol.say("lobby is back too")
    for page in (alice, bob):
        expect(page.unread("lobby")).to_have_text("1")
    bob.open("lobby")
    expect(bob.line("carol", "lobby is back too")).to_be_visible()
    assert carol.received_text("lobby is back too")
    assert not carol.received_text("after the restart"), "a message of #python reached carol"


def test_with_redis_two_servers_share_messages_and_counts(
    open_page: OpenPage, redis_url: str, start_chat_app: Callable[..., ChatApp]
) -> None:
    first = start_chat_app(redis_url)
    second = start_chat_app(redis_url)
    (alice,) = login(open_page, first, "alice")
    bob, carol = login(open_page, second, "bob", "carol")
    for page in (alice, bob, carol):
        expect(page.online).to_have_text("3 online")
        expect(page.names).to_have_text("alice, bob, carol")

    alice.say("hello from the first server")
    for page in (bob, carol):
        expect(page.line("alice", "hello from the first server")).to_be_visible()

    alice.join("python")
    bob.join("python")
    for page in (alice, bob):
        expect(page.online).to_have_text("2 online")
    bob.say("python on the second server")
    expect(alice.line("bob", "python on the second server")).to_be_visible()
    bob.open("lobby")
    bob.say("and the lobby")
    expect(alice.unread("lobby")).to_have_text("1")
    expect(carol.line("bob", "and the lobby")).to_be_visible()
    assert not carol.received_text("python on the second server"), "#python reached carol"

    carol.page.context.close()
    expect(alice.room_count("lobby")).to_have_text("2")
    expect(bob.room_count("lobby")).to_have_text("2")

    # The second server stops: its pages leave their rooms, and through Redis the page on
    # the first server sees them go.
    second.check_clean_stop()
    expect(bob.status).to_have_text("reconnecting…")
    expect(alice.online).to_have_text("1 online")  # alice looks at #python
    expect(alice.names).to_have_text("alice")
    expect(alice.room_count("lobby")).to_have_text("1")


def test_with_redis_a_tab_on_each_server_sees_the_other_join_and_leave(
    open_page: OpenPage, redis_url: str, start_chat_app: Callable[..., ChatApp]
) -> None:
    first = start_chat_app(redis_url)
    second = start_chat_app(redis_url)
    (alice,) = login(open_page, first, "alice")
    (bob,) = login(open_page, second, "bob")
    alice.join("python")
    bob.join("python")
    for page in (alice, bob):
        expect(page.online).to_have_text("2 online")
        expect(page.names).to_have_text("alice, bob")

    bob.leave()  # bob's #python tab was the one shown: he is left in the lobby
    expect(alice.online).to_have_text("1 online")
    expect(alice.names).to_have_text("alice")
    expect(alice.notices.last).to_have_text("bob left")
    expect(alice.room_count("lobby")).to_have_text("2")

    # alice in a second tab, on bob's server: one person, on both pages.
    (alice_there,) = login(open_page, second, "alice")
    for page in (alice, bob, alice_there):
        expect(page.room_count("lobby")).to_have_text("2")
    expect(alice_there.names).to_have_text("alice, bob")
    bob.join("python")
    for page in (alice, bob):
        expect(page.online).to_have_text("2 online")
        expect(page.names).to_have_text("alice, bob")


def test_with_redis_the_pages_see_a_killed_server_s_people_go(
    open_page: OpenPage, redis_url: str, start_chat_app: Callable[..., ChatApp]
) -> None:
    """A server killed (SIGKILL: no leaves, no goodbye) falls silent; the other servers'
    presence drops its members after ``ttl`` and they tell their own pages."""
    first = start_chat_app(redis_url)
    second = start_chat_app(redis_url)
    (alice,) = login(open_page, first, "alice")
    bob, carol = login(open_page, second, "bob", "carol")
    for page in (alice, bob, carol):
        expect(page.online).to_have_text("3 online")

    second.kill()
    expect(bob.status).to_have_text("reconnecting…")
    expect(alice.online).to_have_text("1 online", timeout=KILLED_SERVER_GONE)
    expect(alice.names).to_have_text("alice")
    expect(alice.notices).to_have_text(["bob joined", "carol joined", "bob left", "carol left"])


def test_chromium_negotiates_deflate_and_reads_compressed_broadcasts(
    open_page: OpenPage, chat_app: ChatApp
) -> None:
    """Chromium offers permessage-deflate on every websocket, so the chat's traffic is
    compressed wherever a message reaches the threshold: a long line, broadcast once to
    the room, arrives whole in every other tab (issue 9)."""
    alice, bob, carol = login(open_page, chat_app, "alice", "bob", "carol")
    extensions = alice.page.evaluate(
        """() => new Promise((resolve, reject) => {
            const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/chat");
            ws.onopen = () => { resolve(ws.extensions); ws.close(); };
            ws.onerror = () => reject(new Error("the websocket failed"));
        })"""
    )
    assert "permessage-deflate" in extensions and "server_no_context_takeover" in extensions
    # ~500 characters: with the event's framing past the 512-byte threshold, so deflated.
    text = ("the same words again and again " * 16)[:495].strip()
    alice.say(text)
    for page in (bob, carol):
        expect(page.line("alice", text)).to_be_visible()
    alice.say("and a short one after it")  # plain frames follow compressed ones, in order
    for page in (bob, carol):
        expect(page.lines).to_have_text([re.compile("the same words"), re.compile("short one")])


def test_the_chat_works_end_to_end_without_internet_access(
    open_page: OpenPage, chat_app: ChatApp
) -> None:
    """Issue 12: the page needs nothing but its own server. Every request to a host other
    than this machine fails here, as it does with no internet access (the CDN the page
    used to load neffos.js from included), and two people still enter, join a room, chat,
    see each other type, and leave."""
    cut_off: list[str] = []

    def no_internet(page: Page) -> None:
        def route(route: Route) -> None:
            if is_loopback(route.request.url):
                route.fallback()  # to the app (conftest.py fails anything else)
            else:
                cut_off.append(route.request.url)
                route.abort("internetdisconnected")

        page.route("**/*", route)

    alice, bob = (open_page(chat_app, before=no_internet) for _ in range(2))
    alice.login("alice")
    bob.login("bob")
    alice.join("python")
    bob.join("python")
    for page in (alice, bob):
        expect(page.online).to_have_text("2 online")
        expect(page.names).to_have_text("alice, bob")

    alice.say("no internet here")
    expect(bob.line("alice", "no internet here")).to_be_visible()
    bob.type("nor here")
    expect(alice.typing).to_have_text("bob is typing…")
    bob.say("nor here")
    expect(alice.line("bob", "nor here")).to_be_visible()
    expect(alice.typing).to_have_text("")

    bob.leave()
    expect(bob.title).to_have_text("#lobby")
    expect(alice.online).to_have_text("1 online")
    expect(alice.notices.last).to_have_text("bob left")

    assert cut_off == [], "the page asked for something off this machine"
    app = origin(chat_app.url)
    for page in (alice, bob):
        assert app + CLIENT_PATH in page.requests  # the client came from the chat server
        assert [url for url in page.requests if not url.startswith(app + "/")] == []


def test_the_status_says_connecting_until_the_first_connection_is_up(
    open_page: OpenPage, chat_app: ChatApp
) -> None:
    """Issue 13: before its first attempt the page said "offline", as if something had
    failed. It says "connecting…" from the start, through the attempt (here held: the
    server's handshake answer waits in the test until the test lets it through), until
    the page is online."""
    routes: list[tuple[WebSocketRoute, WebSocketRoute]] = []
    held: list[str | bytes] = []

    def hold_the_handshake(page: Page) -> None:
        def route(ws: WebSocketRoute) -> None:
            server = ws.connect_to_server()  # the page's frames go through
            server.on_message(lambda frame: held.append(frame))  # the server's wait here
            routes.append((ws, server))

        page.route_web_socket(lambda url: urlsplit(url).path == "/chat", route)

    alice = open_page(chat_app, before=hold_the_handshake)
    expect(alice.enter_button).to_be_enabled()  # the page is ready, and waits for a name
    expect(alice.status).to_have_text("connecting…")
    assert alice.sockets == [], "the page connected before it had a name"

    with alice.page.expect_websocket():
        alice.enter("alice")
    expect(alice.status).to_have_text("connecting…")
    expect(alice.page.locator("#chat")).to_be_hidden()

    ws, server = routes[0]
    server.on_message(lambda frame: ws.send(frame))  # from now on, straight through
    for frame in held:
        ws.send(frame)
    expect(alice.status).to_have_text("online")
    expect(alice.title).to_have_text("#lobby")
    expect(alice.online).to_have_text("1 online")


def test_a_page_whose_client_cannot_load_says_so(open_page: OpenPage, chat_app: ChatApp) -> None:
    """Issue 12: a deployment that does not serve the client (here ``/chat/wsmvc.js``
    answers 404) gets a page that says it cannot start, not one whose button reloads the
    page and loses the name typed."""

    def no_client(page: Page) -> None:
        page.route(f"**{CLIENT_PATH}", lambda route: route.fulfill(status=404, body="Not Found"))

    alice = open_page(chat_app, before=no_client)
    expect(alice.login_error).to_contain_text(
        "The chat cannot start: its scripts (chat.js, wsmvc.js) did not load. "
        "Reload the page to try again."
    )
    expect(alice.status).to_have_text("offline")
    expect(alice.enter_button).to_be_disabled()
    name = alice.page.get_by_label("Your name")
    name.fill("alice")
    name.press("Enter")
    expect(name).to_have_value("alice")
    assert alice.page.url == chat_app.url
    assert alice.sockets == []


def test_a_typing_notice_ends_when_its_typist_leaves_or_goes(
    open_page: OpenPage, chat_app: ChatApp
) -> None:
    """Issue 13: "alice is typing…" stayed up to 4 s after alice left the room or closed
    her tab. Bob's page runs on a stopped clock here, so a notice's own 4-second timer
    never ends it: only what the page hears of the typist going can."""
    alice, carol = login(open_page, chat_app, "alice", "carol")
    bob = open_page(chat_app, before=lambda page: page.clock.install())
    bob.login("bob")
    expect(bob.online).to_have_text("3 online")
    bob.page.clock.pause_at(bob.page.evaluate("Date.now()") + 1000)

    alice.type("hel")
    expect(bob.typing).to_have_text("alice is typing…")
    carol.type("hi")
    expect(bob.typing).to_have_text("alice and carol are typing…")

    alice.leave()  # leaves the lobby
    expect(bob.notices.last).to_have_text("alice left")
    expect(bob.typing).to_have_text("carol is typing…")  # carol is still there, typing

    carol.page.context.close()  # her tab is gone, and its connection
    expect(bob.notices.last).to_have_text("carol left")
    expect(bob.typing).to_have_text("")
    expect(bob.online).to_have_text("1 online")


# The chat page on neffos.js (issue 12: neffos.js stays supported, and tested).

NEFFOS_URL = "/test-only/neffos.min.js"  # answered by the test with the npm copy
# What the page gets for /chat/wsmvc.js: neffos.js, and the two things it lacks.
NEFFOS_SHIM = """
import { Message, Room, dial as neffosDial } from NEFFOS_URL;

export * from NEFFOS_URL;

// neffos.js asks in a room only with conn.ask and a Message that carries the room.
Room.prototype.ask = function ask(event, body) {
  const msg = new Message();
  msg.Namespace = this.nsConn.namespace;
  msg.Room = this.name;
  msg.Event = event;
  msg.Body = body;
  return this.nsConn.conn.ask(msg);
};

// neffos.js reconnects only when told how often to probe the server (wsmvc.js by default).
export function dial(url, namespaces, options = {}) {
  return neffosDial(url, namespaces, { reconnect: 1000, ...options });
}
""".replace("NEFFOS_URL", json.dumps(NEFFOS_URL))


def on_neffos_js(page: Page) -> None:
    """Answer the page's ``/chat/wsmvc.js`` with :data:`NEFFOS_SHIM`, and its import of
    neffos.js with the npm copy (the server sees neither request)."""
    module = {"content_type": "text/javascript; charset=utf-8"}
    page.route(f"**{CLIENT_PATH}", lambda route: route.fulfill(body=NEFFOS_SHIM, **module))
    page.route(f"**{NEFFOS_URL}", lambda route: route.fulfill(path=NEFFOS_JS, **module))


def test_the_chat_page_runs_on_neffos_js(open_page: OpenPage, chat_app: ChatApp) -> None:
    """The chat page, written for wsmvc.js, on neffos.js 0.1.34 (the protocol's own
    browser client, from npm) instead: what the page imports as ``/chat/wsmvc.js`` is a
    module that re-exports neffos.js, adding the two things the page uses that neffos.js
    lacks, each made of neffos.js' own calls: ``room.ask`` (an ask with a Message that
    carries the room) and reconnecting by default (neffos.js' ``reconnect: 1000``).

    What it proves: the server still serves neffos.js browsers, and the page sticks to the
    API the two clients share. People enter, join a room, chat, see each other type and
    leave; after a server restart neffos.js probes the server, dials again, connects the
    namespace anew, and the page takes the new NSConn from ``_OnNamespaceConnected``.

    One room at the restart: neffos.js rejoins all rooms at once, naming each request after
    ``performance.now()``; two in the same 0.1 ms share a name and one never completes
    (the page no longer works around that, wsmvc.js has no such flaw)."""
    if not NEFFOS_JS.exists():
        pytest.skip(f"this test serves neffos.js from {NEFFOS_JS}: {NEFFOS_HINT}")
    alice, bob = (open_page(chat_app, before=on_neffos_js) for _ in range(2))
    alice.login("alice")
    bob.login("bob")
    for page in (alice, bob):
        # neffos.js, unlike wsmvc.js, also sets a global: the page runs on neffos.js.
        assert page.page.evaluate("() => typeof window.neffos?.dial") == "function"
        assert origin(chat_app.url) + NEFFOS_URL in page.requests

    alice.join("python")
    bob.join("python")
    expect(alice.online).to_have_text("2 online")
    alice.say("hello from neffos.js")
    expect(bob.line("alice", "hello from neffos.js")).to_be_visible()
    bob.type("hi")
    expect(alice.typing).to_have_text("bob is typing…")
    bob.leave()
    expect(alice.online).to_have_text("1 online")
    expect(alice.typing).to_have_text("")
    alice.leave()
    for page in (alice, bob):
        expect(page.rooms).to_have_count(1)
        expect(page.room_count("lobby")).to_have_text("2")

    port = chat_app.port
    assert chat_app.stop() == 0
    for page in (alice, bob):
        expect(page.status).to_have_text("reconnecting…")
    chat_app.start(port)
    for page in (alice, bob):
        expect(page.status).to_have_text("online", timeout=RECONNECT_TIMEOUT)
        expect(page.room_item("lobby")).not_to_have_class(AWAY)
        expect(page.room_count("lobby")).to_have_text("2")
    bob.say("back after the restart")
    expect(alice.line("bob", "back after the restart")).to_be_visible()
