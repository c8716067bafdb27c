"""Grad-CAM with the automatic layer on every torchvision classification builder (issue 14, items 6 and 7).

Random weights, small inputs where the model allows (64x64; the ViTs are built
for 28-64 pixels with their ``image_size`` argument; Inception v3 needs 80,
MaxViT 224). Each model gets a batch of two different images and one target
class for both, and the test checks (Grad-CAM without its final ReLU: with
random weights the evidence for a class may be negative everywhere): finite maps in [0, 1]; maps that differ
between the two images (the map depends on the image, not only on the
class); a grid the chosen layer really outputs, with one stride for both
sides; the same layer chosen for one image as for two; no hook and no
``.grad`` left on the model.

Random weights come from a seeded fast fill (:func:`fast_random_init`): the
builders' own initialisation of the 80 models (about 5 billion parameters)
takes minutes on two CPU cores, while what is tested here needs only weights
that are random and scaled as the builders scale them. Zero initialisations
(``nn.init.zeros_``, ``constant_``) are kept, so torchvision's ViTs keep their
zero head: the test checks the automatic layer's error for it (it names the
all-zero head), then re-initialises the head with a seeded normal init
(std 0.02) and explains the model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torchvision
from torch import nn

import camlens
from camlens.core.autolayer import choose_layer, zero_weights
from camlens.errors import LayerNotUsedError
from testmodels import hook_count

TORCHVISION = torchvision.models.list_models(module=torchvision.models)

#: input side per model where 64 does not suit it, and builder keywords
SIZES = {"inception_v3": 80, "maxvit_t": 224}
KWARGS: dict[str, dict] = {
    "vit_b_16": {"image_size": 32},
    "vit_l_16": {"image_size": 32},
    "vit_h_14": {"image_size": 28},
    "vit_b_32": {"image_size": 64},
    "vit_l_32": {"image_size": 64},
    "googlenet": {"init_weights": False, "aux_logits": False},
    "inception_v3": {"init_weights": False, "aux_logits": False},
    "maxvit_t": {"input_size": (224, 224)},
}
#: the builders whose head is initialised to zero (the automatic layer must say so)
ZERO_HEAD = {"vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32"}


# ---- random weights, fast ---------------------------------------------------------------------

_PERIOD = 1_000_003  # a prime: tiles of the noise block do not line up with rows of a weight


def _fans(t: torch.Tensor) -> tuple[int, int]:
    receptive = math.prod(t.shape[2:]) if t.ndim > 2 else 1
    return (t.shape[1] if t.ndim > 1 else t.shape[0]) * receptive, t.shape[0] * receptive


@contextmanager
def fast_random_init(seed: int = 0) -> Iterator[None]:
    """Inside the block, torch.nn.init's random initialisers fill from one seeded block of normal noise.

    Every tensor gets the mean and standard deviation the initialiser asked
    for (kaiming, xavier, normal, truncated normal, uniform), from its own
    stretch of a tiled block of 1,000,003 seeded standard normals; zeros_,
    ones_ and constant_ are untouched.
    """
    noise = torch.randn(_PERIOD, generator=torch.Generator().manual_seed(seed))
    cursor = [0]
    saved = {name: getattr(nn.init, name) for name in _INITS}

    def fill(t: torch.Tensor, mean: float, std: float) -> torch.Tensor:
        with torch.no_grad():
            flat = t.view(-1) if t.is_contiguous() else torch.empty(t.numel(), dtype=t.dtype)
            for i in range(0, flat.numel(), _PERIOD // 2):
                k = min(flat.numel() - i, _PERIOD // 2)
                start = cursor[0] % (_PERIOD - k)
                flat[i : i + k].copy_(noise[start : start + k])
                cursor[0] += 7919
            flat.mul_(std).add_(mean)
            if not t.is_contiguous():
                t.copy_(flat.view(t.shape))
        return t

    def gain(nonlinearity: str = "leaky_relu", a: float = 0.0) -> float:
        return nn.init.calculate_gain(nonlinearity, a)

    def kaiming(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu", *args, **kwargs):
        fan_in, fan_out = _fans(t)
        return fill(t, 0.0, gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out))

    def xavier(t, g=1.0, *args, **kwargs):
        fan_in, fan_out = _fans(t)
        return fill(t, 0.0, g * math.sqrt(2.0 / (fan_in + fan_out)))

    def trunc(t, mean=0.0, std=1.0, a=-2.0, b=2.0, *args, **kwargs):
        fill(t, mean, std)
        with torch.no_grad():
            return t.clamp_(a, b)

    patches = {
        "kaiming_uniform_": kaiming,
        "kaiming_normal_": kaiming,
        "xavier_uniform_": xavier,
        "xavier_normal_": xavier,
        "normal_": lambda t, mean=0.0, std=1.0, *a, **k: fill(t, mean, std),
        "trunc_normal_": trunc,
        "uniform_": lambda t, a=0.0, b=1.0, *r, **k: fill(t, (a + b) / 2, (b - a) / math.sqrt(12)),
    }
    try:
        for name, fn in patches.items():
            setattr(nn.init, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


_INITS = ("kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "normal_", "trunc_normal_",
          "uniform_")


def build_torchvision(name: str) -> nn.Module:
    with fast_random_init(0):
        return torchvision.models.get_model(name, weights=None, **KWARGS.get(name, {})).eval()


# ---- the checks, shared with the timm zoo --------------------------------------------------------


def two_images(size: int | tuple[int, int], seed: int = 1) -> torch.Tensor:
    """Two different images (N=2): smooth random blobs, standardized like normalized photos."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, 3, max(h // 8, 2), max(w // 8, 2), generator=g)
    fine = torch.randn(2, 3, h, w, generator=g) * 0.3
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) + fine


