"""Each method's declared ``families`` are true: it runs on a small model of each, and refuses the others clearly."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import camlens
from beyond_models import SwinLike, TinyDetector, TinyViT
from camlens.methods import FAMILIES, METHODS

#: (method, family) pairs a declared family does not yet run on, each with its issue; strict: fixed means remove.
KNOWN_BROKEN: dict[tuple[str, str], str] = {}


class SegNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(6, 3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.classifier(self.body(x))}


def family_case(family: str):
    """(model, layer, method keywords, input, target) for a small model of ``family``."""
    torch.manual_seed(0)
    if family == "cnn":
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))  # fmt: skip
        return model.eval(), "3", {}, torch.rand(2, 3, 8, 8), None
    if family == "vit":
        return TinyViT().eval(), "blocks.1", {}, torch.rand(2, 3, 32, 32), None
    if family == "swin":
        return SwinLike().eval(), "stages.1", {}, torch.rand(2, 3, 32, 32), None
    if family == "detection":
        target = camlens.DetectionTarget(torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([1]), iou_threshold=0.0)
        return (
            TinyDetector().eval(),
            "backbone.2",
            {"output": camlens.detection_output()},
            torch.rand(2, 1, 16, 16),
            target,
        )
    return SegNet().eval(), "body.0", {"output": "out"}, torch.rand(2, 1, 8, 8), camlens.SegmentationTarget(2)


def run(name: str, family: str) -> camlens.CAMResult:
    model, layer, kwargs, x, target = family_case(family)
    layers: str | list[str] | None = layer
    if name in {"fullgrad", "guided-backprop"}:
        layers = None
    if name == "legrad":
        layers = ["blocks.0", "blocks.1"] if family == "vit" else layer
        kwargs["readout"] = lambda t: model.head(model.norm(t)[:, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # guided backprop on GELU models says so; not the point here
        method = METHODS[name](model, **kwargs) if layers is None else METHODS[name](model, layers, **kwargs)
        return method(x, target=target)


CASES = [
    pytest.param(n, f, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BROKEN[n, f]))
    if (n, f) in KNOWN_BROKEN else (n, f)
    for n in sorted(METHODS) for f in FAMILIES
]  # fmt: skip


@pytest.mark.parametrize(("name", "family"), CASES)
def test_declared_families_run_and_the_others_are_refused(name: str, family: str) -> None:
    assert set(METHODS[name].families) <= set(FAMILIES)
    if family in METHODS[name].families:
        result = run(name, family)
        assert all(torch.isfinite(m).all() and m.shape[0] == 2 for m in result.maps.values())
    else:
        with pytest.raises(camlens.CamlensError):
            run(name, family)
