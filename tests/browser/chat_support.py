"""Helpers of the browser suite: the chat example as a child process, and a page object.

Nothing here sleeps: a child's ready line is read with a deadline, and every wait on a
page is a Playwright ``expect`` (which polls the page until its timeout).
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    from playwright.sync_api import Locator, Page, expect
except ImportError:  # the fixtures skip the suite with SETUP_HINT
    pass

BROWSER_DIR = Path(__file__).resolve().parent
REPO_ROOT = BROWSER_DIR.parents[1]
CHAT_APP = REPO_ROOT / "examples" / "chat" / "app.py"
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
NEFFOS_JS = (
    REPO_ROOT / "tests" / "interop" / "node_modules" / "neffos.js" / "dist" / "neffos.min.js"
)
# What index.html loads; the tests answer it with the npm copy of the same file.
NEFFOS_CDN_URL = "https://cdn.jsdelivr.net/npm/neffos.js@0.1.34/dist/neffos.min.js"

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

START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
READY_LINE = re.compile(r"^chat ready on (http://\S+)")
LOG_PROBLEM = re.compile(r"^(ERROR|CRITICAL) |^Traceback ", re.MULTILINE)

# The open_page fixture: open_page() (or open_page(another_app)) opens a fresh tab.
OpenPage = Callable[..., "ChatPage"]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ChatApp:
    """``examples/chat/app.py`` as a child process; its log (stderr) goes to a file."""

    def __init__(self, log_dir: Path, *, redis_url: str | None = None, label: str = "chat") -> None:
        self.redis_url = redis_url
        self.log_path = log_dir / f"{label}.log"
        self.port = 0
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, port: int | None = None) -> None:
        """Start on ``port`` (a restart), or on a free port (tried three times)."""
        if port is not None:
            self._start_on(port)
            return
        failure = ""
        for _ in range(3):
            try:
                self._start_on(free_port())
                return
            except RuntimeError as exc:  # the port was taken meanwhile
                failure = str(exc)
        raise RuntimeError(failure)

    def _start_on(self, port: int) -> None:
        command = [sys.executable, "-u", str(CHAT_APP), "--host", "127.0.0.1", "--port", str(port)]
        if self.redis_url:
            command += ["--redis", self.redis_url]
        env = {k: v for k, v in os.environ.items() if k != "WSMVC_REDIS"}
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log
            )
        assert proc.stdout is not None
        line = _read_line(proc.stdout.fileno(), START_TIMEOUT)
        match = READY_LINE.match(line)
        if match is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
            raise RuntimeError(
                f"the chat app printed {line!r} instead of its ready line; log:\n{self.log()}"
            )
        self._proc, self.port, self.url = proc, port, match.group(1)

    def stop(self) -> int:
        """SIGTERM, as a user's Ctrl-C or a service manager would; returns the exit code."""
        proc = self._proc
        assert proc is not None, "the chat app is not running"
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
            raise AssertionError(f"the chat app ignored SIGTERM; log:\n{self.log()}") from None
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
        self._proc = None
        return code

    def check_clean_stop(self) -> None:
        """Stop it if it runs; fail unless it exited with 0 and logged no error."""
        code = self.stop() if self.running else 0
        assert code == 0, f"the chat app exited with {code} on SIGTERM; log:\n{self.log()}"
        problems = self.problems()
        assert not problems, "the chat app logged errors:\n" + "\n".join(problems)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def problems(self) -> list[str]:
        """The lines of the log that report an error or a traceback."""
        return [line for line in self.log().splitlines() if LOG_PROBLEM.match(line)]


def _read_line(fd: int, timeout: float) -> str:
    """The first line written to ``fd`` (``""`` if it closes first); TimeoutError after timeout."""
    return read_lines_until(fd, "\n", timeout).partition("\n")[0]


def read_lines_until(fd: int, text: str, timeout: float) -> str:
    """Read ``fd`` until ``text`` shows up or it closes; what was read.

    Raises :class:`TimeoutError` when neither happens within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    data = b""
    needle = text.encode()
    while needle not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {text!r} within {timeout}s; got {data!r}")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


class ChatPage:
    """One user's tab of the chat page, as a user sees and uses it."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.received: list[str] = []  # the text of every websocket frame the tab received
        page.on("websocket", lambda ws: ws.on("framereceived", self._record))

    def _record(self, payload: str | bytes) -> None:
        self.received.append(payload if isinstance(payload, str) else payload.decode("latin-1"))

    def received_text(self, text: str) -> bool:
        """Whether any frame this tab received so far contains ``text``."""
        return any(text in frame for frame in self.received)

    # -- doing things ---------------------------------------------------------------------

    def enter(self, name: str) -> None:
        self.page.get_by_label("Your name").fill(name)
        self.page.get_by_role("button", name="Enter the chat").click()

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
