"""IWS signing as SPEC.md §2 and both official SDKs do it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchgate.protocol.errors import STALE_REQUEST, WireError
from batchgate.protocol.signing import (
    SignedRequest,
    content_md5,
    ivvy_headers,
    parse_authorization,
    sign_headers,
    signature,
    string_to_sign,
    verify,
)

NOW = datetime(2026, 11, 29, 8, 0, 0, tzinfo=UTC)
URI = "/api/1.0/test?action=ping"


def signed(headers: dict[str, str], body: bytes = b"", uri: str = URI) -> SignedRequest:
    return SignedRequest(
        method="POST", uri=uri, headers={k.lower(): v for k, v in headers.items()}, body=body
    )


def test_the_public_example_signs_the_documented_string() -> None:
    text = string_to_sign(
        method="POST",
        body_md5=content_md5(b'{"example":"body"}'),
        content_type="application/json",
        date="",
        uri=URI,
        ivvy=ivvy_headers({"IVVY-Date": "2012-04-03 22:23:24"}),
    )
    assert text == (
        "posta09f600c77a6dbd947db24c61e8935caapplication/json/api/1.0/test?action=ping"
        "1.0ivvydate=2012-04-03 22:23:24"
    )


def test_ivvy_headers_are_stripped_sorted_and_joined() -> None:
    headers = {"IVVY-Zeta": "z", "ivvy_alpha": "a", "Content-Type": "x", "IVVY-Date": "d"}
    assert ivvy_headers(headers) == "ivvyalpha=a&ivvydate=d&ivvyzeta=z"


def test_md5_of_an_empty_body_is_the_empty_string_digest() -> None:
    assert content_md5(b"") == "d41d8cd98f00b204e9800998ecf8427e"


@pytest.mark.parametrize(
    ("content_type", "suffix"),
    [("application/json", ""), ("application/json; charset=utf-8", " UTC")],
    ids=["js-sdk", "dotnet-sdk"],
)
def test_both_sdk_styles_verify(content_type: str, suffix: str) -> None:
    headers = sign_headers(
        key="k", secret="s", uri=URI, body=b"", content_type=content_type, date_suffix=suffix, now=NOW
    )
    key, offered = parse_authorization(headers["X-Api-Authorization"])
    assert key == "k"
    verify(signed(headers), secret="s", offered=offered, now=NOW)


def test_an_rfc1123_date_header_is_signed_in_place_of_ivvy_date() -> None:
    date = "Sun, 29 Nov 2026 08:00:00 GMT"
    text = string_to_sign(
        method="POST", body_md5=content_md5(b""), content_type="application/json", date=date, uri=URI, ivvy=""
    )
    headers = {"Content-Type": "application/json", "Content-MD5": content_md5(b""), "Date": date}
    verify(signed(headers), secret="s", offered=signature("s", text), now=NOW)


def _refusal(
    headers: dict[str, str], body: bytes = b"", *, secret: str = "s", now: datetime = NOW, uri: str = URI
) -> WireError:
    _, offered = parse_authorization(headers["X-Api-Authorization"])
    with pytest.raises(WireError) as caught:
        verify(signed(headers, body, uri), secret=secret, offered=offered, now=now)
    return caught.value


def test_a_wrong_secret_is_refused_with_401() -> None:
    error = _refusal(sign_headers(key="k", secret="s", uri=URI, body=b"", now=NOW), secret="other")
    assert (error.error_code, error.specific_code) == (401, None)


def test_a_body_that_does_not_match_content_md5_is_refused() -> None:
    headers = sign_headers(key="k", secret="s", uri=URI, body=b'{"a":1}', now=NOW)
    assert "Content-MD5" in _refusal(headers, b'{"a":2}').message


def test_a_signature_for_another_uri_is_refused() -> None:
    headers = sign_headers(key="k", secret="s", uri=URI, body=b"", now=NOW)
    assert _refusal(headers, uri="/api/1.0/test?action=echo").error_code == 401


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_date_outside_five_minutes_is_stale(skew: timedelta) -> None:
    headers = sign_headers(key="k", secret="s", uri=URI, body=b"", now=NOW + skew)
    error = _refusal(headers)
    assert (error.error_code, error.specific_code) == (401, STALE_REQUEST)


def test_a_date_within_five_minutes_is_accepted() -> None:
    headers = sign_headers(key="k", secret="s", uri=URI, body=b"", now=NOW - timedelta(minutes=4, seconds=59))
    _, offered = parse_authorization(headers["X-Api-Authorization"])
    verify(signed(headers), secret="s", offered=offered, now=NOW)


@pytest.mark.parametrize("value", [None, "", "IWS", "IWS key", "IWS :sig", "Basic a:b", "IWS key:"])
def test_a_malformed_authorization_header_is_refused(value: str | None) -> None:
    with pytest.raises(WireError) as caught:
        parse_authorization(value)
    assert caught.value.error_code == 401
