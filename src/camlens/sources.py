"""Where the model and the items come from: checkpoints, factories, datasets by name."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from camlens.errors import DataError, InputError

if TYPE_CHECKING:
    from camlens.preprocess import Preprocess

__all__ = [
    "ZOO_PREFIXES",
    "Collated",
    "ImageFolder",
    "collate",
    "load_dataset",
    "load_factory",
    "load_model",
    "model_fingerprint",
    "resolve_preprocess",
    "split_item",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_factory(spec: str, what: str) -> Callable[..., Any]:
    """The callable named by ``'package.module:function'`` or ``'path/to/file.py:function'``.

    Args:
        spec: the factory, module and attribute separated by the last ``':'``.
        what: the argument's name, for error messages (``"model"``, ``"data"``).

    Raises:
        InputError: the spec is malformed, the module cannot be imported, does not parse, or has no such
            callable. An error the module's own code raises while it is imported propagates as it is.
    """
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise InputError(f"{what}={spec!r} is not a factory 'module:function' (or 'file.py:function')")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name).resolve()
            if not path.is_file():
                raise InputError(f"{what}={spec!r}: file {path} does not exist")
            key = "camlens_factory_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
            module = sys.modules.get(key)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(key, path)
                assert loader_spec is not None and loader_spec.loader is not None
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[key] = module
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:  # not kept half-run: the next load runs the (fixed) file again
                    del sys.modules[key]
                    raise
        else:
            module = importlib.import_module(mod_name)
    except ImportError as e:
        raise InputError(f"{what}={spec!r}: cannot import {mod_name!r} ({e}); is it on PYTHONPATH?") from None
    except SyntaxError as e:
        raise InputError(f"{what}={spec!r}: {e.filename or mod_name}, line {e.lineno}: {e.msg} ({type(e).__name__}); "
                         "fix the file and run again") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"{what}={spec!r}: {mod_name!r} has no callable {attr!r}")
    return fn


def _looks_like_factory(spec: str) -> bool:
    head, sep, tail = spec.rpartition(":")
    # 'C:\\folder' is a Windows path, not a factory; a factory's tail is an identifier.
    return bool(sep and head and tail.isidentifier() and len(head) > 1)


def _plugins(group: str) -> dict[str, Callable[..., Any]]:
    """The loaders other packages register under the entry-point group ``group`` (name -> callable).

    This is how a package adds named datasets or folder formats without camlens
    importing it: camlens' own demo registers ``fashion-mnist``, ``idx`` and its
    checkpoint folders this way in ``pyproject.toml``.
    """
    from importlib.metadata import entry_points

    return {ep.name: ep.load() for ep in sorted(entry_points(group=group), key=lambda ep: ep.name)}


ZOO_PREFIXES = ("torchvision:", "timm:", "hf:")


def _in_channels(model: nn.Module) -> int | None:
    """The input channels of the model's first convolution, when it has one taking 1 or 3."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None and conv.in_channels in (1, 3) else None


