"""Automatic layer choice (layers=None) and the `camlens layers` command."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import camlens
from beyond_models import SwinLike, TinyViT, hf_vit
from camlens.cli import main
from camlens.core.autolayer import choose_layer, scan_layers
from camlens.demo.models import ConvNet


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


class FullyConv(nn.Module):
    """Any input size: conv, conv, global average pool, linear; so the size is taken from x."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)  # (N, 5, 1, 1): one position, not a map
        self.head = nn.Linear(5, 4)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def test_choice_on_the_tutorials_convnet_and_a_cnn_with_a_pooled_head():
    torch.manual_seed(0)
    assert choose_layer(ConvNet().eval(), torch.rand(2, 1, 28, 28)) == "seq.5"
    # the pooled (N, 5, 1, 1) output has one position: not a map, so the choice is the block before it
    assert choose_layer(FullyConv().eval(), torch.rand(2, 1, 20, 36)) == "features"


class EnlargingPool(nn.Module):
    """AlexNet's shape on a small input: the convolutions end in a 1x1 map that ``avgpool`` repeats to 3x3."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(8))  # 8x8 -> 1x1
        self.avgpool = nn.AdaptiveAvgPool2d(3)  # (N, 6, 3, 3), every position the same value
        self.head = nn.Linear(6 * 9, 4)

    def forward(self, x):
        return self.head(self.avgpool(self.features(x)).flatten(1))


def test_choice_skips_a_pooling_that_repeats_one_position(capsys):
    torch.manual_seed(0)
    model, x = EnlargingPool().eval(), torch.rand(2, 3, 8, 8)
    info = {i.name: i for i in scan_layers(model, x)}
    assert info["avgpool"].spatial and info["avgpool"].on_path and info["avgpool"].uniform
    assert not info["avgpool"].candidate
    assert not info["features.0"].uniform
    chosen = choose_layer(model, x)
    assert chosen == "features.1"  # the 8x8 map after the ReLU: the 1x1 max-pool has one position
    raw = camlens.GradCAM(model)(x).raw[chosen]
    assert raw.shape == (2, 8, 8) and bool((raw.flatten(1).amax(1) > raw.flatten(1).amin(1)).all())
    # given by hand, the repeated map is explained as asked, with a warning that names it
    with pytest.warns(UserWarning, match=r"layer 'avgpool' holds one value at every position of its \(3, 3\) maps"):
        flat = camlens.GradCAM(model, "avgpool")(x).raw["avgpool"]
    assert bool((flat == flat[:, :1, :1]).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        camlens.GradCAM(model)(x)  # the automatic choice: no warning
    # `camlens layers` marks the flat map and points at the real grid
    assert main(["layers", f"{__file__}:EnlargingPool", "--input-shape", "3,8,8"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["avgpool"].endswith("yes (flat: one value repeated)")
    assert rows["features.1"].endswith("yes  <- auto") and "flat" not in rows["features.0"]
    # an all-black image leaves every map uniform; the choice is then the last such map, as before
    assert choose_layer(model, torch.zeros(1, 3, 8, 8)) == "avgpool"


def test_choice_uses_the_real_input_size_not_224():
    torch.manual_seed(0)
    model = FullyConv(in_channels=2).eval()
    x = torch.rand(3, 2, 20, 36)
    result = camlens.GradCAM(model)(x)  # layers=None
    assert list(result.maps) == ["features"]
    assert result.raw["features"].shape == (3, 9, 17)  # (20 - 3) // 2 + 1, (36 - 3) // 2 + 1
    assert result.map.shape == (3, 20, 36)
    explicit = camlens.GradCAM(model, "features")(x)
    torch.testing.assert_close(result.map, explicit.map, atol=0, rtol=0)


def test_choice_on_transformers_skips_the_block_whose_patches_do_not_reach_the_score():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    # the last block's output reaches the head only through the class token
    assert choose_layer(hf_vit(), x) == "vit.layers.0"
    assert choose_layer(TinyViT(depth=3).eval(), x) == "blocks.1"
    assert choose_layer(SwinLike().eval(), x) == "stages"
    info = {i.name: i for i in scan_layers(hf_vit(), x)}
    assert info["vit.layers.1"].on_path is False and info["vit.layers.0"].on_path is True
    assert info["vit.layers.1"].map_shape == (2, 32, 4, 4)
    assert info["classifier"].map_shape is None


def test_auto_layer_is_kept_and_the_model_is_left_as_found():
    torch.manual_seed(0)
    model = TinyViT().eval()
    for p in model.head.parameters():
        p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    hooks = _hook_count(model)
    cam = camlens.GradCAM(model)
    assert "auto" in repr(cam)
    r1 = cam(torch.rand(2, 3, 32, 32))
    assert list(cam.layers) == ["blocks.0"]
    r2 = cam(torch.rand(1, 3, 32, 32))
    assert list(r2.maps) == list(r1.maps) == ["blocks.0"]
    assert _hook_count(model) == hooks
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_no_spatial_layer_gives_a_clear_error_and_removes_hooks():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(camlens.LayerNotUsedError, match=r"cannot choose a layer of Sequential.*layers='name'"):
        camlens.GradCAM(model)(torch.rand(2, 1, 4, 4))
    assert _hook_count(model) == 0


def test_layers_command_lists_shapes_and_the_choice(capsys):
    assert main(["layers", "beyond_models:SwinLike", "--input-shape", "3,40,48"]) == 0
    out = capsys.readouterr().out
    assert "stages.1" in out and "(10, 12, 24)" in out and "(24, 10, 12)" in out
    assert "automatic choice (layers=None): stages" in out
    assert "head" not in out  # only candidates without --all
    assert main(["layers", "beyond_models:SwinLike", "--input-shape", "3,40,48", "--all"]) == 0
    assert "head" in capsys.readouterr().out


def test_layers_command_reads_a_checkpoint_folder(tmp_path, capsys):
    from camlens.demo.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ck", ConvNet(), {"architecture": "convnet", "model_kwargs": {}})
    assert main(["layers", str(tmp_path / "ck")]) == 0
    out = capsys.readouterr().out
    assert "input (1, 1, 28, 28)" in out and "seq.4" in out and "(16, 28, 28)" in out
    assert "automatic choice (layers=None): seq.5" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["layers", "nope"], "model='nope' is neither a checkpoint folder or a save_pretrained folder (no such f"),
        (["layers", "beyond_models:SwinLike", "--input-shape", "3,a"], "--input-shape '3,a'"),
        (["layers", "beyond_models:SwinLike"], "pass --input-shape"),
        (["layers", "beyond_models:nothing"], "no callable 'nothing'"),
    ],
)
def test_layers_command_errors(argv, message, capsys):
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_layers_refuses_an_input_shape_too_large_to_probe(capsys):
    from camlens.cli import main

    assert main(["layers", "testmodels:small_resnet", "--input-shape", "3,100000,100000", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "InputError: input shape (3, 100000, 100000) has 30000000000 values, more than the 201326592" in err
