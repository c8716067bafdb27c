"""``camlens explain``: a model's predictions on photos (or dataset items), maps drawn back on each photo.

Images of any size go through the model's preprocessing
(:class:`camlens.preprocess.Preprocess`), are batched by the size they have
after it, explained by every ``--methods`` x ``--layers`` in one call per
method and batch, and drawn back on the photo at its own resolution.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camlens._util.files import atomic_write_bytes, prepare_output_folder, writing
from camlens._util.lock import folder_lock
from camlens._util.optional import optional_import
from camlens.cli._model_args import channels_as_flags
from camlens.core.targets import select_output
from camlens.viz.explained import Explained, explain_batch, title_for, write_figures

__all__ = [
    "Explained",
    "add_arguments",
    "class_names_for",
    "explain_batch",
    "parse_target",
    "read_labels",
    "run",
    "title_for",
    "write_figures",
]


def parse_target(value: str, class_names: Sequence[str]) -> int | None:
    """``"predicted"`` -> None; a class index or name -> its index.

    Raises:
        TargetError: neither.
    """
    from camlens.errors import TargetError

    if value == "predicted":
        return None
    if value.isdigit() and int(value) < len(class_names):
        return int(value)
    lowered = [c.lower() for c in class_names]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    shown = ", ".join(class_names[:20]) + (f", ... ({len(class_names)} in all)" if len(class_names) > 20 else "")
    raise TargetError(f"target={value!r} is not 'predicted', a class index 0..{len(class_names) - 1} "
                      f"or a class name ({shown})")  # fmt: skip


def read_labels(path: str) -> list[str]:
    """Class names from a text file, one per line (blank lines at the end ignored).

    Raises:
        InputError: the file cannot be read, or holds no names.
    """
    from camlens.errors import InputError

    try:
        names = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--labels {path}: cannot read it ({e}); give a UTF-8 text file, one class name a line"
                         ) from None
    while names and not names[-1].strip():
        names.pop()
    if not names:
        raise InputError(f"--labels {path} holds no class names; give one class name a line")
    return [n.strip() for n in names]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from camlens._util.device import DEVICE_HELP
    from camlens.cli._model_args import add_model_arguments
    from camlens.methods import METHODS

    parser.add_argument("model", help="a checkpoint folder, 'module:function' / 'file.py:function', "
                        "'torchvision:NAME', 'timm:NAME', a save_pretrained folder or 'hf:ID'")  # fmt: skip
    parser.add_argument("images", nargs="*", default=[], metavar="IMAGE",
                        help="image files, folders (their images) or glob patterns; any size and Pillow mode")
    parser.add_argument("--image", nargs="+", default=[], metavar="FILE", help="more images, as IMAGE")
    parser.add_argument("--index", type=int, nargs="+", default=[], metavar="I", help="item indices of --data")
    parser.add_argument("--invert", action="store_true", help="invert image files (dark item on light background)")
    parser.add_argument("--data", default="fashion-mnist:test", metavar="SPEC",
                        help="the dataset --index reads: 'fashion-mnist:test' | 'fashion-mnist:train' | "
                        "'idx:FOLDER[:split]' | a folder of IDX files or of one image subfolder per class | "
                        "a factory 'module:function' returning a torch Dataset (default: %(default)s)")
    parser.add_argument("--methods", "--method", nargs="+", default=["gradcam"], choices=sorted(METHODS),
                        metavar="METHOD", help=f"CAM methods (default gradcam): {', '.join(sorted(METHODS))}")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="layer names (default: the automatic choice, as `camlens layers` shows it)")
    parser.add_argument("--target", default="predicted", help="'predicted', a class index or a class name")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="explain the K most probable classes")
    parser.add_argument("--labels", default=None, metavar="FILE", help="class names, one a line (default: the "
                        "model's own, else the dataset's, else indices)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per call (default 16)")
    parser.add_argument("--colormap", default="jet", help="matplotlib colormap (default jet)")
    parser.add_argument("--alpha", type=float, default=0.5, help="the map's weight in overlays (default 0.5)")
    parser.add_argument("--save-overlays", action="store_true",
                        help="write overlays/<stem>_<method>_<layer>_<class>.png at each photo's own size")
    parser.add_argument("--save-maps", action="store_true",
                        help="write maps/<stem>.safetensors: the raw maps with the preprocessing and geometry")
    parser.add_argument("--no-figures", action="store_true", help="no figures, grid or HTML page")
    parser.add_argument("--out", default="camlens-explain", metavar="DIR", help="output folder")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_model_arguments(parser)


@dataclass
class _Item:
    """One image to explain: its output name, source, photo (what is drawn), model input and geometry."""

    name: str
    source: str
    photo: Any
    x: Tensor
    geometry: Any
    label: int = -1


def _dataset_items(spec: str, index: list[int]) -> tuple[Tensor, Tensor, Any]:
    """Items ``index`` of the dataset ``spec``: ``(images (N, C, H, W), labels (N,) or -1, the dataset)``."""
    from camlens.errors import InputError
    from camlens.sources import collate, load_dataset, split_item

    ds, _ = load_dataset(spec)
    n = len(ds)  # type: ignore[arg-type]
    bad = [i for i in index if not 0 <= i < n]
    if bad:
        raise InputError(f"--index {bad} out of range; the test set has {n} images (indices 0..{n - 1}; "
                         f"--data {spec!r})")  # fmt: skip
    x, y = split_item(collate([ds[i] for i in index]))
    labels = torch.full((len(index),), -1, dtype=torch.long) if y is None else y.long()
    return x.float(), labels, ds


def _inverted(photo: Any, channels: int) -> Any:
    """The photo in the model's mode with every value ``v`` replaced by ``255 - v``."""
    import numpy as np

    from camlens.preprocess import to_model_mode

    Image = optional_import("PIL.Image", "plot", "image files")
    im = to_model_mode(photo, channels)
    arr = np.asarray(im)
    return Image.fromarray((255 - arr) if arr.dtype == np.uint8 else (np.float32(255.0) - arr), im.mode)


