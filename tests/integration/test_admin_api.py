"""The admin JSON API and /metrics over real HTTP, with the bearer token, on SQLite and PostgreSQL:
every read with its filters and paging, every change with its audit entry, and every refusal."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from admin_support import TOKEN, AdminServer, Answer, Http, admin_server, failing_jobs, finished, jobs, sleeps
from batchgate.client import AsyncClient
from batchgate.protocol.signing import sign_headers
from batchgate.settings import Settings

from support import eventually, receiver


@pytest.fixture
async def server(each_store_settings: Settings) -> AdminServer:
    async with admin_server(each_store_settings) as running:
        yield running


def api(server: AdminServer, bearer: str | None = TOKEN) -> Http:
    return Http(server.url, bearer=bearer)


async def test_the_api_and_metrics_refuse_a_request_without_the_token(server: AdminServer) -> None:
    for path in ("/admin/api/batches", "/admin/api/system", "/metrics"):
        answer = await api(server, bearer=None).get(path)
        assert answer.status == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "needs its token" in answer.json["message"]


async def test_a_wrong_token_is_refused_even_beside_a_valid_session(server: AdminServer) -> None:
    http = Http(server.url)
    await http.login(TOKEN)
    http.bearer = TOKEN + "x"
    answer = await http.get("/admin/api/batches")
    assert (answer.status, answer.json["message"]) == (401, "the admin token does not match")
    assert (await http.get("/metrics")).status == 401


async def test_an_api_key_never_opens_the_admin_listener(server: AdminServer) -> None:
    assert (await api(server, bearer=server.key.secret).get("/admin/api/keys")).status == 401
    assert (await api(server, bearer=server.key.key).get("/admin/api/keys")).status == 401
    headers = sign_headers(
        key=server.key.key, secret=server.key.secret, uri="/admin/api/keys", body=b"", method="GET"
    )
    answer = await api(server, bearer=None).get("/admin/api/keys", headers=headers)
    assert answer.status == 401


async def test_batches_of_every_account_are_listed_newest_first_with_filters_and_paging(
    server: AdminServer,
) -> None:
    async with server.client() as acme, server.client(server.other_key) as globex:
        ids = [await acme.run(jobs(1, tag=i)) for i in range(3)] + [await globex.run(jobs(2))]
    for batch_id in ids:
        await finished(server, batch_id)
    http = api(server)
    listed = (await http.get("/admin/api/batches")).json
    assert [b["asyncId"] for b in listed["batches"]] == ids[::-1]
    assert listed["nextCursor"] is None
    first = listed["batches"][0]
    assert (first["account"], first["status"], first["progress"]) == ("globex", "complete", 100)
    assert first["counts"] == {"total": 2, "succeeded": 2, "failed": 0, "cancelled": 0, "pending": 0}

    globex_only = (await http.get("/admin/api/batches?account=globex")).json["batches"]
    assert [b["asyncId"] for b in globex_only] == [ids[3]]
    assert (await http.get("/admin/api/batches?status=queued")).json["batches"] == []
    assert len((await http.get("/admin/api/batches?since=1h&status=complete")).json["batches"]) == 4
    assert (await http.get(f"/admin/api/batches?since={time.time() + 60:.0f}")).json["batches"] == []

    page1 = (await http.get("/admin/api/batches?limit=3")).json
    page2 = (await http.get(f"/admin/api/batches?limit=3&cursor={page1['nextCursor']}")).json
    assert [b["asyncId"] for b in page1["batches"] + page2["batches"]] == ids[::-1]
    assert page2["nextCursor"] is None


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("status=done", "status must be one of queued, running, complete, cancelled"),
        ("since=yesterday", "since must be a span such as 15m"),
        ("limit=0", "limit must be a whole number from 1 to 500"),
        ("cursor=abc", "cursor must be a nextCursor"),
    ],
)
async def test_a_filter_that_cannot_be_read_is_a_400_naming_it(
    server: AdminServer, query: str, says: str
) -> None:
    answer = await api(server).get(f"/admin/api/batches?{query}")
    assert answer.status == 400
    assert answer.json["errorCode"] == 400
    assert says in answer.json["message"]


async def test_one_batch_shows_every_job_and_every_delivery_attempt(server: AdminServer) -> None:
    async with receiver() as recv:
        recv.plan["/hook"] = [500]
        async with server.client() as client:
            batch_id = await client.run(failing_jobs(2, 1), callback_url=recv.url + "/hook")
        await recv.wait_for("/hook", 2)
        await eventually(
            lambda: api(server).get(f"/admin/api/batches/{batch_id}"),
            until=lambda a: a.json["deliveries"][0]["status"] == "delivered",
        )
    detail = (await api(server).get(f"/admin/api/batches/{batch_id}")).json
    assert [job["status"] for job in detail["jobs"]] == ["succeeded", "succeeded", "failed"]
    assert detail["jobs"][0]["request"] == {"n": 0} == detail["jobs"][0]["response"]
    assert detail["jobs"][2]["response"]["errorCode"] == 400
    assert detail["jobs"][2]["attempts"] == 1 and detail["jobs"][2]["durationMs"] >= 0
    (delivery,) = detail["deliveries"]
    assert [(t["number"], t["httpStatus"]) for t in delivery["tries"]] == [(1, 500), (2, 200)]
    assert delivery["url"] == recv.url + "/hook" and delivery["nextAttemptAt"] is None
    assert detail["callback"]["state"] == "delivered"

    missing = await api(server).get("/admin/api/batches/" + "0" * 32)
    assert (missing.status, missing.json["message"]) == (404, f"there is no batch {'0' * 32}")


async def test_cancel_stops_a_running_batch_and_is_audited(server: AdminServer) -> None:
    async with server.client() as client:
        batch_id = await client.run(sleeps(3, 5))
    await eventually(lambda: server.status(batch_id), until=lambda s: s.value == "running")
    answer = await api(server).post(f"/admin/api/batches/{batch_id}/cancel")
    assert answer.status == 200 and answer.json["cancelled"] in ("requested", "done")
    await finished(server, batch_id, timeout_s=10)
    assert (await server.status(batch_id)).value == "cancelled"
    again = await api(server).post(f"/admin/api/batches/{batch_id}/cancel")
    assert again.status == 400 and "has already finished" in again.json["message"]
    (entry, *_) = (await api(server).get("/admin/api/audit")).json["entries"]
    assert (entry["actor"], entry["action"], entry["target"]) == ("admin-api", "cancel", batch_id)


async def test_restart_restart_of_failed_jobs_and_repost(server: AdminServer) -> None:
    async with receiver() as recv, server.client() as client:
        failing = await client.run(failing_jobs(1, 1), callback_url=recv.url + "/a")
        clean = await client.run(jobs(1))
        await recv.wait_for("/a", 1)
        await finished(server, clean)
        http = api(server)
        assert (await http.post(f"/admin/api/batches/{failing}/restart", json={"failedOnly": True})).json == {
            "restarted": True,
            "failedOnly": True,
        }
        await recv.wait_for("/a", 2)
        nothing = await http.post(f"/admin/api/batches/{clean}/restart", json={"failedOnly": True})
        assert nothing.status == 400 and "nothing to run again" in nothing.json["message"]
        assert (await http.post(f"/admin/api/batches/{clean}/restart")).status == 200
        await eventually(lambda: http.get(f"/admin/api/batches/{clean}"), until=lambda a: a.json["run"] == 2)
        await finished(server, clean)
        assert (await http.post(f"/admin/api/batches/{failing}/repost")).json == {"reposted": True}
        await recv.wait_for("/a", 3)
        no_url = await http.post(f"/admin/api/batches/{clean}/repost")
        assert no_url.status == 400 and "has no callback URL" in no_url.json["message"]
        bad = await http.post(f"/admin/api/batches/{clean}/restart", json={"failedOnly": "yes"})
        assert (bad.status, bad.json["message"]) == (400, "failedOnly must be true or false")
    actions = [e["action"] for e in (await http.get("/admin/api/audit")).json["entries"]]
    assert actions == ["repost", "restart", "restart failed jobs"]


async def test_failed_deliveries_are_listed_and_redelivered_one_or_all(server: AdminServer) -> None:
    async with receiver() as recv, server.client() as client:
        for path in ("/one", "/two", "/three"):
            recv.plan[path] = [500] * 4  # every try of the schedule fails
        ids = [
            await client.run(jobs(1, tag=path), callback_url=recv.url + path)
            for path in ("/one", "/two", "/three")
        ]
        http = api(server)
        failed = await eventually(
            lambda: http.get("/admin/api/deliveries/failed"), until=lambda a: len(a.json["deliveries"]) == 3
        )
        listed = failed.json["deliveries"]
        assert {d["asyncId"] for d in listed} == set(ids)
        assert all(d["status"] == "failed" and d["attempts"] == 4 for d in listed)
        page = (await http.get("/admin/api/deliveries/failed?limit=2")).json
        rest = (await http.get(f"/admin/api/deliveries/failed?limit=2&cursor={page['nextCursor']}")).json
        assert [d["id"] for d in page["deliveries"] + rest["deliveries"]] == [d["id"] for d in listed]

        one = next(d for d in listed if d["asyncId"] == ids[0])
        assert (await http.post(f"/admin/api/deliveries/{one['id']}/redeliver")).json == {"redelivered": 1}
        (call,) = [c for c in await recv.wait_for("/one", 5) if c.status == 200]
        assert call.headers["webhook-id"] == one["id"]
        missing = await http.post(f"/admin/api/deliveries/{one['id']}/redeliver")
        assert (missing.status, missing.json["message"]) == (404, f"there is no failed delivery {one['id']}")

        assert (await http.post("/admin/api/deliveries/redeliver-all")).json == {"redelivered": 2}
        await recv.wait_for("/two", 5)
        await recv.wait_for("/three", 5)
        await eventually(
            lambda: http.get("/admin/api/deliveries/failed"), until=lambda a: not a.json["deliveries"]
        )
    entries = (await http.get("/admin/api/audit")).json["entries"]
    assert [(e["action"], e["target"], e["detail"]) for e in entries[:2]] == [
        ("redeliver all failed", "*", "2 deliveries"),
        ("redeliver", one["id"], ""),
    ]


async def test_keys_are_created_listed_without_secrets_rotated_and_revoked(server: AdminServer) -> None:
    http = api(server)
    created = await http.post("/admin/api/keys", json={"account": "initech"})
    assert created.status == 201
    new = created.json
    assert new["account"] == "initech" and new["secret"] and new["webhookSecret"].startswith("whsec_")
    async with AsyncClient(server.api_url, new["key"], new["secret"]) as client:
        assert (await client.call("test", "ping"))["ack"]

    def used(answer: Answer) -> bool:  # the API notes a key's use in the background
        return any(k["key"] == new["key"] and k["lastUsedAt"] for k in answer.json["keys"])

    listed = (await eventually(lambda: http.get("/admin/api/keys"), until=used)).json["keys"]
    assert {k["account"] for k in listed} == {"acme", "globex", "initech"}
    assert all("secret" not in k and "webhookSecret" not in k for k in listed)
    mine = next(k for k in listed if k["key"] == new["key"])
    assert mine["lastUsedAt"] is not None and mine["revokedAt"] is None

    rotated = await http.post(
        f"/admin/api/keys/{new['key']}/rotate-webhook-secret", json={"overlapSeconds": 3600}
    )
    assert rotated.json["webhookSecret"] != new["webhookSecret"]
    assert rotated.json["previousWebhookSecretUntil"] is not None
    bad = await http.post(f"/admin/api/keys/{new['key']}/rotate-webhook-secret", json={"overlapSeconds": -1})
    assert (bad.status, bad.json["message"]) == (400, "overlapSeconds must be from 0 to 2592000 (30 days)")

    assert (await http.post(f"/admin/api/keys/{new['key']}/revoke")).json == {"revoked": True}
    again = await http.post(f"/admin/api/keys/{new['key']}/revoke")
    assert (again.status, again.json["message"]) == (404, f"there is no active key {new['key']}")
    listed = (await http.get("/admin/api/keys")).json["keys"]
    assert next(k for k in listed if k["key"] == new["key"])["revokedAt"] is not None

    empty = await http.post("/admin/api/keys", json={"account": "  "})
    assert (empty.status, empty.json["message"]) == (400, "an account name cannot be empty")
    missing = await http.post("/admin/api/keys", json={})
    assert missing.status == 400 and "account" in missing.json["message"]
    not_json = await http.post(
        "/admin/api/keys", headers={"Content-Type": "application/json"}, form={"a": "b"}
    )
    assert not_json.status == 400
    actions = [e["action"] for e in (await http.get("/admin/api/audit?limit=3")).json["entries"]]
    assert actions == ["revoke key", "rotate webhook secret", "create key"]


async def test_system_shows_the_queue_the_outbox_the_workers_and_jobs_per_minute(server: AdminServer) -> None:
    async with server.client() as client:
        batch_id = await client.run(jobs(7))
    await finished(server, batch_id)
    system = (await api(server).get("/admin/api/system")).json
    assert (system["queued"], system["running"], system["oldestQueuedAt"]) == (0, 0, None)
    assert (system["deliveriesPending"], system["deliveriesFailed"]) == (0, 0)
    assert sum(minute["jobs"] for minute in system["jobsPerMinute"]) == 7
    (worker,) = system["workers"]
    assert worker["role"] == "worker" and worker["pid"] > 0 and worker["holding"] == []


async def test_metrics_are_refreshed_from_the_store_before_each_scrape(server: AdminServer) -> None:
    # The worker notes itself in the store as it starts, which may be just after the first scrape:
    # a later scrape must then see it, read from the store.
    answer = await eventually(
        lambda: api(server).get("/metrics"), until=lambda got: "batchgate_workers_alive 1.0" in got.text
    )
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "batchgate_workers_alive 1.0" in answer.text
    assert "batchgate_queue_depth 0.0" in answer.text
    assert (await api(server).post("/metrics")).status == 405


def job_durations(exposition: str, action: str) -> dict[str, float]:
    """The job-duration histogram's samples for one action: `count`, `sum` and each bucket (`le`)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != "batchgate_job_duration_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("action") == action:
                found[sample.labels.get("le", sample.name.rpartition("_")[2])] = sample.value
    return found


