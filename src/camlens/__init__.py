"""camlens: where a PyTorch model looks. Grad-CAM and its family, metrics and reports."""

from __future__ import annotations

from camlens.core.autolayer import choose_layer, scan_layers
from camlens.core.capture import capture
from camlens.dataset import explain_dataset, open_results
from camlens.errors import (
    CamlensError,
    DataError,
    InputError,
    LayerNotFoundError,
    LayerNotUsedError,
    LayerShapeError,
    TargetError,
)
from camlens.core.layers import list_layers, resolve_layers
from camlens.methods import (
    CAM,
    METHODS,
    AblationCAM,
    BaseCAM,
    CAMResult,
    CounterfactualCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    NoiseSmooth,
    ScoreCAM,
    TTASmooth,
    XGradCAM,
    get_method,
)
from camlens.core.targets_extra import DetectionTarget, EmbeddingTarget, SegmentationTarget, detection_output
from camlens.core.tokens import auto_reshape, channels_last_to_maps, tokens_to_maps
from camlens.core.wrapped import unwrap_model

from camlens._util.version import VERSION as __version__

__all__ = [
    "CAM",
    "METHODS",
    "AblationCAM",
    "BaseCAM",
    "CAMResult",
    "CamlensError",
    "CounterfactualCAM",
    "DataError",
    "DetectionTarget",
    "EigenCAM",
    "EigenGradCAM",
    "EmbeddingTarget",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "InputError",
    "LayerCAM",
    "LayerNotFoundError",
    "LayerNotUsedError",
    "LayerShapeError",
    "NoiseSmooth",
    "ScoreCAM",
    "SegmentationTarget",
    "TTASmooth",
    "TargetError",
    "XGradCAM",
    "__version__",
    "auto_reshape",
    "capture",
    "channels_last_to_maps",
    "choose_layer",
    "detection_output",
    "explain_dataset",
    "get_method",
    "list_layers",
    "open_results",
    "resolve_layers",
    "scan_layers",
    "tokens_to_maps",
    "unwrap_model",
]
