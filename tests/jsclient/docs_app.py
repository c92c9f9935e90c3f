"""Serves the server of docs/client-js.md (its first ```python block, which defines
``app``), so that the guide's JavaScript blocks run against it (``docs.test.mjs``).

    python tests/jsclient/docs_app.py --host 127.0.0.1 --port 8080

prints ``docs app ready on http://HOST:PORT`` once it listens. The block itself is also
checked by tests/test_docs.py (it runs without an exception).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import types
from pathlib import Path

from aiohttp import web

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "client-js.md"
BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


def guide_app() -> web.Application:
    """The ``app`` the guide's first Python block defines (run with the guide's line
    numbers, so a traceback points into the guide). Raises LookupError without one."""
    text = GUIDE.read_text()
    match = BLOCK.search(text)
    if match is None:
        raise LookupError(f"{GUIDE} has no python block")
    first_line = text[: match.start("code")].count("\n")
    code = compile("\n" * first_line + match.group("code"), str(GUIDE), "exec")
    module = types.ModuleType("client_js_guide")
    module.__file__ = str(GUIDE)
    sys.modules[module.__name__] = module  # typing.get_type_hints looks classes up there
    exec(code, module.__dict__)
    app = module.__dict__.get("app")
    if not isinstance(app, web.Application):
        raise LookupError(f"the first python block of {GUIDE} defines no aiohttp app")
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ready = f"docs app ready on http://{args.host}:{args.port}"
    web.run_app(
        guide_app(), host=args.host, port=args.port, print=lambda _: print(ready, flush=True)
    )
