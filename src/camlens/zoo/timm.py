"""``timm:NAME``: any timm architecture, with its data config and, when pretrained, ImageNet's class names."""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterator
from typing import Any

from torch import nn

from camlens._util.optional import optional_import
from camlens.errors import InputError
from camlens.preprocess import Preprocess
from camlens.zoo.weights import apply_weights, head_classes, offline_error, reachable, read_weights

__all__ = ["load_timm", "preprocess_from_data_config"]


def _timm() -> Any:
    return optional_import("timm", "zoo", "timm: models")


def preprocess_from_data_config(cfg: dict[str, Any], source: str = "timm data config") -> Preprocess:
    """The :class:`Preprocess` of timm's eval transform for a data config.

    ``crop_mode="center"`` (timm's default): the shorter side resized to
    ``floor(size / crop_pct)``, then a centre crop of ``input_size``;
    ``"squash"``: both sides resized to ``floor(side / crop_pct)``, then the
    crop. ``"border"`` (letterboxing) is done as ``"center"``, and noted.
    """
    _, h, w = (int(v) for v in cfg["input_size"])
    pct = float(cfg.get("crop_pct") or 0.875)
    scale = (math.floor(h / pct), math.floor(w / pct))
    mode = cfg.get("crop_mode") or "center"
    size: int | tuple[int, int] = scale if mode == "squash" or scale[0] != scale[1] else scale[0]
    if mode not in ("center", "squash"):
        source += f"; crop_mode {mode!r} done as 'center'"
    interp = str(cfg.get("interpolation") or "bicubic")
    if interp not in ("bilinear", "bicubic", "nearest"):
        source += f"; {interp} interpolation done as bicubic"
        interp = "bicubic"
    chans = int(cfg["input_size"][0])
    return Preprocess(size=size, crop=(h, w), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                      channels=chans if chans in (1, 3) else 3, interpolation=interp, source=source)  # fmt: skip


@contextlib.contextmanager
def _hub_offline(on: bool) -> Iterator[None]:
    """Hugging Face hub requests answered from the cache only, for the ``with`` body."""
    constants = optional_import("huggingface_hub.constants", "zoo", "timm pretrained weights")
    before = getattr(constants, "HF_HUB_OFFLINE", False)
    setattr(constants, "HF_HUB_OFFLINE", on or before)  # noqa: B010  (read by every hub request)
    try:
        yield
    finally:
        setattr(constants, "HF_HUB_OFFLINE", before)  # noqa: B010


def _create(name: str, spec: str, **kw: Any) -> nn.Module:
    try:
        return _timm().create_model(name, **kw)
    except RuntimeError as e:
        if "Unknown model" not in str(e):
            raise
        names = _timm().list_models()
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (timm.list_models() lists them)"
        raise InputError(f"model={spec!r}: timm has no model {name!r}{hint}") from None


def _pretrained(name: str, spec: str) -> nn.Module:
    """timm's pretrained model: from the cache first, then downloaded if the hub answers."""
    hub = optional_import("huggingface_hub.constants", "zoo", "timm pretrained weights")
    cfg = _timm().models.get_pretrained_cfg(name)
    if cfg is not None and not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise InputError(f"model={spec!r}: timm has no pretrained weights for {name!r}; pass --weights none "
                         "for random weights, or --weights FILE")  # fmt: skip
    where = f"Hugging Face cache {hub.HF_HUB_CACHE}"
    try:
        with _hub_offline(True):
            return _create(name, spec, pretrained=True)
    except OSError as cached_miss:  # LocalEntryNotFoundError and friends derive from OSError
        if not reachable(hub.ENDPOINT):
            raise offline_error(spec, f"timm {name}", where, f"{hub.ENDPOINT} cannot be reached") from None
        try:
            return _create(name, spec, pretrained=True)
        except OSError as e:
            raise offline_error(spec, f"timm {name}", where, e) from cached_miss


def _class_names(model: nn.Module) -> list[str] | None:
    data = optional_import("timm.data", "zoo", "timm: models")
    subset = data.infer_imagenet_subset(model)
    if subset is None:
        return None
    return [str(d) for d in data.ImageNetInfo(subset).label_descriptions()]


def load_timm(name: str, weights: str | None, spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """``timm:NAME`` pretrained (``weights=None``), with random weights (``"none"``) or a file's.

    Raises:
        InputError: no such model; no pretrained weights; weights neither
            cached nor downloadable; a weights file that does not fit.
    """
    if weights is None:
        model = _pretrained(name, spec)
        tag = getattr(model, "pretrained_cfg", {}).get("tag")
        classes, used = _class_names(model), f"pretrained timm {name}" + (f".{tag}" if tag and "." not in name else "")
    else:
        model, classes = _create(name, spec, pretrained=False), None
        used = "random (--weights none)" if weights == "none" else f"file {weights}"
        if weights != "none":
            state = read_weights(weights)
            n = head_classes(model, state)
            if n is not None:  # a fine-tuned head: the same architecture with that many classes
                model, used = _create(name, spec, pretrained=False, num_classes=n), f"{used} ({n} classes)"
            apply_weights(model, state, weights, spec)
    cfg = _timm().data.resolve_model_data_config(model)
    pre = preprocess_from_data_config(cfg, f"timm data config of {name}")
    return model, {"kind": "timm", "classes": classes, "preprocess": pre, "weights": used}
