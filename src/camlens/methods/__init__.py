"""CAM methods, one small module each, registered by name in :data:`METHODS`."""

from .ablationcam import AblationCAM
from .base import BaseCAM, CAMContext, CAMResult, combine
from .cam import CAM
from .counterfactual import CounterfactualCAM
from .eigencam import EigenCAM, EigenGradCAM
from .fullgrad import FullGrad
from .gradcam import GradCAM
from .gradcam_elementwise import GradCAMElementWise
from .gradcampp import GradCAMPlusPlus
from .guided import GuidedBackprop, GuidedGradCAM
from .hirescam import HiResCAM
from .layercam import LayerCAM
from .registry import METHODS, get_method, register
from .scorecam import ScoreCAM
from .smooth import NoiseSmooth, TTASmooth
from .xgradcam import XGradCAM

__all__ = [
    "CAM",
    "METHODS",
    "AblationCAM",
    "BaseCAM",
    "CAMContext",
    "CAMResult",
    "CounterfactualCAM",
    "EigenCAM",
    "EigenGradCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "NoiseSmooth",
    "ScoreCAM",
    "TTASmooth",
    "XGradCAM",
    "combine",
    "get_method",
    "register",
]
