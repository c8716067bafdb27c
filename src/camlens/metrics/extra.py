"""The opt-in metrics by name: one ``(N,)`` score per image each, for a driver to tabulate.

:data:`EXTRA_METRICS` is the one list of those that call an explainer, :data:`MAP_METRICS` of those
that read only the maps (and an object mask); :data:`OPT_IN_METRICS` is both, in report order (the
CLI's ``--extra-metrics`` choices and the report's columns read it). :func:`score_extra` runs the
chosen explainer-call ones for one method and layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from camlens.core.layers import LayerSpec
from camlens.core.targets import TargetSpec
from camlens.errors import InputError
from camlens.metrics.complexity import effective_complexity, pointing_game_hit, relevance_rank_accuracy, sparseness
from camlens.metrics.randomization import efficient_mprt, random_logit, smooth_mprt
from camlens.metrics.robustness import max_sensitivity

__all__ = ["EXTRA_METRICS", "MAP_METRICS", "OPT_IN_METRICS", "ExtraMetric", "MapMetric", "score_extra"]

#: ``score(model, x, method, layer, target, seed, batch_size)`` -> ``(N,)``.
Score = Callable[[nn.Module, Tensor, str, LayerSpec, TargetSpec, int, int], Tensor]


@dataclass(frozen=True)
class ExtraMetric:
    """One opt-in metric: its name, its label in a report, which direction is better, what it costs, how to score it."""

    name: str
    label: str
    higher_is_better: bool
    explainer_calls: str
    score: Score


def _efficient_mprt(
    model: nn.Module, x: Tensor, method: str, layer: LayerSpec, target: TargetSpec, seed: int, batch_size: int
) -> Tensor:
    return efficient_mprt(model, x, method, layer, target, seed=seed, batch_size=batch_size).rise


def _smooth_mprt(
    model: nn.Module, x: Tensor, method: str, layer: LayerSpec, target: TargetSpec, seed: int, batch_size: int
) -> Tensor:
    return smooth_mprt(model, x, method, layer, target, layerwise=False, seed=seed, batch_size=batch_size).last


def _random_logit(
    model: nn.Module, x: Tensor, method: str, layer: LayerSpec, target: TargetSpec, seed: int, batch_size: int
) -> Tensor:
    return random_logit(model, x, method, layer, target, seed=seed, batch_size=batch_size).similarity


def _max_sensitivity(
    model: nn.Module, x: Tensor, method: str, layer: LayerSpec, target: TargetSpec, seed: int, batch_size: int
) -> Tensor:
    return max_sensitivity(model, x, method, layer, target, seed=seed, batch_size=batch_size)


#: the opt-in metrics by name, in the order a report shows them.
EXTRA_METRICS: dict[str, ExtraMetric] = {
    m.name: m
    for m in (
        ExtraMetric("efficient-mprt", "eMPRT rise", True, "2 per image", _efficient_mprt),
        ExtraMetric("smooth-mprt", "sMPRT Spearman", False, "100 per image (50 noisy inputs x 2 models)", _smooth_mprt),
        ExtraMetric("random-logit", "Random-logit SSIM", False, "2 per image", _random_logit),
        ExtraMetric("max-sensitivity", "Max-sensitivity", False, "201 per image", _max_sensitivity),
    )
}


@dataclass(frozen=True)
class MapMetric:
    """One opt-in metric of the maps alone: name, report label, direction, whether it needs an object mask.

    ``score(maps, mask)``: ``(N, H, W)`` maps and ``(N, H, W)`` bool masks (``None`` when
    ``needs_object`` is False) -> ``(N,)`` floats.
    """

    name: str
    label: str
    higher_is_better: bool
    needs_object: bool
    score: Callable[[Tensor, Tensor | None], Tensor]


def _with_mask(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor | None], Tensor]:
    def score(maps: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            raise InputError("this metric needs object masks; pass objects= (or --objects)")
        return fn(maps, mask)

    return score


#: the opt-in metrics of the maps alone (:mod:`camlens.metrics.complexity`), in report order.
MAP_METRICS: dict[str, MapMetric] = {
    m.name: m
    for m in (
        MapMetric("sparseness", "Sparseness (Gini)", True, False, lambda maps, _: sparseness(maps)),
        MapMetric("effective-complexity", "Eff. complexity (px)", False, False,
                  lambda maps, _: effective_complexity(maps).double()),
        MapMetric("pointing-game-hit", "Pointing hit rate", True, True, _with_mask(pointing_game_hit)),
        MapMetric("relevance-rank-accuracy", "Relevance rank acc.", True, True, _with_mask(relevance_rank_accuracy)),
    )
}  # fmt: skip

#: every opt-in metric's name, in report order: the map-only ones, then those that call an explainer.
OPT_IN_METRICS: tuple[str, ...] = (*MAP_METRICS, *EXTRA_METRICS)


def score_extra(
    model: nn.Module,
    x: Tensor,
    method: str,
    layer: LayerSpec,
    names: Sequence[str] | None = None,
    *,
    target: TargetSpec = None,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Score ``method`` at ``layer`` on images ``x`` with the named :data:`EXTRA_METRICS` (default: all).

    Each metric runs with its paper's defaults (:func:`smooth_mprt` on the fully randomized model
    only, ``layerwise=False``); the explained class is ``target`` or the model's prediction.

    Returns:
        name -> ``(N,)`` scores, in the order of ``names``.

    Example:
        >>> import torch
        >>> from camlens.metrics.extra import score_extra
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        >>> out = score_extra(model, torch.rand(2, 3, 8, 8), "gradcam", "0", ["efficient-mprt", "random-logit"])
        >>> {k: tuple(v.shape) for k, v in out.items()}
        {'efficient-mprt': (2,), 'random-logit': (2,)}
    """
    chosen = list(EXTRA_METRICS) if names is None else list(names)
    unknown = [n for n in chosen if n not in EXTRA_METRICS]
    if unknown:
        raise InputError(f"no extra metric {unknown[0]!r}; choose from {', '.join(EXTRA_METRICS)}")
    return {n: EXTRA_METRICS[n].score(model, x, method, layer, target, seed, batch_size) for n in chosen}
