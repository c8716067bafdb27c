"""Reading IDX folders: every way a file can be wrong gets an error naming the file and the fault."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from camlens.demo.data import CLASSES, FashionMNIST, load_split, read_idx, sample_dir
from camlens.errors import DataError


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _folder(tmp_path, images, labels, gz=True):
    for stem, arr in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        data = _idx(arr) if isinstance(arr, np.ndarray) else arr
        if gz:
            (tmp_path / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (tmp_path / stem).write_bytes(data)
    return tmp_path


def test_bundled_sample_counts_and_values():
    img, lbl = load_split(None, "train")
    assert img.shape == (3615, 28, 28) and lbl.shape == (3615,)
    img, lbl = load_split(None, "test")
    assert img.shape == (4443, 28, 28) and int(lbl.min()) == 0 and int(lbl.max()) == 9
    assert (sample_dir() / "LICENSE-fashion-mnist.txt").is_file()
    ds = FashionMNIST(split="test")
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and float(x.max()) <= 1.0 and y == int(lbl[0])
    assert float(x[0, 10, 10]) == int(img[0, 10, 10]) / 255.0
    assert len(CLASSES) == 10


@pytest.mark.parametrize("gz", [True, False])
def test_plain_and_gzip_read_the_same(tmp_path, gz):
    imgs = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    root = _folder(tmp_path, imgs, np.array([3, 7]), gz=gz)
    x, y = load_split(root, "test")
    assert x.numpy().tolist() == imgs.tolist() and y.tolist() == [3, 7]


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (b"\x01\x02\x08\x03" + b"\0" * 12, np.array([1]), "has magic bytes 01020803, not an IDX header"),
        (_idx(np.zeros((2, 28, 28)))[:-5], np.array([1, 2]), "the file is truncated"),
        (_idx(np.zeros((2, 28, 28))) + b"xx", np.array([1, 2]), "longer than its header says"),
        (_idx(np.zeros((2, 28, 28))), np.array([1, 2, 3]), "has 2 images but"),
        (_idx(np.zeros((1, 28, 28))), np.array([12]), "holds label 12; Fashion-MNIST labels are 0..9"),
        (_idx(np.zeros((28, 28))), np.array([1]), "has 2 dimension(s), expected 3"),
        (b"\0\0", np.array([1]), "too short for an IDX header"),
    ],
)
def test_corrupt_files(tmp_path, images, labels, match):
    root = _folder(tmp_path, images, labels)
    with pytest.raises(DataError, match=match.replace("(", r"\(").replace(")", r"\)")) as e:
        load_split(root, "test")
    assert str(tmp_path) in str(e.value)


def test_truncated_gzip_and_missing_file(tmp_path):
    (tmp_path / "f.gz").write_bytes(gzip.compress(_idx(np.zeros(5)))[:-6])
    with pytest.raises(DataError, match=r"f.gz is a truncated or corrupt gzip file"):
        read_idx(tmp_path / "f.gz")
    with pytest.raises(DataError, match=r"no t10k-images-idx3-ubyte\[.gz\] in"):
        load_split(tmp_path, "test")
    with pytest.raises(DataError, match="split='val' is not one of"):
        load_split(None, "val")
