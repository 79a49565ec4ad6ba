"""The admin JSON API under /admin/api/: what the console shows and does, for scripts. Reads are
GETs; every change is a POST, audited with the caller as its actor (docs/console.md)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from batchgate.admin import shapes
from batchgate.admin.auth import Caller
from batchgate.admin.http import Request, Response, Route, json, route
from batchgate.admin.query import batch_filter, cursor, cursor_of, limit_of
from batchgate.admin.service import AdminService
from batchgate.protocol.errors import BadRequest

PREFIX = "/admin/api"
DEFAULT_OVERLAP_S = 24 * 3600.0


class AdminApi:
    def __init__(self, service: AdminService, *, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            route("GET", f"{PREFIX}/session", self.session),
            route("GET", f"{PREFIX}/batches", self.batches),
            route("GET", f"{PREFIX}/batches/{{batch_id}}", self.batch),
            route("POST", f"{PREFIX}/batches/{{batch_id}}/cancel", self.cancel),
            route("POST", f"{PREFIX}/batches/{{batch_id}}/restart", self.restart),
            route("POST", f"{PREFIX}/batches/{{batch_id}}/repost", self.repost),
            route("GET", f"{PREFIX}/deliveries/failed", self.failed_deliveries),
            route("POST", f"{PREFIX}/deliveries/redeliver-all", self.redeliver_all),
            route("POST", f"{PREFIX}/deliveries/{{delivery_id}}/redeliver", self.redeliver),
            route("GET", f"{PREFIX}/keys", self.keys),
            route("POST", f"{PREFIX}/keys", self.create_key),
            route("POST", f"{PREFIX}/keys/{{key}}/revoke", self.revoke_key),
            route("POST", f"{PREFIX}/keys/{{key}}/rotate-webhook-secret", self.rotate_webhook_secret),
            route("GET", f"{PREFIX}/system", self.system),
            route("GET", f"{PREFIX}/audit", self.audit),
        ]

    # reads -------------------------------------------------------------------
    async def session(self, request: Request, caller: Caller) -> Response:
        """Who the caller is and, for a session, the CSRF token its changes need."""
        return json({"actor": caller.actor, "via": caller.via.value, "csrfToken": caller.csrf or None})

    async def batches(self, request: Request, caller: Caller) -> Response:
        found = batch_filter(request.query, self.clock())
        page = await self.service.batches(
            account=found.account,
            status=found.status,
            since=found.since,
            limit=found.limit + 1,
            before=found.before,
        )
        more = len(page) > found.limit
        page = page[: found.limit]
        callbacks = await self.service.callbacks(page)
        return json(
            {
                "batches": [shapes.batch_summary(batch, callbacks[batch.id]) for batch in page],
                "nextCursor": cursor(page[-1].created_at, page[-1].id) if more else None,
            }
        )

    async def batch(self, request: Request, caller: Caller, batch_id: str) -> Response:
        return json(shapes.batch_detail(await self.service.batch(batch_id)))

    async def failed_deliveries(self, request: Request, caller: Caller) -> Response:
        limit = limit_of(request.query.get("limit", ""))
        page = await self.service.failed_deliveries(
            limit=limit + 1, before=cursor_of(request.query.get("cursor", ""))
        )
        more = len(page) > limit
        page = page[:limit]
        return json(
            {
                "deliveries": [shapes.delivery(view) for view in page],
                "nextCursor": cursor(page[-1].created_at, page[-1].id) if more else None,
            }
        )

    async def keys(self, request: Request, caller: Caller) -> Response:
        return json({"keys": [shapes.key(api_key) for api_key in await self.service.keys()]})

    async def system(self, request: Request, caller: Caller) -> Response:
        return json(shapes.system(await self.service.system(), self.clock()))

    async def audit(self, request: Request, caller: Caller) -> Response:
        entries = await self.service.audit_log(limit=limit_of(request.query.get("limit", "")))
        return json({"entries": [shapes.audit(entry) for entry in entries]})

    # changes -------------------------------------------------------------------
    async def cancel(self, request: Request, caller: Caller, batch_id: str) -> Response:
        change = await self.service.cancel(batch_id, actor=caller.actor)
        return json({"cancelled": change.value})  # done, or requested: its worker stops it

    async def restart(self, request: Request, caller: Caller, batch_id: str) -> Response:
        failed_only = request.json().get("failedOnly", False)
        if not isinstance(failed_only, bool):
            raise BadRequest("failedOnly must be true or false")
        await self.service.restart(batch_id, failed_only=failed_only, actor=caller.actor)
        return json({"restarted": True, "failedOnly": failed_only})

    async def repost(self, request: Request, caller: Caller, batch_id: str) -> Response:
        await self.service.repost(batch_id, actor=caller.actor)
        return json({"reposted": True})

    async def redeliver(self, request: Request, caller: Caller, delivery_id: str) -> Response:
        await self.service.redeliver(delivery_id, actor=caller.actor)
        return json({"redelivered": 1})

    async def redeliver_all(self, request: Request, caller: Caller) -> Response:
        return json({"redelivered": await self.service.redeliver_all(actor=caller.actor)})

    async def create_key(self, request: Request, caller: Caller) -> Response:
        account = request.json().get("account")
        if not isinstance(account, str):
            raise BadRequest("account (the name of the account the key is for) is required")
        created = await self.service.create_key(account, actor=caller.actor)
        return json(shapes.new_key(created), status=201)

    async def revoke_key(self, request: Request, caller: Caller, key: str) -> Response:
        await self.service.revoke_key(key, actor=caller.actor)
        return json({"revoked": True})

    async def rotate_webhook_secret(self, request: Request, caller: Caller, key: str) -> Response:
        overlap_s = overlap_of(request.json().get("overlapSeconds", DEFAULT_OVERLAP_S))
        rotated = await self.service.rotate_webhook_secret(key, overlap_s=overlap_s, actor=caller.actor)
        return json({**shapes.key(rotated), "webhookSecret": rotated.webhook_secret})


def overlap_of(value: Any) -> float:
    """How long a rotated-out webhook secret keeps signing: 0 to 30 days, in seconds."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest("overlapSeconds must be a number of seconds")
    if not 0 <= value <= 30 * 86400:
        raise BadRequest("overlapSeconds must be from 0 to 2592000 (30 days)")
    return float(value)
