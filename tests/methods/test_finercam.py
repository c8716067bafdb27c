"""Finer-CAM: a float64 loop of the paper, Grad-CAM at gamma 0, torchcam (mean), pytorch-grad-cam (softmax)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import camlens

DT = torch.float64


def spatial_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 6),
    ).to(DT).eval()  # fmt: skip


def inputs(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 2, 6, 6, dtype=DT, generator=torch.Generator().manual_seed(3))


def reference(model, x, classes, gamma: float, r: int) -> torch.Tensor:
    """Grad-CAM of S = y_c - gamma * mean of the r classes with the closest logits, by loops."""
    out = []
    for n, c in enumerate(classes):
        a = model[:4](x[n : n + 1]).detach().requires_grad_(True)
        y = model[4:](a)[0]
        others = sorted((abs(float(y[j].detach() - y[c].detach())), j) for j in range(y.shape[0]) if j != c)[:r]
        s = y[c] - gamma * sum(y[j] for _, j in others) / r
        (g,) = torch.autograd.grad(s, a)
        a, g = a.detach()[0], g[0]
        ch, h, w = a.shape
        weights = [sum(float(g[k, i, j]) for i in range(h) for j in range(w)) / (h * w) for k in range(ch)]
        m = torch.zeros(h, w, dtype=DT)
        for i in range(h):
            for j in range(w):
                m[i, j] = max(sum(weights[k] * float(a[k, i, j]) for k in range(ch)), 0.0)
        out.append(m)
    return torch.stack(out)


@pytest.mark.parametrize(("gamma", "r"), [(0.6, 3), (1.0, 1), (2.0, 5)])
def test_matches_the_loop(gamma: float, r: int) -> None:
    model, x = spatial_model(), inputs()
    result = camlens.FinerCAM(model, "3", gamma=gamma, references=r)(x, target=[1, 3, 0])
    torch.testing.assert_close(result.raw["3"], reference(model, x, [1, 3, 0], gamma, r), rtol=1e-7, atol=1e-10)
    assert float(result.raw["3"].amax()) > 0


def test_gamma_zero_is_the_inner_method_and_scores_are_the_contrast() -> None:
    model, x = spatial_model(), inputs()
    for inner, cls in (("gradcam", camlens.GradCAM), ("layercam", camlens.LayerCAM)):
        finer = camlens.FinerCAM(model, "3", method=inner, gamma=0.0)(x, top_k=2)
        plain = cls(model, "3")(x, top_k=2)
        torch.testing.assert_close(finer.raw["3"], plain.raw["3"])
    explicit = camlens.FinerCAM(model, "3", gamma=0.5, references=[4, 5])(x, target=[1, 2, 3])
    y = model(x).detach()
    torch.testing.assert_close(explicit.scores, y[:, [1, 2, 3]].diagonal() - 0.5 * (y[:, 4] + y[:, 5]) / 2)


def test_matches_torchcam_finercam() -> None:
    from torchcam.methods import FinerCAM, GradCAM

    model, x = spatial_model(), inputs()
    ours = camlens.FinerCAM(model, "3", gamma=0.6, references=3)(x, target=[1, 3, 0]).raw["3"]
    with FinerCAM(model, "3", input_shape=(2, 6, 6), base_method=GradCAM, gamma=0.6, num_references=3) as ex:
        theirs = ex(class_idx=[1, 3, 0], scores=model(x), normalized=False)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-10)


def test_softmax_weighting_matches_pytorch_grad_cam() -> None:
    from pytorch_grad_cam import FinerCAM, GradCAM

    model, x = spatial_model(), inputs()
    ours = camlens.FinerCAM(model, "3", gamma=1.0, references=3, weighting="softmax")(x, top_k=1).maps["3"][:, 0]
    theirs = FinerCAM(model, [model[3]], base_method=GradCAM)(x, alpha=1.0, comparison_categories=[1, 2, 3])
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-6)
    plain = camlens.FinerCAM(model, "3", gamma=1.0, references=3)(x, top_k=1).maps["3"][:, 0]
    assert float((plain - ours).abs().amax()) > 1e-3  # the two weightings are different maps


def test_errors() -> None:
    model, x = spatial_model(), inputs()
    with pytest.raises(camlens.TargetError, match="callable"):
        camlens.FinerCAM(model, "3")(x, target=lambda o: o[:, 0])
    with pytest.raises(camlens.TargetError, match="explained target"):
        camlens.FinerCAM(model, "3", references=[1, 2])(x, target=[1, 0, 0])
    with pytest.raises(camlens.InputError, match="gradient method"):
        camlens.FinerCAM(model, "3", method="scorecam")
    with pytest.raises(camlens.InputError, match="weighting="):
        camlens.FinerCAM(model, "3", weighting="max")
