"""Small models for the demo, in a registry by name."""

from .convnet import ConvNet
from .registry import MODELS, build_model, register_model

__all__ = ["MODELS", "ConvNet", "build_model", "register_model"]
