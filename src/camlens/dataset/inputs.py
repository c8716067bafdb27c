"""What explain-dataset reads: the dataset, its preprocessing, and what each item keeps (path, geometry, size).

The preprocessing (:class:`camlens.preprocess.Preprocess`) is the model's own where it has one
(:func:`camlens.sources.load_model`'s ``info["preprocess"]``), overridden by any flag given, as for
``camlens explain``; it is recorded in the run's configuration, so a resume with another one is refused.

- An image folder is always read through it (photos of any size and mode become the model's input).
- Another dataset's items are tensors its author prepared: they are used as they are, unless a
  preprocessing is given explicitly (a ``Preprocess``, or flags), which is then applied to each.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from camlens.dataset.batches import WithGeometry
from camlens.errors import InputError
from camlens.sources import ImageFolder, load_dataset

__all__ = ["Inputs", "open_inputs", "output_size"]

PreprocessArg = Any  # Preprocess | Mapping[str, Any] | None


@dataclass
class Inputs:
    """The data of one run.

    Attributes:
        ds: the dataset as given or loaded (its ``classes``, if any, name the labels).
        loader_ds: what the ``DataLoader`` reads (``ds``, or ``ds`` through the preprocessing with geometry).
        info: facts for the run's configuration.
        use_mask: nonzero pixels mark the object.
        n_items: items to explain.
        preprocess: the preprocessing applied, or ``None``.
        size_of: item id -> its input size, known before reading (sorts batches by size), or ``None``.
        path_of: item id -> its file's path relative to the data folder, or ``None``.
    """

    ds: Any
    loader_ds: Any
    info: dict[str, Any]
    use_mask: bool
    n_items: int
    preprocess: Any | None
    size_of: Callable[[int], Hashable] | None
    path_of: Callable[[int], str] | None


def _resolve(model_info: dict[str, Any], given: PreprocessArg) -> Any:
    """A given ``Preprocess``; else the model's own overridden by the flags in ``given`` (a mapping or ``None``)."""
    from camlens.preprocess import Preprocess
    from camlens.sources import resolve_preprocess

    if isinstance(given, Preprocess):
        return given
    if given is not None and not isinstance(given, Mapping):
        raise InputError(
            f"preprocess={given!r} is not a camlens.Preprocess or a mapping of its fields "
            "(e.g. {'size': 224, 'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)})"
        )
    return resolve_preprocess(model_info, **dict(given or {}))


def output_size(preprocess: Any, original: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` ``preprocess`` makes of an image of ``original`` ``(h, w)``, from its recorded settings.

    Used only to sort batches by size: a wrong guess costs speed (a batch split into groups), never a result.
    """
    h, w = original
    size, crop = preprocess.size, preprocess.crop
    if crop is not None:
        return (int(crop[0]), int(crop[1]))
    if size is None:
        return (h, w)
    if isinstance(size, int):
        return (size, max(1, int(size * w / h))) if h <= w else (max(1, int(size * h / w)), size)
    return (int(size[0]), int(size[1]))


def _fixed(preprocess: Any) -> bool:
    return preprocess.input_shape() is not None


def open_inputs(
    data: str | Dataset, preprocess: PreprocessArg, model_info: dict[str, Any],
    object_mask_from_pixels: bool | None, limit: int | None,
) -> Inputs:  # fmt: skip
    """Load (or take) the dataset and decide its preprocessing; see this module's docstring.

    ``model_info`` is :func:`camlens.sources.load_model`'s; its ``"preprocess"`` and ``"in_channels"`` are taken
    out of it (the preprocessing applied is recorded apart).
    """
    # both only decide the preprocessing, which is recorded itself (and older runs' configurations stay as they were)
    model_pre = {"preprocess": model_info.pop("preprocess", None), "in_channels": model_info.pop("in_channels", None)}
    if isinstance(data, Dataset):
        ds: Any = data
        info: dict[str, Any] = {"kind": "dataset", "class": type(ds).__name__}
        use_mask = bool(getattr(ds, "object_mask", False))
    else:
        ds, info = load_dataset(str(data))
        use_mask = info.pop("object_mask")
    if object_mask_from_pixels is not None:
        use_mask = bool(object_mask_from_pixels)
    info["len"] = len(ds)
    n_items = len(ds) if limit is None else min(len(ds), limit)
    if isinstance(ds, ImageFolder):
        own = preprocess is None and ds.preprocess is not None
        pre = ds.preprocess if own else _resolve(model_pre, preprocess)
        size_of = None if _fixed(pre) else (lambda i: output_size(pre, ds.original_size(i)))
        return Inputs(ds, WithGeometry(ds, pre), info, use_mask, n_items, pre, size_of, ds.relative_path)
    if preprocess is None:
        return Inputs(ds, ds, info, use_mask, n_items, None, None, None)
    pre = _resolve(model_pre, preprocess)
    return Inputs(ds, WithGeometry(ds, pre), info, use_mask, n_items, pre, None, None)
