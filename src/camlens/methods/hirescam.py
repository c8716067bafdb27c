"""HiResCAM (Draelos & Carin 2020, arXiv:2011.08891)."""

from __future__ import annotations

from torch import Tensor

from camlens.methods.base import BaseCAM
from camlens.methods.registry import register

__all__ = ["HiResCAM"]


@register("hirescam")
class HiResCAM(BaseCAM):
    """HiResCAM: the element-wise product of gradients and activations, summed over channels.

        L_ij = ReLU(sum_k g^k_ij A^k_ij),   g^k = dS/dA^k

    Unlike Grad-CAM it does not average the gradient over positions, so the map
    shows exactly where the score's first-order change comes from; on a
    global-average-pooling + linear head the two agree (the gradient is constant).

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)`` used as
    element-wise weights, maps ``(N, K, *s)``.
    """

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return gradients
