"""One batch explained at several layers, and its figures: what ``camlens explain`` and the demo draw."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["Explained", "display_image", "explain_batch", "title_for", "write_figures"]


@dataclass
class Explained:
    """One batch explained: inputs, labels (``-1`` unknown), predictions, and maps per layer.

    ``maps[layer]`` is ``(N, K, H, W)`` in [0, 1], or the signed ``(N, K, C, H, W)`` of
    methods whose maps have the input's channels (guided backpropagation); ``classes`` and ``probs`` are ``(N, K)``
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
    pred = result.logits.argmax(dim=1)  # the class the method explains: softmax can round close logits to ties
    pred_prob = probs_all.gather(1, pred[:, None])[:, 0]
    classes = result.targets
    assert classes is not None  # class targets always have indices
    # maps with channels (guided backpropagation: (N, [K,] C, H, W)) are drawn signed: keep the raw gradients
    channels = any(v.ndim == classes.ndim + 3 for v in result.maps.values())
    maps = dict(result.raw if channels else result.maps)
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


def display_image(image: Tensor) -> Tensor:
    """A model input ``(C, H, W)`` as something to draw: as is when in [0, 1], else min-max scaled."""
    x = image.detach().float().cpu()
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        return x
    return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)


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
        fig = explanation_figure(display_image(ex.x[i]), panels, title_for(ex, i, class_names), cmap=cmap)
        paths.append(save_figure(fig, out / f"{name}.png", dpi=dpi))
    if len(ex.names) > 1:
        titles, wrong = [], []
        for i in range(len(ex.names)):
            pred, label = class_names[int(ex.pred[i])], int(ex.labels[i])
            titles.append(f"{class_names[label]}\n→ {pred}" if label >= 0 else f"{ex.names[i]}\n→ {pred}")
            wrong.append(label >= 0 and label != int(ex.pred[i]))
        maps = [{layer: ex.maps[layer][i, 0] for layer in layers} for i in range(len(ex.names))]
        fig = grid_figure([display_image(img) for img in ex.x], maps, titles, cmap=cmap, highlight=wrong)
        paths.append(save_figure(fig, out / "grid.png", dpi=dpi))
    return paths
