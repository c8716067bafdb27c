"""One pass over an explain-dataset run: each item's audited map on the analysis grid, its object, its pictures.

The pass reads the results shard by shard (:func:`camlens.open_results`), and
the images, when the data is given, in the same id ranges; it keeps per item
only small things: the audited map on a grid of at most :data:`GRID` cells a
side, normalized to sum 1, and the share of the object's pixels in each cell.
The thumbnails and overlays the explorer shows are written as it goes
(:class:`camlens.audit.pictures.PictureWriter`), so images are read once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader

from camlens.audit.fixed import ImageMoments
from camlens.audit.pictures import display
from camlens.dataset import Results
from camlens.errors import DataError

__all__ = ["GRID", "Collected", "audit_class", "collect", "object_mask"]

#: the analysis grid's largest side: maps finer than this are average-pooled to it.
GRID = 32


@dataclass
class Collected:
    """What the audit keeps of every item (``n`` items, grid ``(g_h, g_w)``).

    Attributes:
        ids, labels, preds, targets, probs: ``(n,)``; the first explained target and its probability.
        maps: the audited maps ``(n, g_h, g_w)`` float32, each summing to 1 (all zero when the map was).
        empty: ``(n,)`` bool, the map was all zero or not finite (no mass to place).
        objects: ``(n, g_h, g_w)`` float16, the share of each cell's pixels on the object
            (:func:`object_mask`); ``None`` without images.
        inside: ``(n,)`` the results' own share of mass on the object, when they hold it; else ``None``.
        input_size: ``(H, W)`` of the inputs when the images were read, else ``None``.
        mean_images: label -> the mean of the class's images as shown (:func:`~camlens.audit.pictures.display`).
        map_size: ``(h, w)`` of the stored maps.
        moments: the images summed per group (label, else the explained class), for the classes' fixed patterns
            (:mod:`camlens.audit.fixed`); ``None`` without images.
    """

    ids: Tensor
    labels: Tensor
    preds: Tensor
    targets: Tensor
    probs: Tensor
    maps: Tensor
    empty: Tensor
    objects: Tensor | None
    inside: Tensor | None
    input_size: tuple[int, int] | None
    map_size: tuple[int, int]
    mean_images: dict[int, Tensor]
    moments: ImageMoments | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def object_mask(images: Tensor) -> Tensor:
    """Where each image holds something other than its background: ``(N, C, H, W)`` -> bool ``(N, H, W)``.

    The background is the per-channel median of the image's outer frame of
    pixels; a pixel belongs to the object when its distance from the background
    (summed over channels) is above a tenth of the image's largest one. On
    Fashion-MNIST's black background that is every clearly lit pixel.
    """
    x = images.float()
    frame = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    bg = frame.median(dim=-1).values[..., None, None]
    dist = (x - bg).abs().sum(dim=1)
    top = dist.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
    return dist > 0.1 * top


def _grid(size: tuple[int, int]) -> tuple[int, int]:
    return min(size[0], GRID), min(size[1], GRID)


def _share(x: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``x (n, h, w) >= 0`` pooled to ``grid`` and scaled to sum 1 per item; ``(shares, empty)``."""
    finite = torch.isfinite(x.flatten(1)).all(dim=1)
    x = torch.where(finite[:, None, None], x, torch.zeros_like(x)).clamp(min=0)
    pooled = F.adaptive_avg_pool2d(x[:, None], grid)[:, 0] if tuple(x.shape[-2:]) != grid else x
    total = pooled.sum(dim=(1, 2))
    empty = ~finite | (total <= 0)
    return pooled / torch.where(empty, torch.ones_like(total), total)[:, None, None], empty


def audit_class(labels: Tensor, targets: Tensor) -> Tensor:
    """The class each item is audited under: its label, else (label -1: none) the class it was explained for."""
    return torch.where(labels >= 0, labels, targets.long())


def _first(t: Tensor) -> Tensor:
    """The first target's column of ``(n, K)``; ``(n,)`` as is."""
    return t[:, 0] if t.ndim == 2 else t


