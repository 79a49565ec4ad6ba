"""When to try a callback or an upstream call again: pure functions of the attempt and the policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

# The answers of an upstream API that mean "not now, later" rather than being the call's answer.
UPSTREAM_RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: tuple[float, ...]
    retry_after_cap_s: float


def next_delay(
    policy: RetryPolicy, attempt: int, *, status: int | None, retry_after_s: float | None
) -> float | None:
    """Seconds until the next try after failed attempt number `attempt` (1-based), or None to give up.

    A 410 means the receiver wants no more. A `Retry-After` longer than the schedule's delay is
    honoured, up to the cap, so a receiver cannot park a delivery for days.
    """
    if status == 410 or attempt > len(policy.schedule):
        return None
    delay = policy.schedule[attempt - 1]
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, policy.retry_after_cap_s))
    return delay


def upstream_delay(
    policy: RetryPolicy, attempt: int, *, status: int | None, retry_after_s: float | None
) -> float | None:
    """Seconds until the next try of a forwarded call after attempt `attempt` (1-based), or None.

    `status` None means there was no answer (the connection failed or the call timed out). Only
    429 and 503 are worth another try; any other answer is the call's answer, passed on as it is.
    """
    if status is not None and status not in UPSTREAM_RETRY_STATUSES:
        return None
    return next_delay(policy, attempt, status=status, retry_after_s=retry_after_s)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds; None for nonsense.

    An HTTP date is understood only when `now` (Unix seconds) is given, as the seconds from then.
    """
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return _seconds_until(value, now) if value is not None and now is not None else None
    return seconds if seconds is not None and seconds >= 0 else None


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000", RFC 5322's "no zone"; an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
