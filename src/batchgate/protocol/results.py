"""The `results` answer, which is also the callback's body: the wire shape of a batch's results."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from batchgate.models import JobResult


def results_body(async_id: str, results: Sequence[JobResult]) -> bytes:
    """`{"asyncId", "results": [{namespace, action, request, response}]}`, built from the stored JSON
    of params and responses without decoding it again. Every job must have its response."""
    return orjson.dumps(
        {
            "asyncId": async_id,
            "results": [
                {
                    "namespace": r.namespace,
                    "action": r.action,
                    "request": orjson.Fragment(r.params),
                    "response": orjson.Fragment(_response(r)),
                }
                for r in results
            ],
        }
    )


def _response(result: JobResult) -> str:
    if result.response is None:
        raise ValueError("a job without a response has no place in the results body")
    return result.response
