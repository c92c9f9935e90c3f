"""neffos.js (Node, on ``ws``) against the safety edges of issue 11 (``tests/apps/safety.py``).

``ws`` fails a connection on a text frame that is not UTF-8 (1007), as browsers do: before
the fix, neffos.js lost the connection and its ``ask`` never settled. Now the bytes come
in a binary frame, which neffos.js hands over as an ``ArrayBuffer``, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_support import REPO_ROOT, AppProcess, NodeScripts, problem_lines

pytestmark = pytest.mark.interop

NOT_UTF8 = list(b"\xff\xfe\x00 not utf-8 \x80")


@pytest.fixture
def safety_server(tmp_path: Path) -> Iterator[AppProcess]:
    server = AppProcess(
        "safety server",
        REPO_ROOT / "tests" / "apps" / "safety.py",
        tmp_path,
        ready=re.compile(r"safety server ready on (ws://\S+)"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not problem_lines(server.log()), server.log()


def test_neffos_js_gets_bytes_that_are_not_utf8_and_keeps_its_connection(
    node: str, safety_server: AppProcess
) -> None:
    steps = NodeScripts(node).run("safety.mjs", safety_server.url)
    assert steps["bytes"] == {"body": {"ArrayBuffer": NOT_UTF8}, "binary": True}
    assert steps["emit"] == {"body": {"ArrayBuffer": NOT_UTF8}, "binary": True}
    assert steps["text"] == {"body": {"text": "still here"}, "closed": None}
    assert steps["unknown"] == {"rejected": "unknown event '" + "x" * 64 + "…'"}
    assert steps["third room"] == {"rejected": "too many rooms: at most 2 per namespace"}