def _own_model(spec: str, path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]] | None:
    """A checkpoint's, an installed folder loader's or a factory's model; ``None`` for a save_pretrained folder."""
    if path.is_dir():
        for loader in _plugins("camlens.model_folders").values():
            found = loader(path, device)
            if found is not None:
                return found
        from camlens.zoo.hf import is_hf_folder

        if is_hf_folder(path):
            return None  # built by the zoo loader, which knows about weights
        raise InputError(
            f"model={spec!r} is a folder but is not a camlens checkpoint (no meta.json), a folder written by "
            "transformers' save_pretrained (no config.json) or one an installed loader reads; train one with "
            "`camlens train --out FOLDER`, or pass a factory 'mypkg.models:build' or 'torchvision:resnet18'"
        )
    if _looks_like_factory(spec):
        model = load_factory(spec, "model")()
        if not isinstance(model, nn.Module):
            raise InputError(f"model={spec!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model, {"kind": "factory", "in_channels": _in_channels(model)}
    raise InputError(
        f"model={spec!r} is neither a checkpoint folder or a save_pretrained folder (no such folder), a factory "
        "'module:function' or 'file.py:function', nor 'torchvision:NAME', 'timm:NAME' or 'hf:ID'; train one with "
        "`camlens train --out FOLDER`, or pass e.g. 'mypkg.models:build' or 'torchvision:resnet18'"
    )


#: the seed ``weights="none"`` draws a zoo model's random weights from: the same weights on every run, so
#: a run with them repeats and resumes (``camlens explain-dataset``); the caller's random state is left as it was.
RANDOM_WEIGHTS_SEED = 20_240_531


def _zoo_model(spec: str, path: Path, weights: str | None) -> tuple[nn.Module, dict[str, Any]]:
    if weights != "none":
        return _zoo_build(spec, path, weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return _zoo_build(spec, path, weights)


def _zoo_build(spec: str, path: Path, weights: str | None) -> tuple[nn.Module, dict[str, Any]]:
    prefix, _, name = spec.partition(":")
    if not spec.startswith(ZOO_PREFIXES):  # a save_pretrained folder
        from camlens.zoo.hf import load_hf

        return load_hf(str(path), weights, spec, local_only=True)
    if not name:
        raise InputError(f"model={spec!r} names no model after {prefix + ':'!r}; e.g. 'torchvision:resnet18'")
    if prefix == "torchvision":
        from camlens.zoo.torchvision import load_torchvision

        return load_torchvision(name, weights, spec)
    if prefix == "timm":
        from camlens.zoo.timm import load_timm

        return load_timm(name, weights, spec)
    from camlens.zoo.hf import load_hf

    return load_hf(name, weights, spec, local_only=True)


def load_model(spec: str, device: torch.device, *, weights: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model named by ``spec``, in eval mode on ``device``.

    Every command loads its model here. Forms of ``spec``:

    - a camlens checkpoint folder (or a folder another installed package reads:
      loaders registered under the ``camlens.model_folders`` entry-point group);
    - a factory ``'package.module:function'`` or ``'path/to/file.py:function'``;
    - ``'torchvision:NAME'`` (any ``torchvision.models`` builder) and
      ``'timm:NAME'`` (any timm architecture, a pretrained tag allowed);
    - a folder written by transformers' ``save_pretrained`` (``config.json``),
      or ``'hf:ID'`` from the local Hugging Face cache (never downloaded).

    Args:
        spec: the model, as above.
        device: where to put it.
        weights: ``None`` for the model's own weights (the zoos' pretrained
            ones, from their cache or downloaded; a folder's saved weights; a
            factory's or checkpoint's as built); ``"none"`` for random weights
            (zoo models); or a ``.safetensors`` / ``torch.save`` state-dict file
            (read with ``weights_only=True``; nothing else is unpickled), for any form.

    Returns:
        ``(model, info)``: ``info`` holds ``"spec"``, ``"kind"`` (``"checkpoint"``,
        ``"factory"``, ``"torchvision"``, ``"timm"`` or ``"hf"``), ``"classes"``
        (class names, or ``None``), ``"preprocess"`` (a
        :class:`~camlens.preprocess.Preprocess` the model's configuration
        records, or ``None``: the caller uses flags; see :func:`resolve_preprocess`)
        and ``"weights"`` (which weights were used), with what the loader adds.

    Raises:
        InputError, DataError: the spec names nothing usable; the weights are
            not available (offline and not cached: the message says so) or do not fit.
    """
    from camlens.zoo.weights import apply_weights, check_weights_arg, read_weights

    weights = check_weights_arg(weights)
    path = Path(spec)
    found = None if spec.startswith(ZOO_PREFIXES) else _own_model(spec, path, device)
    if found is None:
        model, info = _zoo_model(spec, path, weights)
    else:
        model, info = found
        if weights == "none":
            raise InputError(
                f"weights='none' is for zoo models (torchvision:, timm:, hf:, save_pretrained folders); "
                f"model={spec!r} is a {info.get('kind', 'model')} that builds its own weights: omit --weights "
                "or give a weights file"
            )
        if weights is not None:
            apply_weights(model, read_weights(weights), weights, spec)
        used = f"file {weights}" if weights else f"as the {info.get('kind', 'loader')} built it"
        info = {"classes": None, "preprocess": None, **info, "weights": used}
    return model.to(device).eval(), {"spec": spec, **info}


def resolve_preprocess(
    info: dict[str, Any],
    *,
    size: int | tuple[int, int] | None = None,
    crop: int | tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels: int | None = None,
    interpolation: str | None = None,
) -> Preprocess:
    """The preprocessing to use: the model's own (``info["preprocess"]``), overridden by every setting given.

    A model that records none (a factory, a folder without a processor) gets
    the settings given alone, on defaults that do nothing (no resize, no
    normalization, ``channels`` or the model's first convolution's, else 3).

    Example:
        >>> resolve_preprocess({"preprocess": None}, size=224, mean=(0.5,), std=(0.5,)).describe()
        'resize shorter side to 224 (bilinear), RGB, mean (0.5, 0.5, 0.5) std (0.5, 0.5, 0.5) [flags (size, mean, std)]'
    """
    from camlens.preprocess import Preprocess

    crop_hw = (crop, crop) if isinstance(crop, int) else crop
    flags = {"size": size, "crop": crop_hw, "mean": mean, "std": std, "channels": channels,
             "interpolation": interpolation}  # fmt: skip
    given = [k for k, v in flags.items() if v is not None]
    own = info.get("preprocess")
    if own is None:
        base = Preprocess(channels=channels or int(info.get("in_channels") or 3), source="flags")
        if not given:
            return Preprocess(channels=base.channels,
                              source="defaults: the model records no preprocessing; set --size, --mean, --std")
        return base.override(**flags, source=f"flags ({', '.join(given)})")
    if not given:
        return own
    if channels is not None and channels != own.channels and mean is None and own.mean is not None:
        raise InputError(f"channels={channels} differs from the model's {own.channels}: give --mean and --std "
                         f"for {channels} channel(s) too (the model's are {own.mean} and {own.std})")  # fmt: skip
    return own.override(**flags, source=f"{own.source}, with flags ({', '.join(given)})")


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every parameter and buffer."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Collated(tuple):
    """A batch a dataset's ``__getitems__`` already collated (``(images, labels)``)."""


def collate(data: Any) -> Any:
    """``default_collate``, except for a batch the dataset already collated."""
    from torch.utils.data import default_collate

    return tuple(data) if isinstance(data, Collated) else default_collate(data)


class ImageFolder(Dataset):
    """Images laid out one subfolder per class, or a flat folder of images, as ``(image (C, H, W), label)``.

    Classes are the subfolder names in sorted order; files are sorted by path,
    so item ids are stable. A folder with image files and no subfolder holding
    any is one unlabelled set: ``classes`` is empty and every label is -1 (what
    camlens' dataset runs write for an item without a label); the methods and
    the metrics explain the model's prediction, so they need no label. Pillow is imported when the first image is read,
    through :func:`camlens.viz.images.open_image` (bomb limit, 16-bit data kept).

    Without ``preprocess`` an image is converted to ``mode`` and kept at its own
    size, values in [0, 1]; with one (a :class:`camlens.preprocess.Preprocess`)
    it becomes exactly what the model takes, and :meth:`explain_item` also gives
    the item's geometry (how the photo was resized and cropped).

    Nothing outside ``root`` is read: a file or class folder that is a symbolic
    link resolving outside it is skipped (``skipped_links`` lists them, and a
    warning says how many).

    Args:
        root: the folder of class folders, or of image files.
        mode: Pillow mode to convert every image to (``"RGB"``, ``"L"``) when there is no ``preprocess``.
        preprocess: applied to every image file (``preprocess(path) -> (image, geometry)``).

    Raises:
        DataError: no images; or, when an item is read, a corrupt or oversized
            file (the message names it).
    """

    def __init__(self, root: str | Path, mode: str = "RGB", preprocess: Any | None = None) -> None:
        self.root = Path(root)
        self.mode = mode
        self.preprocess = preprocess
        inside = self.root.resolve()
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.files: list[tuple[Path, int]] = []
        self.skipped_links: list[Path] = []
        for label, name in enumerate(self.classes):
            self._add(sorted((self.root / name).rglob("*")), label, inside)
        if not self.files:  # no class folder holds an image: a flat folder of unlabelled images
            self.classes = []
            self._add(sorted(self.root.iterdir()), -1, inside)
        if self.skipped_links:
            warnings.warn(
                f"image folder {self.root}: skipped {len(self.skipped_links)} file(s) that link outside it "
                f"(first: {self.skipped_links[0]}); copy them in to use them",
                stacklevel=2,
            )
        if not self.files:
            raise DataError(
                f"image folder {self.root} holds no images ({', '.join(IMAGE_SUFFIXES)}), in it or in class "
                "subfolders; put the image files in it, or lay it out as ROOT/<class name>/<image files>"
                + (f" ({len(self.skipped_links)} linking outside it were skipped)" if self.skipped_links else "")
            )

    def _add(self, paths: list[Path], label: int, inside: Path) -> None:
        """Add the image files among ``paths`` with ``label``; one linking outside ``inside`` is skipped."""
        for f in paths:
            if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
                continue
            if f.resolve().is_relative_to(inside):
                self.files.append((f, label))
            else:
                self.skipped_links.append(f)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        item = self.explain_item(i, self.preprocess)
        return item["image"], item["label"]

    def explain_item(self, i: int, preprocess: Any | None = None) -> dict[str, Any]:
        """Item ``i`` as ``{"image": (C, H, W), "label": int, "geometry": (8,) int64}`` through ``preprocess``.

        ``geometry`` holds the photo's ``(h, w)``, the resized ``(h, w)`` and the crop ``(top, left, h, w)``
        (see :class:`camlens.preprocess.Geometry`); without ``preprocess`` the image is its own size.
        """
        from camlens.viz.images import image_tensor, open_image

        path, label = self.files[i]
        if preprocess is not None:
            image, g = preprocess(path)
            geometry = torch.tensor([*g.original, *g.resized, *g.crop], dtype=torch.int64)
            return {"image": image, "label": label, "geometry": geometry}
        channels = {"L": 1, "RGB": 3}.get(self.mode)
        image = image_tensor(open_image(path, self.mode), channels)
        h, w = image.shape[-2:]
        return {"image": image, "label": label, "geometry": torch.tensor([h, w, h, w, 0, 0, h, w])}

    def relative_path(self, i: int) -> str:
        """Item ``i``'s file, relative to ``root``, with ``/`` separators."""
        return self.files[i][0].relative_to(self.root).as_posix()

    def original_size(self, i: int) -> tuple[int, int]:
        """Item ``i``'s upright ``(height, width)`` from its file's header (the pixels are not decoded).

        Raises:
            DataError: the file is not an image Pillow can read (naming it).
        """
        from camlens.viz.images import _pil

        Image, path = _pil(), self.files[i][0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # reading it says so, with the fix
                with Image.open(path) as im:
                    w, h = im.size
                    if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: turned upright when read
                        w, h = h, w
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"image file {path} is corrupt or not an image Pillow can read ({e})") from None
        return int(h), int(w)


def load_dataset(spec: str) -> tuple[Dataset, dict[str, Any]]:
    """The dataset named by ``spec``.

    Forms: ``NAME[:ARGS]`` for a dataset registered under the ``camlens.datasets``
    entry-point group (camlens' demo registers ``fashion-mnist:test``,
    ``fashion-mnist:train`` and ``idx:FOLDER[:split]``); a folder that a loader
    under ``camlens.data_folders`` recognises (a folder of IDX files), else a
    folder with one subfolder of images per class; or a factory ``module:function``
    returning a ``Dataset``.

    Returns:
        ``(dataset, info)``; ``info["object_mask"]`` says whether nonzero pixels
        mark the object (true for Fashion-MNIST-style data on a zero background).

    Raises:
        InputError: the spec names nothing usable.
    """
    named = _plugins("camlens.datasets")
    name, _, rest = spec.partition(":")
    if name in named:
        ds, info = named[name](rest)
        return ds, {"kind": name, "spec": spec, **info}
    path = Path(spec)
    if path.is_dir():
        for kind, loader in _plugins("camlens.data_folders").items():
            found = loader(path)
            if found is not None:
                ds, info = found
                return ds, {"kind": kind, "spec": spec, **info}
        folder = ImageFolder(path)
        skipped = {"skipped_links": len(folder.skipped_links)} if folder.skipped_links else {}
        return folder, {"kind": "image-folder", "spec": spec, "object_mask": False, **skipped}
    if _looks_like_factory(spec):
        ds = load_factory(spec, "data")()
        if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
            raise InputError(f"data={spec!r} returned {type(ds).__name__}, not a map-style torch Dataset with a length")
        return ds, {"kind": "factory", "spec": spec, "object_mask": bool(getattr(ds, "object_mask", False))}
    names = ", ".join(f"'{n}:...'" for n in named) or "none installed"
    raise InputError(
        f"data={spec!r} is not a registered dataset ({names}), an existing folder "
        "(IDX files or one image subfolder per class) or a factory 'module:function'"
    )


def split_item(batch: Any) -> tuple[Tensor, Tensor | None]:
    """``(images, labels)`` from a collated batch: ``(x, y)``, ``[x, y]``, ``{'image', 'label'}`` or ``x``."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, dict):
        x = batch.get("image", batch.get("x"))
        y = batch.get("label", batch.get("y"))
    elif isinstance(batch, (tuple, list)) and batch:
        x, y = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        x, y = None, None
    if not isinstance(x, Tensor):
        raise InputError(
            f"the dataset's items collate to {type(batch).__name__}; expected an image tensor, "
            "(image, label), or a dict with 'image' and 'label'"
        )
    if y is not None and not isinstance(y, Tensor):
        y = torch.as_tensor(y)
    return x, y
