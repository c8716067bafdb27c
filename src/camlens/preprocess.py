"""What a model takes as input, and the way back from its input to the photo.

A :class:`Preprocess` turns any image (a file Pillow reads, a PIL image, a
uint8/uint16/float array, a ``(C, H, W)`` tensor) into the ``(C, H, W)`` float
tensor a model was trained on: mode conversion, resize, centre crop,
normalization. It records a :class:`Geometry` per image, whose
:meth:`Geometry.to_original` maps an explanation back onto the photo at its
native resolution.

Files and PIL images are resized by Pillow (antialiased, before the pixels
become an array: a 12-megapixel photo is never copied whole), exactly as
torchvision's ``weights.transforms()`` does on a PIL image, the reference the
tests compare against. Arrays and tensors are resized by torch
(:func:`torch.nn.functional.interpolate` with ``antialias=True``; uint8 data
as uint8, rounded as Pillow rounds), as torchvision's tensor ``Resize``.

Example:
    >>> import torch
    >>> pre = Preprocess(size=256, crop=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> x, geo = pre(torch.rand(3, 300, 451))
    >>> tuple(x.shape), geo.resized, geo.crop
    ((3, 224, 224), (256, 384), (16, 80, 224, 224))
    >>> geo.to_original(torch.ones(7, 7)).shape
    torch.Size([300, 451])
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from camlens._util.optional import optional_import
from camlens.errors import DataError, InputError

__all__ = ["IMAGE_SUFFIXES", "Geometry", "Preprocess", "expand_image_paths", "open_photo", "to_model_mode"]

#: file name endings taken from folders and globs (a file named explicitly is read whatever its name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Pillow modes with more than 8 bits per pixel (16-bit PNG/TIFF open as one of these); read as 0..65535.
WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
# ITU-R 601-2 luma, the weights Pillow's convert("L") uses
_LUMA = (0.299, 0.587, 0.114)


def _pil() -> Any:
    return optional_import("PIL.Image", "plot", "image files")


def _pixel_limit() -> int | None:
    """Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``; its default without Pillow)."""
    try:
        from PIL import Image
    except ImportError:
        return 89_478_485  # Pillow's default: 1024 * 1024 * 1024 // 4 // 3
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else int(limit)


# ---------------------------------------------------------------------------------------------------------------
# reading images


def open_photo(path: str | Path) -> Any:
    """The image in ``path``, decoded, turned upright by its EXIF orientation, in the mode it is stored in.

    This is the picture every map is drawn back onto: :attr:`Geometry.original`
    is its ``(height, width)``.

    Raises:
        DataError: the file is missing, not a regular file, corrupt, or larger
            than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb); the
            message names the file.
    """
    return _open(path, None)[0]


def _open(path: str | Path, target: Any) -> tuple[Any, tuple[int, int]]:
    """``(image, (height, width) upright at full resolution)``; see :func:`open_photo`.

    ``target(h, w) -> (h', w') | None``: for a JPEG, the size it will be
    resized to; libjpeg then decodes at the smallest 1/2, 1/4 or 1/8 scale
    that stays at least that large (``Image.draft``).
    """
    Image = _pil()
    ImageOps = optional_import("PIL.ImageOps", "plot", "image files")
    from camlens.viz.images import image_file, reading_image

    path = image_file(path, "an image file (JPEG, PNG, WebP, ...)")
    with reading_image(path, "a JPEG, PNG or WebP file"):
        im = Image.open(path)
        try:
            w, h = im.size
            turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
            full = (w, h) if turned else (h, w)
            want = target(*full) if target is not None and im.format == "JPEG" else None
            if want is not None:
                im.draft(None, (want[0], want[1]) if turned else (want[1], want[0]))
            im.load()
            if getattr(im, "n_frames", 1) > 1:  # an animation: its first frame, and the file closed
                first = im.copy()
                im.close()
                im = first
            ImageOps.exif_transpose(im, in_place=True)
            return im, full
        except BaseException:
            im.close()
            raise


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise InputError(f"channels={channels!r}: a model takes 1 (grayscale) or 3 (RGB) channels")


def to_model_mode(image: Any, channels: int) -> Any:
    """A Pillow image of any mode as ``"RGB"`` (``channels=3``) or ``"L"``/``"F"`` (``channels=1``).

    Transparent images (``RGBA``, ``LA``, ``PA``, a palette or ``L``/``RGB``
    image with a transparent colour) are composited on white; palettes and
    CMYK are expanded by Pillow; ``"1"`` becomes 0/255. 16-bit and 32-bit
    integer images (:data:`WIDE_MODES`) are read as 0..65535 and become mode
    ``"F"`` on the 0..255 scale for one channel (nothing clipped), or 8-bit RGB
    for three. A mode ``"F"`` image is taken to be on the 0..255 scale.

    Raises:
        InputError: ``channels`` is not 1 or 3.
        DataError: Pillow cannot convert the mode (e.g. ``"LAB"``).
    """
    _check_channels(channels)
    Image = _pil()
    mode = image.mode
    if mode in WIDE_MODES or mode == "F":
        arr = np.asarray(image).astype(np.float32)
        if mode != "F":
            arr = np.clip(arr, 0.0, 65535.0) * np.float32(255.0 / 65535.0)
        arr = np.clip(arr, 0.0, 255.0)
        if channels == 1:
            return Image.fromarray(arr)  # float32 (H, W): mode "F"
        return Image.fromarray(np.rint(arr).astype(np.uint8)).convert("RGB")  # uint8 (H, W): mode "L"
    if mode == ("RGB" if channels == 3 else "L") and "transparency" not in image.info:
        return image  # already what the model takes: no copy
    try:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        return image.convert("RGB" if channels == 3 else "L")
    except ValueError as e:
        raise DataError(f"an image of Pillow mode {mode!r} cannot be converted for the model ({e})") from None


def _pil_tensor(image: Any) -> Tensor:
    """A PIL image from :func:`to_model_mode` as ``(channels, H, W)``: uint8 for 8-bit data, else float32 in [0, 1]."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        t = torch.from_numpy(arr.copy() if not arr.flags.writeable else arr)
    else:
        t = torch.from_numpy(arr.astype(np.float32) * np.float32(1.0 / 255.0))
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def _array_tensor(arr: np.ndarray) -> Tensor:
    """An ``(H, W)`` or ``(H, W, C)`` array as ``(C, H, W)``: uint8 kept, uint16 / 65535, floats as given."""
    if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 3, 4):
        raise InputError(
            f"image array of shape {arr.shape} looks channels-first; give (H, W, C) arrays, "
            "or a (C, H, W) torch tensor"
        )
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4)):
        raise InputError(f"image array of shape {arr.shape}; expected (H, W) or (H, W, C) with C in 1..4")
    if arr.dtype == np.uint8:
        t = torch.from_numpy(np.array(arr, copy=True))
    elif arr.dtype == np.uint16:
        t = torch.from_numpy(arr.astype(np.float32) / np.float32(65535.0))
    elif arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.floating):
        t = torch.from_numpy(arr.astype(np.float32))
    else:
        raise InputError(f"image array of dtype {arr.dtype}; give uint8, uint16, or float values in [0, 1]")
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def _tensor_channels(t: Tensor, channels: int, what: str) -> Tensor:
    """``(C, H, W)`` with C in 1..4 as ``channels`` channels (alpha composited on white); uint8 kept where it can."""
    c = t.shape[0]
    if c == channels:
        return t
    if c == 1 and channels == 3:
        return t.expand(3, -1, -1)
    if t.dtype == torch.uint8:
        t = t.float().div_(255.0)
    if c in (2, 4):  # gray + alpha, RGB + alpha
        alpha = t[-1:]
        t = t[:-1] * alpha + (1.0 - alpha)
        c -= 1
    if c == channels:
        return t
    if c == 1:
        return t.expand(3, -1, -1)
    if c == 3:
        luma = torch.tensor(_LUMA, dtype=t.dtype, device=t.device).view(3, 1, 1)
        return (t * luma).sum(0, keepdim=True)
    raise InputError(f"{what} has {c} channels; expected 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)")


