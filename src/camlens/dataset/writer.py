"""Shards filled and written off the model's thread: :class:`ShardWriter` and the :class:`WriterThread` that runs it.

The model's thread hands over each batch's inputs (as read) and outputs; on a GPU the outputs come as
asynchronous copies into page-locked memory with an event the writer waits on. The writer hashes the
inputs, copies the outputs into the shard's buffers at their items' rows and, when a shard is full,
derives the probabilities, checks the range and writes it (:func:`camlens.dataset.shards.write_shard`).

Maps of items of different input sizes have different sizes: a shard's buffer grows to the largest
``(h, w)`` and is zero-padded, and ``maps_hw/<key>`` ``(n, 2)`` records each item's own size (stored only
when they differ, so that a run of one size writes what it always wrote).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from camlens.dataset.shards import shard_range, write_shard
from camlens.errors import DataError, InputError

__all__ = ["GroupOut", "ShardWriter", "WriterThread", "items_hash"]


def items_hash(h: Any, x: Tensor, y: Tensor | None) -> None:
    """Feed one group's inputs and labels, as read, to the sha256 ``h`` (dtype and shape included)."""
    for t in (x, y):
        if t is None:
            h.update(b"no labels")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype} {tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())


@dataclass
class GroupOut:
    """One group of a batch after the model: its item ids, inputs as read, labels, geometry and outputs."""

    ids: list[int]
    x: Tensor
    y: Tensor | None
    geometry: Tensor | None
    out: dict[str, Tensor]