def _photo_items(paths: list[Path], names: list[str], pre: Any, invert: bool) -> Iterator[_Item]:
    """Each file decoded (upright by its EXIF orientation) and prepared by ``pre``, one at a time."""
    from camlens.preprocess import open_photo

    for path, name in zip(paths, names, strict=True):
        photo = open_photo(path)
        if invert:
            photo = _inverted(photo, pre.channels)
        x, geometry = pre(photo)
        yield _Item(name, str(path), photo, x, geometry)


def _check_apart(out: Path, paths: list[Path]) -> None:
    """Refuse images that lie where the run writes (``out``, ``out/overlays``, ``out/maps``): they would be overwritten.

    Raises:
        InputError: an image file is in one of those folders (as named, or after its links are followed).
    """
    from camlens.errors import InputError

    written = {out.resolve() / sub for sub in ("", "overlays", "maps")}
    for p in paths:
        if p.absolute().parent.resolve() in written or p.resolve().parent in written:
            raise InputError(f"--out {out} holds the image {p}: the run's figures (<out>/<photo's stem>.png) would be "
                             "written among the photos, over any of the same name; give an --out folder apart from "
                             "the images, e.g. --out camlens-explain")  # fmt: skip


def _items(args: argparse.Namespace, pre: Any, out: Path) -> tuple[Iterator[_Item], list[str], Any]:
    """The images to explain (``--index`` items first, then files, lazily), their names, the dataset or None."""
    from camlens.preprocess import Geometry, expand_image_paths
    from camlens.viz.explained import display_image
    from camlens.viz.photos import output_stems

    paths = expand_image_paths([*args.images, *args.image], "images") if args.images or args.image else []
    _check_apart(out, paths)
    names = output_stems([f"test-{i:05d}" for i in args.index] + [p.stem for p in paths])
    ds, first = None, []
    if args.index:
        x, labels, ds = _dataset_items(args.data, args.index)
        for k, i in enumerate(args.index):
            h, w = x.shape[-2:]
            first.append(_Item(names[k], f"item {i} of {args.data}", display_image(x[k]), x[k],
                               Geometry((h, w), (h, w), (0, 0, h, w)), int(labels[k])))  # fmt: skip

    def every() -> Iterator[_Item]:
        yield from first
        yield from _photo_items(paths, names[len(first) :], pre, args.invert)

    return every(), names, ds


