"""Data for the demo workflow: Fashion-MNIST from IDX files (bundled sample or downloaded)."""

from camlens.demo.data.fashion import CLASSES, FILES, FashionMNIST, load_split, sample_dir
from camlens.demo.data.idx import read_idx

__all__ = ["CLASSES", "FILES", "FashionMNIST", "load_split", "read_idx", "sample_dir"]

# -- the downloader (issue 3) --
from camlens.demo.data.download import ENV_VAR, MD5, MIRRORS, data_dir, download_fashion_mnist

__all__ += ["ENV_VAR", "MD5", "MIRRORS", "data_dir", "download_fashion_mnist"]
