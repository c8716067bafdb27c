"""``camlens explain``: a checkpoint's predictions on test images or image files, as figures."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["Explained", "add_arguments", "explain_batch", "parse_target", "run", "write_figures"]


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
    layers: Sequence[str],
    *,
    target: int | None = None,
    top_k: int | None = None,
    method: str = "gradcam",
    labels: Tensor | None = None,
    names: Sequence[str] | None = None,
) -> Explained:
    """Explain ``x`` ``(N, C, H, W)`` at all ``layers`` with ONE call of the method.

    Args:
        target: a class index for every image, or ``None`` for the predicted class.
        top_k: explain the k most probable classes instead (exclusive with ``target``).
    """
    from camlens.methods import get_method

    cam = get_method(method)(model, layers=list(layers))
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


def write_figures(ex: Explained, class_names: Sequence[str], out: Path, cmap: str = "jet",
                  dpi: int = 100) -> list[Path]:
    """One figure per image (``<name>.png``) and, for more than one image, ``grid.png``; returns the paths."""
    from camlens.viz.figures import Panel, explanation_figure, grid_figure, save_figure

    paths = []
    layers = list(ex.maps)
    for i, name in enumerate(ex.names):
        panels = [
            Panel(class_names[int(ex.classes[i, j])], float(ex.probs[i, j]), {l: ex.maps[l][i, j] for l in layers})
            for j in range(ex.classes.shape[1])
        ]
        fig = explanation_figure(ex.x[i], panels, title_for(ex, i, class_names), cmap=cmap)
        paths.append(save_figure(fig, out / f"{name}.png", dpi=dpi))
    if len(ex.names) > 1:
        titles, wrong = [], []
        for i in range(len(ex.names)):
            pred, label = class_names[int(ex.pred[i])], int(ex.labels[i])
            titles.append(f"{class_names[label]}\n→ {pred}" if label >= 0 else f"{ex.names[i]}\n→ {pred}")
            wrong.append(label >= 0 and label != int(ex.pred[i]))
        fig = grid_figure(list(ex.x), [{l: ex.maps[l][i, 0] for l in layers} for i in range(len(ex.names))],
                          titles, cmap=cmap, highlight=wrong)
        paths.append(save_figure(fig, out / "grid.png", dpi=dpi))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from camlens.methods import METHODS

    parser.add_argument("checkpoint", help="a checkpoint folder written by `camlens train`")
    parser.add_argument("--index", type=int, nargs="+", default=[], metavar="I", help="test-set image indices")
    parser.add_argument("--image", nargs="+", default=[], metavar="FILE",
                        help="PNG/JPEG files (square, >= 28x28; converted to grayscale 28x28)")
    parser.add_argument("--invert", action="store_true", help="invert image files (dark item on light background)")
    parser.add_argument("--data", default=None, metavar="DIR", help="IDX folder for --index (default: the bundled sample)")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="layer names (default: the model's conv layers, e.g. seq.0 seq.2 seq.4)")
    parser.add_argument("--target", default="predicted", help="'predicted', a class index or a class name")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="explain the K most probable classes")
    parser.add_argument("--method", default="gradcam", choices=sorted(METHODS), help="CAM method (default gradcam)")
    parser.add_argument("--colormap", default="jet", help="matplotlib colormap (default jet)")
    parser.add_argument("--out", default="camlens-explain", metavar="DIR", help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")


def run(args: argparse.Namespace) -> int:
    from camlens.demo.checkpoint import load_checkpoint
    from camlens.demo.data import load_split
    from camlens.errors import InputError, TargetError
    from camlens.viz.images import load_images
    from camlens._util.device import select_device
    from camlens.viz.figures import check_colormap

    if not args.index and not args.image:
        raise InputError("nothing to explain: give --index I [I ...] (test-set images) and/or --image FILE [...]")
    if args.top_k is not None and args.target != "predicted":
        raise TargetError(f"--target {args.target!r} and --top-k {args.top_k} both given; use one of them")
    check_colormap(args.colormap)
    device = select_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device=device)
    class_names = meta.get("classes") or [str(i) for i in range(10)]
    target = parse_target(args.target, class_names)
    layers = args.layers or list(getattr(model, "conv_layers", ()))
    if not layers:
        raise InputError(f"--layers not given and {meta['architecture']} names no default conv layers; "
                         "list candidates with `camlens layers`")
    xs, labels, names = [], [], []
    if args.index:
        images, lbl = load_split(args.data, "test")
        bad = [i for i in args.index if not 0 <= i < images.shape[0]]
        if bad:
            raise InputError(f"--index {bad} out of range; the test set has {images.shape[0]} images "
                             f"(indices 0..{images.shape[0] - 1})")
        idx = torch.tensor(args.index)
        xs.append(images[idx].unsqueeze(1).float() / 255.0)
        labels.append(lbl[idx])
        names += [f"test-{i:05d}" for i in args.index]
    if args.image:
        xs.append(load_images(args.image, size=28, invert=args.invert))
        labels.append(torch.full((len(args.image),), -1, dtype=torch.long))
        names += [Path(p).stem for p in args.image]
    x = torch.cat(xs).to(device)
    ex = explain_batch(model, x, layers, target=target, top_k=args.top_k, method=args.method,
                       labels=torch.cat(labels), names=names)
    out = Path(args.out)
    paths = write_figures(ex, class_names, out, cmap=args.colormap)
    for i in range(len(names)):
        print(title_for(ex, i, class_names))
    print(f"wrote {len(paths)} figure(s) to {out}/")
    return 0
