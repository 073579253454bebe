"""`tanp-train prepare|train|evaluate|fetch-data`: the offline half's command line.

Errors in the data come out as one line naming the file and line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from tanp.checkpoint import CheckpointError
from tanp.model import TaNPConfig
from training.data import DataError, load_interactions
from training.episodes import Prepared, load_prepared, prepare, save_prepared
from training.presets import DEFAULT_PRESET, PRESETS, preset_configs
from training.trainer import EpochRecord, TrainConfig

logger = logging.getLogger("tanp-train")


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
    parser.add_argument("--split", default="tanp", choices=["tanp", "random"])
    parser.add_argument("--seed", type=int, default=2020, help="user split seed for --split random")


def _load(args: argparse.Namespace) -> Prepared:
    if getattr(args, "prep", None):
        return load_prepared(args.prep)
    interactions = load_interactions(args.data, args.data_format)
    directory = args.data if args.data.is_dir() else None
    return prepare(interactions, split=args.split, seed=args.seed, directory=directory)


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
    from training.run import train_run

    if args.data is None and args.prep is None:
        raise DataError("train needs --data DIR or --prep PREP_DIR")
    prepared = _load(args)
    model_config, train_config = _configs(args)
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        progress = tqdm(total=train_config.epochs, unit="epoch", dynamic_ncols=True)

    def on_epoch(record: EpochRecord) -> None:
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{record.loss:.4f}", valid_ndcg5=f"{record.valid_ndcg5:.4f}")
        elif record.epoch % 10 == 0:
            logger.info(
                "epoch %d loss %.4f valid NDCG@5 %.4f",
                record.epoch,
                record.loss,
                record.valid_ndcg5,
            )

    metrics = train_run(
        prepared,
        data=args.data or args.prep,
        out=args.out,
        model_config=model_config,
        train=train_config,
        on_epoch=on_epoch,
    )
    if progress is not None:
        progress.close()
    test = metrics["test"]
    logger.info(
        "best epoch %d of %d in %.1f s; test NDCG@5 %.4f P@5 %.4f Recall@20 %.4f "
        "(popularity %.4f, item-kNN %.4f); wrote %s",
        metrics["best_epoch"],
        metrics["epochs_run"],
        metrics["train_seconds"],
        test["paper"]["NDCG@5"],
        test["paper"]["P@5"],
        test["catalog"]["Recall@20"],
        metrics["baselines"]["popularity"]["test"]["paper"]["NDCG@5"],
        metrics["baselines"]["item_knn"]["test"]["paper"]["NDCG@5"],
        args.out,
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
