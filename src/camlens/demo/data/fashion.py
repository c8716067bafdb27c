"""Fashion-MNIST: class names, the bundled real sample, and reading any IDX folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from camlens.demo.data.idx import read_idx
from camlens.errors import DataError

__all__ = ["CLASSES", "FILES", "FashionMNIST", "load_split", "sample_dir"]

CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

#: split -> (images file, labels file), the official names.
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def sample_dir() -> Path:
    """The folder of the real Fashion-MNIST sample shipped inside camlens (3615 train, 4443 test)."""
    return Path(__file__).with_name("sample")


def _find(root: Path, stem: str) -> Path:
    """The file ``stem[.gz]`` in ``root``; one that links outside ``root`` is refused (nothing is read outside)."""
    for name in (stem + ".gz", stem):
        path = root / name
        if path.is_file():
            target = path.resolve()
            if not target.is_relative_to(root.resolve()):
                raise DataError(f"{path} links to {target}, outside the data folder {root}; camlens reads nothing "
                                "outside the folder it is given: copy the file in instead of linking it")
            return path
    raise DataError(f"no {stem}[.gz] in {root}; expected the official Fashion-MNIST file names")


def load_split(root: str | Path | None = None, split: str = "test") -> tuple[Tensor, Tensor]:
    """Read one split from a folder of IDX files.

    Args:
        root: the folder; ``None`` for the bundled sample.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)``.

    Raises:
        DataError: a missing, corrupt or inconsistent file (named in the message).
    """
    if split not in FILES:
        raise DataError(f"split={split!r} is not one of {sorted(FILES)}")
    root = sample_dir() if root is None else Path(root)
    img_path, lbl_path = (_find(root, s) for s in FILES[split])
    images = read_idx(img_path, expected_ndim=3)
    labels = read_idx(lbl_path, expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path} has {images.shape[0]} images but {lbl_path} has {labels.shape[0]} labels")
    if labels.size and int(labels.max()) >= len(CLASSES):
        raise DataError(f"{lbl_path} holds label {int(labels.max())}; Fashion-MNIST labels are 0..9")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype("int64"))


@dataclass
class FashionMNIST(Dataset):
    """One split as a dataset of ``(image (1, 28, 28) float in [0, 1], label)``.

    The scaling (divide by 255, nothing else) is the tutorial's.
    """

    root: str | Path | None = None
    split: str = "test"

    def __post_init__(self) -> None:
        self.images, self.labels = load_split(self.root, self.split)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i].unsqueeze(0).float().div_(255.0), int(self.labels[i])

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All images ``(N, 1, 28, 28)`` float in [0, 1] and labels ``(N,)``, in one go."""
        return self.images.unsqueeze(1).float().div_(255.0), self.labels