async def test_metrics_time_every_finished_job_by_action(server: AdminServer) -> None:
    # The registry is the test process's: compare scrapes before and after, not absolute values.
    before = job_durations((await api(server).get("/metrics")).text, "test.sleep")
    async with server.client() as client:
        batch_id = await client.run(sleeps(3, 0.03) + failing_jobs(0, 1))
    await finished(server, batch_id)
    after = job_durations((await api(server).get("/metrics")).text, "test.sleep")

    def grew(key: str) -> float:
        return after[key] - before.get(key, 0.0)

    assert grew("count") == grew("+Inf") == 4  # a failed job is timed too
    assert grew("0.025") == 1  # the one refused at once
    assert grew("0.05") == 4 and 0.09 <= grew("sum") < 1.0  # three sleeps of 30 ms
    buckets = [value for key, value in after.items() if key not in ("count", "sum")]
    assert buckets == sorted(buckets)  # cumulative, as Prometheus reads them


async def test_unknown_paths_and_methods_answer_json_errors(server: AdminServer) -> None:
    http = api(server)
    nowhere = await http.get("/admin/api/nothing")
    assert (nowhere.status, nowhere.json) == (
        404,
        {"errorCode": 404, "message": "there is nothing at /admin/api/nothing"},
    )
    wrong = await http.request("DELETE", "/admin/api/keys")
    assert wrong.status == 405 and wrong.json["message"] == "DELETE is not allowed on /admin/api/keys"
    assert (await http.post("/admin/api/keys", json=[1])).json["message"] == "the body must be a JSON object"
    big = await http.post("/admin/api/keys", json={"account": "x" * 70_000})
    assert big.status == 413


