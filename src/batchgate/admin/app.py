"""The admin listener's ASGI application (a first cut: metrics and the system overview; the
console and the rest of the admin API come next)."""

from __future__ import annotations

import hmac
from typing import Any

import orjson

from batchgate import metrics
from batchgate.admin.service import AdminService
from batchgate.server.envelope import Receive, Scope, Send


def create_admin_app(service: AdminService, *, token: str | None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        offered = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token and not hmac.compare_digest(offered.encode(), token.encode()):
            await _send(send, 401, b'{"error": "an admin token is needed"}', b"application/json")
            return
        if scope["path"] == "/metrics":
            await service.refresh_gauges()
            await _send(send, 200, metrics.exposition(), b"text/plain; version=0.0.4")
            return
        await _send(send, 404, orjson.dumps({"error": "not found"}), b"application/json")

    return app


async def _send(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
