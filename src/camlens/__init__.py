"""camlens: where a PyTorch model looks. Grad-CAM and its family, metrics and reports."""

from __future__ import annotations

from .capture import capture
from .dataset import explain_dataset, open_results
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
from .methods import METHODS, BaseCAM, CAMResult, GradCAM, get_method

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "BaseCAM",
    "CAMResult",
    "CamlensError",
    "DataError",
    "GradCAM",
    "InputError",
    "LayerNotFoundError",
    "LayerNotUsedError",
    "LayerShapeError",
    "TargetError",
    "__version__",
    "capture",
    "explain_dataset",
    "get_method",
    "list_layers",
    "open_results",
    "resolve_layers",
]
