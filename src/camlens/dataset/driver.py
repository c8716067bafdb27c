"""``explain_dataset``: explain every item of a dataset into resumable shards, on one or many processes.

Items ``0 .. n-1`` (``n = min(len(data), limit)``) are cut into shards of ``shard_size`` ids;
under ``torchrun`` with ``WORLD_SIZE > 1`` shard ``k`` is computed by rank ``k % WORLD_SIZE``
(gloo on CPU, NCCL on CUDA), and rank 0 writes the manifest after all ranks finish. Batches never
cross a shard, so the maps are the same whatever the number of processes. Running the same call
again skips the shards already finished (checked by sha256) and redoes the rest; it first reads each
finished shard's first batch again and refuses to go on if the data changed (each shard's record holds
the sha256 of the items it explained). One run at a time per output folder: rank 0 holds its lock.

Each shard stores, for its ``n`` items: ``ids`` ``(n,)``, ``labels`` ``(n,)``
(-1 when the dataset has none), ``preds`` ``(n,)`` (arg-max class),
``targets`` ``(n,)`` or ``(n, K)``, ``probs`` (the softmax probability of each
target, same shape), ``maps/<method>/<layer>`` ``(n, [K,] h, w)`` at the layer's
resolution (the method's ``raw`` maps: ReLU, no upsampling, no normalization)
and, when the object is known, ``inside/<method>/<layer>`` ``(n, [K])``, the
share of the map's mass on the object's pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from camlens._util.device import select_device
from camlens._util.files import inside_data_folder
from camlens._util.lock import folder_lock
from camlens._util.progress import progress_bar
from camlens._util.version import VERSION
from camlens.core.autolayer import choose_layer
from camlens.core.targets import TargetSpec
from camlens.core.wrapped import unwrap_model
from camlens.dataset import distributed as D
from camlens.dataset.batches import Batch, ReadAhead, collate_groups, plan_batches
from camlens.dataset.folder import check_writable, sweep_temporaries, write_failed
from camlens.dataset.inputs import Inputs, open_inputs
from camlens.dataset.manifest import MANIFEST, check_config, fingerprint, read_manifest, write_manifest
from camlens.dataset.shards import clean_temporaries, finished_record, read_shard, shard_range, shards_of_rank
from camlens.dataset.stats import ClassStats, mass_inside, object_mask
from camlens.dataset.writer import GroupOut, ShardWriter, WriterThread, items_hash
from camlens.errors import DataError, FolderBusyError, InputError
from camlens.methods.base import BaseCAM
from camlens.sources import _in_channels, load_model, model_fingerprint

__all__ = ["STATS", "RunSummary", "explain_dataset", "parse_targets"]

STATS = "class_stats.json"
_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass
class RunSummary:
    """What one call of :func:`explain_dataset` did (totals over all ranks)."""

    out: Path
    n_items: int
    n_shards: int
    shards_computed: int
    shards_skipped: int
    items_computed: int
    seconds: float
    world_size: int
    rank: int
    stats: dict[str, Any] | None = field(default=None, repr=False)
    #: the layers explained, and how they were chosen ("given", or the automatic choice and its input).
    layers: list[str] = field(default_factory=list)
    layer_choice: str = "given"
    #: the preprocessing's one-line description, or ``None`` (the dataset's tensors as they are)
    preprocessing: str | None = None
    #: the figure files drawn (``figures=N``)
    figures: list[Path] = field(default_factory=list)
    #: batches computed, and the model passes they took (more when a batch held inputs of several sizes)
    batches: int = 0
    groups: int = 0

    @property
    def items_per_s(self) -> float:
        """Items computed per second of this call, all ranks together."""
        return self.items_computed / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"explained {self.items_computed} of {self.n_items} items in {self.seconds:.1f} s "
            f"({self.items_per_s:.3g} items/s on {self.world_size} process(es)); "
            f"shards: {self.shards_computed} computed, {self.shards_skipped} already done, {self.n_shards} in all",
            f"results: {self.out / MANIFEST} (read with camlens.open_results); "
            f"per-class statistics: {self.out / STATS}",
        ]
        if self.layers:
            lines.insert(1, f"layers: {', '.join(self.layers)} ({self.layer_choice})")
        if self.preprocessing:
            lines.insert(1, f"preprocess: {self.preprocessing}")
        if self.groups > self.batches:
            lines.append(
                f"mixed input sizes: {self.batches} batches ran as {self.groups} model passes of one size each; "
                "for full batches give the inputs one size (--size HxW or --crop)"
            )
        if self.figures:
            lines.append(f"figures: {len(self.figures)} in {self.figures[0].parent}")
        if self.stats and self.stats.get("all"):
            overall = self.stats["all"]
            if overall.get("mean_confidence") is not None:
                lines.append(
                    f"  {overall['n']} labelled items: accuracy {overall['accuracy']:.3f}, "
                    f"mean confidence in the explained class {overall['mean_confidence']:.3f}"
                )
            for key, value in overall.items():
                if isinstance(value, dict) and value.get("mean_mass_inside") is not None:
                    nonfinite = f", {value['nonfinite_maps']} non-finite" if value.get("nonfinite_maps") else ""
                    lines.append(
                        f"  {key}: mean map mass inside the object {value['mean_mass_inside']:.3f}"
                        f" ({value['zero_maps']} all-zero maps{nonfinite})"
                    )
        return "\n".join(lines)


def parse_targets(targets: str | int) -> tuple[str, int | None]:
    """``"predicted"``, ``"label"``, ``"top-K"`` or a class index -> ``(kind, value)``.

    Raises:
        InputError: any other value.
    """
    if isinstance(targets, int) and not isinstance(targets, bool):
        return "class", targets
    t = str(targets).strip().lower()
    if t in ("predicted", "label"):
        return t, None
    if t.startswith("top-") and t[4:].isdigit() and int(t[4:]) >= 1:
        return "top", int(t[4:])
    if t.isdigit():
        return "class", int(t)
    raise InputError(
        f"targets={targets!r} is not 'predicted', 'label', 'top-K' (e.g. 'top-3') or a class index (e.g. 3)"
    )


def _names(x: str | Sequence[str] | None) -> list[str] | None:
    if x is None:
        return None
    return [x] if isinstance(x, str) else list(x)


def _method_classes(methods: str | Sequence[str]) -> tuple[list[str], list[type[BaseCAM]]]:
    """The method names and their classes, checked against the registry."""
    from camlens.methods import get_method, takes_chosen_layer

    names = _names(methods) or []
    if not names:
        raise InputError("methods=[] names no method; pass e.g. methods=['gradcam']")
    _no_repeats("methods", names)
    classes = []
    for m in names:
        try:
            classes.append(get_method(m))
        except KeyError as e:
            raise InputError(f"methods: {e.args[0]}") from None
    free = [n for n, c in zip(names, classes, strict=True) if not takes_chosen_layer(c)]
    if free:  # their maps are the input's size and belong to no layer: the shards store maps per method and layer
        raise InputError(
            f"methods={names!r}: {', '.join(free)} {'explains' if len(free) == 1 else 'explain'} the input pixels, "
            "not a layer's maps, and explain-dataset "
            "stores each method's maps at its layers; explain those images with `camlens explain` (or "
            f"camlens.get_method({free[0]!r})(model)), and here use layer methods such as gradcam"
        )
    return names, classes


def _no_repeats(what: str, names: list[str]) -> None:
    """Each method and layer once: a repeat would store and count the same maps twice."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(
            f"{what}={names!r} names {', '.join(map(repr, twice))} more than once; "
            f"give each of the {what} once (each is explained once per item)"
        )


