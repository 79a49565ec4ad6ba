"""The command line as the README shows it: keys, serve, call, submit --wait with a callback."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchgate import webhooks
from batchgate.store import sql

import pg
from processes import BATCHGATE, Credentials, ServeProcess, batchgate, create_key
from support import free_port, receiver


@pytest.fixture
def server(tmp_path: Path, sqlite_url: str) -> Iterator[ServeProcess]:
    process = ServeProcess(sqlite_url, tmp_path / "serve.log").start()
    yield process
    process.stop()


def eventually_sync(condition: Callable[[], bool], timeout_s: float = 30) -> bool:
    """Polls a condition on another process's output, which has no event to wait on."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def client_env(server: ServeProcess, key: Credentials) -> dict[str, str]:
    return {"BATCHGATE_URL": server.url, "BATCHGATE_KEY": key[0], "BATCHGATE_SECRET": key[1]}


def test_keys_are_created_listed_and_revoked(sqlite_url: str) -> None:
    key, secret, webhook_secret = create_key(sqlite_url)
    assert len(key) == 32
    assert len(secret) >= 32
    assert webhook_secret.startswith("whsec_") and len(base64.b64decode(webhook_secret[6:])) >= 24
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
    webhooks.verify(key.webhook_secret, call.headers, call.body)


def test_submit_without_wait_prints_the_async_id(
    server: ServeProcess, sqlite_url: str, tmp_path: Path
) -> None:
    jobs = tmp_path / "run.json"
    jobs.write_text(json.dumps({"jobs": [{"namespace": "test", "action": "ping"}]}))
    answer = json.loads(batchgate("submit", str(jobs), env=client_env(server, create_key(sqlite_url))).stdout)
    assert len(answer["asyncId"]) == 32


def test_migrate_creates_the_database_and_says_what_it_did(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "bg.db"
    versions = ", ".join(str(version) for version, _ in sql.migrations("sqlite"))
    assert (
        f"applied migrations {versions} to sqlite:///"
        in batchgate("migrate", "--db", f"sqlite:///{db}").stdout
    )
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


def one_clear_line(failed: subprocess.CompletedProcess[str], message: str) -> None:
    """A user's mistake: a non-zero exit and a message saying what is wrong, never a traceback."""
    assert failed.returncode != 0
    assert message in failed.stderr
    assert "Traceback" not in failed.stderr + failed.stdout


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("batchgate.db", "'batchgate.db' is not a database URL: use sqlite:///PATH"),
        ("mysql://root@localhost/bg", "'mysql://root@localhost/bg' is not a database URL"),
    ],
)
def test_a_database_option_that_is_not_a_database_url_is_one_clear_line(db: str, message: str) -> None:
    one_clear_line(batchgate("keys", "list", "--db", db, check=False), message)
    one_clear_line(batchgate("worker", "--db", db, check=False), message)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--callback-allow=10.0.0.1/8", "is not a valid CIDR"),
        ("--server-key=not-a-fernet-key", "is not a Fernet key"),
        ("--admin-port=18999", "the admin listener listens on loopback only"),
    ],
)
def test_serve_refuses_a_bad_setting_in_one_line(sqlite_url: str, option: str, message: str) -> None:
    extra = ["--admin-host=0.0.0.0"] if option.startswith("--admin") else []
    one_clear_line(batchgate("serve", "--db", sqlite_url, option, *extra, check=False), message)


def test_a_process_without_the_server_key_of_a_sealed_database_refuses_to_start(
    tmp_path: Path, sqlite_url: str
) -> None:
    server_key = batchgate("keys", "new-server-key").stdout.strip()
    batchgate("keys", "create", "--name", "acme", "--db", sqlite_url, "--server-key", server_key)
    one_clear_line(batchgate("keys", "list", "--db", sqlite_url, check=False), "set BATCHGATE_SERVER_KEY")
    assert "acme" in batchgate("keys", "list", "--db", sqlite_url, "--server-key", server_key).stdout
    serving = ServeProcess(sqlite_url, tmp_path / "serve.log")
    with pytest.raises(AssertionError):  # it never becomes healthy
        serving.start()
    assert "could not start" in serving.log.read_text() and "BATCHGATE_SERVER_KEY" in serving.log.read_text()
    assert "Traceback" not in serving.log.read_text()


