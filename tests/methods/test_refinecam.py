"""RefineCAM: the product of normalized per-layer maps, by hand in float64; pytorch-grad-cam's and torchcam's orders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens

DT = torch.float64
CLASSES = [1, 3]


def two_scale_model() -> nn.Sequential:
    """Layer "1" is 8x8, layer "3" is 4x4 for an 8x8 input."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5),
    ).to(DT).eval()  # fmt: skip


def inputs() -> torch.Tensor:
    return torch.randn(2, 2, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(4))


def minmax(m: torch.Tensor) -> torch.Tensor:
    lo, hi = m.amin(dim=(-2, -1), keepdim=True), m.amax(dim=(-2, -1), keepdim=True)
    return (m - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))


@pytest.mark.parametrize("normalize_first", [False, True])
def test_fused_map_is_the_product_of_normalized_layer_maps(normalize_first: bool) -> None:
    model, x = two_scale_model(), inputs()
    result = camlens.RefineCAM(model, ["1", "3"], normalize_first=normalize_first)(x, target=CLASSES)
    per_layer = camlens.GradCAMPlusPlus(model, ["1", "3"])(x, target=CLASSES).raw
    expected = torch.ones(2, 8, 8, dtype=DT)
    for name in ("1", "3"):
        m = per_layer[name].unsqueeze(1)
        if normalize_first:
            m = F.interpolate(minmax(m), size=(8, 8), mode="bilinear", align_corners=False)
        else:
            m = minmax(F.interpolate(m, size=(8, 8), mode="bilinear", align_corners=False))
        expected = expected * m[:, 0]
    torch.testing.assert_close(result.fused, minmax(expected))
    torch.testing.assert_close(result.map, result.fused)
    assert set(result.maps) == {"1", "3"} and float(result.fused.amax()) == 1.0


def test_one_layer_is_the_inner_methods_normalized_map() -> None:
    model, x = two_scale_model(), inputs()
    one = camlens.RefineCAM(model, "3", method="gradcam")(x, target=CLASSES).fused
    torch.testing.assert_close(one, camlens.GradCAM(model, "3")(x, target=CLASSES).map)


def test_matches_pytorch_grad_cam_refinecam() -> None:
    from pytorch_grad_cam import GradCAM, RefineCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = two_scale_model(), inputs()
    ours = camlens.RefineCAM(model, ["1", "3"], method="gradcam")(x, target=CLASSES).fused
    refine = RefineCAM(model, [model[1], model[3]], base_method=GradCAM)
    theirs = refine(x, [ClassifierOutputTarget(c) for c in CLASSES])
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-5)


def test_normalize_first_matches_torchcam_refinecam() -> None:
    from torchcam.methods import GradCAM, RefineCAM

    model, x = two_scale_model(), inputs()
    ours = camlens.RefineCAM(model, ["1", "3"], method="gradcam", normalize_first=True, upsample=False)(
        x, target=CLASSES
    ).fused
    with RefineCAM(model, ["1", "3"], input_shape=(2, 8, 8), base_method=GradCAM) as ex:
        theirs = ex(class_idx=CLASSES, scores=model(x))[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)  # torchcam adds 1e-8 when it normalizes


def test_refuses_a_fusion_and_non_gradient_inner_methods() -> None:
    model = two_scale_model()
    with pytest.raises(camlens.InputError, match="product"):
        camlens.RefineCAM(model, ["1", "3"], fuse="mean")
    with pytest.raises(camlens.InputError, match="gradient method"):
        camlens.RefineCAM(model, ["1", "3"], method="eigencam")
