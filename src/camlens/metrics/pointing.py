"""Energy-based pointing game (Wang et al., CVPR-W 2020, "Score-CAM", arXiv:1910.01279)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from camlens.errors import InputError

__all__ = ["boxes_to_mask", "energy_pointing_game", "energy_share", "object_mask"]


def object_mask(x: Tensor, threshold: float = 0.0) -> Tensor:
    """The object of a dark-background image: pixels whose channel-summed intensity exceeds ``threshold``.

    For Fashion-MNIST (black background) this is the nonzero pixels (any channel
    nonzero, with the default ``threshold=0``). Returns ``(N, H, W)`` bool.
    """
    if x.ndim != 4:
        raise InputError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    return x.abs().sum(dim=1) > threshold


def boxes_to_mask(boxes: Sequence[Sequence[Sequence[float]]] | Tensor, size: tuple[int, int]) -> Tensor:
    """Rasterise boxes ``(x0, y0, x1, y1)`` (pixels, x1/y1 exclusive) into ``(N, H, W)`` bool masks.

    Args:
        boxes: an ``(N, 4)`` tensor (one box per image) or, per image, a list of boxes.
        size: ``(H, W)``.
    """
    h, w = size
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InputError(f"boxes tensor must be (N, 4) as (x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
        per_image = [[b] for b in boxes.tolist()]
    else:
        per_image = [list(bs) for bs in boxes]
    ys = torch.arange(h).view(h, 1)
    xs = torch.arange(w).view(1, w)
    out = torch.zeros(len(per_image), h, w, dtype=torch.bool)
    for i, bs in enumerate(per_image):
        for b in bs:
            if len(b) != 4 or not (b[0] < b[2] and b[1] < b[3]):
                raise InputError(f"box {list(b)!r} of image {i} must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1")
            out[i] |= (xs >= b[0]) & (xs < b[2]) & (ys >= b[1]) & (ys < b[3])
    return out


def energy_share(maps: Tensor, mask: Tensor) -> Tensor:
    """Share of each map's energy on the object, ``sum_B L / sum L``: the pointing game's ratio, unchecked.

    The one computation behind :func:`energy_pointing_game` and the dataset
    statistics (:func:`camlens.dataset.stats.mass_inside`); it checks nothing,
    so callers that take user input check it first.

    A map that is zero everywhere puts no energy anywhere: its ratio is 0/0 and
    the result is NaN, for the caller to count apart (never a made-up value: a
    uniform map's score would pass a map that says nothing for one at chance).

    Args:
        maps: ``(N, H, W)`` or ``(N, K, H, W)`` nonnegative maps at the mask's resolution.
        mask: ``(N, H, W)`` bool object region.

    Returns:
        ``(N,)`` or ``(N, K)`` float32 in [0, 1]; NaN for an all-zero map.
    """
    flat = maps.float().flatten(-2)  # (N, [K,] H*W)
    inside_mask = mask.flatten(1).view(flat.shape[0], *[1] * (flat.ndim - 2), flat.shape[-1])
    total = flat.sum(dim=-1)
    inside = (flat * inside_mask).sum(dim=-1)  # a plain sum: exact where a matrix product rounds (1.25 -> 1.2499996)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(flat.dtype).tiny), torch.nan)


def energy_pointing_game(
    maps: Tensor,
    mask: Tensor | None = None,
    *,
    boxes: Sequence[Sequence[Sequence[float]]] | Tensor | None = None,
    area_normalized: bool = True,
) -> Tensor:
    """Share of a map's energy that falls on the object, optionally divided by the object's area share.

    Wang et al. 2020, Sec. 4.2: for a nonnegative map ``L`` and object region ``B``,

        Proportion = sum_{(i,j) in B} L_ij / sum_{(i,j)} L_ij

    ``area_normalized=True`` divides by ``|B| / (H W)``, so a uniform map
    scores exactly 1.0 and a map that beats chance scores above 1.0 (the raw
    proportion rewards any map on a large object). A map that is zero
    everywhere puts no energy anywhere: 0/0, scored NaN (see :func:`energy_share`);
    averages over images then show NaN instead of hiding the map.

    Args:
        maps: ``(N, H, W)`` nonnegative maps.
        mask: ``(N, H, W)`` bool object masks (e.g. :func:`object_mask`), or
        boxes: boxes per image (see :func:`boxes_to_mask`); give one of the two.
        area_normalized: divide by the object's share of the image.

    Returns:
        ``(N,)`` float32 scores; NaN for an all-zero map.

    Raises:
        InputError: missing/both region arguments, shapes that differ, negative maps, an empty region.
    """
    if maps.ndim != 3:
        raise InputError(f"maps must be (N, H, W), got shape {tuple(maps.shape)}")
    if (mask is None) == (boxes is None):
        raise InputError("give the object region as mask=(N, H, W) bool or as boxes=..., exactly one of them")
    if mask is None:
        mask = boxes_to_mask(boxes, (maps.shape[1], maps.shape[2]))  # type: ignore[arg-type]
    mask = mask.to(device=maps.device, dtype=torch.bool)
    if mask.shape != maps.shape:
        raise InputError(f"mask has shape {tuple(mask.shape)} but maps has {tuple(maps.shape)}; they must match")
    if float(maps.min()) < 0:
        raise InputError(f"maps must be nonnegative (min is {float(maps.min()):.4g}); use relu=True maps")
    area = mask.flatten(1).float().mean(dim=1)
    if bool((area == 0).any()):
        first = int((area == 0).nonzero()[0])
        raise InputError(f"the object region of image {first} is empty; check the mask or boxes")
    prop = energy_share(maps, mask)
    return prop / area if area_normalized else prop
