"""IWS request signing (docs/protocol.md §2), shared by the server that verifies and the client that signs.

    stringToSign = lowercase(method + contentMD5 + contentType + date + requestURI + "1.0" + ivvyHeaders)
    signature    = hex HMAC-SHA1(secret, stringToSign)

Both official SDKs are accepted: Content-Type with or without a charset (it is signed exactly as
sent), `IVVY-Date` with or without ` UTC`, or an RFC 1123 `Date` header instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from batchgate.protocol.errors import StaleRequest, Unauthorized
from batchgate.protocol.paths import API_VERSION
from batchgate.protocol.timestamps import format_timestamp, parse_http_date, parse_timestamp

MAX_CLOCK_SKEW = timedelta(minutes=5)
AUTH_HEADER = "x-api-authorization"


def content_md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def ivvy_headers(headers: Mapping[str, str]) -> str:
    """The `IVVY*` headers as `name=value`, dashes and underscores removed, sorted, joined by `&`."""
    pairs = sorted(
        (name.replace("-", "").replace("_", "").lower(), value)
        for name, value in headers.items()
        if name.lower().startswith("ivvy")
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


def string_to_sign(*, method: str, body_md5: str, content_type: str, date: str, uri: str, ivvy: str) -> str:
    return (method + body_md5 + content_type + date + uri + API_VERSION + ivvy).lower()


def signature(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha1).hexdigest()


@dataclass(frozen=True)
class SignedRequest:
    """What the server needs of a request to authenticate it (header names in lower case); the body
    is checked apart, once the headers have been (see `verify_headers`)."""

    method: str
    uri: str
    headers: Mapping[str, str]
    body: bytes = b""


_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{40}")  # hex HMAC-SHA1


def parse_authorization(value: str | None) -> tuple[str, str]:
    """`IWS key:signature` -> (key, signature); a key or signature of another shape is refused here,
    before anything is looked up."""
    scheme, _, credentials = (value or "").strip().partition(" ")
    key, _, offered = credentials.strip().partition(":")
    if scheme.upper() != "IWS" or not _KEY.fullmatch(key) or not _SIGNATURE.fullmatch(offered):
        raise Unauthorized("Missing or malformed X-Api-Authorization header (expected 'IWS key:signature')")
    return key, offered.lower()


def verify_headers(
    request: SignedRequest, *, secret: str, offered: str, now: datetime | None = None
) -> datetime:
    """Checks the signature and the date, from the headers alone: the signature covers the body
    through its Content-MD5 header, which `verify_body` then holds the body to. Returns the date the
    request was signed at; raises Unauthorized (StaleRequest for a date outside the window)."""
    declared_md5 = request.headers.get("content-md5", "").strip().lower()
    ivvy_date = request.headers.get("ivvy-date")
    date = "" if ivvy_date is not None else request.headers.get("date", "")
    text = string_to_sign(
        method=request.method,
        body_md5=declared_md5,
        content_type=request.headers.get("content-type", ""),
        date=date,
        uri=request.uri,
        ivvy=ivvy_headers(request.headers),
    )
    if not hmac.compare_digest(signature(secret, text).encode(), offered.lower().encode()):
        raise Unauthorized("Signature does not match")
    return _check_fresh(ivvy_date, date, now or datetime.now(UTC))


def verify_body(request: SignedRequest, body: bytes) -> None:
    """Holds the body to the Content-MD5 the signature covered."""
    if request.headers.get("content-md5", "").strip().lower() != content_md5(body):
        raise Unauthorized("Content-MD5 does not match the request body")


def verify(request: SignedRequest, *, secret: str, offered: str, now: datetime | None = None) -> datetime:
    """Checks a whole request, its body included (`verify_headers`, then `verify_body`)."""
    sent = verify_headers(request, secret=secret, offered=offered, now=now)
    verify_body(request, request.body)
    return sent


def _check_fresh(ivvy_date: str | None, date: str, now: datetime) -> datetime:
    try:
        sent = parse_timestamp(ivvy_date) if ivvy_date is not None else parse_http_date(date)
        late = abs(now - sent) > MAX_CLOCK_SKEW
    except (ValueError, OverflowError) as exc:
        raise Unauthorized("Missing or malformed IVVY-Date or Date header") from exc
    if late:
        raise StaleRequest()
    return sent


def sign_headers(
    *,
    key: str,
    secret: str,
    uri: str,
    body: bytes,
    content_type: str = "application/json",
    date_suffix: str = "",
    now: datetime | None = None,
    method: str = "POST",
) -> dict[str, str]:
    """The headers of a signed request, in the JavaScript SDK's style by default."""
    body_md5 = content_md5(body)
    ivvy_date = format_timestamp(now or datetime.now(UTC)) + date_suffix
    text = string_to_sign(
        method=method,
        body_md5=body_md5,
        content_type=content_type,
        date="",
        uri=uri,
        ivvy=ivvy_headers({"IVVY-Date": ivvy_date}),
    )
    return {
        "Content-Type": content_type,
        "Content-MD5": body_md5,
        "IVVY-Date": ivvy_date,
        "X-Api-Version": API_VERSION,
        "X-Api-Authorization": f"IWS {key}:{signature(secret, text)}",
    }
