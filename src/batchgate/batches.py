"""The batch namespace's use cases (docs/protocol.md §3): run, progress, results, repost, restart,
and batchgate's own status, cancel and list.

No HTTP and no SQL here: the server hands in parsed params and who signed them, the store keeps
the state. Every state-changing call passes on its signed request, so that the same request sent
again changes nothing (the store notes it in the same transaction as the change).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from batchgate import events, tracing
from batchgate.destinations import destination_of
from batchgate.loops import Slot
from batchgate.models import ApiKey, Batch, BatchStatus, JobResult, JobSpec, Lease
from batchgate.netguard import AddressPolicy, UnsafeAddress
from batchgate.protocol import errors
from batchgate.protocol.errors import (
    BadRequest,
    InternalError,
    NotFound,
    TooManyRequests,
    Unauthorized,
    invalid_param,
    missing_param,
)
from batchgate.protocol.results import results_body
from batchgate.protocol.timestamps import format_unix
from batchgate.store import Store, StoreError
from batchgate.store.base import (
    Change,
    DeliveryState,
    IdempotencyClaim,
    RequestId,
    SubmitOutcome,
    Usage,
)
from batchgate.workflow import REF_MARK, InvalidGraph, dependencies

MAX_JOBS = 200
MAX_JOB_ID = 100  # characters of a job's "id"
MAX_IDEMPOTENCY_KEY = 255
MAX_ASYNC_ID = 255  # characters of an asyncId a client names (batchgate's own have 32)
LIST_LIMIT, LIST_LIMIT_MAX = 20, 100
REPOST_WINDOW_S = 3600.0


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one account may hold and do; 0 means no limit."""

    open_batches: int = 10_000  # batches not yet finished
    result_bytes: int = 5 * 1024**3  # bytes of results held (until they expire)
    reposts_per_hour: int = 10  # per batch
    concurrency: int = 50  # the largest "concurrency" a run may ask for
    idempotency_ttl_s: float = 24 * 3600.0
    usage_cache_s: float = 2.0  # how stale the account's usage may be when it is checked


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a call of the batch namespace: the key that signed it, the signed request (for
    replay protection) and, for run, its Idempotency-Key header."""

    api_key: ApiKey
    request: RequestId | None = None
    idempotency_key: str | None = None

    @property
    def account(self) -> str:
        return self.api_key.account


@dataclass(frozen=True, slots=True)
class RunRequest:
    jobs: list[JobSpec]
    callback_url: str | None
    concurrency: int


def _job_format(message: str) -> BadRequest:
    return BadRequest(f"Incorrect Job Format: {message}", specific_code=errors.INCORRECT_JOB_FORMAT)


def _empty_parameter(message: str) -> BadRequest:
    return BadRequest(f"Empty job parameter found: {message}", specific_code=errors.EMPTY_JOB_PARAMETER)


def parse_jobs(params: Any) -> list[JobSpec]:
    """The `jobs` of a run request, or the 24092 / 24093 / 24448 error (docs/protocol.md, batch.run):
    each job's shape, its `id` and `dependsOn`, and the graph its dependencies and references make."""
    if not isinstance(params, dict):
        raise _job_format("the request body must be a JSON object")
    jobs = params.get("jobs")
    if not isinstance(jobs, list):
        raise _job_format("'jobs' must be an array")
    if not jobs:
        raise _empty_parameter("'jobs' is empty")
    if len(jobs) > MAX_JOBS:
        raise BadRequest(
            f"The maximum number of jobs can be put on a single request is {MAX_JOBS}",
            specific_code=errors.TOO_MANY_JOBS,
        )
    parsed = [_parse_job(i, job) for i, job in enumerate(jobs)]
    specs = [spec for spec, _, _ in parsed]
    if not any(spec.key is not None or waits or REF_MARK in spec.params for spec, waits, _ in parsed):
        return specs  # no workflow
    ids = [spec.key for spec in specs]
    duplicates = sorted({job_id for job_id in ids if job_id is not None and ids.count(job_id) > 1})
    if duplicates:
        raise _job_format(f"the id {duplicates[0]!r} is given to more than one job")
    try:
        graph = dependencies(ids, [waits for _, waits, _ in parsed], [params for _, _, params in parsed])
    except InvalidGraph as exc:
        raise _job_format(str(exc)) from None
    return [replace(spec, depends_on=deps) for spec, deps in zip(specs, graph, strict=True)]


