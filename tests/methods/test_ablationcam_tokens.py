"""Ablation-CAM on token and channels-last layers: the ablation is done in the layer's own layout."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import camlens
from beyond_models import SwinLike, tiny_vit
from camlens.methods.ablationcam import channel_axis

CLASSES = [0, 2]


def vit_to_maps(t: torch.Tensor) -> torch.Tensor:
    """TinyViT tokens (N, 1 + 4 + 16, C) -> (N, C, 4, 4): drop the class token and the registers."""
    return t[:, 5:, :].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)


def ablation_loop(model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Relative score drops (N, C) with feature k of every token of ``layer``'s output zeroed, one hook call each."""
    c = model.head.in_features
    out = torch.zeros(len(x), c, dtype=torch.float64)
    for n, cls in enumerate(classes):
        with torch.no_grad():
            base = float(model(x[n : n + 1])[0, cls])
        for k in range(c):

            def zero_k(m: nn.Module, args: object, o: torch.Tensor, k: int = k) -> torch.Tensor:
                o = o.clone()
                o[..., k] = 0  # feature k of every token (tokens and channels-last keep features last)
                return o

            handle = layer.register_forward_hook(zero_k)
            try:
                with torch.no_grad():
                    s = float(model(x[n : n + 1])[0, cls])
            finally:
                handle.remove()
            out[n, k] = (base - s) / base
    return out


@pytest.mark.parametrize("reshape", [None, vit_to_maps])
@pytest.mark.parametrize("rerun", ["auto", "full"])
def test_ablationcam_on_vit_tokens_matches_loop(reshape, rerun: str) -> None:
    model = tiny_vit().double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    layer = "blocks.1.norm1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback to a full re-run (a skip connection crosses the layer)
        result = camlens.AblationCAM(model, layer, rerun=rerun, reshape=reshape, batch_size=7)(x, target=CLASSES)
    module = dict(model.named_modules())[layer]
    weights = ablation_loop(model, module, x, CLASSES)
    with torch.no_grad():
        captured = []
        h = module.register_forward_hook(lambda m, a, o: captured.append(o))
        model(x)
        h.remove()
    maps = vit_to_maps(captured[0])  # (N, C, 4, 4)
    expected = torch.relu(torch.einsum("nc,nchw->nhw", weights, maps))
    torch.testing.assert_close(result.raw[layer], expected, rtol=1e-7, atol=1e-10)


def test_ablationcam_on_channels_last_layer_matches_loop() -> None:
    torch.manual_seed(0)
    model = SwinLike().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    result = camlens.AblationCAM(model, "stages.0", batch_size=11)(x, target=CLASSES)
    weights = ablation_loop(model, model.stages[0], x, CLASSES)
    with torch.no_grad():
        a = model.stages[0](model.embed(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(result.raw["stages.0"], torch.relu(torch.einsum("nc,nchw->nhw", weights, a)))


def test_channel_axis_finds_the_channels_of_common_layouts() -> None:
    x = torch.zeros(1, 3, 32, 32)
    axis, index = channel_axis("tokens", (1, 21, 16), x, vit_to_maps)
    assert axis == 2 and index.tolist() == list(range(16))
    axis, index = channel_axis("conv", (1, 6, 4, 4), x, None)
    assert axis == 1 and index.tolist() == list(range(6))
    flipped = lambda t: vit_to_maps(t).flip(1)  # noqa: E731  # channel k of the maps is feature 15 - k
    assert channel_axis("tokens", (1, 21, 16), x, flipped)[1].tolist() == list(range(15, -1, -1))
    mixing = lambda t: vit_to_maps(t) * 0.5  # noqa: E731
    with pytest.raises(camlens.LayerShapeError, match="does not keep each channel on one axis"):
        channel_axis("tokens", (1, 21, 16), x, mixing)


def test_ablationcam_on_vit_tokens_agrees_with_pytorch_grad_cam_ablating_to_zero() -> None:
    """pytorch-grad-cam's ViT ablation layer writes min - 1e7 where the layer can be negative (its departure);
    with the paper's zero written instead, its maps and camlens' agree."""
    from pytorch_grad_cam import AblationCAM as PeerAblationCAM
    from pytorch_grad_cam.ablation_layer import AblationLayerVit
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class ZeroAblationVit(AblationLayerVit):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            out = self.activations.transpose(1, 2)  # (B, C, T)
            for i in range(out.shape[0]):
                out[i, self.indices[i], :] = 0
            return out.transpose(2, 1)

    model = tiny_vit().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    peer = PeerAblationCAM(model, [model.blocks[1].norm1], reshape_transform=vit_to_maps,
                           ablation_layer=ZeroAblationVit())  # fmt: skip
    theirs = peer(x, targets=[ClassifierOutputTarget(c) for c in CLASSES])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = camlens.AblationCAM(model, "blocks.1.norm1")(x, target=CLASSES).maps["blocks.1.norm1"]
    torch.testing.assert_close(ours, torch.from_numpy(theirs), rtol=0, atol=2e-4)
