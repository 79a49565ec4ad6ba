"""The admin listener as `batchgate serve --admin-port` serves it, in a real process: on its own port
beside the API, with the token from the command line, and open only on loopback without one."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from processes import BATCHGATE, batchgate
from support import free_port


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Serving:
    def __init__(self, tmp_path: Path, *options: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.log = tmp_path / "serve.log"
        db = f"sqlite:///{tmp_path / 'batchgate.db'}"
        args = [
            BATCHGATE,
            "serve",
            "--db",
            db,
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*args, *options], stdout=out, stderr=subprocess.STDOUT, env=os.environ
            )

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if get(self.admin + "/static/console.css")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("the admin listener did not answer in 30 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.fixture
def serving(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Serving]:
    running = Serving(tmp_path, *request.param)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("serving", [("--admin-token", "cli-token")], indirect=True)
def test_serve_answers_the_admin_api_and_metrics_with_the_token_on_its_own_port(serving: Serving) -> None:
    bearer = {"Authorization": "Bearer cli-token"}
    assert get(serving.admin + "/admin/api/system")[0] == 401
    status, body = get(serving.admin + "/admin/api/system", bearer)
    assert status == 200 and '"workers":[{' in body
    status, body = get(serving.admin + "/metrics", bearer)
    assert status == 200 and "batchgate_queue_depth" in body
    assert get(serving.admin + "/batches")[0] == 200  # urllib follows the redirect to the login page
    assert "Log in" in get(serving.admin + "/login")[1]
    api = f"http://127.0.0.1:{serving.port}"
    assert get(api + "/admin/api/system", bearer)[0] == 404  # the public API has no admin routes
    assert get(api + "/healthz")[0] == 200


@pytest.mark.parametrize("serving", [()], indirect=True)
def test_without_a_token_the_console_is_open_on_loopback(serving: Serving) -> None:
    status, body = get(serving.admin + "/batches")
    assert status == 200 and "open · no token" in body


def test_without_a_token_a_non_loopback_admin_host_is_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'batchgate.db'}"
    refused = batchgate(
        "serve", "--db", db, "--port", str(free_port()), "--admin-port", str(free_port()),
        "--admin-host", "0.0.0.0", check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "listens on loopback only" in refused.stderr
