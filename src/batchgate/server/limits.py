"""Requests per second per account: a token bucket each, in this API process.

Each process counts on its own (a deployment of N API processes admits up to N times the rate);
what it bounds is one account crowding out the others on a process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from batchgate.protocol.errors import RATE_LIMITED, TooManyRequests

MAX_ACCOUNTS = 100_000  # buckets kept at once; full ones are forgotten first


class RateLimiter:
    def __init__(
        self, rate_per_s: float, *, burst_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = max(1.0, rate_per_s * burst_s)  # a burst of this many is let through at once
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # account -> (tokens, when counted)

    def check(self, account: str) -> None:
        """Takes a token for one request; raises TooManyRequests, when none is left."""
        if not self.rate_per_s:
            return
        now = self.clock()
        tokens, then = self._buckets.get(account, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate_per_s)
        if tokens < 1:
            self._buckets[account] = (tokens, now)
            raise TooManyRequests(
                f"This account sends more than {self.rate_per_s:g} requests per second",
                specific_code=RATE_LIMITED,
                retry_after_s=(1 - tokens) / self.rate_per_s,
            )
        if len(self._buckets) >= MAX_ACCOUNTS and account not in self._buckets:
            self._forget_full(now)
        self._buckets[account] = (tokens - 1, now)

    def _forget_full(self, now: float) -> None:
        """Drops the buckets that have refilled: forgetting them changes nothing."""
        for account, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self.rate_per_s >= self.capacity:
                del self._buckets[account]
        if len(self._buckets) >= MAX_ACCOUNTS:  # none had refilled: a flood of accounts
            self._buckets.clear()