def _prefetched(items: Iterator[_Item], ahead: int) -> Iterator[_Item]:
    """``items`` produced by one background thread, at most ``ahead`` in advance: decoding overlaps the model.

    An error while reading (a corrupt file) is raised here, in the caller's thread, when its turn comes.
    """
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, ahead))
    end, stop = object(), threading.Event()

    def put(x: Any) -> bool:
        while not stop.is_set():  # the caller may stop early (an error): never block on a full queue then
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as e:  # handed to the caller, raised there
            put(e)

    thread = threading.Thread(target=produce, name="camlens-explain-read", daemon=True)
    thread.start()
    try:
        while (got := q.get()) is not end:
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        thread.join()


def _batches(items: Iterator[_Item], size: int) -> Iterator[list[_Item]]:
    """Items grouped by their model input's shape, ``size`` at most per group, in arrival order per shape."""
    buckets: dict[tuple[int, ...], list[_Item]] = {}
    for item in items:
        key = tuple(item.x.shape)
        bucket = buckets.setdefault(key, [])
        bucket.append(item)
        if len(bucket) == size:
            yield buckets.pop(key)
    yield from buckets.values()


def class_names_for(model: nn.Module, info: dict[str, Any], ds: Any, x: Tensor) -> list[str]:
    """The model's class names (``info["classes"]``), else the dataset's ``classes``, else ``"0", "1", ...``."""
    for names in (info.get("classes"), getattr(ds, "classes", None)):
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
    with torch.no_grad():
        n = int(select_output(model(x[:1])).shape[1])
    return [str(i) for i in range(n)]


def run(args: argparse.Namespace) -> int:
    from camlens._util.device import select_device
    from camlens.errors import InputError, TargetError
    from camlens.viz.figures import check_colormap

    if not args.index and not args.image and not args.images:
        raise InputError("nothing to explain: give image files, folders or patterns (IMAGE ...), "
                         "or --index I [I ...] (items of --data)")  # fmt: skip
    if args.top_k is not None and args.top_k < 1:
        raise TargetError(f"--top-k {args.top_k} must be 1 or more: the number of most probable classes to explain")
    if args.top_k is not None and args.target != "predicted":
        raise TargetError(f"--target {args.target!r} and --top-k {args.top_k} both given; use one of them")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be 1 or more")
    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha {args.alpha} must be in [0, 1]")
    twice = [n for n in dict.fromkeys(args.layers or []) if args.layers.count(n) > 1]
    if twice:
        raise InputError(f"--layers {' '.join(args.layers)} names {', '.join(twice)} more than once; give each layer "
                         "once (each is explained once per image)")  # fmt: skip
    check_colormap(args.colormap)
    device = select_device(args.device)
    out = prepare_output_folder(args.out, "--out")  # before any work: a file or an unwritable folder fails now
    with folder_lock(out, "camlens explain"), channels_as_flags(args, _channel_fixes(args)):
        return _explain_into(out, args, device)


def _channel_fixes(args: argparse.Namespace) -> str:
    """What gives the model images of the channels it takes (``{n}``): for image files, for ``--index`` items."""
    fixes = []
    if args.images or args.image:
        fixes.append("image files are converted to the channels of the preprocessing (the 'preprocess:' line): "
                     "pass --channels {n}")  # fmt: skip
    if args.index:
        fixes.append(f"--index items of --data {args.data} are used as they are: give --data whose images have "
                     "{n} channel(s), or explain image files")  # fmt: skip
    return "; ".join(fixes)


def _known_names(args: argparse.Namespace, info: dict[str, Any], ds: Any) -> list[str] | None:
    """``--labels``, else the model's class names, else the dataset's; None when none is known before a run."""
    if args.labels is not None:
        return read_labels(args.labels)
    for names in (info.get("classes"), getattr(ds, "classes", None)):
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
    return None


def _target(value: str, names: list[str] | None) -> int | None:
    from camlens.errors import TargetError

    if names is not None or value == "predicted":
        return parse_target(value, names or [])
    if value.isdigit():
        return int(value)
    if value.startswith("-") and value[1:].isdigit():
        raise TargetError(f"target={value!r} is a negative class index; give a class index from 0, or 'predicted'")
    raise TargetError(f"target={value!r} is a class name, but the model has no class names; give a class index, "
                      "or the names with --labels FILE (one a line)")  # fmt: skip


