"""`batchgate keys`: API keys, their webhook secrets, and the server key that seals them."""

from __future__ import annotations

import time

import click
import orjson

from batchgate.cli.options import db_option, server_key_option
from batchgate.cli.root import main
from batchgate.cli.stores import with_store
from batchgate.models import ApiKey
from batchgate.vault import new_server_key


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
