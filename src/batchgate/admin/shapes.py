"""The admin API's JSON shapes, built from the domain objects (camelCase keys, times as the
protocol's UTC timestamps, secrets never, except once, when a key or webhook secret is made)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchgate.admin.service import BatchDetail, System, json_of
from batchgate.batches import counts_of
from batchgate.models import ApiKey, Attempt, AuditEntry, Batch, DeliveryView, JobView, WorkerView
from batchgate.protocol.timestamps import format_unix


def batch_summary(batch: Batch, callback: dict[str, Any] | None = None) -> dict[str, Any]:
    """A batch as listed; `callback` is its callback's state (BatchDetail.status()["callback"])."""
    return {
        "asyncId": batch.id,
        "account": batch.account,
        "key": batch.key,
        "status": batch.status.value,
        "progress": batch.progress,
        "run": batch.run,
        "counts": counts_of(batch),
        "concurrency": batch.concurrency,
        "callbackUrl": batch.callback_url,
        "callback": callback,
        "createdAt": format_unix(batch.created_at),
        "startedAt": format_unix(batch.started_at),
        "completedAt": format_unix(batch.completed_at),
        "expiresAt": format_unix(batch.expires_at),
        "cancelRequestedAt": format_unix(batch.cancel_requested_at),
    }


def batch_detail(detail: BatchDetail) -> dict[str, Any]:
    return {
        **batch_summary(detail.batch, detail.status()["callback"]),
        "jobs": [job(view) for view in detail.jobs],
        "deliveries": [delivery(view, detail.attempts) for view in detail.deliveries],
    }


def job(view: JobView) -> dict[str, Any]:
    return {
        "index": view.index,
        "namespace": view.namespace,
        "action": view.action,
        "id": view.key,
        "dependsOn": list(view.depends_on),
        "status": view.outcome.value if view.outcome else "pending",
        "request": json_of(view.request),
        "response": json_of(view.response),
        "finishedAt": format_unix(view.finished_at),
        "durationMs": view.duration_ms,
        "attempts": view.attempts,
    }


def delivery(view: DeliveryView, attempts: Sequence[Attempt] = ()) -> dict[str, Any]:
    pending = view.status.value == "pending"
    return {
        "id": view.id,
        "asyncId": view.batch_id,
        "account": view.account,
        "url": view.url,
        "status": view.status.value,
        "attempts": view.attempts,
        "createdAt": format_unix(view.created_at),
        "nextAttemptAt": format_unix(view.next_at) if pending else None,
        "tries": [attempt(a) for a in attempts if a.delivery_id == view.id],
    }


def attempt(value: Attempt) -> dict[str, Any]:
    return {
        "number": value.number,
        "at": format_unix(value.at),
        "httpStatus": value.status_code,
        "error": value.error,
        "durationMs": value.duration_ms,
    }


def key(api_key: ApiKey) -> dict[str, Any]:
    """A key as listed: no secret."""
    return {
        "key": api_key.key,
        "account": api_key.account,
        "createdAt": format_unix(api_key.created_at),
        "revokedAt": format_unix(api_key.revoked_at),
        "lastUsedAt": format_unix(api_key.last_used_at),
        "previousWebhookSecretUntil": format_unix(api_key.webhook_previous_until),
    }


def new_key(api_key: ApiKey) -> dict[str, Any]:
    """A key just made, with the secrets that are shown this once."""
    return {**key(api_key), "secret": api_key.secret, "webhookSecret": api_key.webhook_secret}


def system(value: System, now: float) -> dict[str, Any]:
    overview = value.overview
    oldest = overview.oldest_queued_at
    return {
        "queued": overview.queued,
        "running": overview.running,
        "oldestQueuedAt": format_unix(oldest),
        "oldestQueuedAgeSeconds": None if oldest is None else round(now - oldest, 3),
        "deliveriesPending": overview.deliveries_pending,
        "deliveriesFailed": overview.deliveries_failed,
        "jobsPerMinute": [{"minute": format_unix(at), "jobs": jobs} for at, jobs in overview.jobs_per_minute],
        "workers": [worker(view) for view in value.workers],
    }


def worker(view: WorkerView) -> dict[str, Any]:
    return {
        "id": view.id,
        "role": view.role,
        "host": view.host,
        "pid": view.pid,
        "startedAt": format_unix(view.started_at),
        "seenAt": format_unix(view.seen_at),
        "holding": list(view.holding),
    }


def audit(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": format_unix(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
    }
