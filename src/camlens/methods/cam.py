"""CAM (Zhou et al., CVPR 2016, arXiv:1512.04150), for global-average-pooling heads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec, resolve_layers
from camlens.errors import LayerNotFoundError, LayerShapeError, TargetError
from camlens.methods.base import BaseCAM, CAMContext, CAMOptions
from camlens.methods.registry import register

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CAM"]


@register("cam")
class CAM(BaseCAM):
    """Class activation map: the last conv features weighted by the linear classifier's weights.

    For a model whose head is global average pooling followed by a linear
    layer ``S^c = b_c + sum_k W_ck * mean_ij A^k_ij``:

        L^c = ReLU(sum_k W_ck A^k)

    The paper's map has no ReLU (``relu=False`` gives it, and torchcam's
    ``CAM``: equal to 1e-16 on real architectures); the engine's default
    ``relu=True`` keeps the positive evidence, as for every other method.

    No backward pass is needed. The classifier is ``fc`` if given, else the
    last ``nn.Linear`` of the model whose ``in_features`` equals the layer's
    channel count. The map is only meaningful when nothing but pooling (and
    flattening) lies between the layer and that linear layer, and every call
    checks it: the head applied to the layer's spatial mean,
    ``b_c + sum_k W_ck mean_ij A^k_ij``, must reproduce the model's explained
    scores (to 1e-3 of their scale). A class-token ViT head, a head behind
    max pooling, an MLP head or dropout in training mode fail the check.

    Args:
        fc: the linear head (its name or the module); found automatically if ``None``.
        check_head: verify on every call that the scores are the head of the
            layer's global average (``False``: trust it, e.g. for a head with
            dropout explained in training mode).
        (the rest as in :class:`BaseCAM`)

    Raises:
        LayerNotFoundError: no linear head matches the layer's channels.
        LayerShapeError: the explained scores are not the linear head of the
            layer's global average pool (``check_head=True``).
        TargetError: a callable target (CAM needs class indices).

    Shapes: activations ``(N, C, *s)``, weights ``W[classes]`` ``(N, K, C)``, maps ``(N, K, *s)``.
    """

    uses_gradients = False
    accepts_eigen_smooth = True
    families = ("cnn", "swin")

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        fc: LayerSpec | None = None,
        check_head: bool = True,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
        self.check_head = check_head
        self.fc: nn.Linear | None = None
        if fc is not None:
            name, module = next(iter(resolve_layers(model, fc).items()))
            if not isinstance(module, nn.Linear):
                raise LayerShapeError(f"fc={name!r} is a {type(module).__name__}, not an nn.Linear head")
            self.fc = module

    def _head(self, channels: int) -> nn.Linear:
        if self.fc is not None:
            if self.fc.in_features != channels:
                raise LayerShapeError(
                    f"fc has in_features={self.fc.in_features} but the layer has {channels} channels; "
                    "CAM needs the linear layer that follows global average pooling of this layer"
                )
            return self.fc
        found = [m for m in self.model.modules() if isinstance(m, nn.Linear) and m.in_features == channels]
        if not found:
            raise LayerNotFoundError(
                f"CAM found no nn.Linear with in_features={channels} (the layer's channels) in "
                f"{type(self.model).__name__}; CAM needs a global-average-pooling + linear head "
                "(pass fc=name), or use a gradient method such as 'gradcam'"
            )
        return found[-1]

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        if ctx.classes is None:
            raise TargetError("CAM explains class indices; a callable target needs a gradient method such as 'gradcam'")
        out = {}
        for name, acts in ctx.activations.items():
            head = self._head(acts.shape[1])
            w = head.weight.detach()[ctx.classes].to(acts.dtype)  # (N, K, C)
            if self.check_head:
                _check_gap_head(name, head, w, acts, ctx)
            out[name] = self._combine(w, acts)
        return out


def _check_gap_head(name: str, head: nn.Linear, w: Tensor, acts: Tensor, ctx: CAMContext) -> None:
    """Refuse a layer whose global average, through ``head``, does not give the explained scores."""
    assert ctx.classes is not None
    pred = torch.einsum("nkc,nc->nk", w, acts.flatten(2).mean(dim=-1))
    if head.bias is not None:
        pred = pred + head.bias.detach()[ctx.classes].to(pred.dtype)
    scores = ctx.scores.to(pred.dtype)
    scale = float(scores.abs().amax()) if scores.numel() else 0.0
    gap = float((pred - scores).abs().amax()) if scores.numel() else 0.0
    if gap > 1e-3 * max(scale, 1e-6):
        raise LayerShapeError(
            f"CAM needs a global-average-pooling + linear head on layer {name!r}, but the linear head "
            f"of its spatial mean misses the explained scores by up to {gap:.3g} (scores up to {scale:.3g}): "
            "something other than average pooling lies between the layer and the head (a class token, "
            "an MLP, max pooling, dropout in training mode); use a gradient method such as 'gradcam', "
            "or pass check_head=False if the head is right"
        )
