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


def _tiny_vits() -> list[tuple[str, torch.nn.Module, str, str]]:
    """timm's and torchvision's ViT at 32x32, two blocks: (family, model, the first block, its reader's norm)."""
    import timm
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16,
                                              mlp_dim=32).eval()  # fmt: skip
    torch.nn.init.normal_(tv.heads.head.weight)  # torchvision starts its head at zero: no gradient at all
    tm = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2).eval()
    return [("torchvision", tv, "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1.ln_1"),
            ("timm", tm, "blocks.0", "blocks.1.norm1")]  # fmt: skip


def test_the_warning_names_the_models_own_layernorm_and_that_layer_has_a_real_map() -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for family, model, block, norm in _tiny_vits():
        with pytest.warns(UserWarning, match="what is left after its terms cancel") as record:
            camlens.HiResCAM(model, block)(x)
        (message,) = [str(w.message) for w in record if "cancel" in str(w.message)]
        assert message.endswith(f"explain the output of the LayerNorm that reads it (here {norm!r}, the next "
                                "LayerNorm in the model's definition order) or use 'gradcam' at this layer"), family
        assert "blocks.11" not in message
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the layer it names does not cancel
            raw = camlens.HiResCAM(model, norm, relu=False, normalize=False)(x).raw[norm]
        grad = camlens.GradCAM(model, norm, relu=False, normalize=False)(x).raw[norm]
        assert float(raw.abs().amax()) > 0.01 * float(grad.abs().amax()), family


def test_without_a_layernorm_after_the_layer_the_advice_names_none() -> None:
    from camlens.methods.hirescam import _next_layernorm

    model, _ = vit_and_input()
    assert _next_layernorm(model, "blocks.0") == "blocks.1.norm1"
    assert _next_layernorm(model, "norm") is None and _next_layernorm(model, "no.such.layer") is None
