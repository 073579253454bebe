"""Open-loop latency benchmark of the real server: `tanp-serve --workers N` on loopback.

    python bench/serve_latency.py --run RUN_DIR --redis-url redis://127.0.0.1:PORT/0 \\
        [--database-url postgresql+psycopg://...] [--workers 2] [--rate 100] [--duration 10] \\
        [--sweep] [--miss-rates 100,200,...] [--hit-rates 200,400,...] \\
        [--endpoint recommend|questions]

The load generator (`bench/loadgen.py`: raw asyncio/uvloop HTTP/1.1, precomputed request
bytes) runs in a separate process: request i is sent at t0 + i / rate whatever happened to
earlier ones, and its latency is counted from that due time, so a server that falls behind is
charged for the queueing (no coordinated omission). Scenarios: distinct support sets (cache
misses) and a pool of 32 repeated ones (cache hits). `--sweep` steps the rate for each until
p99 > 50 ms or an error, and reports the knee: the highest rate with p99 <= 50 ms and 0 errors.
Every step also reports the CPU per request of the server's processes, of the generator and of
the whole machine (Redis, Postgres and anything else running included).
Each run's Redis should be empty (a state left by an earlier run would turn a miss into a hit).
Then the server time of one request split into its parts, timed in this process on the same
components the server wires (parse/validate, cache, model, serialise, request log), next to the
in-process `tanp.scoring` time. Without --run, a 3,846-item model with random weights is saved
to a temp dir (said in the output). `--endpoint questions` loads POST /v1/onboarding/questions
instead (k = 5; a miss is a support set the answer memo has not seen, a hit a repeated one; no
in-process breakdown).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # loadgen
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support

import loadgen

from tanp.checkpoint import build_model, save_checkpoint
from tanp.config import TaNPConfig
from tanp.model import TaNP
from tanp.scoring import Scorer, pack_state, rank, unpack_state
from tests.support.live_server import wait_ready
from tests.support.network import free_port

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm"
LASTFM_ITEMS = 3846
SHORTLIST = int(os.environ.get("SHORTLIST", "500"))  # as the server's setting
P99_TARGET_MS = 50.0
HIT_POOL = 32
ENDPOINTS = {  # --endpoint: the path and the k of every request
    "recommend": ("/v1/recommend", 10),
    "questions": ("/v1/onboarding/questions", 5),
}


@dataclass(frozen=True)
class Result:
    scenario: str
    rate: float
    sent: int
    errors: int
    achieved_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu_ms: float = float("nan")  # server processes' CPU per answered request
    client_cpu_ms: float = float("nan")  # the generator's CPU per request
    machine_cpu_ms: float = float("nan")  # every process's CPU per request (Redis, SQL, ...)


def random_supports(items: list[str], count: int, seed: int) -> list[list[dict[str, Any]]]:
    generator = random.Random(seed)
    supports = []
    for _ in range(count):
        size = generator.randint(10, 20)
        chosen = generator.sample(items, size)
        supports.append([{"item_id": item, "rating": generator.randint(0, 1)} for item in chosen])
    return supports


def listener_supports(
    data: Path, items: list[str], count: int, seed: int
) -> list[list[dict[str, Any]]]:
    """Bodies of real listeners for a hetrec-median model: 5-20 of one HetRec user's artists
    (users drawn with replacement, artists without), each rated 1 when its play count is at
    least that user's median, else 0 (the model's own labels)."""
    from training.data import load_hetrec_median

    interactions = load_hetrec_median(data)
    known = set(items)
    by_user: dict[int, list[tuple[str, int]]] = {}
    for user, item, label in zip(
        interactions.users, interactions.items, interactions.labels, strict=True
    ):
        item_id = interactions.item_ids[item]
        if item_id in known:
            by_user.setdefault(int(user), []).append((item_id, int(label)))
    users = [user for user, rated in by_user.items() if len(rated) >= 5]
    generator = random.Random(seed)
    supports = []
    for _ in range(count):
        rated = by_user[generator.choice(users)]
        chosen = generator.sample(rated, generator.randint(5, min(20, len(rated))))
        supports.append([{"item_id": item, "rating": label} for item, label in chosen])
    return supports


def drive(
    *, port: int, payloads: list[bytes], rate: float
) -> tuple[list[float], int, float, float, str | None]:
    """Runs in the load-generator process: (latencies, errors, elapsed, own CPU s, last error)."""
    cpu = time.process_time()
    outcome = loadgen.drive(host="127.0.0.1", port=port, payloads=payloads, rate=rate)
    return (
        outcome.latencies,
        outcome.errors,
        outcome.elapsed,
        time.process_time() - cpu,
        outcome.last_error,
    )


def process_tree_cpu(root: int) -> float:
    """User + system CPU seconds of `root` and its children (the server and its workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [root]
    try:
        children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
        pids += [int(child) for child in children]
    except OSError:
        pass
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine, all cores (the first line of /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def summarise(
    scenario: str,
    *,
    rate: float,
    latencies: list[float],
    errors: int,
    elapsed: float,
    server_cpu: float = float("nan"),
    client_cpu: float = float("nan"),
    busy_cpu: float = float("nan"),
) -> Result:
    values = np.asarray(latencies) * 1000.0 if latencies else np.asarray([np.nan])
    sent = len(latencies) + errors
    return Result(
        scenario=scenario,
        rate=rate,
        sent=sent,
        errors=errors,
        achieved_rate=len(latencies) / elapsed if elapsed > 0 else 0.0,
        p50_ms=float(np.percentile(values, 50)),
        p95_ms=float(np.percentile(values, 95)),
        p99_ms=float(np.percentile(values, 99)),
        server_cpu_ms=1000.0 * server_cpu / max(len(latencies), 1),
        client_cpu_ms=1000.0 * client_cpu / max(sent, 1),
        machine_cpu_ms=1000.0 * busy_cpu / max(sent, 1),
    )


def in_process(run_dir: Path, supports: list[list[dict[str, Any]]], *, cached: bool) -> Result:
    """The same inputs through `tanp.scoring` directly (encode unless cached, the shortlist
    head's first pass when the model has one, decode, rank)."""
    torch.set_num_threads(1)
    loaded = build_model(run_dir, "cpu")
    scorer: Scorer = loaded.scorer
    index_of = {item: index for index, item in enumerate(loaded.items)}
    prepared = []
    for support in supports:
        indices = [index_of[entry["item_id"]] for entry in support]
        labels = [float(entry["rating"]) for entry in support]
        prepared.append((indices, labels, pack_state(scorer.encode_one(indices, labels))))
    timings = []
    for indices, labels, packed in prepared:
        started = time.perf_counter()
        state = unpack_state(packed) if cached else scorer.encode_one(indices, labels)
        if scorer.can_shortlist(SHORTLIST):
            chosen, values = scorer.shortlist_scores(
                state, count=SHORTLIST, exclude=torch.tensor(indices)
            )
            chosen.numpy()[rank(values.numpy(), k=10)]
        else:
            rank(scorer.scores(state)[0].numpy(), k=10, exclude=np.asarray(indices))
        timings.append(time.perf_counter() - started)
    name = "in-process tanp.scoring, " + ("cached state" if cached else "encode + decode")
    return summarise(name, rate=float("nan"), latencies=timings, errors=0, elapsed=sum(timings))


def model_parts(
    run_dir: Path, supports: list[list[dict[str, Any]]], *, shortlist: int
) -> list[tuple[str, float]]:
    """(part, mean ms) of the model's share of a cold request, one thread: encode the support,
    the shortlist head's first pass over the catalog (with the neighbour affinity), the decoder
    on the shortlisted items (on every item without a head), rank the top 10."""
    torch.set_num_threads(1)
    loaded = build_model(run_dir, "cpu")
    scorer: Scorer = loaded.scorer
    index_of = {item: index for index, item in enumerate(loaded.items)}
    parts: dict[str, list[float]] = {"encode": [], "first pass": [], "decode": [], "rank": []}
    with torch.inference_mode():
        for support in supports:
            indices = [index_of[entry["item_id"]] for entry in support]
            labels = [float(entry["rating"]) for entry in support]
            t0 = time.perf_counter()
            state = scorer.encode_one(indices, labels)
            t1 = time.perf_counter()
            chosen = None
            if scorer.can_shortlist(shortlist):
                first, affinity = scorer.first_pass(state, exclude=torch.tensor(indices))
                chosen = first.topk(shortlist).indices
            t2 = time.perf_counter()
            if chosen is None:
                scores = scorer.scores(state)[0].numpy()
            else:
                scores = scorer.decode_shortlist(state, chosen, affinity).numpy()
            t3 = time.perf_counter()
            rank(scores, k=10, exclude=None if chosen is not None else np.asarray(indices))
            t4 = time.perf_counter()
            for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                parts[name].append(1000.0 * seconds)
    return [(name, statistics.fmean(values)) for name, values in parts.items()]


def breakdown(
    run_dir: Path,
    supports: list[list[dict[str, Any]]],
    *,
    redis_url: str | None,
    database_url: str,
) -> list[tuple[str, float, float]]:
    """(part, mean ms on a miss, mean ms on a hit) of one request's server time, timed here on
    the components the server wires: the request's JSON -> RecommendRequest, the cache, the
    model (encode on a miss, decode, rank, ids and names), the response to JSON, the
    request-log record call."""
    from app.schemas import RecommendRequest
    from app.serving.cache import MemoryCache, RedisCache, TaskStateCache
    from app.serving.model import ServingModel
    from app.serving.pipeline import ScoringLimits, recommend
    from app.storage.db import open_database
    from app.storage.request_log import RequestLogEntry, SqlRequestLog

    try:
        from app.api.routes.recommend import recommend_response_json
    except ImportError:  # before the direct serialiser: what FastAPI's response_model did
        from pydantic import TypeAdapter

        from app.schemas import RecommendedItem, RecommendResponse

        adapter = TypeAdapter(RecommendResponse)

        def recommend_response_json(answer: Any, *, request_id: str) -> bytes:
            response = RecommendResponse(
                items=[
                    RecommendedItem(
                        item_id=item.item_id,
                        name=item.name,
                        score=item.score,
                        uncertainty=item.uncertainty,
                    )
                    for item in answer.items
                ],
                model_version=answer.model_version,
                cached=answer.cached,
                fallback=answer.fallback,
                request_id=request_id,
            )
            return adapter.dump_json(adapter.validate_python(response))

    torch.set_num_threads(1)
    model = ServingModel.load(run_dir, device="cpu")
    limits = ScoringLimits(candidates=2000, full_scoring_max_items=50_000, shortlist=SHORTLIST)
    store: Any = (
        RedisCache(url=redis_url, ttl_seconds=600, timeout_seconds=0.5)
        if redis_url
        else MemoryCache(ttl_seconds=600)
    )

    class TimedStore:
        kind = store.kind

        def __init__(self) -> None:
            self.seconds = 0.0

        def get(self, key: str) -> bytes | None:
            started = time.perf_counter()
            try:
                value: bytes | None = store.get(key)
                return value
            finally:
                self.seconds += time.perf_counter() - started

        def set(self, key: str, value: bytes) -> None:
            started = time.perf_counter()
            store.set(key, value)
            self.seconds += time.perf_counter() - started

        def get_many(self, keys: list[str]) -> list[bytes | None]:
            started = time.perf_counter()
            try:
                return list(store.get_many(keys))
            finally:
                self.seconds += time.perf_counter() - started

        def set_many(self, values: dict[str, bytes]) -> None:
            started = time.perf_counter()
            store.set_many(values)
            self.seconds += time.perf_counter() - started

        def status(self) -> str:
            return str(store.status())

        def close(self) -> None:
            store.close()

    timed = TimedStore()
    cache = TaskStateCache(timed, prefix=f"bench{os.getpid()}")
    database = open_database(database_url, migrate=True)
    spool = Path(tempfile.mkdtemp(prefix="tanp-bench-spool-"))
    log = SqlRequestLog(database.sessions, spool_dir=spool, spool_max_bytes=2**28)
    bodies = [json.dumps({"support": s, "k": 10}).encode() for s in supports]
    rows: dict[str, list[float]] = {}
    for label in ("miss", "hit"):
        parts: dict[str, list[float]] = {
            "parse + validate": [],
            "cache (Redis get, set on a miss)": [],
            "model (encode, decode, rank)": [],
            "serialise": [],
            "request log": [],
        }
        for body in bodies:
            t0 = time.perf_counter()
            request = RecommendRequest.model_validate_json(body)
            t1 = time.perf_counter()
            timed.seconds = 0.0
            answer = recommend(
                model=model, cache=cache, request=request, max_support=100, limits=limits
            )
            t2 = time.perf_counter()
            recommend_response_json(answer, request_id="0" * 32)
            t3 = time.perf_counter()
            log.record(
                RequestLogEntry(
                    request_id="bench",
                    model_version=answer.model_version,
                    support_size=answer.support_size,
                    k=request.k,
                    latency_ms=(t3 - t0) * 1000.0,
                    cache_hit=answer.cached,
                    fallback=answer.fallback,
                )
            )
            t4 = time.perf_counter()
            assert answer.cached == (label == "hit")
            parts["parse + validate"].append(t1 - t0)
            parts["cache (Redis get, set on a miss)"].append(timed.seconds)
            parts["model (encode, decode, rank)"].append(t2 - t1 - timed.seconds)
            parts["serialise"].append(t3 - t2)
            parts["request log"].append(t4 - t3)
        for name, values in parts.items():
            rows.setdefault(name, []).append(1000.0 * statistics.fmean(values))
    log.close()
    database.close()
    cache.close()
    shutil.rmtree(spool, ignore_errors=True)
    return [(name, miss, hit) for name, (miss, hit) in rows.items()]


def prepare_models(run: Path | None, workdir: Path) -> tuple[Path, str, str]:
    """(MODELS_DIR, version, description of the model)."""
    if run is not None:
        # A private copy: the server (and its registry) only ever see this one version.
        shutil.copytree(run.resolve(), workdir / run.resolve().name)
        return workdir, run.resolve().name, f"trained run {run}"
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=LASTFM_ITEMS))
    model.item_popularity.copy_(torch.rand(LASTFM_ITEMS) * 100)
    save_checkpoint(
        workdir / "random-3846",
        model=model,
        items=[str(index) for index in range(LASTFM_ITEMS)],
        version="random-3846",
    )
    return workdir, "random-3846", "RANDOM weights, 3,846 items (no --run given)"


