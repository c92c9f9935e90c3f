"""wsmvc.js, the JavaScript client, in Node against a real wsmvc server.

Each ``*.test.mjs`` here runs under ``node --test`` against ``app.py`` (one child process
for the module, on a free port of 127.0.0.1), once with Node's own ``WebSocket`` (when this
Node has one, with ``--experimental-websocket`` on Node 20) and once with the ``ws``
package; the codec and the TypeScript declarations, which open no socket, run once, and
``docs.test.mjs`` runs the ``js`` blocks of ``docs/client-js.md`` against the guide's own
server (``docs_app.py``). A failure shows node's output; a server's log must hold no error.

Needs Node.js 18+ and ``npm ci --prefix tests/jsclient`` (``ws``, and ``typescript`` for
``tsc`` on ``types/usage.ts``); without them every test here is skipped with that hint
(``tox -e interop`` does it all).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.exchange.conftest import running_broker
from tests.interop.interop_support import AppProcess, problem_lines

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
APP = HERE / "app.py"
DOCS_APP = HERE / "docs_app.py"  # the server of docs/client-js.md, for docs.test.mjs
ACROSS_APP = HERE / "across_app.py"  # two servers of a cluster, for across.test.mjs
CLIENT_JS = HERE.parents[1] / "wsmvc" / "static" / "wsmvc.js"
TEST_FILES = sorted(path.name for path in HERE.glob("*.test.mjs"))
# Run once, with Node's own WebSocket if it has one, else ws ("any"): the files that open
# no websocket, and the guide's blocks (as its readers run them).
ONCE = {"codec.test.mjs", "types.test.mjs", "docs.test.mjs"}
READY_LINE = re.compile(r"^jsclient app ready on (http://\S+)")
DOCS_READY_LINE = re.compile(r"^docs app ready on (http://\S+)")
ACROSS_READY_LINE = re.compile(r"^across app ready on (http://\S+)")
SETUP_HINT = "npm ci --prefix tests/jsclient (tox -e interop does it)"
NODE_TIMEOUT = 120.0  # seconds for one test file; each of its waits is 5 s at most
BUILTIN_FLAG = "--experimental-websocket"  # Node 20's; Node 22 has WebSocket by default


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        pytest.skip(f"the wsmvc.js tests need Node.js 18+ on PATH, then {SETUP_HINT}")
    if not (HERE / "node_modules" / "ws").is_dir():
        pytest.skip(f"the wsmvc.js tests need tests/jsclient/node_modules: {SETUP_HINT}")
    return executable


def has_websocket(node: str, *flags: str) -> bool:
    """Whether ``node`` with ``flags`` has a global ``WebSocket``."""
    check = "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
    done = subprocess.run([node, *flags, "-e", check], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@functools.cache
def builtin_flags_of(node: str) -> list[str] | None:
    """The flags that give ``node`` its own WebSocket; ``None`` if it has none (Node 18)."""
    if has_websocket(node):
        return []
    if has_websocket(node, BUILTIN_FLAG):
        return [BUILTIN_FLAG]
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """test_node's runs: each file with Node's own WebSocket ("builtin", unless this Node
    has none: then nothing to test, rather than a skip) and with ws; ONCE files once."""
    if metafunc.function is not test_node:
        return
    node = shutil.which("node")
    builtin = node is None or builtin_flags_of(node) is not None
    both = ("builtin", "ws") if builtin else ("ws",)
    runs = [(name, ws) for name in TEST_FILES for ws in (("any",) if name in ONCE else both)]
    metafunc.parametrize(("test_file", "websocket"), runs)


@pytest.fixture(scope="module")
def builtin_flags(node: str) -> list[str] | None:
    """The flags that give this Node its own WebSocket; ``None`` if it has none."""
    return builtin_flags_of(node)


def running(process: AppProcess) -> Iterator[AppProcess]:
    process.start()
    try:
        yield process
    finally:
        if process.running:
            process.stop()  # checks a clean exit and a log without errors


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    log_dir = tmp_path_factory.mktemp("jsclient")
    yield from running(AppProcess("jsclient app", APP, log_dir, ready=READY_LINE))


@pytest.fixture(scope="module")
def docs_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    log_dir = tmp_path_factory.mktemp("jsclient-docs")
    yield from running(AppProcess("docs app", DOCS_APP, log_dir, ready=DOCS_READY_LINE))


@pytest.fixture(scope="module")
def across_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    """Two servers of a cluster on a NATS server of their own, behind a balancer."""
    log_dir = tmp_path_factory.mktemp("jsclient-across")
    with running_broker("nats", log_dir) as broker:
        args = ("--broker", broker.url)
        yield from running(
            AppProcess("across app", ACROSS_APP, log_dir, ready=ACROSS_READY_LINE, args=args)
        )


# The app each file talks to, if not the default one.
APPS = {"docs.test.mjs": "docs_app", "across.test.mjs": "across_app"}


@pytest.fixture
def server(request: pytest.FixtureRequest, test_file: str) -> Iterator[AppProcess]:
    """The app ``test_file`` talks to (the guide's for docs.test.mjs, two servers behind a
    balancer for across.test.mjs); fails the test if it logged an error while the test
    ran."""
    app: AppProcess = request.getfixturevalue(APPS.get(test_file, "app"))
    offset = app.log_size()
    yield app
    problems = problem_lines(app.log(offset))
    assert not problems, "the server logged errors during the test:\n" + "\n".join(problems)


def run_node(
    node: str, flags: list[str], test_file: str, url: str, websocket: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WSMVC_TEST_URL": url, "WSMVC_TEST_WEBSOCKET": websocket}
    try:
        return subprocess.run(
            [node, *flags, "--test", "--test-reporter=tap", test_file],
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node --test {test_file} did not end within {NODE_TIMEOUT}s:\n{exc.stdout}")


def test_node(
    node: str,
    builtin_flags: list[str] | None,
    server: AppProcess,
    test_file: str,
    websocket: str,
) -> None:
    """One file of Node tests passes, with Node's WebSocket or with the ws package."""
    flags = (builtin_flags or []) if websocket != "ws" else []
    done = run_node(node, flags, test_file, server.url, websocket)
    output = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    if done.returncode != 0:
        pytest.fail(f"node --test {test_file} ({websocket}) failed:\n{output}", pytrace=False)
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.MULTILINE)
    assert passed is not None and int(passed.group(1)) > 0, f"no test passed:\n{output}"
    assert re.search(r"^# fail 0$", done.stdout, re.MULTILINE), output


def test_a_node_without_websocket_is_told_what_to_do(node: str) -> None:
    """On a Node with no WebSocket of its own (Node 20 without the flag, Node 18; here the
    global is deleted, for any Node), dial says how to get one instead of failing obscurely."""
    script = (
        f"import {{ dial }} from {CLIENT_JS.as_uri()!r};\n"
        "delete globalThis.WebSocket;\n"
        "try { await dial('ws://127.0.0.1:9/ws', {}); console.log('dialed?'); }\n"
        "catch (err) { console.log(`${err.name}: ${err.message}`); }\n"
    )
    done = subprocess.run(
        [node, *(builtin_flags_of(node) or []), "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "TypeError: wsmvc: no WebSocket: pass the `WebSocket` option (e.g. from the ws "
        "package), or run Node 20 with --experimental-websocket (Node 22+ has it built in)"
    )
