"""Run one benchmark server under cProfile, for a separate profiling run.

    python benchmarks/profile_server.py [--cpu] OUT.prof benchmarks/servers/SERVER.py --port N ...

The server runs as ``__main__`` (through runpy, so postponed annotations resolve: under
``python -m cProfile`` they do not) with its directory on ``sys.path``; the statistics are
written to OUT.prof when it exits (the servers exit normally on SIGTERM). ``--cpu`` times with
the process's CPU clock instead of the wall clock: with several processes pinned to one core,
wall time charges the time a process spends preempted to whatever it was doing.
"""

from __future__ import annotations

import argparse
import cProfile
import runpy
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="CPU time instead of wall time")
    parser.add_argument("out", type=Path, help="where to write the statistics")
    parser.add_argument("script", type=Path, help="the server script")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the server's own arguments")
    args = parser.parse_args()
    sys.argv = [str(args.script), *args.args]
    sys.path.insert(0, str(args.script.resolve().parent))
    profile = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
    profile.enable()
    try:
        runpy.run_path(str(args.script), run_name="__main__")
    finally:
        profile.disable()
        profile.dump_stats(args.out)


if __name__ == "__main__":
    main()
