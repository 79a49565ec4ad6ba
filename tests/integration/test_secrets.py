"""Secrets: callbacks verified by the official Standard Webhooks library, webhook secret rotation with
an overlap, and keys' secrets encrypted at rest with the operator's server key."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from batchgate.settings import Settings
from batchgate.store import open_store
from batchgate.vault import Vault, VaultError, new_server_key

from support import live_server, receiver


async def test_the_official_standard_webhooks_library_verifies_our_callbacks(
    each_store_settings: Settings,
) -> None:
    async with receiver() as recv, live_server(each_store_settings) as server, server.client() as api:
        async_id = await api.run([{"namespace": "test", "action": "ping"}], callback_url=recv.url + "/hook")
        [call] = await recv.wait_for("/hook", 1)
    assert server.key.webhook_secret is not None and server.key.webhook_secret.startswith("whsec_")
    verified = Webhook(server.key.webhook_secret).verify(call.body, call.headers)
    assert verified["asyncId"] == async_id
    with pytest.raises(WebhookVerificationError):
        Webhook(server.other_key.webhook_secret or "").verify(call.body, call.headers)


async def test_a_rotated_secret_overlaps_with_the_one_before_then_replaces_it(
    each_store_settings: Settings,
) -> None:
    async with receiver() as recv, live_server(each_store_settings) as server, server.client() as api:
        store = server.service.store
        old = server.key.webhook_secret or ""
        rotated = await store.rotate_webhook_secret(server.key.key, overlap_s=3600)
        assert rotated is not None and rotated.webhook_secret not in (None, old)
        await api.run([{"namespace": "test", "action": "ping"}], callback_url=recv.url + "/overlap")
        [during] = await recv.wait_for("/overlap", 1)
        # the overlap over: only the new secret signs
        assert await store.rotate_webhook_secret(server.key.key, overlap_s=0) is not None
        newest = (await store.get_key(server.key.key)).webhook_secret  # type: ignore[union-attr]
        await api.run([{"namespace": "test", "action": "echo"}], callback_url=recv.url + "/after")
        [after] = await recv.wait_for("/after", 1)
    assert len(during.headers["webhook-signature"].split()) == 2
    for secret in (old, rotated.webhook_secret or ""):
        Webhook(secret).verify(during.body, during.headers)
    assert len(after.headers["webhook-signature"].split()) == 1
    Webhook(newest or "").verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(rotated.webhook_secret or "").verify(after.body, after.headers)


async def test_with_a_server_key_secrets_are_stored_encrypted_and_read_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bg.db'}"
    first, second = new_server_key(), new_server_key()
    store = open_store(url, result_ttl_s=60, vault=Vault(first))
    await store.open()
    created = await store.create_key("acme")
    await store.close()
    with sqlite3.connect(tmp_path / "bg.db") as conn:
        secret, webhook_secret = conn.execute("SELECT secret, webhook_secret FROM api_keys").fetchone()
    assert secret.startswith("fernet:") and created.secret not in secret
    assert webhook_secret.startswith("fernet:") and (created.webhook_secret or "") not in webhook_secret

    # Rotation: the new key first, the old one after; reseal; then the old key can go.
    store = open_store(url, result_ttl_s=60, vault=Vault(f"{second},{first}"))
    await store.open()
    assert await store.get_key(created.key) == created
    assert await store.reseal_secrets() == 1
    await store.close()
    store = open_store(url, result_ttl_s=60, vault=Vault(second))
    await store.open()
    try:
        assert await store.get_key(created.key) == created
    finally:
        await store.close()

    store = open_store(url, result_ttl_s=60, vault=Vault(first))  # the key that was dropped
    await store.open()
    try:
        with pytest.raises(VaultError, match="does not decrypt"):
            await store.get_key(created.key)
    finally:
        await store.close()


async def test_a_server_with_a_server_key_serves_and_signs_as_usual(settings: Settings) -> None:
    sealed = dataclasses.replace(settings, server_key=new_server_key())
    async with receiver() as recv, live_server(sealed) as server, server.client() as api:
        await api.run([{"namespace": "test", "action": "ping"}], callback_url=recv.url + "/hook")
        [call] = await recv.wait_for("/hook", 1)
    Webhook(server.key.webhook_secret or "").verify(call.body, call.headers)
