"""CAM checks its head: global average pooling + linear, or a clear error (class-token ViTs, max pooling, dropout)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from beyond_models import SwinLike, TinyViT


def test_a_class_token_vit_head_is_refused() -> None:
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(2, 3, 32, 32)
    with pytest.raises(camlens.LayerShapeError, match=r"global-average-pooling \+ linear head on layer 'blocks.1'"):
        camlens.CAM(model, "blocks.1")(x)


def test_a_mean_pooled_channels_last_head_is_cam_and_equals_grad_cam() -> None:
    torch.manual_seed(0)
    model, x = SwinLike().eval(), torch.randn(2, 3, 32, 32)
    cam = camlens.CAM(model, "stages.1")(x, target=[0, 2]).map
    torch.testing.assert_close(cam, camlens.GradCAM(model, "stages.1")(x, target=[0, 2]).map, rtol=1e-4, atol=1e-5)


def pooled(pool: nn.Module, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), pool, nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(4, 3)).eval()  # fmt: skip


def test_max_pooling_and_training_dropout_are_refused_unless_check_head_is_off() -> None:
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(camlens.LayerShapeError, match="check_head=False"):
        camlens.CAM(pooled(nn.AdaptiveMaxPool2d(1)), "1")(x)
    model = pooled(nn.AdaptiveAvgPool2d(1), dropout=0.5)
    assert float(camlens.CAM(model, "1")(x).map.amax()) == 1.0  # eval mode: dropout is the identity
    model.train()
    with pytest.raises(camlens.LayerShapeError, match="dropout in training mode"):
        camlens.CAM(model, "1")(x)
    assert camlens.CAM(model, "1", check_head=False)(x).map.shape == (2, 8, 8)
    assert model.training
