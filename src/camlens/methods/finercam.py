"""Finer-CAM (Zhang et al., CVPR 2025, arXiv:2501.11309): explain a class against its closest rivals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.core.targets import TargetSpec
from camlens.errors import InputError, TargetError
from camlens.methods.base import BaseCAM, CAMContext, CAMResult
from camlens.methods.registry import get_method, register

if TYPE_CHECKING:
    from camlens.methods.base import CAMOptions

__all__ = ["FinerCAM", "inner_gradient_method"]

WEIGHTINGS = ("mean", "softmax")


def inner_gradient_method(owner: str, method: str | type[BaseCAM]) -> type[BaseCAM]:
    """The registered class ``method`` names, if it is a layer method whose maps come from one backward pass."""
    cls = get_method(method) if isinstance(method, str) else method
    ok = (
        isinstance(cls, type)
        and issubclass(cls, BaseCAM)
        and cls.uses_gradients
        and not cls.input_sized
        and cls._capture is BaseCAM._capture
        and cls._maps is BaseCAM._maps
    )
    if not ok:
        raise InputError(
            f"{owner} needs a gradient method that maps a layer from one backward pass, e.g. 'gradcam', "
            f"'gradcam++', 'layercam', 'xgradcam', 'hirescam'; got method={method!r}"
        )
    return cls


@register("finercam")
class FinerCAM(BaseCAM):
    """Finer-CAM: a gradient CAM of the target's score minus its most similar classes' scores.

    For target class ``c`` with logit ``y_c`` and reference classes
    ``d_1..d_R`` (by default the ``R`` classes whose logits are closest to
    ``y_c``, ``c`` excluded), the explained score is the paper's contrast

        S = y_c - gamma * 1/R sum_r y_{d_r}                               (weighting="mean")

    and the inner method (Grad-CAM by default; any one-pass gradient method)
    makes its maps from ``dS/dA``. ``gamma=0`` is the inner method itself.
    ``result.scores`` holds ``S``.

    Conventions: ``weighting="mean"`` and ``gamma=0.6``, ``references=3``
    follow the paper and torchcam's ``FinerCAM``. pytorch-grad-cam's
    ``FinerCAM`` (``FinerWeightedTarget``) weights each pair by the softmax
    probability of the reference, differentiated through,
    ``S = sum_r p_r (y_c - gamma y_{d_r}) / sum_r p_r``: reachable with
    ``weighting="softmax"`` (its ``alpha`` is ``gamma``, default 1 there; it
    also adds 1e-9 to the denominator, left out here).

    Args:
        method: the inner gradient method, a registered name or class.
        gamma: the comparison strength (>= 0).
        references: ``R``, how many closest classes to compare with, or a
            sequence of class indices used for every image and target.
        weighting: ``"mean"`` (paper, torchcam) or ``"softmax"`` (pytorch-grad-cam).
        **options: the inner method's keywords and :class:`BaseCAM`'s.

    Raises:
        TargetError: a callable target (the references are classes), a
            reference equal to the target, or fewer than 2 classes.

    Shapes: logits ``(N, M)``, targets ``(N, K)``, references ``(N, K, R)``, maps ``(N, K, *s)``.
    """

    accepts_eigen_smooth = True
    families = ("cnn", "vit", "swin")  # the references are classes: not boxes or pixels

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec] | None = None,
        *,
        method: str | type[BaseCAM] = "gradcam",
        gamma: float = 0.6,
        references: int | Sequence[int] = 3,
        weighting: str = "mean",
        **options: Any,
    ) -> None:
        inner = inner_gradient_method("FinerCAM", method)
        self.inner = inner(model, layers, **options)
        base: CAMOptions = {k: v for k, v in options.items() if k in _BASE_KEYS}  # type: ignore[assignment]
        super().__init__(model, layers, **base)
        if not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and gamma >= 0):
            raise InputError(f"gamma={gamma!r} must be a number >= 0 (the comparison strength, e.g. 0.6)")
        if weighting not in WEIGHTINGS:
            raise InputError(f"weighting={weighting!r} must be one of {WEIGHTINGS}")
        if isinstance(references, bool) or not isinstance(references, (int, Sequence)):
            raise InputError(f"references={references!r} must be a positive int or a sequence of class indices")
        if (isinstance(references, int) and references < 1) or (isinstance(references, Sequence) and not references):
            raise InputError(f"references={references!r} must be a positive int or a non-empty sequence of classes")
        self.gamma = float(gamma)
        self.references = references if isinstance(references, int) else [int(r) for r in references]
        self.weighting = weighting

    def __repr__(self) -> str:
        return f"FinerCAM({self.inner!r}, gamma={self.gamma})"

    def _forward(self, x: Tensor, target: TargetSpec, top_k: int | None):
        logits, acts, _, classes, multi = super()._forward(x, target, top_k)
        if classes is None:
            raise TargetError("FinerCAM compares class scores: give class indices (or top_k), not a callable target")
        return logits, acts, self.contrast(logits, classes), classes, multi

    def reference_classes(self, logits: Tensor, classes: Tensor) -> Tensor:
        """The reference classes ``(N, K, R)`` of each target in ``classes`` ``(N, K)``."""
        n, m = logits.shape
        if m < 2:
            raise TargetError(f"FinerCAM needs at least 2 classes to compare; the output has {m}")
        k = classes.shape[1]
        if isinstance(self.references, list):
            refs = torch.tensor(self.references, device=logits.device)
            if int(refs.min()) < 0 or int(refs.max()) >= m:
                raise TargetError(f"references={self.references} holds a class outside 0..{m - 1}")
            if bool((classes.unsqueeze(-1) == refs).any()):
                raise TargetError(f"references={self.references} holds an explained target; compare with other classes")
            return refs.expand(n, k, -1)
        y = logits.detach()
        dist = (y.unsqueeze(1) - y.gather(1, classes).unsqueeze(-1)).abs()  # (N, K, M)
        dist = dist.scatter(2, classes.unsqueeze(-1), float("inf"))
        return dist.topk(min(self.references, m - 1), dim=-1, largest=False).indices

    def contrast(self, logits: Tensor, classes: Tensor) -> Tensor:
        """The explained scores ``S`` ``(N, K)`` (differentiable) for targets ``classes`` ``(N, K)``."""
        refs = self.reference_classes(logits, classes)
        y_c = logits.gather(1, classes)  # (N, K)
        y_ref = logits.unsqueeze(1).expand(-1, classes.shape[1], -1).gather(2, refs)  # (N, K, R)
        if self.weighting == "mean":
            return y_c - self.gamma * y_ref.mean(dim=-1)
        p = torch.softmax(logits, dim=-1).unsqueeze(1).expand(-1, classes.shape[1], -1).gather(2, refs)
        return (p * (y_c.unsqueeze(-1) - self.gamma * y_ref)).sum(dim=-1) / p.sum(dim=-1)

    def layer_maps(self, ctx: CAMContext) -> dict[str, Tensor]:
        return self.inner.layer_maps(ctx)

    def _postprocess(self, raw: dict[str, Tensor], ctx: CAMContext) -> CAMResult:
        return self.inner._postprocess(raw, ctx)


#: the keywords of :class:`BaseCAM` (the rest of ``**options`` belongs to the inner method only).
_BASE_KEYS = ("relu", "upsample", "normalize", "fuse", "reshape", "output", "eigen_smooth")
