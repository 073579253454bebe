"""Soak test: the real server under steady load while its dependencies fail, then a reckoning.

    python bench/soak.py --models V1_DIR V2_DIR [--duration 600 | --short] [--rate 100]

Runs `tanp-serve --workers 2` on loopback with its own `redis-server` and its own database on
the machine's Postgres (127.0.0.1:5432, user postgres), reached through a TCP proxy this script
can cut. A separate process sends an open-loop load (request i leaves at t0 + i / rate, whatever
happened to the earlier ones; latency counted from that time), each with its own X-Request-ID:
two in three are distinct support sets, one in three repeats one of 300 (so task states and
answers are remembered across reloads). A memo-flood client sends distinct maximal requests
(3,700 excluded items, 3,800 candidates) beside it. The fault schedule (fractions of the run):

    10 % reload v2          35 % reload v1               60 % the refused reload, again
    20 % Redis killed (-9)  45 % Postgres cut            70 % a corrupt version offered (422)
    30 % Redis restarted    50 % reload v2 (cut: 503)    80 % reload v1
                            55 % Postgres back           85 % v1 retrained in its own folder
                                                              (new weights), reload v1
                                                         90 % reload v2

Afterwards: sent vs answered vs request-log rows in Postgres (waiting for the spools to drain),
each worker's drop and failure counters, whether every acknowledged reload stayed in force (no
answer from other weights, by sha256, sent after its 200: RELOAD_CONFIRM_SECONDS makes the 200
wait for every worker), hybrids (a sample of answers re-scored here with the weights they name),
per-minute p50/p99 and each worker's RSS; then the parent is killed with SIGKILL, its workers
must stop by themselves and a new server must start on the same port and serve the last
acknowledged version. Prints markdown; `--json` writes the figures. Everything it starts it
stops; its database is dropped. `--short`: 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support
sys.path.insert(0, str(Path(__file__).resolve().parent))  # memory

from memory import maximal_body

from tests.support.live_server import LiveServer, alive
from tests.support.network import TcpProxy, free_port

POSTGRES = ("127.0.0.1", 5432)
POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
PROPAGATION_SECONDS = 6.0  # pub/sub, or one reconcile round (5 s) when a message was missed
CONNECTIONS = 64  # the load generator's keep-alive connections
REQUEST_TIMEOUT_SECONDS = 15.0
REPEATED_SETS = 300  # support sets the load repeats (one request in three)
CHECKED_EVERY = 10  # one answer in this many is kept whole and re-scored here (hybrids)
FLOOD_RATE = 10.0  # memo-flood requests a second
HYBRID_TOLERANCE = 1e-3  # a score this far from the named weights' own is a hybrid
METRIC = re.compile(r"^(tanp_request_log_\w+?)(?:_total)? (\S+)$", re.MULTILINE)


# --- the parts the soak owns ---------------------------------------------------------------


class Redis:
    """A `redis-server` of our own (no persistence), killed and restarted on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = (workdir / "redis.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def close(self) -> None:
        self.kill()
        self._log.close()


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


# --- the load (its own process) ------------------------------------------------------------


@dataclass
class Sample:
    scheduled: float  # seconds after t0
    latency: float  # seconds from the scheduled time; nan when no answer
    status: int  # 0: no answer (connection error or timeout)
    version: str
    sha: str = ""  # the weights that answered (model_sha256)
    index: int = -1
    items: list[tuple[str, float]] | None = None  # kept for one answer in CHECKED_EVERY


def support(items: list[str], index: int) -> list[dict[str, Any]]:
    """Request `index`'s support set: 10-20 distinct items, 0/1 ratings, the same every run;
    one request in three repeats one of REPEATED_SETS sets."""
    seed = 10**9 + index % REPEATED_SETS if index % 3 == 0 else index
    generator = random.Random(seed)
    chosen = generator.sample(items, generator.randint(10, 20))
    return [{"item_id": item, "rating": generator.randint(0, 1)} for item in chosen]


async def _load(
    *, port: int, items: list[str], rate: float, count: int, run: str, t0: float
) -> list[Sample]:
    """Request i is sent at t0 + i / rate on one of CONNECTIONS keep-alive connections (a
    minimal HTTP/1.1 client: its cost stays flat however far the server falls behind, where a
    general client's pool bookkeeping grows with the backlog)."""
    samples: list[Sample] = []
    pool: asyncio.Queue[Connection | None] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(None)  # connected on first use

    async def one(index: int, scheduled: float) -> None:
        body = json.dumps({"support": support(items, index), "k": 10}).encode()
        request = (
            f"POST /v1/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-ID: {run}-{index}\r\n\r\n"
        ).encode() + body
        connection = await pool.get()
        try:
            status, payload, connection = await asyncio.wait_for(
                exchange(connection, port=port, request=request), REQUEST_TIMEOUT_SECONDS
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            if connection is not None:
                connection[1].close()
            pool.put_nowait(None)
            samples.append(Sample(scheduled - t0, float("nan"), 0, ""))
            return
        pool.put_nowait(connection)
        answer = json.loads(payload) if status == 200 else {}
        kept = None
        if status == 200 and index % CHECKED_EVERY == 0:
            kept = [(item["item_id"], item["score"]) for item in answer["items"]]
        samples.append(
            Sample(
                scheduled - t0,
                time.time() - scheduled,
                status,
                answer.get("model_version", ""),
                answer.get("model_sha256", ""),
                index,
                kept,
            )
        )

    tasks = []
    for index in range(count):
        scheduled = t0 + index / rate
        delay = scheduled - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    for _ in range(CONNECTIONS):
        connection = pool.get_nowait()
        if connection is not None:
            connection[1].close()
    return samples


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def exchange(
    connection: Connection | None, *, port: int, request: bytes
) -> tuple[int, bytes, Connection | None]:
    """Send `request`, read the answer: (status, body, the connection if it stays open). A
    kept-alive connection the server closed before reading is reopened once."""
    for attempt in range(2):
        if connection is None:
            connection = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = connection
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:  # closed while idle: the request was never read
            writer.close()
            connection = None
            if attempt == 0:
                continue
            raise ConnectionResetError("connection closed before an answer")
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        payload = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            writer.close()
            connection = None
        return int(status_line.split()[1]), payload, connection
    raise ConnectionResetError("unreachable")


def load(**kwargs: Any) -> list[dict[str, Any]]:
    """Runs in the load-generator process; plain dicts cross the process boundary."""
    return [asdict(sample) for sample in asyncio.run(_load(**kwargs))]


# --- the soak ------------------------------------------------------------------------------


@dataclass
class Event:
    at: float  # seconds after t0
    what: str
    status: int | None = None
    detail: str = ""


@dataclass
class Soak:
    events: list[Event] = field(default_factory=list)
    # (sent, acknowledged, version, weights sha256): the swap happens between the two
    acknowledged: list[tuple[float, float, str, str]] = field(default_factory=list)
    rss: list[tuple[float, int, float]] = field(default_factory=list)  # (when, pid, MB)
    load: list[tuple[float, float]] = field(default_factory=list)  # (when, 1-min load average)


def sample_machine(soak: Soak, *, pids: set[int], t0: float) -> None:
    """RSS of the server's processes and the machine's load average, now."""
    now = time.time() - t0
    for pid in pids:
        megabytes = rss_mb(pid)
        if megabytes is not None:
            soak.rss.append((now, pid, megabytes))
    soak.load.append((now, os.getloadavg()[0]))


def corrupt_copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))


