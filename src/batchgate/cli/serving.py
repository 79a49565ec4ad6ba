"""`batchgate serve` and `batchgate worker`: the long-running processes."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchgate.actions import App
from batchgate.cli.options import (
    ADMIN_OPTIONS,
    API_OPTIONS,
    APP_OPTIONS,
    COMMON_OPTIONS,
    WORKER_OPTIONS,
    env_option,
    settings_from,
)
from batchgate.cli.root import main
from batchgate.cli.stores import shown
from batchgate.config import ConfigError, load_config
from batchgate.config import build_app as app_from_config
from batchgate.settings import Settings
from batchgate.store import StoreError

if TYPE_CHECKING:
    from batchgate.service import Service


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
@env_option("--host", default="127.0.0.1", help="Address the API listens on.")
@env_option("--port", type=int, default=8080, help="Port the API listens on.")
@env_option(
    "--admin-port",
    type=int,
    default=None,
    help="Serves the console, the admin API and /metrics on this port.",
)
@env_option(
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
@env_option(
    "--metrics-port", type=int, default=None, help="Serves /metrics (and the admin API) on this port."
)
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