def _is_pil(image: Any) -> bool:
    return hasattr(image, "mode") and hasattr(image, "getbands")


def _pil_resample(interpolation: str) -> Any:
    return getattr(_pil().Resampling, interpolation.upper())


def _as_tensor(image: Any, channels: int) -> Tensor:
    """Any accepted image as ``(channels, H, W)``: uint8 (0..255) for 8-bit data, else float32 in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        image = open_photo(Path(image))
    if isinstance(image, Tensor):
        if image.ndim == 2:
            image = image.unsqueeze(0)
        if image.ndim != 3:
            raise InputError(f"image tensor of shape {tuple(image.shape)}; give one image (C, H, W)")
        if image.shape[0] > 4 and image.shape[-1] in (1, 3, 4):
            raise InputError(
                f"image tensor of shape {tuple(image.shape)} looks channels-last; "
                "give (C, H, W): image.permute(2, 0, 1)"
            )
        t = image.detach() if image.dtype == torch.uint8 else image.detach().float()
        what = f"image tensor of shape {tuple(image.shape)}"
    elif isinstance(image, np.ndarray):
        t, what = _array_tensor(image), f"image array of shape {image.shape}"
    elif _is_pil(image):
        return _pil_tensor(to_model_mode(image, channels))
    else:
        raise InputError(
            f"image of type {type(image).__name__}; give a file path, a PIL image, an (H, W[, C]) array "
            "or a (C, H, W) tensor"
        )
    if t.dtype != torch.uint8 and t.numel() and (float(t.min()) < -1e-3 or float(t.max()) > 1.0 + 1e-3):
        raise InputError(
            f"{what} holds values in [{float(t.min()):.3g}, {float(t.max()):.3g}]; give the raw image "
            "(uint8, or floats in [0, 1]): the preprocessing normalizes it"
        )
    return _tensor_channels(t, channels, what)


# ---------------------------------------------------------------------------------------------------------------
# geometry


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class Geometry:
    """Where the model's input lies on the photo: the resize and the crop one image went through.

    Attributes:
        original: ``(height, width)`` of the source image.
        resized: ``(height, width)`` after the resize.
        crop: ``(top, left, height, width)`` of the model's input in resized
            pixels (the whole resized image when there is no crop; a negative
            offset where the crop was larger than the image and padded).
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    crop: tuple[int, int, int, int]

    def to_original(self, maps: Tensor) -> Tensor:
        """Maps on the model's input, as values on the photo at its native resolution.

        Each map covers the model's input (the crop); any resolution is fine
        (a 7x7 layer map as well as a 224x224 one). Values are interpolated
        bilinearly (pixel centres aligned, ``align_corners=False``, edges
        clamped); a photo pixel whose centre falls outside the crop gets NaN.

        Args:
            maps: ``(..., h, w)`` floating maps.

        Returns:
            ``(..., H0, W0)`` float tensor (float32 unless ``maps`` is float64)
            on ``maps``' device, ``(H0, W0) = original``.
        """
        if maps.ndim < 2:
            raise InputError(f"maps of shape {tuple(maps.shape)}; expected (..., h, w)")
        lead, (h, w) = maps.shape[:-2], maps.shape[-2:]
        dtype = torch.float64 if maps.dtype == torch.float64 else torch.float32
        flat = maps.detach().reshape(-1, 1, h, w).to(dtype)
        (H0, W0), (Hr, Wr), (top, left, ch, cw) = self.original, self.resized, self.crop
        dev = maps.device
        # photo pixel centre -> resized coordinate -> position inside the crop, as a fraction of the crop
        ys = ((torch.arange(H0, device=dev, dtype=dtype) + 0.5) * (Hr / H0) - top) / ch
        xs = ((torch.arange(W0, device=dev, dtype=dtype) + 0.5) * (Wr / W0) - left) / cw
        grid = torch.stack(torch.meshgrid(xs * 2 - 1, ys * 2 - 1, indexing="xy"), dim=-1)
        out = F.grid_sample(flat, grid.expand(flat.shape[0], -1, -1, -1), mode="bilinear",
                            padding_mode="border", align_corners=False)  # fmt: skip
        inside = ((ys >= 0) & (ys <= 1)).view(-1, 1) & ((xs >= 0) & (xs <= 1)).view(1, -1)
        out = out.masked_fill(~inside, float("nan"))
        return out.reshape(*lead, H0, W0)

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-ready: ``{"original": [h, w], "resized": [h, w], "crop": [top, left, h, w]}``."""
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        """The geometry :meth:`to_dict` wrote."""
        try:
            return cls(_pair(d["original"]), _pair(d["resized"]), tuple(int(v) for v in d["crop"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise DataError(f"geometry {d!r} is not one Geometry.to_dict wrote ({e!r})") from None


def _resized_size(h: int, w: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """torchvision's ``Resize`` rule: an int sets the shorter side (the longer one truncated), a pair both."""
    if size is None:
        return h, w
    if isinstance(size, int):
        if w <= h:
            return int(size * h / w), size
        return size, int(size * w / h)
    return size


