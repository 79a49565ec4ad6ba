"""Processes the harness starts: each in its own session (so its children stop with it), run
from the repository root with `bench` importable, its output kept in a log file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
BIN = Path(sys.executable).parent
BATCHGATE = str(BIN / "batchgate")


class StartError(RuntimeError):
    """A process did not become ready; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    # batchgate reads BATCHGATE_* settings: only what a system sets explicitly may apply
    env = {name: value for name, value in os.environ.items() if not name.startswith("BATCHGATE_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + path if path else "")
    return {**env, **(extra or {})}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the whole process group, then SIGKILL if it lingers."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        # children that outlived their parent (a pool's processes) go with the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def spawn(name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None) -> Proc:
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=base_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def wait_until(proc: Proc, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        if ready():
            return
        time.sleep(0.05)
    raise StartError(f"{proc.name} was not ready within {timeout:g} s:\n{proc.tail()}")


def http_answers(url: str) -> Callable[[], bool]:
    """True once anything answers HTTP at `url` (an error status included)."""

    def check() -> bool:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 (http:// URLs we build)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    return check


def run(argv: Sequence[str], *, timeout: float = 120.0, env: Mapping[str, str] | None = None) -> str:
    """Runs a command to completion; its stdout, or StartError with its output."""
    done = subprocess.run(
        list(argv), cwd=REPO, env=base_env(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise StartError(
            f"{' '.join(argv[:3])} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
        )
    return done.stdout


def uvicorn(name: str, app: str, port: int, log_dir: Path, env: Mapping[str, str] | None = None) -> Proc:
    """A raw ASGI app under uvicorn with httptools and uvloop, one process, ready to answer."""
    proc = spawn(
        name,
        [
            PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ],
        log_dir,
        env,
    )  # fmt: skip
    wait_until(proc, http_answers(f"http://127.0.0.1:{port}/healthz"))
    return proc
