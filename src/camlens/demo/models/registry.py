"""Models by name, so a checkpoint can record its architecture and rebuild it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["MODELS", "build_model", "register_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a model factory (a class or function) buildable by ``name``."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        MODELS[name] = factory
        return factory

    return deco


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """A new model of the architecture registered as ``name``."""
    if name not in MODELS:
        raise KeyError(f"no model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
