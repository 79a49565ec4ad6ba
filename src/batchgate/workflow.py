"""A batch as a small workflow: jobs that wait for others, and one job's output in another's params.

    {"id": "event", "namespace": "event", "action": "addOrUpdateEvent", "params": {...}}
    {"namespace": "event", "action": "inviteContacts",
     "params": {"event": {"$ref": "event", "pointer": "/id"}, "contacts": [1, 2, 3]}}

A job may carry an `id` (unique in its batch) and `dependsOn` (the ids it waits for). A reference
`{"$ref": id, "pointer": "/json/pointer"}` anywhere in a job's params is replaced, before the job
runs, by the value the RFC 6901 pointer finds in that job's response (the whole response without
a pointer), and makes the job wait for it too. Unknown ids, cycles and a job waiting for itself
are refused when the batch is submitted; a pointer that finds nothing fails the job when it runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonpointer

REF = "$ref"
REF_MARK = '"$ref"'  # in the JSON text of params that hold a reference
POINTER = "pointer"


class InvalidGraph(ValueError):
    """The jobs' ids, dependencies or references do not form a graph that can run."""


class Unresolved(LookupError):
    """A reference's pointer finds nothing in the response it points into."""


@dataclass(frozen=True, slots=True)
class Reference:
    job: str
    pointer: str


def references(params: Any) -> Iterator[Reference]:
    """Every reference in a job's params, depth first."""
    if isinstance(params, dict):
        if REF in params:
            yield _reference(params)
            return
        for value in params.values():
            yield from references(value)
    elif isinstance(params, list):
        for value in params:
            yield from references(value)


def _reference(node: dict[str, Any]) -> Reference:
    job, pointer = node.get(REF), node.get(POINTER, "")
    if set(node) - {REF, POINTER}:
        raise InvalidGraph(
            f"a reference has only '{REF}' and '{POINTER}', not {sorted(set(node) - {REF, POINTER})}"
        )
    if not isinstance(job, str) or not job:
        raise InvalidGraph(f"'{REF}' must be the id of a job")
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise InvalidGraph(f"'{POINTER}' must be a JSON pointer such as /results/0/id, not {pointer!r}")
    return Reference(job, pointer)


def dependencies(
    ids: Sequence[str | None], waits: Sequence[Sequence[str]], params: Sequence[Any]
) -> list[tuple[int, ...]]:
    """For each job, the indexes of the jobs it waits for: its `dependsOn` and the jobs its params
    refer to. Raises InvalidGraph for an unknown id, a job waiting for itself, or a cycle."""
    index = {job_id: i for i, job_id in enumerate(ids) if job_id is not None}
    graph: list[tuple[int, ...]] = []
    for i, (named, job_params) in enumerate(zip(waits, params, strict=True)):
        wanted = [*named, *(ref.job for ref in references(job_params))]
        unknown = [job_id for job_id in wanted if job_id not in index]
        if unknown:
            raise InvalidGraph(f"job {i} waits for {unknown[0]!r}, and no job has that id")
        found = tuple(sorted({index[job_id] for job_id in wanted}))
        if i in found:
            raise InvalidGraph(f"job {i} ({ids[i]!r}) waits for itself")
        graph.append(found)
    _check_acyclic(graph, ids)
    return graph


def _check_acyclic(graph: Sequence[tuple[int, ...]], ids: Sequence[str | None]) -> None:
    """Kahn's algorithm: whatever cannot be ordered lies on a cycle."""
    waiting = [len(deps) for deps in graph]
    dependents: list[list[int]] = [[] for _ in graph]
    for job, deps in enumerate(graph):
        for dep in deps:
            dependents[dep].append(job)
    ready = [job for job, count in enumerate(waiting) if count == 0]
    ordered = 0
    while ready:
        job = ready.pop()
        ordered += 1
        for dependent in dependents[job]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    if ordered < len(graph):
        stuck = [ids[job] or str(job) for job, count in enumerate(waiting) if count > 0]
        raise InvalidGraph(f"the jobs {', '.join(map(repr, stuck))} wait for each other in a cycle")


def resolve(params: Any, responses: Mapping[str, Any]) -> Any:
    """The params with every reference replaced by what its pointer finds in the response of the
    job it names (`responses`: job id -> decoded response). Raises Unresolved."""
    if isinstance(params, dict):
        if REF in params:
            ref = _reference(params)
            where = f"{{'$ref': {ref.job!r}, 'pointer': {ref.pointer!r}}}"
            try:
                found = jsonpointer.resolve_pointer(responses[ref.job], ref.pointer)
            except jsonpointer.JsonPointerException as exc:
                raise Unresolved(f"{where} finds nothing: {exc}") from None
            if isinstance(found, jsonpointer.EndOfList):  # "-": where an array's next item would go
                raise Unresolved(f"{where} points past the end of an array")
            return found
        return {key: resolve(value, responses) for key, value in params.items()}
    if isinstance(params, list):
        return [resolve(value, responses) for value in params]
    return params
