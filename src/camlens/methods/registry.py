"""The one registry of methods by name: the CLI, the docs and the tests read it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from camlens.errors import MethodNotFoundError
from camlens.methods.base import BaseCAM

__all__ = ["METHODS", "get_method", "register", "takes_chosen_layer"]

METHODS: dict[str, type[BaseCAM]] = {}

T = TypeVar("T", bound=type[BaseCAM])


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a method available as ``name`` (lower-case, with dashes)."""

    def deco(cls: T) -> T:
        if name in METHODS:
            raise ValueError(f"method name {name!r} is already registered to {METHODS[name].__name__}")
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type[BaseCAM]:
    """The method class registered as ``name`` (case-insensitive; '_' and '-' alike).

    Raises:
        MethodNotFoundError: no method is registered as ``name`` (a ``KeyError``); the message
            names close matches and every registered method.
    """
    key = name.lower().replace("_", "-") if isinstance(name, str) else None
    if key not in METHODS:
        import difflib

        near = difflib.get_close_matches(key, list(METHODS), n=3) if key else []
        hint = f"; did you mean {', '.join(near)}?" if near else "."
        raise MethodNotFoundError(f"no method {name!r}{hint} Registered: {', '.join(sorted(METHODS))}")
    return METHODS[key]


def takes_chosen_layer(cls: type[BaseCAM]) -> bool:
    """Whether ``cls`` explains the layer chosen automatically (:func:`camlens.choose_layer`) when the user names none.

    Every method does but FullGrad, whose ``layers`` select the modules whose biases contribute (``None``: every
    one, the paper's map), and guided backpropagation, which reads no layer: where a command or a run chooses the
    layer for the user, these two get ``layers=None``.
    """
    return bool(getattr(cls, "takes_chosen_layer", True))
