"""Fixtures of the browser suite (``pytest -m browser tests/browser``, or ``tox -e browser``).

Real parts only: the chat example (``examples/chat/app.py``) as a child process on a free
port, Debian's Chromium driven headless by Playwright for Python (sync API), and the
npm copy of neffos.js 0.1.34 answering the CDN URL the page loads (``page.route``; the
page itself is served as users get it). Without Chromium, Playwright or the npm copy,
every test here is skipped with the command that installs them.

* ``browser`` - one Chromium for the session (Playwright gives it a fresh profile).
* ``start_chat_app(redis_url=None)`` - starts the chat app for this test; at the end
  each one started must stop cleanly on SIGTERM, and its log must hold no error.
* ``chat_app`` - one chat app, started so.
* ``open_page`` - ``open_page(app)`` opens the chat page of ``app`` in a fresh browser
  context (its own storage, like another person's browser) and returns a
  :class:`ChatPage`; at the end no page may have thrown, nor asked for anything but the
  app and the neffos.js URL.
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
from chat_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    NEFFOS_CDN_URL,
    NEFFOS_HINT,
    NEFFOS_JS,
    SETUP_HINT,
    ChatApp,
    ChatPage,
    OpenPage,
)

from tests.interop.interop_support import START_TIMEOUT, STOP_TIMEOUT, LineReader, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Route


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
        pytest.skip(f"browser tests need {CHROMIUM} and Playwright for Python: {SETUP_HINT}")
    if not NEFFOS_JS.exists():
        pytest.skip(f"browser tests serve neffos.js from {NEFFOS_JS}: {NEFFOS_HINT}")
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

    def serve_neffos(route: Route) -> None:
        # A module script from another origin needs CORS, as jsDelivr sends it.
        route.fulfill(
            path=NEFFOS_JS,
            content_type="text/javascript; charset=utf-8",
            headers={"Access-Control-Allow-Origin": "*"},
        )

    def refuse(route: Route) -> None:
        strays.append(route.request.url)
        route.abort()

    def open_(app: ChatApp) -> ChatPage:
        context = browser.new_context(viewport={"width": 1100, "height": 720})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: thrown.append(f"{exc.name}: {exc.message}"))
        page.route(
            lambda url: (
                not url.startswith(("http://127.0.0.1:", "data:")) and url != NEFFOS_CDN_URL
            ),
            refuse,
        )
        page.route(NEFFOS_CDN_URL, serve_neffos)
        chat = ChatPage(page)
        page.goto(app.url)
        return chat

    yield open_
    for context in contexts:
        context.close()
    assert not thrown, "the page threw:\n" + "\n".join(thrown)
    assert not strays, "the page asked for more than the app and neffos.js:\n" + "\n".join(strays)


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
