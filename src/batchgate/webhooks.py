"""Callback signatures as the Standard Webhooks specification gives them, for senders and receivers.

    webhook-signature: v1,<base64 HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>

The key is the bytes a `whsec_` secret encodes in base64 (each API key has its own webhook secret
of that form, so the official `standardwebhooks` libraries verify our callbacks). A key made before
webhook secrets existed signs with its API secret's UTF-8 bytes instead, as it always did. While a
webhook secret is being rotated, a callback carries one signature per live secret, space-separated,
and a receiver accepts it when any one verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

from batchgate.protocol.errors import BatchgateError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks secret format's prefix, not a password


class InvalidSignature(BatchgateError):
    """The callback's signature does not verify."""


def new_secret() -> str:
    """A webhook secret: whsec_ and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()  # a key made before webhook secrets: its API secret, as it was
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("a whsec_ secret must be followed by base64") from exc


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def sign(
    secrets: str | Sequence[str], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The headers that sign one attempt of a callback, with one signature per secret given."""
    at = int(time.time()) if timestamp is None else timestamp
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": " ".join(signature(key, msg_id, at, body) for key in keys),
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: int = 300) -> None:
    """Checks a received callback; raises InvalidSignature when it is not from the key's owner or too old.

    `secret` is the key's webhook secret (`whsec_...`; for a key made before 0.2, its API secret).
    `headers` may use any case. Use the raw body bytes, before any JSON decoding.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        msg_id, timestamp = lowered["webhook-id"], int(lowered["webhook-timestamp"])
        offered = lowered["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise InvalidSignature("missing or malformed webhook headers") from exc
    if abs(time.time() - timestamp) > tolerance_s:
        raise InvalidSignature("webhook-timestamp is outside the tolerance")
    expected = signature(secret, msg_id, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, candidate.encode()) for candidate in offered):
        raise InvalidSignature("no webhook-signature matches")
