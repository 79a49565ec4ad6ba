"""The run request's validation: SPEC.md decision 3, code by code."""

from __future__ import annotations

from typing import Any

import pytest

from batchgate.batches import parse_jobs
from batchgate.protocol.errors import EMPTY_JOB_PARAMETER, INCORRECT_JOB_FORMAT, TOO_MANY_JOBS, WireError

PING = {"namespace": "test", "action": "ping"}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ([1, 2], INCORRECT_JOB_FORMAT),
        ("jobs", INCORRECT_JOB_FORMAT),
        ({}, INCORRECT_JOB_FORMAT),
        ({"jobs": None}, INCORRECT_JOB_FORMAT),
        ({"jobs": {"namespace": "test"}}, INCORRECT_JOB_FORMAT),
        ({"jobs": ["ping"]}, INCORRECT_JOB_FORMAT),
        ({"jobs": [{"namespace": "test"}]}, INCORRECT_JOB_FORMAT),
        ({"jobs": [{"action": "ping"}]}, INCORRECT_JOB_FORMAT),
        ({"jobs": [{"namespace": ["test"], "action": "ping"}]}, INCORRECT_JOB_FORMAT),
        ({"jobs": [{**PING, "params": [1]}]}, INCORRECT_JOB_FORMAT),
        ({"jobs": [{**PING, "params": None}]}, INCORRECT_JOB_FORMAT),
        ({"jobs": [PING, "second"]}, INCORRECT_JOB_FORMAT),
        ({"jobs": []}, EMPTY_JOB_PARAMETER),
        ({"jobs": [{"namespace": "", "action": "ping"}]}, EMPTY_JOB_PARAMETER),
        ({"jobs": [{"namespace": "test", "action": " \t"}]}, EMPTY_JOB_PARAMETER),
        ({"jobs": [PING] * 201}, TOO_MANY_JOBS),
    ],
)
def test_bad_run_requests_get_their_specific_code(params: Any, code: int) -> None:
    with pytest.raises(WireError) as caught:
        parse_jobs(params)
    assert (caught.value.error_code, caught.value.specific_code) == (400, code)


def test_a_job_without_params_has_empty_params() -> None:
    [job] = parse_jobs({"jobs": [PING]})
    assert (job.namespace, job.action, job.params) == ("test", "ping", "{}")


def test_two_hundred_jobs_are_accepted_in_order() -> None:
    jobs = parse_jobs({"jobs": [{**PING, "params": {"i": i}} for i in range(200)]})
    assert [job.params for job in jobs] == [f'{{"i":{i}}}' for i in range(200)]
