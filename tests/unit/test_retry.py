"""The callback retry schedule as a pure function of the attempt."""

from __future__ import annotations

import pytest

from batchgate.retry import RetryPolicy, next_delay, parse_retry_after
from batchgate.settings import parse_schedule

POLICY = RetryPolicy(schedule=(5.0, 300.0, 1800.0), retry_after_cap_s=600.0)


@pytest.mark.parametrize(
    ("attempt", "status", "retry_after", "expected"),
    [
        (1, 500, None, 5.0),
        (2, None, None, 300.0),  # a network error
        (3, 503, None, 1800.0),
        (4, 500, None, None),  # the schedule ran out
        (1, 410, None, None),  # the receiver wants no more
        (1, 429, 60.0, 60.0),  # Retry-After longer than the schedule is honoured
        (2, 429, 60.0, 300.0),  # ... but never shortens it
        (1, 503, 86400.0, 600.0),  # ... and is capped
    ],
)
def test_next_delay(
    attempt: int, status: int | None, retry_after: float | None, expected: float | None
) -> None:
    assert next_delay(POLICY, attempt, status=status, retry_after_s=retry_after) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (None, None),
        ("-3", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_schedule_reads_comma_separated_seconds() -> None:
    assert parse_schedule("5, 300,1800") == (5.0, 300.0, 1800.0)


@pytest.mark.parametrize("text", ["5,x", "5,-1"])
def test_parse_schedule_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="retry"):
        parse_schedule(text)
