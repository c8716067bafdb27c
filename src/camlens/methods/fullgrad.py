"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from camlens.core.capture import capture, per_target_grads
from camlens.core.layers import LayerSpec, resolve_layers
from camlens.core.ops import minmax_normalize, upsample
from camlens.core.targets import OutputSpec, TargetSpec, select_output, target_scores
from camlens.errors import LayerShapeError
from camlens.methods.base import BaseCAM, CAMContext
from camlens.methods.registry import register

__all__ = ["FullGrad", "bias_layers", "bias_of"]


def bias_of(module: nn.Module) -> Tensor | None:
    """The per-channel bias a layer adds to its output: a conv's ``bias``, or batch norm's in eval form.

    For batch norm: ``beta - running_mean * gamma / sqrt(running_var + eps)``
    (the running statistics, i.e. the model in eval mode).
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        return None if module.bias is None else module.bias.detach()
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.running_mean is None or module.running_var is None:
            return None
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight.detach()
        beta = module.bias.detach() if module.bias is not None else torch.zeros_like(scale)
        return beta - module.running_mean * scale
    return None


def bias_layers(model: nn.Module) -> list[str]:
    """Names of the convolutions with a bias and the batch norms with running statistics."""
    return [n for n, m in model.named_modules() if n and bias_of(m) is not None]


def _psi(t: Tensor) -> Tensor:
    """FullGrad's post-processing of one (N, K, C, *s) term: |t|, min-max over (C, *s)."""
    return minmax_normalize(t.abs())


@register("fullgrad")
class FullGrad(BaseCAM):
    """FullGrad: the input-gradient term plus every layer's bias-gradient term, each rectified and rescaled.

    For the score ``f`` (pre-softmax), input ``x`` and the layers ``l`` with a
    per-channel bias ``b_l`` and output ``z_l``:

        S = sum_c psi(df/dx * x)_c + sum_l sum_c Up(psi(df/dz_l * b_l))_c
        psi(t) = min-max normalize |t| over (channels, positions), per image

    as in the authors' code (``_postProcess``, the sum over channels after
    psi). Differences: upsampling is bilinear with ``align_corners=False``
    (theirs ``True``), and min-max has no ``eps``. Batch-norm biases use the
    running statistics (eval mode). By default every convolution with a bias
    and every batch norm contributes (``layers=None``); given ``layers``,
    those among them and inside them contribute (``"layer4"``: its convs and
    norms). One forward and one backward per target; the map is
    ``maps["fullgrad"]``.

    Args:
        model: any ``nn.Module``, left as found.
        layers: ``None`` (every bias layer) or modules whose bias layers contribute.
        relu: rectify the summed map (a no-op: every term is non-negative).
        normalize: min-max normalize the map.
        upsample: accepted so that every method takes the post-processing
            keywords; the map is always at the input's size.
        output: where the scores are in the model's output.

    Raises:
        LayerShapeError: ``layers`` hold no convolution with a bias and no batch norm.

    Shapes: maps ``(N, [K,] H, W)`` at input size.
    """

    input_sized = True
    accepts_reshape = False
    #: the automatic layer is not for FullGrad: ``layers=None`` is every bias layer (:func:`takes_chosen_layer`)
    takes_chosen_layer = False

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        relu: bool = True,
        normalize: bool = True,
        upsample: bool = True,
        output: OutputSpec = None,
    ) -> None:
        # The base checks and unwraps the model; FullGrad chooses its own bias layers.
        super().__init__(model, None, relu=relu, upsample=upsample, normalize=normalize, output=output)
        model = self.model
        if layers is None:
            self.layers = {n: m for n, m in model.named_modules() if n and bias_of(m) is not None}
        else:
            self.layers = {}
            for top, module in resolve_layers(model, layers).items():
                for sub, m in module.named_modules():
                    if bias_of(m) is not None:
                        self.layers[f"{top}.{sub}" if sub else top] = m
            if not self.layers:
                raise LayerShapeError(
                    f"layers={layers!r} hold no convolution with a bias and no batch norm; FullGrad sums "
                    f"the bias-gradients of such layers: pass layers=None (all of them) or modules that "
                    f"contain some, e.g. {bias_layers(model)[:5]}"
                )

    def _capture(self, x: Tensor, target: TargetSpec, top_k: int | None) -> CAMContext:
        """One forward with the bias layers hooked, one backward per target to the input and those layers."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            with capture(self.model, self.layers, lazy=False) as cap:
                logits = select_output(self.model(xg), self.output)
            scores, classes, multi = target_scores(logits, target, top_k)
            names = [n for n in self.layers if n in cap.activations]
            grads = per_target_grads(scores, [xg, *(cap.activations[n] for n in names)])
        layer_grads = {n: g for n, g in zip(names, grads[1:], strict=True) if g is not None}
        return CAMContext(
            self.model, x, logits.detach(), scores.detach(), classes, {}, layer_grads, target, multi, grads[0]
        )

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        assert ctx.input_gradients is not None and ctx.gradients is not None
        x = ctx.x
        total = _psi(ctx.input_gradients * x.unsqueeze(1)).sum(dim=2)  # (N, K, *S)
        for name, g in ctx.gradients.items():
            if g.ndim != x.ndim + 1:
                continue  # not (N, K, C, *spatial): e.g. a 1-D batch norm on features
            b = bias_of(self.layers[name])
            assert b is not None
            term = _psi(g * b.view(1, 1, -1, *([1] * (g.ndim - 3))))
            total = total + upsample(term.sum(dim=2), x.shape[2:])
        return {"fullgrad": total}
