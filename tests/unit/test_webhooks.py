"""Standard Webhooks signatures: what batchgate sends verifies, and tampering does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from batchgate import webhooks

BODY = b'{"asyncId":"x","results":[]}'


def test_the_signature_is_hmac_sha256_of_id_timestamp_and_body() -> None:
    expected = base64.b64encode(hmac.new(b"secret", b"msg_1.1700000000." + BODY, hashlib.sha256).digest())
    assert webhooks.signature("secret", "msg_1", 1700000000, BODY) == "v1," + expected.decode()


def test_signed_headers_verify_in_any_case() -> None:
    headers = {name.upper(): value for name, value in webhooks.sign("secret", "msg_1", BODY).items()}
    webhooks.verify("secret", headers, BODY)


@pytest.mark.parametrize(("secret", "body"), [("other", BODY), ("secret", BODY + b" ")])
def test_a_wrong_secret_or_changed_body_does_not_verify(secret: str, body: bytes) -> None:
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify(secret, webhooks.sign("secret", "msg_1", BODY), body)


def test_an_old_timestamp_does_not_verify() -> None:
    headers = webhooks.sign("secret", "msg_1", BODY, timestamp=int(time.time()) - 3600)
    with pytest.raises(webhooks.InvalidSignature, match="tolerance"):
        webhooks.verify("secret", headers, BODY)


def test_missing_headers_do_not_verify() -> None:
    with pytest.raises(webhooks.InvalidSignature, match="missing"):
        webhooks.verify("secret", {}, BODY)
