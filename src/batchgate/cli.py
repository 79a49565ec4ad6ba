"""The `batchgate` command: serve, worker, keys, call, submit, migrate, purge.

Every option of `serve` and `worker` can also be set in the environment as `BATCHGATE_<OPTION>`
(e.g. `BATCHGATE_DB`). A user's mistake (a database that cannot be opened, a file that is not
JSON, a server that is not there) is one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import ipaddress
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson
from yarl import URL

from batchgate.actions import App
from batchgate.client import ApiError, Client, Unreachable
from batchgate.config import ConfigError, load_config
from batchgate.config import build_app as app_from_config
from batchgate.models import ApiKey
from batchgate.netguard import AddressPolicy
from batchgate.protocol.errors import is_error_body
from batchgate.settings import Settings, parse_schedule
from batchgate.store import Store, StoreError, open_store
from batchgate.store.sqlite import path_of
from batchgate.vault import Vault, VaultError, new_server_key

if TYPE_CHECKING:
    from batchgate.service import Service

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = Settings()


def _option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that is also read from BATCHGATE_<NAME>."""
    env = "BATCHGATE_" + names[0].split("/")[0].lstrip("-").replace("-", "_").upper()
    kwargs.setdefault("show_default", True)
    return click.option(*names, envvar=env, show_envvar=True, **kwargs)


def _options(*options: Callable[[F], F]) -> Callable[[F], F]:
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