def collect(results: Results, key: str, data: Any | None, pictures: Any | None, batch_size: int = 256) -> Collected:
    """Read every item of ``results`` once (and its image from ``data``), keeping what the audit needs.

    Args:
        results: an opened run (:func:`camlens.open_results`).
        key: the audited ``"<method>/<layer>"``.
        data: the explained dataset (items ``(image, label)`` or an image), or ``None``.
        pictures: a :class:`~camlens.audit.pictures.PictureWriter` or ``None``.

    Raises:
        DataError: the data holds fewer items than the run, or images of changing size.
    """
    if data is not None and len(data) < len(results):
        raise DataError(
            f"the data holds {len(data)} items but the results explain {len(results)}; "
            "pass the dataset the run explained (explain-dataset's --data)"
        )
    parts: dict[str, list[Tensor]] = {k: [] for k in ("ids", "labels", "preds", "targets", "probs", "maps", "empty",
                                                      "objects", "inside")}  # fmt: skip
    input_size: tuple[int, int] | None = None
    sums: dict[int, list[Any]] = {}
    map_size: tuple[int, int] = (0, 0)
    moments = ImageMoments()
    for k in range(len(results.manifest["shards"])):
        shard = results.shard(k)
        ids = shard["ids"]
        maps = {m: _first_map(shard["maps/" + m]) for m in results.map_keys}
        map_size = (int(maps[key].shape[-2]), int(maps[key].shape[-1]))
        grid = _grid(map_size)
        shares, empty = _share(maps[key], grid)
        for name, t in (("ids", ids), ("labels", shard["labels"]), ("preds", shard["preds"]),
                        ("targets", _first(shard["targets"])), ("probs", _first(shard["probs"]).float()),
                        ("maps", shares), ("empty", empty)):  # fmt: skip
            parts[name].append(t)
        if "inside/" + key in shard:
            parts["inside"].append(_first(shard["inside/" + key]).float())
        for lo in range(0, len(ids), batch_size):
            sel = slice(lo, lo + batch_size)
            images = _images(data, ids[sel].tolist()) if data is not None else None
            if images is not None:
                size = (int(images.shape[-2]), int(images.shape[-1]))
                if input_size not in (None, size):
                    raise DataError(f"the data's images change size ({input_size} then {size}); the audit "
                                    "needs one input size (the size the model was given)")  # fmt: skip
                input_size = size
                objects = object_mask(images)
                parts["objects"].append(F.adaptive_avg_pool2d(objects.float()[:, None], grid)[:, 0].half())
                shown = display(images)
                labels = shard["labels"][sel]
                moments.add(images, audit_class(labels, _first(shard["targets"])[sel]), objects)
                _add_by_label(sums, shard["labels"][sel], shown)
            else:
                shown = None
            if pictures is not None:
                pictures.write(ids[sel], shown, {m: v[sel] for m, v in maps.items()})
    if not parts["ids"]:
        raise DataError(f"the run in {results.folder} explained no items; there is nothing to audit")
    cat = {k: torch.cat(v) for k, v in parts.items() if v}
    return Collected(
        ids=cat["ids"], labels=cat["labels"], preds=cat["preds"], targets=cat["targets"], probs=cat["probs"],
        maps=cat["maps"], empty=cat["empty"], objects=cat.get("objects"), inside=cat.get("inside"),
        input_size=input_size, map_size=map_size, mean_images={k: s / n for k, (s, n) in sums.items()},
        moments=moments if input_size is not None else None,
    )  # fmt: skip


def _add_by_label(sums: dict[int, list[Any]], labels: Tensor, shown: Tensor) -> None:
    """Add each image to its label's running sum (``[sum, count]``)."""
    for lab in labels.unique().tolist():
        rows = labels == lab
        total, n = sums.get(lab, [0.0, 0])
        sums[lab] = [shown[rows].sum(dim=0) + total, n + int(rows.sum())]


def _first_map(m: Tensor) -> Tensor:
    """``(n, h, w)`` float32: the first target's maps of ``(n, [K,] h, w)``."""
    return (m[:, 0] if m.ndim == 4 else m).float()


def _images(data: Any, ids: list[int]) -> Tensor:
    """The images of items ``ids`` of ``data``, ``(n, C, H, W)`` float, as the model was given them."""
    from camlens.sources import collate, split_item

    loader = DataLoader(data, batch_sampler=[ids], collate_fn=collate)
    x, _ = split_item(next(iter(loader)))
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"the data's images are shaped {tuple(x.shape[1:])}; the audit reads images (C, H, W)")
    return x.float()
