"""Every wire error of the envelope and the batch namespace, over real HTTP; the server stays up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest

from batchgate.client import ApiError
from batchgate.protocol import errors
from batchgate.protocol.signing import sign_headers
from batchgate.settings import Settings
from batchgate.store.sqlite import SQLiteStore

from support import LiveServer, eventually, live_server, raw_post

PING = {"namespace": "test", "action": "ping", "params": {}}


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    small = replace(settings, max_body_bytes=64 * 1024)
    async with live_server(small) as live:
        yield live


async def signed_raw(server: LiveServer, namespace: str, action: str, body: bytes) -> tuple[int, Any]:
    """A correctly signed request whose body is exactly `body`, JSON or not."""
    uri = f"/api/1.0/{namespace}?action={action}"
    headers = sign_headers(key=server.key.key, secret=server.key.secret, uri=uri, body=body)
    return await raw_post(server.url, uri, body, headers)


def assert_wire_error(status: int, body: Any, code: int, specific: int | None = None) -> None:
    assert status == code, body
    assert body["errorCode"] == code and isinstance(body["message"], str) and body["message"]
    if specific is not None:
        assert body["specificCode"] == specific, body


async def test_an_unsigned_call_is_401(server: LiveServer) -> None:
    assert_wire_error(*await raw_post(server.url, "/api/1.0/test?action=ping"), 401)


async def test_a_key_revoked_elsewhere_is_refused_with_463_once_the_cache_expires(settings: Settings) -> None:
    async with live_server(replace(settings, key_cache_s=0.2)) as server, server.client() as api:
        await api.call("test", "ping")  # the key is now cached
        await server.service.store.revoke_key(server.key.key)  # as `batchgate keys revoke` would

        async def status() -> int:
            try:
                await api.call("test", "ping")
            except ApiError as exc:
                return exc.status
            return 200

        assert await eventually(status, until=lambda code: code != 200, timeout_s=2) == 463


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_methods_other_than_post_are_405(server: LiveServer, method: str) -> None:
    assert_wire_error(*await raw_post(server.url, "/api/1.0/test?action=ping", method=method), 405)


@pytest.mark.parametrize(
    "path", ["/api/2.0/test?action=ping", "/api/1.0/test", "/nowhere", "/api/1.0/test/x"]
)
async def test_unknown_paths_are_404_wire_errors(server: LiveServer, path: str) -> None:
    assert_wire_error(*await raw_post(server.url, path), 404)


async def test_a_body_over_the_limit_is_413_before_it_is_read(server: LiveServer) -> None:
    status, body = await signed_raw(server, "test", "echo", b'{"x":"' + b"a" * 70_000 + b'"}')
    assert_wire_error(status, body, 413)


async def test_a_chunked_body_over_the_limit_is_413(server: LiveServer) -> None:
    """No Content-Length to refuse it by: it is cut off as it streams past the limit."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    uri = "/api/1.0/test?action=echo"
    headers = sign_headers(key=server.key.key, secret=server.key.secret, uri=uri, body=b" " * 8192 * 20)
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url + uri, data=chunks(), headers=headers) as response,
    ):
        assert_wire_error(response.status, await response.json(), 413)


@pytest.mark.parametrize(
    "body",
    [
        b'{"jobs": [}',
        b"\xff\xfe{}",
        b'{"a": "\\ud800"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"a": 1e999}',
        b'{"a": NaN}',
        b"nul",
        b'{"a":1}garbage',
    ],
    ids=[
        "malformed",
        "bad-utf8",
        "lone-surrogate",
        "deep-nesting",
        "huge-float",
        "nan",
        "truncated",
        "trailing",
    ],
)
async def test_hostile_json_is_a_400_and_the_server_stays_up(server: LiveServer, body: bytes) -> None:
    assert_wire_error(*await signed_raw(server, "test", "echo", body), 400)
    async with server.client() as api:
        assert "ack" in await api.call("test", "ping")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"null"])
async def test_a_direct_call_whose_body_is_not_an_object_is_400(server: LiveServer, body: bytes) -> None:
    assert_wire_error(*await signed_raw(server, "test", "echo", body), 400)


async def test_huge_integers_are_accepted_without_a_500(server: LiveServer) -> None:
    status, body = await signed_raw(server, "test", "echo", b'{"n": 123456789012345678901234567890}')
    assert status == 200 and body["n"] == pytest.approx(1.2345678901234568e29)


@pytest.mark.parametrize(
    ("params", "specific"),
    [
        ({"jobs": "x"}, errors.INCORRECT_JOB_FORMAT),
        ({"jobs": []}, errors.EMPTY_JOB_PARAMETER),
        ({"jobs": [PING] * 201}, errors.TOO_MANY_JOBS),
        ({"jobs": [PING], "callbackUrl": "http://10.0.0.1/x"}, errors.PARAM_INVALID),
        ({"jobs": [PING], "callbackUrl": 17}, errors.PARAM_INVALID),
    ],
)
async def test_run_refusals_save_nothing(server: LiveServer, params: Any, specific: int) -> None:
    status, body = await signed_raw(server, "batch", "run", orjson.dumps(params))
    assert_wire_error(status, body, 400, specific)
    assert await server.service.store.claim_batches("probe", limit=10, lease_s=1) == []


async def test_an_unsafe_callback_says_why(server: LiveServer) -> None:
    params = {"jobs": [PING], "callbackUrl": "http://169.254.169.254/latest"}
    status, body = await signed_raw(server, "batch", "run", orjson.dumps(params))
    assert_wire_error(status, body, 400, errors.PARAM_INVALID)
    assert body["message"] == "'callbackUrl' does not validate"
    assert "link-local" in " ".join(body["additionalMessages"])


@pytest.mark.parametrize("action", ["progress", "results", "repost", "restart"])
async def test_the_async_parameter_is_required_and_must_be_a_string(server: LiveServer, action: str) -> None:
    assert_wire_error(*await signed_raw(server, "batch", action, b"{}"), 400, errors.PARAM_MISSING)
    assert_wire_error(*await signed_raw(server, "batch", action, b'{"async": 5}'), 400, errors.PARAM_INVALID)


async def test_an_unknown_batch_action_is_404(server: LiveServer) -> None:
    assert_wire_error(*await signed_raw(server, "batch", "explode", b"{}"), 404)


async def test_test_sleep_beyond_the_cap_is_refused(server: LiveServer) -> None:
    status, body = await signed_raw(server, "test", "sleep", b'{"seconds": 31}')
    assert_wire_error(status, body, 400, errors.PARAM_INVALID)


async def test_a_job_calling_the_batch_namespace_gets_a_403_response(server: LiveServer) -> None:
    async with server.client() as api:
        async_id = await api.run(
            [{"namespace": "batch", "action": "progress", "params": {"async": "x"}}, PING]
        )
        results = (await api.wait(async_id, poll_s=0.02))["results"]
    assert results[0]["response"]["errorCode"] == 403
    assert "ack" in results[1]["response"]


async def test_a_failed_save_is_500_24091(server: LiveServer) -> None:
    store = server.service.store
    assert isinstance(store, SQLiteStore)
    # The database refuses writes (as a full disk would) while reads, and so authentication, still work.
    await store._in_writer(lambda: store._connection().execute("PRAGMA query_only = ON"))
    status, body = await signed_raw(server, "batch", "run", orjson.dumps({"jobs": [PING]}))
    assert_wire_error(status, body, 500, errors.NOT_SAVED)
