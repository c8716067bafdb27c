"""Hugging Face transformers image classifiers: a ``save_pretrained`` folder, or ``hf:ID`` from the local cache.

The model is returned as transformers builds it; its output's ``logits`` are
what every command scores (:func:`camlens.core.targets.select_output` finds
them), and its layer names are the ones transformers prints.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import nn

from camlens._util.optional import optional_import
from camlens.errors import InputError
from camlens.preprocess import Preprocess
from camlens.zoo.weights import apply_weights, read_weights

__all__ = ["is_hf_folder", "load_hf", "preprocess_from_processor"]

#: PIL resampling codes an image processor records, as camlens interpolations
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}


def _tf() -> Any:
    return optional_import("transformers", "zoo", "Hugging Face models")


def is_hf_folder(path: Path) -> bool:
    """Whether ``path`` looks written by ``save_pretrained`` (a ``config.json``)."""
    return (path / "config.json").is_file()


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _size_and_crop(proc: Any) -> tuple[int | tuple[int, int] | None, tuple[int, int] | None]:
    size = _get(proc, "size") if _get(proc, "do_resize") is not False else None
    crop = _get(proc, "crop_size") if _get(proc, "do_center_crop") else None
    crop_h, crop_w = _get(crop, "height"), _get(crop, "width")
    crop_hw = None if crop_h is None or crop_w is None else (int(crop_h), int(crop_w))
    if size is None:
        return None, crop_hw
    if _get(size, "height") is not None and _get(size, "width") is not None:
        return (int(_get(size, "height")), int(_get(size, "width"))), crop_hw
    short = _get(size, "shortest_edge")
    if short is None:
        return None, crop_hw
    pct = _get(proc, "crop_pct")
    if pct is not None and crop_hw is None:  # ConvNeXt: below 384, shorter side to edge / crop_pct, then crop edge
        if int(short) < 384:
            return int(int(short) / float(pct)), (int(short), int(short))
        return (int(short), int(short)), None
    return int(short), crop_hw


def preprocess_from_processor(proc: Any, channels: int, source: str) -> Preprocess:
    """The :class:`Preprocess` an image processor applies: resize (exact or shorter side), crop, mean, std."""
    size, crop = _size_and_crop(proc)
    resample = _get(proc, "resample")
    resample = getattr(resample, "value", resample)
    interp = _RESAMPLE.get(int(resample), "bilinear") if isinstance(resample, int) else "bilinear"
    norm = _get(proc, "do_normalize") is not False
    mean, std = (_get(proc, "image_mean"), _get(proc, "image_std")) if norm else (None, None)
    if mean is not None and std is not None and len(mean) != channels:
        mean, std = tuple(mean)[:1] * channels, tuple(std)[:1] * channels
    return Preprocess(size=size, crop=crop, mean=None if mean is None else tuple(mean),
                      std=None if std is None else tuple(std), channels=channels, interpolation=interp,
                      source=source)  # fmt: skip


def _preprocess(src: str, config: Any, local_only: bool) -> Preprocess | None:
    channels = int(getattr(config, "num_channels", 3) or 3)
    channels = channels if channels in (1, 3) else 3
    try:
        proc = _tf().AutoImageProcessor.from_pretrained(src, local_files_only=local_only)
    except (OSError, ValueError, KeyError):
        proc = None
    if proc is not None:
        return preprocess_from_processor(proc, channels, f"transformers image processor {type(proc).__name__}")
    side = getattr(config, "image_size", None)
    if isinstance(side, int):
        return Preprocess(size=(side, side), channels=channels,
                          source="transformers model config image_size (no image processor saved: no normalization)")
    return None


def _classes(config: Any) -> list[str] | None:
    labels = getattr(config, "id2label", None) or {}
    names = [str(labels[i]) for i in sorted(labels, key=int)]
    if not names or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return None
    return names


def _config(src: str, spec: str, local_only: bool) -> Any:
    try:
        return _tf().AutoConfig.from_pretrained(src, local_files_only=local_only)
    except (OSError, ValueError) as e:
        if local_only and not Path(src).is_dir():
            hub = optional_import("huggingface_hub.constants", "zoo", "Hugging Face models")
            raise InputError(
                f"model={spec!r}: {src!r} is not in the local Hugging Face cache ({hub.HF_HUB_CACHE}); camlens "
                f"does not download models: fetch it where there is a network (`hf download {src}`) and copy the "
                "cache, or pass a folder written by save_pretrained"
            ) from None
        raise InputError(f"model={spec!r}: transformers cannot read its config ({e})") from None


def _build(src: str, spec: str, config: Any, weights: str | None, local_only: bool) -> nn.Module:
    auto = _tf().AutoModelForImageClassification
    try:
        if weights is None:
            return auto.from_pretrained(src, local_files_only=local_only)
        return auto.from_config(config)
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise InputError(
                f"model={spec!r} is a {type(config).__name__}, not an image classifier transformers' "
                "AutoModelForImageClassification builds; wrap it in a factory 'file.py:build'"
            ) from None
        raise InputError(f"model={spec!r}: transformers cannot build it ({e})") from None
    except OSError as e:
        raise InputError(
            f"model={spec!r}: its weights cannot be read ({e}); pass --weights none for random weights, "
            "or --weights FILE"
        ) from None


def load_hf(src: str, weights: str | None, spec: str, *, local_only: bool) -> tuple[nn.Module, dict[str, Any]]:
    """A transformers image classifier from a ``save_pretrained`` folder or a cached hub id.

    Args:
        src: the folder, or the hub id (``google/vit-base-patch16-224``).
        weights: ``None`` for the saved weights, ``"none"`` for random ones, or a file.
        local_only: never reach the network (``hf:ID``).
    """
    config = _config(src, spec, local_only)
    model = _build(src, spec, config, weights, local_only)
    if weights is None:
        used = f"saved weights in {src}"
    else:
        used = "random (--weights none)" if weights == "none" else f"file {weights}"
        if weights != "none":
            apply_weights(model, read_weights(weights), weights, spec)
    pre = _preprocess(src, config, local_only)
    return model, {"kind": "hf", "classes": _classes(model.config), "preprocess": pre, "weights": used}
