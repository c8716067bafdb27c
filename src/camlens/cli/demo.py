"""``camlens demo``: train the tutorial's ConvNet (or reuse the cached run), explain it, write a report.

The steps are :func:`camlens.demo.run.run_demo`'s; this module reads the flags.
"""

from __future__ import annotations

import argparse

from camlens.cli.train import add_data_arguments, add_recipe_arguments, resolve_data

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="camlens-demo", metavar="DIR", help="output folder (default ./camlens-demo)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a matching checkpoint exists")
    parser.add_argument("--wrong", type=int, default=2, metavar="N", help="also show the first N misclassified images")
    parser.add_argument("--colormap", default="jet", help="matplotlib colormap (default jet)")
    parser.add_argument("--eval-images", type=int, default=100, metavar="N",
                        help="score Grad-CAM's maps on N test images for the report's evaluation section (0 skips it)")
    add_data_arguments(parser)
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from camlens.demo.run import run_demo

    run_demo(
        args.out,
        data=resolve_data(args),
        retrain=args.retrain,
        wrong=args.wrong,
        colormap=args.colormap,
        eval_images=args.eval_images,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        train_limit=args.train_limit,
        val_limit=args.val_limit,
        progress=not args.no_progress,
    )
    return 0
