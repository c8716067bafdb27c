"""How items reach the model: batches planned per shard, collated into groups of one image size, read ahead.

A dataset of photos holds images of many sizes. A batch is a list of item ids
inside one shard; :func:`collate_groups` splits it into :class:`Group` s of
items whose images have the same shape (one group when all agree), each
collated by ``default_collate`` and run through the model on its own. When the
sizes are known before reading (an image folder whose preprocessing has no
fixed output size), :func:`plan_batches` sorts each shard's ids by size first,
so batches are full and of one size.

:class:`ReadAhead` iterates the ``DataLoader`` in a thread, a few batches ahead
of the model (decoding and resizing in Pillow and torch release the GIL), and
refuses non-finite inputs there.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from camlens.errors import DataError
from camlens.sources import Collated, split_item

__all__ = ["Batch", "Group", "ReadAhead", "WithGeometry", "collate_groups", "plan_batches"]


@dataclass
class Group:
    """Items of one batch whose images share a shape.

    Attributes:
        rows: their positions in the batch.
        x: images ``(n, C, H, W)``; y: labels ``(n,)`` or ``None``.
        geometry: ``(n, 8)`` int64 (original h, w; resized h, w; crop top, left, h, w) or ``None``.
    """

    rows: list[int]
    x: Tensor
    y: Tensor | None
    geometry: Tensor | None = None

    def pin_memory(self) -> Group:
        """Page-locked copies, for asynchronous copies to a GPU (the ``DataLoader`` calls this)."""
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return Group(self.rows, self.x.pin_memory(), pin(self.y), pin(self.geometry))


class Batch(list):
    """A batch's groups, in order of their first item."""

    def pin_memory(self) -> Batch:
        return Batch(g.pin_memory() for g in self)

    @property
    def n_items(self) -> int:
        return sum(len(g.rows) for g in self)


def _image(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("image", item.get("x"))
    if isinstance(item, (tuple, list)) and item:
        return item[0]
    return item


def collate_groups(items: Any) -> Batch:
    """A list of dataset items (or a batch the dataset collated itself) -> a :class:`Batch` of same-shape groups."""
    if isinstance(items, Collated):
        x, y = split_item(tuple(items))
        return Batch([Group(list(range(x.shape[0])), x, y)])
    by_shape: dict[Hashable, list[int]] = {}
    for i, item in enumerate(items):
        shape = getattr(_image(item), "shape", None)
        by_shape.setdefault(tuple(shape) if shape is not None else None, []).append(i)
    groups = Batch()
    for rows in by_shape.values():
        sub = [items[i] for i in rows]
        geometry = None
        if isinstance(sub[0], dict) and "geometry" in sub[0]:
            geometry = torch.stack([it["geometry"] for it in sub])
            sub = [{k: v for k, v in it.items() if k != "geometry"} for it in sub]
        x, y = split_item(default_collate(sub))
        groups.append(Group(rows, x, y, geometry))
    return groups


def plan_batches(ids: range, batch_size: int, size_of: Callable[[int], Hashable] | None) -> list[list[int]]:
    """One shard's ids cut into batches: consecutive, or (``size_of`` given) by size, each batch of one size.

    Sizes keep the order of their first item; ids keep their order within a size. The plan depends only on
    the ids and the sizes, so a resume and every rank make the same one.
    """
    if size_of is None:
        return [list(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]
    by_size: dict[Hashable, list[int]] = {}
    for i in ids:
        by_size.setdefault(size_of(i), []).append(i)
    return [same[j : j + batch_size] for same in by_size.values() for j in range(0, len(same), batch_size)]


class WithGeometry(Dataset):
    """A dataset's items as ``{"image", "label", "geometry"}``: an image folder's preprocessed photos, or another
    dataset's tensors through a ``Preprocess``."""

    def __init__(self, ds: Any, preprocess: Any) -> None:
        self.ds, self.preprocess = ds, preprocess

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        explain_item = getattr(self.ds, "explain_item", None)
        if explain_item is not None:
            return explain_item(i, self.preprocess)
        x, y = split_item(default_collate([self.ds[i]]))
        image, geometry = self.preprocess(x[0])
        item = {"image": image, "geometry": geometry_row(geometry)}
        if y is not None:
            item["label"] = y[0]
        return item


def geometry_row(g: Any) -> Tensor:
    """A :class:`camlens.preprocess.Geometry` as 8 int64: original h, w; resized h, w; crop top, left, h, w."""
    return torch.tensor([*g.original, *g.resized, *g.crop], dtype=torch.int64)


def _check_finite(batch: Batch, ids: Sequence[int]) -> None:
    """Refuse items holding NaN or an infinity (their maps would mean nothing), naming them.

    Raises:
        DataError: naming the items.
    """
    which: list[int] = []
    for g in batch:
        if g.x.is_floating_point():
            bad = ~torch.isfinite(g.x.reshape(g.x.shape[0], -1)).all(dim=1)
            which += [ids[g.rows[i]] for i in bad.nonzero()[:, 0].tolist()]
    if which:
        which.sort()
        raise DataError(
            f"item(s) {', '.join(map(str, which[:10]))}{' ...' if len(which) > 10 else ''} of the data hold NaN "
            "or infinite values; their maps would mean nothing: fix or leave out these items "
            "(finished shards are kept; a rerun resumes)"
        )


class ReadAhead:
    """Iterate ``(key, ids, batch)`` from a loader in a thread, ``depth`` batches ahead of the consumer.

    Each batch is checked (:func:`_check_finite`) in the thread; an error there is raised to the consumer at
    that batch. :meth:`close` (also on leaving a ``with`` block) stops the thread. On CUDA, ``device`` is made
    the thread's current device (a ``DataLoader`` with ``pin_memory`` pins in the thread that iterates it).
    """

    _END = object()

    def __init__(self, plan: Sequence[tuple[int, list[int]]], loader: Iterable[Batch], depth: int = 2,
                 device: torch.device | None = None) -> None:  # fmt: skip
        self.plan, self.loader, self.device = plan, loader, device
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="camlens-read-ahead", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.set_device(self.device)  # page-locked copies made here belong to the run's GPU
            for (key, ids), batch in zip(self.plan, self.loader, strict=True):
                if batch.n_items != len(ids):
                    raise DataError(f"the data loader returned {batch.n_items} items for a batch of {len(ids)}")
                _check_finite(batch, ids)
                if not self._put((key, ids, batch)):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def __iter__(self) -> Iterator[tuple[int, list[int], Batch]]:
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
