"""The console in a real browser (Chromium) against a real server on SQLite: logging in, live
progress, and every change driven by clicking, confirmed in the dialog, and checked in the store
and on the wire. The tour saves a screenshot of each page to docs/console/."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from admin_support import TOKEN, AdminServer, admin_server, failing_jobs, finished, jobs, sleeps
from batchgate.client import ApiError, AsyncClient
from batchgate.settings import Settings

from support import eventually, receiver

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture says so, and fails in CI
    expect = None

pytestmark = pytest.mark.timeout(180)
Shot = Callable[..., Awaitable[None]]
LogIn = Callable[..., Awaitable[None]]


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[AdminServer]:
    async with admin_server(settings) as running:
        yield running


async def confirm(page: Any, button: Any) -> None:
    """Clicks a change's button and accepts the confirm dialog it opens."""
    await button.click()
    dialog = page.locator("dialog.confirm")
    await expect(dialog).to_be_visible()
    await dialog.locator("[data-confirm-yes]").click()


async def test_logging_in_refuses_a_wrong_token_then_opens_the_page_asked_for(
    server: AdminServer, page: Any, screenshot: Shot
) -> None:
    await page.goto(server.url + "/system")
    assert page.url.startswith(server.url + "/login?next=")
    await screenshot(page, "login")
    await page.fill("input[name=token]", "not the token")
    await page.click("button:has-text('Log in')")
    await expect(page.locator(".flash.error")).to_have_text("That is not the admin token.")
    await page.fill("input[name=token]", TOKEN)
    await page.fill("input[name=name]", "dana")
    await page.click("button:has-text('Log in')")
    await page.wait_for_url(server.url + "/system")
    await expect(page.locator(".who .actor")).to_have_text("console:dana")
    (cookie,) = await page.context.cookies()
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
    assert cookie["expires"] > time.time() + 3600
    await page.click("button:has-text('Log out')")
    await page.wait_for_url(server.url + "/login")
    await page.goto(server.url + "/keys")
    assert "/login" in page.url


async def test_the_batches_page_follows_progress_without_reloading(
    server: AdminServer, page: Any, log_in: LogIn
) -> None:
    await log_in(page, server.url, TOKEN)
    await page.evaluate("window.sameDocument = true")
    async with server.client() as client:
        batch_id = await client.run(sleeps(4, 0.5))
    row = page.locator(f"tr:has(a[href='/batches/{batch_id}'])")
    await expect(row).to_contain_text("running", timeout=10_000)  # it appeared by itself
    await expect(row).to_contain_text("4/4", timeout=15_000)
    await expect(row.locator(".badge")).to_have_text("complete")
    assert await page.evaluate("window.sameDocument") is True  # never reloaded
    await expect(page.locator("[data-live-state]")).to_contain_text("live")

    await page.fill("input[name=q]", batch_id)
    await page.click("button:has-text('Open')")
    await page.wait_for_url(server.url + f"/batches/{batch_id}")
    await page.goto(server.url + "/batches")
    await page.select_option("select[name=status]", "running")
    await page.click("button:has-text('Filter')")
    await page.wait_for_url("**/batches?*status=running*")
    await expect(page.locator(".empty")).to_contain_text("No batches match these filters")


async def test_cancelling_a_running_batch_asks_first_then_stops_it(
    server: AdminServer, page: Any, log_in: LogIn, screenshot: Shot
) -> None:
    async with server.client() as client:
        batch_id = await client.run(sleeps(4, 5))
    await eventually(lambda: server.status(batch_id), until=lambda s: s.value == "running")
    await log_in(page, server.url, TOKEN, "erin")
    await page.goto(server.url + f"/batches/{batch_id}")
    cancel = page.locator(".actions button", has_text="Cancel")
    await cancel.click()
    dialog = page.locator("dialog.confirm")
    await expect(dialog.locator("h2")).to_have_text("Cancel this batch?")
    await expect(dialog).to_contain_text(f"Jobs of batch {batch_id} that have not run will not run")
    await dialog.get_by_role("button", name="Go back").click()
    await expect(dialog).to_be_hidden()
    assert (await server.status(batch_id)).value == "running"

    await cancel.click()
    await screenshot(page, "confirm", full_page=False)
    await dialog.locator("[data-confirm-yes]").click()
    await expect(page.locator(".flash.ok")).to_contain_text("Cancel")
    await expect(page.locator("h1 .badge")).to_have_text("cancelled", timeout=15_000)
    assert (await server.status(batch_id)).value == "cancelled"
    (entry,) = await server.service.admin.audit_log()
    assert (entry.actor, entry.action, entry.target) == ("console:erin", "cancel", batch_id)


