"""The admin listener's pure parts: the chart's minutes and scale, reading list filters, readable
spans, and the session cookie's signature and expiry."""

from __future__ import annotations

import pytest

from batchgate.admin import chart, render
from batchgate.admin.auth import Guard, Via
from batchgate.admin.http import Request, route
from batchgate.admin.query import cursor, cursor_of, limit_of, since_of
from batchgate.protocol.errors import BadRequest

NOW = 1_800_000_030.0  # 30 s into a minute


def test_per_minute_fills_the_minutes_without_jobs_and_ends_with_the_current_one() -> None:
    series = chart.per_minute([(NOW - 120, 5), (NOW, 7)], NOW, minutes=4)
    assert series == [(NOW - 30 - 180, 0), (NOW - 30 - 120, 5), (NOW - 30 - 60, 0), (NOW - 30, 7)]


@pytest.mark.parametrize(("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (7, 10), (135, 200), (1000, 1000)])
def test_the_chart_scale_rounds_up_to_1_2_or_5(value: int, ceiling: int) -> None:
    assert chart.nice_ceiling(value) == ceiling


def test_the_chart_says_what_it_shows_and_when_nothing_finished() -> None:
    assert 'aria-label="12 jobs finished in the last 2 minutes"' in chart.jobs_chart([(0, 5), (60, 7)])
    assert "no jobs finished" in chart.jobs_chart([(0, 0)] * 30)


@pytest.mark.parametrize(
    ("text", "since"),
    [("", None), ("15m", NOW - 900), ("2h", NOW - 7200), ("7d", NOW - 7 * 86400), ("1700000000", 1.7e9),
     ("2023-11-14 22:13:20", 1.7e9), ("2023-11-14T22:13:20Z", 1.7e9)],
)  # fmt: skip
def test_since_reads_spans_unix_seconds_and_utc_times(text: str, since: float | None) -> None:
    assert since_of(text, NOW) == since


@pytest.mark.parametrize("bad", ["soon", "nan", "-", "15 parsecs"])
def test_since_refuses_anything_else(bad: str) -> None:
    with pytest.raises(BadRequest, match="since must be"):
        since_of(bad, NOW)


def test_limits_and_cursors() -> None:
    assert (limit_of(""), limit_of("500")) == (50, 500)
    for bad in ("0", "501", "-1", "x"):
        with pytest.raises(BadRequest):
            limit_of(bad)
    assert cursor_of(cursor(12.5, "abc")) == (12.5, "abc")
    for bad in ("!!", cursor(12.5, "abc")[:-3], "WyJ4Il0"):
        with pytest.raises(BadRequest):
            cursor_of(bad)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "\u2013"), (0.0123, "12 ms"), (3.25, "3.2 s"), (45, "45 s"), (200, "3 min 20 s"), (3600, "1 h"),
     (7500, "2 h 5 min"), (90000, "1 d 1 h")],
)  # fmt: skip
def test_spans_are_shown_in_their_two_largest_units(seconds: float | None, shown: str) -> None:
    assert render.span(seconds) == shown


def test_bodies_fold_when_large_and_failed_jobs_say_why() -> None:
    small, large = render.body('{"a":1}'), render.body('{"text":"' + "x" * 300 + '"}')
    assert small is not None and not small.folded and small.pretty == '{\n  "a": 1\n}'
    assert large is not None and large.folded and large.preview.endswith("…")
    assert render.error_message('{"errorCode":400,"message":"no"}') == "no"
    assert render.error_message('{"ok":true}') is None


def request(cookie: str = "", port: int = 8081, **headers: str) -> Request:
    return Request("POST", "/x", {}, headers, {f"batchgate_admin_{port}": cookie} if cookie else {}, port)


def cookie_value(set_cookie: bytes) -> str:
    return set_cookie.decode().split(";")[0].split("=", 1)[1]


def test_a_session_is_signed_with_the_token_and_expires() -> None:
    clock = [1000.0]
    guard = Guard("token", session_s=60, clock=lambda: clock[0])
    session = guard.new_session("  alice\x00  ")
    value = cookie_value(guard.cookie(request(), session))
    caller = guard.admit(request(value))
    assert caller is not None and (caller.actor, caller.via, caller.csrf) == (
        "console:alice",
        Via.SESSION,
        session.csrf,
    )
    elsewhere = Request("GET", "/", {}, {}, {"batchgate_admin_8081": value}, 9090)
    assert guard.admit(elsewhere) is None  # each listener reads its own cookie
    assert Guard("other").admit(request(value)) is None
    clock[0] += 61
    assert guard.admit(request(value)) is None


def test_changes_need_the_csrf_token_and_the_console_as_their_origin() -> None:
    guard = Guard("token")
    caller = guard.admit(request(cookie_value(guard.cookie(request(), guard.new_session("")))))
    assert caller is not None
    assert guard.may_change(request(host="h:1"), caller, None) is not None
    assert guard.may_change(request(host="h:1"), caller, "wrong") is not None
    assert guard.may_change(request(host="h:1"), caller, caller.csrf) is None
    assert guard.may_change(request(host="h:1", origin="http://h:1"), caller, caller.csrf) is None
    assert "another site" in str(
        guard.may_change(request(host="h:1", origin="http://evil:1"), caller, caller.csrf)
    )
    bearer = guard.admit(request(authorization="Bearer token"))
    assert (
        bearer is not None and bearer.via is Via.BEARER and guard.may_change(request(), bearer, None) is None
    )


def test_an_open_guard_issues_anonymous_sessions_and_ignores_bearer_tokens() -> None:
    guard = Guard(None)
    caller = guard.admit(request(authorization="Bearer anything"))
    assert caller is not None and caller.via is Via.OPEN and caller.set_cookie is not None
    assert guard.may_change(request(), caller, None) is not None


def test_routes_match_whole_segments() -> None:
    found = route("POST", "/batches/{batch_id}/{action}", print).pattern.fullmatch("/batches/abc/cancel")
    assert found is not None and found.groupdict() == {"batch_id": "abc", "action": "cancel"}
    assert route("GET", "/batches/{batch_id}", print).pattern.fullmatch("/batches/a/b") is None