def start_server(
    *,
    models_dir: Path,
    version: str,
    port: int,
    database_url: str,
    redis_url: str | None,
    workers: int,
    spool_dir: Path,
) -> subprocess.Popen[bytes]:
    environment = dict(os.environ)
    environment.update(
        {
            "MODELS_DIR": str(models_dir),
            "ACTIVE_MODEL": version,
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": database_url,
            "MIGRATE_ON_START": "1",
            "REQUEST_LOG_SPOOL_DIR": str(spool_dir),
            "BROADCAST_PREFIX": f"tanp-bench-{port}:",
        }
    )
    environment.pop("REDIS_URL", None)
    if redis_url:
        environment["REDIS_URL"] = redis_url
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return subprocess.Popen(command, env=environment)


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | target req/s | achieved req/s | requests | errors "
        "| p50 ms | p95 ms | p99 ms | server CPU ms/req | generator CPU ms/req "
        "| machine CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        target = "-" if np.isnan(result.rate) else f"{result.rate:.0f}"
        achieved = "-" if np.isnan(result.rate) else f"{result.achieved_rate:.1f}"
        server = "-" if np.isnan(result.server_cpu_ms) else f"{result.server_cpu_ms:.2f}"
        client = "-" if np.isnan(result.client_cpu_ms) else f"{result.client_cpu_ms:.2f}"
        machine = "-" if np.isnan(result.machine_cpu_ms) else f"{result.machine_cpu_ms:.2f}"
        lines.append(
            f"| {result.scenario} | {target} | {achieved} | {result.sent} | {result.errors} "
            f"| {result.p50_ms:.2f} | {result.p95_ms:.2f} | {result.p99_ms:.2f} "
            f"| {server} | {client} | {machine} |"
        )
    return "\n".join(lines)


