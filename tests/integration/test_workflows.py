"""A batch as a small workflow, over real HTTP on SQLite and PostgreSQL: jobs in parallel, jobs that
wait for others, one job's output in another's params, and the graphs refused at run."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from batchgate import App, BadRequest
from batchgate.client import ApiError
from batchgate.protocol import errors
from batchgate.settings import Settings

from support import LiveServer, eventually, live_server


class Flow:
    """Actions that record when they start and finish, wait at a gate, or meet at a barrier."""

    def __init__(self, parties: int = 10) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.runs: Counter[str] = Counter()
        self.barrier = asyncio.Barrier(parties)
        self.gates: dict[str, asyncio.Event] = {}

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    def app(self) -> App:
        app = App()

        @app.action("w", "step")
        async def step(name: str, **params: Any) -> dict[str, Any]:
            self.started.append(name)
            self.runs[name] += 1
            if name in self.gates:
                await self.gates[name].wait()
            self.finished.append(name)
            return {"name": name, "got": params}

        @app.action("w", "meet")
        async def meet(name: str) -> dict[str, str]:
            self.runs[name] += 1
            await asyncio.wait_for(self.barrier.wait(), 10)  # only if every party runs at once
            return {"met": name}

        @app.action("w", "fail")
        async def fail(name: str) -> None:
            self.runs[name] += 1
            raise BadRequest(f"{name} failed")

        @app.action("w", "create")
        async def create(name: str) -> dict[str, Any]:
            self.runs[name] += 1
            return {
                "id": 41 + len(self.runs),
                "links": [{"rel": "self", "href": f"/x/{name}"}],
                "a/b": {"~": 7},
            }

        return app


def step(
    name: str, *, id: str | None = None, depends: list[str] | None = None, **params: Any
) -> dict[str, Any]:
    job: dict[str, Any] = {"namespace": "w", "action": "step", "params": {"name": name, **params}}
    if id:
        job["id"] = id
    if depends:
        job["dependsOn"] = depends
    return job


@pytest.fixture
async def served(each_store_settings: Settings) -> AsyncIterator[tuple[LiveServer, Flow]]:
    flow = Flow()
    async with live_server(each_store_settings, flow.app()) as server:
        yield server, flow


async def test_jobs_run_in_parallel_and_their_results_stay_in_order(served: tuple[LiveServer, Flow]) -> None:
    server, _flow = served
    jobs = [{"namespace": "w", "action": "meet", "params": {"name": f"m{i}"}} for i in range(10)]
    async with server.client() as api:
        results = await api.wait(await api.run(jobs, concurrency=10), poll_s=0.02, timeout_s=20)
    assert [r["response"] for r in results["results"]] == [{"met": f"m{i}"} for i in range(10)]


async def test_a_job_waits_for_the_jobs_it_depends_on(served: tuple[LiveServer, Flow]) -> None:
    server, flow = served
    flow.gate("first")
    jobs = [
        step("after", depends=["a"]),
        step("first", id="a"),
        step("free"),
    ]
    async with server.client() as api:
        async_id = await api.run(jobs, concurrency=3)
        await eventually(lambda: flow.finished, until=lambda done: "free" in done)
        assert "after" not in flow.started  # still waiting for "first"
        flow.gate("first").set()
        results = await api.wait(async_id, poll_s=0.02)
    assert flow.started.index("after") > flow.finished.index("first")
    assert [r["response"]["name"] for r in results["results"]] == ["after", "first", "free"]


async def test_a_failed_dependency_answers_its_dependents_without_running_them(
    served: tuple[LiveServer, Flow],
) -> None:
    server, flow = served
    jobs = [
        {"id": "bad", "namespace": "w", "action": "fail", "params": {"name": "bad"}},
        step("second", id="second", depends=["bad"]),
        step("third", depends=["second"]),
        step("unrelated"),
    ]
    async with server.client() as api:
        async_id = await api.run(jobs, concurrency=2)
        results = (await api.wait(async_id, poll_s=0.02))["results"]
        status = await api.status(async_id)
    second, third = results[1]["response"], results[2]["response"]
    assert (second["errorCode"], second["specificCode"]) == (461, errors.DEPENDENCY_FAILED)
    assert "job 0 ('bad')" in second["message"]
    assert third["specificCode"] == errors.DEPENDENCY_FAILED and "job 1 ('second')" in third["message"]
    assert flow.runs["second"] == flow.runs["third"] == 0 and flow.runs["unrelated"] == 1
    assert status["counts"] == {"total": 4, "succeeded": 1, "failed": 3, "cancelled": 0, "pending": 0}


@pytest.mark.parametrize(
    ("jobs", "reason"),
    [
        ([step("a", depends=["nobody"])], "waits for 'nobody', and no job has that id"),
        ([step("a", id="a", depends=["a"])], "waits for itself"),
        (
            [step("a", id="a", depends=["b"]), step("b", id="b", depends=["a"])],
            "wait for each other in a cycle",
        ),
        ([step("a", id="x"), step("b", id="x")], "the id 'x' is given to more than one job"),
        ([step("a", ref={"$ref": "ghost", "pointer": "/id"})], "waits for 'ghost'"),
        ([step("a", id="a"), step("b", ref={"$ref": "a", "pointer": "id"})], "must be a JSON pointer"),
        ([step("a", id="a"), step("b", ref={"$ref": "a", "pointer": "/id", "extra": 1})], "only '$ref' and"),
        ([{**step("a"), "dependsOn": "a"}], "'dependsOn' must be an array of job ids"),
        ([{**step("a"), "id": 7}], "'id' must be a string"),
    ],
)
async def test_graphs_that_cannot_run_are_refused_at_run_with_the_reason(
    served: tuple[LiveServer, Flow], jobs: list[dict[str, Any]], reason: str
) -> None:
    server, _ = served
    async with server.client() as api:
        with pytest.raises(ApiError) as caught:
            await api.run(jobs)
    assert (caught.value.error_code, caught.value.specific_code) == (400, errors.INCORRECT_JOB_FORMAT)
    assert reason in caught.value.body["message"]


async def test_references_put_one_jobs_output_into_anothers_params(served: tuple[LiveServer, Flow]) -> None:
    server, _flow = served
    jobs = [
        {"id": "event", "namespace": "w", "action": "create", "params": {"name": "event"}},
        step(
            "invite",
            event={"$ref": "event", "pointer": "/id"},
            deep=[{"href": {"$ref": "event", "pointer": "/links/0/href"}}, 3],
            escaped={"$ref": "event", "pointer": "/a~1b/~0"},
            whole={"$ref": "event"},
        ),
    ]
    async with server.client() as api:
        async_id = await api.run(jobs, concurrency=4)
        results = (await api.wait(async_id, poll_s=0.02))["results"]
    created = results[0]["response"]
    resolved = {
        "name": "invite",
        "event": created["id"],
        "deep": [{"href": "/x/event"}, 3],
        "escaped": 7,
        "whole": created,
    }
    assert results[1]["request"] == resolved  # what was really sent
    assert results[1]["response"] == {
        "name": "invite",
        "got": {k: v for k, v in resolved.items() if k != "name"},
    }


async def test_a_reference_that_finds_nothing_fails_its_job(served: tuple[LiveServer, Flow]) -> None:
    server, flow = served
    jobs = [
        {"id": "event", "namespace": "w", "action": "create", "params": {"name": "event"}},
        step("invite", event={"$ref": "event", "pointer": "/no/such/thing"}),
    ]
    async with server.client() as api:
        results = (await api.wait(await api.run(jobs), poll_s=0.02))["results"]
    failed = results[1]["response"]
    assert (failed["errorCode"], failed["specificCode"]) == (461, errors.REFERENCE_UNRESOLVED)
    assert "/no/such/thing" in failed["message"] and flow.runs["invite"] == 0


async def test_restart_of_failed_jobs_runs_them_and_their_dependents_again(
    served: tuple[LiveServer, Flow], each_store_settings: Settings
) -> None:
    server, flow = served
    flow.gate("slow")  # keeps the first job from finishing until a moment after the cancel
    jobs = [step("slow", id="s"), step("then", depends=["s"]), step("other")]
    async with server.client() as api:
        async_id = await api.run(jobs, concurrency=2)
        await eventually(lambda: flow.started, until=lambda started: "slow" in started)
        await api.cancel(async_id)
        cancelled = await eventually(lambda: api.status(async_id), until=lambda s: s["status"] == "cancelled")
        flow.gate("slow").set()
        assert await api.restart(async_id, failed_only=True)
        results = (await api.wait(async_id, poll_s=0.02))["results"]
    assert cancelled["counts"]["cancelled"] >= 1
    assert [r["response"]["name"] for r in results] == ["slow", "then", "other"]
    assert flow.runs["other"] == 1  # it had succeeded: kept
