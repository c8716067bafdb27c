"""Evaluate a model spec on a dataset spec, with optional object masks or boxes; :func:`recommend` in one call.

Object regions for the pointing game (all optional) come from:

- a **mask folder**: one image per evaluated item, named by the item's index
  in the dataset (``17.png``, ``00017.png``, any image suffix Pillow reads);
  nonzero pixels are the object; resized (nearest) to the model's input;
- a **boxes file**, in pixels of the model's input, ``x1``/``y1`` exclusive:
  JSON ``{"17": [[x0, y0, x1, y1], ...], ...}`` (item index -> boxes), or CSV
  with the header ``index,x0,y0,x1,y1`` and one row per box;
- ``"nonzero"``: the nonzero pixels (the tutorial's Fashion-MNIST, black background);
- nothing: the pointing game is left out.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from camlens.errors import DataError, InputError

if TYPE_CHECKING:
    from camlens.evaluation.result import Evaluation
    from camlens.evaluation.verdict import Verdict

__all__ = ["draw", "evaluate_spec", "load_boxes", "load_mask_folder", "objects_for", "recommend"]

_MAX_BOXES_BYTES = 64 * 2**20


#: items :func:`evaluate_spec` draws when not told how many (all of a smaller dataset).
DEFAULT_N_IMAGES = 500


def draw(dataset: Any, n_images: int | None, seed: int) -> tuple[Tensor, Tensor | None, list[int]]:
    """``n_images`` items drawn without replacement by a permutation seeded with ``seed``: images, labels, indices.

    ``n_images=None`` draws :data:`DEFAULT_N_IMAGES`, or every item of a smaller dataset.
    """
    from camlens.sources import collate, split_item

    size = len(dataset)
    if n_images is None:
        n_images = min(DEFAULT_N_IMAGES, size)
    if not isinstance(n_images, int) or not 1 <= n_images <= size:
        raise InputError(f"n_images={n_images!r} must be an int from 1 to {size} (the dataset's size)")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(size, generator=gen)[:n_images].tolist()
    getitems = getattr(dataset, "__getitems__", None)
    batch = getitems(idx) if getitems is not None else [dataset[i] for i in idx]
    images, labels = split_item(collate(batch))
    return images, labels, idx


def load_boxes(path: str | Path, indices: list[int], size: tuple[int, int]) -> Tensor:
    """``(N, H, W)`` bool masks of the boxes of the items ``indices`` from a JSON or CSV boxes file (module doc).

    Raises:
        DataError: a file that is not such a JSON or CSV, or a box that is not ``x0 < x1, y0 < y1``.
        InputError: an item without a box.
    """
    from camlens.metrics import boxes_to_mask

    path = Path(path)
    if not path.is_file() or path.stat().st_size > _MAX_BOXES_BYTES:
        raise DataError(f"boxes file {str(path)!r} is not a regular file of at most 64 MiB")
    text = path.read_text(encoding="utf-8")
    table: dict[str, list[list[float]]] = {}
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
            table = {str(k): [[float(c) for c in b] for b in v] for k, v in raw.items()}
        else:
            for row in csv.DictReader(io.StringIO(text)):
                table.setdefault(str(int(row["index"])), []).append([float(row[k]) for k in ("x0", "y0", "x1", "y1")])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"boxes file {str(path)!r} is not JSON {{index: [[x0, y0, x1, y1], ...]}} or CSV "
                        f"index,x0,y0,x1,y1: {err}") from None  # fmt: skip
    missing = [i for i in indices if str(i) not in table]
    if missing:
        raise InputError(f"boxes file {str(path)!r} has no box for items {missing[:5]}; give every evaluated item one")
    try:
        return boxes_to_mask([table[str(i)] for i in indices], size)
    except InputError as err:
        raise DataError(f"boxes file {str(path)!r}: {err}") from None


def load_mask_folder(folder: str | Path, indices: list[int], size: tuple[int, int]) -> Tensor:
    """``(N, H, W)`` bool masks from a folder of one image per item, named by the item's index (module doc)."""
    from camlens.viz.images import open_image

    folder = Path(folder)
    by_index: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.is_symlink() and p.stem.isdigit():
            by_index.setdefault(int(p.stem), p)
    missing = [i for i in indices if i not in by_index]
    if missing:
        raise InputError(f"mask folder {str(folder)!r} has no mask for items {missing[:5]} (files are named by "
                         "the item's index, e.g. 17.png)")  # fmt: skip
    out = []
    for i in indices:
        img = open_image(by_index[i], "L").resize((size[1], size[0]), resample=0)
        out.append(torch.tensor(list(img.getdata()), dtype=torch.uint8).view(size[0], size[1]) > 0)
    return torch.stack(out)


