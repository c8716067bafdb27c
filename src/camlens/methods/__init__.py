"""CAM methods, one small module each, registered by name in :data:`METHODS`."""

from .base import BaseCAM, CAMContext, CAMResult, combine
from .gradcam import GradCAM
from .registry import METHODS, get_method, register

__all__ = ["METHODS", "BaseCAM", "CAMContext", "CAMResult", "GradCAM", "combine", "get_method", "register"]
