"""``camlens evaluate``: faithfulness and sanity metrics of methods and layers for a model on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens._util.device import DEVICE_HELP

if TYPE_CHECKING:
    from camlens.evaluation import Evaluation

__all__ = ["add_arguments", "data_spec", "evaluate_spec", "run"]

DATA_HELP = (
    "'fashion-mnist:test' (the default) | 'fashion-mnist:train' | 'idx:FOLDER[:split]' | a folder of IDX files | "
    "an image folder (one subfolder per class) | a factory 'module:function' returning a Dataset"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from camlens.cli._model_args import add_model_arguments
    from camlens.metrics import OPT_IN_METRICS

    parser.add_argument("model", help="a checkpoint folder (from `camlens train`), 'torchvision:NAME', 'timm:NAME', "
                        "'hf:ID', a save_pretrained folder, or a factory 'module:function' / 'file.py:function'")
    add_model_arguments(parser)
    parser.add_argument("data_pos", nargs="?", default=None, metavar="DATA",
                        help="the data to score on (the same as --data): " + DATA_HELP)  # fmt: skip
    parser.add_argument(
        "--methods", nargs="+", default=None,
        help="registered method names (default: all; those that cannot apply to the model are skipped with a line)",
    )  # fmt: skip
    parser.add_argument("--layers", nargs="+", default=None,
                        help="layer names (default: the automatic choice, as `camlens layers` shows)")
    parser.add_argument(
        "--n-images", type=int, default=None, help="images to evaluate (default 500, or all of a smaller dataset)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    parser.add_argument("--data", default=None, help=DATA_HELP)
    parser.add_argument("--split", default=None, choices=["test", "train"],
                        help="shorthand for --data fashion-mnist:SPLIT (or the split of an IDX folder given as --data)")
    parser.add_argument("--baselines", nargs="*", default=None,
                        help="model-free baselines to beat (default: random intensity edge)")
    parser.add_argument("--objects", default=None, metavar="none|nonzero|FOLDER|BOXES",
                        help="object regions for the pointing game: a folder of masks named by item index (17.png), "
                             "a boxes file (.json {index: [[x0, y0, x1, y1], ...]} or .csv index,x0,y0,x1,y1, pixels "
                             "of the model input), 'nonzero', or 'none'; default: the nonzero pixels for the "
                             "tutorial's Fashion-MNIST, else no pointing game")  # fmt: skip
    parser.add_argument("--extra-metrics", nargs="+", default=None, metavar="NAME", choices=[*OPT_IN_METRICS, "all"],
                        help="opt-in metrics reported beside the others, not weighed by the verdict: "
                             f"{', '.join(OPT_IN_METRICS)}, or all. pointing-game-hit and relevance-rank-accuracy "
                             "need an object (--objects); "
                             "the MPRTs, random-logit and max-sensitivity call the method 2 to 201 times per image, "
                             "on the first --sanity-images images and every seed")  # fmt: skip
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--batch-size", type=int, default=512,
                        help="images per forward pass (at most; fewer for large images, to stay in --memory)")
    parser.add_argument("--memory", type=int, default=512, metavar="MIB",
                        help="MiB of perturbed images and imputation work held at once (default 512)")
    parser.add_argument("--no-sanity", action="store_true", help="skip the randomization sanity checks")
    parser.add_argument("--sanity-images", type=int, default=100, help="sanity-check images (default 100)")
    parser.add_argument("--out", default="evaluation", help="output folder (evaluation.json, figures, .html)")
    parser.add_argument("--no-figures", action="store_true", help="write only the JSON (no matplotlib needed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def data_spec(data: str | None, split: str | None) -> str:
    """The dataset spec of ``--data`` and ``--split``: ``fashion-mnist:SPLIT`` unless ``--data`` names another.

    Raises:
        InputError: ``--split`` with a ``--data`` that is neither Fashion-MNIST nor a folder of IDX files.
    """
    from camlens.errors import InputError

    if data is None:
        return f"fashion-mnist:{split or 'test'}"
    if split is None:
        return data
    if data == "fashion-mnist" or data.startswith("fashion-mnist:"):
        return f"fashion-mnist:{split}"
    if Path(data).is_dir():
        return f"idx:{data}:{split}"
    raise InputError(f"--split {split} applies to Fashion-MNIST or a folder of IDX files, not --data {data!r}; "
                     "put the split in the data spec instead")


def evaluate_spec(model: str, data: str = "fashion-mnist:test", **kwargs: Any) -> Evaluation:
    """:func:`camlens.evaluation.specs.evaluate_spec` (kept here for the command's callers)."""
    from camlens.evaluation.specs import evaluate_spec as run_spec

    return run_spec(model, data, **kwargs)


#: what gives the model images of the channels it takes (``{n}``), said when the evaluated images lack them.
CHANNEL_FIXES = ("a folder of images is read through the preprocessing, which converts every image: pass "
                 "--channels {n}; a dataset of tensors is used as it is: give --data whose images have {n} "
                 "channel(s)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from camlens._util.files import inside_data_folder, prepare_output_folder
    from camlens._util.lock import folder_lock
    from camlens.cli._model_args import channels_as_flags
    from camlens.errors import InputError

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be at least 1")
    if args.memory < 1:
        raise InputError(f"--memory {args.memory} must be at least 1 (MiB)")
    if args.data_pos is not None and args.data is not None:
        raise InputError(f"give the data once: DATA {args.data_pos!r} or --data {args.data!r}, not both")
    if args.sanity_images < 1:
        raise InputError(f"--sanity-images {args.sanity_images} must be at least 1 (or pass --no-sanity)")
    data = args.data or args.data_pos
    if inside_data_folder(args.out, data):
        raise InputError(f"--out {args.out} is inside the data folder {data}: its curves.png would be read as an "
                         "image by the next evaluation; choose an --out folder outside the data")  # fmt: skip
    out = prepare_output_folder(args.out, "--out")  # before any work: a file or an unwritable folder fails now
    with folder_lock(out, "camlens evaluate"), channels_as_flags(args, CHANNEL_FIXES):
        return _evaluate_into(out, args)


def _evaluate_into(out: Path, args: argparse.Namespace) -> int:
    """Evaluate as ``args`` say and write the results into ``out`` (prepared and locked by the caller)."""
    from camlens._util.files import atomic_write_text, writing
    from camlens.cli._model_args import preprocess_flags
    from camlens.evaluation.render import html_page, render_figures, save_figures

    extra: dict[str, Any] = {} if args.baselines is None else {"baselines": args.baselines}
    if args.extra_metrics:
        extra["extra_metrics"] = args.extra_metrics
    flags = {k: v for k, v in preprocess_flags(args).items() if v is not None}
    if args.fast_decode:
        flags["fast_decode"] = True
    result = evaluate_spec(
        args.model, data_spec(args.data or args.data_pos, args.split), n_images=args.n_images, device=args.device,
        weights=args.weights, preprocess=flags,
        methods=args.methods, layers=args.layers, seeds=args.seeds, steps=args.steps, batch_size=args.batch_size,
        budget=args.memory * 2**20, sanity=not args.no_sanity, sanity_images=args.sanity_images,
        objects=args.objects, progress=not args.no_progress, **extra,
    )  # fmt: skip
    print(result.table(), flush=True)
    written: list[Path] = []
    with writing(out, "the files written before it are complete; the evaluation itself is printed above"):
        written.append(result.save_json(out / "evaluation.json"))
        if not args.no_figures:
            figures = render_figures(result)  # once, for the PNG files and the page
            written += save_figures(result, out, figures)
            atomic_write_text(out / "evaluation.html", html_page(result, figures=figures))
            written.append(out / "evaluation.html")
    print("\nwrote " + ", ".join(str(p) for p in written))
    print(f"Verdict: {result.verdict().headline}")  # the ranking is at the end of the table above
    return 0
