"""camlens.overlay and the figures: any image kind and size, maps resized, NaN shown as no value, nothing clipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
from camlens.errors import InputError
from camlens.viz.figures import (
    Panel,
    explanation_figure,
    figure_bytes,
    grid_figure,
    resize_map,
    rgb8,
    signed_picture,
)
from camlens.viz.figures import _lut as lut

JET0, JET1 = lut("jet")[0].astype(float), lut("jet")[255].astype(float)  # dark blue (0, 0, 128), dark red (128, 0, 0)


def test_jet_ends_are_dark_blue_and_dark_red():
    assert JET0.tolist() == [0, 0, 128] and JET1.tolist() == [128, 0, 0]


def test_a_uint8_photo_is_blended_on_its_0_255_scale_not_clipped_to_white():
    photo = np.full((4, 6, 3), 100, np.uint8)
    out = camlens.overlay(photo, np.zeros((4, 6)), alpha=0.25)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (6, 4)
    np.testing.assert_array_equal(np.asarray(out), np.broadcast_to(np.round(0.75 * 100 + 0.25 * JET0), (4, 6, 3)))
    np.testing.assert_array_equal(np.asarray(camlens.overlay(photo, np.ones((2, 2)), alpha=0.0)), photo)
    np.testing.assert_array_equal(np.asarray(camlens.overlay(photo, np.ones((2, 2)), alpha=1.0)),
                                  np.broadcast_to(JET1, (4, 6, 3)))


@pytest.mark.parametrize(
    "make",
    [
        lambda a: Image.fromarray(a, "RGB"),
        lambda a: a,
        lambda a: a.astype(np.float32) / 255.0,
        lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255.0,
        lambda a: torch.from_numpy(a).permute(2, 0, 1).contiguous(),
    ],
    ids=["pil", "uint8", "float", "tensor", "uint8-tensor"],
)
def test_every_image_kind_gives_the_same_overlay_of_the_photos_own_size(make):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)
    m = rng.random((7, 9))
    want = camlens.overlay(Image.fromarray(photo, "RGB"), m, alpha=0.4)
    got = camlens.overlay(make(photo), torch.from_numpy(m), alpha=0.4)
    assert got.size == (451, 300)
    assert np.abs(np.asarray(got).astype(int) - np.asarray(want).astype(int)).max() <= 1  # float rounding only


def test_gray_rgba_and_16_bit_photos():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = np.asarray(camlens.overlay(Image.fromarray(gray, "L"), np.zeros((3, 4)), alpha=0.0))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=-1))
    np.testing.assert_array_equal(np.asarray(camlens.overlay(torch.from_numpy(gray)[None].float() / 255,
                                                             np.zeros((3, 4)), alpha=0.0)), out)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128  # half-transparent red on white
    expect = np.round(np.array([200, 0, 0]) * 128 / 255 + 255 * (1 - 128 / 255))
    np.testing.assert_array_equal(rgb8(Image.fromarray(rgba, "RGBA"))[0, 0], expect)
    wide = Image.fromarray(np.full((2, 3), 30000, np.uint16))
    assert wide.mode.startswith("I;16")
    assert rgb8(wide)[0, 0].tolist() == [round(30000 / 65535 * 255)] * 3  # convert("RGB") would make it white


def test_nan_is_no_value_the_photo_greyed():
    photo = np.zeros((2, 2, 3), np.uint8)
    photo[..., 0] = 200  # red: greyed to its luminance 0.299 * 200
    m = np.array([[np.nan, 1.0], [np.nan, 1.0]])
    out = np.asarray(camlens.overlay(photo, m, alpha=0.5)).astype(float)
    np.testing.assert_array_equal(out[:, 0], [[60, 60, 60]] * 2)
    np.testing.assert_array_equal(out[:, 1], np.broadcast_to(np.round(0.5 * photo[0, 0] + 0.5 * JET1), (2, 3)))


def test_resize_map_keeps_nan_where_no_value_falls():
    m = np.array([[np.nan, 0.2], [np.nan, 0.2]], np.float32)
    r = resize_map(m, (4, 8))
    assert np.isnan(r[:, :3]).all() and np.isfinite(r[:, 5:]).all()
    np.testing.assert_allclose(r[:, 5:], 0.2, atol=1e-6)  # valid values are not pulled towards 0 by the NaN
    np.testing.assert_allclose(resize_map(np.full((7, 7), 0.3), (300, 451)), 0.3, atol=1e-6)
    ramp = np.linspace(0, 1, 64, dtype=np.float32)[None].repeat(64, 0)
    small = resize_map(ramp, (8, 8))
    assert small.shape == (8, 8) and np.all(np.diff(small[0]) > 0)


def test_signed_gradients_with_channels_are_drawn_around_mid_grey():
    g = torch.zeros(3, 2, 2)
    g[0, 0, 0], g[1, 1, 1] = 2.0, -2.0
    pic = np.asarray(signed_picture(np.zeros((2, 2), np.uint8), g)).astype(int)
    assert pic[0, 0].tolist() == [255, 128, 128] and pic[1, 1].tolist() == [128, 0, 128]
    gray = np.asarray(signed_picture(np.zeros((5, 7, 3), np.uint8), torch.ones(1, 3, 3)))
    assert gray.shape == (5, 7, 3) and (gray == 255).all()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: camlens.overlay(np.zeros((2, 2)), np.zeros((2, 2)), alpha=2), "alpha=2 must be in"),
        (lambda: camlens.overlay(np.full((2, 2), 200.0), np.zeros((2, 2))), "float image with values from 200"),
        (lambda: camlens.overlay(np.zeros((2, 2)), np.full((2, 2), 3.0)), "map values must lie in"),
        (lambda: camlens.overlay(np.zeros((2, 2)), np.zeros((2, 2)), "nope"), "colormap='nope'"),
        (lambda: camlens.overlay(np.zeros((5, 5, 7)), np.zeros((2, 2))), "is not an image"),
        (lambda: camlens.overlay(np.zeros((2, 2)), np.zeros((3, 2, 2))), "is not one map"),
        (lambda: camlens.overlay("cat.jpg", np.zeros((2, 2))), "type str is not an image"),
    ],
)
def test_bad_overlay_input(call, match):
    with pytest.raises(InputError, match=match):
        call()


def _png_size(fig) -> tuple[int, int]:
    import io

    with Image.open(io.BytesIO(figure_bytes(fig))) as im:
        return im.size


@pytest.mark.parametrize("channels", [1, 3])
def test_figures_draw_rgb_and_gray_photos_of_any_size(channels):
    wide = torch.rand(channels, 300, 451)
    tall = (np.random.default_rng(1).random((640, 200, channels)) * 255).astype(np.uint8)
    maps = {"gradcam · layer4": torch.rand(7, 7), "guided-backprop · input": torch.randn(channels, 300, 451)}
    fig = explanation_figure(wide, [Panel("cat", 0.61, maps), Panel("dog", 0.2, maps)], "photo")
    w, h = _png_size(fig)
    assert w > 2 * h  # three cells of a wide photo side by side, two rows
    texts = [t.get_text() for ax in fig.axes for t in (ax.title, ax.yaxis.label)]
    assert "cat (0.61)" in texts and "gradcam\nlayer4" in texts
    fig = grid_figure([wide, tall], [{"gradcam": torch.rand(5, 5)}, {"gradcam": torch.rand(3, 3)}], ["a", "b"])
    assert _png_size(fig)[0] > 100
    # a map named after its method (FullGrad's, from every bias layer) is labelled once, not "fullgrad\nfullgrad"
    both = {"gradcam · layer4": torch.rand(5, 5), "fullgrad · fullgrad": torch.rand(300, 451)}
    fig = grid_figure([wide, wide], [both, both], ["a", "b"])
    labels = [ax.yaxis.label.get_text() for ax in fig.axes if ax.yaxis.label.get_text()]
    assert labels == ["image", "gradcam\nlayer4", "fullgrad"]