def retrain_in_place(run_dir: Path, *, scale: float = 1.25) -> None:
    """New weights in `run_dir` under the same name, written by the project's own
    `save_checkpoint` as a retrain into an existing `--out` would: the model's decoder scaled
    by `scale` and shifted (a different model, the same catalog)."""
    from tanp.checkpoint import build_model, save_checkpoint

    loaded = build_model(run_dir, "cpu")
    model = loaded.model
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("decoder."):
                parameter.mul_(scale).add_(0.01)
    manifest = loaded.manifest
    save_checkpoint(
        run_dir,
        model=model,
        items=loaded.items,
        item_names=loaded.item_names,
        item_urls=loaded.item_urls,
        version=run_dir.name,
        train_config=manifest.get("train_config"),
        data=manifest.get("data"),
        metrics=manifest.get("metrics"),
    )


def flood(*, port: int, items: list[str], stop: Any, run: str, counts: dict[str, int]) -> None:
    """Distinct maximal requests (3,700 excluded items, 3,800 candidates, each request a new
    support set) at FLOOD_RATE a second until `stop` is set: what once grew the answer memo
    without bound. Counts statuses in `counts`."""
    generator = random.Random(7)
    index = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            index += 1
            body = maximal_body(items, generator)
            try:
                response = client.post(
                    "/v1/recommend",
                    content=body,
                    headers={"X-Request-ID": f"{run}f-{index}", "Content-Type": "application/json"},
                )
                key = str(response.status_code)
            except httpx.HTTPError:
                key = "0"
            counts[key] = counts.get(key, 0) + 1
            stop.wait(max(0.0, 1.0 / FLOOD_RATE - (time.monotonic() - started)))


