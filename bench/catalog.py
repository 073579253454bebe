"""Big catalogs: what the shortlist head and the candidate stage cost in quality on Last.fm, the
in-process latency of one request over 4k / 100k / 1M items, and the cached task state's size.

    .venv/bin/python bench/catalog.py [--run RUN_DIR] [--data DIR] [--sizes 4k 100k 1m]
        [--shortlist 250 500 1000] [--candidates 2000] [--requests 300]

Quality: the test users of the run's split ranked over the whole catalog, over the shortlist
head's top C (the decoder ranks those; issue 20's bound: within 1 % of full scoring) and over
the candidate stage (the liked support items' stored neighbours, then the most popular items),
catalog Recall@20 of each. Latency: a model with random weights and random
neighbour lists (only the shapes matter) answers `--requests` support sets of 20 items, one at a
time, as the service does: encode, candidates, score, top 10; full-catalog scoring for contrast.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tanp.checkpoint import build_model
from tanp.config import TaNPConfig
from tanp.model import TaNP
from tanp.scoring import Scorer, pack_state, rank
from training.compare import per_user_headline
from training.data import load_interactions
from training.episodes import prepare

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm"


def parse_count(text: str) -> int:
    text = text.lower()
    return int(float(text.rstrip("km")) * {"k": 1_000, "m": 1_000_000}.get(text[-1], 1))


def candidate_recall(run: Path, data: Path, *, count: int, shortlists: list[int]) -> None:
    """Catalog Recall@20 of the run's test users: full scoring against the shortlist head's
    top C (each C of `shortlists`; the decoder ranks those) and the candidate stage."""
    loaded = build_model(run, "cpu")
    split = loaded.manifest["data"].get("split", "tanp")
    seed = loaded.manifest["data"].get("seed") or 2020
    interactions = load_interactions(data, "hetrec-median" if split == "hetrec-median" else "auto")
    prepared = prepare(interactions, split=split, seed=seed, directory=data)
    episodes = prepared.episodes["test"]
    scorer = Scorer(loaded.model)
    items = loaded.model.config.num_items
    full = np.zeros((len(episodes), items), dtype=np.float32)
    modes = {f"candidate stage {count}": np.full_like(full, -np.inf)}
    if loaded.model.shortlist is not None:
        modes.update({f"shortlist {c}": np.full_like(full, -np.inf) for c in shortlists})
    for episode in range(len(episodes)):
        support, labels = episodes.support(episode)
        state = scorer.encode_one(support.tolist(), labels.tolist())
        full[episode] = scorer.scores(state)[0].numpy()
        candidates = scorer.candidates(state, count=count)
        modes[f"candidate stage {count}"][episode, candidates[0].numpy()] = scorer.scores(
            state, candidates=candidates
        )[0].numpy()
        for c in shortlists if loaded.model.shortlist is not None else []:
            chosen, values = scorer.shortlist_scores(
                state, count=c, exclude=torch.from_numpy(support)
            )
            modes[f"shortlist {c}"][episode, chosen.numpy()] = values.numpy()
    threshold = interactions.positive_threshold
    whole = per_user_headline(episodes, full, threshold=threshold)["Recall@20"]
    print(f"\n{run.name} ({split}, {len(episodes)} test users, {items:,} items): catalog "
          f"Recall@20, full scoring {np.nanmean(whole):.4f}\n")  # fmt: skip
    print("| first pass | Recall@20 | relative to full scoring |")
    print("|---|---:|---:|")
    for mode, scores in modes.items():
        recall = per_user_headline(episodes, scores, threshold=threshold)["Recall@20"]
        change = np.nanmean(recall) / np.nanmean(whole) - 1
        print(f"| {mode} | {np.nanmean(recall):.4f} | {100 * change:+.2f} % |")


def random_model(items: int, *, neighbours: int = 50, features: int = 34) -> TaNP:
    torch.manual_seed(0)
    config = TaNPConfig(
        num_items=items, item_id_input=False, item_feature_dim=features, neighbours=neighbours,
        enc_h1_dim=64, enc_h2_dim=64, latent_encoder_dim=64, latent_hidden_dim=64,
        taskenc_h1_dim=64, taskenc_h2_dim=64, taskenc_final_dim=32, dec_h1_dim=64, dec_h2_dim=64, dec_h3_dim=32,
        film_gamma_offset=1.0, taste_head=True, shortlist=True,
    )  # fmt: skip
    model = TaNP(config).eval()
    with torch.no_grad():
        model.item_features.normal_()
        model.item_popularity.copy_(torch.rand(items) * 100)
        index = torch.randint(0, items, (items, neighbours))
        model.affinity.set_neighbours(index, torch.rand(items, neighbours))
        assert model.shortlist is not None
        model.shortlist.weight.normal_()  # random weights: only the shapes matter here
    return model


def latency(items: int, *, count: int, shortlist: int, requests: int) -> None:
    built = time.perf_counter()
    scorer = Scorer(random_model(items))
    built = time.perf_counter() - built
    rng = np.random.default_rng(1)
    timings: dict[str, list[float]] = {
        f"shortlist {shortlist}": [],
        f"candidate stage {count}": [],
        "full catalog": [],
    }
    state_bytes = 0
    for request in range(requests):
        support = rng.choice(items, size=20, replace=False).tolist()
        labels = [1.0] * 12 + [0.0] * 8
        for mode in timings:
            if mode == "full catalog" and (items > 200_000 and request >= 20):
                continue  # a few full scorings of the biggest catalog are enough to show the cost
            started = time.perf_counter()
            state = scorer.encode_one(support, labels)
            if mode.startswith("shortlist"):
                chosen, values = scorer.shortlist_scores(
                    state, count=shortlist, exclude=torch.tensor(support)
                )
                top = chosen.numpy()[rank(values.numpy(), k=10)]
            elif mode.startswith("candidate"):
                candidates = scorer.candidates(state, count=count)
                scores = scorer.scores(state, candidates=candidates)[0].numpy()
                top = candidates[0].numpy()[rank(scores, k=10)]
            else:
                top = rank(scorer.scores(state)[0].numpy(), k=10, exclude=support)
            timings[mode].append(1000 * (time.perf_counter() - started))
            assert len(top) == 10
        state_bytes = len(pack_state(state))
    for mode, values in timings.items():
        print(f"| {items:,} | {mode} | {len(values)} | {np.percentile(values, 50):.2f} | "
              f"{np.percentile(values, 99):.2f} | {state_bytes:,} | {built:.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--sizes", nargs="*", default=["4k", "100k", "1m"])
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--shortlist", type=int, nargs="*", default=[250, 500, 1000])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"machine: {platform.machine()}, 1 torch thread (as the service), torch {torch.__version__}"
    )
    if args.run:
        candidate_recall(args.run, args.data, count=args.candidates, shortlists=args.shortlist)
    print("\n| items | scoring | requests | p50 ms | p99 ms | cached state bytes | model load s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        latency(
            parse_count(size),
            count=args.candidates,
            shortlist=500 if 500 in args.shortlist else args.shortlist[0],
            requests=args.requests,
        )


if __name__ == "__main__":
    main()
