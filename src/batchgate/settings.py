"""Operator settings. The CLI fills them from options, each also read from `BATCHGATE_<OPTION>`."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def parse_schedule(text: str) -> tuple[float, ...]:
    """`"5,300,1800"` -> (5.0, 300.0, 1800.0): the delays before each retry of a callback."""
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"a retry schedule is comma-separated seconds, not {text!r}") from exc
    if any(delay < 0 for delay in delays):
        raise ValueError("retry delays cannot be negative")
    return delays


@dataclass(frozen=True, kw_only=True)
class Settings:
    db: str = "sqlite:///./batchgate.db"
    max_body_bytes: int = 10 * 1024 * 1024
    result_ttl_s: float = 2 * 24 * 3600.0
    sleep_cap_s: float = 30.0
    key_cache_s: float = 5.0  # how long a key (or a revocation) may go unnoticed by another process
    # the worker
    max_batches: int = 50
    lease_s: float = 30.0
    poll_s: float = 1.0
    purge_every_s: float = 600.0
    # callbacks
    callback_allow: str = ""
    callback_retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    callback_timeout_s: float = 15.0
    callback_concurrency: int = 50
    retry_after_cap_s: float = 3600.0
