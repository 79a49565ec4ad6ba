"""The callback outbox: sends each due delivery as a signed POST and records every attempt.

A delivery is written in the same transaction that completes its batch (or by `repost`), so a
completed batch always has its callback queued. Sending is at least once: a process that dies
mid-POST leaves the delivery leased until the lease runs out, then it is sent again with the
same webhook-id, which is how receivers drop duplicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from batchgate import webhooks
from batchgate.loops import ClaimLoop, owner_id
from batchgate.models import Attempt, Delivery, DeliveryStatus
from batchgate.netguard import AddressPolicy, UnsafeAddress
from batchgate.retry import RetryPolicy, next_delay, parse_retry_after
from batchgate.store import Store

log = logging.getLogger(__name__)

USER_AGENT = "batchgate-callback/1"


class Deliverer(ClaimLoop):
    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        *,
        policy: AddressPolicy,
        retry: RetryPolicy,
        timeout_s: float = 15.0,
        concurrency: int = 50,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(capacity=concurrency, poll_s=poll_s)
        self.store = store
        self.session = session
        self.policy = policy
        self.retry = retry
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.lease_s = 2 * timeout_s + 5  # an attempt always ends well inside its lease
        self.clock = clock
        self.owner = owner_id("delivery")

    async def _claim(self, limit: int) -> list[Coroutine[Any, Any, None]]:
        deliveries = await self.store.claim_deliveries(self.owner, limit=limit, lease_s=self.lease_s)
        return [self._deliver(delivery) for delivery in deliveries]

    async def _idle_wait_s(self) -> float | None:
        due = await self.store.next_delivery_at()
        return None if due is None else max(0.0, due - self.clock())

    async def _deliver(self, delivery: Delivery) -> None:
        at, started = self.clock(), time.perf_counter()
        status, error, retry_after = await self._post(delivery)
        attempt = Attempt(
            delivery_id=delivery.id,
            number=delivery.attempts + 1,
            at=at,
            status_code=status,
            error=error,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        if status is not None and 200 <= status < 300:
            await self.store.finish_attempt(delivery, attempt, None, DeliveryStatus.DELIVERED)
            return
        delay = next_delay(self.retry, attempt.number, status=status, retry_after_s=retry_after)
        final = DeliveryStatus.GONE if status == 410 else DeliveryStatus.FAILED
        if delay is None:
            log.warning(
                "callback %s for batch %s abandoned after %d attempts (%s)",
                delivery.id,
                delivery.batch_id,
                attempt.number,
                error or f"HTTP {status}",
            )
        await self.store.finish_attempt(delivery, attempt, delay, final)

    async def _post(self, delivery: Delivery) -> tuple[int | None, str | None, float | None]:
        """(status, error, Retry-After seconds) of one POST; redirects are answers, not followed."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **webhooks.sign(delivery.secret, delivery.id, delivery.body),
        }
        try:
            self.policy.check_url(delivery.url)  # IP literals: aiohttp dials them without resolving
            async with self.session.post(
                delivery.url, data=delivery.body, headers=headers, allow_redirects=False, timeout=self.timeout
            ) as response:
                error = None if response.status < 300 else f"HTTP {response.status}"
                return response.status, error, parse_retry_after(response.headers.get("Retry-After"))
        except UnsafeAddress as exc:
            return None, f"refused: {exc}", None
        except TimeoutError:
            return None, f"timed out after {self.timeout.total:g} s", None
        except (aiohttp.ClientError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}", None