def hybrid_count(
    samples: list[Sample], *, items: list[str], weights: dict[str, Path]
) -> tuple[int, int]:
    """(answers re-scored here, hybrids among them): each kept answer re-scored with the
    weights its sha names; a score off by more than HYBRID_TOLERANCE is a hybrid (another
    model's task state decoded by these weights)."""
    from app.serving.model import ServingModel

    models: dict[str, ServingModel] = {}
    checked = hybrids = 0
    for sample in samples:
        if sample.items is None or sample.sha not in weights:
            continue
        if sample.sha not in models:
            models[sample.sha] = ServingModel.load(weights[sample.sha], device="cpu")
        model = models[sample.sha]
        asked = support(items, sample.index)
        state = model.scorer.encode_one(
            [model.index_of[item["item_id"]] for item in asked],
            [float(item["rating"]) for item in asked],
        )
        scores = model.scorer.scores(state)[0].tolist()
        checked += 1
        if any(
            abs(score - scores[model.index_of[item]]) > HYBRID_TOLERANCE
            for item, score in sample.items
        ):
            hybrids += 1
    return checked, hybrids


def worker_metrics(
    base: str, expected: int, auth: dict[str, str], attempts: int = 60
) -> dict[int, dict[str, float]]:
    """Each worker's request-log counters: /health then /metrics on one keep-alive connection
    (so one worker answers both), until every worker was seen."""
    found: dict[int, dict[str, float]] = {}
    for _ in range(attempts):
        with httpx.Client(base_url=base, timeout=10, headers=auth) as client:
            pid = int(client.get("/health").json()["pid"])
            text = client.get("/metrics").text
        found[pid] = {name: float(value) for name, value in METRIC.findall(text)}
        if len(found) >= expected:
            break
    return found


