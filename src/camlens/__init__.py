"""camlens: where a PyTorch model looks. Grad-CAM and its family, metrics and reports."""

from __future__ import annotations

from .capture import capture
from .errors import (
    CamlensError,
    DataError,
    InputError,
    LayerNotFoundError,
    LayerNotUsedError,
    LayerShapeError,
    TargetError,
)
from .layers import list_layers, resolve_layers
from .methods import (
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

__version__ = "0.1.0"

__all__ = [
    "CAM",
    "METHODS",
    "AblationCAM",
    "BaseCAM",
    "CAMResult",
    "CamlensError",
    "CounterfactualCAM",
    "DataError",
    "EigenCAM",
    "EigenGradCAM",
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
    "TTASmooth",
    "TargetError",
    "XGradCAM",
    "__version__",
    "capture",
    "get_method",
    "list_layers",
    "resolve_layers",
]
