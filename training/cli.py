"""`tanp-train prepare|train|evaluate|fetch-data`: the offline half's command line.

Errors in the data come out as one line naming the file and line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from tanp.checkpoint import CheckpointError, resolve_device
from tanp.config import TaNPConfig
from training.config import DEFAULT_PRESET, PRESETS, TrainConfig, preset_configs
from training.data import DataError, DataFormat, load_interactions
from training.episodes import Prepared, load_prepared, prepare, save_prepared
from training.trainer import EpochRecord

logger = logging.getLogger("tanp-train")
DEFAULT_SPLIT_SEED = 2020


def _add_data_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--data", type=Path, required=required, help="data directory or interactions file"
    )
    parser.add_argument(
        "--format",
        dest="data_format",
        default="auto",
        choices=["auto", "ratings", "hetrec", "generic"],
    )
    parser.add_argument("--split", default="tanp", choices=["tanp", "random", "hetrec-median"])
    parser.add_argument(
        "--seed",
        type=int,
        help="user split seed for --split random and hetrec-median (default 2020)",
    )


def _load(args: argparse.Namespace) -> Prepared:
    if getattr(args, "prep", None):
        return load_prepared(args.prep)
    if args.split == "tanp" and args.seed is not None:
        logger.warning(
            "--seed %d is ignored: --split tanp uses the authors' fixed users and episodes "
            "(--seed draws them for --split random; --train-seed seeds training)",
            args.seed,
        )
    data_format: DataFormat = "hetrec-median" if args.split == "hetrec-median" else args.data_format
    interactions = load_interactions(args.data, data_format)
    directory = args.data if args.data.is_dir() else None
    seed = DEFAULT_SPLIT_SEED if args.seed is None else args.seed
    return prepare(interactions, split=args.split, seed=seed, directory=directory)


def _configs(args: argparse.Namespace) -> tuple[TaNPConfig, TrainConfig]:
    train_overrides: dict[str, Any] = {}
    model_overrides: dict[str, Any] = {}
    for name in ("epochs", "lr", "batch_size", "patience"):
        value = getattr(args, name)
        if value is not None:
            train_overrides[name] = value
    if args.train_seed is not None:
        train_overrides["seed"] = args.train_seed
    for option in args.set or []:
        key, _, raw = option.partition("=")
        value = json.loads(raw) if raw[:1] in '0123456789-[{tfn"' else raw
        if key in {field.name for field in fields(TrainConfig)}:
            train_overrides[key] = value
        elif key in {field.name for field in fields(TaNPConfig)}:
            model_overrides[key] = value
        else:
            raise DataError(f"--set {key}: not a model or training option")
    return preset_configs(args.preset, model=model_overrides, train=train_overrides)


def command_prepare(args: argparse.Namespace) -> int:
    prepared = _load(args)
    save_prepared(prepared, args.out)
    counts = ", ".join(f"{name} {len(episodes)}" for name, episodes in prepared.episodes.items())
    logger.info("wrote %s (episodes: %s)", args.out, counts)
    return 0


def command_train(args: argparse.Namespace) -> int:
    if args.data is None and args.prep is None:
        raise DataError("train needs --data DIR or --prep PREP_DIR")
    distributed = args.distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not distributed:
        return _train(args, device=resolve_device(args.device))
    import torch
    from torch import distributed as dist

    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if use_cuda else "cpu")
        if dist.get_rank() != 0:
            args.quiet = True
            logging.getLogger().setLevel(logging.WARNING)
        return _train(args, device=device)
    finally:
        dist.destroy_process_group()


def _train(args: argparse.Namespace, *, device: Any) -> int:
    import torch

    from training.run import train_run

    if args.threads:
        # one intra-op thread by default: the model's matrices are small, and on a shared
        # machine more threads spin against the other jobs (docs/performance.md)
        torch.set_num_threads(args.threads)
    prepared = _load(args)
    model_config, train_config = _configs(args)
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        progress = tqdm(total=train_config.epochs, unit="epoch", dynamic_ncols=True)

    def on_epoch(record: EpochRecord) -> None:
        if progress is not None:
            progress.update(1)
            progress.set_postfix(
                loss=f"{record.loss:.4f}",
                valid_ndcg5=f"{record.valid_ndcg5:.4f}",
                valid_recall20=f"{record.valid_recall20:.4f}",
            )
        elif record.epoch % 10 == 0:
            logger.info(
                "epoch %d loss %.4f valid NDCG@5 %.4f Recall@20 %.4f",
                record.epoch,
                record.loss,
                record.valid_ndcg5,
                record.valid_recall20,
            )

    metrics = train_run(
        prepared,
        data=args.data or args.prep,
        out=args.out,
        model_config=model_config,
        train=train_config,
        on_epoch=on_epoch,
        device=device,
        baselines=not args.no_baselines,
    )
    if progress is not None:
        progress.close()
    if metrics is None:
        return 0  # not rank 0: rank 0 evaluates and writes
    test = metrics["test"]
    logger.info(
        "best epoch %d of %d in %.1f s; test NDCG@5 %.4f Recall@20 %.4f; wrote %s",
        metrics["best_epoch"],
        metrics["epochs_run"],
        metrics["train_seconds"],
        test["paper"]["NDCG@5"],
        test["catalog"]["Recall@20"],
        args.out,
    )
    for name, entry in [*metrics["baselines"].items(), *metrics["ablations"].items()]:
        difference = entry["difference"]
        logger.info(
            "model - %s: NDCG@5 %+.4f [%+.4f, %+.4f] (%s), Recall@20 %+.4f [%+.4f, %+.4f] (%s)",
            name,
            *(difference["NDCG@5"][key] for key in ("mean", "low", "high", "verdict")),
            *(difference["Recall@20"][key] for key in ("mean", "low", "high", "verdict")),
        )
    curve = metrics["cold_start"]
    for name, by_size in curve["scorers"].items():
        logger.info(
            "cold start %s, NDCG@5 / Recall@20 at n = %s: %s",
            name,
            ", ".join(str(size) for size in curve["sizes"]),
            ", ".join(f"{v['NDCG@5']:.3f} / {v['Recall@20']:.3f}" for v in by_size.values()),
        )
    uncertainty = metrics["uncertainty"]
    logger.info(
        "uncertainty: shrinks n = 1 -> 20 for %.1f %% of users; Spearman vs NDCG@5 %s; "
        "within-top-20 hit AUC %s",
        100 * uncertainty["shrink_fraction"]["value"],
        ", ".join(f"{uncertainty['spearman_ndcg5'][str(n)]:+.2f}" for n in uncertainty["sizes"]),
        ", ".join(f"{uncertainty['hit_auc'][str(n)]:.2f}" for n in uncertainty["sizes"]),
    )
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from training.run import evaluate_run

    result = evaluate_run(args.run, _load(args), samples=args.samples)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        logger.info("wrote %s", args.out)
    else:
        sys.stdout.write(text + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tanp-train", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    prepare_parser = commands.add_parser("prepare", help="data -> user split and episodes (npz)")
    _add_data_arguments(prepare_parser)
    prepare_parser.add_argument("--out", type=Path, required=True)
    prepare_parser.set_defaults(handler=command_prepare, prep=None)

    train_parser = commands.add_parser("train", help="train TaNP and write a run directory")
    _add_data_arguments(train_parser, required=False)
    train_parser.add_argument(
        "--prep", type=Path, help="a PREP_DIR from `prepare` instead of --data"
    )
    train_parser.add_argument("--out", type=Path, required=True)
    train_parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    train_parser.add_argument("--epochs", type=int)
    train_parser.add_argument("--lr", type=float)
    train_parser.add_argument("--batch-size", dest="batch_size", type=int)
    train_parser.add_argument("--patience", type=int)
    train_parser.add_argument("--train-seed", dest="train_seed", type=int)
    train_parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="any model or training option"
    )
    train_parser.add_argument(
        "--quiet", action="store_true", help="log lines instead of a progress bar"
    )
    train_parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the tuned baselines in metrics.json (demos: EASE over a big catalog takes "
        "minutes); the model and its ablations are still scored",
    )
    train_parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1; 0 = torch's default, one per core)",
    )
    train_parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (under torchrun: LOCAL_RANK)"
    )
    train_parser.add_argument(
        "--distributed",
        action="store_true",
        help="DistributedDataParallel over the processes torchrun started (implied when "
        "WORLD_SIZE > 1): gloo on CPU, nccl on GPU; rank 0 selects and writes",
    )
    train_parser.set_defaults(handler=command_train)

    evaluate_parser = commands.add_parser(
        "evaluate", help="evaluate a run directory on the test users"
    )
    _add_data_arguments(evaluate_parser)
    evaluate_parser.add_argument("--run", type=Path, required=True)
    evaluate_parser.add_argument("--out", type=Path)
    evaluate_parser.add_argument("--samples", type=int, default=0)
    evaluate_parser.set_defaults(handler=command_evaluate, prep=None)

    try:
        from training.fetch import add_fetch_parser
    except ImportError:
        pass
    else:
        add_fetch_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (DataError, CheckpointError, ValueError) as error:
        sys.stderr.write(f"tanp-train: error: {error}\n")
        return 2
