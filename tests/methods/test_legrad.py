"""LeGrad on ViTs: a float64 forward with the attention written out, the engine's properties, torchcam's LeGrad."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from beyond_models import TinyViT
from testmodels import hook_count

DT = torch.float64
BLOCKS = ["blocks.0", "blocks.1"]


def vit() -> TinyViT:
    torch.manual_seed(0)
    return TinyViT().to(DT).eval()


def readout(model: TinyViT):
    return lambda t: model.head(model.norm(t)[:, 0])


def inputs(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, dtype=DT, generator=torch.Generator().manual_seed(2))


def reference(model: TinyViT, x: torch.Tensor, classes: list[int]) -> list[torch.Tensor]:
    """Per block: mean over heads and queries of ReLU(d s^l_c / d A^l), patch keys on the 4x4 grid."""
    t = model.patch(x).flatten(2).transpose(1, 2) + model.pos
    n = t.shape[0]
    t = torch.cat([model.cls.expand(n, -1, -1), model.reg.expand(n, -1, -1), t], dim=1)
    probs, outs = [], []
    for block in model.blocks:
        mha, h = block.attn, block.norm1(t)
        heads, d = mha.num_heads, t.shape[-1] // mha.num_heads
        q, k, v = F.linear(h, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.unflatten(-1, (heads, d)).transpose(1, 2) for z in (q, k, v))  # (N, heads, T, d)
        a = torch.softmax(torch.einsum("nhqd,nhkd->nhqk", q, k) / math.sqrt(d), dim=-1)
        o = torch.einsum("nhqk,nhkd->nqhd", a, v).flatten(2)
        t = t + F.linear(o, mha.out_proj.weight, mha.out_proj.bias)
        t = t + block.mlp(block.norm2(t))
        probs.append(a)
        outs.append(t)
    maps = []
    for a, tokens in zip(probs, outs, strict=True):
        s = model.head(model.norm(tokens)[:, 0])
        (g,) = torch.autograd.grad(sum(s[i, c] for i, c in enumerate(classes)), a, retain_graph=True)
        maps.append(torch.relu(g).mean(dim=(1, 2))[:, 5:].unflatten(-1, (4, 4)))
    return maps


def test_matches_the_written_out_attention() -> None:
    model, x = vit(), inputs()
    result = camlens.LeGrad(model, BLOCKS, readout=readout(model))(x, target=[0, 2, 1])
    expected = reference(model, x, [0, 2, 1])
    for name, m in zip(BLOCKS, expected, strict=True):
        torch.testing.assert_close(result.raw[name], m, rtol=1e-7, atol=1e-12)
    raw = camlens.LeGrad(model, BLOCKS, readout=readout(model), normalize=False, upsample=False)(x, target=[0, 2, 1])
    torch.testing.assert_close(raw.fused, (expected[0] + expected[1]) / 2, rtol=1e-7, atol=1e-12)
    assert result.map.shape == (3, 32, 32) and float(result.map.amax()) == 1.0
    # the recomputed attention leaves the model's output as it was
    torch.testing.assert_close(result.logits, model(x), rtol=1e-10, atol=1e-12)


def test_batch_invariance_top_k_and_model_left_as_found() -> None:
    model, x = vit(), inputs()
    method = camlens.LeGrad(model, BLOCKS, readout=readout(model))
    assert isinstance(method, camlens.Explainer) and camlens.LeGrad.families == ("vit",)
    whole = method(x, target=[0, 2, 1])
    for i in range(3):
        torch.testing.assert_close(whole.map[i : i + 1], method(x[i : i + 1], target=[[0, 2, 1][i]]).map)
    top = method(x, top_k=2)
    for j in range(2):
        torch.testing.assert_close(top.map[:, j], method(x, target=top.targets[:, j]).map)
    model.train()
    model.patch.weight.requires_grad_(False)
    hooks = hook_count(model)
    method(x)
    assert model.training and hook_count(model) == hooks
    assert not model.patch.weight.requires_grad and model.head.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_matches_torchcam_legrad_with_its_readout_and_departs_by_its_readout() -> None:
    from torchcam.methods import LeGrad
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=5).eval()  # fmt: skip
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: every gradient would be 0
    x = inputs().float()
    blocks = ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    mean_readout = lambda t: model.heads(model.encoder.ln(t.mean(dim=1)))  # noqa: E731  (torchcam's)
    ours = camlens.LeGrad(model, blocks, readout=mean_readout, upsample=False, normalize=False)(x, target=[0, 2, 1])
    with LeGrad(model, blocks) as ex:
        theirs = ex(class_idx=[0, 2, 1], scores=model(x), normalized=False)[0]
    torch.testing.assert_close(ours.fused, theirs, rtol=1e-4, atol=1e-7)
    assert float(theirs.amax()) > 0
    # the default reads the class token, as the model's head does: the last block's score is the model's
    # (in float64, so that the two paths' float32 rounding is not what is compared)
    model, x = model.double(), x.double()
    default = camlens.LeGrad(model, blocks, upsample=False, normalize=False)
    assert default.readout is not None
    with torch.no_grad():
        tokens = model.encoder.layers(model.encoder.dropout(_tokens(model, x) + model.encoder.pos_embedding))
    torch.testing.assert_close(default.readout(tokens), model(x), rtol=1e-10, atol=1e-12)
    assert (default(x, target=[0, 2, 1]).fused - theirs.double()).abs().amax() > 1e-6


def _tokens(model, x):
    t = model._process_input(x)
    return torch.cat([model.class_token.expand(x.shape[0], -1, -1), t], dim=1)


def test_nan_input_names_the_images_and_leaves_no_hooks() -> None:
    model, x = vit(), inputs(4)
    x[1, 0, 2, 3] = float("nan")
    x[3, 2, 0, 0] = float("inf")
    with pytest.raises(camlens.InputError, match=r"image\(s\) 1, 3 of the batch of 4"):
        camlens.LeGrad(model, BLOCKS, readout=readout(model))(x)
    assert hook_count(model) == 0


def test_errors_name_what_to_give() -> None:
    model = vit()
    # the model's own block names (before: "e.g. ['encoder.layers.10', ...]" for every model, a name that not
    # even torchvision's ViT has: its blocks are encoder.layers.encoder_layer_10, ...)
    with pytest.raises(camlens.InputError, match=r"layers=\['blocks.0', 'blocks.1'\] \(the last blocks\); "
                       r"TinyViT's 2 blocks: blocks.0, blocks.1$"):  # fmt: skip
        camlens.LeGrad(model)
    from torchvision.models import vit_b_16

    with pytest.raises(camlens.InputError, match=r"e.g. layers=\['encoder.layers.encoder_layer_10', "
                       r"'encoder.layers.encoder_layer_11'\].*12 blocks: encoder.layers.encoder_layer_0, "
                       r"encoder.layers.encoder_layer_1, ..., encoder.layers.encoder_layer_11$"):  # fmt: skip
        camlens.LeGrad(vit_b_16(weights=None, image_size=32))
    with pytest.raises(camlens.InputError, match=r"Sequential holds no nn\.MultiheadAttention or timm Attention"):
        camlens.LeGrad(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
    with pytest.raises(camlens.InputError, match="readout="):
        camlens.LeGrad(model, BLOCKS)
    with pytest.raises(camlens.LayerShapeError, match="holds 0 self-attention modules"):
        camlens.LeGrad(model, "patch", readout=readout(model))
    with pytest.raises(camlens.InputError, match="reshape="):
        camlens.LeGrad(model, BLOCKS, readout=readout(model), reshape=lambda t: t)


@pytest.mark.parametrize("fused", [True, False])
def test_timm_attention_blocks_match_the_written_out_attention(fused: bool) -> None:
    """timm's ViT (fused scaled_dot_product_attention or not): same reference, its own head as the readout."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5,
                              qkv_bias=True).to(DT).eval()  # fmt: skip
    for block in model.blocks:
        block.attn.fused_attn = fused
    x = inputs(2)
    result = camlens.LeGrad(model, ["blocks.0", "blocks.1"], upsample=False, normalize=False)(x, target=[3, 1])
    torch.testing.assert_close(result.logits, model(x), rtol=1e-10, atol=1e-12)

    t = model._pos_embed(model.patch_embed(x))
    probs, outs = [], []
    for block in model.blocks:
        attn, h = block.attn, block.norm1(t)
        q, k, v = F.linear(h, attn.qkv.weight, attn.qkv.bias).unflatten(-1, (3, 2, 8)).permute(2, 0, 3, 1, 4)
        a = torch.softmax(torch.einsum("nhqd,nhkd->nhqk", q, k) / math.sqrt(8), dim=-1)
        t = t + block.ls1(attn.proj(torch.einsum("nhqk,nhkd->nqhd", a, v).flatten(2)))
        t = t + block.ls2(block.mlp(block.norm2(t)))
        probs.append(a)
        outs.append(t)
    for name, a, tokens in zip(["blocks.0", "blocks.1"], probs, outs, strict=True):
        s = model.forward_head(model.norm(tokens))
        (g,) = torch.autograd.grad(s[0, 3] + s[1, 1], a, retain_graph=True)
        torch.testing.assert_close(result.raw[name], torch.relu(g).mean(dim=(1, 2))[:, 1:].unflatten(-1, (4, 4)))
