"""Guided Backpropagation (Springenberg et al., ICLR-W 2015) and Guided Grad-CAM (Selvaraju et al. 2017)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from camlens.core.capture import forward_hooks
from camlens.core.layers import LayerSpec
from camlens.core.ops import minmax_normalize, upsample
from camlens.core.targets import OutputSpec, TargetSpec, select_output, target_scores
from camlens.methods.base import BaseCAM, CAMResult
from camlens.methods.gradcam import GradCAM
from camlens.methods.registry import register

__all__ = ["GuidedBackprop", "GuidedGradCAM", "guided_relus", "per_target_grads"]


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


def per_target_grads(scores: Tensor, inputs: Sequence[Tensor]) -> list[Tensor]:
    """Gradients of each of the K target scores ``(N, K)``: one ``(N, K, *shape[1:])`` per input.

    One backward pass per target (images are independent, so ``sum_i s_ik``
    gives every image's gradient at once).
    """
    k = scores.shape[1]
    per = [torch.autograd.grad(scores[:, j].sum(), list(inputs), retain_graph=j < k - 1) for j in range(k)]
    return [torch.stack([p[i] for p in per], dim=1) for i in range(len(inputs))]


def _squeeze(t: Tensor | None, multi: bool) -> Any:
    return t if t is None or multi else t.squeeze(1)


def guided_backprop(
    model: nn.Module, x: Tensor, target: TargetSpec, top_k: int | None, output: OutputSpec
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, bool]:
    """``(gradients (N, K, *x.shape[1:]), logits, scores (N, K), classes, multi)`` under guided ReLUs."""
    with torch.inference_mode(False), torch.enable_grad(), guided_relus(model) as count:
        if count == 0:
            warnings.warn(
                f"{type(model).__name__} has no nn.ReLU module to guide; guided backpropagation "
                "is then the plain input gradient",
                stacklevel=3,
            )
        xg = x.detach().requires_grad_(True)
        logits = select_output(model(xg), output)
        scores, classes, multi = target_scores(logits, target, top_k)
        (grads,) = per_target_grads(scores, [xg])
    return grads, logits.detach(), scores.detach(), classes, multi


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
        output: where the scores are in the model's output.
    """

    uses_gradients = True

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        normalize: bool = True,
        relu: bool = False,
        output: OutputSpec = None,
    ) -> None:
        # The map is the input gradient: no layer is hooked (``layers`` is accepted and unused).
        super().__init__(model, None, relu=relu, upsample=False, normalize=normalize, output=output)

    def __call__(self, x: Tensor, target: TargetSpec = None, *, top_k: int | None = None) -> CAMResult:
        self._check_input(x)
        grads, logits, scores, classes, multi = guided_backprop(self.model, x, target, top_k, self.output)
        raw = torch.relu(grads) if self.relu else grads
        maps = minmax_normalize(raw) if self.normalize else raw
        return CAMResult(
            maps={"input": _squeeze(maps, multi)},
            raw={"input": _squeeze(raw, multi)},
            targets=_squeeze(classes, multi),
            scores=_squeeze(scores, multi),
            logits=logits,
        )


@register("guided-gradcam")
class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map.

        G^c = GB^c * Up(ReLU(sum_k alpha_k^c A^k))       (element-wise, broadcast over input channels)

    ``Up`` is the engine's bilinear upsampling of the raw (unnormalized)
    Grad-CAM map. Maps are ``(N, [K,] C_in, H, W)`` per layer, min-max
    normalized over ``(C_in, H, W)`` if ``normalize=True``; ``raw`` holds the
    unnormalized products. Captum's ``GuidedGradCam`` computes the same with
    ``interpolate_mode="bilinear"`` (its default is nearest).

    Args: as in :class:`BaseCAM` (``upsample`` is always on: the product lives at input size).
    """

    def __call__(self, x: Tensor, target: TargetSpec = None, *, top_k: int | None = None) -> CAMResult:
        cam = GradCAM.__call__(self, x, target, top_k=top_k)  # its raw maps: ReLU'd, not normalized
        multi = cam.scores.ndim == 2
        classes = cam.targets if cam.targets is None or multi else cam.targets[:, None]
        # Explain exactly the classes Grad-CAM explained (or the same callable).
        gb_target: TargetSpec = classes if classes is not None else target
        grads, _, _, _, _ = guided_backprop(self.model, x, gb_target, None, self.output)  # (N, K, C_in, *S)
        raw, maps = {}, {}
        for name, m in cam.raw.items():
            m = m if multi else m[:, None]
            prod = grads * upsample(m, x.shape[2:]).unsqueeze(2)
            raw[name] = _squeeze(prod, multi)
            maps[name] = _squeeze(minmax_normalize(prod) if self.normalize else prod, multi)
        return CAMResult(maps=maps, raw=raw, targets=cam.targets, scores=cam.scores, logits=cam.logits)
