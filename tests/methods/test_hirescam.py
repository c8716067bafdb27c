"""HiResCAM where its channel sum cancels: a ViT's input to its last block (a LayerNorm reads it)."""

from __future__ import annotations

import warnings

import pytest
import torch

import camlens
from beyond_models import TinyViT
from testmodels import GapNet, seeded


def vit_and_input(dtype: torch.dtype = torch.float32) -> tuple[TinyViT, torch.Tensor]:
    return seeded(TinyViT).to(dtype), torch.rand(2, 3, 32, 32, dtype=dtype, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_map_below_a_layernorm_cancels_and_says_so(dtype: torch.dtype) -> None:
    # TinyViT: the head reads norm(t)[:, 0]; the patch tokens of blocks.0 reach the class token only through
    # blocks.1.norm1, which no token's scale changes: sum_k g^k A^k = 0 but for rounding and the LayerNorm's eps.
    # Before, that remainder came back min-max normalized, a map in [0, 1] like any other, without a word.
    model, x = vit_and_input(dtype)
    message = r"HiResCAM's map at 'blocks.0' is what is left after its terms cancel, for image\(s\) \[0, 1\]: "
    with pytest.warns(UserWarning, match=message + r"sum_k g\^k A\^k is at most \d\.\de-\d\d of"):
        raw = camlens.HiResCAM(model, "blocks.0", relu=False, normalize=False)(x, target=[0, 2]).raw["blocks.0"]
    grad = camlens.GradCAM(model, "blocks.0", relu=False, normalize=False)(x, target=[0, 2]).raw["blocks.0"]
    # the cancellation the warning reports, next to Grad-CAM's map of the same layer
    assert float(raw.abs().max()) < 1e-4 * float(grad.abs().max())


def test_no_warning_where_the_map_is_real() -> None:
    model, x = vit_and_input()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        after_norm = camlens.HiResCAM(model, "blocks.1.norm1")(x, target=[0, 2]).map
        cnn = camlens.HiResCAM(seeded(GapNet), "features.2")(torch.rand(2, 3, 8, 8)).map
        camlens.HiResCAM(model, "blocks.0", eigen_smooth=True)(x)  # the first component, not the sum
    assert float(after_norm.amax(dim=(1, 2)).min()) == 1.0 and float(cnn.amax(dim=(1, 2)).min()) == 1.0
