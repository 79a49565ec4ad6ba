"""The walkthrough of docs/actions.md, as a newcomer runs it: the installed CLI serving the example
application, contacts and events created with `batchgate call`, then the seed's example batch sent
with `batchgate submit --wait`, its results printed and its callback received."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchgate import webhooks

from processes import BATCHGATE, ServeProcess, create_key
from support import receiver

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "ivvy_events" / "seed-batch.json"
# SPEC.md §4's example request, the one the seed page shows (without the page's trailing comma).
SEED_JOBS = [
    {"namespace": "event", "action": "inviteContacts", "params": {"event": 1, "contacts": [1, 2, 3]}},
    {"namespace": "event", "action": "inviteContacts", "params": {"event": 2, "contacts": [1, 2, 4]}},
]


@pytest.fixture
def example(tmp_path: Path, sqlite_url: str) -> Iterator[dict[str, str]]:
    """`batchgate serve --app examples.ivvy_events.app:app`; the environment its client uses."""
    key, secret, webhook_secret = create_key(sqlite_url)
    env = {"BATCHGATE_APP": "examples.ivvy_events.app:app", "IVVY_EVENTS_DB": str(tmp_path / "ivvy.db")}
    # The docs run serve from the repository root; from anywhere else, --app-dir points there.
    process = ServeProcess(sqlite_url, tmp_path / "serve.log", env={**env, "BATCHGATE_APP_DIR": str(ROOT)})
    process.start()
    try:
        yield {
            **os.environ,
            "BATCHGATE_URL": process.url,
            "BATCHGATE_KEY": key,
            "BATCHGATE_SECRET": secret,
            "BATCHGATE_WEBHOOK_SECRET": webhook_secret,
        }
    finally:
        process.stop()


async def cli(env: dict[str, str], *args: str) -> tuple[Any, str]:
    """Runs `batchgate ARGS` without blocking the test's event loop; (stdout as JSON, stderr)."""
    process = await asyncio.create_subprocess_exec(
        BATCHGATE, *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout), stderr.decode()


async def test_the_seed_batch_completes_against_the_example_app_and_calls_back(
    example: dict[str, str],
) -> None:
    ping, _ = await cli(example, "call", "test", "ping")  # the built-in test namespace is still there
    for first, last in [("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")]:
        email = f"{first.lower()}@example.com"
        await cli(
            example,
            "call",
            "contact",
            "addOrUpdateContact",
            json.dumps({"firstName": first, "lastName": last, "email": email}),
        )
    for title in ("Launch", "Retrospective"):
        event = {"eventType": 12, "title": title, "timezone": "Australia/Sydney"}
        await cli(example, "call", "event", "addOrUpdateEvent", json.dumps(event))
    async with receiver() as recv:
        results, progress = await cli(
            example, "submit", str(SEED), "--callback", recv.url + "/hook", "--wait"
        )
        [callback] = await recv.wait_for("/hook", 1, timeout_s=30)
    assert "ack" in ping
    assert json.loads(SEED.read_text())["jobs"] == SEED_JOBS
    assert f"batch {results['asyncId']}" in progress
    assert [r["request"] for r in results["results"]] == [job["params"] for job in SEED_JOBS]
    first, second = (r["response"]["results"] for r in results["results"])
    assert [(r["contact"], r["status"]) for r in first] == [(1, True), (2, True), (3, True)]
    assert [(r["contact"], r["status"]) for r in second] == [(1, True), (2, True), (4, False)]  # no contact 4
    assert set(first[0]) == {"contact", "status", "inviteLinkYes", "inviteLinkNo"}
    assert callback.json == results
    webhooks.verify(example["BATCHGATE_WEBHOOK_SECRET"], callback.headers, callback.body)
