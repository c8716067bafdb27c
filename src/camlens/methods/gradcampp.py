"""Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv:1710.11063)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.methods.base import BaseCAM, CAMOptions
from camlens.methods.registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["GradCAMPlusPlus"]


@register("gradcam++")
class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: channel weights from positive gradients, weighted per position by alpha.

    With the exponential of the score, ``Y = exp(S)``, the higher derivatives
    have a closed form in the first one ``g = dS/dA`` (exact for a network that
    is piecewise linear above the layer), and for activations ``A^k``, ``(h, w)``:

        alpha^k_ij = g_ij^2 / (2 g_ij^2 + sum_ab A^k_ab g_ij^3)     (0 where g_ij = 0)
        w_k = sum_ij alpha^k_ij ReLU(g^k_ij)
        L = ReLU(sum_k w_k A^k)

    The factor ``exp(S)`` that the paper's weights carry is the same for every
    channel of one map: it is left out (it only scales the map, and it
    overflows float32 for scores above 88). Where the denominator is 0 it is
    replaced by 1, as in the authors' code.

    Alpha normalization: the paper's formula uses alpha as above (so do
    pytorch-grad-cam and this class by default); the authors' released code
    also divides alpha by ``sum_ij alpha^k_ij`` per channel, reachable with
    ``normalize_alpha=True``. (torchcam intends the paper's form but writes
    ``alpha[mask].div_(...)``: boolean indexing returns a copy, so its alpha
    is ``g^2`` undivided.)

    Args:
        normalize_alpha: divide alpha by its per-channel sum (authors' code).
        (the rest as in :class:`BaseCAM`)

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)``, weights ``(N, K, C)``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        normalize_alpha: bool = False,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        self.normalize_alpha = normalize_alpha

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        g = gradients.flatten(3)  # (N, K, C, P)
        g2 = g * g
        a_sum = activations.flatten(2).sum(dim=-1)[:, None, :, None]  # (N, 1, C, 1)
        denom = 2 * g2 + a_sum * g2 * g
        denom = torch.where(denom != 0, denom, torch.ones_like(denom))
        alpha = torch.where(g != 0, g2 / denom, torch.zeros_like(g))
        if self.normalize_alpha:
            total = alpha.sum(dim=-1, keepdim=True)
            alpha = alpha / torch.where(total != 0, total, torch.ones_like(total))
        return (alpha * torch.relu(g)).sum(dim=-1)
