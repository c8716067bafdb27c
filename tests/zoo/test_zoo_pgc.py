"""camlens Grad-CAM against pytorch-grad-cam itself on torchvision models (issue 14, item 7).

pytorch-grad-cam (``import pytorch_grad_cam``, unstubbed) and real torchvision
models with random weights (the fast seeded fill of test_zoo_autolayer.py),
each explained at camlens's automatic layer for one class per image.

Aligning the post-processing: pytorch-grad-cam applies the ReLU, min-max
scales each map as ``(m - min) / (1e-7 + max)``, resizes it with OpenCV's
bilinear ``cv2.resize``, and scales once more. camlens's ``raw`` maps are the
maps after the ReLU at the layer's resolution; the test applies the same
two scalings around PyTorch's bilinear resize (``align_corners=False``, the
same half-pixel rule as OpenCV) and compares to 1e-4. Token and
channels-last layers get pytorch-grad-cam's ``reshape_transform`` written
out by hand.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM as PgcGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from test_zoo_autolayer import build_torchvision, reinit_zero_heads, two_images

import camlens

#: model -> input side; the ViT is built for 32x32 (2x2 patches of 16). AlexNet at 128: at 64 its convolutions
#: end in a 1x1 map that avgpool only repeats, so the choice is ``features.10``, whose output the next ReLU
#: overwrites in place, and there pytorch-grad-cam reads the ReLU's output as the convolution's (its known departure).
MODELS = {
    "resnet18": 64,
    "resnet50": 64,
    "vgg11_bn": 64,
    "alexnet": 128,
    "mobilenet_v2": 64,
    "mobilenet_v3_small": 64,
    "efficientnet_b0": 64,
    "convnext_tiny": 64,
    "regnet_y_400mf": 64,
    "shufflenet_v2_x0_5": 64,
    "squeezenet1_1": 64,
    "mnasnet0_5": 64,
    "swin_t": 64,
    "vit_b_16": 32,
}


def _pgc_scale(m: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's scale_cam_image without the resize, per map of ``(N, h, w)``."""
    m = m - m.flatten(1).min(dim=1).values[:, None, None]
    return m / (1e-7 + m.flatten(1).max(dim=1).values[:, None, None])


def _reshape_for_pgc(layer_output: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's reshape_transform: tokens (N, T, C) or channels-last (N, h, w, C) -> (N, C, h, w)."""
    if layer_output.ndim == 3:
        n, t, c = layer_output.shape
        h, w = grid
        return layer_output[:, t - h * w :].reshape(n, h, w, c).permute(0, 3, 1, 2)
    if layer_output.shape[1:3] == grid:
        return layer_output.permute(0, 3, 1, 2)
    return layer_output


@pytest.mark.parametrize("name", list(MODELS))
def test_gradcam_matches_pytorch_grad_cam(name: str) -> None:
    model = build_torchvision(name)
    reinit_zero_heads(model)  # torchvision's ViT head starts at zero: every gradient would be zero
    x = two_images(MODELS[name])
    with torch.no_grad():
        classes = model(x).argmax(dim=1)
    ours = camlens.GradCAM(model)(x, target=classes)
    layer = next(iter(ours.raw))
    raw = ours.raw[layer]  # (N, h, w) after the ReLU
    grid = (raw.shape[-2], raw.shape[-1])
    module = dict(model.named_modules())[layer]
    with PgcGradCAM(model, [module], reshape_transform=lambda t: _reshape_for_pgc(t, grid)) as pgc:
        theirs = torch.from_numpy(pgc(x, targets=[ClassifierOutputTarget(int(c)) for c in classes]))
    aligned = _pgc_scale(F.interpolate(_pgc_scale(raw)[:, None], size=x.shape[2:], mode="bilinear",
                                       align_corners=False)[:, 0])
    assert theirs.shape == aligned.shape == (2, *x.shape[2:])
    assert float(raw.amax()) > 0, "an all-zero map would agree trivially"
    torch.testing.assert_close(aligned, theirs, atol=1e-4, rtol=0)
    # and the maps camlens returns are the same maps, post-processed its own way (resize, then min-max)
    ours_maps = ours.map
    assert torch.isfinite(ours_maps).all() and ours_maps.min() >= 0 and ours_maps.max() <= 1
