"""examples/seed_chat.py (the Iris "Websocket Controller" example) with real neffos.js clients.

The example runs as a child process on a free port; ``js/seed_chat.mjs`` drives neffos.js
0.1.34 clients against it and reports what they received. The DEV logger lines are read
from the example's stdout, as a user running it would see them. Nothing sleeps: every wait
is a read of a child's output with a deadline.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_support import REPO_ROOT, AppProcess, NodeScenario, NodeScripts

pytestmark = pytest.mark.interop

SEED_APP = REPO_ROOT / "examples" / "seed_chat.py"
READY_LINE = re.compile(r"seed chat ready on (ws://\S+/websocket_endpoint)$")


class SeedChat(AppProcess):
    """``examples/seed_chat.py`` as a child process: its stdout lines, its stderr in a file.
    Its first line must be its ready line, with the URL of the port it was given."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__("seed_chat", SEED_APP, log_dir, ready=READY_LINE)

    def _is_ready_line(self, line: str, port: int) -> bool:
        match = READY_LINE.fullmatch(line)
        assert match, f"the first line is not the ready line: {line!r}"
        assert match.group(1) == f"ws://127.0.0.1:{port}/websocket_endpoint"
        self.url = match.group(1)
        return True

    def dev_lines(self) -> list[str]:
        return [line for line in self.lines if line.startswith("DEV ")]


@pytest.fixture
def seed_chat(tmp_path: Path) -> Iterator[SeedChat]:
    app = SeedChat(tmp_path)
    app.start()
    try:
        yield app
    finally:
        app.kill()


def run_clients(node: str, scenario: str, url: str) -> NodeScenario:
    return NodeScripts(node).start("seed_chat.mjs", scenario, url)


def test_chat_goes_to_the_other_clients_and_the_logger_prints_it(
    node: str, seed_chat: SeedChat
) -> None:
    steps = run_clients(node, "chat", seed_chat.url).finish()

    alice, bob = steps["connected"]["alice"], steps["connected"]["bob"]
    assert alice and bob and alice != bob
    chat = steps["chat"]
    assert chat["written"] is True
    assert chat["bobGot"] == "hello from alice"
    assert chat["aliceGot"] == "hi alice"
    assert chat["bobGotBye"] == "bye bob"
    # Nobody got their own message back (see the ordering note in seed_chat.mjs).
    assert chat["aliceInbox"] == ["hi alice"]
    assert chat["bobInbox"] == ["hello from alice", "bye bob"]
    assert steps["closed"]["alice"]["code"] == 1000
    assert steps["closed"]["bob"]["code"] == 1000

    seed_chat.wait_for_line(f"DEV {bob} left")
    seed_chat.stop(signal.SIGTERM)
    assert seed_chat.dev_lines() == [
        f"DEV {alice} connected to default",
        f"DEV {bob} connected to default",
        f"DEV {alice} left",  # her client-requested disconnect
        f"DEV {bob} left",  # his websocket closed
    ]


def test_ctrl_c_closes_the_clients_and_logs_their_disconnect(
    node: str, seed_chat: SeedChat
) -> None:
    clients = run_clients(node, "stay", seed_chat.url)
    try:
        carol = clients.until("connected")["connected"]["id"]
        seed_chat.wait_for_line(f"DEV {carol} connected to default")

        seed_chat.stop(signal.SIGINT)

        steps = clients.finish()
    finally:
        clients.close()
    assert steps["server_closed"] == {"code": 1001}  # going away
    assert seed_chat.dev_lines() == [
        f"DEV {carol} connected to default",
        f"DEV {carol} left",
    ]