def logged_rows(database: str, run: str) -> int:
    """Request-log rows whose request id starts with `run` + "-" (the load's; the flood's
    start with `run` + "f-")."""
    with psycopg.connect(POSTGRES_ADMIN.replace("dbname=postgres", f"dbname={database}")) as db:
        row = db.execute(
            "SELECT count(*) FROM request_log WHERE request_id LIKE %s", (f"{run}-%",)
        ).fetchone()
        return int(row[0]) if row else 0


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    array = np.asarray(values) * 1000.0
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", type=Path, nargs=2, required=True, metavar=("V1", "V2"))
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--short", action="store_true", help="60 s instead of --duration")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server log)")
    args = parser.parse_args(argv)
    duration = 60.0 if args.short else args.duration

    workdir = Path(tempfile.mkdtemp(prefix="tanp-soak-"))
    models = workdir / "models"
    for source, name in zip(args.models, ("v1", "v2"), strict=True):
        shutil.copytree(source, models / name)
    os.utime(models / "v1" / "manifest.json", (time.time() - 100, time.time() - 100))
    items: list[str] = json.loads((models / "v1" / "manifest.json").read_text())["items"]
    # every weights file any answer may name, kept aside for the hybrid check
    weights: dict[str, Path] = {}

    def keep_weights(name: str) -> None:
        sha = json.loads((models / name / "manifest.json").read_text())["weights_sha256"]
        shutil.copytree(models / name, workdir / "weights" / sha, dirs_exist_ok=True)
        weights[sha] = workdir / "weights" / sha

    keep_weights("v1")
    keep_weights("v2")
    run = f"soak-{uuid.uuid4().hex[:8]}"
    database = f"tanp_{run.replace('-', '_')}"
    token = uuid.uuid4().hex

    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    redis_server = Redis(workdir)
    proxy = TcpProxy(POSTGRES)
    direct_url = f"postgresql+psycopg://postgres@127.0.0.1:{POSTGRES[1]}/{database}"
    env = {key: value for key, value in os.environ.items() if key != "ACTIVE_MODEL"}
    env.update(
        MODELS_DIR=str(models),
        DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{database}",
        REDIS_URL=redis_server.url,
        BROADCAST_PREFIX=f"{run}:",
        ADMIN_TOKEN=token,
        REQUEST_LOG_SPOOL_DIR=str(workdir / "spool"),
        RELOAD_CONFIRM_SECONDS="10",
        DEVICE="cpu",
        LOG_LEVEL="INFO",
        OMP_NUM_THREADS="1",
    )
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env={**env, "DATABASE_URL": direct_url},
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = LiveServer(env=env, port=port, workers=args.workers, log=workdir / "serve.log")
    soak = Soak()
    result: dict[str, Any] = {}
    restart: LiveServer | None = None
    try:
        ready_seconds = server.wait_ready(timeout=180)
        worker_pids = server.workers()
        auth = {"Authorization": f"Bearer {token}"}
        count = int(args.rate * duration)
        t0 = time.time() + 2.0
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
            future = executor.submit(
                load,
                port=port,
                items=items,
                rate=args.rate,
                count=count,
                run=run,
                t0=t0,
            )
            admin = httpx.Client(base_url=server.url, headers=auth, timeout=60)
            flood_stop = threading.Event()
            flood_counts: dict[str, int] = {}
            flooder = threading.Thread(
                target=flood,
                kwargs={
                    "port": port,
                    "items": items,
                    "stop": flood_stop,
                    "run": run,
                    "counts": flood_counts,
                },
                daemon=True,
            )
            while time.time() < t0:
                time.sleep(0.05)
            flooder.start()

            def reload(version: str, label: str) -> int:
                sent = time.time() - t0
                response = admin.post("/admin/models/reload", json={"version": version})
                at = time.time() - t0
                soak.events.append(Event(at, label, response.status_code, response.text[:300]))
                if response.status_code == 200:
                    soak.acknowledged.append((sent, at, version, response.json()["sha256"]))
                return response.status_code

            def retrain_and_reload() -> None:
                retrain_in_place(models / "v1", scale=0.8)
                keep_weights("v1")
                soak.events.append(Event(time.time() - t0, "v1 retrained in its own folder"))
                reload("v1", "reload v1 (retrained, same name)")

            def fault(label: str, action: Any) -> None:
                action()
                soak.events.append(Event(time.time() - t0, label))

            refused: list[str] = []
            schedule: list[tuple[float, Any]] = [
                (0.10, lambda: reload("v2", "reload v2")),
                (0.20, lambda: fault("Redis killed (SIGKILL)", redis_server.kill)),
                (0.30, lambda: fault("Redis restarted", redis_server.start)),
                (0.35, lambda: reload("v1", "reload v1")),
                (0.45, lambda: fault("Postgres cut (proxy closed)", proxy.cut)),
                (
                    0.50,
                    lambda: (
                        refused.append("v2")
                        if reload("v2", "reload v2 during the Postgres cut") != 200
                        else None
                    ),
                ),
                (0.55, lambda: fault("Postgres back", proxy.restore)),
                (0.60, lambda: [reload(v, f"reload {v} again (was refused)") for v in refused]),
                (
                    0.70,
                    lambda: (
                        corrupt_copy(models / "v1", models / "corrupt"),
                        reload("corrupt", "corrupt version offered"),
                    ),
                ),
                (0.80, lambda: reload("v1", "reload v1")),
                (0.85, retrain_and_reload),
                (0.90, lambda: reload("v2", "reload v2")),
            ]
            for fraction, action in schedule:
                while time.time() < t0 + fraction * duration:
                    sample_machine(soak, pids={server.process.pid, *worker_pids}, t0=t0)
                    time.sleep(min(5.0, max(0.0, t0 + fraction * duration - time.time())))
                action()
            while not future.done():
                sample_machine(soak, pids={server.process.pid, *worker_pids}, t0=t0)
                time.sleep(2.0)
            samples = [Sample(**sample) for sample in future.result()]
            flood_stop.set()
            flooder.join(60)
            admin.close()

        # --- the reckoning -----------------------------------------------------------------
        answered = [sample for sample in samples if sample.status]
        ok = [sample for sample in answered if sample.status == 200]
        drained_at = time.monotonic()
        rows, previous, stable_since = 0, -1, time.monotonic()
        while time.monotonic() - drained_at < 300:
            rows = logged_rows(database, run)
            if rows >= len(ok):
                break
            if rows != previous:
                previous, stable_since = rows, time.monotonic()
            elif time.monotonic() - stable_since > 60:
                break
            time.sleep(1.0)
        drain_seconds = time.monotonic() - drained_at
        counters = worker_metrics(server.url, expected=len(worker_pids), auth=auth)
        health = httpx.get(f"{server.url}/health", headers=auth, timeout=10).json()
        final_versions = {int(worker["pid"]): worker["version"] for worker in health["workers"]}
        expected_version = soak.acknowledged[-1][2] if soak.acknowledged else None
        checked, hybrids = hybrid_count(ok, items=items, weights=weights)

        # An acknowledged reload is in force from its answer to the next one: the 200 waits
        # (RELOAD_CONFIRM_SECONDS) until every worker serves the new weights.
        reverted = 0
        in_force = 0
        windows = []
        for index, (_, at, version, sha) in enumerate(soak.acknowledged):
            # Judged: requests sent after the 200 and answered before the next reload was
            # sent, so their model was chosen inside this reload's reign.
            until = soak.acknowledged[index + 1][0] if index + 1 < len(soak.acknowledged) else 1e18
            window = [s for s in ok if at <= s.scheduled and s.scheduled + s.latency < until]
            wrong = [s for s in window if (s.version, s.sha) != (version, sha)]
            reverted += len(wrong)
            in_force += not wrong
            windows.append(
                {
                    "acknowledged_at": round(at, 1),
                    "version": version,
                    "answers": len(window),
                    "from_another_version": len(wrong),
                    "wrong_between": [round(wrong[0].scheduled, 1), round(wrong[-1].scheduled, 1)]
                    if wrong
                    else None,
                    "wrong_versions": sorted({f"{s.version}@{s.sha[:12]}" for s in wrong}),
                }
            )
        minutes = []
        for minute in range(int(np.ceil(duration / 60.0))):
            bucket = [s for s in samples if minute * 60 <= s.scheduled < (minute + 1) * 60]
            p50, p99 = percentiles([s.latency for s in bucket if s.status == 200])
            rss = [
                megabytes
                for when, pid, megabytes in soak.rss
                if minute * 60 <= when < (minute + 1) * 60 and pid in worker_pids
            ]
            each = {
                pid: round(megabytes)
                for when, pid, megabytes in soak.rss
                if minute * 60 <= when < (minute + 1) * 60 and pid in worker_pids
            }  # the last sample of the minute, per worker
            loads = [value for when, value in soak.load if minute * 60 <= when < (minute + 1) * 60]
            minutes.append(
                {
                    "load_average_max": max(loads) if loads else float("nan"),
                    "minute": minute + 1,
                    "sent": len(bucket),
                    "answered": sum(1 for s in bucket if s.status),
                    "5xx": sum(1 for s in bucket if s.status >= 500),
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "worker_rss_mb_max": max(rss) if rss else float("nan"),
                    "worker_rss_mb_each": [each[pid] for pid in sorted(each)],
                }
            )

        # --- restarts that need no hands -----------------------------------------------------
        last_version_before_kill = expected_version
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(30)
        killed_at = time.monotonic()
        while any(alive(pid) for pid in worker_pids) and time.monotonic() - killed_at < 60:
            time.sleep(0.1)
        workers_gone_seconds = time.monotonic() - killed_at
        orphans = sorted(pid for pid in worker_pids if alive(pid))
        restart = LiveServer(env=env, port=port, workers=args.workers, log=workdir / "serve.log")
        restart_ready_seconds = restart.wait_ready(timeout=180)
        after_restart = {
            httpx.post(
                f"{restart.url}/v1/recommend",
                json={"support": [{"item_id": items[0], "rating": 1}]},
                timeout=15,
            ).json()["model_version"]
            for _ in range(10)
        }

        statuses: dict[str, int] = {}
        for sample in samples:
            statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
            f"torch {torch.__version__}",
            "duration_s": duration,
            "rate": args.rate,
            "workers": args.workers,
            "server_ready_s": round(ready_seconds, 1),
            "sent": len(samples),
            "answered": len(answered),
            "lost": len(samples) - len(answered),
            "statuses": statuses,
            "5xx": sum(1 for s in samples if s.status >= 500),
            "logged_rows": rows,
            "log_drain_s": round(drain_seconds, 1),
            "worker_counters": counters,
            "dropped_rows": sum(c.get("tanp_request_log_dropped", 0) for c in counters.values()),
            "failed_log_writes": sum(
                c.get("tanp_request_log_failures", 0) for c in counters.values()
            ),
            "acknowledged_reloads": len(soak.acknowledged),
            "acknowledged_reloads_in_force": in_force,
            "answers_from_a_reverted_version": reverted,
            "answers_rescored": checked,
            "hybrids": hybrids,
            "flood": flood_counts,
            "reload_windows": windows,
            "expected_final_version": expected_version,
            "final_worker_versions": final_versions,
            "events": [asdict(event) for event in soak.events],
            "minutes": minutes,
            "kill9": {
                "workers_gone_s": round(workers_gone_seconds, 2),
                "orphans": orphans,
                "restart_ready_s": round(restart_ready_seconds, 1),
                "versions_after_restart": sorted(after_restart),
                "expected": last_version_before_kill,
            },
        }
    finally:
        for running in (server, restart):
            if running is not None:
                running.stop(timeout=30)
        proxy.cut()
        redis_server.close()
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin_db:
            admin_db.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(report(result))
    healthy = (
        result["lost"] == 0
        and result["5xx"] == 0
        and result["answers_from_a_reverted_version"] == 0
        and result["hybrids"] == 0
        and set(result["flood"]) <= {"200"}
        and result["logged_rows"] + result["dropped_rows"] >= result["statuses"].get("200", 0)
        and not result["kill9"]["orphans"]
        and result["kill9"]["versions_after_restart"] == [result["expected_final_version"]]
    )
    return 0 if healthy else 1


