"""The random-map baseline: seeded, shared by a call's images, and what each mode says it is."""

from __future__ import annotations

import pytest
import torch
from _perturb_refs import DT, full_res_model, inputs

import camlens


def test_uniform_maps_are_the_seeded_draw_and_ignore_image_and_target() -> None:
    model, x = full_res_model(), inputs(3)
    result = camlens.RandomCAM(model, "3", seed=7, normalize=False)(x, top_k=2)
    expected = torch.rand((6, 6), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for n in range(3):
        for j in range(2):
            torch.testing.assert_close(result.raw["3"][n, j], expected, rtol=0, atol=0)
    again = camlens.RandomCAM(model, "3", seed=7, normalize=False)(x[:1], target=0).raw["3"][0]
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    other = camlens.RandomCAM(model, "3", seed=8, normalize=False)(x[:1], target=0).raw["3"][0]
    assert float((other - expected).abs().max()) > 0.1


def test_weights_mode_is_random_channel_weights_on_the_activations() -> None:
    model, x = full_res_model(), inputs()
    result = camlens.RandomCAM(model, "3", mode="weights", seed=3)(x, target=[0, 4])
    w = 2 * torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64) - 1
    a = model[:4](x).detach()
    for n in range(2):
        expected = torch.zeros(6, 6, dtype=DT)
        for k in range(4):
            expected += float(w[k]) * a[n, k]
        torch.testing.assert_close(result.raw["3"][n], torch.relu(expected))


def test_random_keywords_are_checked() -> None:
    with pytest.raises(camlens.InputError, match="mode='gauss'"):
        camlens.RandomCAM(full_res_model(), "3", mode="gauss")
    with pytest.raises(camlens.InputError, match=r"seed=1\.5"):
        camlens.RandomCAM(full_res_model(), "3", seed=1.5)  # type: ignore[arg-type]