def _check_arguments(out: str | Path, data: str | Dataset, batch_size: int, shard_size: int, num_workers: int,
                     limit: int | None, dtype: str, figures: int = 0) -> None:  # fmt: skip
    """Refuse, before any work, sizes out of range and an output folder in the data folder."""
    _check_out_apart(out, data)
    sizes = (("batch_size", batch_size, 1), ("shard_size", shard_size, 1), ("num_workers", num_workers, 0),
             ("figures", figures, 0))  # fmt: skip
    for name, value, low in sizes:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"{name}={value!r} must be an int >= {low}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InputError(f"limit={limit!r} must be an int >= 0 or None")
    if dtype not in _DTYPES:
        raise InputError(f"dtype={dtype!r} is not one of {sorted(_DTYPES)}")


def _open_model(
    model: str | nn.Module, device: str | torch.device | None, local_rank: int, weights: str | None
) -> tuple[nn.Module, dict[str, Any], torch.device, dict[nn.Module, bool] | None]:
    """``(model in eval mode, its facts, the run's device, the user's training flags to restore or None)``;
    the facts' ``"preprocess"`` is the model's own preprocessing (or ``None``), taken out by the caller."""
    dev = select_device(device, local_rank)
    flags = None
    if isinstance(model, nn.Module):
        ref = next(model.parameters(), None)
        if ref is not None and device is not None and str(device) != "auto" and ref.device != dev:
            raise InputError(f"the model is on {ref.device} but device={str(device)!r}; move it or omit device")
        dev = ref.device if ref is not None else dev
        if weights is not None:
            raise InputError(f"weights={weights!r} is for a model given by name; load them into the module yourself")
        net = model
        flags = {m: m.training for m in net.modules()}
        net.eval()
        model_info: dict[str, Any] = {"kind": "module", "class": type(net).__name__, "preprocess": None,
                                      "in_channels": _in_channels(net)}  # fmt: skip
    else:
        net, model_info = load_model(str(model), dev, weights=weights)
        if model_info["kind"] == "checkpoint":
            model_info.pop("spec")
    model_info["weights_sha256"] = model_fingerprint(net)
    return net, model_info, dev, flags