async def test_a_nul_character_anywhere_is_a_400_on_every_store(server: AdminServer) -> None:
    """PostgreSQL's text cannot hold a NUL: a path, query or body holding one is refused as it
    comes in, rather than failing in the store (it was a 500 there)."""
    http = api(server)
    paths = [
        ("GET", "/admin/api/batches/a%00b"),
        ("POST", "/admin/api/batches/a%00b/cancel"),
        ("POST", "/admin/api/batches/a%00b/restart"),
        ("POST", "/admin/api/batches/a%00b/repost"),
        ("POST", "/admin/api/deliveries/a%00b/redeliver"),
        ("POST", "/admin/api/keys/a%00b/revoke"),
        ("POST", "/admin/api/keys/a%00b/rotate-webhook-secret"),
        ("GET", "/admin/api/batches?account=a%00b"),
        ("GET", "/admin/api/batches?a%00b=1"),
        ("GET", "/batches/a%00b"),
    ]
    for method, path in paths:
        answer = await http.request(method, path)
        assert (answer.status, answer.json["message"]) == (
            400,
            "the path and the query may not hold a NUL character",
        ), (method, path)
    before = (await http.get("/admin/api/keys")).json["keys"]
    created = await http.post("/admin/api/keys", json={"account": "a\x00b"})
    assert (created.status, created.json["message"]) == (400, "the body may not hold a NUL character")
    assert (await http.get("/admin/api/keys")).json["keys"] == before
