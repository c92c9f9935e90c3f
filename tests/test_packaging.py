"""The package a user gets: the sdist and the wheel, built here as ``python -m build`` does
(the sdist, then the wheel from the unpacked sdist), offline (``--no-isolation``: the test
extra brings ``build``, ``setuptools`` and ``wheel``).

* the sdist has the LICENSE, the package with ``py.typed`` and its static files, and every
  test, guide and example file (``MANIFEST.in``); its tests run from the unpacked sdist;
* the wheel has the package, ``py.typed``, the static files and the LICENSE, and no tests;
* the metadata: version, classifiers, project URLs, extras named for what they give;
* the README, which is the package index page, links only absolutely, and each link into
  the repository names a file of this checkout;
* ``help(wsmvc)`` tells the story, and every public name has a docstring.
"""

from __future__ import annotations

import configparser
import email
import email.message
import inspect
import os
import pydoc
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import wsmvc

REPO = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT = 120.0  # seconds; a build takes ~3 s
IGNORED = re.compile(r"(^|/)(__pycache__|node_modules|build|dist|[^/]*\.egg-info)(/|$)|\.py[cod]$")


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "setup.cfg")
    return config


REPO_URL = setup_cfg()["metadata"]["url"]


def source_files() -> list[str]:
    """The files of this source tree that a build sees: git's (tracked, and new files not
    ignored) in a checkout, every file but build output and caches in an unpacked sdist."""
    if (REPO / ".git").exists() and shutil.which("git"):
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
        names = [n for n in out.split("\0") if n and (REPO / n).is_file()]
    else:
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file()]
    return sorted(n for n in names if not IGNORED.search(n))