def _layers(
    layers: str | Sequence[str] | None,
    net: nn.Module,
    run_inputs: Inputs,
    batch_size: int,
    target: tuple[str, int | None],
    dev: torch.device,
) -> tuple[list[str], str]:
    """The layers given, else the automatic choice (:func:`camlens.core.autolayer.choose_layer`) on the run's
    first batch (its first group of one size), the same on every rank.

    Returns:
        ``(layer names, how they were chosen)`` for the manifest.
    """
    given = _names(layers)
    if given:
        _no_repeats("layers", given)
        return given, "given"
    if len(run_inputs.ds) == 0:
        raise InputError("the dataset is empty: there is no input to choose a layer on; pass layers=[...]")
    n = max(1, min(run_inputs.n_items, len(run_inputs.ds)))
    ids = plan_batches(range(n), batch_size, run_inputs.size_of)[0]
    loader = DataLoader(run_inputs.loader_ds, batch_sampler=[ids], collate_fn=collate_groups)
    group = next(iter(loader))[0]
    x, y = group.x, group.y
    kind, value = target
    chosen_for: TargetSpec = value if kind == "class" else None
    if kind == "label" and y is not None and bool((y >= 0).all()):
        chosen_for = y.to(dev)
    layer = choose_layer(unwrap_model(net), x.to(dev), chosen_for)
    which = f"items {ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else f"{len(group.rows)} items"
    return [layer], f"automatic: camlens.choose_layer on {which}"


