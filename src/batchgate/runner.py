"""One leased batch, run to its end: jobs in order, or a workflow of them, written behind them.

Which job runs when: a job is ready once every job it waits for has finished; ready jobs start in
index order, up to the batch's `concurrency` at once (1 by default: one after another, in order).
A job that waits for one that failed does not run: it is answered 461 / 29032 naming it. Before a
job runs, the references in its params are resolved from the responses they point into.

A cancel (the client's, noticed through a record, the heartbeat or a notification) stops the
batch: no job starts any more, a job in flight that can be stopped (an async or process action, a
forwarded call) is stopped and answered `cancelled`, one that cannot (a thread) finishes and keeps
its answer, and every job that did not run is answered `cancelled`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from batchgate import events, tracing
from batchgate.actions import ActionContext, App
from batchgate.loops import Slot
from batchgate.models import BatchStatus, Delivery, Finished, JobOutcome, JobSpec, Lease, Recorded
from batchgate.protocol.errors import (
    DEPENDENCY_FAILED,
    NOT_RUN_CANCELLED,
    REFERENCE_UNRESOLVED,
    STOPPED_CANCELLED,
    BatchgateError,
    InternalError,
    job_error,
)
from batchgate.protocol.nesting import MAX_DEPTH, nested_deeper_than
from batchgate.store import Store
from batchgate.workflow import REF_MARK, Unresolved, references, resolve

log = logging.getLogger(__name__)


class LeaseLost(BatchgateError):
    """The batch was restarted, or its lease expired and another worker took it."""


class Recorder:
    """Writes one batch's finished jobs behind them, one write in flight at a time.

    Each write takes every job finished while the previous one was being written, and the next
    write starts as soon as the previous one returns: fast jobs share a transaction, and a finished
    job is saved without waiting for the next one to finish. The write that completes the batch
    hands its callback to this process's delivery loop when that has room (`offer_delivery`);
    `on_completed` hears whether it did."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        lease_s: float,
        *,
        on_completed: Callable[[bool], None],
        on_cancel_requested: Callable[[], None],
        action_of: dict[int, str],
        offer_delivery: Callable[[str], Slot[Delivery] | None] = lambda _url: None,
    ) -> None:
        self.store, self.lease, self.lease_s = store, lease, lease_s
        self.on_completed = on_completed
        self.offer_delivery = offer_delivery
        self.on_cancel_requested = on_cancel_requested
        self.action_of = action_of  # each job's action, as metrics name it
        self.cancelled_jobs = False  # a job was stopped at the client's request: the batch ends cancelled
        self.done = lease.done
        self.pending: list[Finished] = []
        self.writing: asyncio.Task[None] | None = None
        self.completed = False

    def check(self) -> None:
        """Raises what the last finished write met (LeaseLost, StoreError), so a batch taken away
        stops at the next job rather than at the end."""
        if self.writing is not None and self.writing.done():
            self.writing.result()

    def add(self, finished: Finished) -> None:
        self.check()
        self.pending.append(finished)
        if self.writing is None or self.writing.done():
            self.writing = asyncio.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        while self.pending:
            finished, self.pending = self.pending, []
            done = self.done + len(finished)
            self.cancelled_jobs |= any(job.outcome is JobOutcome.CANCELLED for job in finished)
            callback = self.lease.callback_url if done >= self.lease.job_count else None
            slot = self.offer_delivery(callback) if callback else None
            try:
                recorded = await self.store.record(
                    self.lease,
                    finished,
                    done=done,
                    lease_s=self.lease_s,
                    cancelled=self.cancelled_jobs,
                    delivery_to=slot,
                )
            finally:
                if slot is not None:
                    slot.close()
            if recorded is Recorded.LOST:
                raise LeaseLost(self.lease.batch_id)
            events.jobs_finished(self.lease, finished, self.action_of)
            self.done = done
            if recorded is Recorded.CANCEL_REQUESTED:
                self.on_cancel_requested()
            elif recorded is Recorded.COMPLETED:
                self.completed = True
                self.on_completed(slot is not None and slot.taken)

    async def flush(self) -> None:
        if self.writing is not None:
            await self.writing


