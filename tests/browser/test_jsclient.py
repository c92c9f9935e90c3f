"""wsmvc.js, the JavaScript client, in a real headless Chromium.

A page of the test app (``tests/jsclient/app.py``, a child process) imports the client
from the server's own URL (``/ws/wsmvc.js``: no build step, no CDN) and dials a relative
URL (``/ws``). Each test runs a scenario in the page (``page.evaluate``) and checks what
the page got and what the server has (its HTTP hooks: room members, namespaces, the
upgrade's headers). Nothing sleeps: the page awaits events and answers with deadlines,
and Python waits on the page's promises.

No page may throw, report an error through the client, or ask for anything but the app.

The chat example's page, a whole application on wsmvc.js, has its own tests
(``test_chat.py``).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.interop.interop_support import REPO_ROOT, AppProcess, problem_lines

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

APP = REPO_ROOT / "tests" / "jsclient" / "app.py"
READY_LINE = re.compile(r"^jsclient app ready on (http://\S+)")
WAIT_MS = 5000

# Defined in every page once it loaded the client: helpers the scenarios use.
HELPERS = """
(wait) => {
  window.within = (promise, what, ms = wait) => {
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([promise, late]).finally(() => clearTimeout(timer));
  };
  // Recording handlers: inbox.handlers('chat'), then await inbox.next('chat').
  window.Inbox = class {
    constructor() { this.queues = new Map(); this.waiters = new Map(); }
    put(event, value) {
      const waiting = this.waiters.get(event) ?? [];
      if (waiting.length) return waiting.shift()(value);
      this.queues.set(event, [...(this.queues.get(event) ?? []), value]);
    }
    handlers(...events) {
      return Object.fromEntries(events.map((e) => [e, (ns, msg) => this.put(e, msg)]));
    }
    next(event) {
      const queue = this.queues.get(event) ?? [];
      if (queue.length) return Promise.resolve(queue.shift());
      return within(new Promise((resolve) => {
        this.waiters.set(event, [...(this.waiters.get(event) ?? []), resolve]);
      }), `no ${event}`);
    }
  };
}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    process = AppProcess(
        "jsclient app", APP, tmp_path_factory.mktemp("jsclient-browser"), ready=READY_LINE
    )
    process.start()
    try:
        yield process
    finally:
        if process.running:
            process.stop()  # a clean exit and a log without errors


@pytest.fixture
def server(app: AppProcess) -> Iterator[AppProcess]:
    offset = app.log_size()
    yield app
    problems = problem_lines(app.log(offset))
    assert not problems, "the server logged errors during the test:\n" + "\n".join(problems)


def api(app: AppProcess, path: str, method: str = "GET") -> Any:
    """Call the app's HTTP hooks; returns the JSON answer."""
    request = urllib.request.Request(app.url + path, method=method)
    with urllib.request.urlopen(request, timeout=WAIT_MS / 1000) as response:
        return json.loads(response.read())


OpenPage = Callable[[], "Page"]


@pytest.fixture
def open_page(browser: Browser, server: AppProcess) -> Iterator[OpenPage]:
    """``open_page()``: a fresh browser context on the test page, the client loaded."""
    contexts = []
    thrown: list[str] = []
    strays: list[str] = []

    def open_() -> Page:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: thrown.append(f"{exc.name}: {exc.message}"))
        # What wsmvc.js reports (a handler that threw...); not the browser's own lines
        # about failed websocket connections, which a reconnect may well have.
        page.on(
            "console",
            lambda m: thrown.append(m.text) if m.text.startswith("wsmvc:") else None,
        )

        def refuse(route: Any) -> None:
            strays.append(route.request.url)
            route.abort()

        page.route(lambda url: not url.startswith(server.url), refuse)
        page.goto(server.url + "/page")
        page.wait_for_function("document.title === 'ready'", timeout=WAIT_MS)
        page.evaluate(HELPERS, WAIT_MS)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not strays, "the page asked for more than the app:\n" + "\n".join(strays)
    assert not thrown, "the page threw or logged errors:\n" + "\n".join(thrown)


def test_the_page_loads_the_client_from_the_server_and_dials_a_relative_url(
    open_page: OpenPage, server: AppProcess
) -> None:
    page = open_page()
    got = page.evaluate(
        """async () => {
          const inbox = new Inbox();
          const conn = await within(wsmvc.dial('/ws', { default: inbox.handlers('echo') }), 'dial');
          const ns = await conn.connect('default');
          ns.emit('echo', 'héllo; ✓');
          const echo = await inbox.next('echo');
          const pong = await ns.ask('ask', 'hi');
          window.conn = conn;
          return { id: conn.id, echo: echo.Body, pong: pong.Body };
        }"""
    )
    assert got["echo"] == "héllo; ✓"
    assert got["pong"] == "pong:hi"
    assert api(server, f"/namespaces?id={got['id']}") == ["default"]
    scripts = page.evaluate(
        "() => performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname)"
    )
    assert "/ws/wsmvc.js" in scripts


