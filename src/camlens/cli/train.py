"""``camlens train``: train a model on Fashion-MNIST and write a checkpoint folder."""

from __future__ import annotations

import argparse

from camlens._util.device import DEVICE_HELP


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data flags ``train`` and ``demo`` share."""
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="folder of the four Fashion-MNIST IDX files (default: the bundled sample)")
    parser.add_argument("--full", action="store_true",
                        help="download the full Fashion-MNIST (60000/10000) into the cache and use it")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="download cache for --full (default: $CAMLENS_DATA or ~/.cache/camlens/fashion-mnist)")


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The training flags ``train`` and ``demo`` share."""
    parser.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and shuffling (default 0)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--train-limit", type=int, default=None, metavar="N", help="use the first N training images")
    parser.add_argument("--val-limit", type=int, default=None, metavar="N", help="use the first N test images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def resolve_data(args: argparse.Namespace) -> str | None:
    """The data folder the flags ask for, downloading the full set for ``--full``."""
    from camlens.errors import InputError

    if args.full and args.data:
        raise InputError(f"--full and --data {args.data!r} both given; use one of them")
    if args.full:
        from camlens.demo.data.download import download_fashion_mnist

        return str(download_fashion_mnist(args.data_dir, progress=not args.no_progress))
    return args.data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from camlens.demo.models import MODELS

    parser.add_argument("--out", default="camlens-checkpoint", metavar="DIR",
                        help="checkpoint folder to write (default ./camlens-checkpoint)")
    parser.add_argument("--architecture", default="convnet", choices=sorted(MODELS), help="model (default convnet)")
    add_data_arguments(parser)
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from camlens.demo.train import train

    result = train(
        architecture=args.architecture,
        data=resolve_data(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        checkpoint=args.out,
        train_limit=args.train_limit,
        val_limit=args.val_limit,
        progress=not args.no_progress,
    )
    print(f"test accuracy {result.accuracy:.4f} after {len(result.history)} epoch(s); checkpoint: {args.out}")
    return 0
