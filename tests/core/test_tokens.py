"""Token (N, T, C) and channels-last (N, h, w, C) layers: grids, reshapes, and maps on ViTs and a Swin-like net."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import camlens
from beyond_models import SwinLike, TinyViT, hf_vit
from camlens.core.tokens import auto_reshape, channels_last_to_maps, find_grid, tokens_to_maps


@pytest.mark.parametrize(
    "tokens, size, expected",
    [
        (16, (32, 32), (0, 4, 4)),  # patches only
        (17, (32, 32), (1, 4, 4)),  # class token
        (18, (32, 32), (2, 4, 4)),  # class + distillation (DeiT)
        (21, (32, 32), (5, 4, 4)),  # class + 4 registers
        (25, (32, 32), (9, 4, 4)),  # class + 8 registers: not a 5x5 grid of 6-pixel patches
        (257, (224, 224), (1, 16, 16)),  # ViT-B/14 at 224
        (9, (16, 32), (1, 2, 4)),  # non-square image, 8x8 patches
        (50, (30, 30), (1, 7, 7)),  # 30 // 4 = 7: patches crop the edge
    ],
)
def test_find_grid(tokens, size, expected):
    assert find_grid(tokens, size) == expected


def test_find_grid_says_what_to_do_when_nothing_fits():
    with pytest.raises(camlens.LayerShapeError, match=r"50 tokens for a 32x32 input.*reshape="):
        find_grid(50, (32, 32))


def test_tokens_to_maps_values_match_a_loop():
    n, p, h, w, c = 2, 3, 2, 4, 5
    t = torch.randn(n, p + h * w, c)
    out = tokens_to_maps(t, (16, 32))
    assert out.shape == (n, c, h, w)
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    assert out[b, ch, i, j] == t[b, p + i * w + j, ch]


def test_channels_last_and_auto_reshape_rules():
    x_shape = (2, 3, 32, 32)
    nhwc = torch.randn(2, 4, 4, 24)
    assert torch.equal(auto_reshape(nhwc, x_shape), nhwc.permute(0, 3, 1, 2))
    assert torch.equal(channels_last_to_maps(nhwc), nhwc.permute(0, 3, 1, 2))
    nchw = torch.randn(2, 24, 8, 8)
    assert auto_reshape(nchw, x_shape) is nchw
    # ambiguous (N, 4, 4, 4): read as channels-first
    amb = torch.randn(2, 4, 4, 4)
    assert auto_reshape(amb, x_shape) is amb
    amb = torch.randn(2, 8, 8, 10)  # both readings plausible: channels-first wins
    assert auto_reshape(amb, x_shape) is amb
    # a valid (unpadded) strided conv: (5, 9) would be an exact 4-pixel grid of 20x36, but
    # (9, 17) is a plausible map of it, so the tensor stays channels-first
    valid = torch.randn(2, 5, 9, 17)
    assert auto_reshape(valid, (2, 1, 20, 36)) is valid
    swin = torch.randn(1, 7, 7, 768)  # Swin-T's last stage at 224
    assert auto_reshape(swin, (1, 3, 224, 224)).shape == (1, 768, 7, 7)
    # 1-D input: untouched
    seq = torch.randn(2, 5, 7)
    assert auto_reshape(seq, (2, 1, 28)) is seq


def _hand_gradcam_tokens(model, layer, x, prefix, h, w):
    """Grad-CAM on a token layer by a plain loop over the paper's formula (predicted class)."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o[0] if isinstance(o, tuple) else o))
    try:
        out = model(x)
        logits = out.logits if hasattr(out, "logits") else out
        score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        grad = torch.autograd.grad(score, store["a"])[0]
    finally:
        handle.remove()
    a = store["a"].detach()
    n, _, c = a.shape
    maps = torch.zeros(n, h, w)
    for b in range(n):
        alpha = [sum(grad[b, prefix + k, ch].item() for k in range(h * w)) / (h * w) for ch in range(c)]
        for i in range(h):
            for j in range(w):
                v = sum(alpha[ch] * a[b, prefix + i * w + j, ch].item() for ch in range(c))
                maps[b, i, j] = max(v, 0.0)
    return maps


def test_hf_vit_token_maps_equal_a_hand_written_reshape():
    model = hf_vit()
    x = torch.rand(3, 3, 32, 32)
    layer = "vit.layers.1.layernorm_before"
    auto = camlens.GradCAM(model, layer)(x)
    def to_grid(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2)

    hand = camlens.GradCAM(model, layer, reshape=to_grid)(x)
    assert auto.raw[layer].shape == (3, 4, 4)
    torch.testing.assert_close(auto.raw[layer], hand.raw[layer], atol=1e-6, rtol=0)
    torch.testing.assert_close(auto.maps[layer], hand.maps[layer], atol=1e-6, rtol=0)
    ref = _hand_gradcam_tokens(model, model.vit.layers[1].layernorm_before, x, 1, 4, 4)
    torch.testing.assert_close(auto.raw[layer], ref, atol=1e-6, rtol=1e-5)
    assert float(auto.raw[layer].max()) > 0  # not a trivially zero map


