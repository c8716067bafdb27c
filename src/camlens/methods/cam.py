"""CAM (Zhou et al., CVPR 2016, arXiv:1512.04150), for global-average-pooling heads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from torch import Tensor, nn

from camlens.core.layers import LayerSpec, resolve_layers
from camlens.errors import LayerNotFoundError, LayerShapeError, TargetError
from camlens.methods.base import BaseCAM, CAMContext, CAMOptions, combine
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

    No backward pass is needed. The classifier is ``fc`` if given, else the
    last ``nn.Linear`` of the model whose ``in_features`` equals the layer's
    channel count. The map is only meaningful when nothing but pooling (and
    flattening) lies between the layer and that linear layer.

    Args:
        fc: the linear head (its name or the module); found automatically if ``None``.
        (the rest as in :class:`BaseCAM`)

    Raises:
        LayerNotFoundError: no linear head matches the layer's channels.
        TargetError: a callable target (CAM needs class indices).

    Shapes: activations ``(N, C, *s)``, weights ``W[classes]`` ``(N, K, C)``, maps ``(N, K, *s)``.
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec],
        *,
        fc: LayerSpec | None = None,
        **options: Unpack[CAMOptions],
    ) -> None:
        super().__init__(model, layers, **options)
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
            w = self._head(acts.shape[1]).weight.detach()  # (classes, C)
            out[name] = combine(w[ctx.classes].to(acts.dtype), acts)
        return out
