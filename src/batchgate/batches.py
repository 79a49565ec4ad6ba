"""The batch namespace's use cases (docs/protocol.md §3): run, progress, results, repost, restart.

No HTTP and no SQL here: the server hands in parsed params, the store keeps the state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from batchgate.models import ApiKey, Batch, BatchStatus, JobSpec
from batchgate.netguard import AddressPolicy, UnsafeAddress
from batchgate.protocol import errors
from batchgate.protocol.errors import BadRequest, InternalError, NotFound, invalid_param, missing_param
from batchgate.protocol.results import results_body
from batchgate.store import Store, StoreError

MAX_JOBS = 200


def _job_format(message: str) -> BadRequest:
    return BadRequest(f"Incorrect Job Format: {message}", specific_code=errors.INCORRECT_JOB_FORMAT)


def _empty_parameter(message: str) -> BadRequest:
    return BadRequest(f"Empty job parameter found: {message}", specific_code=errors.EMPTY_JOB_PARAMETER)


def parse_jobs(params: Any) -> list[JobSpec]:
    """The `jobs` of a run request, or the 24092 / 24093 / 24448 error (docs/protocol.md, batch.run)."""
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
    return [_parse_job(i, job) for i, job in enumerate(jobs)]


def _parse_job(index: int, job: Any) -> JobSpec:
    if not isinstance(job, dict):
        raise _job_format(f"job {index} is not an object")
    for key in ("namespace", "action"):
        if not isinstance(job.get(key), str):
            raise _job_format(f"job {index} needs a string '{key}'")
        if not job[key].strip():
            raise _empty_parameter(f"job {index} has an empty '{key}'")
    params = job.get("params", {})
    if not isinstance(params, dict):
        raise _job_format(f"job {index} 'params' must be an object")
    return JobSpec(job["namespace"], job["action"], orjson.dumps(params).decode())


def _async_id(params: dict[str, Any]) -> str:
    value = params.get("async")
    if value is None:
        raise missing_param("async")
    if not isinstance(value, str):
        raise invalid_param("async", "must be a string")
    return value


class Batches:
    """The batch namespace for one store. `on_submit` wakes a local worker when a batch becomes
    runnable, `on_delivery_queued` a local delivery loop when a callback is queued."""

    def __init__(
        self,
        store: Store,
        policy: AddressPolicy,
        *,
        on_submit: Callable[[], None] = lambda: None,
        on_delivery_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.on_submit = on_submit
        self.on_delivery_queued = on_delivery_queued

    async def handle(self, api_key: ApiKey, action: str, params: Any) -> Any:
        """Dispatches one call of the batch namespace; the value is the response body."""
        if action == "run":
            return await self.run(api_key, params)
        if not isinstance(params, dict):
            raise BadRequest("The request body must be a JSON object")
        handlers = {
            "progress": self.progress,
            "results": self.results,
            "repost": self.repost,
            "restart": self.restart,
        }
        if action not in handlers:
            raise NotFound(f"Unknown action batch.{action}")
        return await handlers[action](api_key.account, _async_id(params))

    async def run(self, api_key: ApiKey, params: Any) -> dict[str, str]:
        jobs = parse_jobs(params)
        callback_url = params.get("callbackUrl") or None
        if callback_url is not None:
            await self._check_callback(callback_url)
        try:
            batch = await self.store.submit(api_key, jobs, callback_url)
        except StoreError as exc:
            raise InternalError("The information was not saved", specific_code=errors.NOT_SAVED) from exc
        self.on_submit()
        return {"asyncId": batch.id}

    async def _check_callback(self, url: Any) -> None:
        if not isinstance(url, str):
            raise invalid_param("callbackUrl", "must be a string")
        try:
            await self.policy.check_url_resolved(url)
        except UnsafeAddress as exc:
            raise invalid_param("callbackUrl", str(exc)) from exc

    async def _batch(self, account: str, async_id: str, not_found: int = errors.BATCH_NOT_FOUND) -> Batch:
        batch = await self.store.get_batch(account, async_id)
        if batch is None:
            raise BadRequest("Could not find batch", specific_code=not_found)
        return batch

    async def _complete_batch(self, account: str, async_id: str, not_found: int) -> Batch:
        batch = await self._batch(account, async_id, not_found)
        if batch.status is not BatchStatus.COMPLETE:
            raise BadRequest("Batch job not completed", specific_code=errors.BATCH_NOT_COMPLETED)
        return batch

    async def progress(self, account: str, async_id: str) -> dict[str, int]:
        return {"progress": (await self._batch(account, async_id)).progress}

    async def results(self, account: str, async_id: str) -> orjson.Fragment:
        batch = await self._complete_batch(account, async_id, errors.RESULTS_NOT_FOUND)
        return orjson.Fragment(results_body(batch.id, await self.store.job_results(batch.id)))

    async def repost(self, account: str, async_id: str) -> dict[str, bool]:
        if await self.store.repost(await self._complete_batch(account, async_id, errors.BATCH_NOT_FOUND)):
            self.on_delivery_queued()
        return {"reposted": True}

    async def restart(self, account: str, async_id: str) -> dict[str, bool]:
        await self.store.restart(await self._batch(account, async_id))
        self.on_submit()
        return {"restarted": True}
