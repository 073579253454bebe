"""Worker memory under hostile volume: distinct maximal requests (the answer memo) and huge
headers (MAX_HEADER_BYTES), against a real `tanp-serve`.

    python bench/memory.py --model RUN_DIR [--requests 10000] [--concurrency 4]

Starts `tanp-serve --workers 1` (SQLite, in-process cache, the default ANSWER_CACHE_BYTES) on a
free port, warms it with 50 requests, then sends `--requests` distinct maximal requests (a new
support set of 5 liked items, 3,700 excluded items, 3,800 candidates, k = 100: about 60 kB,
under MAX_BODY_BYTES) and reports the worker's RSS before and after; then 4 connections each
stream a 50 MB header and the RSS is read again (each should get 431 long before 50 MB). Issue
21's acceptance: RSS within 200 MB of its start after the requests; flat after the headers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support

from tests.support.live_server import LiveServer, serve_environment

HEADER_BYTES = 50 * 1024 * 1024


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) / 1024


def maximal_body(items: list[str], generator: random.Random) -> bytes:
    chosen = generator.sample(items, 5)
    others = [item for item in items if item not in chosen]
    body = {
        "support": [{"item_id": item, "rating": 1} for item in chosen],
        "k": 100,
        "exclude": generator.sample(others, min(3700, len(others) - 120)),
        "candidates": generator.sample(others, min(3800, len(others))),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def big_header(port: int) -> str:
    """Stream a 50 MB header; what the server answered, and how much it took."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(b"GET /livez HTTP/1.1\r\nhost: x\r\nx-big: ")
        chunk = b"a" * 65_536
        with contextlib.suppress(OSError):
            while sent < HEADER_BYTES:
                connection.sendall(chunk)
                sent += len(chunk)
        answer = b""
        with contextlib.suppress(OSError):
            answer = connection.recv(200)
    status = answer.split(b"\r\n", 1)[0].decode("latin-1") or "(connection closed)"
    return f"{status} after {sent / 1e6:.2f} MB sent"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tanp-memory-"))
    shutil.copytree(args.model, workdir / "models" / "v1")
    items: list[str] = json.loads((args.model / "manifest.json").read_text())["items"]
    env = serve_environment(
        MODELS_DIR=str(workdir / "models"),
        DATABASE_URL=f"sqlite:///{workdir / 'memory.db'}",
        REQUEST_LOG_SPOOL_DIR=str(workdir / "spool"),
        DEVICE="cpu",
        LOG_LEVEL="WARNING",
    )
    server = LiveServer(env=env, workers=1, log=workdir / "serve.log")
    try:
        server.wait_ready(timeout=180)
        (worker,) = server.workers() or {server.process.pid}  # one worker: the process itself
        generator = random.Random(1)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(50):
                client.post(
                    "/v1/recommend",
                    content=maximal_body(items, generator),
                    headers={"Content-Type": "application/json"},
                )
        start = rss_mb(worker)
        statuses: Counter[int] = Counter()
        lock = threading.Lock()
        bodies = [maximal_body(items, random.Random(1_000 + i)) for i in range(args.requests)]
        started = time.monotonic()

        def send(chunk: list[bytes]) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                for body in chunk:
                    response = client.post(
                        "/v1/recommend", content=body, headers={"Content-Type": "application/json"}
                    )
                    with lock:
                        statuses[response.status_code] += 1

        chunks = [bodies[i :: args.concurrency] for i in range(args.concurrency)]
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(send, chunks))
        seconds = time.monotonic() - started
        after_requests = rss_mb(worker)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            headers = list(pool.map(big_header, [server.port] * 4))
        after_headers = rss_mb(worker)
        print(
            f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
            f"tanp-serve --workers 1, SQLite, in-process cache, default settings\n\n"
            "| what | worker RSS MB before | after | change | answers |\n"
            "|---|---:|---:|---:|---|\n"
            f"| {args.requests:,} distinct maximal requests ({seconds:.0f} s) | {start:.0f} "
            f"| {after_requests:.0f} | {after_requests - start:+.0f} | {dict(statuses)} |\n"
            f"| 4 connections streaming a 50 MB header | {after_requests:.0f} "
            f"| {after_headers:.0f} | {after_headers - after_requests:+.0f} "
            f"| {'; '.join(sorted(set(headers)))} |"
        )
        healthy = after_requests - start < 200 and after_headers - after_requests < 50
        return 0 if healthy and set(statuses) == {200} else 1
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
