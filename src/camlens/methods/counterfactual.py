"""The counterfactual Grad-CAM map (Selvaraju et al. 2017, section 4: negated gradients)."""

from __future__ import annotations

from torch import Tensor

from camlens.methods.base import BaseCAM
from camlens.methods.registry import register

__all__ = ["CounterfactualCAM"]


@register("counterfactual")
class CounterfactualCAM(BaseCAM):
    """Counterfactual explanation: regions whose removal would raise the target score.

    Grad-CAM with negated gradients:

        w_k = -1/(h w) * sum_ij dS/dA^k_ij
        L = ReLU(sum_k w_k A^k)

    Shapes: activations ``(N, C, *s)``, gradients ``(N, K, C, *s)``, weights ``(N, K, C)``.
    """

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return -gradients.flatten(3).mean(dim=-1)
