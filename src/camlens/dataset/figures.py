"""``explain_dataset(..., figures=N)``: per class, the N most and least confident items with their maps on the photo.

Confidence is the softmax probability of the explained class (the first target), as in the class
statistics; an item's class is its label, or its prediction when the data has no labels. One PNG per
class, ``figures/class-<index>-<name>.png``: a row of the most confident items, then a row of the least
confident ones, for each map (``<method>/<layer>``); each map is mapped back through the resize and
crop onto the photo at its own proportions (outside the crop it has no value and the photo is shown greyed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from camlens.core.ops import upsample
from camlens.sources import split_item

__all__ = ["draw_figures", "overlay_on_photo"]

_THUMB = 256  # longest side of a photo in a figure, in pixels


def overlay_on_photo(photo: np.ndarray, heat: Tensor, colormap: str = "jet", alpha: float = 0.5) -> Any:
    """``camlens.overlay`` of ``heat`` ``(H, W)`` in [0, 1] on ``photo`` ``(H, W, 3)`` in [0, 1]; NaN (outside
    the crop) is drawn as ``camlens.overlay`` draws it (the photo greyed). An RGB PIL image."""
    from camlens.viz.figures import overlay

    return overlay(photo, heat.detach().float().cpu(), colormap, alpha)


def _normalized(heat: Tensor) -> Tensor:
    """Min-max over the finite values to [0, 1]; NaN kept; a constant map becomes 0."""
    finite = heat[torch.isfinite(heat)]
    if finite.numel() == 0:
        return heat
    lo, hi = finite.min(), finite.max()
    return (heat - lo) / (hi - lo) if hi > lo else torch.where(torch.isfinite(heat), 0.0, heat)


def _photo_and_map(inputs: Any, item: Any, key: str) -> tuple[np.ndarray, Tensor]:
    """The item's photo (image folders: the file at its own proportions, at most 256 px) and its map on it."""
    m = item.maps[key]
    m = m[0] if m.ndim == 3 else m
    if item.geometry is not None and hasattr(inputs.ds, "files"):
        from camlens.preprocess import open_photo, to_model_mode

        im = to_model_mode(open_photo(inputs.ds.files[item.id][0]), 3)  # upright, alpha on white, as the model saw it
        im.thumbnail((_THUMB, _THUMB))
        photo = np.asarray(im, dtype=np.float32) / 255.0
        g = item.geometry
        on_crop = upsample(m[None, None], g.crop[2:])[0, 0]
        on_photo = g.to_original(on_crop)
        heat = upsample(on_photo[None, None], photo.shape[:2])[0, 0]
        return photo, _normalized(heat)
    x, _ = split_item(torch.utils.data.default_collate([inputs.loader_ds[item.id]]))
    img = x[0].float()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    photo = (img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]).permute(1, 2, 0).numpy()
    return photo, _normalized(upsample(m[None, None], photo.shape[:2])[0, 0])


def _by_class(results: Any, n: int) -> dict[int, tuple[list[int], list[int]]]:
    """class -> (its ``n`` most confident ids, its ``n`` least confident others)."""
    labels, preds, conf = [], [], []
    for k in range(int(results.manifest["n_shards"])):
        shard = results.shard(k)
        labels.append(shard["labels"])
        preds.append(shard["preds"])
        probs = shard["probs"]
        conf.append(probs[:, 0] if probs.ndim == 2 else probs)
    if not labels:
        return {}
    return _select(torch.cat(labels), torch.cat(preds), torch.cat(conf).double(), n)


def _select(labels: Tensor, preds: Tensor, conf: Tensor, n: int) -> dict[int, tuple[list[int], list[int]]]:
    cls = torch.where(labels >= 0, labels, preds)
    out = {}
    for c in sorted(set(cls.tolist())):
        ids = (cls == c).nonzero()[:, 0]
        order = ids[torch.argsort(-conf[ids], stable=True)].tolist()
        most = order[:n]
        least = [i for i in reversed(order) if i not in most][:n]
        out[c] = (most, least)
    return out


def draw_figures(results: Any, inputs: Any, n: int, folder: Path) -> list[Path]:
    """Write one figure per class into ``folder``; return their paths (see this module's docstring)."""
    from camlens.dataset.table import class_names
    from camlens.viz.figures import new_figure, save_figure

    names, pred_names = class_names(results.manifest)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for c, (most, least) in _by_class(results, n).items():
        rows = [(f"most confident\n{key}", most, key) for key in results.map_keys]
        rows += [(f"least confident\n{key}", least, key) for key in results.map_keys]
        rows = [r for r in rows if r[1]]
        fig = new_figure((2.2 * n + 0.8, 2.5 * len(rows) + 0.4), layout=None)
        axes = fig.subplots(len(rows), n, squeeze=False)
        for r, (what, ids, key) in enumerate(rows):
            axes[r, 0].set_ylabel(what, fontsize=8)
            for j in range(n):
                ax = axes[r, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j >= len(ids):
                    ax.set_axis_off()
                    continue
                item = results[ids[j]]
                photo, heat = _photo_and_map(inputs, item, key)
                ax.imshow(overlay_on_photo(photo, heat))
                label = names[item.label] if 0 <= item.label < len(names) else str(item.label)
                pred = pred_names[item.pred] if 0 <= item.pred < len(pred_names) else str(item.pred)
                p = float(item.probs.reshape(-1)[0])
                ax.set_title(f"{item.path or item.id}\n{label} -> {pred} ({p:.2f})", fontsize=7)
        name = names[c] if 0 <= c < len(names) else str(c)
        fig.suptitle(f"class {c} ({name})", fontsize=10)
        path = folder / f"class-{c:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:40]}.png"
        written.append(save_figure(fig, path))
    return written
