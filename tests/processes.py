"""Drives the installed `batchgate` command as a user would: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from support import free_port

BATCHGATE = str(Path(sys.executable).parent / "batchgate")


def batchgate(
    *args: str, env: dict[str, str] | None = None, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BATCHGATE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
        env={**os.environ, **(env or {})},
        input=stdin,
    )


class Credentials(NamedTuple):
    """What `batchgate keys create --json` prints."""

    key: str
    secret: str
    webhook_secret: str


def create_key(db: str, name: str = "acme") -> Credentials:
    created = json.loads(batchgate("keys", "create", "--db", db, "--name", name, "--json").stdout)
    return Credentials(created["key"], created["secret"], created["webhookSecret"])


@dataclass
class ServeProcess:
    """`batchgate serve` in its own process group, with its output kept for failures."""

    db: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)  # more options of batchgate serve
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        env = {**os.environ, "BATCHGATE_CALLBACK_ALLOW": "127.0.0.1", **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [BATCHGATE, "serve", "--db", self.db, "--port", str(self.port), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("serve did not become healthy in 30 s")

    def signal(self, signum: int) -> int:
        """Sends `signum` and waits for the process to end; returns its exit code."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signum)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
