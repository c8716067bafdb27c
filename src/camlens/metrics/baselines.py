"""Maps that know nothing of the model, shown beside every method: random, input intensity, edges."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from camlens.core.ops import minmax_normalize
from camlens.errors import InputError

__all__ = ["BASELINES", "edge_map", "intensity_map", "random_map"]


def _check(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"x must be an image batch (N, C, H, W), got {shape}")


def random_map(x: Tensor, seed: int = 0) -> Tensor:
    """``(N, H, W)`` i.i.d. uniform [0, 1) noise, drawn on the CPU with ``seed`` (same on any device)."""
    _check(x)
    gen = torch.Generator().manual_seed(int(seed))
    n, _, h, w = x.shape
    return torch.rand(n, h, w, generator=gen).to(device=x.device, dtype=x.dtype)


def intensity_map(x: Tensor, seed: int = 0) -> Tensor:
    """``(N, H, W)`` the image itself (channel mean), min-max normalized per image."""
    _check(x)
    return minmax_normalize(x.mean(dim=1), start_dim=1)


def edge_map(x: Tensor, seed: int = 0) -> Tensor:
    """``(N, H, W)`` Sobel gradient magnitude of the channel mean (replicate padding), min-max normalized.

        G_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] * I,   G_y = G_x^T * I,   E = sqrt(G_x^2 + G_y^2)
    """
    _check(x)
    gray = F.pad(x.mean(dim=1, keepdim=True), (1, 1, 1, 1), mode="replicate")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    k = torch.stack([kx, kx.t()]).unsqueeze(1)
    g = F.conv2d(gray, k)
    return minmax_normalize(g.pow(2).sum(dim=1).sqrt(), start_dim=1)


#: baseline name -> ``fn(x, seed) -> (N, H, W)`` map in [0, 1].
BASELINES: dict[str, Callable[[Tensor, int], Tensor]] = {
    "random": random_map,
    "intensity": intensity_map,
    "edge": edge_map,
}
