"""Inputs of other ranks: Conv1d signals and Conv3d volumes, maps upsampled to the input's own shape.

The reference is Grad-CAM from the paper's formula in plain loops, and
(bi/tri)linear resizing with ``align_corners=False`` written out per sample:
source coordinate ``s = (d + 0.5) * in / out - 0.5``, clamped at 0.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

import camlens


def _taps(d: int, n_in: int, n_out: int) -> list[tuple[int, float]]:
    s = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
    i0 = min(math.floor(s), n_in - 1)
    i1 = min(i0 + 1, n_in - 1)
    lam = s - i0
    return [(i0, 1.0 - lam), (i1, lam)]


def _resize_loop(m: list, shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> torch.Tensor:
    """Separable linear interpolation of a nested-list map, one output sample at a time."""
    src = torch.tensor(m, dtype=torch.float64)
    out = torch.zeros(shape_out, dtype=torch.float64)
    for idx in itertools.product(*[range(s) for s in shape_out]):
        taps = [_taps(d, i, o) for d, i, o in zip(idx, shape_in, shape_out, strict=True)]
        v = 0.0
        for combo in itertools.product(*taps):
            w = 1.0
            for _, wt in combo:
                w *= wt
            v += w * src[tuple(c[0] for c in combo)].item()
        out[idx] = v
    return out


def _gradcam_loop(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Per image: ReLU(sum_k alpha_k A^k) with alpha_k the mean gradient, for the predicted class."""
    store = {}
    h = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        logits = model(x)
        score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        grad = torch.autograd.grad(score, store["a"])[0]
    finally:
        h.remove()
    a = store["a"].detach().double()
    grad = grad.double()
    maps = []
    for n in range(x.shape[0]):
        k_count = a.shape[1]
        positions = list(itertools.product(*[range(s) for s in a.shape[2:]]))
        alpha = [sum(grad[(n, k, *p)].item() for p in positions) / len(positions) for k in range(k_count)]
        m = torch.zeros(a.shape[2:], dtype=torch.float64)
        for p in positions:
            m[p] = max(sum(alpha[k] * a[(n, k, *p)].item() for k in range(k_count)), 0.0)
        maps.append(m)
    return maps


def _normalize(m: torch.Tensor) -> torch.Tensor:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else m - lo


def test_conv1d_signal_maps_are_upsampled_linearly_to_the_signal_length():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 5, 5, stride=2), nn.ReLU(), nn.Conv1d(5, 4, 3), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()
    x = torch.randn(2, 2, 41)
    r = camlens.GradCAM(model, "2")(x)
    assert r.raw["2"].shape == (2, 17) and r.map.shape == (2, 41)
    for n, raw in enumerate(_gradcam_loop(model, model[2], x)):
        assert raw.max() > 0 and raw.min() < raw.max()  # a real map, not all zeros
        torch.testing.assert_close(r.raw["2"][n].double(), raw, atol=1e-6, rtol=1e-5)
        up = _normalize(_resize_loop(raw.tolist(), (17,), (41,)))
        torch.testing.assert_close(r.map[n].double(), up, atol=1e-5, rtol=0)
    # layers=None on a signal: the last conv block's output is the choice
    assert list(camlens.GradCAM(model)(x).maps) == ["3"]


def test_conv3d_volume_maps_are_upsampled_trilinearly_to_the_volume():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(1, 3, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(3, 2),
    ).eval()
    x = torch.randn(2, 1, 6, 7, 5)
    r = camlens.GradCAM(model, "0")(x)
    assert r.raw["0"].shape == (2, 3, 4, 3) and r.map.shape == (2, 6, 7, 5)
    for n, raw in enumerate(_gradcam_loop(model, model[0], x)):
        assert raw.max() > 0 and raw.min() < raw.max()
        torch.testing.assert_close(r.raw["0"][n].double(), raw, atol=1e-6, rtol=1e-5)
        up = _normalize(_resize_loop(raw.tolist(), (3, 4, 3), (6, 7, 5)))
        torch.testing.assert_close(r.map[n].double(), up, atol=1e-5, rtol=0)