def _parse_job(index: int, job: Any) -> tuple[JobSpec, list[str], Any]:
    """One job's shape, with what the graph its batch's jobs make is checked from: its
    `dependsOn` and its params, decoded."""
    if not isinstance(job, dict):
        raise _job_format(f"job {index} is not an object")
    for key in ("namespace", "action"):
        if not isinstance(job.get(key), str):
            raise _job_format(f"job {index} needs a string '{key}'")
        if not job[key].strip():
            raise _empty_parameter(f"job {index} has an empty '{key}'")
        if "\x00" in job[key]:
            raise _job_format(f"job {index} has a NUL character in '{key}'")
    params = job.get("params", {})
    if not isinstance(params, dict):
        raise _job_format(f"job {index} 'params' must be an object")
    job_id = job.get("id")
    if job_id is not None and not _is_name(job_id, MAX_JOB_ID):
        raise _job_format(f"job {index} 'id' must be a string of 1 to {MAX_JOB_ID} printable characters")
    waits = job.get("dependsOn", [])
    if not isinstance(waits, list) or (waits and not all(isinstance(w, str) for w in waits)):
        raise _job_format(f"job {index} 'dependsOn' must be an array of job ids")
    try:
        text = orjson.dumps(params).decode()
    except orjson.JSONEncodeError as exc:  # nested deeper than JSON is written
        raise _job_format(f"job {index} 'params' cannot be stored: {exc}") from None
    return JobSpec(job["namespace"], job["action"], text, job_id), waits, params


def _async_id(params: dict[str, Any]) -> str:
    value = params.get("async")
    if value is None:
        raise missing_param("async")
    if not isinstance(value, str):
        raise invalid_param("async", "must be a string")
    return value


def _is_name(value: Any, max_length: int) -> bool:
    """Whether a client's name for something (an asyncId, a job's id) can be one: no control
    characters, which no name has and PostgreSQL's text cannot hold."""
    return isinstance(value, str) and 0 < len(value) <= max_length and value.isprintable()


