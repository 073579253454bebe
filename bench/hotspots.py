"""Where the time goes: the top functions by self time (cProfile) of training epochs and of cold
requests, for docs/performance.md.

    .venv/bin/python bench/hotspots.py train [--split tanp] [--epochs 5] [--top 15]
    .venv/bin/python bench/hotspots.py request --run RUN_DIR [--requests 300] [--top 15]

`train` profiles `train_model` (the paper preset, `--epochs` epochs, validation included, no
baselines) on one torch thread; `request` profiles cold requests (distinct support sets, each
encoded) through the service's pipeline (`app.serving.pipeline.recommend`, SHORTLIST as the
service's default) on one thread. cProfile's own overhead inflates the many small calls, so
read the shares, not the absolute times (those come from the other benches).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import random
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm"


def print_top(profile: cProfile.Profile, *, top: int, total: float) -> None:
    stats = pstats.Stats(profile)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    print(f"\n| function | calls | self s | self % of {total:.1f} s |")
    print("|---|---:|---:|---:|")
    for (filename, line, name), (_, calls, self_time, _, _) in rows[:top]:
        where = name if filename == "~" else f"{Path(filename).name}:{line} {name}"
        print(f"| `{where}` | {calls:,} | {self_time:.2f} | {100 * self_time / total:.1f} % |")


def profile_training(args: argparse.Namespace) -> None:
    from training.config import preset_configs
    from training.data import load_interactions
    from training.episodes import prepare
    from training.trainer import train_model

    kind, _, seed = args.split.partition(":")
    data_format = "hetrec-median" if kind == "hetrec-median" else "auto"
    prepared = prepare(
        load_interactions(args.data, data_format),  # type: ignore[arg-type]
        split=kind,  # type: ignore[arg-type]
        seed=int(seed or 2020),
        directory=args.data,
    )
    model_config, train = preset_configs("paper", train={"epochs": args.epochs, "patience": 0})
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    result = train_model(prepared, model_config=model_config, train=train)
    profile.disable()
    total = time.perf_counter() - started
    epoch = sum(record.train_seconds for record in result.history) / len(result.history)
    valid = sum(record.eval_seconds for record in result.history) / len(result.history)
    print(f"training, --split {args.split}, {args.epochs} epochs under cProfile: {total:.1f} s "
          f"(an epoch's steps {epoch:.2f} s, its validation {valid:.2f} s)")  # fmt: skip
    print_top(profile, top=args.top, total=total)


def profile_requests(args: argparse.Namespace) -> None:
    from app.schemas import RecommendRequest
    from app.serving.cache import MemoryCache, TaskStateCache
    from app.serving.model import ServingModel
    from app.serving.pipeline import ScoringLimits, recommend
    from app.settings import Settings

    model = ServingModel.load(args.run, device="cpu")
    defaults = Settings()
    limits = ScoringLimits(
        candidates=defaults.candidates,
        full_scoring_max_items=defaults.full_scoring_max_items,
        shortlist=defaults.shortlist,
    )
    items = json.loads((args.run / "manifest.json").read_text())["items"]
    generator = random.Random(1)
    requests = [
        RecommendRequest.model_validate(
            {
                "support": [
                    {"item_id": item, "rating": generator.randint(0, 1)}
                    for item in generator.sample(items, generator.randint(5, 20))
                ],
                "k": 10,
            }
        )
        for _ in range(args.requests)
    ]
    cache = TaskStateCache(MemoryCache(ttl_seconds=600), prefix="hotspots")
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for request in requests:
        recommend(model=model, cache=cache, request=request, max_support=100, limits=limits)
    profile.disable()
    total = time.perf_counter() - started
    print(f"{args.requests} cold requests on {args.run.name} ({len(items):,} items, SHORTLIST "
          f"{defaults.shortlist}) under cProfile: {1000 * total / args.requests:.2f} ms each")  # fmt: skip
    print_top(profile, top=args.top, total=total)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train")
    train.add_argument("--data", type=Path, default=SHARED)
    train.add_argument("--split", default="tanp", help="tanp, random:N or hetrec-median:N")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--top", type=int, default=15)
    request = commands.add_parser("request")
    request.add_argument("--run", type=Path, required=True)
    request.add_argument("--requests", type=int, default=300)
    request.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 torch thread")
    if args.command == "train":
        profile_training(args)
    else:
        profile_requests(args)


if __name__ == "__main__":
    main()