def test_ask_errors_timeouts_and_close_settle_every_promise(open_page: OpenPage) -> None:
    page = open_page()
    got = page.evaluate(
        """async () => {
          const conn = await wsmvc.dial('/ws', { default: {}, forbidden: {} });
          const ns = await conn.connect('default');
          const failure = (e) => ({ name: e.name, message: e.message });
          const outcome = (p) => p.then((m) => ({ ok: m.Body }), failure);
          const results = {
            refused: await outcome(conn.connect('forbidden')),
            error: await outcome(ns.ask('askerr')),
            timeout: await outcome(ns.ask('silent', '', { timeout: 200 })),
          };
          const waiting = outcome(ns.ask('silent', '', { timeout: 60000 }));
          conn.close();
          results.closed = await within(waiting, 'the ask to settle on close', 1000);
          return results;
        }"""
    )
    assert got == {
        "refused": {"name": "EventError", "message": "forbidden namespace"},
        "error": {"name": "EventError", "message": "ask failed"},
        "timeout": {
            "name": "AskTimeoutError",
            "message": 'no answer to ask "silent" in namespace "default" within 200 ms',
        },
        "closed": {"name": "ConnectionClosedError", "message": "closed by the client"},
    }


def test_headers_travel_in_the_query_and_a_refusal_rejects_dial(
    open_page: OpenPage, server: AppProcess
) -> None:
    page = open_page()
    got = page.evaluate(
        """async () => {
          const refused = await wsmvc
            .dial('/ws', { default: {} }, { headers: { 'X-Reject': 'no robots' } })
            .then(() => null, (e) => ({ name: e.name, message: e.message }));
          const conn = await wsmvc.dial('/ws', { default: {} }, { headers: { 'X-Name': 'ann' } });
          const id = conn.id;
          await conn.close();
          return { refused, id };
        }"""
    )
    assert got["refused"] == {"name": "RejectError", "message": "no robots"}
    assert api(server, f"/upgrade?id={got['id']}") == {"name": "ann", "reconnect": 0}


def test_a_room_emit_reaches_the_other_page(open_page: OpenPage, server: AppProcess) -> None:
    alice, bob = open_page(), open_page()
    join = """async (room) => {
      window.inbox = new Inbox();
      const conn = await wsmvc.dial('/ws', { default: inbox.handlers('chat') });
      window.ns = await conn.connect('default');
      window.room = await ns.joinRoom(room);
      return conn.id;
    }"""
    ids = [page.evaluate(join, "lounge") for page in (alice, bob)]
    assert sorted(api(server, "/members?namespace=default&room=lounge")) == sorted(ids)
    assert alice.evaluate("() => room.emit('to_room', 'hi bob')") is True
    got = bob.evaluate(
        "async () => { const m = await inbox.next('chat'); return [m.Body, m.Room]; }"
    )
    assert got == ["hi bob", "lounge"]
    left = bob.evaluate("async () => { await room.leave(); return [...ns.rooms.keys()]; }")
    assert left == []
    assert api(server, "/members?namespace=default&room=lounge") == [ids[0]]


def test_the_server_asks_the_page_and_bytes_go_both_ways(open_page: OpenPage) -> None:
    page = open_page()
    got = page.evaluate(
        """async () => {
          const inbox = new Inbox();
          const conn = await wsmvc.dial('/ws', {
            default: { ...inbox.handlers('bin'), question: (ns, msg) => `page says ${msg.Body}` },
          });
          const ns = await conn.connect('default');
          const asked = await ns.ask('server_ask', 'what?');
          const reversed = await ns.ask('reverse', new Uint8Array([0, 1, 59, 254, 255]));
          ns.emit('push_binary');
          const pushed = await inbox.next('bin');
          const raw = await ns.ask('nonutf8');
          await conn.close();
          return {
            asked: asked.Body,
            reversed: [...reversed.bytes], reversedBinary: reversed.Body instanceof ArrayBuffer,
            pushed: [...pushed.bytes], raw: [...raw.bytes],
          };
        }"""
    )
    assert got == {
        "asked": "client said:page says what?",
        "reversed": [255, 254, 59, 1, 0],
        "reversedBinary": True,
        "pushed": [0, 1, 59, 254],
        "raw": [255, 254, 0],
    }