def knee(results: list[Result]) -> str:
    passing = [r.rate for r in results if not r.errors and r.p99_ms <= P99_TARGET_MS]
    return f"{max(passing):.0f} req/s" if passing else "none of the rates tried"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=None, help="run directory of a trained model")
    parser.add_argument("--workers", type=int, default=2, help="tanp-serve --workers")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--sweep", action="store_true", help="step the rates to find the knees")
    parser.add_argument("--miss-rates", default="100,200,300,400,500,600,700,800,1000")
    parser.add_argument("--hit-rates", default="200,400,600,800,1000,1200,1500,1800,2200")
    parser.add_argument("--sweep-duration", type=float, default=None, help="seconds per step")
    parser.add_argument("--redis-url", default=None, help="serve with this Redis (default: LRU)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="registry and request log (default: a throwaway SQLite file)",
    )
    parser.add_argument(
        "--bodies",
        choices=["auto", "random", "listeners"],
        default="auto",
        help="request bodies: random catalog items rated 0/1, or real HetRec listeners "
        "(5-20 artists, median-play labels); auto: listeners for a hetrec-median model",
    )
    parser.add_argument("--data", type=Path, default=SHARED, help="HetRec files (listeners)")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="recommend")
    parser.add_argument(
        "--no-fixed", action="store_true", help="skip the two fixed-rate scenarios and in-process"
    )
    args = parser.parse_args(argv)
    path, k = ENDPOINTS[args.endpoint]
    in_process_parts = args.endpoint == "recommend" and not args.no_fixed

    workdir = Path(tempfile.mkdtemp(prefix="tanp-bench-"))
    models_dir, version, description = prepare_models(args.run, workdir)
    manifest = json.loads((models_dir / version / "manifest.json").read_text())
    items = manifest["items"]
    listeners = args.bodies == "listeners" or (
        args.bodies == "auto" and manifest.get("data", {}).get("split") == "hetrec-median"
    )

    def make_supports(count: int, seed: int) -> list[list[dict[str, Any]]]:
        if listeners:
            return listener_supports(args.data, items, count, seed)
        return random_supports(items, count, seed)

    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(
        models_dir=models_dir,
        version=version,
        port=port,
        database_url=database_url,
        redis_url=args.redis_url,
        workers=args.workers,
        spool_dir=workdir / "spool",
    )
    context = multiprocessing.get_context("spawn")
    results: list[Result] = []
    miss_sweep: list[Result] = []
    hit_sweep: list[Result] = []
    seed = iter(range(1000, 100000))

    def bodies_of(supports: list[list[dict[str, Any]]]) -> list[bytes]:
        host = f"127.0.0.1:{port}"
        return [
            loadgen.post_bytes(host=host, path=path, body={"support": s, "k": k}) for s in supports
        ]

    try:
        wait_ready(base, server, timeout=120)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:

            def load(scenario: str, payloads: list[bytes], rate: float) -> Result:
                cpu, busy = process_tree_cpu(server.pid), machine_cpu()
                latencies, errors, elapsed, client_cpu, last_error = executor.submit(
                    drive, port=port, payloads=payloads, rate=rate
                ).result()
                if errors:
                    print(f"{scenario} at {rate:.0f} req/s: {errors} errors, last: {last_error}")
                return summarise(
                    scenario,
                    rate=rate,
                    latencies=latencies,
                    errors=errors,
                    elapsed=elapsed,
                    server_cpu=process_tree_cpu(server.pid) - cpu,
                    client_cpu=client_cpu,
                    busy_cpu=machine_cpu() - busy,
                )

            count = int(args.rate * args.duration)
            # never faster than the measured rate: a slow endpoint's backlog would spill over
            slow = min(50.0, args.rate)
            load("warm-up", bodies_of(make_supports(200, next(seed))), slow)
            if not args.no_fixed:
                results.append(
                    load(
                        "distinct supports (misses)",
                        bodies_of(make_supports(count, next(seed))),
                        args.rate,
                    )
                )
            pool = make_supports(HIT_POOL, 3)
            load("fill the cache", bodies_of(pool), slow)
            hit_bodies = bodies_of(pool)
            if not args.no_fixed:
                hits = [hit_bodies[index % HIT_POOL] for index in range(count)]
                results.append(load("repeated supports (hits)", hits, args.rate))

            if args.sweep:
                duration = args.sweep_duration or args.duration
                for rate in (float(value) for value in args.miss_rates.split(",") if value):
                    supports = make_supports(int(rate * duration), next(seed))
                    result = load("sweep, distinct supports (misses)", bodies_of(supports), rate)
                    miss_sweep.append(result)
                    if result.errors or result.p99_ms > P99_TARGET_MS:
                        break
                for rate in (float(value) for value in args.hit_rates.split(",") if value):
                    payloads = [
                        hit_bodies[index % HIT_POOL] for index in range(int(rate * duration))
                    ]
                    result = load("sweep, repeated supports (hits)", payloads, rate)
                    hit_sweep.append(result)
                    if result.errors or result.p99_ms > P99_TARGET_MS:
                        break
    finally:
        server.terminate()
        server.wait(timeout=30)

    if in_process_parts:
        sample = make_supports(1000, 2)
        results.append(in_process(models_dir / version, sample, cached=False))
        results.append(in_process(models_dir / version, sample, cached=True))
    print(
        f"model: {description}; server: tanp-serve --workers {args.workers} (uvicorn), "
        f"127.0.0.1; cache: {'redis' if args.redis_url else 'in-process LRU'}; "
        f"database: {database_url.split(':')[0]}"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
        f"torch {torch.__version__}; load generator (bench/loadgen.py, asyncio + uvloop, one "
        f"process) on the same machine; latency counted from each request's due time; {path}, "
        f"k={k}, support {'5-20 artists of real HetRec listeners' if listeners else '10-20 random items'}\n"
    )
    print(table(results + miss_sweep + hit_sweep))
    if args.sweep:
        print(f"\nknee, misses (p99 <= {P99_TARGET_MS:.0f} ms, 0 errors): {knee(miss_sweep)}")
        print(f"knee, hits (p99 <= {P99_TARGET_MS:.0f} ms, 0 errors): {knee(hit_sweep)}")
    sys.stdout.flush()
    if in_process_parts and not args.no_breakdown:
        parts = breakdown(
            models_dir / version,
            make_supports(500, next(seed)),
            redis_url=args.redis_url,
            database_url=database_url,
        )
        print("\nserver time of one request, in process (mean ms):\n")
        print("| part | miss | hit |\n|---|---:|---:|")
        for name, miss, hit in parts:
            print(f"| {name} | {miss:.3f} | {hit:.3f} |")
        print(f"| sum | {sum(p[1] for p in parts):.3f} | {sum(p[2] for p in parts):.3f} |")
        shortlist = int(os.environ.get("SHORTLIST", "500"))
        print(f"\nthe model's part of a miss, one thread (SHORTLIST {shortlist}; mean ms):\n")
        print("| part | ms |\n|---|---:|")
        for name, value in model_parts(
            models_dir / version, make_supports(500, next(seed)), shortlist=shortlist
        ):
            print(f"| {name} | {value:.3f} |")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
