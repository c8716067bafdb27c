"""``camlens explain``: a model's predictions on dataset items or image files, as figures."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Explained", "add_arguments", "class_names_for", "explain_batch", "parse_target", "run", "write_figures"]


@dataclass
class Explained:
    """One batch explained: inputs, labels (``-1`` unknown), predictions, and maps per layer.

    ``maps[layer]`` is ``(N, K, H, W)``; ``classes`` and ``probs`` are ``(N, K)``
    (the explained classes and their softmax probabilities); ``pred`` and
    ``pred_prob`` are ``(N,)``.
    """

    names: list[str]
    x: Tensor
    labels: Tensor
    pred: Tensor
    pred_prob: Tensor
    classes: Tensor
    probs: Tensor
    maps: dict[str, Tensor]


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


def explain_batch(
    model: nn.Module,
    x: Tensor,
    layers: Sequence[str] | None,
    *,
    target: int | None = None,
    top_k: int | None = None,
    method: str = "gradcam",
    labels: Tensor | None = None,
    names: Sequence[str] | None = None,
) -> Explained:
    """Explain ``x`` ``(N, C, H, W)`` at all ``layers`` with ONE call of the method.

    Args:
        layers: layer names; ``None``: the automatic choice on ``x`` (:func:`camlens.choose_layer`).
        target: a class index for every image, or ``None`` for the predicted class.
        top_k: explain the k most probable classes instead (exclusive with ``target``).
    """
    from camlens.methods import get_method

    cam = get_method(method)(model, layers=None if layers is None else list(layers))
    result = cam(x, target if target is None else [target] * x.shape[0], top_k=top_k)
    probs_all = torch.softmax(result.logits, dim=1)
    pred_prob, pred = probs_all.max(dim=1)
    classes = result.targets
    assert classes is not None  # class targets always have indices
    maps = dict(result.maps)
    if classes.ndim == 1:
        classes = classes[:, None]
        maps = {k: v[:, None] for k, v in maps.items()}
    n = x.shape[0]
    return Explained(
        names=list(names) if names is not None else [f"image-{i}" for i in range(n)],
        x=x.detach(),
        labels=labels if labels is not None else torch.full((n,), -1, dtype=torch.long),
        pred=pred,
        pred_prob=pred_prob,
        classes=classes,
        probs=probs_all.gather(1, classes),
        maps=maps,
    )


def title_for(ex: Explained, i: int, class_names: Sequence[str]) -> str:
    """``"true: Coat · predicted: Shirt (0.61)"`` (the true class only when known)."""
    pred = f"predicted: {class_names[int(ex.pred[i])]} ({float(ex.pred_prob[i]):.2f})"
    label = int(ex.labels[i])
    if label < 0:
        return f"{ex.names[i]}: {pred}"
    mark = "" if label == int(ex.pred[i]) else "  [wrong]"
    return f"true: {class_names[label]} · {pred}{mark}"


def _grey(image: Tensor) -> Tensor:
    """``(C, H, W)`` -> ``(1, H, W)`` for the figures, which draw one channel: RGB as luminance, else the mean."""
    if image.shape[0] == 1:
        return image
    if image.shape[0] == 3:
        return torch.einsum("chw,c->hw", image.float(), image.new_tensor([0.299, 0.587, 0.114]).float())[None]
    return image.float().mean(dim=0, keepdim=True)


def write_figures(ex: Explained, class_names: Sequence[str], out: Path, cmap: str = "jet",
                  dpi: int = 100) -> list[Path]:
    """One figure per image (``<name>.png``) and, for more than one image, ``grid.png``; returns the paths."""
    from camlens.viz.figures import Panel, explanation_figure, grid_figure, save_figure

    paths = []
    layers = list(ex.maps)
    for i, name in enumerate(ex.names):
        panels = [
            Panel(
                class_names[int(ex.classes[i, j])],
                float(ex.probs[i, j]),
                {layer: ex.maps[layer][i, j] for layer in layers},
            )
            for j in range(ex.classes.shape[1])
        ]
        fig = explanation_figure(_grey(ex.x[i]), panels, title_for(ex, i, class_names), cmap=cmap)
        paths.append(save_figure(fig, out / f"{name}.png", dpi=dpi))
    if len(ex.names) > 1:
        titles, wrong = [], []
        for i in range(len(ex.names)):
            pred, label = class_names[int(ex.pred[i])], int(ex.labels[i])
            titles.append(f"{class_names[label]}\n→ {pred}" if label >= 0 else f"{ex.names[i]}\n→ {pred}")
            wrong.append(label >= 0 and label != int(ex.pred[i]))
        maps = [{layer: ex.maps[layer][i, 0] for layer in layers} for i in range(len(ex.names))]
        fig = grid_figure([_grey(img) for img in ex.x], maps, titles, cmap=cmap, highlight=wrong)
        paths.append(save_figure(fig, out / "grid.png", dpi=dpi))
    return paths


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
        n = int(model(x[:1]).shape[1])
    return [str(i) for i in range(n)]


def run(args: argparse.Namespace) -> int:
    from camlens._util.device import select_device
    from camlens.errors import InputError, TargetError
    from camlens.sources import load_model
    from camlens.viz.figures import check_colormap

    if not args.index and not args.image:
        raise InputError("nothing to explain: give --index I [I ...] (items of --data) and/or --image FILE [...]")
    if args.top_k is not None and args.target != "predicted":
        raise TargetError(f"--target {args.target!r} and --top-k {args.top_k} both given; use one of them")
    check_colormap(args.colormap)
    device = select_device(args.device)
    model, info = load_model(args.model, device)
    x, labels, names, ds = _inputs(args)
    x = x.to(device)
    class_names = class_names_for(model, info, ds, x)
    target = parse_target(args.target, class_names)
    ex = explain_batch(model, x, args.layers, target=target, top_k=args.top_k, method=args.method,
                       labels=labels, names=names)  # fmt: skip
    out = Path(args.out)
    paths = write_figures(ex, class_names, out, cmap=args.colormap)
    for i in range(len(names)):
        print(title_for(ex, i, class_names))
    how = "given" if args.layers else "automatic choice; others with --layers, candidates in `camlens layers`"
    print(f"layers: {', '.join(ex.maps)} ({how})")
    print(f"wrote {len(paths)} figure(s) to {out}/")
    return 0
