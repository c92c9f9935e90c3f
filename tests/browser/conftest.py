"""Fixtures of the browser suite (``pytest -m browser tests/browser``, or ``tox -e browser``).

Real parts only: the chat example (``examples/chat/app.py``) as a child process on a free
port, and Debian's Chromium driven headless by Playwright for Python (sync API). The page
is served as users get it, its client (wsmvc.js) by the chat server itself. Without
Chromium or Playwright every test here is skipped with the command that installs them
(the one test on neffos.js also needs the npm copy of neffos.js).

* ``browser`` - one Chromium for the session (Playwright gives it a fresh profile).
* ``start_chat_app(redis_url=None)`` - starts the chat app for this test; at the end
  each one started must stop cleanly on SIGTERM, and its log must hold no error.
* ``chat_app`` - one chat app, started so.
* ``open_page`` - ``open_page(app)`` opens the chat page of ``app`` in a fresh browser
  context (its own storage, like another person's browser) and returns a
  :class:`ChatPage`; ``open_page(app, before=fn)`` calls ``fn(page)`` before the page
  loads (to add routes, or a fake clock). Every request for anything but ``app`` fails
  (as it would without internet access, and from a page that must need nothing else), and
  at the end no page may have thrown nor asked for anything but its app.
* ``redis_url`` - a redis-server of the test's own (skipped without ``redis-server``).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from chat_support import CHROMIUM, CHROMIUM_ARGS, SETUP_HINT, ChatApp, ChatPage, OpenPage, origin

from tests.interop.interop_support import START_TIMEOUT, STOP_TIMEOUT, LineReader, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
        pytest.skip(f"browser tests need {CHROMIUM} and Playwright for Python: {SETUP_HINT}")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def start_chat_app(tmp_path: Path) -> Iterator[Callable[..., ChatApp]]:
    apps: list[ChatApp] = []

    def start(redis_url: str | None = None) -> ChatApp:
        app = ChatApp(tmp_path, redis_url=redis_url, label=f"chat-{len(apps) + 1}")
        apps.append(app)
        app.start()
        return app

    yield start
    failures = []
    for app in apps:  # stop them all, then report
        try:
            app.check_clean_stop()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)


@pytest.fixture
def chat_app(start_chat_app: Callable[..., ChatApp]) -> ChatApp:
    return start_chat_app()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    contexts: list[BrowserContext] = []
    thrown: list[str] = []
    strays: list[str] = []

    def refuse(route: Route) -> None:
        strays.append(route.request.url)
        route.abort("internetdisconnected")

    def open_(app: ChatApp, *, before: Callable[[Page], None] | None = None) -> ChatPage:
        context = browser.new_context(viewport={"width": 1100, "height": 720})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: thrown.append(f"{exc.name}: {exc.message}"))
        app_origin = origin(app.url) + "/"
        page.route(lambda url: not url.startswith((app_origin, "data:")), refuse)
        chat = ChatPage(page)
        if before is not None:
            before(page)
        page.goto(app.url)
        return chat

    yield open_
    for context in contexts:
        context.close()
    assert not thrown, "the page threw:\n" + "\n".join(thrown)
    assert not strays, "the page asked for more than its app:\n" + "\n".join(strays)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("the Redis test needs redis-server: apt-get install redis-server (.ci/run)")
    port = free_port()
    proc = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        reader = LineReader(proc.stdout)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            line = reader.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(
                    f"redis-server exited with status {proc.wait()} before it was ready"
                )
            if "Ready to accept connections" in line:
                break
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(STOP_TIMEOUT)
        proc.stdout.close()
