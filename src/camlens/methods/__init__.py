"""CAM methods, one small module each, registered by name in :data:`METHODS`."""

from camlens.methods.ablationcam import AblationCAM
from camlens.methods.base import BaseCAM, CAMContext, CAMResult, combine
from camlens.methods.cam import CAM
from camlens.methods.counterfactual import CounterfactualCAM
from camlens.methods.dff import DeepFeatureFactorization, DFFResult
from camlens.methods.eigencam import EigenCAM, EigenGradCAM
from camlens.methods.fem import FEM
from camlens.methods.finercam import FinerCAM
from camlens.methods.fullgrad import FullGrad
from camlens.methods.gradcam import GradCAM
from camlens.methods.gradcam_elementwise import GradCAMElementWise
from camlens.methods.gradcampp import GradCAMPlusPlus
from camlens.methods.guided import GuidedBackprop, GuidedGradCAM
from camlens.methods.hirescam import HiResCAM
from camlens.methods.iscam import ISCAM
from camlens.methods.kpcacam import KPCACAM
from camlens.methods.layercam import LayerCAM
from camlens.methods.legrad import LeGrad
from camlens.methods.protocol import CAPABILITIES, FAMILIES, Explainer
from camlens.methods.random_map import RandomCAM
from camlens.methods.refinecam import RefineCAM
from camlens.methods.registry import METHODS, get_method, register, takes_chosen_layer
from camlens.methods.scorecam import ScoreCAM
from camlens.methods.shapleycam import ShapleyCAM
from camlens.methods.smooth import NoiseSmooth, TTASmooth
from camlens.methods.smoothgradcampp import SmoothGradCAMPlusPlus
from camlens.methods.sscam import SSCAM
from camlens.methods.xgradcam import XGradCAM

__all__ = [
    "CAM",
    "CAPABILITIES",
    "FAMILIES",
    "FEM",
    "ISCAM",
    "KPCACAM",
    "METHODS",
    "SSCAM",
    "AblationCAM",
    "BaseCAM",
    "CAMContext",
    "CAMResult",
    "CounterfactualCAM",
    "DFFResult",
    "DeepFeatureFactorization",
    "EigenCAM",
    "EigenGradCAM",
    "Explainer",
    "FinerCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "LeGrad",
    "NoiseSmooth",
    "RandomCAM",
    "RefineCAM",
    "ScoreCAM",
    "ShapleyCAM",
    "SmoothGradCAMPlusPlus",
    "TTASmooth",
    "XGradCAM",
    "combine",
    "get_method",
    "register",
    "takes_chosen_layer",
]
