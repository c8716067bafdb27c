"""Shapley-CAM (Cai, "CAMs as Shapley value-based explainers", arXiv:2501.06261, 2025)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from camlens.core.targets import TargetSpec
from camlens.errors import InputError, LayerNotUsedError
from camlens.methods.base import BaseCAM, CAMContext
from camlens.methods.registry import register

__all__ = ["ShapleyCAM"]


def _hessian_vector(g: Tensor, a: Tensor, name: str) -> Tensor | None:
    """``H a``: the derivative of ``g . a`` (``a`` held as the vector) to ``a``, or an error naming the missing op."""
    try:
        (hvp,) = torch.autograd.grad(g, a, grad_outputs=a.detach(), retain_graph=True, allow_unused=True)
    except RuntimeError as e:
        if "not implemented" not in str(e):
            raise
        raise InputError(
            f"Shapley-CAM needs second derivatives of the network above layer {name!r}, and torch has none for "
            f"an op there ({str(e).splitlines()[0]}); explain a later layer, or use Grad-CAM (Shapley-CAM "
            "without its second-order term)"
        ) from None
    return hvp


class _MathAttention:
    """Scaled-dot-product attention through torch's math kernel, the one with second derivatives.

    The fused kernels (flash, memory-efficient, cuDNN) have none, so the HVP through
    any ViT's attention failed. torch keeps the kernel choice process-wide: while a
    call is inside, attention in every thread runs the math kernel (the same values up
    to rounding); the choice from before the first call is restored after the last.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls = 0  # calls inside; the first enters the kernel context, the last leaves it
        self._kernel: AbstractContextManager[Any] | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if not self._calls:
                self._kernel = sdpa_kernel(SDPBackend.MATH)
                self._kernel.__enter__()
            self._calls += 1
        try:
            yield
        finally:
            with self._lock:
                self._calls -= 1
                if not self._calls and self._kernel is not None:
                    self._kernel.__exit__(None, None, None)
                    self._kernel = None


_math_attention = _MathAttention()


@register("shapleycam")
class ShapleyCAM(BaseCAM):
    """Shapley-CAM: Grad-CAM's weights with a second-order (Hessian-vector product) correction.

    For target score ``y^c``, activations ``A`` ``(C, *s)``, gradient
    ``g = dy^c/dA`` and Hessian ``H = d^2 y^c / dA^2``:

        w_k = mean_ij ( g - 1/2 H A )_kij
        L^c = ReLU(sum_k w_k A^k)

    ``g - 1/2 H A`` is the second-order Taylor estimate of each activation's
    Shapley value for the score (the paper's derivation); ``H A`` is one
    Hessian-vector product, computed by differentiating ``g . A`` (with ``A``
    held fixed as the vector) once more: one extra backward pass per target
    and layer, from the score down to the layer only. Where the network above
    the layer is piecewise linear in ``A`` (ReLU, max-pool, linear), ``H A``
    is zero and this is Grad-CAM; it differs with smooth non-linearities
    (softmax targets, GELU, attention, LayerNorm). This is what
    pytorch-grad-cam's ``ShapleyCAM`` computes.

    Shapes: activations ``(N, C, *s)``, gradients and HVPs ``(N, K, C, *s)``,
    weights ``(N, K, C)``, maps ``(N, K, *s)``.

    Example:
        >>> import torch, camlens
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.GELU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> camlens.ShapleyCAM(model, "0")(torch.rand(2, 1, 8, 8)).map.shape
        torch.Size([2, 8, 8])
    """

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        # ``gradients`` holds g - 1/2 H A (see _capture).
        return gradients.flatten(3).mean(dim=-1)

    def _capture(self, x: Tensor, target: TargetSpec, top_k: int | None) -> CAMContext:
        """The forward pass, then per target and layer the gradient (kept differentiable) and H A."""
        if not self.layers:
            from camlens.core.autolayer import choose_layer
            from camlens.core.layers import resolve_layers

            self.layers = resolve_layers(self.model, choose_layer(self.model, x, target, output=self.output))
        with _math_attention():  # the forward pass records attention's graph; its kernel decides the HVP
            logits, acts, scores, classes, multi = self._forward(x, target, top_k)
        k = scores.shape[1]
        corrected: dict[str, Any] = {n: [] for n in acts}
        for j in range(k):
            for name, a in acts.items():
                (g,) = torch.autograd.grad(scores[:, j].sum(), a, create_graph=True, allow_unused=True)
                if g is None:
                    raise LayerNotUsedError(
                        f"the target scores do not depend on layer(s) {[name]}; "
                        "pick layers that lie on the path to the explained output"
                    )
                hvp = None
                if g.requires_grad:
                    hvp = _hessian_vector(g, a, name)
                g = g.detach()
                corrected[name].append(g if hvp is None else g - 0.5 * hvp.detach())
        activations = {n: self._as_maps(n, a.detach(), x) for n, a in acts.items()}
        gradients = {n: self._as_maps(n, torch.stack(v, dim=1), x, batched=True) for n, v in corrected.items()}
        return CAMContext(
            self.model, x, logits.detach(), scores.detach(), classes, activations, gradients, target, multi
        )
