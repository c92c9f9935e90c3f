"""``tests/noskip.py``: under ``CI=true`` a skip fails the run; elsewhere it stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import pytest

def test_needs_a_missing_program():
    pytest.skip("needs frobnicate-server: apt-get install frobnicate")

@pytest.fixture
def part():
    pytest.skip("the fixture's part is missing")

def test_through_a_fixture(part):
    pass

@pytest.mark.xfail(reason="a known bug")
def test_known_bug():
    assert False

def test_fine():
    pass
"""


def run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(REPO)
    argv = [sys.executable, "-m", "pytest", "-p", "tests.noskip", "-p", "no:cacheprovider"]
    argv += ["-q", "-rA", "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)]
    return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_skip_fails_with_its_reason(tmp_path: Path, ci: str) -> None:
    result = run_probe(tmp_path, ci)
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in result.stdout, result.stdout
    assert "nothing may skip (CI installs it): needs frobnicate-server" in result.stdout
    assert "the fixture's part is missing" in result.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_elsewhere_a_skip_stays_a_skip(tmp_path: Path, ci: str | None) -> None:
    result = run_probe(tmp_path, ci)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in result.stdout, result.stdout