@dataclass
class _Run:
    """One call's plan, the same on every rank: what is explained, how, and where it goes."""

    folder: Path
    inputs: Inputs
    model_info: dict[str, Any]
    cams: list[BaseCAM]
    methods: list[str]
    target: tuple[str, int | None]
    batch_size: int
    shard_size: int
    dtype: str
    num_workers: int
    dev: torch.device
    layer_choice: str

    @property
    def layers(self) -> list[str]:
        return list(self.cams[0].layers)

    @property
    def n_items(self) -> int:
        return self.inputs.n_items

    @property
    def use_mask(self) -> bool:
        return self.inputs.use_mask

    def plan(self, k: int) -> list[list[int]]:
        """Shard ``k``'s batches (by size when sizes are known and vary): the same on every call and rank."""
        return plan_batches(shard_range(k, self.n_items, self.shard_size), self.batch_size, self.inputs.size_of)

    @property
    def n_shards(self) -> int:
        return -(-self.n_items // self.shard_size)

    @property
    def map_keys(self) -> list[str]:
        return [f"{m}/{layer}" for m in self.methods for layer in self.layers]

    @cached_property
    def config(self) -> dict[str, Any]:
        """What the shards depend on; its fingerprint marks every shard, and a resume must match it."""
        kind, value = self.target
        pre = self.inputs.preprocess
        return {
            **({"preprocess": pre.to_dict()} if pre is not None else {}),
            "model": self.model_info,
            "data": self.inputs.info,
            "n_items": self.n_items,
            "methods": self.methods,
            "layers": self.layers,
            "targets": f"top-{value}" if kind == "top" else (value if kind == "class" else kind),
            "batch_size": self.batch_size,
            "shard_size": self.shard_size,
            "dtype": self.dtype,
            "object_mask": "nonzero-pixels" if self.use_mask else None,
            "device": self.dev.type,
        }

    @cached_property
    def fp(self) -> str:
        return fingerprint(self.config)

    @cached_property
    def header(self) -> dict[str, Any]:
        """The manifest without its shard list."""
        return {
            "config": self.config,
            "fingerprint": self.fp,
            "camlens_version": VERSION,
            "torch_version": torch.__version__,
            "n_items": self.n_items,
            "n_shards": self.n_shards,
            "shard_size": self.shard_size,
            "map_keys": self.map_keys,
            "layer_choice": self.layer_choice,
            "stats": STATS,
            "classes": _class_names(self.inputs.ds),
            "model_classes": _class_names(self.model_info),
            "preprocessing": self.inputs.preprocess.describe() if self.inputs.preprocess is not None else None,
        }


def _class_names(source: Any) -> list[str] | None:
    """The class names a dataset (``.classes``) or the model's facts (``["classes"]``) give, or ``None``."""
    names = source.get("classes") if isinstance(source, dict) else getattr(source, "classes", None)
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def explain_dataset(
    model: str | nn.Module,
    data: str | Dataset,
    out: str | Path,
    *,
    methods: str | Sequence[str] = "gradcam",
    layers: str | Sequence[str] | None = None,
    targets: str | int = "predicted",
    batch_size: int = 128,
    shard_size: int = 1024,
    limit: int | None = None,
    device: str | torch.device | None = "auto",
    dtype: str = "float16",
    num_workers: int = 0,
    object_mask_from_pixels: bool | None = None,
    progress: bool = True,
    preprocess: Any = None,
    weights: str | None = None,
    figures: int = 0,
) -> RunSummary:
    """Explain every item of ``data`` with each method and layer into resumable shards under ``out``
    (spread over the ranks of ``torchrun``, skipped when finished: see this module's docstring).

    Args:
        model: a name :func:`camlens.sources.load_model` resolves (checkpoint folder, ``'module:function'``,
            ``'torchvision:NAME'``, ...), or an ``nn.Module`` (left as found: its ``training`` flags are restored).
        data: a name :func:`camlens.sources.load_dataset` resolves (``'fashion-mnist:test'``, a folder of one
            image subfolder per class, ...), or a map-style ``Dataset`` of ``(image (C, H, W), label)`` or images.
        out: the output folder (created; reused to resume); not the folder ``data`` names, nor one inside it.
        methods: method names from :data:`camlens.METHODS`.
        layers: layer names; default :func:`camlens.choose_layer` on the first batch (recorded in the manifest).
        targets: ``'predicted'``, ``'label'``, ``'top-K'`` or a class index.
        batch_size, shard_size: items per forward/backward pass; per shard file (the unit of resume and of work).
        limit: explain only the first ``limit`` items (``None``: every item; ``0``: none, an empty run).
        device: ``'auto'`` (CUDA, then MPS, then CPU), ``'cpu'``, ``'cuda'`` (each rank
            takes ``cuda:LOCAL_RANK``), ``'mps'``; for an ``nn.Module``, ``'auto'`` is its device.
        dtype, num_workers: the stored maps' ``'float16'`` (default) or ``'float32'``; ``DataLoader`` workers per rank.
        object_mask_from_pixels: mass inside the object from nonzero pixels (default: for Fashion-MNIST/IDX).
        progress: a tqdm bar (items/s, ETA) on rank 0.
        preprocess: a :class:`camlens.preprocess.Preprocess`, a mapping of fields overriding the model's own
            (``{"size": 224}``), or ``None``: see :mod:`camlens.dataset.inputs`. Recorded in the manifest; a
            resume with another one is refused.
        weights: for a model given by name: ``"none"`` (random), a weights file, or ``None`` (its default).
        figures: draw per class this many most and least confident items into ``out/figures/`` (0: none).

    Returns:
        A :class:`RunSummary` (its ``stats`` are set on rank 0).

    Raises:
        InputError: an argument is out of range or names nothing usable (a repeat, ``fullgrad``, ``guided-backprop``).
        DataError: ``out`` is not writable or holds results of another configuration or other data; an item
            holds NaN/inf; a write failed (finished shards are kept: rerun to resume).
        FolderBusyError: another live run writes ``out``.

    Example:
        >>> summary = camlens.explain_dataset("ckpt", "fashion-mnist:test", "maps", limit=512)  # doctest: +SKIP
        >>> camlens.open_results("maps")[7].maps["gradcam/seq.4"].shape  # doctest: +SKIP
        torch.Size([28, 28])
    """
    _check_arguments(out, data, batch_size, shard_size, num_workers, limit, dtype, figures)
    target, (method_names, method_classes) = parse_targets(targets), _method_classes(methods)
    t0, (rank, world, local_rank, own_group) = time.perf_counter(), D.setup(device)
    with ExitStack() as stack:  # on the way out: the model's flags restored, the lock freed, the group left
        stack.callback(D.teardown, own_group)
        _lock_folder(stack, Path(out), rank)
        net, model_info, dev, flags = _open_model(model, device, local_rank, weights)
        stack.callback(_restore, flags)
        D.check_same(model_info["weights_sha256"], "the model's weights", dev)
        inputs = open_inputs(data, preprocess, model_info, object_mask_from_pixels, limit)
        layer_names, layer_choice = _layers(layers, net, inputs, batch_size, target, dev)
        run = _Run(Path(out), inputs, model_info, [c(net, layer_names, upsample=False, normalize=False)
                   for c in method_classes], method_names, target, batch_size, shard_size, dtype, num_workers, dev,
                   layer_choice)  # fmt: skip
        _prepare_folder(run, rank)
        computed, skipped, items, n_batches, n_groups = D.sum_ints(_explain_shards(run, rank, world, progress), dev)
        stats, drawn = (_finish(run), _figures(run, figures)) if rank == 0 else (None, [])
        D.barrier()
        return RunSummary(run.folder, inputs.n_items, run.n_shards, computed, skipped, items,
                          time.perf_counter() - t0, world, rank, stats, run.layers, layer_choice,
                          run.header["preprocessing"], drawn, n_batches, n_groups)  # fmt: skip


def _check_out_apart(out: str | Path, data: str | Dataset) -> None:
    """Refuse an output folder in the data folder: the next run would read its figures and files as data.

    Raises:
        InputError: ``out`` is ``data`` (a folder) or a folder inside it.
    """
    if inside_data_folder(out, data):
        raise InputError(
            f"out={str(out)!r} (--out) is inside the data folder {str(data)!r}: the results (figures/ would be a "
            "class folder of images) would be read as data by the next run; choose an output folder outside it"
        )


def _restore(flags: dict[nn.Module, bool] | None) -> None:
    """Give the user's modules back their ``training`` flags."""
    for m, training in (flags or {}).items():
        m.train(training)


_WHAT = "camlens explain-dataset"


def _lock_folder(stack: ExitStack, folder: Path, rank: int) -> None:
    """Rank 0 proves ``folder`` writable and takes its lock for the run (held by ``stack``); every rank
    learns the outcome, so that all of them stop cleanly when it failed.

    Raises:
        DataError: the folder is a file, or cannot be created or written (nothing was computed).
        FolderBusyError: another live run holds the folder's lock.
    """
    error: Exception | None = None
    if rank == 0:
        try:
            check_writable(folder)
            stack.enter_context(folder_lock(folder, _WHAT))
        except (DataError, FolderBusyError) as e:
            error = e
    busy, unwritable = D.sum_ints([isinstance(error, FolderBusyError), isinstance(error, DataError)])
    if error is not None:
        raise error
    if busy:
        raise FolderBusyError(f"{folder} is being written by another run (rank 0 could not take its lock; see rank "
                              "0's error); wait for it to finish or choose another output folder")  # fmt: skip
    if unwritable:
        raise DataError(f"rank 0 cannot write to the output folder {folder} (see its error); nothing was computed")


def _prepare_folder(run: _Run, rank: int) -> None:
    """Refuse a folder of another configuration; rank 0 clears killed writes and starts the manifest."""
    existing = read_manifest(run.folder)
    check_config(run.folder, existing, run.config)
    if rank == 0:
        sweep_temporaries(run.folder, {MANIFEST, STATS})  # ours, of a run killed while writing them (we hold the lock)
        if existing is None:
            write_manifest(run.folder, {**run.header, "complete": False, "shards": []})


def _loader(run: _Run, plan: list[list[int]], pin: bool) -> DataLoader:
    return DataLoader(run.inputs.loader_ds, batch_sampler=plan, num_workers=run.num_workers,
                      collate_fn=collate_groups, pin_memory=pin)  # fmt: skip


def _explain_shards(run: _Run, rank: int, world: int, progress: bool) -> list[int]:
    """This rank's unfinished shards, batch by batch.

    Returns:
        ``[shards computed, shards skipped, items computed, batches, model passes]``.

    Three stages overlap: a thread reads (decodes, preprocesses, collates) the next batches
    (:class:`~camlens.dataset.batches.ReadAhead`), this thread runs the model, and a writer thread
    (:class:`~camlens.dataset.writer.WriterThread`) hashes, fills and writes the shards. On CUDA the
    batches come in page-locked memory and go to the GPU and back without blocking this thread.
    """
    folder, n_items, shard_size = run.folder, run.n_items, run.shard_size
    mine = shards_of_rank(run.n_shards, rank, world)
    clean_temporaries(folder, mine)
    done = {k: r for k in mine if (r := finished_record(folder, k, run.fp)) is not None}
    _check_unchanged(run, done)
    todo = [k for k in mine if k not in done]
    batches = [(k, ids) for k in todo for ids in run.plan(k)]
    items_todo = sum(len(shard_range(k, n_items, shard_size)) for k in todo)
    bar = progress_bar(items_todo, "explain" if world == 1 else f"explain (rank 0 of {world})",
                       enabled=progress and rank == 0, unit="img", smoothing=0.1)  # fmt: skip
    computed_items = n_groups = 0
    if batches:
        cuda = run.dev.type == "cuda"
        path_of = run.inputs.path_of
        writer = WriterThread(ShardWriter(folder, run.fp, n_items, shard_size, run.map_keys, _DTYPES[run.dtype],
                                          path_of))  # fmt: skip
        try:
            with ReadAhead(batches, _loader(run, [ids for _, ids in batches], cuda), device=run.dev) as reader:
                for k, ids, batch in reader:
                    groups = [_explain_group(run, ids, g, cuda) for g in batch]
                    ready = torch.cuda.Event() if cuda else None
                    if ready is not None:
                        ready.record()
                    writer.put(k, groups, ready)
                    computed_items += len(ids)
                    n_groups += len(batch)
                    if bar is not None:
                        bar.update(len(ids))
        except BaseException:
            with contextlib.suppress(BaseException):  # the first error is the one to report
                writer.close(check=False)  # shards already complete are still written
            raise
        writer.close()
    if bar is not None:
        bar.close()
    return [len(todo), len(mine) - len(todo), computed_items, len(batches), n_groups]


def _explain_group(run: _Run, ids: list[int], g: Any, cuda: bool) -> GroupOut:
    """One group of a batch through every method; outputs on the CPU (on CUDA: copies still in flight)."""
    x = g.x.to(run.dev, non_blocking=True)
    kind, value = run.target
    out = _explain_batch(run.cams, run.methods, x, g.y, kind, value, run.use_mask, _DTYPES[run.dtype])
    out = {key: t.detach().to("cpu", non_blocking=cuda) for key, t in out.items()}
    return GroupOut([ids[r] for r in g.rows], g.x, g.y, g.geometry, out)


def _batch_hash(batch: Batch) -> str:
    h = hashlib.sha256()
    for g in batch:
        items_hash(h, g.x, g.y)
    return h.hexdigest()


def _check_unchanged(run: _Run, done: dict[int, dict[str, Any]]) -> None:
    """Read the first batch of every finished shard again: the data must be what it was when the shard was
    written (its record's ``probe_sha256``), or the run stops before computing anything (on every rank).

    Raises:
        DataError: naming the shards whose items changed, and what to do.
    """
    changed = []
    if done:
        firsts = [(k, run.plan(k)[0]) for k in sorted(done)]
        loader = _loader(run, [ids for _, ids in firsts], False)
        for (k, ids), batch in zip(firsts, loader, strict=True):
            if _batch_hash(batch) != done[k]["probe_sha256"]:
                changed.append((k, sorted(ids)))
    (n_changed,) = D.sum_ints([len(changed)])
    if n_changed:
        where = (f"items {changed[0][1][0]}..{changed[0][1][-1]} of shard {changed[0][0]}" if changed
                 else "items of a shard another rank reads")  # fmt: skip
        raise DataError(
            f"the data changed since {run.folder} was written: {where} are not the ones explained there "
            f"({n_changed} finished shard(s) differ); nothing was mixed or computed. Use a new output folder for "
            "the new data (or remove the shard-* files there to recompute all); a dataset with random "
            "transforms (augmentation) cannot be resumed: make it deterministic"
        )


def _explain_batch(
    cams: list,
    names: list[str],
    x: Tensor,
    y: Tensor | None,
    kind: str,
    value: int | None,
    use_mask: bool,
    dtype: torch.dtype,
) -> dict[str, Tensor]:
    """One group through every method: targets, logits, maps (in the stored dtype) and the mass inside the object.

    Probabilities and the arg-max are computed once per shard by
    :class:`~camlens.dataset.writer.ShardWriter`: a few large operations instead of many small ones.
    """
    if kind == "top":
        first = cams[0](x, top_k=value)
    elif kind == "label":
        if y is None or bool((y < 0).any()):
            raise InputError("targets='label' but the dataset gives no labels; use targets='predicted'")
        first = cams[0](x, target=y.to(x.device))
    else:
        first = cams[0](x, target=value)  # None: predicted; int: that class
    assert first.targets is not None
    out = {"targets": first.targets, "logits": first.logits}
    mask = object_mask(x) if use_mask else None
    for i, (cam, name) in enumerate(zip(cams, names, strict=True)):
        res = first if i == 0 else cam(x, target=first.targets)
        for layer, m in res.raw.items():
            # rounded to the stored dtype once, on the device (half the bytes to copy from a GPU);
            # the statistics use the stored values
            stored = m.to(dtype)
            out[f"maps/{name}/{layer}"] = stored
            if mask is not None:
                v = mass_inside(stored if stored.ndim == 4 else stored[:, None], mask)
                out[f"inside/{name}/{layer}"] = v if stored.ndim == 4 else v[:, 0]
    return out


def _figures(run: _Run, n: int) -> list[Path]:
    """Rank 0 after :func:`_finish`: per class the ``n`` most and least confident items, drawn (``n=0``: none)."""
    if n == 0:
        return []
    from camlens.dataset.figures import draw_figures
    from camlens.dataset.reader import open_results

    return draw_figures(open_results(run.folder), run.inputs, n, run.folder / "figures")


def _finish(run: _Run) -> dict[str, Any]:
    """Rank 0 after the barrier: verify every shard, aggregate statistics, write the complete manifest."""
    import json

    from camlens._util.files import atomic_write_bytes

    folder = run.folder
    records = []
    stats_per_method: ClassStats | None = None
    for k in range(run.n_shards):
        record = finished_record(folder, k, run.fp, verify=False)
        if record is None:
            raise DataError(
                f"shard {k} of {folder} is not finished after all ranks returned; rerun the same command to redo it"
            )
        shard = read_shard(folder, record, f"shard record {k}")
        if stats_per_method is None:
            names = _class_names(run.inputs.ds)
            n_cls = max(len(names) if names else 0, int(record["num_classes"]))
            stats_per_method = ClassStats(n_cls, run.map_keys, list(names) if names else None)
        stats_per_method.update(shard)
        records.append({k2: record[k2] for k2 in ("index", "file", "start", "stop", "sha256", "bytes", "items_sha256")})
    stats = stats_per_method.as_dict() if stats_per_method is not None else {"classes": {}, "all": {}}
    try:
        atomic_write_bytes(folder / STATS, (json.dumps({"fingerprint": run.fp, **stats}, indent=2) + "\n").encode())
    except OSError as e:
        raise write_failed(e, folder / STATS, folder) from None
    write_manifest(folder, {**run.header, "complete": True, "shards": records})
    return stats
