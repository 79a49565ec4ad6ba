"""The front door under attack: a real `batchgate serve` process on loopback, and raw sockets doing
what an attacker would (slow headers, silent and idle connections, too many connections, huge
headers, large uploads under a key that does not exist, a body that trickles)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from batchgate.protocol.signing import sign_headers

from processes import Credentials, ServeProcess, create_key

LIMITS = {
    "BATCHGATE_HEADER_TIMEOUT": "1",
    "BATCHGATE_IDLE_TIMEOUT": "1",
    "BATCHGATE_MAX_CONNECTIONS": "30",
    "BATCHGATE_BODY_MIN_RATE": "20000",
    "BATCHGATE_MAX_BODY_MEMORY": str(24 * 1024 * 1024),
}


@pytest.fixture
def server(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[ServeProcess, Credentials]]:
    key = create_key(sqlite_url)
    process = ServeProcess(sqlite_url, tmp_path / "serve.log", env=LIMITS).start()
    yield process, key
    process.stop()


def connect(process: ServeProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", process.port), timeout=10)
    sock.settimeout(10)
    return sock


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closed the connection (EOF or a reset) within the time given."""
    sock.settimeout(within_s)
    try:
        while sock.recv(65536):
            pass  # an answer before the close, if any
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return True


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def signed_head(key: Credentials, uri: str, body: bytes, content_length: int | None = None) -> bytes:
    headers = sign_headers(key=key.key, secret=key.secret, uri=uri, body=body)
    lines = [f"POST {uri} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {content_length or len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_of(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1]), head


def test_connections_that_send_nothing_or_dribble_their_headers_are_cut_off(
    server: tuple[ServeProcess, Credentials],
) -> None:
    process, _ = server
    silent = [connect(process) for _ in range(10)]
    dribbling = [connect(process) for _ in range(10)]
    started = time.monotonic()
    stop = threading.Event()

    def dribble() -> None:  # one header byte every 0.2 s, for as long as the server lets it
        request = b"POST /api/1.0/test?action=ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        for byte in request:
            if stop.is_set():
                return
            for sock in dribbling:
                with contextlib.suppress(OSError):  # the server has closed it
                    sock.send(bytes([byte]))
            time.sleep(0.2)

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    try:
        assert all(closed_by_server(sock, within_s=4) for sock in silent + dribbling)
        assert time.monotonic() - started < 4.5  # a 1 s header deadline, looked at twice a second
    finally:
        stop.set()
        thread.join()
        for sock in silent + dribbling:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed(server: tuple[ServeProcess, Credentials]) -> None:
    process, _ = server
    with connect(process) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer_of(sock)[0] == 200
        started = time.monotonic()
        assert closed_by_server(sock, within_s=5)
        assert time.monotonic() - started < 3


def test_connections_beyond_the_cap_are_answered_429_at_once(
    server: tuple[ServeProcess, Credentials],
) -> None:
    process, _ = server
    held = [connect(process) for _ in range(30)]
    try:
        time.sleep(0.2)  # let the server take them all
        with connect(process) as extra:
            status, head = answer_of(extra)
            assert status == 429 and b"retry-after: 1" in head.lower()
            assert closed_by_server(extra, within_s=2)
    finally:
        for sock in held:
            sock.close()
    with connect(process) as again:  # once they are gone, the door is open again
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer_of(again)[0] == 200


@pytest.mark.parametrize("size_kb", [100, 200, 2000])  # in one read, in a few, in many
def test_headers_larger_than_the_bound_get_431(
    server: tuple[ServeProcess, Credentials], size_kb: int
) -> None:
    process, _ = server
    with connect(process) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (size_kb * 1024) + b"\r\n\r\n")
        status, head = answer_of(sock)
        assert status == 431 and b"connection: close" in head.lower()
        assert closed_by_server(sock, within_s=2)


def test_a_refused_client_that_goes_on_sending_still_reads_its_answer(
    server: tuple[ServeProcess, Credentials],
) -> None:
    """A lingering close: the server shuts its side after the 431 and drops what still comes, so
    the client's further bytes do not reset the connection under the answer."""
    process, _ = server
    with connect(process) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024))
        time.sleep(0.3)  # answered and refused by now
        sock.sendall(b"a" * (1024 * 1024))  # more headers, which the server no longer parses
        status, head = answer_of(sock)
        assert status == 431 and b"connection: close" in head.lower()
        assert closed_by_server(sock, within_s=5)


def test_uploads_under_an_unknown_key_are_refused_before_their_body_is_read(
    server: tuple[ServeProcess, Credentials],
) -> None:
    """40 uploads of 9 MB that stall: each is answered 401 at once, and the process does not grow."""
    process, _ = server
    assert process.proc is not None
    before = rss_mb(process.proc.pid)
    uri = "/api/1.0/batch?action=run"
    fake = Credentials("0" * 32, "not-a-secret", "")
    sockets = []
    for _ in range(40):
        sock = connect(process)
        sock.sendall(signed_head(fake, uri, b"", content_length=9 * 1024 * 1024) + b"x" * 65536)
        sockets.append(sock)
    try:
        assert all(answer_of(sock)[0] == 401 for sock in sockets)
        assert all(closed_by_server(sock, within_s=3) for sock in sockets)  # the body is not waited for
        assert rss_mb(process.proc.pid) - before < 40
    finally:
        for sock in sockets:
            sock.close()


def test_a_signed_body_that_trickles_is_cut_off(server: tuple[ServeProcess, Credentials]) -> None:
    process, key = server
    uri = "/api/1.0/test?action=echo"
    body = orjson.dumps({"pad": "a" * 200_000})
    with connect(process) as sock:
        sock.sendall(signed_head(key, uri, body) + body[:1000])
        started = time.monotonic()
        status, head = answer_of(sock)  # the rest never comes: 1 kB in 2 s is far below 20 kB/s
        assert status == 400 and b"connection: close" in head.lower()
        assert time.monotonic() - started < 5
        assert closed_by_server(sock, within_s=2)


def test_bodies_beyond_what_the_process_may_hold_are_turned_away_with_429(
    server: tuple[ServeProcess, Credentials],
) -> None:
    """Three signed uploads of 10 MB at once against a 24 MB budget: the third is told to come back."""
    process, key = server
    uri = "/api/1.0/test?action=echo"
    body = orjson.dumps({"pad": "a" * (10 * 1024 * 1024 - 20)})
    sockets = [connect(process) for _ in range(3)]
    try:
        for sock in sockets:
            sock.sendall(signed_head(key, uri, body) + body[:100_000])  # and then too slowly
        statuses = sorted(answer_of(sock)[0] for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    assert statuses == [400, 400, 429]  # the third refused at once; the two it waited on, cut off as slow
