"""The options `serve` and `worker` share, each read from `BATCHGATE_<OPTION>` too, and the
Settings they make."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from batchgate.netguard import AddressPolicy
from batchgate.settings import Settings, parse_schedule
from batchgate.vault import Vault, VaultError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = Settings()


def env_option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that is also read from BATCHGATE_<NAME>."""
    env = "BATCHGATE_" + names[0].split("/")[0].lstrip("-").replace("-", "_").upper()
    kwargs.setdefault("show_default", True)
    return click.option(*names, envvar=env, show_envvar=True, **kwargs)


def option_group(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Several options as one decorator, shown in the order given."""

    def apply(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def _database_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise click.BadParameter(
            f"{value!r} is not a database URL: use sqlite:///PATH (e.g. sqlite:///./batchgate.db) "
            "or postgresql://user@host/database"
        )
    return value


def _allow_list(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        AddressPolicy.from_spec(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def _server_keys(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        Vault(value)
    except VaultError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def _tracing(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        from batchgate import tracing

        try:
            tracing.check()
        except tracing.TracingError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


def _schedule(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return parse_schedule(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


server_key_option = env_option(
    "--server-key",
    default="",
    show_default=False,
    callback=_server_keys,
    help="Fernet keys, comma-separated: the first encrypts the keys' secrets at rest, every one decrypts.",
)
db_option = env_option(
    "--db",
    default=DEFAULTS.db,
    callback=_database_url,
    help="Database URL: sqlite:///PATH or postgresql://user@host/database.",
)

# Each option's name, the Settings field it fills, and its click declaration.
COMMON_OPTIONS = option_group(
    db_option,
    server_key_option,
    env_option(
        "--result-ttl",
        "result_ttl_s",
        type=float,
        default=DEFAULTS.result_ttl_s,
        help="Seconds results stay readable after a batch completes.",
    ),
    env_option(
        "--sleep-cap",
        "sleep_cap_s",
        type=float,
        default=DEFAULTS.sleep_cap_s,
        help="Longest test.sleep, in seconds.",
    ),
)
API_OPTIONS = option_group(
    env_option(
        "--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes, help="Largest request body accepted."
    ),
    env_option(
        "--key-cache",
        "key_cache_s",
        type=float,
        default=DEFAULTS.key_cache_s,
        help="Seconds an API key is remembered; a revocation takes up to this long to apply.",
    ),
    env_option(
        "--header-timeout",
        "header_timeout_s",
        type=float,
        default=DEFAULTS.header_timeout_s,
        help="Seconds a connection has to send a request's headers (a silent one is closed after it).",
    ),
    env_option(
        "--max-header-bytes", type=int, default=DEFAULTS.max_header_bytes, help="Largest request headers."
    ),
    env_option(
        "--body-min-rate",
        type=int,
        default=DEFAULTS.body_min_rate,
        help="Bytes per second a request body must arrive at (after 2 s); 0: no minimum.",
    ),
    env_option(
        "--idle-timeout",
        "idle_timeout_s",
        type=float,
        default=DEFAULTS.idle_timeout_s,
        help="Seconds an idle keep-alive connection stays open.",
    ),
    env_option(
        "--max-connections", type=int, default=DEFAULTS.max_connections, help="Open connections at once."
    ),
    env_option(
        "--max-body-memory",
        type=int,
        default=DEFAULTS.max_body_memory,
        help="Bytes of request bodies the process holds at once; past it, 429.",
    ),
    env_option(
        "--rate-limit",
        type=float,
        default=DEFAULTS.rate_limit,
        help="Requests per second per account, per API process (a burst of twice that); 0: no limit.",
    ),
    env_option(
        "--max-open-batches",
        type=int,
        default=DEFAULTS.max_open_batches,
        help="Batches not yet finished an account may have; 0: no limit.",
    ),
    env_option(
        "--max-result-bytes",
        type=int,
        default=DEFAULTS.max_result_bytes,
        help="Bytes of results an account may hold until they expire; 0: no limit.",
    ),
    env_option(
        "--reposts-per-hour",
        type=int,
        default=DEFAULTS.reposts_per_hour,
        help="Reposts of one batch per hour.",
    ),
    env_option(
        "--max-concurrency",
        type=int,
        default=DEFAULTS.max_concurrency,
        help="The largest 'concurrency' a run may ask for.",
    ),
    env_option(
        "--idempotency-ttl",
        "idempotency_ttl_s",
        type=float,
        default=DEFAULTS.idempotency_ttl_s,
        help="Seconds an Idempotency-Key of run is remembered.",
    ),
)
WORKER_OPTIONS = option_group(
    env_option(
        "--max-batches", type=int, default=DEFAULTS.max_batches, help="Batches one worker runs at once."
    ),
    env_option(
        "--lease",
        "lease_s",
        type=float,
        default=DEFAULTS.lease_s,
        help="Seconds a worker holds a batch without renewing; a dead worker's batches resume after it.",
    ),
    env_option(
        "--poll-interval",
        "poll_s",
        type=float,
        default=DEFAULTS.poll_s,
        help="Seconds between looks for work when nothing wakes the worker.",
    ),
    env_option(
        "--callback-allow",
        default=DEFAULTS.callback_allow,
        callback=_allow_list,
        help="Hosts, IPs or CIDRs callbacks may reach despite the address guard (comma-separated).",
    ),
    env_option(
        "--callback-retry-schedule",
        default=",".join(f"{d:g}" for d in DEFAULTS.callback_retry_schedule),
        callback=_schedule,
        help="Seconds before each retry of a failed callback (comma-separated).",
    ),
    env_option(
        "--callback-timeout",
        "callback_timeout_s",
        type=float,
        default=DEFAULTS.callback_timeout_s,
        help="Seconds one callback attempt may take.",
    ),
    env_option(
        "--callback-concurrency",
        type=int,
        default=DEFAULTS.callback_concurrency,
        help="Callbacks sent at once.",
    ),
    env_option(
        "--callback-per-destination",
        type=int,
        default=DEFAULTS.callback_per_destination,
        help="Callbacks in flight to one host:port at once.",
    ),
    env_option(
        "--callback-breaker-cooldown",
        "callback_breaker_cooldown_s",
        type=float,
        default=DEFAULTS.callback_breaker_cooldown_s,
        help="Seconds a backed-off destination first waits; it doubles with each failed probe, up to 600.",
    ),
    env_option(
        "--callback-retry-after-cap",
        "retry_after_cap_s",
        type=float,
        default=DEFAULTS.retry_after_cap_s,
        help="The longest Retry-After of a receiver that a callback's next try waits for.",
    ),
    env_option(
        "--callback-breaker-threshold",
        type=int,
        default=DEFAULTS.callback_breaker_threshold,
        help="Failed callbacks in a row that back a destination off (for 30 s, doubling to 10 min).",
    ),
    env_option(
        "--job-timeout",
        "job_timeout_s",
        type=float,
        default=DEFAULTS.job_timeout_s,
        help="Seconds a Python action may take, unless it sets its own timeout_s.",
    ),
    env_option(
        "--action-threads", type=int, default=DEFAULTS.action_threads, help="Threads for plain def actions."
    ),
    env_option(
        "--action-processes",
        type=int,
        default=DEFAULTS.action_processes,
        help="Processes for actions registered with process=True.",
    ),
)
ADMIN_OPTIONS = option_group(
    env_option("--admin-host", default="127.0.0.1", help="Address the admin listener listens on."),
    env_option(
        "--admin-token",
        default="",
        show_default=False,
        help="The admin listener's credential (a bearer token, or the console's login); without one, "
        "the admin listener listens on loopback only.",
    ),
    env_option(
        "--metrics-accounts/--no-metrics-accounts",
        default=False,
        help="Label batch and job metrics with the account (their number is unbounded).",
    ),
    env_option(
        "--otel/--no-otel",
        default=False,
        callback=_tracing,
        help="Trace with OpenTelemetry (the otel extra), exporting as the OTEL_* variables say.",
    ),
)
APP_OPTIONS = option_group(
    env_option("--app", default=None, help="Your actions: an App object as package.module:attribute."),
    env_option("--app-dir", default=".", help="The folder --app is imported from."),
    env_option(
        "--config",
        default=None,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Gateway mode: a batchgate.toml mapping namespaces to upstream APIs.",
    ),
    env_option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"])),
    env_option(
        "--log-format",
        default="console",
        type=click.Choice(["console", "json"]),
        help="One line per event: readable, or a JSON object with its fields.",
    ),
)
SETTINGS_FIELDS = frozenset(field.name for field in dataclasses.fields(Settings))


def settings_from(options: dict[str, Any]) -> Settings:
    """Settings from the options a command took (each option's destination is a Settings field);
    what a command does not take keeps its default."""
    return Settings(**{name: value for name, value in options.items() if name in SETTINGS_FIELDS})
