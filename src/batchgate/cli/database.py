"""`batchgate migrate` and `batchgate purge`."""

from __future__ import annotations

import click

from batchgate.cli.options import db_option
from batchgate.cli.root import main
from batchgate.cli.stores import opened_store, run_on, shown, with_store


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
