"""sources.py against hostile folders: corrupt and oversized images, links outside the folder, odd factory paths."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from camlens.errors import DataError, InputError
from camlens.sources import ImageFolder, load_dataset, load_factory

Image = pytest.importorskip("PIL.Image")


def _folder(root, files):
    for rel, make in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make(root / rel)
    return root


def _png(value=128, size=8):
    return lambda p: Image.new("L", (size, size), value).save(p)


def test_corrupt_image_is_a_data_error_naming_the_file_also_through_a_dataloader(tmp_path):
    root = _folder(tmp_path, {"a/good.png": _png(), "b/bad.png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnope")})
    ds = ImageFolder(root, mode="L")
    assert [f.name for f, _ in ds.files] == ["good.png", "bad.png"]
    torch.testing.assert_close(ds[0][0], torch.full((1, 8, 8), 128 / 255))
    with pytest.raises(DataError, match=f"image file {root / 'b' / 'bad.png'} is corrupt or not an image"):
        ds[1]
    for workers in (0, 1):  # a worker re-raises it as the same class in the main process
        with pytest.raises(DataError, match=f"image file {root / 'b' / 'bad.png'} is corrupt"):
            list(DataLoader(ds, batch_size=2, num_workers=workers))


def test_decompression_bomb_in_a_folder_is_a_data_error(tmp_path, monkeypatch):
    root = _folder(tmp_path, {"a/big.png": _png(size=100)})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=f"image file {root / 'a' / 'big.png'} is too large for Pillow's "
                                        "decompression-bomb limit of 1000 pixels"):
        ImageFolder(root)[0]


def test_16_bit_images_in_a_folder_keep_their_range_in_rgb_and_gray(tmp_path):
    px = np.array([[0, 300], [30000, 65535]], np.uint16)
    root = _folder(tmp_path, {"a/x.png": lambda p: Image.fromarray(px).save(p)})
    want = torch.from_numpy(px.astype(np.float32) / 65535)
    rgb, label = ImageFolder(root)[0]
    assert rgb.shape == (3, 2, 2) and label == 0
    for c in range(3):
        torch.testing.assert_close(rgb[c], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(ImageFolder(root, mode="L")[0][0][0], want, atol=1e-6, rtol=0)


def test_links_outside_the_folder_are_skipped_with_a_count_and_links_inside_kept(tmp_path):
    outside = _folder(tmp_path / "outside", {"secret.png": _png(255), "cls/other.png": _png(255)})
    root = _folder(tmp_path / "data", {"a/in.png": _png(10)})
    (root / "a" / "in-link.png").symlink_to(root / "a" / "in.png")
    (root / "a" / "out.png").symlink_to(outside / "secret.png")
    (root / "b").symlink_to(outside / "cls")  # a whole class folder that is elsewhere
    with pytest.warns(UserWarning, match=rf"image folder {root}: skipped 2 file\(s\) that link outside it"):
        ds, info = load_dataset(str(root))
    assert isinstance(ds, ImageFolder) and info["skipped_links"] == 2
    assert [f.name for f, _ in ds.files] == ["in-link.png", "in.png"]
    assert sorted(p.name for p in ds.skipped_links) == ["other.png", "out.png"]
    assert all(abs(float(ds[i][0].max()) - 10 / 255) < 1e-7 for i in range(len(ds)))  # nothing outside read
    (root / "a" / "in.png").unlink()
    (root / "a" / "in-link.png").unlink()
    with pytest.warns(UserWarning), pytest.raises(DataError) as e:
        ImageFolder(root)
    assert str(e.value).endswith("lay it out as ROOT/<class name>/<image files> (2 linking outside it were skipped)")


def test_folder_without_links_reports_no_skips(tmp_path):
    root = _folder(tmp_path, {"a/x.png": _png(), "b/y.png": _png()})
    ds, info = load_dataset(str(root))
    assert info == {"kind": "image-folder", "spec": str(root), "object_mask": False} and len(ds) == 2


def test_factory_file_must_be_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.py")  # executing it would block on the read
    (tmp_path / "dir.py").mkdir()
    for name in ("fifo.py", "dir.py", "missing.py"):
        spec = f"{tmp_path / name}:build"
        with pytest.raises(InputError) as e:
            load_factory(spec, "data")
        assert str(e.value) == f"data={spec!r}: file {tmp_path / name} does not exist"