def _schedule(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return parse_schedule(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


server_key_option = _option(
    "--server-key",
    default="",
    show_default=False,
    callback=_server_keys,
    help="Fernet keys, comma-separated: the first encrypts the keys' secrets at rest, every one decrypts.",
)
db_option = _option(
    "--db",
    default=DEFAULTS.db,
    callback=_database_url,
    help="Database URL: sqlite:///PATH or postgresql://user@host/database.",
)

# Each option's name, the Settings field it fills, and its click declaration.
COMMON_OPTIONS = _options(
    db_option,
    server_key_option,
    _option(
        "--result-ttl",
        "result_ttl_s",
        type=float,
        default=DEFAULTS.result_ttl_s,
        help="Seconds results stay readable after a batch completes.",
    ),
    _option(
        "--sleep-cap",
        "sleep_cap_s",
        type=float,
        default=DEFAULTS.sleep_cap_s,
        help="Longest test.sleep, in seconds.",
    ),
)
API_OPTIONS = _options(
    _option(
        "--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes, help="Largest request body accepted."
    ),
    _option(
        "--key-cache",
        "key_cache_s",
        type=float,
        default=DEFAULTS.key_cache_s,
        help="Seconds an API key is remembered; a revocation takes up to this long to apply.",
    ),
    _option(
        "--header-timeout",
        "header_timeout_s",
        type=float,
        default=DEFAULTS.header_timeout_s,
        help="Seconds a connection has to send a request's headers (a silent one is closed after it).",
    ),
    _option(
        "--max-header-bytes", type=int, default=DEFAULTS.max_header_bytes, help="Largest request headers."
    ),
    _option(
        "--body-min-rate",
        type=int,
        default=DEFAULTS.body_min_rate,
        help="Bytes per second a request body must arrive at (after 2 s); 0: no minimum.",
    ),
    _option(
        "--idle-timeout",
        "idle_timeout_s",
        type=float,
        default=DEFAULTS.idle_timeout_s,
        help="Seconds an idle keep-alive connection stays open.",
    ),
    _option(
        "--max-connections", type=int, default=DEFAULTS.max_connections, help="Open connections at once."
    ),
    _option(
        "--max-body-memory",
        type=int,
        default=DEFAULTS.max_body_memory,
        help="Bytes of request bodies the process holds at once; past it, 429.",
    ),
    _option(
        "--rate-limit",
        type=float,
        default=DEFAULTS.rate_limit,
        help="Requests per second per account, per API process (a burst of twice that); 0: no limit.",
    ),
    _option(
        "--max-open-batches",
        type=int,
        default=DEFAULTS.max_open_batches,
        help="Batches not yet finished an account may have; 0: no limit.",
    ),
    _option(
        "--max-result-bytes",
        type=int,
        default=DEFAULTS.max_result_bytes,
        help="Bytes of results an account may hold until they expire; 0: no limit.",
    ),
    _option(
        "--reposts-per-hour",
        type=int,
        default=DEFAULTS.reposts_per_hour,
        help="Reposts of one batch per hour.",
    ),
    _option(
        "--max-concurrency",
        type=int,
        default=DEFAULTS.max_concurrency,
        help="The largest 'concurrency' a run may ask for.",
    ),
    _option(
        "--idempotency-ttl",
        "idempotency_ttl_s",
        type=float,
        default=DEFAULTS.idempotency_ttl_s,
        help="Seconds an Idempotency-Key of run is remembered.",
    ),
)
WORKER_OPTIONS = _options(
    _option("--max-batches", type=int, default=DEFAULTS.max_batches, help="Batches one worker runs at once."),
    _option(
        "--lease",
        "lease_s",
        type=float,
        default=DEFAULTS.lease_s,
        help="Seconds a worker holds a batch without renewing; a dead worker's batches resume after it.",
    ),
    _option(
        "--poll-interval",
        "poll_s",
        type=float,
        default=DEFAULTS.poll_s,
        help="Seconds between looks for work when nothing wakes the worker.",
    ),
    _option(
        "--callback-allow",
        default=DEFAULTS.callback_allow,
        callback=_allow_list,
        help="Hosts, IPs or CIDRs callbacks may reach despite the address guard (comma-separated).",
    ),
    _option(
        "--callback-retry-schedule",
        default=",".join(f"{d:g}" for d in DEFAULTS.callback_retry_schedule),
        callback=_schedule,
        help="Seconds before each retry of a failed callback (comma-separated).",
    ),
    _option(
        "--callback-timeout",
        "callback_timeout_s",
        type=float,
        default=DEFAULTS.callback_timeout_s,
        help="Seconds one callback attempt may take.",
    ),
    _option(
        "--callback-concurrency",
        type=int,
        default=DEFAULTS.callback_concurrency,
        help="Callbacks sent at once.",
    ),
    _option(
        "--callback-per-destination",
        type=int,
        default=DEFAULTS.callback_per_destination,
        help="Callbacks in flight to one host:port at once.",
    ),
    _option(
        "--callback-breaker-cooldown",
        "callback_breaker_cooldown_s",
        type=float,
        default=DEFAULTS.callback_breaker_cooldown_s,
        help="Seconds a backed-off destination first waits; it doubles with each failed probe, up to 600.",
    ),
    _option(
        "--callback-retry-after-cap",
        "retry_after_cap_s",
        type=float,
        default=DEFAULTS.retry_after_cap_s,
        help="The longest Retry-After of a receiver that a callback's next try waits for.",
    ),
    _option(
        "--callback-breaker-threshold",
        type=int,
        default=DEFAULTS.callback_breaker_threshold,
        help="Failed callbacks in a row that back a destination off (for 30 s, doubling to 10 min).",
    ),
    _option(
        "--job-timeout",
        "job_timeout_s",
        type=float,
        default=DEFAULTS.job_timeout_s,
        help="Seconds a Python action may take, unless it sets its own timeout_s.",
    ),
    _option(
        "--action-threads", type=int, default=DEFAULTS.action_threads, help="Threads for plain def actions."
    ),
    _option(
        "--action-processes",
        type=int,
        default=DEFAULTS.action_processes,
        help="Processes for actions registered with process=True.",
    ),
)
ADMIN_OPTIONS = _options(
    _option("--admin-host", default="127.0.0.1", help="Address the admin listener listens on."),
    _option(
        "--admin-token",
        default="",
        show_default=False,
        help="The admin listener's credential (a bearer token, or the console's login); without one, "
        "the admin listener listens on loopback only.",
    ),
    _option(
        "--metrics-accounts/--no-metrics-accounts",
        default=False,
        help="Label batch and job metrics with the account (their number is unbounded).",
    ),
)
APP_OPTIONS = _options(
    _option("--app", default=None, help="Your actions: an App object as package.module:attribute."),
    _option("--app-dir", default=".", help="The folder --app is imported from."),
    _option(
        "--config",
        default=None,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Gateway mode: a batchgate.toml mapping namespaces to upstream APIs.",
    ),
    _option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"])),
    _option(
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


def shown(db: str) -> str:
    """A database URL fit for a log line or a message: without its password."""
    url = URL(db)
    return str(url.with_password("***")) if url.password else db


@contextlib.asynccontextmanager
async def opened_store(db: str, server_key: str = "") -> AsyncIterator[tuple[Store, list[int]]]:
    """The store, open, and the migrations opening it applied."""
    store = open_store(db, result_ttl_s=DEFAULTS.result_ttl_s, vault=Vault(server_key))
    applied = await store.open()
    try:
        yield store, applied
    finally:
        await store.close()


def run_on(db: str, work: Coroutine[Any, Any, T]) -> T:
    """Runs a command's work; a database that cannot be used is one clear line, not a traceback."""
    try:
        return asyncio.run(work)
    except StoreError as exc:
        raise click.ClickException(f"could not use the database {shown(db)}: {exc}") from exc
    except VaultError as exc:
        raise click.ClickException(str(exc)) from exc


def with_store(
    db: str, use: Callable[[Store], Coroutine[Any, Any, T]], *, create: bool = False, server_key: str = ""
) -> T:
    """Runs `use` on the opened store. A missing SQLite file is created only when `create` is set:
    otherwise a typo in --db would make an empty database."""
    if db.startswith("sqlite://") and not create and not Path(path_of(db)).exists():
        raise click.ClickException(
            f"there is no database at {path_of(db)} (`batchgate migrate --db {db}` creates one)"
        )

    async def run() -> T:
        async with opened_store(db, server_key) as (store, _):
            return await use(store)

    return run_on(db, run())


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@click.group()
@click.version_option(package_name="batchgate")
def main() -> None:
    """batchgate: an asynchronous batch gateway for RPC-style JSON APIs."""


def load_app(app: str | None, app_dir: str = ".") -> App | None:
    """The user's application object, from `package.module:attribute` (`app` when left out)."""
    if not app:
        return None
    # As with uvicorn's --app-dir: the app is found from the working directory unless told otherwise.
    folder = str(Path(app_dir).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name, _, attribute = app.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute or "app")
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {app!r}: {exc}", param_hint="--app") from exc
    if not isinstance(found, App):
        raise click.BadParameter(
            f"{app!r} is a {type(found).__name__}, not a batchgate.App", param_hint="--app"
        )
    return found


def load_upstreams(config: Path | None) -> App | None:
    """Gateway mode: the namespaces `batchgate.toml` forwards to upstream APIs."""
    if config is None:
        return None
    try:
        return app_from_config(load_config(config))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc


def build_app(app: str | None, app_dir: str, config: Path | None) -> App | None:
    """The --app actions and the --config upstreams, served together."""
    parts = [part for part in (load_app(app, app_dir), load_upstreams(config)) if part is not None]
    if len(parts) < 2:
        return parts[0] if parts else None
    merged = App()
    try:
        for part in parts:
            merged.include(part)
    except ValueError as exc:  # a namespace both registered by --app and forwarded by --config
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    return merged


def configure_logging(log_level: str, log_format: str = "console") -> None:
    from batchgate import logs

    logs.configure(level=log_level, json=log_format == "json")


@main.command()
@COMMON_OPTIONS
@API_OPTIONS
@WORKER_OPTIONS
@APP_OPTIONS
@ADMIN_OPTIONS
@_option("--host", default="127.0.0.1", help="Address the API listens on.")
@_option("--port", type=int, default=8080, help="Port the API listens on.")
@_option(
    "--admin-port",
    type=int,
    default=None,
    help="Serves the console, the admin API and /metrics on this port.",
)
@_option(
    "--worker/--no-worker",
    "run_worker",
    default=True,
    help="Also run jobs and callbacks in this process (--no-worker serves the API only).",
)
def serve(
    host: str,
    port: int,
    admin_port: int | None,
    admin_host: str,
    run_worker: bool,
    app: str | None,
    app_dir: str,
    config: Path | None,
    log_level: str,
    log_format: str,
    **options: Any,
) -> None:
    """Serves the API and, unless --no-worker, runs the worker and the callback delivery too."""
    import uvicorn

    from batchgate.server import create_app
    from batchgate.server.connections import uvicorn_config

    configure_logging(log_level, log_format)
    settings = settings_from(options)
    api = create_app(settings, build_app(app, app_dir, config), run_worker=run_worker)
    server = uvicorn.Server(uvicorn_config(api, settings, host=host, port=port, log_level=log_level))
    if admin_port is None:
        server.run()
        return
    server.config.app = _with_admin(
        api.service, settings, api=api, admin_host=admin_host, admin_port=admin_port
    )
    sockets = [_listen(host, port), _listen(admin_host, admin_port)]
    logging.getLogger("batchgate").info(
        "serving the API on http://%s:%d and the admin listener on http://%s:%d",
        host,
        port,
        admin_host,
        admin_port,
    )
    server.run(sockets=sockets)


def _with_admin(
    service: Service, settings: Settings, *, api: Any | None, admin_host: str, admin_port: int
) -> Any:
    """The application with the admin listener beside the API (or, in a worker, alone)."""
    from batchgate.admin.app import create_admin_app
    from batchgate.server.app import Listeners

    if not settings.admin_token and not _loopback(admin_host):
        raise click.BadParameter(
            "without --admin-token (BATCHGATE_ADMIN_TOKEN) the admin listener listens on loopback only, "
            f"not {admin_host}",
            param_hint="--admin-host",
        )
    admin = create_admin_app(service.admin, token=settings.admin_token or None)
    return Listeners(service, api=api, admin=admin, admin_port=admin_port)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@main.command()
@COMMON_OPTIONS
@WORKER_OPTIONS
@APP_OPTIONS
@ADMIN_OPTIONS
@_option("--metrics-port", type=int, default=None, help="Serves /metrics (and the admin API) on this port.")
def worker(
    app: str | None,
    app_dir: str,
    config: Path | None,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    admin_host: str,
    **options: Any,
) -> None:
    """Runs jobs and callback deliveries only, beside API processes that share the database."""
    from batchgate.service import Service

    configure_logging(log_level, log_format)
    settings = settings_from(options)
    service = Service.build(settings, build_app(app, app_dir, config), run_worker=True)
    log = logging.getLogger("batchgate.worker")
    started = "worker started on %s: up to %d batches at once, namespaces %s"
    namespaces = ", ".join(service.app.namespaces())
    if metrics_port is not None:
        import uvicorn

        from batchgate.server.connections import uvicorn_config

        listeners = _with_admin(service, settings, api=None, admin_host=admin_host, admin_port=metrics_port)
        server = uvicorn.Server(
            uvicorn_config(listeners, settings, host=admin_host, port=metrics_port, log_level=log_level)
        )
        log.info(started + "; metrics on http://%s:%d/metrics", shown(settings.db), settings.max_batches,
                 namespaces, admin_host, metrics_port)  # fmt: skip
        server.run()
        return

    async def work() -> None:
        await service.start()
        log.info(started, shown(settings.db), settings.max_batches, namespaces)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()
        await service.stop()

    try:
        _run_forever(work())
    except StoreError as exc:
        raise click.ClickException(f"could not use the database {shown(settings.db)}: {exc}") from exc


def _run_forever(main: Coroutine[Any, Any, None]) -> None:
    """uvloop, as `serve` gets from uvicorn: it comes with uvicorn[standard] wherever it builds."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


@main.command()
@db_option
def migrate(db: str) -> None:
    """Creates the database or applies pending schema migrations, and says which."""

    async def apply() -> list[int]:
        async with opened_store(db) as (_, applied):
            return applied

    applied = run_on(db, apply())
    if applied:
        versions = ", ".join(str(version) for version in applied)
        click.echo(f"applied migration{'s' if len(applied) > 1 else ''} {versions} to {shown(db)}")
    else:
        click.echo(f"{shown(db)} is up to date")


@main.command()
@db_option
def purge(db: str) -> None:
    """Deletes batches whose results have expired (serve also does this periodically)."""
    click.echo(f"purged {with_store(db, lambda store: store.purge())} batches")


@main.group()
def keys() -> None:
    """Manages API keys: each belongs to an account, and sees only that account's batches."""


def _account_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("an account name cannot be empty")
    return value.strip()


@keys.command("create")
@click.option("--name", required=True, callback=_account_name, help="The account the key belongs to.")
@db_option
@server_key_option
@click.option("--json", "as_json", is_flag=True, help='Print {"key": ..., "secret": ...} on one line.')
@click.option(
    "--env", "as_env", is_flag=True, help='Print shell exports: eval "$(batchgate keys create ... --env)".'
)
def keys_create(name: str, db: str, server_key: str, as_json: bool, as_env: bool) -> None:
    """Creates a key and prints its secrets (shown only here): the secret signs requests, the
    webhook secret verifies callbacks. Creates the database if needed."""
    api_key = with_store(db, lambda store: store.create_key(name), create=True, server_key=server_key)
    _print_key(api_key, as_json=as_json, as_env=as_env)


def _print_key(api_key: ApiKey, *, as_json: bool, as_env: bool) -> None:
    """A key with its secrets: the API secret signs requests, the webhook secret checks callbacks."""
    if as_env:
        click.echo(
            f"export BATCHGATE_KEY={api_key.key} BATCHGATE_SECRET={api_key.secret} "
            f"BATCHGATE_WEBHOOK_SECRET={api_key.webhook_secret}"
        )
    elif as_json:
        shown = {
            "key": api_key.key,
            "secret": api_key.secret,
            "webhookSecret": api_key.webhook_secret,
            "account": api_key.account,
        }
        click.echo(orjson.dumps(shown))
    else:
        click.echo(
            f"key:            {api_key.key}\nsecret:         {api_key.secret}\n"
            f"webhook secret: {api_key.webhook_secret}\naccount:        {api_key.account}"
        )


@keys.command("list")
@db_option
@server_key_option
def keys_list(db: str, server_key: str) -> None:
    """Lists keys (without their secrets)."""
    for api_key in with_store(db, lambda store: store.list_keys(), server_key=server_key):
        state = "revoked" if api_key.revoked_at is not None else "active"
        click.echo(f"{api_key.key}  {api_key.account}  {state}")


@keys.command("rotate-webhook-secret")
@click.argument("key")
@click.option(
    "--overlap",
    type=float,
    default=24 * 3600.0,
    show_default=True,
    help="Seconds the old secret keeps signing callbacks beside the new one.",
)
@db_option
@server_key_option
@click.option("--json", "as_json", is_flag=True, help='Print {"key": ..., "webhookSecret": ...} on one line.')
def keys_rotate_webhook_secret(key: str, overlap: float, db: str, server_key: str, as_json: bool) -> None:
    """Gives a key a new webhook secret. Until the overlap ends, callbacks carry a signature with
    each secret, so receivers can switch to the new one without losing a callback."""
    rotated = with_store(
        db, lambda store: store.rotate_webhook_secret(key, overlap_s=overlap), server_key=server_key
    )
    if rotated is None:
        raise click.ClickException(f"no active key {key}")
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(rotated.webhook_previous_until or 0))
    if as_json:
        click.echo(
            orjson.dumps(
                {"key": rotated.key, "webhookSecret": rotated.webhook_secret, "previousUntil": until}
            )
        )
    else:
        click.echo(f"webhook secret: {rotated.webhook_secret}\nthe previous one signs too until {until}")


@keys.command("reseal")
@db_option
@server_key_option
def keys_reseal(db: str, server_key: str) -> None:
    """Writes every key's secrets again, encrypted with the first BATCHGATE_SERVER_KEY: after adding a
    server key, or to rotate it (list the new key first and the old one after, reseal, then drop
    the old one)."""
    if not server_key:
        raise click.ClickException("set BATCHGATE_SERVER_KEY (or --server-key) to the key to encrypt with")
    click.echo(f"resealed {with_store(db, lambda store: store.reseal_secrets(), server_key=server_key)} keys")


@keys.command("new-server-key")
def keys_new_server_key() -> None:
    """Prints a new server key, for BATCHGATE_SERVER_KEY."""
    click.echo(new_server_key())


@keys.command("revoke")
@click.argument("key")
@db_option
def keys_revoke(key: str, db: str) -> None:
    """Revokes a key: its requests are refused from now on."""
    if not with_store(db, lambda store: store.revoke_key(key)):
        raise click.ClickException(f"no active key {key}")
    click.echo(f"revoked {key}")


CLIENT_OPTIONS = _options(
    _option("--url", default="http://127.0.0.1:8080", help="batchgate's base URL."),
    _option("--key", required=True, help="The API key to sign with."),
    _option("--secret", required=True, help="The key's secret."),
)


def _client_call(fn: Callable[[], T]) -> T:
    """Runs one client call: a wire error is printed as it came, and exits 1."""
    try:
        return fn()
    except ApiError as exc:
        echo_json(exc.body)
        sys.exit(1)
    except Unreachable as exc:
        raise click.ClickException(f"could not reach batchgate: {exc}") from exc


def _read_json(source: str, what: str) -> Any:
    """JSON given inline, as `@file`, or as `-` (standard input)."""
    try:
        if source == "-":
            text = sys.stdin.read()
        elif source.startswith("@"):
            text = Path(source[1:]).read_text(encoding="utf-8")
        else:
            text = source
        return orjson.loads(text)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source[1:]}: {exc.strerror or exc}", param_hint=what) from exc
    except orjson.JSONDecodeError as exc:
        where = "standard input" if source == "-" else source[1:] if source.startswith("@") else "it"
        raise click.BadParameter(f"{where} is not JSON: {exc}", param_hint=what) from exc


@main.command()
@click.argument("namespace")
@click.argument("action")
@click.argument("params", required=False)
@click.option(
    "--idempotency-key", help="Sent as the Idempotency-Key header: give the same one to retry a call safely."
)
@CLIENT_OPTIONS
def call(
    namespace: str,
    action: str,
    params: str | None,
    idempotency_key: str | None,
    url: str,
    key: str,
    secret: str,
) -> None:
    """Makes one signed call and prints the answer, e.g. `batchgate call test ping`.

    PARAMS is a JSON object, `@file` to read it from a file, or `-` to read it from standard input.
    """
    decoded = _read_json(params, "PARAMS") if params else None
    with Client(url, key, secret) as client:
        echo_json(
            _client_call(lambda: client.call(namespace, action, decoded, idempotency_key=idempotency_key))
        )


def _jobs_of(spec: Any, jobs_file: Path) -> tuple[list[Any], dict[str, Any]]:
    """The jobs of a jobs file, and the other params of a whole run request (callbackUrl, concurrency)."""
    if isinstance(spec, list):
        return spec, {}
    if isinstance(spec, dict) and "jobs" in spec:
        return spec["jobs"], spec
    if isinstance(spec, dict) and "namespace" in spec:
        hint = "it holds one job: put it in a list, [{...}]"
    else:
        hint = 'it must hold a list of jobs, or a run request {"jobs": [...]}'
    raise click.BadParameter(f"{jobs_file}: {hint}", param_hint="JOBS_FILE")


@main.command()
@click.argument("jobs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--callback", help="URL to POST the results to when the batch completes.")
@click.option("--wait", is_flag=True, help="Show progress until the batch completes, then print the results.")
@click.option(
    "--fail-on-error", is_flag=True, help="With --wait: exit 3 when any job's response is an error body."
)
@click.option("--concurrency", type=int, help="Jobs run at once (those without dependencies); 1 by default.")
@click.option(
    "--idempotency-key",
    help="Sent as the Idempotency-Key header: the same key again answers the first batch.",
)
@CLIENT_OPTIONS
def submit(
    jobs_file: Path,
    callback: str | None,
    wait: bool,
    fail_on_error: bool,
    concurrency: int | None,
    idempotency_key: str | None,
    url: str,
    key: str,
    secret: str,
) -> None:
    """Submits a batch: JOBS_FILE holds a list of jobs, or a whole run request ({"jobs": [...]}).

    Without --wait, prints the asyncId. Read the results later with
    `batchgate call batch results '{"async": "ASYNC_ID"}'`.
    """
    jobs, options = _jobs_of(_read_json(f"@{jobs_file}", "JOBS_FILE"), jobs_file)
    with Client(url, key, secret) as client:
        async_id = _client_call(
            lambda: client.run(
                jobs,
                callback_url=callback or options.get("callbackUrl"),
                concurrency=concurrency or options.get("concurrency"),
                idempotency_key=idempotency_key,
            )
        )
        if not wait:
            echo_json({"asyncId": async_id})
            return
        click.echo(f"batch {async_id} submitted", err=True)
        with click.progressbar(length=100, label=f"batch {async_id}", file=sys.stderr) as bar:

            def advance(progress: int) -> None:
                bar.update(progress - bar.pos)

            results = _client_call(lambda: client.wait(async_id, on_progress=advance))
    echo_json(results)
    if fail_on_error and any(is_error_body(result["response"]) for result in results["results"]):
        sys.exit(3)
