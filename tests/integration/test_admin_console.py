"""The console over real HTTP, on SQLite and PostgreSQL: logging in, the session cookie and CSRF,
the open console of a listener without a token, every page and every change (confirmed first)."""

from __future__ import annotations

import re

import pytest

from admin_support import TOKEN, AdminServer, Http, admin_server, failing_jobs, finished, jobs, sleeps
from batchgate.admin.auth import Guard
from batchgate.admin.http import Request
from batchgate.settings import Settings

from support import eventually, receiver


@pytest.fixture
async def server(each_store_settings: Settings) -> AdminServer:
    async with admin_server(each_store_settings) as running:
        yield running


async def logged_in(server: AdminServer, name: str = "alice") -> Http:
    http = Http(server.url)
    answer = await http.login(TOKEN, name)
    assert (answer.status, answer.headers["location"]) == (303, "/batches")
    return http


def session_cookie(server: AdminServer) -> str:
    return f"batchgate_admin_{server.url.rsplit(':', 1)[1]}"


async def test_a_person_without_a_session_is_sent_to_the_login_page(server: AdminServer) -> None:
    answer = await Http(server.url).get("/batches/abc?x=1")
    assert answer.status == 303
    assert answer.headers["location"] == "/login?next=%2Fbatches%2Fabc%3Fx%3D1"
    page = await Http(server.url).get("/login?next=/keys")
    assert page.status == 200 and 'name="token"' in page.text and 'value="/keys"' in page.text
    live = await Http(server.url).get("/batches", headers={"X-Live": "1"})
    assert live.status == 401  # console.js reloads, and the reload asks to log in


async def test_a_wrong_token_at_the_login_is_refused_and_sets_no_cookie(server: AdminServer) -> None:
    http = Http(server.url)
    answer = await http.login("not the token")
    assert answer.status == 401 and "That is not the admin token." in answer.text
    assert not answer.cookies and not http.cookies


async def test_logging_in_sets_a_signed_httponly_secure_strict_expiring_cookie(server: AdminServer) -> None:
    http = Http(server.url)
    answer = await http.login(TOKEN, "alice")
    (cookie,) = answer.cookies
    assert cookie.startswith(session_cookie(server) + "=")
    assert {"HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=28800"} <= set(cookie.split("; "))
    for path in ("/batches", "/keys", "/system", "/deliveries", "/audit", "/admin/api/keys", "/metrics"):
        assert (await http.get(path)).status == 200, path
    assert (await http.get("/login")).headers["location"] == "/batches"  # logged in already
    assert (await http.get("/admin/api/session")).json["actor"] == "console:alice"


async def test_a_forged_tampered_or_expired_cookie_opens_nothing(server: AdminServer) -> None:
    http = await logged_in(server)
    name = session_cookie(server)
    value = http.cookies[name]
    payload, signature = value.split(".")
    for forged in (f"{payload}.{signature[:-2]}xx", f"{payload[:-2]}AA.{signature}", "garbage", ""):
        http.cookies[name] = forged
        assert (await http.get("/admin/api/keys")).status == 401
    other = Guard("another token")
    request = Request("GET", "/", {}, {}, {}, int(server.url.rsplit(":", 1)[1]))
    http.cookies[name] = _value(other.cookie(request, other.new_session("mallory")))
    assert (await http.get("/admin/api/keys")).status == 401
    expired = Guard(TOKEN, clock=lambda: 1_000_000.0)  # a session made long ago, signed with the token
    http.cookies[name] = _value(expired.cookie(request, expired.new_session("old")))
    assert (await http.get("/admin/api/keys")).status == 401
    http.cookies[name] = value
    assert (await http.get("/admin/api/keys")).status == 200


def _value(set_cookie: bytes) -> str:
    return set_cookie.decode().split(";")[0].split("=", 1)[1]


