"""The domain: batches, their jobs, and the callback deliveries they produce. Times are Unix seconds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class BatchStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # the retry schedule ran out
    GONE = "gone"  # the receiver answered 410: it wants no more
    SUPERSEDED = "superseded"  # the batch was restarted: the next run's callback replaces it


class Recorded(Enum):
    """What recording jobs' responses did."""

    LOST = "lost"  # nothing: the lease was lost
    ADVANCED = "advanced"  # the responses are saved and the lease renewed
    COMPLETED = "completed"  # ... and they were the last: the batch is complete


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: str
    secret: str
    account: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One call of a batch; `params` is its JSON text."""

    namespace: str
    action: str
    params: str


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    account: str
    key: str
    callback_url: str | None
    job_count: int
    done_count: int
    status: BatchStatus
    run: int
    created_at: float
    completed_at: float | None = None

    @property
    def progress(self) -> int:
        """floor(100 * finished / all), and 100 only once the batch is complete (docs/protocol.md §4)."""
        if self.status is BatchStatus.COMPLETE:
            return 100
        return min(99, 100 * self.done_count // self.job_count)


@dataclass(frozen=True, slots=True)
class JobResult:
    """A job as the `results` action reports it; `params` and `response` are JSON text, and
    `response` is None while the job has not run."""

    namespace: str
    action: str
    params: str
    response: str | None


@dataclass(frozen=True, slots=True)
class Lease:
    """A batch claimed by one worker: the jobs still to run, from `jobs[0]` at index `start`."""

    batch_id: str
    account: str
    callback_url: str | None
    run: int
    token: str
    start: int
    job_count: int
    jobs: tuple[JobSpec, ...]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One callback to send, with the same `id` (webhook-id) on every attempt. Its body is the
    batch's results, read when it is sent; a delivery queued before 0.2 carries its own `body`."""

    id: str
    batch_id: str
    url: str
    secret: str
    attempts: int
    token: str
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: str
    number: int
    at: float
    status_code: int | None
    error: str | None
    duration_ms: float
