"""Helpers of the browser suite: the chat example as a child process, and a page object.

Nothing here sleeps: a child's ready line is read with a deadline, and every wait on a
page is a Playwright ``expect`` (which polls the page until its timeout). The child
processes are the interop suite's (``tests/interop/interop_support.py``).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from tests.interop.interop_support import REPO_ROOT, AppProcess

try:
    from playwright.sync_api import Locator, Page, WebSocket, expect
except ImportError:  # the fixtures skip the suite with SETUP_HINT
    pass

CHAT_APP = REPO_ROOT / "examples" / "chat" / "app.py"
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
# The npm copy of neffos.js (an ES module), for the test that runs the chat page on it.
NEFFOS_JS = (
    REPO_ROOT / "tests" / "interop" / "node_modules" / "neffos.js" / "dist" / "neffos.min.js"
)
# The client the chat page imports: the chat server's own wsmvc.js (Server.mount).
CLIENT_PATH = "/chat/wsmvc.js"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

SETUP_HINT = "apt-get install chromium; pip install playwright — .ci/run and tox -e browser do it"
NEFFOS_HINT = "npm ci --prefix tests/interop (tox -e browser does it)"
# Without these, Chromium on a machine with no network waits on its background requests.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

READY_LINE = re.compile(r"^chat ready on (http://\S+)")

# The open_page fixture: open_page(app) opens a fresh tab (see conftest.py).
OpenPage = Callable[..., "ChatPage"]


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (127.0.0.1, localhost, ::1)."""
    return urlsplit(url).hostname in LOOPBACK_HOSTS


def origin(url: str) -> str:
    """``http://host:port`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class ChatApp(AppProcess):
    """``examples/chat/app.py`` as a child process (``--redis redis_url`` if given, and
    never ``WSMVC_REDIS`` from this environment); its log (stderr) goes to a file in
    ``log_dir``, one for each run. Its first line must be its ready line."""

    def __init__(self, log_dir: Path, *, redis_url: str | None = None, label: str = "chat") -> None:
        super().__init__(
            label,
            CHAT_APP,
            log_dir,
            ready=READY_LINE,
            args=("--redis", redis_url) if redis_url else (),
            env={k: v for k, v in os.environ.items() if k != "WSMVC_REDIS"},
        )
        self.redis_url = redis_url

    def _is_ready_line(self, line: str, port: int) -> bool:
        if super()._is_ready_line(line, port):
            return True
        raise RuntimeError(
            f"the chat app printed {line!r} instead of its ready line; log:\n{self.log()}"
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:  # type: ignore[override]
        """SIGTERM, as a user's Ctrl-C or a service manager would; fails unless the app
        exits with status 0 having logged no error. Returns the exit status."""
        super().stop(sig)
        assert self.returncode is not None
        return self.returncode

    def check_clean_stop(self) -> None:
        """Stop it if it runs (:meth:`stop` checks the exit status and the log)."""
        if self.running:
            self.stop()


class ChatPage:
    """One user's tab of the chat page, as a user sees and uses it."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []  # the URL of every request the tab made
        self.sockets: list[str] = []  # the URL of every websocket the tab opened
        page.on("request", lambda request: self.requests.append(request.url))
        self.received: list[str] = []  # the text of every websocket frame the tab received
        page.on("websocket", self._opened)

    def _opened(self, ws: WebSocket) -> None:
        self.sockets.append(ws.url)
        ws.on("framereceived", self._record)

    def _record(self, payload: str | bytes) -> None:
        self.received.append(payload if isinstance(payload, str) else payload.decode("latin-1"))

    def received_text(self, text: str) -> bool:
        """Whether any frame this tab received so far contains ``text``."""
        return any(text in frame for frame in self.received)

    # -- doing things ---------------------------------------------------------------------

    def enter(self, name: str) -> None:
        self.page.get_by_label("Your name").fill(name)
        self.enter_button.click()  # Playwright waits until it is enabled (chat.js loaded)

    def login(self, name: str) -> None:
        """Enter with ``name`` and wait until the lobby is shown, joined."""
        self.enter(name)
        expect(self.status).to_have_text("online")
        expect(self.title).to_have_text("#lobby")
        expect(self.room_item("lobby")).not_to_have_class(re.compile(r"\baway\b"))

    def join(self, room: str) -> None:
        """Join ``room`` (it becomes the room shown)."""
        self.page.get_by_label("Join a room").fill(room)
        self.page.get_by_role("button", name="Join", exact=True).click()
        expect(self.title).to_have_text(f"#{room}")

    def open(self, room: str) -> None:
        self.room_item(room).get_by_role("button").click()
        expect(self.title).to_have_text(f"#{room}")

    def leave(self) -> None:
        """Leave the room shown."""
        self.page.get_by_role("button", name="Leave room").click()

    def type(self, text: str) -> None:
        """Type into the message box, key by key, as a user does."""
        self.message_box.press_sequentially(text)

    def send(self, text: str) -> None:
        self.message_box.fill(text)
        self.message_box.press("Enter")

    def say(self, text: str) -> None:
        """Send ``text`` and wait until it is shown as this user's own line."""
        self.send(text)
        expect(self.page.locator("#messages li.mine").last).to_contain_text(text)

    # -- what is on the page ------------------------------------------------------------

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    @property
    def login_error(self) -> Locator:
        return self.page.locator("#login-error")

    @property
    def enter_button(self) -> Locator:
        return self.page.get_by_role("button", name="Enter the chat")

    @property
    def title(self) -> Locator:
        return self.page.locator("#room-title")

    @property
    def online(self) -> Locator:
        """``N online`` of the room shown."""
        return self.page.locator("#room-online")

    @property
    def names(self) -> Locator:
        """Who is online in the room shown, ``alice, bob``."""
        return self.page.locator("#room-names")

    @property
    def typing(self) -> Locator:
        return self.page.locator("#typing")

    @property
    def send_error(self) -> Locator:
        return self.page.locator("#send-error")

    @property
    def message_box(self) -> Locator:
        return self.page.get_by_label("Message", exact=True)

    @property
    def rooms(self) -> Locator:
        """The room list of the sidebar, one item per room."""
        return self.page.locator("#rooms li")

    def room_item(self, room: str) -> Locator:
        return self.page.locator(f'#rooms li[data-room="{room}"]')

    def room_count(self, room: str) -> Locator:
        """The online count next to ``room`` in the sidebar."""
        return self.room_item(room).locator(".count")

    def unread(self, room: str) -> Locator:
        return self.room_item(room).locator(".unread")

    @property
    def lines(self) -> Locator:
        """The chat lines of the room shown: ``<name> <time> <text>`` each."""
        return self.page.locator("#messages li.chat")

    def line(self, sender: str, text: str) -> Locator:
        """The chat line of ``sender`` saying exactly ``text`` in the room shown."""
        return self.lines.filter(
            has=self.page.locator(".from", has_text=re.compile(f"^{re.escape(sender)}$"))
        ).filter(has=self.page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$")))

    @property
    def notices(self) -> Locator:
        """The ``bob joined`` / ``bob left`` lines of the room shown."""
        return self.page.locator("#messages li.notice")