async def test_a_change_with_a_session_needs_its_csrf_token(server: AdminServer) -> None:
    http = await logged_in(server)
    async with server.client() as client:
        batch_id = await client.run(sleeps(2, 5))
    without = await http.post(f"/batches/{batch_id}/cancel", form={"confirmed": "yes"})
    assert without.status == 403 and "CSRF token" in without.text
    wrong = await http.post(f"/batches/{batch_id}/cancel", form={"confirmed": "yes", "csrf": "nope"})
    assert wrong.status == 403
    api_without = await http.post(f"/admin/api/batches/{batch_id}/cancel")
    assert api_without.status == 403 and "CSRF token" in api_without.json["message"]
    csrf = await http.csrf()
    elsewhere = await http.post(
        f"/admin/api/batches/{batch_id}/cancel",
        headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
    )
    assert elsewhere.status == 403 and "another site" in elsewhere.json["message"]
    assert not (await server.service.admin.audit_log())
    answer = await http.post(f"/admin/api/batches/{batch_id}/cancel", headers={"X-CSRF-Token": csrf})
    assert answer.status == 200
    await finished(server, batch_id, timeout_s=10)
    (entry,) = await server.service.admin.audit_log()
    assert (entry.actor, entry.action) == ("console:alice", "cancel")


async def test_logging_out_ends_the_session(server: AdminServer) -> None:
    http = await logged_in(server)
    name = session_cookie(server)
    assert (await http.post("/logout", form={})).status == 403  # a change too: it needs the CSRF token
    answer = await http.post("/logout", form={"csrf": await http.csrf()})
    assert (answer.status, answer.headers["location"]) == (303, "/login")
    assert name not in http.cookies
    assert (await http.get("/batches")).status == 303


async def test_without_a_token_the_console_is_open_but_changes_still_need_the_csrf_token(
    each_store_settings: Settings,
) -> None:
    async with admin_server(each_store_settings, token=None) as server:
        async with server.client() as client:
            batch_id = await client.run(sleeps(2, 5))
        http = Http(server.url)
        page = await http.get("/batches")
        assert page.status == 200 and "open · no token" in page.text
        assert len(page.cookies) == 1  # an anonymous session, for its CSRF token
        assert (await http.get("/login")).headers["location"] == "/batches"
        assert (await Http(server.url).get("/metrics")).status == 200
        forged = Http(server.url, bearer="anything")  # a bearer token opens nothing more here
        assert (await forged.post(f"/admin/api/batches/{batch_id}/cancel")).status == 403
        assert (await http.post(f"/batches/{batch_id}/cancel", form={"confirmed": "yes"})).status == 403
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert csrf is not None
        answer = await http.post(f"/batches/{batch_id}/cancel", form={"confirmed": "yes", "csrf": csrf[1]})
        assert answer.status == 303
        await finished(server, batch_id, timeout_s=10)
        (entry,) = await server.service.admin.audit_log()
        assert entry.actor == "console"


async def test_the_batches_page_lists_filters_looks_up_and_refreshes_its_live_parts(
    server: AdminServer,
) -> None:
    async with server.client() as acme, server.client(server.other_key) as globex:
        ids = [await acme.run(failing_jobs(3, 1)), await globex.run(jobs(2))]
    for batch_id in ids:
        await finished(server, batch_id)
    http = await logged_in(server)
    page = await http.get("/batches")
    assert all(f'href="/batches/{batch_id}"' in page.text for batch_id in ids)
    assert "Jobs finished per minute" in page.text and '<svg class="chart"' in page.text
    assert "6 jobs finished in the last 30 minutes" in page.text
    assert "✗ 1" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    globex = await http.get("/batches?account=globex&status=complete&since=1h")
    assert ids[1] in globex.text and ids[0] not in globex.text
    assert ids[0] not in (await http.get("/batches?status=running")).text
    bad = await http.get("/batches?since=whenever")
    assert bad.status == 400 and "since must be a span" in bad.text

    found = await http.get(f"/batches?q={ids[0]}")
    assert (found.status, found.headers["location"]) == (303, f"/batches/{ids[0]}")
    missing = await http.get("/batches?q=nope")
    assert missing.headers["location"] == "/batches"
    assert "there is no batch nope" in (await http.get("/batches")).text  # said once, then gone
    assert "there is no batch nope" not in (await http.get("/batches")).text

    live = await http.get("/batches", headers={"X-Live": "1"})
    assert live.text.count("data-live-part=") == 2 and "<html" not in live.text and ids[0] in live.text


async def test_paging_through_batches(server: AdminServer) -> None:
    async with server.client() as client:
        ids = [await client.run(jobs(1, page=i)) for i in range(3)]
    http = await logged_in(server)
    first = await http.get("/batches?limit=2")
    older = re.search(r'href="/batches\?([^"]*cursor=[^"]+)"', first.text)
    assert older is not None and ids[0] not in first.text
    second = await http.get("/batches?" + older[1].replace("&amp;", "&"))
    assert ids[0] in second.text and ids[2] not in second.text


