"""``camlens evaluate``: faithfulness and sanity metrics of methods and layers for a model on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from camlens._util.device import DEVICE_HELP

if TYPE_CHECKING:
    from camlens.evaluation import Evaluation

__all__ = ["add_arguments", "data_spec", "evaluate_spec", "run"]

DATA_HELP = (
    "'fashion-mnist:test' (the default) | 'fashion-mnist:train' | 'idx:FOLDER[:split]' | a folder of IDX files | "
    "an image folder (one subfolder per class) | a factory 'module:function' returning a Dataset"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a checkpoint folder (from `camlens train`) or a factory 'module:function'")
    parser.add_argument(
        "--methods", nargs="+", default=None, help="registered method names (default: all; see `camlens methods`)"
    )
    parser.add_argument("--layers", nargs="+", default=None,
                        help="layer names (default: the automatic choice, as `camlens layers` shows)")
    parser.add_argument("--n-images", type=int, default=500, help="images to evaluate (default 500)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    parser.add_argument("--data", default=None, help=DATA_HELP)
    parser.add_argument("--split", default=None, choices=["test", "train"],
                        help="shorthand for --data fashion-mnist:SPLIT (or the split of an IDX folder given as --data)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--no-sanity", action="store_true", help="skip the randomization sanity checks")
    parser.add_argument("--sanity-images", type=int, default=100, help="sanity-check images (default 100)")
    parser.add_argument("--out", default="evaluation", help="output folder (evaluation.json, figures, .html)")
    parser.add_argument("--no-figures", action="store_true", help="write only the JSON (no matplotlib needed)")


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


def _draw(dataset: Any, n_images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n_images`` items drawn without replacement by a permutation seeded with ``seed``, collated."""
    from camlens.errors import InputError
    from camlens.sources import collate, split_item

    size = len(dataset)
    if not isinstance(n_images, int) or not 1 <= n_images <= size:
        raise InputError(f"n_images={n_images!r} must be an int from 1 to {size} (the dataset's size)")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(size, generator=gen)[:n_images].tolist()
    getitems = getattr(dataset, "__getitems__", None)
    batch = getitems(idx) if getitems is not None else [dataset[i] for i in idx]
    return split_item(collate(batch))


def evaluate_spec(
    model: str, data: str = "fashion-mnist:test", *, n_images: int = 500, device: str = "auto", **kwargs: Any
) -> Evaluation:
    """:func:`camlens.evaluation.evaluate` a model spec on ``n_images`` items of a dataset spec.

    The items are drawn without replacement by a permutation seeded with the
    first seed (``seeds[0]``), so a run is reproducible.

    Args:
        model: a checkpoint folder or a factory ``'module:function'`` (:func:`camlens.sources.load_model`).
        data: a dataset spec (:func:`camlens.sources.load_dataset`).
        n_images: how many items (at most the dataset's size).
        device: ``auto``, ``cpu``, ``cuda``, ... (:func:`camlens._util.device.select_device`).
        **kwargs: passed to :func:`camlens.evaluation.evaluate` (methods, layers, seeds, ...).

    Returns:
        The :class:`camlens.evaluation.Evaluation`; its ``config`` also records
        the model and data specs, the architecture when known, and the accuracy
        on the images when the dataset has labels.
    """
    from camlens._util.device import select_device
    from camlens.core.targets import select_output
    from camlens.evaluation import evaluate
    from camlens.sources import load_dataset, load_model

    dev = select_device(device)
    net, info = load_model(model, dev)
    dataset, _ = load_dataset(data)
    seeds = list(kwargs.get("seeds", (0,)))
    images, labels = _draw(dataset, n_images, int(seeds[0]) if seeds else 0)
    x = images.to(dev)
    result = evaluate(net, x, **kwargs)
    accuracy = None
    if labels is not None:
        with torch.no_grad():
            pred = torch.cat([select_output(net(c)).argmax(1).cpu() for c in x.split(kwargs.get("batch_size", 512))])
        accuracy = float((pred == labels.cpu()).double().mean())
    result.config.update({
        "model": model, "checkpoint": model if info.get("kind") == "checkpoint" else None,
        "architecture": info.get("architecture"), "data": data, "accuracy_on_images": accuracy,
    })  # fmt: skip
    return result


def run(args: argparse.Namespace) -> int:
    from camlens._util.files import prepare_output_folder
    from camlens._util.lock import folder_lock
    from camlens.errors import InputError

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be at least 1")
    if args.sanity_images < 1:
        raise InputError(f"--sanity-images {args.sanity_images} must be at least 1 (or pass --no-sanity)")
    out = prepare_output_folder(args.out, "--out")  # before any work: a file or an unwritable folder fails now
    with folder_lock(out, "camlens evaluate"):
        return _evaluate_into(out, args)


def _evaluate_into(out: Path, args: argparse.Namespace) -> int:
    """Evaluate as ``args`` say and write the results into ``out`` (prepared and locked by the caller)."""
    from camlens._util.files import atomic_write_text, writing
    from camlens.evaluation.render import html_page

    result = evaluate_spec(
        args.model, data_spec(args.data, args.split), n_images=args.n_images, device=args.device,
        methods=args.methods, layers=args.layers, seeds=args.seeds, steps=args.steps, batch_size=args.batch_size,
        sanity=not args.no_sanity, sanity_images=args.sanity_images,
    )  # fmt: skip
    print(result.table())
    written: list[Path] = []
    with writing(out, "the files written before it are complete; the evaluation itself is printed above"):
        written.append(result.save_json(out / "evaluation.json"))
        if not args.no_figures:
            written += result.save_figures(out)
            atomic_write_text(out / "evaluation.html", html_page(result))
            written.append(out / "evaluation.html")
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0
