"""Reading IDX folders: every way a file can be wrong gets an error naming the file and the fault."""

from __future__ import annotations

import gzip
import os
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from camlens.demo.data import CLASSES, FashionMNIST, load_split, read_idx, sample_dir
from camlens.demo.data.idx import MAX_BYTES
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


# --- hostile files: bombs, lying headers, things that are not files; memory and time bounded -------------------


def _bomb(head: bytes, mib: int) -> bytes:
    """gzip of ``head`` then ``mib`` MiB of zeros (about 1 KiB compressed per MiB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return c.compress(head) + b"".join(c.compress(zeros) for _ in range(mib)) + c.flush()


def _bounded(fn):
    """Run ``fn`` (which must raise DataError); its message, and the Python memory peak and time it took."""
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(DataError) as e:
            fn()
        return str(e.value), tracemalloc.get_traced_memory()[1], time.monotonic() - t0
    finally:
        tracemalloc.stop()


def test_gzip_bomb_behind_a_valid_header_stops_at_the_header_size(tmp_path):
    f = tmp_path / "bomb.gz"
    f.write_bytes(_bomb(_idx(np.zeros((2, 28, 28))), 64))
    assert f.stat().st_size < 1 << 20
    msg, peak, took = _bounded(lambda: read_idx(f, expected_ndim=3))
    assert msg == (f"IDX file {f} holds more than the 1568 data bytes its header (2, 28, 28) says: "
                   "the file is longer than its header says")
    assert peak < 8 << 20 and took < 1


def test_header_is_checked_before_anything_is_decompressed(tmp_path):
    f = tmp_path / "bomb.gz"
    f.write_bytes(_bomb(b"\x01\x02\x08\x03", 64))
    msg, peak, took = _bounded(lambda: read_idx(f))
    assert msg.startswith(f"IDX file {f} has magic bytes 01020803, not an IDX header")
    assert peak < 8 << 20 and took < 1


@pytest.mark.parametrize("gz", [False, True])
def test_header_claiming_exabytes_is_refused_without_overflow_or_allocation(tmp_path, gz):
    head = bytes([0, 0, 0x0C, 3]) + struct.pack(">3I", 2**31, 2**31, 4)  # 16 bytes, int32 items
    assert len(head) == 16
    f = tmp_path / ("huge.gz" if gz else "huge")
    f.write_bytes(_bomb(head, 64) if gz else head)
    msg, peak, took = _bounded(lambda: read_idx(f))
    assert msg == (f"IDX file {f} has a header (2147483648, 2147483648, 4) of 4-byte items, which says "
                   f"{2**31 * 2**31 * 4 * 4} data bytes, more than the {MAX_BYTES}-byte limit "
                   "(camlens.demo.data.idx.MAX_BYTES); is it the right file?")
    assert peak < 4 << 20 and took < 1


def test_large_header_on_a_tiny_file_is_truncated_without_allocating_it(tmp_path):
    head = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 1000, 1000, 1000)  # 1e9 bytes: under the limit
    plain, gz = tmp_path / "big", tmp_path / "big.gz"
    plain.write_bytes(head + b"abc")
    gz.write_bytes(gzip.compress(head + b"abc"))
    for f in (plain, gz):
        msg, peak, _ = _bounded(lambda f=f: read_idx(f))
        assert msg == (f"IDX file {f} holds 3 data bytes but its header (1000, 1000, 1000) says 1000000000: "
                       "the file is truncated")
        assert peak < 4 << 20  # one read chunk, not the 1 GB the header claims


def test_empty_dimension_reads_as_an_empty_array(tmp_path):
    (tmp_path / "e").write_bytes(_idx(np.zeros((0, 28, 28))))
    assert read_idx(tmp_path / "e").shape == (0, 28, 28)


def test_folder_fifo_and_device_are_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # opening it would block until a writer came
    (tmp_path / "dir").mkdir()
    for f in (tmp_path / "fifo", tmp_path / "dir", Path("/dev/zero")):
        with pytest.raises(DataError) as e:
            read_idx(f)
        assert str(e.value) == f"IDX file {f} is not a regular file; give the path of an IDX file"


def test_idx_file_linking_outside_the_folder_is_refused(tmp_path):
    outside, root = tmp_path / "outside", tmp_path / "data"
    for d in (outside, root):
        d.mkdir()
        _folder(d, np.zeros((1, 28, 28)), np.array([1]))
    img = root / "t10k-images-idx3-ubyte.gz"
    img.unlink()
    img.symlink_to(outside / img.name)
    with pytest.raises(DataError) as e:
        load_split(root, "test")
    assert str(e.value) == (f"{img} links to {outside / img.name}, outside the data folder {root}; camlens reads "
                            "nothing outside the folder it is given: copy the file in instead of linking it")
    img.unlink()
    img.symlink_to("sub/../t10k-labels-idx1-ubyte.gz")  # a link that stays inside is followed
    (root / "sub").mkdir()
    with pytest.raises(DataError, match="has 1 dimension"):  # it was read: it is the labels file
        load_split(root, "test")
