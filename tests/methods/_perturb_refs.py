"""Float64 reference loops shared by the perturbation methods' tests (Score-CAM family, Ablation-CAM)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DT = torch.float64
CLASSES = [1, 3]


def pooled_model(seed: int = 0) -> nn.Sequential:
    """conv-relu-conv-relu-avgpool(2)-flatten-linear on (2, 6, 6) inputs; layer "4" is 3x3 (masks are upsampled)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    ).to(DT).eval()  # fmt: skip


def full_res_model(seed: int = 0) -> nn.Sequential:
    """Layer "3" has the input's 6x6 resolution (no upsampling: torchcam's order of operations agrees)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    ).to(DT).eval()  # fmt: skip


def inputs(n: int = 2, size: int = 6, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 2, size, size, dtype=DT, generator=torch.Generator().manual_seed(seed))


def minmax_loop(m: torch.Tensor) -> torch.Tensor:
    lo, hi = float(m.min()), float(m.max())
    return torch.zeros_like(m) if hi == lo else (m - lo) / (hi - lo)


def score_loop(model: nn.Module, x1: torch.Tensor, c: int, probability: bool) -> float:
    """The target's softmax probability (or logit) for one input, in plain float arithmetic."""
    with torch.no_grad():
        logits = [float(v) for v in model(x1)[0]]
    if not probability:
        return logits[c]
    z = sum(math.exp(v) for v in logits)
    return math.exp(logits[c]) / z


def masks_loop(a: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
    """Score-CAM's mask of each channel of one image's activations ``(C, h, w)``: upsample, then min-max."""
    out = []
    for k in range(a.shape[0]):
        up = F.interpolate(a[k][None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        out.append(minmax_loop(up) if float(a[k].max()) > float(a[k].min()) else None)
    return out


def ablation_drops(model: nn.Sequential, a1: torch.Tensor, cut: int, c: int) -> list[float]:
    """Ablation-CAM's channel weights for one image: the relative drop of class ``c``'s score when each channel
    of ``a1`` ``(1, C, h, w)``, the output of ``model[cut]``, is zeroed and ``model[cut + 1:]`` runs on it."""
    with torch.no_grad():
        base = float(model[cut + 1 :](a1)[0, c])
        drops = []
        for k in range(a1.shape[1]):
            ablated = a1.clone()
            ablated[0, k] = 0
            drops.append((base - float(model[cut + 1 :](ablated)[0, c])) / base)
    return drops


def weighted_map(a: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """ReLU(sum_k w_k A^k) over positions, one image."""
    c, h, w = a.shape
    out = torch.zeros(h, w, dtype=DT)
    for i in range(h):
        for j in range(w):
            v = sum(weights[k] * float(a[k, i, j]) for k in range(c))
            out[i, j] = v if v > 0 else 0.0
    return out


def channel_softmax(scores: list[float]) -> list[float]:
    z = sum(math.exp(s) for s in scores)
    return [math.exp(s) / z for s in scores]