async def test_restarting_failed_jobs_restarting_and_redelivering_the_callback(
    server: AdminServer, page: Any, log_in: LogIn
) -> None:
    async with receiver() as recv, server.client() as client:
        batch_id = await client.run(failing_jobs(2, 1), callback_url=recv.url + "/hook")
        await recv.wait_for("/hook", 1)
        await log_in(page, server.url, TOKEN)
        await page.goto(server.url + f"/batches/{batch_id}")

        await confirm(page, page.locator(".actions button", has_text="Restart failed jobs"))
        await expect(page.locator(".flash.ok")).to_have_text("The failed jobs run again.")
        await recv.wait_for("/hook", 2)
        await confirm(page, page.locator(".actions button", has_text="Restart").last)
        await expect(page.locator(".flash.ok")).to_have_text("Batch restarted: every job runs again.")
        await recv.wait_for("/hook", 3)
        await finished(server, batch_id)
        await page.reload()
        await expect(page.locator(".facts").first).to_contain_text("(restarted 2")
        await confirm(page, page.locator(".actions button", has_text="Redeliver callback"))
        await expect(page.locator(".flash.ok")).to_have_text("The callback is queued again.")
        await recv.wait_for("/hook", 4)
    actions = [entry.action for entry in await server.service.admin.audit_log()]
    assert actions == ["repost", "restart", "restart failed jobs"]


async def test_failed_deliveries_are_redelivered_one_by_one_and_all_at_once(
    server: AdminServer, page: Any, log_in: LogIn
) -> None:
    async with receiver() as recv, server.client() as client:
        recv.plan["/one"] = [500] * 4
        recv.plan["/two"] = [410]
        await client.run(jobs(1, to="one"), callback_url=recv.url + "/one")
        await client.run(jobs(1, to="two"), callback_url=recv.url + "/two")
        failed = await eventually(server.service.admin.failed_deliveries, until=lambda found: len(found) == 2)
        one = next(d for d in failed if d.url.endswith("/one"))
        await log_in(page, server.url, TOKEN)
        await page.click("nav >> text=Failed deliveries")
        await expect(page.locator("table.list tbody tr")).to_have_count(2)
        await expect(page.locator(f"#delivery-{one.id} .badge")).to_have_text("failed")
        await confirm(page, page.locator(f"#delivery-{one.id} button", has_text="Redeliver"))
        await expect(page.locator(".flash.ok")).to_have_text(f"Delivery {one.id} is sent again.")
        calls = await recv.wait_for("/one", 5)
        assert (calls[-1].status, calls[-1].headers["webhook-id"]) == (200, one.id)

        await confirm(page, page.get_by_role("button", name="Redeliver all"))
        await expect(page.locator(".flash.ok")).to_have_text("1 failed delivery is sent again.")
        assert [call.status for call in await recv.wait_for("/two", 2)] == [410, 200]
        await page.goto(server.url + "/deliveries")
        await expect(page.locator(".empty")).to_contain_text("No failed deliveries")


async def test_keys_are_created_rotated_and_revoked_in_the_console(
    server: AdminServer, page: Any, log_in: LogIn
) -> None:
    await log_in(page, server.url, TOKEN)
    await page.goto(server.url + "/keys")
    await page.fill("input[name=account]", "initech")
    await page.click("button:has-text('Create key')")
    panel = page.locator(".secret-card")
    await expect(panel).to_contain_text("Key created for initech")
    key = await panel.locator("[data-secret=key]").inner_text()
    secret = await panel.locator("[data-secret=secret]").inner_text()
    webhook = await panel.locator("[data-secret=webhook]").inner_text()
    async with AsyncClient(server.api_url, key, secret) as client:
        assert (await client.call("test", "ping"))["ack"]

    row = page.locator(f"#key-{key}")
    await row.locator("select[name=overlap]").select_option("3600")
    await confirm(page, row.get_by_role("button", name="Rotate webhook secret"))
    await expect(page.locator(".secret-card")).to_contain_text("New webhook secret")
    rotated = await page.locator(".secret-card [data-secret=webhook]").inner_text()
    assert rotated.startswith("whsec_") and rotated != webhook
    stored = {k.key: k for k in await server.service.admin.keys()}[key]
    assert (stored.webhook_secret, stored.webhook_secret_previous) == (rotated, webhook)
    await expect(page.locator(f"#key-{key}")).to_contain_text("rotating")

    await confirm(page, page.locator(f"#key-{key}").get_by_role("button", name="Revoke"))
    await expect(page.locator(".flash.ok")).to_have_text(f"Key {key} is revoked.")
    await expect(page.locator(f"#key-{key} .badge")).to_have_text("revoked")
    await page.wait_for_timeout(100)
    async with AsyncClient(server.api_url, key, secret) as client:

        async def refused() -> bool:
            try:
                await client.call("test", "ping")
            except ApiError as exc:
                return exc.error_code == 463
            return False

        await eventually(refused, timeout_s=10)  # once the API's key cache has heard of it


