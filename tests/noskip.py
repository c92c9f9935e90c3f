"""Under ``CI=true`` nothing may skip: a test that would skip (a missing redis-server,
nats-server, Node.js, npm package or Chromium) fails instead, with its skip reason.

CI installs every part the tests need (``.ci/run``); a skip there would hide a part that
did not install, and the run would go green without testing it. On a developer's machine
the skips stay skips, each naming the command that installs what is missing.
Loaded by ``tests/conftest.py``; ``tests/test_noskip.py`` checks it in a child pytest.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").lower() in ("true", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not in_ci():
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, where nothing may skip (CI installs it): {reason}"
