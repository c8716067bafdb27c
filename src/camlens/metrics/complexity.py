"""Map-only metrics: complexity (sparseness, effective complexity) and localisation with a known object.

They need no forward pass: each takes maps ``(N, H, W)`` (and object masks
``(N, H, W)``), works batched on the maps' device, and returns ``(N,)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camlens.errors import InputError

__all__ = ["effective_complexity", "pointing_game_hit", "relevance_rank_accuracy", "sparseness"]


def _check(maps: Tensor, mask: Tensor | None = None) -> None:
    if not isinstance(maps, Tensor) or maps.ndim < 2:
        raise InputError(f"maps must be a (N, ...) tensor, one map per image, got {getattr(maps, 'shape', maps)!r}")
    if mask is not None and (not isinstance(mask, Tensor) or mask.shape != maps.shape):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise InputError(f"mask must have the maps' shape {tuple(maps.shape)}, got {shape}")


def sparseness(maps: Tensor) -> Tensor:
    """Gini index of each map's absolute values: 1 = all relevance on one pixel, 0 = uniform.

    Chalasani, Chen, Chowdhury, Wu, Jha (ICML 2020, "Concise explanations of neural networks
    using adversarial training"), Sec. 5.2, after Hurley & Rickard (2009): with ``a_(1) <= ... <= a_(d)``
    the sorted absolute values of one map of ``d`` pixels,

        G = sum_i (2 i - d - 1) a_(i) / (d sum_i a_(i))

    Higher is sparser (more concise). A map that is zero everywhere is NaN (0/0); Quantus adds
    1e-7 to every value instead, which moves its scores by about 1e-7 / mean(a).

    Returns:
        ``(N,)`` float.
    """
    _check(maps)
    a = maps.flatten(1).abs().to(torch.promote_types(maps.dtype, torch.float32))
    d = a.shape[1]
    a = a.sort(dim=1).values
    i = torch.arange(1, d + 1, dtype=a.dtype, device=a.device)
    total = a.sum(dim=1)
    return torch.where(total > 0, ((2 * i - d - 1) * a).sum(dim=1) / (d * total), torch.nan)


def effective_complexity(maps: Tensor, eps: float = 1e-5) -> Tensor:
    """How many pixels of each map have an absolute value above ``eps`` (lower is less complex).

    Nguyen & Martinez (2020, "On quantitative aspects of model interpretability", arXiv:2007.07584):

        EC = |{ i : |a_i| > eps }|

    Returns:
        ``(N,)`` int64 counts. Quantus' ``EffectiveComplexity`` equals it (with ``abs=True, normalise=False``).
    """
    _check(maps)
    return (maps.flatten(1).abs() > eps).sum(dim=1)


def pointing_game_hit(maps: Tensor, mask: Tensor) -> Tensor:
    """1.0 when a maximum of the map lies on the object, else 0.0; NaN for an image without object.

    Zhang, Bargal, Lin, Brandt, Shen, Sclaroff (IJCV 2018, "Top-down neural attention by
    excitation backprop"), Sec. 5.1: a hit is counted when the map's most salient pixel falls on
    the object; the hit rate is the mean over images. Every pixel that attains the maximum counts
    (any on the object is a hit), as in Quantus' ``PointingGame``; the paper's 15-pixel tolerance
    is not applied. An empty mask is NaN here; Quantus writes NaN into a boolean array, where it
    becomes True (a hit).

    Args:
        maps: ``(N, H, W)`` maps; mask: ``(N, H, W)`` bool object masks.

    Returns:
        ``(N,)`` float: 1.0, 0.0 or NaN.
    """
    _check(maps, mask)
    a = maps.flatten(1)
    m = mask.flatten(1).bool()
    top = a == a.max(dim=1, keepdim=True).values
    hit = (top & m).any(dim=1).to(torch.promote_types(maps.dtype, torch.float32))
    return torch.where(m.any(dim=1), hit, torch.nan)


def relevance_rank_accuracy(maps: Tensor, mask: Tensor) -> Tensor:
    """Share of each map's ``K`` highest pixels that lie on the object, ``K`` = the object's size in pixels.

    Arras, Osman, Samek (Information Fusion 2022, "CLEVR-XAI: a benchmark dataset for the ground
    truth evaluation of neural network explanations"), Sec. 4.2:

        RRA = |{ top-K pixels of the map } & GT| / K,   K = |GT|

    Ties at the K-th value are broken by a stable sort (the earlier pixel in row-major order
    first); Quantus uses numpy's default (unstable) sort, so the two can differ on maps with ties.
    An empty mask is NaN, as in Quantus.

    Returns:
        ``(N,)`` float in [0, 1] or NaN.
    """
    _check(maps, mask)
    a = maps.flatten(1)
    m = mask.flatten(1).bool()
    k = m.sum(dim=1, keepdim=True)
    order = torch.sort(a, dim=1, descending=True, stable=True).indices
    ranked = m.gather(1, order)
    top = torch.arange(a.shape[1], device=a.device).unsqueeze(0) < k
    share = (ranked & top).sum(dim=1).to(torch.promote_types(maps.dtype, torch.float32)) / k[:, 0].clamp_min(1)
    return torch.where(k[:, 0] > 0, share, torch.nan)
