"""Who is asking the admin listener, and whether they may change something.

Two credentials open it: the admin token as `Authorization: Bearer <token>` (scripts, Prometheus),
or the console's session, a cookie the login form sets once the token is typed in. The cookie is
signed with a key derived from the token (changing the token ends every session), carries its
expiry and a random CSRF token, and is HttpOnly, Secure and SameSite=Strict. Every state-changing
request made with a session must also present its CSRF token (a form field or the X-CSRF-Token
header) and, when the browser says where it comes from (Origin), come from the console itself.

Without a configured token (the listener is then on loopback only) the console is open: each
browser gets an anonymous session, so changes still need its CSRF token. An API key never opens
anything here. Secrets are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import orjson

from batchgate.admin.http import Request

SESSION_S = 8 * 3600.0
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
BEARER_ACTOR = "admin-api"
CONSOLE_ACTOR = "console"
MAX_NAME = 40


class Via(Enum):
    BEARER = "bearer"  # the admin token in an Authorization header: no CSRF to check
    SESSION = "session"  # the console's cookie, after logging in
    OPEN = "open"  # no token is configured: an anonymous session on a loopback listener


@dataclass(frozen=True, slots=True)
class Caller:
    """An admitted request's author: `actor` is what the audit log records."""

    actor: str
    via: Via
    csrf: str = ""  # the session's CSRF token, for the page's forms and scripts
    set_cookie: bytes | None = None  # a session just issued, to send with the answer


@dataclass(frozen=True, slots=True)
class Session:
    name: str
    csrf: str
    expires_at: float

    @property
    def actor(self) -> str:
        return f"{CONSOLE_ACTOR}:{self.name}" if self.name else CONSOLE_ACTOR


class Guard:
    """Checks credentials and issues sessions; `token` None leaves the console open (loopback)."""

    def __init__(
        self, token: str | None, *, session_s: float = SESSION_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.token = token
        self.session_s = session_s
        self.clock = clock
        secret = token.encode() if token else secrets.token_bytes(32)
        self._key = hmac.new(secret, b"batchgate admin session", hashlib.sha256).digest()

    @property
    def open(self) -> bool:
        return not self.token

    def cookie_name(self, request: Request) -> str:
        """Cookies are not kept apart by port: each admin listener names its own."""
        return f"batchgate_admin_{request.port or 0}"

    def admit(self, request: Request) -> Caller | None:
        """The caller, or None when the request carries no valid credential. A wrong bearer token
        is refused even when a valid session comes with it."""
        offered = request.headers.get("authorization")
        if offered is not None and not self.open:
            scheme, _, value = offered.partition(" ")
            if scheme.lower() == "bearer" and self.token_matches(value.strip()):
                return Caller(BEARER_ACTOR, Via.BEARER)
            return None
        session = self.session(request)
        if session is not None:
            return Caller(session.actor, Via.OPEN if self.open else Via.SESSION, session.csrf)
        if self.open:
            session = self.new_session("")
            return Caller(session.actor, Via.OPEN, session.csrf, self.cookie(request, session))
        return None

    def token_matches(self, offered: str) -> bool:
        if not self.token:
            return False
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def may_change(self, request: Request, caller: Caller, offered_csrf: str | None) -> str | None:
        """Why a state-changing request may not go ahead, or None when it may."""
        if caller.via is Via.BEARER:
            return None
        if not offered_csrf or not hmac.compare_digest(offered_csrf.encode(), caller.csrf.encode()):
            return "this change needs the console's CSRF token (reload the page and try again)"
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            return f"a change may not come from another site ({origin})"
        return None

    # sessions ------------------------------------------------------------------
    def new_session(self, name: str) -> Session:
        clean = "".join(ch for ch in name.strip() if ch.isprintable())[:MAX_NAME]
        return Session(clean, secrets.token_urlsafe(24), self.clock() + self.session_s)

    def cookie(self, request: Request, session: Session) -> bytes:
        value = self.seal({"n": session.name, "c": session.csrf, "e": session.expires_at})
        return _cookie(self.cookie_name(request), value, self.session_s)

    def cleared(self, request: Request) -> bytes:
        return _cookie(self.cookie_name(request), "", 0)

    def session(self, request: Request) -> Session | None:
        """The request's session when its cookie is signed with our key and has not expired."""
        fields = self.unseal(request.cookies.get(self.cookie_name(request), ""))
        try:
            session = Session(str(fields["n"]), str(fields["c"]), float(fields["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > self.clock() else None

    # signed values -------------------------------------------------------------
    def seal(self, fields: dict[str, Any]) -> str:
        """`fields` as a cookie value that only this key could have made."""
        payload = _b64(orjson.dumps(fields))
        return f"{payload}.{self._sign(payload)}"

    def unseal(self, value: str) -> dict[str, Any]:
        """What `seal` made; empty when the value was not made by it."""
        payload, _, signature = value.partition(".")
        if not payload or not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return {}
        try:
            fields = orjson.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            return {}
        return fields if isinstance(fields, dict) else {}

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _cookie(name: str, value: str, max_age_s: float) -> bytes:
    return f"{name}={value}; Path=/; Max-Age={int(max_age_s)}; HttpOnly; Secure; SameSite=Strict".encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
