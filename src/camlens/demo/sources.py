"""The demo's model and data sources, registered with :mod:`camlens.sources` through entry points.

``pyproject.toml`` names these functions under the ``camlens.model_folders``,
``camlens.datasets`` and ``camlens.data_folders`` groups, so every command
accepts a checkpoint folder, ``fashion-mnist:test`` or a folder of IDX files
while nothing outside :mod:`camlens.demo` imports the demo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from camlens.demo.checkpoint import META, load_checkpoint, read_meta
from camlens.demo.data import CLASSES, FILES, FashionMNIST
from camlens.errors import InputError
from camlens.preprocess import Preprocess
from camlens.sources import Collated

__all__ = [
    "IDXDataset",
    "checkpoint_folder",
    "checkpoint_input_shape",
    "checkpoint_preprocess",
    "fashion_mnist",
    "idx_dataset",
    "idx_folder",
]


class IDXDataset(Dataset):
    """A split of IDX files as ``(image (1, H, W) in [0, 1], label)``, fetched a batch at a time.

    The values are :class:`camlens.demo.data.FashionMNIST`'s; ``__getitems__`` indexes
    the whole batch in one operation instead of one item at a time.

    Args:
        root: the folder of IDX files; ``None`` for the bundled sample.
        split: ``"train"`` or ``"test"``.
    """

    def __init__(self, root: str | Path | None, split: str) -> None:
        self.inner = FashionMNIST(root=root, split=split)
        self.classes = list(CLASSES)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.inner[i]

    def __getitems__(self, idx: list[int]) -> Collated:
        if idx and idx[-1] - idx[0] == len(idx) - 1 and idx == list(range(idx[0], idx[-1] + 1)):
            sel: slice | Tensor = slice(idx[0], idx[-1] + 1)  # a run of ids (always, from the driver): no gather
        else:
            sel = torch.as_tensor(idx, dtype=torch.long)
        # uint8 / 255.0 is float32, the same values as .float().div_(255.0), in one operation
        return Collated((self.inner.images[sel].unsqueeze(1) / 255.0, self.inner.labels[sel]))


def checkpoint_folder(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]] | None:
    """A camlens checkpoint folder's model and facts, or ``None`` if ``path`` holds no ``meta.json``.

    A ``meta.json`` that is there but not a regular file (a link, a FIFO) is a
    checkpoint to refuse with :class:`~camlens.errors.DataError`, not a folder to skip.
    """
    if not os.path.lexists(path / META):
        return None
    model, meta = load_checkpoint(path, device=device)
    info: dict[str, Any] = {"kind": "checkpoint", "architecture": meta["architecture"], "classes": None,
                            "preprocess": checkpoint_preprocess(path)}  # fmt: skip
    if meta.get("classes"):
        info["classes"] = list(meta["classes"])
    return model, info


def checkpoint_preprocess(path: str | Path) -> Preprocess | None:
    """What a checkpoint's model takes: the shorter side resized to its size, a centre crop, values in [0, 1].

    Fashion-MNIST's ConvNet takes 28x28 grayscale in [0, 1] (no normalization);
    ``None`` when the checkpoint records no input shape.
    """
    shape = checkpoint_input_shape(path)
    if shape is None or len(shape) != 3 or shape[0] not in (1, 3):
        return None
    c, h, w = shape
    return Preprocess(size=min(h, w), crop=(h, w), channels=c, source="camlens checkpoint")


def checkpoint_input_shape(path: str | Path) -> tuple[int, ...] | None:
    """One input's shape ``(C, H, W)`` for a checkpoint folder's model: recorded, or the ConvNet's; else ``None``."""
    meta = read_meta(path)
    shape = meta.get("input_shape")
    if shape is None and meta.get("architecture") == "convnet":
        kw = meta.get("model_kwargs", {})
        size = kw.get("image_size", 28)
        shape = (kw.get("in_channels", 1), size, size)
    return None if shape is None else tuple(shape)


def fashion_mnist(split: str) -> tuple[Dataset, dict[str, Any]]:
    """``fashion-mnist[:split]``: the bundled sample's ``test`` (the default) or ``train`` split."""
    split = split or "test"
    if split not in FILES:
        raise InputError(f"data='fashion-mnist:{split}': split {split!r} is not one of {sorted(FILES)}")
    return IDXDataset(None, split), {"object_mask": True}


def idx_dataset(rest: str) -> tuple[Dataset, dict[str, Any]]:
    """``idx:FOLDER[:split]``: a folder of IDX files, split ``test`` unless named."""
    root, _, split = rest.rpartition(":") if rest.endswith((":train", ":test")) else (rest, "", "test")
    return IDXDataset(root, split), {"object_mask": True}


def idx_folder(path: Path) -> tuple[Dataset, dict[str, Any]] | None:
    """A folder holding Fashion-MNIST's IDX files (test split if present), or ``None``."""
    names = {p.name.removesuffix(".gz") for p in path.iterdir()}
    if not any(f in names for pair in FILES.values() for f in pair):
        return None
    split = "test" if FILES["test"][0] in names else "train"
    return IDXDataset(path, split), {"object_mask": True}
