"""The domain: batches, their jobs, and the callback deliveries they produce. Times are Unix seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum


class BatchStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    CANCELLED = "cancelled"  # finished early at the client's request: its results are readable

    @property
    def finished(self) -> bool:
        return self in (BatchStatus.COMPLETE, BatchStatus.CANCELLED)


class JobOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # its response is an error body
    CANCELLED = "cancelled"  # it never ran: the batch was cancelled first


# Each outcome by its value: what a row read holds, found without the enum's own (slow) call
OUTCOMES: dict[str, JobOutcome] = {outcome.value: outcome for outcome in JobOutcome}


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
    CANCEL_REQUESTED = "cancel requested"  # ... and the client has asked to cancel the batch
    COMPLETED = "completed"  # ... and they were the last: the batch is finished


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: str
    secret: str  # signs the client's requests (IWS)
    account: str
    created_at: float
    revoked_at: float | None = None
    webhook_secret: str | None = None  # whsec_...: signs callbacks; None for keys made before 0.2
    webhook_secret_previous: str | None = None  # still signing, during a rotation's overlap
    webhook_previous_until: float | None = None
    last_used_at: float | None = None

    def signing_secrets(self, now: float) -> list[str]:
        """The secrets a callback is signed with now: the webhook secret (or, for a key made before
        webhook secrets existed, the API secret), and the previous one while a rotation overlaps."""
        current = [self.webhook_secret or self.secret]
        if self.webhook_secret_previous and (self.webhook_previous_until or 0) > now:
            current.append(self.webhook_secret_previous)
        return current


# Made once or more per job (parsed, leased, run, read back): slotted, not frozen, because a frozen
# dataclass costs three to four times as much to create (object.__setattr__ per field). Nothing
# changes them after they are made.
@dataclass(slots=True)
class JobSpec:
    """One call of a batch; `params` is its JSON text. A workflow's job may carry the client's `key`
    for it (its "id") and wait for other jobs (`depends_on`, their indexes)."""

    namespace: str
    action: str
    params: str
    key: str | None = None
    depends_on: tuple[int, ...] = ()


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
    failed_count: int = 0
    cancelled_count: int = 0
    started_at: float | None = None
    expires_at: float | None = None
    cancel_requested_at: float | None = None
    concurrency: int = 1

    @property
    def progress(self) -> int:
        """floor(100 * finished / all), and 100 only once the batch is finished (docs/protocol.md §4)."""
        if self.status.finished:
            return 100
        return min(99, 100 * self.done_count // self.job_count)

    @property
    def succeeded_count(self) -> int:
        return self.done_count - self.failed_count - self.cancelled_count

    @property
    def pending_count(self) -> int:
        return self.job_count - self.done_count


# per job: not frozen (see JobSpec)
@dataclass(slots=True)
class JobResult:
    """A job as `results` reports it; `params` (as run, references resolved) and `response` are JSON
    text, and `response` and `outcome` are None while the job has not run."""

    namespace: str
    action: str
    params: str
    response: str | None
    outcome: JobOutcome | None = None


# per job: not frozen (see JobSpec)
@dataclass(slots=True)
class Finished:
    """A job's outcome as the worker records it."""

    index: int
    response: bytes
    outcome: JobOutcome
    finished_at: float
    duration_ms: float = 0.0
    attempts: int = 1
    resolved_params: str | None = None  # the params as run, when references were resolved in them


@dataclass(frozen=True, slots=True)
class Lease:
    """A batch claimed by one worker: `jobs` maps the index of every job not yet finished to its
    spec, `outcomes` the index of every finished one to its outcome, and `keys` the id a client
    gave a job (in a workflow) to its index."""

    batch_id: str
    account: str
    callback_url: str | None
    run: int
    token: str
    job_count: int
    jobs: dict[int, JobSpec]
    outcomes: dict[int, JobOutcome] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)  # a workflow's job ids -> their indexes
    concurrency: int = 1
    cancel_requested: bool = False
    traceparent: str | None = None  # of the `batch.run` span that made the batch, when traced

    @property
    def done(self) -> int:
        return self.job_count - len(self.jobs)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One callback to send, with the same `id` (webhook-id) on every attempt. Its body is the
    batch's results, read when it is sent; a delivery queued before 0.2 carries its own `body`."""

    id: str
    batch_id: str
    url: str
    secrets: tuple[str, ...]  # each signs it: more than one while a webhook secret rotation overlaps
    attempts: int
    token: str
    body: bytes | None = None
    destination: str | None = None  # host:port, for fair delivery
    batch_created_at: float | None = None  # when its batch was submitted (for submit-to-callback time)


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: str
    number: int
    at: float
    status_code: int | None
    error: str | None
    duration_ms: float


# What the operator's console and admin API show ------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobView:
    """One job of a batch as the operator sees it; `request` and `response` are JSON text."""

    index: int
    namespace: str
    action: str
    key: str | None
    depends_on: tuple[int, ...]
    request: str
    response: str | None
    outcome: JobOutcome | None
    finished_at: float | None
    duration_ms: float | None
    attempts: int | None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: str
    batch_id: str
    account: str
    url: str
    status: DeliveryStatus
    attempts: int
    next_at: float
    created_at: float


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A worker process that says it is alive, and the batches it holds."""

    id: str
    role: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    holding: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True, slots=True)
class Overview:
    """The system at a glance: the queue, the outbox, and jobs finished per minute lately."""

    queued: int
    running: int
    oldest_queued_at: float | None
    deliveries_pending: int
    deliveries_failed: int
    jobs_per_minute: tuple[tuple[float, int], ...]  # (minute's start, jobs of batches finished in it)
