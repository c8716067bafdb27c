"""Guided Backpropagation (Springenberg et al., ICLR-W 2015) and Guided Grad-CAM (Selvaraju et al. 2017)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from camlens.core.capture import forward_hooks, per_target_grads
from camlens.core.layers import LayerSpec
from camlens.core.ops import upsample
from camlens.core.targets import OutputSpec, TargetSpec, select_output, target_scores
from camlens.methods.base import BaseCAM, CAMContext
from camlens.methods.gradcam import GradCAM
from camlens.methods.registry import register

__all__ = ["GuidedBackprop", "GuidedGradCAM", "guided_backprop", "guided_relus", "per_target_grads"]


class _PositiveGrad(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


def _guide(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
    return _PositiveGrad.apply(output)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Make every ``nn.ReLU`` of ``model`` pass back only positive gradients, for the block.

    A ReLU's backward already zeroes where its input was negative; the hook
    adds the clamp of the incoming gradient at 0, which together is guided
    backpropagation. ``F.relu`` called inside ``forward`` is not a module and
    cannot be guided (a warning says so when no ``nn.ReLU`` is found).

    Yields:
        The number of ``nn.ReLU`` modules guided.
    """
    with forward_hooks((m, _guide) for m in model.modules() if isinstance(m, nn.ReLU)) as n:
        yield n


def guided_backprop(
    model: nn.Module, x: Tensor, target: TargetSpec, top_k: int | None, output: OutputSpec
) -> CAMContext:
    """The context of a guided-backpropagation pass: ``input_gradients`` ``(N, K, *x.shape[1:])``.

    No layer is captured (``activations`` is empty, ``gradients`` ``None``).
    """
    with torch.inference_mode(False), torch.enable_grad(), guided_relus(model) as count:
        if count == 0:
            warnings.warn(
                f"{type(model).__name__} has no nn.ReLU module to guide; guided backpropagation "
                "is then the plain input gradient",
                stacklevel=4,
            )
        xg = x.detach().requires_grad_(True)
        logits = select_output(model(xg), output)
        scores, classes, multi = target_scores(logits, target, top_k)
        (grads,) = per_target_grads(scores, [xg])
    return CAMContext(model, x, logits.detach(), scores.detach(), classes, {}, None, target, multi, grads)


@register("guided-backprop")
class GuidedBackprop(BaseCAM):
    """Guided backpropagation: the input gradient with negative gradients stopped at every ReLU.

    At each ReLU, with forward input ``z`` and incoming gradient ``R``:

        R_in = 1[z > 0] * ReLU(R)

    The map is an image like the input: ``maps["input"]`` is ``(N, [K,] C_in, H, W)``
    (min-max normalized over ``(C_in, H, W)`` if ``normalize=True``;
    ``raw["input"]`` is the signed gradient).

    Args:
        model: any ``nn.Module``, left as found.
        layers: accepted so that every registered method takes the same
            arguments; not used (the map is the input gradient).
        normalize: min-max normalize each map over ``(C_in, H, W)``.
        relu: keep only positive gradients (off by default).
        upsample: accepted so that every method takes the post-processing
            keywords; the map is already at the input's size.
        output: where the scores are in the model's output.
    """

    uses_gradients = True
    input_sized = True
    accepts_reshape = False
    takes_chosen_layer = False  # no layer at all (camlens.methods.registry.takes_chosen_layer)

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        normalize: bool = True,
        relu: bool = False,
        upsample: bool = True,
        output: OutputSpec = None,
    ) -> None:
        # The map is the input gradient: no layer is hooked (``layers`` is accepted and unused),
        # and it is already at the input's size (``upsample`` changes nothing).
        super().__init__(model, None, relu=relu, upsample=upsample, normalize=normalize, output=output)

    def _capture(self, x: Tensor, target: TargetSpec, top_k: int | None) -> CAMContext:
        return guided_backprop(self.model, x, target, top_k, self.output)

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        assert ctx.input_gradients is not None
        return {"input": ctx.input_gradients}


@register("guided-gradcam")
class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map.

        G^c = GB^c * Up(ReLU(sum_k alpha_k^c A^k))       (element-wise, broadcast over input channels)

    ``Up`` is the engine's bilinear upsampling of the raw (unnormalized)
    Grad-CAM map. Maps are ``(N, [K,] C_in, H, W)`` per layer, min-max
    normalized over ``(C_in, H, W)`` if ``normalize=True``; ``raw`` holds the
    unnormalized products. Captum's ``GuidedGradCam`` computes the same with
    ``interpolate_mode="bilinear"`` (its default is nearest).

    Args: as in :class:`BaseCAM` (``relu`` acts on the Grad-CAM factor; ``upsample``
    is always on: the product lives at input size).
    """

    input_sized = True

    def _capture(self, x: Tensor, target: TargetSpec, top_k: int | None) -> CAMContext:
        ctx = super()._capture(x, target, top_k)
        # Explain exactly the classes Grad-CAM explained (or the same callable).
        gb_target: TargetSpec = ctx.classes if ctx.classes is not None else target
        ctx.input_gradients = guided_backprop(self.model, x, gb_target, None, self.output).input_gradients
        return ctx

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        assert ctx.input_gradients is not None
        grads, size = ctx.input_gradients, ctx.x.shape[2:]  # (N, K, C_in, *S)
        rectify = super()._rectify  # the ReLU of the Grad-CAM factor
        cams = {name: rectify(m) for name, m in super().layer_maps(ctx).items()}
        return {name: grads * upsample(m, size).unsqueeze(2) for name, m in cams.items()}

    def _rectify(self, m: Tensor) -> Tensor:
        return m  # the ReLU acted on the Grad-CAM factor in layer_maps; the product is signed