def _uses_layers(method: str) -> bool:
    from camlens.methods import get_method, takes_chosen_layer

    return takes_chosen_layer(get_method(method))


class _Run:
    """One ``camlens explain`` run: batches explained by every method, results written as they come."""

    def __init__(self, out: Path, args: argparse.Namespace, device: torch.device) -> None:
        from camlens.cli._model_args import model_from_args

        self.out, self.args, self.device = out, args, device
        self.model, self.info, self.pre = model_from_args(args, device)
        self.cams: dict[str, Any] = {}
        self.names: list[str] | None = None
        self.results: list[Any] = []
        self.order: dict[str, int] = {}
        self.layers_line = ""
        self.dataset_items: set[str] = set()
        self.figures: dict[str, bytes] = {}
        self.counts = {"figure": 0, "overlay": 0, "map file": 0}

    def run(self) -> int:
        items, order, ds = _items(self.args, self.pre, self.out)
        self.order = {name: k for k, name in enumerate(order)}
        self.dataset_items = set(order[: len(self.args.index)])
        self.names = _known_names(self.args, self.info, ds)
        target = _target(self.args.target, self.names)
        with writing(self.out, "the files written before it are complete"):
            for batch in _batches(_prefetched(items, self.args.batch_size), self.args.batch_size):
                self._write([*self._explain(batch, target)])
            self._finish()
        for r in self.results:
            print(self._title(r))
        done = ", ".join(f"{v} {k}(s)" for k, v in self.counts.items() if v)
        print(f"explained {len(order)} image(s); wrote {done or 'nothing'} to {self.out}/")
        return 0

    def _setup(self, x: Tensor) -> None:
        """The layers (the automatic choice on the first batch, once for all) and one explainer per method."""
        from camlens.core.autolayer import choose_layer
        from camlens.methods import get_method

        layers = self.args.layers
        if layers is None and any(_uses_layers(m) for m in self.args.methods):
            layers = [choose_layer(self.model, x)]
            how = "automatic choice; others with --layers, candidates in `camlens layers`"
        else:
            how = "given" if layers else "none chosen: guided backpropagation and FullGrad explain the input"
        given = self.args.layers is not None  # a chosen layer is not for FullGrad nor guided backprop (None there)
        self.cams = {m: get_method(m)(self.model, layers=layers if given or _uses_layers(m) else None)
                     for m in dict.fromkeys(self.args.methods)}  # fmt: skip
        self._warn_unused_layers()
        self.layers_line = f"{', '.join(layers or ['input'])} ({how})"
        print(f"layers: {self.layers_line}")

    def _warn_unused_layers(self) -> None:
        """One warning naming the methods that take no layers (guided backpropagation) when --layers was given."""
        free = [m for m, cam in self.cams.items() if not cam.layers]
        if self.args.layers and free:
            rest = "; omit --layers" if len(free) == len(self.cams) else ""
            warnings.warn(f"--layers {' '.join(self.args.layers)} is ignored for {', '.join(free)}: "
                          f"{'it takes' if len(free) == 1 else 'they take'} no layers{rest}", stacklevel=2)  # fmt: skip

    def _explain(self, batch: list[_Item], target: int | None) -> Iterator[Any]:
        from camlens.viz.photos import PhotoResult

        x = torch.stack([it.x for it in batch]).to(self.device)
        if not self.cams:
            self._setup(x)
        classes: Tensor | None = None
        maps: dict[str, Tensor] = {}
        for method, cam in self.cams.items():
            if classes is None:  # the first method picks the classes; the others explain the same ones
                res = cam(x, None if target is None else [target] * len(batch), top_k=self.args.top_k)
                logits = res.logits
            else:
                res = cam(x, classes if classes.shape[1] > 1 else classes[:, 0])
            assert res.targets is not None  # class targets always have indices
            flat = res.targets.ndim
            channels = any(v.ndim == flat + 3 for v in res.maps.values())  # guided: signed (N, [K,] C, H, W)
            for layer, m in (res.raw if channels else res.maps).items():
                maps[f"{method} · {layer}"] = (m if flat == 2 else m[:, None]).detach().float().cpu()
            if classes is None:
                classes = res.targets if flat == 2 else res.targets[:, None]
        assert classes is not None
        probs = torch.softmax(logits.detach().float(), dim=1).cpu()
        self._check_names(probs.shape[1])
        pred = logits.detach().argmax(dim=1).cpu()  # the class the methods explain: softmax can round to ties
        pred_prob = probs.gather(1, pred[:, None])[:, 0]
        classes = classes.cpu()
        for i, it in enumerate(batch):
            yield PhotoResult(it.name, it.source, it.photo, it.geometry, it.label, int(pred[i]),
                              float(pred_prob[i]), classes[i].tolist(), probs[i, classes[i]].tolist(),
                              {k: v[i] for k, v in maps.items()})  # fmt: skip

    def _check_names(self, n: int) -> None:
        from camlens.errors import InputError

        if self.names is None:
            self.names = [str(i) for i in range(n)]
        elif self.args.labels is not None and len(self.names) != n:
            raise InputError(f"--labels {self.args.labels} names {len(self.names)} classes; the model scores {n}")

    def _title(self, r: Any) -> str:
        from camlens.viz.photos import title

        return title(r, self.names or [])

    def _write(self, results: list[Any]) -> None:
        """Each image's figure, overlays and maps; then only a small picture of it is kept for the grid."""
        from camlens.viz.figures import figure_bytes
        from camlens.viz.photos import GRID_PIXELS, photo_figure, thumbnail, write_maps, write_overlays

        args, names = self.args, self.names or []
        for r in results:
            if not args.no_figures:
                png = figure_bytes(photo_figure(r, names, args.colormap, args.alpha))
                atomic_write_bytes(self.out / f"{r.name}.png", png)
                self.figures[r.name] = png
                self.counts["figure"] += 1
            if args.save_overlays:
                self.counts["overlay"] += len(write_overlays(r, names, self.out / "overlays", args.colormap,
                                                             args.alpha))  # fmt: skip
            if args.save_maps:  # dataset items are the model's input as they are: no preprocessing to record
                pre = None if r.name in self.dataset_items else self.pre
                write_maps(r, names, self.out / "maps", pre, self.info.get("spec", args.model))
                self.counts["map file"] += 1
            r.photo = thumbnail(r.photo, GRID_PIXELS) if not args.no_figures else None
            r.maps = {k: v[:1] for k, v in r.maps.items()} if not args.no_figures else {}
            self.results.append(r)

    def _finish(self) -> None:
        """The grid of all images and the run's page (unless ``--no-figures``)."""
        from camlens.viz.figures import figure_bytes
        from camlens.viz.photos import GRID_IMAGES, grid_of, run_page

        self.results.sort(key=lambda r: self.order[r.name])
        if self.args.no_figures:
            return
        names = self.names or []
        grid = None
        if len(self.results) > 1:
            shown = self.results[:GRID_IMAGES]
            grid = figure_bytes(grid_of(shown, names, self.args.colormap, self.args.alpha))
            atomic_write_bytes(self.out / "grid.png", grid)
            self.counts["figure"] += 1
        facts = [f"model: {self.args.model}", f"preprocessing: {self.pre.describe()}",
                 f"methods: {', '.join(self.cams)}", f"layers: {self.layers_line}",
                 f"targets: {self._targets_fact()}", f"images: {len(self.results)}",
                 f"batch size: {self.args.batch_size} (images batched by their size after the preprocessing)"]
        if len(self.results) > GRID_IMAGES:
            facts.append(f"the grid shows the first {GRID_IMAGES} images; every image has its own figure below")
        run_page(self.out / "explain.html", f"camlens explain: {self.args.model}", facts, self.results, names,
                 self.figures, grid)  # fmt: skip

    def _targets_fact(self) -> str:
        if self.args.top_k is not None:
            return f"the {self.args.top_k} most probable classes"
        return "the predicted class" if self.args.target == "predicted" else f"class {self.args.target}"


def _explain_into(out: Path, args: argparse.Namespace, device: torch.device) -> int:
    return _Run(out, args, device).run()
