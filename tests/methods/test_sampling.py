"""The shared seeded sampling of SS-CAM, SmoothGrad-CAM++ and NoiseSmooth (camlens.methods._sampling)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens.methods._sampling import check_n_samples, check_std, seeded_normal

CPU = torch.device("cpu")


def test_seeded_normal_is_the_seeded_cpu_draw_scaled() -> None:
    expected = 0.5 * torch.randn((3, 4, 5), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    got = seeded_normal((3, 4, 5), 7, 0.5, device=CPU, dtype=torch.float64)
    assert torch.equal(got, expected)
    assert torch.equal(seeded_normal((3, 4, 5), 7, 0.5, device=CPU, dtype=torch.float32), expected.float())
    other = seeded_normal((3, 4, 5), 8, 0.5, device=CPU, dtype=torch.float64)
    assert float((other - expected).abs().amax()) > 0.1


def test_the_three_averaging_methods_draw_from_it() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x = torch.randn(2, 3, 8, 8)
    ss = camlens.SSCAM(model, "1", n_samples=3, std=0.4, seed=2).noise(x)
    assert torch.equal(ss, seeded_normal((3, 8, 8), 2, 0.4, device=CPU, dtype=torch.float32))
    sg = camlens.SmoothGradCAMPlusPlus(model, "1", n_samples=2, std=0.3, seed=5).noise(x)
    assert torch.equal(sg, seeded_normal((2, 3, 8, 8), 5, 0.3, device=CPU, dtype=torch.float32))
    unit = torch.randn((4, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    assert torch.equal(camlens.NoiseSmooth(model, "1", n_samples=4, seed=1).noise(x), unit)  # float32 draws, as before


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_n_samples_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(camlens.InputError, match=r"n_samples=.* must be a positive int \(integration steps\)"):
        check_n_samples(bad, "integration steps")


@pytest.mark.parametrize("bad", [-0.1, float("nan"), True, "1"])
def test_std_must_be_a_number_at_least_zero(bad: object) -> None:
    with pytest.raises(camlens.InputError, match=r"std=.* must be a number >= 0"):
        check_std(bad, "noise")
    assert check_std(0, "noise") == 0.0