def report(result: dict[str, Any]) -> str:
    kill9 = result["kill9"]
    lines = [
        f"machine: {result['machine']}; tanp-serve --workers {result['workers']} on 127.0.0.1 "
        f"with its own redis-server and its own Postgres database (through a cuttable proxy); "
        f"open-loop load of distinct support sets at {result['rate']:.0f} req/s for "
        f"{result['duration_s']:.0f} s from a separate process",
        "",
        "| sent | answered | lost | 5xx | statuses | request-log rows | dropped rows "
        "| failed log writes | acknowledged reloads in force | answers from other weights "
        "| hybrids (of re-scored) |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        f"| {result['sent']} | {result['answered']} | {result['lost']} | {result['5xx']} "
        f"| {json.dumps(result['statuses'])} | {result['logged_rows']} "
        f"| {result['dropped_rows']:.0f} | {result['failed_log_writes']:.0f} "
        f"| {result['acknowledged_reloads_in_force']} of {result['acknowledged_reloads']} "
        f"| {result['answers_from_a_reverted_version']} "
        f"| {result['hybrids']} of {result['answers_rescored']} |",
        "",
        f"memo flood (distinct maximal requests, {FLOOD_RATE:.0f}/s, not in the figures above): "
        f"statuses {json.dumps(result['flood'])}",
        "",
        "| minute | sent | answered | 5xx | p50 ms | p99 ms | worker RSS MB (each, end of minute) "
        "| machine load average max |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for minute in result["minutes"]:
        lines.append(
            f"| {minute['minute']} | {minute['sent']} | {minute['answered']} | {minute['5xx']} "
            f"| {minute['p50_ms']:.1f} | {minute['p99_ms']:.1f} "
            f"| {', '.join(str(mb) for mb in minute['worker_rss_mb_each'])} "
            f"| {minute['load_average_max']:.1f} |"
        )
    lines += ["", "| t (s) | event | answer |", "|---:|---|---|"]
    for event in result["events"]:
        answer = "" if event["status"] is None else str(event["status"])
        if event["status"] and event["status"] != 200:
            answer += ": " + event["detail"].replace("|", "/")[:160]
        lines.append(f"| {event['at']:.1f} | {event['what']} | {answer} |")
    lines += [
        "",
        f"request-log rows landed {result['log_drain_s']:.0f} s after the load ended; "
        f"final versions per worker {result['final_worker_versions']} "
        f"(last acknowledged: {result['expected_final_version']})",
        f"kill -9 of the parent: workers gone after {kill9['workers_gone_s']} s "
        f"(orphans: {kill9['orphans'] or 'none'}); restarted on the same port, ready in "
        f"{kill9['restart_ready_s']} s, serving {kill9['versions_after_restart']} "
        f"(expected {kill9['expected']})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
