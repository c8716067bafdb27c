"""The seeded sampling the averaging methods share: SS-CAM, SmoothGrad-CAM++, NoiseSmooth (and IS-CAM's step count).

Noise is drawn on the CPU from a generator seeded per call, so one seed gives the same noise (and maps) on every
device, and the same T draws serve every image of a batch (a map does not depend on the rest of the batch).
"""

from __future__ import annotations

import torch
from torch import Tensor

from camlens.errors import InputError

__all__ = ["check_n_samples", "check_std", "seeded_normal"]


def check_n_samples(n_samples: object, what: str) -> int:
    """``n_samples`` as a positive int, or an :class:`InputError` saying what one sample is (``what``)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples={n_samples!r} must be a positive int ({what})")
    return n_samples


def check_std(std: object, what: str) -> float:
    """``std`` as a float >= 0, or an :class:`InputError` saying what it scales (``what``)."""
    if isinstance(std, bool) or not (isinstance(std, (int, float)) and std >= 0):
        raise InputError(f"std={std!r} must be a number >= 0 ({what})")
    return float(std)


def seeded_normal(
    shape: tuple[int, ...],
    seed: int,
    std: float,
    *,
    device: torch.device,
    dtype: torch.dtype,
    draw_dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``N(0, std^2)`` samples of ``shape`` from ``seed``: drawn on the CPU in ``draw_dtype``, scaled, then moved.

    Example:
        >>> seeded_normal((2, 3), 0, 0.5, device=torch.device("cpu"), dtype=torch.float32).shape
        torch.Size([2, 3])
    """
    gen = torch.Generator().manual_seed(seed)
    return (std * torch.randn(shape, generator=gen, dtype=draw_dtype)).to(device=device, dtype=dtype)