async def test_an_open_console_without_a_token_still_changes_through_its_csrf_token(
    settings: Settings, page: Any
) -> None:
    async with admin_server(settings, token=None) as server:
        async with server.client() as client:
            batch_id = await client.run(sleeps(3, 5))
        await page.goto(server.url + f"/batches/{batch_id}")
        await expect(page.locator(".who")).to_contain_text("open · no token")
        await confirm(page, page.locator(".actions button", has_text="Cancel"))
        await expect(page.locator(".flash.ok")).to_contain_text("Cancel")
        await finished(server, batch_id, timeout_s=10)


def spread_over_the_last_half_hour(db: str, batch_ids: list[str]) -> None:
    """Moves finished batches back in time, a few minutes each, so the chart has a history to draw
    (a test can only finish batches now)."""
    with sqlite3.connect(db.removeprefix("sqlite:///"), timeout=10) as conn:
        for n, batch_id in enumerate(batch_ids):
            back = 60 * (27 - 2 * n)
            conn.execute(
                "UPDATE batches SET created_at = created_at - ?, started_at = started_at - ?,"
                " completed_at = completed_at - ?, expires_at = expires_at - ? WHERE id = ?",
                (back, back, back, back, batch_id),
            )


async def test_a_tour_of_every_page(settings: Settings, page: Any, log_in: LogIn, screenshot: Shot) -> None:
    """Batches in every state, a workflow with a failed job and a callback retried, a failed delivery,
    keys; each page looked at and saved to docs/console/."""
    async with admin_server(dataclasses.replace(settings, max_batches=2)) as server, receiver() as recv:
        recv.plan["/orders"] = [503]
        recv.plan["/gone"] = [500] * 4
        guests = [{"id": n, "email": f"guest{n}@example.com"} for n in range(12)]
        workflow = [
            {
                "id": "invite",
                "namespace": "test",
                "action": "echo",
                "params": {"event": 42, "contacts": guests},
            },
            {
                "id": "notify",
                "namespace": "test",
                "action": "echo",
                "params": {"sent": 12},
                "dependsOn": ["invite"],
            },
            {"namespace": "test", "action": "sleep", "params": {"seconds": "soon"}},
            {"namespace": "test", "action": "ping"},
        ]
        async with server.client() as acme, server.client(server.other_key) as globex:
            history = [await (acme, globex)[n % 2].run(jobs(20 + 37 * (n % 5), hour=n)) for n in range(12)]
            flow = await acme.run(workflow, callback_url=recv.url + "/orders")
            await globex.run(jobs(3, lost=True), callback_url=recv.url + "/gone")
            for batch_id in history:
                await finished(server, batch_id)
            spread_over_the_last_half_hour(settings.db, history)
            await recv.wait_for("/orders", 2)
            await eventually(server.service.admin.failed_deliveries, until=bool)
            cancelled = await globex.run(sleeps(4, 30))
            await globex.cancel(cancelled)
            await finished(server, cancelled)
            slow = [await acme.run(sleeps(8, 0.8), concurrency=1), await globex.run(sleeps(6, 1.5))]
            await acme.run(sleeps(2, 1))  # waits: two batches run at once here
            await eventually(lambda: server.status(slow[1]), until=lambda s: s.value == "running")

        await log_in(page, server.url, TOKEN, "ops")
        await page.wait_for_timeout(2500)  # a live refresh or two
        await screenshot(page, "batches")
        await page.goto(server.url + f"/batches/{flow}")
        await page.locator("#res-0 summary").click()
        await screenshot(page, "batch")
        await page.goto(server.url + "/deliveries")
        await screenshot(page, "deliveries")
        await page.goto(server.url + "/keys")
        await page.fill("input[name=account]", "initech")
        await page.click("button:has-text('Create key')")
        await expect(page.locator(".secret-card")).to_be_visible()
        await screenshot(page, "keys")
        await page.goto(server.url + f"/batches/{flow}")
        await confirm(page, page.locator(".actions button", has_text="Redeliver callback"))
        # The change's page first: a navigation started before it has loaded aborts the form's.
        await expect(page.locator(".flash.ok")).to_have_text("The callback is queued again.")
        await page.goto(server.url + "/audit")
        await expect(page.locator("table.list")).to_contain_text("console:ops")
        await screenshot(page, "audit")