def objects_for(
    spec: str | None, zero_background: bool, indices: list[int], size: tuple[int, int]
) -> Tensor | str | None:
    """The ``objects`` argument of :func:`camlens.evaluation.evaluate` for the ``--objects`` spec.

    ``None`` (not given): the nonzero pixels when the dataset says they mark the object
    (``zero_background``: its ``info["object_mask"]``, true for the tutorial's Fashion-MNIST),
    else no pointing game; ``"none"``, ``"nonzero"``, a mask folder, or a boxes file (``.json`` / ``.csv``).
    """
    if spec is None:
        return "nonzero" if zero_background else None
    if spec in ("none", "nonzero"):
        return None if spec == "none" else "nonzero"
    path = Path(spec)
    if path.is_dir():
        return load_mask_folder(path, indices, size)
    if path.suffix.lower() in (".json", ".csv"):
        return load_boxes(path, indices, size)
    raise InputError(f"--objects {spec!r} must be 'none', 'nonzero', a folder of masks or a .json/.csv boxes file")


def evaluate_spec(
    model: str | nn.Module, data: str = "fashion-mnist:test", *, n_images: int | None = None, device: str = "auto",
    objects: str | None = None, weights: str | None = None, preprocess: Any = None, **kwargs: Any,
) -> Evaluation:
    """:func:`camlens.evaluation.evaluate` a model spec on ``n_images`` items of a dataset spec.

    The items are drawn without replacement by a permutation seeded with the
    first seed (``seeds[0]``), so a run is reproducible.

    Args:
        model: a model spec (:func:`camlens.sources.load_model`) or a module in eval mode.
        data: a dataset spec (:func:`camlens.sources.load_dataset`).
        n_images: how many items (at most the dataset's size); default :data:`DEFAULT_N_IMAGES`, or
            every item of a smaller dataset.
        device: ``auto``, ``cpu``, ``cuda``, ... (:func:`camlens._util.device.select_device`).
        objects: see :func:`objects_for`.
        weights: ``--weights`` of :func:`camlens.sources.load_model` (``"none"``, a file, or the model's own).
        preprocess: for a folder of images: a :class:`camlens.preprocess.Preprocess`, or a mapping of
            :func:`camlens.sources.resolve_preprocess` settings over the model's own (default: the model's own).
        **kwargs: passed to :func:`camlens.evaluation.evaluate` (methods, layers, seeds, extra_metrics, ...).

    Returns:
        The :class:`camlens.evaluation.Evaluation`; its ``config`` also records
        the model and data specs, the architecture when known, and the accuracy
        on the images when the dataset has labels.
    """
    from camlens._util.device import select_device
    from camlens.core.targets import select_output
    from camlens.evaluation.run import evaluate
    from camlens.sources import load_dataset, load_model

    dev = select_device(device)
    if isinstance(model, nn.Module):
        net, info, name = model, {"kind": "module"}, type(model).__name__
    else:
        (net, info), name = load_model(model, dev, weights=weights), model
    dataset, data_info = load_dataset(data)
    pre = _folder_preprocess(dataset, info, preprocess)
    seeds = list(kwargs.get("seeds", (0,)))
    images, labels, idx = draw(dataset, n_images, int(seeds[0]) if seeds else 0)
    x = images.to(dev)
    found = objects_for(objects, bool(data_info.get("object_mask")), idx, (x.shape[2], x.shape[3]))
    result = evaluate(net, x, objects=found, **kwargs)
    accuracy = None
    truth = None if labels is None else labels.cpu()
    if truth is not None and bool((truth >= 0).any()):  # -1: an item without a label (a flat photo folder)
        with torch.no_grad():
            pred = torch.cat([select_output(net(c)).argmax(1).cpu() for c in x.split(kwargs.get("batch_size", 64))])
        accuracy = float((pred == truth)[truth >= 0].double().mean())
    result.config.update({
        "model": name, "checkpoint": name if info.get("kind") == "checkpoint" else None,
        "architecture": info.get("architecture"), "data": data, "accuracy_on_images": accuracy,
        **({"preprocess": pre.describe()} if pre is not None else {}),
    })  # fmt: skip
    return result


