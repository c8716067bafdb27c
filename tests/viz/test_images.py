"""Image files as model input: every Pillow mode without clipping, 16-bit kept, decompression bombs refused."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from camlens.errors import DataError
from camlens.viz.images import image_tensor, load_image, open_image

Image = pytest.importorskip("PIL.Image")

RAMP16 = (np.arange(28 * 28, dtype=np.uint32).reshape(28, 28) * 83).astype(np.uint16)  # 0 .. 64989


def test_16_bit_png_keeps_its_range_instead_of_clipping_to_white(tmp_path):
    Image.fromarray(RAMP16).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I;16")
    x = load_image(tmp_path / "a.png")
    torch.testing.assert_close(x[0], torch.from_numpy(RAMP16.astype(np.float32) / 65535), atol=1e-6, rtol=0)
    assert float((x == 1.0).float().mean()) == 0.0  # Pillow's convert("L") made 99.6% of these pixels 1.0
    torch.testing.assert_close(load_image(tmp_path / "a.png", invert=True), 1.0 - x)


def test_16_bit_png_resized_and_32_bit_tiff(tmp_path):
    Image.fromarray(np.full((56, 56), 30000, np.uint16)).save(tmp_path / "b.png")
    torch.testing.assert_close(load_image(tmp_path / "b.png"), torch.full((1, 28, 28), 30000 / 65535),
                               atol=1e-6, rtol=0)
    Image.fromarray(RAMP16.astype(np.int32)).save(tmp_path / "c.tif")  # mode "I": read as 16-bit data
    assert Image.open(tmp_path / "c.tif").mode == "I"
    torch.testing.assert_close(load_image(tmp_path / "c.tif")[0], torch.from_numpy(RAMP16 / 65535).float(),
                               atol=1e-6, rtol=0)


def _make(mode: str, path):
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = np.arange(28)[:, None] * 9
    rgb[..., 1] = np.arange(28)[None, :] * 9
    rgb[..., 2] = 100
    im = Image.fromarray(rgb, "RGB")
    if mode == "P":
        im = im.quantize(16)
    elif mode == "1":
        im = im.convert("L").point(lambda v: 255 if v > 100 else 0).convert("1")
    else:
        im = im.convert(mode)
    im.save(path)
    return im


@pytest.mark.parametrize("mode, ext", [("CMYK", "tif"), ("P", "png"), ("LA", "png"), ("RGBA", "png"),
                                       ("1", "png"), ("L", "png"), ("RGB", "jpg")])
def test_other_modes_convert_like_pillow_and_not_to_white(tmp_path, mode, ext):
    path = tmp_path / f"x.{ext}"
    _make(mode, path)
    with Image.open(path) as im:
        assert im.mode == mode
        want = np.asarray(im.convert("L"), dtype=np.float32) / 255
    x = load_image(path)
    torch.testing.assert_close(x[0], torch.from_numpy(want))
    assert 0.05 < float(x.mean()) < 0.95 and float(x.min()) < float(x.max())


def test_image_tensor_rgb_from_16_bit_gray_repeats_the_channel():
    f = Image.fromarray(np.array([[0.0, 127.5], [255.0, 300.0]], np.float32), "F")
    t = image_tensor(f, channels=3)
    assert t.shape == (3, 2, 2) and torch.equal(t[0], t[2])
    torch.testing.assert_close(t[0], torch.tensor([[0.0, 0.5], [1.0, 1.0]]))


@pytest.mark.parametrize("side", [40, 100])  # 1600 px: Pillow warns; 10000 px (over twice the limit): it raises
def test_decompression_bomb_is_a_data_error_naming_the_file_and_the_limit(tmp_path, monkeypatch, side):
    Image.new("L", (side, side)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    filters = list(warnings.filters)
    with pytest.raises(DataError) as e:
        load_image(tmp_path / "bomb.png")
    msg = str(e.value)
    assert msg.startswith(f"image file {tmp_path / 'bomb.png'} is too large for Pillow's decompression-bomb "
                          "limit of 1000 pixels (")
    assert f"{side * side} pixels" in msg and "raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file" in msg
    assert warnings.filters == filters  # the guard's filter is scoped to the read


def test_not_a_regular_file_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "x.png")  # opening it would block until a writer came
    (tmp_path / "d.png").mkdir()
    for p in (tmp_path / "x.png", tmp_path / "d.png"):
        with pytest.raises(DataError) as e:
            open_image(p)
        assert str(e.value) == f"image file {p} is not a regular file; give a PNG or JPEG file"

