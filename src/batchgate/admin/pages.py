"""The console: server-rendered pages over the AdminService. A page that changes while one looks at
it marks its live parts; asked with `X-Live: 1` it renders those alone (console.js polls every 2 s).
A change is a form POST with the CSRF token; it asks for a confirm step first (a dialog, or this
page's own confirm page without JavaScript), then redirects back with a message (post/redirect/get)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from batchgate.admin import chart
from batchgate.admin.api import DEFAULT_OVERLAP_S, overlap_of
from batchgate.admin.auth import CSRF_FIELD, Caller, Guard, Via
from batchgate.admin.http import Request, Response, Route, html, redirect, route
from batchgate.admin.query import SINCE_CHOICES, batch_filter, cursor, cursor_of
from batchgate.admin.render import Pages
from batchgate.admin.service import AdminError, AdminNotFound, AdminService
from batchgate.models import BatchStatus, DeliveryStatus

OVERLAP_CHOICES = ((0, "none"), (3600, "1 hour"), (86400, "24 hours"), (7 * 86400, "7 days"))
LOGIN_DELAY_S = 0.5  # after a wrong token
BATCH_CHANGES = {  # action: (title, text, button, danger)
    "cancel": (
        "Cancel this batch?",
        "The jobs of batch {batch_id} that have not run will not run; its callback is sent with what "
        "finished.",
        "Cancel batch",
        True,
    ),
    "restart": (
        "Restart this batch?",
        "Every job of batch {batch_id} runs again from the first, then its callback is sent again.",
        "Restart batch",
        True,
    ),
    "restart-failed": (
        "Restart its failed jobs?",
        "The failed jobs of batch {batch_id} run again, then its callback is sent again.",
        "Restart failed jobs",
        False,
    ),
    "repost": (
        "Send the callback again?",
        "The results of batch {batch_id} are POSTed to its callback URL again.",
        "Redeliver callback",
        False,
    ),
}


@dataclass(frozen=True, slots=True)
class Confirm:
    """What a change does, asked before it is done."""

    title: str
    text: str
    button: str
    danger: bool = False


class Console:
    def __init__(
        self, service: AdminService, guard: Guard, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.service = service
        self.guard = guard
        self.clock = clock
        self.pages = Pages()

    def routes(self) -> list[Route]:
        return [
            route("GET", "/", self.home),
            route("GET", "/batches", self.batches),
            route("GET", "/batches/{batch_id}", self.batch),
            route("POST", "/batches/{batch_id}/{action}", self.batch_action),
            route("GET", "/deliveries", self.deliveries),
            route("POST", "/deliveries/redeliver-all", self.redeliver_all),
            route("POST", "/deliveries/{delivery_id}/redeliver", self.redeliver),
            route("GET", "/keys", self.keys),
            route("POST", "/keys", self.create_key),
            route("POST", "/keys/{key}/{action}", self.key_action),
            route("GET", "/system", self.system),
            route("GET", "/audit", self.audit),
            route("POST", "/logout", self.logout),
        ]

    # rendering -------------------------------------------------------------------
    def page(
        self, request: Request, caller: Caller | None, name: str, status: int = 200, **context: Any
    ) -> Response:
        """The page `name`, or only its live part for console.js; with the message left by a change."""
        live = request.headers.get("x-live") == "1"
        flash = {} if live else self.guard.unseal(request.cookies.get(self._flash_cookie(request), ""))
        body = self.pages.render(
            f"{name}.html",
            page=name,
            live=live,
            caller=caller,
            csrf=caller.csrf if caller else "",
            csrf_field=CSRF_FIELD,
            logged_in=caller is not None and caller.via is Via.SESSION,
            open_console=self.guard.open,
            now=self.clock(),
            flash=flash,
            **context,
        )
        response = html(body, status)
        if flash:
            response.set_cookie(self._flash(request, {}))
        return response

    def error_page(self, request: Request, caller: Caller | None, status: int, message: str) -> Response:
        return self.page(request, caller, "error", status, code=status, message=message)

    def done(self, request: Request, back: str, kind: str, text: str) -> Response:
        """Back to the page, with a message that it shows once."""
        return redirect(back).set_cookie(self._flash(request, {"kind": kind, "text": text}))

    def _flash_cookie(self, request: Request) -> str:
        return self.guard.cookie_name(request) + "_flash"

    def _flash(self, request: Request, message: dict[str, str]) -> bytes:
        value = self.guard.seal(message) if message else ""
        return (
            f"{self._flash_cookie(request)}={value}; Path=/; Max-Age={60 if message else 0}; "
            "HttpOnly; Secure; SameSite=Strict"
        ).encode()

    def confirm(self, request: Request, caller: Caller, confirm: Confirm, *, back: str) -> Response:
        """The confirm step, as a page: the same form again, confirmed (console.js asks in a dialog)."""
        fields = {k: v for k, v in request.form().items() if k not in ("confirmed", CSRF_FIELD)}
        return self.page(
            request, caller, "confirm", confirm=confirm, action=request.path, fields=fields, back=back
        )

    async def act(
        self,
        request: Request,
        caller: Caller,
        confirm: Confirm,
        change: Callable[[], Awaitable[str]],
        *,
        back: str,
    ) -> Response:
        """A change, once confirmed; its outcome said on the page it came from."""
        if request.form().get("confirmed") != "yes":
            return self.confirm(request, caller, confirm, back=back)
        try:
            said = await change()
        except AdminError as exc:
            return self.done(request, back, "error", str(exc))
        return self.done(request, back, "ok", said)

    # pages -----------------------------------------------------------------------
    async def home(self, request: Request, caller: Caller) -> Response:
        return redirect("/batches")

    async def batches(self, request: Request, caller: Caller) -> Response:
        lookup = request.query.get("q", "").strip()
        if lookup:
            try:
                await self.service.batch(lookup)
            except AdminNotFound:
                return self.done(request, "/batches", "error", f"there is no batch {lookup}")
            return redirect(f"/batches/{lookup}")
        now = self.clock()
        found = batch_filter(request.query, now)
        page = await self.service.batches(
            account=found.account,
            status=found.status,
            since=found.since,
            limit=found.limit + 1,
            before=found.before,
        )
        more = len(page) > found.limit
        page = page[: found.limit]
        filters = {
            k: request.query.get(k, "") for k in ("account", "status", "since") if request.query.get(k)
        }
        older = urlencode({**filters, "cursor": cursor(page[-1].created_at, page[-1].id)}) if more else None
        system = await self.service.system()
        return self.page(
            request,
            caller,
            "batches",
            batches=page,
            callbacks=await self.service.callbacks(page),
            filters=filters,
            older=older,
            paged=found.before is not None,
            statuses=[status.value for status in BatchStatus],
            since_choices=SINCE_CHOICES,
            overview=system.overview,
            workers=len(system.workers),
            series=chart.per_minute(system.overview.jobs_per_minute, now),
        )

    async def batch(self, request: Request, caller: Caller, batch_id: str) -> Response:
        try:
            detail = await self.service.batch(batch_id)
        except AdminNotFound as exc:
            return self.error_page(request, caller, 404, str(exc))
        tries = defaultdict(list)
        for attempt in detail.attempts:
            tries[attempt.delivery_id].append(attempt)
        waiting = any(view.status is DeliveryStatus.PENDING for view in detail.deliveries)
        return self.page(
            request,
            caller,
            "batch",
            detail=detail,
            b=detail.batch,
            tries=tries,
            callback=detail.status()["callback"],
            settled=detail.batch.status.finished and not waiting,
        )

    async def deliveries(self, request: Request, caller: Caller) -> Response:
        before = cursor_of(request.query.get("cursor", ""))
        page = await self.service.failed_deliveries(limit=51, before=before)
        older = urlencode({"cursor": cursor(page[49].created_at, page[49].id)}) if len(page) > 50 else None
        overview = (await self.service.system()).overview
        return self.page(
            request,
            caller,
            "deliveries",
            deliveries=page[:50],
            older=older,
            paged=before is not None,
            total=overview.deliveries_failed,
        )

    async def keys(self, request: Request, caller: Caller, **shown: Any) -> Response:
        keys = sorted(await self.service.keys(), key=lambda k: (k.revoked_at is not None, -k.created_at))
        return self.page(
            request,
            caller,
            "keys",
            keys=keys,
            overlaps=OVERLAP_CHOICES,
            default_overlap=int(DEFAULT_OVERLAP_S),
            shown=shown,
        )

    async def system(self, request: Request, caller: Caller) -> Response:
        now = self.clock()
        system = await self.service.system()
        return self.page(
            request,
            caller,
            "system",
            overview=system.overview,
            workers=system.workers,
            series=chart.per_minute(system.overview.jobs_per_minute, now),
            entries=await self.service.audit_log(limit=10),
        )

    async def audit(self, request: Request, caller: Caller) -> Response:
        limit = 500 if request.query.get("all") else 100
        return self.page(
            request, caller, "audit", entries=await self.service.audit_log(limit=limit), limit=limit
        )

    # changes ---------------------------------------------------------------------
    async def batch_action(self, request: Request, caller: Caller, batch_id: str, action: str) -> Response:
        if action not in BATCH_CHANGES:
            return self.error_page(request, caller, 404, f"there is no action {action} on batches")
        title, text, button, danger = BATCH_CHANGES[action]
        confirm = Confirm(title, text.format(batch_id=batch_id), button, danger)

        async def change() -> str:
            if action == "cancel":
                done = await self.service.cancel(batch_id, actor=caller.actor)
                return (
                    "Batch cancelled." if done.value == "done" else "Cancel requested: its worker stops it."
                )
            if action == "repost":
                await self.service.repost(batch_id, actor=caller.actor)
                return "The callback is queued again."
            failed_only = action == "restart-failed"
            await self.service.restart(batch_id, failed_only=failed_only, actor=caller.actor)
            return "The failed jobs run again." if failed_only else "Batch restarted: every job runs again."

        return await self.act(request, caller, confirm, change, back=f"/batches/{batch_id}")

    async def redeliver(self, request: Request, caller: Caller, delivery_id: str) -> Response:
        async def change() -> str:
            await self.service.redeliver(delivery_id, actor=caller.actor)
            return f"Delivery {delivery_id} is sent again."

        confirm = Confirm(
            "Redeliver this callback?",
            f"Delivery {delivery_id} is tried once more, with the same webhook-id, then on its retry "
            "schedule.",
            "Redeliver",
        )
        return await self.act(request, caller, confirm, change, back=_back(request.form(), "/deliveries"))

    async def redeliver_all(self, request: Request, caller: Caller) -> Response:
        async def change() -> str:
            count = await self.service.redeliver_all(actor=caller.actor)
            return f"{count} failed {'delivery is' if count == 1 else 'deliveries are'} sent again."

        confirm = Confirm(
            "Redeliver every failed callback?",
            "Each failed delivery is tried once more, then on its retry schedule.",
            "Redeliver all",
        )
        return await self.act(request, caller, confirm, change, back="/deliveries")

    async def create_key(self, request: Request, caller: Caller) -> Response:
        account = request.form().get("account", "")
        try:
            created = await self.service.create_key(account, actor=caller.actor)
        except AdminError as exc:
            return self.done(request, "/keys", "error", str(exc))
        return await self.keys(request, caller, created=created)

    async def key_action(self, request: Request, caller: Caller, key: str, action: str) -> Response:
        if action == "revoke":
            return await self.revoke_key(request, caller, key)
        if action == "rotate":
            return await self.rotate(request, caller, key)
        return self.error_page(request, caller, 404, f"there is no action {action} on keys")

    async def revoke_key(self, request: Request, caller: Caller, key: str) -> Response:
        async def change() -> str:
            await self.service.revoke_key(key, actor=caller.actor)
            return f"Key {key} is revoked."

        confirm = Confirm(
            "Revoke this key?",
            f"Requests signed with key {key} are refused from now on (463, Key Revoked). "
            "This cannot be undone.",
            "Revoke key",
            danger=True,
        )
        return await self.act(request, caller, confirm, change, back="/keys")

    async def rotate(self, request: Request, caller: Caller, key: str) -> Response:
        form = request.form()
        overlap_s = overlap_of(form.get("overlap", DEFAULT_OVERLAP_S))
        if form.get("confirmed") != "yes":
            confirm = Confirm(
                "Rotate the webhook secret?",
                f"Key {key} gets a new webhook secret; the old one keeps signing callbacks beside it "
                "until the overlap ends.",
                "Rotate webhook secret",
            )
            return self.confirm(request, caller, confirm, back="/keys")
        try:
            rotated = await self.service.rotate_webhook_secret(key, overlap_s=overlap_s, actor=caller.actor)
        except AdminError as exc:
            return self.done(request, "/keys", "error", str(exc))
        return await self.keys(request, caller, rotated=rotated)

    async def logout(self, request: Request, caller: Caller) -> Response:
        return redirect("/login").set_cookie(self.guard.cleared(request))

    # logging in (no caller yet) ------------------------------------------------------
    def login_page(self, request: Request, *, error: str = "", status: int = 200) -> Response:
        return self.page(
            request, None, "login", status, next=_next(request.query.get("next", "")), error=error
        )

    async def login(self, request: Request) -> Response:
        form = request.form()
        if not self.guard.token_matches(form.get("token", "")):
            await asyncio.sleep(LOGIN_DELAY_S)
            return self.page(
                request,
                None,
                "login",
                401,
                next=_next(form.get("next", "")),
                error="That is not the admin token.",
            )
        session = self.guard.new_session(form.get("name", ""))
        return redirect(_next(form.get("next", ""))).set_cookie(self.guard.cookie(request, session))


def _next(target: str) -> str:
    """Where to go after logging in: a path of this console only, never another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/batches"
    return target


def _back(form: dict[str, str], default: str) -> str:
    back = form.get("back", "")
    return back if back.startswith("/") and not back.startswith("//") and "\\" not in back else default
