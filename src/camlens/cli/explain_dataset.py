"""``camlens explain-dataset``: explain a whole dataset into resumable shards; runs under torchrun as is."""

from __future__ import annotations

import argparse

from camlens._util.device import DEVICE_HELP
from camlens.cli._model_args import add_model_arguments, channels_as_flags, preprocess_flags

#: what gives the model images of the channels it takes (``{n}``), said when a run's images do not have them.
CHANNEL_FIXES = ("pass --channels {n}: an image folder is read through the preprocessing, which converts every "
                 "image, and so is a dataset of tensors once a preprocessing flag is given; or give --data whose "
                 "images have {n} channel(s)")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Run it again with the same arguments to resume. Several processes: "
        "torchrun --nproc-per-node N -m camlens.cli explain-dataset ... (see docs/dataset.md)."
    )
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint folder, a factory 'module:function' / 'file.py:function', 'torchvision:NAME', 'timm:NAME', "
        "a transformers save_pretrained folder or 'hf:ID'",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--data",
        default="fashion-mnist:test",
        help="'fashion-mnist:test' | 'fashion-mnist:train' | 'idx:FOLDER[:split]' | an image folder (one subfolder "
        "per class; photos of any size and mode, read through the model's preprocessing and the flags above) | "
        "a factory 'module:function' returning a torch Dataset (its tensors are used as they are unless a "
        "preprocessing flag is given) (default: %(default)s)",
    )
    parser.add_argument("--out", required=True, help="output folder (reused to resume)")
    parser.add_argument("--methods", nargs="+", default=["gradcam"], help="method names (`camlens methods`)")
    parser.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="layer names (default: the automatic choice on the first batch, as `camlens layers` shows it; "
        "recorded in the manifest)",
    )
    parser.add_argument("--targets", default="predicted", help="'predicted' | 'label' | 'top-K' | a class index")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=1024, help="items per shard file (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="explain only the first N items, N >= 1 (default: every item)")  # fmt: skip
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored maps' dtype")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers per process")
    parser.add_argument(
        "--object-mask",
        choices=["auto", "nonzero", "none"],
        default="auto",
        help="object pixels for the 'mass inside' statistic: nonzero pixels (auto: on for Fashion-MNIST/IDX)",
    )
    parser.add_argument(
        "--figures",
        type=int,
        default=0,
        metavar="N",
        help="draw per class the N most and N least confident items with their maps on the photo, "
        "into OUT/figures/ (default: none)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from camlens.dataset import explain_dataset
    from camlens.errors import InputError

    if args.limit is not None and args.limit < 1:  # the API takes limit=0 (no items); asked for here, it is a slip
        raise InputError(f"--limit {args.limit} must be 1 or more: the number of items to explain; omit --limit to "
                         "explain every item")  # fmt: skip
    mask = {"auto": None, "nonzero": True, "none": False}[args.object_mask]
    flags = {k: v for k, v in preprocess_flags(args).items() if v is not None}
    with channels_as_flags(args, CHANNEL_FIXES):
        summary = explain_dataset(
            args.model,
            args.data,
            args.out,
            methods=args.methods,
            layers=args.layers,
            targets=args.targets,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            limit=args.limit,
            device=args.device,
            dtype=args.dtype,
            num_workers=args.num_workers,
            object_mask_from_pixels=mask,
            progress=not args.no_progress,
            preprocess=flags or None,
            weights=args.weights,
            figures=args.figures,
        )
    if summary.rank == 0:
        print(summary)
    return 0