async def test_the_batch_page_shows_jobs_bodies_dependencies_and_delivery_attempts(
    server: AdminServer,
) -> None:
    workflow = [
        {"id": "a", "namespace": "test", "action": "echo", "params": {"text": "x" * 500}},
        {"id": "b", "namespace": "test", "action": "echo", "params": {"small": 1}, "dependsOn": ["a"]},
        {"namespace": "test", "action": "sleep", "params": {"seconds": "x"}},
    ]
    async with receiver() as recv, server.client() as client:
        recv.plan["/hook"] = [503]
        batch_id = await client.run(workflow, callback_url=recv.url + "/hook")
        await recv.wait_for("/hook", 2)
    http = await logged_in(server)
    page = (
        await eventually(lambda: http.get(f"/batches/{batch_id}"), until=lambda a: "HTTP 200" in a.text)
    ).text
    assert page.count('class="job-row"') == 3
    assert '<details class="body" id="req-0">' in page  # 500 characters: folded
    assert (
        '<div class="body inline"><span class="label">request</span><pre>{\n  &#34;small&#34;: 1\n}' in page
    )
    assert '<a class="dep" href="#job-0">#0</a>' in page and "id a" in page
    assert "&#39;seconds&#39; does not validate" in page  # the failed job's message
    assert "HTTP 503" in page and "HTTP 200" in page
    assert "Restart failed jobs" in page and "Redeliver callback" in page and ">Cancel<" not in page
    assert (await http.get("/batches/" + "f" * 32)).status == 404
    live = await http.get(f"/batches/{batch_id}", headers={"X-Live": "1"})
    assert "data-live-stop" in live.text  # finished and delivered: console.js stops polling


async def test_a_change_asks_to_confirm_first_then_is_done_and_said(server: AdminServer) -> None:
    async with server.client() as client:
        batch_id = await client.run(sleeps(3, 5))
    await eventually(lambda: server.status(batch_id), until=lambda s: s.value == "running")
    http = await logged_in(server)
    csrf = await http.csrf()
    ask = await http.post(f"/batches/{batch_id}/cancel", form={"csrf": csrf})
    assert (
        ask.status == 200 and "Cancel this batch?" in ask.text and 'name="confirmed" value="yes"' in ask.text
    )
    assert (await server.status(batch_id)).value == "running"
    done = await http.post(f"/batches/{batch_id}/cancel", form={"csrf": csrf, "confirmed": "yes"})
    assert (done.status, done.headers["location"]) == (303, f"/batches/{batch_id}")
    await finished(server, batch_id, timeout_s=10)
    page = await http.get(f"/batches/{batch_id}")
    assert "Cancel requested: its worker stops it." in page.text or "Batch cancelled." in page.text
    refused = await http.act(f"/batches/{batch_id}/cancel")
    assert refused.status == 303
    assert "has already finished" in (await http.get(f"/batches/{batch_id}")).text
    assert (await http.act(f"/batches/{batch_id}/explode")).status == 404


async def test_every_batch_change_from_the_console(server: AdminServer) -> None:
    async with receiver() as recv, server.client() as client:
        batch_id = await client.run(failing_jobs(1, 1), callback_url=recv.url + "/hook")
        await recv.wait_for("/hook", 1)
        http = await logged_in(server, "bob")
        assert (await http.act(f"/batches/{batch_id}/restart-failed")).status == 303
        await recv.wait_for("/hook", 2)
        assert (await http.act(f"/batches/{batch_id}/restart")).status == 303
        await recv.wait_for("/hook", 3)
        assert (await http.act(f"/batches/{batch_id}/repost")).status == 303
        await recv.wait_for("/hook", 4)
    entries = await server.service.admin.audit_log()
    assert [(e.actor, e.action) for e in entries] == [
        ("console:bob", "repost"),
        ("console:bob", "restart"),
        ("console:bob", "restart failed jobs"),
    ]


