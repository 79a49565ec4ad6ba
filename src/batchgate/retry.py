"""When to try a callback again: a pure function of the attempt and the policy."""

from __future__ import annotations

from dataclasses import dataclass


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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds; None for dates or nonsense."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
