"""Nothing acknowledged is lost: SIGKILL in the middle of batches, restart, and everything completes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

from batchgate.client import AsyncClient

from processes import BATCHGATE, ServeProcess, create_key
from support import eventually, receiver

BATCHES, JOBS = 12, 40


def jobs_of(batch: int) -> list[dict[str, object]]:
    # test.sleep keeps every batch in flight long enough to be interrupted; echo checks the order.
    return [
        job
        for n in range(JOBS // 2)
        for job in (
            {"namespace": "test", "action": "sleep", "params": {"seconds": 0.02}},
            {"namespace": "test", "action": "echo", "params": {"batch": batch, "n": n}},
        )
    ]


async def test_sigkill_mid_batch_then_restart_completes_every_batch_and_calls_back(
    tmp_path: Path, sqlite_url: str
) -> None:
    key, secret, _ = create_key(sqlite_url)
    server = ServeProcess(sqlite_url, tmp_path / "serve.log", env={"BATCHGATE_LEASE": "2"}).start()
    try:
        async with receiver() as recv:
            async with AsyncClient(server.url, key, secret) as api:
                ids = [await api.run(jobs_of(b), callback_url=f"{recv.url}/b{b}") for b in range(BATCHES)]
                # every batch is now part-way through
                await eventually(lambda: api.progress(ids[-1]), until=lambda p: p >= 10)
            assert server.signal(signal.SIGKILL) == -signal.SIGKILL
            restarted = ServeProcess(sqlite_url, server.log, port=server.port).start()
            try:
                async with AsyncClient(restarted.url, key, secret) as api:
                    for b, async_id in enumerate(ids):
                        results = (await api.wait(async_id, poll_s=0.05, timeout_s=60))["results"]
                        echoes = [r["response"] for r in results if r["action"] == "echo"]
                        assert echoes == [{"batch": b, "n": n} for n in range(JOBS // 2)]
                        [first, *again] = await recv.wait_for(f"/b{b}", 1)
                        assert first.json == {"asyncId": async_id, "results": results}
                        # a retry after the crash may repeat a delivery, always with the same webhook-id
                        assert {c.headers["webhook-id"] for c in again} <= {first.headers["webhook-id"]}
            finally:
                restarted.stop()
    finally:
        server.stop()


async def test_a_batch_leased_as_it_was_saved_is_resumed_by_another_process_after_a_sigkill(
    tmp_path: Path, db_url: str
) -> None:
    """`serve` leases a batch to its own worker in the transaction that saves it; killed right after
    answering, it leaves the batch leased, and once the lease runs out a worker of another process
    (here `batchgate worker` beside an API-only `serve`) runs it to its end and calls back."""
    key, secret, _ = create_key(db_url)
    env = {"BATCHGATE_LEASE": "2"}
    server = ServeProcess(db_url, tmp_path / "serve.log", env=env).start()
    others: list[asyncio.subprocess.Process] = []
    try:
        async with receiver() as recv:
            async with AsyncClient(server.url, key, secret) as api:
                await api.wait(await api.run([{"namespace": "test", "action": "echo", "params": {}}]))
                # An idle worker takes the next batch as it is saved once it has looked at the
                # queue again, a moment after its last batch ended; a batch sent sooner is queued
                # and claimed instead: it runs to its end, and the next one is sent.
                for attempt in range(5):
                    path = f"/kill{attempt}"
                    async_id = await api.run(jobs_of(0), callback_url=recv.url + path)
                    status = await api.status(async_id)
                    if status["status"] == "running" and status["startedAt"] == status["createdAt"]:
                        break
                    await api.wait(async_id, poll_s=0.05)
            assert status["status"] == "running" and status["startedAt"] == status["createdAt"]
            assert server.signal(signal.SIGKILL) == -signal.SIGKILL
            api_only = ServeProcess(db_url, tmp_path / "api.log", env=env, args=["--no-worker"]).start()
            with (tmp_path / "worker.log").open("ab") as out:
                worker = await asyncio.create_subprocess_exec(
                    BATCHGATE, "worker", "--db", db_url,
                    env={**os.environ, "BATCHGATE_CALLBACK_ALLOW": "127.0.0.1", **env},
                    stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
                others.append(worker)
            try:
                async with AsyncClient(api_only.url, key, secret) as api:
                    results = (await api.wait(async_id, poll_s=0.05, timeout_s=60))["results"]
                [call, *again] = await recv.wait_for(path, 1)
            finally:
                api_only.stop()
        echoes = [r["response"] for r in results if r["action"] == "echo"]
        assert echoes == [{"batch": 0, "n": n} for n in range(JOBS // 2)]
        assert call.json == {"asyncId": async_id, "results": results}
        assert {c.headers["webhook-id"] for c in again} <= {call.headers["webhook-id"]}
    finally:
        for proc in others:
            proc.kill()
            await proc.wait()
        server.stop()


async def test_sigterm_finishes_gracefully_and_the_batch_resumes_at_once(
    tmp_path: Path, sqlite_url: str
) -> None:
    key, secret, _ = create_key(sqlite_url)
    # A lease far longer than the test: only a graceful release lets the restart resume at once.
    server = ServeProcess(sqlite_url, tmp_path / "serve.log", env={"BATCHGATE_LEASE": "600"}).start()
    try:
        async with AsyncClient(server.url, key, secret) as api:
            async_id = await api.run(jobs_of(0))
            await eventually(lambda: api.progress(async_id), until=lambda p: p >= 10)
        # uvicorn ends by re-raising the signal once its graceful shutdown is done
        assert server.signal(signal.SIGTERM) == -signal.SIGTERM
        assert "Finished server process" in server.log.read_text()
        restarted = ServeProcess(sqlite_url, server.log, port=server.port).start()
        try:
            async with AsyncClient(restarted.url, key, secret) as api:
                results = (await api.wait(async_id, poll_s=0.05, timeout_s=30))["results"]
            assert [r["response"] for r in results if r["action"] == "echo"] == [
                {"batch": 0, "n": n} for n in range(JOBS // 2)
            ]
        finally:
            restarted.stop()
    finally:
        server.stop()


async def test_sigkill_mid_workflow_loses_nothing_and_runs_no_finished_job_again(
    tmp_path: Path, db_url: str
) -> None:
    """A parallel batch with dependencies and a reference, killed while two of its jobs run: on
    SQLite and on PostgreSQL."""
    key, secret, _ = create_key(db_url)
    runs = tmp_path / "runs.db"
    env = {
        "BATCHGATE_LEASE": "2",
        "BATCHGATE_APP": "workflow_app:app",
        "BATCHGATE_APP_DIR": str(Path(__file__).parent.parent),
        "WORKFLOW_LOG": str(runs),
    }

    def step(
        name: str, seconds: float, depends: list[str] | None = None, **params: object
    ) -> dict[str, object]:
        return {
            "id": name,
            "namespace": "wf",
            "action": "step",
            "params": {"name": name, "seconds": seconds, **params},
            **({"dependsOn": depends} if depends else {}),
        }

    jobs = [
        step("a", 0.0),
        step("b", 0.0),
        step("c", 3.0, ["a"]),
        step("d", 3.0, ["b"]),
        step("e", 0.0, ["c", "d"], from_a={"$ref": "a", "pointer": "/name"}),
    ]
    server = ServeProcess(db_url, tmp_path / "serve.log", env=env).start()
    try:
        async with AsyncClient(server.url, key, secret) as api:
            async_id = await api.run(jobs, concurrency=3)
            # a and b have finished and been saved; c and d are running
            await eventually(lambda: api.status(async_id), until=lambda s: s["counts"]["succeeded"] == 2)
            await eventually(lambda: ran(runs), until=lambda names: {"c", "d"} <= set(names))
        assert server.signal(signal.SIGKILL) == -signal.SIGKILL
        restarted = ServeProcess(db_url, server.log, port=server.port, env=env).start()
        try:
            async with AsyncClient(restarted.url, key, secret) as api:
                results = (await api.wait(async_id, poll_s=0.05, timeout_s=60))["results"]
                status = await api.status(async_id)
        finally:
            restarted.stop()
    finally:
        server.stop()
    assert [r["response"]["name"] for r in results] == ["a", "b", "c", "d", "e"]
    assert results[4]["request"]["from_a"] == "a" and results[4]["response"]["got"] == {"from_a": "a"}
    assert status["counts"] == {"total": 5, "succeeded": 5, "failed": 0, "cancelled": 0, "pending": 0}
    counts = {name: ran(runs).count(name) for name in "abcde"}
    assert counts["a"] == counts["b"] == counts["e"] == 1  # finished before the kill: never again
    assert counts["c"] == counts["d"] == 2  # in flight at the kill: run again, at least once


def ran(runs: Path) -> list[str]:
    if not runs.exists():
        return []
    with sqlite3.connect(runs) as log:
        try:
            return [name for (name,) in log.execute("SELECT name FROM runs")]
        except sqlite3.OperationalError:  # the table is not there yet
            return []