class ShardWriter:
    """Fills one shard's CPU buffers group by group (at their items' rows); completes and writes it when full."""

    def __init__(self, folder: Path, fp: str, n_items: int, shard_size: int, map_keys: list[str],
                 dtype: torch.dtype, path_of: Callable[[int], str] | None = None) -> None:  # fmt: skip
        self.folder, self.fp, self.n_items, self.shard_size = folder, fp, n_items, shard_size
        self.map_keys, self.dtype, self.path_of = map_keys, dtype, path_of
        self.k: int | None = None
        self.buf: dict[str, Tensor] = {}
        self.hw: dict[str, Tensor] = {}
        self.filled = 0
        self.items = hashlib.sha256()
        self.probe = ""

    def batch(self, k: int, groups: Sequence[GroupOut]) -> None:
        """Add one batch of shard ``k``: hash its inputs (the first batch's hash alone is the shard's probe), then
        copy each group's outputs into the buffers."""
        if k != self.k:
            self._begin(k)
        for g in groups:
            items_hash(self.items, g.x, g.y)
        if not self.probe:
            self.probe = self.items.hexdigest()
        for g in groups:
            self._add(g)
        if self.filled == len(self.rows):
            self._write(k)

    def _begin(self, k: int) -> None:
        self.k, self.filled = k, 0
        self.items, self.probe = hashlib.sha256(), ""
        self.rows = shard_range(k, self.n_items, self.shard_size)
        ids = torch.arange(self.rows.start, self.rows.stop, dtype=torch.long)
        self.buf = {"ids": ids, "labels": torch.full_like(ids, -1)}
        self.hw = {}

    def _add(self, g: GroupOut) -> None:
        at = torch.tensor(g.ids, dtype=torch.long) - self.rows.start
        if g.y is not None:
            self.buf["labels"][at] = g.y.to(torch.long)
        if g.geometry is not None:
            self.buf.setdefault("geometry", torch.zeros((len(self.rows), 8), dtype=torch.int64))[at] = g.geometry
        for key, t in g.out.items():
            if not key.startswith("maps/"):
                if key not in self.buf:
                    self.buf[key] = torch.empty((len(self.rows), *t.shape[1:]), dtype=t.dtype)
                self.buf[key][at] = t
                continue
            h, w = t.shape[-2:]
            buf = self._map_buffer(key, t)
            buf[at, ..., :h, :w] = t.to(self.dtype)
            self.hw[key][at] = torch.tensor([h, w], dtype=torch.int32)
        self.filled += len(g.ids)

    def _map_buffer(self, key: str, t: Tensor) -> Tensor:
        """The buffer for maps ``key``, grown (zero-padded) to hold ``t``'s ``(h, w)``."""
        old = self.buf.get(key)
        if old is None:
            self.hw[key] = torch.zeros((len(self.rows), 2), dtype=torch.int32)
            self.buf[key] = torch.zeros((len(self.rows), *t.shape[1:]), dtype=self.dtype)
        elif old.shape[-2] < t.shape[-2] or old.shape[-1] < t.shape[-1]:
            shape = (*old.shape[:-2], max(old.shape[-2], t.shape[-2]), max(old.shape[-1], t.shape[-1]))
            grown = torch.zeros(shape, dtype=self.dtype)
            grown[..., : old.shape[-2], : old.shape[-1]] = old
            self.buf[key] = grown
        return self.buf[key]

    def _write(self, k: int) -> None:
        buf = self.buf
        logits = buf.pop("logits").float()
        targets = buf["targets"]
        soft = torch.softmax(logits, dim=1)
        t2 = targets if targets.ndim == 2 else targets[:, None]
        probs = soft.gather(1, t2)
        buf["probs"] = probs if targets.ndim == 2 else probs[:, 0]
        buf["preds"] = logits.argmax(dim=1)
        buf["prob_pred"] = soft.gather(1, buf["preds"][:, None])[:, 0]
        labels = buf["labels"]
        known = (labels >= 0) & (labels < soft.shape[1])
        buf["prob_label"] = torch.where(known, soft.gather(1, labels.clamp(0, soft.shape[1] - 1)[:, None])[:, 0],
                                        torch.full_like(labels, float("nan"), dtype=soft.dtype))  # fmt: skip
        for key in self.map_keys:
            m = buf["maps/" + key]
            if self.dtype == torch.float16 and bool(torch.isinf(m).any()):
                raise InputError(
                    f"maps of {key} exceed the range of float16 (65504) in shard {k}; "
                    "rerun into a new folder with dtype='float32' (--dtype float32)"
                )
            hw = self.hw["maps/" + key]
            if bool((hw != torch.tensor(m.shape[-2:], dtype=torch.int32)).any()):
                buf["maps_hw/" + key] = hw
        if self.path_of is not None:
            names = [self.path_of(i) for i in self.rows]
            buf["path_bytes"] = torch.frombuffer(bytearray("\0".join(names).encode()), dtype=torch.uint8)
            buf["path_ends"] = torch.tensor([len(n.encode()) + 1 for n in names], dtype=torch.int64).cumsum(0) - 1
        info = {"fingerprint": self.fp, "start": self.rows.start, "stop": self.rows.stop,
                "num_classes": logits.shape[1], "items_sha256": self.items.hexdigest(),
                "probe_sha256": self.probe}  # fmt: skip
        write_shard(self.folder, k, buf, info)
        self.k, self.buf, self.hw = None, {}, {}

    def flush_check(self) -> None:
        if self.k is not None:
            raise DataError(f"shard {self.k} got {self.filled} of {len(self.rows)} items from the data loader")


class WriterThread:
    """Runs a :class:`ShardWriter` in its own thread: :meth:`put` hands over a batch, :meth:`close` waits for the
    last shard; an error in the writer (a full disk, float16 overflow) is raised by the next :meth:`put` or by
    :meth:`close`. ``depth`` batches may wait, which bounds the memory held."""

    def __init__(self, writer: ShardWriter, depth: int = 4) -> None:
        self.writer = writer
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="camlens-shard-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain, so that put() never blocks on a dead writer
            k, groups, ready = item
            try:
                if ready is not None:
                    ready.synchronize()  # the asynchronous copies from the GPU have landed
                self.writer.batch(k, groups)
            except BaseException as e:
                self.error = e

    def put(self, k: int, groups: list[GroupOut], ready: Any = None) -> None:
        """Queue one batch of shard ``k`` (``ready``: a CUDA event recorded after its copies to the host)."""
        self._raise()
        self.q.put((k, groups, ready))

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self, check: bool = True) -> None:
        """Wait for every queued batch; raise the writer's error, then (``check``) an unfinished shard."""
        self.q.put(None)
        self.thread.join()
        self._raise()
        if check:
            self.writer.flush_check()
