"""What happens to batches, jobs and callbacks, said once each: a log line with its facts, and the
metrics it moves. The use cases call these; nothing here decides anything.

Log lines carry their facts as fields (asyncId, account, job, webhook-id...), never a secret and
never a request's or response's body.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from functools import cache

import orjson
from prometheus_client import Counter

from batchgate import logs, metrics
from batchgate.models import Attempt, BatchStatus, Delivery, Finished, JobOutcome, Lease


def batch_accepted(async_id: str, account: str, *, jobs: int, concurrency: int) -> None:
    logs.events.info("batch accepted", asyncId=async_id, account=account, jobs=jobs, concurrency=concurrency)
    _batches("submitted", metrics.AccountLabel.of(account)).inc()


def batch_started(lease: Lease) -> None:
    _batches("started", lease.account).inc()
    logs.events.info(
        "batch started",
        asyncId=lease.batch_id,
        account=lease.account,
        run=lease.run,
        pending=len(lease.jobs),
        concurrency=lease.concurrency,
    )


def batch_finished(lease: Lease, status: BatchStatus, outcomes: Iterable[JobOutcome]) -> None:
    counts = Tally(outcome.value for outcome in outcomes)
    logs.events.info(
        "batch finished",
        asyncId=lease.batch_id,
        account=lease.account,
        run=lease.run,
        status=status.value,
        **{outcome.value: counts[outcome.value] for outcome in JobOutcome},
    )
    _batches(status.value, metrics.AccountLabel.of(lease.account)).inc()


def jobs_finished(lease: Lease, finished: Iterable[Finished], action_of: dict[int, str]) -> None:
    """Counts finished jobs and their durations; a failed one is also a log line, with its codes."""
    account = metrics.AccountLabel.of(lease.account)
    counts: Tally[tuple[str, str]] = Tally()
    seconds: dict[str, list[float]] = {}
    for job in finished:
        action = action_of.get(job.index, metrics.OTHER)
        counts[job.outcome.value, action] += 1
        seconds.setdefault(action, []).append(job.duration_ms / 1000)
        if job.outcome is JobOutcome.FAILED:
            _job_failed(lease, job, action)
    for (outcome, action), count in counts.items():  # one update per kind, not per job
        _jobs(outcome, action, account).inc(count)
    for action, durations in seconds.items():
        metrics.JOB_SECONDS.observe_many(action, durations)


def _job_failed(lease: Lease, job: Finished, action: str) -> None:
    try:
        error = orjson.loads(job.response)
    except orjson.JSONDecodeError:
        error = {}
    logs.events.info(
        "job failed",
        asyncId=lease.batch_id,
        account=lease.account,
        job=job.index,
        action=action,
        errorCode=error.get("errorCode"),
        specificCode=error.get("specificCode"),
    )


def delivery_attempted(delivery: Delivery, attempt: Attempt, *, next_in_s: float | None, gone: bool) -> None:
    """An attempt's outcome; a failed one is a WARNING with its number, status or error, next try."""
    delivered = attempt.status_code is not None and 200 <= attempt.status_code < 300
    outcome = "delivered" if delivered else "gone" if gone else "failed"
    metrics.DELIVERY_ATTEMPTS.labels(outcome).inc()
    metrics.DELIVERY_SECONDS.observe(attempt.duration_ms / 1000)
    if delivered:
        if delivery.batch_created_at is not None:
            metrics.SUBMIT_TO_CALLBACK.observe(max(0.0, attempt.at - delivery.batch_created_at))
        return
    facts = {
        "webhook-id": delivery.id,
        "asyncId": delivery.batch_id,
        "attempt": attempt.number,
        "status": attempt.status_code,
        "error": attempt.error,
        "next_attempt_in_s": next_in_s,
    }
    if next_in_s is None:
        event = "callback abandoned: no more tries" if not gone else "callback refused for good (410)"
        logs.events.warning(event, **facts)
    else:
        logs.events.warning("callback attempt failed", **facts)


def destination_backed_off(destination: str, failures: int, until: float) -> None:
    logs.events.warning(
        "callback destination backed off", destination=destination, failures_in_a_row=failures, until=until
    )


# cached label children (labels are bounded): a label lookup per job would cost more than the rest
# of the job's bookkeeping
@cache
def _batches(event: str, account: str) -> Counter:
    return metrics.BATCHES.labels(event, metrics.AccountLabel.of(account))


@cache
def _jobs(outcome: str, action: str, account: str) -> Counter:
    return metrics.JOBS.labels(outcome, action, metrics.AccountLabel.of(account))
