"""The `batchgate` command: serve, keys, call, submit, migrate, purge.

Every option can also be set in the environment as `BATCHGATE_<OPTION>` (e.g. `BATCHGATE_DB`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import click
import orjson

from batchgate.actions import Gateway
from batchgate.client import ApiError, Client
from batchgate.config import ConfigError, load_config
from batchgate.config import build_gateway as gateway_from_config
from batchgate.settings import Settings, parse_schedule
from batchgate.store import Store, open_store

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = Settings()


def _option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that is also read from BATCHGATE_<NAME>."""
    env = "BATCHGATE_" + names[0].split("/")[0].lstrip("-").replace("-", "_").upper()
    return click.option(*names, envvar=env, show_envvar=True, show_default=True, **kwargs)


def db_option(fn: F) -> F:
    return _option("--db", default=DEFAULTS.db, help="Database URL (sqlite:///PATH or postgresql://...).")(fn)


def _schedule(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return parse_schedule(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def settings_options(fn: F) -> F:
    options = [
        db_option,
        _option("--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes, help="Largest request body."),
        _option(
            "--result-ttl",
            type=float,
            default=DEFAULTS.result_ttl_s,
            help="Seconds results stay readable after a batch completes.",
        ),
        _option(
            "--sleep-cap", type=float, default=DEFAULTS.sleep_cap_s, help="Longest test.sleep, in seconds."
        ),
        _option(
            "--key-cache",
            type=float,
            default=DEFAULTS.key_cache_s,
            help="Seconds an API key is remembered; a revocation takes up to this long to apply.",
        ),
        _option(
            "--max-batches", type=int, default=DEFAULTS.max_batches, help="Batches one worker runs at once."
        ),
        _option(
            "--lease",
            type=float,
            default=DEFAULTS.lease_s,
            help="Seconds a worker holds a batch without renewing; a dead worker's batches resume after it.",
        ),
        _option(
            "--poll-interval",
            type=float,
            default=DEFAULTS.poll_s,
            help="Seconds between looks for work when nothing wakes the worker.",
        ),
        _option(
            "--callback-allow",
            default=DEFAULTS.callback_allow,
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
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def settings_from(options: dict[str, Any]) -> Settings:
    return Settings(
        db=options["db"],
        max_body_bytes=options["max_body_bytes"],
        result_ttl_s=options["result_ttl"],
        sleep_cap_s=options["sleep_cap"],
        key_cache_s=options["key_cache"],
        max_batches=options["max_batches"],
        lease_s=options["lease"],
        poll_s=options["poll_interval"],
        callback_allow=options["callback_allow"],
        callback_retry_schedule=options["callback_retry_schedule"],
        callback_timeout_s=options["callback_timeout"],
        callback_concurrency=options["callback_concurrency"],
    )


def with_store(db: str, use: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
    async def run() -> T:
        store = open_store(db, result_ttl_s=DEFAULTS.result_ttl_s)
        await store.open()
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@click.group()
@click.version_option(package_name="batchgate")
def main() -> None:
    """batchgate: an asynchronous batch gateway for RPC-style JSON APIs."""


def load_gateway(app: str | None, app_dir: str = ".") -> Gateway | None:
    """The user's application object, from `package.module:attribute`."""
    if not app:
        return None
    # As with uvicorn's --app-dir: the app is found from the working directory unless told otherwise.
    folder = str(Path(app_dir).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name, _, attribute = app.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute or "gateway")
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {app!r}: {exc}", param_hint="--app") from exc
    if not isinstance(found, Gateway):
        raise click.BadParameter(
            f"{app!r} is a {type(found).__name__}, not a batchgate.Gateway", param_hint="--app"
        )
    return found


def load_upstreams(config: Path | None) -> Gateway | None:
    """Gateway mode: the namespaces `batchgate.toml` forwards to upstream APIs."""
    if config is None:
        return None
    try:
        return gateway_from_config(load_config(config))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc


def build_gateway(app: str | None, app_dir: str, config: Path | None) -> Gateway | None:
    """The --app actions and the --config upstreams, served together."""
    parts = [part for part in (load_gateway(app, app_dir), load_upstreams(config)) if part is not None]
    if len(parts) < 2:
        return parts[0] if parts else None
    merged = Gateway()
    try:
        for part in parts:
            merged.include(part)
    except ValueError as exc:  # a namespace both registered by --app and forwarded by --config
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    return merged


def app_options(fn: F) -> F:
    fn = _option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))(fn)
    fn = _option(
        "--config",
        default=None,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Gateway mode: a batchgate.toml mapping namespaces to upstream APIs.",
    )(fn)
    fn = _option("--app-dir", default=".", help="The folder --app is imported from.")(fn)
    return _option("--app", default=None, help="Your actions: a Gateway object as package.module:attribute.")(
        fn
    )


def configure_logging(log_level: str) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@settings_options
@app_options
@_option("--host", default="127.0.0.1", help="Address to listen on.")
@_option("--port", type=int, default=8080, help="Port to listen on.")
@_option(
    "--worker/--no-worker",
    "run_worker",
    default=True,
    help="Also run jobs and callbacks in this process (--no-worker serves the API only).",
)
def serve(
    host: str,
    port: int,
    run_worker: bool,
    app: str | None,
    app_dir: str,
    config: Path | None,
    log_level: str,
    **options: Any,
) -> None:
    """Serves the API and, unless --no-worker, runs the worker and the callback delivery too."""
    import uvicorn

    from batchgate.server import create_app

    configure_logging(log_level)
    asgi = create_app(settings_from(options), build_gateway(app, app_dir, config), run_worker=run_worker)
    uvicorn.run(
        asgi,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,  # nothing reads the client's address: skip a middleware on every call
        lifespan="on",
        timeout_graceful_shutdown=15,
    )


@main.command()
@settings_options
@app_options
def worker(app: str | None, app_dir: str, config: Path | None, log_level: str, **options: Any) -> None:
    """Runs jobs and callback deliveries only, beside API processes that share the database."""
    from batchgate.server.app import Service

    configure_logging(log_level)
    service = Service.build(settings_from(options), build_gateway(app, app_dir, config), run_worker=True)

    async def work() -> None:
        await service.start()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()
        await service.stop()

    # uvloop, as `serve` gets from uvicorn: it comes with uvicorn[standard] wherever it builds
    try:
        import uvloop
    except ImportError:
        asyncio.run(work())
    else:
        uvloop.run(work())


@main.command()
@db_option
def migrate(db: str) -> None:
    """Creates the database or applies pending schema migrations."""

    async def nothing(store: Store) -> None:
        return None

    with_store(db, nothing)
    click.echo("database is up to date")


@main.command()
@db_option
def purge(db: str) -> None:
    """Deletes batches whose results have expired (serve also does this periodically)."""
    click.echo(f"purged {with_store(db, lambda store: store.purge())} batches")


@main.group()
def keys() -> None:
    """Manages API keys: each belongs to an account, and sees only that account's batches."""


@keys.command("create")
@click.option("--name", required=True, help="The account the key belongs to.")
@db_option
@click.option("--json", "as_json", is_flag=True, help='Print {"key": ..., "secret": ...} on one line.')
@click.option(
    "--env", "as_env", is_flag=True, help='Print shell exports: eval "$(batchgate keys create ... --env)".'
)
def keys_create(name: str, db: str, as_json: bool, as_env: bool) -> None:
    """Creates a key and prints its secret (shown only here)."""
    api_key = with_store(db, lambda store: store.create_key(name))
    if as_env:
        click.echo(f"export BATCHGATE_KEY={api_key.key} BATCHGATE_SECRET={api_key.secret}")
    elif as_json:
        click.echo(orjson.dumps({"key": api_key.key, "secret": api_key.secret, "account": api_key.account}))
    else:
        click.echo(f"key:     {api_key.key}\nsecret:  {api_key.secret}\naccount: {api_key.account}")


@keys.command("list")
@db_option
def keys_list(db: str) -> None:
    """Lists keys (without their secrets)."""
    for api_key in with_store(db, lambda store: store.list_keys()):
        state = "revoked" if api_key.revoked_at is not None else "active"
        click.echo(f"{api_key.key}  {api_key.account}  {state}")


@keys.command("revoke")
@click.argument("key")
@db_option
def keys_revoke(key: str, db: str) -> None:
    """Revokes a key: its requests are refused from now on."""
    if not with_store(db, lambda store: store.revoke_key(key)):
        raise click.ClickException(f"no active key {key}")
    click.echo(f"revoked {key}")


def client_options(fn: F) -> F:
    fn = _option("--secret", required=True, help="The key's secret.")(fn)
    fn = _option("--key", required=True, help="The API key to sign with.")(fn)
    return _option("--url", default="http://127.0.0.1:8080", help="batchgate's base URL.")(fn)


def _client_call(fn: Callable[[], T]) -> T:
    """Runs one client call: a wire error is printed as it came, and exits 1."""
    try:
        return fn()
    except ApiError as exc:
        echo_json(exc.body)
        sys.exit(1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise click.ClickException(f"could not reach batchgate: {exc or type(exc).__name__}") from exc


@main.command()
@click.argument("namespace")
@click.argument("action")
@click.argument("params", required=False)
@click.option(
    "--idempotency-key", help="Sent as the Idempotency-Key header: give the same one to retry a call safely."
)
@client_options
def call(
    namespace: str,
    action: str,
    params: str | None,
    idempotency_key: str | None,
    url: str,
    key: str,
    secret: str,
) -> None:
    """Makes one signed call and prints the answer, e.g. `batchgate call test ping`."""
    try:
        decoded = orjson.loads(params) if params else None
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"PARAMS_JSON is not JSON: {exc}") from exc
    with Client(url, key, secret) as client:
        echo_json(
            _client_call(lambda: client.call(namespace, action, decoded, idempotency_key=idempotency_key))
        )


@main.command()
@click.argument("jobs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--callback", help="URL to POST the results to when the batch completes.")
@click.option("--wait", is_flag=True, help="Show progress until the batch completes, then print the results.")
@client_options
def submit(jobs_file: Path, callback: str | None, wait: bool, url: str, key: str, secret: str) -> None:
    """Submits a batch: JOBS_FILE holds a list of jobs, or a whole run request ({"jobs": [...]})."""
    try:
        spec = orjson.loads(jobs_file.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"{jobs_file} is not JSON: {exc}", param_hint="JOBS_FILE") from exc
    jobs = spec.get("jobs", []) if isinstance(spec, dict) else spec
    callback = callback or (spec.get("callbackUrl") if isinstance(spec, dict) else None)
    with Client(url, key, secret) as client:
        async_id = _client_call(lambda: client.run(jobs, callback_url=callback))
        if not wait:
            echo_json({"asyncId": async_id})
            return
        with click.progressbar(length=100, label=f"batch {async_id}", file=sys.stderr) as bar:

            def advance(progress: int) -> None:
                bar.update(progress - bar.pos)

            results = _client_call(lambda: client.wait(async_id, on_progress=advance))
        echo_json(results)
