"""Shapley-CAM against a float64 loop with torch.autograd.functional.hvp, and against pytorch-grad-cam's ShapleyCAM."""

from __future__ import annotations

import pytest
import torch
from _perturb_refs import DT, inputs
from torch import nn

import camlens

CLASSES = [1, 3]


def smooth_model(seed: int = 0) -> nn.Sequential:
    """conv-GELU-conv-tanh-GAP-linear: smooth above layer "0", so H A is not zero."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.GELU(), nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    ).to(DT).eval()  # fmt: skip


def shapley_loop(model: nn.Sequential, x: torch.Tensor, cut: int, classes: list[int]) -> torch.Tensor:
    """ReLU(sum_k w_k A^k), w_k = mean_ij (g - H A / 2)_kij, per image, with the functional HVP."""
    maps = []
    for n, c in enumerate(classes):
        a = model[: cut + 1](x[n : n + 1]).detach()[0]

        def f(act: torch.Tensor, c: int = c) -> torch.Tensor:
            return model[cut + 1 :](act[None])[0, c]

        g = torch.autograd.functional.jacobian(f, a)
        _, hv = torch.autograd.functional.hvp(f, a, a)
        corr = g - 0.5 * hv
        ch, h, w = a.shape
        out = torch.zeros(h, w, dtype=DT)
        for k in range(ch):
            wk = float(corr[k].sum()) / (h * w)
            out += wk * a[k]
        maps.append(torch.relu(out))
    return torch.stack(maps)


def test_shapleycam_matches_loop() -> None:
    model, x = smooth_model(), inputs()
    result = camlens.ShapleyCAM(model, "0")(x, target=CLASSES)
    expected = shapley_loop(model, x, 0, CLASSES)
    torch.testing.assert_close(result.raw["0"], expected, rtol=1e-9, atol=1e-12)
    grad = camlens.GradCAM(model, "0")(x, target=CLASSES).raw["0"]
    assert float((grad - expected).abs().max()) > 1e-4  # the correction is not zero here


def test_shapleycam_is_gradcam_where_the_head_is_piecewise_linear() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 5),
    ).to(DT).eval()  # fmt: skip
    x = inputs()
    shap = camlens.ShapleyCAM(model, "1")(x, top_k=2)
    grad = camlens.GradCAM(model, "1")(x, top_k=2)
    torch.testing.assert_close(shap.raw["1"], grad.raw["1"])


def test_shapleycam_matches_pytorch_grad_cam() -> None:
    from pytorch_grad_cam import ShapleyCAM as PeerShapleyCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = smooth_model(), inputs()
    ours = camlens.ShapleyCAM(model, "0")(x, target=CLASSES).maps["0"]
    theirs = PeerShapleyCAM(model, [model[0]])(x, targets=[ClassifierOutputTarget(c) for c in CLASSES])
    torch.testing.assert_close(ours, torch.from_numpy(theirs).to(DT), rtol=0, atol=1e-5)


def test_shapleycam_names_an_op_without_second_derivatives() -> None:
    """torch has no double backward for hardsigmoid (MobileNetV3's gates): a camlens error, not a raw one."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Hardsigmoid(), nn.Conv2d(3, 4, 3, padding=1), nn.Hardsigmoid(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    ).to(DT).eval()  # fmt: skip
    with pytest.raises(camlens.InputError, match="hardsigmoid_backward"):
        camlens.ShapleyCAM(model, "0")(inputs(), target=CLASSES)
    assert all(p.grad is None for p in model.parameters())


def test_shapleycam_differentiates_twice_through_fused_attention() -> None:
    """A ViT's attention (scaled_dot_product_attention, fused kernels without a double backward) below the head.

    Before: every ViT at any block but the last (timm, torchvision, transformers) raised "derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented", though the method
    table says Shapley-CAM applies to ViTs. The reference is g - H A / 2 by hand through the math kernel.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention import _cur_sdpa_kernel_backends as backends

    from beyond_models import TinyViT
    from testmodels import seeded

    model = seeded(TinyViT).to(DT)  # nn.MultiheadAttention -> F.scaled_dot_product_attention
    x = torch.rand(2, 3, 32, 32, dtype=DT, generator=torch.Generator().manual_seed(3))
    before = backends()
    result = camlens.ShapleyCAM(model, "blocks.0")(x, target=[0, 2])
    assert backends() == before  # the kernel choice is restored
    captured: list[torch.Tensor] = []
    handle = model.blocks[0].register_forward_hook(lambda m, i, o: captured.append(o))
    with sdpa_kernel(SDPBackend.MATH):
        logits = model(x)
    handle.remove()
    a = captured[0]
    (g,) = torch.autograd.grad(logits[[0, 1], [0, 2]].sum(), a, create_graph=True)
    (hv,) = torch.autograd.grad(g, a, grad_outputs=a.detach())
    patches, corr = a.detach()[:, 5:], (g - 0.5 * hv).detach()[:, 5:]  # after the class token and 4 registers
    expected = torch.relu(torch.einsum("nd,ntd->nt", corr.mean(dim=1), patches)).reshape(2, 4, 4)
    torch.testing.assert_close(result.raw["blocks.0"], expected, rtol=1e-9, atol=1e-12)
    gradcam = camlens.GradCAM(model, "blocks.0")(x, target=[0, 2]).raw["blocks.0"]
    assert float((gradcam - expected).abs().max()) > 1e-4  # the second-order term is not zero here
