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
# beyond the tutorial's CNN (issue 7): token layers, layer choice, wrapped models, targets
from .autolayer import choose_layer, scan_layers
from .targets_extra import DetectionTarget, EmbeddingTarget, SegmentationTarget, detection_output
from .tokens import auto_reshape, channels_last_to_maps, tokens_to_maps
from .wrapped import unwrap_model
from .methods import METHODS, BaseCAM, CAMResult, GradCAM, get_method

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "BaseCAM",
    "CAMResult",
    "CamlensError",
    "DataError",
    "DetectionTarget",
    "EmbeddingTarget",
    "GradCAM",
    "InputError",
    "LayerNotFoundError",
    "LayerNotUsedError",
    "LayerShapeError",
    "SegmentationTarget",
    "TargetError",
    "__version__",
    "auto_reshape",
    "capture",
    "channels_last_to_maps",
    "choose_layer",
    "detection_output",
    "get_method",
    "list_layers",
    "resolve_layers",
    "scan_layers",
    "tokens_to_maps",
    "unwrap_model",
]
