"""camlens.preprocess: real photos in every format Pillow reads, torchvision's transforms as the reference,
and maps carried back through the resize and the crop onto the photo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torchvision.models import get_model_weights

from camlens.errors import DataError, InputError
from camlens.preprocess import Geometry, Preprocess, expand_image_paths, open_photo, to_model_mode

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _photo(name: str) -> np.ndarray:
    return np.ascontiguousarray(getattr(skimage.data, name)())


def _from_weights(builder: str) -> tuple[Preprocess, object]:
    t = get_model_weights(builder).DEFAULT.transforms()
    pre = Preprocess(size=t.resize_size[0], crop=(t.crop_size[0], t.crop_size[0]), mean=tuple(t.mean),
                     std=tuple(t.std), interpolation=t.interpolation.value)  # fmt: skip
    return pre, t


# --- torchvision's transforms are the reference ---------------------------------------------------------------


@pytest.mark.parametrize("builder", ["resnet18", "efficientnet_b0"])  # bilinear, bicubic
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "camera"])
def test_photos_match_torchvision_weights_transforms(builder, name):
    # a PIL image is resized by Pillow as torchvision's transforms do it: the same values, to float32 rounding
    pre, t = _from_weights(builder)
    rgb = Image.fromarray(_photo(name)).convert("RGB")
    x, geo = pre(rgb)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    torch.testing.assert_close(x, t(rgb), atol=2e-6, rtol=0)
    h, w = rgb.height, rgb.width
    want_resized = (256, int(256 * w / h)) if w >= h else (int(256 * h / w), 256)
    assert geo.original == (h, w) and geo.resized == want_resized
    assert geo.crop == (round((want_resized[0] - 224) / 2), round((want_resized[1] - 224) / 2), 224, 224)


@pytest.mark.parametrize("builder", ["resnet18", "efficientnet_b0"])
@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_uint8_arrays_match_torchvision_on_pil_to_one_grey_level(builder, name):
    # an array is resized by torch's antialiased interpolate as uint8, rounded as Pillow rounds: where the two
    # roundings part a pixel differs by one grey level (measured: on 0.1-0.7% of the pixels of these photos)
    pre, t = _from_weights(builder)
    arr = _photo(name)
    levels = (pre(arr)[0] - t(Image.fromarray(arr))).abs() * 255 * torch.tensor(t.std).view(3, 1, 1)
    assert float(levels.max()) <= 1.0 + 1e-3
    assert float((levels > 0.5).float().mean()) < 0.01


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_float_tensors_match_torchvision_on_the_same_float_tensor(name):
    # float input is resized in float32 by the same interpolate torchvision's tensor path calls: equal to 2e-6
    pre, t = _from_weights("resnet18")
    as_tensor = torch.from_numpy(_photo(name)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(pre(as_tensor)[0], t(as_tensor), atol=2e-6, rtol=0)


# --- every format Pillow reads ----------------------------------------------------------------------------------


def _alpha(rgb: np.ndarray) -> np.ndarray:
    """Opaque, except a fully transparent 100x100 block at the top left."""
    a = np.full(rgb.shape[:2], 255, np.uint8)
    a[:100, :100] = 0
    return a


def _write_formats(root, rgb: np.ndarray, gray: np.ndarray) -> dict[str, object]:
    im = Image.fromarray(rgb)
    files = {}
    for name, save in {
        "png": lambda p: im.save(p),
        "jpg": lambda p: im.save(p, quality=95),
        "webp": lambda p: im.save(p, lossless=True),
        "cmyk.jpg": lambda p: im.convert("CMYK").save(p, quality=95),
        "gray.png": lambda p: Image.fromarray(gray).save(p),
        "gray16.png": lambda p: Image.fromarray(gray.astype(np.uint16) * 257).save(p),
        "palette.png": lambda p: im.quantize(256).save(p),
        "rgba.png": lambda p: Image.fromarray(np.dstack([rgb, _alpha(rgb)])).save(p),
    }.items():
        files[name] = root / f"photo.{name}"
        save(files[name])
    return files


def test_every_format_becomes_the_same_rgb_and_gray_input(tmp_path):
    rgb, gray = _photo("astronaut"), _photo("camera")
    files = _write_formats(tmp_path, rgb, gray)
    plain = Preprocess()  # no resize, no normalization: the values as read
    want_rgb = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(plain(files["png"])[0], want_rgb, atol=1e-7, rtol=0)
    torch.testing.assert_close(plain(files["webp"])[0], want_rgb, atol=1e-7, rtol=0)
    for lossy in ("jpg", "cmyk.jpg"):  # JPEG at quality 95, through CMYK or not: a couple of grey levels
        x = plain(files[lossy])[0]
        assert x.shape == want_rgb.shape and float((x - want_rgb).abs().mean()) < 4 / 255
    rgba = plain(files["rgba.png"])[0]  # the transparent block is white, the rest the photo
    torch.testing.assert_close(rgba[:, :100, :100], torch.ones(3, 100, 100))
    torch.testing.assert_close(rgba[:, 100:], want_rgb[:, 100:], atol=1e-7, rtol=0)
    pal = plain(files["palette.png"])[0]
    assert float((pal - want_rgb).abs().mean()) < 6 / 255  # 256 colours
    want_gray = torch.from_numpy(gray).float()[None] / 255
    one = Preprocess(channels=1)
    torch.testing.assert_close(one(files["gray.png"])[0], want_gray, atol=1e-7, rtol=0)
    torch.testing.assert_close(one(files["gray16.png"])[0], want_gray, atol=1e-6, rtol=0)  # 16-bit kept, not clipped
    torch.testing.assert_close(plain(files["gray16.png"])[0], want_gray.expand(3, -1, -1), atol=1e-7, rtol=0)
    luma = one(files["png"])[0]  # RGB into a grayscale model: ITU-R 601 luma, as Pillow's "L"
    want_luma = torch.from_numpy(np.array(Image.fromarray(rgb).convert("L"))).float()[None] / 255
    assert float((luma - want_luma).abs().max()) <= 1 / 255 + 1e-6


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :3, 3] = 255  # left half opaque red-ish, right half fully transparent
    rgba[:, 3:, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = Preprocess()(tmp_path / "a.png")[0]
    torch.testing.assert_close(x[:, :, :3], torch.tensor([200 / 255, 0, 0]).view(3, 1, 1).expand(3, 4, 3))
    torch.testing.assert_close(x[:, :, 3:], torch.ones(3, 4, 3))
    half = rgba.copy()
    half[..., 3] = 128
    for given in (Image.fromarray(half, "RGBA"), half, torch.from_numpy(half).permute(2, 0, 1)):
        x = Preprocess()(given)[0]
        a = 128 / 255
        torch.testing.assert_close(x[0], torch.full((4, 6), 200 / 255 * a + (1 - a)), atol=2 / 255, rtol=0)
        torch.testing.assert_close(x[1], torch.full((4, 6), 1 - a), atol=2 / 255, rtol=0)
    la = Image.fromarray(np.stack([np.full((2, 2), 0, np.uint8), np.full((2, 2), 0, np.uint8)], -1), "LA")
    torch.testing.assert_close(Preprocess(channels=1)(la)[0], torch.ones(1, 2, 2))


@pytest.mark.parametrize(
    ("mode", "channels", "want"),
    [("RGBA", 3, "RGB"), ("LA", 1, "L"), ("P", 3, "RGB"), ("CMYK", 3, "RGB"), ("1", 1, "L"), ("I;16", 1, "F"),
     ("I;16", 3, "RGB"), ("I", 1, "F"), ("F", 1, "F"), ("F", 3, "RGB"), ("L", 3, "RGB"), ("RGB", 1, "L"),
     ("YCbCr", 3, "RGB")],
)  # fmt: skip
def test_to_model_mode_gives_the_model_s_mode(mode, channels, want):
    im = Image.new(mode, (3, 2))
    out = to_model_mode(im, channels)
    assert out.mode == want and out.size == (3, 2)


def test_to_model_mode_scales_16_bit_without_clipping():
    px = np.array([[0, 257, 65535]], np.uint16)
    out = to_model_mode(Image.fromarray(px), 1)
    np.testing.assert_allclose(np.asarray(out), [[0.0, 1.0, 255.0]], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(to_model_mode(Image.fromarray(px), 3))[0, :, 0], [0, 1, 255])
    with pytest.raises(InputError, match="channels=2: a model takes 1"):
        to_model_mode(Image.new("L", (2, 2)), 2)


def test_arrays_and_tensors_of_every_dtype(tmp_path):
    u8 = np.array([[0, 51], [102, 255]], np.uint8)
    want = torch.from_numpy(u8.astype(np.float32) / 255)
    for given in (u8, u8.astype(np.uint16) * 257, u8.astype(np.float32) / 255, torch.from_numpy(u8),
                  torch.from_numpy(u8)[None].float() / 255):  # fmt: skip
        x = Preprocess(channels=1)(given)[0]
        torch.testing.assert_close(x, want[None], atol=1e-6, rtol=0)
        torch.testing.assert_close(Preprocess()(given)[0], want.expand(3, -1, -1), atol=1e-6, rtol=0)


def test_unusable_inputs_are_input_errors_that_say_what_to_give(tmp_path):
    with pytest.raises(InputError, match=r"shape \(224, 224, 3\) looks channels-last; give \(C, H, W\)"):
        Preprocess()(torch.rand(224, 224, 3))
    with pytest.raises(InputError, match=r"holds values in \[-2.1, 2.6\]; give the raw image"):
        Preprocess()(torch.tensor([[[-2.1, 2.6]]]))
    with pytest.raises(InputError, match=r"shape \(3, 8, 8\) looks channels-first"):
        Preprocess()(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="image array of dtype int64"):
        Preprocess()(np.zeros((8, 8), np.int64))
    with pytest.raises(InputError, match="image of type list"):
        Preprocess()([[0.0]])
    with pytest.raises(DataError, match="does not exist"):
        Preprocess()(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataError, match=f"image file {tmp_path / 'bad.jpg'} is corrupt"):
        Preprocess()(str(tmp_path / "bad.jpg"))
    with pytest.raises(InputError, match=r"mean=\(0.5, 0.5\) has 2 values for a 3-channel model"):
        Preprocess(mean=(0.5, 0.5), std=(1, 1, 1))
    with pytest.raises(InputError, match="interpolation='lanczos' is not one of"):
        Preprocess(interpolation="lanczos")
    with pytest.raises(InputError, match=r"std=.* every std must be positive"):
        Preprocess(std=(0.0,))


def test_decompression_bomb_is_a_data_error(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="decompression-bomb limit of 1000 pixels"):
        open_photo(tmp_path / "big.png")


def test_a_resize_or_crop_over_the_bomb_limit_is_refused_before_it_takes_memory(tmp_path, monkeypatch):
    Image.new("RGB", (8, 6)).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for image in (tmp_path / "small.png", torch.rand(3, 6, 8), np.zeros((6, 8, 3), np.uint8)):
        with pytest.raises(InputError, match=r"size=30 would make this 8x6 image 40x30 \(1,200 pixels\), more than "
                                             r"the limit of 1,000 .*give a smaller size \(--size"):
            Preprocess(size=30)(image)
        with pytest.raises(InputError, match=r"crop=\(40, 40\) would make this 8x6 image 40x40 \(1,600 pixels\)"):
            Preprocess(crop=40)(image)
        x, geo = Preprocess(size=(25, 40), crop=(20, 50))(image)  # 1000 pixels each: at the limit, allowed
        assert x.shape == (3, 20, 50) and geo.resized == (25, 40)
    assert Preprocess()(torch.rand(3, 40, 30))[0].shape == (3, 40, 30)  # no size: a big tensor is the user's own


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (6, 4), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the photo is 4 wide, 6 high when shown
    im.save(tmp_path / "r.jpg", exif=exif)
    x, geo = Preprocess()(tmp_path / "r.jpg")
    assert x.shape == (3, 6, 4) and geo.original == (6, 4)


# --- resize and crop --------------------------------------------------------------------------------------------


def test_sizes_follow_torchvision_rules_and_crops_larger_than_the_image_pad_with_zeros():
    x, geo = Preprocess(size=(10, 20))(torch.rand(3, 30, 7))
    assert x.shape == (3, 10, 20) and geo == Geometry((30, 7), (10, 20), (0, 0, 10, 20))
    x, geo = Preprocess(size=10)(torch.rand(3, 7, 30))
    assert geo.resized == (10, int(10 * 30 / 7))
    x, geo = Preprocess(crop=(6, 6), channels=1)(torch.ones(1, 4, 9))  # torchvision pads a row above, one below
    assert geo.crop == (-1, round((9 - 6) / 2), 6, 6)
    torch.testing.assert_close(x[0, 0], torch.zeros(6))
    torch.testing.assert_close(x[0, 1:5], torch.ones(4, 6))
    torch.testing.assert_close(x[0, 5], torch.zeros(6))
    up, _ = Preprocess(size=(4, 4), interpolation="nearest", channels=1)(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))
    torch.testing.assert_close(up[0], torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]))


def test_normalization_uses_mean_and_std_per_channel():
    x, _ = Preprocess(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))(torch.full((3, 2, 2), 0.5))
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([0.0, 1.0, 0.25]))


# --- back onto the photo ----------------------------------------------------------------------------------------


def test_a_map_lands_back_where_it_was_and_nan_outside_the_crop():
    # 300x451 photo -> shorter side 256: 256x384 -> centre crop 224: rows 16..239, columns 80..303
    geo = Preprocess(size=256, crop=(224, 224))(torch.rand(3, 300, 451))[1]
    assert geo == Geometry((300, 451), (256, 384), (16, 80, 224, 224))
    m = torch.zeros(224, 224)
    m[:112, :] = 1.0  # the top half of the model's input
    back = geo.to_original(m)
    assert back.shape == (300, 451)
    sy, sx = 256 / 300, 384 / 451
    rows = (torch.arange(300) + 0.5) * sy
    cols = (torch.arange(451) + 0.5) * sx
    inside_r = (rows >= 16) & (rows <= 240)
    inside_c = (cols >= 80) & (cols <= 304)
    assert torch.equal(~back.isnan(), inside_r[:, None] & inside_c[None, :])
    assert int(inside_c.sum()) == math.floor(304 / sx - 0.5) - math.ceil(80 / sx - 0.5) + 1
    # the boundary between the halves: resized row 16 + 112 = 128, photo row 128 / sy = 150
    col = back[:, 225]
    assert torch.all(col[inside_r & (rows < 127)] == 1.0) and torch.all(col[inside_r & (rows > 129)] == 0.0)
    assert 0.0 < float(col[149]) < 1.0 or 0.0 < float(col[150]) < 1.0


def test_a_linear_ramp_maps_back_exactly_and_low_resolution_maps_cover_the_crop():
    geo = Geometry(original=(40, 100), resized=(20, 50), crop=(0, 5, 20, 40))
    xs = torch.arange(40, dtype=torch.float64) + 0.5  # the ramp's value is the crop column of each pixel centre
    back = geo.to_original(xs.expand(20, 40)[None, None].clone())  # (1, 1, 20, 40) leading dims kept
    assert back.shape == (1, 1, 40, 100) and back.dtype == torch.float64
    cols = (torch.arange(100, dtype=torch.float64) + 0.5) * 0.5 - 5  # photo pixel centre in crop columns
    inner = (cols >= 0.5) & (cols <= 39.5)
    torch.testing.assert_close(back[0, 0, 7, inner], cols[inner], atol=1e-9, rtol=0)
    assert back[0, 0, :, (cols < 0) | (cols > 40)].isnan().all()
    coarse = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # a 2x2 layer map over the same crop
    low = geo.to_original(coarse)
    assert float(low[0, 20]) == 0.0 and float(low[39, 89]) == 3.0  # corners of the crop keep the corner cells
    assert low.isnan()[:, :10].all() and not low.isnan()[:, 10:90].any()


def test_round_trip_of_a_smooth_photo_through_resize_and_crop():
    photo = torch.from_numpy(_photo("camera")).float()[None] / 255  # 512x512 gray
    pre = Preprocess(size=256, crop=(200, 240), channels=1)
    x, geo = pre(photo)
    back = geo.to_original(x[0])
    ok = ~back.isnan()
    assert geo.crop == (28, 8, 200, 240) and int(ok.sum()) == 400 * 480
    # down by 2 and up by 2 loses only the finest detail: a few grey levels on average
    assert float((back[ok] - photo[0][ok]).abs().mean()) < 0.03


def test_to_dict_round_trips():
    pre = Preprocess(size=(224, 300), crop=200, mean=(0.5,), std=(0.25,), channels=1, interpolation="bicubic",
                     source="timm data config")  # fmt: skip
    d = pre.to_dict()
    assert d == {"size": [224, 300], "crop": [200, 200], "mean": [0.5], "std": [0.25], "channels": 1,
                 "interpolation": "bicubic", "source": "timm data config", "fast_decode": False}  # fmt: skip
    again = Preprocess.from_dict(d)
    assert again == pre and again.source == pre.source
    assert Preprocess.from_dict(Preprocess(size=256).to_dict()).size == 256
    geo = Geometry((300, 451), (256, 384), (16, 80, 224, 224))
    assert Geometry.from_dict(geo.to_dict()) == geo
    with pytest.raises(DataError, match=r"not one Geometry.to_dict wrote"):
        Geometry.from_dict({"original": [1]})


def test_describe_says_every_step_and_the_source():
    pre, _ = _from_weights("resnet18")
    assert pre.describe() == (
        "resize shorter side to 256 (bilinear), centre crop 224x224, RGB, "
        "mean (0.485, 0.456, 0.406) std (0.229, 0.224, 0.225) [flags]"
    )
    assert Preprocess(channels=1).describe() == "no resize, grayscale, values in [0, 1] [flags]"
    assert Preprocess(size=(28, 28)).input_shape() == (3, 28, 28) and Preprocess(size=28).input_shape() is None


# --- image paths ------------------------------------------------------------------------------------------------


def test_expand_image_paths_takes_files_folders_and_patterns_once_each(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for rel in ("b.jpg", "a.PNG", "sub/c.webp", "notes.txt"):
        (photos / rel).write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (photos / "link.jpg").symlink_to(tmp_path / "secret.jpg")  # out of the folder: left out
    (photos / "inlink.jpg").symlink_to(photos / "b.jpg")
    with pytest.warns(UserWarning, match=rf"images: skipped 1 file\(s\) that link outside the folder naming them "
                                          rf"\(first: {photos / 'link.jpg'} -> {tmp_path / 'secret.jpg'}\)"):
        got = expand_image_paths([str(photos), str(photos / "b.jpg"), str(photos / "**" / "*.webp")])
    assert got == [photos / "a.PNG", photos / "b.jpg", photos / "inlink.jpg", photos / "sub" / "c.webp"]
    assert expand_image_paths([photos / "notes.txt"]) == [photos / "notes.txt"]  # named: read as given
    with pytest.raises(DataError, match=r"images: .*nope.jpg does not exist"):
        expand_image_paths([str(photos / "nope.jpg")])
    with pytest.raises(DataError, match=r"--image: the pattern '.*\*.gif' matches no image files"):
        expand_image_paths([str(photos / "*.gif")], what="--image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"folder .*empty holds no image files"):
        expand_image_paths([tmp_path / "empty"])
    with pytest.raises(DataError, match="no image files given"):
        expand_image_paths([])


def test_a_pattern_leaves_out_links_outside_the_folder_it_names_and_says_so(tmp_path):
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (photos / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for rel in ("photos/a.jpg", "photos/sub/b.jpg", "elsewhere/secret.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    (photos / "link.jpg").symlink_to(elsewhere / "secret.jpg")
    (photos / "sub" / "link.jpg").symlink_to(elsewhere / "secret.jpg")
    (photos / "sub" / "up.jpg").symlink_to(photos / "a.jpg")  # out of sub/, but inside photos/: the pattern's folder
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\) that link outside"):
        got = expand_image_paths([str(photos / "*.jpg"), str(photos / "**" / "*.jpg")])
    assert got == [photos / "a.jpg", photos / "sub" / "b.jpg", photos / "sub" / "up.jpg"]
    assert expand_image_paths([photos / "link.jpg"]) == [photos / "link.jpg"]  # named as a file: read as given
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x.png").symlink_to(elsewhere / "secret.jpg")
    for spec in (tmp_path / "only", str(tmp_path / "only" / "*.png")):
        with pytest.raises(DataError, match=rf"no image files .* \(1 linking outside it skipped: {tmp_path}/only/x"):
            expand_image_paths([spec])


def test_stack_batches_images_of_one_output_size_and_names_the_sizes_otherwise(tmp_path):
    photos = [_photo("astronaut"), _photo("coffee"), _photo("camera")]
    batch, geos = Preprocess(size=64, crop=(56, 56)).stack(photos)
    x = Preprocess(size=64, crop=(56, 56))(photos[0])[0][None]
    assert batch.shape == (3, 3, 56, 56) and [g.original for g in geos] == [(512, 512), (400, 600), (512, 512)]
    torch.testing.assert_close(batch[:1], x)
    with pytest.raises(InputError, match=r"the images come out at 2 sizes \(64x64, 64x96\); set a crop"):
        Preprocess(size=64).stack(photos)
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    Image.fromarray(photos[1]).save(tmp_path / "c.jpg")
    assert expand_image_paths([tmp_path]) == [tmp_path / "c.jpg"]


def test_fast_decode_reads_a_big_jpeg_at_a_reduced_scale_with_the_full_size_geometry(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    big = Image.fromarray(_photo("coffee")).resize((2400, 1600), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 1600 wide, 2400 high
    big.save(tmp_path / "big.jpg", quality=92, exif=exif)
    slow = Preprocess(size=256, crop=(224, 224), mean=IMAGENET["mean"], std=IMAGENET["std"])
    fast = slow.override(fast_decode=True)
    assert fast != slow and Preprocess.from_dict(fast.to_dict()) == fast
    asked = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: asked.append(size) or real_draft(self, mode, size))  # fmt: skip
    (xs, gs), (xf, gf) = slow(tmp_path / "big.jpg"), fast(tmp_path / "big.jpg")
    assert asked == [(384, 256)]  # stored 2400x1600 (w x h), at least the resized size: decoded at 1/4
    assert gs == gf == Geometry((2400, 1600), (384, 256), (80, 16, 224, 224))
    levels = (xs - xf).abs() * 255 * torch.tensor(IMAGENET["std"]).view(3, 1, 1)
    assert float(levels.mean()) < 3.0  # measured 1.6 on a 10-megapixel version of this photo
