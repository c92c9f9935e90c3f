"""The conformance suite: the same scenarios (``scenarios.json``) run by every client
against one real wsmvc server (``app.py``, a child process on 127.0.0.1):

* ``neffos.js`` - neffos.js 0.1.34 from npm, in Node, on the ``ws`` package;
* ``wsmvc.js-ws`` - wsmvc's JavaScript client in Node, on the ``ws`` package;
* ``wsmvc.js-builtin`` - the same on Node's own WebSocket (``--experimental-websocket`` on
  Node 20; not run on a Node that has none);
* ``python`` - ``wsmvc.dial``, and ``dial(..., reconnect=Backoff(...))`` for the steps that
  dial with ``reconnect``.

Each (scenario, client) pair is one test, ``test_conformance[<scenario>-<client>]``: a
failure names the client and the behaviour, and shows every step the driver observed.
Where a client differs by design, the step says so per client (``differs``, with its
reason); a client's bug is a strict xfail of the scenario for that client (``xfail``). The
scenarios that stop the server get one of their own; the others share one, which must log
no error while they run. Needs Node and ``npm ci --prefix tests/interop`` (``tox -e
interop``); without them the Node clients' tests skip with that hint (under ``CI=true``
they fail).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.conformance import (
    BY_NAME,
    SCENARIOS,
    Client,
    Harness,
    ScenarioFailed,
    clients,
    conformance_app,
    for_client,
    run_scenario,
)
from tests.interop.interop_support import AppProcess, problem_lines, require_node

pytestmark = pytest.mark.interop


def pairs() -> list[Any]:
    """Every (scenario, client), ``<scenario>-<client>`` as its id; a strict xfail where the
    scenario names the client (or its family) in ``xfail``."""
    params = []
    for scenario in SCENARIOS["scenarios"]:
        for client in clients():
            reason = for_client(scenario.get("xfail", {}), client)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(
                pytest.param(
                    scenario["name"], client, id=f"{scenario['name']}-{client.name}", marks=marks
                )
            )
    return params


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    app = conformance_app(tmp_path_factory.mktemp("conformance"))
    app.start()
    try:
        yield app
    finally:
        if app.running:
            app.stop()  # checks a clean exit and a log without errors


@pytest.fixture
def app(request: pytest.FixtureRequest, scenario: str, tmp_path: Path) -> Iterator[AppProcess]:
    """The server of the scenario: its own for one that stops it, else the shared one,
    which must log no error while the test runs."""
    if BY_NAME[scenario].get("own_server"):
        own = conformance_app(tmp_path)
        own.start()
        try:
            yield own
        finally:
            if own.running:
                own.stop()
        return
    shared: AppProcess = request.getfixturevalue("shared_app")
    offset = shared.log_size()
    yield shared
    problems = problem_lines(shared.log(offset))
    assert not problems, "the server logged errors during the test:\n" + "\n".join(problems)


@pytest.mark.parametrize(("scenario", "client"), pairs())
def test_conformance(scenario: str, client: Client, app: AppProcess, tmp_path: Path) -> None:
    """The client behaves as the scenario says, step by step."""
    node = require_node("the conformance suite's Node clients need") if client.node else None
    failure = None
    try:
        run_scenario(
            BY_NAME[scenario], client, app.url, node, Harness(app), tmp_path / "driver-stderr.txt"
        )
    except ScenarioFailed as failed:
        failure = str(failed)  # the transcript says it all: no traceback
    if failure is not None:
        pytest.fail(failure, pytrace=False)
