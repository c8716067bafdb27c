"""``Results.table()``: one row per explained item, scalar columns only, as a pandas ``DataFrame``.

Columns, in order:

- ``id``, ``path`` (relative to the data folder; ``None`` for data without files), ``label`` (-1: none),
  ``label_name`` (the data's class names), ``prediction``, ``prediction_name`` (the model's own class names where it
  has them, else the data's), ``correct`` (``None`` without a label);
- ``target`` (the explained class; the first of top-K) and the softmax probabilities ``p_target``,
  ``p_prediction`` and ``p_label`` (NaN without a label);
- ``height`` and ``width`` of the photo (when the data had geometry);
- per map ``"<method>/<layer>"`` of the first target, on the values as stored:
  ``"<key> max"`` and ``"<key> mean"`` (raw, before any normalization),
  ``"<key> peak_y"`` and ``"<key> peak_x"`` (the peak's centre as a fraction of the map's height and width,
  0 = top/left, 1 = bottom/right; NaN for an all-zero map) and, when the object is known,
  ``"<key> inside"`` (the share of the map's mass on the object).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import Tensor

__all__ = ["class_names", "results_table"]


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError:
        raise ImportError("Results.table() needs pandas: pip install pandas") from None


def class_names(manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(names of the labels, names of the predictions)``: the data's class names (an image folder's
    subfolders) and the model's own where it has them (a checkpoint's, pretrained ImageNet's), else the data's."""

    def names(key: str) -> list[str]:
        v = manifest.get(key)
        return [str(n) for n in v] if isinstance(v, list) else []

    return names("classes"), names("model_classes") or names("classes")


def _first(t: Tensor) -> Tensor:
    return t[:, 0] if t.ndim == 2 else t


def _map_columns(shard: dict[str, Tensor], key: str) -> dict[str, list[float]]:
    """Max, mean and peak position of each item's first-target map at its own size."""
    m = shard[f"maps/{key}"].float()
    m = m[:, 0] if m.ndim == 4 else m
    hw = shard.get(f"maps_hw/{key}")
    n, H, W = m.shape
    if hw is None:
        hw = torch.tensor([[H, W]], dtype=torch.int32).expand(n, 2)
    rows = torch.arange(H)[None, :, None] < hw[:, 0, None, None]
    cols = torch.arange(W)[None, None, :] < hw[:, 1, None, None]
    inside = rows & cols  # padding (mixed sizes) is left out
    big = torch.where(inside, m, torch.full_like(m, -torch.inf))
    peak = big.reshape(n, -1).argmax(dim=1)
    h, w = hw[:, 0].double(), hw[:, 1].double()
    flat_max = big.reshape(n, -1).amax(dim=1)
    zero = flat_max <= 0
    nan = torch.full((n,), float("nan"), dtype=torch.float64)
    peak_y = torch.where(zero, nan, ((peak // W).double() + 0.5) / h)
    peak_x = torch.where(zero, nan, ((peak % W).double() + 0.5) / w)
    mean = torch.where(inside, m, 0.0).reshape(n, -1).double().sum(dim=1) / (h * w)
    cols_out = {f"{key} max": flat_max.double(), f"{key} mean": mean, f"{key} peak_y": peak_y,
                f"{key} peak_x": peak_x}  # fmt: skip
    if f"inside/{key}" in shard:
        cols_out[f"{key} inside"] = _first(shard[f"inside/{key}"]).double()
    return {name: v.tolist() for name, v in cols_out.items()}


def _probabilities(shard: dict[str, Tensor]) -> dict[str, list[float]]:
    """``p_prediction`` and ``p_label`` as stored (results written before they were stored: NaN)."""
    n = shard["ids"].shape[0]
    nan = torch.full((n,), float("nan"), dtype=torch.float64)
    return {
        "p_prediction": shard.get("prob_pred", nan).double().tolist(),
        "p_label": shard.get("prob_label", nan).double().tolist(),
    }


def results_table(results: Any) -> Any:
    """One row per item of ``results`` (a :class:`~camlens.dataset.reader.Results`); columns: this module's docstring.

    Reads every shard once, in order.

    Raises:
        ImportError: pandas is not installed.
        DataError: a missing or corrupt shard.
    """
    pd = _pandas()
    label_names, pred_names = class_names(results.manifest)
    name = lambda names, c: names[c] if 0 <= c < len(names) else None  # noqa: E731
    columns: dict[str, list[Any]] = {}
    for k in range(int(results.manifest["n_shards"])):
        shard = results.shard(k)
        n = shard["ids"].shape[0]
        labels, preds = shard["labels"].tolist(), shard["preds"].tolist()
        part: dict[str, list[Any]] = {
            "id": shard["ids"].tolist(),
            "path": results.paths(k) or [None] * n,
            "label": labels,
            "label_name": [name(label_names, c) for c in labels],
            "prediction": preds,
            "prediction_name": [name(pred_names, c) for c in preds],
            "correct": [None if c < 0 else c == p for c, p in zip(labels, preds, strict=True)],
            "target": _first(shard["targets"]).tolist(),
            "p_target": _first(shard["probs"]).double().tolist(),
            **_probabilities(shard),
        }
        if "geometry" in shard:
            part["height"], part["width"] = shard["geometry"][:, 0].tolist(), shard["geometry"][:, 1].tolist()
        for key in results.map_keys:
            part.update(_map_columns(shard, key))
        for col, values in part.items():
            columns.setdefault(col, []).extend(values)
    return pd.DataFrame(columns)