async def test_failed_deliveries_are_redelivered_from_the_console(server: AdminServer) -> None:
    async with receiver() as recv, server.client() as client:
        recv.plan["/one"] = [500] * 4
        recv.plan["/two"] = [500] * 4
        await client.run(jobs(1, to="one"), callback_url=recv.url + "/one")
        await client.run(jobs(1, to="two"), callback_url=recv.url + "/two")
        failed = await eventually(server.service.admin.failed_deliveries, until=lambda found: len(found) == 2)
        http = await logged_in(server)
        page = await http.get("/deliveries")
        assert all(f'id="delivery-{d.id}"' in page.text for d in failed) and "Redeliver all" in page.text
        one = next(d for d in failed if d.url.endswith("/one"))
        answer = await http.act(f"/deliveries/{one.id}/redeliver", back=f"/batches/{one.batch_id}")
        assert answer.headers["location"] == f"/batches/{one.batch_id}"
        await recv.wait_for("/one", 5)
        assert (await http.act("/deliveries/redeliver-all")).headers["location"] == "/deliveries"
        await recv.wait_for("/two", 5)
        assert "1 failed delivery is sent again." in (await http.get("/deliveries")).text
        evil = await http.act(f"/deliveries/{one.id}/redeliver", back="//evil.example/")
        assert evil.headers["location"] == "/deliveries"


async def test_keys_are_created_rotated_and_revoked_from_the_console(server: AdminServer) -> None:
    http = await logged_in(server)
    csrf = await http.csrf()
    created = await http.post("/keys", form={"csrf": csrf, "account": "initech"})
    assert created.status == 200 and created.headers["cache-control"] == "no-store"
    key = re.search(r'data-secret="key">([0-9a-f]+)<', created.text)
    secret = re.search(r'data-secret="secret">([^<]+)<', created.text)
    webhook = re.search(r'data-secret="webhook">(whsec_[^<]+)<', created.text)
    assert key and secret and webhook
    stored = {k.key: k for k in await server.service.admin.keys()}[key[1]]
    assert (stored.account, stored.secret, stored.webhook_secret) == ("initech", secret[1], webhook[1])
    listing = (await http.get("/keys")).text
    assert key[1] in listing and secret[1] not in listing and webhook[1] not in listing  # shown once

    ask = await http.post(f"/keys/{key[1]}/rotate", form={"csrf": csrf, "overlap": "3600"})
    assert "Rotate the webhook secret?" in ask.text and 'name="overlap" value="3600"' in ask.text
    rotated = await http.post(
        f"/keys/{key[1]}/rotate", form={"csrf": csrf, "overlap": "3600", "confirmed": "yes"}
    )
    new_webhook = re.search(r'data-secret="webhook">(whsec_[^<]+)<', rotated.text)
    assert (
        new_webhook and new_webhook[1] != webhook[1] and "keeps signing callbacks beside it" in rotated.text
    )

    assert (await http.act(f"/keys/{key[1]}/revoke")).status == 303
    assert f"Key {key[1]} is revoked." in (await http.get("/keys")).text
    again = await http.act(f"/keys/{key[1]}/revoke")
    assert again.status == 303 and "there is no active key" in (await http.get("/keys")).text
    empty = await http.post("/keys", form={"csrf": csrf, "account": " "})
    assert empty.status == 303 and "an account name cannot be empty" in (await http.get("/keys")).text
    entries = [e.action for e in await server.service.admin.audit_log()]
    assert entries == ["revoke key", "rotate webhook secret", "create key"]


async def test_the_system_and_audit_pages(server: AdminServer) -> None:
    async with server.client() as client:
        batch_id = await client.run(jobs(4))
    await finished(server, batch_id)
    http = await logged_in(server, "carol")
    await http.act(f"/batches/{batch_id}/restart")
    system = await http.get("/system")
    (worker,) = (await server.service.admin.system()).workers
    assert (
        worker.id in system.text
        and "Workers alive" in system.text
        and "Jobs finished per minute" in system.text
    )
    assert "console:carol" in system.text  # the recent changes
    audit = await http.get("/audit")
    assert "console:carol" in audit.text and f'href="/batches/{batch_id}"' in audit.text
    assert "data-live-part" in (await http.get("/system", headers={"X-Live": "1"})).text


async def test_static_assets_are_served_from_the_package_with_their_hash(server: AdminServer) -> None:
    page = (await Http(server.url).get("/login")).text
    for name in ("console.css", "console.js", "favicon.svg"):
        url = re.search(rf'"(/static/{re.escape(name)}\?v=[0-9a-f]+)"', page)
        assert url is not None, name
        answer = await Http(server.url).get(url[1])
        assert answer.status == 200 and answer.body
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (await Http(server.url).get("/static/console.css")).headers["cache-control"] == "no-cache"
    assert (await Http(server.url).get("/static/nothing.js")).status == 404
