"""`batchgate batches` and `batchgate deliveries`: the operator's view from the shell, on `--db`.

What the console shows and does, with the same use cases (`AdminService`) and the same audit log
(actor "cli:<user>"). A change made here is taken up by the workers at their next look (at once on
PostgreSQL, which notifies them; within --poll-interval on SQLite).
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from batchgate.admin import shapes
from batchgate.admin.service import AdminError, AdminService
from batchgate.cli.options import db_option, server_key_option
from batchgate.cli.root import main
from batchgate.cli.stores import echo_json, with_store
from batchgate.models import Batch, BatchStatus, DeliveryView
from batchgate.store import Store
from batchgate.store.base import Change

T = TypeVar("T")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _admin(db: str, server_key: str, use: Callable[[AdminService], Coroutine[Any, Any, T]]) -> T:
    """Runs `use` on the use cases over the store; what an operator cannot do is one clear line."""

    async def run(store: Store) -> T:
        try:
            return await use(AdminService(store))
        except AdminError as exc:
            raise click.ClickException(str(exc)) from exc

    return with_store(db, run, server_key=server_key)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _batch_row(batch: Batch) -> str:
    counts = f"{batch.succeeded_count}/{batch.failed_count}/{batch.cancelled_count}/{batch.pending_count}"
    return f"{batch.id}  {batch.status.value:<9}  {counts:<13}  {_when(batch.created_at)}  {batch.account}"


@main.group()
def batches() -> None:
    """Every account's batches: list, show, and cancel, restart or repost one."""


@batches.command("list")
@click.option("--account", help="Only this account's batches.")
@click.option("--status", type=click.Choice([status.value for status in BatchStatus]), help="Only these.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@db_option
@server_key_option
@json_option
def batches_list(
    account: str | None, status: str | None, limit: int, db: str, server_key: str, as_json: bool
) -> None:
    """Lists batches, newest first: id, status, succeeded/failed/cancelled/pending, created, account."""
    found = _admin(
        db,
        server_key,
        lambda admin: admin.batches(
            account=account, status=BatchStatus(status) if status else None, limit=limit
        ),
    )
    if as_json:
        echo_json([shapes.batch_summary(batch) for batch in found])
        return
    for batch in found:
        click.echo(_batch_row(batch))


@batches.command("show")
@click.argument("async_id")
@db_option
@server_key_option
@json_option
def batches_show(async_id: str, db: str, server_key: str, as_json: bool) -> None:
    """Shows one batch: its status, every job, every callback delivery and attempt."""
    detail = _admin(db, server_key, lambda admin: admin.batch(async_id))
    shown = shapes.batch_detail(detail)  # the admin API's shape
    if as_json:
        echo_json(shown)
        return
    click.echo(_batch_row(detail.batch))
    for job in shown["jobs"]:
        click.echo(f"  job {job['index']:>3}  {job['status']:<9}  {job['namespace']}.{job['action']}"
                   f"  {job['durationMs'] or 0:.1f} ms")  # fmt: skip
    for delivery in shown["deliveries"]:
        click.echo(f"  callback {delivery['id']}  {delivery['status']}  {delivery['attempts']} attempts"
                   f"  {delivery['url']}")  # fmt: skip
        for attempt in delivery["tries"]:
            click.echo(f"    attempt {attempt['number']} at {attempt['at']}: "
                       f"{attempt['httpStatus'] or attempt['error']}")  # fmt: skip


def _change(verb: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command that changes one batch: its argument and the store's options."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = server_key_option(db_option(click.argument("async_id")(fn)))
        return batches.command(verb)(fn)

    return decorate


@_change("cancel")
def batches_cancel(async_id: str, db: str, server_key: str) -> None:
    """Cancels a batch: jobs not yet run never run; a running one stops where it can."""
    change = _admin(db, server_key, lambda admin: admin.cancel(async_id, actor=_actor()))
    click.echo(
        f"cancelled {async_id}" if change is Change.DONE else f"asked {async_id}'s worker to cancel it"
    )


@batches.command("restart")
@click.argument("async_id")
@click.option("--failed-only", is_flag=True, help="Run again only the jobs that failed or never ran.")
@db_option
@server_key_option
def batches_restart(async_id: str, failed_only: bool, db: str, server_key: str) -> None:
    """Runs a batch again (a new run), and calls back when it is done."""
    _admin(db, server_key, lambda admin: admin.restart(async_id, failed_only=failed_only, actor=_actor()))
    click.echo(f"restarted {async_id}" + (" (failed jobs only)" if failed_only else ""))


@_change("repost")
def batches_repost(async_id: str, db: str, server_key: str) -> None:
    """Sends a finished batch's callback again (a new webhook-id)."""
    _admin(db, server_key, lambda admin: admin.repost(async_id, actor=_actor()))
    click.echo(f"reposted {async_id}")


@main.group()
def deliveries() -> None:
    """Callback deliveries: list them, and send the failed ones again."""


@deliveries.command("list")
@click.option("--failed", is_flag=True, help="Only those whose tries ran out or that were refused (410).")
@click.option("--batch", "async_id", help="Every delivery of this batch.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@db_option
@server_key_option
@json_option
def deliveries_list(
    failed: bool, async_id: str | None, limit: int, db: str, server_key: str, as_json: bool
) -> None:
    """Lists deliveries: the failed ones (the dead letters), or a batch's."""
    if not failed and async_id is None:
        raise click.UsageError("say which: --failed, or --batch ASYNC_ID")

    async def found(admin: AdminService) -> list[DeliveryView]:
        if async_id is not None:
            return (await admin.batch(async_id)).deliveries
        return await admin.failed_deliveries(limit=limit)

    shown = [shapes.delivery(d) for d in _admin(db, server_key, found)]
    if as_json:
        echo_json(shown)
        return
    for d in shown:
        click.echo(f"{d['id']}  {d['status']:<10}  {d['attempts']:>2} attempts  {d['asyncId']}  {d['url']}")


@deliveries.command("redrive")
@click.argument("webhook_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Every failed delivery.")
@db_option
@server_key_option
def deliveries_redrive(webhook_ids: tuple[str, ...], all_failed: bool, db: str, server_key: str) -> None:
    """Sends failed deliveries again, with the same webhook-id: those named, or --all-failed."""
    if all_failed == bool(webhook_ids):
        raise click.UsageError("name the deliveries to send again, or give --all-failed")

    async def redrive(admin: AdminService) -> int:
        if all_failed:
            return await admin.redeliver_all(actor=_actor())
        for webhook_id in webhook_ids:
            await admin.redeliver(webhook_id, actor=_actor())
        return len(webhook_ids)

    click.echo(f"sending {_admin(db, server_key, redrive)} deliveries again")
