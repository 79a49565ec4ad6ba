"""IWS request signing (docs/protocol.md §2), shared by the server that verifies and the client that signs.

    stringToSign = lowercase(method + contentMD5 + contentType + date + requestURI + "1.0" + ivvyHeaders)
    signature    = hex HMAC-SHA1(secret, stringToSign)

Both official SDKs are accepted: Content-Type with or without a charset (it is signed exactly as
sent), `IVVY-Date` with or without ` UTC`, or an RFC 1123 `Date` header instead.
"""

from __future__ import annotations

import hashlib
import hmac
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
    """What the server needs of a request to authenticate it (header names in lower case)."""

    method: str
    uri: str
    headers: Mapping[str, str]
    body: bytes


def parse_authorization(value: str | None) -> tuple[str, str]:
    """`IWS key:signature` -> (key, signature)."""
    scheme, _, credentials = (value or "").strip().partition(" ")
    key, _, offered = credentials.strip().partition(":")
    if scheme.upper() != "IWS" or not key or not offered:
        raise Unauthorized("Missing or malformed X-Api-Authorization header (expected 'IWS key:signature')")
    return key, offered


def verify(request: SignedRequest, *, secret: str, offered: str, now: datetime | None = None) -> None:
    """Checks a request's body digest, signature and date; raises a WireError (401) when one is wrong.

    `offered` is the signature from `parse_authorization`, `secret` the secret of its key.
    """
    body_md5 = content_md5(request.body)
    if request.headers.get("content-md5", "").strip().lower() != body_md5:
        raise Unauthorized("Content-MD5 does not match the request body")
    ivvy_date = request.headers.get("ivvy-date")
    date = "" if ivvy_date is not None else request.headers.get("date", "")
    text = string_to_sign(
        method=request.method,
        body_md5=body_md5,
        content_type=request.headers.get("content-type", ""),
        date=date,
        uri=request.uri,
        ivvy=ivvy_headers(request.headers),
    )
    if not hmac.compare_digest(signature(secret, text), offered.lower()):
        raise Unauthorized("Signature does not match")
    _check_fresh(ivvy_date, date, now or datetime.now(UTC))


def _check_fresh(ivvy_date: str | None, date: str, now: datetime) -> None:
    try:
        sent = parse_timestamp(ivvy_date) if ivvy_date is not None else parse_http_date(date)
    except ValueError as exc:
        raise Unauthorized("Missing or malformed IVVY-Date or Date header") from exc
    if abs(now - sent) > MAX_CLOCK_SKEW:
        raise StaleRequest()


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
