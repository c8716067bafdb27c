"""Data for the demo workflow: Fashion-MNIST from IDX files (bundled sample or downloaded)."""

from .fashion import CLASSES, FILES, FashionMNIST, load_split, sample_dir
from .idx import read_idx

__all__ = ["CLASSES", "FILES", "FashionMNIST", "load_split", "read_idx", "sample_dir"]