def build(args: list[str], cwd: Path, out: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", *args, "--outdir", str(out), "."],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


class Dists:
    """The sdist and the wheel built from a copy of this tree."""

    def __init__(self, root: Path) -> None:
        pytest.importorskip("build", reason="pip install build (part of the test extra)")
        source = root / "source"
        self.files = source_files()
        for name in self.files:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
        out = root / "dist"
        build(["--sdist"], source, out)
        (self.sdist,) = out.glob("*.tar.gz")
        with tarfile.open(self.sdist) as tar:
            tar.extractall(root / "unpacked", filter="data")
        (self.unpacked,) = (root / "unpacked").iterdir()
        build(["--wheel"], self.unpacked, out)  # the wheel from the sdist, as pip would
        (self.wheel,) = out.glob("*.whl")

    def sdist_names(self) -> set[str]:
        with tarfile.open(self.sdist) as tar:
            return {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}

    def wheel_names(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as wheel:
            return set(wheel.namelist())

    def metadata(self) -> email.message.Message:
        with zipfile.ZipFile(self.wheel) as wheel:
            (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
            return email.message_from_bytes(wheel.read(name))


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    return Dists(tmp_path_factory.mktemp("packaging"))


def package_files() -> Iterator[str]:
    """The package's own files (modules, py.typed, static/) in this tree."""
    for path in (REPO / "wsmvc").rglob("*"):
        name = str(path.relative_to(REPO))
        if path.is_file() and not IGNORED.search(name):
            yield name


def test_the_sdist_has_the_license_the_package_and_what_the_tests_need(dists: Dists) -> None:
    names = dists.sdist_names()
    assert {"LICENSE", "README.md", "setup.cfg", "pyproject.toml", "MANIFEST.in"} <= names
    assert "benchmarks/README.md" in names  # the README links it
    assert {"wsmvc/py.typed", "wsmvc/static/wsmvc.js", "wsmvc/static/wsmvc.d.ts"} <= names
    needed = {n for n in dists.files if n.split("/")[0] in ("wsmvc", "tests", "docs", "examples")}
    assert needed - names == set()
    assert [n for n in names if IGNORED.search(n) and "egg-info" not in n] == []


def test_the_wheel_has_the_package_its_types_static_files_and_license(dists: Dists) -> None:
    names = dists.wheel_names()
    assert set(package_files()) <= names  # every module, py.typed, static/*
    assert "wsmvc/py.typed" in names
    licenses = [n for n in names if n.endswith("LICENSE") and ".dist-info/" in n]
    assert licenses, sorted(names)
    assert not [n for n in names if n.startswith(("tests/", "docs/", "examples/"))]


def test_the_metadata_says_what_a_package_index_shows(dists: Dists) -> None:
    meta = dists.metadata()
    assert meta["Version"] == wsmvc.__version__
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["License"] == "MIT" or meta["License-Expression"] == "MIT"
    classifiers = meta.get_all("Classifier") or []
    for wanted in (
        "Typing :: Typed",
        "Framework :: aiohttp",
        "Framework :: AsyncIO",
        "Programming Language :: Python :: 3.13",
        "Intended Audience :: Developers",
    ):
        assert wanted in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(urls) >= {"Documentation", "Source", "Issues"}
    assert all(u.startswith(REPO_URL) for u in urls.values()), urls
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip() == (REPO / "README.md").read_text().strip()


EXTRAS = {
    "typed-bodies": "cattrs",  # typed message bodies
    "typed": "cattrs",  # the same, its first name
    "pydantic": "pydantic",  # pydantic models as bodies
    "redis": "redis",  # the Redis exchange
    "nats": "nats-py",  # the NATS exchange
    "prometheus": "prometheus-client",  # wsmvc.metrics
    "opentelemetry": "opentelemetry-api",  # wsmvc.tracing
}


def test_extras_are_named_for_what_they_give_and_every_hint_names_one(dists: Dists) -> None:
    extras = set(dists.metadata().get_all("Provides-Extra") or [])
    assert extras - {"test", "bench"} >= set(EXTRAS)
    requires = dists.metadata().get_all("Requires-Dist") or []
    for extra, dist in EXTRAS.items():
        assert any(r.startswith(dist) and f'extra == "{extra}"' in r for r in requires), extra
    # Every "pip install 'wsmvc[...]'" the package, the README and the guides print.
    hinted: dict[str, str] = {}
    for path in [
        *(REPO / "wsmvc").rglob("*.py"),
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
    ]:
        for extra in re.findall(r"wsmvc\[([\w,-]+)\]", path.read_text()):
            for each in extra.split(","):
                hinted.setdefault(each, str(path.relative_to(REPO)))
    from wsmvc.exchange.nats import NatsExchange
    from wsmvc.exchange.redis import RedisExchange

    hinted.setdefault(RedisExchange.requires[1], "wsmvc/exchange/redis.py")
    hinted.setdefault(NatsExchange.requires[1], "wsmvc/exchange/nats.py")
    unknown = {extra: where for extra, where in hinted.items() if extra not in extras}
    assert unknown == {}


def test_the_readme_links_work_on_a_package_index_page() -> None:
    """The README is the index page (long_description), where relative links break: each
    link is absolute or an anchor, and a link into the repository names a file or folder
    of this checkout (blob/main/<file>, tree/main/<folder>)."""
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'href="([^"]+)"', text)
    assert links
    relative = [link for link in links if not re.match(r"https://|#", link)]
    assert relative == [], f"write them as {REPO_URL}/blob/main/<path>"
    for link in links:
        if not link.startswith(REPO_URL + "/"):
            continue
        match = re.fullmatch(re.escape(REPO_URL) + r"/(blob|tree)/main/([^#]*)(#.*)?", link)
        assert match, link
        kind, path = match.group(1), REPO / match.group(2)
        assert path.is_file() if kind == "blob" else path.is_dir(), link


def test_help_tells_the_story_and_every_public_name_has_a_docstring() -> None:
    story = pydoc.render_doc(wsmvc, renderer=pydoc.plaintext)
    for part in ("neffos", "Server", "@controller", "dial", "WsmvcError", "seconds", "bytes"):
        assert part in story, part
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|a\d+|b\d+|rc\d+)?", wsmvc.__version__)
    undocumented = [
        name
        for name in wsmvc.__all__
        if name != "__version__" and not inspect.getdoc(getattr(wsmvc, name))
    ]
    assert undocumented == []


def test_the_unpacked_sdists_tests_run(dists: Dists) -> None:
    """A few quick test files, from the unpacked sdist, against its own copy of wsmvc."""
    env = {**os.environ, "PYTHONPATH": str(dists.unpacked), "CI": ""}
    where = subprocess.run(
        [sys.executable, "-c", "import wsmvc; print(wsmvc.__file__)"],
        cwd=dists.unpacked,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(dists.unpacked)
    files = ["tests/test_known_errors.py", "tests/test_client.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-x", *files],
        cwd=dists.unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\d+ passed", done.stdout), done.stdout[-500:]
