"""Fixtures of the interop suite (``pytest -m interop tests/interop``, or ``tox -e interop``).

The suite needs Node.js and the pinned client packages in ``tests/interop/node_modules``
(``npm ci`` there); without them every test here is skipped with that hint.

* ``echo_server`` - one ``examples/echo.py`` subprocess for the session, on a free port;
  each test also checks that the server logged no error while it ran.
* ``own_echo_server`` - a server of the test's own, for tests that stop or restart it.
* ``js`` - runs ``js/scenario.mjs`` scenarios with the real neffos.js client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_support import EchoServer, NodeRunner, problem_lines, require_node


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable; skips the suite when Node or the npm packages are missing."""
    return require_node("interop tests need")


@pytest.fixture(autouse=True)
def _needs_node(node: str) -> None:
    """Every test of this directory is skipped when ``node`` is (the brief: whole suite)."""


@pytest.fixture(scope="session")
def js(node: str) -> NodeRunner:
    return NodeRunner(node)


@pytest.fixture(scope="session")
def _session_echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    server = EchoServer(tmp_path_factory.mktemp("echo-session"))
    server.start()
    try:
        yield server
    finally:
        if server.running:
            server.stop()


@pytest.fixture
def echo_server(_session_echo_server: EchoServer) -> Iterator[EchoServer]:
    """The shared echo server; fails the test if the server logged an error meanwhile."""
    offset = _session_echo_server.log_size()
    yield _session_echo_server
    problems = problem_lines(_session_echo_server.log(offset))
    assert not problems, "echo server logged errors during the test:\n" + "\n".join(problems)


@pytest.fixture
def own_echo_server(tmp_path: Path) -> Iterator[EchoServer]:
    """An echo server for this test alone (stopped with the clean-exit check at the end)."""
    server = EchoServer(tmp_path)
    server.start()
    yield server
    if server.running:
        server.stop()
