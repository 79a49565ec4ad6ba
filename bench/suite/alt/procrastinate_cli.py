"""procrastinate's own command line, under uvloop, for the procrastinate system's worker processes;
`migrate` applies procrastinate's schema and the benchmark's two tables to a fresh database.

    python -m bench.suite.alt.procrastinate_cli [--log-level warning] worker [--concurrency 25 ...]
    python -m bench.suite.alt.procrastinate_cli migrate

A module of its own, so that the App is never instantiated in `__main__` (procrastinate warns
about that: the worker must find the tasks under their importable module).
"""

from __future__ import annotations

import sys

import uvloop
from bench.suite.alt import procrastinate_app
from procrastinate import cli

APP_PATH = "bench.suite.alt.procrastinate_app.app"


async def run(argv: list[str]) -> None:
    try:
        await cli.cli(["--app", APP_PATH, *argv])
    finally:
        await procrastinate_app.close_session()


def main(argv: list[str]) -> None:
    uvloop.run(procrastinate_app.migrate() if argv[:1] == ["migrate"] else run(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
