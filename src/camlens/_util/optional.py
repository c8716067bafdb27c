"""Optional dependencies, imported when first needed, with the command that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["optional_import"]


def optional_import(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise an ImportError that says how to install it.

    Args:
        module: the module to import, e.g. ``"safetensors.torch"``.
        extra: the camlens extra that brings it, e.g. ``"cli"``.
        purpose: what needs it, for the message, e.g. ``"checkpoints"``.

    Raises:
        ImportError: ``"checkpoints need safetensors: pip install 'camlens[cli]'"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.partition(".")[0]
        package = {"PIL": "pillow"}.get(package, package)
        raise ImportError(f"{purpose} need {package}: pip install 'camlens[{extra}]'") from None
