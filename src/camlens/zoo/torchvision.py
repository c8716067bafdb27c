"""``torchvision:NAME``: any builder of ``torchvision.models``, with its weights' classes and transforms."""

from __future__ import annotations

import difflib
import inspect
import os
from typing import Any
from urllib.error import URLError

import torch.hub
from torch import nn

from camlens._util.optional import optional_import
from camlens.errors import InputError
from camlens.preprocess import Preprocess
from camlens.zoo.weights import apply_weights, head_classes, offline_error, read_weights

__all__ = ["load_torchvision", "preprocess_from_transforms"]


def _models() -> Any:
    return optional_import("torchvision.models", "zoo", "torchvision: models")


def preprocess_from_transforms(transforms: Any, source: str) -> Preprocess:
    """The :class:`Preprocess` that a weights' ``transforms()`` describes (resize, crop, mean, std, interpolation).

    Detection weights' transforms only scale to [0, 1] (the model resizes and
    normalizes itself): no resize, no crop, no normalization.
    """
    resize = getattr(transforms, "resize_size", None)
    crop = getattr(transforms, "crop_size", None)
    interp = getattr(transforms, "interpolation", None)
    interp = getattr(interp, "value", interp) or "bilinear"
    if interp not in ("bilinear", "bicubic", "nearest"):
        source += f"; {interp} interpolation done as bicubic"
        interp = "bicubic"
    size: int | tuple[int, int] | None = None
    if resize:
        size = int(resize[0]) if len(resize) == 1 else (int(resize[0]), int(resize[1]))
    crop_hw = None if not crop else (int(crop[0]), int(crop[-1]))
    mean, std = getattr(transforms, "mean", None), getattr(transforms, "std", None)
    return Preprocess(size=size, crop=crop_hw, mean=None if mean is None else tuple(mean),
                      std=None if std is None else tuple(std), channels=3, interpolation=interp,
                      source=source)  # fmt: skip


def _unknown(name: str, spec: str) -> InputError:
    names = _models().list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; it has {len(names)}, e.g. resnet18, vit_b_16"
    return InputError(f"model={spec!r}: torchvision has no model {name!r}{hint} (torchvision.models.list_models())")


def _default_weights(name: str) -> Any:
    try:
        return _models().get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def _pretrained(name: str, w: Any, spec: str) -> nn.Module:
    where = os.path.join(torch.hub.get_dir(), "checkpoints")
    try:
        return _models().get_model(name, weights=w)
    except (URLError, ConnectionError, TimeoutError) as e:
        raise offline_error(spec, f"torchvision {w}", where, getattr(e, "reason", e)) from None
    except OSError as e:
        raise offline_error(spec, f"torchvision {w}", where, e) from None


def _random(name: str, spec: str, **kw: Any) -> nn.Module:
    """The builder with random weights; a detector's or segmenter's backbone not fetched either."""
    models = _models()
    if "weights_backbone" in inspect.signature(models.get_model_builder(name)).parameters:
        kw["weights_backbone"] = None
    try:
        return models.get_model(name, weights=None, **kw)
    except (URLError, OSError) as e:
        raise offline_error(spec, f"torchvision {name}'s parts", os.path.join(torch.hub.get_dir(), "checkpoints"),
                            getattr(e, "reason", e)) from None  # fmt: skip
    except (TypeError, ValueError) as e:
        raise InputError(f"model={spec!r}: torchvision cannot build it with {kw} ({e})") from None


def load_torchvision(name: str, weights: str | None, spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """``torchvision:NAME`` with its default pretrained weights, random ones (``"none"``) or a file's.

    Raises:
        InputError: no such model; no pretrained weights for it; weights not
            cached and not downloadable (offline); a weights file that does not fit.
    """
    models = _models()
    if name not in models.list_models():
        raise _unknown(name, spec)
    w = _default_weights(name)
    if weights is None and w is None:
        raise InputError(f"model={spec!r}: torchvision has no pretrained weights for {name!r}; pass --weights none "
                         "for random weights, or --weights FILE")  # fmt: skip
    if weights is None:
        model = _pretrained(name, w, spec)
        classes, used = list(w.meta.get("categories") or []) or None, f"pretrained {w}"
    else:
        model, classes = _random(name, spec), None
        used = "random (--weights none)" if weights == "none" else f"file {weights}"
        if weights != "none":
            state = read_weights(weights)
            n = head_classes(model, state)
            if n is not None:  # a fine-tuned head: the same builder with that many classes
                model, used = _random(name, spec, num_classes=n), f"{used} ({n} classes)"
            apply_weights(model, state, weights, spec)
    pre = None if w is None else preprocess_from_transforms(w.transforms(), f"torchvision weights {w} transforms")
    return model, {"kind": "torchvision", "classes": classes, "preprocess": pre, "weights": used}
