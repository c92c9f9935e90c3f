"""The inspector page (``wsmvc.inspector``) in a real headless Chromium.

The application (``tests/apps/inspector_app.py``, a child process) serves its wsmvc server
at ``/ws`` and the inspector at ``/inspector/`` for requests with an operator's cookie.
An operator's browser context (with the cookie) opens the inspector; another context
(without it) plays a user of the application from ``/client`` with the server's own
wsmvc.js. The tests watch the user's connection, room and handler error appear on the
inspector, disconnect it with the page's button, and see it gone on both sides.
Screenshots go to ``artifacts/inspector-*.png``.

Nothing sleeps: Python waits with Playwright's ``expect`` (polling until its timeout) and
on the pages' promises, which have deadlines of their own. No page may throw, log an
error (a Content-Security-Policy violation included), or ask for anything but the app.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from chat_support import ARTIFACTS

from tests.interop.interop_support import REPO_ROOT, AppProcess, problem_lines

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

APP = REPO_ROOT / "tests" / "apps" / "inspector_app.py"
READY_LINE = re.compile(r"^inspector app ready on (http://\S+)")
WAIT_MS = 5000
PNG = b"\x89PNG\r\n\x1a\n"

# A user of the application, in the /client page: dial (no reconnect), connect "chat",
# join `room`, make the handler of "lookup" raise; the close is kept in window.ended.
USER = """async ({ room, wait }) => {
  const within = (promise, what) => Promise.race([promise, new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`timed out: ${what}`)), wait))]);
  window.ended = new Promise((resolve) => { window.onClosedInfo = resolve; });
  const conn = await within(wsmvc.dial('/ws', { chat: { said: () => {} } }, {
    reconnect: false,
    onClosed: (c, info) => window.onClosedInfo({ code: info.code, reason: info.reason }),
  }), 'dial');
  const ns = await within(conn.connect('chat'), 'connect');
  await within(ns.joinRoom(room), 'join');
  const asked = ns.ask('lookup', 'order 42').then(() => null, (e) => e.message);
  const refused = await within(asked, 'ask');
  window.conn = conn;
  return { id: conn.id, refused };
}"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    process = AppProcess(
        "inspector app", APP, tmp_path_factory.mktemp("inspector-browser"), ready=READY_LINE
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


OpenPage = Callable[..., "Page"]


@pytest.fixture
def open_page(browser: Browser, server: AppProcess) -> Iterator[OpenPage]:
    """``open_page(path, operator=False)``: a fresh browser context (with the operator's
    cookie if ``operator``) on ``path`` of the app; returns the page."""
    contexts = []
    thrown: list[str] = []
    strays: list[str] = []

    def open_(path: str, *, operator: bool = False) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        contexts.append(context)
        if operator:
            context.add_cookies([{"name": "inspector", "value": "letmein", "url": server.url}])
        page = context.new_page()
        page.on("pageerror", lambda exc: thrown.append(f"{exc.name}: {exc.message}"))
        if operator:  # the inspector page logs nothing (a CSP violation would be an error)
            page.on("console", lambda m: thrown.append(m.text) if m.type == "error" else None)

        def refuse(route: Any) -> None:
            strays.append(route.request.url)
            route.abort()

        page.route(lambda url: not url.startswith(server.url), refuse)
        page.goto(server.url + path)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not strays, "a page asked for more than the app:\n" + "\n".join(strays)
    assert not thrown, "a page threw or logged errors:\n" + "\n".join(thrown)


def open_user(open_page: OpenPage, room: str) -> tuple[Page, str]:
    """A user's page connected to ``chat`` and ``room``; returns it and the connection id."""
    page = open_page("/client")
    page.wait_for_function("document.title === 'ready'", timeout=WAIT_MS)
    got = page.evaluate(USER, {"room": room, "wait": WAIT_MS})
    assert got["refused"] == "no such order"  # the handler raised; the inspector lists it
    return page, str(got["id"])


def open_inspector(open_page: OpenPage) -> Page:
    from playwright.sync_api import expect

    page = open_page("/inspector/", operator=True)
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    return page


def screenshot(page: Page, name: str) -> None:
    path = ARTIFACTS / f"inspector-{name}.png"
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    page.screenshot(path=path, full_page=True)
    assert path.read_bytes().startswith(PNG), f"{path} is not a PNG"


def test_without_the_check_the_page_and_its_websocket_are_refused(
    open_page: OpenPage, server: AppProcess
) -> None:
    page = open_page("/client")
    page.wait_for_function("document.title === 'ready'", timeout=WAIT_MS)
    response = page.context.request.get(server.url + "/inspector/")
    assert response.status == 403
    assert "inspector" not in response.text()
    refused = page.evaluate(
        """async (wait) => {
          const url = new URL('/inspector/ws', location.href);
          url.protocol = 'ws:';
          return Promise.race([
            wsmvc.dial(url.href, { _wsmvcInspector: {} }, { reconnect: false })
              .then(() => 'dialed', (e) => e.name),
            new Promise((resolve) => setTimeout(() => resolve('no answer'), wait)),
          ]);
        }""",
        WAIT_MS,
    )
    assert refused == "ConnectionClosedError"  # the upgrade got 403


def test_a_connection_shows_with_its_room_and_error_and_the_button_disconnects_it(
    open_page: OpenPage,
) -> None:
    from playwright.sync_api import expect

    inspector = open_inspector(open_page)
    user, conn_id = open_user(open_page, "lobby")

    row = inspector.locator(f'#connections tr[data-id="{conn_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".address")).to_have_text("127.0.0.1")
    expect(row.locator('.ns[data-namespace="chat"] .room[data-room="lobby"]')).to_be_visible()
    room = inspector.locator('#rooms tr[data-room="chat/lobby"]')
    expect(room).to_contain_text(conn_id)
    expect(inspector.locator('#namespaces tr[data-namespace="chat"]')).to_be_visible()
    error = inspector.locator("#errors li", has_text="KeyError")
    expect(error.first).to_contain_text("order 42")
    expect(error.first).to_contain_text(conn_id)
    expect(row.locator(".in")).not_to_have_text("0")  # counted since the page opened
    screenshot(inspector, "live")

    row.locator("button.disconnect").click()
    expect(inspector.locator("#toast")).to_have_text(f"Disconnected {conn_id}.")
    expect(row).to_have_count(0)
    expect(room).to_have_count(0)
    closed = user.evaluate(
        """(wait) => Promise.race([window.ended, new Promise((_, reject) =>
             setTimeout(() => reject(new Error('not closed')), wait))])""",
        WAIT_MS,
    )
    assert closed == {"code": 1008, "reason": "disconnected from the inspector"}
    screenshot(inspector, "disconnected")


def test_the_filter_narrows_the_connections(open_page: OpenPage) -> None:
    from playwright.sync_api import expect

    inspector = open_inspector(open_page)
    _, kitchen = open_user(open_page, "kitchen")
    _, garden = open_user(open_page, "garden")
    rows = inspector.locator("#connections tbody tr[data-id]")
    expect(inspector.locator(f'tr[data-id="{garden}"]')).to_be_visible()
    expect(inspector.locator(f'tr[data-id="{kitchen}"]')).to_be_visible()

    inspector.locator("#filter").fill("kitch")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", kitchen)
    expect(inspector.locator("#connections-note")).to_contain_text("1 matching “kitch”")
    screenshot(inspector, "filtered")

    inspector.locator("#filter").fill("no such thing")
    expect(inspector.locator("#connections tbody td.empty")).to_have_text(
        "No connection matches the filter."
    )
