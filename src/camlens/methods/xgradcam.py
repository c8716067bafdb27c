"""XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312)."""

from __future__ import annotations

import torch
from torch import Tensor

from camlens.methods.base import BaseCAM
from camlens.methods.registry import register

__all__ = ["XGradCAM"]


@register("xgradcam")
class XGradCAM(BaseCAM):
    """XGrad-CAM: gradients weighted by the normalized activations ("axiom-based").

    For activations ``A^k`` ``(h, w)`` and gradients ``g^k = dS/dA^k``:

        w_k = sum_ij (A^k_ij / sum_ab A^k_ab) g^k_ij
        L = ReLU(sum_k w_k A^k)

    A channel whose activations sum to 0 gets weight 0.

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)``, weights ``(N, K, C)``.
    """

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        a = activations.flatten(2)  # (N, C, P)
        total = a.sum(dim=-1, keepdim=True)
        share = torch.where(total != 0, a / torch.where(total != 0, total, torch.ones_like(total)), torch.zeros_like(a))
        return (gradients.flatten(3) * share[:, None]).sum(dim=-1)
