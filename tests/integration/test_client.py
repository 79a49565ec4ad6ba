"""The Python client against what is not batchgate: nobody listening, or a proxy's error page."""

from __future__ import annotations

import pytest
from aiohttp import web

from batchgate import BatchgateError
from batchgate.client import ApiError, AsyncClient, Client, ClientError, Unreachable

from support import free_port


async def test_a_server_that_cannot_be_reached_is_the_clients_own_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url, "key", "secret") as api:
        with pytest.raises(Unreachable, match=f"could not reach {url}") as caught:
            await api.call("test", "ping")
    assert isinstance(caught.value, ClientError) and isinstance(caught.value, BatchgateError)


def test_the_sync_client_raises_the_same() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", "key", "secret") as api, pytest.raises(Unreachable):
        api.progress("0" * 32)


async def test_an_answer_that_is_not_json_is_an_api_error_with_its_text() -> None:
    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>502 Bad Gateway</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/{tail:.*}", bad_gateway)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}", "key", "secret") as api:
            with pytest.raises(ApiError) as caught:
                await api.call("test", "ping")
        assert caught.value.error_code == 502
        assert caught.value.body["message"] == "<html>502 Bad Gateway</html>"
    finally:
        await runner.cleanup()