def test_tiny_vit_with_registers_drops_class_and_register_tokens():
    torch.manual_seed(0)
    model = TinyViT(registers=4).eval()
    x = torch.rand(2, 3, 32, 32)
    layer = "blocks.0"
    auto = camlens.GradCAM(model, layer)(x)
    ref = _hand_gradcam_tokens(model, model.blocks[0], x, 5, 4, 4)
    torch.testing.assert_close(auto.raw[layer], ref, atol=1e-6, rtol=1e-5)


def test_user_reshape_overrides_the_automatic_one():
    torch.manual_seed(0)
    model = TinyViT(registers=4).eval()
    x = torch.rand(2, 3, 32, 32)
    seen = []

    def mine(t):
        seen.append(tuple(t.shape))
        return t[:, 5:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2).flip(-1)  # mirrored on purpose

    auto = camlens.GradCAM(model, "blocks.0")(x)
    flipped = camlens.GradCAM(model, "blocks.0", reshape={"blocks.0": mine})(x)
    assert seen == [(2, 21, 16), (2, 21, 16)]  # activations, then gradients (N*K, T, C)
    torch.testing.assert_close(flipped.raw["blocks.0"], auto.raw["blocks.0"].flip(-1), atol=1e-6, rtol=0)


def test_swin_like_channels_last_maps_equal_an_explicit_permute_and_a_loop():
    torch.manual_seed(0)
    model = SwinLike().eval()
    x = torch.rand(2, 3, 32, 32)
    layer = "stages.1"
    auto = camlens.GradCAM(model, layer)(x)
    hand = camlens.GradCAM(model, layer, reshape=lambda t: t.permute(0, 3, 1, 2))(x)
    torch.testing.assert_close(auto.raw[layer], hand.raw[layer], atol=1e-6, rtol=0)
    # loop reference: the head is mean-pool + linear, so dy/dA[i, j, c] = W[y, c] / (h w)
    store = {}
    hdl = model.stages[1].register_forward_hook(lambda m, i, o: store.__setitem__("a", o.detach()))
    try:
        cls = model(x).argmax(1)
    finally:
        hdl.remove()
    a = store["a"]
    for b in range(2):
        wvec = model.head.weight[cls[b]].detach()
        alpha = wvec / 64  # gradient is constant over the 8x8 grid, its mean is itself
        for i in range(8):
            for j in range(8):
                v = float(sum(alpha[c] * a[b, i, j, c] for c in range(24)))
                assert auto.raw[layer][b, i, j].item() == pytest.approx(max(v, 0.0), abs=1e-6)


def test_hf_swin_tokens_and_automatic_choice():
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(0)
    cfg = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                     window_size=4, num_labels=3)
    model = SwinForImageClassification(cfg).eval()
    x = torch.rand(2, 3, 32, 32)
    # the pooler's (N, 32, 1) output is not read as 32 one-channel tokens
    assert auto_reshape(torch.zeros(2, 32, 1), x.shape).shape == (2, 32, 1)
    assert camlens.choose_layer(model, x) == "swin.layernorm"
    layer = "swin.encoder.layers.1"  # (N, 16, 32): a 4x4 grid, no extra tokens
    auto = camlens.GradCAM(model, layer)(x)
    hand = camlens.GradCAM(model, layer, reshape=lambda t: t.reshape(len(t), 4, 4, -1).permute(0, 3, 1, 2))(x)
    assert auto.raw[layer].shape == (2, 4, 4)
    torch.testing.assert_close(auto.maps[layer], hand.maps[layer], atol=1e-6, rtol=0)


def test_shape_error_for_tokens_without_grid_names_the_layer():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 50, 3), torch.nn.Flatten(2), torch.nn.Linear(30 * 30, 8),  # (N, 50, 8)
        torch.nn.Flatten(), torch.nn.Linear(400, 2),
    )
    with pytest.raises(camlens.LayerShapeError, match=r"50 tokens for a 32x32 input.*reshape="):
        camlens.GradCAM(model, "2")(torch.rand(1, 3, 32, 32))


def test_camlens_never_imports_torchvision():
    # The test environment has no torchvision (no CPU build exists for it), so the HF ViT tests
    # above also show that transformers' ViT runs without it; camlens itself must never import it.
    code = (
        "import sys, camlens, camlens.core.tokens, camlens.core.autolayer, camlens.core.wrapped, "
        "camlens.core.targets_extra, camlens.cli.demo, camlens.cli.explain_dataset; print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_layer_the_score_does_not_read_warns_that_its_map_is_empty() -> None:
    # TinyViT's head reads the class token only: the patch tokens of its last block have a zero gradient.
    # Before, an explicit layers='blocks.1' gave an all-zero map without a word.
    from testmodels import seeded

    model, x = seeded(TinyViT), torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=r"gradient at layer 'blocks.1' is zero at every position for image\(s\) "
                      r"\[0, 1\], so every gradient method's map there is empty"):  # fmt: skip
        empty = camlens.GradCAM(model, "blocks.1")(x)
    assert float(empty.raw["blocks.1"].abs().max()) == 0.0 and float(empty.map.abs().max()) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = camlens.GradCAM(model, "blocks.0")(x)  # the input of the last block: read through its attention
    assert float(read.map.amax(dim=(1, 2)).min()) == 1.0
