"""Fixtures of the examples' tests: each example runs as a child process on a free port.

``example("auth", "--secret", "s")`` starts ``examples/auth/app.py`` on 127.0.0.1, waits
for its ready line and gives an :class:`Example`; at the end of the test it is stopped with
SIGTERM and must exit with status 0 having logged no error. The Node.js checks use the
neffos.js and ws packages installed for the interop suite (``tests/interop/node_modules``)
and are skipped, with the setup hint, when Node or those packages are missing.

The child processes and the Node runner are the interop suite's
(``tests/interop/interop_support.py``). Nothing sleeps: every wait is a read of a child's
output (or its exit) with a deadline.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.interop_support import (
    REPO_ROOT,
    START_TIMEOUT,
    AppProcess,
    NodeScripts,
    require_node,
)

EXAMPLES = REPO_ROOT / "examples"
JS_DIR = Path(__file__).resolve().parent / "js"
READY = re.compile(r" ready on (ws://(\S+?)(/\S*))$")

Node = NodeScripts  # runs the scripts of tests/examples/js


class Example(AppProcess):
    """``examples/<name>/app.py`` as a child process: stdout read line by line, the log
    (stderr) in a file. Its first line must be its ready line."""

    def __init__(self, name: str, args: tuple[str, ...], log_dir: Path) -> None:
        super().__init__(name, EXAMPLES / name / "app.py", log_dir, ready=READY, args=args)
        self.http = ""  # http://host:port

    def _is_ready_line(self, line: str, port: int) -> bool:
        match = READY.search(line)
        if match is None:
            raise AssertionError(f"{self.name}: unexpected first line {line!r}")
        self.url = match.group(1)
        self.http = "http://" + match.group(2)
        return True

    def run_command(self, *args: str) -> str:
        """Run the app once with ``args`` (not as a server); returns its stdout."""
        done = subprocess.run(
            [sys.executable, str(self.app), *args],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=True,
        )
        return done.stdout


StartExample = Callable[..., Example]


@pytest.fixture
def example(tmp_path: Path) -> Iterator[StartExample]:
    """``example(name, *args)`` starts ``examples/<name>/app.py``; stopped (and checked)
    with SIGTERM at the end of the test unless the test stopped it itself."""
    started: list[Example] = []

    def start(name: str, *args: str) -> Example:
        app = Example(name, args, tmp_path)
        app.start()
        started.append(app)
        return app

    yield start
    failures: list[str] = []
    for app in started:
        if app.running:
            try:
                app.stop()
            except AssertionError as exc:
                failures.append(str(exc))
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="session")
def node() -> Node:
    """Node.js with neffos.js and ws, for the scripts of ``tests/examples/js``; skips the
    test when they are missing."""
    return Node(require_node("needs"), JS_DIR)