def _check_pixels(pre: Preprocess, original: tuple[int, int], resized: tuple[int, int]) -> None:
    """Refuse a resize or crop larger than Pillow's decompression-bomb limit, before it takes any memory.

    Raises:
        InputError: ``pre.size`` or ``pre.crop`` would make an image of more than
            ``PIL.Image.MAX_IMAGE_PIXELS`` pixels.
    """
    limit = _pixel_limit()
    if limit is None:
        return
    for name, value, (h, w) in (("size", pre.size, resized), ("crop", pre.crop, pre.crop or (0, 0))):
        if value is not None and h * w > limit:  # no size: the image's own, already read or given
            raise InputError(
                f"{name}={value!r} would make this {original[1]}x{original[0]} image {w}x{h} ({h * w:,} pixels), "
                f"more than the limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); give a smaller {name} "
                f"(--{name} N or HxW on the command line)"
            )


def _centre_crop(x: Tensor, crop: tuple[int, int]) -> tuple[Tensor, tuple[int, int, int, int]]:
    """torchvision's ``center_crop``: zero padding where the crop is larger, offsets ``round((H - h) / 2)``."""
    H, W = x.shape[-2:]
    ch, cw = crop
    pad_l, pad_t = max(cw - W, 0) // 2, max(ch - H, 0) // 2
    pad_r, pad_b = (max(cw - W, 0) + 1) // 2, (max(ch - H, 0) + 1) // 2
    if pad_l or pad_t or pad_r or pad_b:
        x = F.pad(x, (pad_l, pad_r, pad_t, pad_b))
    top = round((x.shape[-2] - ch) / 2.0)
    left = round((x.shape[-1] - cw) / 2.0)
    return x[..., top : top + ch, left : left + cw], (top - pad_t, left - pad_l, ch, cw)


