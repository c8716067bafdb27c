"""Small models for the demo, in a registry by name."""

from camlens.demo.models.convnet import ConvNet
from camlens.demo.models.registry import MODELS, build_model, register_model

__all__ = ["MODELS", "ConvNet", "build_model", "register_model"]
