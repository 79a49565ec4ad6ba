"""The command line as the README shows it: keys, serve, call, submit --wait with a callback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgate import webhooks

from processes import ServeProcess, batchgate, create_key
from support import free_port, receiver


@pytest.fixture
def server(tmp_path: Path, sqlite_url: str) -> Iterator[ServeProcess]:
    process = ServeProcess(sqlite_url, tmp_path / "serve.log").start()
    yield process
    process.stop()


def client_env(server: ServeProcess, key: tuple[str, str]) -> dict[str, str]:
    return {"BATCHGATE_URL": server.url, "BATCHGATE_KEY": key[0], "BATCHGATE_SECRET": key[1]}


def test_keys_are_created_listed_and_revoked(sqlite_url: str) -> None:
    key, secret = create_key(sqlite_url)
    assert len(key) == 32
    assert len(secret) >= 32
    assert f"{key}  acme  active" in batchgate("keys", "list", "--db", sqlite_url).stdout
    batchgate("keys", "revoke", key, "--db", sqlite_url)
    assert f"{key}  acme  revoked" in batchgate("keys", "list", "--db", sqlite_url).stdout
    again = batchgate("keys", "revoke", key, "--db", sqlite_url, check=False)
    assert again.returncode != 0
    assert "no active key" in again.stderr


def test_call_prints_the_answer_as_json(server: ServeProcess, sqlite_url: str) -> None:
    env = client_env(server, create_key(sqlite_url))
    answer = json.loads(batchgate("call", "test", "echo", '{"hello": "wörld"}', env=env).stdout)
    assert answer == {"hello": "wörld"}


def test_call_prints_a_wire_error_and_fails(server: ServeProcess, sqlite_url: str) -> None:
    env = client_env(server, create_key(sqlite_url))
    failed = batchgate("call", "test", "nosuch", env=env, check=False)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["errorCode"] == 404


async def test_submit_waits_with_a_progress_bar_and_the_callback_arrives(
    server: ServeProcess, sqlite_url: str, tmp_path: Path
) -> None:
    key = create_key(sqlite_url)
    jobs = tmp_path / "jobs.json"
    jobs.write_text(
        json.dumps([{"namespace": "test", "action": "echo", "params": {"n": n}} for n in range(50)])
    )
    async with receiver() as recv:
        done = batchgate(
            "submit", str(jobs), "--callback", recv.url + "/hook", "--wait", env=client_env(server, key)
        )
        [call] = await recv.wait_for("/hook", 1)
    results = json.loads(done.stdout)
    assert [r["response"] for r in results["results"]] == [{"n": n} for n in range(50)]
    assert f"batch {results['asyncId']}" in done.stderr  # the progress bar's label (a bar only on a terminal)
    assert call.json == results
    webhooks.verify(key[1], call.headers, call.body)


def test_submit_without_wait_prints_the_async_id(
    server: ServeProcess, sqlite_url: str, tmp_path: Path
) -> None:
    jobs = tmp_path / "run.json"
    jobs.write_text(json.dumps({"jobs": [{"namespace": "test", "action": "ping"}]}))
    answer = json.loads(batchgate("submit", str(jobs), env=client_env(server, create_key(sqlite_url))).stdout)
    assert len(answer["asyncId"]) == 32


def test_migrate_creates_the_database_and_says_what_it_did(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "bg.db"
    assert "applied migrations 1, 2 to sqlite:///" in batchgate("migrate", "--db", f"sqlite:///{db}").stdout
    assert db.exists()
    assert batchgate("migrate", "--db", f"sqlite:///{db}").stdout.endswith("is up to date\n")


def test_call_to_a_server_that_is_not_there_says_so(sqlite_url: str) -> None:
    env = {"BATCHGATE_URL": f"http://127.0.0.1:{free_port()}", "BATCHGATE_KEY": "k", "BATCHGATE_SECRET": "s"}
    failed = batchgate("call", "test", "ping", env=env, check=False)
    assert failed.returncode == 1
    assert "could not reach batchgate" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_submit_of_a_file_that_is_not_json_says_so(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text("[{oops")
    env = {"BATCHGATE_KEY": "k", "BATCHGATE_SECRET": "s"}
    failed = batchgate("submit", str(jobs), env=env, check=False)
    assert failed.returncode == 2
    assert "is not JSON" in failed.stderr
    assert "Traceback" not in failed.stderr