def _flag(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise invalid_param(name, "must be true or false")
    return value


class Batches:
    """The batch namespace for one store. `offer_lease` asks a local worker for room for a new
    batch (whose first job is in the namespace given), which then gets it leased as it is saved;
    `on_submit` wakes a local worker when a batch becomes runnable otherwise, `on_delivery_queued`
    a local delivery loop when a callback is queued, and `on_cancel` a local worker that may be
    running a batch whose client asked to cancel it."""

    def __init__(
        self,
        store: Store,
        policy: AddressPolicy,
        *,
        limits: Limits = Limits(),
        offer_lease: Callable[[str], Slot[Lease] | None] = lambda _namespace: None,
        on_submit: Callable[[], None] = lambda: None,
        on_delivery_queued: Callable[[], None] = lambda: None,
        on_cancel: Callable[[str], None] = lambda _batch_id: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.limits = limits
        self.offer_lease = offer_lease
        self.on_submit = on_submit
        self.on_delivery_queued = on_delivery_queued
        self.on_cancel = on_cancel
        self.clock = clock
        self._usage: dict[str, tuple[float, Usage]] = {}

    async def handle(self, caller: Caller, action: str, params: Any) -> Any:
        """Dispatches one call of the batch namespace; the value is the response body."""
        if action == "run":
            return await self.run(caller, params)
        if not isinstance(params, dict):
            raise BadRequest("The request body must be a JSON object")
        if action == "list":
            return await self.list(caller.account, params)
        handlers = {
            "progress": self.progress,
            "results": self.results,
            "status": self.status,
            "repost": self.repost,
            "restart": self.restart,
            "cancel": self.cancel,
        }
        if action not in handlers:
            raise NotFound(f"Unknown action batch.{action}")
        return await handlers[action](caller, _async_id(params), params)

    # run -------------------------------------------------------------------
    async def run(self, caller: Caller, params: Any) -> dict[str, str]:
        request = await self._run_request(params)
        idempotency = self._idempotency(caller, params)
        try:
            await self._check_quotas(caller.account)
        except TooManyRequests:
            # A retry of a run that went through answers its batch, even at the limit.
            earlier = await self.store.earlier_submission(caller.account, caller.request, idempotency)
            if earlier is None:
                raise
            return {"asyncId": earlier}
        slot = self.offer_lease(request.jobs[0].namespace)
        try:
            submitted = await self.store.submit(
                caller.api_key,
                request.jobs,
                request.callback_url,
                concurrency=request.concurrency,
                destination=destination_of(request.callback_url) if request.callback_url else None,
                request=caller.request,
                idempotency=idempotency,
                lease_to=slot,
                traceparent=tracing.traceparent(),
            )
        except StoreError as exc:
            raise InternalError("The information was not saved", specific_code=errors.NOT_SAVED) from exc
        finally:
            if slot is not None:
                slot.close()  # nothing was leased to it (the batch was not made, or made before)
        if submitted.outcome is SubmitOutcome.CONFLICT:
            raise BadRequest(
                "This Idempotency-Key was used before with another request: use a new key for a new batch",
                specific_code=errors.IDEMPOTENCY_CONFLICT,
            )
        assert submitted.batch_id is not None
        if submitted.outcome is SubmitOutcome.CREATED:
            self._counted(caller.account)
            if submitted.lease is None:
                self.on_submit()
            events.batch_accepted(
                submitted.batch_id, caller.account, jobs=len(request.jobs), concurrency=request.concurrency
            )
        return {"asyncId": submitted.batch_id}

    async def _run_request(self, params: Any) -> RunRequest:
        jobs = parse_jobs(params)
        callback_url = params.get("callbackUrl")
        if callback_url is not None:
            callback_url = await self._checked_callback(callback_url)
        concurrency = params.get("concurrency", 1)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise invalid_param("concurrency", "must be a whole number")
        if not 1 <= concurrency <= self.limits.concurrency:
            raise invalid_param("concurrency", f"must be from 1 to {self.limits.concurrency}")
        return RunRequest(jobs, callback_url, concurrency)

    async def _checked_callback(self, url: Any) -> str:
        """The callback URL in canonical form, which is what is checked now and called later."""
        if not isinstance(url, str):
            raise invalid_param("callbackUrl", "must be a string (an absolute http or https URL)")
        try:
            canonical = self.policy.canonical(url)
            await self.policy.check_url_resolved(canonical)
        except UnsafeAddress as exc:
            raise invalid_param("callbackUrl", str(exc)) from exc
        return canonical

    def _idempotency(self, caller: Caller, params: Any) -> IdempotencyClaim | None:
        key = caller.idempotency_key
        if key is None:
            return None
        if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
            raise BadRequest(
                f"The Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
                specific_code=errors.PARAM_INVALID,
            )
        # The request's meaning, not its bytes: a client that retries may serialise it anew.
        fingerprint = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return IdempotencyClaim(key, fingerprint, self.clock() + self.limits.idempotency_ttl_s)

    async def _check_quotas(self, account: str) -> None:
        usage = await self._account_usage(account)
        limits = self.limits
        if limits.open_batches and usage.open_batches >= limits.open_batches:
            raise TooManyRequests(
                f"This account has {usage.open_batches} batches not yet finished, its limit: "
                "wait for some to finish",
                specific_code=errors.TOO_MANY_OPEN_BATCHES,
                retry_after_s=10,
            )
        if limits.result_bytes and usage.result_bytes >= limits.result_bytes:
            raise TooManyRequests(
                f"This account's results hold {usage.result_bytes} bytes, its limit: results are "
                "kept until they expire",
                specific_code=errors.RESULTS_QUOTA,
                retry_after_s=600,
            )

    async def _account_usage(self, account: str) -> Usage:
        """The account's usage, read again when older than `usage_cache_s` (a quota is checked on
        every run: this keeps the check off the database most of the time)."""
        now = self.clock()
        cached = self._usage.get(account)
        if cached is not None and now - cached[0] < self.limits.usage_cache_s:
            return cached[1]
        usage = await self.store.usage(account)
        if len(self._usage) >= 10_000:  # bounded, whatever the number of accounts
            self._usage.clear()
        self._usage[account] = (now, usage)
        return usage

    def _counted(self, account: str) -> None:
        """Counts a batch just made into the account's cached usage, instead of reading the usage
        again at the next run (which, for an account that sends more than one run per
        `usage_cache_s`, would read it at every run)."""
        cached = self._usage.get(account)
        if cached is not None:
            at, usage = cached
            self._usage[account] = (at, replace(usage, open_batches=usage.open_batches + 1))

    # reads -----------------------------------------------------------------
    async def _batch(self, account: str, async_id: str, not_found: int = errors.BATCH_NOT_FOUND) -> Batch:
        # An id no batch can have (a NUL, say, which PostgreSQL's text cannot even hold) is not asked.
        batch = await self.store.get_batch(account, async_id) if _is_name(async_id, MAX_ASYNC_ID) else None
        if batch is None:
            raise BadRequest("Could not find batch", specific_code=not_found)
        return batch

    async def _finished_batch(self, account: str, async_id: str, not_found: int) -> Batch:
        batch = await self._batch(account, async_id, not_found)
        if not batch.status.finished:
            raise BadRequest("Batch job not completed", specific_code=errors.BATCH_NOT_COMPLETED)
        return batch

    async def progress(self, caller: Caller, async_id: str, params: dict[str, Any]) -> dict[str, int]:
        return {"progress": (await self._batch(caller.account, async_id)).progress}

    async def results(self, caller: Caller, async_id: str, params: dict[str, Any]) -> orjson.Fragment:
        if _flag(params, "partial"):
            batch = await self._batch(caller.account, async_id, errors.RESULTS_NOT_FOUND)
            return orjson.Fragment(_partial_results(batch, await self.store.job_results(batch.id)))
        batch = await self._finished_batch(caller.account, async_id, errors.RESULTS_NOT_FOUND)
        return orjson.Fragment(results_body(batch.id, await self.store.job_results(batch.id)))

    async def status(self, caller: Caller, async_id: str, params: dict[str, Any]) -> dict[str, Any]:
        batch = await self._batch(caller.account, async_id)
        return status_of(batch, await self.store.delivery_state(batch.id))

    async def list(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        status = _status_filter(params.get("status"))
        limit = params.get("limit", LIST_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT_MAX:
            raise invalid_param("limit", f"must be a whole number from 1 to {LIST_LIMIT_MAX}")
        before = _cursor(params.get("cursor"))
        batches = await self.store.list_batches(account, status=status, limit=limit + 1, before=before)
        page, more = batches[:limit], len(batches) > limit
        states = await self.store.delivery_states([batch.id for batch in page if batch.callback_url])
        return {
            "batches": [status_of(batch, states.get(batch.id)) for batch in page],
            "nextCursor": _encode_cursor(page[-1]) if more else None,
        }

    # changes -----------------------------------------------------------------
    async def repost(self, caller: Caller, async_id: str, params: dict[str, Any]) -> dict[str, bool]:
        batch = await self._finished_batch(caller.account, async_id, errors.BATCH_NOT_FOUND)
        if batch.callback_url:
            if caller.request is not None and await self.store.replayed(caller.request):
                raise replayed()  # a replay is refused as one, not as one repost too many
            await self._check_repost_limit(batch)
        change = await self.store.repost(batch, request=caller.request)
        _refuse_replay(change)
        if change is Change.DONE:
            self.on_delivery_queued()
        return {"reposted": True}

    async def _check_repost_limit(self, batch: Batch) -> None:
        limit = self.limits.reposts_per_hour
        if not limit:
            return
        now = self.clock()
        recent = await self.store.recent_reposts(batch.id, since=now - REPOST_WINDOW_S)
        if len(recent) > limit:  # the first delivery, at completion, is not a repost
            retry_after = recent[-limit - 1] + REPOST_WINDOW_S - now
            raise TooManyRequests(
                f"This batch's callback was sent again {limit} times within the hour, its limit",
                specific_code=errors.REPOST_LIMIT,
                retry_after_s=max(1.0, retry_after),
            )

    async def restart(self, caller: Caller, async_id: str, params: dict[str, Any]) -> dict[str, bool]:
        failed_only = _flag(params, "failedOnly")
        batch = await self._batch(caller.account, async_id)
        change = await self.store.restart(batch, failed_only=failed_only, request=caller.request)
        _refuse_replay(change)
        if change is Change.NOTHING:
            raise BadRequest(
                "No job of this batch failed: there is nothing to run again",
                specific_code=errors.NOTHING_TO_RETRY,
            )
        self._usage.pop(caller.account, None)
        self.on_submit()
        return {"restarted": True}

    async def cancel(self, caller: Caller, async_id: str, params: dict[str, Any]) -> dict[str, bool]:
        batch = await self._batch(caller.account, async_id)
        change = await self.store.cancel(batch, cancelled=errors.NOT_RUN_CANCELLED, request=caller.request)
        _refuse_replay(change)
        if change is Change.FINISHED:
            raise BadRequest(
                f"The batch has already finished ({batch.status}): there is nothing to cancel",
                specific_code=errors.BATCH_FINISHED,
            )
        if change is Change.REQUESTED:
            self.on_cancel(batch.id)
        elif batch.callback_url:
            self.on_delivery_queued()
        self._usage.pop(caller.account, None)
        return {"cancelled": True}


def _refuse_replay(change: Change) -> None:
    if change is Change.REPLAYED:
        raise replayed()


def replayed() -> Unauthorized:
    return Unauthorized(
        "This signed request was already used: sign the call again (a new date makes a new signature)",
        specific_code=errors.REPLAYED_REQUEST,
    )


# wire shapes -------------------------------------------------------------------


def counts_of(batch: Batch) -> dict[str, int]:
    """A batch's jobs by outcome, as `status` counts them."""
    return {
        "total": batch.job_count,
        "succeeded": batch.succeeded_count,
        "failed": batch.failed_count,
        "cancelled": batch.cancelled_count,
        "pending": batch.pending_count,
    }


def status_of(batch: Batch, delivery: DeliveryState | None) -> dict[str, Any]:
    """The `status` answer of a batch, and each entry of `list`."""
    return {
        "asyncId": batch.id,
        "status": batch.status.value,
        "counts": counts_of(batch),
        "concurrency": batch.concurrency,
        "createdAt": format_unix(batch.created_at),
        "startedAt": format_unix(batch.started_at),
        "completedAt": format_unix(batch.completed_at),
        "expiresAt": format_unix(batch.expires_at),
        "callback": _callback(batch, delivery),
    }


def _callback(batch: Batch, delivery: DeliveryState | None) -> dict[str, Any] | None:
    if not batch.callback_url:
        return None
    if delivery is None:
        return {"state": "waiting", "attempts": 0, "lastStatus": None, "nextAttemptAt": None}
    return {
        "state": delivery.status.value,
        "attempts": delivery.attempts,
        "lastStatus": delivery.last_status,
        "nextAttemptAt": format_unix(delivery.next_attempt_at),
    }


def _partial_results(batch: Batch, results: Sequence[JobResult]) -> bytes:
    """`results` with `partial`: every job in order with its status; a pending job has no response."""
    return orjson.dumps(
        {
            "asyncId": batch.id,
            "status": batch.status.value,
            "results": [
                {
                    "namespace": r.namespace,
                    "action": r.action,
                    "request": orjson.Fragment(r.params),
                    "status": (r.outcome or "pending"),
                    **({} if r.response is None else {"response": orjson.Fragment(r.response)}),
                }
                for r in results
            ],
        }
    )


def _status_filter(value: Any) -> BatchStatus | None:
    if value is None:
        return None
    try:
        return BatchStatus(value)
    except ValueError:
        allowed = ", ".join(status.value for status in BatchStatus)
        raise invalid_param("status", f"must be one of {allowed}") from None


def _encode_cursor(batch: Batch) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([batch.created_at, batch.id])).decode().rstrip("=")


def _cursor(value: Any) -> tuple[float, str] | None:
    """The (created_at, id) a page ended with, from the opaque `nextCursor` a list answered."""
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise TypeError(value)
        created_at, batch_id = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        if (
            isinstance(created_at, bool)
            or not isinstance(created_at, int | float)
            or not isinstance(batch_id, str)
        ):
            raise TypeError(value)
        if not math.isfinite(created_at) or "\x00" in batch_id:
            raise ValueError(value)
    except (TypeError, ValueError, binascii.Error, orjson.JSONDecodeError):
        raise invalid_param("cursor", "must be a nextCursor that list answered") from None
    return float(created_at), batch_id
