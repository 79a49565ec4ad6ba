"""`batchgate.toml`: the upstream RPC APIs of gateway mode (`--config`, or BATCHGATE_CONFIG).

    [upstreams.ivvy]                        # a name of your choosing, used in logs and errors
    base_url = "https://api.example.com"    # calls go to {base_url}/api/1.0/{namespace}?action=...
    namespaces = ["event", "contact"]       # the namespaces forwarded to this upstream
    key = "..."                             # the key batchgate signs upstream calls with (or `key_env`)
    secret_env = "IVVY_SECRET"              # ... and its secret, read from this variable (or `secret`)
    timeout_s = 30                          # one attempt, connecting to the last byte
    max_concurrency = 10                    # calls in flight to this upstream
    rate_per_s = 0                          # calls started per second; 0 means no limit
    retry_delays_s = [0.5, 2, 5]            # before each retry of a connection failure, timeout, 429, 503
    retry_after_cap_s = 30                  # the longest Retry-After honoured
    read_only = ["event.getEvent"]          # actions that change nothing: a repeated signed call is
                                            # forwarded again (any other runs once per signed request)

The file is read once, at start-up; `load_config` refuses anything it does not understand
(unknown keys, wrong types, a namespace served twice) with a message naming the place.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
from yarl import URL

from batchgate.actions.registry import RESERVED_NAMESPACE, App
from batchgate.actions.schema import split_path
from batchgate.actions.upstream import DEFAULT_RETRY, Upstream, UpstreamConfig
from batchgate.protocol.errors import BatchgateError
from batchgate.retry import RetryPolicy

Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
BUILT_IN_NAMESPACE = "test"  # batchgate's own test namespace stays available
Name = Annotated[str, msgspec.Meta(min_length=1)]


class ConfigError(BatchgateError, ValueError):
    """The configuration file is not valid."""


class _UpstreamSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One `[upstreams.NAME]` table, as written."""

    base_url: Name
    namespaces: Annotated[list[Name], msgspec.Meta(min_length=1)]
    key: str | None = None
    key_env: str | None = None
    secret: str | None = None
    secret_env: str | None = None
    timeout_s: Positive = 30.0
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 10
    rate_per_s: NonNegative = 0.0
    retry_delays_s: tuple[NonNegative, ...] = DEFAULT_RETRY.schedule
    retry_after_cap_s: NonNegative = DEFAULT_RETRY.retry_after_cap_s
    read_only: list[Name] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class Config:
    """Everything `batchgate.toml` configures."""

    upstreams: tuple[UpstreamConfig, ...] = ()


def load_config(path: Path, *, environ: Mapping[str, str] = os.environ) -> Config:
    """The configuration in `path`; ConfigError says what is wrong and where."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return parse_config(data, environ=environ)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse_config(data: dict[str, Any], *, environ: Mapping[str, str] = os.environ) -> Config:
    """The configuration in a decoded TOML document."""
    unknown = sorted(set(data) - {"upstreams"})
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} (the file has [upstreams.NAME] tables only)")
    tables = data.get("upstreams", {})
    if not isinstance(tables, dict):
        raise ConfigError("'upstreams' must be a table of [upstreams.NAME] tables")
    upstreams = tuple(_upstream(name, table, environ) for name, table in tables.items())
    _check_namespaces(upstreams)
    return Config(upstreams)


def _upstream(name: str, table: Any, environ: Mapping[str, str]) -> UpstreamConfig:
    try:
        section = msgspec.convert(table, type=_UpstreamSection)
    except msgspec.ValidationError as exc:
        raise ConfigError(_located(f"upstreams.{name}", str(exc))) from None
    return UpstreamConfig(
        name=name,
        base_url=_base_url(name, section.base_url),
        namespaces=tuple(section.namespaces),
        key=_given(name, "key", section.key, section.key_env, environ),
        secret=_given(name, "secret", section.secret, section.secret_env, environ),
        timeout_s=section.timeout_s,
        max_concurrency=section.max_concurrency,
        rate_per_s=section.rate_per_s,
        retry=RetryPolicy(section.retry_delays_s, section.retry_after_cap_s),
        read_only=_read_only(name, section.read_only, section.namespaces),
    )


def _read_only(name: str, actions: list[str], namespaces: list[str]) -> tuple[str, ...]:
    """`namespace.action` names, each in one of the upstream's namespaces."""
    for qualified in actions:
        namespace, dot, action = qualified.partition(".")
        if not dot or not action or namespace not in namespaces:
            raise ConfigError(
                f"upstreams.{name}.read_only: {qualified!r} is not namespace.action in one of {namespaces}"
            )
    return tuple(actions)


def _located(prefix: str, message: str) -> str:
    """msgspec's "Expected `float` - at `$.timeout_s`" as "upstreams.x.timeout_s: Expected `float`"."""
    text, path = split_path(message)
    return f"{prefix}{path}: {text}"


def _base_url(name: str, text: str) -> str:
    try:
        url = URL(text)
    except ValueError as exc:
        raise ConfigError(f"upstreams.{name}.base_url: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"upstreams.{name}.base_url must be an absolute http or https URL, not {text!r}")
    if url.query_string or url.fragment or url.user is not None:
        raise ConfigError(f"upstreams.{name}.base_url may not have a query, a fragment or credentials")
    return text


def _given(name: str, field: str, value: str | None, env: str | None, environ: Mapping[str, str]) -> str:
    """`key` or `secret` itself, or read from the variable `key_env` or `secret_env` names."""
    if (value is None) == (env is None):
        raise ConfigError(f"upstreams.{name} needs exactly one of '{field}' and '{field}_env'")
    if value is not None:
        if not value:
            raise ConfigError(f"upstreams.{name}.{field} is empty")
        return value
    found = environ.get(env or "", "")
    if not found:
        raise ConfigError(f"upstreams.{name}.{field}_env: the variable {env} is not set")
    return found


def _check_namespaces(upstreams: tuple[UpstreamConfig, ...]) -> None:
    owner: dict[str, str] = {}
    for upstream in upstreams:
        for namespace in upstream.namespaces:
            if namespace in (RESERVED_NAMESPACE, BUILT_IN_NAMESPACE):
                raise ConfigError(
                    f"upstreams.{upstream.name}: the {namespace!r} namespace is batchgate's own"
                )
            if namespace in owner:
                raise ConfigError(
                    f"namespace {namespace!r} is in both upstreams.{owner[namespace]} and "
                    f"upstreams.{upstream.name}"
                )
            owner[namespace] = upstream.name


def build_app(config: Config) -> App:
    """An app that forwards each configured namespace, opening its upstream's session at start-up."""
    app = App()
    for upstream_config in config.upstreams:
        upstream = Upstream(upstream_config)
        for namespace in upstream_config.namespaces:
            read_only = [
                q.partition(".")[2] for q in upstream_config.read_only if q.startswith(namespace + ".")
            ]
            app.mount(namespace, upstream.forward, read_only=read_only, busy=upstream.saturated)
        app.on_startup.append(upstream.open)
        app.on_shutdown.append(upstream.close)
    return app
