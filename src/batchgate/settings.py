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
    result_ttl_s: float = 2 * 24 * 3600.0
    sleep_cap_s: float = 30.0
    server_key: str = ""  # Fernet keys that encrypt the keys' secrets at rest (batchgate.vault)
    # the front door
    max_body_bytes: int = 10 * 1024 * 1024
    key_cache_s: float = 5.0  # how long a key (or a revocation) may go unnoticed by another process
    header_timeout_s: float = 10.0  # a request's headers must have arrived within this
    max_header_bytes: int = 64 * 1024
    body_min_rate: int = 1024  # bytes/s a body must arrive at, after its first second or so
    idle_timeout_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 1000
    max_body_memory: int = 256 * 1024 * 1024  # bytes of request bodies the process holds at once
    # the operator's view
    admin_token: str = ""  # needed by the admin listener (bearer token, or a login to the console)
    metrics_accounts: bool = False  # label batch and job metrics with the account (unbounded)
    otel: bool = False  # tracing with OpenTelemetry, set up from the OTEL_* variables (batchgate.tracing)
    # what each account may do
    rate_limit: float = 1000.0  # requests per second per account, per API process; 0: no limit
    max_open_batches: int = 10_000  # batches not yet finished
    max_result_bytes: int = 5 * 1024**3  # bytes of results held until they expire
    reposts_per_hour: int = 10  # per batch
    max_concurrency: int = 50  # the largest "concurrency" a run may ask for
    idempotency_ttl_s: float = 24 * 3600.0
    # the worker
    max_batches: int = 50
    lease_s: float = 30.0
    poll_s: float = 1.0
    purge_every_s: float = 60.0
    job_timeout_s: float = 120.0  # for actions that do not set their own
    action_threads: int = 32  # plain def actions run in this many threads
    action_processes: int = 2  # process=True actions run in this many processes
    # callbacks
    callback_allow: str = ""
    callback_retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    callback_timeout_s: float = 15.0
    callback_concurrency: int = 50
    callback_per_destination: int = 10  # in flight to one host:port at once
    callback_breaker_threshold: int = 5  # failures in a row that back a destination off
    callback_breaker_cooldown_s: float = 30.0  # the first back-off; it doubles, up to 10 minutes
    retry_after_cap_s: float = 3600.0