class BatchRun:
    """Runs the jobs of one leased batch; `run()` returns when the batch is finished, taken away, or
    its worker is stopping (`stopping()`), having saved every job that finished."""

    def __init__(
        self,
        store: Store,
        app: App,
        lease: Lease,
        *,
        lease_s: float,
        stopping: Callable[[], bool],
        on_completed: Callable[[], None],
        on_parked: Callable[[], None] = lambda: None,
        offer_delivery: Callable[[str], Slot[Delivery] | None] = lambda _url: None,
    ) -> None:
        self.store, self.app, self.lease = store, app, lease
        self.stopping = stopping
        self.on_completed = on_completed  # a callback was queued, not handed over: wake the deliverer
        self.offer_delivery = offer_delivery
        self.on_parked = on_parked  # the worker may take other batches meanwhile
        self.parked = False  # every job running waits for a full upstream
        self.pending: dict[int, JobSpec] = dict(sorted(lease.jobs.items()))
        self.outcomes: dict[int, JobOutcome] = dict(lease.outcomes)
        self.responses: dict[int, Any] = {}  # decoded responses that other jobs' references point into
        self.running: dict[asyncio.Task[Finished], int] = {}
        self._done: list[asyncio.Task[Finished]] = []  # finished tasks not yet collected
        self._wake: asyncio.Future[None] | None = None  # set by the next task to finish
        self._task: asyncio.Task[Any] | None = None  # running the jobs one at a time
        self._in_this_task: int | None = None  # the job it runs
        self._stopped_in_this_task = False  # cancelled by the client's cancel
        self.cancelled = asyncio.Event()
        action_of = {index: app.metric_label(job.namespace, job.action) for index, job in lease.jobs.items()}
        self.recorder = Recorder(
            store,
            lease,
            lease_s,
            on_completed=self._completed,
            on_cancel_requested=self.cancel,
            action_of=action_of,
            offer_delivery=offer_delivery,
        )
        self.refers = referenced_jobs(lease.jobs, lease.keys)  # job -> the jobs its references point into
        self.referenced = {target for targets in self.refers.values() for target in targets}

    @property
    def batch_id(self) -> str:
        return self.lease.batch_id

    def cancel(self) -> None:
        """The client asked to stop the batch: stops what can be stopped of what runs."""
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        for task, index in self.running.items():
            job = self.lease.jobs[index]
            if self.app.cancellable(job.namespace, job.action):
                task.cancel()
        if self._in_this_task is not None and self._task is not None:
            job = self.lease.jobs[self._in_this_task]
            if self.app.cancellable(job.namespace, job.action):
                self._stopped_in_this_task = True
                self._task.cancel()

    def _completed(self, handed_over: bool) -> None:
        status = BatchStatus.CANCELLED if self.recorder.cancelled_jobs else BatchStatus.COMPLETE
        events.batch_finished(self.lease, status, self.outcomes.values())
        if self.lease.callback_url and not handed_over:
            self.on_completed()

    @tracing.batch_run
    async def run(self) -> None:
        events.batch_started(self.lease)
        if self.lease.cancel_requested:
            self.cancel()
        else:
            await self._load_referenced_responses()
        try:
            if self.lease.concurrency == 1:
                await self._run_one_at_a_time()
            else:
                await self._run_concurrently()
        except BaseException:  # taken away, or the worker's stop ran out of grace: nothing left behind
            for task in self.running:
                task.cancel()
            raise
        await self.recorder.flush()
        if self.cancelled.is_set() and not self.recorder.completed and not self.stopping():
            await self._finish_cancelled()

    # scheduling ------------------------------------------------------------
    async def _run_one_at_a_time(self) -> None:
        """Concurrency 1 (the default): each job runs in this task, not in one of its own, which
        for fast jobs is most of what a job costs; a cancel stops it by cancelling this task."""
        self._task = asyncio.current_task()
        while not self.stopping() and not self.cancelled.is_set():
            self.recorder.check()
            ready = self._take_ready(1)
            if not ready:
                break  # every job finished
            index, job = ready[0]
            self.parked = self.app.busy(job.namespace)
            if self.parked:
                self.on_parked()
            self._finished(await self._run_in_this_task(index, job))
            self.parked = False
            await asyncio.sleep(0)  # a job that never awaits must not keep other batches and the API waiting

    async def _run_in_this_task(self, index: int, job: JobSpec) -> Finished:
        self._in_this_task = index
        try:
            return await self._run_job(index, job)
        except asyncio.CancelledError:
            if not self._stopped_in_this_task:
                raise  # the worker's stop, not the client's cancel
            return Finished(index, STOPPED_CANCELLED, JobOutcome.CANCELLED, time.time())
        finally:
            self._in_this_task = None
            if self._stopped_in_this_task and self._task is not None:
                self._stopped_in_this_task = False
                self._task.uncancel()  # the cancel was for the job, not for the batch

    async def _run_concurrently(self) -> None:
        """Up to `concurrency` jobs at once, each in a task of its own, which wakes this one when it
        finishes (asyncio.wait would add and remove a callback on every running task each time)."""
        while not self.stopping():
            self.recorder.check()
            if not self.cancelled.is_set():
                for index, job in self._take_ready(self.lease.concurrency - len(self.running)):
                    task = asyncio.create_task(self._run_job(index, job))
                    task.add_done_callback(self._job_done)
                    self.running[task] = index
            if not self.running:
                break  # every job finished, or cancelled with nothing left running
            await self._wait_for_a_job()
        await self._drain_finished()

    def _take_ready(self, room: int) -> list[tuple[int, JobSpec]]:
        """Up to `room` jobs ready to start, in index order, taken from those pending. A job whose
        dependency failed is answered at once, which may settle jobs before it in turn, so passes
        repeat until none does."""
        ready: list[tuple[int, JobSpec]] = []
        settled = True
        while settled and len(ready) < room:
            settled = False
            taken: list[int] = []
            for index, job in self.pending.items():
                if len(ready) >= room:
                    break
                if job.depends_on and not all(dep in self.outcomes for dep in job.depends_on):
                    continue
                taken.append(index)
                failed = job.depends_on and [
                    dep for dep in job.depends_on if self.outcomes[dep] is not JobOutcome.SUCCEEDED
                ]
                if failed:
                    self._finished(self._dependency_failed(index, failed[0]))
                    settled = True
                else:
                    ready.append((index, job))
            for index in taken:
                del self.pending[index]
        return ready

    async def _wait_for_a_job(self) -> None:
        # A cancel needs no wake-up of its own: it stops what can be stopped, which then finishes,
        # and what cannot be stopped is waited for anyway. Waiting for a task always yields to the
        # loop, so a job that never awaits cannot keep other batches and the API waiting.
        self.parked = all(self.app.busy(self.lease.jobs[index].namespace) for index in self.running.values())
        if self.parked:
            self.on_parked()
        try:
            if not self._done:  # empty whenever the loop has not run since the last collect
                self._wake = asyncio.get_running_loop().create_future()
                await self._wake
        finally:
            self._wake = None
            self.parked = False
        self._collect_done()

    def _job_done(self, task: asyncio.Task[Finished]) -> None:
        self._done.append(task)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _collect_done(self) -> None:
        done, self._done = self._done, []
        for task in done:
            index = self.running.pop(task)
            if task.cancelled():
                self._finished(Finished(index, STOPPED_CANCELLED, JobOutcome.CANCELLED, time.time()))
            else:
                self._finished(task.result())

    async def _drain_finished(self) -> None:
        """Waits for the jobs still running when the loop ends (a stopping worker's) and records
        what they answer."""
        if self.running:
            await asyncio.wait(list(self.running))
            self._collect_done()

    def _finished(self, finished: Finished) -> None:
        self.outcomes[finished.index] = finished.outcome
        if finished.index in self.referenced:
            self.responses[finished.index] = orjson.loads(finished.response)
        self.recorder.add(finished)

    # one job -----------------------------------------------------------------
    @tracing.job
    async def _run_job(self, index: int, job: JobSpec) -> Finished:
        ctx = ActionContext(
            account=self.lease.account, async_id=self.batch_id, job_index=index, run=self.lease.run
        )
        params, resolved = job.params, None
        if index in self.refers:
            try:
                resolved = self._resolve(job)
            except Unresolved as exc:
                body = job_error(str(exc), REFERENCE_UNRESOLVED)
                return Finished(index, body, JobOutcome.FAILED, time.time())
            except Exception:  # a bug must fail its job, not every worker that takes the batch
                log.exception("job %s[%d]: its references could not be resolved", self.batch_id, index)
                body = InternalError("The job's references could not be resolved").to_json()
                return Finished(index, body, JobOutcome.FAILED, time.time())
            params = resolved
        started = time.perf_counter()
        reply = await self.app.reply(job.namespace, job.action, params, ctx)
        duration_ms = (time.perf_counter() - started) * 1000
        outcome = JobOutcome.SUCCEEDED if reply.status == 200 else JobOutcome.FAILED
        # positional arguments: matched faster than keywords, on every job's path
        return Finished(index, reply.body, outcome, time.time(), duration_ms, reply.attempts, resolved)

    def _resolve(self, job: JobSpec) -> str:
        """The job's params, their references replaced: as deep as a request's may be, at most."""
        params = resolve(orjson.loads(job.params), self._responses_by_key())
        if nested_deeper_than(params):
            raise Unresolved(f"the references make params nested deeper than {MAX_DEPTH} levels")
        return orjson.dumps(params).decode()

    def _dependency_failed(self, index: int, dependency: int) -> Finished:
        name = self._key_of.get(dependency)
        which = f"job {dependency}" + (f" ({name!r})" if name else "")
        body = job_error(f"Not run: {which}, which this job waits for, did not succeed", DEPENDENCY_FAILED)
        return Finished(index, body, JobOutcome.FAILED, time.time(), attempts=0)

    # references --------------------------------------------------------------
    @property
    def _key_of(self) -> dict[int, str]:
        return {index: key for key, index in self.lease.keys.items()}

    def _responses_by_key(self) -> dict[str, Any]:
        return {
            key: self.responses[index] for key, index in self.lease.keys.items() if index in self.responses
        }

    async def _load_referenced_responses(self) -> None:
        """A resumed batch: the responses its jobs point into that finished before this lease."""
        wanted = {index for index in self.referenced if index in self.outcomes}
        if wanted:
            results = await self.store.job_results(self.batch_id)
            for index in wanted:
                response = results[index].response
                if response is not None:
                    self.responses[index] = orjson.loads(response)

    # a cancel --------------------------------------------------------------
    async def _finish_cancelled(self) -> None:
        slot = self.offer_delivery(self.lease.callback_url) if self.lease.callback_url else None
        try:
            finished = await self.store.finish_cancelled(
                self.lease, [], cancelled=NOT_RUN_CANCELLED, delivery_to=slot
            )
        finally:
            if slot is not None:
                slot.close()
        if not finished:
            raise LeaseLost(self.batch_id)
        outcomes = [*self.outcomes.values(), *[JobOutcome.CANCELLED] * len(self.pending)]
        events.batch_finished(self.lease, BatchStatus.CANCELLED, outcomes)
        if self.lease.callback_url and not (slot is not None and slot.taken):
            self.on_completed()


def referenced_jobs(jobs: dict[int, JobSpec], keys: dict[str, int]) -> dict[int, list[int]]:
    """For each job whose params hold references, the indexes of the jobs they point into."""
    found: dict[int, list[int]] = {}
    for index, job in jobs.items():
        if REF_MARK not in job.params:  # the common case: no need to decode
            continue
        targets = [keys[ref.job] for ref in references(orjson.loads(job.params)) if ref.job in keys]
        if targets:
            found[index] = targets
    return found