def reinit_zero_heads(model: nn.Module, seed: int = 0) -> list[str]:
    """Give every all-zero weight (an untrained zero head) a seeded normal init, std 0.02; returns their names."""
    names = zero_weights(model)
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(torch.randn(params[n].shape, generator=g) * 0.02)
    return names


def grid_of(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[int, ...]:
    """The output shape of ``layer`` for the first image of ``x``, seen by a plain forward hook."""
    seen: list[tuple[int, ...]] = []
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(
        lambda m, i, o: seen.append(tuple((o[0] if isinstance(o, tuple) else o).shape))
    )
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        handle.remove()
    return seen[-1]


def is_grid_of(grid: tuple[int, int], out: tuple[int, ...]) -> bool:
    """Whether the map's ``(h, w)`` is the layer's output: channels first or last, or h*w tokens (+ up to 10)."""
    h, w = grid
    if len(out) == 4:
        return tuple(out[2:]) == grid or tuple(out[1:3]) == grid
    return len(out) == 3 and 0 <= out[1] - h * w <= 10


def explain_and_check(model: nn.Module, x: torch.Tensor, zero_head: bool) -> str:
    """Grad-CAM with layers=None on ``x`` (N=2) for one target class; every check of the module's docstring."""
    hooks = hook_count(model)
    target = [0, 0]
    if zero_head:
        with pytest.raises(LayerNotUsedError, match=r"gradient is zero at every layer.* is all zeros.*trained weights"):
            choose_layer(model, x, target)
        assert reinit_zero_heads(model)
    # relu=False: with random weights a class's evidence may be negative everywhere, which the ReLU
    # would turn into an all-zero map for both images
    cam = camlens.GradCAM(model, relu=False)
    result = cam(x, target=target)
    layer = next(iter(cam.layers))
    assert choose_layer(model, x[:1], target[:1]) == layer, "the choice changed with the batch size"
    maps = result.map
    assert maps.shape == (2, *x.shape[2:])
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert (maps[0] - maps[1]).abs().max() > 1e-3, f"{layer}: the two images got the same map"
    raw = result.raw[layer]
    grid = tuple(raw.shape[-2:])
    assert math.prod(grid) > 1
    assert is_grid_of(grid, grid_of(model, layer, x)), f"{layer}: {grid} is not a grid the layer outputs"
    assert hook_count(model) == hooks
    assert all(p.grad is None for p in model.parameters())
    return layer


@pytest.mark.parametrize("name", TORCHVISION)
def test_every_torchvision_classifier_gets_an_image_dependent_map(name: str) -> None:
    model = build_torchvision(name)
    x = two_images(KWARGS.get(name, {}).get("image_size", SIZES.get(name, 64)))
    explain_and_check(model, x, name in ZERO_HEAD)


def test_the_zoo_is_the_whole_torchvision_list() -> None:
    # every classification builder, and nothing filtered out of the list
    assert len(TORCHVISION) >= 80
    assert {"alexnet", "maxvit_t", "vit_h_14", "swin_v2_b", "regnet_y_128gf"} <= set(TORCHVISION)
    assert {n for n in TORCHVISION if re.fullmatch(r"vit_[bhl]_\d+", n)} == ZERO_HEAD


def test_fast_init_keeps_the_scale_the_builder_asks_for() -> None:
    original = nn.init.normal_
    with fast_random_init(0):
        lin = nn.Linear(400, 300)
        conv = nn.Conv2d(16, 32, 3)
        t = nn.init.normal_(torch.empty(500, 500), std=0.02)
        u = nn.init.trunc_normal_(torch.empty(1000), std=3.0, a=-1.0, b=1.0)
    # kaiming_uniform_(a=sqrt(5)) has std 1 / sqrt(3 fan_in)
    assert lin.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 400), rel=0.05)
    assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 16 * 9), rel=0.1)
    assert t.std().item() == pytest.approx(0.02, rel=0.02) and abs(t.mean().item()) < 1e-3
    assert u.min() >= -1 and u.max() <= 1
    assert not torch.equal(lin.weight[0], lin.weight[1])
    assert nn.init.normal_ is original  # put back on leaving the block
