"""Images the model cannot take (issue 14, item 8): a camlens InputError naming the value and the fix.

Each case goes through the engine's input check (check_input -> camlens.core.inputs.check_image_batch),
for an explicit and an automatic layer, and leaves no hook behind; a model that converts its input
itself (repeats a gray channel, scales uint8, adds the batch dimension) is not refused.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens.core.autolayer import scan_layers
from camlens.core.inputs import check_image_batch, first_convolution
from camlens.errors import InputError
from camlens.methods.base import check_input
from testmodels import GapNet, hook_count, seeded


class GrayNet(nn.Module):
    """A one-channel model (the tutorial's kind)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


class Adapting(nn.Module):
    """Takes gray uint8 images without a batch dimension or with one, and makes RGB floats itself."""

    def __init__(self) -> None:
        super().__init__()
        self.net = GapNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if not x.is_floating_point():
            x = x.float() / 255
        return self.net(x.expand(-1, 3, -1, -1))


CASES = [
    (GapNet, torch.rand(2, 1, 8, 8),
     r"x has 1 channel \(shape \(2, 1, 8, 8\), a grayscale image\), but GapNet's first convolution 'features.0' "
     r"takes \(N, 3, H, W\), RGB: repeat the channel, x.expand\(-1, 3, \*x.shape\[2:\]\)"),
    (GapNet, torch.rand(2, 8, 8, 3),
     r"x has shape \(2, 8, 8, 3\), channels last \(N, H, W, C\); .* channels first: pass x.permute\(0, 3, 1, 2\)"),
    (GapNet, torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8),
     r"x has dtype torch.uint8 \(integer pixel values, 0..255\), .*convert it with x.float\(\) / 255"),
    (GapNet, torch.rand(3, 8, 8), r"x has shape \(3, 8, 8\): no batch dimension; .*pass x.unsqueeze\(0\)"),
    (GapNet, torch.rand(2, 4, 8, 8), r"x has 4 channels \(shape \(2, 4, 8, 8\), RGBA\?\).*x\[:, :3\]"),
    (GrayNet, torch.rand(2, 3, 8, 8), r"x has 3 channels .* takes \(N, 1, H, W\), grayscale: .*keepdim=True"),
    (GrayNet, torch.rand(2, 5, 8, 8), r"x has 5 channels \(shape \(2, 5, 8, 8\)\).*with 1 channel\(s\)"),
]


@pytest.mark.parametrize(("build", "x", "message"), CASES, ids=lambda v: getattr(v, "__name__", None))
def test_images_the_model_cannot_take(build, x, message) -> None:
    model = seeded(build)
    name = first_convolution(model)[0]
    for cam in (camlens.GradCAM(model, name), camlens.GradCAM(model), camlens.get_method("scorecam")(model, name)):
        with pytest.raises(InputError, match=message):
            cam(x)
        assert hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("build", "x", "message"), CASES, ids=lambda v: getattr(v, "__name__", None))
def test_the_automatic_choice_and_the_layer_scan_say_the_same(build, x, message) -> None:
    model = seeded(build)  # `camlens explain torchvision:resnet18 --index 0`: Fashion-MNIST's 1x28x28 items
    for scan in (camlens.choose_layer, scan_layers):
        with pytest.raises(InputError, match=message):
            scan(model, x)
        assert hook_count(model) == 0


def test_the_fix_each_message_names_works() -> None:
    model = seeded(GapNet)
    cam = camlens.GradCAM(model, "features.2")
    gray = torch.rand(2, 1, 8, 8)
    ref = cam(gray.repeat(1, 3, 1, 1)).map
    torch.testing.assert_close(cam(gray.expand(-1, 3, *gray.shape[2:])).map, ref)
    torch.testing.assert_close(cam(gray.repeat(1, 3, 1, 1).permute(0, 2, 3, 1).permute(0, 3, 1, 2)).map, ref)
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert cam(pixels.float() / 255).map.shape == (2, 8, 8)
    assert cam(torch.rand(3, 8, 8).unsqueeze(0)).map.shape == (1, 8, 8)


def test_a_model_that_converts_its_input_itself_is_not_refused() -> None:
    model = seeded(Adapting)
    before = hook_count(model)
    gray = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    check_image_batch(model, gray)  # uint8, one channel: the model makes RGB floats before its first convolution
    check_image_batch(model, torch.rand(1, 8, 8))  # no batch dimension: the model adds it
    r = camlens.GradCAM(model, "net.features.2")(gray.float())
    assert r.map.shape == (2, 8, 8) and torch.isfinite(r.map).all()
    assert hook_count(model) == before


def test_models_without_convolutions_and_empty_batches_are_not_judged() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    check_image_batch(mlp, torch.rand(2, 3, 2, 2))
    check_image_batch(mlp, torch.zeros(2, 12, dtype=torch.long))
    check_input(seeded(GapNet), torch.zeros(0, 3, 8, 8))


def test_the_probe_stops_at_the_first_convolution_and_leaves_the_model_as_found() -> None:
    model = seeded(GapNet)
    model.train()  # a forward pass in training mode would be visible in a BatchNorm; here nothing runs past the stem
    calls = []
    model.fc.register_forward_hook(lambda *_: calls.append("fc"))
    with pytest.raises(InputError):
        check_input(model, torch.rand(2, 1, 8, 8))
    assert calls == [] and model.training and hook_count(model) == 1


class Casting(nn.Module):
    """Takes any floating dtype and casts it to its own weights' before the first convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.net = GapNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.net.fc.weight.dtype))


@pytest.mark.parametrize(("model_dtype", "x_dtype"), [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_a_floating_dtype_other_than_the_models_is_refused_with_the_fix(model_dtype, x_dtype) -> None:
    # Before: float64 photos (numpy's default) into a float32 model failed inside the model's first
    # convolution with torch's "expected scalar type Double but found Float", and no word on the fix.
    model = seeded(GapNet).to(model_dtype)
    x = torch.rand(2, 3, 8, 8, dtype=x_dtype)
    for cam in (camlens.GradCAM(model, "features.2"), camlens.GradCAM(model)):
        with pytest.raises(InputError, match=rf"x has dtype {x_dtype}, .*with {model_dtype} weights.*x.to\("):
            cam(x)
        assert hook_count(model) == 0
    assert camlens.GradCAM(model, "features.2")(x.to(model_dtype)).map.dtype == model_dtype
    casting = seeded(Casting).to(model_dtype)
    check_image_batch(casting, x)  # the model casts the input itself: not refused
    assert camlens.GradCAM(casting, "net.features.2")(x).map.shape == (2, 8, 8)


def test_autocast_takes_another_dtype_than_the_weights() -> None:
    model = seeded(GapNet)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        check_image_batch(model, torch.rand(2, 3, 8, 8, dtype=torch.bfloat16))
