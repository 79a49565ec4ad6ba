"""The correctness gate: a run counts only if every batch called back exactly once with all its
jobs' results, each the job's own, in order, and without an error.

It reads what the load generator submitted and what the receiver recorded, nothing else, so it
judges every system the same way and can be fed crafted records in tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

MAX_PROBLEMS_SHOWN = 20


class Record(Protocol):
    """One callback as the receiver recorded it (receiver.Arrival)."""

    @property
    def async_id(self) -> str | None: ...

    @property
    def body(self) -> bytes: ...


@dataclass
class Verdict:
    ok: bool
    expected_callbacks: int
    callbacks: int
    jobs_checked: int
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "expected_callbacks": self.expected_callbacks,
            "callbacks": self.callbacks,
            "jobs_checked": self.jobs_checked,
            "problem_count": self.problem_count,
            "problems": self.problems,
        }


class _Problems:
    def __init__(self) -> None:
        self.shown: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_PROBLEMS_SHOWN:
            self.shown.append(text)


def check(
    expected: Mapping[int, Sequence[Mapping[str, Any]]],
    accepted: Mapping[str, int],
    records: Iterable[Record],
    *,
    submit_errors: Sequence[str] = (),
) -> Verdict:
    """`expected`: batch -> its jobs; `accepted`: asyncId -> batch, from the submit answers;
    `records`: the callbacks received during the run (warm-up excluded)."""
    problems = _Problems()
    for error in submit_errors:
        problems.add(f"submit failed: {error}")
    batches_accepted = Counter(accepted.values())
    for batch in expected:
        if batches_accepted[batch] != 1:
            problems.add(f"batch {batch} was accepted {batches_accepted[batch]} times")
    records = list(records)
    per_id = Counter(record.async_id for record in records)
    for async_id, count in per_id.items():
        if async_id not in accepted:
            problems.add(f"callback for an unknown batch {async_id!r}")
        elif count > 1:
            problems.add(f"batch {accepted[async_id]} ({async_id}) called back {count} times")
    for async_id, batch in accepted.items():
        if per_id[async_id] == 0:
            problems.add(f"batch {batch} ({async_id}) never called back")
    if len(records) != len(expected):
        problems.add(f"{len(records)} callbacks, expected exactly {len(expected)}")

    seen: Counter[tuple[Any, Any]] = Counter()
    jobs_checked = 0
    for record in records:
        batch = accepted.get(record.async_id or "")
        if batch is None or batch not in expected:
            continue
        jobs_checked += _check_body(record, batch, expected[batch], seen, problems)
    for key, count in seen.items():
        if count > 1:
            problems.add(f"job {key} reported {count} times")
    return Verdict(
        ok=problems.count == 0,
        expected_callbacks=len(expected),
        callbacks=len(records),
        jobs_checked=jobs_checked,
        problems=problems.shown,
        problem_count=problems.count,
    )


def _check_body(
    record: Record,
    batch: int,
    jobs: Sequence[Mapping[str, Any]],
    seen: Counter[tuple[Any, Any]],
    problems: _Problems,
) -> int:
    try:
        body = orjson.loads(record.body)
        results = body["results"]
        assert isinstance(results, list)
    except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
        problems.add(f"batch {batch}: the callback body is not {{asyncId, results: [...]}}")
        return 0
    if len(results) != len(jobs):
        problems.add(f"batch {batch}: {len(results)} results for {len(jobs)} jobs")
    for index, (result, job) in enumerate(zip(results, jobs, strict=False)):
        where = f"batch {batch} job {index}"
        if not isinstance(result, dict):
            problems.add(f"{where}: the result is not an object")
            continue
        request = result.get("request")
        if isinstance(request, dict):
            seen[(request.get("b"), request.get("j"))] += 1
        if (result.get("namespace"), result.get("action")) != (job["namespace"], job["action"]):
            problems.add(f"{where}: result of {result.get('namespace')}.{result.get('action')}")
        if request != job["params"]:
            problems.add(f"{where}: request {request!r} is not the job's params")
        response = result.get("response")
        if not isinstance(response, dict) or "errorCode" in response:
            problems.add(f"{where}: error response {str(response)[:200]}")
        elif response.get("echo") != job["params"]:
            problems.add(f"{where}: response echoes {response.get('echo')!r}, not the job's params")
    return min(len(results), len(jobs))
