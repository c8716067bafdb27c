"""HiResCAM (Draelos & Carin 2020, arXiv:2011.08891)."""

from __future__ import annotations

import warnings

from torch import Tensor, nn

from camlens.methods.base import BaseCAM, CAMContext
from camlens.methods.registry import register

__all__ = ["HiResCAM"]

#: a map whose largest |sum_k g^k A^k| is at most this share of the largest sum_k |g^k A^k| is what is left
#: after the terms cancel (measured: timm's and Hugging Face's ViTs at the input of the last block, 2e-7..1e-6;
#: tests' TinyViT in float64, 3e-5, its LayerNorm's eps; the automatic layers of seven CNN and Swin zoo models,
#: 0.02..0.27).
CANCELLED = 1e-4


@register("hirescam")
class HiResCAM(BaseCAM):
    """HiResCAM: the element-wise product of gradients and activations, summed over channels.

        L_ij = ReLU(sum_k g^k_ij A^k_ij),   g^k = dS/dA^k

    Unlike Grad-CAM it does not average the gradient over positions, so the map
    shows exactly where the score's first-order change comes from; on a
    global-average-pooling + linear head the two agree (the gradient is constant).

    Where a layer reaches the score only through a LayerNorm (a ViT's input to
    its last block: the patch tokens reach the class token only through that
    block's first LayerNorm), ``sum_k g^k A^k`` is zero but for rounding and
    the LayerNorm's ``eps``, since a LayerNorm does not change when a token is
    scaled; the normalized map then shows only those, and a warning names the
    layer and what to explain instead: the output of the LayerNorm that reads
    it (the next LayerNorm in the model's definition order, by its name: timm's
    ``blocks.11.norm1``, torchvision's ``encoder.layers.encoder_layer_11.ln_1``),
    or Grad-CAM there.

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)`` used as
    element-wise weights, maps ``(N, K, *s)``.
    """

    accepts_eigen_smooth = True

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return gradients

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        if self.eigen_smooth or ctx.gradients is None:
            return super().layer_maps(ctx)
        maps = {}
        for name, acts in ctx.activations.items():
            terms = ctx.gradients[name] * acts.unsqueeze(1)  # (N, K, C, *s): combine()'s element-wise products, once
            maps[name] = terms.sum(dim=2)
            _warn_if_cancelled(self.model, name, maps[name], terms)
        return maps


def _next_layernorm(model: nn.Module, name: str) -> str | None:
    """The name of the first ``nn.LayerNorm`` after the layer ``name`` and its submodules, in definition order
    (a ViT block's output: the next block's first norm); ``None`` if there is none or no such layer."""
    past = False
    for other, module in model.named_modules():
        if other == name:
            past = True
        elif past and not other.startswith(f"{name}.") and isinstance(module, nn.LayerNorm):
            return other
    return None


def _warn_if_cancelled(model: nn.Module, name: str, m: Tensor, terms: Tensor) -> None:
    """Warn where the map ``(N, K, *s)`` is what is left after its channel terms ``(N, K, C, *s)``."""
    scale = terms.abs().sum(dim=2).flatten(2).amax(dim=-1)  # (N, K)
    top = m.abs().flatten(2).amax(dim=-1)
    cancelled = (scale > 0) & (top <= CANCELLED * scale)
    if bool(cancelled.any()):
        images = sorted({int(i) for i in cancelled.nonzero()[:, 0]})
        share = float((top[cancelled] / scale[cancelled]).max())
        warnings.warn(
            f"HiResCAM's map at {name!r} is what is left after its terms cancel, for image(s) {images}: "
            f"sum_k g^k A^k is at most {share:.1e} of sum_k |g^k A^k| at every position, as where the layer "
            "reaches the score only through a LayerNorm (a ViT's input to its last block); explain the output of "
            f"the LayerNorm that reads it{_here(model, name)} or use 'gradcam' at this layer",
            stacklevel=5,
        )


def _here(model: nn.Module, name: str) -> str:
    norm = _next_layernorm(model, name)
    return "" if norm is None else f" (here {norm!r}, the next LayerNorm in the model's definition order)"
