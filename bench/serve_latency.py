"""Open-loop latency benchmark of the real server: `tanp-serve` (uvicorn, 1 worker, loopback).

    python bench/serve_latency.py [--run RUN_DIR] [--rate 100] [--duration 30] [--sweep]

A separate process drives a constant-rate load (asyncio + httpx): request i is launched at
t0 + i / rate whatever happened to earlier ones, and its latency is counted from that scheduled
time, so a server that falls behind is charged for the queueing (no coordinated omission).
Scenarios: distinct support sets (cache misses), repeated support sets (cache hits), and the
in-process `tanp.scoring` time for the same inputs. Prints a markdown table.
Without --run, a 3,846-item model with random weights is saved to a temp dir (said in the output).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from tanp.checkpoint import build_model, save_checkpoint
from tanp.model import TaNP, TaNPConfig
from tanp.scoring import Scorer, pack_state, rank, unpack_state

LASTFM_ITEMS = 3846
P99_TARGET_MS = 50.0
HIT_POOL = 32


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def random_supports(items: list[str], count: int, seed: int) -> list[list[dict[str, Any]]]:
    generator = random.Random(seed)
    supports = []
    for _ in range(count):
        size = generator.randint(10, 20)
        chosen = generator.sample(items, size)
        supports.append([{"item_id": item, "rating": generator.randint(0, 1)} for item in chosen])
    return supports


async def _drive(
    *, url: str, bodies: list[dict[str, Any]], rate: float
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:

        async def one(body: dict[str, Any], scheduled: float) -> None:
            nonlocal errors
            try:
                response = await client.post(url, json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors += 1

        tasks = []
        started = time.perf_counter()
        for index, body in enumerate(bodies):
            scheduled = started + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def drive(*, url: str, bodies: list[dict[str, Any]], rate: float) -> tuple[list[float], int, float]:
    """Runs in the load-generator process."""
    return asyncio.run(_drive(url=url, bodies=bodies, rate=rate))


def summarise(
    scenario: str, *, rate: float, latencies: list[float], errors: int, elapsed: float
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
    )


def in_process(run_dir: Path, supports: list[list[dict[str, Any]]], *, cached: bool) -> Result:
    """The same inputs through `tanp.scoring` directly (encode unless cached, decode, rank)."""
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
        scores = scorer.scores(state)[0].numpy()
        rank(scores, k=10, exclude=np.asarray(indices))
        timings.append(time.perf_counter() - started)
    name = "in-process tanp.scoring, " + ("cached state" if cached else "encode + decode")
    return summarise(name, rate=float("nan"), latencies=timings, errors=0, elapsed=sum(timings))


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
    *, models_dir: Path, version: str, port: int, database: Path, redis_url: str | None
) -> subprocess.Popen[bytes]:
    environment = dict(os.environ)
    environment.update(
        {
            "MODELS_DIR": str(models_dir),
            "ACTIVE_MODEL": version,
            "LOG_LEVEL": "WARNING",
            # A throwaway SQLite registry and request log, like `make demo`, never ./tanp.db.
            "DATABASE_URL": f"sqlite:///{database}",
            "MIGRATE_ON_START": "1",
        }
    )
    environment.pop("REDIS_URL", None)
    if redis_url:
        environment["REDIS_URL"] = redis_url
    command = [sys.executable, "-m", "app.cli", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(command, env=environment)


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready in time")


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | target req/s | achieved req/s | requests | errors "
        "| p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        target = "-" if np.isnan(result.rate) else f"{result.rate:.0f}"
        achieved = "-" if np.isnan(result.rate) else f"{result.achieved_rate:.1f}"
        lines.append(
            f"| {result.scenario} | {target} | {achieved} | {result.sent} | {result.errors} "
            f"| {result.p50_ms:.2f} | {result.p95_ms:.2f} | {result.p99_ms:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=None, help="run directory of a trained model")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--sweep", action="store_true", help="step the rate to find p99 <= 50 ms")
    parser.add_argument("--sweep-rates", default="100,200,300,400,500,600,800")
    parser.add_argument("--sweep-duration", type=float, default=None)
    parser.add_argument("--redis-url", default=None, help="serve with this Redis (default: LRU)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="tanp-bench-"))
    models_dir, version, description = prepare_models(args.run, workdir)
    items = json.loads((models_dir / version / "manifest.json").read_text())["items"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/recommend"
    server = start_server(
        models_dir=models_dir,
        version=version,
        port=port,
        database=workdir / "bench.db",
        redis_url=args.redis_url,
    )
    context = multiprocessing.get_context("spawn")
    results: list[Result] = []
    sweep_results: list[Result] = []
    try:
        wait_ready(base, server)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:

            def load(scenario: str, bodies: list[dict[str, Any]], rate: float) -> Result:
                latencies, errors, elapsed = executor.submit(
                    drive, url=url, bodies=bodies, rate=rate
                ).result()
                return summarise(
                    scenario, rate=rate, latencies=latencies, errors=errors, elapsed=elapsed
                )

            count = int(args.rate * args.duration)
            load("warm-up", [{"support": s} for s in random_supports(items, 100, seed=1)], 50.0)
            misses = [{"support": s, "k": 10} for s in random_supports(items, count, seed=2)]
            results.append(load("distinct supports (misses)", misses, args.rate))

            pool = random_supports(items, HIT_POOL, seed=3)
            load("fill the cache", [{"support": s} for s in pool], 50.0)
            hits = [{"support": pool[index % HIT_POOL], "k": 10} for index in range(count)]
            results.append(load("repeated supports (hits)", hits, args.rate))

            if args.sweep:
                duration = args.sweep_duration or min(args.duration, 10.0)
                for step, rate in enumerate(float(value) for value in args.sweep_rates.split(",")):
                    supports = random_supports(items, int(rate * duration), seed=100 + step)
                    bodies = [{"support": s, "k": 10} for s in supports]
                    result = load("sweep, distinct supports", bodies, rate)
                    sweep_results.append(result)
                    if result.errors or result.p99_ms > P99_TARGET_MS:
                        break
    finally:
        server.terminate()
        server.wait(timeout=30)

    sample = random_supports(items, min(2000, int(args.rate * args.duration)), seed=2)
    results.append(in_process(models_dir / version, sample, cached=False))
    results.append(in_process(models_dir / version, sample, cached=True))
    shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"model: {description}; server: tanp-serve, uvicorn 1 worker, 127.0.0.1; "
        f"cache: {'redis' if args.redis_url else 'in-process LRU'}"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
        f"torch {torch.__version__}; load generator on the same machine; "
        f"latency counted from each request's scheduled send time; k=10\n"
    )
    print(table(results + sweep_results))
    if args.sweep:
        passing = [r.rate for r in sweep_results if not r.errors and r.p99_ms <= P99_TARGET_MS]
        best = f"{max(passing):.0f} req/s" if passing else "none of the rates tried"
        print(f"\nhighest rate with p99 <= {P99_TARGET_MS:.0f} ms and 0 errors: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
