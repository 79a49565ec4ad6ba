"""The operator's tools on real processes: the batches and deliveries commands, /metrics moving as
batches run, JSON log lines with their facts, and /readyz telling a lost database."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchgate.client import AsyncClient

import pg
from processes import ServeProcess, batchgate, create_key
from support import eventually, free_port, receiver


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the Prometheus samples of `name` whose labels include `labels` (0 when none)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def test_the_batches_and_deliveries_commands_show_and_change_every_accounts_batches(
    tmp_path: Path, sqlite_url: str
) -> None:
    key, secret, _ = create_key(sqlite_url)
    env = {"BATCHGATE_CALLBACK_RETRY_SCHEDULE": "0.1"}  # one retry: a refused callback fails fast
    server = ServeProcess(sqlite_url, tmp_path / "serve.log", env=env).start()
    try:
        async with receiver() as recv, AsyncClient(server.url, key, secret) as api:
            recv.plan["/refuses"] = [500, 500]
            done = await api.run([{"namespace": "test", "action": "echo", "params": {"n": 1}}],
                                 callback_url=recv.url + "/refuses")  # fmt: skip
            await api.wait(done, poll_s=0.05)
            sleeping = await api.run([{"namespace": "test", "action": "sleep", "params": {"seconds": 20}}])
            await recv.wait_for("/refuses", 2)

            def shown(*args: str) -> Any:
                return json.loads(batchgate(*args, "--db", sqlite_url, "--json").stdout)

            listed = shown("batches", "list")
            assert {entry["asyncId"] for entry in listed} == {done, sleeping}
            assert all(entry["account"] == "acme" for entry in listed)
            detail = shown("batches", "show", done)
            assert detail["jobs"][0]["response"] == {"n": 1} and detail["jobs"][0]["status"] == "succeeded"
            [delivery] = detail["deliveries"]  # in the admin API's shape
            assert [a["httpStatus"] for a in delivery["tries"]] == [500, 500]
            text = batchgate("batches", "show", done, "--db", sqlite_url).stdout
            assert f"callback {delivery['id']}" in text and "attempt 2 at" in text

            failed = await eventually(lambda: shown("deliveries", "list", "--failed"), until=lambda f: f)
            assert [d["asyncId"] for d in failed] == [done]
            redriven = batchgate("deliveries", "redrive", failed[0]["id"], "--db", sqlite_url)
            assert "sending 1 deliveries again" in redriven.stdout
            [accepted] = [c for c in await recv.wait_for("/refuses", 3) if c.status == 200]
            assert accepted.headers["webhook-id"] == failed[0]["id"]  # the same delivery, again

            cancelled = batchgate("batches", "cancel", sleeping, "--db", sqlite_url).stdout
            assert cancelled == f"asked {sleeping}'s worker to cancel it\n"  # its worker runs it
            status = await eventually(
                lambda: api.status(sleeping), until=lambda s: s["status"] == "cancelled"
            )
            assert status["counts"]["cancelled"] == 1
            refused = batchgate("batches", "cancel", sleeping, "--db", sqlite_url, check=False)
            assert refused.returncode == 1 and "has already finished" in refused.stderr
            no_callback = batchgate("batches", "repost", sleeping, "--db", sqlite_url, check=False)
            assert no_callback.returncode == 1 and "has no callback URL" in no_callback.stderr
            batchgate("batches", "restart", done, "--db", sqlite_url)
            assert (await api.wait(done, poll_s=0.05))["results"][0]["response"] == {"n": 1}
            batchgate("batches", "repost", done, "--db", sqlite_url)
            await recv.wait_for("/refuses", 5)  # the restarted run's callback, then the repost
    finally:
        server.stop()
    audit = await _audit(sqlite_url)
    assert [entry[2] for entry in audit] == ["repost", "restart", "cancel", "redeliver"]
    assert all(entry[1].startswith("cli:") for entry in audit)


async def _audit(db: str) -> list[tuple[Any, ...]]:
    from batchgate.store import open_store

    store = open_store(db, result_ttl_s=3600)
    await store.open()
    try:
        return [(e.at, e.actor, e.action, e.target) for e in await store.audit_log()]
    finally:
        await store.close()


async def test_metrics_move_as_batches_run_and_log_lines_are_json_with_their_facts(
    tmp_path: Path, sqlite_url: str
) -> None:
    key, secret, _ = create_key(sqlite_url)
    admin_port = free_port()
    log = tmp_path / "serve.log"
    env = {"BATCHGATE_ADMIN_TOKEN": "s3cret", "BATCHGATE_LOG_FORMAT": "json"}
    server = ServeProcess(sqlite_url, log, env=env, args=["--admin-port", str(admin_port)]).start()
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        assert get(admin + "/metrics")[0] == 401
        assert get(admin + "/metrics", token=key)[0] == 401  # an API key never opens it
        before = get(admin + "/metrics", token="s3cret")[1].decode()
        async with receiver() as recv, AsyncClient(server.url, key, secret) as api:
            recv.plan["/hook"] = [503]
            jobs = [{"namespace": "test", "action": "echo"}, {"namespace": "test", "action": "nosuch"}]
            async_id = await api.run(jobs, callback_url=recv.url + "/hook")
            await api.wait(async_id, poll_s=0.05)
            await recv.wait_for("/hook", 2)
        after = await eventually(
            lambda: get(admin + "/metrics", token="s3cret")[1].decode(),
            until=lambda text: metric(text, "batchgate_delivery_attempts_total", outcome="delivered") >= 1,
        )
    finally:
        server.stop()
    moved = {
        ("batchgate_batches_total", ("event", "submitted")): 1,
        ("batchgate_batches_total", ("event", "complete")): 1,
        ("batchgate_jobs_total", ("outcome", "succeeded")): 1,
        ("batchgate_jobs_total", ("outcome", "failed")): 1,
        ("batchgate_http_requests_total", ("action", "batch.run")): 1,
        ("batchgate_delivery_attempts_total", ("outcome", "failed")): 1,
    }
    for (name, (label, value)), delta in moved.items():
        assert metric(after, name, **{label: value}) - metric(before, name, **{label: value}) == delta, name
    assert 'action="other"' not in after or "nosuch" not in after  # labels stay bounded

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert len(lines) > 5 and all("timestamp" in line and "level" in line for line in lines)
    events = {line["event"]: line for line in lines}
    assert events["batch accepted"]["asyncId"] == async_id and events["batch accepted"]["account"] == "acme"
    assert events["batch finished"]["succeeded"] == 1 and events["batch finished"]["failed"] == 1
    assert events["job failed"]["job"] == 1 and events["job failed"]["errorCode"] == 404
    failed = events["callback attempt failed"]
    assert failed["level"] == "warning" and failed["attempt"] == 1 and failed["status"] == 503
    assert failed["next_attempt_in_s"] is not None and failed["asyncId"] == async_id
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's lines, as JSON too
    assert secret not in log.read_text()


@pytest.mark.postgres
async def test_readyz_says_when_the_database_is_gone(tmp_path: Path) -> None:
    async with pg.fresh_database() as url:
        server = ServeProcess(url, tmp_path / "serve.log").start()
        try:
            assert get(server.url + "/readyz")[0] == 200
            await pg.fetch(pg.url_of("postgres"), f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
            _, body = await eventually(lambda: get(server.url + "/readyz"), until=lambda a: a[0] == 503)
            assert json.loads(body)["status"] == "unavailable" and "PostgreSQL" in json.loads(body)["reason"]
            assert get(server.url + "/healthz")[0] == 200  # alive, though not ready
        finally:
            server.stop()
