"""``camlens explain``: a model's predictions on dataset items or image files, as figures."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camlens._util.files import prepare_output_folder, writing
from camlens._util.lock import folder_lock
from camlens.core.targets import select_output
from camlens.viz.explained import Explained, explain_batch, title_for, write_figures

__all__ = ["Explained", "add_arguments", "class_names_for", "explain_batch", "parse_target", "run", "write_figures"]


def parse_target(value: str, class_names: Sequence[str]) -> int | None:
    """``"predicted"`` -> None; a class index or name -> its index.

    Raises:
        TargetError: neither.
    """
    from camlens.errors import TargetError

    if value == "predicted":
        return None
    if value.isdigit() and int(value) < len(class_names):
        return int(value)
    lowered = [c.lower() for c in class_names]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    raise TargetError(f"target={value!r} is not 'predicted', a class index 0..{len(class_names) - 1} "
                      f"or a class name ({', '.join(class_names)})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from camlens._util.device import DEVICE_HELP
    from camlens.methods import METHODS

    parser.add_argument("model", help="a checkpoint folder (from `camlens train`) or a factory 'module:function' "
                        "/ 'file.py:function' returning an nn.Module")  # fmt: skip
    parser.add_argument("--index", type=int, nargs="+", default=[], metavar="I", help="item indices of --data")
    parser.add_argument("--image", nargs="+", default=[], metavar="FILE",
                        help="PNG/JPEG files (square, >= 28x28; converted to grayscale 28x28)")
    parser.add_argument("--invert", action="store_true", help="invert image files (dark item on light background)")
    parser.add_argument("--data", default="fashion-mnist:test", metavar="SPEC",
                        help="the dataset --index reads: 'fashion-mnist:test' | 'fashion-mnist:train' | "
                        "'idx:FOLDER[:split]' | a folder of IDX files or of one image subfolder per class | "
                        "a factory 'module:function' returning a torch Dataset (default: %(default)s)")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="layer names (default: the automatic choice, as `camlens layers` shows it)")
    parser.add_argument("--target", default="predicted", help="'predicted', a class index or a class name")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="explain the K most probable classes")
    parser.add_argument("--method", default="gradcam", choices=sorted(METHODS), help="CAM method (default gradcam)")
    parser.add_argument("--colormap", default="jet", help="matplotlib colormap (default jet)")
    parser.add_argument("--out", default="camlens-explain", metavar="DIR", help="output folder")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def _dataset_items(spec: str, index: list[int]) -> tuple[Tensor, Tensor, Any]:
    """Items ``index`` of the dataset ``spec``: ``(images (N, C, H, W), labels (N,) or -1, the dataset)``."""
    from camlens.errors import InputError
    from camlens.sources import collate, load_dataset, split_item

    ds, _ = load_dataset(spec)
    n = len(ds)  # type: ignore[arg-type]
    bad = [i for i in index if not 0 <= i < n]
    if bad:
        raise InputError(f"--index {bad} out of range; the test set has {n} images (indices 0..{n - 1}; "
                         f"--data {spec!r})")  # fmt: skip
    x, y = split_item(collate([ds[i] for i in index]))
    labels = torch.full((len(index),), -1, dtype=torch.long) if y is None else y.long()
    return x.float(), labels, ds


def _inputs(args: argparse.Namespace) -> tuple[Tensor, Tensor, list[str], Any]:
    """The images to explain (``--index`` items first, then ``--image`` files), labels, names and the dataset."""
    from camlens.errors import InputError
    from camlens.viz.images import load_images

    xs, labels, names, ds = [], [], [], None
    if args.index:
        x, y, ds = _dataset_items(args.data, args.index)
        xs.append(x)
        labels.append(y)
        names += [f"test-{i:05d}" for i in args.index]
    if args.image:
        xs.append(load_images(args.image, size=28, invert=args.invert))
        labels.append(torch.full((len(args.image),), -1, dtype=torch.long))
        names += [Path(p).stem for p in args.image]
    if len({tuple(x.shape[1:]) for x in xs}) > 1:
        raise InputError(f"items of --data {args.data!r} are {tuple(xs[0].shape[1:])} but --image files load as "
                         f"{tuple(xs[1].shape[1:])}; explain them in two runs")  # fmt: skip
    return torch.cat(xs), torch.cat(labels), names, ds


def class_names_for(model: nn.Module, info: dict[str, Any], ds: Any, x: Tensor) -> list[str]:
    """The model's class names (``info["classes"]``), else the dataset's ``classes``, else ``"0", "1", ...``."""
    for names in (info.get("classes"), getattr(ds, "classes", None)):
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
    with torch.no_grad():
        n = int(select_output(model(x[:1])).shape[1])
    return [str(i) for i in range(n)]


def run(args: argparse.Namespace) -> int:
    from camlens._util.device import select_device
    from camlens.errors import InputError, TargetError
    from camlens.viz.figures import check_colormap

    if not args.index and not args.image:
        raise InputError("nothing to explain: give --index I [I ...] (items of --data) and/or --image FILE [...]")
    if args.top_k is not None and args.target != "predicted":
        raise TargetError(f"--target {args.target!r} and --top-k {args.top_k} both given; use one of them")
    check_colormap(args.colormap)
    device = select_device(args.device)
    out = prepare_output_folder(args.out, "--out")  # before any work: a file or an unwritable folder fails now
    with folder_lock(out, "camlens explain"):
        return _explain_into(out, args, device)


def _explain_into(out: Path, args: argparse.Namespace, device: torch.device) -> int:
    from camlens.sources import load_model

    model, info = load_model(args.model, device)
    x, labels, names, ds = _inputs(args)
    x = x.to(device)
    class_names = class_names_for(model, info, ds, x)
    target = parse_target(args.target, class_names)
    ex = explain_batch(model, x, args.layers, target=target, top_k=args.top_k, method=args.method,
                       labels=labels, names=names)  # fmt: skip
    with writing(out, "the figures written before it are complete"):
        paths = write_figures(ex, class_names, out, cmap=args.colormap)
    for i in range(len(names)):
        print(title_for(ex, i, class_names))
    how = "given" if args.layers else "automatic choice; others with --layers, candidates in `camlens layers`"
    print(f"layers: {', '.join(ex.maps)} ({how})")
    print(f"wrote {len(paths)} figure(s) to {out}/")
    return 0
