"""Smooth Grad-CAM++ against a float64 loop over noisy copies, Grad-CAM++ at zero noise, and torchcam."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens

DT = torch.float64
CLASSES = [1, 3]


def spatial_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    ).to(DT).eval()  # fmt: skip


def inputs(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 2, 6, 6, dtype=DT, generator=torch.Generator().manual_seed(3))


def act_grad(model: nn.Sequential, x1: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations after module 3 and the gradient of class ``c``'s score, for one image ``(1, C, H, W)``."""
    a = model[:4](x1).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model[4:](a)[0, c], a)
    return a.detach()[0], g[0]


def reference(model, x, noise, classes) -> torch.Tensor:
    """The paper's map, by loops: moments over the copies, alpha per channel and position, ReLU(sum)."""
    out = []
    for n, c in enumerate(classes):
        a, _ = act_grad(model, x[n : n + 1], c)
        gs = [act_grad(model, x[n : n + 1] + noise[t], c)[1] for t in range(noise.shape[0])]
        t_count, (ch, h, w) = len(gs), a.shape
        weights = []
        for k in range(ch):
            a_sum = sum(float(a[k, i, j]) for i in range(h) for j in range(w))
            total = 0.0
            for i in range(h):
                for j in range(w):
                    d1 = sum(float(g[k, i, j]) for g in gs) / t_count
                    d2 = sum(float(g[k, i, j]) ** 2 for g in gs) / t_count
                    d3 = sum(float(g[k, i, j]) ** 3 for g in gs) / t_count
                    denom = 2 * d2 + a_sum * d3
                    alpha = 0.0 if d2 == 0 else d2 / (denom if denom != 0 else 1.0)
                    total += alpha * max(d1, 0.0)
            weights.append(total)
        m = torch.zeros(h, w, dtype=DT)
        for i in range(h):
            for j in range(w):
                m[i, j] = max(sum(weights[k] * float(a[k, i, j]) for k in range(ch)), 0.0)
        out.append(m)
    return torch.stack(out)


def test_matches_the_loop_over_noisy_copies() -> None:
    model, x = spatial_model(), inputs()
    method = camlens.SmoothGradCAMPlusPlus(model, "3", n_samples=3, std=0.4, seed=5)
    noise = method.noise(x)
    assert noise.shape == (3, 2, 6, 6) and abs(float(noise.std()) - 0.4) < 0.15
    got = method(x, target=CLASSES).raw["3"]
    torch.testing.assert_close(got, reference(model, x, noise, CLASSES), rtol=1e-7, atol=1e-10)
    assert float(got.amax()) > 0


def test_zero_noise_is_grad_cam_plus_plus_and_noise_is_not_the_map_average() -> None:
    model, x = spatial_model(), inputs()
    still = camlens.SmoothGradCAMPlusPlus(model, "3", n_samples=2, std=0.0)(x, target=CLASSES).raw["3"]
    plain = camlens.GradCAMPlusPlus(model, "3")(x, target=CLASSES).raw["3"]
    torch.testing.assert_close(still, plain, rtol=1e-10, atol=1e-12)
    # With noise it is not NoiseSmooth's average of finished Grad-CAM++ maps (same noise, same targets).
    smooth = camlens.SmoothGradCAMPlusPlus(model, "3", n_samples=4, std=0.5)(x, target=CLASSES).maps["3"]
    averaged = camlens.NoiseSmooth(model, "3", method="gradcam++", n_samples=4, sigma=0.1)(x, target=CLASSES)
    assert (smooth - averaged.maps["3"]).abs().amax() > 1e-2


class _FixedNoise:
    """Stands in for torchcam's noise distribution: returns the given noise, shared by every image."""

    def __init__(self, noise: torch.Tensor) -> None:
        self.noise = list(noise)

    def sample(self, size: torch.Size) -> torch.Tensor:
        return self.noise.pop(0).expand(size)


def torchcam_form(model, x, noise, classes) -> torch.Tensor:
    """torchcam's SmoothGradCAMpp, written out: its three departures from the paper in one place.

    (1) the denominator sums the products ``sum_ab A_ab D3_ab`` (the paper: ``sum_ab A_ab * D3_ij``) and adds
    1e-8; (2) ReLU of the *last* copy's gradient (the paper: of the mean ``D1``); (3) the map combines the last
    noisy copy's activations (the paper: the clean image's).
    """
    out = []
    for n, c in enumerate(classes):
        a, _ = act_grad(model, x[n : n + 1], c)
        noisy = [act_grad(model, x[n : n + 1] + noise[t], c) for t in range(noise.shape[0])]
        gs = torch.stack([g for _, g in noisy])
        d2, d3 = (gs**2).mean(0), (gs**3).mean(0)
        alpha = d2 / (2 * d2 + (d3 * a).sum(dim=(1, 2), keepdim=True) + 1e-8)
        w = (alpha * torch.relu(gs[-1])).sum(dim=(1, 2))
        out.append(torch.relu((w[:, None, None] * noisy[-1][0]).sum(0)))
    return torch.stack(out)


@pytest.mark.parametrize("n_samples", [1, 3])
def test_torchcam_departs_from_the_paper_exactly_where_named(n_samples: int) -> None:
    from torchcam.methods import SmoothGradCAMpp

    model, x = spatial_model(), inputs()
    method = camlens.SmoothGradCAMPlusPlus(model, "3", n_samples=n_samples, std=0.3)
    ours = method(x, target=CLASSES).raw["3"]
    with SmoothGradCAMpp(model, "3", num_samples=n_samples, std=0.3, input_shape=(2, 6, 6)) as extractor:
        extractor._distrib = _FixedNoise(method.noise(x))
        model(x)
        theirs = extractor(class_idx=CLASSES, normalized=False)[0]
    torch.testing.assert_close(theirs, torchcam_form(model, x, method.noise(x), CLASSES), rtol=1e-7, atol=1e-10)
    assert (ours - theirs).abs().amax() > 1e-3 * float(ours.abs().amax())


def test_errors_name_the_argument() -> None:
    model = spatial_model()
    with pytest.raises(camlens.InputError, match="n_samples=0"):
        camlens.SmoothGradCAMPlusPlus(model, "3", n_samples=0)
    with pytest.raises(camlens.InputError, match="std=-1"):
        camlens.SmoothGradCAMPlusPlus(model, "3", std=-1)


def test_a_callable_target_scores_the_noisy_copies() -> None:
    model, x = spatial_model(), inputs()
    method = camlens.SmoothGradCAMPlusPlus(model, "3", n_samples=2)
    by_class = method(x, target=[2, 2]).raw["3"]
    by_fn = method(x, target=lambda logits: logits[:, 2]).raw["3"]
    torch.testing.assert_close(by_fn, by_class)
