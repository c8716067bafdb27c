"""LayerCAM's fusion in both orders: upsample then scale (default), scale then upsample (torchcam's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import camlens

DT = torch.float64


def two_scale_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5),
    ).to(DT).eval()  # fmt: skip


def scaled(m: torch.Tensor) -> torch.Tensor:
    top = m.amax(dim=(-2, -1), keepdim=True)
    return torch.tanh(2 * m / torch.where(top > 0, top, torch.ones_like(top)))


def up(m: torch.Tensor) -> torch.Tensor:
    return F.interpolate(m[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]


def test_both_orders_by_hand_and_torchcams_fusion() -> None:
    from torchcam.methods import LayerCAM

    model, x = two_scale_model(), torch.randn(2, 2, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(4))
    raw = camlens.LayerCAM(model, ["1", "3"])(x, target=[1, 3]).raw
    after = camlens.LayerCAM(model, ["1", "3"], normalize=False)(x, target=[1, 3]).fused
    before = camlens.LayerCAM(model, ["1", "3"], scale="before", normalize=False, upsample=False)(x, target=[1, 3])
    torch.testing.assert_close(after, torch.maximum(scaled(up(raw["1"])), scaled(up(raw["3"]))))
    torch.testing.assert_close(before.fused, torch.maximum(up(scaled(raw["1"])), up(scaled(raw["3"]))))
    assert float((after - before.fused).abs().amax()) > 1e-3  # the order matters on the 4x4 layer
    assert all(float(m.flatten(1).amin(1).amax()) == 0.0 for m in raw.values())  # min-max = /max here
    with LayerCAM(model, ["1", "3"], input_shape=(2, 8, 8)) as ex:
        cams = ex(class_idx=[1, 3], scores=model(x))
        theirs = ex.fuse_cams(cams)
    torch.testing.assert_close(before.fused, theirs, rtol=1e-6, atol=1e-6)  # torchcam adds 1e-8 when it normalizes
