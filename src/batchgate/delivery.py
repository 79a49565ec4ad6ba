"""The callback outbox: sends each due delivery as a signed POST and records every attempt.

A delivery is written in the same transaction that completes its batch (or by `repost`), so a
completed batch always has its callback queued; its body, the batch's results, is read when it is
sent. Sending is at least once: a process that dies mid-POST leaves the delivery leased until the
lease runs out, then it is sent again with the same webhook-id, which is how receivers drop
duplicates. A delivery is claimed from the store, or, when the batch completed in this process
while this loop had room (`offer`), leased to it in the completing transaction and handed over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from batchgate import events, metrics, tracing, webhooks
from batchgate.destinations import Destinations, destination_of
from batchgate.loops import ClaimLoop, Slot
from batchgate.models import Attempt, Delivery, DeliveryStatus
from batchgate.netguard import AddressPolicy, UnsafeAddress, guarded_connector
from batchgate.protocol.results import results_body
from batchgate.retry import RetryPolicy, next_delay, parse_retry_after
from batchgate.store import Store

log = logging.getLogger(__name__)

USER_AGENT = "batchgate-callback/1"


class Deliverer(ClaimLoop):
    """Sends callbacks through one session whose connector enforces the address guard at connect
    time. `open()` creates that session inside the event loop, unless one is handed in (tests)."""

    def __init__(
        self,
        store: Store,
        *,
        policy: AddressPolicy,
        retry: RetryPolicy,
        timeout_s: float = 15.0,
        concurrency: int = 50,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        session: aiohttp.ClientSession | None = None,
        destinations: Destinations | None = None,
    ) -> None:
        super().__init__(capacity=concurrency, poll_s=poll_s)
        self.store = store
        self.destinations = destinations or Destinations()
        self._session = session
        self._owns_session = session is None
        self.policy = policy
        self.retry = retry
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.lease_s = 2 * timeout_s + 5  # an attempt always ends well inside its lease
        self.clock = clock
        # read at each scrape: a back-off ends with time, not with an attempt
        metrics.DESTINATIONS_BACKED_OFF.set_function(lambda: len(self.destinations.backed_off(self.clock())))

    async def open(self) -> None:
        if self._session is None:
            connector = guarded_connector(self.policy, limit=self.capacity)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    def offer(self, url: str) -> Slot[Delivery] | None:
        """Room for the callback to `url` of a batch this process is about to complete: the store
        queues it leased to this loop and hands it over (`take`). None when this loop would not
        claim it now: no room, stopping, older deliveries due in the store, or its destination
        backed off or full."""
        if self.destinations.backed_off_until(destination_of(url), self.clock()) is not None:
            return None
        return self._slot("deliverer", self.lease_s, self._take)

    def _take(self, delivery: Delivery) -> None:
        if not self._stopping:  # else its lease runs out and it is sent then
            self._run_task(self._deliver(delivery))

    async def _claim(self, limit: int) -> list[Coroutine[Any, Any, None]]:
        deliveries = await self.store.claim_deliveries(
            limit=limit,
            lease_s=self.lease_s,
            skip=self.destinations.skip(self.clock()),
            per_destination=self.destinations.per_destination,
        )
        return [self._deliver(delivery) for delivery in deliveries]

    async def _idle_wait_s(self) -> float | None:
        due = await self.store.next_delivery_at()
        return None if due is None else max(0.0, due - self.clock())

    async def _body(self, delivery: Delivery) -> bytes | None:
        """The batch's results, or None when the batch was restarted since (the restart has
        superseded this delivery: the next run's callback replaces it)."""
        if delivery.body is not None:
            return delivery.body  # queued before 0.2, with its own copy
        results = await self.store.job_results(delivery.batch_id)
        if not results or any(result.response is None for result in results):
            return None
        return results_body(delivery.batch_id, results)

    async def _deliver(self, delivery: Delivery) -> None:
        dest = delivery.destination or destination_of(delivery.url)
        until = self.destinations.backed_off_until(dest, self.clock())
        if until is not None:  # its destination is backed off or full: no attempt now, and none counted
            await self.store.postpone(delivery, until=until)
            return
        self.destinations.started(dest, self.clock())  # counted before anything awaits, so none slips by
        try:
            body = await self._body(delivery)
            if body is None:
                log.info("callback %s for batch %s: superseded by a restart", delivery.id, delivery.batch_id)
                self.destinations.abandoned(dest)
                return
            at, started = self.clock(), time.perf_counter()
            status, error, retry_after = await self._post(delivery, body)
        except BaseException:  # stopped mid-POST: the lease runs out and it is sent again
            self.destinations.abandoned(dest)
            raise
        attempt = Attempt(
            delivery_id=delivery.id,
            number=delivery.attempts + 1,
            at=at,
            status_code=status,
            error=error,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        ok = status is not None and 200 <= status < 300
        now = self.clock()
        if self.destinations.finished(dest, ok=ok, now=now):
            breaker = self.destinations.breakers[dest]
            events.destination_backed_off(dest, breaker.failures, breaker.open_until)
        delay = (
            None if ok else next_delay(self.retry, attempt.number, status=status, retry_after_s=retry_after)
        )
        events.delivery_attempted(delivery, attempt, next_in_s=delay, gone=status == 410)
        if ok:
            await self.store.finish_attempt(delivery, attempt, None, DeliveryStatus.DELIVERED)
            return
        final = DeliveryStatus.GONE if status == 410 else DeliveryStatus.FAILED
        await self.store.finish_attempt(delivery, attempt, delay, final)

    @tracing.callback_attempt
    async def _post(self, delivery: Delivery, body: bytes) -> tuple[int | None, str | None, float | None]:
        """(status, error, Retry-After seconds) of one POST; redirects are answers, not followed."""
        if self._session is None:
            raise RuntimeError("the deliverer is not open")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **webhooks.sign(delivery.secrets, delivery.id, body),
        }
        tracing.inject(headers)
        try:
            self.policy.check_url(delivery.url)  # IP literals: aiohttp dials them without resolving
            async with self._session.post(
                delivery.url, data=body, headers=headers, allow_redirects=False, timeout=self.timeout
            ) as response:
                error = None if response.status < 300 else f"HTTP {response.status}"
                return response.status, error, parse_retry_after(response.headers.get("Retry-After"))
        except UnsafeAddress as exc:
            return None, f"refused: {exc}", None
        except TimeoutError:
            return None, f"timed out after {self.timeout.total:g} s", None
        except (aiohttp.ClientError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}", None