def _folder_preprocess(dataset: Any, info: dict[str, Any], preprocess: Any) -> Any:
    """A folder of images is read through the model's preprocessing (overridden by ``preprocess``), as every
    command reads one; other datasets' tensors are used as they are. Returns the preprocessing used, or None."""
    from camlens.preprocess import Preprocess
    from camlens.sources import ImageFolder, resolve_preprocess

    if not isinstance(dataset, ImageFolder):
        return None
    if isinstance(preprocess, Preprocess):
        pre = preprocess
    else:
        settings = dict(preprocess or {})
        fast = bool(settings.pop("fast_decode", False))
        pre = resolve_preprocess(info, **settings)
        pre = pre.override(fast_decode=True) if fast else pre
    dataset.preprocess = pre
    return pre


def recommend(
    model: str | nn.Module, data: str | Tensor, *, n_images: int = 100, sanity: bool = False, **kwargs: Any
) -> Verdict:
    """Which method to use for ``model``: evaluate the methods against the model-free baselines, return the verdict.

    Args:
        model: a module in eval mode, or a model spec (:func:`camlens.sources.load_model`).
        data: ``(N, C, H, W)`` images on the model's device, or a dataset spec (``n_images`` items are drawn).
        n_images: items drawn from a dataset spec.
        sanity: also run the randomization checks (they do not change the verdict; off by default).
        **kwargs: passed to :func:`camlens.evaluation.evaluate`: ``methods`` (default: all; those that
            cannot apply are skipped), ``layers``, ``seeds``, ``baselines``, ``objects``, ``progress``, ...

    Returns:
        A :class:`~camlens.evaluation.verdict.Verdict`: ``recommended`` is ``(method, layer)`` or
        ``None``, ``ranking`` every method x layer and baseline, ``text()`` the verdict in words.

    Example:
        >>> import torch, camlens
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 8 * 8, 3)).eval()
        >>> v = camlens.recommend(net, torch.rand(6, 1, 8, 8), methods=["gradcam", "hirescam"], steps=4, n_boot=200)
        >>> sorted(r.entry for r in v.ranking if r.is_baseline)
        ['edge', 'intensity', 'random']
        >>> v.recommended is None or v.recommended[0] in ("gradcam", "hirescam")
        True
    """
    from camlens.evaluation.run import evaluate

    if isinstance(data, Tensor):
        if isinstance(model, str):
            raise InputError("recommend(model, data): with a tensor of images, pass the model itself (nn.Module)")
        ev = evaluate(model, data, sanity=sanity, **kwargs)
        ev.config.setdefault("data", f"{data.shape[0]} images of shape {tuple(data.shape[1:])}")
    else:
        ev = evaluate_spec(model, data, n_images=n_images, sanity=sanity, **kwargs)
    return ev.verdict()
