"""When a forwarded call is tried again, and how call starts are paced: pure functions, no clock."""

from __future__ import annotations

import pytest

from batchgate.actions.upstream import Pacer
from batchgate.retry import RetryPolicy, parse_retry_after, upstream_delay

POLICY = RetryPolicy(schedule=(0.5, 2.0, 5.0), retry_after_cap_s=30.0)


@pytest.mark.parametrize(
    ("attempt", "status", "retry_after", "expected"),
    [
        (1, None, None, 0.5),  # connection failure or timeout: retried on the schedule
        (2, None, None, 2.0),
        (3, None, None, 5.0),
        (4, None, None, None),  # the schedule ran out: the job gets a 461
        (1, 503, None, 0.5),
        (1, 429, None, 0.5),
        (1, 429, 10.0, 10.0),  # Retry-After longer than the schedule is honoured
        (2, 429, 0.1, 2.0),  # ... but never shortens it
        (1, 503, 3600.0, 30.0),  # ... and is capped
        (3, 429, 3600.0, 30.0),
        (4, 429, 1.0, None),
        (1, 200, None, None),  # any other answer is the call's answer, passed on as it is
        (1, 400, None, None),
        (1, 404, None, None),
        (1, 500, None, None),
        (1, 502, None, None),
        (1, 410, None, None),
    ],
)
def test_upstream_delay(
    attempt: int, status: int | None, retry_after: float | None, expected: float | None
) -> None:
    assert upstream_delay(POLICY, attempt, status=status, retry_after_s=retry_after) == expected


def test_no_retries_means_one_attempt() -> None:
    assert upstream_delay(RetryPolicy((), 30.0), 1, status=None, retry_after_s=None) is None


@pytest.mark.parametrize(
    ("header", "now", "expected"),
    [
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0, 10.0),  # an HTTP date, 10 s ahead
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490.0, 0.0),  # already past
        ("Wed, 21 Oct 2015 07:28:00 GMT", None, None),  # no clock given: dates are not understood
        ("120", 1445412470.0, 120.0),
        ("soon", 1445412470.0, None),
    ],
)
def test_parse_retry_after_reads_http_dates_given_the_time(
    header: str, now: float | None, expected: float | None
) -> None:
    assert parse_retry_after(header, now=now) == expected


def test_the_pacer_spaces_starts_by_the_interval_without_a_burst() -> None:
    pacer = Pacer(rate_per_s=4)
    # Five callers at t=10.0 start at 10.0, 10.25, 10.5, 10.75 and 11.0.
    assert [pacer.reserve(10.0) for _ in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_the_pacer_does_not_save_up_idle_time_for_a_burst_later() -> None:
    pacer = Pacer(rate_per_s=4)
    assert pacer.reserve(0.0) == 0.0
    assert pacer.reserve(100.0) == 0.0  # long idle: starts at once
    assert pacer.reserve(100.0) == 0.25  # ... but the next still waits its interval


def test_a_zero_rate_means_no_limit() -> None:
    pacer = Pacer(rate_per_s=0)
    assert [pacer.reserve(5.0) for _ in range(3)] == [0.0, 0.0, 0.0]
