"""Faithfulness and sanity metrics of maps: batched, in torch, on the input's device.

Every metric takes the model, a batch ``x`` ``(N, C, H, W)`` and maps
``(N, H, W)``, and returns per-image values, so the driver
(:mod:`camlens.evaluation.run`) can bootstrap intervals over images.

Each perturbation metric builds its images in one plan function, for many maps
at once (``plan_curves``, ``plan_road``, ``plan_confidence``), run by one
forward-pass driver (:class:`camlens.metrics._runner.ProbeRunner`): the
single-metric functions (:func:`deletion`, :func:`road`, ...) plan one map,
:func:`camlens.metrics.batched.faithfulness` plans every metric of every map.
"""

from camlens.metrics._common import saliency_rank
from camlens.metrics.baselines import BASELINES, edge_map, intensity_map, random_map
from camlens.metrics.complexity import effective_complexity, pointing_game_hit, relevance_rank_accuracy, sparseness
from camlens.metrics.confidence import ConfidenceResult, confidence_change
from camlens.metrics.extra import EXTRA_METRICS, MAP_METRICS, OPT_IN_METRICS, ExtraMetric, MapMetric, score_extra
from camlens.metrics.perturbation import CurveResult, blur, deletion, insertion, make_baseline, perturbation_curve
from camlens.metrics.pointing import boxes_to_mask, energy_pointing_game, object_mask
from camlens.metrics.randomization import (
    EfficientMPRTResult,
    RandomLogitResult,
    SmoothMPRTResult,
    discrete_entropy,
    efficient_mprt,
    flat_ssim,
    random_logit,
    smooth_mprt,
)
from camlens.metrics.road import ROAD_PERCENTAGES, ImputationError, RoadResult, noisy_linear_impute, road
from camlens.metrics.robustness import max_sensitivity
from camlens.metrics.sanity import (
    SanityResult,
    layers_from_top,
    randomized_models,
    rank_average,
    sanity_check,
    spearman,
    ssim,
)

__all__ = [
    "BASELINES",
    "EXTRA_METRICS",
    "MAP_METRICS",
    "OPT_IN_METRICS",
    "ROAD_PERCENTAGES",
    "ConfidenceResult",
    "CurveResult",
    "EfficientMPRTResult",
    "ExtraMetric",
    "ImputationError",
    "MapMetric",
    "RandomLogitResult",
    "RoadResult",
    "SanityResult",
    "SmoothMPRTResult",
    "blur",
    "boxes_to_mask",
    "confidence_change",
    "deletion",
    "discrete_entropy",
    "edge_map",
    "effective_complexity",
    "efficient_mprt",
    "energy_pointing_game",
    "flat_ssim",
    "insertion",
    "intensity_map",
    "layers_from_top",
    "make_baseline",
    "max_sensitivity",
    "noisy_linear_impute",
    "object_mask",
    "perturbation_curve",
    "pointing_game_hit",
    "random_logit",
    "random_map",
    "randomized_models",
    "rank_average",
    "relevance_rank_accuracy",
    "road",
    "saliency_rank",
    "sanity_check",
    "score_extra",
    "smooth_mprt",
    "sparseness",
    "spearman",
    "ssim",
]
