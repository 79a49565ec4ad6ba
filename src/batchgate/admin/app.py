"""The admin listener's ASGI application: the console (/), its JSON API (/admin/api/) and Prometheus
metrics (/metrics), behind one guard (batchgate.admin.auth). A plain ASGI callable, as the public
API is: this module only admits, routes and turns errors into answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from batchgate import metrics
from batchgate.admin import static
from batchgate.admin.api import PREFIX, AdminApi
from batchgate.admin.auth import CSRF_FIELD, CSRF_HEADER, SESSION_S, Caller, Guard
from batchgate.admin.http import Request, Response, error_json, match, redirect
from batchgate.admin.pages import Console
from batchgate.admin.service import AdminError, AdminNotFound, AdminService
from batchgate.protocol.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    WireError,
)
from batchgate.server.envelope import Receive, Scope, Send

log = logging.getLogger(__name__)
METRICS = "/metrics"
NEEDS_CREDENTIAL = (
    "the admin listener needs its token: Authorization: Bearer <token>, or log in to the console"
)
REFUSED_CREDENTIAL = "the admin token does not match"


class AdminApp:
    def __init__(
        self,
        service: AdminService,
        *,
        token: str | None,
        session_s: float = SESSION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.guard = Guard(token, session_s=session_s, clock=clock)
        self.console = Console(service, self.guard, clock=clock)
        self.routes = AdminApi(service, clock=clock).routes() + self.console.routes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            request = await Request.read(scope, receive)
        except WireError as exc:
            await error_json(exc).send(send)
            return
        response = await self.answer(request)
        await response.send(send, head=request.method == "HEAD")

    async def answer(self, request: Request) -> Response:
        """Never raises: an error is a JSON body for the API and /metrics, a page for the console."""
        try:
            if request.path.startswith(static.PREFIX):
                found = static.serve(request.path, request.query.get("v", ""))
                if found is None:
                    raise NotFound(f"there is nothing at {request.path}")
                return found
            if request.path == "/login":
                return await self._login(request)
            caller = self.guard.admit(request)
            if caller is None:
                return self._unadmitted(request)
            response = await self._dispatch(request, caller)
        except WireError as exc:
            return error_json(exc)
        except Exception:
            log.exception("admin %s %s failed", request.method, request.path)
            failed = InternalError("the admin listener failed: see its log")
            if _machine(request):
                return error_json(failed)
            return self.console.error_page(request, None, failed.error_code, failed.message)
        if caller.set_cookie is not None:
            response.set_cookie(caller.set_cookie)
        return response

    async def _dispatch(self, request: Request, caller: Caller) -> Response:
        try:
            if request.path == METRICS:
                return await self._metrics(request)
            handler, params = match(self.routes, request.method, request.path)
            if request.mutating:
                why = self.guard.may_change(request, caller, _csrf_of(request))
                if why is not None:
                    raise Forbidden(why)
            response: Response = await handler(request, caller, **params)
            return response
        except AdminNotFound as exc:
            return self._error(request, caller, NotFound(str(exc)))
        except AdminError as exc:
            return self._error(request, caller, BadRequest(str(exc)))
        except WireError as exc:
            return self._error(request, caller, exc)

    def _error(self, request: Request, caller: Caller, exc: WireError) -> Response:
        if _machine(request):
            return error_json(exc)
        return self.console.error_page(request, caller, exc.error_code, exc.message)

    def _unadmitted(self, request: Request) -> Response:
        """No valid credential: 401 for the API, /metrics and console.js; the login page for a person."""
        if _machine(request) or request.headers.get("x-live"):
            raise Unauthorized(REFUSED_CREDENTIAL if "authorization" in request.headers else NEEDS_CREDENTIAL)
        target = request.path + ("?" + urlencode(request.query) if request.query else "")
        return redirect("/login?next=" + quote(target if request.method == "GET" else "/", safe=""))

    async def _login(self, request: Request) -> Response:
        if self.guard.open or self.guard.session(request) is not None:
            return redirect("/batches")
        if request.method == "POST":
            return await self.console.login(request)
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{request.method} is not allowed on /login")
        return self.console.login_page(request)

    async def _metrics(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{request.method} is not allowed on {METRICS}")
        await self.service.refresh_gauges()
        return Response(200, metrics.exposition(), b"text/plain; version=0.0.4; charset=utf-8")


def create_admin_app(service: AdminService, *, token: str | None, **options: Any) -> AdminApp:
    """The admin listener's application; without a token the console is open (serve it on loopback)."""
    return AdminApp(service, token=token, **options)


def _machine(request: Request) -> bool:
    """Whether the request is for a program (JSON errors) rather than a person (pages)."""
    return request.path.startswith(PREFIX + "/") or request.path == METRICS


def _csrf_of(request: Request) -> str | None:
    offered = request.headers.get(CSRF_HEADER)
    if offered is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        offered = request.form().get(CSRF_FIELD)
    return offered
