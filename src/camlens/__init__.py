"""camlens: where a PyTorch model looks. Grad-CAM and its family, metrics and reports.

The top level holds what a user needs: the methods and their registry, the
result type, the targets, layer listing and the automatic layer choice,
:func:`evaluate`, dataset-scale explanation, the overlay helper and the errors.
Plumbing stays importable from its module (``camlens.core.capture.capture``,
``camlens.core.layers.resolve_layers``, ``camlens.core.autolayer.scan_layers``,
``camlens.core.tokens.tokens_to_maps``, ``camlens.core.wrapped.unwrap_model``, ...).
"""

from __future__ import annotations

from camlens._util.allocator import keep_freed_memory
from camlens._util.version import VERSION as __version__
from camlens.audit import audit
from camlens.core.autolayer import choose_layer
from camlens.core.layers import list_layers
from camlens.core.targets_extra import DetectionTarget, EmbeddingTarget, SegmentationTarget, detection_output
from camlens.core.tokens import channels_last_to_maps
from camlens.dataset import explain_dataset, open_results
from camlens.errors import (
    CamlensError,
    ChannelError,
    DataError,
    InputError,
    LayerNotFoundError,
    LayerNotUsedError,
    LayerShapeError,
    MethodNotFoundError,
    TargetError,
)
from camlens.evaluation import Evaluation, evaluate, recommend
from camlens.methods import (
    CAM,
    FEM,
    ISCAM,
    KPCACAM,
    METHODS,
    SSCAM,
    AblationCAM,
    BaseCAM,
    CAMResult,
    CounterfactualCAM,
    DeepFeatureFactorization,
    DFFResult,
    EigenCAM,
    EigenGradCAM,
    Explainer,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    LeGrad,
    NoiseSmooth,
    RandomCAM,
    RefineCAM,
    ScoreCAM,
    ShapleyCAM,
    SmoothGradCAMPlusPlus,
    TTASmooth,
    XGradCAM,
    get_method,
)
from camlens.preprocess import Geometry, Preprocess
from camlens.sources import load_model
from camlens.viz.figures import overlay

__all__ = [
    "CAM",
    "FEM",
    "ISCAM",
    "KPCACAM",
    "METHODS",
    "SSCAM",
    "AblationCAM",
    "BaseCAM",
    "CAMResult",
    "CamlensError",
    "ChannelError",
    "CounterfactualCAM",
    "DFFResult",
    "DataError",
    "DeepFeatureFactorization",
    "DetectionTarget",
    "EigenCAM",
    "EigenGradCAM",
    "EmbeddingTarget",
    "Evaluation",
    "Explainer",
    "FinerCAM",
    "FullGrad",
    "Geometry",
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
    "LeGrad",
    "MethodNotFoundError",
    "NoiseSmooth",
    "Preprocess",
    "RandomCAM",
    "RefineCAM",
    "ScoreCAM",
    "SegmentationTarget",
    "ShapleyCAM",
    "SmoothGradCAMPlusPlus",
    "TTASmooth",
    "TargetError",
    "XGradCAM",
    "__version__",
    "audit",
    "channels_last_to_maps",
    "choose_layer",
    "detection_output",
    "evaluate",
    "explain_dataset",
    "get_method",
    "keep_freed_memory",
    "list_layers",
    "load_model",
    "open_results",
    "overlay",
    "recommend",
]
