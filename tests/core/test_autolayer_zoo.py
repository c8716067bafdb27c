"""The automatic layer's zoo rules on small models (issue 14, item 6): padded grids, image-independent
outputs, attention tensors that are no grid, zero heads, and a choice that ignores the batch size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camlens.core.autolayer import choose_layer, scan_layers, zero_weights
from camlens.core.tokens import find_grid, plausible_grid, tokens_to_maps
from camlens.errors import LayerNotUsedError
from testmodels import hook_count


@pytest.mark.parametrize(
    ("tokens", "size", "expected"),
    [
        (247, (400, 600), (0, 13, 19)),  # HF Swin's last stage at 400x600: 25x38 padded to 26x38, merged
        (950, (400, 600), (0, 25, 38)),  # its third stage: 600 / 16 = 37.5 -> 38
        (49, (224, 224), (0, 7, 7)),
    ],
)
def test_padded_grids_are_found(tokens, size, expected):
    assert find_grid(tokens, size) == expected
    t = torch.arange(2 * tokens * 3.0).view(2, tokens, 3)
    assert tokens_to_maps(t, size).shape == (2, 3, expected[1], expected[2])


@pytest.mark.parametrize(
    ("grid", "image", "plausible"),
    [
        ((7, 7), (224, 224), True),
        ((13, 19), (400, 600), True),
        ((6, 6), (224, 224), True),  # AlexNet: valid convolutions lose border cells
        ((8, 8), (299, 299), True),  # Inception v3
        ((50, 40), (224, 224), False),  # CoaT's crpe: (N, heads, 1 + 7 * 7 tokens, 40 channels per head)
        ((1, 197), (224, 224), False),  # a class-attention row
        ((257, 257), (64, 64), False),  # attention between 256 patches of a 64x64 image: 4x the image
    ],
)
def test_plausible_grid(grid, image, plausible):
    assert plausible_grid(grid, image) is plausible


class BiasNet(nn.Module):
    """A conv net whose score also reads a position map made from weights alone, (1, C, 8, 8), last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.table = nn.Parameter(torch.randn(1, 4, 8, 8))
        self.bias = nn.Identity()  # outputs the table: same for every image, shaped like maps for N=1
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        a = self.conv(x)
        b = self.bias(self.table * 1.0)
        return self.head((a * b).mean(dim=(2, 3)))


class AttnNet(nn.Module):
    """Patch tokens and an attention block whose probabilities (N, heads, T, T) pass through a module last."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)  # 32x32 -> 8x8 patches
        self.qkv = nn.Linear(8, 24)
        self.attn_drop = nn.Dropout(0.0)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # (N, 64, 8)
        q, k, v = self.qkv(t).view(len(t), 64, 3, 2, 4).permute(2, 0, 3, 1, 4)  # (N, 2 heads, 64, 4)
        p = self.attn_drop((q @ k.transpose(-1, -2)).softmax(-1))  # (N, 2, 64, 64): a 64x64 "map" of 32x32
        out = (p @ v).transpose(1, 2).reshape(len(t), 64, 8)
        return self.head(out.mean(dim=1))


def test_an_output_that_is_the_same_for_every_image_is_never_chosen():
    torch.manual_seed(0)
    model = BiasNet().eval()
    for n in (1, 2):  # with N=1 the table has the batch's shape; it must not matter
        x = torch.rand(n, 3, 8, 8)
        info = {i.name: i for i in scan_layers(model, x)}
        assert info["bias"].varies is False and info["conv"].varies is True
        assert choose_layer(model, x) == "conv"


def test_attention_probabilities_are_not_a_grid_of_the_image():
    torch.manual_seed(0)
    model = AttnNet().eval()
    x = torch.rand(2, 3, 32, 32)
    info = {i.name: i for i in scan_layers(model, x)}
    assert info["attn_drop"].map_shape == (2, 2, 64, 64) and info["attn_drop"].real_grid is False
    assert choose_layer(model, x) == "qkv"  # (N, 64, 24) tokens: an 8x8 grid of the image


def test_a_zero_head_gets_an_error_that_says_so():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    nn.init.zeros_(model[4].weight)
    x = torch.rand(2, 3, 8, 8)
    assert zero_weights(model) == ["4.weight"]
    message = r"gradient is zero at every layer.*4\.weight is all zeros.*Load trained weights.*"
    with pytest.raises(LayerNotUsedError, match=message + r"get_method\('eigencam'\)\(model, layers='1'\)"):
        choose_layer(model, x)
    assert hook_count(model) == 0
    nn.init.normal_(model[4].weight, std=0.02)
    assert choose_layer(model, x) == "1"


def test_hf_swin_at_a_photos_size_uses_the_padded_grid_whatever_the_batch():
    transformers = pytest.importorskip("transformers", reason="the test environment installs transformers")
    torch.manual_seed(0)
    config = transformers.SwinConfig(embed_dim=12, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], num_labels=3)
    model = transformers.SwinForImageClassification(config).eval()
    x = torch.rand(2, 3, 400, 600)
    infos = scan_layers(model, x[:1])
    assert all(not i.candidate for i in infos if "relative_position" in i.name)
    assert choose_layer(model, x[:1]) == choose_layer(model, x) == "swin.layernorm"
    info = {i.name: i for i in infos}["swin.layernorm"]
    assert info.shape == (1, 247, 96) and info.map_shape == (1, 96, 13, 19)


class PassOn(nn.Module):
    """Stage one feeds stage two; a later block hands stage one's output on unused (timm CoaT's parallel blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Conv2d(3, 4, 3, padding=1)
        self.stage2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.late = nn.Identity()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        a = self.stage1(x)
        b = self.stage2(a)
        self.late(a)  # returns a, which nothing after it uses
        return self.head(b.mean(dim=(2, 3)))


def test_a_module_handing_on_an_earlier_output_is_not_chosen():
    torch.manual_seed(0)
    model = PassOn().eval()
    x = torch.rand(2, 3, 8, 8)
    info = {i.name: i for i in scan_layers(model, x)}
    assert info["late"].passed_on and info["late"].on_path and not info["late"].candidate
    assert choose_layer(model, x) == "stage2"
    import camlens

    assert camlens.GradCAM(model)(x).map.shape == (2, 8, 8)
