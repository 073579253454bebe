"""`tanp-serve` against clients that never finish and a parent that dies (real uvicorn).

Slow headers, a slow body and idle connections are closed (408 when part of a request came);
after `kill -9` of the parent of `--workers 2` its workers stop by themselves and a new server
starts on the same port without anyone cleaning up. Waits are bounded liveness checks, never
timed assertions."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from model_versions import save_version

from app.server import SUPERVISOR_PID_ENV, wait_for_port
from tests.support.live_server import LiveServer, alive, serve_environment
from tests.support.network import free_port
from tests.support.polling import wait_for

TIMEOUT_SECONDS = "1"
PATIENCE = 30.0  # how long a check waits before it calls the server stuck


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    save_version(root, "v1")
    return root


def start(models: Path, tmp: Path, *, workers: int, port: int | None = None) -> LiveServer:
    env = serve_environment(
        MODELS_DIR=str(models),
        DATABASE_URL=f"sqlite:///{tmp / 'serve.db'}",
        MIGRATE_ON_START="1",
        REQUEST_LOG_SPOOL_DIR=str(tmp / "spool"),
        HEADER_TIMEOUT_SECONDS=TIMEOUT_SECONDS,
        BODY_TIMEOUT_SECONDS=TIMEOUT_SECONDS,
        KEEP_ALIVE_SECONDS=TIMEOUT_SECONDS,
    )
    server = LiveServer(
        env=env, workers=workers, log=tmp / f"serve-{time.monotonic_ns()}.log", port=port
    )
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    running = start(models, tmp_path_factory.mktemp("serve"), workers=1)
    yield running
    running.stop()


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by PATIENCE)."""
    connection.settimeout(PATIENCE)
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)


@pytest.mark.integration
def test_a_connection_that_sends_nothing_is_closed(server: LiveServer) -> None:
    with connect(server) as connection:
        assert read_until_closed(connection) == b""


@pytest.mark.integration
def test_headers_that_never_end_get_a_408(server: LiveServer) -> None:
    with connect(server) as connection:
        connection.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\n")
        answer = read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"detail": "request headers not received within 1 s"' in answer


@pytest.mark.integration
def test_a_body_that_never_ends_gets_a_408_and_the_server_serves_on(server: LiveServer) -> None:
    with connect(server) as connection:
        connection.sendall(
            b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"support": ['
        )
        answer = read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request body not received within 1 s" in answer
    response = httpx.post(f"{server.url}/v1/recommend", json={"support": []}, timeout=PATIENCE)
    assert response.status_code == 200


@pytest.mark.integration
def test_an_idle_keep_alive_connection_is_closed_after_its_answer(server: LiveServer) -> None:
    with connect(server) as connection:
        connection.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}')


@pytest.mark.integration
def test_workers_stop_with_a_killed_parent_and_a_restart_needs_no_hands(
    models: Path, tmp_path: Path
) -> None:
    """Issue 16 item 6: after kill -9 of the parent its workers kept serving, and a restart
    failed with Errno 98 until they were killed by hand."""
    port = free_port()
    first = start(models, tmp_path, workers=2, port=port)
    try:
        workers = first.workers()
        assert len(workers) >= 2
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(PATIENCE)
        assert wait_for(lambda: not any(alive(worker) for worker in workers), timeout=PATIENCE), [
            worker for worker in workers if alive(worker)
        ]
        second = start(models, tmp_path, workers=2, port=port)
        try:
            response = httpx.post(f"{second.url}/v1/recommend", json={"support": []})
            assert response.status_code == 200
        finally:
            second.stop()
    finally:
        first.stop()


def test_wait_for_port_waits_only_for_a_port_in_use() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not wait_for_port("127.0.0.1", port, seconds=0)
    assert wait_for_port("127.0.0.1", port, seconds=0)


@pytest.mark.parametrize(
    ("supervisor", "returncode"),
    [(None, 0), ("parent", 0), ("gone", -signal.SIGTERM)],
)
def test_a_worker_stops_when_its_supervisor_is_gone(
    supervisor: str | None, returncode: int
) -> None:
    """`die_with_parent` in a fresh interpreter whose supervisor is: unset (a one-process
    server, left alone), its real parent, or a process that is not its parent (it stops)."""
    env = dict(os.environ)
    env.pop(SUPERVISOR_PID_ENV, None)
    if supervisor == "parent":
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
    elif supervisor == "gone":
        env[SUPERVISOR_PID_ENV] = "1"  # init: never the parent of a process we start
    code = "from app.server import die_with_parent; die_with_parent(); import time; time.sleep(0.5)"
    finished = subprocess.run([sys.executable, "-c", code], env=env, timeout=PATIENCE)
    assert finished.returncode == returncode


@pytest.mark.integration
def test_headers_over_max_header_bytes_get_a_431_and_a_50_mb_header_is_never_read(
    server: LiveServer,
) -> None:
    """Issue 21 item 5: a 50 MB header was read whole and answered 200. Past MAX_HEADER_BYTES
    (16 KiB) the server answers 431 and closes: a client streaming 50 MB is cut off early."""
    with connect(server) as connection:
        connection.sendall(b"GET /livez HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000)
        answer = read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"over 16384 bytes" in answer
    with connect(server) as connection:
        connection.sendall(b"GET /livez HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent = 0
        chunk = b"a" * 65_536
        with contextlib.suppress(OSError):  # the server closed the connection
            while sent < 50 * 1024 * 1024:
                connection.sendall(chunk)
                sent += len(chunk)
    assert sent < 50 * 1024 * 1024
    # headers under the limit are served as before, and the server answers on
    with connect(server) as connection:
        connection.sendall(b"GET /livez HTTP/1.1\r\nhost: x\r\nx-ok: " + b"a" * 8_000 + b"\r\n\r\n")
        connection.settimeout(PATIENCE)
        assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
