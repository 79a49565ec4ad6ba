"""What replay protection costs `run`: `python -m bench.replay_cost [--calls N] [--rounds R]`.

A signed `batch.run` is remembered in the transaction that saves its batch (a note keyed by the
key and the signature), so that the same bytes sent again answer the first asyncId. This measures
the store's part of `run` with and without that note: one-job batches saved by 8 concurrent
callers into a fresh SQLite file (WAL, synchronous=FULL, as `batchgate serve` runs it), rounds
taking turns so that a change of machine speed falls on both alike. The HTTP side of replay
protection is building that note's key from the signature already checked: nothing to measure.
Run it on a quiet machine; the full run's `run` cell (bench/run) measures everything together.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from batchgate.models import JobSpec
from batchgate.store import open_store
from batchgate.store.base import RequestId, Store

CALLERS = 8
JOB = [JobSpec("test", "ping", "{}")]


async def submits_per_s(store: Store, calls: int, *, noted: bool) -> float:
    key = await store.create_key("bench")
    per_caller = calls // CALLERS

    async def caller(n: int) -> None:
        for i in range(per_caller):
            # a signature is unique per signed request; its note lives for the skew window
            request = RequestId(key.key, f"sig-{n}-{i}-{time.monotonic_ns()}", time.time() + 600)
            await store.submit(key, JOB, None, request=request if noted else None)

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    return per_caller * CALLERS / (time.perf_counter() - started)


async def measure(calls: int, rounds: int, folder: Path) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"with the replay note": [], "without": []}
    for r in range(rounds):
        for name in found:
            store = open_store(f"sqlite:///{folder / f'{r}-{len(name)}.db'}", result_ttl_s=3600)
            await store.open()
            try:
                found[name].append(await submits_per_s(store, calls, noted=name != "without"))
            finally:
                await store.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="one-job batches per round (4000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as folder:
        found = asyncio.run(measure(args.calls, args.rounds, Path(folder)))
    print(f"store.submit of 1-job batches, {CALLERS} callers, {args.calls:,} per round, SQLite FULL,")
    print(f"median [min-max] of {args.rounds} rounds, Python {sys.version.split()[0]}")
    medians = {}
    for name, values in found.items():
        medians[name] = statistics.median(values)
        print(f"  {name:<22} {medians[name]:8,.0f}/s  [{min(values):,.0f}-{max(values):,.0f}]")
    ratio = medians["with the replay note"] / medians["without"]
    print(f"  with / without: {ratio:.3f}")


if __name__ == "__main__":
    main()