def test_keys_list_of_a_sqlite_file_that_does_not_exist_does_not_create_it(tmp_path: Path) -> None:
    typo = tmp_path / "batchgaet.db"
    one_clear_line(
        batchgate("keys", "list", "--db", f"sqlite:///{typo}", check=False), "there is no database at"
    )
    assert not typo.exists()


@pytest.mark.postgres
def test_a_postgresql_that_is_down_or_a_database_that_does_not_exist_is_one_clear_line() -> None:
    down = f"postgresql://batchgate:secret@127.0.0.1:{free_port()}/bg"
    failed = batchgate("keys", "list", "--db", down, check=False)
    one_clear_line(failed, "could not use the database postgresql://batchgate:***@127.0.0.1:")
    assert "secret" not in failed.stderr  # the password is not shown
    missing = pg.url_of("bg_no_such_database")
    one_clear_line(batchgate("migrate", "--db", missing, check=False), "does not exist")


def test_an_empty_account_name_is_refused(sqlite_url: str) -> None:
    one_clear_line(
        batchgate("keys", "create", "--name", "  ", "--db", sqlite_url, check=False), "cannot be empty"
    )


def test_submit_of_a_single_job_object_says_to_put_it_in_a_list(tmp_path: Path) -> None:
    jobs = tmp_path / "job.json"
    jobs.write_text(json.dumps({"namespace": "test", "action": "ping"}))
    env = {"BATCHGATE_KEY": "k", "BATCHGATE_SECRET": "s"}
    one_clear_line(batchgate("submit", str(jobs), env=env, check=False), "it holds one job: put it in a list")


def test_call_reads_its_params_from_a_file_or_from_standard_input(
    server: ServeProcess, sqlite_url: str, tmp_path: Path
) -> None:
    env = client_env(server, create_key(sqlite_url))
    params = tmp_path / "params.json"
    params.write_text('{"from": "a file"}')
    assert json.loads(batchgate("call", "test", "echo", f"@{params}", env=env).stdout) == {"from": "a file"}
    piped = batchgate("call", "test", "echo", "-", env=env, stdin='{"from": "stdin"}')
    assert json.loads(piped.stdout) == {"from": "stdin"}
    one_clear_line(batchgate("call", "test", "echo", "@nowhere.json", env=env, check=False), "cannot read")


def test_submit_wait_fails_on_error_only_when_asked(
    server: ServeProcess, sqlite_url: str, tmp_path: Path
) -> None:
    env = client_env(server, create_key(sqlite_url))
    jobs = tmp_path / "jobs.json"
    jobs.write_text(
        json.dumps([{"namespace": "test", "action": "ping"}, {"namespace": "test", "action": "nosuch"}])
    )
    assert batchgate("submit", str(jobs), "--wait", env=env).returncode == 0
    failed = batchgate("submit", str(jobs), "--wait", "--fail-on-error", env=env, check=False)
    assert failed.returncode == 3
    assert json.loads(failed.stdout)["results"][1]["response"]["errorCode"] == 404  # the results, still
    assert f"batch {json.loads(failed.stdout)['asyncId']} submitted" in failed.stderr


def test_worker_help_lists_only_what_a_worker_uses() -> None:
    shown = batchgate("worker", "--help").stdout
    for option in ("--db", "--max-batches", "--lease", "--callback-allow", "--app", "--config"):
        assert option in shown
    for api_only in ("--max-body-bytes", "--key-cache", "--port", "--host"):
        assert api_only not in shown


def test_a_worker_says_one_line_at_start_up_and_stops_on_sigterm(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [BATCHGATE, "worker", "--db", sqlite_url], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        started = eventually_sync(lambda: "worker started on" in log.read_text())
        assert started
        line = next(line for line in log.read_text().splitlines() if "worker started on" in line)
        assert sqlite_url in line and "up to 50 batches at once" in line and "namespaces test" in line
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
