"""Opening the store for a command, and what a command prints: a database that cannot be used is
one clear line."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from yarl import URL

from batchgate.cli.options import DEFAULTS
from batchgate.store import Store, StoreError, open_store
from batchgate.store.sqlite import path_of
from batchgate.vault import Vault, VaultError

T = TypeVar("T")


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