# ---------------------------------------------------------------------------------------------------------------
# preprocessing


def _tuple_or_none(v: Any, cast: type) -> Any:
    return None if v is None else tuple(cast(u) for u in v)


@dataclass(frozen=True)
class Preprocess:
    """The input a model takes: mode, resize, centre crop, normalization.

    Calling it on an image returns the model's input ``(C, H, W)`` and the
    :class:`Geometry` that maps explanations back onto the image.

    Attributes:
        size: an int resizes the shorter side to ``size`` (torchvision's
            ``Resize(int)``); ``(h, w)`` resizes to exactly that; ``None``
            keeps the image's size.
        crop: a centre crop ``(h, w)`` after the resize, or ``None``.
        mean, std: per-channel normalization of the [0, 1] values, or ``None``.
        channels: 1 (grayscale) or 3 (RGB).
        interpolation: ``"bilinear"``, ``"bicubic"`` (both antialiased when
            shrinking, as Pillow and torchvision do) or ``"nearest"``.
        source: where these settings came from, for the record (not compared).
        fast_decode: let libjpeg decode a JPEG file at 1/2, 1/4 or 1/8 scale
            when it is resized to at most that (``Image.draft``): a
            10-megapixel photo was read 4x faster here; the values then differ
            from a full decode by 1-2 grey levels on average and by tens at
            sharp edges (the scaled decode samples slightly differently), so it
            is off by default. The geometry still refers to the full-size photo.
    """

    size: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3
    interpolation: str = "bilinear"
    source: str = field(default="flags", compare=False)
    fast_decode: bool = False

    def __post_init__(self) -> None:
        _check_channels(self.channels)
        if self.size is not None and not isinstance(self.size, int):
            object.__setattr__(self, "size", _pair(self.size))
        if self.crop is not None:
            object.__setattr__(self, "crop", _pair(self.crop))
        sizes = (self.size,) if isinstance(self.size, int) else (self.size or ())
        if any(v < 1 for v in (*sizes, *(self.crop or ()))):
            raise InputError(f"size={self.size!r}, crop={self.crop!r}: sizes must be positive")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation={self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None:
                v = tuple(float(u) for u in v)
                if len(v) == 1 and self.channels > 1:
                    v = v * self.channels
                if len(v) != self.channels:
                    raise InputError(f"{name}={v!r} has {len(v)} values for a {self.channels}-channel model")
                object.__setattr__(self, name, v)
        if self.std is not None and any(s <= 0 for s in self.std):
            raise InputError(f"std={self.std!r}: every std must be positive")

    def __call__(self, image: Any) -> tuple[Tensor, Geometry]:
        """The model's input for one image, and where it lies on the image.

        Args:
            image: a file path; a PIL image of any mode; an ``(H, W)`` or
                ``(H, W, C)`` array (uint8, uint16, or floats in [0, 1]); a
                ``(C, H, W)`` tensor (uint8 or floats in [0, 1]). Alpha is
                composited on white; colour is converted to the model's
                channels (ITU-R 601 luma for grayscale).

        Returns:
            ``(x, geometry)``: ``x`` is ``(channels, H, W)`` float32 (on the
            tensor's device for a tensor, else CPU).

        Raises:
            DataError: an unreadable file. InputError: an image of an
                unexpected shape, dtype or value range.
        """
        full = None
        if isinstance(image, (str, os.PathLike)):
            draft = (lambda h, w: _resized_size(h, w, self.size)) if self.fast_decode and self.size else None
            image, full = _open(Path(image), draft)
        if _is_pil(image):  # resized by Pillow before it becomes an array: torchvision's own path, and fast
            im = to_model_mode(image, self.channels)
            H0, W0 = full or (im.height, im.width)
            Hr, Wr = _resized_size(H0, W0, self.size) if H0 and W0 else (H0, W0)
            _check_pixels(self, (H0, W0), (Hr, Wr))
            if (Hr, Wr) != (H0, W0):
                im = im.resize((Wr, Hr), _pil_resample(self.interpolation))
            x = _pil_tensor(im)
        else:
            x = _as_tensor(image, self.channels)
            H0, W0 = x.shape[-2:]
            Hr, Wr = _resized_size(H0, W0, self.size) if H0 and W0 else (H0, W0)
            _check_pixels(self, (H0, W0), (Hr, Wr))
            if (Hr, Wr) != (H0, W0):
                x = self._resize(x, (Hr, Wr))
        if H0 < 1 or W0 < 1:
            raise InputError(f"image of size {W0}x{H0}; it has no pixels")
        box = (0, 0, Hr, Wr)
        if self.crop is not None:
            x, box = _centre_crop(x, self.crop)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if self.mean is not None or self.std is not None:
            mean = torch.tensor(self.mean or (0.0,) * self.channels, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            std = torch.tensor(self.std or (1.0,) * self.channels, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            x = (x - mean) / std
        return x.contiguous(), Geometry((H0, W0), (Hr, Wr), box)

    def _resize(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """Resize ``(C, H, W)``; 8-bit data is resized as uint8 (rounded, as Pillow does; much faster)."""
        if self.interpolation == "nearest":  # Pillow's NEAREST: the pixel whose centre is nearest
            return F.interpolate(x[None], size=size, mode="nearest-exact")[0]
        out = F.interpolate(x[None], size=size, mode=self.interpolation, align_corners=False, antialias=True)[0]
        if self.interpolation == "bicubic" and out.is_floating_point():
            out = out.clamp_(0.0, 1.0)  # as Pillow clips its overshoot (uint8 output is clipped already)
        return out

    def stack(self, images: Sequence[Any]) -> tuple[Tensor, list[Geometry]]:
        """Several images as one batch ``(N, C, H, W)``, with each one's geometry.

        Raises:
            InputError: the images come out at different sizes (no crop and no
                exact size: group them by size, or set ``crop``/``size=(h, w)``).
        """
        done = [self(im) for im in images]
        if not done:
            raise InputError("no images to stack")
        shapes = sorted({tuple(x.shape) for x, _ in done})
        if len(shapes) > 1:
            raise InputError(
                f"the images come out at {len(shapes)} sizes ({', '.join(f'{s[1]}x{s[2]}' for s in shapes[:4])}"
                f"{', ...' if len(shapes) > 4 else ''}); set a crop or an exact size (h, w), or batch them by size"
            )
        return torch.stack([x for x, _ in done]), [g for _, g in done]

    def input_shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` of every input when it is fixed (a crop, or an exact size); else ``None``."""
        hw = self.crop or (self.size if isinstance(self.size, tuple) else None)
        return None if hw is None else (self.channels, *hw)

    def describe(self) -> str:
        """One line: what is done to every image, and where the settings came from."""
        steps = []
        if isinstance(self.size, int):
            steps.append(f"resize shorter side to {self.size} ({self.interpolation})")
        elif self.size is not None:
            steps.append(f"resize to {self.size[0]}x{self.size[1]} ({self.interpolation})")
        else:
            steps.append("no resize")
        if self.crop is not None:
            steps.append(f"centre crop {self.crop[0]}x{self.crop[1]}")
        steps.append("RGB" if self.channels == 3 else "grayscale")
        if self.mean is None and self.std is None:
            steps.append("values in [0, 1]")
        else:
            fmt = lambda v: "(" + ", ".join(f"{u:.4g}" for u in v) + ")" if v is not None else "none"  # noqa: E731
            steps.append(f"mean {fmt(self.mean)} std {fmt(self.std)}")
        if self.fast_decode:
            steps.append("JPEG fast decode")
        return ", ".join(steps) + f" [{self.source}]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """The preprocessing :meth:`to_dict` wrote."""
        try:
            size = d.get("size")
            return cls(
                size=None if size is None else (int(size) if isinstance(size, (int, float)) else _pair(size)),
                crop=None if d.get("crop") is None else _pair(d["crop"]),
                mean=_tuple_or_none(d.get("mean"), float),
                std=_tuple_or_none(d.get("std"), float),
                channels=int(d.get("channels", 3)),
                interpolation=str(d.get("interpolation", "bilinear")),
                source=str(d.get("source", "flags")),
                fast_decode=bool(d.get("fast_decode", False)),
            )
        except (TypeError, ValueError, IndexError) as e:
            raise DataError(f"preprocessing {d!r} is not one Preprocess.to_dict wrote ({e!r})") from None

    def override(self, **changes: Any) -> Preprocess:
        """A copy with ``changes`` applied; a ``None`` value leaves that setting as it is."""
        given = {k: v for k, v in changes.items() if v is not None}
        return _replace(self, **given) if given else self


# ---------------------------------------------------------------------------------------------------------------
# image paths


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _pattern_base(pattern: str) -> Path:
    """The folder a glob pattern names: its leading parts without a wildcard (``photos/**/*.jpg`` -> ``photos``)."""
    parts = Path(pattern).parts
    k = next(i for i, part in enumerate(parts) if _has_magic(part))
    return Path(*parts[:k]) if k else Path(".")


def _inside(files: list[Path], folder: Path, skipped: list[Path]) -> list[Path]:
    """``files`` that resolve inside ``folder``; the others (links out of it) are added to ``skipped``."""
    inside, kept = folder.resolve(), list[Path]()
    for p in files:
        (kept if p.resolve().is_relative_to(inside) else skipped).append(p)
    return kept


def _folder_images(folder: Path, skipped: list[Path]) -> list[Path]:
    files = [
        p for p in sorted(folder.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]  # fmt: skip
    return _inside(files, folder, skipped)


def _skipped_note(skipped: list[Path]) -> str:
    return f" ({len(skipped)} linking outside it skipped: {skipped[0]}{', ...' if len(skipped) > 1 else ''})"


def expand_image_paths(specs: Sequence[str | Path], what: str = "images") -> list[Path]:
    """The image files named by files, folders and glob patterns, in order, each once.

    A file is taken as named, whatever its ending (Pillow decides when it is
    read). A folder gives the image files directly inside it
    (:data:`IMAGE_SUFFIXES`), sorted by name, leaving out hidden files (as
    patterns do) and links that resolve outside it. A pattern (``photos/*.jpg``, ``**`` for subfolders) gives its
    matching image files, sorted, leaving out links that resolve outside the folder the pattern
    names (its part before the first wildcard). Links left out are named in a warning.

    Raises:
        DataError: a name that is neither a file, a folder nor a pattern that
            matches; or nothing found at all (the message names ``what``).
    """
    if isinstance(specs, (str, Path)):
        specs = [specs]
    found: dict[Path, None] = {}
    skipped: list[Path] = []
    for spec in specs:
        p = Path(spec)
        outside = len(skipped)
        if p.is_dir():
            files = _folder_images(p, skipped)
            if not files:
                raise DataError(f"{what}: folder {p} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                                + (_skipped_note(skipped[outside:]) if skipped[outside:] else ""))  # fmt: skip
        elif p.exists():
            if not p.is_file():
                raise DataError(f"{what}: {p} is not a regular file or a folder")
            files = [p]
        elif _has_magic(str(spec)):
            files = [Path(m) for m in sorted(glob.glob(str(spec), recursive=True))
                     if Path(m).suffix.lower() in IMAGE_SUFFIXES and Path(m).is_file()]  # fmt: skip
            files = _inside(files, _pattern_base(str(spec)), skipped)
            if not files:
                raise DataError(
                    f"{what}: the pattern {str(spec)!r} matches no image files ({', '.join(IMAGE_SUFFIXES)})"
                    + (_skipped_note(skipped[outside:]) if skipped[outside:] else "")
                )
        else:
            raise DataError(f"{what}: {p} does not exist; give image files, folders or patterns like 'photos/*.jpg'")
        found.update(dict.fromkeys(files))
    skipped = [p for p in dict.fromkeys(skipped) if p not in found]  # each once; one named as a file is not skipped
    if skipped:
        warnings.warn(f"{what}: skipped {len(skipped)} file(s) that link outside the folder naming them (first: "
                      f"{skipped[0]} -> {skipped[0].resolve()}); copy them in, or name them as files", stacklevel=2)
    if not found:
        raise DataError(f"{what}: no image files given")
    return list(found)
