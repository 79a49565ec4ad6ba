"""The protocol's timestamps: both accepted forms in, one form out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batchgate.protocol.timestamps import format_timestamp, parse_http_date, parse_timestamp

AT = datetime(2021, 5, 13, 7, 5, 33, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2021-05-13 07:05:33", "2021-05-13 07:05:33 UTC", " 2021-5-13 7:05:33 "])
def test_both_sdk_forms_are_read(text: str) -> None:
    assert parse_timestamp(text) == AT


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2021-05-13",
        "2021-05-13T07:05:33",
        "2021-13-01 00:00:00",
        "2021-02-30 00:00:00",
        "2021-05-13 24:00:00",
        "2021-05-13 07:05:33 CET",
        "\uff12\uff10\uff12\uff11-05-13 07:05:33",  # fullwidth digits
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"timestamp|out of range|must be in"):
        parse_timestamp(text)


def test_format_is_utc_without_suffix() -> None:
    assert format_timestamp(AT) == "2021-05-13 07:05:33"


def test_an_rfc1123_date_is_read() -> None:
    assert parse_http_date("Thu, 13 May 2021 07:05:33 GMT") == AT


def test_a_bad_http_date_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an HTTP date"):
        parse_http_date("yesterday")
