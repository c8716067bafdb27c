"""Pure tensor helpers for maps: upsampling, normalization, fusion.

Maps are ``(N, K, *spatial)`` tensors: N images, K targets per image, one to
three spatial dimensions. Everything stays on the maps' device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FUSIONS", "fuse", "is_uniform", "minmax_normalize", "upsample"]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Resize ``(N, K, *spatial)`` maps to ``size`` by (bi/tri)linear interpolation.

    ``align_corners=False``, as in ``torchvision`` and the Grad-CAM reference
    code's image resize. A map already at ``size`` is returned unchanged.
    """
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[2:]) == size:
        return maps
    mode = _MODES.get(len(size))
    if mode is None or maps.ndim - 2 != len(size):
        raise ValueError(f"cannot upsample maps of shape {tuple(maps.shape)} to size {size}")
    return F.interpolate(maps, size=size, mode=mode, align_corners=False)


def is_uniform(maps: Tensor) -> bool:
    """Whether maps ``(N, C, *spatial)`` hold one value at every position, in every channel of every image.

    Such maps are one position repeated (an adaptive pooling enlarging a 1x1 map): any CAM on them is flat.
    """
    flat = maps.flatten(2)
    return bool((flat == flat[:, :, :1]).all())


def minmax_normalize(maps: Tensor, start_dim: int = 2) -> Tensor:
    """Scale each map to [0, 1] by its own min and max over dims ``start_dim..``.

    A constant map (all zero, say) becomes all zeros, never NaN; a NaN in a
    map stays NaN (nothing is hidden).
    """
    flat = maps.flatten(start_dim)
    lo, hi = torch.aminmax(flat, dim=-1, keepdim=True)
    span = hi - lo
    # A constant map has span 0 and flat - lo == 0: dividing by 1 keeps it 0.
    out = (flat - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return out.view_as(maps)


def _mean(stack: Tensor) -> Tensor:
    return stack.mean(dim=0)


def _max(stack: Tensor) -> Tensor:
    return stack.amax(dim=0)


def _product(stack: Tensor) -> Tensor:
    return stack.prod(dim=0)


FUSIONS = {"mean": _mean, "max": _max, "product": _product}


def fuse(maps: Sequence[Tensor], how: str = "mean") -> Tensor:
    """Combine same-shaped maps of several layers into one, element-wise.

    Args:
        maps: maps of equal shape, one per layer (typically upsampled and normalized).
        how: ``"mean"``, ``"max"`` or ``"product"``.
    """
    if how not in FUSIONS:
        raise ValueError(f"fuse={how!r} is not one of {sorted(FUSIONS)}")
    return FUSIONS[how](torch.stack(list(maps), dim=0))
