"""The workload: the same request bodies, byte for byte, for every system.

A batch is `jobs_per_batch` jobs whose params are `{"b": batch, "j": job}`, so every job of a run
is unique and the gate can tell which one a result belongs to. Batch -1 is the uncounted warm-up.
Bodies are encoded once per cell, before its timing starts. A system may add fields of its own to
the end of its `run` bodies (its `run_options`: BG-SC's `"concurrency": 50`); every other byte is
the same for every system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

WARMUP = -1

# job kind -> (namespace, action). `stub.echo` is forwarded to the upstream stub: by batchgate's
# gateway mode when `batchgate serve --config` exists, else by a Python action (bench/suite/actions.py).
KINDS: dict[str, tuple[str, str]] = {
    "noop": ("bench", "noop"),
    "io10": ("bench", "io10"),
    "http": ("stub", "echo"),
}


def job(kind: str, batch: int, index: int) -> dict[str, Any]:
    namespace, action = KINDS[kind]
    return {"namespace": namespace, "action": action, "params": {"b": batch, "j": index}}


@dataclass
class Workload:
    """The batches of one job kind, with their encoded `batch.run` bodies."""

    kind: str
    jobs_per_batch: int
    callback_url: str
    run_options: dict[str, Any] = field(default_factory=dict)  # extra fields at the end of each body
    _bodies: dict[int, bytes] = field(default_factory=dict, repr=False)

    def jobs(self, batch: int) -> list[dict[str, Any]]:
        return [job(self.kind, batch, j) for j in range(self.jobs_per_batch)]

    def for_cell(self, tag: str, batches: range, run_options: dict[str, Any] | None = None) -> Workload:
        """The same batches, their callback URL tagged for one cell and the system's `run_options`
        added after the callback URL, bodies encoded before timing starts.

        batchgate runs a signed request that changes state once: byte-identical `run` calls signed in
        the same second (the same batch in two cells, say) would answer the first batch's asyncId."""
        url = f"{self.callback_url}?cell={tag}"
        tagged = Workload(self.kind, self.jobs_per_batch, url, dict(run_options or {}))
        for batch in [WARMUP, *batches]:
            tagged.body(batch)
        return tagged

    def body(self, batch: int) -> bytes:
        """The `batch.run` body of batch `batch` (encoded once)."""
        found = self._bodies.get(batch)
        if found is None:
            body = {"jobs": self.jobs(batch), "callbackUrl": self.callback_url, **self.run_options}
            found = orjson.dumps(body)
            self._bodies[batch] = found
        return found


def run_call_body(call: int, run_options: dict[str, Any] | None = None) -> bytes:
    """The body of call `call` of the `run` calls/s measurement: one noop job, no callback, then the
    system's `run_options`. Each call's body is its own, as every real `run` is (batchgate answers a
    repeated signed request once)."""
    return orjson.dumps({"jobs": [job("noop", -2, call)], **(run_options or {})})
