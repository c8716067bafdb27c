"""eigen_smooth: the first principal component of the weighted activations, on every method that sums them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import camlens
from camlens.core.ops import minmax_normalize
from camlens.methods import METHODS

DT = torch.float64


def model_and_input() -> tuple[nn.Sequential, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    ).to(DT).eval()  # fmt: skip
    return model, torch.randn(2, 3, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(1))


def projection(weighted: np.ndarray) -> np.ndarray:
    """(C, h, w) weighted activations -> the centred first principal component, sign toward the channel sum."""
    c, h, w = weighted.shape
    m = weighted.reshape(c, -1).T  # (P, C)
    centred = m - m.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    p = centred @ vt[0]
    if float((p * m.sum(axis=1)).sum()) < 0:
        p = -p
    return p.reshape(h, w)


def test_grad_cam_eigen_smooth_matches_an_svd_loop() -> None:
    model, x = model_and_input()
    result = camlens.GradCAM(model, "3", eigen_smooth=True, relu=False)(x, target=[1, 4])
    a = model[:4](x).detach().requires_grad_(True)
    out = model[4:](a)
    (g,) = torch.autograd.grad(out[0, 1] + out[1, 4], a)
    for n in range(2):
        w = g[n].mean(dim=(1, 2))
        expected = projection((w[:, None, None] * a[n].detach()).numpy())
        np.testing.assert_allclose(result.raw["3"][n].numpy(), expected, rtol=1e-9, atol=1e-12)


def test_agrees_with_pytorch_grad_cam_up_to_its_sign() -> None:
    """pytorch-grad-cam leaves the component's sign to the SVD: it shows ReLU(p) or ReLU(-p)."""
    from pytorch_grad_cam import GradCAM, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = model_and_input()
    for ours_cls, theirs_cls in ((camlens.GradCAM, GradCAM), (camlens.LayerCAM, LayerCAM)):
        p = ours_cls(model, "3", eigen_smooth=True, relu=False, normalize=False)(x, target=[1, 4]).raw["3"]
        targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(4)]
        theirs = theirs_cls(model, [model[3]])(x, targets, eigen_smooth=True)
        for n in range(2):
            candidates = [minmax_normalize(torch.relu(s * p[n])[None, None])[0, 0] for s in (1, -1)]
            assert min(float((c - torch.from_numpy(theirs[n]).to(DT)).abs().amax()) for c in candidates) < 1e-5


@pytest.mark.parametrize("name", sorted(n for n, c in METHODS.items() if "cnn" in c.families))
def test_every_method_declares_whether_it_takes_eigen_smooth(name: str) -> None:
    model, x = model_and_input()
    cls = METHODS[name]
    layer = None if name in {"fullgrad", "guided-backprop"} else "3"
    if not cls.accepts_eigen_smooth:
        with pytest.raises((camlens.InputError, TypeError), match="eigen_smooth"):  # TypeError: no such keyword
            cls(model, layer, eigen_smooth=True)
        return
    smooth = cls(model, layer, eigen_smooth=True)(x, target=[1, 4]).maps["3"]
    plain = cls(model, layer)(x, target=[1, 4]).maps["3"]
    assert torch.isfinite(smooth).all() and float((smooth - plain).abs().amax()) > 1e-3  # it is not ignored