def test_the_page_comes_back_after_the_server_kicks_it(
    open_page: OpenPage, server: AppProcess
) -> None:
    page = open_page()
    tag = "browser-reconnect"
    first_id = page.evaluate(
        """async (tag) => {
          window.seen = [];
          const record = (ns, msg) =>
            seen.push(`${msg.Event} ${msg.Room}${msg.IsForced ? ' forced' : ''}`);
          const events = Object.fromEntries(['_OnNamespaceConnected', '_OnNamespaceDisconnect',
            '_OnRoomJoined', '_OnRoomLeft'].map((e) => [e, record]));
          window.lost = new Promise((resolve) => { window.onLost = resolve; });
          window.restored = new Promise((resolve) => { window.onRestored = resolve; });
          window.conn = await wsmvc.dial(`/ws?client=${tag}`, { default: events }, {
            reconnect: { initialDelay: 50, maxDelay: 500 },
            onLost: (c, info) => onLost(info),
            onRestored: (c, info) => onRestored(info),
          });
          window.ns = await conn.connect('default');
          await ns.joinRoom('r1');
          await ns.joinRoom('r2');
          return conn.id;
        }""",
        tag,
    )
    api(server, f"/hold?client={tag}", "POST")  # the server is "down" for this page
    try:
        api(server, f"/kick?id={first_id}", "POST")
        lost = page.evaluate("() => within(lost, 'onLost')")
        assert lost == {"code": 4000, "reason": "kicked", "reconnecting": True}
        assert page.evaluate("() => [conn.state, ns.emit('note', 'typed while away')]") == [
            "reconnecting",
            True,
        ]
    finally:
        api(server, f"/release?client={tag}", "POST")
    restored = page.evaluate("() => within(restored, 'onRestored', 10000)")
    assert restored["previousId"] == first_id
    assert restored["failed"] == []
    new_id = page.evaluate("() => conn.id")
    assert new_id != first_id
    for room in ("r1", "r2"):
        assert new_id in api(server, f"/members?namespace=default&room={room}")
        assert first_id not in api(server, f"/members?namespace=default&room={room}")
    assert page.evaluate("async () => (await ns.ask('ask', 'back')).Body") == "pong:back"
    assert api(server, f"/notes?client={tag}") == ["typed while away"]
    assert page.evaluate("() => seen") == [
        "_OnNamespaceConnected ",
        "_OnRoomJoined r1",
        "_OnRoomJoined r2",
        "_OnRoomLeft r1 forced",
        "_OnRoomLeft r2 forced",
        "_OnNamespaceDisconnect  forced",
        "_OnNamespaceConnected ",
        "_OnRoomJoined r1",
        "_OnRoomJoined r2",
    ]
    page.evaluate("() => conn.close()")


def test_the_client_file_is_the_one_in_the_package(open_page: OpenPage, server: AppProcess) -> None:
    page = open_page()
    served = page.evaluate("async () => (await fetch('/ws/wsmvc.js')).text()")
    assert served == (REPO_ROOT / "wsmvc" / "static" / "wsmvc.js").read_text()


def test_the_page_gets_its_connection_back_from_a_server_with_recovery(
    open_page: OpenPage, server: AppProcess
) -> None:
    """The server aborts the page's TCP connection (no close frame) in the middle of 1,000
    messages to its room, while the page answers each with a numbered note: the page comes
    back to the same connection (same id, no forced event, ``recovered``), its handler saw
    1..1000 in order, once, and the server got every note once, in order, the ones typed
    while away right after the ones sent before the loss."""
    page = open_page()
    tag = "browser-recovery"
    got = page.evaluate(
        """async (tag) => {
          const inbox = new Inbox();
          const numbers = [];
          let atLoss = -1;
          const forced = [];
          const conn = await wsmvc.dial(`/rws?client=${tag}`, {
            default: {
              _OnRoomLeft: (ns, msg) => forced.push(msg.Event),
              _OnNamespaceDisconnect: (ns, msg) => forced.push(msg.Event),
              n: (ns, msg) => {
                numbers.push(Number(msg.Body));
                ns.emit('note', String(numbers.length));
                if (numbers.length === 1000) inbox.put('all', true);
              },
            },
          }, {
            reconnect: { initialDelay: 20, maxDelay: 200 },
            onLost: (c, info) => {
              atLoss = numbers.length;
              c.namespace('default').emit('note', 'typed while away');
              inbox.put('lost', info);
            },
            onRestored: (c, info) => inbox.put('restored', info),
          });
          const ns = await conn.connect('default');
          await ns.joinRoom('br');
          const firstId = conn.id;
          const started = performance.now();
          const streamed = fetch(`/stream?id=${conn.id}&room=br&count=1000&drop=310`,
                                 { method: 'POST' });
          const lost = await inbox.next('lost');
          const restored = await inbox.next('restored');
          await within(streamed, 'the stream');
          await inbox.next('all');
          const elapsed = performance.now() - started;
          await ns.ask('ask', 'after');  // the notes were handled before its answer
          const id = conn.id;
          const forcedBefore = [...forced];
          await conn.close();  // (its own forced events: a close)
          return { firstId, id, lost, restored, atLoss, forced: forcedBefore, elapsed,
                   inOrder: numbers.every((n, i) => n === i + 1), count: numbers.length };
        }""",
        tag,
    )
    assert got["lost"] == {"code": 1006, "reason": "", "reconnecting": True}
    assert got["restored"] == {
        "failed": [],
        "recovered": True,
        "previousId": got["firstId"],
        "attempts": 1,
    }
    assert got["id"] == got["firstId"]
    assert (got["count"], got["inOrder"], got["forced"]) == (1000, True, [])
    at_loss = got["atLoss"]
    numbered = [str(n) for n in range(1, 1001)]
    expected = [*numbered[:at_loss], "typed while away", *numbered[at_loss:]]
    assert api(server, f"/notes?client={tag}") == expected
    print(f"1,000 messages across a dropped connection in Chromium: {got['elapsed']:.0f} ms")
