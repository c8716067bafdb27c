"""Average Drop and Increase in Confidence (Chattopadhay et al., WACV 2018, "Grad-CAM++", arXiv:1710.11063)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from camlens.core.targets import OutputSpec, TargetSpec
from camlens.metrics._common import check_images_maps, resolve_classes
from camlens.metrics._runner import ProbeRunner

__all__ = ["ConfidenceResult", "confidence_change", "plan_confidence"]


@dataclass
class ConfidenceResult:
    """Per-image confidence on the full image and on the explanation map.

    Attributes:
        full: ``(N,)`` softmax probability ``Y_c`` of the explained class on ``x``.
        masked: ``(N,)`` the same, ``O_c``, on the explanation map ``x * map``.
        classes: ``(N,)`` explained classes.
    """

    full: Tensor
    masked: Tensor
    classes: Tensor

    @property
    def drop(self) -> Tensor:
        """``(N,)`` ``max(0, Y_c - O_c) / Y_c``; the Average Drop is ``100 * drop.mean()`` (lower is better)."""
        return (self.full - self.masked).clamp_min(0) / self.full

    @property
    def increase(self) -> Tensor:
        """``(N,)`` 1.0 where ``Y_c < O_c``; Increase in Confidence is ``100 * increase.mean()`` (higher is better)."""
        return (self.full < self.masked).to(self.full.dtype)

    @property
    def average_drop(self) -> float:
        """Average Drop in %."""
        return 100.0 * float(self.drop.mean())

    @property
    def increase_in_confidence(self) -> float:
        """Increase in Confidence in %."""
        return 100.0 * float(self.increase.mean())


def plan_confidence(runner: ProbeRunner, x: Tensor, maps: Tensor) -> Callable[[], tuple[Tensor, Tensor]]:
    """Plan the confidence on ``x`` and on the explanation maps ``x * L`` of ``G`` maps on ``runner``.

    Args:
        runner: collects the images.
        x: ``(N, C, H, W)`` images; scored once (shared with any other plan on ``x``).
        maps: ``(G, N, H, W)`` maps in [0, 1].

    Returns:
        A function to call after ``runner.run()``: ``(full, masked)``, ``(N,)`` and ``(G, N)`` probabilities.
    """
    full = runner.shared(x)
    masked = runner.add(lambda rows: x[None, rows] * maps[:, rows, None].to(x.dtype), maps.shape[0], 1)
    return lambda: (runner[full][0, :, 0], runner[masked][..., 0])


def confidence_change(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: TargetSpec = None,
    *,
    output: OutputSpec = None,
    batch_size: int = 512,
) -> ConfidenceResult:
    """Average Drop and Increase in Confidence of maps, on softmax probabilities.

    Chattopadhay et al. 2018, Sec. 5.1: with ``Y_c^i`` the class probability on
    image ``i`` and ``O_c^i`` on its explanation map ``E^i = x^i * L^i``
    (element-wise, the map ``L`` in [0, 1] at the image's resolution),

        Average Drop %          = 100/N * sum_i max(0, Y_c^i - O_c^i) / Y_c^i      lower is better
        Increase in Confidence % = 100/N * sum_i 1[Y_c^i < O_c^i]                 higher is better

    Args:
        model: the classifier (run under ``torch.no_grad``; state unchanged).
        x: ``(N, C, H, W)`` images.
        maps: ``(N, H, W)`` maps in [0, 1] (min-max normalized).
        target: ``None`` (predicted class), an int or N ints.

    Returns:
        A :class:`ConfidenceResult` (per-image ``drop`` and ``increase``, and the two percentages).

    Raises:
        InputError: shapes that do not match, or maps outside [0, 1].
    """
    check_images_maps(x, maps, unit=True)
    classes = resolve_classes(model, x, target, output, batch_size)
    runner = ProbeRunner(model, x, classes, output=output, batch_size=batch_size)
    scores = plan_confidence(runner, x, maps[None])
    runner.run()
    full, masked = scores()
    return ConfidenceResult(full, masked[0], classes)
